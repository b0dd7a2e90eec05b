//! The client interface table: the model answers `IRP_MN_QUERY_INTERFACE` for
//! `KMCL_CLIENT_INTERFACE_TYPE` the way the VMBus bus driver does, and counts references.
//!
//! [`query_interface`] is what `WdfFdoQueryForInterface` on a device of this world reaches: it
//! checks the GUID (another interface type: `STATUS_NOT_SUPPORTED`, as a bus driver that does
//! not export it leaves the IRP), the size and the version (the model serves
//! `KMCL_CLIENT_INTERFACE_V1` only; anything else is recorded as
//! [`InterfaceQueryMismatch`](crate::ViolationKind::InterfaceQueryMismatch) and refused), fills
//! the `INTERFACE` header (its `Context` is the device's token, its reference functions the
//! model's) and the 41 function pointers (the same functions that are exported plainly, plus
//! `VmbChannelGetMmioSpace`), and takes one reference for the caller (PnP: "the driver that
//! exports the interface calls InterfaceReference before returning").
//!
//! The verifier then sees:
//!
//! * every KMCL call of a world whose device was queried while no reference is held, or after
//!   [`Host::remove_device`](crate::Host::remove_device):
//!   [`InterfaceUseAfterRelease`](crate::ViolationKind::InterfaceUseAfterRelease);
//! * a dereference with no reference left:
//!   [`InterfaceReleasedTwice`](crate::ViolationKind::InterfaceReleasedTwice);
//! * references still held when the device is removed:
//!   [`InterfaceNotReleased`](crate::ViolationKind::InterfaceNotReleased).
//!
//! A world whose device was never queried is a guest that links the plain functions
//! (`vmbkmcl.lib`): nothing is counted for it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use kmcl_sys::{
    self as sys, GUID, KMCL_CLIENT_INTERFACE_V1, PDEVICE_OBJECT, PINTERFACE, PVOID, USHORT,
    VMBCHANNEL,
};
use ntstatus::NtStatus;

use crate::exports;
use crate::handle::{self, Kind};
use crate::irql::ModelCode;
use crate::violation::{Violation, ViolationKind as V, record_orphan};

/// The interface bookkeeping of one world.
#[derive(Debug, Default)]
pub(crate) struct InterfaceState {
    /// References the guest holds (from queries and `InterfaceReference`).
    refs: AtomicI64,
    /// A query succeeded at least once: the guest uses the table.
    queried: AtomicBool,
    /// [`Host::remove_device`](crate::Host::remove_device) ran.
    removed: AtomicBool,
    /// Successful queries.
    queries: AtomicU64,
}

impl InterfaceState {
    /// The references held now.
    pub(crate) fn references(&self) -> i64 {
        self.refs.load(Ordering::Acquire)
    }

    /// Successful queries so far.
    pub(crate) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether a KMCL call may go through the table now; `Err(why)` when it is a call through
    /// a released table.
    pub(crate) fn check_call(&self) -> Result<(), &'static str> {
        if self.removed.load(Ordering::Acquire) && self.queried.load(Ordering::Acquire) {
            return Err("a KMCL call after the device was removed");
        }
        if self.queried.load(Ordering::Acquire) && self.refs.load(Ordering::Acquire) <= 0 {
            return Err("a KMCL call while no reference on the client interface table is held");
        }
        Ok(())
    }

    /// The device is being removed: the references still held, and from now on every call is
    /// a use after release.
    pub(crate) fn remove(&self) -> i64 {
        self.removed.store(true, Ordering::Release);
        self.refs.load(Ordering::Acquire)
    }
}

/// The world of a device token (`Host::parent_device`, also the table's `Context`).
fn world_of(device: usize) -> Option<std::sync::Arc<crate::world::World>> {
    handle::decode(device)
        .filter(|d| d.kind == Kind::Device)
        .and_then(|d| handle::world(d.world))
}

