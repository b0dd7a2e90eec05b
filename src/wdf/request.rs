//! `WdfRequest`: the core's [`IoRequest`], built on a `WDFREQUEST`; the request context and
//! `EvtRequestCancel` that make a PING or SEND cancellable while it waits for the host.
//!
//! # Cancellation
//!
//! The core calls [`IoRequest::mark_cancelable`] with the request in its table of waiting
//! requests and that table's spin lock held, and [`IoRequest::unmark_cancelable`] under the same
//! lock before it completes the request with the host's answer; [`evt_request_cancel`] hands the
//! request back to the core through the [`CancelToken`] kept in the request's context, and the
//! core completes it. That is the lock-based scheme of learn.microsoft.com "Synchronizing Cancel
//! and Completion Code" (KMDF): the completion path calls `WdfRequestUnmarkCancelable` and
//! completes only if it did not return `STATUS_CANCELLED`; `EvtRequestCancel` completes the
//! request with `STATUS_CANCELLED`. The rules it keeps, from the DDI pages:
//!
//! * `WdfRequestMarkCancelableEx`, not `WdfRequestMarkCancelable`: the driver uses no automatic
//!   synchronization (the device and queues inherit the driver object's scope, created without
//!   attributes: `WdfSynchronizationScopeNone`, `FxDriver::FxDriver` in
//!   Windows-Driver-Frameworks `src/framework/shared/core/fxdriver.cpp`), and only the `Ex` form
//!   never calls `EvtRequestCancel` itself, so it may be called with the spin lock that the cancel
//!   path also takes ("Choosing between WdfRequestMarkCancelable and
//!   WdfRequestMarkCancelableEx"). If it fails, the driver cancels as `EvtRequestCancel` would:
//!   the core completes the request with the status.
//! * The request is completed outside `EvtRequestCancel` only after `WdfRequestUnmarkCancelable`
//!   returned something other than `STATUS_CANCELLED` (then `EvtRequestCancel` is not called);
//!   after `STATUS_CANCELLED` it is left to `EvtRequestCancel` (completing it first could make
//!   the framework call `EvtRequestCancel` with an invalid request), and
//!   `WdfRequestUnmarkCancelable` is never called after `EvtRequestCancel` completed it (the
//!   cancel path takes the request out of the core's table under the lock the completion path
//!   checks) (WdfRequestUnmarkCancelable, Remarks).
//! * `EvtRequestCancel` completes the request with `STATUS_CANCELLED` (EVT_WDF_REQUEST_CANCEL,
//!   Remarks); it runs at <= DISPATCH_LEVEL, and the framework holds a reference on the request
//!   while it runs (`FxIoQueue::ProcessCancelledRequests` releases it after `InvokeCancel`,
//!   Windows-Driver-Frameworks `src/framework/shared/irphandlers/io/fxioqueue.cpp`).
//! * All three calls are `_IRQL_requires_max_(DISPATCH_LEVEL)` (KMDF 1.33 `wdfrequest.h`), so
//!   calling the two DDIs with a spin lock held is allowed.

use core::cell::UnsafeCell;
use core::mem::{self, ManuallyDrop, MaybeUninit};
use core::ptr;
use core::slice;
use core::sync::atomic::{AtomicBool, Ordering};

