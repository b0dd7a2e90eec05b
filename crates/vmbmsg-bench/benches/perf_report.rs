//! The one command behind docs/performance.md:
//!
//! ```text
//! cargo bench -p vmbmsg-bench --bench perf_report -- --report [--write docs/performance.md] [--quick]
//! ```
//!
//! It describes the machine, runs the criterion benches (`vmbus-ring`'s `ring`, this crate's
//! `rx_path`) and reads their medians, counts instructions per packet with callgrind
//! (`rx_callgrind`, run for two packet counts so set-up cancels out), counts heap
//! allocations per packet with a counting allocator, runs the `vmbctl --sim bench` equivalent,
//! and prints one markdown report (or replaces the results section of `--write`'s file).
//! Needs valgrind for the instruction counts (the column says so when it is missing).
//! A plain `cargo bench` runs this target without `--report`, which does nothing.
#![cfg_attr(windows, no_main)] // Linux only: the harness runs against kmcl-model
#![cfg(not(windows))]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmbmsg_bench::allocs::{CountingAllocator, count};
use vmbmsg_bench::report::{gbps, machine, median, size, thousands};
use vmbmsg_bench::{Guest, PAYLOAD_SIZES, RxWorld, e2e, echo_message};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// (allocations, bytes) per packet over `n` ECHOs of `payload` bytes, after a warm-up.
fn allocs_per_packet(world: &RxWorld, payload: usize, n: u64) -> (f64, f64) {
    let message = echo_message(payload);
    for _ in 0..200 {
        let _ = world.deliver(&message);
    }
    let ((), c) = count(|| {
        for _ in 0..n {
            let _ = world.deliver(&message);
        }
    });
    (c.allocations as f64 / n as f64, c.bytes as f64 / n as f64)
}

// ---- running other targets --------------------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run(cmd: &mut Command) {
    eprintln!("perf-report: running {cmd:?}");
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The median of a criterion benchmark, in nanoseconds.
fn criterion_median(group: &str, function: &str, param: usize) -> Option<f64> {
    let dir = target_dir()
        .join("criterion")
        .join(group.replace('/', "_"))
        .join(function)
        .join(param.to_string())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(dir).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let pe = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = pe.find([',', '}'])?;
    pe[..end].trim().parse().ok()
}

/// The executable of bench target `name` built by `cargo bench --no-run` (newest).
fn bench_executable(name: &str) -> Option<PathBuf> {
    let deps = target_dir().join("release/deps");
    let prefix = format!("{name}-");
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.starts_with(&prefix) && !f.contains('.')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn has_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Callgrind's counts with collection only inside `guest`'s ProcessPacket.
struct Counts {
    /// Everything collected.
    total: f64,
    /// The inclusive part of the model's `Vmb*` functions called from the callback.
    model: f64,
    /// The bounce copy's part (`kmcl::shared::shared_copy`, which `copy_from_shared` calls; the
    /// C guest's is a `memcpy`, counted in its total).
    bounce: f64,
    /// The glibc copy routine that ran (`__memcpy_avx_unaligned_erms`, ...), if one did.
    memcpy: Option<String>,
}

/// Which glibc memcpy the guests' copies use: glibc's choice for this CPU, or its SSE2
/// version, the widest a Windows x64 driver may use without saving the extended state
/// (`GLIBC_TUNABLES` masks AVX and AVX-512 from glibc's CPU-feature selection).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memcpy {
    Native,
    Sse2,
}

impl Memcpy {
    const SSE2_TUNABLES: &'static str =
        "glibc.cpu.hwcaps=-AVX2,-AVX,-AVX512F,-AVX_Fast_Unaligned_Load";
}

