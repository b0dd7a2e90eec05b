//! The two backends behind one trait: the driver's device on Windows ([`windows`]) and the
//! in-process simulation elsewhere or with `--sim` ([`sim`]).
//!
//! A backend only moves IOCTL buffers. What the buffers mean (the `vmbmsg_proto::ioctl`
//! structs) is the business of [`crate::ops`], so both backends are driven by the same code.

use std::fmt;
use std::time::Duration;

use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::IoctlCode;

use crate::interrupt;

#[cfg(not(windows))]
pub mod sim;
#[cfg(windows)]
pub mod windows;

/// How one IOCTL ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The status the driver completed the request with.
    pub status: NtStatus,
    /// The output bytes the driver reported (`Information`).
    pub output: Vec<u8>,
    /// The Win32 error `DeviceIoControl` reported, when `status` was derived from one
    /// (Windows only; the simulation sees the NTSTATUS itself).
    pub win32_error: Option<u32>,
}

/// An IOCTL that was handed to the driver and may still be in progress.
pub trait PendingIoctl {
    /// Waits up to `timeout` (`None`: for ever) for the request to complete. `Ok(None)`: it is
    /// still in progress.
    ///
    /// # Errors
    /// The backend could not wait (Windows: `GetOverlappedResultEx` failed for another reason
    /// than the I/O's own failure).
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Completion>, DeviceError>;

    /// Asks for the request to be cancelled (`CancelIoEx`; in the simulation, what the I/O
    /// manager does to a parked request). Returns whether the request could be cancelled; a
    /// cancelled request still completes, normally with `STATUS_CANCELLED`.
    fn cancel(&mut self) -> bool;
}

/// What the tool is talking to, for the output's header and the JSON `backend` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendInfo {
    /// The driver's device, opened through this interface path.
    #[cfg_attr(
        all(not(windows), not(test)),
        expect(dead_code, reason = "built by the Windows backend")
    )]
    Device {
        /// The device interface path (`\\?\VMBUS#...`).
        path: String,
    },
    /// The in-process simulation.
    #[cfg_attr(
        windows,
        expect(dead_code, reason = "Windows builds have no simulation")
    )]
    Simulation {
        /// How the simulated host answers PING and SEND (`normal`, `slow:<ms>`, ...).
        host_behavior: String,
        /// How the simulated host answers NEGOTIATE.
        negotiation: String,
        /// The status the simulated host completes SEND with.
        send_status: NtStatus,
    },
}

/// What `bench` measured of the host→guest direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoRun {
    /// ECHO packets the guest answered with the same payload.
    pub packets: u64,
    /// ECHO packets answered with an error status or a different payload.
    pub errors: u64,
}

/// The host side of the simulation: the tool plays the host to make the driver receive.
///
/// Only the simulation has one; on a real device the host decides what it sends.
pub trait HostPeer {
    /// The host sends one NOTIFY carrying `payload` and waits for the guest to complete it;
    /// returns the guest's completion status (`STATUS_QUOTA_EXCEEDED` when its queue is full).
    ///
    /// # Errors
    /// Why the host could not send it or got no completion, in words.
    fn notify(&self, payload: &[u8]) -> Result<NtStatus, String>;

    /// Starts a host thread that sends NOTIFY packets at `per_second`, until the returned
    /// guard is dropped.
    fn start_notifier(&self, per_second: f64) -> Box<dyn NotifierGuard>;

    /// The host sends ECHO packets with `payload`, keeping up to `depth` in flight, and checks
    /// each answer. `keep_going` is asked before each new packet, with the packets answered so
    /// far; once it says no, the packets in flight are waited for and the run ends.
    ///
    /// # Errors
    /// Why the host could not send or got no completion in time, in words.
    fn echo_run(
        &self,
        payload: &[u8],
        depth: usize,
        keep_going: &mut dyn FnMut(u64) -> bool,
    ) -> Result<EchoRun, String>;
}

/// Keeps a [`HostPeer::start_notifier`] thread running; stops and joins it when dropped.
pub trait NotifierGuard {
    /// Stops and joins the thread; returns how many notifications the host sent.
    fn stop(self: Box<Self>) -> u64;
}

/// A backend: something that takes IOCTLs.
pub trait Device {
    /// What this backend is.
    fn backend(&self) -> BackendInfo;

