//! The device: its context (which owns the [`Core`]), its creation, and the PnP/power
//! callbacks that bring the VMBus channel up and down.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use wdk::paged_code;
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, GUID, NTSTATUS, PWDFDEVICE_INIT,
    WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO, WDF_PNPPOWER_EVENT_CALLBACKS,
    WDF_WORKITEM_CONFIG, WDFDEVICE, WDFOBJECT, WDFWORKITEM, WDFWORKITEM__,
    call_unsafe_wdf_function_binding,
};

use super::queue::{self, WdfPlatform};
use super::request::REQUEST_CONTEXT_TYPE_INFO;
use super::{ContextTypeInfo, wdf_size};
use crate::{Core, Library, NtStatus, ParentDevice};

// ---- the device context ------------------------------------------------------------------------

/// The per-device storage WDF allocates with the device (what `WDF_DECLARE_CONTEXT_TYPE`
/// declares in C): the [`Core`] of this device and the handle of its parked queue.
///
/// WDF zero-fills it, and every field is valid when zero (null, `false`, uninitialised), so a
/// `&DeviceContext` is sound from the moment the device exists. It is only ever accessed through
/// shared references; the two writes it ever needs (the core moving in during device add, and
/// out during destroy) go through `UnsafeCell` and atomics.
pub(super) struct DeviceContext {
    /// The manual queue of parked RECV requests: null until device add creates it, and null
    /// again once the device is being destroyed (the queue is gone by then). Read by
    /// [`WdfPlatform`].
    parked_queue: AtomicPtr<c_void>,
    /// The work item that enables the channel again after the host closed it
    /// ([`evt_restart_work_item`]): null until device add creates it, and null again from the
    /// device's cleanup callback on (no restart is queued once the teardown began). Read by
    /// [`WdfPlatform`].
    restart_work: AtomicPtr<c_void>,
    /// True while `core` holds a value: set once it has been written, cleared before it is
    /// dropped.
    core_live: AtomicBool,
    /// The core, initialised in [`create`] and dropped in [`evt_device_destroy`].
    core: UnsafeCell<MaybeUninit<Core<WdfPlatform>>>,
    /// True while `library` holds a value: set once it has been written, cleared before it is
    /// dropped.
    library_live: AtomicBool,
    /// The device's KMCL (the client interface table queried on this device, and its
    /// reference), initialised in [`create`] and dropped in [`evt_device_cleanup`].
    library: UnsafeCell<MaybeUninit<Library>>,
}

// WDF places an object's context at MEMORY_ALLOCATION_ALIGNMENT, 16 bytes on 64-bit Windows
// (Windows-Driver-Frameworks `src/framework/shared/inc/private/common/fxhandle.h`:
// `FxContextHeader::Context` is `DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT)`). A context that
// needs more would be misaligned.
const _: () = assert!(align_of::<DeviceContext>() <= 16);

// I/O callbacks on several processors use the core at once through `&Core`.
const _: () = {
    const fn assert_sync<T: Sync>() {}
    assert_sync::<Core<WdfPlatform>>();
};

/// The type information of [`DeviceContext`], as `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` declares it
/// in C (wdfobject.h): its size, its name, and `UniqueType` pointing at itself, the identity
/// `WdfObjectGetTypedContextWorker` compares.
// SAFETY: wdfobject.h places these structures in `.data` (`WDF_TYPE_DEFAULT_SECTION_NAME`), and
// so does the echo sample (`wdf_object_context.rs`); it is an ordinary writable data section, so
// nothing about the static changes except its placement.
#[unsafe(link_section = ".data")]
static DEVICE_CONTEXT_TYPE_INFO: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    ContextName: c"DeviceContext".as_ptr(),
    ContextSize: size_of::<DeviceContext>(),
    UniqueType: (&raw const DEVICE_CONTEXT_TYPE_INFO).cast::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    EvtDriverGetUniqueContextType: None,
});