use wdk_sys::{
    PVOID, ULONG_PTR, WDF_OBJECT_CONTEXT_TYPE_INFO, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use super::{ContextTypeInfo, wdf_size};
use crate::{CancelToken, IoRequest, NtStatus};

// ---- the request context -----------------------------------------------------------------------

/// The per-request storage WDF allocates with every request of the device (registered with
/// `WdfDeviceInitSetRequestAttributes` in `device::create`): a PING or SEND keeps its
/// [`CancelToken`] here while it is cancellable, where [`evt_request_cancel`] finds it.
///
/// WDF zero-fills an object's context when it allocates the object, for every request
/// (`FxDevice::AllocateRequestMemory` → `FxObjectAndHandleHeaderInit` → `FxContextHeaderInit`,
/// which zeroes the whole context: Windows-Driver-Frameworks
/// `src/framework/shared/core/fxdevice.cpp`, `src/framework/shared/object/handleapi.cpp`), and
/// zero is valid: `armed` false, no token. It is only accessed through shared references.
///
/// Protocol: `token` is written only while `armed` is false and the request is not
/// cancellable (in [`IoRequest::mark_cancelable`], before `WdfRequestMarkCancelableEx`), and read
/// only by whoever swaps `armed` from true to false ([`RequestContext::take_token`]): exactly one
/// of a failed `WdfRequestMarkCancelableEx`, a `WdfRequestUnmarkCancelable` that did not return
/// `STATUS_CANCELLED`, and `EvtRequestCancel`, since the framework calls `EvtRequestCancel`
/// only in neither of the other two cases.
pub(super) struct RequestContext {
    /// True while `token` holds a value.
    armed: AtomicBool,
    /// The token of the marking in progress.
    token: UnsafeCell<MaybeUninit<CancelToken<WdfRequest>>>,
}

// WDF places an object's context at MEMORY_ALLOCATION_ALIGNMENT, 16 bytes on 64-bit Windows (see
// the same assertion for the device context).
const _: () = assert!(align_of::<RequestContext>() <= 16);

impl RequestContext {
    /// Stores the token of a marking about to be made.
    ///
    /// # Safety
    /// The request is not cancellable and nobody else accesses this context: `armed` is false
    /// (no token stored), so no other path reads `token`.
    unsafe fn put_token(&self, token: CancelToken<WdfRequest>) {
        // SAFETY: no other reference into `token` exists: it is only read after `armed` is set,
        // which happens below (caller: `armed` is false, and nothing else writes it).
        unsafe { self.token.get().write(MaybeUninit::new(token)) };
        self.armed.store(true, Ordering::Release);
    }

    /// Takes the stored token, if this caller is the one that gets it.
    fn take_token(&self) -> Option<CancelToken<WdfRequest>> {
        if !self.armed.swap(false, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `armed` was true and this swap set it false, so this caller is the only
        // reader, and nothing writes the cell before the next `put_token` (which needs `armed`
        // false and the request not cancellable again). Reading moves the value out; the cell
        // is left logically uninitialised.
        let token = unsafe { self.token.get().read() };
        // SAFETY: `armed` was true, so `put_token` initialised the cell before its Release
        // store, which this Acquire swap observed.
        Some(unsafe { token.assume_init() })
    }
}

/// The type information of [`RequestContext`], as `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` declares
/// it in C (wdfobject.h): its size, its name, and `UniqueType` pointing at itself.
// SAFETY: wdfobject.h places these structures in `.data` (`WDF_TYPE_DEFAULT_SECTION_NAME`), as
// for the device context's; an ordinary writable data section.
#[unsafe(link_section = ".data")]
pub(super) static REQUEST_CONTEXT_TYPE_INFO: ContextTypeInfo =
    ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
        Size: wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
        ContextName: c"RequestContext".as_ptr(),
        ContextSize: size_of::<RequestContext>(),
        UniqueType: (&raw const REQUEST_CONTEXT_TYPE_INFO).cast::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
        EvtDriverGetUniqueContextType: None,
    });

/// The request's context.
///
/// # Safety
/// `raw` is a live request of a device created by `device::create` (so it has a
/// [`RequestContext`]: `WdfDeviceInitSetRequestAttributes`), and the reference is not used
/// after the request is completed (the context goes with the request object).
unsafe fn request_context<'a>(raw: WDFREQUEST) -> Option<&'a RequestContext> {
    // SAFETY: `raw` is a live request of our device (caller), whose requests all get a
    // `RequestContext` declared by `REQUEST_CONTEXT_TYPE_INFO`; all-zero is a valid
    // `RequestContext` (see the type) and it is never accessed through `&mut`; it lives as long
    // as the request object (caller).
    unsafe { REQUEST_CONTEXT_TYPE_INFO.context_of(raw) }
}

