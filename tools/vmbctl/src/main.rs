//! The `vmbctl` binary: [`vmbctl::main`].
//!
//! Built for `cargo test` (with `harness = false`), the same binary also runs the process-level
//! tests of `tests/cli.rs`, re-executing itself as the CLI for each case. They cannot be an
//! ordinary integration-test target: the `vmbmsg` package is `crate-type = ["cdylib", "rlib"]`
//! (no hash in its output file names) and `profile.dev` sets `panic = "abort"`, so a test run
//! that builds this binary (abort) next to test harnesses (unwind) builds `vmbmsg` twice into
//! the same `libvmbmsg.rlib` (cargo#6313) and links the wrong one. Here every unit of a test run
//! is built for unwinding, so there is one `vmbmsg`.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(test)]
    if std::env::var_os(cli_tests::AS_CLI).is_none() {
        return cli_tests::run();
    }
    vmbctl::main()
}

#[cfg(test)]
#[path = "../tests/cli.rs"]
mod cli_tests;