/// The device's context.
///
/// # Safety
/// `device` is a device created by [`create`] (so it has a [`DeviceContext`]) whose context
/// still exists: from `WdfDeviceCreate` until [`evt_device_destroy`] returns.
unsafe fn context<'a>(device: WDFDEVICE) -> Option<&'a DeviceContext> {
    // SAFETY: `create` gives every device it creates a `DeviceContext` declared by
    // `DEVICE_CONTEXT_TYPE_INFO` (caller: `device` is one of them); all-zero is a valid
    // `DeviceContext` (see the type) and it is never accessed through `&mut`; it lives until the
    // device's destroy callback returns, which outlasts every use (caller).
    unsafe { DEVICE_CONTEXT_TYPE_INFO.context_of(device) }
}

/// The core of `device`, once [`create`] has put it in place.
///
/// # Safety
/// `device` is a device created by [`create`], and the reference is used only inside the
/// framework callback (of the device or of one of its queues) that called this: KMDF keeps the
/// device and its context alive while it runs one of their callbacks, and the core is dropped
/// only in the device's destroy callback, after all of them.
pub(super) unsafe fn core<'a>(device: WDFDEVICE) -> Option<&'a Core<WdfPlatform>> {
    // SAFETY: forwarded from the caller.
    let context = unsafe { context(device) }?;
    if !context.core_live.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `core_live` is set (Release) only after the core was written, and cleared before
    // it is dropped, which happens only once no callback can run; so the core is initialised and
    // outlives this use. `MaybeUninit<T>` has the layout of `T`. Nothing mutates it while shared
    // references exist: after initialisation the context only hands out `&Core`.
    Some(unsafe { &*context.core.get().cast::<Core<WdfPlatform>>() })
}

/// The KMCL of `device`, while [`create`] has put it in place and [`evt_device_cleanup`] has not
/// released it.
///
/// # Safety
/// As for [`core`]; and the reference is only used inside a PnP callback of the device, which
/// KMDF never runs at the same time as the device's cleanup callback.
unsafe fn library<'a>(device: WDFDEVICE) -> Option<&'a Library> {
    // SAFETY: forwarded from the caller.
    let context = unsafe { context(device) }?;
    if !context.library_live.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `library_live` is set (Release) only after the library was written, and cleared
    // before it is dropped in the cleanup callback, which no PnP callback overlaps (caller);
    // `MaybeUninit<T>` has the layout of `T`; after initialisation it is only shared.
    Some(unsafe { &*context.library.get().cast::<Library>() })
}

/// The device's KMCL: the client interface table, queried on the device itself
/// (`WdfFdoQueryForInterface`, `KMCL_CLIENT_INTERFACE_TYPE`, `sizeof(KMCL_CLIENT_INTERFACE_V1)`,
/// version 1), or with the `linked-kmcl` feature the functions linked from `vmbkmcl.lib`.
///
/// The query goes down this device's own stack to the VMBus child PDO, whose bus driver
/// (Vmbkmcl.sys) exports the interface (learn.microsoft.com, `_KMCL_CLIENT_INTERFACE_V1`,
/// Remarks; `WdfFdoQueryForInterface`: "an interface ... created by a driver that resides in the
/// same driver stack"). PASSIVE_LEVEL.
///
/// # Safety
/// `device` is a live device created by `WdfDeviceCreate` (attached to its stack), at
/// PASSIVE_LEVEL.
#[cfg(not(feature = "linked-kmcl"))]
unsafe fn query_kmcl(device: WDFDEVICE) -> Result<Library, NtStatus> {
    let query = |interface, size, version, interface_type: &GUID| {
        // SAFETY: `device` is live (caller); `interface_type` and `interface` are valid for the
        // call, `interface` writable for `size` bytes; no interface-specific data. PASSIVE.
        NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(
                WdfFdoQueryForInterface,
                device,
                ptr::from_ref(interface_type),
                interface,
                size,
                version,
                ptr::null_mut(),
            )
        })
    };
    // SAFETY: WdfFdoQueryForInterface is a PnP query-interface on the device's stack: on
    // success it has filled the whole structure (`interface`, of `size` bytes, the table kmcl
    // allocated) and the provider took one reference for us, which `Library` owns.
    unsafe { Library::query(query) }
}

