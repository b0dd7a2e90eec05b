//! The 40 KMCL client functions, defined with the names and signatures `kmcl-sys` declares.
//!
//! Each symbol is `#[unsafe(no_mangle)]` and unique in the process: `kmcl-sys` only declares
//! these names, vmbkmcl.lib is never linked off Windows (and on Windows only with kmcl-sys's
//! `link` feature, which nothing in this crate turns on), and no other crate defines them. The
//! linker resolves every `kmcl_sys::Vmb*` call of guest code built with kmcl's `linked` feature
//! to the definitions below; guest code that queried the interface table calls the same
//! definitions through the pointers `query_interface` filled in.
//!
//! Each is `#[inline(never)]`: they stand for a separate library, so link-time optimisation
//! must not fold the model into the guest code it serves (benchmarks attribute instructions
//! by function: guest code versus `Vmb*`).
//!
//! Every function tolerates any handle value (NULL, garbage, stale): it records a violation and
//! fails, it never dereferences a handle. Only the memory arguments (buffers and
//! out-parameters) are trusted as the C contract says, and each is wrapped once at this
//! boundary ([`crate::raw`]).

use std::ptr;
use std::sync::Arc;

use kmcl_sys::{
    BOOLEAN, GUID, LPCGUID, LPGUID, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT,
    PFN_VMB_CHANNEL_PNP_FAILURE, PFN_VMB_CHANNEL_PROCESS_PACKET,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_PACKET_COMPLETION_ROUTINE, PLARGE_INTEGER, PMDL,
    PPFN_NUMBER, PUINT16, PUINT32, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, PVOID, UINT16, UINT32,
    UNICODE_STRING, VMB_CHANNEL_STATE_CHANGE_CALLBACKS, VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION,
};
use ntstatus::NtStatus;

use crate::handle::{self, Kind};
use crate::irql::ModelCode;
use crate::raw::{self, GuestBufOut, GuestBytes, GuestInOut, GuestOut};
use crate::violation::{Violation, ViolationKind as V, record_orphan};
use crate::world::{External, InitOp, PacketKey, Retire, World};

fn orphan(kind: V, func: &'static str, h: usize, detail: &str) {
    record_orphan(Violation::new(kind, func, h, detail));
}

/// The world and serial of a channel handle, or a recorded violation.
fn channel(func: &'static str, ch: VMBCHANNEL) -> Option<(Arc<World>, u64, usize)> {
    let h = ch.addr();
    let Some(d) = handle::decode(h) else {
        let why = if h == 0 {
            "NULL channel handle"
        } else {
            "not a channel handle the model gave out"
        };
        orphan(V::InvalidHandle, func, h, why);
        return None;
    };
    let Some(w) = handle::world(d.world) else {
        orphan(
            V::InvalidHandle,
            func,
            h,
            "the channel's world is gone (its Host was dropped)",
        );
        return None;
    };
    if d.kind != Kind::Channel {
        w.record(
            V::InvalidHandle,
            func,
            h,
            format!("a {:?} handle passed as a channel", d.kind),
        );
        return None;
    }
    w.check_interface(func, h);
    Some((w, d.serial, h))
}

/// The MMIO range of the offer `ch` is bound to (`VmbChannelGetMmioSpace`, a table-only
/// function: `interface.rs`); zeros for an unknown channel.
pub(crate) fn mmio_space(ch: VMBCHANNEL) -> (u64, u64) {
    match channel("VmbChannelGetMmioSpace", ch) {
        Some((w, _, _)) => w.cfg.mmio_space,
        None => (0, 0),
    }
}

/// The world and key of a packet handle (library or caller memory), or a recorded violation.
fn packet(func: &'static str, p: VMBPACKET) -> Option<(Arc<World>, PacketKey, usize)> {
    let h = p.addr();
    match handle::decode(h) {
        Some(d) => {
            let Some(w) = handle::world(d.world) else {
                orphan(
                    V::InvalidHandle,
                    func,
                    h,
                    "the packet's world is gone (its Host was dropped)",
                );
                return None;
            };
            if d.kind != Kind::Packet {
                w.record(
                    V::InvalidHandle,
                    func,
                    h,
                    format!("a {:?} handle passed as a packet", d.kind),
                );
                return None;
            }
            w.check_interface(func, h);
            Some((w, PacketKey::Lib(d.serial), h))
        }
        None => {
            if let Some(w) = handle::caller_packet_world(h).and_then(handle::world) {
                w.check_interface(func, h);
                return Some((w, PacketKey::Caller(h), h));
            }
            let why = if h == 0 {
                "NULL packet"
            } else {
                "not a packet from VmbPacketAllocate or VmbPacketInitialize"
            };
            orphan(V::InvalidHandle, func, h, why);
            None
        }
    }
}

