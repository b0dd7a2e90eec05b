//! The typed results the subcommands produce. Each is one [`Record`]; the human printer
//! ([`crate::print::human`]) and the JSON Lines printer ([`crate::print::json`]) format the same
//! records. The IOCTL outputs are the `vmbmsg_proto::ioctl` structs themselves.

use std::time::Duration;

use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::{InfoOut, PingOut, SendOut, StatsOut};

use crate::device::BackendInfo;
use crate::ops::Notification;

/// One result, printed as it is produced.
#[derive(Clone, Debug)]
pub enum Record {
    /// What vmbctl talks to (JSON only; the human header is on stderr and in `info`).
    Backend(BackendInfo),
    /// GET_INFO.
    Info(InfoOut),
    /// GET_STATS.
    Stats(Box<StatsOut>),
    /// RESET_STATS succeeded.
    StatsReset,
    /// One PING answer.
    Ping(PingReply),
    /// The end of `ping`.
    PingSummary(PingSummary),
    /// SEND's answer.
    Send(SendReport),
    /// One notification taken by RECV.
    Notification(Notification),
    /// The end of `recv --follow` / `recv --count`.
    RecvSummary(RecvSummary),
    /// One `smoke` step.
    SmokeStep(SmokeStep),
    /// The end of `smoke`.
    SmokeSummary(SmokeSummary),
    /// One `bench` measurement.
    Bench(BenchRow),
    /// The error that ends the command (JSON only; the text goes to stderr either way).
    Error(ErrorReport),
    /// `script`: the line whose records follow.
    ScriptLine {
        /// 1-based line number in the script.
        line: usize,
        /// The command as read (words joined by spaces).
        command: String,
    },
}

/// One PING: the host's answer, or why there was none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// 1, 2, ...
    pub seq: u32,
    /// The driver's output, or the error of this attempt.
    pub outcome: Result<PingOut, ErrorReport>,
}

impl PingReply {
    /// The host's status inside the answer (`None` when there was no answer).
    pub fn host_status(&self) -> Option<NtStatus> {
        self.outcome
            .as_ref()
            .ok()
            .map(|out| NtStatus(out.host_status.get()))
    }

    /// Whether the host answered with a success status.
    pub fn ok(&self) -> bool {
        self.host_status().is_some_and(NtStatus::is_success)
    }
}

/// An error as a record: the `error` record that ends a failed command's JSON, and the
/// failure of one PING.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    /// What kind of error (`usage`, `io`, `device`, `status`, `host_status`, `timeout`, `abi`,
    /// `bad_output`, `failed`, `interrupted`).
    pub kind: &'static str,
    /// The NTSTATUS it comes down to, when there is one (a timeout is `STATUS_IO_TIMEOUT`).
    pub status: Option<NtStatus>,
    /// The exit code vmbctl ends with for it.
    pub exit_code: u8,
    /// The one-line message (the same as on stderr).
    pub message: String,
}

impl From<&crate::error::Error> for ErrorReport {
    fn from(e: &crate::error::Error) -> Self {
        use crate::error::Error as E;
        let (kind, status) = match e {
            E::Usage(_) => ("usage", None),
            E::Io { .. } => ("io", None),
            E::Device(_) => ("device", None),
            E::Status { status, .. } => ("status", Some(*status)),
            E::HostStatus { status, .. } => ("host_status", Some(*status)),
            E::Timeout { .. } => ("timeout", Some(NtStatus::STATUS_IO_TIMEOUT)),
            E::Abi { .. } => ("abi", Some(NtStatus::STATUS_REVISION_MISMATCH)),
            E::BadOutput { .. } => ("bad_output", None),
            E::Failed { .. } => ("failed", None),
            E::Interrupted { .. } => ("interrupted", Some(NtStatus::STATUS_CANCELLED)),
        };
        Self {
            kind,
            status,
            exit_code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

/// Round-trip statistics over the successful PINGs (driver-measured, send to completion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttSummary {
    /// Shortest.
    pub min: Duration,
    /// Median (nearest rank).
    pub median: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

impl RttSummary {
    /// The summary of `rtts` (in any order), `None` when empty.
    pub fn of(rtts: &[Duration]) -> Option<Self> {
        let mut sorted = rtts.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| -> Duration {
            // Nearest-rank percentile: the smallest value with at least p of the data at or
            // below it.
            let n = sorted.len();
            let k = ((p * n as f64).ceil() as usize).clamp(1, n);
            sorted.get(k - 1).copied().unwrap_or_default()
        };
        Some(Self {
            min: *sorted.first()?,
            median: rank(0.5),
            p99: rank(0.99),
            max: *sorted.last()?,
        })
    }
}

/// The end of `ping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingSummary {
    /// PING IOCTLs issued.
    pub sent: u32,
    /// Answered by the host with a success status.
    pub ok: u32,
    /// Failed (IOCTL failure, timeout, or the host's failure status).
    pub failed: u32,
    /// Over the successful ones.
    pub rtt: Option<RttSummary>,
}

impl PingSummary {
    /// The share of PINGs that failed, in percent (0 when none was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.failed) * 100.0 / f64::from(self.sent)
        }
    }
}

/// SEND's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReport {
    /// Payload bytes sent.
    pub bytes: usize,
    /// The driver's output.
    pub out: SendOut,
}

impl SendReport {
    /// The host's status inside the answer.
    pub fn host_status(&self) -> NtStatus {
        NtStatus(self.out.host_status.get())
    }
}

/// The end of a multi-notification `recv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvSummary {
    /// Notifications taken.
    pub received: u64,
    /// Notifications the driver dropped (queue full) before those, summed.
    pub dropped: u64,
    /// Notifications the simulated host sent (`--notify-rate`), if it sent any.
    pub host_sent: Option<u64>,
}

