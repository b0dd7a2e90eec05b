//! Host-to-guest packets through kmcl: inline completion, completion later from another
//! thread, dropped packets completed with the fallback response, delivery IRQL, the end of a
//! batch.

mod common;

use std::sync::atomic::Ordering;

use common::{FALLBACK, Mode, Recorder, T, enabled, enabled_of, wait_until};
use kmcl::{ChannelHandler, ChannelRef, IncomingPacket, PacketFlags};

/// A handler with `PROCESSING_COMPLETE` registers it: every batch ends with one call that
/// counts its packets, and the counts add up to the packets delivered.
#[test]
fn every_batch_ends_with_processing_complete_and_its_packet_count() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let txns: Vec<_> = (0u8..20)
        .map(|i| host.send(&[i; 8], true).expect("send"))
        .collect();
    for txn in txns {
        host.wait_completion(txn, T).expect("completion");
    }
    assert!(wait_until(T, || rec
        .batched_packets
        .load(Ordering::Relaxed)
        == 20));
    let batches = rec.batches.load(Ordering::Relaxed);
    assert!((1..=20).contains(&batches), "{batches} batches");
    assert_eq!(host.stats().processing_complete_calls, batches);
    drop(channel);
    host.assert_no_violations();
}

/// Completes every packet with its own bytes; no `PROCESSING_COMPLETE`.
#[derive(Debug)]
struct EchoOnly;

impl ChannelHandler for EchoOnly {
    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        packet.complete(data);
    }
}

/// A handler without `PROCESSING_COMPLETE` registers no end-of-batch callback: KMCL makes no
/// call at the end of a batch.
#[test]
fn a_handler_without_processing_complete_gets_no_end_of_batch_call() {
    let host = kmcl_model::connected();
    let channel = enabled_of(&host, EchoOnly);
    host.open().expect("open");
    for i in 0u8..5 {
        let txn = host.send(&[i; 8], true).expect("send");
        assert_eq!(
            host.wait_completion(txn, T).expect("completion").payload,
            [i; 8]
        );
    }
    assert_eq!(host.stats().processing_complete_calls, 0);
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn inline_completion_returns_the_response_to_the_host() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let txn = host.send(b"hello", true).expect("send");
    let done = host.wait_completion(txn, T).expect("completion");
    assert_eq!(done.payload, b"hello");
    assert!(!done.failed);
    assert_eq!(
        rec.dispatch_packets.load(Ordering::Relaxed),
        1,
        "delivered at DISPATCH_LEVEL"
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_packet_can_be_completed_later_from_another_thread() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Park);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let txns: Vec<_> = (0u8..8)
        .map(|i| host.send(&[i; 16], true).expect("send"))
        .collect();
    assert!(wait_until(T, || rec.parked.lock().unwrap().len() == 8));
    let parked = rec.take_parked();
    // Complete in reverse order, from another thread, well after the callbacks returned.
    std::thread::spawn(move || {
        for (packet, data) in parked.into_iter().rev() {
            let mut reply = data;
            reply.reverse();
            packet.complete(&reply);
        }
    })
    .join()
    .expect("completer thread");
    for (i, txn) in txns.into_iter().enumerate() {
        let done = host.wait_completion(txn, T).expect("completion");
        assert_eq!(done.payload, vec![u8::try_from(i).unwrap(); 16]);
    }
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_dropped_packet_is_completed_with_the_fallback_and_counted() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Drop);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let before = kmcl::unconsumed_packets();
    let txn = host.send(b"lost?", true).expect("send");
    let done = host
        .wait_completion(txn, T)
        .expect("completion: never silently lost");
    assert_eq!(done.payload, FALLBACK);
    assert!(kmcl::unconsumed_packets() > before);
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn disable_waits_for_parked_packets_completed_meanwhile() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Park);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let txn = host.send(b"parked", true).expect("send");
    assert!(wait_until(T, || rec.parked.lock().unwrap().len() == 1));
    let rec2 = rec.clone();
    let completer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        for (p, d) in rec2.take_parked() {
            p.complete(&d);
        }
    });
    drop(channel); // blocks until the parked packet is completed
    completer.join().expect("completer");
    assert_eq!(
        host.wait_completion(txn, T).expect("completion").payload,
        b"parked"
    );
    host.assert_no_violations();
}