/// The world and serial of an incoming-packet token, or a recorded violation.
fn token(func: &'static str, t: VMBPACKETCOMPLETION) -> Option<(Arc<World>, u64, usize)> {
    let h = t.addr();
    let decoded = handle::decode(h).filter(|d| d.kind == Kind::Completion);
    let Some(d) = decoded else {
        orphan(
            V::UnknownIncomingToken,
            func,
            h,
            "not a VMBPACKETCOMPLETION the model handed to ProcessPacket",
        );
        return None;
    };
    let Some(w) = handle::world(d.world) else {
        orphan(
            V::UnknownIncomingToken,
            func,
            h,
            "the packet's world is gone (its Host was dropped)",
        );
        return None;
    };
    w.check_interface(func, h);
    Some((w, d.serial, h))
}

// ---- channel lifetime ------------------------------------------------------------------------

/// Allocates a guest channel in the world of `parent` (a [`Host::parent_device`]), Disabled.
///
/// Fails with `STATUS_INVALID_PARAMETER_1` for an unknown parent, `STATUS_NOT_SUPPORTED` for
/// `is_server != 0` (a guest model), `STATUS_INVALID_PARAMETER_3` for a NULL out-pointer.
///
/// [`Host::parent_device`]: crate::Host::parent_device
///
/// # Safety
/// `channel` is NULL or writable for one `VMBCHANNEL`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelAllocate(
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelAllocate";
    // SAFETY: `_Out_ VMBCHANNEL *Channel`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(channel) };
    let dh = parent.addr();
    let world = handle::decode(dh)
        .filter(|d| d.kind == Kind::Device)
        .and_then(|d| handle::world(d.world));
    let Some(w) = world else {
        orphan(
            V::InvalidHandle,
            F,
            dh,
            "the parent device is not the parent_device() of a live Host",
        );
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    w.check_interface(F, dh);
    if !w.require_passive(F, dh) {
        return NtStatus::STATUS_INVALID_DEVICE_STATE.0;
    }
    if is_server != 0 {
        return NtStatus::STATUS_NOT_SUPPORTED.0;
    }
    if out.is_null() {
        return NtStatus::STATUS_INVALID_PARAMETER_3.0;
    }
    match w.allocate(F) {
        Ok(h) => {
            out.write(ptr::without_provenance_mut(h));
            NtStatus::STATUS_SUCCESS.0
        }
        Err(s) => s.0,
    }
}

/// Frees a Disabled channel; the handle is dead afterwards.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelCleanup(channel: VMBCHANNEL) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelCleanup", channel) {
        w.cleanup(s, h);
    }
}

/// Disabled → Enabled; returns at once (the host opens the channel with [`Host::open`]).
///
/// [`Host::open`]: crate::Host::open
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelEnable(channel: VMBCHANNEL) -> NTSTATUS {
    let _model = ModelCode::enter();
    self::channel("VmbChannelEnable", channel)
        .map_or(NtStatus::STATUS_INVALID_PARAMETER_1, |(w, s, h)| {
            w.enable(s, h)
        })
        .0
}

/// Closes the channel (Suspend, drain, cancel, Closed) and blocks until it is Disabled.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelDisable(channel: VMBCHANNEL) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelDisable", channel) {
        w.disable(s, h);
    }
}

/// Pauses a running channel (Suspend, drain); on a channel not yet open, arms a pause.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelPause(channel: VMBCHANNEL) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelPause", channel) {
        w.pause(s, h);
    }
}

/// Restarts a paused channel (Started, queue on, PostStarted); disarms an armed pause.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelStart(channel: VMBCHANNEL) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelStart", channel) {
        w.start(s, h);
    }
}

// ---- Init setters ----------------------------------------------------------------------------

fn init(func: &'static str, channel: VMBCHANNEL, op: impl FnOnce() -> InitOp) -> NTSTATUS {
    self::channel(func, channel)
        .map_or(NtStatus::STATUS_INVALID_PARAMETER_1, |(w, s, h)| {
            w.init(func, s, h, op())
        })
        .0
}

/// Sets the largest packet the guest will send (0 → `STATUS_INVALID_PARAMETER_2`).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetMaximumPacketSize(
    channel: VMBCHANNEL,
    packet_size: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetMaximumPacketSize", channel, || {
        InitOp::MaxPacketSize(packet_size)
    })
}

/// Sets the external-data limits (0 → `_2` / `_3`).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetMaximumExternalData(
    channel: VMBCHANNEL,
    data_size: UINT32,
    chain_length: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetMaximumExternalData", channel, || {
        InitOp::MaxExternalData(data_size, chain_length)
    })
}

/// Reserves per-packet client context (recorded, no accessor in V1).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetClientContextSize(
    channel: VMBCHANNEL,
    context_size: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetClientContextSize", channel, || {
        InitOp::ClientContextSize(context_size)
    })
}

/// Registers ProcessPacket (required, else `_2` [inf]) and the optional ProcessingComplete.
///
/// # Safety
/// The callbacks must be functions with the KMCL callback signatures; the model calls them.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetProcessPacketCallbacks(
    channel: VMBCHANNEL,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetProcessPacketCallbacks", channel, || {
        InitOp::ProcessPacket(process_packet, processing_complete)
    })
}

