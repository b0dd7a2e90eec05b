//! The JSON Lines printer: one `{"type": .., "data": {..}}` object per line.
//!
//! | `type` | from | `data` |
//! |---|---|---|
//! | `backend` | every command, first | `schema` ([`SCHEMA_VERSION`]), `kind` (`device` / `simulation`), `path` or the simulated host's settings |
//! | `info` | `info`, `smoke` | the `InfoOut` fields; versions as `"1.0"` (null for none) with the raw value in `*_value`; `state_reason` |
//! | `stats` | `stats`, `smoke` | `counters` (the `StatsOut` scalars, in layout order), `malformed_by_reason` |
//! | `stats_reset` | `reset-stats` | `{}` |
//! | `ping` | `ping`, one per attempt | `seq`, `ok`, and `nonce`, `round_trip_ns`, `host_status` when the host answered, or `error` (as in `error`) when it did not |
//! | `ping_summary` | `ping` | `sent`, `ok`, `failed`, `loss_percent`, `rtt_ns` (`min`, `median`, `p99`, `max`) or null |
//! | `send` | `send` | `bytes`, `host_status` |
//! | `notification` | `recv` | `sequence`, `dropped_since_last`, `payload_len`, `payload` (`{"text": ..}` or `{"hex": ..}`) |
//! | `recv_summary` | `recv --follow` / `--count` | `received`, `dropped`, `host_sent` |
//! | `smoke_step` | `smoke` | `number`, `of`, `name`, `verdict` (`pass` / `fail` / `skip`), `detail` |
//! | `smoke_summary` | `smoke` | `passed`, `failed`, `skipped`, `ok` |
//! | `bench` | `bench` | `direction`, `payload_size`, `packets`, `errors`, `seconds`, `packets_per_sec`, `bytes_per_sec`, `packets_per_sec_slices` (each tenth of the run; empty if cut short) |
//! | `script_line` | `script`, before each line's records | `line`, `command` |
//! | `error` | a command that fails, last (in `script --keep-going`, after each failing line) | `kind`, `status` (a status or null), `exit_code`, `message` (the text also on stderr) |
//!
//! A status is `{"name": "STATUS_SUCCESS", "code": "0x00000000", "value": 0}` (`name` null when
//! vmbctl does not know it). New types may be added; a consumer should skip unknown ones.

use std::io::{self, Write};

use ntstatus::NtStatus;
use serde::Serialize;
use serde::ser::SerializeMap;
use vmbmsg_proto::ioctl::{InfoOut, StatsOut};
use vmbmsg_proto::wire::MalformedReason;

use super::{Payload, Printer, hex};
use crate::device::BackendInfo;
use crate::ops::Notification;
use crate::report::{
    BenchRow, ErrorReport, PingSummary, Record, RecvSummary, SmokeStep, SmokeSummary,
};

/// The version of this output's format, in the first record (`backend`'s `schema`). 2: `ping`
/// records for failed attempts (`ok`, `error`), `error` records, `loss_percent`, versions as
/// `"1.0"` text beside their `_value`, `state_reason`. A consumer should check it, and skip
/// record types and fields it does not know.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct Versioned<T> {
    schema: u32,
    #[serde(flatten)]
    backend: T,
}

/// Writes records as JSON Lines.
#[derive(Debug)]
pub struct Json<W> {
    out: W,
}

impl<W: Write> Json<W> {
    /// A printer writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line<T: Serialize>(&mut self, kind: &str, data: T) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a, T> {
            #[serde(rename = "type")]
            kind: &'a str,
            data: T,
        }
        serde_json::to_writer(&mut self.out, &Line { kind, data }).map_err(io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// An NTSTATUS as JSON.
#[derive(Serialize)]
struct Status {
    name: Option<&'static str>,
    code: String,
    value: i32,
}

impl From<NtStatus> for Status {
    fn from(s: NtStatus) -> Self {
        Self {
            name: s.name(),
            code: format!("{:#010X}", s.as_u32()).replacen("0X", "0x", 1),
            value: s.0,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BackendView<'a> {
    Device {
        path: &'a str,
    },
    Simulation {
        host_behavior: &'a str,
        negotiation: &'a str,
        send_status: Status,
    },
}

impl<'a> From<&'a BackendInfo> for BackendView<'a> {
    fn from(b: &'a BackendInfo) -> Self {
        match b {
            BackendInfo::Device { path } => Self::Device { path },
            BackendInfo::Simulation {
                host_behavior,
                negotiation,
                send_status,
            } => Self::Simulation {
                host_behavior,
                negotiation,
                send_status: (*send_status).into(),
            },
        }
    }
}

/// `"1.0"` for `0x0001_0000`; `None` for 0 (no version).
fn version_text(v: u32) -> Option<String> {
    (v != 0).then(|| {
        format!(
            "{}.{}",
            vmbmsg_proto::wire::version_major(v),
            vmbmsg_proto::wire::version_minor(v)
        )
    })
}

#[derive(Serialize)]
struct InfoView {
    abi_version: u32,
    channel_state: String,
    channel_state_value: u32,
    state_reason: String,
    state_reason_value: u16,
    driver_version: [u16; 3],
    protocol_version: Option<String>,
    protocol_version_value: u32,
    protocol_min: Option<String>,
    protocol_min_value: u32,
    protocol_max: Option<String>,
    protocol_max_value: u32,
    max_payload: u32,
    notify_queue_depth: u32,
    max_parked_recv: u32,
}

impl From<&InfoOut> for InfoView {
    fn from(i: &InfoOut) -> Self {
        Self {
            abi_version: i.abi_version.get(),
            channel_state: i.channel_state.to_string(),
            channel_state_value: i.channel_state.get(),
            driver_version: [
                i.driver_major.get(),
                i.driver_minor.get(),
                i.driver_patch.get(),
            ],
            state_reason: i.state_reason.to_string(),
            state_reason_value: i.state_reason.get(),
            protocol_version: version_text(i.protocol_version.get()),
            protocol_version_value: i.protocol_version.get(),
            protocol_min: version_text(i.protocol_min.get()),
            protocol_min_value: i.protocol_min.get(),
            protocol_max: version_text(i.protocol_max.get()),
            protocol_max_value: i.protocol_max.get(),
            max_payload: i.max_payload.get(),
            notify_queue_depth: i.notify_queue_depth.get(),
            max_parked_recv: i.max_parked_recv.get(),
        }
    }
}

/// The scalar counters, in layout order.
struct Counters<'a>(&'a StatsOut);

impl Serialize for Counters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(StatsOut::COUNTER_NAMES.len()))?;
        for (name, value) in self.0.counters() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

