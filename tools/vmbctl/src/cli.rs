//! The command line (clap derive).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ntstatus::NtStatus;
use vmbmsg_proto::wire::MAX_PAYLOAD;

const ABOUT: &str = "Drive the vmbmsg Hyper-V guest driver through its IOCTLs: query it, ping the \
host, send and receive messages, smoke-test an installation, benchmark the channel.";

const LONG_ABOUT: &str = "Drive the vmbmsg Hyper-V guest driver through its IOCTLs: query it, \
ping the host, send and receive messages, smoke-test an installation, benchmark the channel.

On Windows vmbctl opens the driver's device (found through its device interface; the device \
admits SYSTEM and Administrators, so run it elevated). Elsewhere, or with --sim, it runs the \
real driver core in-process against a model of the VMBus client library, with a simulated host \
that can be told to misbehave.

Exit codes: 0 success; 1 the driver or the host reported a failure (a failure status, no answer \
in time, a failed smoke step); 2 bad arguments or an I/O error (no device, access denied).";

/// vmbctl's command line.
#[derive(Debug, Parser)]
#[command(name = "vmbctl", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Options for every subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that apply to every subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// Write JSON Lines to stdout (one {"type": .., "data": {..}} object per line) instead of
    /// tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Use the in-process simulation instead of the device (the default where vmbctl has no
    /// device backend, i.e. off Windows).
    #[arg(long, global = true, help_heading = "Global options")]
    pub sim: bool,

    /// No notes, banner or progress bar on stderr; results and errors only.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,

    /// Colors in help and error messages: auto (on a terminal, unless NO_COLOR is set),
    /// always or never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto,
          help_heading = "Global options")]
    pub color: ColorWhen,

    /// Windows: open this device interface path instead of looking the device up.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub device: Option<String>,

    /// Simulation: how the host answers PING and SEND.
    #[arg(
        long,
        global = true,
        value_name = "normal|slow:<ms>|silent|malformed",
        value_parser = parse_behavior,
        help_heading = "Simulation"
    )]
    pub host_behavior: Option<HostBehavior>,

    /// Simulation: how the host answers the version negotiation.
    #[arg(long, global = true, value_enum, help_heading = "Simulation")]
    pub negotiation: Option<NegotiationArg>,

    /// Simulation: the status the host completes SEND with (a STATUS_* name or a hex code).
    #[arg(
        long,
        global = true,
        value_name = "STATUS",
        value_parser = parse_status,
        help_heading = "Simulation"
    )]
    pub host_send_status: Option<NtStatus>,
}

impl Global {
    /// The simulation-only options that were given, by flag name.
    #[cfg_attr(
        not(windows),
        expect(dead_code, reason = "the Windows build refuses them without --sim")
    )]
    pub fn sim_options_given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.host_behavior.is_some() {
            given.push("--host-behavior");
        }
        if self.negotiation.is_some() {
            given.push("--negotiation");
        }
        if self.host_send_status.is_some() {
            given.push("--host-send-status");
        }
        given
    }
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless the NO_COLOR environment variable is set (no-color.org).
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// The choice for clap, with NO_COLOR applied to `auto`.
    pub fn choice(self) -> clap::ColorChoice {
        match self {
            Self::Always => clap::ColorChoice::Always,
            Self::Never => clap::ColorChoice::Never,
            Self::Auto if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) => {
                clap::ColorChoice::Never
            }
            Self::Auto => clap::ColorChoice::Auto,
        }
    }

    /// `--color` as given in `args` (before parsing them, so that the parse's own errors use
    /// it); `auto` when absent or unreadable.
    pub fn from_args(args: &[OsString]) -> Self {
        let mut when = None;
        let mut it = args.iter().map(|a| a.to_str().unwrap_or_default());
        while let Some(a) = it.next() {
            let value = if a == "--color" {
                it.next()
            } else {
                a.strip_prefix("--color=")
            };
            if let Some(v) = value {
                when = <Self as ValueEnum>::from_str(v, true).ok().or(when);
            }
        }
        when.unwrap_or(Self::Auto)
    }
}

