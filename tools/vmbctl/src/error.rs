//! vmbctl's errors, their one-line messages (which say what to do) and their exit codes.
//!
//! | Exit code | Meaning |
//! |---|---|
//! | 0 | success (also: stdout closed early, e.g. `vmbctl ... \| head`) |
//! | 1 | the driver or the host reported a failure: a failure status, a failure status from the host inside a PING/SEND answer, no answer in time, an ABI mismatch, a failed `smoke` step, a contract violation seen by the simulation |
//! | 2 | usage error (bad arguments) or I/O error (no device, access denied, unreadable file) |
//! | 130 | interrupted (Ctrl-C); what was measured so far was printed |

use std::fmt;
use std::io;
use std::time::Duration;

use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::{ABI_VERSION, ChannelState, InfoOut, IoctlCode, IoctlError, StateReason};
use vmbmsg_proto::wire::{version_major, version_minor};

use crate::device::{CancelOutcome, DeviceError, win32_name};

/// Everything that can end a vmbctl run early.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments (clap catches most before this).
    Usage(String),
    /// Reading an input or writing the output failed.
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The backend could not be used.
    Device(DeviceError),
    /// The driver completed an IOCTL with a failure status.
    Status {
        /// The IOCTL.
        op: IoctlCode,
        /// Its status.
        status: NtStatus,
        /// The Win32 error it arrived as (Windows).
        win32: Option<u32>,
        /// What it means here and what to do.
        detail: Option<String>,
    },
    /// The driver completed PING or SEND, and the host's answer inside is a failure.
    HostStatus {
        /// PING or SEND.
        op: IoctlCode,
        /// The host's status.
        status: NtStatus,
    },
    /// No completion in time.
    Timeout {
        /// The IOCTL.
        op: IoctlCode,
        /// How long vmbctl waited.
        waited: Duration,
        /// What the cancel did.
        cancel: CancelOutcome,
    },
    /// The driver speaks another IOCTL ABI.
    Abi {
        /// The driver's `abi_version`.
        driver: u32,
    },
    /// The driver's output does not parse.
    BadOutput {
        /// The IOCTL.
        op: IoctlCode,
        /// Why.
        error: IoctlError,
    },
    /// Some of several checks or attempts failed (`smoke`, `ping`); their details were printed.
    Failed {
        /// What failed, e.g. "2 of 9 smoke steps failed".
        summary: String,
    },
    /// Ctrl-C: the command stopped early (its summary so far was printed).
    Interrupted {
        /// The IOCTL that was waiting, if one was.
        op: Option<IoctlCode>,
        /// What cancelling it did.
        cancel: Option<CancelOutcome>,
    },
}

/// The IOCTL's short name: `PING` for `IOCTL_VMBMSG_PING`.
pub fn op_name(op: IoctlCode) -> &'static str {
    op.name().trim_start_matches("IOCTL_VMBMSG_")
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Io { .. } => 2,
            Self::Device(e) => e.exit_code(),
            Self::Status { .. }
            | Self::HostStatus { .. }
            | Self::Timeout { .. }
            | Self::Abi { .. }
            | Self::BadOutput { .. }
            | Self::Failed { .. } => 1,
            // 128 + SIGINT, what shells report for a command ended by Ctrl-C.
            Self::Interrupted { .. } => 130,
        }
    }

    /// Stdout was closed by the reader: not an error for a command-line tool.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// An error writing vmbctl's output.
    pub fn output(source: io::Error) -> Self {
        Self::Io {
            context: "writing the output".into(),
            source,
        }
    }

    /// A failure status for `op`, with what it means for that IOCTL.
    pub fn status(op: IoctlCode, status: NtStatus, win32: Option<u32>) -> Self {
        Self::Status {
            op,
            status,
            win32,
            detail: status_meaning(op, status).map(str::to_owned),
        }
    }
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        Self::Device(e)
    }
}

