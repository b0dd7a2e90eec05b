//! Guest → host packets (§6.2).

use std::sync::Arc;
use std::time::Duration;

use kmcl_model::{Irql, NtStatus, connected, mdl_create, mdl_free, with_irql};

use crate::common::*;

#[test]
fn default_completion_routine_frees_the_packet() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(host.stats().packets_allocated, 1);
    assert_eq!(send(p, b"hello", WAIT), NtStatus::STATUS_SUCCESS);
    assert_eq!(host.stats().packets_in_flight, 1);
    let gp = host.recv(T).expect("the host sees the packet");
    assert_eq!(
        (gp.payload.as_slice(), gp.flags, gp.synchronous),
        (&b"hello"[..], WAIT, false)
    );
    assert!(gp.completion_requested());
    gp.complete(NtStatus::STATUS_SUCCESS, b"resp");
    let s = host.stats();
    assert_eq!(
        (
            s.packets_allocated,
            s.packets_in_flight,
            s.completed_by_host
        ),
        (0, 0, 1)
    );
    g.teardown();
}

#[test]
fn custom_routine_sees_status_and_response_at_dispatch_then_the_guest_frees() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(false);
    let p = tracked_packet(g.ch, c);
    assert_eq!(send(p, b"q", WAIT), NtStatus::STATUS_SUCCESS);
    let gp = host.recv(T).expect("recv");
    assert_eq!(c.len(), 0, "no completion before the host completes");
    let me = std::thread::current().id();
    gp.complete(NtStatus::STATUS_DATA_ERROR, b"host says no");
    let d = &c.all()[0];
    assert_eq!(
        (d.status, d.data.as_slice()),
        (NtStatus::STATUS_DATA_ERROR, &b"host says no"[..])
    );
    assert_eq!(d.irql, Irql::Dispatch);
    assert_eq!(d.thread, me, "runs on the completing host thread");
    assert_eq!(kmcl_model::current_irql(), Irql::Passive, "IRQL restored");
    // The packet may be reused after its routine ran, then freed by the guest.
    assert_eq!(send(p, b"again", WAIT), NtStatus::STATUS_SUCCESS);
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(c.len(), 2);
    assert_eq!(host.stats().packets_allocated, 1);
    packet_free(p);
    assert_eq!(host.stats().packets_allocated, 0);
    g.teardown();
}