/// `--host-behavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostBehavior {
    /// Answer at once.
    Normal,
    /// Answer after a delay.
    Slow(Duration),
    /// Never answer.
    Silent,
    /// Answer with bytes that are not a reply.
    Malformed,
}

fn parse_behavior(s: &str) -> Result<HostBehavior, String> {
    match s {
        "normal" => Ok(HostBehavior::Normal),
        "silent" => Ok(HostBehavior::Silent),
        "malformed" => Ok(HostBehavior::Malformed),
        _ => {
            let ms = s
                .strip_prefix("slow:")
                .ok_or_else(|| "expected normal, slow:<ms>, silent or malformed".to_owned())?;
            let ms: u64 = ms.parse().map_err(|_| {
                format!("slow:<ms> needs a whole number of milliseconds, got {ms:?}")
            })?;
            if ms > 60_000 {
                return Err("slow:<ms> is at most 60000 ms".into());
            }
            Ok(HostBehavior::Slow(Duration::from_millis(ms)))
        }
    }
}

/// `--negotiation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NegotiationArg {
    /// Choose the newest common version (1.1, with the bulk area).
    Accept,
    /// A host that speaks only protocol 1.0 (no bulk area: SENDs up to 16384 bytes).
    #[value(name = "accept-1.0")]
    Accept10,
    /// Reject with STATUS_REVISION_MISMATCH.
    Reject,
    /// Never answer (the driver gives up after 5 s).
    Silent,
    /// Answer with bytes that are not a reply.
    Garbage,
}

fn parse_status(s: &str) -> Result<NtStatus, String> {
    if let Some(found) = NtStatus::ALL.iter().find(|st| st.name() == Some(s)) {
        return Ok(*found);
    }
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| {
            format!("expected a STATUS_* name or a hex code like 0xC0000001, got {s:?}")
        })?;
    let status = u32::from_str_radix(digits, 16)
        .map(|v| NtStatus(i32::from_ne_bytes(v.to_ne_bytes())))
        .map_err(|_| format!("{s:?} is not a hex code: expected e.g. 0xC0000001"))?;
    if status == NtStatus::STATUS_PENDING {
        return Err(
            "STATUS_PENDING (0x00000103) is not a completion status: the host's answer is \
             final; give a success (0x0...) or failure (0xC...) status"
                .into(),
        );
    }
    Ok(status)
}

/// A count of at least 1 (`ping -c`, `recv -n`).
fn parse_count<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("expected a whole number of at least 1, got {s:?}"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    T::try_from(n).map_err(|_| format!("{n} is too large"))
}

