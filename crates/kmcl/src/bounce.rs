//! Per-channel bounce buffers: incoming packets are copied out of KMCL's buffer before the
//! handler sees them.
//!
//! # Why
//!
//! Whether KMCL hands `EvtVmbChannelProcessPacket` a private copy or a pointer into the incoming
//! ring, which the host can write at any time, is not documented: the 10.0.22621 header says
//! only that the callback runs "when a packet has arrived in the incoming ring buffer" and that
//! `Buffer` "contains the packet which was sent by the opposite endpoint", without the VMBus and
//! KMCL headers; the DDI pages add nothing. Linux copies every packet out of the ring into a
//! per-channel buffer before its drivers parse it, precisely so that the host cannot change it
//! under them ("Drivers: hv: vmbus: Copy packets sent by Hyper-V out of the ring buffer", 2021,
//! for isolated VMs; packets longer than the buffer are truncated there). A `&[u8]` over memory
//! another party can write is unsound in Rust and a double-fetch hazard, so kmcl copies too,
//! whatever KMCL does: the handler only ever sees bytes nobody else can change.
//!
//! # How
//!
//! Each channel owns `slots` buffers of `slot_size` bytes (the channel's maximum packet size),
//! allocated fallibly when the channel is built, and a bitmask of the free ones. Delivering a
//! packet claims a slot (one compare-exchange), copies the packet in through
//! `shared::copy_from_shared` (one pass; the handler never sees shared memory), calls the
//! handler with the copy and gives the slot back (one `fetch_or`). Nothing is allocated per
//! packet, and nothing is counted on this path (the handler sees every packet that reaches it;
//! locked counters here would only repeat its own). KMCL may deliver
//! on several processors at once; when every slot is busy the packet is handed back to KMCL to
//! be delivered again at PASSIVE_LEVEL (`VmbChannelPacketDeferToPassive`, legal only there,
//! inline), and counted ([`BounceStats::deferred`]). A packet longer than a slot cannot come
//! from a host that honours the channel's maximum packet size; it is completed with the
//! handler's `UNCONSUMED_RESPONSE` without reaching the handler, and counted
//! ([`BounceStats::oversized`]), as is one longer than the handler's compile-time
//! `ChannelHandler::MAX_PACKET_SIZE` (slots are never smaller than that, so such a handler's
//! packets are checked against the constant alone).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// Most bounce buffers a channel may have (one bit each in the free mask).
pub const MAX_BOUNCE_BUFFERS: u32 = 64;

/// Bounce buffers a channel gets unless
/// [`ChannelBuilder::concurrent_deliveries`](crate::ChannelBuilder::concurrent_deliveries) says
/// otherwise.
pub const DEFAULT_BOUNCE_BUFFERS: u32 = 4;

/// The slot size of a channel whose maximum packet size was never set (kmcl-model's default;
/// KMCL's own is not documented, so set it).
pub const DEFAULT_SLOT_SIZE: u32 = 4096;

/// What the bounce buffers of one channel have turned away (the packets that reached the
/// handler are the handler's to count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BounceStats {
    /// Packets handed back to KMCL because every buffer was busy.
    pub deferred: u64,
    /// Packets longer than a buffer, completed without reaching the handler.
    pub oversized: u64,
}

pub(crate) struct Bounce {
    base: NonNull<u8>,
    layout: Layout,
    slot_size: usize,
    /// Bit `i` set: slot `i` is free.
    free: AtomicU64,
    deferred: AtomicU64,
    oversized: AtomicU64,
}

// SAFETY: the memory is owned by this value; each slot is used by one thread at a time (the
// free mask hands it out exclusively), and the counters are atomics.
unsafe impl Send for Bounce {}
// SAFETY: as above.
unsafe impl Sync for Bounce {}

/// The outcome of [`Bounce::claim`].
pub(crate) enum Claim<'a> {
    /// A free slot (its bit in the free mask, and its bytes), now exclusively the caller's
    /// until [`Bounce::release`] of that bit.
    Slot(u64, &'a mut [u8]),
    /// Every slot is in use.
    Busy,
    /// The packet is longer than a slot.
    TooLarge,
}