/// `IRP_MN_QUERY_INTERFACE` for `interface_type` on the VMBus device `device` of this model
/// (a [`Host::parent_device`](crate::Host::parent_device)), as the bus driver answers it; what
/// `WdfFdoQueryForInterface(device, interface_type, interface, size, version, specific)`
/// reaches.
///
/// # Errors (the returned status)
/// `STATUS_NOT_SUPPORTED` for another interface type, or a size or version that is not
/// `KMCL_CLIENT_INTERFACE_V1`'s (also recorded); `STATUS_INVALID_PARAMETER` for a NULL
/// interface; `STATUS_NO_SUCH_DEVICE` for a device of no live world; the status armed with
/// [`FaultPlan::fail_interface_queries`](crate::FaultPlan::fail_interface_queries).
///
/// # Safety
/// `interface` is NULL or writable for `size` bytes.
pub unsafe fn query_interface(
    device: PDEVICE_OBJECT,
    interface_type: &GUID,
    interface: PINTERFACE,
    size: USHORT,
    version: USHORT,
    interface_specific_data: PVOID,
) -> NtStatus {
    const F: &str = "IRP_MN_QUERY_INTERFACE";
    let _model = ModelCode::enter();
    let _ = interface_specific_data; // KMCL defines none (dxgkrnl passes NULL).
    let dh = device.addr();
    let Some(w) = world_of(dh) else {
        record_orphan(Violation::new(
            V::InvalidHandle,
            F,
            dh,
            "the device is not the parent_device() of a live Host",
        ));
        return NtStatus::STATUS_NO_SUCH_DEVICE;
    };
    if !crate::host::guid_eq(interface_type, &sys::KMCL_CLIENT_INTERFACE_TYPE) {
        return NtStatus::STATUS_NOT_SUPPORTED;
    }
    if interface.is_null() {
        return NtStatus::STATUS_INVALID_PARAMETER;
    }
    if size != sys::KMCL_CLIENT_INTERFACE_V1_SIZE
        || u32::from(version) != sys::KMCL_CLIENT_INTERFACE_VERSION_V1
    {
        w.record(
            V::InterfaceQueryMismatch,
            F,
            dh,
            format!(
                "size {size:#x} version {version}: KMCL_CLIENT_INTERFACE_V1 is size {:#x} \
                 version {} (the model serves V1 only)",
                sys::KMCL_CLIENT_INTERFACE_V1_SIZE,
                sys::KMCL_CLIENT_INTERFACE_VERSION_V1
            ),
        );
        return NtStatus::STATUS_NOT_SUPPORTED;
    }
    if let Some(status) = w.faults.take_interface_query_failure() {
        return status;
    }
    let mut table = table();
    {
        let header = sys::interface_header_mut(&mut table);
        header.Size = size;
        header.Version = version;
        header.Context = std::ptr::without_provenance_mut(dh);
        header.InterfaceReference = Some(interface_reference);
        header.InterfaceDereference = Some(interface_dereference);
    }
    // SAFETY: `interface` is writable for `size` == sizeof(KMCL_CLIENT_INTERFACE_V1) bytes
    // (caller); the copy is untyped, so the header's pointers keep their provenance.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(&table).cast::<u8>(),
            interface.cast::<u8>(),
            std::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>(),
        );
    };
    let iface = w.interface();
    iface.refs.fetch_add(1, Ordering::AcqRel);
    iface.queried.store(true, Ordering::Release);
    iface.queries.fetch_add(1, Ordering::Relaxed);
    NtStatus::STATUS_SUCCESS
}

/// The table's `InterfaceReference`.
unsafe extern "C" fn interface_reference(context: PVOID) {
    let _model = ModelCode::enter();
    let h = context.addr();
    match world_of(h) {
        Some(w) => {
            let iface = w.interface();
            if iface.refs.fetch_add(1, Ordering::AcqRel) <= 0 {
                w.record(
                    V::InterfaceUseAfterRelease,
                    "InterfaceReference",
                    h,
                    "a reference taken on a table every reference of which was released",
                );
            }
        }
        None => record_orphan(Violation::new(
            V::InvalidHandle,
            "InterfaceReference",
            h,
            "not the Context of a live table",
        )),
    }
}

/// The table's `InterfaceDereference`.
unsafe extern "C" fn interface_dereference(context: PVOID) {
    let _model = ModelCode::enter();
    let h = context.addr();
    match world_of(h) {
        Some(w) => {
            let iface = w.interface();
            if iface.refs.fetch_sub(1, Ordering::AcqRel) <= 0 {
                iface.refs.fetch_add(1, Ordering::AcqRel);
                w.record(
                    V::InterfaceReleasedTwice,
                    "InterfaceDereference",
                    h,
                    "released with no reference left",
                );
            }
        }
        None => record_orphan(Violation::new(
            V::InvalidHandle,
            "InterfaceDereference",
            h,
            "not the Context of a live table",
        )),
    }
}

