//! The I/O queues of a device, and [`WdfPlatform`], the core's [`Platform`] built on them.
//!
//! * The **default queue** (parallel, power-managed) presents every `IRP_MJ_DEVICE_CONTROL`
//!   to [`evt_io_device_control`], which wraps the request and hands it to
//!   [`Core::handle_ioctl`](crate::Core::handle_ioctl). Parallel: the core does its own locking,
//!   and a RECV or PING that waits must not hold up other IOCTLs. Power-managed: no IOCTL
//!   reaches the core while the device is out of D0.
//! * The **parked queue** (manual, not power-managed) holds RECV requests the core parks until
//!   a notification arrives ([`WdfPlatform::park_recv`] forwards a request into it, or puts a
//!   request it took out back at its head; [`WdfPlatform::next_parked_recv`] takes the oldest
//!   one out).

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use wdk::paged_code;
use wdk_sys::{
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE, ULONG, WDF_IO_QUEUE_CONFIG,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use super::request::{Source, WdfRequest, complete_raw};
use super::{device, wdf_size};
use crate::{NtStatus, Platform};

/// The transfer-type bits of an IOCTL code (`CTL_CODE`'s `Method`, bits 0-1).
const METHOD_MASK: u32 = 0b11;

/// Creates the device's default queue: parallel, power-managed, [`evt_io_device_control`].
///
/// # Safety
/// `device` is a live device created by `device::create` whose core is already in place (the
/// queue may present a request as soon as it exists).
///
/// # IRQL
/// PASSIVE_LEVEL (only EvtDriverDeviceAdd calls it), so it is pageable.
#[unsafe(link_section = "PAGE")]
pub(super) unsafe fn create_default_queue(device: WDFDEVICE) -> NtStatus {
    paged_code!();
    // `WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE(&config, WdfIoQueueDispatchParallel)` (wdfio.h):
    // zero, `Size`, `PowerManaged`, `DefaultQueue`, `DispatchType`, and for a parallel queue
    // `Settings.Parallel.NumberOfPresentedRequests = (ULONG)-1`. That last field matters: KMDF
    // stops presenting requests to a parallel queue once the driver holds that many, so the
    // zero of `Default` would present none (Windows-Driver-Frameworks
    // `src/framework/shared/irphandlers/io/fxioqueue.cpp`, `FxIoQueue::Initialize` and
    // `DispatchEvents`). PowerManaged is `WdfTrue` rather than `WdfUseDefault` (which means the
    // same for a function driver) to say what we rely on.
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: const { wdf_size::<WDF_IO_QUEUE_CONFIG>() },
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        PowerManaged: _WDF_TRI_STATE::WdfTrue,
        DefaultQueue: u8::from(true),
        EvtIoDeviceControl: Some(evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    config.Settings.Parallel.NumberOfPresentedRequests = ULONG::MAX;
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: `device` is live (caller); `config` is a valid queue configuration with its
    // `Size` set, read during the call only; no attributes (the queue inherits the device's
    // execution level and synchronisation scope, and is parented to the device); `queue` is a
    // valid out-pointer. PASSIVE_LEVEL <= DISPATCH_LEVEL, the call's limit (wdfio.h).
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut queue,
        )
    })
}

/// Creates the manual queue parked RECV requests wait in.
///
/// Not power-managed, so the core can take parked requests out whatever the power state,
/// notably while it tears the channel down during a removal (when KMDF has already stopped the
/// power-managed queues). Parked requests belong to the queue, not to the driver, so they do
/// not hold up a power-down either.
///
/// No `EvtIoCanceledOnQueue`: when the caller of a parked RECV cancels it (or the device is
/// removed and KMDF purges the queue), KMDF takes it out of the queue and completes it with
/// `STATUS_CANCELLED` itself (`FxIoQueue::CancelForQueue` when no callback is registered). The
/// core keeps no per-request state for parked requests, the queue is their only list, so there
/// is nothing to update, and a cancelled request can never come out of
/// [`WdfPlatform::next_parked_recv`] (the [`Platform`] contract).
///
/// # Errors
/// The framework's status if the queue cannot be created.
///
/// # Safety
/// `device` is a live device created by `device::create`.
///
/// # IRQL
/// PASSIVE_LEVEL (only EvtDriverDeviceAdd calls it), so it is pageable.
#[unsafe(link_section = "PAGE")]
pub(super) unsafe fn create_parked_queue(device: WDFDEVICE) -> Result<WDFQUEUE, NtStatus> {
    paged_code!();
    // `WDF_IO_QUEUE_CONFIG_INIT(&config, WdfIoQueueDispatchManual)` with `PowerManaged =
    // WdfFalse`. A manual queue takes no I/O callbacks and `NumberOfPresentedRequests` must stay
    // 0 (`FxIoQueue::Initialize` rejects anything else).
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: const { wdf_size::<WDF_IO_QUEUE_CONFIG>() },
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchManual,
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: as in `create_default_queue`: live device, valid configuration, no attributes,
    // valid out-pointer, PASSIVE_LEVEL.
    let status = NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut queue,
        )
    });
    if !status.is_success() {
        return Err(status);
    }
    if queue.is_null() {
        return Err(NtStatus::STATUS_INTERNAL_ERROR);
    }
    Ok(queue)
}