/// See the other `query_kmcl`: with `linked-kmcl`, no query.
///
/// # Safety
/// None; `unsafe` to match the queried variant.
#[cfg(feature = "linked-kmcl")]
unsafe fn query_kmcl(_device: WDFDEVICE) -> Result<Library, NtStatus> {
    Ok(Library::linked())
}

// ---- device creation ----------------------------------------------------------------------------

/// The device interface the user-mode tool opens (vmbmsg-proto `GUID_DEVINTERFACE_VMBMSG`).
const GUID_DEVINTERFACE_VMBMSG: GUID = {
    let guid = vmbmsg_proto::GUID_DEVINTERFACE_VMBMSG;
    GUID {
        Data1: guid.data1,
        Data2: guid.data2,
        Data3: guid.data3,
        Data4: guid.data4,
    }
};

/// Builds the device and everything it needs, for EvtDriverDeviceAdd.
///
/// Order: callbacks on `device_init`, `WdfDeviceCreate`, the KMCL client interface (queried on
/// the new device, see [`query_kmcl`]: the first point at which the FDO is attached to the
/// VMBus stack, as the KMDF Toaster function driver queries its bus interface right after
/// `WdfDeviceCreate`; a failure fails device add, with a debugger log line, so the device
/// shows Code 10 instead of starting without a way to reach its channel), the parked queue,
/// the core (its platform is that queue), the default queue (which may present requests at
/// once, so it comes after the core), the device interface (which announces the device to user
/// mode, so it comes last). On failure the status is returned and KMDF deletes the half-built device
/// (`FxDriver::AddDevice` calls `DeleteDeviceFromFailedCreate`, Windows-Driver-Frameworks
/// `src/framework/shared/core/km/fxdriverkm.cpp`): its destroy callback copes with a core that
/// was never put in place. Before `WdfDeviceCreate`, returning is enough too: the
/// `WDFDEVICE_INIT` of EvtDriverDeviceAdd belongs to the framework, which frees it.
///
/// # Safety
/// Called from EvtDriverDeviceAdd with the `device_init` the framework passed to it, which has
/// not been given to `WdfDeviceCreate` yet.
///
/// # IRQL
/// PASSIVE_LEVEL.
#[unsafe(link_section = "PAGE")]
pub(super) unsafe fn create(mut device_init: PWDFDEVICE_INIT) -> NtStatus {
    paged_code!();

    // `WDF_PNPPOWER_EVENT_CALLBACKS_INIT` (zero and `Size`) plus our callbacks; the power-up
    // callback serves both first start and restart, as in the echo sample.
    let mut pnp_power_callbacks = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: const { wdf_size::<WDF_PNPPOWER_EVENT_CALLBACKS>() },
        EvtDeviceSelfManagedIoInit: Some(evt_self_managed_io_start),
        EvtDeviceSelfManagedIoRestart: Some(evt_self_managed_io_start),
        EvtDeviceSelfManagedIoSuspend: Some(evt_self_managed_io_suspend),
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: `device_init` is the framework's and not yet consumed (caller);
    // `pnp_power_callbacks` is valid with its `Size` set and is copied during the call.
    // <= DISPATCH_LEVEL (wdfdevice.h).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            device_init,
            &raw mut pnp_power_callbacks,
        );
    }

    // Every request of this device gets a `RequestContext` (request.rs), where a PING or SEND
    // keeps its cancel token while it is cancellable, for `EvtRequestCancel` to find.
    // `WDF_OBJECT_ATTRIBUTES_INIT_CONTEXT_TYPE`: zero, `Size`, both levels inherited (zero is
    // *Invalid*), the type's `UniqueType`. No parent: requests are parented by the framework
    // (`WdfDeviceInitSetRequestAttributes` validates with FX_VALIDATE_OPTION_PARENT_NOT_ALLOWED,
    // Windows-Driver-Frameworks `src/framework/shared/core/fxdeviceinitapi.cpp`), and no
    // callbacks: the token never outlives the request's cancellable span.
    let mut request_attributes = WDF_OBJECT_ATTRIBUTES {
        Size: const { wdf_size::<WDF_OBJECT_ATTRIBUTES>() },
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: REQUEST_CONTEXT_TYPE_INFO.0.UniqueType,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    // SAFETY: `device_init` is the framework's and not yet consumed (caller);
    // `request_attributes` is valid with its `Size` set and is copied during the call
    // (`RtlCopyMemory` into `WDFDEVICE_INIT::RequestAttributes`, fxdeviceinitapi.cpp); its
    // `ContextTypeInfo` points at a static. <= DISPATCH_LEVEL (wdfdevice.h). It must come before
    // `WdfDeviceCreate`, which reads it (`FxDevice::Initialize` copies it into
    // `m_RequestAttributes`, fxdevice.cpp).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetRequestAttributes,
            device_init,
            &raw mut request_attributes,
        );
    }

    // Security: no name and no SDDL here. The FDO stays unnamed (KMDF's default): the VMBus PDO
    // below it is already named, and a stack should have one named object, whose security
    // then covers every open of the stack ("NT Device Names"; "Controlling Device Access in
    // KMDF Drivers": a function driver does not name its FDO or call
    // WdfDeviceInitAssignSDDLString unless it must). The INF secures the whole stack instead:
    // `Security` (SYSTEM and Administrators only) and `DeviceCharacteristics` with
    // FILE_DEVICE_SECURE_OPEN under `[VmbMsg_Device.NT$ARCH$.HW]`, which the PnP manager
    // applies to every device object of the stack and to the device interface user mode opens
    // (tests/inf.rs checks both lines).

    // `WDF_OBJECT_ATTRIBUTES_INIT` (zero, `Size`, both levels inherited: zero is *Invalid* for
    // both, and `FxValidateObjectAttributes` rejects it), then
    // `WDF_OBJECT_ATTRIBUTES_SET_CONTEXT_TYPE` (the type's `UniqueType`) and our destroy
    // callback. No parent: a device may not have one.
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: const { wdf_size::<WDF_OBJECT_ATTRIBUTES>() },
        EvtCleanupCallback: Some(evt_device_cleanup),
        EvtDestroyCallback: Some(evt_device_destroy),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: DEVICE_CONTEXT_TYPE_INFO.0.UniqueType,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: `device_init` points to the framework's `WDFDEVICE_INIT`, not yet consumed; the
    // call takes its address (`PWDFDEVICE_INIT*`) and consumes it on success, and it is not used
    // again either way. `attributes` is valid with its `Size` set; `device` is a valid
    // out-pointer. PASSIVE_LEVEL (wdfdevice.h).
    let status = NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device,
        )
    });
    if !status.is_success() {
        return status;
    }

    // SAFETY: `device` was created just above with our context type, and this runs before
    // EvtDriverDeviceAdd returns, long before the destroy callback.
    let Some(context) = (unsafe { context(device) }) else {
        return NtStatus::STATUS_INTERNAL_ERROR;
    };

    // SAFETY: `device` was just created (attached to its stack); PASSIVE_LEVEL.
    let library = match unsafe { query_kmcl(device) } {
        Ok(library) => library,
        Err(status) => {
            log_error(format_args!(
                "vmbmsg: device add failed: the VMBus KMCL client interface \
                 (KMCL_CLIENT_INTERFACE_TYPE, version 1) could not be queried on this device: \
                 {status}"
            ));
            return status;
        }
    };
    // SAFETY: nothing else uses the context yet (no other callback of this device runs before
    // EvtDriverDeviceAdd returns) and `library_live` is false; the write initialises the
    // `MaybeUninit` in place.
    unsafe { context.library.get().write(MaybeUninit::new(library)) };
    context.library_live.store(true, Ordering::Release);

    // SAFETY: `device` is live and created by `create`. PASSIVE_LEVEL.
    let parked_queue = match unsafe { queue::create_parked_queue(device) } {
        Ok(queue) => queue,
        Err(status) => return status,
    };
    context
        .parked_queue
        .store(parked_queue.cast::<c_void>(), Ordering::Release);

    // The restart work item (`Platform::channel_closed_by_host`): parented to the device, so
    // KMDF deletes it with the device; the cleanup callback flushes it first.
    // SAFETY: `device` is live and created by `create`. PASSIVE_LEVEL.
    let restart_work = match unsafe { create_restart_work_item(device) } {
        Ok(item) => item,
        Err(status) => return status,
    };
    context.restart_work.store(restart_work, Ordering::Release);

    // SAFETY: the cells are this device's context fields, and the platform will live in the
    // core stored in that same context, so they outlive it. `parked_queue` holds the device's
    // live manual queue until KMDF deletes the queue, which happens only while the device itself
    // is being deleted, when nothing that could call the platform runs (no I/O callback, no
    // channel: `channel_down` ran in `evt_self_managed_io_suspend`); `evt_device_destroy` then
    // empties it before the core's teardown, the one later caller. `restart_work` holds the
    // device's live work item until `evt_device_cleanup` empties it, before KMDF deletes it.
    let platform = unsafe {
        WdfPlatform::new(
            NonNull::from(&context.parked_queue),
            NonNull::from(&context.restart_work),
        )
    };
    let core = match Core::new(platform) {
        Ok(core) => core,
        Err(status) => return status,
    };
    // SAFETY: nothing else can be using the context: the default queue does not exist yet and no
    // PnP callback of this device runs before EvtDriverDeviceAdd returns; `core_live` is false,
    // so no reference to `core` exists. The write initialises the `MaybeUninit` in place.
    unsafe { context.core.get().write(MaybeUninit::new(core)) };
    context.core_live.store(true, Ordering::Release);

    // SAFETY: `device` is live and its core is in place. PASSIVE_LEVEL.
    let status = unsafe { queue::create_default_queue(device) };
    if !status.is_success() {
        return status;
    }

    // SAFETY: `device` is live; the GUID is a constant the framework reads during the call;
    // no reference string (`_In_opt_`). PASSIVE_LEVEL (wdfdevice.h).
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreateDeviceInterface,
            device,
            &GUID_DEVINTERFACE_VMBMSG,
            ptr::null(),
        )
    })
}

