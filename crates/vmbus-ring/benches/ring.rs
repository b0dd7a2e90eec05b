//! Ring throughput next to memcpy, same payload sizes, same run (docs/performance.md).
//!
//! * `ring/<size>`: one packet written and committed, then read (copied out once into a
//!   private buffer) and committed, on one thread: the whole cost of moving `size` payload
//!   bytes from the sender's buffer to the receiver's through a 128 KiB ring (the driver's
//!   ring size), descriptors, trailers, index publication and signal decisions included.
//! * `ring_batch/<size>`: as many packets as fit, then all read: one commit per batch.
//! * `memcpy/<size>`: `copy_from_slice` of `size` bytes between two buffers, the lower bound
//!   for moving the bytes once. A ring moves them twice (into the ring, out of it).
//! * `ring_wordcopy/<size>`: the ring with payload bytes moved one `AtomicU64` at a time (the
//!   fully safe alternative to `FlatRingMem`'s bulk copies), to show why the one `unsafe`
//!   copy exists.
//!
//! Throughput is payload bytes per second.

use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmbus_ring::protocol::CONTROL_WORDS;
use vmbus_ring::{FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, RingMem};

const SIZES: [usize; 4] = [0, 64, 1024, 16 * 1024];
const RING: usize = 128 * 1024;

fn packet(payload: &[u8]) -> OutgoingPacket<'_> {
    // Leaked once per size: the slice-of-slices must outlive the packet.
    let pieces: &'static [&'static [u8]] = Box::leak(Box::new([payload.to_vec().leak() as &[u8]]));
    OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::MIN,
            completion_requested: true,
        },
        payload: pieces,
    }
}

/// `FlatRingMem` accessed only through safe atomics: payload bytes one `AtomicU64` at a time.
struct WordCopy(FlatRingMem);

impl RingMem for WordCopy {
    fn control(&self) -> &[AtomicU32; CONTROL_WORDS] {
        self.0.control()
    }
    fn data_len(&self) -> usize {
        self.0.data_len()
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) {
        // Payload copies start 8-aligned in this bench; the tail word is copied partially.
        let words = self.0.words();
        let n = words.len();
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = words[(offset / 8 + i) % n]
                .load(Ordering::Relaxed)
                .to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
    fn write_at(&self, offset: usize, src: &[u8]) {
        let words = self.0.words();
        let n = words.len();
        let first = offset / 8;
        let sub = offset % 8;
        if sub != 0 {
            // The zero padding after an unaligned payload end.
            let w = &words[first % n];
            let mut b = w.load(Ordering::Relaxed).to_le_bytes();
            b[sub..sub + src.len()].copy_from_slice(src);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
            return;
        }
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            words[(first + i) % n].store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }
    fn read_u64(&self, offset: usize) -> u64 {
        self.0.read_u64(offset)
    }
    fn write_u64(&self, offset: usize, value: u64) {
        self.0.write_u64(offset, value);
    }
}

fn one_by_one<M: RingMem>(
    tx: &mut OutgoingRing<M>,
    rx: &mut IncomingRing<M>,
    p: &OutgoingPacket<'_>,
    buf: &mut [u8],
) {
    let _ = black_box(tx.write_and_commit(p));
    let info = rx.read(buf).expect("a packet");
    black_box(&buf[..info.payload_len]);
    let _ = black_box(rx.commit_read());
}

fn bench(c: &mut Criterion) {
    for &size in &SIZES {
        let mut g = c.benchmark_group(format!("throughput/{size}"));
        g.throughput(if size == 0 {
            Throughput::Elements(1)
        } else {
            Throughput::Bytes(size as u64)
        });
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size + 8];

        g.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                dst[..size].copy_from_slice(black_box(&src));
                black_box(&dst);
            });
        });

        let p = packet(&src);
        let mem = FlatRingMem::new(RING).expect("ring");
        let (mut tx, mut rx) = (
            OutgoingRing::new(&mem).expect("tx"),
            IncomingRing::new(&mem).expect("rx"),
        );
        g.bench_function(BenchmarkId::new("ring", size), |b| {
            b.iter(|| one_by_one(&mut tx, &mut rx, &p, &mut dst));
        });

        let per_batch = (RING - 8) / p.footprint();
        g.bench_function(BenchmarkId::new("ring_batch", size), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(per_batch as u64);
                    for _ in 0..n {
                        tx.write(&p).expect("fits");
                    }
                    let _ = black_box(tx.commit_write());
                    for _ in 0..n {
                        let info = rx.read(&mut dst).expect("a packet");
                        black_box(&dst[..info.payload_len]);
                    }
                    let _ = black_box(rx.commit_read());
                    left -= n;
                }
                start.elapsed()
            });
        });

        let mem = WordCopy(FlatRingMem::new(RING).expect("ring"));
        let (mut tx, mut rx) = (
            OutgoingRing::new(&mem).expect("tx"),
            IncomingRing::new(&mem).expect("rx"),
        );
        g.bench_function(BenchmarkId::new("ring_wordcopy", size), |b| {
            b.iter(|| one_by_one(&mut tx, &mut rx, &p, &mut dst));
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