/// `EvtIoDeviceControl` of the default queue: one IOCTL for the core.
///
/// Only `METHOD_BUFFERED` codes are admitted: every vmbmsg code is one (vmbmsg-proto `ioctl`),
/// and the soundness argument of [`WdfRequest`]'s slices relies on it (a direct-I/O output
/// buffer is the caller's own pages, which the caller can write while we hold a `&mut [u8]`).
/// Anything else is refused here, before its buffers are looked at.
///
/// # IRQL
/// <= DISPATCH_LEVEL (a parallel queue with the default execution level). Not pageable.
///
/// # Safety
/// Only the framework calls it, with the default queue of a device created by
/// `device::create` and a request that queue just presented to the driver.
unsafe extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    _output_buffer_length: usize,
    _input_buffer_length: usize,
    io_control_code: ULONG,
) {
    if io_control_code & METHOD_MASK != vmbmsg_proto::ioctl::METHOD_BUFFERED {
        // SAFETY: the framework just presented `request` to the driver, which owns it and has
        // done nothing with it; it is not touched again. <= DISPATCH_LEVEL.
        unsafe { complete_raw(request, NtStatus::STATUS_INVALID_DEVICE_REQUEST, 0) };
        return;
    }
    // SAFETY: `queue` is the live queue this callback belongs to. <= DISPATCH_LEVEL (wdfio.h).
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: `device` is the live device this queue belongs to, created by `device::create`;
    // the reference is used only during this callback, which the device outlives.
    let Some(core) = (unsafe { device::core(device) }) else {
        // The default queue is created after the core is in place, so this does not happen.
        // SAFETY: as above: a presented request, owned and untouched, not used again.
        unsafe { complete_raw(request, NtStatus::STATUS_INVALID_DEVICE_STATE, 0) };
        return;
    };
    // SAFETY: the framework presented `request` to the driver, which owns it; from here the
    // `WdfRequest` (or `new` itself) is its only owner. Its code is METHOD_BUFFERED (checked
    // above). <= DISPATCH_LEVEL.
    let Some(request) = (unsafe { WdfRequest::new(request, Source::DefaultQueue) }) else {
        return; // already completed with the framework's status
    };
    // `code` is the `ULONG` the I/O manager passed: a `u32` on Windows.
    core.handle_ioctl(io_control_code, request);
}

/// The core's [`Platform`]: parks RECV requests in the device's manual queue.
///
/// It reaches the queue through the device context's `parked_queue` cell rather than holding
/// the handle: the device's destroy callback empties the cell before it drops the core, because
/// by then KMDF has already deleted the queue (child objects go first), and the core's own
/// teardown must then find no queue instead of a dangling handle.
#[derive(Debug)]
pub(crate) struct WdfPlatform {
    /// Invariant: points at the `parked_queue` cell of the context of the device whose core
    /// owns this platform, so it is valid for as long as the platform exists; whenever a method
    /// of the platform runs, the cell holds null or that device's live manual queue.
    parked_queue: NonNull<AtomicPtr<c_void>>,
    /// Invariant: points at the `restart_work` cell of the same context; it holds null or the
    /// device's live restart work item.
    restart_work: NonNull<AtomicPtr<c_void>>,
}

// SAFETY: the platform is an address of an atomic cell (see the invariant) that stays valid
// wherever the platform is used, and the queue handle in it may be used from any thread: KMDF
// serialises queue operations internally, and `WdfRequestForwardToIoQueue` /
// `WdfIoQueueRetrieveNextRequest` are callable from any thread at <= DISPATCH_LEVEL.
unsafe impl Send for WdfPlatform {}
// SAFETY: as for `Send`: every method only reads the atomic cell and calls thread-safe WDF
// methods, so sharing `&WdfPlatform` between processors is sound.
unsafe impl Sync for WdfPlatform {}

