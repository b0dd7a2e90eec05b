//! What the results table needs besides measurements: the machine, and number formatting.

use std::process::Command;

/// The first line a command prints, or `"?"`.
fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(text).ok()
        })
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// `(what, value)` rows describing this machine and toolchain.
#[must_use]
pub fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "?".into(), |(_, v)| v.trim().to_owned());
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "avx512f", "erms", "fsrm"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    vec![
        ("CPU", format!("{model} ({})", simd.join(", "))),
        ("Cores available", cores.to_string()),
        ("Load average at start (1/5/15 min)", load),
        ("Kernel", kernel),
        ("rustc", first_line("rustc", &["-V"])),
        ("gcc", first_line("gcc", &["--version"])),
        ("valgrind", first_line("valgrind", &["--version"])),
    ]
}

/// The median of `v` (the upper one of the middle two for an even count; NaN when empty).
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The 1-minute load average, if the system reports one.
#[must_use]
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a 1-minute load of `load` on `cores` CPUs makes timings suspect: more than half
/// the CPUs busy with something else.
#[must_use]
pub fn loaded(load: f64, cores: usize) -> bool {
    load > 0.5 * cores.max(1) as f64
}

/// `1234567.8` as `1,234,568`.
#[must_use]
pub fn thousands(x: f64) -> String {
    let n = x.round() as i128;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A byte count as `0 B`, `64 B`, `1 KiB`, `16 KiB`.
#[must_use]
pub fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Bytes per second in GB/s (10^9), or `-` for zero-byte payloads.
#[must_use]
pub fn gbps(bytes_per_second: f64) -> String {
    if bytes_per_second <= 0.0 {
        "-".into()
    } else {
        format!("{:.2}", bytes_per_second / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_report_prints_them() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(size(0), "0 B");
        assert_eq!(size(64), "64 B");
        assert_eq!(size(16 * 1024), "16 KiB");
        assert_eq!(size(16_408), "16408 B");
        assert_eq!(gbps(0.0), "-");
        assert_eq!(gbps(2.5e9), "2.50");
    }
}
