//! Packets in memory the channel allocated up front (`VmbChannelSizeofPacket`,
//! `VmbPacketInitialize`), for drivers that must not depend on KMCL's lookaside list on a hot
//! path: [`ChannelBuilder::preallocated_packets`](crate::ChannelBuilder::preallocated_packets)
//! reserves them when the channel is enabled, and
//! [`ChannelRef::preallocated_packet`](crate::ChannelRef::preallocated_packet) hands them out.
//!
//! A packet made by `VmbPacketInitialize` must never be passed to `VmbPacketFree` (reference
//! §7.5): one of these goes back to the pool instead, when it is dropped unsent or once its
//! send has completed. The pool lives in the channel's context, so it outlives every packet:
//! an unsent packet borrows the channel, and KMCL completes (or cancels) every send before
//! `VmbChannelCleanup`.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// The most packets a pool holds (one bit each in the free mask).
pub const MAX_PREALLOCATED_PACKETS: u32 = 64;

/// `n` packet objects of `size` bytes and a mask of the free ones.
pub(crate) struct PacketPool {
    base: NonNull<u8>,
    layout: Layout,
    size: usize,
    free: AtomicU64,
}

// SAFETY: the memory is owned by the pool; each slot is used by one packet at a time (the free
// mask hands it out exclusively), and the mask is atomic.
unsafe impl Send for PacketPool {}
// SAFETY: as above.
unsafe impl Sync for PacketPool {}

impl PacketPool {
    /// `n` slots of `size` bytes (16-byte aligned each), or `None` when out of range or out of
    /// memory.
    pub(crate) fn try_new(n: u32, size: u32) -> Option<Self> {
        if n == 0 || n > MAX_PREALLOCATED_PACKETS || size == 0 {
            return None;
        }
        let size = usize::try_from(size).ok()?.checked_next_multiple_of(16)?;
        let total = size.checked_mul(usize::try_from(n).ok()?)?;
        let layout = Layout::from_size_align(total, 16).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let base = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        let free = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        Some(Self {
            base,
            layout,
            size,
            free: AtomicU64::new(free),
        })
    }

    /// The size of each slot.
    pub(crate) fn slot_size(&self) -> usize {
        self.size
    }

    /// A free slot's index and memory, exclusively the caller's until [`release`](Self::release).
    pub(crate) fn claim(&self) -> Option<(u32, NonNull<u8>)> {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            if free == 0 {
                return None;
            }
            let index = free.trailing_zeros();
            match self.free.compare_exchange_weak(
                free,
                free & !(1u64 << index),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let offset = usize::try_from(index).ok()? * self.size;
                    // `index` < n, so the slot is inside the allocation (never null).
                    return Some((
                        index,
                        NonNull::new(self.base.as_ptr().wrapping_add(offset))?,
                    ));
                }
                Err(now) => free = now,
            }
        }
    }

    /// Gives slot `index` back.
    pub(crate) fn release(&self, index: u32) {
        self.free.fetch_or(1u64 << (index % 64), Ordering::Release);
    }

    /// Free slots now.
    pub(crate) fn available(&self) -> u32 {
        self.free.load(Ordering::Relaxed).count_ones()
    }
}

impl Drop for PacketPool {
    fn drop(&mut self) {
        // SAFETY: allocated with `layout` in `try_new`, freed only here, after the channel's
        // cleanup (no packet uses a slot any more).
        unsafe { alloc::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}
