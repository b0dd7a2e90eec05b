//! The channel lifecycle as types: [`ChannelBuilder`] (allocated, configurable) →
//! [`Channel`] (enabled) → [`DisabledChannel`] (closed, re-enableable) → cleanup on drop; and
//! the bridge from KMCL's C callbacks to [`ChannelHandler`].

use core::ptr::{self, NonNull};
use core::time::Duration;

use alloc::boxed::Box;
use kmcl_sys as sys;
use ntstatus::NtStatus;

use crate::Guid;
use crate::bounce::{Bounce, BounceStats, Claim, DEFAULT_BOUNCE_BUFFERS, DEFAULT_SLOT_SIZE};
use crate::gpadl::{Gpadl, GpadlAccess, GpadlShare, SharedBuffer};
use crate::incoming::{IncomingPacket, PacketFlags};
use crate::library::{Api, ChannelGetPointerFn, Library, hot_entry, kmcl_call};
use crate::outgoing::{OutgoingPacket, try_box};
use crate::pool::{MAX_PREALLOCATED_PACKETS, PacketPool};
use crate::shared::copy_from_shared;

/// What a VMBus client driver does when KMCL calls it.
///
/// One value per channel, shared by every callback; KMCL may call
/// [`process_packet`](Self::process_packet) on several processors at once, hence `Sync`.
/// Callbacks must not panic: in a driver a panic is a bugcheck.
pub trait ChannelHandler: Send + Sync + 'static {
    /// The response an [`IncomingPacket`] is completed with when it is dropped without being
    /// completed, failed or deferred (a protocol-level "failed" reply; empty by default).
    const UNCONSUMED_RESPONSE: &'static [u8] = &[];

    /// The largest packet this handler takes, when its protocol fixes one at compile time
    /// (`None`, the default: the channel's [`max_packet_size`](ChannelBuilder::max_packet_size),
    /// set at run time, is the only bound). With `Some(n)`, a packet longer than `n` bytes is
    /// completed with [`UNCONSUMED_RESPONSE`](Self::UNCONSUMED_RESPONSE) without reaching the
    /// handler (counted in [`BounceStats::oversized`]), and the channel's bounce buffers hold at
    /// least `n` bytes whatever its maximum packet size: `process_packet`'s `data` is never
    /// longer than `n`, a bound the compiler sees, so the handler's own checks against it fold
    /// away.
    const MAX_PACKET_SIZE: Option<u32> = None;

    /// A packet arrived. `data` is the payload, valid for this call only (copy what must be
    /// kept): a private copy nobody else can change, whatever KMCL passed (module `bounce`);
    /// `packet` must be retired exactly once, now or later, from any thread.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (PASSIVE_LEVEL if the channel was configured with
    /// [`ChannelBuilder::incoming_at_passive`], or for a packet redelivered after
    /// [`IncomingPacket::defer_to_passive`]). Must not block.
    fn process_packet(
        &self,
        channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        flags: PacketFlags,
    );

    /// Called when the last packet of a delivery batch has been processed (the ring went
    /// empty), with the number of packets in the batch: `Some(Self::method)` registers
    /// `EvtVmbChannelProcessingComplete`. `None`, the default, registers nothing, so KMCL makes
    /// no call at all at the end of a batch (a handler that has nothing to do there costs
    /// nothing there).
    ///
    /// # IRQL
    /// Same as [`process_packet`](Self::process_packet).
    const PROCESSING_COMPLETE: Option<fn(&Self, ChannelRef<'_>, u32)> = None;

    /// The host opened the channel. A failure status rolls it back to no traffic.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn opened(&self, _channel: ChannelRef<'_>) -> NtStatus {
        NtStatus::STATUS_SUCCESS
    }

    /// The channel started; no packet has been delivered yet. May queue sends but must not wait
    /// for any I/O (a synchronous request here never returns).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn started(&self, _channel: ChannelRef<'_>) {}

    /// The incoming queue is running: the place for synchronous requests such as protocol
    /// negotiation ([`ChannelRef::send_sync`]).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn post_started(&self, _channel: ChannelRef<'_>) {}

    /// The channel is being paused or closed: no more `process_packet` calls; every packet
    /// already delivered must still be retired (KMCL waits for them), and sending must stop.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn suspend(&self, _channel: ChannelRef<'_>) {}

    /// The channel closed (our disable, or the host rescinded it). A guest channel is now
    /// disabled and must be re-enabled to carry traffic again.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn closed(&self, _channel: ChannelRef<'_>) {}

    /// The target device was found but connecting to it failed asynchronously.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn pnp_failure(&self, _channel: ChannelRef<'_>, _status: NtStatus) {}
}

/// The device object a channel is allocated under (KMCL's `ParentDeviceObject`).
#[derive(Debug, Clone, Copy)]
pub struct ParentDevice(sys::PDEVICE_OBJECT);

impl ParentDevice {
    /// Wraps a raw `PDEVICE_OBJECT`.
    ///
    /// # Safety
    /// `device` must be a device object that stays valid for as long as any channel allocated
    /// under it exists (in a KMDF driver: `WdfDeviceWdmGetDeviceObject` of the device that
    /// owns the channel).
    #[must_use]
    pub const unsafe fn from_raw(device: sys::PDEVICE_OBJECT) -> Self {
        Self(device)
    }
}

/// Channel-wide flags for [`ChannelBuilder::flags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChannelFlags(u32);

impl ChannelFlags {
    /// No flags: a packet-mode channel.
    pub const NONE: Self = Self(0);
    /// Pipe mode: VMBus owns the framing; no transactions.
    pub const IS_PIPE: Self = Self(sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE);
}

/// How long [`ChannelRef::send_sync`] waits for the host's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Wait until the host answers or the channel closes.
    Infinite,
    /// Wait at most this long; then the request is cancelled (`STATUS_CANCELLED`).
    After(Duration),
}