/// `EvtRequestCancel` of PING and SEND requests (registered by [`IoRequest::mark_cancelable`]):
/// the caller cancelled a request that waits for the host. Hands it back to the core, which
/// completes it with `STATUS_CANCELLED` (the host's later answer is only counted).
///
/// # IRQL
/// <= DISPATCH_LEVEL (EVT_WDF_REQUEST_CANCEL). Not pageable.
///
/// # Safety
/// Only the framework calls it, for a request that [`IoRequest::mark_cancelable`] marked with
/// `WdfRequestMarkCancelableEx` and for which `WdfRequestUnmarkCancelable` did not succeed.
unsafe extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    let token = {
        // SAFETY: the framework passes the live request being cancelled, of our device; the
        // reference ends with this block, before the core completes the request.
        let Some(context) = (unsafe { request_context(request) }) else {
            return;
        };
        context.take_token()
    };
    // Marked with a token stored first (`mark_cancelable`), and neither a failed marking nor a
    // successful unmarking took it, or the framework would not call us: the token is there.
    // Were it not, the core would still own the request and complete it with the host's
    // answer; completing it here too would complete it twice, so nothing is done.
    if let Some(token) = token {
        // The core takes the request out of its table (waiting for its lock if the completion
        // path holds it) and completes it with STATUS_CANCELLED, from this callback, as
        // EVT_WDF_REQUEST_CANCEL asks.
        token.cancel();
    }
}

/// One IOCTL request the driver owns, with its buffers fetched once.
///
/// Invariants (established by [`WdfRequest::new`]):
/// * `raw` is a request the driver owns and has not completed; this value is its only owner,
///   and it is completed exactly once: by [`IoRequest::complete`], or by `Drop` (with
///   `STATUS_CANCELLED`) if the core lets it go without completing it. [`park`] hands it back
///   to the framework instead, and then neither runs. While it is cancellable (from a
///   successful [`IoRequest::mark_cancelable`] until [`IoRequest::unmark_cancelable`] returns
///   true), the core completes it only from [`evt_request_cancel`] (through the token); it is
///   never parked then (only RECV requests are parked, and they are never marked).
/// * `source` is the queue that delivered `raw` to the driver.
/// * The request's IOCTL code is `METHOD_BUFFERED` (`queue::evt_io_device_control` refuses the
///   others), so `input` and `output` both point at the request's system buffer
///   (`Irp->AssociatedIrp.SystemBuffer`): non-paged pool that the I/O manager allocated, sized
///   for the larger of the two buffers, which no one but the request's owner touches until the
///   request is completed (then the I/O manager copies `information` bytes of it back to the
///   caller and frees it).
/// * `input`/`input_len` and `output`/`output_len` are what `WdfRequestRetrieveInputBuffer` /
///   `…OutputBuffer` returned, or null and 0 for a zero-length buffer. Both lengths come from the
///   IRP's `ULONG` lengths, so they are far below `isize::MAX`.
///
/// [`park`]: WdfRequest::park
#[derive(Debug)]
pub(crate) struct WdfRequest {
    raw: WDFREQUEST,
    source: Source,
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_len: usize,
}

/// The queue a request was delivered from, which decides how it is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Presented by the default queue to `EvtIoDeviceControl`.
    DefaultQueue,
    /// Retrieved from the parked (manual) queue.
    ParkedQueue,
}

// SAFETY: a framework request and its system buffer are not tied to a thread or a processor:
// WDF lets the owner complete or forward a request from any thread at <= DISPATCH_LEVEL, and the
// buffers are non-paged system memory valid in every context (`WdfRequestRetrieveInputBuffer`:
// "valid in any thread/process context, and may be accessed at IRQL > PASSIVE_LEVEL",
// Windows-Driver-Frameworks `src/framework/shared/core/fxrequestapi.cpp`). Moving the owner to
// another thread moves the only access path with it.
unsafe impl Send for WdfRequest {}

