//! The KMDF shell (Windows only): DriverEntry, device add, PnP/power callbacks, queues and
//! request completion. Thin: every callback translates WDF types and calls the portable
//! [`Core`](crate::Core).
//!
//! Split like the echo sample (Windows-rust-driver-samples,
//! `general/echo/kmdf/driver/DriverSync/src/`), one file per WDF object:
//!
//! * `driver`: `DriverEntry` and `EvtDriverDeviceAdd`.
//! * `device`: the device context (which owns the [`Core`](crate::Core)), device creation and
//!   the PnP/power callbacks that bring the VMBus channel up and down.
//! * `queue`: the default IOCTL queue, the manual queue of parked RECV requests, and
//!   `WdfPlatform`, the [`Platform`](crate::Platform) built on that manual queue.
//! * `request`: `WdfRequest`, the [`IoRequest`](crate::IoRequest) built on a `WDFREQUEST`; the
//!   request context and `EvtRequestCancel` that make a PING or SEND waiting for the host
//!   cancellable (`WdfRequestMarkCancelableEx` / `WdfRequestUnmarkCancelable`).
//!
//! # Lifecycle
//!
//! ```text
//! DriverEntry ──> WdfDriverCreate
//! EvtDriverDeviceAdd ──> WdfDeviceCreate ──> KMCL interface (WdfFdoQueryForInterface)
//!                        ──> manual queue ──> restart work item ──> Core::new
//!                        ──> default queue ──> device interface
//! EvtDeviceSelfManagedIoInit / ...Restart   ──> Core::channel_up     (PASSIVE, queues running)
//! EvtIoDeviceControl                        ──> Core::handle_ioctl   (<= DISPATCH)
//! EvtRequestCancel (PING/SEND waiting)      ──> CancelToken::cancel  (<= DISPATCH)
//! EvtChannelClosed (host closed the channel) ──> WdfWorkItemEnqueue ──> Core::restart_channel (PASSIVE)
//! EvtDeviceSelfManagedIoSuspend             ──> Core::channel_down   (PASSIVE, queues still running)
//! EvtCleanupCallback (device)               ──> WdfWorkItemFlush, Core::channel_down, drop(Library)
//!                                               (InterfaceDereference)        (PASSIVE)
//! EvtDestroyCallback (device)               ──> drop(Core)           (PASSIVE)
//! ```
//!
//! Why the self-managed I/O callbacks and not D0Entry/D0Exit or PrepareHardware/
//! ReleaseHardware is explained on `device::evt_self_managed_io_suspend`.
//!
//! # WDF calls and what each was checked against
//!
//! Every call goes through `wdk_sys::call_unsafe_wdf_function_binding!`, which looks up the
//! `PFN_WDF…` type that wdk-sys 0.5.2 generates from the KMDF 1.33 headers, prepends
//! `WdfDriverGlobals` and type-checks the remaining arguments
//! (`wdk-macros-0.5.2/src/lib.rs`, `generate_intermediate_output_ast_fragments`). Argument
//! order and types were checked against the `PFN_WDF…` typedefs of the KMDF 1.33 public
//! headers (microsoft/Windows-Driver-Frameworks, `src/publicinc/wdf/kmdf/1.33/*.h`), the
//! expanded macro outputs in windows-drivers-rs (`tests/wdk-macros-tests/tests/outputs/`), and
//! the learn.microsoft.com DDI pages; behaviour that matters here was read in the framework
//! source (Windows-Driver-Frameworks, `src/framework/shared/…`).
//!
//! | Call | Where | Checked against |
//! |---|---|---|
//! | `WdfDriverCreate` | driver | `wdfdriver.h` `PFN_WDFDRIVERCREATE`; echo `driver.rs`; macrotest `wdf_driver_create` |
//! | `WdfDeviceInitSetPnpPowerEventCallbacks` | device | `wdfdevice.h`; echo `device.rs` |
//! | `WdfDeviceCreate` | device | `wdfdevice.h` (`PWDFDEVICE_INIT*`); macrotest `wdf_device_create`; `fxvalidatefunctions.cpp` (attribute checks) |
//! | `WdfFdoQueryForInterface` | device | `wdffdo.h` `PFN_WDFFDOQUERYFORINTERFACE` (`NTSTATUS (WDFDEVICE Fdo, LPCGUID InterfaceType, PINTERFACE Interface, USHORT Size, USHORT Version, PVOID InterfaceSpecificData)`, PASSIVE); DDI page (sends `IRP_MN_QUERY_INTERFACE` down the device's stack; the caller dereferences the interface when done); the KMDF Toaster function driver (queries its bus interface right after `WdfDeviceCreate`); `kmcl::Library::query` checks what comes back |
//! | `WdfObjectGetTypedContextWorker` | device | `wdfobject.h` (`WDF_DECLARE_CONTEXT_TYPE_WITH_NAME`); echo `wdf_object_context.rs` |
//! | `WdfDeviceWdmGetDeviceObject` | device | `wdfdevice.h` (returns `PDEVICE_OBJECT`, <= DISPATCH) |
//! | `WdfDeviceCreateDeviceInterface` | device | `wdfdevice.h`; macrotest `wdf_device_create_device_interface` |
//! | `WdfIoQueueCreate` | queue | `wdfio.h` (`WDF_IO_QUEUE_CONFIG`, `WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE`); `fxioqueue.cpp` `Initialize` |
//! | `WdfIoQueueGetDevice` | queue | `wdfio.h` |
//! | `WdfIoQueueGetState` | queue | `wdfio.h` (`WDF_IO_QUEUE_STATE (WDFQUEUE, PULONG QueueRequests, PULONG DriverRequests)`, <= DISPATCH); `fxioqueue.cpp` `GetState` (`QueueRequests`: the requests in the queue) |
//! | `WdfIoQueueRetrieveNextRequest` | queue | `wdfio.h` (<= DISPATCH) |
//! | `WdfRequestForwardToIoQueue` | request | `wdfrequest.h` (<= DISPATCH); `fxioqueue.cpp` `VerifyForwardRequest` (not to the queue the request is in), `ForwardRequestWorker`, `QueueRequestFromForward` |
//! | `WdfRequestRequeue` | request | `wdfrequest.h` (<= DISPATCH); `fxrequestapi.cpp`, `fxioqueue.cpp` `Requeue` (manual queues only, back at the head) |
//! | `WdfRequestRetrieveInputBuffer` / `…OutputBuffer` | request | `wdfrequest.h`; `fxrequestapi.cpp`, `fxrequest.cpp` `GetMemoryObject` (zero length is `STATUS_BUFFER_TOO_SMALL`); macrotest `wdf_request_retrieve_output_buffer` |
//! | `WdfRequestCompleteWithInformation` | request | `wdfrequest.h` (`ULONG_PTR Information`, <= DISPATCH) |
//! | `WdfDeviceInitSetRequestAttributes` | device | `wdfdevice.h` (`PWDF_OBJECT_ATTRIBUTES`, <= DISPATCH, before `WdfDeviceCreate`); `fxdeviceinitapi.cpp` (validated with no parent allowed, copied), `fxdevice.cpp` `FxDevice::Initialize` / `AllocateRequestMemory` (every request of the device gets the context); Windows-rust-driver-samples echo `device.rs` (same call) |
//! | `WdfObjectGetTypedContextWorker` (request) | request | as for the device; `handleapi.cpp` `FxContextHeaderInit` (the context is zeroed for each request) |
//! | `WdfRequestMarkCancelableEx` | request | `wdfrequest.h` `PFN_WDFREQUESTMARKCANCELABLEEX` (`NTSTATUS (WDFREQUEST, PFN_WDF_REQUEST_CANCEL)`, <= DISPATCH); DDI page (`STATUS_CANCELLED` when already cancelled, the cancel routine not called; on failure the driver completes the request); `fxrequestapi.cpp`, `fxioqueue.cpp` `RequestCancelable` (also `STATUS_CANCELLED` while the queue purges); echo `queue.rs` (`Some(cancel_fn)`) |
//! | `WdfRequestUnmarkCancelable` | request | `wdfrequest.h` (`NTSTATUS (WDFREQUEST)`, <= DISPATCH); DDI page Remarks (only `STATUS_CANCELLED` means `EvtRequestCancel` will run; then do not complete the request before it); `fxioqueue.cpp` `RequestCancelable` |
//! | `EVT_WDF_REQUEST_CANCEL` | request | `wdfrequest.h` (`VOID NTAPI (WDFREQUEST)`, <= DISPATCH; an `extern "C"` fn, like every WDF callback in wdk-sys); DDI page (complete with `STATUS_CANCELLED`); `fxioqueue.cpp` `ProcessCancelledRequests` (called without a framework lock here: no synchronization scope) |
//! | `WdfWorkItemCreate` | device | `wdfworkitem.h` `PFN_WDFWORKITEMCREATE` (`NTSTATUS (PWDF_WORKITEM_CONFIG, PWDF_OBJECT_ATTRIBUTES, WDFWORKITEM*)`, <= DISPATCH); `WDF_WORKITEM_CONFIG` 1.33 fields `Size`, `EvtWorkItemFunc`, `AutomaticSerialization`; DDI page (a parent is required: the device) |
//! | `WdfWorkItemEnqueue` | platform | `wdfworkitem.h` (`VOID (WDFWORKITEM)`, <= DISPATCH); "Using Framework Work Items" (enqueuing a queued item again does nothing) |
//! | `WdfWorkItemGetParentObject` | device | `wdfworkitem.h` (`WDFOBJECT (WDFWORKITEM)`, <= DISPATCH) |
//! | `WdfWorkItemFlush` | device | `wdfworkitem.h` (`VOID (WDFWORKITEM)`, PASSIVE); DDI page (returns when a queued or running callback has finished; not from the work item's own callback) |
//! | `EVT_WDF_WORKITEM` | device | `wdfworkitem.h` (`VOID NTAPI (WDFWORKITEM)`, PASSIVE, a system worker thread) |
//! | `EvtCleanupCallback` (device) | device | `wdfobject.h` `WDF_OBJECT_ATTRIBUTES` (`PFN_WDF_OBJECT_CONTEXT_CLEANUP`, `VOID (WDFOBJECT)`); DDI page of `EVT_WDF_OBJECT_CONTEXT_CLEANUP` (for a PnP device: when it is removed, before its children are deleted, PASSIVE) |
//! | `DbgPrintEx` | device | `wdm.h` (`ULONG (ULONG ComponentId, ULONG Level, PCSTR Format, ...)`, <= DIRQL; Unicode formats only at PASSIVE, so `%s` with an ANSI buffer; wdk-sys `ntddk`); `DPFLTR_IHVDRIVER_ID`, `DPFLTR_ERROR_LEVEL` (shown by the default filter) |
//! | `ExAllocatePoolWithTag` | allocator | `wdm.h` (`PVOID (POOL_TYPE, SIZE_T, ULONG)`, <= DISPATCH for non-paged pool); declared by hand, wdk-sys leaves it out (`alloc.rs`) |
//! | `KeDelayExecutionThread` | `vmbmsg-core` `sync` | `wdm.h` (`NTSTATUS (KPROCESSOR_MODE, BOOLEAN Alertable, PLARGE_INTEGER Interval)`, <= APC; a negative interval is relative, in 100 ns) |
//!
//! Not used, on purpose: `EvtIoCanceledOnQueue` (KMDF completes a cancelled parked request with
//! `STATUS_CANCELLED` itself, `queue::create_parked_queue`), `EvtIoStop` (the channel comes down,
//! and the core finishes its requests, before KMDF stops the queues,
//! `device::evt_self_managed_io_suspend`), `WdfRequestMarkCancelable` (it may call
//! `EvtRequestCancel` before returning, which would deadlock on the core's spin lock held around
//! the marking; the `Ex` form never does).
//!
//! From vmbmsg-proto: `GUID_DEVINTERFACE_VMBMSG` (the device interface; its `Guid` fields
//! `data1`..`data4`) and `ioctl::METHOD_BUFFERED`. The INF's hardware id is its
//! `VMBMSG_HARDWARE_ID`, `VMBUS\` + `VMBMSG_INTERFACE_TYPE`.
//!
//! Structs filled by hand (bindgen emits no `*_INIT` helpers, reference §1.9/§1.10, §7.9):
//! `WDF_DRIVER_CONFIG`, `WDF_PNPPOWER_EVENT_CALLBACKS`, `WDF_OBJECT_ATTRIBUTES` (device and
//! request), `WDF_OBJECT_CONTEXT_TYPE_INFO` (device and request contexts),
//! `WDF_IO_QUEUE_CONFIG`, `UNICODE_STRING`; field names from the 1.33 headers, `Size` from
//! `wdf_size`, and the fields the C `*_INIT` helpers set are set explicitly.