/// What a failure status means for an IOCTL, and what to do about it.
fn status_meaning(op: IoctlCode, status: NtStatus) -> Option<&'static str> {
    Some(match status {
        NtStatus::STATUS_DEVICE_NOT_READY => {
            "the channel to the host is not READY; `vmbctl info` shows its state"
        }
        NtStatus::STATUS_INVALID_NETWORK_RESPONSE => {
            "the host answered with a reply that does not parse (counted under \
             malformed_by_reason in `vmbctl stats`); the host side is broken or speaks \
             another protocol"
        }
        NtStatus::STATUS_CANCELLED => {
            "the request was cancelled (the channel closed while it was pending, or it was \
             cancelled)"
        }
        NtStatus::STATUS_DEVICE_REMOVED => {
            "the device went away (the driver stopped, or the host rescinded the channel) \
             while the request was pending"
        }
        NtStatus::STATUS_QUOTA_EXCEEDED if op == IoctlCode::Recv => {
            "too many RECV requests are already waiting (max_parked_recv in `vmbctl info`): \
             stop the other readers"
        }
        NtStatus::STATUS_INSUFFICIENT_RESOURCES => {
            "the driver could not allocate a packet or buffer; retry later"
        }
        NtStatus::STATUS_DEVICE_BUSY if op == IoctlCode::Send => {
            "every bulk slot is carrying another large SEND; retry when one is answered"
        }
        NtStatus::STATUS_INVALID_PARAMETER if op == IoctlCode::Send => {
            "the driver refused the SEND: a message above 16384 bytes needs the bulk buffer of \
             protocol 1.1 (`vmbctl info` shows this session's max payload); otherwise vmbctl \
             and the driver disagree on the IOCTL ABI"
        }
        NtStatus::STATUS_BUFFER_TOO_SMALL | NtStatus::STATUS_INVALID_PARAMETER => {
            "the driver refused vmbctl's buffers: vmbctl and the driver disagree on the IOCTL \
             ABI (compare `vmbctl --version` with the driver version in `vmbctl info`)"
        }
        NtStatus::STATUS_INVALID_DEVICE_REQUEST => {
            "the driver does not know this IOCTL: vmbctl and the driver come from different \
             versions"
        }
        NtStatus::STATUS_ACCESS_DENIED => {
            "this handle may not do that: run vmbctl from an elevated prompt"
        }
        _ => return None,
    })
}

/// GET_INFO's `state_reason` in words, `None` for `NONE`.
pub fn reason_text(reason: StateReason) -> Option<&'static str> {
    Some(match reason {
        StateReason::NONE => return None,
        StateReason::REJECTED => "the host rejected the proposed versions",
        StateReason::TIMED_OUT => "the host did not answer in time",
        StateReason::MALFORMED_REPLY => "the host's reply was not valid",
        StateReason::SEND_FAILED => "the proposal could not be sent",
        _ => "reason unknown to this vmbctl",
    })
}

