//! Ring memory: what a ring needs from the bytes it lives in, and a heap-backed implementation.
//!
//! All access to shared memory goes through [`RingMem`]: the control words are `AtomicU32`s,
//! descriptor and trailer words are `AtomicU64` loads and stores, and payload bytes move in bulk
//! with [`RingMem::read_at`] / [`RingMem::write_at`]. Offsets are into the data area and may
//! wrap once (a packet that runs past the end continues at 0).
//!
//! [`FlatRingMem`] is the only code in this crate with `unsafe`: two bulk copies between the
//! shared data area and a private buffer (see [`copy_out`](FlatRingMem) below). Everything
//! above it is safe code that never indexes without a check.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::protocol::CONTROL_WORDS;

/// The memory of one ring: a control page and a data area shared with the peer.
///
/// Implementations must stay in bounds whatever they are asked (the ring core only asks for
/// in-bounds accesses, which the crate's tests check with a recording implementation, but an
/// implementation must not rely on that for memory safety).
pub trait RingMem {
    /// The control page as `u32` words (word `i` is at byte `4 * i`).
    fn control(&self) -> &[AtomicU32; CONTROL_WORDS];

    /// Bytes in the data area: a non-zero multiple of 8, at most `u32::MAX - 7`.
    fn data_len(&self) -> usize;

    /// Copies `dst.len()` bytes starting at data offset `offset`, wrapping once at
    /// [`data_len`](Self::data_len). Requires `offset < len` and `dst.len() <= len`.
    fn read_at(&self, offset: usize, dst: &mut [u8]);

    /// Copies `src` to data offset `offset`, wrapping once. Requires `offset < len` and
    /// `src.len() <= len`.
    fn write_at(&self, offset: usize, src: &[u8]);

    /// The little-endian `u64` at the 8-aligned data offset `offset < len` (one atomic load).
    fn read_u64(&self, offset: usize) -> u64;

    /// Stores a little-endian `u64` at the 8-aligned data offset `offset < len` (one atomic
    /// store).
    fn write_u64(&self, offset: usize, value: u64);
}

impl<T: RingMem + ?Sized> RingMem for &T {
    fn control(&self) -> &[AtomicU32; CONTROL_WORDS] {
        (**self).control()
    }
    fn data_len(&self) -> usize {
        (**self).data_len()
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) {
        (**self).read_at(offset, dst);
    }
    fn write_at(&self, offset: usize, src: &[u8]) {
        (**self).write_at(offset, src);
    }
    fn read_u64(&self, offset: usize) -> u64 {
        (**self).read_u64(offset)
    }
    fn write_u64(&self, offset: usize, value: u64) {
        (**self).write_u64(offset, value);
    }
}

#[cfg(feature = "alloc")]
impl<T: RingMem + ?Sized> RingMem for alloc::sync::Arc<T> {
    fn control(&self) -> &[AtomicU32; CONTROL_WORDS] {
        (**self).control()
    }
    fn data_len(&self) -> usize {
        (**self).data_len()
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) {
        (**self).read_at(offset, dst);
    }
    fn write_at(&self, offset: usize, src: &[u8]) {
        (**self).write_at(offset, src);
    }
    fn read_u64(&self, offset: usize) -> u64 {
        (**self).read_u64(offset)
    }
    fn write_u64(&self, offset: usize, value: u64) {
        (**self).write_u64(offset, value);
    }
}

/// Why a ring memory could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRingSize(pub usize);

impl core::fmt::Display for BadRingSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ring data size {} is not a non-zero multiple of 8 below 4 GiB",
            self.0
        )
    }
}

/// Checks a data-area size: a non-zero multiple of 8 that a `u32` index can address.
pub(crate) const fn valid_len(len: usize) -> bool {
    len != 0 && len.is_multiple_of(8) && len <= (u32::MAX as usize & !7)
}

#[cfg(feature = "alloc")]
pub use flat::FlatRingMem;

