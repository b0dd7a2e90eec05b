//! Host → guest packets (§6.1).

use std::sync::atomic::Ordering;
use std::time::Duration;

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{
    HostSendError, Irql, ModelConfig, NtStatus, connected, connected_with, mdl_bytes,
};

use crate::common::*;

#[test]
fn completion_payload_reaches_the_host_when_requested() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            let mut r = d.data.clone();
            r.reverse();
            complete(d.tok, &r);
        })
        .opened();
    let with = host.send(b"abc", true).expect("send");
    let without = host.send(b"xyz", false).expect("send");
    let c = host.wait_completion(with, T).expect("completed");
    assert_eq!((c.payload.as_slice(), c.failed), (&b"cba"[..], false));
    let c = host.wait_completion(without, T).expect("completed");
    assert!(
        c.payload.is_empty(),
        "no completion requested: payload not kept"
    );
    let s = host.stats();
    assert_eq!(
        (
            s.delivered_to_guest,
            s.completed_by_guest,
            s.incoming_outstanding
        ),
        (2, 2, 0)
    );
    let ds = lock(&g.deliveries).clone();
    assert_eq!(ds.len(), 2);
    assert!(ds.iter().all(|d| d.irql == Irql::Dispatch && d.flags == 0));
    assert_ne!(ds[0].tok, ds[1].tok, "a fresh token per delivery");
    assert!(
        host.wait_completion(with, Duration::ZERO).is_none(),
        "waited once"
    );
    g.teardown();
}

#[test]
fn passive_processing_delivers_at_passive() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .passive()
        .processing_complete()
        .opened();
    let txn = host.send(b"p", true).expect("send");
    host.wait_completion(txn, T).expect("done");
    wait_until("processing complete", || !lock(&g.batches).is_empty());
    assert_eq!(lock(&g.deliveries)[0].irql, Irql::Passive);
    assert!(
        lock(&g.events)
            .iter()
            .any(|(n, i)| n == "processing_complete" && *i == Irql::Passive)
    );
    g.teardown();
}

#[test]
fn packets_can_be_completed_later_from_another_thread() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    let txns: Vec<_> = (0..5u8)
        .map(|i| host.send(&[i], true).expect("send"))
        .collect();
    wait_until("deliveries", || g.held_len() == 5);
    assert_eq!(host.stats().incoming_outstanding, 5);
    let t = std::thread::spawn(move || {
        let mut held = g.take_held();
        held.reverse();
        for (i, tok) in held.into_iter().enumerate() {
            complete(tok, &[u8::try_from(i).expect("small")]);
        }
    });
    t.join().expect("completer");
    for txn in txns {
        assert!(!host.wait_completion(txn, T).expect("done").failed);
    }
    g.teardown();
}

#[test]
fn transaction_quota_caps_outstanding_packets() {
    let host = connected_with(ModelConfig {
        delivery_threads: 4,
        ..Default::default()
    });
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    set_quota(g.ch, 2);
    for i in 0..6u8 {
        host.send(&[i], true).expect("send");
    }
    wait_until("two deliveries", || g.held_len() == 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.held_len(), 2, "quota 2: no third delivery");
    // Raising the quota alone does not restart the queue (§6.1.4) ...
    set_quota(g.ch, 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.held_len(), 2);
    // ... a completion does.
    let first = lock(&g.held).remove(0);
    complete(first, b"");
    wait_until("refill to the new quota", || g.held_len() == 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.held_len(), 3);
    set_quota(g.ch, 100);
    for t in g.take_held() {
        complete(t, b"");
    }
    // The last two packets (the counter is bumped before `hold` stores the token, so wait for
    // the tokens themselves).
    wait_until("the rest", || g.held_len() == 2);
    assert_eq!(g.delivered.load(Ordering::SeqCst), 6);
    for t in g.take_held() {
        complete(t, b"");
    }
    wait_until("all completed", || host.stats().completed_by_guest == 6);
    g.teardown();
}

#[test]
fn processing_complete_follows_a_batch() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).processing_complete().opened();
    pause(g.ch);
    let txns: Vec<_> = (0..4u8)
        .map(|i| host.send(&[i], true).expect("send"))
        .collect();
    start(g.ch);
    for t in txns {
        host.wait_completion(t, T).expect("done");
    }
    wait_until("batch end", || lock(&g.batches).iter().sum::<u32>() == 4);
    let ev = g.event_names();
    let last_pc = ev.iter().rposition(|e| e == "processing_complete");
    assert!(last_pc.is_some());
    assert!(lock(&g.batches).iter().all(|n| *n > 0));
    assert_eq!(
        host.stats().processing_complete_calls,
        u64::try_from(lock(&g.batches).len()).expect("small")
    );
    g.teardown();
}

#[test]
fn defer_to_passive_redelivers_at_passive_with_a_new_token() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            if d.irql == Irql::Dispatch {
                defer(d.tok);
            } else {
                complete(d.tok, b"at passive");
            }
        })
        .opened();
    let txn = host.send(b"defer me", true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("done").payload,
        b"at passive"
    );
    let ds = lock(&g.deliveries).clone();
    assert_eq!(ds.len(), 2);
    assert_eq!((ds[0].irql, ds[1].irql), (Irql::Dispatch, Irql::Passive));
    assert_ne!(ds[0].tok, ds[1].tok);
    assert_eq!(ds[1].data, b"defer me");
    let s = host.stats();
    assert_eq!(
        (
            s.delivered_to_guest,
            s.redelivered_at_passive,
            s.deferred_by_guest
        ),
        (1, 1, 1)
    );
    g.teardown();
}