/// Why the channel is in `state`, and what to do, for a NOT_READY error.
pub fn state_advice(info: &InfoOut) -> String {
    let state = info.channel_state;
    let v = |x: u32| format!("{}.{}", version_major(x), version_minor(x));
    let why = match state {
        ChannelState::DOWN => {
            "the device has no channel (it is not started); check it in Device Manager".into()
        }
        ChannelState::WAITING_FOR_HOST => {
            "the host has not opened the channel yet: is the host side of vmbmsg running?".into()
        }
        ChannelState::NEGOTIATING => "version negotiation is in progress; retry in a moment".into(),
        ChannelState::NEGOTIATION_FAILED => match info.state_reason {
            StateReason::TIMED_OUT => "the host did not answer the version negotiation in time \
                 (the driver waits 5 s): is the host side of vmbmsg running and does it answer \
                 NEGOTIATE? Restart the device once it does"
                .into(),
            StateReason::REJECTED => format!(
                "the host rejected the protocol versions this driver offers ({}..={}); update \
                 the host side or the driver so they share a version, then restart the device",
                v(info.protocol_min.get()),
                v(info.protocol_max.get())
            ),
            StateReason::MALFORMED_REPLY => "the host answered the version negotiation with a \
                 reply that is not valid (`vmbctl stats` counts it by reason); fix the host \
                 side, then restart the device"
                .into(),
            StateReason::SEND_FAILED => "the driver could not send its version proposal, or \
                 the channel closed while it waited; restart the device"
                .into(),
            _ => format!(
                "the host rejected the protocol versions this driver offers ({}..={}), \
                 answered the negotiation with garbage, or did not answer in time; update the \
                 host side or the driver so they share a version, then restart the device",
                v(info.protocol_min.get()),
                v(info.protocol_max.get())
            ),
        },
        ChannelState::CLOSED => "the host closed or rescinded the channel; the driver enables \
             it again and waits for the host (WAITING_FOR_HOST). If it stays CLOSED, restart the \
             device (Device Manager: disable, enable) once the host offers it again"
            .into(),
        ChannelState::PAUSED => "the driver paused the channel; it resumes on its own, with \
             the same session"
            .into(),
        _ => "the driver reports a state this vmbctl does not know".into(),
    };
    format!("the channel is {state}: {why}")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(msg) => write!(f, "{msg}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Device(e) => write!(f, "{e}"),
            Self::Status {
                op,
                status,
                win32,
                detail,
            } => {
                write!(f, "{} failed: {status}", op_name(*op))?;
                if let Some(code) = win32 {
                    write!(f, " [Win32 error {code}")?;
                    if let Some(name) = win32_name(*code) {
                        write!(f, " {name}")?;
                    }
                    write!(f, "]")?;
                }
                if let Some(detail) = detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Self::HostStatus { op, status } => write!(
                f,
                "{}: the driver delivered it, but the host answered with {status}",
                op_name(*op)
            ),
            Self::Timeout { op, waited, cancel } => {
                let what = match op {
                    IoctlCode::Recv => "no notification from the host",
                    IoctlCode::Ping | IoctlCode::Send => "no answer from the host",
                    _ => "no answer from the driver",
                };
                write!(
                    f,
                    "{} timed out: {what} within {} ms ({})",
                    op_name(*op),
                    waited.as_millis(),
                    NtStatus::STATUS_IO_TIMEOUT
                )?;
                match cancel {
                    CancelOutcome::Cancelled(status)
                        if matches!(op, IoctlCode::Ping | IoctlCode::Send) =>
                    {
                        write!(
                            f,
                            "; the request was cancelled ({status}); its packet stays with the \
                             host until it answers or the channel closes, and is then counted \
                             as failed (`vmbctl stats`)"
                        )
                    }
                    CancelOutcome::Cancelled(status) => {
                        write!(f, "; the request was cancelled ({status})")
                    }
                    CancelOutcome::StillPending => write!(
                        f,
                        "; the driver keeps the request until the host answers or the channel \
                         closes (is the host side alive? `vmbctl stats` counts failures)"
                    ),
                }
            }
            Self::Abi { driver } => write!(
                f,
                "the driver speaks IOCTL ABI version {driver}, this vmbctl speaks \
                 {ABI_VERSION} ({}): use the vmbctl built with the installed driver",
                NtStatus::STATUS_REVISION_MISMATCH
            ),
            Self::BadOutput { op, error } => write!(
                f,
                "{}: the driver's output does not parse ({error}); vmbctl and the driver \
                 disagree on the IOCTL ABI",
                op_name(*op)
            ),
            Self::Failed { summary } => write!(f, "{summary}"),
            Self::Interrupted { op, cancel } => {
                f.write_str("interrupted")?;
                if let Some(op) = op {
                    write!(f, " while {} waited", op_name(*op))?;
                }
                match cancel {
                    Some(CancelOutcome::Cancelled(status)) => {
                        write!(f, "; the request was cancelled ({status})")
                    }
                    Some(CancelOutcome::StillPending) => write!(
                        f,
                        "; the driver keeps the request until the host answers or the channel \
                         closes"
                    ),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_status_and_hex() {
        let e = Error::status(IoctlCode::Ping, NtStatus::STATUS_DEVICE_NOT_READY, None);
        let text = e.to_string();
        assert!(
            text.starts_with("PING failed: STATUS_DEVICE_NOT_READY (0xC00000A3)"),
            "{text}"
        );
        assert_eq!(e.exit_code(), 1);
        let e = Error::status(
            IoctlCode::Send,
            NtStatus::STATUS_INVALID_NETWORK_RESPONSE,
            Some(58),
        );
        let text = e.to_string();
        assert!(
            text.contains("[Win32 error 58 ERROR_BAD_NET_RESP]"),
            "{text}"
        );
        let e = Error::Timeout {
            op: IoctlCode::Ping,
            waited: Duration::from_millis(300),
            cancel: CancelOutcome::StillPending,
        };
        let text = e.to_string();
        assert!(
            text.contains("timed out") && text.contains("300 ms"),
            "{text}"
        );
        assert!(text.contains("STATUS_IO_TIMEOUT (0xC00000B5)"), "{text}");
        let e = Error::Timeout {
            op: IoctlCode::Send,
            waited: Duration::from_millis(300),
            cancel: CancelOutcome::Cancelled(NtStatus::STATUS_CANCELLED),
        };
        let text = e.to_string();
        assert!(
            text.contains("the request was cancelled (STATUS_CANCELLED (0xC0000120)); its packet"),
            "{text}"
        );
        assert!(text.contains("counted as failed"), "{text}");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::Abi { driver: 9 }.exit_code(), 1);
        assert_eq!(Error::Usage(String::new()).exit_code(), 2);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = Error::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert!(!Error::output(io::Error::from(io::ErrorKind::Other)).is_broken_pipe());
    }
}
