//! The ring against memcpy, measured interleaved: each round times a burst of ring round
//! trips, a burst of batched ring transfers, a burst of memcpys and a burst of the two copies a
//! ring transfer is made of (without the ring) back to back, so a load change on a shared
//! machine hits them alike; the ratios are medians over rounds. [`two_threads`] measures the
//! ring with its writer and reader on two CPUs, [`two_thread_handoff`] the same two copies
//! handed between the same two threads without the ring (its ceiling there).

use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::aligned::AlignedVec;
use crate::report::median;
use vmbus_ring::{
    FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, ReadError, RingMem,
    WriteError, packet_footprint,
};

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
    /// `copy_from_slice` of `size` bytes between two 64-byte co-aligned buffers (glibc's best
    /// case): ns per copy. The ratios below are against this one.
    pub memcpy_ns: f64,
    /// The same copy with the destination 16 bytes past a 64-byte boundary, where a ring puts a
    /// payload after its 16-byte descriptor: ns per copy (for reference, labelled as such).
    pub memcpy_offset_ns: f64,
    /// The two copies of a ring transfer without the ring: `size` bytes from the source into a
    /// buffer of the ring's size at the offsets the ring's payloads take, then from there into
    /// the destination. ns per pair: the ring's ceiling on one thread.
    pub two_copies_ns: f64,
    /// Median over rounds of memcpy time / ring time (ring throughput as a share of memcpy's).
    pub ring_share: f64,
    /// The same for the batched ring.
    pub batch_share: f64,
    /// Median over rounds of two-copies time / ring time: how close the ring comes to the
    /// copies it cannot avoid (1.0 = no cost beyond them).
    pub ceiling_share: f64,
}

/// The packet both measurements send: in-band data, completion requested.
fn in_band<'a>(pieces: &'a [&'a [u8]]) -> OutgoingPacket<'a> {
    OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::MIN,
            completion_requested: true,
        },
        payload: pieces,
    }
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
    let src_buf = AlignedVec::new(size, 64, |i| i as u8);
    let src = src_buf.bytes();
    let mut dst_buf = AlignedVec::new(size + 8, 64, |_| 0);
    let dst = dst_buf.bytes_mut();
    let mut off_buf = AlignedVec::new(size + 16, 64, |_| 0);
    let pieces: [&[u8]; 1] = [src];
    let packet = in_band(&pieces);
    let mem = FlatRingMem::new(ring_bytes).expect("ring");
    let mut tx = OutgoingRing::new(&mem).expect("tx");
    let mut rx = IncomingRing::new(&mem).expect("rx");
    let per_batch = (ring_bytes - 8) / packet.footprint();
    // The ring's data area without the ring, for the two-copy baseline.
    let mut shared = vec![0u8; ring_bytes];
    // About 20 µs of memcpy per burst, at least 64 operations.
    let burst = (20_000 / (size / 64 + 1)).max(64);
    let (mut ring, mut batch, mut copy, mut two) = (vec![], vec![], vec![], vec![]);
    let mut copy_off = vec![];
    let (mut rs, mut bs, mut cs) = (vec![], vec![], vec![]);
    let mut at = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..burst {
            let _ = black_box(tx.write_and_commit(black_box(&packet)));
            let info = rx.read(dst).expect("packet");
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
                let info = rx.read(dst).expect("packet");
                black_box(&dst[..info.payload_len]);
            }
            let _ = black_box(rx.commit_read());
            left -= n;
        }
        let b = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            dst[..size].copy_from_slice(black_box(src));
            black_box(&dst);
        }
        let m = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            let off = &mut off_buf.bytes_mut()[16..16 + size];
            off.copy_from_slice(black_box(src));
            black_box(off);
        }
        copy_off.push(t.elapsed().as_nanos() as f64 / burst as f64);
        let t = Instant::now();
        for _ in 0..burst {
            // Where the ring puts the payload: after the 16-byte descriptor, packets one
            // footprint apart, starting over at 0 instead of wrapping (no split copies).
            if at + packet.footprint() > ring_bytes {
                at = 0;
            }
            let slot = &mut shared[at + 16..at + 16 + size];
            slot.copy_from_slice(black_box(src));
            black_box(&slot);
            dst[..size].copy_from_slice(black_box(&shared[at + 16..at + 16 + size]));
            black_box(&dst);
            at += packet.footprint();
        }
        let c = t.elapsed().as_nanos() as f64 / burst as f64;
        ring.push(r);
        batch.push(b);
        copy.push(m);
        two.push(c);
        rs.push(m / r);
        bs.push(m / b);
        cs.push(c / r);
    }
    RingVsMemcpy {
        size,
        ring_ns: median(ring),
        batch_ns: median(batch),
        memcpy_ns: median(copy),
        memcpy_offset_ns: median(copy_off),
        two_copies_ns: median(two),
        ring_share: median(rs),
        batch_share: median(bs),
        ceiling_share: median(cs),
    }
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins > 10_000 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// The ring with its writer and its reader on two threads (two CPUs on an idle machine), as
/// the host and the guest use it: `packets` packets of `size` bytes, each written and
/// committed by the writer, read (copied out) and committed by the reader. Both poll (no
/// signals): a full or empty ring spins, yielding after a while. Returns ns per packet,
/// measured by the reader from the writer's start to its last packet.
///
/// # Panics
/// If the ring misbehaves (a bug, not a measurement).
#[must_use]
pub fn two_threads(size: usize, packets: usize) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mem = FlatRingMem::new(RING_BYTES).expect("ring");
    let go = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let pieces: [&[u8]; 1] = [&src];
            let packet = in_band(&pieces);
            let mut tx = OutgoingRing::new(&mem).expect("tx");
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let (mut sent, mut spins) = (0, 0);
            while sent < packets {
                match tx.write_and_commit(&packet) {
                    Ok(_) => (sent, spins) = (sent + 1, 0),
                    Err(WriteError::Full { .. }) => backoff(&mut spins),
                    Err(e) => panic!("ring write: {e}"),
                }
            }
        });
        let mut rx = IncomingRing::new(&mem).expect("rx");
        let mut dst = vec![0u8; size + 8];
        go.store(true, Ordering::Release);
        let t = Instant::now();
        let (mut received, mut spins) = (0, 0);
        while received < packets {
            match rx.read(&mut dst) {
                Ok(info) => {
                    black_box(&dst[..info.payload_len]);
                    let _ = rx.commit_read();
                    (received, spins) = (received + 1, 0);
                }
                Err(ReadError::Empty) => backoff(&mut spins),
                Err(e) => panic!("ring read: {e}"),
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / packets as f64;
        writer.join().expect("writer");
        ns
    })
}