impl WdfRequest {
    /// Takes ownership of `raw` and fetches its input and output buffers once.
    ///
    /// A zero-length buffer is an empty slice (the framework reports it as
    /// `STATUS_BUFFER_TOO_SMALL`). If a buffer cannot be fetched for another reason, `raw` is
    /// completed with the framework's status and `None` is returned: either way the caller is
    /// done with `raw`.
    ///
    /// # Safety
    /// * `raw` is a request the driver owns, delivered by the queue `source` names (presented by
    ///   the default queue, or retrieved from the parked queue), that is not completed, and that
    ///   nothing else will complete or touch.
    /// * Its IOCTL code is `METHOD_BUFFERED`.
    ///
    /// # IRQL
    /// <= DISPATCH_LEVEL.
    pub(super) unsafe fn new(raw: WDFREQUEST, source: Source) -> Option<Self> {
        // From here on `request` owns `raw` (the type's invariants hold with empty buffers), so
        // every exit below completes it exactly once or returns it.
        let mut request = Self {
            raw,
            source,
            input: ptr::null(),
            input_len: 0,
            output: ptr::null_mut(),
            output_len: 0,
        };

        let mut buffer: PVOID = ptr::null_mut();
        let mut length: usize = 0;
        // SAFETY: `raw` is a live request the driver owns (caller); a minimum length of 0 asks
        // for whatever buffer there is; `buffer` and `length` are valid out-pointers for the
        // duration of the call. <= DISPATCH_LEVEL, as the call requires (wdfrequest.h).
        let status = NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                raw,
                0,
                &raw mut buffer,
                &raw mut length,
            )
        });
        match buffer_or_empty(status, buffer, length) {
            Ok((input, input_len)) => {
                request.input = input.cast_const();
                request.input_len = input_len;
            }
            Err(status) => {
                request.complete(status, 0);
                return None;
            }
        }

        let mut buffer: PVOID = ptr::null_mut();
        let mut length: usize = 0;
        // SAFETY: as for the input buffer just above.
        let status = NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                raw,
                0,
                &raw mut buffer,
                &raw mut length,
            )
        });
        match buffer_or_empty(status, buffer, length) {
            Ok((output, output_len)) => {
                request.output = output;
                request.output_len = output_len;
            }
            Err(status) => {
                request.complete(status, 0);
                return None;
            }
        }

        Some(request)
    }

    /// Parks the request in `parked_queue`, the device's manual queue: a request presented by
    /// the default queue is forwarded there (`WdfRequestForwardToIoQueue`); one that was taken out
    /// of that queue goes back to its head (`WdfRequestRequeue`, so it stays the oldest), since
    /// KMDF refuses to forward a request to the queue it is already in. On success the
    /// framework owns the request again (and cancels it there if its caller gives up); on
    /// failure it is still ours and comes back with the status.
    ///
    /// # Errors
    /// The request and the framework's status when the queue does not take it (for example
    /// `STATUS_WDF_BUSY` once the queue has been purged for removal).
    ///
    /// # Safety
    /// `parked_queue` is the live manual queue of the device this request belongs to (the queue
    /// a [`Source::ParkedQueue`] request came from), which does not mark requests cancelable on
    /// its own.
    ///
    /// # IRQL
    /// <= DISPATCH_LEVEL.
    pub(super) unsafe fn park(self, parked_queue: WDFQUEUE) -> Result<(), (Self, NtStatus)> {
        let status = match self.source {
            Source::DefaultQueue => {
                // SAFETY: `self.raw` is owned by the driver and not completed (type invariant),
                // and it is not cancelable (only PING and SEND requests are marked cancelable,
                // and only RECV requests are parked), as the call requires; `parked_queue` is a queue of the same device other than the one
                // that presented the request (caller). <= DISPATCH_LEVEL (wdfrequest.h).
                NtStatus(unsafe {
                    call_unsafe_wdf_function_binding!(
                        WdfRequestForwardToIoQueue,
                        self.raw,
                        parked_queue,
                    )
                })
            }
            Source::ParkedQueue => {
                // SAFETY: `self.raw` is owned by the driver and not completed (type invariant),
                // and was delivered by the parked queue, a manual queue, the only kind KMDF
                // requeues to (`FxIoQueue::Requeue`). <= DISPATCH_LEVEL (wdfrequest.h).
                NtStatus(unsafe { call_unsafe_wdf_function_binding!(WdfRequestRequeue, self.raw) })
            }
        };
        if status.is_success() {
            // The queue owns the request now: it must be neither completed nor touched by us, so
            // the fallback completion of `Drop` must not run.
            mem::forget(self);
            Ok(())
        } else {
            // A failed forward or requeue leaves the request driver-owned, as it was
            // (`FxIoQueue::ForwardRequestWorker` puts it back on the driver-owned list; `Requeue`
            // fails before it changes anything).
            Err((self, status))
        }
    }
}