/// Copies the state-change callbacks (Version ≠ 1 or Size ≠ 48 → `_2`).
///
/// # Safety
/// `callbacks` is NULL or readable for its `Size` field and, when `Size` is right, for the
/// whole structure; its callbacks have the KMCL signatures.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetStateChangeCallbacks(
    channel: VMBCHANNEL,
    callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetStateChangeCallbacks", channel, || {
        // SAFETY: `_In_` pointer: NULL or readable; Version and Size come first (§4.1).
        let header = unsafe { raw::read_in(callbacks.cast_const().cast::<[u32; 2]>()) };
        let Some([version, size]) = header else {
            return InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2);
        };
        if version != kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION
            || size != kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_SIZE
        {
            return InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        // SAFETY: `Size` says the caller's structure is a whole VMB_CHANNEL_STATE_CHANGE_CALLBACKS.
        let cb: Option<VMB_CHANNEL_STATE_CHANGE_CALLBACKS> =
            unsafe { raw::read_in(callbacks.cast_const()) };
        cb.map_or(
            InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2),
            InitOp::StateCallbacks,
        )
    })
}

/// Copies the friendly name (a malformed `UNICODE_STRING` → `_2` [inf]).
///
/// # Safety
/// `name` is NULL or a readable `UNICODE_STRING` whose `Buffer` is readable for `Length` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetFriendlyName(
    channel: VMBCHANNEL,
    name: PCUNICODE_STRING,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetFriendlyName", channel, || {
        // SAFETY: `_In_ PCUNICODE_STRING`: NULL or readable.
        let us: Option<UNICODE_STRING> = unsafe { raw::read_in(name) };
        let Some(us) = us else {
            return InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2);
        };
        if us.Length % 2 != 0 || us.Length > us.MaximumLength {
            return InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        // SAFETY: a well-formed UNICODE_STRING's Buffer is readable for Length bytes.
        let units = unsafe { raw::read_array(us.Buffer.cast_const(), usize::from(us.Length / 2)) };
        units.map_or(InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2), |u| {
            InitOp::FriendlyName(String::from_utf16_lossy(&u))
        })
    })
}

/// Sets channel flags (bits outside `VMBUS_CHANNEL_INIT_FLAGS` → `_2`).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelInitSetFlags(channel: VMBCHANNEL, flags: UINT32) -> NTSTATUS {
    let _model = ModelCode::enter();
    init("VmbChannelInitSetFlags", channel, || InitOp::Flags(flags))
}

/// Sets the ring sizes in pages (0 → `_2` / `_3` [inf]; default 16/16 [inf]).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbClientChannelInitSetRingBufferPageCount(
    channel: VMBCHANNEL,
    incoming_page_count: UINT32,
    outgoing_page_count: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    init(
        "VmbClientChannelInitSetRingBufferPageCount",
        channel,
        || InitOp::RingPages(incoming_page_count, outgoing_page_count),
    )
}

/// Sets the offer the channel binds to: the host only opens it if the types (and the instance,
/// when given) match its [`ModelConfig`](crate::ModelConfig). NULL type → `_2` [inf].
///
/// # Safety
/// `interface_type` is NULL or a readable GUID; `interface_instance` likewise.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbClientChannelInitSetTargetPnp(
    channel: VMBCHANNEL,
    interface_type: LPCGUID,
    interface_instance: LPCGUID,
    pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
) -> NTSTATUS {
    const F: &str = "VmbClientChannelInitSetTargetPnp";
    let _model = ModelCode::enter();
    // SAFETY: `_In_ LPCGUID`: NULL or readable.
    let ty: Option<GUID> = unsafe { raw::read_in(interface_type) };
    // SAFETY: `_In_opt_ LPCGUID`: NULL or readable.
    let inst: Option<GUID> = unsafe { raw::read_in(interface_instance) };
    let status = init(F, channel, || {
        ty.map_or(
            InitOp::Invalid(NtStatus::STATUS_INVALID_PARAMETER_2),
            |ty| InitOp::Target(ty, inst, pnp_failure),
        )
    });
    if let (true, Some(ty), Some((w, _, h))) =
        (NtStatus(status).is_success(), ty, self::channel(F, channel))
    {
        w.check_target(F, h, &ty, inst.as_ref());
    }
    status
}

/// Delivers ProcessPacket and ProcessingComplete at PASSIVE_LEVEL. Only before Enable [inf].
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSetIncomingProcessingAtPassive(
    channel: VMBCHANNEL,
    require_passive: BOOLEAN,
) {
    let _model = ModelCode::enter();
    let _ = init("VmbChannelSetIncomingProcessingAtPassive", channel, || {
        InitOp::IncomingAtPassive(require_passive != 0)
    });
}

// ---- runtime configuration -------------------------------------------------------------------