fn parse_depth(s: &str) -> Result<u32, String> {
    let n: u32 = parse_count(s)?;
    if n > 64 {
        return Err("at most 64 requests can be in flight".into());
    }
    Ok(n)
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let ms: u64 = s.parse().map_err(|_| {
        format!("expected milliseconds, a whole number of at least 0 (e.g. 200), got {s:?}")
    })?;
    Ok(Duration::from_millis(ms))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_ms(s)?;
    if d.is_zero() {
        return Err("a timeout must be at least 1 ms".into());
    }
    Ok(d)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("expected seconds (e.g. 2 or 0.5), got {s:?}"))?;
    if !secs.is_finite() || !(0.01..=3600.0).contains(&secs) {
        return Err(
            "the duration must be at least 0.01 (10 ms: enough packets to measure) and at \
             most 3600 seconds"
                .into(),
        );
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("expected notifications per second, got {s:?}"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > 1_000_000.0 {
        return Err("the rate must be more than 0 and at most 1000000 per second".into());
    }
    Ok(rate)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let size: usize = s
        .parse()
        .map_err(|_| format!("expected a payload size in bytes, got {s:?}"))?;
    if size > MAX_PAYLOAD {
        return Err(format!(
            "a payload is at most {MAX_PAYLOAD} bytes (the protocol's MAX_PAYLOAD)"
        ));
    }
    Ok(size)
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Driver and channel information (GET_INFO): ABI and driver versions, channel state,
    /// negotiated protocol, limits.
    Info,
    /// The driver's counters (GET_STATS).
    Stats,
    /// Zero the driver's counters (RESET_STATS).
    ResetStats,
    /// Ping the host through the driver (PING) and report round trips.
    Ping(PingArgs),
    /// Send a message to the host (SEND).
    Send(SendArgs),
    /// Take notifications the host sent (RECV).
    Recv(RecvArgs),
    /// Exercise every IOCTL and check each answer; exit 0 only when every step passes. Run it
    /// right after installing the driver.
    Smoke(SmokeArgs),
    /// Measure packets/s and bytes/s each way for several payload sizes. The ±% after
    /// packets/s is half the range between the slowest and the fastest tenth of the run.
    Bench(BenchArgs),
    /// Run several commands, one per line of FILE (or stdin), on the same device: with the
    /// simulation, on one simulated device, so that `send hello` then `stats` shows the SEND.
    /// Blank lines and lines starting with # are skipped; quote arguments with ' or ".
    Script(ScriptArgs),
    /// Print a completion script for a shell (e.g. `vmbctl completions bash >
    /// /etc/bash_completion.d/vmbctl`).
    Completions(CompletionsArgs),
}

/// `script`.
#[derive(Debug, Args)]
pub struct ScriptArgs {
    /// The commands, one per line: a file, or - for stdin.
    #[arg(value_name = "FILE", default_value = "-")]
    pub file: OsString,
    /// Go on after a command fails (the exit code is then the first failure's).
    #[arg(long)]
    pub keep_going: bool,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// One line of a `script`: a subcommand and its arguments, without vmbctl's global options
/// (those of the `vmbctl script` invocation apply to every line).
#[derive(Debug, Parser)]
#[command(name = "vmbctl", no_binary_name = true)]
pub struct ScriptLine {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Splits a script line into words: whitespace separates, '...' and "..." group (no escapes
/// inside single quotes; \" and \\ inside double quotes), # outside quotes starts a comment.
///
/// # Errors
/// An unterminated quote.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a ' is not closed".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("a \" is not closed".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a \" is not closed".into()),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// `ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// How many PINGs to send (each is reported, failed ones too, then the loss).
    #[arg(short = 'c', long = "count", default_value_t = 4, value_parser = parse_count::<u32>,
          allow_negative_numbers = true)]
    pub count: u32,
    /// Milliseconds between PINGs.
    #[arg(long, value_name = "MS", default_value = "200", value_parser = parse_ms,
          allow_negative_numbers = true)]
    pub interval: Duration,
    /// Milliseconds to wait for each answer; then the PING is cancelled.
    #[arg(long, value_name = "MS", default_value = "5000", value_parser = parse_timeout,
          allow_negative_numbers = true)]
    pub timeout: Duration,
}

/// `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The message: text, `@FILE` for a file's bytes, `@-` for stdin, `@@text` for text that
    /// starts with `@`. At most 65536 bytes; above 16384 the driver moves it through its bulk
    /// buffer, which needs protocol 1.1 (`info` shows the session's max payload).
    #[arg(value_name = "TEXT|@FILE")]
    pub message: OsString,
    /// Milliseconds to wait for the host's answer; then the SEND is cancelled.
    #[arg(long, value_name = "MS", default_value = "5000", value_parser = parse_timeout,
          allow_negative_numbers = true)]
    pub timeout: Duration,
}

