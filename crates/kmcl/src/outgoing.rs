//! Outgoing packets: owned by Rust until sent, by the bus while in flight, freed exactly once
//! by the completion path.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};

use alloc::boxed::Box;
use alloc::vec::Vec;
use kmcl_sys as sys;
use ntstatus::NtStatus;

/// Flags for [`OutgoingPacket::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SendFlags(u32);

impl SendFlags {
    /// The completion closure runs as soon as the packet is in the ring; the host sends no
    /// completion.
    pub const NONE: Self = Self(0);
    /// Ask the host for a completion: the closure runs with the host's status and response.
    pub const WAIT_FOR_COMPLETION: Self = Self(sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
}

/// What the completion closure of a send receives.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The transaction's status: the host's, or `STATUS_CANCELLED` when the channel closed
    /// with the packet in flight.
    pub status: NtStatus,
    /// The host's response (empty without `WAIT_FOR_COMPLETION`). Valid during the closure
    /// only; it comes from a hostile host: validate before use.
    pub response: &'a [u8],
}

/// A send that KMCL refused: the packet and the completion closure come back unused (the
/// packet is freed when dropped; the closure can be called to report the failure through the
/// same path as a completion).
pub struct SendError<'ch, F> {
    /// The packet, unsent.
    pub packet: OutgoingPacket<'ch>,
    /// Why: KMCL's status, or `STATUS_INSUFFICIENT_RESOURCES` / `STATUS_INVALID_PARAMETER`
    /// from this layer.
    pub status: NtStatus,
    /// The closure, not run.
    pub on_complete: F,
}

impl<F> core::fmt::Debug for SendError<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendError")
            .field("packet", &self.packet)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A packet from `VmbPacketAllocate`, not yet sent. Neither `Clone` nor `Copy`; freed
/// (`VmbPacketFree`) when dropped.
#[derive(Debug)]
pub struct OutgoingPacket<'ch> {
    raw: sys::VMBPACKET,
    _channel: PhantomData<&'ch ()>,
}

// SAFETY: a VMBPACKET may be sent or freed from any thread at ≤ DISPATCH_LEVEL.
unsafe impl Send for OutgoingPacket<'_> {}

/// What a sent packet owns while in flight: the closure and a stable copy of the payload.
struct InFlight<F> {
    on_complete: F,
    payload: Vec<u8>,
}

impl<'ch> OutgoingPacket<'ch> {
    /// # Safety
    /// `raw` must be a fresh packet from `VmbPacketAllocate` that nothing else owns.
    pub(crate) unsafe fn from_raw(raw: sys::VMBPACKET) -> Self {
        Self {
            raw,
            _channel: PhantomData,
        }
    }