/// Creates the device's restart work item: [`evt_restart_work_item`], parented to `device`.
///
/// # Safety
/// `device` is a live device created by [`create`]. PASSIVE_LEVEL.
unsafe fn create_restart_work_item(device: WDFDEVICE) -> Result<*mut c_void, NtStatus> {
    // `WDF_WORKITEM_CONFIG_INIT(&config, EvtWorkItemFunc)` (wdfworkitem.h): zero, `Size`, the
    // callback, `AutomaticSerialization = TRUE`. FALSE here: the device has no synchronization
    // scope to serialise with (the core serialises the restart with its own lock), and TRUE
    // would need one (`WdfWorkItemCreate` fails it otherwise, "Using Automatic Synchronization").
    let mut config = WDF_WORKITEM_CONFIG {
        Size: const { wdf_size::<WDF_WORKITEM_CONFIG>() },
        EvtWorkItemFunc: Some(evt_restart_work_item),
        AutomaticSerialization: 0,
    };
    // `WDF_OBJECT_ATTRIBUTES_INIT` plus `ParentObject`: a work item must have a parent (the
    // device here), whose deletion deletes it.
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: const { wdf_size::<WDF_OBJECT_ATTRIBUTES>() },
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ParentObject: device.cast(),
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut item: WDFWORKITEM = ptr::null_mut();
    // SAFETY: `config` and `attributes` are valid with their `Size` set and read during the call
    // only; `item` is a valid out-pointer; `device` is live (caller). <= DISPATCH_LEVEL
    // (wdfworkitem.h `WdfWorkItemCreate`).
    let status = NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfWorkItemCreate,
            &raw mut config,
            &raw mut attributes,
            &raw mut item,
        )
    });
    status.ok()?;
    Ok(item.cast())
}

