//! The interleaved ring-vs-memcpy measurement runs and gives sane numbers (not timed).
#![cfg(not(windows))] // Linux only: the harness runs against kmcl-model

#[test]
fn ring_vs_memcpy_gives_finite_shares() {
    for size in vmbmsg_bench::PAYLOAD_SIZES {
        let r = vmbmsg_bench::ring::ring_vs_memcpy(size, 3);
        assert!(r.ring_ns.is_finite() && r.ring_ns > 0.0, "{r:?}");
        assert!(r.batch_ns.is_finite() && r.batch_ns > 0.0, "{r:?}");
        assert!(r.memcpy_ns.is_finite() && r.ring_share > 0.0, "{r:?}");
    }
}

#[test]
fn two_copies_and_two_threads_give_finite_times() {
    for size in [0, 16384] {
        let r = vmbmsg_bench::ring::ring_vs_memcpy(size, 3);
        assert!(
            r.two_copies_ns.is_finite() && r.two_copies_ns > 0.0,
            "{r:?}"
        );
        assert!(
            r.ceiling_share.is_finite() && r.ceiling_share > 0.0,
            "{r:?}"
        );
        let ns = vmbmsg_bench::ring::two_threads(size, 2_000);
        assert!(ns.is_finite() && ns > 0.0, "{size}: {ns}");
        let ns = vmbmsg_bench::ring::two_thread_handoff(size, 2_000);
        assert!(ns.is_finite() && ns > 0.0, "hand-off {size}: {ns}");
    }
}

/// Without an openvmm checkout the side-by-side comparison says it was skipped, with a
/// distinct exit status the report recognises, instead of failing or printing a table.
#[test]
fn openvmm_comparison_skips_loudly_without_openvmm() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/openvmm/run.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("/nonexistent/openvmm")
        .env_remove("OPENVMM_DIR")
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("SKIPPED: openvmm ring comparison"), "{err}");
    assert!(
        err.contains("/nonexistent/openvmm/vm/devices/vmbus/vmbus_ring/Cargo.toml"),
        "{err}"
    );
}