    /// Hands one IOCTL to the driver: `input` bytes in, an output buffer of `output_len`.
    ///
    /// # Errors
    /// The backend could not issue the request at all (an I/O error, not a driver status).
    fn submit(
        &self,
        code: IoctlCode,
        input: &[u8],
        output_len: usize,
    ) -> Result<Box<dyn PendingIoctl + '_>, DeviceError>;

    /// The simulated host, if this backend has one.
    fn host(&self) -> Option<&dyn HostPeer>;

    /// Closes the backend. The simulation takes its channel down and reports any KMCL contract
    /// violation its model recorded.
    ///
    /// # Errors
    /// [`DeviceError::Violations`] from the simulation.
    fn close(self: Box<Self>) -> Result<(), DeviceError>;
}

/// How long [`call`] waits for a request it cancelled to complete.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How one IOCTL ended, with a deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The driver completed it (with any status).
    Done(Completion),
    /// No completion within the deadline.
    TimedOut(CancelOutcome),
    /// Ctrl-C was pressed before the request completed.
    Interrupted(CancelOutcome),
}

/// What happened when a timed-out request was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was cancelled and completed with this status (normally `STATUS_CANCELLED`).
    Cancelled(NtStatus),
    /// The driver did not let it be cancelled, or it did not complete within
    /// [`CANCEL_GRACE`] of the cancel: it stays in the driver until the host answers or the
    /// channel closes.
    StillPending,
}

/// Issues an IOCTL and waits up to `timeout` (`None`: for ever) for it; on timeout cancels it
/// and waits [`CANCEL_GRACE`] for the cancellation. A request that completes successfully
/// while being cancelled (a notification arrived just then) is returned as done, so nothing
/// the driver handed over is lost.
///
/// # Errors
/// The backend's own failures ([`Device::submit`], [`PendingIoctl::wait`]).
pub fn call(
    dev: &dyn Device,
    code: IoctlCode,
    input: &[u8],
    output_len: usize,
    timeout: Option<Duration>,
) -> Result<Outcome, DeviceError> {
    let mut pending = dev.submit(code, input, output_len)?;
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    // In slices, so that Ctrl-C is noticed while the driver holds the request.
    let interrupted = loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .min(interrupt::SLICE),
            None => interrupt::SLICE,
        };
        if let Some(done) = pending.wait(Some(slice))? {
            return Ok(Outcome::Done(done));
        }
        if interrupt::interrupted() {
            break true;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break false;
        }
    };
    let ended = |cancel| {
        if interrupted {
            Outcome::Interrupted(cancel)
        } else {
            Outcome::TimedOut(cancel)
        }
    };
    if !pending.cancel() {
        return Ok(ended(CancelOutcome::StillPending));
    }
    match pending.wait(Some(CANCEL_GRACE))? {
        Some(done) if done.status.is_success() => Ok(Outcome::Done(done)),
        Some(done) => Ok(ended(CancelOutcome::Cancelled(done.status))),
        None => Ok(ended(CancelOutcome::StillPending)),
    }
}

/// Why a backend could not be used. These are I/O errors (exit code 2), not driver statuses.
#[derive(Debug)]
pub enum DeviceError {
    /// No device offers the vmbmsg interface.
    #[cfg_attr(
        all(not(windows), not(test)),
        expect(dead_code, reason = "built by the Windows backend")
    )]
    NotFound,
    /// The device exists but this user may not open it.
    #[cfg_attr(
        all(not(windows), not(test)),
        expect(dead_code, reason = "built by the Windows backend")
    )]
    AccessDenied {
        /// The interface path.
        path: String,
    },
    /// A Win32 call failed.
    #[cfg_attr(
        all(not(windows), not(test)),
        expect(dead_code, reason = "built by the Windows backend")
    )]
    Win32 {
        /// What was being done ("CreateFileW", "CM_Get_Device_Interface_ListW", ...).
        call: &'static str,
        /// The interface path, when there is one.
        path: Option<String>,
        /// `GetLastError()` (or the CONFIGRET mapped to one).
        code: u32,
    },
    /// The simulation could not start.
    #[cfg_attr(
        windows,
        expect(dead_code, reason = "Windows builds have no simulation")
    )]
    SimStart(String),
    /// The simulation's model recorded KMCL contract violations (listed).
    #[cfg_attr(
        all(windows, not(test)),
        expect(dead_code, reason = "Windows builds have no simulation")
    )]
    Violations(Vec<String>),
}