// UNSAFETY: this module is the FFI boundary with KMDF. Every WDF call is an `unsafe` call through
// the framework's function table, callbacks receive raw handles, and request buffers are raw
// memory the framework lends us. Each block does one unsafe operation and says what it relies on.
#![expect(
    unsafe_code,
    reason = "the KMDF shell is the FFI boundary; see the UNSAFETY comment"
)]

#[cfg(not(test))]
mod alloc;
mod device;
mod driver;
mod queue;
mod request;

use core::ffi::c_void;

use wdk_sys::{ULONG, WDF_OBJECT_CONTEXT_TYPE_INFO, call_unsafe_wdf_function_binding};

// The kernel panic handler: a panic is a bugcheck (wdk-panic 0.5.0, reference §1.7). Nothing is
// `use`d from the crate, so without this line the handler would not be linked. Tests on a
// Windows host link std, which brings its own handler.
#[cfg(not(test))]
extern crate wdk_panic;

/// Every `alloc` allocation of the driver comes from non-paged, no-execute pool
/// (`ExAllocatePoolWithTag(NonPagedPoolNx, ..)`, tag `vmbm`), so it is usable up to
/// DISPATCH_LEVEL on every supported Windows version, with the layout's alignment honoured
/// (`alloc.rs` says why not wdk-alloc).
#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: alloc::PoolAllocator = alloc::PoolAllocator;