/// Caps delivered-but-uncompleted packets (§6.1.4). 0 is a violation (`InvalidParameter`).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSetTransactionQuota(channel: VMBCHANNEL, quota: UINT32) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelSetTransactionQuota", channel) {
        w.set_quota(s, h, quota);
    }
}

/// Sets the interrupt latency while the channel is open (else `STATUS_INVALID_DEVICE_STATE`).
///
/// # Safety
/// `original_latency` is NULL or writable for one `UINT16`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSetInterruptLatency(
    channel: VMBCHANNEL,
    latency: UINT16,
    original_latency: PUINT16,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    // SAFETY: `_Out_ PUINT16`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(original_latency) };
    let Some((w, s, h)) = self::channel("VmbChannelSetInterruptLatency", channel) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    if out.is_null() {
        return NtStatus::STATUS_INVALID_PARAMETER_3.0;
    }
    match w.set_latency(s, h, latency) {
        Ok(old) => {
            out.write(old);
            NtStatus::STATUS_SUCCESS.0
        }
        Err(e) => e.0,
    }
}

/// Writes the instance GUID of the offer the channel opened (zeros before the open) [inf].
///
/// # Safety
/// `instance` is NULL or writable for one GUID.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelGetInterfaceInstance(channel: VMBCHANNEL, instance: LPGUID) {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelGetInterfaceInstance";
    // SAFETY: `_Out_ LPGUID`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(instance) };
    let Some((w, s, h)) = self::channel(F, channel) else {
        return;
    };
    if out.is_null() {
        w.record(V::InvalidParameter, F, h, "NULL InterfaceInstance");
        return;
    }
    if let Some(g) = w.interface_instance(s, h) {
        out.write(g);
    }
}

/// Stores the channel's context pointer (any IRQL).
///
/// # Safety
/// None: the pointer is stored, never dereferenced.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSetPointer(channel: VMBCHANNEL, pointer: PVOID) {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelSetPointer";
    if let Some((w, s, h)) = self::channel(F, channel) {
        w.set_pointer(F, s, h, pointer.expose_provenance());
    }
}

/// The channel's context pointer (NULL until set, and for a bad handle).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelGetPointer(channel: VMBCHANNEL) -> PVOID {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelGetPointer";
    self::channel(F, channel).map_or(ptr::null_mut(), |(w, s, h)| {
        ptr::with_exposed_provenance_mut(w.get_pointer(F, s, h))
    })
}

// ---- incoming packets ------------------------------------------------------------------------

/// Retires an incoming packet with a response (exactly once per delivered packet).
///
/// # Safety
/// `buffer` is NULL or readable for `buf_size` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelPacketComplete(
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    buf_size: UINT32,
) {
    let _model = ModelCode::enter();
    // SAFETY: `_In_reads_bytes_opt_(BufSize)`: NULL or readable for `buf_size` bytes.
    let response = unsafe { GuestBytes::new(buffer.cast_const(), buf_size) };
    if let Some((w, t, h)) = token("VmbChannelPacketComplete", packet) {
        w.retire_incoming(Retire::Complete, t, h, &response);
    }
}

/// Fails an incoming packet; terminal for it, and stops the queue until the channel closes.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelPacketFail(packet: VMBPACKETCOMPLETION) {
    let _model = ModelCode::enter();
    if let Some((w, t, h)) = token("VmbChannelPacketFail", packet) {
        w.retire_incoming(Retire::Fail, t, h, &GuestBytes::empty());
    }
}

/// Returns the packet to the queue for re-delivery at PASSIVE_LEVEL with a new token; only
/// inline from the ProcessPacket call that delivered it.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelPacketDeferToPassive(packet: VMBPACKETCOMPLETION) {
    let _model = ModelCode::enter();
    if let Some((w, t, h)) = token("VmbChannelPacketDeferToPassive", packet) {
        w.retire_incoming(Retire::Defer, t, h, &GuestBytes::empty());
    }
}

/// The MDL of the packet's external data (valid until the packet is retired; read it in tests
/// with [`mdl_bytes`](crate::mdl_bytes)).
///
/// # Safety
/// `mdl` is NULL or writable for one `PMDL`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelPacketGetExternalData(
    packet: VMBPACKETCOMPLETION,
    flags: UINT32,
    mdl: *mut PMDL,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelPacketGetExternalData";
    // SAFETY: `_Out_ PMDL *Mdl`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(mdl) };
    let Some((w, t, h)) = token(F, packet) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    if out.is_null() {
        w.record(V::InvalidParameter, F, h, "NULL Mdl out-pointer");
        return NtStatus::STATUS_INVALID_PARAMETER_3.0;
    }
    match w.external_data(t, h, flags) {
        Ok(m) => {
            out.write(ptr::without_provenance_mut(m));
            NtStatus::STATUS_SUCCESS.0
        }
        Err(e) => e.0,
    }
}

// ---- outgoing packets ------------------------------------------------------------------------

