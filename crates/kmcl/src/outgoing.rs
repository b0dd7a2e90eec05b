//! Outgoing packets: owned by Rust until sent, by the bus while in flight, freed exactly once
//! by the completion path.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;
use kmcl_sys as sys;
use ntstatus::NtStatus;

use crate::library::{Api, PacketFreeFn, PacketGetPointerFn, entry, kmcl_call};
use crate::pool::PacketPool;

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

/// A send that KMCL refused.
///
/// Exactly one of these happened: KMCL never ran the packet's completion routine, and the
/// packet and the closure come back unused (the packet is freed when dropped; the closure can
/// be called to report the failure through the same path as a completion); or KMCL ran the
/// routine for the failed send anyway, which has then already run the closure with KMCL's
/// status and taken the packet (`packet` and `on_complete` are `None`). kmcl does not assume
/// which (reference §7.5 says a failed send runs no routine, but only as an inference); the
/// model can do either (`FaultPlan::complete_failed_sends`).
pub struct SendError<'ch, F> {
    /// The packet, unsent; `None` if the completion routine ran and freed it.
    pub packet: Option<OutgoingPacket<'ch>>,
    /// Why: KMCL's status, or `STATUS_INSUFFICIENT_RESOURCES` / `STATUS_INVALID_PARAMETER`
    /// from this layer.
    pub status: NtStatus,
    /// The closure, not run; `None` if the completion routine already ran it.
    pub on_complete: Option<F>,
}

impl<F> core::fmt::Debug for SendError<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendError")
            .field("packet", &self.packet)
            .field("status", &self.status)
            .field("closure_returned", &self.on_complete.is_some())
            .finish()
    }
}

impl<F: FnOnce(Completion<'_>)> SendError<'_, F> {
    /// Runs the returned closure with this error's status and no response, if the completion
    /// routine has not already run it: the one way to report a refused send through the same
    /// path as a completion, whichever way KMCL behaved.
    pub fn complete_with_status(self) {
        if let Some(f) = self.on_complete {
            f(Completion {
                status: self.status,
                response: &[],
            });
        }
    }
}

/// A packet from `VmbPacketAllocate`, not yet sent. Neither `Clone` nor `Copy`; freed
/// (`VmbPacketFree`) when dropped.
pub struct OutgoingPacket<'ch> {
    raw: sys::VMBPACKET,
    api: &'ch Api,
    origin: Origin,
    /// The in-flight state of a send that failed without its completion routine running: kept
    /// (its pointer still in the packet's slot) until the packet is freed or sent again, so
    /// that a routine KMCL might still run for that send finds it (see `SendError`).
    stale: Option<Stale>,
}

impl core::fmt::Debug for OutgoingPacket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutgoingPacket")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

// SAFETY: a VMBPACKET may be sent or freed from any thread at ≤ DISPATCH_LEVEL; the stale state
// holds no closure (it was taken back) and is only freed by this value.
unsafe impl Send for OutgoingPacket<'_> {}

/// Where a packet object came from, which decides how it is given back.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// `VmbPacketAllocate`: freed with `VmbPacketFree`.
    Allocated,
    /// `VmbPacketInitialize` in a slot of the channel's pool: the slot goes back to the pool
    /// (`VmbPacketFree` is invalid for it).
    Pool {
        pool: NonNull<PacketPool>,
        slot: u32,
    },
}

impl Origin {
    /// Gives the packet object back.
    ///
    /// # Safety
    /// `raw` is this origin's packet, unsent or with its send completed, and nobody uses it
    /// afterwards; for a pool packet the pool is alive (it lives in the channel's context).
    unsafe fn free(self, raw: sys::VMBPACKET, free: Option<PacketFreeFn>) {
        match self {
            Self::Allocated => {
                if let Some(free) = free {
                    // SAFETY: the caller's contract; `free` is the library's.
                    unsafe { free(raw) };
                }
            }
            // SAFETY: the pool outlives its packets (caller); the slot is ours to give back.
            Self::Pool { pool, slot } => unsafe { pool.as_ref() }.release(slot),
        }
    }
}

