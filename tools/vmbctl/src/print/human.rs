//! The human printer: aligned `key  value` tables and one line per event.

use std::io::{self, Write};
use std::time::Duration;

use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::{ABI_VERSION, ChannelState, InfoOut, StatsOut};
use vmbmsg_proto::wire::{MalformedReason, version_major, version_minor};

use super::{Payload, Printer, bytes, count, duration, hex};
use crate::device::BackendInfo;
use crate::error::state_advice;
use crate::ops::Notification;
use crate::report::{BenchRow, PingReply, PingSummary, Record, SmokeStep, Verdict};

/// Writes records for people.
#[derive(Debug)]
pub struct Human<W> {
    out: W,
    backend: Option<BackendInfo>,
    bench_header: bool,
}

impl<W: Write> Human<W> {
    /// A printer writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            backend: None,
            bench_header: false,
        }
    }
}

fn version(v: u32) -> String {
    format!("{}.{}", version_major(v), version_minor(v))
}

/// `STATUS_SUCCESS`, or the full `NAME (0x...)` for anything else.
fn short_status(s: NtStatus) -> String {
    if s == NtStatus::STATUS_SUCCESS {
        "STATUS_SUCCESS".into()
    } else {
        s.to_string()
    }
}

const KEY_WIDTH: usize = 24;

impl<W: Write> Human<W> {
    fn row(&mut self, key: &str, value: impl std::fmt::Display) -> io::Result<()> {
        writeln!(self.out, "{key:<KEY_WIDTH$}{value}")
    }

    fn info(&mut self, info: &InfoOut) -> io::Result<()> {
        match self.backend.clone() {
            Some(BackendInfo::Device { path }) => self.row("device", path)?,
            Some(BackendInfo::Simulation {
                host_behavior,
                negotiation,
                ..
            }) => self.row(
                "device",
                format!(
                    "SIMULATION (not a device): driver core in-process against kmcl-model, \
                     host behavior {host_behavior}, negotiation {negotiation}"
                ),
            )?,
            None => {}
        }
        let state = info.channel_state;
        match crate::error::reason_text(info.state_reason) {
            Some(why) => self.row("channel state", format!("{state} ({why})"))?,
            None => self.row("channel state", state)?,
        }
        let abi = info.abi_version.get();
        if abi == ABI_VERSION {
            self.row("ABI version", abi)?;
        } else {
            self.row(
                "ABI version",
                format!("{abi} (MISMATCH: this vmbctl speaks {ABI_VERSION})"),
            )?;
        }
        self.row(
            "driver version",
            format!(
                "{}.{}.{}",
                info.driver_major.get(),
                info.driver_minor.get(),
                info.driver_patch.get()
            ),
        )?;
        let negotiated = match info.protocol_version.get() {
            0 => "none".to_owned(),
            v => version(v),
        };
        self.row(
            "protocol version",
            format!(
                "{negotiated} (driver offers {}..={})",
                version(info.protocol_min.get()),
                version(info.protocol_max.get())
            ),
        )?;
        self.row("max payload", format!("{} bytes", info.max_payload.get()))?;
        self.row("notify queue depth", info.notify_queue_depth.get())?;
        self.row("max parked RECVs", info.max_parked_recv.get())?;
        if state != ChannelState::READY {
            self.row("note", state_advice(info))?;
        }
        Ok(())
    }

    fn stats(&mut self, stats: &StatsOut) -> io::Result<()> {
        for (name, value) in stats.counters() {
            self.row(name, value)?;
        }
        if let Some(avg) = stats
            .ping_rtt_sum_ns
            .get()
            .checked_div(stats.ping_rtt_count.get())
        {
            self.row(
                "ping rtt",
                format!(
                    "min {} / avg {} / max {}",
                    duration(Duration::from_nanos(stats.ping_rtt_min_ns.get())),
                    duration(Duration::from_nanos(avg)),
                    duration(Duration::from_nanos(stats.ping_rtt_max_ns.get()))
                ),
            )?;
        }
        let malformed: Vec<String> = MalformedReason::ALL
            .iter()
            .filter(|r| stats.malformed(**r) > 0)
            .map(|r| format!("{} {}", r.name(), stats.malformed(*r)))
            .collect();
        if malformed.is_empty() {
            self.row("malformed by reason", "none")
        } else {
            self.row("malformed by reason", malformed.join(", "))
        }
    }