/// Bytes a `VmbPacketInitialize` buffer needs: maximum packet size + 0x100 [inf] (0 for a bad
/// handle).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSizeofPacket(channel: VMBCHANNEL) -> UINT32 {
    let _model = ModelCode::enter();
    self::channel("VmbChannelSizeofPacket", channel).map_or(0, |(w, s, h)| w.sizeof_packet(s, h))
}

/// A library packet with the default completion routine, or NULL (fault plan, bad channel).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketAllocate(channel: VMBCHANNEL) -> VMBPACKET {
    let _model = ModelCode::enter();
    let Some((w, s, h)) = self::channel("VmbPacketAllocate", channel) else {
        return ptr::null_mut();
    };
    ptr::without_provenance_mut(w.packet_allocate(s, h))
}

/// Makes caller memory a packet (`byte_count` ≥ `VmbChannelSizeofPacket`, else `_3`). The
/// completion routine must be set before sending. The model does not write the memory.
///
/// # Safety
/// None: the memory is used as an identity, never read or written by the model.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketInitialize(
    channel: VMBCHANNEL,
    packet: VMBPACKET,
    byte_count: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketInitialize";
    let Some((w, s, h)) = self::channel(F, channel) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    let addr = packet.expose_provenance();
    if addr == 0 {
        return NtStatus::STATUS_INVALID_PARAMETER_2.0;
    }
    if let Some(d) = handle::decode(addr) {
        let (kind, why) = if d.kind == Kind::Packet {
            (
                V::InitializeOfAllocatedPacket,
                "a packet from VmbPacketAllocate must not be passed to VmbPacketInitialize",
            )
        } else {
            (V::InvalidHandle, "a model handle is not packet memory")
        };
        w.record(kind, F, addr, why);
        return NtStatus::STATUS_INVALID_PARAMETER_2.0;
    }
    w.packet_initialize(s, h, addr, byte_count).0
}

/// Frees a library packet that is not in flight.
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketFree(packet: VMBPACKET) {
    let _model = ModelCode::enter();
    if let Some((w, k, h)) = self::packet("VmbPacketFree", packet) {
        w.packet_free(k, h);
    }
}

/// Sets the completion routine (NULL restores the default on library packets [inf]).
///
/// # Safety
/// `routine` has the KMCL completion-routine signature; the model calls it.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketSetCompletionRoutine(
    packet: VMBPACKET,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
) {
    let _model = ModelCode::enter();
    if let Some((w, k, h)) = self::packet("VmbPacketSetCompletionRoutine", packet) {
        w.packet_set_routine(k, h, routine);
    }
}

/// Sends `buffer` (copied at send time), with an optional external-data MDL.
///
/// # Safety
/// `buffer` is NULL or readable for `buffer_length` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketSend(
    packet: VMBPACKET,
    buffer: PVOID,
    buffer_length: UINT32,
    external_data_mdl: PMDL,
    flags: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketSend";
    // SAFETY: `_In_reads_bytes_(BufferLength)`: readable for `buffer_length` bytes.
    let buf = unsafe { GuestBytes::new(buffer.cast_const(), buffer_length) };
    let Some((w, k, h)) = self::packet(F, packet) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    let external = if external_data_mdl.is_null() {
        External::None
    } else {
        External::Mdl {
            mdl: external_data_mdl.addr(),
            offset: 0,
            len: 0,
        }
    };
    w.packet_send(F, k, h, &buf, external, flags).0
}

/// Sends `buffer` plus a byte range of an MDL; needs `WAIT_FOR_COMPLETION`.
///
/// # Safety
/// `buffer` is NULL or readable for `buffer_length` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketSendWithExternalMdl(
    packet: VMBPACKET,
    buffer: PVOID,
    buffer_length: UINT32,
    external_data_mdl: PMDL,
    mdl_offset: UINT32,
    mdl_length: UINT32,
    flags: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketSendWithExternalMdl";
    // SAFETY: `_In_reads_bytes_(BufferLength)`: readable for `buffer_length` bytes.
    let buf = unsafe { GuestBytes::new(buffer.cast_const(), buffer_length) };
    let Some((w, k, h)) = self::packet(F, packet) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    if external_data_mdl.is_null() {
        w.record(V::InvalidParameter, F, h, "NULL ExternalDataMdl");
        return NtStatus::STATUS_INVALID_PARAMETER.0;
    }
    let external = External::Mdl {
        mdl: external_data_mdl.addr(),
        offset: mdl_offset,
        len: mdl_length,
    };
    w.packet_send(F, k, h, &buf, external, flags).0
}

/// [inf] The longest PFN list the model accepts (4 GiB of 4 KiB pages).
const MAX_PFNS: usize = 1 << 20;