/// The restart work item's `EvtWorkItem`: [`Core::restart_channel`] after the host closed the
/// channel (queued by [`WdfPlatform::channel_closed_by_host`]). KMDF runs work items at
/// PASSIVE_LEVEL in a system thread, outside every channel callback, as `restart_channel`
/// needs.
///
/// # Safety
/// Only the framework calls it, with a work item created by [`create_restart_work_item`].
unsafe extern "C" fn evt_restart_work_item(item: WDFWORKITEM) {
    // SAFETY: `item` is the framework's live work item; its parent is the device it was created
    // with (`WdfWorkItemGetParentObject`, <= DISPATCH_LEVEL).
    let device: WDFDEVICE =
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemGetParentObject, item) }.cast();
    // SAFETY: the device outlives its child work item; the core is used only during this call,
    // which `evt_device_cleanup` waits for (`WdfWorkItemFlush`) before the core can go.
    if let Some(core) = unsafe { core(device) } {
        // A failure leaves the device's channel DOWN (GET_INFO shows it) until its next start.
        let _ = core.restart_channel();
    }
}

// ---- PnP and power ---------------------------------------------------------------------------------

/// `EvtDeviceSelfManagedIoInit` (first start) and `EvtDeviceSelfManagedIoRestart` (back in D0):
/// brings the VMBus channel up under this device's WDM device object.
///
/// Why the self-managed I/O callbacks, see [`evt_self_managed_io_suspend`]. A failure fails the
/// start (the device shows as failed) rather than leaving a device with no channel.
///
/// # IRQL
/// PASSIVE_LEVEL. Not pageable: it is on the power-up path, where a page fault would slow resume
/// (as the echo sample's start callback).
///
/// # Safety
/// Only the framework calls it, with a device created by [`create`].
unsafe extern "C" fn evt_self_managed_io_start(device: WDFDEVICE) -> NTSTATUS {
    // SAFETY: the framework passes its live device, created by `create`; the core is used only
    // during this callback.
    let Some(core) = (unsafe { core(device) }) else {
        return NtStatus::STATUS_INVALID_DEVICE_STATE.0;
    };
    // SAFETY: `device` is live. <= DISPATCH_LEVEL (wdfdevice.h).
    let device_object =
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
    // SAFETY: the FDO of this device, which exists until after the device's context is destroyed
    // (KMDF deletes the WDM object after the context: learn.microsoft.com, "Power-Down and
    // Removal Sequence for a Function or Filter Driver"). Every channel allocated under it is
    // cleaned up before that: `channel_down` runs in `evt_self_managed_io_suspend`, which KMDF
    // calls before every power-down and every removal of a started device, and at the latest the
    // core's own teardown in `evt_device_destroy`.
    let parent = unsafe { ParentDevice::from_raw(device_object) };
    // SAFETY: the framework passes its live device; this PnP callback never overlaps the
    // device's cleanup callback.
    let Some(library) = (unsafe { library(device) }) else {
        return NtStatus::STATUS_INVALID_DEVICE_STATE.0;
    };
    match core.channel_up(library, parent) {
        Ok(()) => NtStatus::STATUS_SUCCESS.0,
        Err(status) => status.0,
    }
}