/// `recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Keep taking notifications until interrupted (or until --count, or --timeout without
    /// one).
    #[arg(short, long)]
    pub follow: bool,
    /// Stop after this many notifications.
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_count::<u64>,
          allow_negative_numbers = true)]
    pub count: Option<u64>,
    /// Milliseconds to wait for each notification (default: for ever). With --follow, the run
    /// ends when one does not come in time.
    #[arg(long, value_name = "MS", value_parser = parse_timeout, allow_negative_numbers = true)]
    pub timeout: Option<Duration>,
    /// Simulation: the host sends this many notifications per second while vmbctl receives.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate,
          help_heading = "Simulation", allow_negative_numbers = true)]
    pub notify_rate: Option<f64>,
}

/// `smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// Milliseconds to wait for each answer from the host.
    #[arg(long, value_name = "MS", default_value = "5000", value_parser = parse_timeout,
          allow_negative_numbers = true)]
    pub timeout: Duration,
}

/// `bench` directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchDirection {
    /// Both (host->guest needs the simulated host; on a device only guest->host runs).
    Both,
    /// SEND IOCTLs: the driver sends to the host.
    GuestToHost,
    /// ECHO packets from the simulated host to the driver.
    HostToGuest,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Payload sizes in bytes, comma-separated (at most 16384).
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',',
          default_value = "0,64,1024,16384", value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Seconds to run each measurement (one per size and direction), 0.01 to 3600.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs,
          allow_negative_numbers = true)]
    pub duration: Duration,
    /// Which way to measure.
    #[arg(long, value_enum, default_value_t = BenchDirection::Both)]
    pub direction: BenchDirection,
    /// Requests kept in flight at once, 1 to 64.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_depth,
          allow_negative_numbers = true)]
    pub depth: u32,
    /// Milliseconds to wait for any one answer.
    #[arg(long, value_name = "MS", default_value = "5000", value_parser = parse_timeout,
          allow_negative_numbers = true)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_behaviors() {
        assert_eq!(parse_behavior("normal"), Ok(HostBehavior::Normal));
        assert_eq!(
            parse_behavior("slow:250"),
            Ok(HostBehavior::Slow(Duration::from_millis(250)))
        );
        assert!(parse_behavior("slow:").is_err());
        assert!(parse_behavior("slow:-1").is_err());
        assert!(parse_behavior("fast").is_err());
    }

    #[test]
    fn statuses_by_name_or_hex() {
        assert_eq!(
            parse_status("STATUS_DEVICE_BUSY"),
            Ok(NtStatus::STATUS_DEVICE_BUSY)
        );
        assert_eq!(parse_status("0xC0000120"), Ok(NtStatus::STATUS_CANCELLED));
        assert!(parse_status("STATUS_NOPE").is_err());
        assert!(parse_status("12").is_err());
    }

    #[test]
    fn script_lines_split_like_a_shell() {
        assert_eq!(
            split_words("  send 'hello world'  # a comment").unwrap(),
            ["send", "hello world"]
        );
        assert_eq!(
            split_words(r#"send "say \"hi\"" x"y z"w"#).unwrap(),
            ["send", r#"say "hi""#, "xy zw"]
        );
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("# only").unwrap(), Vec::<String>::new());
        assert!(split_words("send 'open").is_err());
        assert!(split_words("send \"open").is_err());
        assert_eq!(split_words("send ''").unwrap(), ["send", ""]);
    }

    #[test]
    fn color_is_read_before_parsing() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(ColorWhen::from_args(&args(&["info"])), ColorWhen::Auto);
        assert_eq!(
            ColorWhen::from_args(&args(&["--color", "never", "info"])),
            ColorWhen::Never
        );
        assert_eq!(
            ColorWhen::from_args(&args(&["info", "--color=always"])),
            ColorWhen::Always
        );
        assert_eq!(
            ColorWhen::from_args(&args(&["--color", "sometimes"])),
            ColorWhen::Auto
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("nan").is_err());
        assert_eq!(parse_size("16384"), Ok(16384));
        assert!(parse_size("16385").is_err());
        assert!(parse_timeout("0").is_err());
        assert!(parse_rate("-1").is_err());
    }
}