/// Sends `buffer` plus external data as page frame numbers; needs `WAIT_FOR_COMPLETION`.
///
/// # Safety
/// `buffer` is NULL or readable for `buffer_length` bytes; `pfns` is NULL or readable for
/// `pfn_length` entries.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketSendWithExternalPfns(
    packet: VMBPACKET,
    buffer: PVOID,
    buffer_length: UINT32,
    pfns: PPFN_NUMBER,
    pfn_length: UINT32,
    flags: UINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketSendWithExternalPfns";
    // SAFETY: `_In_reads_bytes_(BufferLength)`: readable for `buffer_length` bytes.
    let buf = unsafe { GuestBytes::new(buffer.cast_const(), buffer_length) };
    let Some((w, k, h)) = self::packet(F, packet) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    let n = usize::try_from(pfn_length).unwrap_or(usize::MAX);
    if n == 0 || n > MAX_PFNS {
        w.record(V::InvalidParameter, F, h, format!("PfnLength {n}"));
        return NtStatus::STATUS_INVALID_PARAMETER.0;
    }
    // SAFETY: `_In_reads_(PfnLength)`: NULL or readable for `pfn_length` entries.
    let list = unsafe { raw::read_array(pfns.cast_const(), n) };
    let Some(list) = list else {
        w.record(V::InvalidParameter, F, h, "NULL PFN list");
        return NtStatus::STATUS_INVALID_PARAMETER.0;
    };
    w.packet_send(F, k, h, &buf, External::Pfns(list), flags).0
}

/// Sends one request and waits for the host's answer (§6.3).
///
/// # Safety
/// `buffer` is NULL or readable for `buffer_size` bytes; `completion_buffer_size` is NULL or
/// readable and writable for one `UINT32`; `completion_buffer` is NULL or writable for
/// `*completion_buffer_size` bytes; `timeout` is NULL or readable for one `LARGE_INTEGER`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSendSynchronousRequest(
    channel: VMBCHANNEL,
    buffer: PVOID,
    buffer_size: UINT32,
    external_data_mdl: PMDL,
    flags: UINT32,
    completion_buffer: PVOID,
    completion_buffer_size: PUINT32,
    timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelSendSynchronousRequest";
    // SAFETY: `_In_reads_bytes_(BufferSize)`: readable for `buffer_size` bytes.
    let buf = unsafe { GuestBytes::new(buffer.cast_const(), buffer_size) };
    // SAFETY: `_Inout_opt_ PUINT32`: NULL or readable and writable for one UINT32.
    let size = unsafe { GuestInOut::new(completion_buffer_size) };
    let capacity = size.read();
    // SAFETY: `_In_opt_ PLARGE_INTEGER`: NULL or readable; LARGE_INTEGER is one i64 (QuadPart).
    let timeout: Option<i64> = unsafe { raw::read_in(timeout.cast_const().cast::<i64>()) };
    // SAFETY: `_Out_writes_bytes_to_opt_(*CompletionBufferSize, ...)`: NULL or writable for the
    // capacity read above.
    let out = unsafe { GuestBufOut::new(completion_buffer, capacity.unwrap_or(0)) };
    let Some((w, s, h)) = self::channel(F, channel) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    let outcome = w.sync_request(
        s,
        h,
        &buf,
        external_data_mdl.addr(),
        flags,
        capacity,
        timeout,
    );
    let Some(response) = outcome.response else {
        return outcome.status.0;
    };
    if capacity.is_none() {
        // [inf] No CompletionBufferSize: the caller wants no response; it is discarded.
        return outcome.status.0;
    }
    let written = out.fill(&response);
    size.write(u32::try_from(written).unwrap_or(u32::MAX));
    if written < response.len() && outcome.status.is_success() {
        // [inf] The response did not fit: the truncated bytes and BUFFER_OVERFLOW.
        return NtStatus::STATUS_BUFFER_OVERFLOW.0;
    }
    outcome.status.0
}

/// The channel a packet belongs to (NULL for a bad packet).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketGetChannel(packet: VMBPACKET) -> VMBCHANNEL {
    let _model = ModelCode::enter();
    let Some((w, k, h)) = self::packet("VmbPacketGetChannel", packet) else {
        return ptr::null_mut();
    };
    ptr::without_provenance_mut(w.packet_channel(k, h))
}

/// Stores the packet's context pointer.
///
/// # Safety
/// None: the pointer is stored, never dereferenced.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketSetPointer(packet: VMBPACKET, pointer: PVOID) {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketSetPointer";
    if let Some((w, k, h)) = self::packet(F, packet) {
        w.packet_pointer(F, k, h, Some(pointer.expose_provenance()));
    }
}

/// The packet's context pointer (NULL until set, and for a bad packet).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbPacketGetPointer(packet: VMBPACKET) -> PVOID {
    let _model = ModelCode::enter();
    const F: &str = "VmbPacketGetPointer";
    self::packet(F, packet).map_or(ptr::null_mut(), |(w, k, h)| {
        ptr::with_exposed_provenance_mut(w.packet_pointer(F, k, h, None))
    })
}

// ---- GPADLs ----------------------------------------------------------------------------------

