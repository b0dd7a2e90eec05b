//! The receive path per packet, timed: the driver (Rust), the same path in C, and the null
//! guest (the model's share), for ECHO packets of 0, 64, 1024 and 16384 payload bytes.
//!
//! One iteration is one ECHO through `RxWorld::deliver`: the host writes it into the
//! host→guest ring, the guest's KMCL (the model) copies it out, ProcessPacket runs **on this
//! thread** (parse, dispatch, reply, `VmbChannelPacketComplete`), the completion crosses the
//! guest→host ring and the host reads it. No thread hand-off is timed. The guest's own cost is
//! the difference to the null guest; callgrind attributes instructions exactly
//! (`perf-report`, docs/performance.md).
#![cfg_attr(windows, no_main)] // Linux only: the harness runs against kmcl-model
#![cfg(not(windows))]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmbmsg_bench::{Guest, PAYLOAD_SIZES, RxWorld, echo_message};

fn bench(c: &mut Criterion) {
    let worlds: Vec<RxWorld> = Guest::ALL.into_iter().map(RxWorld::new).collect();
    for size in PAYLOAD_SIZES {
        let message = echo_message(size);
        let mut g = c.benchmark_group(format!("rx/{size}"));
        g.throughput(Throughput::Elements(1));
        for w in &worlds {
            assert_eq!(
                w.deliver(&message).len(),
                message.len(),
                "{:?} echoes",
                w.guest()
            );
            g.bench_function(BenchmarkId::new(w.guest().name(), size), |b| {
                b.iter(|| black_box(w.deliver(black_box(&message))));
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