fn callgrind_counts(
    exe: &Path,
    guest: Guest,
    payload: usize,
    packets: u64,
    memcpy: Memcpy,
) -> Counts {
    let out = std::env::temp_dir().join(format!(
        "vmbmsg-cg-{}-{}-{payload}-{packets}.out",
        std::process::id(),
        guest.name()
    ));
    let mut valgrind = Command::new("valgrind");
    match memcpy {
        Memcpy::Native => valgrind.env_remove("GLIBC_TUNABLES"),
        Memcpy::Sse2 => valgrind.env("GLIBC_TUNABLES", Memcpy::SSE2_TUNABLES),
    };
    let status = valgrind
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--toggle-collect={}", guest.callback_symbol()))
        .arg(exe)
        .args([guest.name(), &payload.to_string(), &packets.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("valgrind");
    assert!(status.success(), "callgrind run failed");
    let text = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&out)
        .output()
        .expect("callgrind_annotate");
    let _ = std::fs::remove_file(&out);
    let text = String::from_utf8_lossy(&text.stdout);
    let count = |line: &str| -> f64 {
        line.split_whitespace()
            .next()
            .map(|n| n.replace(',', ""))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    let mut total = 0.0;
    let mut model = 0.0;
    let mut bounce = 0.0;
    let mut memcpy = None;
    for line in text.lines() {
        if memcpy.is_none()
            && let Some(at) = line.find(":__memcpy").or_else(|| line.find(":__memmove"))
        {
            let name = &line[at + 1..];
            memcpy = name.split_whitespace().next().map(str::to_string);
        }
        if line.contains("PROGRAM TOTALS") {
            total = count(line);
        } else if line.contains("kmcl::shared::shared_copy") {
            bounce += count(line);
        } else if let Some((_, f)) = line.split_once(":Vmb") {
            // A model export called from the guest's callback (inclusive cost).
            if f.split_whitespace()
                .next()
                .is_some_and(|n| n.chars().all(char::is_alphanumeric))
            {
                model += count(line);
            }
        }
    }
    Counts {
        total,
        model,
        bounce,
        memcpy,
    }
}

/// Instructions per packet from two runs.
struct PerPacket {
    /// The guest's path (the model's part taken out).
    guest: f64,
    /// The model's part.
    model: f64,
    /// The bounce copy's part of the guest's path (Rust: `shared_copy`).
    bounce: f64,
    /// The glibc copy routine that ran.
    memcpy: Option<String>,
}

fn instructions(exe: &Path, guest: Guest, payload: usize, memcpy: Memcpy) -> PerPacket {
    let (n1, n2) = (100, 600);
    let a = callgrind_counts(exe, guest, payload, n1, memcpy);
    let b = callgrind_counts(exe, guest, payload, n2, memcpy);
    let per = |a: f64, b: f64| (b - a) / (n2 - n1) as f64;
    let model = per(a.model, b.model);
    PerPacket {
        guest: per(a.total, b.total) - model,
        model,
        bounce: per(a.bounce, b.bounce),
        memcpy: b.memcpy,
    }
}

/// One `bench` line of `vmbctl --json`.
struct BenchLine {
    direction: String,
    size: usize,
    per_sec: f64,
    bytes_per_sec: f64,
    errors: u64,
}

/// The value after `"key":` in a JSON line (numbers and plain strings only).
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let tag = format!("\"{key}\":");
    let rest = &line[line.find(&tag)? + tag.len()..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim_matches('"'))
}

/// Three runs of `vmbctl --sim --json bench`; `None` if vmbctl cannot be built or run.
fn vmbctl_bench(secs: f64) -> Option<Vec<BenchLine>> {
    let built = cargo()
        .args(["build", "--release", "-p", "vmbctl"])
        .status()
        .ok()?;
    if !built.success() {
        return None;
    }
    let exe = target_dir().join("release/vmbctl");
    let mut rows = Vec::new();
    for _ in 0..3 {
        eprintln!("perf-report: running vmbctl --sim --json bench");
        let out = Command::new(&exe)
            .args(["--sim", "--json", "bench", "--duration"])
            .arg(secs.to_string())
            .args(["--sizes", "0,64,1024,16384"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if json_field(line, "type") != Some("bench") {
                continue;
            }
            rows.push(BenchLine {
                direction: json_field(line, "direction")?.to_owned(),
                size: json_field(line, "payload_size")?.parse().ok()?,
                per_sec: json_field(line, "packets_per_sec")?.parse().ok()?,
                bytes_per_sec: json_field(line, "bytes_per_sec")?.parse().ok()?,
                errors: json_field(line, "errors")?.parse().ok()?,
            });
        }
    }
    (!rows.is_empty()).then_some(rows)
}

/// The in-process equivalent of `vmbctl --sim bench` (when vmbctl cannot run).
fn e2e_equivalent(md: &mut String, secs: f64) {
    let _ = writeln!(
        md,
        "\n### End to end: the `vmbctl --sim bench` equivalent\n\n\
         vmbctl could not run, so this is its equivalent through \
         `vmbmsg_core::sim::Simulation`: SEND IOCTLs guest→host and ECHO packets host→guest, 8 \
         in flight, each answer checked; median of 3 runs of {secs} s.\n\n\
         | Payload | guest→host pkt/s | guest→host MB/s | host→guest pkt/s | host→guest MB/s |\n\
         |---:|---:|---:|---:|---:|"
    );
    let sim = e2e::start();
    let d = Duration::from_secs_f64(secs);
    for &p in &PAYLOAD_SIZES {
        let g2h = median(
            (0..3)
                .map(|_| e2e::guest_to_host(&sim, p, d, 8).per_second())
                .collect(),
        );
        let h2g = median(
            (0..3)
                .map(|_| e2e::host_to_guest(&sim, p, d, 8).per_second())
                .collect(),
        );
        let mb = |r: f64| {
            if p == 0 {
                "-".into()
            } else {
                format!("{:.1}", r * p as f64 / 1e6)
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            size(p),
            thousands(g2h),
            mb(g2h),
            thousands(h2g),
            mb(h2g)
        );
    }
    sim.host().assert_no_violations();
}

/// Runs `crates/vmbmsg-bench/openvmm/run.sh` against `$OPENVMM_DIR` and appends its table;
/// without openvmm, says loudly that the comparison was skipped.
fn openvmm_comparison(md: &mut String) {
    let _ = writeln!(
        md,
        "\n### Against openvmm's ring (`PagedRingMem`)\n\n\
         `crates/vmbmsg-bench/openvmm/run.sh` (run by this report when `OPENVMM_DIR` names an \
         openvmm checkout; openvmm is never a dependency): one thread, 256 KiB of ring data \
         each, interleaved rounds of the same transfer through both rings (write one in-band \
         packet + commit, read it with the payload copied out + commit), medians of the \
         per-round ratios; > 1 means this project's ring is faster.\n"
    );
    let Some(dir) = std::env::var_os("OPENVMM_DIR") else {
        eprintln!("perf-report: SKIPPED the openvmm ring comparison: OPENVMM_DIR is not set");
        let _ = writeln!(
            md,
            "**Skipped in this run**: `OPENVMM_DIR` was not set (no openvmm checkout to compare \
             against)."
        );
        return;
    };
    let script = workspace().join("crates/vmbmsg-bench/openvmm/run.sh");
    eprintln!("perf-report: running {}", script.display());
    let out = Command::new("bash").arg(&script).arg(&dir).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let mut lines = text.lines();
            if let Some(rev) = lines.next() {
                let _ = writeln!(
                    md,
                    "Compared with {}.\n",
                    rev.replace("openvmm: ", "openvmm commit ")
                );
            }
            for l in lines {
                let _ = writeln!(md, "{l}");
            }
        }
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            let why = why.lines().last().unwrap_or("no output").to_string();
            eprintln!("perf-report: SKIPPED the openvmm ring comparison: {why}");
            let _ = writeln!(md, "**Skipped in this run**: `run.sh` failed: {why}");
        }
        Err(e) => {
            eprintln!("perf-report: SKIPPED the openvmm ring comparison: {e}");
            let _ = writeln!(md, "**Skipped in this run**: could not run `run.sh`: {e}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--report") {
        eprintln!(
            "perf_report: nothing to do (run `cargo bench -p vmbmsg-bench --bench perf_report -- --report`)"
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let criterion_args: &[&str] = if quick {
        &[
            "--warm-up-time",
            "0.5",
            "--measurement-time",
            "1",
            "--noplot",
        ]
    } else {
        &["--warm-up-time", "1", "--measurement-time", "3", "--noplot"]
    };

    let mut md = String::new();
    let _ = writeln!(md, "### Machine\n\n| | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\nProduced by `cargo bench -p vmbmsg-bench --bench perf_report -- --report{}`.",
        if quick { " --quick" } else { "" }
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load_flag = |when: &str, md: &mut String| {
        if let Some(l) = vmbmsg_bench::report::load1()
            && vmbmsg_bench::report::loaded(l, cores)
        {
            let _ = writeln!(
                md,
                "\n**Loaded machine {when}**: 1-minute load {l:.2} on {cores} CPUs. The timings of \
                 this run are suspect (rerun on a quiet machine); instruction and allocation \
                 counts are not affected."
            );
        }
    };
    load_flag("at the start", &mut md);

    // Criterion: the ring and the receive path.
    run(cargo()
        .args(["bench", "-p", "vmbus-ring", "--bench", "ring", "--"])
        .args(criterion_args));
    run(cargo()
        .args(["bench", "-p", "vmbmsg-bench", "--bench", "rx_path", "--"])
        .args(criterion_args));

    // Callgrind: instructions per packet.
    let valgrind = has_valgrind();
    let exe = if valgrind {
        run(cargo().args([
            "bench",
            "-p",
            "vmbmsg-bench",
            "--bench",
            "rx_callgrind",
            "--no-run",
        ]));
        bench_executable("rx_callgrind")
    } else {
        None
    };

    let _ = writeln!(
        md,
        "\n### Receive path per ECHO packet (callback → parse → dispatch → reply → complete)\n\n\
         Instructions: callgrind, collecting only inside the guest's ProcessPacket callback, minus \
         the model's `Vmb*` calls made from it (`VmbChannelGetPointer`, \
         `VmbChannelPacketComplete`), per packet (difference of a 600- and a 100-packet run). \
         Both guests first copy the packet into a bounce buffer and parse only the copy (kmcl: \
         `copy_from_shared`, an SSE2 copy in assembly (`shared_copy`), whose share of the Rust \
         count is its own column; C: `memcpy`), and both copy the ECHO payload into the reply with `memcpy` \
         (Rust: `copy_from_slice`). Two runs each: with the `memcpy` glibc picks for this CPU, \
         and with glibc's SSE2 `memcpy` (`GLIBC_TUNABLES={}`), the widest copy a Windows x64 \
         driver may run without `KeSaveExtendedProcessorState` (Microsoft, \"Using extended \
         processor features in Windows drivers\": SSE needs no saving on x64, AVX does) and so \
         the kernel-mode comparison.\n\n\
         | Payload | Rust instr | of which bounce copy | C instr | **Rust / C** | Rust instr, SSE2 memcpy | C instr, SSE2 memcpy | **Rust / C, SSE2 memcpy** | Model instr (`Vmb*` from the callback) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        Memcpy::SSE2_TUNABLES
    );
    let mut routines: Vec<String> = Vec::new();
    for &p in &PAYLOAD_SIZES {
        let f = |x: Option<f64>| x.map_or_else(|| "n/a".into(), thousands);
        let ratio = |r: Option<f64>, c: Option<f64>| match (r, c) {
            (Some(r), Some(c)) if c > 0.0 => format!("**{:.2}×**", r / c),
            _ => "n/a".into(),
        };
        let Some(exe) = &exe else {
            let _ = writeln!(
                md,
                "| {} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |",
                size(p)
            );
            continue;
        };
        let rust = instructions(exe, Guest::Rust, p, Memcpy::Native);
        let c = instructions(exe, Guest::C, p, Memcpy::Native);
        let rust_sse2 = instructions(exe, Guest::Rust, p, Memcpy::Sse2);
        let c_sse2 = instructions(exe, Guest::C, p, Memcpy::Sse2);
        for r in [&c.memcpy, &c_sse2.memcpy].into_iter().flatten() {
            if !routines.contains(r) {
                routines.push(r.clone());
            }
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size(p),
            f(Some(rust.guest)),
            f(Some(rust.bounce)),
            f(Some(c.guest)),
            ratio(Some(rust.guest), Some(c.guest)),
            f(Some(rust_sse2.guest)),
            f(Some(c_sse2.guest)),
            ratio(Some(rust_sse2.guest), Some(c_sse2.guest)),
            f(Some(rust.model)),
        );
    }
    if !valgrind {
        let _ = writeln!(md, "\n(valgrind not found: no instruction counts.)");
    } else if !routines.is_empty() {
        let _ = writeln!(
            md,
            "\nglibc's copy routines that ran, first the native one: {}.",
            routines
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\nTime: criterion median of one whole delivery on one thread (host write into the ring, \
         KMCL copy-out, ProcessPacket, completion through the other ring, host read), glibc's \
         native `memcpy`; the guest's share is that minus the null guest's.\n\n\
         | Payload | Rust ns | C ns | Null ns | Rust − null ns | C − null ns |\n\
         |---:|---:|---:|---:|---:|---:|"
    );
    for &p in &PAYLOAD_SIZES {
        let t = |g: Guest| criterion_median(&format!("rx/{p}"), g.name(), p);
        let (rt, ct, nt) = (t(Guest::Rust), t(Guest::C), t(Guest::Null));
        let f = |x: Option<f64>| x.map_or_else(|| "n/a".into(), thousands);
        let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.0}", a - b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            size(p),
            f(rt),
            f(ct),
            f(nt),
            diff(rt, nt),
            diff(ct, nt),
        );
    }

    // The bounce copy alone.
    let _ = writeln!(
        md,
        "\n### The bounce copy per packet\n\n\
         What kmcl adds to every incoming packet so that `process_packet` never sees bytes the \
         host can change: `kmcl::shared::copy_from_shared` of the whole ECHO message (header + \
         payload) into a bounce buffer in one pass (x86-64: 16-byte SSE moves in \
         assembly below 2 KiB, the first and last pieces overlapping as memcpy's do, `rep movsb` \
         to a 64-byte aligned destination from there), next to `copy_from_slice` (memcpy) of the same bytes; 64-byte aligned buffers, \
         criterion medians (bench `rx_path`, group `bounce`). Claiming and returning the buffer \
         is one compare-exchange and one `fetch_or` on top.\n\n\
         | Message | copy_from_shared ns | memcpy ns | copy_from_shared GB/s | memcpy GB/s | ratio |\n\
         |---:|---:|---:|---:|---:|---:|"
    );
    for &p in &PAYLOAD_SIZES {
        let len = echo_message(p).len();
        let t = |f: &str| criterion_median(&format!("bounce/{p}"), f, p);
        let (shared, memcpy) = (t("copy_from_shared"), t("memcpy"));
        let f = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |x| format!("{x:.1}"));
        let g = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |x| gbps(len as f64 / x * 1e9));
        let ratio = match (shared, memcpy) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {ratio} |",
            size(len),
            f(shared),
            f(memcpy),
            g(shared),
            g(memcpy),
        );
    }

    // Allocations per ECHO.
    let _ = writeln!(
        md,
        "\n### Heap allocations per received ECHO packet\n\n\
         A counting global allocator, armed on the delivering thread for 2,000 ECHOs after a \
         warm-up. Every allocation counted belongs to the model (its packet copies and \
         bookkeeping): the null guest, which only completes, shows the model's share, and the \
         driver adds nothing to it.\n\n\
         | Payload | Driver (Rust) allocs / bytes | C allocs / bytes | Null guest allocs / bytes | Driver − null allocs |\n\
         |---:|---:|---:|---:|---:|"
    );
    {
        let worlds: Vec<RxWorld> = Guest::ALL.into_iter().map(RxWorld::new).collect();
        for &p in &PAYLOAD_SIZES {
            let a: Vec<(f64, f64)> = worlds
                .iter()
                .map(|w| allocs_per_packet(w, p, 2000))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {:.2} / {:.0} | {:.2} / {:.0} | {:.2} / {:.0} | {:.2} |",
                size(p),
                a[0].0,
                a[0].1,
                a[1].0,
                a[1].1,
                a[2].0,
                a[2].1,
                a[0].0 - a[2].0
            );
        }
    }

    // Ring throughput next to memcpy.
    let _ = writeln!(
        md,
        "\n### Ring throughput next to memcpy (same sizes, same run)\n\n\
         Interleaved: each of 101 rounds times, back to back, a burst of single-packet ring \
         round trips (write + commit, read with copy-out + commit; one thread, 128 KiB ring), \
         a burst of batched transfers (as many packets as fit, then all read), a burst of \
         memcpys of the payload (`copy_from_slice` between two 64-byte co-aligned buffers, \
         glibc's best case: the baseline of every ratio), a burst of the same memcpy with the \
         destination 16 bytes past a 64-byte boundary (where the ring puts a payload after its \
         descriptor; for reference only) and a burst of *two copies*: the payload \
         into a 128 KiB buffer at the offsets the ring uses and out of it again, i.e. the bytes \
         a ring transfer moves, without the ring; medians over rounds. A ring moves every byte \
         twice, so on one thread its ceiling is the two copies, about 50 % of one memcpy; \
         **ring / two copies** is how close it comes to that ceiling. The last two columns are \
         criterion's separate medians (bench `ring`), for reference, and the safe \
         one-`AtomicU64`-at-a-time copy.\n\n\
         | Payload | ring ns/pkt | ring Mpkt/s | ring GB/s | batch ns/pkt | batch GB/s | memcpy ns (aligned) | memcpy GB/s (aligned) | memcpy ns (ring offset) | two copies ns | **ring / memcpy** | batch / memcpy | **ring / two copies** | criterion ring / memcpy ns | word-copy ring GB/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut memcpy_gbps = Vec::new();
    for &p in &PAYLOAD_SIZES {
        let r = vmbmsg_bench::ring::ring_vs_memcpy(p, 101);
        let g = format!("throughput/{p}");
        let ns = |f: &str| criterion_median(&g, f, p);
        let gb = |t: f64| gbps(if p == 0 { 0.0 } else { p as f64 / (t * 1e-9) });
        let share = |x: f64| {
            if p == 0 {
                "-".into()
            } else {
                format!("{:.0} %", 100.0 * x)
            }
        };
        let crit = match (ns("ring"), ns("memcpy")) {
            (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
            _ => "n/a".into(),
        };
        let word = ns("ring_wordcopy").map_or_else(|| "n/a".into(), gb);
        memcpy_gbps.push((p, r.memcpy_ns));
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {} | {:.1} | {} | {:.1} | {} | {:.1} | {:.1} | {} | {} | {} | {crit} | {word} |",
            size(p),
            r.ring_ns,
            1e3 / r.ring_ns,
            gb(r.ring_ns),
            r.batch_ns,
            gb(r.batch_ns),
            r.memcpy_ns,
            gb(r.memcpy_ns),
            r.memcpy_offset_ns,
            r.two_copies_ns,
            share(r.ring_share),
            share(r.batch_share),
            share(r.ceiling_share),
        );
    }

    // The ring across two CPUs, next to the same copies handed off without the ring.
    let packets = if quick { 50_000 } else { 200_000 };
    let _ = writeln!(
        md,
        "\n#### The ring with its writer and reader on two threads\n\n\
         As a host and a guest use it: {} packets per size, the writer thread writing and \
         committing each packet, the reader thread reading (copy-out) and committing each, both \
         polling. Beside it, its ceiling on the same two threads: the same two copies at the same \
         offsets handed off without the ring (`ring::two_thread_handoff`: one counter per side, \
         each alone on its cache line; no descriptor, trailer, validation or signal decision). \
         Five runs of each, alternating; medians, and the median of the five ring / hand-off \
         ratios. Every payload byte and the index cache line cross from one CPU's cache to the \
         other's here, which the one-thread memcpy baseline never pays: the hand-off column \
         says what that crossing costs on this machine, whatever the ring does.\n\n\
         | Payload | ring ns/pkt | ring Mpkt/s | ring GB/s | hand-off ns/pkt | hand-off GB/s | memcpy GB/s (table above) | **ring / memcpy** | hand-off / memcpy | **ring / hand-off** |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        thousands(packets as f64)
    );
    for &(p, memcpy_ns) in &memcpy_gbps {
        let (mut ring, mut handoff, mut ratio) = (vec![], vec![], vec![]);
        for _ in 0..5 {
            let r = vmbmsg_bench::ring::two_threads(p, packets);
            let h = vmbmsg_bench::ring::two_thread_handoff(p, packets);
            ring.push(r);
            handoff.push(h);
            ratio.push(h / r);
        }
        let (ns, hs) = (median(ring), median(handoff));
        let gb = |t: f64| gbps(if p == 0 { 0.0 } else { p as f64 / (t * 1e-9) });
        let pct = |t: f64| {
            if p == 0 {
                "-".into()
            } else {
                format!("{:.0} %", 100.0 * memcpy_ns / t)
            }
        };
        let _ = writeln!(
            md,
            "| {} | {ns:.1} | {:.2} | {} | {hs:.1} | {} | {} | {} | {} | {:.0} % |",
            size(p),
            1e3 / ns,
            gb(ns),
            gb(hs),
            gb(memcpy_ns),
            pct(ns),
            pct(hs),
            100.0 * median(ratio),
        );
    }

    // The ring side by side with openvmm's, when a copy of openvmm is at hand.
    openvmm_comparison(&mut md);

    // Protocol 1.1's bulk path.
    let _ = writeln!(
        md,
        "\n### Bulk path (protocol 1.1) next to aligned memcpy\n\n\
         Payloads above one ring packet travel through the GPADL-mapped bulk area. Interleaved \
         like the ring table (101 rounds, medians): `copy_from_slice` between two page-aligned \
         buffers (64-byte co-aligned: glibc's best case), the guest's copy of a SEND payload \
         into the area (`SharedBuffer::write`, what `write_slot` does), a host's copy out of it \
         (`SharedBuffer::read`), and the driver's in-place ECHO_BULK echo \
         (`vmbmsg_core::bulk::echo_in_place`: each byte copied out and back, two copies, so \
         its ceiling is 50 %; through a free ECHO reply buffer, as the driver does, and \
         through the {}-byte stack chunk it falls back to when none is free). The shares are \
         memcpy time / path time (100 % = memcpy speed).\n\n\
         | Payload | memcpy ns | memcpy GB/s | copy in ns | **copy in / memcpy** | copy out ns | **copy out / memcpy** | echo ns | **echo / memcpy** | echo, stack chunk ns |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        vmbmsg_core::bulk::ECHO_CHUNK
    );
    for p in [16 * 1024, 64 * 1024] {
        let r = vmbmsg_bench::bulk::bulk_vs_memcpy(p, 101);
        let gb = |t: f64| gbps(p as f64 / (t * 1e-9));
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {:.1} | {:.0} % | {:.1} | {:.0} % | {:.1} | {:.0} % | {:.1} |",
            size(p),
            r.memcpy_ns,
            gb(r.memcpy_ns),
            r.copy_in_ns,
            100.0 * r.copy_in_share,
            r.copy_out_ns,
            100.0 * r.copy_out_share,
            r.echo_ns,
            100.0 * r.echo_share,
            r.echo_chunk_ns,
        );
    }
    {
        let secs = if quick { 0.3 } else { 1.0 };
        let sim = vmbmsg_bench::e2e::start();
        let rows: Vec<(usize, f64)> = [16 * 1024, 64 * 1024]
            .into_iter()
            .map(|p| {
                let runs = (0..3)
                    .map(|_| {
                        vmbmsg_bench::e2e::guest_to_host(
                            &sim,
                            p,
                            std::time::Duration::from_secs_f64(secs),
                            2,
                        )
                        .per_second()
                    })
                    .collect();
                (p, median(runs))
            })
            .collect();
        let _ = writeln!(
            md,
            "\nEnd to end through the simulation (in process, one delivery thread, 2 SENDs in \
             flight, as many as the default bulk slots; median of 3 runs of {secs} s): a \
             16 KiB SEND rides in one ring packet, a 64 KiB SEND goes through a bulk slot \
             (SEND_BULK; the simulated host reads it out of the GPADL).\n\n\
             | Payload | path | SENDs/s | MB/s |\n|---:|---|---:|---:|"
        );
        for (p, per_sec) in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} |",
                size(p),
                if p > 16 * 1024 {
                    "bulk slot"
                } else {
                    "ring packet"
                },
                thousands(per_sec),
                per_sec * p as f64 / 1e6
            );
        }
    }

    // End to end: vmbctl --sim bench itself (the in-process equivalent if it cannot run).
    let secs = if quick { 0.3 } else { 1.0 };
    match vmbctl_bench(secs) {
        Some(rows) => {
            let _ = writeln!(
                md,
                "\n### End to end: `vmbctl --sim bench`\n\n\
                 `vmbctl --sim --json bench --duration {secs} --sizes 0,64,1024,16384` (release \
                 build; its defaults: 8 requests in flight, every answer checked): SEND IOCTLs \
                 guest→host and ECHO packets host→guest through the driver core, kmcl-model (one \
                 delivery thread, both rings) and the simulated host, thread hand-offs \
                 included; median of 3 runs.\n\n\
                 | Payload | guest→host pkt/s | guest→host MB/s | host→guest pkt/s | host→guest MB/s | errors |\n\
                 |---:|---:|---:|---:|---:|---:|"
            );
            for &p in &PAYLOAD_SIZES {
                let pick = |dir: &str| {
                    let v: Vec<&BenchLine> = rows
                        .iter()
                        .filter(|r| r.direction == dir && r.size == p)
                        .collect();
                    (
                        median(v.iter().map(|r| r.per_sec).collect()),
                        median(v.iter().map(|r| r.bytes_per_sec).collect()),
                        v.iter().map(|r| r.errors).sum::<u64>(),
                    )
                };
                let (g, gb, ge) = pick("guest_to_host");
                let (h, hb, he) = pick("host_to_guest");
                let mb = |b: f64| {
                    if p == 0 {
                        "-".into()
                    } else {
                        format!("{:.1}", b / 1e6)
                    }
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    size(p),
                    thousands(g),
                    mb(gb),
                    thousands(h),
                    mb(hb),
                    ge + he
                );
            }
        }
        None => e2e_equivalent(&mut md, secs),
    }

    if let Some(l) = vmbmsg_bench::report::load1() {
        let _ = writeln!(
            md,
            "\nLoad average at the end (1 min): {l:.2}, this run's own threads included (its \
             two-thread ring and end-to-end measurements keep both CPUs busy)."
        );
    }

    print!("{md}");
    if let Some(path) = write {
        const BEGIN: &str = "<!-- results:begin -->";
        const END: &str = "<!-- results:end -->";
        let path = if path.is_relative() {
            workspace().join(path)
        } else {
            path
        };
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{BEGIN}\n{md}{}", &old[..b], &old[e..])
            }
            _ => format!("{old}\n{BEGIN}\n{md}{END}\n"),
        };
        std::fs::write(&path, new).expect("write the report");
        eprintln!("perf-report: wrote {}", path.display());
    }
}