#[test]
fn host_completes_out_of_order_from_other_threads() {
    let host = Arc::new(connected());
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    for i in 0..20u8 {
        assert_eq!(
            send(tracked_packet(g.ch, c), &[i], WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let mut got: Vec<_> = (0..20).map(|_| host.recv(T).expect("recv")).collect();
    got.reverse();
    let (a, b): (Vec<_>, Vec<_>) = got.into_iter().partition(|gp| gp.payload[0] % 2 == 0);
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|batch| {
            std::thread::spawn(move || {
                for gp in batch {
                    let echo = gp.payload.clone();
                    gp.complete(NtStatus::STATUS_SUCCESS, &echo);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("host thread");
    }
    let all = c.all();
    assert_eq!(all.len(), 20);
    let mut seen: Vec<u8> = all.iter().map(|d| d.data[0]).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u8>>());
    assert_eq!(host.stats().packets_allocated, 0);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn without_wait_for_completion_the_routine_runs_before_send_returns() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    let p = tracked_packet(g.ch, c);
    assert_eq!(send(p, b"fire and forget", 0), NtStatus::STATUS_SUCCESS);
    let all = c.all();
    assert_eq!(all.len(), 1, "inline");
    assert_eq!(
        (all[0].status, all[0].irql),
        (NtStatus::STATUS_SUCCESS, Irql::Dispatch)
    );
    let gp = host.recv(T).expect("the host still receives it");
    assert!(!gp.completion_requested());
    gp.complete(NtStatus::STATUS_SUCCESS, b"ignored");
    assert_eq!(c.len(), 1, "exactly once per send");
    assert_eq!(host.stats().packets_allocated, 0);
    g.teardown();
}

#[test]
fn sends_before_the_open_are_queued_until_open() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"early", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    assert!(
        host.recv(Duration::from_millis(50)).is_none(),
        "not sent before Opened"
    );
    host.open().expect("open");
    let gp = host.recv(T).expect("sent at open");
    assert_eq!(gp.payload, b"early");
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(c.len(), 1);
    g.teardown();
}

#[test]
fn queued_sends_are_cancelled_when_a_never_opened_channel_is_disabled() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"early", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    g.teardown();
    assert_eq!(c.all()[0].status, NtStatus::STATUS_CANCELLED);
    assert_eq!(host.stats().cancelled_at_close, 1);
}

#[test]
fn close_cancels_in_flight_packets_with_status_cancelled() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    for _ in 0..3 {
        assert_eq!(
            send(tracked_packet(g.ch, c), b"x", WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let kept = host.recv(T).expect("recv");
    host.rescind();
    let all = c.all();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .all(|d| d.status == NtStatus::STATUS_CANCELLED && d.irql == Irql::Dispatch)
    );
    assert!(
        host.recv(Duration::from_millis(20)).is_none(),
        "the closed channel's packets are gone"
    );
    kept.complete(NtStatus::STATUS_SUCCESS, b"too late");
    assert_eq!(c.len(), 3, "a late host completion is a no-op");
    let s = host.stats();
    assert_eq!(
        (
            s.cancelled_at_close,
            s.packets_allocated,
            s.packets_in_flight
        ),
        (3, 0, 0)
    );
    g.teardown();
}

#[test]
fn fault_plan_fails_allocations_and_sends() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    host.faults().fail_allocations(2);
    assert!(packet_allocate(g.ch).is_none());
    assert!(packet_allocate(g.ch).is_none());
    let c = Completions::new(false);
    let p = tracked_packet(g.ch, c);
    host.faults()
        .fail_sends(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(c.len(), 0, "a failed send runs no routine");
    assert_eq!(host.stats().packets_in_flight, 0);
    // The caller still owns the packet: it may send it again.
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_SUCCESS);
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    packet_free(p);
    g.teardown();
}

#[test]
fn responder_answers_inline_on_the_sending_thread() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|gp| {
        let mut r = gp.payload.clone();
        r.push(b'!');
        Some((NtStatus::STATUS_SUCCESS, r))
    });
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"ping", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let d = &c.all()[0];
    assert_eq!(d.data, b"ping!");
    assert_eq!(d.thread, std::thread::current().id());
    host.clear_responder();
    assert_eq!(
        send(tracked_packet(g.ch, c), b"pong", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    assert_eq!(c.len(), 1);
    host.recv(T)
        .expect("queued now")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    g.teardown();
}

#[test]
fn responder_may_decline_and_queue_for_recv() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|gp| {
        (gp.payload != b"slow").then(|| (NtStatus::STATUS_SUCCESS, Vec::new()))
    });
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"fast", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    assert_eq!(
        send(tracked_packet(g.ch, c), b"slow", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("the declined one");
    assert_eq!(gp.payload, b"slow");
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(c.len(), 2);
    g.teardown();
}

#[test]
fn caller_memory_packets_need_a_routine_and_the_size() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).max_packet(512).opened();
    let need = sizeof_packet(g.ch);
    assert_eq!(need, 512 + 0x100);
    let mem = packet_memory(usize::try_from(need).expect("small"));
    assert_eq!(
        packet_initialize(g.ch, mem, need - 1).0,
        NtStatus::STATUS_INVALID_PARAMETER_3
    );
    let (s, p) = packet_initialize(g.ch, mem, need);
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    let c = Completions::new(false);
    packet_set_pointer(p, std::ptr::from_ref(c).expose_provenance());
    set_routine(p, Some(cb_completion));
    assert_eq!(
        send(p, b"from caller memory", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"ok");
    let d = &c.all()[0];
    assert_eq!((d.packet, d.data.as_slice()), (p, &b"ok"[..]));
    assert_eq!(packet_channel(p), g.ch);
    assert_eq!(
        host.stats().packets_allocated,
        0,
        "caller memory is not library-allocated"
    );
    g.teardown();
}

#[test]
fn external_mdl_and_pfns_reach_the_host() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    let mdl = mdl_create(b"0123456789");
    assert_eq!(
        send_mdl(tracked_packet(g.ch, c), b"m", mdl, 2, 5, WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("recv");
    assert_eq!(gp.external.as_deref(), Some(&b"23456"[..]));
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(
        send_mdl(tracked_packet(g.ch, c), b"m", mdl, 0, 0, WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("recv");
    assert_eq!(
        gp.external.as_deref(),
        Some(&b"0123456789"[..]),
        "length 0: the whole MDL"
    );
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(
        send_pfns(tracked_packet(g.ch, c), b"p", &[7, 8, 9], WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("recv");
    assert_eq!(gp.pfns.as_deref(), Some(&[7u64, 8, 9][..]));
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert!(mdl_free(mdl));
    assert!(!mdl_free(mdl));
    assert_eq!(c.len(), 3);
    g.teardown();
}

#[test]
fn packets_may_be_sent_and_freed_at_dispatch() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    with_irql(Irql::Dispatch, || {
        let p = packet_allocate(g.ch).expect("allocate");
        packet_set_pointer(p, 42);
        assert_eq!(packet_get_pointer(p), 42);
        assert_eq!(packet_channel(p), g.ch);
        assert_eq!(send(p, b"dpc", WAIT), NtStatus::STATUS_SUCCESS);
    });
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    g.teardown();
}
