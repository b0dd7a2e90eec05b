//! The six IOCTLs as typed calls on any [`Device`], using the `vmbmsg_proto::ioctl` buffers.

use std::time::Duration;

use vmbmsg_proto::ioctl::{
    ABI_VERSION, InfoOut, IoctlCode, NOT_READY_STATUS, PingOut, RECV_OUT_MAX, RecvOut, SEND_IN_MAX,
    SendIn, SendOut, StatsOut, parse_recv_output, read_output, write_send_input,
};

use crate::device::{Completion, Device, Outcome, call};
use crate::error::{Error, state_advice};

/// How long the queries (GET_INFO, GET_STATS, RESET_STATS) may take: the driver answers them
/// at once.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A notification taken by RECV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The fixed header.
    pub header: RecvOut,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Runs one IOCTL and returns its output when it succeeded.
///
/// # Errors
/// [`Error::Device`], [`Error::Timeout`], [`Error::Status`] (NOT_READY with the channel's
/// state).
pub fn run(
    dev: &dyn Device,
    op: IoctlCode,
    input: &[u8],
    output_len: usize,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, Error> {
    match call(dev, op, input, output_len, timeout)? {
        Outcome::Done(c) => completed(dev, op, c),
        Outcome::TimedOut(cancel) => Err(Error::Timeout {
            op,
            waited: timeout.unwrap_or_default(),
            cancel,
        }),
        Outcome::Interrupted(cancel) => Err(Error::Interrupted {
            op: Some(op),
            cancel: Some(cancel),
        }),
    }
}

/// The output of a completion, or the error its status means.
///
/// # Errors
/// [`Error::Status`].
pub fn completed(dev: &dyn Device, op: IoctlCode, c: Completion) -> Result<Vec<u8>, Error> {
    if c.status.is_success() {
        return Ok(c.output);
    }
    let mut error = Error::status(op, c.status, c.win32_error);
    if c.status == NOT_READY_STATUS && op != IoctlCode::GetInfo {
        // Say which state, and why it might be in it.
        if let (Ok(info), Error::Status { detail, .. }) = (info_unchecked(dev), &mut error) {
            *detail = Some(state_advice(&info));
        }
    }
    Err(error)
}

fn parse<T: zerocopy::FromBytes>(op: IoctlCode, bytes: &[u8]) -> Result<T, Error> {
    read_output(bytes).map_err(|error| Error::BadOutput { op, error })
}

/// GET_INFO, whatever the driver's ABI version.
///
/// # Errors
/// As [`run`], and [`Error::BadOutput`].
pub fn info_unchecked(dev: &dyn Device) -> Result<InfoOut, Error> {
    let op = IoctlCode::GetInfo;
    let out = run(dev, op, &[], op.min_output_len(), Some(QUERY_TIMEOUT))?;
    parse(op, &out)
}

/// Checks the driver's ABI version against the one this tool speaks.
///
/// # Errors
/// [`Error::Abi`].
pub fn check_abi(info: &InfoOut) -> Result<(), Error> {
    match info.abi_version.get() {
        ABI_VERSION => Ok(()),
        driver => Err(Error::Abi { driver }),
    }
}

/// GET_STATS.
///
/// # Errors
/// As [`run`], and [`Error::BadOutput`].
pub fn stats(dev: &dyn Device) -> Result<StatsOut, Error> {
    let op = IoctlCode::GetStats;
    let out = run(dev, op, &[], op.min_output_len(), Some(QUERY_TIMEOUT))?;
    parse(op, &out)
}

/// RESET_STATS.
///
/// # Errors
/// As [`run`].
pub fn reset_stats(dev: &dyn Device) -> Result<(), Error> {
    run(dev, IoctlCode::ResetStats, &[], 0, Some(QUERY_TIMEOUT)).map(drop)
}

/// PING: the driver's answer, whatever the host's status inside it.
///
/// # Errors
/// As [`run`], and [`Error::BadOutput`].
pub fn ping(dev: &dyn Device, timeout: Duration) -> Result<PingOut, Error> {
    let op = IoctlCode::Ping;
    let out = run(dev, op, &[], op.min_output_len(), Some(timeout))?;
    parse(op, &out)
}

/// The SEND input for `payload`.
///
/// # Errors
/// [`Error::Usage`] when the payload is over the protocol's maximum.
pub fn send_input(payload: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0; SEND_IN_MAX.min(size_of::<SendIn>() + payload.len())];
    let n = write_send_input(&mut buf, payload).map_err(|e| Error::Usage(format!("{e}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// SEND: the driver's answer, whatever the host's status inside it.
///
/// # Errors
/// [`Error::Usage`] (payload too large), as [`run`], and [`Error::BadOutput`].
pub fn send(dev: &dyn Device, payload: &[u8], timeout: Duration) -> Result<SendOut, Error> {
    let op = IoctlCode::Send;
    let input = send_input(payload)?;
    let out = run(dev, op, &input, op.min_output_len(), Some(timeout))?;
    parse(op, &out)
}

/// Parses a RECV output.
///
/// # Errors
/// [`Error::BadOutput`].
pub fn parse_notification(bytes: &[u8]) -> Result<Notification, Error> {
    let (header, payload) = parse_recv_output(bytes).map_err(|error| Error::BadOutput {
        op: IoctlCode::Recv,
        error,
    })?;
    Ok(Notification {
        header,
        payload: payload.to_vec(),
    })
}

/// RECV: the next notification, waiting up to `timeout` (`None`: for ever).
///
/// # Errors
/// As [`run`] ([`Error::Timeout`] when none arrived; the RECV was cancelled), and
/// [`Error::BadOutput`].
pub fn recv(dev: &dyn Device, timeout: Option<Duration>) -> Result<Notification, Error> {
    let out = run(dev, IoctlCode::Recv, &[], RECV_OUT_MAX, timeout)?;
    parse_notification(&out)
}