/// `VmbChannelGetMmioSpace`, which the table has and the plain exports do not: the offer's
/// MMIO range ([`ModelConfig::mmio_space`](crate::ModelConfig::mmio_space)); zeros for a
/// channel the model does not know.
///
/// # Safety
/// `address` and `size` are each NULL or writable for one `UINT64`.
unsafe extern "C" fn vmb_channel_get_mmio_space(
    channel: VMBCHANNEL,
    address: *mut u64,
    size: *mut u64,
) {
    let _model = ModelCode::enter();
    let (a, s) = exports::mmio_space(channel);
    if !address.is_null() {
        // SAFETY: writable for one u64 (caller).
        unsafe { address.write_unaligned(a) };
    }
    if !size.is_null() {
        // SAFETY: as above.
        unsafe { size.write_unaligned(s) };
    }
}

/// The function part of the table: the model's exports, in member order.
fn table() -> KMCL_CLIENT_INTERFACE_V1 {
    use crate::exports as e;
    KMCL_CLIENT_INTERFACE_V1 {
        __bindgen_padding_0: [0; 32],
        VmbChannelAllocate: Some(e::VmbChannelAllocate),
        VmbChannelCleanup: Some(e::VmbChannelCleanup),
        VmbChannelCreateGpadlFromBuffer: Some(e::VmbChannelCreateGpadlFromBuffer),
        VmbChannelCreateGpadlFromMdl: Some(e::VmbChannelCreateGpadlFromMdl),
        VmbChannelDeleteGpadl: Some(e::VmbChannelDeleteGpadl),
        VmbChannelDisable: Some(e::VmbChannelDisable),
        VmbChannelEnable: Some(e::VmbChannelEnable),
        VmbChannelGetInterfaceInstance: Some(e::VmbChannelGetInterfaceInstance),
        VmbChannelGetMmioSpace: Some(vmb_channel_get_mmio_space),
        VmbChannelGetPointer: Some(e::VmbChannelGetPointer),
        VmbChannelInitSetClientContextSize: Some(e::VmbChannelInitSetClientContextSize),
        VmbChannelInitSetFlags: Some(e::VmbChannelInitSetFlags),
        VmbChannelInitSetFriendlyName: Some(e::VmbChannelInitSetFriendlyName),
        VmbChannelInitSetMaximumExternalData: Some(e::VmbChannelInitSetMaximumExternalData),
        VmbChannelInitSetMaximumPacketSize: Some(e::VmbChannelInitSetMaximumPacketSize),
        VmbChannelInitSetProcessPacketCallbacks: Some(e::VmbChannelInitSetProcessPacketCallbacks),
        VmbChannelInitSetStateChangeCallbacks: Some(e::VmbChannelInitSetStateChangeCallbacks),
        VmbChannelPacketComplete: Some(e::VmbChannelPacketComplete),
        VmbChannelPacketDeferToPassive: Some(e::VmbChannelPacketDeferToPassive),
        VmbChannelPacketFail: Some(e::VmbChannelPacketFail),
        VmbChannelPacketGetExternalData: Some(e::VmbChannelPacketGetExternalData),
        VmbChannelPause: Some(e::VmbChannelPause),
        VmbChannelSendSynchronousRequest: Some(e::VmbChannelSendSynchronousRequest),
        VmbChannelSetIncomingProcessingAtPassive: Some(e::VmbChannelSetIncomingProcessingAtPassive),
        VmbChannelSetInterruptLatency: Some(e::VmbChannelSetInterruptLatency),
        VmbChannelSetPointer: Some(e::VmbChannelSetPointer),
        VmbChannelSetTransactionQuota: Some(e::VmbChannelSetTransactionQuota),
        VmbChannelSizeofPacket: Some(e::VmbChannelSizeofPacket),
        VmbChannelStart: Some(e::VmbChannelStart),
        VmbClientChannelInitSetRingBufferPageCount: Some(
            e::VmbClientChannelInitSetRingBufferPageCount,
        ),
        VmbClientChannelInitSetTargetPnp: Some(e::VmbClientChannelInitSetTargetPnp),
        VmbPacketAllocate: Some(e::VmbPacketAllocate),
        VmbPacketFree: Some(e::VmbPacketFree),
        VmbPacketGetChannel: Some(e::VmbPacketGetChannel),
        VmbPacketGetPointer: Some(e::VmbPacketGetPointer),
        VmbPacketInitialize: Some(e::VmbPacketInitialize),
        VmbPacketSend: Some(e::VmbPacketSend),
        VmbPacketSendWithExternalMdl: Some(e::VmbPacketSendWithExternalMdl),
        VmbPacketSendWithExternalPfns: Some(e::VmbPacketSendWithExternalPfns),
        VmbPacketSetCompletionRoutine: Some(e::VmbPacketSetCompletionRoutine),
        VmbPacketSetPointer: Some(e::VmbPacketSetPointer),
    }
}