/// External data of a send.
enum External {
    None,
    Mdl {
        mdl: sys::PMDL,
        offset: u32,
        len: u32,
    },
    Pfns(Vec<u64>),
}

/// A type-erased `Box<InFlight<F>>` and the function that frees it.
struct Stale {
    state: NonNull<u8>,
    free: unsafe fn(NonNull<u8>),
}

impl Stale {
    fn free(self) {
        // SAFETY: `state` is a `Box<InFlight<F>>` for the `F` that `free` was instantiated
        // with (`OutgoingPacket::send_vec`), owned by this value only.
        unsafe { (self.free)(self.state) };
    }
}

/// What a sent packet owns while in flight: the closure, a stable copy of the payload, and
/// the bookkeeping that lets the send path and the completion routine agree on who runs the
/// closure and who frees what.
///
/// * `claimed`: whoever sets it first (the completion routine, or the send path after a
///   failed `VmbPacketSend`) takes the closure.
/// * `refs`: 2 at the start (the send path and the routine). When the routine claimed the
///   closure, each side drops its reference when done and the last one frees the packet and
///   this state. When the send path claimed it (a failed send), it keeps its reference in the
///   returned packet's `stale` and frees both itself; a routine that still runs only drops
///   its reference.
struct InFlight<F> {
    claimed: AtomicBool,
    refs: AtomicU8,
    on_complete: UnsafeCell<Option<F>>,
    payload: Vec<u8>,
    /// How the packet object is given back once both sides are done.
    origin: Origin,
    /// The page frame numbers of a `VmbPacketSendWithExternalPfns`, kept until completion.
    pfns: Vec<u64>,
}

impl<'ch> OutgoingPacket<'ch> {
    /// # Safety
    /// `raw` must be a fresh packet from `VmbPacketAllocate` of a channel using `api`, that
    /// nothing else owns.
    pub(crate) unsafe fn from_raw(raw: sys::VMBPACKET, api: &'ch Api) -> Self {
        Self {
            raw,
            api,
            origin: Origin::Allocated,
            stale: None,
        }
    }

    /// # Safety
    /// `raw` must be a packet just made by `VmbPacketInitialize` in slot `slot` of `pool`, a
    /// pool that outlives the packet and its send (it lives in the channel's context).
    pub(crate) unsafe fn from_pool(
        raw: sys::VMBPACKET,
        api: &'ch Api,
        pool: NonNull<PacketPool>,
        slot: u32,
    ) -> Self {
        Self {
            raw,
            api,
            origin: Origin::Pool { pool, slot },
            stale: None,
        }
    }

