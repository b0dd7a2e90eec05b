//! The receive path per packet, timed: the driver (Rust), the same path in C, and the null
//! guest (the model's share), for ECHO packets of 0, 64, 1024 and 16384 payload bytes.
//!
//! One iteration is one ECHO through `RxWorld::deliver`: the host writes it into the
//! host→guest ring, the guest's KMCL (the model) copies it out, ProcessPacket runs **on this
//! thread** (parse, dispatch, reply, `VmbChannelPacketComplete`), the completion crosses the
//! guest→host ring and the host reads it. No thread hand-off is timed. The guest's own cost is
//! the difference to the null guest; callgrind attributes instructions exactly
//! (`perf-report`, docs/performance.md).
//!
//! Group `bounce/<size>`: what kmcl adds per packet so that the handler never sees bytes the
//! host can change: `kmcl::shared::copy_from_shared` (one pass; x86-64: 16-byte SSE moves in
//! assembly below 2 KiB, `rep movsb` from there) of the whole ECHO message into a bounce
//! buffer, next to `copy_from_slice`
//! (memcpy) of the same bytes; both buffers 64-byte aligned.
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

/// A 64-byte aligned buffer, as a ring or a bounce buffer is.
#[repr(C, align(64))]
struct Aligned([u8; 16 * 1024 + 64]);

#[expect(
    unsafe_code,
    reason = "copy_from_shared takes a raw pointer: memory the host shares"
)]
fn bounce(c: &mut Criterion) {
    let mut src = Box::new(Aligned([0x5a; 16 * 1024 + 64]));
    let mut dst = Box::new(Aligned([0; 16 * 1024 + 64]));
    for size in PAYLOAD_SIZES {
        let len = echo_message(size).len();
        let mut g = c.benchmark_group(format!("bounce/{size}"));
        g.throughput(Throughput::Bytes(u64::try_from(len).unwrap_or(u64::MAX)));
        g.bench_function(BenchmarkId::new("copy_from_shared", size), |b| {
            b.iter(|| {
                let src = black_box(src.0.as_mut_ptr()).cast_const();
                // SAFETY: `src` is valid for `len` bytes (the buffer is longer) for the call.
                unsafe { kmcl::shared::copy_from_shared(src, &mut dst.0[..len]) };
                black_box(&dst.0[..len]);
            });
        });
        g.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                dst.0[..len].copy_from_slice(black_box(&src.0[..len]));
                black_box(&dst.0[..len]);
            });
        });
        g.finish();
    }
}

criterion_group!(benches, bench, bounce);
criterion_main!(benches);