impl IoRequest for WdfRequest {
    fn input(&self) -> &[u8] {
        if self.input_len == 0 {
            return &[];
        }
        // SAFETY: `input` is non-null and valid for reads of `input_len` bytes until the request
        // is completed, which cannot happen while `self` is borrowed (completion consumes
        // `self`); `u8` needs no alignment, and the bytes are the caller's input, copied in by
        // the I/O manager. Nothing writes them while this borrow lives: nothing outside the
        // driver touches a METHOD_BUFFERED system buffer before completion, and the only write
        // path inside it is `output`, which needs `&mut self` and so cannot be live at the same
        // time as this `&self` borrow (input and output are the same system buffer; the borrow
        // rules make them alternate). `input_len < isize::MAX` (type invariant).
        unsafe { slice::from_raw_parts(self.input, self.input_len) }
    }

    fn output(&mut self) -> &mut [u8] {
        if self.output_len == 0 {
            return &mut [];
        }
        // SAFETY: `output` is non-null and valid for reads and writes of `output_len` bytes until
        // the request is completed, which cannot happen while `self` is borrowed. The slice is
        // the only access path for its lifetime: the system buffer is kernel pool that neither
        // the caller's process nor the I/O manager touches before completion, and `input`'s
        // slice (the same memory) cannot be alive because this borrow is `&mut self`. The bytes
        // past the input are pool memory handed to us by the kernel, initialised as far as this
        // program is concerned. `output_len < isize::MAX` (type invariant).
        unsafe { slice::from_raw_parts_mut(self.output, self.output_len) }
    }

    fn complete(self, status: NtStatus, information: usize) {
        // The I/O manager copies `information` bytes of the system buffer back to the caller's
        // output buffer: never report more than that buffer holds.
        let information = information.min(self.output_len);
        // `complete` retires the request: the fallback completion of `Drop` must not also run.
        let raw = ManuallyDrop::new(self).raw;
        // SAFETY: `raw` is driver-owned and not completed (type invariant) and `self` is consumed
        // here, so this is its one completion and nothing touches it afterwards (the buffer
        // slices borrowed `self`, so none is alive). <= DISPATCH_LEVEL (trait contract).
        unsafe { complete_raw(raw, status, information) };
    }

