//! The two printers over [`Record`]s: readable lines and tables for people
//! ([`human::Human`]), JSON Lines for scripts ([`json::Json`]).

pub mod human;
pub mod json;

use std::io;

use crate::report::Record;

/// Formats records to an output, one at a time, as the command produces them.
pub trait Printer {
    /// Writes one record (and flushes, so `recv --follow` streams).
    ///
    /// # Errors
    /// Writing failed (a closed pipe is `BrokenPipe`).
    fn print(&mut self, record: &Record) -> io::Result<()>;
}

/// A payload for display: its text when it is printable UTF-8, else its bytes in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Printable text.
    Text(&'a str),
    /// Anything else.
    Bytes(&'a [u8]),
}

impl<'a> Payload<'a> {
    /// Classifies `bytes`.
    pub fn of(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(|c| c.is_control() && c != '\t') => Self::Text(text),
            _ => Self::Bytes(bytes),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`.
pub fn duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `950`, `12.3 k`, `4.56 M`, `1.20 G` (decimal prefixes).
pub fn count(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1} k", v / 1e3)
    } else if v < 1e9 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.2} G", v / 1e9)
    }
}

/// `512 B`, `12.3 KiB`, `4.56 MiB`, `1.20 GiB` (binary prefixes).
pub fn bytes(v: f64) -> String {
    const K: f64 = 1024.0;
    if v < K {
        format!("{v:.0} B")
    } else if v < K * K {
        format!("{:.1} KiB", v / K)
    } else if v < K * K * K {
        format!("{:.2} MiB", v / (K * K))
    } else {
        format!("{:.2} GiB", v / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn units() {
        assert_eq!(duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(duration(Duration::from_nanos(12_345)), "12.3 µs");
        assert_eq!(duration(Duration::from_micros(4_560)), "4.56 ms");
        assert_eq!(duration(Duration::from_millis(1_200)), "1.20 s");
        assert_eq!(count(950.0), "950");
        assert_eq!(count(12_345.0), "12.3 k");
        assert_eq!(count(4_560_000.0), "4.56 M");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(2048.0), "2.0 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.00 MiB");
    }

    #[test]
    fn payload_classes() {
        assert_eq!(Payload::of(b"hello\tworld"), Payload::Text("hello\tworld"));
        assert_eq!(Payload::of(b""), Payload::Text(""));
        assert_eq!(Payload::of(b"a\nb"), Payload::Bytes(b"a\nb"));
        assert_eq!(Payload::of(&[0xff, 0]), Payload::Bytes(&[0xff, 0]));
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