/// A smoke step's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The check held.
    Pass,
    /// It did not.
    Fail,
    /// It could not be checked here (e.g. a real host sent no notification).
    Skip,
}

impl Verdict {
    /// `pass`, `fail`, `skip`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One `smoke` step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmokeStep {
    /// 1, 2, ...
    pub number: usize,
    /// How many steps there are.
    pub of: usize,
    /// Short name (`info`, `ping`, ...).
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was seen, or what went wrong.
    pub detail: String,
}

/// The end of `smoke`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmokeSummary {
    /// Steps that passed.
    pub passed: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps skipped.
    pub skipped: usize,
}

/// A `bench` direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// SEND IOCTLs: the driver sends to the host.
    GuestToHost,
    /// ECHO packets: the host sends to the driver, which answers each.
    HostToGuest,
}

impl Direction {
    /// `guest->host`, `host->guest`.
    pub fn arrow(self) -> &'static str {
        match self {
            Self::GuestToHost => "guest->host",
            Self::HostToGuest => "host->guest",
        }
    }

    /// `guest_to_host`, `host_to_guest`.
    pub fn key(self) -> &'static str {
        match self {
            Self::GuestToHost => "guest_to_host",
            Self::HostToGuest => "host_to_guest",
        }
    }
}

/// One `bench` measurement: one direction, one payload size.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// Which way.
    pub direction: Direction,
    /// Payload bytes per packet.
    pub payload_size: usize,
    /// Packets that made the round trip correctly.
    pub packets: u64,
    /// Packets answered with a failure or a wrong payload.
    pub errors: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// Packets per second in each tenth of the run (the spread, as hyperfine shows it);
    /// empty for a run too short to slice.
    pub slices: Vec<f64>,
}

/// Packets counted per tenth of a run, for [`BenchRow::slices`].
#[derive(Debug)]
pub struct Slices {
    duration: Duration,
    counts: [u64; Self::N],
}

impl Slices {
    /// How many.
    pub const N: usize = 10;

    /// Slices of a run of `duration`.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            counts: [0; Self::N],
        }
    }

    /// Counts `n` packets finished `elapsed` into the run.
    pub fn count(&mut self, elapsed: Duration, n: u64) {
        let at = elapsed.as_secs_f64() / self.duration.as_secs_f64().max(f64::MIN_POSITIVE);
        let i = ((at * Self::N as f64) as usize).min(Self::N - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
    }

    /// Packets per second in each slice.
    pub fn rates(&self) -> Vec<f64> {
        let each = self.duration.as_secs_f64() / Self::N as f64;
        if each <= 0.0 {
            return Vec::new();
        }
        self.counts.iter().map(|&c| c as f64 / each).collect()
    }
}

impl BenchRow {
    /// The slowest and fastest tenth, in packets per second.
    pub fn spread(&self) -> Option<(f64, f64)> {
        let min = self.slices.iter().copied().reduce(f64::min)?;
        let max = self.slices.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    /// Packets per second.
    pub fn packets_per_sec(&self) -> f64 {
        per_sec(self.packets, self.elapsed)
    }

    /// Payload bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        per_sec(self.payload_bytes(), self.elapsed)
    }

    /// Payload bytes moved.
    pub fn payload_bytes(&self) -> u64 {
        self.packets
            .saturating_mul(u64::try_from(self.payload_size).unwrap_or(u64::MAX))
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(RttSummary::of(&[]), None);
        let one = RttSummary::of(&[us(7)]).unwrap();
        assert_eq!(
            (one.min, one.median, one.p99, one.max),
            (us(7), us(7), us(7), us(7))
        );
        let four = RttSummary::of(&[us(40), us(10), us(30), us(20)]).unwrap();
        assert_eq!(four.min, us(10));
        assert_eq!(four.median, us(20));
        assert_eq!(four.p99, us(40));
        assert_eq!(four.max, us(40));
        let hundred: Vec<_> = (1..=100).rev().map(us).collect();
        let s = RttSummary::of(&hundred).unwrap();
        assert_eq!(s.median, us(50));
        assert_eq!(s.p99, us(99));
        assert_eq!(s.max, us(100));
    }

    #[test]
    fn bench_rates() {
        let row = BenchRow {
            direction: Direction::GuestToHost,
            payload_size: 1024,
            packets: 500,
            errors: 0,
            elapsed: Duration::from_millis(500),
            slices: Vec::new(),
        };
        assert!((row.packets_per_sec() - 1000.0).abs() < 1e-9);
        assert!((row.bytes_per_sec() - 1_024_000.0).abs() < 1e-6);
        assert_eq!(row.spread(), None);
        let zero = BenchRow {
            elapsed: Duration::ZERO,
            ..row
        };
        assert!(zero.packets_per_sec().abs() < f64::EPSILON);
    }

    #[test]
    fn slices_give_the_spread() {
        let mut s = Slices::new(Duration::from_secs(1));
        s.count(Duration::from_millis(50), 10); // first tenth: 100/s
        s.count(Duration::from_millis(950), 30); // last tenth: 300/s
        s.count(Duration::from_secs(5), 1); // late: counted in the last tenth
        let rates = s.rates();
        assert_eq!(rates.len(), Slices::N);
        assert!((rates[0] - 100.0).abs() < 1e-6);
        assert!((rates[9] - 310.0).abs() < 1e-6);
        let row = BenchRow {
            direction: Direction::HostToGuest,
            payload_size: 0,
            packets: 41,
            errors: 0,
            elapsed: Duration::from_secs(1),
            slices: rates,
        };
        assert_eq!(row.spread(), Some((0.0, 310.0)));
    }
}
