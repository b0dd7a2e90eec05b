//! The Windows backend: the driver's device, found through its interface GUID
//! (`CM_Get_Device_Interface_List_SizeW` / `CM_Get_Device_Interface_ListW`, present devices
//! only), opened with `CreateFileW(FILE_FLAG_OVERLAPPED)` and driven with overlapped
//! `DeviceIoControl`, so a RECV can be waited for with a deadline and cancelled
//! (`CancelIoEx`).
//!
//! Statuses: a request that went pending reports the driver's NTSTATUS in
//! `OVERLAPPED.Internal` once complete, and that is what vmbctl shows. A request the driver
//! failed at once only leaves a Win32 error (`GetLastError`, from `RtlNtStatusToDosError`),
//! which [`status_from_win32`] maps back to the vmbmsg status it stands for.
//!
//! Written against windows-sys 0.61 (`BOOL` is `windows_sys::core::BOOL`; `HANDLE` is a
//! pointer). Not compiled on the Linux machines that build this project.

// UNSAFETY: the Win32 device APIs are FFI with raw buffers and an OVERLAPPED the kernel writes
// after the call returns; this module owns those allocations until the I/O is complete.
#![expect(
    unsafe_code,
    reason = "Win32 FFI: CfgMgr32 device lookup, CreateFileW, overlapped DeviceIoControl"
)]

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::time::Duration;

use ntstatus::NtStatus;
use vmbmsg_proto::GUID_DEVINTERFACE_VMBMSG;
use vmbmsg_proto::ioctl::IoctlCode;
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_GET_DEVICE_INTERFACE_LIST_PRESENT, CM_Get_Device_Interface_List_SizeW,
    CM_Get_Device_Interface_ListW, CM_MapCrToWin32Err, CONFIGRET, CR_BUFFER_SMALL, CR_SUCCESS,
};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_GEN_FAILURE, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_NOT_FOUND,
    FALSE, GetLastError, HANDLE, INVALID_HANDLE_VALUE, TRUE, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResultEx, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE};
use windows_sys::core::GUID;

use super::{
    BackendInfo, Completion, Device, DeviceError, HostPeer, PendingIoctl, split_multi_sz,
    status_from_win32,
};

/// `STATUS_PENDING`: what the I/O manager leaves in `OVERLAPPED.Internal` until completion.
const STATUS_PENDING: u32 = 0x0000_0103;

/// How long dropping an unfinished request waits for its cancellation before leaking its
/// buffers (the kernel may still write them; freeing them would be unsound).
const DROP_GRACE: Duration = Duration::from_secs(5);

