//! `WdfRequest`: the core's [`IoRequest`], built on a `WDFREQUEST`.

use core::mem::{self, ManuallyDrop};
use core::ptr;
use core::slice;

use wdk_sys::{PVOID, ULONG_PTR, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding};

use crate::{IoRequest, NtStatus};

/// One IOCTL request the driver owns, with its buffers fetched once.
///
/// Invariants (established by [`WdfRequest::new`]):
/// * `raw` is a request the driver owns and has not completed; this value is its only owner,
///   and it is completed exactly once: by [`IoRequest::complete`], or by `Drop` (with
///   `STATUS_CANCELLED`) if the core lets it go without completing it. [`park`] hands it back
///   to the framework instead, and then neither runs.
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
                // and it is not cancelable (this driver never marks requests cancelable), as the
                // call requires; `parked_queue` is a queue of the same device other than the one
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
