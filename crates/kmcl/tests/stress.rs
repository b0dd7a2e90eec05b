//! 100 000 packets each way through kmcl with four delivery threads: zero violations, zero
//! leaks, every packet accounted for.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mode, Recorder, T, enabled, wait_until};
use kmcl::{NtStatus, SendFlags};
use kmcl_model::ModelConfig;

const N: u64 = 100_000;

#[test]
fn hundred_thousand_packets_each_way_with_four_delivery_threads() {
    let host = kmcl_model::connected_with(ModelConfig {
        delivery_threads: 4,
        ..ModelConfig::default()
    });
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let start = Instant::now();
    let unconsumed_before = kmcl::unconsumed_packets();

    let completed = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let host_handled = std::thread::scope(|scope| {
        // Host -> guest: N packets, each completed inline with its payload echoed.
        let sender = scope.spawn(|| {
            let mut txns = Vec::with_capacity(usize::try_from(N).unwrap());
            for i in 0..N {
                txns.push((i, host.send(&i.to_le_bytes(), true).expect("host send")));
            }
            for (i, txn) in txns {
                let done = host.wait_completion(txn, T).expect("guest completion");
                assert_eq!(done.payload, i.to_le_bytes());
            }
        });
        // Guest -> host: N packets, completed by two host threads, in whatever order they
        // happen to take them.
        let host_workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while let Some(p) = host.recv(Duration::from_secs(2)) {
                        let resp = p.payload.clone();
                        p.complete(NtStatus::STATUS_SUCCESS, &resp);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for i in 0..N {
            let packet = channel.handle().allocate_packet().expect("allocate");
            let (completed, sum) = (completed.clone(), sum.clone());
            packet
                .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, move |c| {
                    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
                    let v = u64::from_le_bytes(c.response.try_into().expect("8-byte echo"));
                    sum.fetch_add(v, Ordering::Relaxed);
                    completed.fetch_add(1, Ordering::Relaxed);
                })
                .map_err(|e| e.status)
                .expect("send");
        }
        sender.join().expect("host sender");
        assert!(wait_until(T, || completed.load(Ordering::Relaxed) == N));
        host_workers
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<u64>()
    });
    let elapsed = start.elapsed();

    assert_eq!(host_handled, N);
    assert_eq!(
        sum.load(Ordering::Relaxed),
        N * (N - 1) / 2,
        "every response reached its closure"
    );
    assert_eq!(rec.packets.load(Ordering::Relaxed), N);
    assert_eq!(kmcl::unconsumed_packets(), unconsumed_before);
    let stats = host.stats();
    assert_eq!(stats.delivered_to_guest, N);
    assert_eq!(stats.completed_by_guest, N);
    assert_eq!(stats.received_from_guest, N);
    assert_eq!(stats.completed_by_host, N);
    assert_eq!(stats.packets_allocated, 0, "no leaked packets");
    drop(channel);
    host.assert_no_violations();
    println!(
        "stress: {N} packets each way, 4 delivery threads, {:.2?}, {} violations, {} packets leaked",
        elapsed,
        host.violations().len(),
        host.stats().packets_allocated
    );
}
