//! The bounded queue of host notifications waiting for a RECV request.
//!
//! All memory is allocated once, when the core is created (PASSIVE_LEVEL); pushing and popping
//! copy bytes and never allocate, so the packet path can use it at DISPATCH_LEVEL. The queue is
//! not synchronised: the core keeps it behind its spin lock.
//!
//! Bounded twice: at most `depth` messages, and at most `bytes` bytes of them, stored one after
//! the other in a byte ring (a message never wraps: one that does not fit before the end of
//! the ring goes to its start, if the oldest message has left room there). So the non-paged
//! memory the queue holds is `bytes`, not `depth` times the largest message (docs/design.md,
//! "Memory per device").

use alloc::vec::Vec;

/// One queued message: where it is in the ring, how long, and its sequence number.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    start: usize,
    len: usize,
    seq: u64,
}

/// A FIFO of at most `depth` byte strings, together at most `bytes` bytes.
#[derive(Debug)]
pub struct NotifyQueue {
    storage: Vec<u8>,
    entries: Vec<Entry>,
    /// The oldest entry.
    head: usize,
    /// Entries queued.
    len: usize,
    /// The end of the newest message in `storage`.
    tail_end: usize,
    /// The newest message lies before the oldest in `storage` (the ring has wrapped).
    wrapped: bool,
}

/// Why [`NotifyQueue::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No entry, or not enough room for this message, is free now.
    Full,
    /// The message is larger than the whole ring.
    TooLarge,
}

impl NotifyQueue {
    /// A queue of up to `depth` messages in `bytes` bytes, or `None` if the memory cannot be
    /// allocated.
    #[must_use]
    pub fn try_new(depth: usize, bytes: usize) -> Option<Self> {
        let mut storage = Vec::new();
        storage.try_reserve_exact(bytes).ok()?;
        storage.resize(bytes, 0);
        let mut entries = Vec::new();
        entries.try_reserve_exact(depth).ok()?;
        entries.resize(depth, Entry::default());
        Some(Self {
            storage,
            entries,
            head: 0,
            len: 0,
            tail_end: 0,
            wrapped: false,
        })
    }

    /// How many messages it can hold at most.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Where a message of `need` bytes goes now, if anywhere.
    fn place(&self, need: usize) -> Option<usize> {
        let cap = self.storage.len();
        if self.len == 0 {
            return Some(0);
        }
        let head_start = self.entries.get(self.head)?.start;
        if self.wrapped {
            // Free: [tail_end, head_start).
            (head_start - self.tail_end >= need).then_some(self.tail_end)
        } else if cap - self.tail_end >= need {
            // Free: [tail_end, cap) and [0, head_start); the first if it fits.
            Some(self.tail_end)
        } else {
            (head_start >= need).then_some(0)
        }
    }

    /// Copies `message` in at the tail, tagged with `seq`.
    ///
    /// # Errors
    /// [`PushError::Full`] or [`PushError::TooLarge`]; the queue is unchanged.
    pub fn push(&mut self, seq: u64, message: &[u8]) -> Result<(), PushError> {
        if message.len() > self.storage.len() {
            return Err(PushError::TooLarge);
        }
        let depth = self.depth();
        if self.len == depth || depth == 0 {
            return Err(PushError::Full);
        }
        let start = self.place(message.len()).ok_or(PushError::Full)?;
        let end = start + message.len();
        self.storage
            .get_mut(start..end)
            .ok_or(PushError::TooLarge)?
            .copy_from_slice(message);
        let index = (self.head + self.len) % depth;
        if let Some(e) = self.entries.get_mut(index) {
            *e = Entry {
                start,
                len: message.len(),
                seq,
            };
        }
        if self.len > 0 && start < self.tail_end {
            self.wrapped = true;
        }
        self.tail_end = end;
        self.len += 1;
        Ok(())
    }

    /// The oldest message and its sequence number, without removing it.
    #[must_use]
    pub fn front(&self) -> Option<(u64, &[u8])> {
        if self.len == 0 {
            return None;
        }
        let e = self.entries.get(self.head)?;
        Some((e.seq, self.storage.get(e.start..e.start + e.len)?))
    }

