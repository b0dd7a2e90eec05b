//! `vmbctl`: the user-mode IOCTL tool of the vmbmsg driver (the binary is `src/main.rs`).
//!
//! Two backends behind one trait ([`device::Device`]): on Windows the driver's device, found
//! through its interface GUID and opened for overlapped I/O; elsewhere, or with `--sim`, the
//! real driver core in-process against kmcl-model with a simulated host
//! (`vmbmsg::sim::Simulation`). Every subcommand builds typed results ([`report::Record`])
//! that a human printer or a JSON Lines printer formats ([`print`]). Errors go to stderr as
//! `vmbctl: error: ...`; the exit codes are in [`error`].

mod cli;
mod cmd;
mod device;
mod error;
mod interrupt;
mod ops;
mod print;
mod report;

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Global};
use crate::device::Device;
use crate::error::Error;
use crate::print::Printer;
use crate::print::human::Human;
use crate::print::json::Json;
use crate::report::Record;

/// vmbctl's `main`: parses the command line, runs the command, prints an error and chooses the
/// exit code.
pub fn main() -> ExitCode {
    interrupt::install();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let color = cli::ColorWhen::from_args(&args).choice();
    let command = <Cli as clap::CommandFactory>::command().color(color);
    let cli = match command
        .try_get_matches_from(&args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 2 with the usage on stderr; --help and --version exit 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if let cli::Command::Completions(c) = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(c.shell, &mut command, "vmbctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vmbctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut human;
    let mut json;
    let out: &mut dyn Printer = if cli.global.json {
        json = Json::new(stdout.lock());
        &mut json
    } else {
        human = Human::new(stdout.lock());
        &mut human
    };
    let result = open(&cli.global).and_then(|dev| {
        let result = out
            .print(&Record::Backend(dev.backend()))
            .map_err(Error::output)
            .and_then(|()| {
                cmd::run(
                    &mut cmd::Ctx {
                        dev: dev.as_ref(),
                        out: &mut *out,
                        json: cli.global.json,
                        quiet: cli.global.quiet,
                    },
                    &cli.command,
                )
            });
        // Close even after a failure: the simulation's verifier has the last word.
        let closed = dev.close().map_err(Error::from);
        result.and(closed)
    });
    if let Err(e) = &result {
        // JSON consumers get the error as the last record too (a closed stdout has no reader).
        if !e.is_broken_pipe() {
            let _ = out.print(&Record::Error(e.into()));
        }
    }
    result
}

/// The Windows device, or the simulation when asked for.
#[cfg(windows)]
fn open(global: &Global) -> Result<Box<dyn Device>, Error> {
    if global.sim {
        return Err(Error::Usage(
            "--sim is not available in Windows builds: the simulation runs the driver core \
             in-process, and on Windows that package is the kernel driver itself; run \
             `vmbctl --sim` on Linux"
                .into(),
        ));
    }
    let given = global.sim_options_given();
    if !given.is_empty() {
        return Err(Error::Usage(format!(
            "{} only apply to the simulation (--sim)",
            given.join(", ")
        )));
    }
    Ok(Box::new(device::windows::WinDevice::open(
        global.device.as_deref(),
        global.quiet,
    )?))
}

/// The simulation: the only backend off Windows.
#[cfg(not(windows))]
fn open(global: &Global) -> Result<Box<dyn Device>, Error> {
    use device::sim::{SimDevice, SimOptions, behavior_name, negotiation_name};
    use vmbmsg::sim::{Behavior, Negotiation};

    use crate::cli::{HostBehavior, NegotiationArg};

    if global.device.is_some() {
        return Err(Error::Usage(
            "--device needs the Windows device backend; this build only has the simulation".into(),
        ));
    }
    let options = SimOptions {
        behavior: match global.host_behavior.unwrap_or(HostBehavior::Normal) {
            HostBehavior::Normal => Behavior::Normal,
            HostBehavior::Slow(d) => Behavior::Slow(d),
            HostBehavior::Silent => Behavior::Silent,
            HostBehavior::Malformed => Behavior::Malformed,
        },
        negotiation: match global.negotiation.unwrap_or(NegotiationArg::Accept) {
            NegotiationArg::Accept | NegotiationArg::Accept10 => Negotiation::Accept,
            NegotiationArg::Reject => Negotiation::Reject,
            NegotiationArg::Silent => Negotiation::Silent,
            NegotiationArg::Garbage => Negotiation::Garbage,
        },
        send_status: global
            .host_send_status
            .unwrap_or(ntstatus::NtStatus::STATUS_SUCCESS),
        only_v1_0: global.negotiation == Some(NegotiationArg::Accept10),
    };
    let how = if global.sim {
        "--sim"
    } else {
        "no device backend on this OS"
    };
    if !global.quiet {
        let _ = writeln!(
            std::io::stderr(),
            "vmbctl: SIMULATION ({how}): the driver core runs in-process against kmcl-model, \
             not a device, and lives for this one command (`vmbctl script` runs several on \
             one); simulated host: behavior {}, negotiation {}",
            behavior_name(options.behavior),
            negotiation_name(&options)
        );
    }
    Ok(Box::new(SimDevice::start(options)?))
}
