//! The bounded queue of host notifications waiting for a RECV request.
//!
//! All memory is allocated once, when the core is created (PASSIVE_LEVEL); pushing and popping
//! copy bytes and never allocate, so the packet path can use it at DISPATCH_LEVEL. The queue is
//! not synchronised: the core keeps it behind its spin lock.

use alloc::vec::Vec;

/// A fixed-capacity FIFO of byte strings of at most `slot_size` bytes each.
#[derive(Debug)]
pub struct NotifyQueue {
    /// `depth * slot_size` bytes: slot `i` is `storage[i * slot_size..][..slot_size]`.
    storage: Vec<u8>,
    /// The length of the message in each slot.
    lens: Vec<usize>,
    /// The sequence number the host's notification got when it was queued.
    seqs: Vec<u64>,
    slot_size: usize,
    head: usize,
    len: usize,
}

/// Why [`NotifyQueue::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every slot is taken.
    Full,
    /// The message is larger than a slot.
    TooLarge,
}

impl NotifyQueue {
    /// A queue of `depth` slots of `slot_size` bytes, or `None` if the memory cannot be
    /// allocated.
    #[must_use]
    pub fn try_new(depth: usize, slot_size: usize) -> Option<Self> {
        let total = depth.checked_mul(slot_size)?;
        let mut storage = Vec::new();
        storage.try_reserve_exact(total).ok()?;
        storage.resize(total, 0);
        let mut lens = Vec::new();
        lens.try_reserve_exact(depth).ok()?;
        lens.resize(depth, 0);
        let mut seqs = Vec::new();
        seqs.try_reserve_exact(depth).ok()?;
        seqs.resize(depth, 0);
        Some(Self {
            storage,
            lens,
            seqs,
            slot_size,
            head: 0,
            len: 0,
        })
    }

    /// How many slots there are.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.lens.len()
    }

    /// Copies `message` in at the tail, tagged with `seq`.
    ///
    /// # Errors
    /// [`PushError::Full`] or [`PushError::TooLarge`]; the queue is unchanged.
    pub fn push(&mut self, seq: u64, message: &[u8]) -> Result<(), PushError> {
        if message.len() > self.slot_size {
            return Err(PushError::TooLarge);
        }
        let depth = self.depth();
        if self.len == depth || depth == 0 {
            return Err(PushError::Full);
        }
        let slot = (self.head + self.len) % depth;
        let start = slot * self.slot_size;
        let dst = self
            .storage
            .get_mut(start..start + message.len())
            .ok_or(PushError::TooLarge)?;
        dst.copy_from_slice(message);
        if let (Some(l), Some(s)) = (self.lens.get_mut(slot), self.seqs.get_mut(slot)) {
            *l = message.len();
            *s = seq;
        }
        self.len += 1;
        Ok(())
    }

    /// The oldest message and its sequence number, without removing it.
    #[must_use]
    pub fn front(&self) -> Option<(u64, &[u8])> {
        if self.len == 0 {
            return None;
        }
        let len = *self.lens.get(self.head)?;
        let seq = *self.seqs.get(self.head)?;
        let start = self.head * self.slot_size;
        Some((seq, self.storage.get(start..start + len)?))
    }

    /// Removes the oldest message.
    pub fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.depth();
            self.len -= 1;
        }
    }

    /// Drops every queued message; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        self.head = 0;
        self.len = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::{NotifyQueue, PushError};
    use alloc::vec::Vec;

    #[test]
    fn fifo_with_wraparound_and_bounds() {
        let mut q = NotifyQueue::try_new(3, 4).unwrap();
        assert!(q.front().is_none());
        assert_eq!(q.push(1, b"a"), Ok(()));
        assert_eq!(q.push(2, b"bb"), Ok(()));
        assert_eq!(q.push(3, b"cccc"), Ok(()));
        assert_eq!(q.push(4, b"d"), Err(PushError::Full));
        assert_eq!(q.front(), Some((1, &b"a"[..])));
        q.pop_front();
        assert_eq!(
            q.push(4, b"dddd"),
            Ok(()),
            "a freed slot is reused (wraps around)"
        );
        assert_eq!(q.push(5, b"eeeee"), Err(PushError::TooLarge));
        let mut out = Vec::new();
        while let Some((seq, m)) = q.front() {
            out.push((seq, m.to_vec()));
            q.pop_front();
        }
        assert_eq!(
            out,
            [
                (2, b"bb".to_vec()),
                (3, b"cccc".to_vec()),
                (4, b"dddd".to_vec())
            ]
        );
        assert_eq!(q.push(6, b""), Ok(()), "empty messages are messages too");
        assert_eq!(q.front(), Some((6, &b""[..])));
        assert_eq!(q.clear(), 1);
        assert!(q.front().is_none());
    }

    #[test]
    fn zero_depth_is_always_full() {
        let mut q = NotifyQueue::try_new(0, 8).unwrap();
        assert_eq!(q.push(1, b"x"), Err(PushError::Full));
    }
}