    /// Removes the oldest message.
    pub fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.head = (self.head + 1) % self.depth();
        self.len -= 1;
        if self.len == 0 {
            self.tail_end = 0;
            self.wrapped = false;
        } else if let Some(next) = self.entries.get(self.head)
            && self.wrapped
            && next.start < self.tail_end
        {
            // The oldest is now in the part the newest wrapped into: no longer wrapped.
            self.wrapped = false;
        }
    }

    /// Drops every queued message; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        self.head = 0;
        self.len = 0;
        self.tail_end = 0;
        self.wrapped = false;
        n
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{NotifyQueue, PushError};
    use alloc::vec::Vec;

    fn drain(q: &mut NotifyQueue) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((seq, m)) = q.front() {
            out.push((seq, m.to_vec()));
            q.pop_front();
        }
        out
    }

    #[test]
    fn fifo_within_both_bounds() {
        let mut q = NotifyQueue::try_new(3, 8).unwrap();
        assert!(q.front().is_none());
        assert_eq!(q.push(1, b"a"), Ok(()));
        assert_eq!(q.push(2, b"bb"), Ok(()));
        assert_eq!(q.push(3, b"ccc"), Ok(()));
        assert_eq!(q.push(4, b"d"), Err(PushError::Full), "depth");
        assert_eq!(q.front(), Some((1, &b"a"[..])));
        q.pop_front();
        assert_eq!(
            q.push(4, b"dddd"),
            Err(PushError::Full),
            "bytes: 2+3 used, 4 do not fit"
        );
        assert_eq!(q.push(4, b"dd"), Ok(()), "fits after ccc");
        assert_eq!(q.push(9, b"123456789"), Err(PushError::TooLarge));
        assert_eq!(
            drain(&mut q),
            [
                (2, b"bb".to_vec()),
                (3, b"ccc".to_vec()),
                (4, b"dd".to_vec())
            ]
        );
        assert_eq!(q.push(6, b""), Ok(()), "empty messages are messages too");
        assert_eq!(q.front(), Some((6, &b""[..])));
        assert_eq!(q.clear(), 1);
        assert!(q.front().is_none());
        assert_eq!(
            q.push(7, b"12345678"),
            Ok(()),
            "an empty ring takes a full-size message"
        );
    }

    #[test]
    fn a_message_that_does_not_fit_at_the_end_goes_to_the_start() {
        let mut q = NotifyQueue::try_new(8, 10).unwrap();
        q.push(1, b"aaaa").unwrap();
        q.push(2, b"bbbb").unwrap();
        q.pop_front(); // free [0, 4)
        assert_eq!(
            q.push(3, b"ccc"),
            Ok(()),
            "wraps to the start (2 left at the end)"
        );
        assert_eq!(q.push(4, b"d"), Ok(()), "fills the start up to the oldest");
        assert_eq!(
            q.push(5, b"e"),
            Err(PushError::Full),
            "nothing free between them"
        );
        q.pop_front(); // bbbb leaves: not wrapped any more
        assert_eq!(q.push(5, b"eeee"), Ok(()));
        assert_eq!(
            drain(&mut q),
            [
                (3, b"ccc".to_vec()),
                (4, b"d".to_vec()),
                (5, b"eeee".to_vec())
            ]
        );
    }

    /// Random pushes and pops against a model FIFO: same order and contents, and never more
    /// than the byte budget queued.
    #[test]
    fn matches_a_plain_fifo_under_random_use() {
        let mut q = NotifyQueue::try_new(5, 64).unwrap();
        let mut model = std::collections::VecDeque::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for seq in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) {
                if let Some((s, m)) = q.front() {
                    assert_eq!(model.pop_front(), Some((s, m.to_vec())));
                    q.pop_front();
                } else {
                    assert!(model.is_empty());
                }
            } else {
                let len = usize::try_from(seed % 40).unwrap();
                let msg: Vec<u8> = (0..len)
                    .map(|i| (seq as u8).wrapping_add(i as u8))
                    .collect();
                if q.push(seq, &msg).is_ok() {
                    model.push_back((seq, msg));
                }
                let queued: usize = model.iter().map(|(_, m)| m.len()).sum();
                assert!(queued <= 64 && model.len() <= 5);
            }
        }
        let left: Vec<_> = model.into_iter().collect();
        assert_eq!(drain(&mut q), left);
    }

    #[test]
    fn zero_depth_is_always_full() {
        let mut q = NotifyQueue::try_new(0, 8).unwrap();
        assert_eq!(q.push(1, b"x"), Err(PushError::Full));
    }
}