impl Timeout {
    /// KeWaitForSingleObject form: negative = relative, in 100 ns units.
    fn as_relative_100ns(self) -> Option<i64> {
        match self {
            Self::Infinite => None,
            Self::After(d) => {
                let units = d.as_nanos() / 100;
                // A zero wait means "do not even queue" to KMCL; round up to one unit.
                let units = i64::try_from(units).unwrap_or(i64::MAX).max(1);
                Some(-units)
            }
        }
    }
}

/// What every channel's context starts with, whatever its handler type, so that a
/// [`ChannelRef`] (which does not know `H`) reaches it through the context pointer.
#[repr(C)]
pub(crate) struct Header {
    /// Must stay the first field: a `NonNull<GpadlShare>` to it is a pointer to the context.
    gpadls: GpadlShare,
    /// Packets in memory allocated at enable ([`ChannelBuilder::preallocated_packets`]); set
    /// only before the first enable, when no callback or packet can see it.
    pool: Option<PacketPool>,
    /// How many packets [`ChannelBuilder::preallocated_packets`] asked for.
    pool_wanted: u32,
}

/// The per-channel context KMCL hands back to every callback (`VmbChannelSetPointer`): the
/// header (first), the handler, the channel's own reference on the library, and its bounce
/// buffers.
#[repr(C)]
struct Inner<H> {
    header: Header,
    handler: H,
    /// Released (`InterfaceDereference`) when `Inner` is freed, after `VmbChannelCleanup`.
    library: Library,
    /// Replaced only by the builder (before `VmbChannelEnable`, when no callback can run). Its
    /// slots hold at least `H::MAX_PACKET_SIZE` bytes ([`slot_size_for`]): the trampoline
    /// relies on it.
    bounce: Bounce,
}

/// The bounce buffer size of a channel of `H` whose maximum packet size is `packet`: at least
/// `H::MAX_PACKET_SIZE`, so that every packet the handler takes fits.
fn slot_size_for<H: ChannelHandler>(packet: u32) -> u32 {
    packet.max(H::MAX_PACKET_SIZE.unwrap_or(0))
}

/// Recovers the channel's context from a channel handle in a callback.
///
/// # Safety
/// `channel` must be a channel whose pointer slot was set by [`ChannelBuilder::new`] with an
/// `Inner<H>` of this same `H`, and that has not been cleaned up.
unsafe fn inner<'a, H: ChannelHandler>(channel: sys::VMBCHANNEL) -> Option<&'a Inner<H>> {
    let get_pointer = hot_entry!(CHANNEL_GET_POINTER as ChannelGetPointerFn);
    // SAFETY: `channel` is the handle KMCL passes to our own callbacks; GetPointer only reads
    // its context slot, at any IRQL (reference §7.3). `get_pointer` is the library's, and the
    // channel holds a reference on it.
    let ctx = unsafe { get_pointer(channel) }.cast::<Inner<H>>();
    // SAFETY: per this function's contract the slot holds a live `Inner<H>` owned by the
    // builder/channel, which is only freed after `VmbChannelCleanup`, after which KMCL makes no
    // more callbacks. `Inner` is only ever shared (`&`) once the channel is enabled.
    unsafe { ctx.as_ref() }
}

/// Recovers the handler from a channel handle in a callback.
///
/// # Safety
/// As [`inner`].
unsafe fn handler<'a, H: ChannelHandler>(channel: sys::VMBCHANNEL) -> Option<(&'a H, &'a Api)> {
    // SAFETY: forwarded contract.
    unsafe { inner::<H>(channel) }.map(|inner| (&inner.handler, inner.library.api()))
}

unsafe extern "C" fn evt_process_packet<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    packet: sys::VMBPACKETCOMPLETION,
    buffer: sys::PVOID,
    length: sys::UINT32,
    flags: sys::UINT32,
) {
    // SAFETY: registered only on channels built with `Inner<H>` (`ChannelBuilder::<H>::new`).
    let inner = unsafe { inner::<H>(channel) };
    // SAFETY: KMCL hands over one completion obligation per call; it is wrapped exactly once.
    let packet = unsafe { IncomingPacket::from_raw(packet, const { &H::UNCONSUMED_RESPONSE }) };
    let Some(inner) = inner else {
        // Unreachable by construction; retire the packet rather than leave the host hanging.
        packet.complete(H::UNCONSUMED_RESPONSE);
        return;
    };
    let channel_ref = ChannelRef::from_raw(channel, inner.library.api());
    let flags = PacketFlags::from_bits(flags);
    let source = buffer.cast::<u8>().cast_const();
    // No buffer is no bytes, whatever the length says.
    let len = if source.is_null() {
        0
    } else {
        usize::try_from(length).unwrap_or(usize::MAX)
    };
    // Every packet, empty ones too, takes a bounce buffer: one path, and one call of the
    // handler (inlined here).
    let claim = match H::MAX_PACKET_SIZE {
        Some(max) if len > usize::try_from(max).unwrap_or(usize::MAX) => inner.bounce.refuse(),
        // SAFETY: every bounce of an `Inner<H>` has slots of at least `H::MAX_PACKET_SIZE`
        // bytes (made only by `new` and `rebounce`, sized by `slot_size_for`), and `len` is at
        // most that (the arm above).
        Some(_) => unsafe { inner.bounce.claim_fitting(len) },
        None => inner.bounce.claim(len),
    };
    let (slot, bit) = match claim {
        Claim::Slot(bit, slot) => (slot, bit),
        // Every buffer is in use on other processors: KMCL delivers it again at PASSIVE_LEVEL.
        // This is the inline call DeferToPassive requires.
        Claim::Busy => return packet.defer_to_passive(),
        // Longer than the channel's maximum packet size or the handler's: never handed to the
        // handler.
        Claim::TooLarge => return packet.complete(H::UNCONSUMED_RESPONSE),
    };
    // SAFETY: `slot` is exactly `len` bytes. `len` is 0 when `source` is null (every pointer
    // is valid for zero bytes, and `copy_from_shared` reads nothing then), else KMCL guarantees
    // `source` readable for `length` bytes for the duration of this callback
    // (`_In_reads_bytes_(BufferLength)`); the host may still write it, which
    // `copy_from_shared` tolerates.
    unsafe { copy_from_shared(source, slot) };
    inner
        .handler
        .process_packet(channel_ref, packet, slot, flags);
    inner.bounce.release(bit);
}

