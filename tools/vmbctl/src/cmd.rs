//! The subcommands: each produces typed [`Record`]s for the printer and returns the error
//! that decides the exit code.

mod bench;
mod smoke;

use std::ffi::OsString;
use std::io::Read;
use std::time::Duration;

use vmbmsg_proto::ioctl::IoctlCode;
use vmbmsg_proto::wire::MAX_PAYLOAD;

use crate::cli::{Command, PingArgs, RecvArgs, SendArgs};
use crate::device::Device;
use crate::error::Error;
use crate::ops;
use crate::print::Printer;
use crate::report::{PingReply, PingSummary, Record, RecvSummary, RttSummary, SendReport};

pub use bench::bench;
pub use smoke::smoke;

/// What a command runs with.
pub struct Ctx<'a> {
    /// The backend.
    pub dev: &'a dyn Device,
    /// The printer.
    pub out: &'a mut dyn Printer,
    /// `--json` (no progress bar, no notes that only make sense on a terminal).
    pub json: bool,
}

impl Ctx<'_> {
    /// Prints one record.
    ///
    /// # Errors
    /// [`Error::Io`] when the output cannot be written.
    pub fn emit(&mut self, record: Record) -> Result<(), Error> {
        self.out.print(&record).map_err(Error::output)
    }
}

/// A note on stderr (never on stdout, which carries the results).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "vmbctl: note: {text}");
}

/// Runs `command`.
///
/// # Errors
/// The command's failure.
pub fn run(ctx: &mut Ctx<'_>, command: &Command) -> Result<(), Error> {
    match command {
        // `info` prints what the driver says before judging its ABI version; `smoke` checks
        // it as a step.
        Command::Info => info(ctx),
        Command::Smoke(args) => smoke(ctx, args),
        other => {
            ops::check_abi(&ops::info_unchecked(ctx.dev)?)?;
            match other {
                Command::Stats => {
                    let stats = ops::stats(ctx.dev)?;
                    ctx.emit(Record::Stats(Box::new(stats)))
                }
                Command::ResetStats => {
                    ops::reset_stats(ctx.dev)?;
                    ctx.emit(Record::StatsReset)
                }
                Command::Ping(args) => ping(ctx, args),
                Command::Send(args) => send(ctx, args),
                Command::Recv(args) => recv(ctx, args),
                Command::Bench(args) => bench(ctx, args),
                Command::Info | Command::Smoke(_) => Ok(()),
            }
        }
    }
}

fn info(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let info = ops::info_unchecked(ctx.dev)?;
    ctx.emit(Record::Info(info))?;
    ops::check_abi(&info)
}

fn ping(ctx: &mut Ctx<'_>, args: &PingArgs) -> Result<(), Error> {
    let mut summary = PingSummary {
        sent: 0,
        ok: 0,
        failed: 0,
        rtt: None,
    };
    let mut rtts = Vec::new();
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() {
            std::thread::sleep(args.interval);
        }
        summary.sent += 1;
        match ops::ping(ctx.dev, args.timeout) {
            Ok(out) => {
                let reply = PingReply { seq, out };
                if reply.host_status().is_success() {
                    summary.ok += 1;
                    rtts.push(Duration::from_nanos(out.round_trip_ns.get()));
                } else {
                    summary.failed += 1;
                }
                ctx.emit(Record::Ping(reply))?;
            }
            Err(e) => {
                // The channel or the host is in no state to answer: stop here, say how far
                // it got, then why.
                summary.failed += 1;
                summary.rtt = RttSummary::of(&rtts);
                ctx.emit(Record::PingSummary(summary))?;
                return Err(e);
            }
        }
    }
    summary.rtt = RttSummary::of(&rtts);
    ctx.emit(Record::PingSummary(summary))?;
    if summary.failed > 0 {
        return Err(Error::Failed {
            summary: format!(
                "{} of {} PINGs failed: the host answered with a failure status",
                summary.failed, summary.sent
            ),
        });
    }
    Ok(())
}

/// The bytes of `send`'s argument: text, `@FILE`, `@-` (stdin), `@@text`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Usage`] for text that is not Unicode
/// or a payload over the maximum.
pub fn message_bytes(arg: &OsString) -> Result<Vec<u8>, Error> {
    let Some(text) = arg.to_str() else {
        return Err(Error::Usage(
            "the message (or file name) is not valid Unicode: pass the bytes on stdin with @-"
                .into(),
        ));
    };
    let bytes = if let Some(literal) = text.strip_prefix("@@") {
        format!("@{literal}").into_bytes()
    } else if text == "@-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_PAYLOAD as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|source| Error::Io {
                context: "reading the message from stdin".into(),
                source,
            })?;
        buf
    } else if let Some(path) = text.strip_prefix('@') {
        std::fs::read(path).map_err(|source| Error::Io {
            context: format!("reading the message from {path}"),
            source,
        })?
    } else {
        text.as_bytes().to_vec()
    };
    if bytes.len() > MAX_PAYLOAD {
        return Err(Error::Usage(format!(
            "the message is {} bytes; a SEND carries at most {MAX_PAYLOAD}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn send(ctx: &mut Ctx<'_>, args: &SendArgs) -> Result<(), Error> {
    let payload = message_bytes(&args.message)?;
    let out = ops::send(ctx.dev, &payload, args.timeout)?;
    let report = SendReport {
        bytes: payload.len(),
        out,
    };
    ctx.emit(Record::Send(report))?;
    let host = report.host_status();
    if host.is_success() {
        Ok(())
    } else {
        Err(Error::HostStatus {
            op: IoctlCode::Send,
            status: host,
        })
    }
}

fn recv(ctx: &mut Ctx<'_>, args: &RecvArgs) -> Result<(), Error> {
    let notifier = match (args.notify_rate, ctx.dev.host()) {
        (Some(rate), Some(host)) => Some(host.start_notifier(rate)),
        (Some(_), None) => {
            return Err(Error::Usage(
                "--notify-rate needs the simulated host (--sim): a real host sends \
                 notifications on its own"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            note(
                "the simulated host sends no notifications unless asked: add --notify-rate \
                 <per second>",
            );
            None
        }
        (None, None) => None,
    };
    let limit = args.count.or(if args.follow { None } else { Some(1) });
    let mut summary = RecvSummary {
        received: 0,
        dropped: 0,
        host_sent: None,
    };
    let result = loop {
        if limit.is_some_and(|n| summary.received >= n) {
            break Ok(());
        }
        match ops::recv(ctx.dev, args.timeout) {
            Ok(n) => {
                summary.received += 1;
                summary.dropped += n.header.dropped_since_last.get();
                ctx.emit(Record::Notification(n))?;
            }
            // `--follow --timeout`: the stream went quiet, which ends it.
            Err(Error::Timeout { .. }) if args.follow && summary.received > 0 => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    summary.host_sent = notifier.map(|n| n.stop());
    if limit != Some(1) {
        ctx.emit(Record::RecvSummary(summary))?;
    }
    result
}