/// Publishes `buffer` as a GPADL, live: the host reads and writes it in place until the GPADL is
/// deleted (only while the channel is open [inf]).
///
/// # Safety
/// `buffer` is NULL or readable and writable for `byte_count` bytes until the GPADL is deleted
/// (the GPADL contract; reads and writes are relaxed atomic byte copies); `gpadl_handle` is
/// NULL or writable.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelCreateGpadlFromBuffer(
    channel: VMBCHANNEL,
    flags: UINT32,
    buffer: PVOID,
    byte_count: UINT32,
    gpadl_handle: PUINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelCreateGpadlFromBuffer";
    // SAFETY: `_In_reads_bytes_(ByteCount)`: readable for `byte_count` bytes.
    let buf = unsafe { GuestBytes::new(buffer.cast_const(), byte_count) };
    // SAFETY: `_Out_ PUINT32`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(gpadl_handle) };
    let Some((w, s, h)) = self::channel(F, channel) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    if out.is_null() {
        return NtStatus::STATUS_INVALID_PARAMETER.0;
    }
    // Live: the host reads and writes the buffer in place until the GPADL is deleted.
    let memory = if buf.len() == 0 || buf.is_null_with_length() {
        Err(NtStatus::STATUS_INVALID_PARAMETER)
    } else {
        Ok(crate::world::GpadlMemory::Guest {
            addr: buffer.expose_provenance(),
            len: buf.len(),
        })
    };
    match w.gpadl_create(F, s, h, flags, memory) {
        Ok(id) => {
            out.write(id);
            NtStatus::STATUS_SUCCESS.0
        }
        Err(e) => e.0,
    }
}

/// Publishes a byte range of a model MDL as a GPADL (`data_length` 0 = to the end).
///
/// # Safety
/// `gpadl_handle` is NULL or writable for one `UINT32`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelCreateGpadlFromMdl(
    channel: VMBCHANNEL,
    flags: UINT32,
    mdl: PMDL,
    start_offset: UINT32,
    data_length: UINT32,
    gpadl_handle: PUINT32,
) -> NTSTATUS {
    let _model = ModelCode::enter();
    const F: &str = "VmbChannelCreateGpadlFromMdl";
    // SAFETY: `_Out_ PUINT32`: NULL or writable during the call.
    let out = unsafe { GuestOut::new(gpadl_handle) };
    let Some((w, s, h)) = self::channel(F, channel) else {
        return NtStatus::STATUS_INVALID_PARAMETER_1.0;
    };
    if out.is_null() {
        return NtStatus::STATUS_INVALID_PARAMETER.0;
    }
    let bytes = match crate::mdl::bytes(mdl) {
        None => {
            w.record(V::InvalidHandle, F, mdl.addr(), "not a valid model MDL");
            Err(NtStatus::STATUS_INVALID_PARAMETER_3)
        }
        Some(all) => {
            let off = usize::try_from(start_offset).unwrap_or(usize::MAX);
            let end = if data_length == 0 {
                Some(all.len())
            } else {
                off.checked_add(usize::try_from(data_length).unwrap_or(usize::MAX))
            };
            match end {
                Some(e) if e > off && e <= all.len() => Ok(crate::world::GpadlMemory::Mdl {
                    bytes: all,
                    offset: off,
                    len: e - off,
                }),
                _ => Err(NtStatus::STATUS_INVALID_PARAMETER),
            }
        }
    };
    match w.gpadl_create(F, s, h, flags, bytes) {
        Ok(id) => {
            out.write(id);
            NtStatus::STATUS_SUCCESS.0
        }
        Err(e) => e.0,
    }
}

/// Deletes a GPADL (exactly once per created GPADL).
///
/// # Safety
/// None beyond the C contract: any handle value is accepted.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelDeleteGpadl(channel: VMBCHANNEL, gpadl_handle: UINT32) {
    let _model = ModelCode::enter();
    if let Some((w, s, h)) = self::channel("VmbChannelDeleteGpadl", channel) {
        w.gpadl_delete(s, h, gpadl_handle);
    }
}

