//! The model's own accounting when a channel goes away under load: every packet `Host::send`
//! accepted is either delivered to the guest or counted as dropped, and waiting on a dropped
//! one returns at once (a verifier that loses packets would hide a driver that does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kmcl_model::{Host, HostTxn, connected};

use crate::common::*;

/// Host threads that send until the channel is gone, and what they sent.
fn send_until_closed(host: &Arc<Host>, threads: usize, stop: &Arc<AtomicBool>) -> Vec<HostTxn> {
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let host = Arc::clone(host);
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match host.send(&(t as u64 * 1_000_000 + i).to_le_bytes(), true) {
                        Ok(txn) => sent.push(txn),
                        Err(_) => break, // closed: nothing more is accepted
                    }
                    i += 1;
                }
                sent
            })
        })
        .collect();
    senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect()
}

fn round(threads: usize, close_after: Duration, rescind: bool) {
    let host = Arc::new(connected());
    let _g = GuestBuilder::new(&host)
        .on_packet(|_, d| complete(d.tok, &d.data))
        .opened();
    let stop = Arc::new(AtomicBool::new(false));
    let closer = {
        let host = Arc::clone(&host);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(close_after);
            if rescind {
                host.rescind();
            } else {
                host.close();
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let sent = send_until_closed(&host, threads, &stop);
    closer.join().expect("closer");
    let before = host.stats();

    let mut completed = 0u64;
    for txn in &sent {
        let t0 = Instant::now();
        if host.wait_completion(*txn, Duration::from_secs(5)).is_some() {
            completed += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "waiting on transaction {txn:?} took {:?}: accepted, but neither delivered nor \
             counted as dropped",
            t0.elapsed()
        );
    }
    let stats = host.stats();
    assert_eq!(
        stats.dropped_undelivered, before.dropped_undelivered,
        "drops are counted by the time the close returns"
    );
    assert_eq!(
        completed + stats.dropped_undelivered,
        sent.len() as u64,
        "{} accepted: {completed} completed by the guest, {} dropped undelivered ({stats:?})",
        sent.len(),
        stats.dropped_undelivered
    );
    host.assert_no_violations();
}

#[test]
fn a_rescind_under_four_senders_loses_no_accepted_packet() {
    for r in 0..20u64 {
        round(4, Duration::from_millis(5 + r % 7), true);
    }
}

#[test]
fn a_rescind_under_one_sender_loses_no_accepted_packet() {
    for r in 0..40u64 {
        round(1, Duration::from_millis(2 + r % 5), true);
    }
}

#[test]
fn a_host_close_under_four_senders_loses_no_accepted_packet() {
    for r in 0..20u64 {
        round(4, Duration::from_millis(5 + r % 7), false);
    }
}