#[cfg(feature = "alloc")]
mod flat {
    // UNSAFETY: the two bulk copies between the shared data area and a private buffer. Moving
    // payload bytes one atomic word at a time is several times slower than a memcpy (measured:
    // docs/performance.md), and a ring's whole point is moving payload bytes.
    #![expect(
        unsafe_code,
        reason = "bulk copies between shared ring memory and private buffers"
    )]

    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::ptr;
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use super::{BadRingSize, RingMem, valid_len};
    use crate::protocol::{CONTROL_PAGE_SIZE, CONTROL_WORDS};

    /// A ring in ordinary heap memory: a 4 KiB control page and an 8-aligned data area.
    ///
    /// Share it between the writer and the reader with `&FlatRingMem` or `Arc<FlatRingMem>`
    /// (both implement [`RingMem`]). Byte snapshots ([`control_bytes`](Self::control_bytes),
    /// [`data_bytes`](Self::data_bytes)) and raw stores ([`load`](Self::load)) exist for tests
    /// that check the exact layout or play a hostile peer.
    ///
    /// # Shared-memory access
    ///
    /// Control words and descriptor/trailer words are atomics. Payload bytes are copied in bulk
    /// with `ptr::copy_nonoverlapping` between the data area (`[AtomicU64]`, whose interior
    /// mutability permits writes through a shared reference) and the caller's private slice.
    /// A well-behaved peer never touches those bytes at the same time: the writer fills free
    /// space and then publishes its index with a release store; the reader copies only bytes
    /// published to it, after an acquire load. A misbehaving peer that writes concurrently
    /// races with the copy, the situation of any VMBus endpoint whose peer is another VM
    /// (Linux copies with `memcpy`, openvmm's `safeatomic` with `copy_nonoverlapping`): the
    /// copied bytes may be torn, which is why readers validate the private copy and never
    /// re-read the ring. Every copy is bounds-checked here, whatever the caller passes.
    #[derive(Debug)]
    pub struct FlatRingMem {
        control: Box<[AtomicU32; CONTROL_WORDS]>,
        data: Box<[AtomicU64]>,
    }

    impl FlatRingMem {
        /// A zeroed ring with a data area of `data_len` bytes (VMBus uses multiples of the
        /// 4 KiB page; any non-zero multiple of 8 works here, which keeps tests small).
        ///
        /// # Errors
        /// [`BadRingSize`] when `data_len` is zero, not a multiple of 8, or 4 GiB or more.
        pub fn new(data_len: usize) -> Result<Self, BadRingSize> {
            if !valid_len(data_len) {
                return Err(BadRingSize(data_len));
            }
            let control: Box<[AtomicU32]> = (0..CONTROL_WORDS).map(|_| AtomicU32::new(0)).collect();
            let control = control.try_into().map_err(|_| BadRingSize(data_len))?;
            let data = (0..data_len / 8).map(|_| AtomicU64::new(0)).collect();
            Ok(Self { control, data })
        }

        /// A zeroed ring of `pages` 4 KiB data pages.
        ///
        /// # Errors
        /// As [`new`](Self::new).
        pub fn with_pages(pages: usize) -> Result<Self, BadRingSize> {
            Self::new(pages.saturating_mul(CONTROL_PAGE_SIZE))
        }

        /// The data area as atomic words (for alternative accessors, e.g. benches).
        #[must_use]
        pub fn words(&self) -> &[AtomicU64] {
            &self.data
        }

        /// The control page as it is in memory (4096 little-endian bytes).
        #[must_use]
        pub fn control_bytes(&self) -> Vec<u8> {
            self.control
                .iter()
                .flat_map(|w| w.load(Ordering::Acquire).to_le_bytes())
                .collect()
        }

        /// The data area as it is in memory.
        #[must_use]
        pub fn data_bytes(&self) -> Vec<u8> {
            let mut out = alloc::vec![0; self.data_len()];
            self.read_at(0, &mut out);
            out
        }

        /// Overwrites the start of the control page with `control` and the start of the data
        /// area with `data` (what a peer, hostile or not, can do to shared memory). Bytes past
        /// the end of either area are ignored.
        pub fn load(&self, control: &[u8], data: &[u8]) {
            for (word, chunk) in self.control.iter().zip(control.chunks(4)) {
                let mut b = word.load(Ordering::Relaxed).to_le_bytes();
                if let Some(dst) = b.get_mut(..chunk.len()) {
                    dst.copy_from_slice(chunk);
                }
                word.store(u32::from_le_bytes(b), Ordering::Release);
            }
            let n = data.len().min(self.data_len());
            self.write_at(0, data.get(..n).unwrap_or_default());
        }

        fn base(&self) -> *mut u8 {
            self.data.as_ptr().cast::<u8>().cast_mut()
        }

        /// The one or two in-bounds segments `(ring offset, length)` of an access of `n` bytes
        /// at `offset`; `None` if the access breaks the [`RingMem`] preconditions.
        fn segments(&self, offset: usize, n: usize) -> Option<((usize, usize), usize)> {
            let len = self.data_len();
            if offset >= len || n > len {
                return None;
            }
            let first = n.min(len - offset);
            Some(((offset, first), n - first))
        }
    }

    impl RingMem for FlatRingMem {
        fn control(&self) -> &[AtomicU32; CONTROL_WORDS] {
            &self.control
        }

        fn data_len(&self) -> usize {
            self.data.len() * 8
        }

        fn read_at(&self, offset: usize, dst: &mut [u8]) {
            let Some(((at, first), rest)) = self.segments(offset, dst.len()) else {
                debug_assert!(false, "read_at({offset}, {}) out of bounds", dst.len());
                return;
            };
            let (head, tail) = dst.split_at_mut(first);
            // SAFETY: `at + first <= len` (segments), so the source range is inside the data
            // allocation; `head` is a private `&mut` slice of exactly `first` bytes, which
            // cannot overlap memory reached through `&self`. Concurrent writers: see the type's
            // "Shared-memory access" section.
            unsafe {
                ptr::copy_nonoverlapping(self.base().wrapping_add(at), head.as_mut_ptr(), first)
            };
            if rest > 0 {
                // SAFETY: `rest <= len - first <= len`, so `0..rest` is inside the allocation;
                // the destination is the private `tail` of exactly `rest` bytes.
                unsafe { ptr::copy_nonoverlapping(self.base(), tail.as_mut_ptr(), rest) };
            }
        }

        fn write_at(&self, offset: usize, src: &[u8]) {
            let Some(((at, first), rest)) = self.segments(offset, src.len()) else {
                debug_assert!(false, "write_at({offset}, {}) out of bounds", src.len());
                return;
            };
            let (head, tail) = src.split_at(first);
            // SAFETY: the destination `at..at + first` is inside the data allocation
            // (segments), whose `AtomicU64` cells permit writes through `&self`; the source is
            // the caller's separate slice of `first` bytes.
            unsafe { ptr::copy_nonoverlapping(head.as_ptr(), self.base().wrapping_add(at), first) };
            if rest > 0 {
                // SAFETY: `0..rest` is inside the allocation; the source is `tail`, `rest`
                // bytes.
                unsafe { ptr::copy_nonoverlapping(tail.as_ptr(), self.base(), rest) };
            }
        }

        fn read_u64(&self, offset: usize) -> u64 {
            debug_assert!(offset.is_multiple_of(8), "unaligned read_u64({offset})");
            self.data
                .get(offset / 8)
                .map_or(0, |w| u64::from_le(w.load(Ordering::Relaxed)))
        }

        fn write_u64(&self, offset: usize, value: u64) {
            debug_assert!(offset.is_multiple_of(8), "unaligned write_u64({offset})");
            if let Some(w) = self.data.get(offset / 8) {
                w.store(value.to_le(), Ordering::Relaxed);
            }
        }
    }
}