impl Bounce {
    /// `slots` buffers of `slot_size` bytes, or `None` when the memory cannot be had (or the
    /// sizes are out of range).
    pub(crate) fn try_new(slots: u32, slot_size: u32) -> Option<Self> {
        if slots == 0 || slots > MAX_BOUNCE_BUFFERS || slot_size == 0 {
            return None;
        }
        // Slots start on cache lines, so two processors never share one.
        let slot_size = usize::try_from(slot_size)
            .ok()?
            .checked_next_multiple_of(64)?;
        let total = slot_size.checked_mul(usize::try_from(slots).ok()?)?;
        let layout = Layout::from_size_align(total, 64).ok()?;
        // SAFETY: `layout` has a non-zero size (slots >= 1, slot_size >= 64). Zeroed, so every
        // slot is initialised bytes from the start.
        let base = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        let free = if slots == 64 {
            u64::MAX
        } else {
            (1u64 << slots) - 1
        };
        Some(Self {
            base,
            layout,
            slot_size,
            free: AtomicU64::new(free),
            deferred: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
        })
    }

    /// How many slots there are.
    pub(crate) fn slots(&self) -> u32 {
        u32::try_from(self.layout.size() / self.slot_size).unwrap_or(1)
    }

    /// The usable size of each slot (at least what was asked for).
    pub(crate) fn slot_size(&self) -> u32 {
        u32::try_from(self.slot_size).unwrap_or(u32::MAX)
    }

    /// A free slot able to hold `len` bytes.
    pub(crate) fn claim(&self, len: usize) -> Claim<'_> {
        if len > self.slot_size {
            return self.refuse();
        }
        // SAFETY: `len <= slot_size`, just checked.
        unsafe { self.claim_fitting(len) }
    }

    /// Counts a packet too long for its channel and says so ([`Claim::TooLarge`]).
    pub(crate) fn refuse(&self) -> Claim<'_> {
        self.oversized.fetch_add(1, Ordering::Relaxed);
        Claim::TooLarge
    }

    /// [`claim`](Self::claim) for a length the caller knows fits a slot.
    ///
    /// # Safety
    /// `len <= slot_size` (the slot handed out is `len` bytes of a `slot_size`-byte buffer).
    pub(crate) unsafe fn claim_fitting(&self, len: usize) -> Claim<'_> {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            if free == 0 {
                self.deferred.fetch_add(1, Ordering::Relaxed);
                return Claim::Busy;
            }
            // The lowest free slot: its bit alone, and the mask without it.
            let bit = free & free.wrapping_neg();
            match self.free.compare_exchange_weak(
                free,
                free ^ bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                // SAFETY: this thread just cleared `bit`, a bit of the mask; `len <= slot_size`
                // (this function's contract).
                Ok(_) => break unsafe { self.slot(bit, len) },
                Err(now) => free = now,
            }
        }
    }

    /// The slot of `bit`, `len` bytes of it.
    ///
    /// # Safety
    /// `bit` is a bit of the free mask that this thread just cleared, and `len <= slot_size`.
    unsafe fn slot(&self, bit: u64, len: usize) -> Claim<'_> {
        let index = bit.trailing_zeros();
        let offset = usize::try_from(index).unwrap_or(0) * self.slot_size;
        // SAFETY: `bit` is a bit of the free mask (contract), whose bits are `0..slots`, so
        // `offset + slot_size <= layout.size()`: the slot is inside the allocation. The bit was
        // just cleared by this thread (Acquire), so no other thread holds this slot until
        // `release(bit)`: the `&mut` is exclusive. `len <= slot_size` (contract). The bytes are
        // initialised (the allocation is zeroed).
        let slot = unsafe {
            core::slice::from_raw_parts_mut(self.base.as_ptr().wrapping_add(offset), len)
        };
        Claim::Slot(bit, slot)
    }

    /// Gives back the slot whose bit [`claim`](Self::claim) returned.
    pub(crate) fn release(&self, bit: u64) {
        self.free.fetch_or(bit, Ordering::Release);
    }

    pub(crate) fn stats(&self) -> BounceStats {
        BounceStats {
            deferred: self.deferred.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: `base` was allocated with `layout` in `try_new` and is freed only here.
        unsafe { alloc::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}
