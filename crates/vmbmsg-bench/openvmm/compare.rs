//! The project's VMBus ring (`vmbus-ring`) side by side with openvmm's (`vmbus_ring` over
//! `PagedRingMem`, its production accessor), on one thread, interleaved.
//!
//! Built and run by `run.sh` in this directory against a local copy of openvmm, never by the
//! workspace: openvmm is not a dependency of this project. See docs/performance.md,
//! "Against openvmm's ring".
//!
//! Each round times, back to back and in alternating order, a burst of the same transfer
//! through both rings: write one in-band packet (completion requested) + commit, read it
//! (descriptor parsed and validated, payload copied out into a private buffer) + commit.
//! Both rings have 256 KiB of data, keep their offsets between packets (as openvmm's
//! `vmbus_async` queues do) and live in page-aligned memory; openvmm's data pages are mapped
//! twice in a row, as its `PagedMemory` contract asks. The figure per size is the median over
//! rounds of openvmm's time / the project's time (> 1: the project's ring is faster).

use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicU8;
use std::time::Instant;

use guestmem::{MemoryRead, MemoryWrite};
use openvmm_ring as ovmm;
use project_ring as ours;

const PAGE: usize = 4096;
const RING_BYTES: usize = 256 * 1024;
const SIZES: [usize; 4] = [0, 64, 1024, 16384];

#[repr(C, align(4096))]
struct Page([AtomicU8; PAGE]);

/// openvmm's `PagedMemory` over a control page and data pages listed twice.
struct Pages<'a> {
    control: &'a [AtomicU8; PAGE],
    data: Vec<&'a [AtomicU8; PAGE]>,
}

impl ovmm::PagedMemory for Pages<'_> {
    fn control(&self) -> &[AtomicU8; PAGE] {
        self.control
    }
    fn data_page_count(&self) -> usize {
        self.data.len() / 2
    }
    fn data(&self, page: usize) -> &[AtomicU8; PAGE] {
        self.data[page]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(101);
    // openvmm: one control page, 64 data pages (listed twice).
    let pages: Vec<Page> = (0..1 + RING_BYTES / PAGE)
        .map(|_| Page(std::array::from_fn(|_| AtomicU8::new(0))))
        .collect();
    let data: Vec<&[AtomicU8; PAGE]> = pages[1..].iter().map(|p| &p.0).collect();
    let twice = data.iter().chain(data.iter()).copied().collect();
    let paged = Pages {
        control: &pages[0].0,
        data: twice,
    };
    let omem = ovmm::PagedRingMem::new(paged);
    let otx = ovmm::OutgoingRing::new(&omem).expect("openvmm tx");
    let orx = ovmm::IncomingRing::new(&omem).expect("openvmm rx");
    let mut oout = otx.outgoing().expect("outgoing");
    let mut oin = orx.incoming().expect("incoming");
    // The project's ring: its FlatRingMem, the same data size.
    let pmem = ours::FlatRingMem::new(RING_BYTES).expect("ring");
    let mut ptx = ours::OutgoingRing::new(&pmem).expect("tx");
    let mut prx = ours::IncomingRing::new(&pmem).expect("rx");

    println!(
        "| Payload | this project ns/pkt | openvmm PagedRingMem ns/pkt | **openvmm / project** (median of per-round ratios) | rounds where the project is faster |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size + 8];
        let pieces: [&[u8]; 1] = [&src];
        let packet = ours::OutgoingPacket {
            kind: ours::OutgoingKind::InBand {
                transaction_id: NonZeroU64::MIN,
                completion_requested: true,
            },
            payload: &pieces,
        };
        let opacket = ovmm::OutgoingPacket {
            transaction_id: 1,
            size,
            typ: ovmm::OutgoingPacketType::InBandWithCompletion,
        };
        let burst = (20_000 / (size / 64 + 1)).max(256);
        let mut project = || {
            let t = Instant::now();
            for _ in 0..burst {
                let _ = black_box(ptx.write_and_commit(black_box(&packet)).expect("write"));
                let info = prx.read(&mut dst).expect("read");
                black_box(&dst[..info.payload_len]);
                let _ = black_box(prx.commit_read().expect("commit"));
            }
            t.elapsed().as_nanos() as f64 / burst as f64
        };
        let mut dst2 = vec![0u8; size + 8];
        let mut openvmm = || {
            let t = Instant::now();
            for _ in 0..burst {
                let range = otx.write(&mut oout, black_box(&opacket)).expect("write");
                range.writer(&otx).write(black_box(&src)).expect("payload");
                let _ = black_box(otx.commit_write(&mut oout));
                let p = orx.read(&mut oin).expect("read");
                let n = p.payload.len();
                p.payload
                    .reader(&orx)
                    .read(&mut dst2[..n])
                    .expect("copy out");
                black_box(&dst2[..n]);
                let _ = black_box(orx.commit_read(&mut oin));
            }
            t.elapsed().as_nanos() as f64 / burst as f64
        };
        for _ in 0..5 {
            project();
            openvmm();
        }
        let (mut p, mut o, mut ratio) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let (a, b) = if round % 2 == 0 {
                let a = project();
                (a, openvmm())
            } else {
                let b = openvmm();
                (project(), b)
            };
            p.push(a);
            o.push(b);
            ratio.push(b / a);
        }
        let faster = ratio.iter().filter(|r| **r > 1.0).count();
        println!(
            "| {} | {:.1} | {:.1} | **{:.2}×** | {faster} of {rounds} |",
            match size {
                0 => "0 B".to_string(),
                s if s >= 1024 => format!("{} KiB", s / 1024),
                s => format!("{s} B"),
            },
            median(p),
            median(o),
            median(ratio)
        );
    }
}