/// Loads a control word; a missing word reads as 0.
///
/// `SeqCst` (a plain load on x86, `ldar` on Arm) so that, paired with
/// [`publish_control`], "publish my index, then read the peer's field" on one side and the
/// same on the other side can never both miss each other (the lost-wakeup case of §1.8).
pub(crate) fn load_control(mem: &impl RingMem, word: usize) -> u32 {
    mem.control()
        .get(word)
        .map_or(0, |w| w.load(Ordering::SeqCst))
}

/// Publishes a control word with a `SeqCst` swap: the store and the full barrier that must
/// follow it before the peer's fields are read, in one instruction (`xchg` on x86, cheaper
/// than `mov` + `mfence`).
pub(crate) fn publish_control(mem: &impl RingMem, word: usize, value: u32) {
    if let Some(w) = mem.control().get(word) {
        w.swap(value, Ordering::SeqCst);
    }
}

/// Stores a control word (`Release`).
pub(crate) fn store_control(mem: &impl RingMem, word: usize, value: u32) {
    if let Some(w) = mem.control().get(word) {
        w.store(value, Ordering::Release);
    }
}

/// Sets bits of a control word.
pub(crate) fn or_control(mem: &impl RingMem, word: usize, bits: u32) {
    if let Some(w) = mem.control().get(word) {
        w.fetch_or(bits, Ordering::AcqRel);
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(FlatRingMem::new(0).is_err());
        assert!(FlatRingMem::new(12).is_err());
        assert_eq!(FlatRingMem::new(64).map(|m| m.data_len()), Ok(64));
        assert_eq!(FlatRingMem::with_pages(2).map(|m| m.data_len()), Ok(8192));
    }

    #[test]
    fn copies_wrap_once() {
        let m = FlatRingMem::new(16).expect("ring");
        m.write_at(12, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            m.data_bytes(),
            [5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        let mut out = [0; 6];
        m.read_at(12, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        assert_eq!(m.read_u64(0), u64::from_le_bytes([5, 6, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn load_sets_raw_bytes() {
        let m = FlatRingMem::new(16).expect("ring");
        m.load(&[1, 0, 0, 0, 8, 0, 0, 0], &[9; 20]);
        assert_eq!(load_control(&m, 0), 1);
        assert_eq!(load_control(&m, 1), 8);
        assert_eq!(m.data_bytes(), [9; 16]);
        assert_eq!(m.control_bytes().len(), 4096);
    }
}