impl DeviceError {
    /// Violations are a finding about the driver (exit 1); the rest are I/O errors (exit 2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Violations(_) => 1,
            _ => 2,
        }
    }
}

/// The interface GUID, for messages.
const GUID: &str = vmbmsg_proto::guid::GUID_DEVINTERFACE_VMBMSG_STR;
/// The hardware id, for messages.
const HWID: &str = vmbmsg_proto::guid::VMBMSG_HARDWARE_ID;

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => write!(
                f,
                "no vmbmsg device found (no present device has the interface {GUID}). \
                 Is the driver installed (`pnputil /enum-drivers`, look for vmbmsg.inf)? \
                 Does the host offer the channel: `pnputil /enum-devices /class System` should \
                 list a device with hardware id {HWID}, and Device Manager should show it \
                 without a warning sign. Without a device, `vmbctl --sim` runs the simulation"
            ),
            Self::AccessDenied { path } => write!(
                f,
                "access denied opening {path}: the device admits SYSTEM and Administrators \
                 only; run vmbctl from an elevated prompt (Run as administrator)"
            ),
            Self::Win32 { call, path, code } => {
                write!(f, "{call} failed")?;
                if let Some(path) = path {
                    write!(f, " for {path}")?;
                }
                write!(f, ": Win32 error {code}")?;
                if let Some(name) = win32_name(*code) {
                    write!(f, " ({name})")?;
                }
                if let Some(hint) = win32_open_hint(*code) {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
            Self::SimStart(why) => write!(f, "the simulation did not start: {why}"),
            Self::Violations(list) => {
                write!(
                    f,
                    "the simulation's KMCL model recorded {} contract violation(s) by the \
                     driver core:",
                    list.len()
                )?;
                for v in list {
                    write!(f, "\n  {v}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DeviceError {}

/// Win32 error codes vmbctl names (winerror.h values).
pub mod win32 {
    /// The function is not valid for this device (`STATUS_INVALID_DEVICE_REQUEST`).
    pub const ERROR_INVALID_FUNCTION: u32 = 1;
    /// No such file: the interface path no longer exists.
    pub const ERROR_FILE_NOT_FOUND: u32 = 2;
    /// No such path.
    pub const ERROR_PATH_NOT_FOUND: u32 = 3;
    /// Access denied.
    pub const ERROR_ACCESS_DENIED: u32 = 5;
    /// The handle is invalid.
    pub const ERROR_INVALID_HANDLE: u32 = 6;
    /// Not enough memory.
    pub const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;
    /// The device is not ready (`STATUS_DEVICE_NOT_READY`).
    pub const ERROR_NOT_READY: u32 = 21;
    /// The device does not recognize the command (`STATUS_INVALID_DEVICE_STATE`).
    pub const ERROR_BAD_COMMAND: u32 = 22;
    /// Data error (`STATUS_DATA_ERROR`).
    pub const ERROR_CRC: u32 = 23;
    /// A device attached to the system is not functioning (`STATUS_UNSUCCESSFUL`).
    pub const ERROR_GEN_FAILURE: u32 = 31;
    /// Sharing violation.
    pub const ERROR_SHARING_VIOLATION: u32 = 32;
    /// The request is not supported (`STATUS_NOT_SUPPORTED`).
    pub const ERROR_NOT_SUPPORTED: u32 = 50;
    /// The specified network resource or device is no longer available.
    pub const ERROR_DEV_NOT_EXIST: u32 = 55;
    /// The server cannot perform the operation (`STATUS_INVALID_NETWORK_RESPONSE`).
    pub const ERROR_BAD_NET_RESP: u32 = 58;
    /// A parameter is incorrect (`STATUS_INVALID_PARAMETER`).
    pub const ERROR_INVALID_PARAMETER: u32 = 87;
    /// The semaphore timeout period has expired (`STATUS_IO_TIMEOUT`).
    pub const ERROR_SEM_TIMEOUT: u32 = 121;
    /// The data area passed to a system call is too small (`STATUS_BUFFER_TOO_SMALL`).
    pub const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
    /// The requested resource is in use (`STATUS_DEVICE_BUSY`).
    pub const ERROR_BUSY: u32 = 170;
    /// More data is available (`STATUS_BUFFER_OVERFLOW`).
    pub const ERROR_MORE_DATA: u32 = 234;
    /// The I/O operation was aborted (`STATUS_CANCELLED`).
    pub const ERROR_OPERATION_ABORTED: u32 = 995;
    /// Overlapped I/O is in progress.
    pub const ERROR_IO_PENDING: u32 = 997;
    /// The device is not connected.
    pub const ERROR_DEVICE_NOT_CONNECTED: u32 = 1167;
    /// Element not found (`CancelIoEx`: nothing to cancel).
    pub const ERROR_NOT_FOUND: u32 = 1168;
    /// Revision mismatch (`STATUS_REVISION_MISMATCH`).
    pub const ERROR_REVISION_MISMATCH: u32 = 1306;
    /// Internal error (`STATUS_INTERNAL_ERROR`).
    pub const ERROR_INTERNAL_ERROR: u32 = 1359;
    /// Insufficient system resources (`STATUS_INSUFFICIENT_RESOURCES`).
    pub const ERROR_NO_SYSTEM_RESOURCES: u32 = 1450;
    /// The device has been removed (`STATUS_DEVICE_REMOVED`).
    pub const ERROR_DEVICE_REMOVED: u32 = 1617;
    /// Not enough quota (`STATUS_QUOTA_EXCEEDED`).
    pub const ERROR_NOT_ENOUGH_QUOTA: u32 = 1816;
    /// The wait timed out (`WAIT_TIMEOUT`, from `GetOverlappedResultEx`).
    pub const WAIT_TIMEOUT: u32 = 258;
}

/// `(Win32 error, its name, the NTSTATUS the driver completes with that
/// `RtlNtStatusToDosError` turns into it)` for every status the vmbmsg IOCTLs document, plus
/// the errors opening the device can give (no status).
const WIN32_TABLE: &[(u32, &str, Option<NtStatus>)] = &[
    (
        win32::ERROR_INVALID_FUNCTION,
        "ERROR_INVALID_FUNCTION",
        Some(NtStatus::STATUS_INVALID_DEVICE_REQUEST),
    ),
    (win32::ERROR_FILE_NOT_FOUND, "ERROR_FILE_NOT_FOUND", None),
    (win32::ERROR_PATH_NOT_FOUND, "ERROR_PATH_NOT_FOUND", None),
    (
        win32::ERROR_ACCESS_DENIED,
        "ERROR_ACCESS_DENIED",
        Some(NtStatus::STATUS_ACCESS_DENIED),
    ),
    (
        win32::ERROR_INVALID_HANDLE,
        "ERROR_INVALID_HANDLE",
        Some(NtStatus::STATUS_INVALID_HANDLE),
    ),
    (
        win32::ERROR_NOT_ENOUGH_MEMORY,
        "ERROR_NOT_ENOUGH_MEMORY",
        None,
    ),
    (
        win32::ERROR_NOT_READY,
        "ERROR_NOT_READY",
        Some(NtStatus::STATUS_DEVICE_NOT_READY),
    ),
    (
        win32::ERROR_BAD_COMMAND,
        "ERROR_BAD_COMMAND",
        Some(NtStatus::STATUS_INVALID_DEVICE_STATE),
    ),
    (
        win32::ERROR_CRC,
        "ERROR_CRC",
        Some(NtStatus::STATUS_DATA_ERROR),
    ),
    (
        win32::ERROR_GEN_FAILURE,
        "ERROR_GEN_FAILURE",
        Some(NtStatus::STATUS_UNSUCCESSFUL),
    ),
    (
        win32::ERROR_SHARING_VIOLATION,
        "ERROR_SHARING_VIOLATION",
        None,
    ),
    (
        win32::ERROR_NOT_SUPPORTED,
        "ERROR_NOT_SUPPORTED",
        Some(NtStatus::STATUS_NOT_SUPPORTED),
    ),
    (win32::ERROR_DEV_NOT_EXIST, "ERROR_DEV_NOT_EXIST", None),
    (
        win32::ERROR_BAD_NET_RESP,
        "ERROR_BAD_NET_RESP",
        Some(NtStatus::STATUS_INVALID_NETWORK_RESPONSE),
    ),
    (
        win32::ERROR_INVALID_PARAMETER,
        "ERROR_INVALID_PARAMETER",
        Some(NtStatus::STATUS_INVALID_PARAMETER),
    ),
    (
        win32::ERROR_SEM_TIMEOUT,
        "ERROR_SEM_TIMEOUT",
        Some(NtStatus::STATUS_IO_TIMEOUT),
    ),
    (
        win32::ERROR_INSUFFICIENT_BUFFER,
        "ERROR_INSUFFICIENT_BUFFER",
        Some(NtStatus::STATUS_BUFFER_TOO_SMALL),
    ),
    (
        win32::ERROR_BUSY,
        "ERROR_BUSY",
        Some(NtStatus::STATUS_DEVICE_BUSY),
    ),
    (
        win32::ERROR_MORE_DATA,
        "ERROR_MORE_DATA",
        Some(NtStatus::STATUS_BUFFER_OVERFLOW),
    ),
    (win32::WAIT_TIMEOUT, "WAIT_TIMEOUT", None),
    (
        win32::ERROR_OPERATION_ABORTED,
        "ERROR_OPERATION_ABORTED",
        Some(NtStatus::STATUS_CANCELLED),
    ),
    (win32::ERROR_IO_PENDING, "ERROR_IO_PENDING", None),
    (
        win32::ERROR_DEVICE_NOT_CONNECTED,
        "ERROR_DEVICE_NOT_CONNECTED",
        None,
    ),
    (win32::ERROR_NOT_FOUND, "ERROR_NOT_FOUND", None),
    (
        win32::ERROR_REVISION_MISMATCH,
        "ERROR_REVISION_MISMATCH",
        Some(NtStatus::STATUS_REVISION_MISMATCH),
    ),
    (
        win32::ERROR_INTERNAL_ERROR,
        "ERROR_INTERNAL_ERROR",
        Some(NtStatus::STATUS_INTERNAL_ERROR),
    ),
    (
        win32::ERROR_NO_SYSTEM_RESOURCES,
        "ERROR_NO_SYSTEM_RESOURCES",
        Some(NtStatus::STATUS_INSUFFICIENT_RESOURCES),
    ),
    (
        win32::ERROR_DEVICE_REMOVED,
        "ERROR_DEVICE_REMOVED",
        Some(NtStatus::STATUS_DEVICE_REMOVED),
    ),
    (
        win32::ERROR_NOT_ENOUGH_QUOTA,
        "ERROR_NOT_ENOUGH_QUOTA",
        Some(NtStatus::STATUS_QUOTA_EXCEEDED),
    ),
];

/// The `winerror.h` name of a Win32 error vmbctl knows.
pub fn win32_name(code: u32) -> Option<&'static str> {
    WIN32_TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, name, _)| *name)
}

/// The NTSTATUS a failed `DeviceIoControl` most likely carried, from its Win32 error: the
/// vmbmsg status that `RtlNtStatusToDosError` maps to `code`, or else the error wrapped as
/// `NTSTATUS_FROM_WIN32` (`0xC007xxxx`), which names no status but keeps the code.
#[cfg_attr(
    all(not(windows), not(test)),
    expect(dead_code, reason = "built by the Windows backend")
)]
pub fn status_from_win32(code: u32) -> NtStatus {
    WIN32_TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .and_then(|(_, _, status)| *status)
        .unwrap_or_else(|| {
            NtStatus(i32::from_ne_bytes(
                (0xC007_0000 | (code & 0xFFFF)).to_ne_bytes(),
            ))
        })
}