/// Registered only when `H::PROCESSING_COMPLETE` is `Some`.
unsafe extern "C" fn evt_processing_complete<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    packets: sys::UINT32,
) {
    let Some(callback) = H::PROCESSING_COMPLETE else {
        return;
    };
    // SAFETY: registered only on channels built with `Inner<H>`.
    if let Some((h, api)) = unsafe { handler::<H>(channel) } {
        callback(h, ChannelRef::from_raw(channel, api), packets);
    }
}

unsafe extern "C" fn evt_opened<H: ChannelHandler>(channel: sys::VMBCHANNEL) -> sys::NTSTATUS {
    // SAFETY: registered only on channels built with `Inner<H>`.
    match unsafe { handler::<H>(channel) } {
        Some((h, api)) => h.opened(ChannelRef::from_raw(channel, api)).0,
        None => NtStatus::STATUS_INVALID_DEVICE_STATE.0,
    }
}

macro_rules! state_trampoline {
    ($name:ident, $method:ident) => {
        unsafe extern "C" fn $name<H: ChannelHandler>(channel: sys::VMBCHANNEL) {
            // SAFETY: registered only on channels built with `Inner<H>`.
            if let Some((h, api)) = unsafe { handler::<H>(channel) } {
                h.$method(ChannelRef::from_raw(channel, api));
            }
        }
    };
}
state_trampoline!(evt_closed, closed);
state_trampoline!(evt_suspend, suspend);
state_trampoline!(evt_started, started);
state_trampoline!(evt_post_started, post_started);

unsafe extern "C" fn evt_pnp_failure<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    status: sys::NTSTATUS,
) {
    // SAFETY: registered only on channels built with `Inner<H>`.
    if let Some((h, api)) = unsafe { handler::<H>(channel) } {
        h.pnp_failure(ChannelRef::from_raw(channel, api), NtStatus(status));
    }
}

/// The raw handle and the owned context, shared by the three lifecycle types.
struct Owned<H> {
    raw: sys::VMBCHANNEL,
    inner: NonNull<Inner<H>>,
}

impl<H> Owned<H> {
    fn api(&self) -> &Api {
        // SAFETY: `inner` is live for as long as `Owned` exists and is only ever shared.
        unsafe { self.inner.as_ref() }.library.api()
    }

    /// Cleans the channel up and frees the context (with the channel's library reference), now,
    /// or when its last [`Gpadl`] is deleted if some are still alive. The channel must be
    /// disabled, and this must be the last use of `self` (it is only called from the owner
    /// types' `Drop`).
    fn cleanup(&mut self) {
        // SAFETY: `inner` is live until `finish_channel` runs, which only this (or the last
        // GPADL) starts.
        if unsafe { self.inner.as_ref() }.header.gpadls.cleanup_now() {
            // SAFETY: no GPADL is alive and the owner is done: nothing uses the channel any
            // more; `gpadls` is the first field of the `#[repr(C)]` context.
            unsafe { finish_channel::<H>(self.raw, self.inner.cast()) };
        }
    }
}

/// `VmbChannelCleanup`, then frees the context (with the channel's library reference).
///
/// # Safety
/// `raw` is a disabled channel whose context is the `Inner<H>` at `share` (the first field of
/// its first field);
/// nothing uses either any more; called once.
unsafe fn finish_channel<H>(raw: sys::VMBCHANNEL, share: NonNull<GpadlShare>) {
    let inner = share.cast::<Inner<H>>();
    // SAFETY: the context is alive until freed below (caller).
    let api = unsafe { inner.as_ref() }.library.api();
    // SAFETY: `raw` is our channel and is disabled (caller); after Cleanup KMCL makes no
    // callbacks, so the context can go.
    unsafe { kmcl_call!(api, VmbChannelCleanup(raw), ()) };
    // SAFETY: `inner` came from `Box::into_raw` in `ChannelBuilder::new` and is freed only here,
    // once, after the last callback or GPADL that could read it. Dropping it releases the
    // channel's reference on the library, the last thing that used it.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

/// An allocated, disabled channel being configured. The only type with the init setters.
///
/// Dropping it cleans the channel up (`VmbChannelCleanup`).
#[derive(Debug)]
pub struct ChannelBuilder<H: ChannelHandler> {
    owned: Owned<H>,
}

/// An enabled channel. It has no init setters.
///
/// Dropping it disables the channel (blocking until teardown, PASSIVE_LEVEL only) and cleans
/// it up.
#[derive(Debug)]
pub struct Channel<H: ChannelHandler> {
    owned: Owned<H>,
}

/// A channel that was enabled and has been disabled again: it can only be re-enabled or
/// dropped (cleaned up). KMCL does not allow init setters after the first enable.
#[derive(Debug)]
pub struct DisabledChannel<H: ChannelHandler> {
    owned: Owned<H>,
}

impl<H> core::fmt::Debug for Owned<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel").field("raw", &self.raw).finish()
    }
}

// SAFETY: a VMBCHANNEL may be used from any thread (KMCL serialises internally); the context is
// only shared as `&H`, and `H: Send + Sync`.
unsafe impl<H: ChannelHandler> Send for Owned<H> {}
// SAFETY: as above; `&Owned` only exposes `&H` and KMCL calls that are safe concurrently.
unsafe impl<H: ChannelHandler> Sync for Owned<H> {}

