//! vmbctl run as a process against the simulation: every subcommand, human and JSON output,
//! and the exit codes (0 ok, 1 driver or host failure, 2 usage or I/O error).
//!
//! Compiled into the binary's own test build (`src/main.rs` says why this is not an ordinary
//! integration-test target): [`run`] is that build's test runner, and each case re-executes
//! the binary with [`AS_CLI`] set, which makes it plain `vmbctl`.

/// Set in the environment of a child process: be vmbctl, not the test runner.
pub const AS_CLI: &str = "VMBCTL_TEST_AS_CLI";

/// No process-level tests on Windows: they drive the simulation, which Windows builds lack.
#[cfg(windows)]
pub fn run() -> std::process::ExitCode {
    println!("vmbctl process tests: none on Windows (they drive the simulation)");
    std::process::ExitCode::SUCCESS
}

#[cfg(not(windows))]
pub use cases::run;

#[cfg(not(windows))]
mod cases {

    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command as StdCommand, ExitCode, Stdio};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use assert_cmd::Command;
    use predicates::prelude::*;
    use serde_json::Value;

    use super::AS_CLI;

    fn exe() -> std::path::PathBuf {
        std::env::current_exe().expect("the test binary's path")
    }

    fn vmbctl() -> Command {
        let mut cmd = Command::new(exe());
        cmd.env(AS_CLI, "1").timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs `vmbctl --sim <args>` and returns (exit code, stdout, stderr).
    fn run_sim(args: &[&str]) -> (i32, String, String) {
        let out = vmbctl()
            .arg("--sim")
            .args(args)
            .output()
            .expect("vmbctl runs");
        (
            out.status.code().expect("an exit code, not a signal"),
            String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        )
    }

    /// Every stdout line as JSON; each must be `{"type": string, "data": object}`.
    fn json_lines(stdout: &str) -> Vec<Value> {
        stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(v["type"].is_string(), "no type: {l}");
                assert!(v["data"].is_object(), "no data object: {l}");
                assert_eq!(v.as_object().map(|o| o.len()), Some(2), "extra keys: {l}");
                v
            })
            .collect()
    }

    fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
        lines
            .iter()
            .filter(|v| v["type"] == kind)
            .map(|v| &v["data"])
            .collect()
    }

    // ---- usage ----------------------------------------------------------------------------------

    fn help_and_version_exit_0() {
        vmbctl()
            .arg("--help")
            .assert()
            .code(0)
            .stdout(predicate::str::contains("smoke").and(predicate::str::contains("Exit codes")));
        vmbctl()
            .arg("--version")
            .assert()
            .code(0)
            .stdout(predicate::str::starts_with("vmbctl "));
        vmbctl().args(["bench", "--help"]).assert().code(0);
    }

    fn bad_arguments_exit_2_with_usage_and_no_panic() {
        let cases: &[&[&str]] = &[
            &[],
            &["bogus"],
            &["ping", "-c", "0"],
            &["ping", "--interval", "soon"],
            &["ping", "--timeout", "0"],
            &["send"],
            &["bench", "--sizes", "99999"],
            &["bench", "--sizes", "1,x"],
            &["bench", "--duration", "0"],
            &["bench", "--duration", "-1"],
            &["bench", "--depth", "0"],
            &["recv", "--notify-rate", "0"],
            &["--host-behavior", "fast", "info"],
            &["--host-behavior", "slow:abc", "info"],
            &["--negotiation", "maybe", "info"],
            &["--host-send-status", "STATUS_NOPE", "send", "x"],
        ];
        for args in cases {
            let out = vmbctl().args(*args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains("Usage") || stderr.contains("--help"),
                "{args:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }

    fn usage_errors_found_after_parsing_exit_2() {
        // Off Windows there is no device backend to point --device at.
        let (code, _, err) = run_sim(&["--device", r"\\?\x", "info"]);
        assert_eq!(code, 2);
        assert!(
            err.contains("vmbctl: error: --device needs the Windows device backend"),
            "{err}"
        );
        let (code, _, err) = run_sim(&["send", &"x".repeat(65_537)]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("at most 65536"), "{err}");
        let (code, _, err) = run_sim(&["send", "@/nonexistent/vmbctl-test"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("vmbctl: error: reading the message from /nonexistent/vmbctl-test"),
            "{err}"
        );
    }

    // ---- every subcommand, human and JSON ---------------------------------------------------------

    fn a_simulation_says_so() {
        let (code, out, err) = run_sim(&["info"]);
        assert_eq!(code, 0);
        assert!(err.contains("SIMULATION"), "{err}");
        assert!(out.contains("SIMULATION (not a device)"), "{out}");
        // Without --sim too, where there is no device backend.
        vmbctl()
            .arg("info")
            .assert()
            .code(0)
            .stderr(predicate::str::contains(
                "SIMULATION (no device backend on this OS)",
            ));
    }

    fn info() {
        let (code, out, _) = run_sim(&["info"]);
        assert_eq!(code, 0);
        for want in [
            "channel state           READY",
            "ABI version             1",
            "protocol version        1.1 (driver offers 1.0..=1.1)",
            "max payload             65536 bytes",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
        let (code, out, _) = run_sim(&["--json", "info"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        assert_eq!(lines[0]["type"], "backend");
        assert_eq!(lines[0]["data"]["kind"], "simulation");
        assert_eq!(lines[0]["data"]["host_behavior"], "normal");
        let info = of_type(&lines, "info");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0]["abi_version"], 1);
        assert_eq!(info[0]["channel_state"], "READY");
        assert_eq!(info[0]["protocol_version"], "1.1");
        assert_eq!(info[0]["protocol_version_value"], 0x0001_0001);
        assert_eq!(info[0]["state_reason"], "NONE");
        assert_eq!(lines[0]["data"]["schema"], 2, "the format's version, first");
        assert_eq!(info[0]["max_payload"], 65536);
    }

    fn stats_and_reset_stats() {
        let (code, out, _) = run_sim(&["stats"]);
        assert_eq!(code, 0);
        assert!(out.contains("tx_packets"), "{out}");
        assert!(out.contains("malformed by reason     none"), "{out}");
        let (code, out, _) = run_sim(&["--json", "stats"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let stats = of_type(&lines, "stats");
        let counters = stats[0]["counters"].as_object().unwrap();
        assert_eq!(counters.len(), 25);
        assert_eq!(
            counters["tx_packets"], 2,
            "the NEGOTIATE and the BULK_OFFER"
        );
        assert_eq!(stats[0]["malformed_by_reason"]["premature"], 0);
        let (code, out, _) = run_sim(&["reset-stats"]);
        assert_eq!((code, out.as_str()), (0, "statistics reset\n"));
        let (code, out, _) = run_sim(&["--json", "reset-stats"]);
        assert_eq!(code, 0);
        assert_eq!(of_type(&json_lines(&out), "stats_reset").len(), 1);
    }

    fn ping_reports_round_trips() {
        let (code, out, _) = run_sim(&["ping", "-c", "3", "--interval", "0"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("ping ")).count(), 3);
        assert!(
            out.contains("3 sent, 3 ok, 0 failed (0% loss); rtt min"),
            "{out}"
        );
        assert!(out.contains("median") && out.contains("p99"), "{out}");
        let (code, out, _) = run_sim(&["--json", "ping", "-c", "5", "--interval", "1"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let pings = of_type(&lines, "ping");
        assert_eq!(pings.len(), 5);
        for (i, p) in pings.iter().enumerate() {
            assert_eq!(p["seq"], i + 1);
            assert_eq!(p["ok"], true);
            assert_eq!(p["error"], Value::Null);
            assert_eq!(p["host_status"]["name"], "STATUS_SUCCESS");
            assert!(p["round_trip_ns"].as_u64().unwrap() > 0);
        }
        let summary = of_type(&lines, "ping_summary");
        assert_eq!(summary[0]["ok"], 5);
        let rtt = &summary[0]["rtt_ns"];
        assert!(rtt["min"].as_u64() <= rtt["median"].as_u64());
        assert!(rtt["median"].as_u64() <= rtt["p99"].as_u64());
        assert!(rtt["p99"].as_u64() <= rtt["max"].as_u64());
    }

    fn a_slow_host_shows_in_the_round_trip() {
        let (code, out, _) = run_sim(&["--host-behavior", "slow:40", "--json", "ping", "-c", "1"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let rtt = of_type(&lines, "ping")[0]["round_trip_ns"]
            .as_u64()
            .unwrap();
        assert!(rtt >= 40_000_000, "{rtt}");
    }

    fn send_text_file_and_stdin() {
        let (code, out, _) = run_sim(&["send", "hello host"]);
        assert_eq!(code, 0);
        assert_eq!(out, "sent 10 bytes: host answered STATUS_SUCCESS\n");
        let (code, out, _) = run_sim(&["--json", "send", "@@at"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let send = of_type(&lines, "send");
        assert_eq!(send[0]["bytes"], 3, "@@at sends \"@at\"");
        assert_eq!(send[0]["host_status"]["code"], "0x00000000");

        let dir = std::env::temp_dir().join(format!("vmbctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("payload.bin");
        std::fs::write(&file, vec![0xA5u8; 16_384]).unwrap();
        let arg = format!("@{}", file.display());
        let (code, out, err) = run_sim(&["send", &arg]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("sent 16384 bytes"), "{out}");
        // Above one ring packet: through the bulk buffer (protocol 1.1).
        std::fs::write(&file, vec![0x5Au8; 65_536]).unwrap();
        let (code, out, err) = run_sim(&["send", &arg]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("sent 65536 bytes"), "{out}");
        std::fs::write(&file, vec![0u8; 65_537]).unwrap();
        let (code, _, err) = run_sim(&["send", &arg]);
        assert_eq!(code, 2, "over the limit: {err}");
        std::fs::remove_dir_all(&dir).unwrap();

        vmbctl()
            .args(["--sim", "send", "@-"])
            .write_stdin("from stdin")
            .assert()
            .code(0)
            .stdout("sent 10 bytes: host answered STATUS_SUCCESS\n");
    }

    fn a_host_failure_status_exits_1() {
        let (code, out, err) = run_sim(&["--host-send-status", "STATUS_DEVICE_BUSY", "send", "x"]);
        assert_eq!(code, 1);
        assert!(
            out.contains("host answered STATUS_DEVICE_BUSY (0x80000011)"),
            "{out}"
        );
        assert!(
        err.contains("vmbctl: error: SEND: the driver delivered it, but the host answered with STATUS_DEVICE_BUSY (0x80000011)"),
        "{err}"
    );
    }

    fn recv_takes_notifications_the_host_sends() {
        let (code, out, err) = run_sim(&["recv", "--notify-rate", "200", "-n", "3"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("notification 1: "), "{out}");
        assert!(out.contains("notification 3: "), "{out}");
        assert!(out.contains("received 3 notification(s)"), "{out}");

        let (code, out, _) = run_sim(&[
            "--json",
            "recv",
            "--follow",
            "--notify-rate",
            "100",
            "-n",
            "4",
        ]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let notes = of_type(&lines, "notification");
        assert_eq!(notes.len(), 4);
        for (i, n) in notes.iter().enumerate() {
            assert_eq!(n["sequence"], i + 1);
            let text = n["payload"]["text"].as_str().unwrap();
            assert_eq!(
                text,
                format!("notification {} from the simulated host", i + 1)
            );
            assert_eq!(n["payload_len"].as_u64(), Some(text.len() as u64));
        }
        let summary = of_type(&lines, "recv_summary");
        assert_eq!(summary[0]["received"], 4);
        assert!(summary[0]["host_sent"].as_u64().unwrap() >= 4);

        // One notification, no summary.
        let (code, out, _) = run_sim(&["--json", "recv", "--notify-rate", "50"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        assert_eq!(of_type(&lines, "notification").len(), 1);
        assert!(of_type(&lines, "recv_summary").is_empty());
    }

    fn recv_times_out_and_cancels() {
        let (code, out, err) = run_sim(&["recv", "--timeout", "200"]);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("--notify-rate"), "a hint: {err}");
        assert!(
            err.contains(
                "vmbctl: error: RECV timed out: no notification from the host within 200 ms"
            ),
            "{err}"
        );
        assert!(
            err.contains("cancelled (STATUS_CANCELLED (0xC0000120))"),
            "{err}"
        );
        // --follow ends quietly once the stream stops, after at least one.
        let (code, out, err) = run_sim(&[
            "recv",
            "--follow",
            "--notify-rate",
            "2",
            "--timeout",
            "2000",
            "-n",
            "2",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("received 2"), "{out}");
    }

    fn smoke_passes_every_step() {
        let (code, out, err) = run_sim(&["smoke"]);
        assert_eq!(code, 0, "{out}{err}");
        let steps: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(steps.len(), 9, "{out}");
        assert!(steps.iter().all(|l| l.starts_with("[PASS]")), "{out}");
        for name in [
            "info",
            "stats",
            "reset-stats",
            "ping",
            "send",
            "send-bulk",
            "recv",
            "recv-cancel",
            "stats-add-up",
        ] {
            assert!(
                steps.iter().any(|l| l.contains(&format!(" {name} "))),
                "{name}: {out}"
            );
        }
        assert!(
            out.ends_with("smoke: 9 passed, 0 failed, 0 skipped: OK\n"),
            "{out}"
        );
    }

    fn a_1_0_host_skips_the_bulk_step_and_refuses_large_sends() {
        let (code, out, err) = run_sim(&["--negotiation", "accept-1.0", "smoke"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("protocol 1.0"), "{out}");
        assert!(
            out.contains("[SKIP] 6/9 send-bulk       no bulk area in this session"),
            "{out}"
        );
        assert!(
            out.ends_with("smoke: 8 passed, 0 failed, 1 skipped: OK\n"),
            "{out}"
        );
        assert!(err.contains("negotiation accept-1.0"), "{err}");
        let (code, out, _) = run_sim(&["--negotiation", "accept-1.0", "info"]);
        assert_eq!(code, 0);
        assert!(out.contains("max payload             16384 bytes"), "{out}");
        let (code, _, err) = run_sim(&["--negotiation", "accept-1.0", "send", &"x".repeat(20_000)]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("STATUS_INVALID_PARAMETER"), "{err}");
        assert!(
            err.contains("needs the bulk buffer of protocol 1.1"),
            "{err}"
        );
    }

    fn smoke_json() {
        let (code, out, _) = run_sim(&["--json", "smoke"]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        assert_eq!(lines[0]["type"], "backend");
        let steps = of_type(&lines, "smoke_step");
        assert_eq!(steps.len(), 9);
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["number"], i + 1);
            assert_eq!(s["of"], 9);
            assert_eq!(s["verdict"], "pass", "{s}");
            assert!(!s["detail"].as_str().unwrap().is_empty());
        }
        let summary = of_type(&lines, "smoke_summary");
        assert_eq!(
            *summary[0],
            serde_json::json!({"passed": 9, "failed": 0, "skipped": 0, "ok": true})
        );
    }

    fn smoke_fails_with_exit_1_when_the_host_misbehaves() {
        let (code, out, err) = run_sim(&["--host-behavior", "malformed", "smoke"]);
        assert_eq!(code, 1);
        assert!(out.contains("[FAIL] 4/9 ping"), "{out}");
        assert!(out.contains("STATUS_INVALID_NETWORK_RESPONSE"), "{out}");
        assert!(out.contains("[FAIL] 5/9 send"), "{out}");
        assert!(out.contains("[FAIL] 6/9 send-bulk"), "{out}");
        assert!(out.contains("[PASS] 7/9 recv"), "{out}");
        assert!(out.contains("[PASS] 9/9 stats-add-up"), "{out}");
        assert!(
            err.contains("vmbctl: error: smoke test failed: 3 of 9 steps failed"),
            "{err}"
        );

        let (code, out, _) = run_sim(&[
            "--negotiation",
            "reject",
            "--json",
            "smoke",
            "--timeout",
            "500",
        ]);
        assert_eq!(code, 1);
        let lines = json_lines(&out);
        let steps = of_type(&lines, "smoke_step");
        assert_eq!(steps[0]["verdict"], "fail");
        assert!(
            steps[0]["detail"]
                .as_str()
                .unwrap()
                .contains("NEGOTIATION_FAILED")
        );
        assert_eq!(of_type(&lines, "smoke_summary")[0]["ok"], false);
    }

    fn bench_measures_both_directions() {
        let (code, out, err) = run_sim(&["bench", "--duration", "0.2", "--sizes", "0,1024"]);
        assert_eq!(code, 0, "{err}");
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("direction"), "{out}");
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 4, "{out}");
        assert!(rows[0].starts_with("guest->host") && rows[1].starts_with("host->guest"));

        let (code, out, _) = run_sim(&[
            "--json",
            "bench",
            "--duration",
            "0.2",
            "--sizes",
            "64,16384",
        ]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        let rows = of_type(&lines, "bench");
        assert_eq!(rows.len(), 4);
        let mut seen = Vec::new();
        for r in &rows {
            assert!(r["packets"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
            let secs = r["seconds"].as_f64().unwrap();
            assert!((0.2..5.0).contains(&secs), "{r}");
            let pps = r["packets_per_sec"].as_f64().unwrap();
            let bps = r["bytes_per_sec"].as_f64().unwrap();
            let size = r["payload_size"].as_f64().unwrap();
            assert!((bps - pps * size).abs() <= 1e-6 * bps.max(1.0), "{r}");
            seen.push((
                r["direction"].as_str().unwrap().to_owned(),
                r["payload_size"].as_u64().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("guest_to_host".to_owned(), 64),
                ("host_to_guest".to_owned(), 64),
                ("guest_to_host".to_owned(), 16384),
                ("host_to_guest".to_owned(), 16384)
            ]
        );
        let (code, out, _) = run_sim(&[
            "--json",
            "bench",
            "--duration",
            "0.1",
            "--sizes",
            "8",
            "--direction",
            "host-to-guest",
            "--depth",
            "1",
        ]);
        assert_eq!(code, 0);
        let lines = json_lines(&out);
        assert_eq!(of_type(&lines, "bench").len(), 1);
    }

    fn bench_against_a_broken_host_exits_1() {
        let (code, _, err) =
            run_sim(&["--host-behavior", "malformed", "bench", "--duration", "0.1"]);
        assert_eq!(code, 1);
        assert!(err.contains("STATUS_INVALID_NETWORK_RESPONSE"), "{err}");
    }

    // ---- failures the driver and the host report --------------------------------------------------

    fn rejected_negotiation_info_shows_it_and_ping_fails_not_ready() {
        // `info` prints everything, then judges: a channel that is not READY exits 1 (so a
        // script can wait for a usable device), saying why.
        let (code, out, err) = run_sim(&["--negotiation", "reject", "info"]);
        assert_eq!(code, 1, "{err}");
        assert!(
            out.contains(
                "channel state           NEGOTIATION_FAILED (the host rejected the proposed \
                 versions)"
            ),
            "{out}"
        );
        assert!(out.contains("protocol version        none"), "{out}");
        assert!(
            err.contains("vmbctl: error: the channel is NEGOTIATION_FAILED, not READY"),
            "{err}"
        );
        let (code, out, _) = run_sim(&["--negotiation", "reject", "--json", "info"]);
        assert_eq!(code, 1);
        let lines = json_lines(&out);
        assert_eq!(
            of_type(&lines, "info")[0]["channel_state"],
            "NEGOTIATION_FAILED"
        );
        assert_eq!(of_type(&lines, "info")[0]["state_reason"], "REJECTED");
        assert_eq!(of_type(&lines, "info")[0]["protocol_version"], Value::Null);
        assert_eq!(lines.last().unwrap()["type"], "error");

        let (code, out, err) = run_sim(&[
            "--negotiation",
            "reject",
            "ping",
            "-c",
            "3",
            "--interval",
            "0",
        ]);
        assert_eq!(code, 1);
        assert!(
            out.contains("3 sent, 0 ok, 3 failed (100% loss)"),
            "goes on and counts the loss: {out}"
        );
        assert!(
            err.contains("PING failed: STATUS_DEVICE_NOT_READY (0xC00000A3)"),
            "{err}"
        );
        assert!(
            err.contains("NEGOTIATION_FAILED"),
            "says which state: {err}"
        );
        for cmd in [&["send", "x"][..], &["recv", "--timeout", "100"]] {
            let (code, _, err) = run_sim(&[&["--negotiation", "garbage"][..], cmd].concat());
            assert_eq!(code, 1, "{cmd:?}");
            assert!(err.contains("STATUS_DEVICE_NOT_READY"), "{cmd:?}: {err}");
        }
    }

    fn a_silent_host_times_out_with_a_clear_message() {
        let (code, out, err) = run_sim(&[
            "--host-behavior",
            "silent",
            "ping",
            "-c",
            "1",
            "--timeout",
            "300",
        ]);
        assert_eq!(code, 1);
        assert!(out.contains("1 sent, 0 ok, 1 failed (100% loss)"), "{out}");
        assert!(
        err.contains("vmbctl: error: PING timed out: no answer from the host within 300 ms (STATUS_IO_TIMEOUT (0xC00000B5))"),
        "{err}"
    );
        // vmbctl cancelled the request after the timeout and the driver completed it with
        // STATUS_CANCELLED within vmbctl's grace period: it was not left in the driver until
        // the channel closes ("the driver keeps the request ...").
        assert!(
            err.contains("; the request was cancelled (STATUS_CANCELLED (0xC0000120))"),
            "{err}"
        );
        assert!(!err.contains("keeps the request"), "{err}");
        let (code, _, err) =
            run_sim(&["--host-behavior", "silent", "send", "x", "--timeout", "200"]);
        assert_eq!(code, 1);
        assert!(err.contains("SEND timed out"), "{err}");
        assert!(err.contains("cancelled (STATUS_CANCELLED"), "{err}");
        // JSON: the summary counts the failure; the error still goes to stderr.
        let (code, out, err) = run_sim(&[
            "--json",
            "--host-behavior",
            "silent",
            "ping",
            "-c",
            "1",
            "--timeout",
            "200",
        ]);
        assert_eq!(code, 1);
        let lines = json_lines(&out);
        let summary = of_type(&lines, "ping_summary");
        assert_eq!(summary.len(), 1, "{out}");
        assert_eq!(summary[0]["failed"], 1);
        assert!(err.contains("cancelled (STATUS_CANCELLED"), "{err}");
    }

    fn a_malformed_reply_is_an_invalid_network_response() {
        for cmd in [&["ping"][..], &["send", "x"]] {
            let (code, _, err) = run_sim(&[&["--host-behavior", "malformed"][..], cmd].concat());
            assert_eq!(code, 1, "{cmd:?}");
            assert!(
                err.contains("failed: STATUS_INVALID_NETWORK_RESPONSE (0xC00000C3)"),
                "{cmd:?}: {err}"
            );
        }
    }

    // ---- what a user of ping, tail -f and friends expects -----------------------------------------

    fn ping_goes_on_after_failures_and_reports_the_loss() {
        let (code, out, err) = run_sim(&[
            "--host-behavior",
            "silent",
            "ping",
            "-c",
            "3",
            "--timeout",
            "100",
            "--interval",
            "0",
        ]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            out.lines().filter(|l| l.contains("timed out")).count(),
            3,
            "every attempt is reported: {out}"
        );
        assert!(out.contains("3 sent, 0 ok, 3 failed (100% loss)"), "{out}");
        assert!(
            err.contains(
                "vmbctl: error: 3 of 3 PINGs failed (100% loss); the first: PING timed out"
            ),
            "{err}"
        );
        let (code, out, _) = run_sim(&[
            "--json",
            "--host-behavior",
            "silent",
            "ping",
            "-c",
            "2",
            "--timeout",
            "100",
            "--interval",
            "0",
        ]);
        assert_eq!(code, 1);
        let lines = json_lines(&out);
        let pings = of_type(&lines, "ping");
        assert_eq!(pings.len(), 2, "a record per attempt: {out}");
        for p in &pings {
            assert_eq!(p["ok"], false);
            assert_eq!(p["host_status"], Value::Null);
            assert_eq!(p["error"]["kind"], "timeout");
            assert_eq!(p["error"]["status"]["name"], "STATUS_IO_TIMEOUT");
        }
        assert_eq!(of_type(&lines, "ping_summary")[0]["loss_percent"], 100.0);
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["data"]["kind"], "failed");
        assert_eq!(last["data"]["exit_code"], 1);
    }

    fn a_failed_command_ends_its_json_with_an_error_record() {
        let (code, out, err) = run_sim(&["--json", "--negotiation", "reject", "send", "x"]);
        assert_eq!(code, 1);
        let lines = json_lines(&out);
        assert_eq!(lines[0]["type"], "backend");
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "error", "{out}");
        assert_eq!(last["data"]["kind"], "status");
        assert_eq!(last["data"]["status"]["name"], "STATUS_DEVICE_NOT_READY");
        assert_eq!(last["data"]["status"]["code"], "0xC00000A3");
        assert_eq!(last["data"]["exit_code"], 1);
        let message = last["data"]["message"].as_str().unwrap();
        assert!(err.contains(message), "the same text as on stderr: {err}");
        // A usage error found after parsing too.
        let (code, out, _) = run_sim(&["--json", "send", "@"]);
        assert_eq!(code, 2);
        let lines = json_lines(&out);
        assert_eq!(lines.last().unwrap()["data"]["kind"], "usage");
    }

    /// Sends SIGINT to a running vmbctl after `after` and returns (exit code, stdout, stderr).
    fn interrupted(args: &[&str], after: Duration) -> (i32, String, String) {
        let child = StdCommand::new(exe())
            .env(AS_CLI, "1")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        let killed = StdCommand::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        (
            out.status
                .code()
                .expect("an exit code: the handler lets vmbctl finish"),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn ctrl_c_prints_the_summary_and_exits_130() {
        let wait = Duration::from_millis(700);
        let (code, out, err) =
            interrupted(&["--sim", "ping", "-c", "1000", "--interval", "20"], wait);
        assert_eq!(code, 130, "{err}");
        assert!(
            out.contains(" sent, ") && out.contains("% loss"),
            "a summary: {out}"
        );
        assert!(err.contains("vmbctl: error: interrupted"), "{err}");

        let (code, out, _) = interrupted(
            &["--sim", "--json", "recv", "--follow", "--notify-rate", "50"],
            wait,
        );
        assert_eq!(code, 130);
        let lines = json_lines(&out);
        assert!(!of_type(&lines, "notification").is_empty(), "{out}");
        let summary = of_type(&lines, "recv_summary");
        assert_eq!(summary.len(), 1, "{out}");
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["data"]["kind"], "interrupted");
        assert_eq!(last["data"]["exit_code"], 130);

        let (code, out, _) = interrupted(&["--sim", "--json", "bench", "--duration", "5"], wait);
        assert_eq!(code, 130);
        let lines = json_lines(&out);
        assert_eq!(
            lines.last().unwrap()["data"]["kind"],
            "interrupted",
            "{out}"
        );

        let (code, out, _) = interrupted(
            &["--sim", "--host-behavior", "slow:300", "smoke"],
            Duration::from_millis(500),
        );
        assert_eq!(code, 130);
        assert!(
            out.contains("smoke: "),
            "the summary of the steps that ran: {out}"
        );
    }

    fn bench_with_failing_sends_exits_1() {
        let (code, out, err) = run_sim(&[
            "--host-send-status",
            "STATUS_UNSUCCESSFUL",
            "bench",
            "--direction",
            "guest-to-host",
            "--duration",
            "0.1",
            "--sizes",
            "64",
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(err.contains("packets failed"), "{err}");
    }

    fn bench_shows_the_spread() {
        let (code, out, _) = run_sim(&["bench", "--duration", "0.2", "--sizes", "0"]);
        assert_eq!(code, 0);
        assert!(out.contains("/s ±"), "{out}");
        assert!(
            out.lines().all(|l| l.chars().count() <= 80),
            "fits 80 columns: {out}"
        );
        let (_, out, _) = run_sim(&["--json", "bench", "--duration", "0.2", "--sizes", "0"]);
        let lines = json_lines(&out);
        for b in of_type(&lines, "bench") {
            assert_eq!(b["packets_per_sec_slices"].as_array().unwrap().len(), 10);
        }
    }

    fn a_script_runs_several_commands_on_one_simulated_device() {
        let dir = std::env::temp_dir().join(format!("vmbctl-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("commands");
        std::fs::write(
            &path,
            "# a SEND, then the counters that show it\nsend 'hello there'\n\nstats\n",
        )
        .unwrap();
        let (code, out, err) = run_sim(&["--json", "script", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let lines = json_lines(&out);
        let steps = of_type(&lines, "script_line");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["command"], "send hello there");
        assert_eq!(steps[0]["line"], 2);
        assert_eq!(of_type(&lines, "send")[0]["bytes"], 11);
        assert_eq!(
            of_type(&lines, "stats")[0]["counters"]["send_ok"],
            1,
            "the same device saw the SEND"
        );
        // From stdin; a failing line stops the script with its exit code...
        let out = vmbctl()
            .args(["--sim", "script"])
            .write_stdin("ping -c 1\nsend @/nonexistent/file\nstats\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("> stats"), "{stdout}");
        // ... unless --keep-going.
        let out = vmbctl()
            .args(["--sim", "script", "--keep-going"])
            .write_stdin("send @/nonexistent/file\nstats\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stdout).contains("> stats"));
        // A line that does not parse stops it before anything runs.
        let out = vmbctl()
            .args(["--sim", "script"])
            .write_stdin("send x\nsned y\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("-:2: unrecognized subcommand 'sned'"),
            "{stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("sent"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn input_errors_say_what_is_allowed() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["ping", "-c", "-1"],
                "expected a whole number of at least 1, got \"-1\"",
            ),
            (
                &["ping", "-c", "1.5"],
                "expected a whole number of at least 1, got \"1.5\"",
            ),
            (&["ping", "-c", "0"], "must be at least 1"),
            (
                &["ping", "--interval", "-5"],
                "a whole number of at least 0",
            ),
            (&["ping", "--timeout", "-5"], "a whole number of at least 0"),
            (&["bench", "--duration", "-1"], "at least 0.01"),
            (&["bench", "--duration", "0.0000001"], "at least 0.01"),
            (&["bench", "--depth", "-2"], "at least 1"),
            (&["bench", "--depth", "65"], "at most 64"),
            (&["recv", "-n", "-3"], "at least 1"),
            (&["send", "@"], "@FILE for a file's bytes, @- for stdin"),
            (
                &["--host-send-status", "0x103", "send", "x"],
                "STATUS_PENDING (0x00000103) is not a completion status",
            ),
            (
                &["--host-send-status", "0xZZ", "send", "x"],
                "is not a hex code",
            ),
        ];
        for (args, want) in cases {
            let (code, out, err) = run_sim(args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
            assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
            assert!(!err.contains("invalid digit"), "{args:?}: {err}");
            assert!(out.is_empty(), "{args:?}: {out}");
        }
    }

    fn terminal_conventions() {
        // -q: results only.
        let (code, _, err) = run_sim(&["-q", "info"]);
        assert_eq!(code, 0);
        assert!(err.is_empty(), "{err}");
        // Colors only when asked (or on a terminal, unless NO_COLOR).
        let out = vmbctl()
            .args(["--color", "always", "bogus"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("\u{1b}["));
        let out = vmbctl().args(["bogus"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&out.stderr).contains("\u{1b}["));
        let out = vmbctl()
            .env("NO_COLOR", "1")
            .args(["--color", "auto", "bogus"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stderr).contains("\u{1b}["));
        // Completions for the usual shells.
        for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
            let out = vmbctl().args(["completions", shell]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{shell}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("vmbctl") && text.contains("smoke"), "{shell}");
        }
        // A subcommand's help lists its own options apart from the global ones.
        let out = vmbctl().args(["ping", "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let own = help.find("--count").unwrap();
        let global = help.find("Global options:").expect("a heading for them");
        assert!(own < global, "{help}");
    }

    // ---- output plumbing ----------------------------------------------------------------------------

    fn every_subcommand_speaks_json() {
        let cases: &[&[&str]] = &[
            &["info"],
            &["stats"],
            &["reset-stats"],
            &["ping", "-c", "1"],
            &["send", "x"],
            &["recv", "--notify-rate", "100"],
            &["smoke"],
            &["bench", "--duration", "0.05", "--sizes", "0"],
        ];
        for args in cases {
            let (code, out, err) = run_sim(&[&["--json"][..], args].concat());
            assert_eq!(code, 0, "{args:?}: {err}");
            let lines = json_lines(&out);
            assert!(lines.len() >= 2, "{args:?}: {out}");
            assert_eq!(lines[0]["type"], "backend", "{args:?}");
            // --json may also come after the subcommand.
            let (code, out2, _) = run_sim(&[*args, &["--json"][..]].concat());
            assert_eq!(code, 0, "{args:?}");
            assert_eq!(json_lines(&out2).len(), lines.len(), "{args:?}");
        }
    }

    fn a_closed_stdout_exits_0() {
        let mut child = StdCommand::new(exe())
            .env(AS_CLI, "1")
            .args(["--sim", "recv", "--follow", "--notify-rate", "500"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with("notification 1:"), "{first}");
        drop(reader); // like `| head -1`
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("error"), "{stderr}");
        let _ = std::io::stdout().flush();
    }

    // ---- the runner ---------------------------------------------------------------------------------

    macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        const CASES: &[(&str, fn())] = &[$((stringify!($name), $name)),*];
    };
}

    cases!(
        help_and_version_exit_0,
        bad_arguments_exit_2_with_usage_and_no_panic,
        usage_errors_found_after_parsing_exit_2,
        a_simulation_says_so,
        info,
        stats_and_reset_stats,
        ping_reports_round_trips,
        a_slow_host_shows_in_the_round_trip,
        send_text_file_and_stdin,
        a_host_failure_status_exits_1,
        recv_takes_notifications_the_host_sends,
        recv_times_out_and_cancels,
        smoke_passes_every_step,
        smoke_json,
        a_1_0_host_skips_the_bulk_step_and_refuses_large_sends,
        smoke_fails_with_exit_1_when_the_host_misbehaves,
        bench_measures_both_directions,
        bench_against_a_broken_host_exits_1,
        rejected_negotiation_info_shows_it_and_ping_fails_not_ready,
        a_silent_host_times_out_with_a_clear_message,
        a_malformed_reply_is_an_invalid_network_response,
        every_subcommand_speaks_json,
        a_closed_stdout_exits_0,
        ping_goes_on_after_failures_and_reports_the_loss,
        a_failed_command_ends_its_json_with_an_error_record,
        ctrl_c_prints_the_summary_and_exits_130,
        bench_with_failing_sends_exits_1,
        bench_shows_the_spread,
        a_script_runs_several_commands_on_one_simulated_device,
        input_errors_say_what_is_allowed,
        terminal_conventions,
    );

    /// Runs the cases whose names contain one of the filter arguments (all without one), several
    /// at a time, like libtest: `cargo test -p vmbctl -- [FILTER...] [--exact] [--skip NAME]
    /// [--test-threads N] [--list]`.
    pub fn run() -> ExitCode {
        let mut filters = Vec::new();
        let mut skip = Vec::new();
        let mut exact = false;
        let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => {
                    for (name, _) in CASES {
                        println!("{name}: test");
                    }
                    return ExitCode::SUCCESS;
                }
                "--exact" => exact = true,
                "--skip" => skip.extend(args.next()),
                "--test-threads" => {
                    threads = args.next().and_then(|n| n.parse().ok()).unwrap_or(threads);
                }
                a if a.starts_with("--test-threads=") => {
                    threads = a["--test-threads=".len()..].parse().unwrap_or(threads);
                }
                a if a.starts_with('-') => {}
                _ => filters.push(arg),
            }
        }
        let matches = |name: &str, f: &String| {
            if exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        let selected: Vec<&(&str, fn())> = CASES
            .iter()
            .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| matches(n, f)))
            .filter(|(n, _)| !skip.iter().any(|f| matches(n, f)))
            .collect();
        println!(
            "\nrunning {} tests (vmbctl run as a process)",
            selected.len()
        );
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    while let Some((name, case)) =
                        selected.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let ok = std::thread::Builder::new()
                            .name((*name).to_owned())
                            .spawn_scoped(s, case)
                            .is_ok_and(|t| t.join().is_ok());
                        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
                        if !ok {
                            failed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(*name);
                        }
                    }
                });
            }
        });
        let failed = failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
        if !failed.is_empty() {
            println!("\nfailures:");
            for name in &failed {
                println!("    {name}");
            }
        }
        println!(
            "\ntest result: {verdict}. {} passed; {} failed; finished in {:.2}s\n",
            selected.len() - failed.len(),
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(101)
        }
    }
}