fn last_error() -> u32 {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

fn cm_error(cr: CONFIGRET) -> u32 {
    // SAFETY: CM_MapCrToWin32Err is a pure mapping of its two integer arguments.
    unsafe { CM_MapCrToWin32Err(cr, ERROR_GEN_FAILURE) }
}

/// The present devices that registered the vmbmsg interface, as interface paths.
fn interface_paths() -> Result<Vec<String>, DeviceError> {
    let g = GUID_DEVINTERFACE_VMBMSG;
    let guid = GUID {
        data1: g.data1,
        data2: g.data2,
        data3: g.data3,
        data4: g.data4,
    };
    // A device can arrive between the two calls: then the list no longer fits; ask again.
    for _ in 0..8 {
        let mut len: u32 = 0;
        // SAFETY: `len` and `guid` are valid for the call; a null device instance id asks for
        // every device; the function only writes `len`.
        let cr = unsafe {
            CM_Get_Device_Interface_List_SizeW(
                &mut len,
                &guid,
                ptr::null(),
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr != CR_SUCCESS {
            return Err(DeviceError::Win32 {
                call: "CM_Get_Device_Interface_List_SizeW",
                path: None,
                code: cm_error(cr),
            });
        }
        let mut list = vec![0u16; usize::try_from(len).unwrap_or(0).max(1)];
        let capacity = u32::try_from(list.len()).unwrap_or(u32::MAX);
        // SAFETY: `list` is writable for `capacity` UTF-16 units, which is what the call is
        // told; `guid` is valid; null device instance id as above.
        let cr = unsafe {
            CM_Get_Device_Interface_ListW(
                &guid,
                ptr::null(),
                list.as_mut_ptr(),
                capacity,
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        match cr {
            CR_SUCCESS => return Ok(split_multi_sz(&list)),
            CR_BUFFER_SMALL => continue,
            _ => {
                return Err(DeviceError::Win32 {
                    call: "CM_Get_Device_Interface_ListW",
                    path: None,
                    code: cm_error(cr),
                });
            }
        }
    }
    Err(DeviceError::Win32 {
        call: "CM_Get_Device_Interface_ListW",
        path: None,
        code: cm_error(CR_BUFFER_SMALL),
    })
}

/// The vmbmsg device, open for overlapped I/O.
#[derive(Debug)]
pub struct WinDevice {
    handle: OwnedHandle,
    path: String,
}

impl WinDevice {
    /// Opens `path`, or the first device with the vmbmsg interface (saying so on stderr when
    /// there are several, unless `quiet`).
    ///
    /// # Errors
    /// [`DeviceError::NotFound`], [`DeviceError::AccessDenied`], [`DeviceError::Win32`].
    pub fn open(path: Option<&str>, quiet: bool) -> Result<Self, DeviceError> {
        let path = match path {
            Some(p) => p.to_owned(),
            None => {
                let mut paths = interface_paths()?;
                if paths.len() > 1 {
                    crate::cmd::note_unless(
                        quiet,
                        &format!(
                            "{} vmbmsg devices found; using {} (choose one with --device: {})",
                            paths.len(),
                            paths[0],
                            paths[1..].join(", ")
                        ),
                    );
                }
                if paths.is_empty() {
                    return Err(DeviceError::NotFound);
                }
                paths.swap_remove(0)
            }
        };
        let wide: Vec<u16> = path.encode_utf16().chain(Some(0)).collect();
        // SAFETY: `wide` is a NUL-terminated UTF-16 string that outlives the call; no security
        // attributes and no template handle (null), as CreateFileW allows.
        let raw = unsafe {
            CreateFileW(
                wide.as_ptr(),
                FILE_GENERIC_READ | FILE_GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        };
        if raw == INVALID_HANDLE_VALUE || raw.is_null() {
            return Err(match last_error() {
                ERROR_ACCESS_DENIED => DeviceError::AccessDenied { path },
                code => DeviceError::Win32 {
                    call: "CreateFileW",
                    path: Some(path),
                    code,
                },
            });
        }
        // SAFETY: `raw` is a valid handle CreateFileW just returned, owned by nothing else.
        let handle = unsafe { OwnedHandle::from_raw_handle(raw) };
        Ok(Self { handle, path })
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle()
    }
}

/// One request's memory: the OVERLAPPED and the output buffer the kernel writes until the
/// I/O completes, and the event it signals. Reached only through a raw pointer (see
/// [`WinPending`]) so that no Rust reference aliases the kernel's writes.
struct Request {
    overlapped: OVERLAPPED,
    output: Vec<u8>,
    /// `overlapped.hEvent`, closed when the request is freed.
    _event: OwnedHandle,
}

/// An overlapped DeviceIoControl in progress.
struct WinPending<'a> {
    device: &'a WinDevice,
    /// From `Box::into_raw`; freed in `Drop` once the I/O is known to be complete.
    request: *mut Request,
    /// The result once known (an immediate failure, or after a wait saw the completion).
    done: Option<Completion>,
}

impl Device for WinDevice {
    fn backend(&self) -> BackendInfo {
        BackendInfo::Device {
            path: self.path.clone(),
        }
    }

    fn submit(
        &self,
        code: IoctlCode,
        input: &[u8],
        output_len: usize,
    ) -> Result<Box<dyn PendingIoctl + '_>, DeviceError> {
        let too_big = |_| DeviceError::Win32 {
            call: "DeviceIoControl",
            path: Some(self.path.clone()),
            code: super::win32::ERROR_INVALID_PARAMETER,
        };
        let in_len = u32::try_from(input.len()).map_err(too_big)?;
        let out_len = u32::try_from(output_len).map_err(too_big)?;
        // A manual-reset event per request: several requests can be in flight on one handle.
        // SAFETY: no security attributes and no name (null) are allowed; the call has no other
        // inputs.
        let event = unsafe { CreateEventW(ptr::null(), TRUE, FALSE, ptr::null()) };
        if event.is_null() {
            return Err(DeviceError::Win32 {
                call: "CreateEventW",
                path: None,
                code: last_error(),
            });
        }
        // SAFETY: `event` is a valid handle CreateEventW just returned, owned by nothing else.
        let event = unsafe { OwnedHandle::from_raw_handle(event) };
        let overlapped = OVERLAPPED {
            hEvent: event.as_raw_handle(),
            ..OVERLAPPED::default()
        };
        let request = Box::into_raw(Box::new(Request {
            overlapped,
            output: vec![0; output_len],
            _event: event,
        }));
        let mut pending = WinPending {
            device: self,
            request,
            done: None,
        };
        // SAFETY: `request` is a live allocation owned by `pending`; a raw-pointer field
        // projection, not a reference.
        let ov = unsafe { &raw mut (*request).overlapped };
        // SAFETY: as above.
        let out = unsafe { &raw mut (*request).output };
        // SAFETY: `out` points at the Vec in the live allocation; reading its buffer pointer
        // creates no lasting reference.
        let out_ptr = unsafe { (*out).as_mut_ptr() };
        // SAFETY: the handle is open for overlapped I/O; `input` is readable for `in_len` bytes
        // during the call (METHOD_BUFFERED copies it before returning); `out_ptr` is writable
        // for `out_len` bytes and `ov` valid until the I/O completes, which `WinPending`
        // guarantees by not freeing them before then; the byte count is taken later from the
        // OVERLAPPED, so no `lpBytesReturned`.
        let ok = unsafe {
            DeviceIoControl(
                self.raw(),
                code.code(),
                input.as_ptr().cast(),
                in_len,
                out_ptr.cast(),
                out_len,
                ptr::null_mut(),
                ov,
            )
        };
        if ok == FALSE {
            let err = last_error();
            if err != ERROR_IO_PENDING {
                // Failed at once: no I/O is in flight, and the I/O manager did not write the
                // OVERLAPPED; only the Win32 error is left.
                pending.done = Some(Completion {
                    status: status_from_win32(err),
                    output: Vec::new(),
                    win32_error: Some(err),
                });
            }
        }
        Ok(Box::new(pending))
    }

    fn host(&self) -> Option<&dyn HostPeer> {
        None
    }

    fn close(self: Box<Self>) -> Result<(), DeviceError> {
        Ok(())
    }
}

impl WinPending<'_> {
    /// Waits up to `ms` for the I/O; `Ok(None)` while it is in progress.
    fn poll(&mut self, ms: u32) -> Result<Option<Completion>, DeviceError> {
        if let Some(done) = &self.done {
            return Ok(Some(done.clone()));
        }
        let request = self.request;
        // SAFETY: `request` is live (freed only in Drop); a raw projection, no reference.
        let ov = unsafe { &raw const (*request).overlapped };
        let mut bytes: u32 = 0;
        // SAFETY: the handle and `ov` are those of the DeviceIoControl that went pending;
        // `bytes` is writable; not alertable.
        let ok = unsafe { GetOverlappedResultEx(self.device.raw(), ov, &mut bytes, ms, FALSE) };
        let err = if ok == FALSE { last_error() } else { 0 };
        if ok == FALSE && (err == WAIT_TIMEOUT || err == ERROR_IO_INCOMPLETE) {
            return Ok(None);
        }
        // Complete: the kernel no longer touches the request, so reading it is safe.
        // SAFETY: `ov` is valid; the I/O is complete, so nothing writes it concurrently.
        let internal = unsafe { (*ov).Internal };
        // NTSTATUS is 32 bits in the low half of the (pointer-sized) status field.
        let raw_status = (internal & 0xFFFF_FFFF) as u32;
        let status = NtStatus(i32::from_ne_bytes(raw_status.to_ne_bytes()));
        let len = usize::try_from(bytes).unwrap_or(0);
        // SAFETY: as above; the Vec is only read (and cloned) here, after completion.
        let output = unsafe {
            let out = &(*request).output;
            out.get(..len.min(out.len())).unwrap_or_default().to_vec()
        };
        let completion = if ok != FALSE {
            Completion {
                status: if status.is_success() && raw_status != STATUS_PENDING {
                    status
                } else {
                    NtStatus::STATUS_SUCCESS
                },
                output,
                win32_error: None,
            }
        } else {
            Completion {
                status: if raw_status != STATUS_PENDING && !status.is_success() {
                    status
                } else {
                    status_from_win32(err)
                },
                output,
                win32_error: Some(err),
            }
        };
        self.done = Some(completion.clone());
        Ok(Some(completion))
    }
}

fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        // INFINITE is u32::MAX: cap finite waits just below it.
        Some(t) => u32::try_from(t.as_millis()).map_or(INFINITE - 1, |ms| ms.min(INFINITE - 1)),
    }
}

impl PendingIoctl for WinPending<'_> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Completion>, DeviceError> {
        self.poll(millis(timeout))
    }

    fn cancel(&mut self) -> bool {
        if self.done.is_some() {
            return true;
        }
        let request = self.request;
        // SAFETY: `request` is live; a raw projection, no reference.
        let ov = unsafe { &raw const (*request).overlapped };
        // SAFETY: the handle and OVERLAPPED identify this request's I/O; CancelIoEx only marks
        // it for cancellation.
        let ok = unsafe { CancelIoEx(self.device.raw(), ov) };
        // ERROR_NOT_FOUND: it completed already; a wait sees that at once.
        ok != FALSE || last_error() == ERROR_NOT_FOUND
    }
}

impl Drop for WinPending<'_> {
    fn drop(&mut self) {
        let complete = self.done.is_some()
            || matches!(self.poll(0), Ok(Some(_)))
            || (self.cancel() && matches!(self.poll(millis(Some(DROP_GRACE))), Ok(Some(_))));
        if complete {
            // SAFETY: `request` came from Box::into_raw and the I/O is complete (or never
            // started), so the kernel holds no pointer into it; it is freed exactly once.
            drop(unsafe { Box::from_raw(self.request) });
        }
        // Otherwise the driver still holds the request (it did not complete it within
        // DROP_GRACE of the cancel): its memory is leaked on purpose, since the kernel may
        // still write to it.
    }
}