impl<H: ChannelHandler> ChannelBuilder<H> {
    /// Allocates a client channel (`VmbChannelAllocate`) through `library`, attaches `handler`
    /// as its context and registers the packet and state-change callbacks.
    ///
    /// The channel takes its own reference on `library` (a clone), held until
    /// `VmbChannelCleanup` has returned, and [`DEFAULT_BOUNCE_BUFFERS`] bounce buffers of the
    /// maximum packet size ([`max_packet_size`](Self::max_packet_size),
    /// [`concurrent_deliveries`](Self::concurrent_deliveries)).
    ///
    /// `parent` decides which VMBus channel this is: without
    /// [`target`](Self::target), KMCL binds the channel of the VMBus device under `parent`
    /// (the function driver's own device stack); with it, KMCL looks the offer up by GUID.
    ///
    /// # Errors
    /// KMCL's status when allocation or callback registration fails;
    /// `STATUS_INSUFFICIENT_RESOURCES` if the context or the bounce buffers cannot be
    /// allocated.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn new(library: &Library, parent: ParentDevice, handler: H) -> Result<Self, NtStatus> {
        const NO_MEMORY: NtStatus = NtStatus::STATUS_INSUFFICIENT_RESOURCES;
        let bounce = Bounce::try_new(
            DEFAULT_BOUNCE_BUFFERS,
            slot_size_for::<H>(DEFAULT_SLOT_SIZE),
        )
        .ok_or(NO_MEMORY)?;
        let mut inner = try_box(Inner {
            header: Header {
                gpadls: GpadlShare::new(finish_channel::<H>),
                pool: None,
                pool_wanted: 0,
            },
            handler,
            library: library.clone(),
            bounce,
        })
        .map_err(|_| NO_MEMORY)?;
        let api = NonNull::from(inner.library.api());
        // SAFETY: the library lives in the same context, which `finish_channel` frees last.
        unsafe { inner.header.gpadls.set_api(api) };
        let mut raw: sys::VMBCHANNEL = ptr::null_mut();
        // SAFETY: `parent` is a valid device object (ParentDevice::from_raw's contract) and
        // `raw` is a valid out pointer; KMCL writes it only on success.
        let status = NtStatus(unsafe {
            kmcl_call!(
                inner.library.api(),
                VmbChannelAllocate(parent.0, 0, &raw mut raw),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        if !status.is_success() {
            return Err(status);
        }
        if raw.is_null() {
            return Err(NtStatus::STATUS_INTERNAL_ERROR);
        }
        let inner = NonNull::from(Box::leak(inner));
        let builder = Self {
            owned: Owned { raw, inner },
        };
        let api = builder.owned.api();
        // SAFETY: `raw` is our disabled channel; the context lives until `Owned::cleanup`.
        unsafe { kmcl_call!(api, VmbChannelSetPointer(raw, inner.as_ptr().cast()), ()) };

        // SAFETY: `raw` is disabled; the trampolines match the C typedefs and expect `Inner<H>`.
        let status = NtStatus(unsafe {
            kmcl_call!(
                api,
                VmbChannelInitSetProcessPacketCallbacks(
                    raw,
                    Some(evt_process_packet::<H>),
                    // Optional (`_In_opt_`, reference §7.2): none unless the handler has one.
                    H::PROCESSING_COMPLETE.map(|_| evt_processing_complete::<H> as _),
                ),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        status.ok()?;

        let mut callbacks = sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
        callbacks.EvtChannelOpened = Some(evt_opened::<H>);
        callbacks.EvtChannelClosed = Some(evt_closed::<H>);
        callbacks.EvtChannelSuspend = Some(evt_suspend::<H>);
        callbacks.EvtChannelStarted = Some(evt_started::<H>);
        callbacks.EvtChannelPostStarted = Some(evt_post_started::<H>);
        // SAFETY: `raw` is disabled; KMCL copies the struct (reference §7.2 [inf], in-box
        // drivers pass a stack copy), so a local is enough.
        let status = NtStatus(unsafe {
            kmcl_call!(
                api,
                VmbChannelInitSetStateChangeCallbacks(raw, &raw mut callbacks),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        status.ok()?;
        Ok(builder)
    }

    fn raw(&self) -> sys::VMBCHANNEL {
        self.owned.raw
    }

    fn api(&self) -> &Api {
        self.owned.api()
    }

    /// Replaces the bounce buffers with `slots` buffers of `slot_size` bytes (at least
    /// `H::MAX_PACKET_SIZE`).
    fn rebounce(&mut self, slots: u32, slot_size: u32) -> Result<(), NtStatus> {
        let slot_size = slot_size_for::<H>(slot_size);
        if slots == self.bounce_slots()
            && slot_size.checked_next_multiple_of(64) == Some(self.bounce_slot_size())
        {
            return Ok(()); // the buffers it has already
        }
        let bounce =
            Bounce::try_new(slots, slot_size).ok_or(NtStatus::STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: the channel has never been enabled (this type's invariant), so no callback
        // runs and nothing else references `inner`; `&mut self` excludes the builder's own
        // shared borrows (`handler()`). The old buffers are dropped here.
        unsafe { (*self.owned.inner.as_ptr()).bounce = bounce };
        Ok(())
    }

    fn bounce_slots(&self) -> u32 {
        // SAFETY: `inner` is live while the builder exists.
        let inner = unsafe { self.owned.inner.as_ref() };
        inner.bounce.slots()
    }

    fn bounce_slot_size(&self) -> u32 {
        // SAFETY: `inner` is live while the builder exists.
        let inner = unsafe { self.owned.inner.as_ref() };
        inner.bounce.slot_size()
    }

    /// The largest packet either side will send or complete
    /// (`VmbChannelInitSetMaximumPacketSize`); also the size of each bounce buffer (or the
    /// handler's [`ChannelHandler::MAX_PACKET_SIZE`], if larger), so that every packet a
    /// well-behaved host sends reaches the handler.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_2` for 0, KMCL's status, or `STATUS_INSUFFICIENT_RESOURCES`
    /// when the bounce buffers cannot be resized.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn max_packet_size(&mut self, bytes: u32) -> Result<(), NtStatus> {
        // SAFETY: our channel, disabled and never enabled (this type's invariant).
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelInitSetMaximumPacketSize(self.raw(), bytes),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()?;
        self.rebounce(self.bounce_slots(), bytes)
    }

    /// How many packets KMCL may deliver to this channel's handler at once without one being
    /// handed back for a later delivery at PASSIVE_LEVEL: the number of bounce buffers
    /// (default [`DEFAULT_BOUNCE_BUFFERS`], at most
    /// [`MAX_BOUNCE_BUFFERS`](crate::MAX_BOUNCE_BUFFERS)). Each costs one maximum-size packet
    /// of non-paged memory.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` outside `1..=MAX_BOUNCE_BUFFERS`;
    /// `STATUS_INSUFFICIENT_RESOURCES` when the buffers cannot be allocated.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn concurrent_deliveries(&mut self, n: u32) -> Result<(), NtStatus> {
        if n == 0 || n > crate::MAX_BOUNCE_BUFFERS {
            return Err(NtStatus::STATUS_INVALID_PARAMETER);
        }
        self.rebounce(n, self.bounce_slot_size())
    }

    /// Allocates `n` packet objects (`VmbChannelSizeofPacket` bytes each, for the maximum
    /// packet size set by then) when the channel is first enabled, for
    /// [`ChannelRef::preallocated_packet`]: sends that do not depend on KMCL's lookaside list.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` outside `1..=64`.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn preallocated_packets(&mut self, n: u32) -> Result<(), NtStatus> {
        if n == 0 || n > MAX_PREALLOCATED_PACKETS {
            return Err(NtStatus::STATUS_INVALID_PARAMETER);
        }
        // SAFETY: never enabled (this type's invariant), so no callback runs and nothing else
        // references `inner`; `&mut self` excludes the builder's own shared borrows.
        unsafe { (*self.owned.inner.as_ptr()).header.pool_wanted = n };
        Ok(())
    }

    /// Accepts incoming packets with external data of up to `size` bytes in MDL chains of up
    /// to `chain_length` MDLs (`VmbChannelInitSetMaximumExternalData`); without it a channel
    /// takes no external data. [`IncomingPacket::external_data`] maps it.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_2` / `_3` for 0; KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn max_external_data(&mut self, size: u32, chain_length: u32) -> Result<(), NtStatus> {
        if size == 0 {
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        if chain_length == 0 {
            return Err(NtStatus::STATUS_INVALID_PARAMETER_3);
        }
        // SAFETY: our channel, disabled and never enabled.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelInitSetMaximumExternalData(self.raw(), size, chain_length),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// Reserves `bytes` of driver context on every incoming packet object
    /// (`VmbChannelInitSetClientContextSize`). Interface V1 documents no accessor for that
    /// area (only V2 lists `VmbChannelPacketGetClientContext`, reference §7.2), so kmcl offers
    /// none either: keep per-packet state in the handler, keyed by what the packet carries.
    /// Set it only for a library that uses the area itself.
    ///
    /// # Errors
    /// KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn client_context_size(&mut self, bytes: u32) -> Result<(), NtStatus> {
        // SAFETY: our channel, disabled and never enabled.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelInitSetClientContextSize(self.raw(), bytes),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// Incoming and outgoing ring sizes in pages
    /// (`VmbClientChannelInitSetRingBufferPageCount`).
    ///
    /// # Errors
    /// KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn ring_pages(&mut self, incoming: u32, outgoing: u32) -> Result<(), NtStatus> {
        // SAFETY: our channel, disabled and never enabled.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbClientChannelInitSetRingBufferPageCount(self.raw(), incoming, outgoing),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// Channel-wide flags (`VmbChannelInitSetFlags`).
    ///
    /// # Errors
    /// KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn flags(&mut self, flags: ChannelFlags) -> Result<(), NtStatus> {
        // SAFETY: our channel, disabled and never enabled.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelInitSetFlags(self.raw(), flags.0),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// A short name for debuggers and performance counters (`VmbChannelInitSetFriendlyName`).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` if `name` is longer than 64 UTF-16 units; KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn friendly_name(&mut self, name: &str) -> Result<(), NtStatus> {
        let mut buf = [0u16; 64];
        let mut len = 0usize;
        for unit in name.encode_utf16() {
            let slot = buf.get_mut(len).ok_or(NtStatus::STATUS_INVALID_PARAMETER)?;
            *slot = unit;
            len += 1;
        }
        let bytes = u16::try_from(len * 2).map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)?;
        let name = sys::UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: buf.as_mut_ptr(),
        };
        // SAFETY: our channel, disabled and never enabled; `name` describes `buf`, which
        // outlives the call, and KMCL copies the string ([inf], reference §7.2).
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelInitSetFriendlyName(self.raw(), &raw const name),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// Binds the channel to the host's offer of `interface_type` (and `instance`, if given)
    /// (`VmbClientChannelInitSetTargetPnp`); [`ChannelHandler::pnp_failure`] reports an
    /// asynchronous connection failure.
    ///
    /// # Errors
    /// KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn target(&mut self, interface_type: Guid, instance: Option<Guid>) -> Result<(), NtStatus> {
        let ty = interface_type.to_sys();
        let inst = instance.map(Guid::to_sys);
        let inst_ptr = inst.as_ref().map_or(ptr::null(), ptr::from_ref);
        // SAFETY: our channel, disabled and never enabled; both GUID pointers are valid for the
        // call (KMCL copies them); the trampoline expects `Inner<H>`.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbClientChannelInitSetTargetPnp(
                    self.raw(),
                    &raw const ty,
                    inst_ptr,
                    Some(evt_pnp_failure::<H>),
                ),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    /// Deliver packets at PASSIVE_LEVEL only (`VmbChannelSetIncomingProcessingAtPassive`).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn incoming_at_passive(&mut self, passive: bool) {
        // SAFETY: our channel, not yet enabled (the model allows it only then, [inf]).
        unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelSetIncomingProcessingAtPassive(self.raw(), u8::from(passive)),
                ()
            );
        };
    }

    /// The handler this channel calls.
    #[must_use]
    pub fn handler(&self) -> &H {
        self.owned.handler()
    }

    /// Connects the channel (`VmbChannelEnable`); KMCL returns at once, and the handler's
    /// `opened`/`started`/`post_started` run when the host opens it.
    ///
    /// # Errors
    /// The builder back, still disabled, with KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn enable(mut self) -> Result<Channel<H>, (Self, NtStatus)> {
        if let Err(status) = self.owned.allocate_pool() {
            return Err((self, status));
        }
        let owned = take_owned(self);
        match owned.enable() {
            Ok(()) => Ok(Channel { owned }),
            Err(status) => Err((Self { owned }, status)),
        }
    }
}

/// Moves the owned handle out of a lifecycle type without running its `Drop`.
macro_rules! take_owned_impl {
    ($($ty:ident),*) => {$(
        impl<H: ChannelHandler> TakeOwned<H> for $ty<H> {
            fn take(self) -> Owned<H> {
                let this = core::mem::ManuallyDrop::new(self);
                // SAFETY: `this` is never used or dropped again, so `owned` is moved out of it
                // exactly once and has exactly one owner afterwards.
                unsafe { ptr::read(&raw const this.owned) }
            }
        }
    )*};
}

trait TakeOwned<H> {
    fn take(self) -> Owned<H>;
}
take_owned_impl!(ChannelBuilder, Channel, DisabledChannel);

fn take_owned<H: ChannelHandler, T: TakeOwned<H>>(t: T) -> Owned<H> {
    t.take()
}

impl<H: ChannelHandler> Owned<H> {
    fn bounce_stats(&self) -> BounceStats {
        // SAFETY: `inner` is live for as long as `Owned` exists and is only ever shared.
        unsafe { self.inner.as_ref() }.bounce.stats()
    }