/// `EvtDeviceSelfManagedIoSuspend`: takes the VMBus channel down before the device leaves D0 or
/// is removed.
///
/// # Why the self-managed I/O callbacks (and not D0Entry/D0Exit or PrepareHardware/ReleaseHardware)
///
/// The core keeps IOCTLs it has to answer later (a PING or SEND waiting for the host, parked
/// RECVs). Requests that came from the power-managed default queue and are still owned by the
/// driver block a power-down or removal: without an `EvtIoStop`, KMDF waits for all of them
/// before it goes on (learn.microsoft.com, "Using Power-Managed I/O Queues"; a hung wait ends in
/// bugcheck 0x9F). Their completion depends on the host, which we do not trust, so the channel
/// must come down, and those requests be finished, *before* KMDF stops the queues.
/// `EvtDeviceSelfManagedIoSuspend` is the one callback that runs at that point: first in the
/// power-down and the orderly-removal sequences, before the power-managed queues are stopped
/// ("A Device Enters a Low-Power State", "A User Unplugs a Device"). D0Exit and ReleaseHardware
/// both run after the queues are stopped, so a channel torn down there could deadlock against
/// KMDF waiting for the very requests the teardown would finish. Its counterparts
/// `EvtDeviceSelfManagedIoInit` (first start) and `…Restart` (return to D0) run just after the
/// queues are started ("A User Plugs In a Device", "A Device Returns to Its Working State"), so
/// the channel is up only while the queues run. On surprise removal KMDF stops the queues
/// first, but then the host has normally rescinded the channel, so KMCL finishes its in-flight
/// sends on its own; this callback still runs if the device was in D0.
///
/// The channel also comes down across every sleep and hibernation: a VMBus channel does not
/// survive the guest's save/restore, and the host may be a different one after it.
///
/// What the core must cope with: IOCTLs arrive briefly before `channel_up` and after
/// `channel_down` (the queues run a little longer on both sides), and must be answered without
/// a channel; a channel that failed to come up is down as well, so `channel_down` has nothing to
/// do then.
///
/// # IRQL
/// PASSIVE_LEVEL, so it is pageable (as the echo sample's suspend callback).
///
/// # Safety
/// Only the framework calls it, with a device created by [`create`].
#[unsafe(link_section = "PAGE")]
unsafe extern "C" fn evt_self_managed_io_suspend(device: WDFDEVICE) -> NTSTATUS {
    paged_code!();
    // SAFETY: the framework passes its live device, created by `create`; the core is used only
    // during this callback.
    if let Some(core) = unsafe { core(device) } {
        core.channel_down();
    }
    // A failure here would make KMDF stop and remove the device; there is nothing to report.
    NtStatus::STATUS_SUCCESS.0
}

