//! The ring against memcpy, measured interleaved: each round times a burst of ring round
//! trips, a burst of batched ring transfers and a burst of memcpys back to back, so a load
//! change on a shared machine hits all three alike; the ratios are medians over rounds.

use std::hint::black_box;
use std::num::NonZeroU64;
use std::time::Instant;

use vmbus_ring::{FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing};

/// The ring size of the measurement: the driver's (32 pages).
pub const RING_BYTES: usize = 128 * 1024;

/// Medians of one payload size.
#[derive(Clone, Copy, Debug)]
pub struct RingVsMemcpy {
    /// Payload bytes.
    pub size: usize,
    /// One packet written + committed, read (copied out) + committed: ns per packet.
    pub ring_ns: f64,
    /// Batched (as many as fit, then all read): ns per packet.
    pub batch_ns: f64,
    /// `copy_from_slice` of `size` bytes: ns per copy.
    pub memcpy_ns: f64,
    /// Median over rounds of memcpy time / ring time (ring throughput as a share of memcpy's).
    pub ring_share: f64,
    /// The same for the batched ring.
    pub batch_share: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Measures `size`-byte payloads over `rounds` rounds.
///
/// # Panics
/// If the ring misbehaves (a bug, not a measurement).
#[must_use]
pub fn ring_vs_memcpy(size: usize, rounds: usize) -> RingVsMemcpy {
    ring_vs_memcpy_in(RING_BYTES, size, rounds)
}

/// [`ring_vs_memcpy`] with a ring of `ring_bytes` data bytes (a multiple of 8 that holds at
/// least one packet).
///
/// # Panics
/// If the ring misbehaves or is too small.
#[must_use]
pub fn ring_vs_memcpy_in(ring_bytes: usize, size: usize, rounds: usize) -> RingVsMemcpy {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size + 8];
    let pieces: [&[u8]; 1] = [&src];
    let packet = OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::MIN,
            completion_requested: true,
        },
        payload: &pieces,
    };
    let mem = FlatRingMem::new(ring_bytes).expect("ring");
    let mut tx = OutgoingRing::new(&mem).expect("tx");
    let mut rx = IncomingRing::new(&mem).expect("rx");
    let per_batch = (ring_bytes - 8) / packet.footprint();
    // About 20 µs of memcpy per burst, at least 64 operations.
    let burst = (20_000 / (size / 64 + 1)).max(64);
    let (mut ring, mut batch, mut copy, mut rs, mut bs) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..burst {
            let _ = black_box(tx.write_and_commit(black_box(&packet)));
            let info = rx.read(&mut dst).expect("packet");
            black_box(&dst[..info.payload_len]);
            let _ = black_box(rx.commit_read());
        }
        let r = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        let mut left = burst;
        while left > 0 {
            let n = left.min(per_batch);
            for _ in 0..n {
                tx.write(black_box(&packet)).expect("fits");
            }
            let _ = black_box(tx.commit_write());
            for _ in 0..n {
                let info = rx.read(&mut dst).expect("packet");
                black_box(&dst[..info.payload_len]);
            }
            let _ = black_box(rx.commit_read());
            left -= n;
        }
        let b = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            dst[..size].copy_from_slice(black_box(&src));
            black_box(&dst);
        }
        let m = t.elapsed().as_nanos() as f64 / burst as f64;
        ring.push(r);
        batch.push(b);
        copy.push(m);
        rs.push(m / r);
        bs.push(m / b);
    }
    RingVsMemcpy {
        size,
        ring_ns: median(ring),
        batch_ns: median(batch),
        memcpy_ns: median(copy),
        ring_share: median(rs),
        batch_share: median(bs),
    }
}
