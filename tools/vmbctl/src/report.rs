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
}

/// One PING answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// 1, 2, ...
    pub seq: u32,
    /// The driver's output.
    pub out: PingOut,
}

impl PingReply {
    /// The host's status inside the answer.
    pub fn host_status(&self) -> NtStatus {
        NtStatus(self.out.host_status.get())
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
#[derive(Clone, Copy, Debug, PartialEq)]
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
}

impl BenchRow {
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
        };
        assert!((row.packets_per_sec() - 1000.0).abs() < 1e-9);
        assert!((row.bytes_per_sec() - 1_024_000.0).abs() < 1e-6);
        let zero = BenchRow {
            elapsed: Duration::ZERO,
            ..row
        };
        assert!(zero.packets_per_sec().abs() < f64::EPSILON);
    }
}