/// The strings of a `REG_MULTI_SZ`-style UTF-16 list (what `CM_Get_Device_Interface_ListW`
/// returns): NUL-separated, ended by an empty string.
#[cfg_attr(
    all(not(windows), not(test)),
    expect(dead_code, reason = "used by the Windows backend")
)]
pub fn split_multi_sz(list: &[u16]) -> Vec<String> {
    list.split(|&c| c == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

/// What to do about an error opening the device.
fn win32_open_hint(code: u32) -> Option<&'static str> {
    match code {
        win32::ERROR_FILE_NOT_FOUND | win32::ERROR_PATH_NOT_FOUND | win32::ERROR_DEV_NOT_EXIST => {
            Some(
                "the device went away between lookup and open (removed, or the host rescinded \
                 the channel); run vmbctl again, and check Device Manager",
            )
        }
        win32::ERROR_SHARING_VIOLATION => {
            Some("another program holds the device exclusively; close it and retry")
        }
        win32::ERROR_GEN_FAILURE | win32::ERROR_DEVICE_NOT_CONNECTED => Some(
            "the device is present but not working: see its status in Device Manager and the \
             System event log",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win32_errors_map_back_to_the_documented_statuses() {
        let cases = [
            (win32::ERROR_NOT_READY, NtStatus::STATUS_DEVICE_NOT_READY),
            (
                win32::ERROR_BAD_NET_RESP,
                NtStatus::STATUS_INVALID_NETWORK_RESPONSE,
            ),
            (win32::ERROR_OPERATION_ABORTED, NtStatus::STATUS_CANCELLED),
            (
                win32::ERROR_INSUFFICIENT_BUFFER,
                NtStatus::STATUS_BUFFER_TOO_SMALL,
            ),
            (
                win32::ERROR_INVALID_FUNCTION,
                NtStatus::STATUS_INVALID_DEVICE_REQUEST,
            ),
            (
                win32::ERROR_NOT_ENOUGH_QUOTA,
                NtStatus::STATUS_QUOTA_EXCEEDED,
            ),
            (
                win32::ERROR_NO_SYSTEM_RESOURCES,
                NtStatus::STATUS_INSUFFICIENT_RESOURCES,
            ),
            (win32::ERROR_DEVICE_REMOVED, NtStatus::STATUS_DEVICE_REMOVED),
        ];
        for (code, status) in cases {
            assert_eq!(status_from_win32(code), status, "{code}");
        }
        // Every status a vmbmsg IOCTL documents has a way back.
        for s in [
            vmbmsg_proto::ioctl::NOT_READY_STATUS,
            vmbmsg_proto::ioctl::BAD_REPLY_STATUS,
            vmbmsg_proto::ioctl::TOO_MANY_PARKED_STATUS,
        ] {
            assert!(WIN32_TABLE.iter().any(|(_, _, st)| *st == Some(s)), "{s}");
        }
        let unknown = status_from_win32(4321);
        assert_eq!(unknown.as_u32(), 0xC007_10E1);
        assert_eq!(unknown.name(), None);
    }

    #[test]
    fn multi_sz_lists() {
        let wide = |s: &str| s.encode_utf16().collect::<Vec<_>>();
        let mut list = wide("\\\\?\\A");
        list.push(0);
        list.extend(wide("\\\\?\\B"));
        list.extend([0, 0]);
        assert_eq!(split_multi_sz(&list), ["\\\\?\\A", "\\\\?\\B"]);
        assert!(split_multi_sz(&[0]).is_empty());
        assert!(split_multi_sz(&[]).is_empty());
        // Anything after the terminating empty string is ignored.
        assert_eq!(split_multi_sz(&[65, 0, 0, 66, 0]), ["A"]);
    }

    #[test]
    fn names_are_unique_and_hints_say_what_to_do() {
        let mut seen = std::collections::HashSet::new();
        for (code, name, _) in WIN32_TABLE {
            assert!(seen.insert(*code), "{name}");
            assert_eq!(win32_name(*code), Some(*name));
        }
        let msg = DeviceError::NotFound.to_string();
        assert!(msg.contains("pnputil /enum-devices /class System"), "{msg}");
        assert!(msg.contains(HWID), "{msg}");
        let msg = DeviceError::AccessDenied { path: "p".into() }.to_string();
        assert!(msg.contains("elevated"), "{msg}");
        let msg = DeviceError::Win32 {
            call: "CreateFileW",
            path: Some("p".into()),
            code: win32::ERROR_FILE_NOT_FOUND,
        }
        .to_string();
        assert!(
            msg.contains("ERROR_FILE_NOT_FOUND") && msg.contains("went away"),
            "{msg}"
        );
        assert_eq!(DeviceError::NotFound.exit_code(), 2);
        assert_eq!(DeviceError::Violations(vec![]).exit_code(), 1);
    }
}
