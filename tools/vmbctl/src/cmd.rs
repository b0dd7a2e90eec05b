//! The subcommands: each produces typed [`Record`]s for the printer and returns the error
//! that decides the exit code.

mod bench;
mod smoke;

use std::ffi::OsString;
use std::io::Read;
use std::time::Duration;

use vmbmsg_proto::ioctl::IoctlCode;
use vmbmsg_proto::ioctl::SEND_PAYLOAD_MAX;

use crate::cli::{Command, PingArgs, RecvArgs, ScriptArgs, ScriptLine, SendArgs, split_words};
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
    /// `--quiet`: no notes, no progress bar.
    pub quiet: bool,
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

/// A note on stderr (never on stdout, which carries the results), unless `--quiet`.
pub fn note(ctx: &Ctx<'_>, text: &str) {
    note_unless(ctx.quiet, text);
}

/// [`note`] where there is no [`Ctx`] yet (opening the device).
pub fn note_unless(quiet: bool, text: &str) {
    use std::io::Write;
    if !quiet {
        let _ = writeln!(std::io::stderr(), "vmbctl: note: {text}");
    }
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
        Command::Script(args) => script(ctx, args),
        Command::Completions(_) => Err(Error::Usage(
            "`completions` prints a shell script; it does not run against a device".into(),
        )),
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
                Command::Info
                | Command::Smoke(_)
                | Command::Script(_)
                | Command::Completions(_) => Ok(()),
            }
        }
    }
}

/// `info`: prints what the driver says, then judges it: exit 1 for another ABI, or a channel
/// that is not READY (with why, and what to do, on stderr), so that scripts can wait for a
/// usable device with `vmbctl info`.
fn info(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let info = ops::info_unchecked(ctx.dev)?;
    ctx.emit(Record::Info(info))?;
    ops::check_abi(&info)?;
    if info.channel_state == vmbmsg_proto::ioctl::ChannelState::READY {
        Ok(())
    } else {
        let state = info.channel_state;
        Err(Error::Failed {
            summary: match crate::error::reason_text(info.state_reason) {
                Some(why) => format!("the channel is {state}, not READY: {why}"),
                None => format!("the channel is {state}, not READY"),
            },
        })
    }
}

/// `ping`: like ping(8), every attempt is reported and the run goes on after a failure (a
/// timeout, a failure status, a channel that is not ready) to count the loss; only an I/O
/// error (the device is gone) or Ctrl-C ends it early. The summary follows in every case.
fn ping(ctx: &mut Ctx<'_>, args: &PingArgs) -> Result<(), Error> {
    let mut summary = PingSummary {
        sent: 0,
        ok: 0,
        failed: 0,
        rtt: None,
    };
    let mut rtts = Vec::new();
    let mut first_error: Option<Error> = None;
    let mut stop: Option<Error> = None;
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() && crate::interrupt::sleep(args.interval) {
            stop = Some(Error::Interrupted {
                op: None,
                cancel: None,
            });
            break;
        }
        if crate::interrupt::interrupted() {
            stop = Some(Error::Interrupted {
                op: None,
                cancel: None,
            });
            break;
        }
        summary.sent += 1;
        let reply = match ops::ping(ctx.dev, args.timeout) {
            Ok(out) => PingReply {
                seq,
                outcome: Ok(out),
            },
            Err(e @ (Error::Interrupted { .. } | Error::Device(_) | Error::Io { .. })) => {
                // Ctrl-C, or the device is gone: no point in the next attempts.
                summary.failed += 1;
                ctx.emit(Record::Ping(PingReply {
                    seq,
                    outcome: Err((&e).into()),
                }))?;
                stop = Some(e);
                break;
            }
            Err(e) => {
                let reply = PingReply {
                    seq,
                    outcome: Err((&e).into()),
                };
                first_error.get_or_insert(e);
                reply
            }
        };
        if reply.ok() {
            summary.ok += 1;
            if let Ok(out) = &reply.outcome {
                rtts.push(Duration::from_nanos(out.round_trip_ns.get()));
            }
        } else {
            summary.failed += 1;
        }
        ctx.emit(Record::Ping(reply))?;
    }
    summary.rtt = RttSummary::of(&rtts);
    ctx.emit(Record::PingSummary(summary))?;
    if let Some(e) = stop {
        return Err(e);
    }
    if summary.failed == 0 {
        return Ok(());
    }
    // One failure of one PING: its own error says best what happened.
    match first_error {
        Some(e) if summary.sent == 1 => Err(e),
        _ => Err(Error::Failed {
            summary: format!(
                "{} of {} PINGs failed ({:.0}% loss){}",
                summary.failed,
                summary.sent,
                summary.loss_percent(),
                first_error
                    .map(|e| format!("; the first: {e}"))
                    .unwrap_or_else(|| { ": the host answered with a failure status".to_owned() })
            ),
        }),
    }
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
    if text == "@" {
        return Err(Error::Usage(
            "`@` needs what follows it: @FILE for a file's bytes, @- for stdin, @@text for \
             text that starts with @"
                .into(),
        ));
    }
    let bytes = if let Some(literal) = text.strip_prefix("@@") {
        format!("@{literal}").into_bytes()
    } else if text == "@-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(SEND_PAYLOAD_MAX as u64 + 1)
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
    if bytes.len() > SEND_PAYLOAD_MAX {
        return Err(Error::Usage(format!(
            "the message is {} bytes; a SEND carries at most {SEND_PAYLOAD_MAX}",
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
                ctx,
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
        if crate::interrupt::interrupted() {
            break Err(Error::Interrupted {
                op: None,
                cancel: None,
            });
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

/// `script`: the commands of a file (or stdin), one per line, on this one device. Each line's
/// records are preceded by a `script_line` record; a failing line's error is printed (stderr,
/// and an `error` record in JSON) and ends the script unless `--keep-going`. The result is the
/// first failure.
fn script(ctx: &mut Ctx<'_>, args: &ScriptArgs) -> Result<(), Error> {
    let name = args.file.to_string_lossy().into_owned();
    let text = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::Io {
                context: "reading the script from stdin".into(),
                source,
            })?;
        text
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| Error::Io {
            context: format!("reading the script {name}"),
            source,
        })?
    };
    // Every line is checked before the first one runs: a typo on line 9 should not leave a
    // device half-way through the script.
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let words =
            split_words(line).map_err(|why| Error::Usage(format!("{name}:{number}: {why}")))?;
        if words.is_empty() {
            continue;
        }
        let parsed = <ScriptLine as clap::Parser>::try_parse_from(&words).map_err(|e| {
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            Error::Usage(format!("{name}:{number}: {first}"))
        })?;
        if matches!(parsed.command, Command::Script(_) | Command::Completions(_)) {
            return Err(Error::Usage(format!(
                "{name}:{number}: `{}` cannot run inside a script",
                words.first().map_or("", String::as_str)
            )));
        }
        lines.push((number, words.join(" "), parsed.command));
    }
    let mut first_failure = None;
    for (number, text, command) in lines {
        if crate::interrupt::interrupted() {
            return Err(Error::Interrupted {
                op: None,
                cancel: None,
            });
        }
        ctx.emit(Record::ScriptLine {
            line: number,
            command: text,
        })?;
        if let Err(e) = run(ctx, &command) {
            if matches!(e, Error::Interrupted { .. }) || e.is_broken_pipe() || !args.keep_going {
                return Err(e);
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "vmbctl: error: {name}:{number}: {e}");
            ctx.emit(Record::Error((&e).into()))?;
            first_failure.get_or_insert(e);
        }
    }
    first_failure.map_or(Ok(()), Err)
}