/// Every named reason, in value order.
struct Malformed<'a>(&'a StatsOut);

impl Serialize for Malformed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(MalformedReason::COUNT))?;
        for r in MalformedReason::ALL {
            map.serialize_entry(r.name(), &self.0.malformed(r))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct StatsView<'a> {
    counters: Counters<'a>,
    malformed_by_reason: Malformed<'a>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct PingView {
    seq: u32,
    ok: bool,
    nonce: Option<u64>,
    round_trip_ns: Option<u64>,
    host_status: Option<Status>,
    error: Option<ErrorView>,
}

impl From<&crate::report::PingReply> for PingView {
    fn from(p: &crate::report::PingReply) -> Self {
        let out = p.outcome.as_ref().ok();
        Self {
            seq: p.seq,
            ok: p.ok(),
            nonce: out.map(|o| o.nonce.get()),
            round_trip_ns: out.map(|o| o.round_trip_ns.get()),
            host_status: p.host_status().map(Status::from),
            error: p.outcome.as_ref().err().map(ErrorView::from),
        }
    }
}

#[derive(Serialize)]
struct ErrorView {
    kind: &'static str,
    status: Option<Status>,
    exit_code: u8,
    message: String,
}

impl From<&ErrorReport> for ErrorView {
    fn from(e: &ErrorReport) -> Self {
        Self {
            kind: e.kind,
            status: e.status.map(Status::from),
            exit_code: e.exit_code,
            message: e.message.clone(),
        }
    }
}

#[derive(Serialize)]
struct RttView {
    min: u128,
    median: u128,
    p99: u128,
    max: u128,
}

#[derive(Serialize)]
struct PingSummaryView {
    sent: u32,
    ok: u32,
    failed: u32,
    loss_percent: f64,
    rtt_ns: Option<RttView>,
}

impl From<&PingSummary> for PingSummaryView {
    fn from(s: &PingSummary) -> Self {
        Self {
            sent: s.sent,
            ok: s.ok,
            failed: s.failed,
            loss_percent: s.loss_percent(),
            rtt_ns: s.rtt.map(|r| RttView {
                min: r.min.as_nanos(),
                median: r.median.as_nanos(),
                p99: r.p99.as_nanos(),
                max: r.max.as_nanos(),
            }),
        }
    }
}

#[derive(Serialize)]
struct SendView {
    bytes: usize,
    host_status: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum PayloadView<'a> {
    Text(&'a str),
    Hex(String),
}

#[derive(Serialize)]
struct NotificationView<'a> {
    sequence: u64,
    dropped_since_last: u64,
    payload_len: u32,
    payload: PayloadView<'a>,
}

impl<'a> From<&'a Notification> for NotificationView<'a> {
    fn from(n: &'a Notification) -> Self {
        Self {
            sequence: n.header.sequence.get(),
            dropped_since_last: n.header.dropped_since_last.get(),
            payload_len: n.header.payload_len.get(),
            payload: match Payload::of(&n.payload) {
                Payload::Text(t) => PayloadView::Text(t),
                Payload::Bytes(b) => PayloadView::Hex(hex(b)),
            },
        }
    }
}

#[derive(Serialize)]
struct RecvSummaryView {
    received: u64,
    dropped: u64,
    host_sent: Option<u64>,
}

impl From<&RecvSummary> for RecvSummaryView {
    fn from(s: &RecvSummary) -> Self {
        Self {
            received: s.received,
            dropped: s.dropped,
            host_sent: s.host_sent,
        }
    }
}