/// `WDF_STRUCTURE_SIZE(T)` (`sizeof`) as the `ULONG` every WDF `Size` field wants. Use it in a
/// `const { }` block so that the range check happens at compile time.
const fn wdf_size<T>() -> ULONG {
    let size = size_of::<T>();
    assert!(
        size <= ULONG::MAX as usize,
        "a WDF structure size must fit in a ULONG"
    );
    // Lossless: checked just above (`TryFrom` is not usable in a const fn).
    size as ULONG
}

/// `WDF_OBJECT_CONTEXT_TYPE_INFO`, which is `!Sync` only because it holds raw pointers: the type
/// of the statics that `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` declares in C (wdfobject.h), one per
/// context type (`device::DEVICE_CONTEXT_TYPE_INFO`, `request::REQUEST_CONTEXT_TYPE_INFO`).
#[repr(transparent)]
struct ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: every instance is an immutable `static` whose pointers point to `'static` data (a C
// string literal and the static itself); WDF only reads it (through
// `PCWDF_OBJECT_CONTEXT_TYPE_INFO`), so sharing it between threads is sharing constant data.
unsafe impl Sync for ContextTypeInfo {}

impl ContextTypeInfo {
    /// The context that this type information declares, of the framework object `object`: what
    /// the accessor generated by `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` returns
    /// (`WdfObjectGetTypedContextWorker` with the type's `UniqueType`). `None` if WDF returns
    /// null.
    ///
    /// # Safety
    /// * `object` is a live framework object (a `WDFDEVICE`, a `WDFREQUEST`, ...) created with
    ///   attributes naming this type information, and `T` is the type it declares (its
    ///   `ContextSize` is `size_of::<T>()`, and WDF's 16-byte context alignment suffices).
    /// * All-zero bytes are a valid `T` (WDF zero-fills every context), and the context is never
    ///   accessed through `&mut`.
    /// * The reference is not used after the object's context is freed.
    ///
    /// # IRQL
    /// <= DISPATCH_LEVEL + 1 (wdfobject.h); also from the object's destroy callback.
    unsafe fn context_of<'a, T, H>(&self, object: *mut H) -> Option<&'a T> {
        // SAFETY: `object` is a live framework object with this context type (caller), passed as
        // the `WDFOBJECT` the call takes, with the type's `UniqueType`, as the generated accessor
        // does.
        let context = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfObjectGetTypedContextWorker,
                object.cast::<c_void>(),
                self.0.UniqueType,
            )
        };
        // SAFETY: WDF returns the object's context (or null, handled by `as_ref`): memory for a
        // `T`, aligned and zero-filled, a valid value (caller); never accessed through `&mut`, so
        // a shared reference cannot alias one; alive as long as the caller uses it (caller).
        unsafe { context.cast::<T>().as_ref() }
    }
}