impl WdfPlatform {
    /// A platform that parks requests in the queue found in `parked_queue` and restarts a
    /// channel the host closed through the work item found in `restart_work`.
    ///
    /// # Safety
    /// `parked_queue` and `restart_work` are the cells of that name of one device context, and
    /// the platform will live inside that same context (in the device's core), so the cells
    /// outlive it. Whenever a method of the platform runs, `parked_queue` holds null or that
    /// device's live manual queue (it is emptied after KMDF deletes the queue and before anything
    /// can call the platform again), and `restart_work` holds null or the device's live work item
    /// (it is emptied before KMDF deletes the item).
    pub(super) const unsafe fn new(
        parked_queue: NonNull<AtomicPtr<c_void>>,
        restart_work: NonNull<AtomicPtr<c_void>>,
    ) -> Self {
        Self {
            parked_queue,
            restart_work,
        }
    }

    /// The parked queue, unless the device is being destroyed.
    fn queue(&self) -> Option<WDFQUEUE> {
        // SAFETY: the cell outlives the platform (type invariant), and it is only ever accessed
        // through shared references, as an atomic.
        let cell = unsafe { self.parked_queue.as_ref() };
        let queue = cell.load(Ordering::Acquire);
        (!queue.is_null()).then(|| queue.cast())
    }
}

impl Platform for WdfPlatform {
    type Request = WdfRequest;

    fn park_recv(&self, request: WdfRequest) -> Result<(), (WdfRequest, NtStatus)> {
        let Some(queue) = self.queue() else {
            return Err((request, NtStatus::STATUS_DEVICE_REMOVED));
        };
        // SAFETY: `queue` is the live manual queue of the device the request belongs to (type
        // invariant; every request of this platform comes from that device's queues), the queue
        // a request retrieved by `next_parked_recv` came from, and it never marks requests
        // cancelable. <= DISPATCH_LEVEL (trait contract).
        unsafe { request.park(queue) }
    }

    fn next_parked_recv(&self) -> Option<WdfRequest> {
        let queue = self.queue()?;
        // Each round takes one request out of the queue for good (returned, or completed by
        // `WdfRequest::new`), so the loop ends.
        loop {
            let mut raw: WDFREQUEST = ptr::null_mut();
            // SAFETY: `queue` is the device's live manual queue (type invariant); `raw` is a
            // valid out-pointer. <= DISPATCH_LEVEL (trait contract), as the call requires
            // (wdfio.h). `STATUS_NO_MORE_ENTRIES` when the queue is empty.
            let status = NtStatus(unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfIoQueueRetrieveNextRequest,
                    queue,
                    &raw mut raw
                )
            });
            if !status.is_success() || raw.is_null() {
                return None;
            }
            // SAFETY: a request retrieved from a manual queue is owned by the driver, and
            // nothing else will complete it; it was parked by `park_recv`, so it came through
            // `evt_io_device_control` and its code is METHOD_BUFFERED. <= DISPATCH_LEVEL.
            if let Some(request) = unsafe { WdfRequest::new(raw, Source::ParkedQueue) } {
                return Some(request);
            }
        }
    }

    fn parked_recv_count(&self) -> usize {
        let Some(queue) = self.queue() else {
            return 0;
        };
        let mut queued: ULONG = 0;
        let mut driver_owned: ULONG = 0;
        // SAFETY: `queue` is the device's live manual queue (type invariant); both out-pointers
        // are valid. `WdfIoQueueGetState(Queue, PULONG QueueRequests, PULONG DriverRequests)`
        // (wdfio.h) is callable at <= DISPATCH_LEVEL; for a manual queue, `QueueRequests`
        // counts the requests parked in it (cancelled ones leave it when KMDF completes them).
        let _state = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfIoQueueGetState,
                queue,
                &raw mut queued,
                &raw mut driver_owned
            )
        };
        usize::try_from(queued).unwrap_or(usize::MAX)
    }

    fn channel_closed_by_host(&self) {
        // SAFETY: the cell outlives the platform (type invariant) and is only read atomically.
        let cell = unsafe { self.restart_work.as_ref() };
        let item = cell.load(Ordering::Acquire);
        if item.is_null() {
            return; // the device's teardown began: no restart
        }
        // SAFETY: the device's live work item (type invariant). `WdfWorkItemEnqueue` queues it
        // once however often it is called before it runs (wdfworkitem.h; "Using Framework Work
        // Items"), <= DISPATCH_LEVEL.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfWorkItemEnqueue,
                item.cast::<wdk_sys::WDFWORKITEM__>()
            );
        }
    }
}