#[derive(Serialize)]
struct SmokeStepView<'a> {
    number: usize,
    of: usize,
    name: &'a str,
    verdict: &'a str,
    detail: &'a str,
}

impl<'a> From<&'a SmokeStep> for SmokeStepView<'a> {
    fn from(s: &'a SmokeStep) -> Self {
        Self {
            number: s.number,
            of: s.of,
            name: s.name,
            verdict: s.verdict.name(),
            detail: &s.detail,
        }
    }
}

#[derive(Serialize)]
struct SmokeSummaryView {
    passed: usize,
    failed: usize,
    skipped: usize,
    ok: bool,
}

impl From<&SmokeSummary> for SmokeSummaryView {
    fn from(s: &SmokeSummary) -> Self {
        Self {
            passed: s.passed,
            failed: s.failed,
            skipped: s.skipped,
            ok: s.failed == 0,
        }
    }
}

#[derive(Serialize)]
struct BenchView {
    direction: &'static str,
    payload_size: usize,
    packets: u64,
    errors: u64,
    seconds: f64,
    packets_per_sec: f64,
    bytes_per_sec: f64,
    /// Packets per second in each tenth of the run.
    packets_per_sec_slices: Vec<f64>,
}

impl From<&BenchRow> for BenchView {
    fn from(r: &BenchRow) -> Self {
        Self {
            direction: r.direction.key(),
            payload_size: r.payload_size,
            packets: r.packets,
            errors: r.errors,
            seconds: r.elapsed.as_secs_f64(),
            packets_per_sec: r.packets_per_sec(),
            bytes_per_sec: r.bytes_per_sec(),
            packets_per_sec_slices: r.slices.clone(),
        }
    }
}

impl<W: Write> Printer for Json<W> {
    fn print(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Backend(b) => self.line(
                "backend",
                Versioned {
                    schema: SCHEMA_VERSION,
                    backend: BackendView::from(b),
                },
            ),
            Record::Info(i) => self.line("info", InfoView::from(i)),
            Record::Stats(s) => self.line(
                "stats",
                StatsView {
                    counters: Counters(s),
                    malformed_by_reason: Malformed(s),
                },
            ),
            Record::StatsReset => self.line("stats_reset", Empty {}),
            Record::Ping(p) => self.line("ping", PingView::from(p)),
            Record::PingSummary(s) => self.line("ping_summary", PingSummaryView::from(s)),
            Record::Send(s) => self.line(
                "send",
                SendView {
                    bytes: s.bytes,
                    host_status: s.host_status().into(),
                },
            ),
            Record::Notification(n) => self.line("notification", NotificationView::from(n)),
            Record::RecvSummary(s) => self.line("recv_summary", RecvSummaryView::from(s)),
            Record::SmokeStep(s) => self.line("smoke_step", SmokeStepView::from(s)),
            Record::SmokeSummary(s) => self.line("smoke_summary", SmokeSummaryView::from(s)),
            Record::Bench(r) => self.line("bench", BenchView::from(r)),
            Record::Error(e) => self.line("error", ErrorView::from(e)),
            Record::ScriptLine { line, command } => {
                #[derive(Serialize)]
                struct View<'a> {
                    line: usize,
                    command: &'a str,
                }
                self.line(
                    "script_line",
                    View {
                        line: *line,
                        command,
                    },
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::FromZeros;

    use super::*;

    fn lines(records: &[Record]) -> Vec<serde_json::Value> {
        let mut buf = Vec::new();
        let mut p = Json::new(&mut buf);
        for r in records {
            p.print(r).unwrap();
        }
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_line_is_a_tagged_object() {
        let mut stats = StatsOut::new_zeroed();
        stats.rx_packets = 3.into();
        stats.malformed_by_reason[MalformedReason::Truncated.index()] = 2.into();
        let out = lines(&[
            Record::Backend(BackendInfo::Device { path: "p".into() }),
            Record::Stats(Box::new(stats)),
            Record::StatsReset,
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["type"], "backend");
        assert_eq!(out[0]["data"]["kind"], "device");
        assert_eq!(out[1]["type"], "stats");
        assert_eq!(out[1]["data"]["counters"]["rx_packets"], 3);
        assert_eq!(out[1]["data"]["malformed_by_reason"]["truncated"], 2);
        assert_eq!(
            out[1]["data"]["counters"].as_object().unwrap().len(),
            StatsOut::COUNTER_NAMES.len()
        );
        assert_eq!(
            out[2],
            serde_json::json!({"type": "stats_reset", "data": {}})
        );
    }

    #[test]
    fn statuses_have_name_code_and_value() {
        let v = serde_json::to_value(Status::from(NtStatus::STATUS_CANCELLED)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "STATUS_CANCELLED", "code": "0xC0000120", "value": -1_073_741_536})
        );
        let v = serde_json::to_value(Status::from(NtStatus(0x1234))).unwrap();
        assert_eq!(v["name"], serde_json::Value::Null);
        assert_eq!(v["code"], "0x00001234");
    }
}