/// Proof at compile time that each definition above has exactly the type of the declaration
/// in `kmcl-sys` (the fn-pointer types are written from its extern block): a change on either
/// side breaks the build.
const _: () = {
    macro_rules! same {
        ($($name:ident: $ty:ty;)*) => {$(
            let _: $ty = $name;
            let _: $ty = kmcl_sys::$name;
        )*};
    }
    use kmcl_sys as k;
    same! {
        VmbChannelAllocate: unsafe extern "C" fn(k::PDEVICE_OBJECT, k::BOOLEAN, *mut k::VMBCHANNEL) -> k::NTSTATUS;
        VmbChannelCleanup: unsafe extern "C" fn(k::VMBCHANNEL);
        VmbChannelEnable: unsafe extern "C" fn(k::VMBCHANNEL) -> k::NTSTATUS;
        VmbChannelDisable: unsafe extern "C" fn(k::VMBCHANNEL);
        VmbChannelPause: unsafe extern "C" fn(k::VMBCHANNEL);
        VmbChannelStart: unsafe extern "C" fn(k::VMBCHANNEL);
        VmbChannelInitSetMaximumPacketSize: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32) -> k::NTSTATUS;
        VmbChannelInitSetMaximumExternalData: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32, k::UINT32) -> k::NTSTATUS;
        VmbChannelInitSetClientContextSize: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32) -> k::NTSTATUS;
        VmbChannelInitSetProcessPacketCallbacks: unsafe extern "C" fn(k::VMBCHANNEL, k::PFN_VMB_CHANNEL_PROCESS_PACKET, k::PFN_VMB_CHANNEL_PROCESSING_COMPLETE) -> k::NTSTATUS;
        VmbChannelInitSetStateChangeCallbacks: unsafe extern "C" fn(k::VMBCHANNEL, k::PVMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> k::NTSTATUS;
        VmbChannelInitSetFriendlyName: unsafe extern "C" fn(k::VMBCHANNEL, k::PCUNICODE_STRING) -> k::NTSTATUS;
        VmbChannelInitSetFlags: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32) -> k::NTSTATUS;
        VmbClientChannelInitSetRingBufferPageCount: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32, k::UINT32) -> k::NTSTATUS;
        VmbClientChannelInitSetTargetPnp: unsafe extern "C" fn(k::VMBCHANNEL, k::LPCGUID, k::LPCGUID, k::PFN_VMB_CHANNEL_PNP_FAILURE) -> k::NTSTATUS;
        VmbChannelSetIncomingProcessingAtPassive: unsafe extern "C" fn(k::VMBCHANNEL, k::BOOLEAN);
        VmbChannelSetTransactionQuota: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32);
        VmbChannelSetInterruptLatency: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT16, k::PUINT16) -> k::NTSTATUS;
        VmbChannelGetInterfaceInstance: unsafe extern "C" fn(k::VMBCHANNEL, k::LPGUID);
        VmbChannelSetPointer: unsafe extern "C" fn(k::VMBCHANNEL, k::PVOID);
        VmbChannelGetPointer: unsafe extern "C" fn(k::VMBCHANNEL) -> k::PVOID;
        VmbChannelPacketComplete: unsafe extern "C" fn(k::VMBPACKETCOMPLETION, k::PVOID, k::UINT32);
        VmbChannelPacketFail: unsafe extern "C" fn(k::VMBPACKETCOMPLETION);
        VmbChannelPacketDeferToPassive: unsafe extern "C" fn(k::VMBPACKETCOMPLETION);
        VmbChannelPacketGetExternalData: unsafe extern "C" fn(k::VMBPACKETCOMPLETION, k::UINT32, *mut k::PMDL) -> k::NTSTATUS;
        VmbChannelSizeofPacket: unsafe extern "C" fn(k::VMBCHANNEL) -> k::UINT32;
        VmbPacketAllocate: unsafe extern "C" fn(k::VMBCHANNEL) -> k::VMBPACKET;
        VmbPacketInitialize: unsafe extern "C" fn(k::VMBCHANNEL, k::VMBPACKET, k::UINT32) -> k::NTSTATUS;
        VmbPacketFree: unsafe extern "C" fn(k::VMBPACKET);
        VmbPacketSetCompletionRoutine: unsafe extern "C" fn(k::VMBPACKET, k::PFN_VMB_PACKET_COMPLETION_ROUTINE);
        VmbPacketSend: unsafe extern "C" fn(k::VMBPACKET, k::PVOID, k::UINT32, k::PMDL, k::UINT32) -> k::NTSTATUS;
        VmbPacketSendWithExternalMdl: unsafe extern "C" fn(k::VMBPACKET, k::PVOID, k::UINT32, k::PMDL, k::UINT32, k::UINT32, k::UINT32) -> k::NTSTATUS;
        VmbPacketSendWithExternalPfns: unsafe extern "C" fn(k::VMBPACKET, k::PVOID, k::UINT32, k::PPFN_NUMBER, k::UINT32, k::UINT32) -> k::NTSTATUS;
        VmbChannelSendSynchronousRequest: unsafe extern "C" fn(k::VMBCHANNEL, k::PVOID, k::UINT32, k::PMDL, k::UINT32, k::PVOID, k::PUINT32, k::PLARGE_INTEGER) -> k::NTSTATUS;
        VmbPacketGetChannel: unsafe extern "C" fn(k::VMBPACKET) -> k::VMBCHANNEL;
        VmbPacketSetPointer: unsafe extern "C" fn(k::VMBPACKET, k::PVOID);
        VmbPacketGetPointer: unsafe extern "C" fn(k::VMBPACKET) -> k::PVOID;
        VmbChannelCreateGpadlFromBuffer: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32, k::PVOID, k::UINT32, k::PUINT32) -> k::NTSTATUS;
        VmbChannelCreateGpadlFromMdl: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32, k::PMDL, k::UINT32, k::UINT32, k::PUINT32) -> k::NTSTATUS;
        VmbChannelDeleteGpadl: unsafe extern "C" fn(k::VMBCHANNEL, k::UINT32);
    }
};
