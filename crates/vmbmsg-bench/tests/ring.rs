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
    }
}
