//! Cancelling PING and SEND requests that wait for the host: the request completes at once with
//! `STATUS_CANCELLED`; the packet, which KMCL cannot recall, stays in flight until the host
//! answers or the channel closes, and that answer is still counted (as a failed PING or SEND)
//! and never completes the request a second time. Nothing leaks and the model's verifier sees
//! no violation.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{T, finish, ioctl, ready, send_input};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{Pending, Simulation};
use vmbmsg_proto::ioctl::{IOCTL_VMBMSG_PING, IOCTL_VMBMSG_SEND, PingOut, SendOut, read_output};
use vmbmsg_proto::wire::{GuestBody, MessageKind, Reply, parse_guest_message};

// ---- helpers ----------------------------------------------------------------------------------

fn ping(sim: &Simulation) -> Pending {
    sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>())
}

fn send(sim: &Simulation, payload: &[u8]) -> Pending {
    sim.ioctl(
        IOCTL_VMBMSG_SEND,
        &send_input(payload),
        size_of::<SendOut>(),
    )
}

/// A guest packet the host holds: the model's transaction id and the correct reply to it.
struct Held {
    txn: u64,
    reply: Vec<u8>,
}

/// The correct reply to a guest PING or SEND.
fn good_reply(payload: &[u8]) -> Vec<u8> {
    let m = parse_guest_message(payload).expect("the guest sends well-formed messages");
    let reply = match m.body {
        GuestBody::Ping { nonce } => Reply::ping(m.version, m.id, nonce),
        _ => Reply::status_only(MessageKind::SEND, m.version, m.id, NtStatus::STATUS_SUCCESS),
    };
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Makes the host silent: it answers no guest packet, and hands each one to the test instead
/// (the simulation's host thread keeps the packets in flight).
fn silent_host(sim: &Simulation) -> Receiver<Held> {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    sim.host().set_responder(move |gp| {
        let held = Held {
            txn: gp.id(),
            reply: good_reply(&gp.payload),
        };
        let _ = tx.lock().unwrap().send(held);
        None
    });
    rx
}

/// The host answers `held` correctly, late.
fn answer(sim: &Simulation, held: &Held) {
    sim.host()
        .complete_transaction(held.txn, NtStatus::STATUS_SUCCESS, &held.reply);
}

/// Ends a test: no request waiting, every packet freed, no violation.
fn finish_clean(sim: Simulation) {
    sim.core().channel_down();
    assert_eq!(sim.core().waiting_requests(), 0);
    let h = sim.host().stats();
    assert_eq!(h.packets_allocated, 0, "no packet leaked: {h:?}");
    assert_eq!(h.packets_in_flight, 0, "{h:?}");
    finish(sim);
}

// ---- one request ------------------------------------------------------------------------------

#[test]
fn a_ping_to_a_silent_host_is_cancelled_at_once_and_the_late_answer_is_counted() {
    let sim = ready();
    let held = silent_host(&sim);
    let p = ping(&sim);
    let packet = held.recv_timeout(T).expect("the PING reached the host");
    assert!(p.try_get().is_none(), "waits for the host");
    assert_eq!(sim.core().waiting_requests(), 1);

    let started = Instant::now();
    assert!(p.cancel(), "a waiting PING is cancellable");
    // Completed by the cancel itself, not later.
    let c = p.try_get().expect("completed when cancelled");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
    assert!(c.output.is_empty());
    assert!(!p.cancel(), "nothing left to cancel");
    assert_eq!(sim.core().waiting_requests(), 0);
    // The packet cannot be recalled: it is still the host's, and not counted yet.
    let h = sim.host().stats();
    assert_eq!((h.packets_in_flight, h.packets_allocated), (1, 1));
    let s = sim.core().stats();
    assert_eq!((s.ping_ok.get(), s.ping_failed.get()), (0, 0));

    // The host answers after all: counted once, as a failure; the request is not completed
    // again (its completion stays the cancellation).
    answer(&sim, &packet);
    let s = sim.core().stats();
    assert_eq!((s.ping_ok.get(), s.ping_failed.get()), (0, 1));
    assert_eq!(
        s.ping_rtt_count.get(),
        0,
        "no round trip for a cancelled PING"
    );
    assert_eq!(
        p.try_get().map(|c| c.status),
        Some(NtStatus::STATUS_CANCELLED)
    );
    let h = sim.host().stats();
    assert_eq!(
        h.ignored_host_completions, 0,
        "the answer reached the driver"
    );
    assert_eq!((h.packets_in_flight, h.packets_allocated), (0, 0));
    finish_clean(sim);
}

#[test]
fn a_send_to_a_silent_host_is_cancelled_at_once_and_the_late_answer_is_counted() {
    let sim = ready();
    let held = silent_host(&sim);
    let s = send(&sim, b"into the void");
    let packet = held.recv_timeout(T).expect("the SEND reached the host");
    assert!(s.cancel());
    let c = s.try_get().expect("completed when cancelled");
    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
    assert!(c.output.is_empty());
    assert_eq!(sim.host().stats().packets_in_flight, 1);
    answer(&sim, &packet);
    let st = sim.core().stats();
    assert_eq!((st.send_ok.get(), st.send_failed.get()), (0, 1));
    assert_eq!(
        s.try_get().map(|c| c.status),
        Some(NtStatus::STATUS_CANCELLED)
    );
    assert_eq!(sim.host().stats().packets_allocated, 0);
    finish_clean(sim);
}

#[test]
fn a_request_that_is_not_cancelled_still_gets_the_hosts_answer() {
    let sim = ready();
    let held = silent_host(&sim);
    let p = ping(&sim);
    let s = send(&sim, b"late but fine");
    let first = held.recv_timeout(T).unwrap();
    let second = held.recv_timeout(T).unwrap();
    answer(&sim, &first);
    answer(&sim, &second);
    let p = p.wait(T).unwrap();
    assert_eq!(p.status, NtStatus::STATUS_SUCCESS);
    assert!(read_output::<PingOut>(&p.output).is_ok());
    let s = s.wait(T).unwrap();
    assert_eq!(s.status, NtStatus::STATUS_SUCCESS);
    assert_eq!(
        read_output::<SendOut>(&s.output).unwrap().host_status.get(),
        0
    );
    let st = sim.core().stats();
    assert_eq!((st.ping_ok.get(), st.send_ok.get()), (1, 1));
    assert_eq!((st.ping_failed.get(), st.send_failed.get()), (0, 0));
    finish_clean(sim);
}

#[test]
fn cancelled_then_the_channel_goes_down_counts_each_once() {
    let sim = ready();
    let held = silent_host(&sim);
    let p = ping(&sim);
    let s = send(&sim, b"cancelled");
    let kept = ping(&sim);
    for _ in 0..3 {
        held.recv_timeout(T).unwrap();
    }
    assert!(p.cancel() && s.cancel());
    assert_eq!(sim.core().waiting_requests(), 1);
    assert_eq!(sim.host().stats().packets_in_flight, 3);
    sim.core().channel_down();
    // KMCL cancels the three transactions: the one still waiting completes with
    // STATUS_CANCELLED now, the cancelled ones are only counted.
    assert_eq!(kept.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    assert_eq!(p.try_get().unwrap().status, NtStatus::STATUS_CANCELLED);
    assert_eq!(s.try_get().unwrap().status, NtStatus::STATUS_CANCELLED);
    let st = sim.core().stats();
    assert_eq!((st.ping_ok.get(), st.ping_failed.get()), (0, 2));
    assert_eq!((st.send_ok.get(), st.send_failed.get()), (0, 1));
    let h = sim.host().stats();
    assert_eq!(h.cancelled_at_close, 3);
    assert_eq!((h.packets_in_flight, h.packets_allocated), (0, 0));
    finish_clean(sim);
}

#[test]
fn a_request_cancelled_before_the_driver_could_mark_it_is_never_sent() {
    let sim = ready();
    let before = sim.host().stats().received_from_guest;
    // The I/O manager sets the IRP's Cancel flag while the request is on its way to the
    // driver: WdfRequestMarkCancelableEx then fails with STATUS_CANCELLED.
    let (request, pending) = sim.core().platform().request(&[], size_of::<PingOut>());
    assert!(
        !pending.cancel(),
        "nothing to cancel yet: only the flag is set"
    );
    sim.core().handle_ioctl(IOCTL_VMBMSG_PING, request);
    let c = pending.try_get().expect("completed at once");
    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
    let h = sim.host().stats();
    assert_eq!(h.received_from_guest, before, "no packet sent");
    assert_eq!(h.packets_allocated, 0, "the allocated packet was freed");
    assert_eq!(sim.core().stats().ping_failed.get(), 1);
    assert_eq!(sim.core().waiting_requests(), 0);
    // The next one goes through.
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    finish_clean(sim);
}

// ---- races ------------------------------------------------------------------------------------

/// The caller cancels while the host answers, from two threads released together, many times
/// over, PING and SEND alternately. Each request completes exactly once, with the answer or
/// with STATUS_CANCELLED, and every transaction is counted once.
#[test]
fn a_cancel_racing_the_hosts_answer_completes_each_request_once() {
    const ROUNDS: usize = 1000;
    let sim = ready();
    let held = silent_host(&sim);
    let (mut answered, mut cancelled) = (0u64, 0u64);
    for round in 0..ROUNDS {
        let is_ping = round % 2 == 0;
        let pending = if is_ping {
            ping(&sim)
        } else {
            send(&sim, &round.to_le_bytes())
        };
        let packet = held.recv_timeout(T).expect("the request reached the host");
        let go = Arc::new(Barrier::new(2));
        let cancelled_it = std::thread::scope(|s| {
            let host = s.spawn(|| {
                go.wait();
                answer(&sim, &packet);
            });
            go.wait();
            let cancelled_it = pending.cancel();
            host.join().unwrap();
            cancelled_it
        });
        let c = pending.wait(T).expect("completed");
        match c.status {
            NtStatus::STATUS_SUCCESS => {
                assert!(
                    !cancelled_it,
                    "round {round}: cancelled, yet completed with the answer"
                );
                if is_ping {
                    assert!(read_output::<PingOut>(&c.output).is_ok());
                } else {
                    assert!(read_output::<SendOut>(&c.output).is_ok());
                }
                answered += 1;
            }
            NtStatus::STATUS_CANCELLED => {
                assert!(
                    cancelled_it,
                    "round {round}: STATUS_CANCELLED without a cancel"
                );
                assert!(c.output.is_empty());
                cancelled += 1;
            }
            other => panic!("round {round}: {other}"),
        }
        assert_eq!(sim.core().waiting_requests(), 0, "round {round}");
    }
    assert_eq!(answered + cancelled, ROUNDS as u64);
    let s = sim.core().stats();
    assert_eq!(s.ping_ok.get() + s.send_ok.get(), answered);
    assert_eq!(s.ping_failed.get() + s.send_failed.get(), cancelled);
    assert_eq!(
        s.ping_ok.get() + s.ping_failed.get(),
        ROUNDS.div_ceil(2) as u64
    );
    let h = sim.host().stats();
    assert_eq!(
        h.ignored_host_completions, 0,
        "every answer reached the driver"
    );
    assert_eq!((h.packets_in_flight, h.packets_allocated), (0, 0));
    eprintln!("{ROUNDS} races: {answered} answered first, {cancelled} cancelled first");
    finish_clean(sim);
}

/// Many requests waiting at once (the driver's table of waiting requests grows), cancelled in
/// another order than they were sent, then answered.
#[test]
fn many_waiting_requests_cancelled_out_of_order() {
    const N: usize = 100;
    let sim = ready();
    let held = silent_host(&sim);
    let pending: Vec<Pending> = (0..N)
        .map(|i| {
            if i % 3 == 0 {
                send(&sim, b"x")
            } else {
                ping(&sim)
            }
        })
        .collect();
    let packets: Vec<Held> = (0..N).map(|_| held.recv_timeout(T).unwrap()).collect();
    assert_eq!(sim.core().waiting_requests(), N);
    // Cancel the odd ones, last first.
    for p in pending.iter().skip(1).step_by(2).rev() {
        assert!(p.cancel());
    }
    assert_eq!(sim.core().waiting_requests(), N / 2);
    for packet in packets.iter().rev() {
        answer(&sim, packet);
    }
    for (i, p) in pending.iter().enumerate() {
        let want = if i % 2 == 1 {
            NtStatus::STATUS_CANCELLED
        } else {
            NtStatus::STATUS_SUCCESS
        };
        assert_eq!(p.wait(T).unwrap().status, want, "request {i}");
    }
    let s = sim.core().stats();
    assert_eq!(
        s.ping_ok.get() + s.send_ok.get(),
        (N / 2) as u64,
        "the even ones"
    );
    assert_eq!(s.ping_failed.get() + s.send_failed.get(), (N / 2) as u64);
    finish_clean(sim);
}
