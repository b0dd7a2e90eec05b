//! Fuzz targets for vmbmsg, as plain functions of the input bytes.
//!
//! * [`proto::run`]: the wire and IOCTL parsers of `vmbmsg-proto` on raw bytes: no panic, and
//!   whatever parses re-encodes to the same bytes.
//! * [`driver::run`]: the real driver core against `kmcl-model`, driven by an `arbitrary`
//!   list of host and user-mode moves (raw and well-formed host packets, delivery threads,
//!   host answers that are late, twice, made up or of the wrong size, library faults,
//!   rescinds and restarts, interleaved IOCTLs).
//! * [`ioctl::run`]: arbitrary IOCTL codes and buffers against a negotiated core.
//!
//! Every run of the last two ends with the same checks ([`peer::Peer::finish`]): every request
//! completed exactly once, every host packet retired, no packet leaked, statistics that add up,
//! and no contract violation recorded by the model's verifier. A failed check panics, which
//! libFuzzer reports as a crash.
//!
//! The binaries in `fuzz_targets/` wrap these functions with [`fuzz_target!`]: libFuzzer's
//! entry point under `--cfg fuzzing` (cargo-fuzz), a corpus replayer otherwise.
//!
//! Linux only (the targets need kmcl-model): on Windows the binaries only say so.

#[cfg(not(windows))]
pub mod driver;
#[cfg(not(windows))]
pub mod ioctl;
#[cfg(not(windows))]
pub mod peer;
#[cfg(not(windows))]
pub mod proto;

#[cfg(fuzzing)]
#[doc(hidden)]
pub use libfuzzer_sys;

/// Defines the binary's entry point for a fuzz target `|data: &[u8]| body`.
///
/// Under `--cfg fuzzing` this is `libfuzzer_sys::fuzz_target!`. Otherwise it is a `main`
/// that runs the body on every file named on the command line (directories are walked one
/// level deep), so `cargo run -p vmbmsg-fuzz --bin driver -- fuzz/seeds/driver` replays a
/// corpus on stable.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        #[cfg(fuzzing)]
        $crate::libfuzzer_sys::fuzz_target!(|$data: &[u8]| $body);

        #[cfg(all(not(fuzzing), not(windows)))]
        fn main() -> std::process::ExitCode {
            $crate::replay(|$data: &[u8]| $body)
        }

        #[cfg(windows)]
        fn main() -> std::process::ExitCode {
            eprintln!(
                "the vmbmsg fuzz targets run on Linux, against kmcl-model (README, Reliability)"
            );
            std::process::ExitCode::from(2)
        }
    };
}

/// Runs `f` on every file named in the process arguments (directories walked one level).
/// Returns failure when an argument cannot be read or no input was found.
pub fn replay(f: impl Fn(&[u8])) -> std::process::ExitCode {
    let mut n = 0usize;
    for arg in std::env::args_os().skip(1) {
        match inputs(std::path::Path::new(&arg)) {
            Ok(files) => {
                for (path, bytes) in files {
                    eprintln!("replaying {}", path.display());
                    f(&bytes);
                    n += 1;
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", std::path::Path::new(&arg).display());
                return std::process::ExitCode::from(2);
            }
        }
    }
    eprintln!("replayed {n} input(s)");
    if n == 0 {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The files at `path` (itself, or the regular files directly in it, sorted by name).
///
/// # Errors
/// The I/O error of reading `path` or one of its files.
pub fn inputs(path: &std::path::Path) -> std::io::Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| std::fs::read(&p).map(|b| (p, b)))
            .collect()
    } else {
        Ok(vec![(path.to_path_buf(), std::fs::read(path)?)])
    }
}

/// The committed seed corpora replayed through each target on the stable toolchain, so the
/// targets' checks run in every `cargo test` (the fuzzing itself needs nightly: README,
/// "Reliability"). Unit tests rather than `tests/`, which would also build the binaries.
#[cfg(all(test, not(windows)))]
mod seeds {
    use std::path::Path;

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let inputs = crate::inputs(&dir).expect("the seed corpus is readable");
        assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            run(&bytes);
        }
    }

    #[test]
    fn proto() {
        replay("proto", crate::proto::run);
    }

    // The fuzzers deliver inline (deterministic and cheap); the seeds also run with the
    // model's delivery threads, concurrently with the requests.
    #[test]
    fn driver() {
        replay("driver", crate::driver::run);
    }

    #[test]
    fn driver_with_delivery_threads() {
        replay("driver", |d| {
            crate::driver::run_with(d, crate::peer::Delivery::Threads);
        });
    }

    #[test]
    fn ioctl() {
        replay("ioctl", crate::ioctl::run);
    }

    #[test]
    fn ioctl_with_delivery_threads() {
        replay("ioctl", |d| {
            crate::ioctl::run_with(d, crate::peer::Delivery::Threads);
        });
    }
}