    fn handler(&self) -> &H {
        // SAFETY: `inner` is live for as long as `Owned` exists and is only ever shared.
        &unsafe { self.inner.as_ref() }.handler
    }

    /// The packets [`ChannelBuilder::preallocated_packets`] asked for, sized now that the
    /// maximum packet size is final (before an enable; once made, kept).
    fn allocate_pool(&mut self) -> Result<(), NtStatus> {
        // SAFETY: `inner` is live for as long as `Owned` exists.
        let header = unsafe { &self.inner.as_ref().header };
        let n = header.pool_wanted;
        if n == 0 || header.pool.is_some() {
            return Ok(());
        }
        let size = ChannelRef::from_raw(self.raw, self.api()).packet_object_size();
        let pool = PacketPool::try_new(n, size).ok_or(NtStatus::STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: called only on a disabled channel (a builder or a `DisabledChannel`, before
        // their enable): no callback runs and no packet can see the header.
        unsafe { (*self.inner.as_ptr()).header.pool = Some(pool) };
        Ok(())
    }

    fn enable(&self) -> Result<(), NtStatus> {
        // SAFETY: our channel, disabled; its context and callbacks are set.
        NtStatus(unsafe {
            kmcl_call!(
                self.api(),
                VmbChannelEnable(self.raw),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()
    }

    fn disable(&self) {
        // SAFETY: our channel; the caller is at PASSIVE_LEVEL outside channel callbacks (the
        // documented contract of every public path that reaches here). Disabling a channel the
        // host already closed only waits for nothing.
        unsafe { kmcl_call!(self.api(), VmbChannelDisable(self.raw), ()) };
    }
}

impl<H: ChannelHandler> Drop for ChannelBuilder<H> {
    fn drop(&mut self) {
        self.owned.cleanup();
    }
}

impl<H: ChannelHandler> Channel<H> {
    /// What the channel's bounce buffers have seen (module docs of `kmcl`, "Incoming bytes").
    #[must_use]
    pub fn bounce_stats(&self) -> BounceStats {
        self.owned.bounce_stats()
    }

    /// A borrowed handle for sending packets and runtime calls.
    #[must_use]
    pub fn handle(&self) -> ChannelRef<'_> {
        ChannelRef::from_raw(self.owned.raw, self.owned.api())
    }

    /// The handler this channel calls.
    #[must_use]
    pub fn handler(&self) -> &H {
        self.owned.handler()
    }

    /// Closes the channel (`VmbChannelDisable`): blocks until Suspend and Closed have run and
    /// every delivered packet has been retired; in-flight sends are cancelled. Also what to
    /// call after the host rescinded the channel, before enabling it again.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, and never from a channel callback or while holding a lock that packet
    /// completion needs (it would deadlock).
    pub fn disable(self) -> DisabledChannel<H> {
        let owned = take_owned(self);
        owned.disable();
        DisabledChannel { owned }
    }
}

impl<H: ChannelHandler> Drop for Channel<H> {
    fn drop(&mut self) {
        // Drop runs at PASSIVE_LEVEL in the device's teardown path (documented on the type).
        self.owned.disable();
        self.owned.cleanup();
    }
}

impl<H: ChannelHandler> DisabledChannel<H> {
    /// The handler this channel calls.
    #[must_use]
    pub fn handler(&self) -> &H {
        self.owned.handler()
    }

    /// Enables the channel again with its first configuration.
    ///
    /// # Errors
    /// The channel back, still disabled, with KMCL's status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn enable(mut self) -> Result<Channel<H>, (Self, NtStatus)> {
        if let Err(status) = self.owned.allocate_pool() {
            return Err((self, status));
        }
        let owned = take_owned(self);
        match owned.enable() {
            Ok(()) => Ok(Channel { owned }),
            Err(status) => Err((Self { owned }, status)),
        }
    }
}

impl<H: ChannelHandler> Drop for DisabledChannel<H> {
    fn drop(&mut self) {
        self.owned.cleanup();
    }
}

/// A borrowed, copyable handle to a live channel: what callbacks receive and what
/// [`Channel::handle`] returns. It cannot outlive the channel, nor the library reference the
/// channel holds.
#[derive(Clone, Copy)]
pub struct ChannelRef<'a> {
    raw: sys::VMBCHANNEL,
    api: &'a Api,
}

impl core::fmt::Debug for ChannelRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelRef")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

// SAFETY: a VMBCHANNEL handle may be used from any thread; the lifetime ties it to the channel.
unsafe impl Send for ChannelRef<'_> {}
// SAFETY: as above; every method is a KMCL call that is safe to make concurrently.
unsafe impl Sync for ChannelRef<'_> {}

impl<'a> ChannelRef<'a> {
    pub(crate) fn from_raw(raw: sys::VMBCHANNEL, api: &'a Api) -> Self {
        Self { raw, api }
    }

    /// The channel's context header (the first field of its context).
    fn header(&self) -> Result<&'a Header, NtStatus> {
        // SAFETY: live channel; GetPointer only reads its context slot, at any IRQL.
        let ctx = unsafe { kmcl_call!(self.api, VmbChannelGetPointer(self.raw), ptr::null_mut()) };
        // Every channel kmcl hands out a `ChannelRef` for has its context set at allocation.
        let header =
            NonNull::new(ctx.cast::<Header>()).ok_or(NtStatus::STATUS_INVALID_DEVICE_STATE)?;
        // SAFETY: the context (an `Inner<H>` starting with the `#[repr(C)]` header) lives as
        // long as the channel, which outlives 'a (this type's invariant); it is only shared
        // once the channel is enabled, and `pool` is set before that.
        Ok(unsafe { header.as_ref() })
    }

    /// The channel's GPADL share (the first field of its context's header).
    fn gpadl_share(&self) -> Result<NonNull<GpadlShare>, NtStatus> {
        Ok(NonNull::from(&self.header()?.gpadls))
    }

    /// A packet from the channel's preallocated ones
    /// ([`ChannelBuilder::preallocated_packets`]), initialized in place
    /// (`VmbPacketInitialize`). It returns to the pool when dropped unsent or once its send
    /// completed.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when every preallocated packet is in use;
    /// `STATUS_INVALID_DEVICE_STATE` when the channel has none; KMCL's status.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn preallocated_packet(&self) -> Result<OutgoingPacket<'a>, NtStatus> {
        let pool = self
            .header()?
            .pool
            .as_ref()
            .ok_or(NtStatus::STATUS_INVALID_DEVICE_STATE)?;
        let (slot, memory) = pool
            .claim()
            .ok_or(NtStatus::STATUS_INSUFFICIENT_RESOURCES)?;
        let size = u32::try_from(pool.slot_size()).unwrap_or(u32::MAX);
        // SAFETY: live channel; `memory` is `size` writable bytes owned by this slot until it
        // is released, sized from `VmbChannelSizeofPacket` when the pool was made.
        let status = NtStatus(unsafe {
            kmcl_call!(
                self.api,
                VmbPacketInitialize(self.raw, memory.as_ptr().cast(), size),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        if !status.is_success() {
            pool.release(slot);
            return Err(status);
        }
        // SAFETY: a freshly initialized packet in the pool's slot `slot`, owned by nobody else;
        // the pool lives in the channel's context, which outlives 'a and every send.
        Ok(unsafe {
            OutgoingPacket::from_pool(memory.as_ptr().cast(), self.api, NonNull::from(pool), slot)
        })
    }

    /// Preallocated packets not in use now (0 without any).
    #[must_use]
    pub fn preallocated_available(&self) -> u32 {
        self.header()
            .ok()
            .and_then(|h| h.pool.as_ref())
            .map_or(0, PacketPool::available)
    }

    /// Describes `buffer` to the host as a GPADL (`VmbChannelCreateGpadlFromBuffer`); the
    /// host has confirmed it when this returns. The [`Gpadl`] owns the buffer until it is
    /// deleted (module `gpadl`).
    ///
    /// # Errors
    /// The buffer back, with KMCL's status (a channel that is not open refuses).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, the channel open (from [`ChannelHandler::opened`] on).
    pub fn create_gpadl(
        &self,
        buffer: SharedBuffer,
        access: GpadlAccess,
    ) -> Result<Gpadl, (SharedBuffer, NtStatus)> {
        let share = match self.gpadl_share() {
            Ok(share) => share,
            Err(status) => return Err((buffer, status)),
        };
        // SAFETY: a live kmcl channel (this type's invariant), whose context starts with the
        // share; the caller is at PASSIVE_LEVEL (documented contract).
        unsafe { Gpadl::create(self.raw, self.api, share, buffer, access) }
    }

    /// Describes `len` bytes of an MDL chain from `offset` (0: to the end of the chain) to the
    /// host as a GPADL (`VmbChannelCreateGpadlFromMdl`).
    ///
    /// # Errors
    /// KMCL's status.
    ///
    /// # Safety
    /// `mdl` describes locked memory that stays locked and valid until the returned [`Gpadl`]
    /// has been dropped, and nothing reads or writes it as a Rust reference meanwhile (the host
    /// may write it).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, the channel open.
    pub unsafe fn create_gpadl_from_mdl(
        &self,
        mdl: sys::PMDL,
        offset: u32,
        len: u32,
        access: GpadlAccess,
    ) -> Result<Gpadl, NtStatus> {
        let share = self.gpadl_share()?;
        // SAFETY: a live kmcl channel; the MDL's contract is the caller's.
        unsafe { Gpadl::create_from_mdl(self.raw, self.api, share, mdl, offset, len, access) }
    }

    /// Sets the latency of the host's interrupts for this channel, in units of 100 ns
    /// (`VmbChannelSetInterruptLatency`); returns the previous value.
    ///
    /// # Errors
    /// KMCL's status (the channel must be open: from `opened` through `closed`).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn set_interrupt_latency(&self, latency: u16) -> Result<u16, NtStatus> {
        let mut previous = 0u16;
        // SAFETY: live channel; `previous` is a valid out-pointer.
        NtStatus(unsafe {
            kmcl_call!(
                self.api,
                VmbChannelSetInterruptLatency(self.raw, latency, &raw mut previous),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()?;
        Ok(previous)
    }

    /// The MMIO range the host assigned to this channel, `(address, size)`
    /// (`VmbChannelGetMmioSpace`, a member of the client interface table only); `None` when
    /// the library reached has no such function (the linked `vmbkmcl.lib`) or the offer has no
    /// range. Meaningful once the channel opened.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn mmio_space(&self) -> Option<(u64, u64)> {
        let f = self.api.table.VmbChannelGetMmioSpace?;
        let (mut address, mut size) = (0u64, 0u64);
        // SAFETY: live channel; both out-pointers are valid for the call.
        unsafe { f(self.raw, &raw mut address, &raw mut size) };
        (size != 0).then_some((address, size))
    }

    /// The bytes a packet built in caller memory needs (`VmbChannelSizeofPacket`; it depends
    /// on the maximum packet size), for [`ChannelBuilder::preallocated_packets`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn packet_object_size(&self) -> u32 {
        // SAFETY: live channel.
        unsafe { kmcl_call!(self.api, VmbChannelSizeofPacket(self.raw), 0) }
    }

    /// Takes a packet from the channel's lookaside list (`VmbPacketAllocate`).
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when KMCL returns NULL.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn allocate_packet(&self) -> Result<OutgoingPacket<'a>, NtStatus> {
        // SAFETY: `raw` is a live channel for 'a (this type's invariant).
        let raw = unsafe { kmcl_call!(self.api, VmbPacketAllocate(self.raw), ptr::null_mut()) };
        if raw.is_null() {
            Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES)
        } else {
            // SAFETY: a fresh packet from VmbPacketAllocate, owned by nobody else.
            Ok(unsafe { OutgoingPacket::from_raw(raw, self.api) })
        }
    }

    /// Sends `request` and waits for the host's completion (`VmbChannelSendSynchronousRequest`
    /// with `WAIT_FOR_COMPLETION`), writing the response into `response`.
    ///
    /// Only `response.len()` rounded down to a multiple of 8 is offered to KMCL (its rule).
    ///
    /// # Errors
    /// `STATUS_CANCELLED` (timed out), `STATUS_DEVICE_REMOVED` (the channel is closing),
    /// `STATUS_BUFFER_OVERFLOW` (response truncated), `STATUS_INVALID_PARAMETER` (sizes over
    /// 4 GiB), or the status the host completed with.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, never from [`ChannelHandler::started`] (it would never return).
    pub fn send_sync(
        &self,
        request: &[u8],
        response: &mut [u8],
        timeout: Timeout,
    ) -> Result<usize, NtStatus> {
        let req_len =
            u32::try_from(request.len()).map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)?;
        let mut resp_len =
            u32::try_from(response.len() & !7).map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)?;
        let mut wait = timeout
            .as_relative_100ns()
            .map(|t| sys::LARGE_INTEGER { QuadPart: t });
        let wait_ptr = wait.as_mut().map_or(ptr::null_mut(), ptr::from_mut);
        // SAFETY: live channel; `request` is readable for `req_len` bytes (KMCL only reads it,
        // `_In_reads_bytes_`), `response` writable for `resp_len` bytes, `resp_len` is a
        // multiple of 8, and every pointer outlives this blocking call.
        let status = NtStatus(unsafe {
            kmcl_call!(
                self.api,
                VmbChannelSendSynchronousRequest(
                    self.raw,
                    request.as_ptr().cast_mut().cast(),
                    req_len,
                    ptr::null_mut(),
                    sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                    response.as_mut_ptr().cast(),
                    &raw mut resp_len,
                    wait_ptr,
                ),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        status.ok()?;
        Ok(usize::try_from(resp_len).map_or(response.len(), |n| n.min(response.len())))
    }

    /// Caps the number of delivered-but-unretired incoming packets
    /// (`VmbChannelSetTransactionQuota`). Must be > 0.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn set_transaction_quota(&self, quota: u32) {
        // SAFETY: live channel.
        unsafe {
            kmcl_call!(
                self.api,
                VmbChannelSetTransactionQuota(self.raw, quota.max(1)),
                ()
            )
        };
    }

    /// Pauses the channel (`VmbChannelPause`): blocks until Suspend has run and every delivered
    /// packet is retired.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, never from a channel callback.
    pub fn pause(&self) {
        // SAFETY: live, enabled channel; documented call window.
        unsafe { kmcl_call!(self.api, VmbChannelPause(self.raw), ()) };
    }

    /// Resumes a paused channel (`VmbChannelStart`): Started and PostStarted run again.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, never from a channel callback.
    pub fn start(&self) {
        // SAFETY: live, enabled channel; documented call window.
        unsafe { kmcl_call!(self.api, VmbChannelStart(self.raw), ()) };
    }

    /// The instance GUID of the offer this channel opened (all zeros before it opened).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn interface_instance(&self) -> Guid {
        let mut g = sys::GUID::default();
        // SAFETY: live channel; `g` is a valid out pointer.
        unsafe {
            kmcl_call!(
                self.api,
                VmbChannelGetInterfaceInstance(self.raw, &raw mut g),
                ()
            )
        };
        Guid {
            data1: g.Data1,
            data2: g.Data2,
            data3: g.Data3,
            data4: g.Data4,
        }
    }
}