/// The device's `EvtCleanupCallback`: takes the channel down (if a start left it up) and
/// releases the device's KMCL client interface (`InterfaceDereference`, exactly once).
///
/// # Why here
///
/// The reference must go back while the provider's context is certainly alive, that is before
/// the VMBus PDO below can be deleted. On removal KMDF runs this callback from
/// `FxPkgPnp::PnpEventRemovedCommonCode` (`EarlyDispose`), while the remove IRP is still on
/// this device, and only afterwards forwards it to the PDO and deletes the FDO
/// (`FxPkgFdo::ProcessRemoveDeviceOverload`, Windows-Driver-Frameworks
/// `src/framework/shared/irphandlers/pnp/{pnpstatemachine,fxpkgfdo}.cpp`). The destroy callback
/// runs after that, when the PDO of a rescinded channel may be gone. By now the channel is down
/// (`evt_self_managed_io_suspend` ran, and `channel_down` here is a no-op then), and the channel
/// held its own reference until its `VmbChannelCleanup`, so this is the last one.
///
/// # IRQL
/// PASSIVE_LEVEL (a `WDFDEVICE`'s cleanup callback), so it is pageable.
///
/// # Safety
/// Only the framework calls it, once, with a device created by [`create`].
#[unsafe(link_section = "PAGE")]
unsafe extern "C" fn evt_device_cleanup(object: WDFOBJECT) {
    paged_code!();
    // SAFETY: `object` is our device (this callback is registered on devices only), and its
    // context exists until its destroy callback returns.
    let Some(context) = (unsafe { context(object.cast()) }) else {
        return;
    };
    // No restart from now on: empty the cell the platform queues through, then wait for a
    // restart that is already queued or running.
    let restart_work = context.restart_work.swap(ptr::null_mut(), Ordering::AcqRel);
    if !restart_work.is_null() {
        // SAFETY: the device's live work item (KMDF deletes it with the device, after this
        // callback); `WdfWorkItemFlush` waits for a queued or running callback, at PASSIVE.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfWorkItemFlush,
                restart_work.cast::<WDFWORKITEM__>()
            );
        }
    }
    // SAFETY: as above; the core is used only during this callback.
    if let Some(core) = unsafe { core(object.cast()) } {
        core.channel_down();
    }
    if context.library_live.swap(false, Ordering::AcqRel) {
        // SAFETY: `library_live` was true, so the library is initialised and not yet dropped;
        // it is now false, so it is dropped exactly once, and no PnP callback (the only users)
        // runs at the same time as this one.
        unsafe {
            context.library.get().cast::<Library>().drop_in_place();
        };
    }
}