    /// The channel the packet belongs to (`VmbPacketGetChannel`).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn channel(&self) -> crate::ChannelRef<'ch> {
        // SAFETY: our live packet; GetChannel only reads it.
        let raw = unsafe {
            kmcl_call!(
                self.api,
                VmbPacketGetChannel(self.raw),
                core::ptr::null_mut()
            )
        };
        crate::ChannelRef::from_raw(raw, self.api)
    }

    /// [`send`](Self::send) with external data: `len` bytes of the MDL chain `mdl` from
    /// `offset` (0: to the end of the first MDL) travel as the packet's external data
    /// (`VmbPacketSendWithExternalMdl`). Always sent with `WAIT_FOR_COMPLETION` (KMCL requires
    /// it).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Safety
    /// `mdl` describes locked memory that stays locked and valid until `on_complete` has run,
    /// and that the host may read (and write) meanwhile.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub unsafe fn send_with_external_mdl<F>(
        self,
        payload: &[u8],
        mdl: sys::PMDL,
        offset: u32,
        len: u32,
        on_complete: F,
    ) -> Result<(), SendError<'ch, F>>
    where
        F: FnOnce(Completion<'_>) + Send + 'static,
    {
        let (packet, copy, on_complete) = self.copy_payload(payload, on_complete)?;
        packet.send_inner(
            copy,
            External::Mdl { mdl, offset, len },
            SendFlags::WAIT_FOR_COMPLETION,
            on_complete,
        )
    }

    /// [`send`](Self::send) with external data described as physical page frame numbers
    /// (`VmbPacketSendWithExternalPfns`); the array is copied and kept until completion.
    /// Always sent with `WAIT_FOR_COMPLETION`.
    ///
    /// # Errors
    /// As [`send`](Self::send); `STATUS_INVALID_PARAMETER` for more than `u32::MAX` PFNs.
    ///
    /// # Safety
    /// Every PFN is a page of memory the host may read (and write) until `on_complete` has run,
    /// locked and not reused until then.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub unsafe fn send_with_external_pfns<F>(
        self,
        payload: &[u8],
        pfns: &[u64],
        on_complete: F,
    ) -> Result<(), SendError<'ch, F>>
    where
        F: FnOnce(Completion<'_>) + Send + 'static,
    {
        let mut list = Vec::new();
        if list.try_reserve_exact(pfns.len()).is_err() {
            return Err(SendError {
                packet: Some(self),
                status: NtStatus::STATUS_INSUFFICIENT_RESOURCES,
                on_complete: Some(on_complete),
            });
        }
        list.extend_from_slice(pfns);
        let (packet, copy, on_complete) = self.copy_payload(payload, on_complete)?;
        packet.send_inner(
            copy,
            External::Pfns(list),
            SendFlags::WAIT_FOR_COMPLETION,
            on_complete,
        )
    }

    /// `payload` copied into memory the send can own (fallibly).
    fn copy_payload<F>(
        self,
        payload: &[u8],
        on_complete: F,
    ) -> Result<(Self, Vec<u8>, F), SendError<'ch, F>> {
        let mut copy = Vec::new();
        if copy.try_reserve_exact(payload.len()).is_err() {
            return Err(SendError {
                packet: Some(self),
                status: NtStatus::STATUS_INSUFFICIENT_RESOURCES,
                on_complete: Some(on_complete),
            });
        }
        copy.extend_from_slice(payload);
        Ok((self, copy, on_complete))
    }

    /// Sends `payload` (`VmbPacketSend`). Consumes the packet: the bus owns it until
    /// `on_complete` has run, exactly once, and then it is freed.
    ///
    /// The payload is copied into memory the packet owns until completion, since KMCL may
    /// queue the packet and read the buffer later (reference §6.2, inferred); that copy and the
    /// closure are one fallible allocation, so a send never panics on low memory.
    /// `on_complete` runs at ≤ DISPATCH_LEVEL, possibly before `send` returns, and must not
    /// block or take a lock held around `send`.
    ///
    /// # Errors
    /// A [`SendError`] with KMCL's status, `STATUS_INSUFFICIENT_RESOURCES` if the in-flight
    /// state cannot be allocated, or `STATUS_INVALID_PARAMETER` for a payload over 4 GiB;
    /// [`SendError::complete_with_status`] reports it through the closure.
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
        let (packet, copy, on_complete) = self.copy_payload(payload, on_complete)?;
        packet.send_vec(copy, flags, on_complete)
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
        self.send_inner(payload, External::None, flags, on_complete)
    }

    fn send_inner<F>(
        mut self,
        payload: Vec<u8>,
        external: External,
        flags: SendFlags,
        on_complete: F,
    ) -> Result<(), SendError<'ch, F>>
    where
        F: FnOnce(Completion<'_>) + Send + 'static,
    {
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(SendError {
                packet: Some(self),
                status: NtStatus::STATUS_INVALID_PARAMETER,
                on_complete: Some(on_complete),
            });
        };
        let (external, pfns) = match external {
            External::Pfns(list) => (External::None, list),
            other => (other, Vec::new()),
        };
        let Ok(pfn_count) = u32::try_from(pfns.len()) else {
            return Err(SendError {
                packet: Some(self),
                status: NtStatus::STATUS_INVALID_PARAMETER,
                on_complete: Some(on_complete),
            });
        };
        let with_pfns = !pfns.is_empty();
        let state = match try_box(InFlight {
            claimed: AtomicBool::new(false),
            refs: AtomicU8::new(2),
            on_complete: UnsafeCell::new(Some(on_complete)),
            payload,
            origin: self.origin,
            pfns,
        }) {
            Ok(state) => state,
            Err(InFlight { on_complete, .. }) => {
                return Err(SendError {
                    packet: Some(self),
                    status: NtStatus::STATUS_INSUFFICIENT_RESOURCES,
                    on_complete: on_complete.into_inner(),
                });
            }
        };
        // A previous failed send's state: no routine of that send runs any more now that the
        // packet is sent again (SendError's contract with KMCL).
        if let Some(stale) = self.stale.take() {
            stale.free();
        }
        let data = state.payload.as_ptr();
        let pfn_ptr = state.pfns.as_ptr();
        let state = NonNull::from(Box::leak(state));
        let raw = self.raw;
        let api = self.api;
        let this = ManuallyDrop::new(self);

        // SAFETY: `raw` is our unsent packet; its pointer slot now refers to `state`.
        unsafe { kmcl_call!(api, VmbPacketSetPointer(raw, state.as_ptr().cast()), ()) };
        // SAFETY: our unsent packet (not in flight); the routine expects `InFlight<F>` there.
        unsafe {
            kmcl_call!(
                api,
                VmbPacketSetCompletionRoutine(raw, Some(evt_completion::<F>)),
                ()
            );
        };
        // SAFETY: `data` is readable for `len` bytes and stays so until the last reference to
        // `state` is dropped, after the routine ran; after the call, `raw` and `state` are
        // only touched as the protocol of `InFlight` allows (the routine may already have run).
        // With external data, `pfn_ptr` and the MDL stay valid until completion: the PFNs
        // are in `state`, the MDL is the caller's (`send_with_external_mdl`'s contract).
        let wait = sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        let status = NtStatus(match external {
            // SAFETY: as for the plain send below, and `pfn_ptr` is readable for `pfn_count`
            // PFNs until the last reference to `state` is dropped.
            _ if with_pfns => unsafe {
                kmcl_call!(
                    api,
                    VmbPacketSendWithExternalPfns(
                        raw,
                        data.cast_mut().cast(),
                        len,
                        pfn_ptr.cast_mut(),
                        pfn_count,
                        flags.0 | wait,
                    ),
                    NtStatus::STATUS_NOT_SUPPORTED.0
                )
            },
            External::Mdl {
                mdl,
                offset,
                len: mdl_len,
            } =>
            // SAFETY: as for the plain send below; the MDL is valid until completion (the
            // caller's contract).
            unsafe {
                kmcl_call!(
                    api,
                    VmbPacketSendWithExternalMdl(
                        raw,
                        data.cast_mut().cast(),
                        len,
                        mdl,
                        offset,
                        mdl_len,
                        flags.0 | wait,
                    ),
                    NtStatus::STATUS_NOT_SUPPORTED.0
                )
            },
            // SAFETY: `data` is readable for `len` bytes and stays so until the last reference
            // to `state` is dropped, after the routine ran; after the call, `raw` and `state`
            // are only touched as the protocol of `InFlight` allows (the routine may already
            // have run).
            _ => unsafe {
                kmcl_call!(
                    api,
                    VmbPacketSend(raw, data.cast_mut().cast(), len, ptr::null_mut(), flags.0),
                    NtStatus::STATUS_NOT_SUPPORTED.0
                )
            },
        });
        // SAFETY: the send path's reference keeps `state` alive until `release` below or, on a
        // failure it claimed, until the packet frees it (`stale`).
        let st = unsafe { state.as_ref() };
        if status.is_success() {
            // SAFETY: the send path's reference, dropped once.
            unsafe { release::<F>(api, raw, state) };
            return Ok(());
        }
        if st.claimed.swap(true, Ordering::AcqRel) {
            // The routine ran (or runs) for this failed send: it has the closure, and the last
            // of the two frees the packet and the state.
            // SAFETY: the send path's reference, dropped once.
            unsafe { release::<F>(api, raw, state) };
            return Err(SendError {
                packet: None,
                status,
                on_complete: None,
            });
        }
        // SAFETY: the claim is ours, so nothing else reads or writes the closure cell.
        let on_complete = unsafe { (*st.on_complete.get()).take() };
        let mut packet = ManuallyDrop::into_inner(this);
        packet.stale = Some(Stale {
            state: state.cast(),
            free: free_state::<F>,
        });
        Err(SendError {
            packet: Some(packet),
            status,
            on_complete,
        })
    }
}