    fn mark_cancelable(&mut self, token: CancelToken<Self>) -> Result<(), NtStatus> {
        // SAFETY: `self.raw` is live and of our device (type invariant); the reference is used
        // only in this call, while the core holds the request uncompleted.
        let Some(context) = (unsafe { request_context(self.raw) }) else {
            // No context: `EvtRequestCancel` could not find the token. Not possible with the
            // request attributes `device::create` registers; refused rather than made
            // non-cancellable in silence.
            return Err(NtStatus::STATUS_INTERNAL_ERROR);
        };
        // Stored before the marking: once marked, `EvtRequestCancel` may run on another
        // processor at once (it then waits for the core's lock, held by our caller).
        // SAFETY: the request is not cancellable (it is marked only here, once per request:
        // the core marks a PING or SEND once) and `armed` is false (zeroed context, and no
        // earlier marking of this request), so nothing else accesses the token.
        unsafe { context.put_token(token) };
        // SAFETY: `self.raw` is a request the driver owns (presented by the default queue and
        // not completed, type invariant), not cancelable yet, and `evt_request_cancel` has the
        // `EVT_WDF_REQUEST_CANCEL` signature. <= DISPATCH_LEVEL (trait contract), as the call
        // requires (wdfrequest.h); with a spin lock held, which the Ex form allows since it never
        // calls the cancel routine itself (WdfRequestMarkCancelable, Remarks).
        let status = NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestMarkCancelableEx,
                self.raw,
                Some(evt_request_cancel),
            )
        });
        if status.is_success() {
            return Ok(());
        }
        // Not marked (`STATUS_CANCELLED`: the caller cancelled it already; the framework does
        // not call `EvtRequestCancel`): the token is dropped and the core completes the
        // request with this status, as WdfRequestMarkCancelableEx's Remarks ask.
        drop(context.take_token());
        Err(status)
    }

    fn unmark_cancelable(&mut self) -> bool {
        // SAFETY: `self.raw` is a request the driver owns, marked cancelable by
        // `mark_cancelable` (the core unmarks only what it marked) and not completed; it is not
        // completed by `EvtRequestCancel` either, since the cancel path takes the request out of
        // the core's table under the lock our caller holds, and the core calls this only for a
        // request still in the table. <= DISPATCH_LEVEL (trait contract; wdfrequest.h).
        let status = NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, self.raw)
        });
        if status == NtStatus::STATUS_CANCELLED {
            // `EvtRequestCancel` has been or will be called: it takes the token and has the core
            // complete the request; the core must not complete it before that.
            return false;
        }
        // Any other status: `EvtRequestCancel` will not be called (WdfRequestUnmarkCancelable,
        // Remarks), so the token is ours to drop and the request the core's to complete.
        // SAFETY: as for `mark_cancelable`; the request is not completed yet.
        if let Some(context) = unsafe { request_context(self.raw) } {
            drop(context.take_token());
        }
        true
    }
}

impl Drop for WdfRequest {
    /// A request the core drops without completing it would hang its caller forever (and block
    /// power-down and removal): complete it with `STATUS_CANCELLED`, the status an application
    /// sees for an operation that was given up. The core is meant to complete every request
    /// explicitly; this is the safety net, not the protocol.
    fn drop(&mut self) {
        // SAFETY: this value owns `self.raw`, which is not completed (`complete` and `park`
        // retire the value without running `Drop`), and it is never used again.
        // The core drops requests at <= DISPATCH_LEVEL, the level the call allows.
        unsafe { complete_raw(self.raw, NtStatus::STATUS_CANCELLED, 0) };
    }
}

/// Completes a request that never became a [`WdfRequest`] (or whose owner is retiring it).
///
/// # Safety
/// `raw` is a request the driver owns and has not completed, and nothing touches it afterwards.
///
/// # IRQL
/// <= DISPATCH_LEVEL.
pub(super) unsafe fn complete_raw(raw: WDFREQUEST, status: NtStatus, information: usize) {
    // `ULONG_PTR` is the pointer-sized unsigned integer, the same width as `usize` on every
    // target the driver builds for (x64, ARM64): the cast is lossless.
    let information = information as ULONG_PTR;
    // SAFETY: `raw` is driver-owned and not yet completed, and is not used after this call
    // (caller); <= DISPATCH_LEVEL, as WdfRequestCompleteWithInformation requires (wdfrequest.h).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            raw,
            status.0,
            information,
        );
    }
}

/// The buffer a `WdfRequestRetrieve…Buffer` call returned, with `STATUS_BUFFER_TOO_SMALL` read
/// as "zero-length buffer": with a minimum length of 0 the framework reports exactly that case
/// with this status (`FxRequest::GetMemoryObject` and `GetDeviceControlOutputMemoryObject`,
/// Windows-Driver-Frameworks `src/framework/shared/core/fxrequest.cpp`).
fn buffer_or_empty(
    status: NtStatus,
    buffer: PVOID,
    length: usize,
) -> Result<(*mut u8, usize), NtStatus> {
    if status == NtStatus::STATUS_BUFFER_TOO_SMALL {
        return Ok((ptr::null_mut(), 0));
    }
    if !status.is_success() {
        return Err(status);
    }
    match (buffer.is_null(), length) {
        (_, 0) => Ok((ptr::null_mut(), 0)),
        (false, length) => Ok((buffer.cast(), length)),
        // A non-empty buffer at a null address would break the framework's own contract.
        (true, _) => Err(NtStatus::STATUS_INTERNAL_ERROR),
    }
}