    fn ping(&mut self, p: &PingReply) -> io::Result<()> {
        let out = match &p.outcome {
            Ok(out) => out,
            Err(e) => return writeln!(self.out, "ping {}: {}", p.seq, e.message),
        };
        let rtt = duration(Duration::from_nanos(out.round_trip_ns.get()));
        let host = ntstatus::NtStatus(out.host_status.get());
        if host.is_success() {
            writeln!(
                self.out,
                "ping {}: rtt {rtt} (nonce {})",
                p.seq,
                out.nonce.get()
            )
        } else {
            writeln!(
                self.out,
                "ping {}: host answered {host} after {rtt} (nonce {})",
                p.seq,
                out.nonce.get()
            )
        }
    }

    fn ping_summary(&mut self, s: &PingSummary) -> io::Result<()> {
        write!(
            self.out,
            "{} sent, {} ok, {} failed ({:.0}% loss)",
            s.sent,
            s.ok,
            s.failed,
            s.loss_percent()
        )?;
        if let Some(r) = s.rtt {
            write!(
                self.out,
                "; rtt min {} / median {} / p99 {} / max {}",
                duration(r.min),
                duration(r.median),
                duration(r.p99),
                duration(r.max)
            )?;
        }
        writeln!(self.out)
    }

    fn notification(&mut self, n: &Notification) -> io::Result<()> {
        let h = &n.header;
        write!(
            self.out,
            "notification {}: {} bytes",
            h.sequence.get(),
            n.payload.len()
        )?;
        match Payload::of(&n.payload) {
            Payload::Text(t) => write!(self.out, " \"{}\"", t.escape_debug())?,
            Payload::Bytes(b) => write!(self.out, " hex {}", hex(b))?,
        }
        let dropped = h.dropped_since_last.get();
        if dropped > 0 {
            write!(
                self.out,
                " ({dropped} dropped before it: the driver's queue was full)"
            )?;
        }
        writeln!(self.out)
    }

    fn smoke_step(&mut self, s: &SmokeStep) -> io::Result<()> {
        let tag = match s.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        };
        writeln!(
            self.out,
            "[{tag}] {:>w$}/{} {:<16}{}",
            s.number,
            s.of,
            s.name,
            s.detail,
            w = s.of.to_string().len()
        )
    }

    fn bench(&mut self, r: &BenchRow) -> io::Result<()> {
        if !self.bench_header {
            self.bench_header = true;
            writeln!(
                self.out,
                "{:<11} {:>7} {:>9} {:>16} {:>12} {:>6} {:>7}",
                "direction", "payload", "packets", "packets/s", "bytes/s", "errors", "seconds"
            )?;
        }
        // The spread over the run's tenths, as ± half the slowest-to-fastest range.
        let rate = match r.spread() {
            Some((lo, hi)) if r.packets_per_sec() > 0.0 => format!(
                "{}/s ±{:.0}%",
                count(r.packets_per_sec()),
                (hi - lo) / 2.0 / r.packets_per_sec() * 100.0
            ),
            _ => format!("{}/s", count(r.packets_per_sec())),
        };
        writeln!(
            self.out,
            "{:<11} {:>7} {:>9} {:>16} {:>12} {:>6} {:>7.2}",
            r.direction.arrow(),
            r.payload_size,
            r.packets,
            rate,
            format!("{}/s", bytes(r.bytes_per_sec())),
            r.errors,
            r.elapsed.as_secs_f64()
        )
    }
}

impl<W: Write> Printer for Human<W> {
    fn print(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Backend(b) => self.backend = Some(b.clone()),
            Record::Info(i) => self.info(i)?,
            Record::Stats(s) => self.stats(s)?,
            Record::StatsReset => writeln!(self.out, "statistics reset")?,
            Record::Ping(p) => self.ping(p)?,
            Record::PingSummary(s) => self.ping_summary(s)?,
            Record::Send(s) => writeln!(
                self.out,
                "sent {} bytes: host answered {}",
                s.bytes,
                short_status(s.host_status())
            )?,
            Record::Notification(n) => self.notification(n)?,
            Record::RecvSummary(s) => {
                write!(
                    self.out,
                    "received {} notification(s), {} dropped by the driver",
                    s.received, s.dropped
                )?;
                if let Some(sent) = s.host_sent {
                    write!(self.out, "; the simulated host sent {sent}")?;
                }
                writeln!(self.out)?;
            }
            Record::SmokeStep(s) => self.smoke_step(s)?,
            Record::SmokeSummary(s) => writeln!(
                self.out,
                "smoke: {} passed, {} failed, {} skipped: {}",
                s.passed,
                s.failed,
                s.skipped,
                if s.failed == 0 { "OK" } else { "FAILED" }
            )?,
            Record::Bench(r) => self.bench(r)?,
            // Text mode: the error goes to stderr only (`vmbctl: error: ...`).
            Record::Error(_) => {}
            Record::ScriptLine { line, command } => {
                writeln!(self.out, "> {command}    (line {line})")?;
            }
        }
        self.out.flush()
    }
}
