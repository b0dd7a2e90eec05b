//! `bench`: packets/s and bytes/s each way, per payload size.
//!
//! guest→host is SEND IOCTLs through the driver, `--depth` in flight, each checked for the
//! host's success status. host→guest is ECHO packets from the simulated host, `--depth` in
//! flight, each answer checked for the same payload; a real host decides what it sends, so on
//! a device only guest→host runs.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::{IoctlCode, SendOut, read_output};

use super::{Ctx, note};
use crate::cli::{BenchArgs, BenchDirection};
use crate::device::{CancelOutcome, Device, HostPeer, PendingIoctl};
use crate::error::Error;
use crate::interrupt::interrupted;
use crate::ops;
use crate::report::{BenchRow, Direction, Record, Slices};

/// Runs shorter than this in total get no progress bar.
const PROGRESS_FROM: Duration = Duration::from_secs(2);

/// A recognisable payload of `size` bytes.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Runs the benchmark.
///
/// # Errors
/// [`Error::Usage`] (host→guest asked for on a device), an IOCTL failure or timeout, a host
/// failure.
pub fn bench(ctx: &mut Ctx<'_>, args: &BenchArgs) -> Result<(), Error> {
    let dev = ctx.dev;
    let host = dev.host();
    let directions: Vec<Direction> = match (args.direction, host.is_some()) {
        (BenchDirection::HostToGuest, false) => {
            return Err(Error::Usage(
                "--direction host-to-guest needs the simulated host (--sim): a real host \
                 decides what it sends"
                    .into(),
            ));
        }
        (BenchDirection::Both, false) => {
            note(
                ctx,
                "host->guest needs the simulated host; measuring guest->host only",
            );
            vec![Direction::GuestToHost]
        }
        (BenchDirection::Both, true) => vec![Direction::GuestToHost, Direction::HostToGuest],
        (BenchDirection::GuestToHost, _) => vec![Direction::GuestToHost],
        (BenchDirection::HostToGuest, true) => vec![Direction::HostToGuest],
    };
    let runs: Vec<(usize, Direction)> = args
        .sizes
        .iter()
        .flat_map(|&size| directions.iter().map(move |&d| (size, d)))
        .collect();
    let total = args.duration * u32::try_from(runs.len()).unwrap_or(u32::MAX);
    let progress = progress_bar(ctx.json || ctx.quiet, total, runs.len());
    let depth = usize::try_from(args.depth).unwrap_or(1);
    let (mut good, mut bad) = (0u64, 0u64);
    for (index, &(size, direction)) in runs.iter().enumerate() {
        if crate::interrupt::interrupted() {
            progress.finish_and_clear();
            return Err(Error::Interrupted {
                op: None,
                cancel: None,
            });
        }
        progress.set_message(format!("{} {size} B", direction.arrow()));
        let base = args.duration * u32::try_from(index).unwrap_or(u32::MAX);
        let mut tick = |elapsed: Duration| {
            let at = base + elapsed.min(args.duration);
            progress.set_position(u64::try_from(at.as_millis()).unwrap_or(u64::MAX));
        };
        let row = match (direction, host) {
            (Direction::HostToGuest, Some(host)) => {
                host_to_guest(host, size, args.duration, depth, &mut tick)
            }
            _ => guest_to_host(dev, size, args, depth, &mut tick),
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                progress.finish_and_clear();
                return Err(e);
            }
        };
        good += row.packets;
        bad += row.errors;
        let printed = progress.suspend(|| ctx.emit(Record::Bench(row)));
        if let Err(e) = printed {
            progress.finish_and_clear();
            return Err(e);
        }
    }
    progress.finish_and_clear();
    if crate::interrupt::interrupted() {
        // The measurement that was running was cut short: its row says so by its seconds.
        return Err(Error::Interrupted {
            op: None,
            cancel: None,
        });
    }
    if bad > 0 {
        return Err(Error::Failed {
            summary: format!(
                "{bad} of {} packets failed (the errors column: a failure status from the \
                 host, or an ECHO answered with another payload)",
                good + bad
            ),
        });
    }
    Ok(())
}

fn progress_bar(json: bool, total: Duration, runs: usize) -> ProgressBar {
    let len = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if json || !std::io::stderr().is_terminal() || total < PROGRESS_FROM {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    // `wide_bar` takes what the terminal's width leaves, so the line never wraps.
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} [{{wide_bar}}] {{percent:>3}}% of {runs} runs, {{msg}}, {{eta}} left"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// SEND IOCTLs with `size`-byte payloads for `args.duration`, `depth` in flight.
fn guest_to_host(
    dev: &dyn Device,
    size: usize,
    args: &BenchArgs,
    depth: usize,
    tick: &mut dyn FnMut(Duration),
) -> Result<BenchRow, Error> {
    let op = IoctlCode::Send;
    let input = ops::send_input(&pattern(size))?;
    let mut window: VecDeque<Box<dyn PendingIoctl + '_>> = VecDeque::with_capacity(depth);
    let mut row = BenchRow {
        direction: Direction::GuestToHost,
        payload_size: size,
        packets: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        slices: Vec::new(),
    };
    let mut slices = Slices::new(args.duration);
    let start = Instant::now();
    let deadline = start + args.duration;
    loop {
        // Ctrl-C: no new requests; the ones in flight finish and are counted.
        while window.len() < depth && Instant::now() < deadline && !interrupted() {
            window.push_back(dev.submit(op, &input, op.min_output_len())?);
        }
        let Some(mut pending) = window.pop_front() else {
            break;
        };
        let Some(completion) = pending.wait(Some(args.timeout))? else {
            let cancel = if pending.cancel() {
                match pending.wait(Some(crate::device::CANCEL_GRACE))? {
                    Some(c) => CancelOutcome::Cancelled(c.status),
                    None => CancelOutcome::StillPending,
                }
            } else {
                CancelOutcome::StillPending
            };
            return Err(Error::Timeout {
                op,
                waited: args.timeout,
                cancel,
            });
        };
        // A failure status from the driver ends the run: the channel cannot carry the load.
        let output = ops::completed(dev, op, completion)?;
        let out: SendOut = read_output(&output).map_err(|error| Error::BadOutput { op, error })?;
        if NtStatus(out.host_status.get()).is_success() {
            row.packets += 1;
            slices.count(start.elapsed(), 1);
        } else {
            row.errors += 1;
        }
        tick(start.elapsed());
    }
    row.elapsed = start.elapsed();
    if !interrupted() {
        row.slices = slices.rates();
    }
    Ok(row)
}

/// ECHO packets from the simulated host with `size`-byte payloads for `duration`.
fn host_to_guest(
    host: &dyn HostPeer,
    size: usize,
    duration: Duration,
    depth: usize,
    tick: &mut dyn FnMut(Duration),
) -> Result<BenchRow, Error> {
    let payload = pattern(size);
    let start = Instant::now();
    let deadline = start + duration;
    let mut slices = Slices::new(duration);
    let mut seen = 0;
    let run = host
        .echo_run(&payload, depth, &mut |answered| {
            let elapsed = start.elapsed();
            slices.count(elapsed, answered.saturating_sub(seen));
            seen = answered;
            tick(elapsed);
            Instant::now() < deadline && !interrupted()
        })
        .map_err(|why| Error::Failed {
            summary: format!("bench host->guest {size} B: {why}"),
        })?;
    Ok(BenchRow {
        direction: Direction::HostToGuest,
        payload_size: size,
        packets: run.packets,
        errors: run.errors,
        elapsed: start.elapsed(),
        slices: if interrupted() {
            Vec::new()
        } else {
            slices.rates()
        },
    })
}