/// Writes an error line to the kernel debugger (`DbgPrintEx`, `DPFLTR_IHVDRIVER_ID` at
/// `DPFLTR_ERROR_LEVEL`, which the default debug filter shows; DebugView with "Capture Kernel"
/// or WinDbg). At most 511 bytes.
///
/// # IRQL
/// <= DIRQL.
fn log_error(args: core::fmt::Arguments<'_>) {
    let mut line = LogLine {
        buf: [0; 512],
        len: 0,
    };
    let _ = core::fmt::write(&mut line, args);
    let end = line.len.min(line.buf.len() - 2);
    if let Some(nl) = line.buf.get_mut(end) {
        *nl = b'\n';
    }
    // The buffer was zeroed, so the byte after the newline terminates the string.
    // SAFETY: `%s` with a NUL-terminated string in `line.buf` (at most 510 bytes, a newline,
    // and a zero); no other format specifiers are interpreted. <= DIRQL.
    unsafe {
        wdk_sys::ntddk::DbgPrintEx(
            wdk_sys::_DPFLTR_TYPE::DPFLTR_IHVDRIVER_ID as u32,
            wdk_sys::DPFLTR_ERROR_LEVEL,
            c"%s".as_ptr(),
            line.buf.as_ptr(),
        );
    }
}

/// A fixed buffer `core::fmt::Write` fills, truncating.
struct LogLine {
    buf: [u8; 512],
    len: usize,
}

impl core::fmt::Write for LogLine {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // Room for the newline and the terminator; a NUL would end the string early.
            if self.len + 2 >= self.buf.len() || b == 0 {
                break;
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// The device's `EvtDestroyCallback`: drops the core.
///
/// # Why destroy and not cleanup
///
/// The destroy callback runs once the device's reference count has reached zero, the last point
/// of the object's life: no callback of the device or of its queues is running or can run, and
/// nobody can hold a reference into the context any more, so dropping the core cannot pull it
/// from under a user. For a `WDFDEVICE` it runs at PASSIVE_LEVEL (learn.microsoft.com,
/// EVT_WDF_OBJECT_CONTEXT_DESTROY), so the core's teardown may block. The cleanup callback
/// runs earlier, when deletion starts, while references may still be outstanding. Either runs
/// exactly once, but only destroy guarantees nothing still uses the context.
///
/// By now KMDF has deleted the queues (children are destroyed before their parent), so the
/// parked-queue cell is emptied first: if the core's teardown asks the platform for parked
/// requests, it finds none instead of a dangling handle.
///
/// # IRQL
/// PASSIVE_LEVEL, so it is pageable.
///
/// # Safety
/// Only the framework calls it, once, with a device created by [`create`].
#[unsafe(link_section = "PAGE")]
unsafe extern "C" fn evt_device_destroy(object: WDFOBJECT) {
    paged_code!();
    // SAFETY: `object` is our device (this callback is registered on devices only), and its
    // context exists until this callback returns.
    let Some(context) = (unsafe { context(object.cast()) }) else {
        return;
    };
    context
        .parked_queue
        .store(ptr::null_mut(), Ordering::Release);
    if context.core_live.swap(false, Ordering::AcqRel) {
        // SAFETY: `core_live` was true, so the core is initialised and not yet dropped; it is
        // now false, so it is dropped exactly once. Nothing else references the core: the
        // device's reference count is zero, so no callback runs or can run.
        unsafe {
            context
                .core
                .get()
                .cast::<Core<WdfPlatform>>()
                .drop_in_place();
        };
    }
}