    /// Sends `payload` (`VmbPacketSend`). Consumes the packet: the bus owns it until
    /// `on_complete` has run, exactly once, and then it is freed.
    ///
    /// The payload is copied into memory the packet owns until completion, since KMCL may
    /// queue the packet and read the buffer later (reference §6.2 [inf]); that copy and the
    /// closure are one fallible allocation, so a send never panics on low memory.
    /// `on_complete` runs at ≤ DISPATCH_LEVEL, possibly before `send` returns, and must not
    /// block or take a lock held around `send`.
    ///
    /// # Errors
    /// The packet and `on_complete` back, unsent and not run, with KMCL's status,
    /// `STATUS_INSUFFICIENT_RESOURCES` if the in-flight state cannot be allocated, or
    /// `STATUS_INVALID_PARAMETER` for a payload over 4 GiB.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn send<F>(
        self,
        payload: &[u8],
        flags: SendFlags,
        on_complete: F,
    ) -> Result<(), SendError<'ch, F>>
    where
        F: FnOnce(Completion<'_>) + Send + 'static,
    {
        let mut copy = Vec::new();
        if copy.try_reserve_exact(payload.len()).is_err() {
            return Err(SendError {
                packet: self,
                status: NtStatus::STATUS_INSUFFICIENT_RESOURCES,
                on_complete,
            });
        }
        copy.extend_from_slice(payload);
        self.send_vec(copy, flags, on_complete)
    }

    /// [`send`](Self::send) for a payload the caller already owns: the buffer itself is kept
    /// until completion, with no copy. It is dropped if the send fails.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn send_vec<F>(
        self,
        payload: Vec<u8>,
        flags: SendFlags,
        on_complete: F,
    ) -> Result<(), SendError<'ch, F>>
    where
        F: FnOnce(Completion<'_>) + Send + 'static,
    {
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(SendError {
                packet: self,
                status: NtStatus::STATUS_INVALID_PARAMETER,
                on_complete,
            });
        };
        let state = match try_box(InFlight {
            on_complete,
            payload,
        }) {
            Ok(state) => state,
            Err(InFlight { on_complete, .. }) => {
                return Err(SendError {
                    packet: self,
                    status: NtStatus::STATUS_INSUFFICIENT_RESOURCES,
                    on_complete,
                });
            }
        };
        let data = state.payload.as_ptr();
        let state = Box::into_raw(state);
        let raw = self.raw;
        let this = ManuallyDrop::new(self);

        // SAFETY: `raw` is our unsent packet; its pointer slot now owns `state`.
        unsafe { sys::VmbPacketSetPointer(raw, state.cast()) };
        // SAFETY: our unsent packet (not in flight); the routine expects `InFlight<F>` there.
        unsafe { sys::VmbPacketSetCompletionRoutine(raw, Some(evt_completion::<F>)) };
        // SAFETY: `data` is readable for `len` bytes and stays so until the completion routine
        // frees `state`; after a successful send, `raw` and `state` belong to the bus and are
        // not touched here again (the routine may already have run).
        let status = NtStatus(unsafe {
            sys::VmbPacketSend(raw, data.cast_mut().cast(), len, ptr::null_mut(), flags.0)
        });
        if status.is_success() {
            return Ok(());
        }
        // A failed send does not run the routine (reference §7.5 [inf]): the state is ours.
        // SAFETY: `raw` is still our packet; clear the slot before freeing what it pointed to.
        unsafe { sys::VmbPacketSetPointer(raw, ptr::null_mut()) };
        // SAFETY: `state` came from `Box::into_raw` above and the send that could have taken
        // it failed, so this is its only owner.
        let InFlight { on_complete, .. } = *unsafe { Box::from_raw(state) };
        Err(SendError {
            packet: ManuallyDrop::into_inner(this),
            status,
            on_complete,
        })
    }
}

impl Drop for OutgoingPacket<'_> {
    fn drop(&mut self) {
        // SAFETY: an unsent packet owned by this value; freed exactly once, here.
        unsafe { sys::VmbPacketFree(self.raw) };
    }
}

unsafe extern "C" fn evt_completion<F>(
    packet: sys::VMBPACKET,
    status: sys::NTSTATUS,
    buffer: sys::PVOID,
    length: sys::UINT32,
) where
    F: FnOnce(Completion<'_>) + Send + 'static,
{
    // SAFETY: KMCL passes the packet whose routine this is; GetPointer reads its slot.
    let state = unsafe { sys::VmbPacketGetPointer(packet) }.cast::<InFlight<F>>();
    if let Some(state) = NonNull::new(state) {
        // SAFETY: the slot was set by `send` to a `Box<InFlight<F>>` for this very `F`, and
        // KMCL runs the routine exactly once per send, so the box is taken exactly once.
        let InFlight {
            on_complete,
            payload,
        } = *unsafe { Box::from_raw(state.as_ptr()) };
        let response: &[u8] = match (NonNull::new(buffer.cast::<u8>()), usize::try_from(length)) {
            (Some(p), Ok(n)) if n > 0 => {
                // SAFETY: KMCL guarantees `buffer` readable for `length` bytes during the
                // routine (`_In_reads_bytes_opt_`); the slice does not outlive the closure.
                unsafe { core::slice::from_raw_parts(p.as_ptr(), n) }
            }
            _ => &[],
        };
        on_complete(Completion {
            status: NtStatus(status),
            response,
        });
        drop(payload);
    }
    // SAFETY: a custom completion routine makes the driver responsible for freeing the packet
    // once the routine ran (reference §6.2); nothing touches `packet` after this.
    unsafe { sys::VmbPacketFree(packet) };
}

/// `Box::new` that returns the value back instead of panicking when the allocator fails (a
/// kernel pool allocation can fail; a panic in a driver is a bugcheck).
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>, T> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: `layout` has a non-zero size.
    let raw = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    let Some(raw) = NonNull::new(raw) else {
        return Err(value);
    };
    // SAFETY: `raw` is valid for writes of one `T` and aligned for it (allocated with its layout).
    unsafe { raw.as_ptr().write(value) };
    // SAFETY: `raw` was allocated by the global allocator with `Layout::new::<T>()` and holds
    // an initialised `T`, which is what `Box::from_raw` requires.
    Ok(unsafe { Box::from_raw(raw.as_ptr()) })
}
