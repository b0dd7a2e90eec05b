//! Guest-to-host packets through kmcl: completion closures with the host's status and
//! response, out of order and from other threads; NULL allocation; failed sends; packets in
//! flight at teardown; synchronous requests.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Mode, Recorder, T, enabled};
use kmcl::{NtStatus, SendFlags, Timeout};

#[test]
fn host_completions_out_of_order_from_other_threads_reach_each_closure_once() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let (tx, rx) = mpsc::channel();
    for i in 0u32..16 {
        let packet = channel.handle().allocate_packet().expect("allocate");
        let tx = tx.clone();
        packet
            .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, move |c| {
                tx.send((i, c.status, c.response.to_vec())).unwrap();
            })
            .map_err(|e| e.status)
            .expect("send");
    }
    let mut received: Vec<_> = (0..16)
        .map(|_| host.recv(T).expect("guest packet"))
        .collect();
    received.reverse();
    let b = received.split_off(8);
    let a = received;
    let complete = |pkts: Vec<kmcl_model::GuestPacket>| {
        std::thread::spawn(move || {
            for p in pkts {
                let mut resp = p.payload.clone();
                resp.extend_from_slice(b"-ack");
                p.complete(NtStatus::STATUS_SUCCESS, &resp);
            }
        })
    };
    let (t1, t2) = (complete(a), complete(b));
    t1.join().unwrap();
    t2.join().unwrap();
    let mut results: Vec<_> = (0..16)
        .map(|_| rx.recv_timeout(T).expect("closure ran"))
        .collect();
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "each closure exactly once"
    );
    results.sort_by_key(|r| r.0);
    for (i, (n, status, resp)) in results.into_iter().enumerate() {
        assert_eq!(n as usize, i);
        assert_eq!(status, NtStatus::STATUS_SUCCESS);
        let mut want = n.to_le_bytes().to_vec();
        want.extend_from_slice(b"-ack");
        assert_eq!(resp, want);
    }
    assert_eq!(
        host.stats().packets_allocated,
        0,
        "every packet freed after completion"
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_null_allocation_is_an_error_value() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    host.faults().fail_allocations(1);
    let err = channel
        .handle()
        .allocate_packet()
        .expect_err("NULL from VmbPacketAllocate");
    assert_eq!(err, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert!(
        channel.handle().allocate_packet().is_ok(),
        "only the planned allocation fails"
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_failed_send_returns_the_packet_and_dropping_it_frees_it() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    host.faults()
        .fail_sends(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    let packet = channel.handle().allocate_packet().expect("allocate");
    let Err(kmcl::SendError {
        packet,
        status,
        on_complete: _,
    }) = packet.send(b"nope", SendFlags::WAIT_FOR_COMPLETION, |_| {
        panic!("a failed send never completes")
    })
    else {
        panic!("the planned failure did not happen");
    };
    assert_eq!(status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(host.stats().packets_allocated, 1);
    // The packet came back (the model ran no completion routine) and can be sent again.
    let (tx, rx) = mpsc::channel();
    packet
        .expect("no routine ran, so the packet comes back")
        .send(b"retry", SendFlags::WAIT_FOR_COMPLETION, move |c| {
            tx.send(c.status).unwrap()
        })
        .map_err(|e| e.status)
        .expect("second send");
    host.recv(T)
        .expect("packet")
        .complete(NtStatus::STATUS_SUCCESS, &[]);
    assert_eq!(rx.recv_timeout(T).unwrap(), NtStatus::STATUS_SUCCESS);
    // And an unsent packet is freed on drop.
    drop(channel.handle().allocate_packet().expect("allocate"));
    assert_eq!(host.stats().packets_allocated, 0);
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_send_without_completion_request_completes_at_once() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let (tx, rx) = mpsc::channel();
    let packet = channel.handle().allocate_packet().expect("allocate");
    packet
        .send(b"fire and forget", SendFlags::NONE, move |c| {
            tx.send(c.status).unwrap()
        })
        .map_err(|e| e.status)
        .expect("send");
    assert_eq!(rx.recv_timeout(T).unwrap(), NtStatus::STATUS_SUCCESS);
    assert_eq!(
        host.recv(T).expect("host got it").payload,
        b"fire and forget"
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn packets_in_flight_at_teardown_complete_cancelled_and_are_freed() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let (tx, rx) = mpsc::channel();
    for _ in 0..4 {
        let tx = tx.clone();
        let packet = channel.handle().allocate_packet().expect("allocate");
        packet
            .send(
                b"never answered",
                SendFlags::WAIT_FOR_COMPLETION,
                move |c| {
                    tx.send(c.status).unwrap();
                },
            )
            .map_err(|e| e.status)
            .expect("send");
    }
    drop(channel);
    for _ in 0..4 {
        assert_eq!(rx.recv_timeout(T).unwrap(), NtStatus::STATUS_CANCELLED);
    }
    assert_eq!(host.stats().packets_allocated, 0);
    host.assert_no_violations();
}

#[test]
fn a_synchronous_request_gets_the_hosts_answer_or_times_out() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    host.set_responder(|p| {
        (p.synchronous && p.payload.starts_with(b"Q")).then(|| {
            let mut r = p.payload.clone();
            r[0] = b'A';
            (NtStatus::STATUS_SUCCESS, r)
        })
    });
    let mut resp = [0u8; 16];
    let n = channel
        .handle()
        .send_sync(b"Question", &mut resp, Timeout::After(T))
        .expect("answered");
    assert_eq!(&resp[..n], b"Auestion");

    // Not a multiple of 8: only the first 8 bytes are offered; the answer must fit them.
    let mut odd = [0u8; 13];
    let n = channel
        .handle()
        .send_sync(b"Qshort", &mut odd, Timeout::After(T))
        .expect("fits");
    assert_eq!(&odd[..n], b"Ashort");

    // The responder ignores this one: the wait times out and KMCL cancels it.
    let err = channel
        .handle()
        .send_sync(
            b"unanswered",
            &mut resp,
            Timeout::After(Duration::from_millis(50)),
        )
        .expect_err("times out");
    assert_eq!(err, NtStatus::STATUS_CANCELLED);
    host.clear_responder();
    drop(channel);
    host.assert_no_violations();
}

/// A KMCL that runs the completion routine of a send it refused (the model can be told to):
/// the closure runs once, with the refusal's status, from the routine; the error returns
/// neither the packet nor the closure, and the packet is freed exactly once.
#[test]
fn a_failed_send_whose_routine_runs_anyway_completes_and_frees_once() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    host.faults().run_routine_of_failed_sends(true);
    host.faults()
        .fail_sends(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    let packet = channel.handle().allocate_packet().expect("allocate");
    let (tx, rx) = mpsc::channel();
    let Err(e) = packet.send(b"nope", SendFlags::WAIT_FOR_COMPLETION, move |c| {
        tx.send(c.status).unwrap();
    }) else {
        panic!("the planned failure did not happen");
    };
    assert_eq!(e.status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert!(e.packet.is_none(), "the routine took the packet");
    assert!(e.on_complete.is_none(), "the routine ran the closure");
    // Reporting the error through the same path does nothing more.
    e.complete_with_status();
    assert_eq!(
        rx.recv_timeout(T).unwrap(),
        NtStatus::STATUS_INSUFFICIENT_RESOURCES
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "once");
    assert_eq!(host.stats().packets_allocated, 0, "freed");
    // And a routine that does not run leaves both with the caller, as before.
    host.faults().run_routine_of_failed_sends(false);
    host.faults()
        .fail_sends(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    let packet = channel.handle().allocate_packet().expect("allocate");
    let (tx, rx) = mpsc::channel();
    let Err(e) = packet.send(b"nope", SendFlags::WAIT_FOR_COMPLETION, move |c| {
        tx.send(c.status).unwrap();
    }) else {
        panic!("the planned failure did not happen");
    };
    assert!(e.packet.is_some() && e.on_complete.is_some());
    e.complete_with_status();
    assert_eq!(
        rx.recv_timeout(T).unwrap(),
        NtStatus::STATUS_INSUFFICIENT_RESOURCES
    );
    assert_eq!(
        host.stats().packets_allocated,
        0,
        "the returned packet was dropped: freed"
    );
    drop(channel);
    host.assert_no_violations();
}