/// A counter alone on its cache line.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// The ceiling of [`two_threads`]: the same two copies between the same two threads, without
/// the ring. The writer copies each `size`-byte payload into a buffer of the ring's size at the
/// offsets the ring's payloads take (`RingMem::write_at` of a [`FlatRingMem`], the ring's own
/// copy) and publishes a packet count; the reader waits for it, copies the payload out
/// (`read_at`) into a private buffer and publishes its own count, which frees the slot. Each
/// count is alone on its cache line (the ring's two indices share one, as the VMBus layout
/// puts them), no descriptor, trailer, validation or signal decision: the least a two-thread
/// transfer through shared memory does. Returns ns per packet, measured by the reader.
///
/// # Panics
/// If a thread panics (a bug, not a measurement).
#[must_use]
pub fn two_thread_handoff(size: usize, packets: usize) -> f64 {
    let footprint = packet_footprint(size);
    let slots = (RING_BYTES - 8) / footprint;
    let mem = FlatRingMem::new(RING_BYTES).expect("buffer");
    let (written, read) = (Padded(AtomicUsize::new(0)), Padded(AtomicUsize::new(0)));
    let go = AtomicBool::new(false);
    // The payload's offset in its slot: after the 16-byte descriptor, as in the ring.
    let at = |n: usize| (n % slots) * footprint + 16;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            for n in 0..packets {
                let mut spins = 0;
                while n - read.0.load(Ordering::Acquire) >= slots {
                    backoff(&mut spins);
                }
                mem.write_at(at(n), &src);
                written.0.store(n + 1, Ordering::Release);
            }
        });
        let mut dst = vec![0u8; size + 8];
        go.store(true, Ordering::Release);
        let t = Instant::now();
        for n in 0..packets {
            let mut spins = 0;
            while written.0.load(Ordering::Acquire) <= n {
                backoff(&mut spins);
            }
            mem.read_at(at(n), &mut dst[..size]);
            black_box(&dst);
            read.0.store(n + 1, Ordering::Release);
        }
        let ns = t.elapsed().as_nanos() as f64 / packets as f64;
        writer.join().expect("writer");
        ns
    })
}
