//! The hostile-host hooks: completions for transactions that are not in flight (twice, late,
//! made up), and a rescind that arrives while the open sequence is still running.

use std::sync::{Arc, Mutex};

use kmcl_model::{ChannelState, NtStatus, connected};

use crate::common::*;

#[test]
fn a_made_up_transaction_id_is_ignored_and_counted() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    host.complete_transaction(0, NtStatus::STATUS_SUCCESS, b"zero");
    host.complete_transaction(u64::MAX, NtStatus::STATUS_SUCCESS, b"huge");
    host.complete_transaction(12_345, NtStatus::STATUS_UNSUCCESSFUL, &[]);
    let s = host.stats();
    assert_eq!(s.ignored_host_completions, 3);
    assert_eq!(s.completed_by_host, 0);
    g.teardown();
}

#[test]
fn a_second_completion_of_the_same_transaction_is_ignored() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"once", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("the guest's packet");
    let id = gp.id();
    gp.complete(NtStatus::STATUS_SUCCESS, b"first");
    host.complete_transaction(id, NtStatus::STATUS_SUCCESS, b"second");
    host.complete_transaction(id, NtStatus::STATUS_UNSUCCESSFUL, b"third");
    assert_eq!(c.len(), 1, "the completion routine ran exactly once");
    assert_eq!(c.all()[0].data, b"first");
    let s = host.stats();
    assert_eq!((s.completed_by_host, s.ignored_host_completions), (1, 2));
    assert_eq!(s.packets_allocated, 0);
    g.teardown();
}

#[test]
fn completing_by_id_works_like_guest_packet_complete() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"x", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("the guest's packet");
    host.complete_transaction(gp.id(), NtStatus::STATUS_SUCCESS, b"by id");
    drop(gp);
    assert_eq!(c.all()[0].data, b"by id");
    assert_eq!(host.stats().ignored_host_completions, 0);
    g.teardown();
}

#[test]
fn a_rescind_queued_behind_opened_fails_post_started_sync_requests_then_closes() {
    let host = connected();
    let _guard = host.violation_guard();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let g = GuestBuilder::new(&host)
        .on_post_started(move |g| {
            let (s, _) = sync_request(g.ch, b"negotiate", WAIT, 8, None);
            *lock(&seen2) = Some(s);
        })
        .enabled();
    host.faults().rescind_after_opened();
    host.open().expect("the open sequence ran");
    assert_eq!(*lock(&seen), Some(NtStatus::STATUS_DEVICE_REMOVED));
    assert_eq!(
        g.event_names(),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    assert_eq!(host.stats().sync_requests, 0, "refused before it was sent");
    // One-shot: the next open is a normal one.
    assert_eq!(enable(g.ch), NtStatus::STATUS_SUCCESS);
    *lock(&seen) = None;
    host.set_responder(|_| Some((NtStatus::STATUS_SUCCESS, vec![0; 8])));
    host.open().expect("open");
    assert_eq!(*lock(&seen), Some(NtStatus::STATUS_SUCCESS));
    g.teardown();
}

#[test]
fn a_rescind_while_post_started_waits_for_the_host_fails_the_request() {
    let host = Arc::new(connected());
    let _guard = host.violation_guard();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let g = GuestBuilder::new(&host)
        .on_post_started(move |g| {
            let (s, _) = sync_request(g.ch, b"negotiate", WAIT, 8, None);
            *lock(&seen2) = Some(s);
        })
        .enabled();
    let open = host.open_async();
    let request = host
        .recv(T)
        .expect("PostStarted's request reached the host");
    host.rescind(); // returns once the open returned and the channel closed
    open.wait().expect("the open sequence ran");
    assert_eq!(*lock(&seen), Some(NtStatus::STATUS_DEVICE_REMOVED));
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    // The host answers after all: too late, ignored.
    request.complete(NtStatus::STATUS_SUCCESS, b"too late");
    let s = host.stats();
    assert_eq!((s.completed_by_host, s.ignored_host_completions), (0, 1));
    assert_eq!(s.cancelled_at_close, 1);
    assert!(
        g.event_names()
            .ends_with(&["suspend".into(), "closed".into()])
    );
    g.teardown();
}
