//! `VmbChannelSendSynchronousRequest` (§6.3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmcl_model::{NtStatus, connected};

use crate::common::*;

/// Relative timeout in KeWaitForSingleObject units (negative, 100 ns).
fn relative(d: Duration) -> i64 {
    -i64::try_from(d.as_nanos() / 100).expect("short")
}

#[test]
fn answered_by_a_host_thread() {
    let host = Arc::new(connected());
    let g = GuestBuilder::new(&host).opened();
    let h = Arc::clone(&host);
    let answer = std::thread::spawn(move || {
        let gp = h.recv(T).expect("request");
        assert!(gp.synchronous && gp.completion_requested());
        assert_eq!(gp.payload, b"question");
        gp.complete(NtStatus::STATUS_SUCCESS, b"answer");
    });
    let (s, resp) = sync_request(g.ch, b"question", WAIT, 64, None);
    answer.join().expect("host");
    assert_eq!(
        (s, resp.as_slice()),
        (NtStatus::STATUS_SUCCESS, &b"answer"[..])
    );
    assert_eq!(host.stats().sync_requests, 1);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn host_status_is_returned() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|_| Some((NtStatus::STATUS_REVISION_MISMATCH, vec![1, 2])));
    let g = GuestBuilder::new(&host).opened();
    let (s, resp) = sync_request(g.ch, b"v2?", WAIT, 8, Some(relative(T)));
    assert_eq!(
        (s, resp.as_slice()),
        (NtStatus::STATUS_REVISION_MISMATCH, &[1u8, 2][..])
    );
    g.teardown();
}

#[test]
fn response_larger_than_the_buffer_is_truncated_with_buffer_overflow() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|_| Some((NtStatus::STATUS_SUCCESS, (0..20).collect())));
    let g = GuestBuilder::new(&host).opened();
    let (s, resp) = sync_request(g.ch, b"big", WAIT, 8, None);
    assert_eq!(s, NtStatus::STATUS_BUFFER_OVERFLOW);
    assert_eq!(resp, (0..8).collect::<Vec<u8>>());
    g.teardown();
}

#[test]
fn timeout_cancels_the_request() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let t0 = Instant::now();
    let (s, _) = sync_request(
        g.ch,
        b"nobody answers",
        WAIT,
        8,
        Some(relative(Duration::from_millis(50))),
    );
    assert_eq!(s, NtStatus::STATUS_CANCELLED);
    assert!(t0.elapsed() >= Duration::from_millis(45));
    // The host saw it; completing it now is a no-op.
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"late");
    assert_eq!(host.stats().completed_by_host, 0);
    g.teardown();
}

#[test]
fn rescind_fails_a_waiting_request_with_device_removed() {
    let host = Arc::new(connected());
    let g = GuestBuilder::new(&host).opened();
    let h = Arc::clone(&host);
    let closer = std::thread::spawn(move || {
        let _gp = h.recv(T).expect("request seen");
        h.rescind();
    });
    let (s, _) = sync_request(g.ch, b"q", WAIT, 8, None);
    closer.join().expect("host");
    assert_eq!(s, NtStatus::STATUS_DEVICE_REMOVED);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn size_not_a_multiple_of_8_is_invalid() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let (s, _) = sync_request(g.ch, b"q", WAIT, 12, None);
    assert_eq!(s, NtStatus::STATUS_INVALID_PARAMETER);
    assert_eq!(host.stats().sync_requests, 0);
    g.teardown();
}

#[test]
fn zero_timeout_with_a_full_ring_is_buffer_overflow() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).ring(1, 1).opened();
    // Nobody receives: fill the one-page outgoing ring with unanswered packets.
    let c = Completions::new(true);
    for _ in 0..4 {
        assert_eq!(
            send(tracked_packet(g.ch, c), &[0; 1000], WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let (s, _) = sync_request(g.ch, &[0; 1000], 0, 0, Some(0));
    assert_eq!(s, NtStatus::STATUS_BUFFER_OVERFLOW);
    // Once the host drains the ring, the same request fits.
    while let Some(gp) = host.recv(Duration::from_millis(10)) {
        gp.complete(NtStatus::STATUS_SUCCESS, b"");
    }
    let (s, _) = sync_request(g.ch, &[0; 1000], 0, 0, Some(0));
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    g.teardown();
}

#[test]
fn post_started_may_negotiate_synchronously() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|gp| {
        (gp.payload == b"hello").then(|| (NtStatus::STATUS_SUCCESS, b"v1".to_vec()))
    });
    let g = GuestBuilder::new(&host)
        .on_post_started(|g| {
            let (s, r) = sync_request(g.ch, b"hello", WAIT, 8, None);
            g.event(format!("negotiated {s} {}", String::from_utf8_lossy(&r)));
        })
        .opened();
    assert!(
        g.event_names()
            .iter()
            .any(|e| e == "negotiated STATUS_SUCCESS (0x00000000) v1"),
        "{:?}",
        g.event_names()
    );
    g.teardown();
}