#[test]
fn fail_stops_the_queue_until_the_channel_closes() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            if d.data == b"bad" {
                fail(d.tok);
            } else {
                complete(d.tok, b"ok");
            }
        })
        .opened();
    let bad = host.send(b"bad", true).expect("send");
    let after = host.send(b"good", true).expect("send");
    let c = host.wait_completion(bad, T).expect("failed");
    assert!(c.failed);
    assert!(
        host.wait_completion(after, Duration::from_millis(100))
            .is_none(),
        "queue stopped"
    );
    assert_eq!(g.delivered.load(Ordering::SeqCst), 1);
    host.close();
    assert!(
        host.wait_completion(after, T).is_none(),
        "dropped undelivered at close"
    );
    assert_eq!(host.stats().dropped_undelivered, 1);
    assert_eq!(enable(g.ch), NtStatus::STATUS_SUCCESS);
    host.open().expect("reopen");
    let txn = host.send(b"good", true).expect("send");
    assert_eq!(host.wait_completion(txn, T).expect("done").payload, b"ok");
    g.teardown();
}

#[test]
fn external_data_is_an_mdl_valid_until_completion() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(hold)
        .max_external(4096, 1)
        .opened();
    let txn = host
        .send_with_external(b"hdr", b"external bytes")
        .expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let d = lock(&g.deliveries)[0].clone();
    assert_eq!(
        d.flags,
        sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
    );
    let (s, mdl) = external(
        d.tok,
        sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
    );
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert_eq!(mdl_bytes(mdl).expect("valid"), b"external bytes");
    let (_, again) = external(d.tok, 0);
    assert_eq!(again, mdl, "same MDL for the same packet");
    complete(d.tok, b"done");
    assert_eq!(mdl_bytes(mdl), None, "the MDL dies with the packet");
    assert_eq!(host.wait_completion(txn, T).expect("done").payload, b"done");
    g.teardown();
}

#[test]
fn host_send_needs_an_open_channel_and_a_packet_that_fits() {
    let host = connected();
    let _guard = host.violation_guard();
    assert_eq!(host.send(b"x", true), Err(HostSendError::NotOpen));
    let g = GuestBuilder::new(&host).ring(1, 1).opened();
    assert!(matches!(
        host.send(&[0; 4096], true),
        Err(HostSendError::TooLarge { len: 4096, .. })
    ));
    host.send(&[0; 1024], true).expect("fits");
    g.teardown();
}

#[test]
fn many_delivery_threads_deliver_concurrently() {
    use std::sync::atomic::AtomicUsize;
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MAX: AtomicUsize = AtomicUsize::new(0);
    let host = connected_with(ModelConfig {
        delivery_threads: 4,
        ..Default::default()
    });
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MAX.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            complete(d.tok, &d.data);
        })
        .opened();
    let txns: Vec<_> = (0..8u8)
        .map(|i| host.send(&[i], true).expect("send"))
        .collect();
    for t in txns {
        host.wait_completion(t, T).expect("done");
    }
    assert!(
        MAX.load(Ordering::SeqCst) >= 2,
        "ProcessPacket ran on several threads at once"
    );
    g.teardown();
}

#[test]
fn external_data_is_refused_beyond_what_the_guest_declared() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).on_packet(echo).opened();
    assert_eq!(
        host.send_with_external(b"hdr", b"x").map(|_| ()),
        Err(kmcl_model::HostSendError::ExternalDataRefused {
            len: 1,
            limit: None
        }),
        "no VmbChannelInitSetMaximumExternalData: none at all"
    );
    g.teardown();
    let g = GuestBuilder::new(&host)
        .on_packet(echo)
        .max_external(16, 1)
        .opened();
    assert_eq!(
        host.send_with_external(b"hdr", &[7; 17]).map(|_| ()),
        Err(kmcl_model::HostSendError::ExternalDataRefused {
            len: 17,
            limit: Some(16)
        })
    );
    let txn = host.send_with_external(b"hdr", &[7; 16]).expect("fits");
    assert!(host.wait_completion(txn, T).is_some());
    g.teardown();
}

/// `STATUS_PENDING` from `VmbChannelPacketGetExternalData`: the guest returns without retiring
/// the packet, and the model delivers it again at PASSIVE_LEVEL, where the data is ready.
#[test]
fn pending_external_data_is_delivered_again_at_passive() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_packet(|g, d| {
            let (s, mdl) = external(d.tok, 0);
            if s == NtStatus::STATUS_PENDING {
                g.event(format!("pending at {:?}", d.irql));
                return; // KMCL's: not retired
            }
            g.event(format!("mapped at {:?}", d.irql));
            let bytes = mdl_bytes(mdl).unwrap_or_default();
            complete(d.tok, &bytes);
        })
        .max_external(4096, 1)
        .opened();
    host.faults().external_data_pending(1);
    let txn = host.send_with_external(b"hdr", b"late data").expect("send");
    let c = host
        .wait_completion(txn, T)
        .expect("completed after the redelivery");
    assert_eq!(c.payload, b"late data");
    assert_eq!(
        g.event_names(),
        [
            "opened",
            "started",
            "post_started",
            "pending at Dispatch",
            "mapped at Passive"
        ]
        .map(String::from)
    );
    assert_eq!(host.stats().redelivered_at_passive, 1);
    g.teardown();
}
