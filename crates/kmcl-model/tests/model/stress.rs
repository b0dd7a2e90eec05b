//! Many packets both ways at once, with 4 delivery threads, completions from other threads and
//! out of order: no violation, every count adds up, nothing left allocated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{ModelConfig, NtStatus, connected_with};

use crate::common::*;

const N: u64 = 100_000;

static CUSTOM_DONE: AtomicU64 = AtomicU64::new(0);
static CUSTOM_BAD: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn stress_completion(
    pkt: sys::VMBPACKET,
    status: sys::NTSTATUS,
    _: sys::PVOID,
    len: u32,
) {
    if status != 0 || len != 8 {
        CUSTOM_BAD.fetch_add(1, Ordering::SeqCst);
    }
    CUSTOM_DONE.fetch_add(1, Ordering::SeqCst);
    packet_free(Pkt(pkt.expose_provenance()));
}

#[test]
fn stress_100k_each_way_with_4_delivery_threads() {
    let t0 = Instant::now();
    let host = Arc::new(connected_with(ModelConfig {
        delivery_threads: 4,
        ..Default::default()
    }));
    let (late_tx, late_rx) = mpsc::channel::<(Tok, Vec<u8>)>();
    let late_tx = Mutex::new(late_tx);
    let g = GuestBuilder::new(&host)
        .ring(256, 256)
        .on_packet(move |_, d| {
            let index = u64::from_le_bytes(d.data[..8].try_into().expect("8 bytes"));
            if index % 2 == 0 {
                complete(d.tok, &d.data);
            } else {
                let _ = lock(&late_tx).send((d.tok, d.data));
            }
        })
        .opened();

    // The guest completes the odd packets later, from another thread.
    let late = std::thread::spawn(move || {
        let mut n = 0u64;
        while n < N / 2 {
            let (tok, data) = late_rx.recv_timeout(T).expect("late packet");
            complete(tok, &data);
            n += 1;
        }
    });

    // Host -> guest.
    let h = Arc::clone(&host);
    let host_sender = std::thread::spawn(move || {
        let txns: Vec<_> = (0..N)
            .map(|i| h.send(&i.to_le_bytes(), true).expect("host send"))
            .collect();
        for (i, txn) in (0..N).zip(txns) {
            let c = h.wait_completion(txn, T).expect("guest completion");
            assert!(!c.failed);
            assert_eq!(c.payload, i.to_le_bytes());
        }
    });

    // Guest -> host: half with the default routine, half with a custom one.
    let ch = g.ch;
    let guest_sender = std::thread::spawn(move || {
        for i in 0..N {
            let p = packet_allocate(ch).expect("allocate");
            if i % 2 == 1 {
                set_routine(p, Some(stress_completion));
            }
            assert_eq!(send(p, &i.to_le_bytes(), WAIT), NtStatus::STATUS_SUCCESS);
        }
    });

    // The host completes guest packets from 2 threads, each batch in reverse order.
    let received = Arc::new(AtomicU64::new(0));
    let completers: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&host);
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                loop {
                    let got = h.recv(Duration::from_millis(2));
                    let more = got.is_some();
                    if let Some(gp) = got {
                        received.fetch_add(1, Ordering::SeqCst);
                        batch.push(gp);
                    }
                    if batch.len() >= 32 || !more {
                        for gp in batch.drain(..).rev() {
                            let echo = gp.payload.clone();
                            gp.complete(NtStatus::STATUS_SUCCESS, &echo);
                        }
                    }
                    if !more && received.load(Ordering::SeqCst) >= N {
                        break;
                    }
                }
            })
        })
        .collect();

    guest_sender.join().expect("guest sender");
    host_sender.join().expect("host sender");
    late.join().expect("late completer");
    for c in completers {
        c.join().expect("host completer");
    }
    let elapsed = t0.elapsed();

    let s = host.stats();
    assert_eq!(s.delivered_to_guest, N);
    assert_eq!(s.completed_by_guest, N);
    assert_eq!(
        s.failed_by_guest + s.force_retired + s.redelivered_at_passive,
        0
    );
    assert_eq!(s.incoming_outstanding, 0);
    assert_eq!(s.received_from_guest, N);
    assert_eq!(s.completed_by_host, N);
    assert_eq!(s.packets_in_flight, 0);
    assert_eq!(s.packets_allocated, 0);
    assert_eq!(s.pending_for_recv, 0);
    assert_eq!(CUSTOM_DONE.load(Ordering::SeqCst), N / 2);
    assert_eq!(CUSTOM_BAD.load(Ordering::SeqCst), 0);
    assert_eq!(g.delivered.load(Ordering::SeqCst), N);
    host.assert_no_violations();
    g.teardown();
    host.assert_no_violations();
    eprintln!("stress: {N} packets each way in {elapsed:?}");
}