impl Drop for OutgoingPacket<'_> {
    fn drop(&mut self) {
        // SAFETY: an unsent packet owned by this value; given back exactly once, here. After
        // that no completion routine of it runs, so a stale state can go too.
        unsafe { self.origin.free(self.raw, self.api.table.VmbPacketFree) };
        if let Some(stale) = self.stale.take() {
            stale.free();
        }
    }
}

/// Frees a `Box<InFlight<F>>` given as a type-erased pointer.
///
/// # Safety
/// `state` must come from `Box::leak` of a `Box<InFlight<F>>` for this `F`, and no one may use
/// it afterwards.
unsafe fn free_state<F>(state: NonNull<u8>) {
    // SAFETY: the caller's contract.
    drop(unsafe { Box::from_raw(state.cast::<InFlight<F>>().as_ptr()) });
}

/// Drops one reference to `state`; the last one frees the packet and the state.
///
/// # Safety
/// The caller holds one reference to `state` (of packet `raw`, sent through `api`), which it
/// gives up here; the routine claimed the closure, so the packet is no one else's to free.
unsafe fn release<F>(api: &Api, raw: sys::VMBPACKET, state: NonNull<InFlight<F>>) {
    // SAFETY: the caller holds a reference, so `state` is alive.
    let st = unsafe { state.as_ref() };
    if st.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: a custom completion routine makes the driver responsible for giving the
        // packet back once the routine ran (reference §6.2), and this is the last user of both.
        unsafe { st.origin.free(raw, api.table.VmbPacketFree) };
        // SAFETY: the last reference: nobody uses `state` after this.
        unsafe { free_state::<F>(state.cast()) };
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
    let (Some(get_pointer), Some(free)) = (
        entry!(PACKET_GET_POINTER as PacketGetPointerFn),
        entry!(PACKET_FREE as PacketFreeFn),
    ) else {
        return;
    };
    // SAFETY: KMCL passes the packet whose routine this is; GetPointer reads its slot.
    let Some(state) = NonNull::new(unsafe { get_pointer(packet) }.cast::<InFlight<F>>()) else {
        return;
    };
    // SAFETY: the slot was set by `send_vec` to a live `InFlight<F>` for this very `F`, which
    // holds a reference for this routine until it is dropped below.
    let st = unsafe { state.as_ref() };
    if st.claimed.swap(true, Ordering::AcqRel) {
        // The send failed and its path took the closure; the packet is the caller's. Only drop
        // the routine's reference (the packet's `stale` frees the state).
        st.refs.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    // SAFETY: the claim is ours: nothing else touches the closure cell.
    if let Some(on_complete) = unsafe { (*st.on_complete.get()).take() } {
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
    }
    if st.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: the last reference (the send path already dropped its own): a custom
        // completion routine makes the driver responsible for giving the packet back once it
        // ran (reference §6.2); nothing touches `packet` or `state` after this.
        unsafe { st.origin.free(packet, Some(free)) };
        // SAFETY: as above, for the state.
        unsafe { free_state::<F>(state.cast()) };
    }
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
