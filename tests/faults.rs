//! Fault injection: the library failing (NULL packet, failed send), the host failing (never
//! answering, answering twice, answering transactions that do not exist, answering with
//! replies of the wrong size) and the host rescinding the channel at every step of its life.
//!
//! For each fault the driver must complete the request with a clear status, count the fault,
//! leak nothing (no packet, no request, no incoming packet left unretired), record no contract
//! violation, and go on serving when the channel is still there.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RECV_LEN, T, finish, ioctl, quick, ready, ready_with, send_input, stats};
use kmcl_model::{GuestPacket, Host};
use vmbmsg_core::sim::{Behavior, Completed, Pending, SimConfig, Simulation};
use vmbmsg_core::{CoreConfig, NtStatus};
use vmbmsg_proto::ioctl::{
    BAD_REPLY_STATUS, ChannelState, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_SEND,
    NOT_READY_STATUS, PingOut, SendOut,
};
use vmbmsg_proto::wire::{
    GuestBody, HostMessage, MalformedReason, MessageKind, NEGOTIATE_REPLY_SIZE, PROTOCOL_V1, Reply,
    ReplyBody, parse_guest_message, parse_reply, peek_header,
};

// ---- helpers ----------------------------------------------------------------------------------

fn ping(sim: &Simulation) -> Completed {
    ioctl(sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>())
}

fn send(sim: &Simulation, payload: &[u8]) -> Completed {
    ioctl(
        sim,
        IOCTL_VMBMSG_SEND,
        &send_input(payload),
        size_of::<SendOut>(),
    )
}

fn encode(reply: &Reply<'_>) -> Vec<u8> {
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// The reply a well-behaved host gives to a guest packet (PING, SEND or NEGOTIATE).
fn good_reply(payload: &[u8]) -> Vec<u8> {
    let m = parse_guest_message(payload).expect("the guest sends well-formed messages");
    encode(&match m.body {
        GuestBody::Negotiate { .. } => Reply::negotiate_accept(m.id, PROTOCOL_V1),
        GuestBody::Ping { nonce } => Reply::ping(m.version, m.id, nonce),
        GuestBody::Send { .. } | GuestBody::BulkOffer { .. } | GuestBody::SendBulk { .. } => {
            Reply::status_only(m.kind(), m.version, m.id, NtStatus::STATUS_SUCCESS)
        }
    })
}

fn kind_of(gp: &GuestPacket) -> MessageKind {
    peek_header(&gp.payload).map_or(MessageKind::new(0), |h| h.kind)
}

/// Every transaction id the host's responder saw, by kind.
#[derive(Default)]
struct Seen(Mutex<Vec<(MessageKind, u64)>>);

impl Seen {
    fn ids(&self, kind: MessageKind) -> Vec<u64> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| *id)
            .collect()
    }
    fn push(&self, gp: &GuestPacket) {
        self.0.lock().unwrap().push((kind_of(gp), gp.id()));
    }
}

/// Replaces the simulation's responder: every guest packet is recorded, then answered with
/// what `f` returns (`None`: never answered; the simulation's host thread holds it).
fn respond_with(
    sim: &Simulation,
    f: impl Fn(&GuestPacket) -> Option<(NtStatus, Vec<u8>)> + Send + Sync + 'static,
) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    sim.host().set_responder(move |gp| {
        s.push(gp);
        f(gp)
    });
    seen
}

fn answer_normally(gp: &GuestPacket) -> Option<(NtStatus, Vec<u8>)> {
    Some((NtStatus::STATUS_SUCCESS, good_reply(&gp.payload)))
}

/// Every host packet the guest received was completed exactly once (never failed), no
/// request is waiting on a packet, and the driver's completion counters add up.
fn assert_accounted(sim: &Simulation) {
    let h = sim.host().stats();
    assert_eq!(h.incoming_outstanding, 0, "every host packet retired");
    assert_eq!(h.completed_by_guest, h.delivered_to_guest, "{h:?}");
    assert_eq!(h.failed_by_guest, 0, "never VmbChannelPacketFail");
    let s = sim.core().stats();
    assert_eq!(
        common::completions(&s),
        s.rx_packets.get(),
        "every received packet completed once with a counted status"
    );
    assert_eq!(s.unconsumed_packets.get(), 0);
}

/// Goes down, then checks nothing leaked and no contract was violated.
fn finish_clean(sim: Simulation) {
    sim.core().channel_down();
    assert_accounted(&sim);
    let h = sim.host().stats();
    assert_eq!(h.packets_allocated, 0, "no VmbPacketAllocate packet leaked");
    assert_eq!(h.packets_in_flight, 0);
    finish(sim);
}

/// After the host closed or rescinded the channel: CLOSED, or already enabled again by the
/// driver's work item and waiting for the host.
fn assert_not_ready(sim: &Simulation) {
    let state = sim.core().state();
    assert!(
        state == ChannelState::CLOSED || state == ChannelState::WAITING_FOR_HOST,
        "{state:?}"
    );
}

fn still_serving(sim: &Simulation) {
    let c = ping(sim);
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS, "PING after the fault");
    let c = send(sim, b"after the fault");
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS, "SEND after the fault");
    let reply = sim.host_echo(b"echo after the fault", T).unwrap();
    let r = parse_reply(&reply, MessageKind::ECHO, 0).expect("ECHO reply");
    assert_eq!(
        r.body,
        ReplyBody::Echo {
            payload: b"echo after the fault"
        }
    );
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---- the library fails ------------------------------------------------------------------------

#[test]
fn packet_allocation_failure_fails_the_request_with_insufficient_resources() {
    let sim = ready();
    sim.host().faults().fail_allocations(2);
    assert_eq!(ping(&sim).status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(
        send(&sim, b"x").status,
        NtStatus::STATUS_INSUFFICIENT_RESOURCES
    );
    let s = stats(&sim);
    assert_eq!(s.alloc_failures.get(), 2);
    assert_eq!((s.ping_failed.get(), s.send_failed.get()), (1, 1));
    assert_eq!(
        s.tx_packets.get(),
        2,
        "only the NEGOTIATE and the BULK_OFFER went out"
    );
    assert_eq!(sim.host().stats().packets_allocated, 0);
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn rings_the_library_cannot_allocate_fail_the_open_and_the_channel_keeps_waiting() {
    let sim = Simulation::new(SimConfig {
        core: CoreConfig {
            ring_pages: u32::MAX,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    })
    .expect("the channel is enabled: KMCL allocates the rings at the open");
    assert_eq!(
        sim.host().open(),
        Err(kmcl_model::OpenError::RingsNotAllocated(
            NtStatus::STATUS_INSUFFICIENT_RESOURCES
        ))
    );
    // No open, so no Opened, no negotiation, no failure to negotiate: still waiting.
    assert_eq!(sim.core().state(), ChannelState::WAITING_FOR_HOST);
    assert_eq!(sim.host().stats().sync_requests, 0);
    assert_eq!(ping(&sim).status, NOT_READY_STATUS);
    finish_clean(sim);
}

/// A host that sends each ECHO as soon as it sees the previous one completed can have the next
/// one delivered on another processor while the previous handler has completed its packet but
/// not yet given its reply buffer back. With as many reply buffers as concurrent deliveries that
/// never shows: a reply buffer is taken and given back inside one delivery, and a delivery holds
/// one of the channel's bounce buffers, so no more ECHOs than buffers run at once. (With 4
/// concurrent deliveries and 1 reply buffer, this fails within a few hundred ECHOs.)
#[test]
fn back_to_back_echoes_never_find_the_reply_pool_empty() {
    let sim = ready_with(SimConfig {
        delivery_threads: 4,
        core: CoreConfig {
            reply_buffers: 1,
            concurrent_deliveries: 1,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    });
    for i in 0..3000u32 {
        let payload = i.to_le_bytes();
        let reply = sim.host_echo(&payload, T).expect("sent");
        let r = parse_reply(&reply, MessageKind::ECHO, 0).expect("a reply");
        assert_eq!(r.status, NtStatus::STATUS_SUCCESS, "ECHO {i}");
        assert_eq!(r.body, ReplyBody::Echo { payload: &payload }, "ECHO {i}");
    }
    assert_eq!(stats(&sim).alloc_failures.get(), 0);
    finish_clean(sim);
}

#[test]
fn no_free_echo_reply_buffer_completes_the_echo_with_insufficient_resources() {
    let sim = ready_with(SimConfig {
        core: CoreConfig {
            reply_buffers: 0,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    });
    let reply = sim.host_echo(b"no buffer for me", T).unwrap();
    let r = parse_reply(&reply, MessageKind::ECHO, 0).expect("a status reply");
    assert_eq!(r.status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    let s = stats(&sim);
    assert_eq!(s.alloc_failures.get(), 1);
    assert_eq!(s.completions_other.get(), 1);
    // NOTIFY, PING and SEND do not need reply buffers.
    assert_eq!(ping(&sim).status, NtStatus::STATUS_SUCCESS);
    finish_clean(sim);
}

#[test]
fn a_failed_send_fails_the_request_with_the_librarys_status_and_frees_the_packet() {
    let sim = ready();
    sim.host()
        .faults()
        .fail_sends(2, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(ping(&sim).status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(
        send(&sim, b"x").status,
        NtStatus::STATUS_INSUFFICIENT_RESOURCES
    );
    assert_eq!(
        sim.host().stats().packets_allocated,
        0,
        "unsent packets freed"
    );
    let s = stats(&sim);
    assert_eq!((s.ping_failed.get(), s.send_failed.get()), (1, 1));
    assert_eq!(
        s.tx_packets.get(),
        2,
        "failed sends are not counted as sent (the NEGOTIATE and the BULK_OFFER were)"
    );
    still_serving(&sim);
    finish_clean(sim);
}

/// The same with a KMCL that also runs the completion routine of each refused send (the model's
/// `run_routine_of_failed_sends`): each request still completes once, with the library's
/// status, each packet is freed once, and the failures are counted once.
#[test]
fn a_failed_send_whose_completion_routine_runs_anyway_fails_the_request_once() {
    let sim = ready();
    sim.host().faults().run_routine_of_failed_sends(true);
    sim.host()
        .faults()
        .fail_sends(2, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(ping(&sim).status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(
        send(&sim, b"x").status,
        NtStatus::STATUS_INSUFFICIENT_RESOURCES
    );
    assert_eq!(sim.host().stats().packets_allocated, 0, "freed once");
    let s = stats(&sim);
    assert_eq!((s.ping_failed.get(), s.send_failed.get()), (1, 1));
    assert_eq!(
        s.tx_packets.get(),
        2,
        "failed sends are not counted as sent (the NEGOTIATE and the BULK_OFFER were)"
    );
    sim.host().faults().run_routine_of_failed_sends(false);
    still_serving(&sim);
    finish_clean(sim);
}

// ---- the host does not answer, or answers wrongly ----------------------------------------------

#[test]
fn a_host_that_never_answers_leaves_ping_and_send_pending_until_the_channel_closes() {
    let sim = ready();
    sim.set_behavior(|c| c.behavior = Behavior::Silent);
    let p = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    let s = sim.ioctl(
        IOCTL_VMBMSG_SEND,
        &send_input(b"into the void"),
        size_of::<SendOut>(),
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(p.try_get().is_none() && s.try_get().is_none());
    // Nobody cancels them here; their callers can (tests/cancel.rs).
    assert_eq!(sim.core().waiting_requests(), 2);
    assert_eq!(sim.host().stats().packets_in_flight, 2);
    // Host-to-guest traffic is not affected.
    let reply = sim.host_echo(b"still echoing", T).unwrap();
    assert!(parse_reply(&reply, MessageKind::ECHO, 0).is_ok());
    sim.host().rescind();
    assert_eq!(p.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    assert_eq!(s.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    let st = sim.core().stats();
    assert_eq!((st.ping_failed.get(), st.send_failed.get()), (1, 1));
    finish_clean(sim);
}

#[test]
fn a_second_completion_of_a_transaction_is_ignored() {
    let sim = ready();
    let seen = respond_with(&sim, answer_normally);
    assert_eq!(ping(&sim).status, NtStatus::STATUS_SUCCESS);
    assert_eq!(send(&sim, b"once").status, NtStatus::STATUS_SUCCESS);
    let (pings, sends) = (seen.ids(MessageKind::PING), seen.ids(MessageKind::SEND));
    assert_eq!((pings.len(), sends.len()), (1, 1));
    for id in [pings[0], sends[0]] {
        sim.host()
            .complete_transaction(id, NtStatus::STATUS_SUCCESS, &[0xEE; 32]);
        sim.host()
            .complete_transaction(id, NtStatus::STATUS_UNSUCCESSFUL, &[]);
    }
    assert_eq!(sim.host().stats().ignored_host_completions, 4);
    let s = stats(&sim);
    assert_eq!((s.ping_ok.get(), s.send_ok.get()), (1, 1), "counted once");
    assert_eq!((s.ping_failed.get(), s.send_failed.get()), (0, 0));
    assert_eq!(s.malformed_total.get(), 0);
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn completions_of_transactions_that_do_not_exist_are_ignored() {
    let sim = ready();
    let before = stats(&sim);
    let next = sim.host().stats().received_from_guest + 100;
    // Id 1 is the NEGOTIATE's transaction, completed long ago; the others never existed.
    for id in [0, 1, next, next + 1, u64::MAX / 2, u64::MAX] {
        sim.host()
            .complete_transaction(id, NtStatus::STATUS_SUCCESS, &[0x42; 32]);
    }
    assert_eq!(sim.host().stats().ignored_host_completions, 6);
    let after = stats(&sim);
    assert_eq!(after.ping_ok.get(), before.ping_ok.get());
    assert_eq!(after.malformed_total.get(), before.malformed_total.get());
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn a_late_completion_after_the_channel_closed_is_ignored() {
    let sim = ready();
    let seen = respond_with(&sim, |_| None);
    let p = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    wait_for("the PING", || !seen.ids(MessageKind::PING).is_empty());
    sim.host().rescind();
    assert_eq!(p.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    let id = seen.ids(MessageKind::PING)[0];
    sim.host()
        .complete_transaction(id, NtStatus::STATUS_SUCCESS, &[1; 32]);
    assert_eq!(sim.host().stats().ignored_host_completions, 1);
    assert_eq!(sim.core().stats().ping_ok.get(), 0);
    finish_clean(sim);
}

/// PING replies a hostile host may give, and the reason the driver counts for each.
fn bad_ping_replies(id: u64, nonce: u64) -> Vec<(&'static str, Vec<u8>, MalformedReason)> {
    let good = encode(&Reply::ping(PROTOCOL_V1, id, nonce));
    let mut v = Vec::new();
    v.push(("empty", Vec::new(), MalformedReason::Truncated));
    v.push((
        "one byte short",
        good[..good.len() - 1].to_vec(),
        MalformedReason::LengthMismatch,
    ));
    let mut long = good.clone();
    long.push(0);
    v.push(("one byte long", long, MalformedReason::LengthMismatch));
    let mut huge = good.clone();
    huge.resize(64 * 1024, 0x5A);
    v.push(("64 KiB", huge, MalformedReason::LengthMismatch));
    let mut header_only = good[..24].to_vec();
    header_only[8..12].copy_from_slice(&0u32.to_le_bytes());
    v.push((
        "header only, success",
        header_only,
        MalformedReason::Truncated,
    ));
    let mut lying = good.clone();
    lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    v.push((
        "payload length u32::MAX",
        lying,
        MalformedReason::PayloadTooLarge,
    ));
    v.push((
        "wrong id",
        encode(&Reply::ping(PROTOCOL_V1, id ^ 1, nonce)),
        MalformedReason::UnexpectedReply,
    ));
    v.push((
        "wrong nonce",
        encode(&Reply::ping(PROTOCOL_V1, id, !nonce)),
        MalformedReason::UnexpectedReply,
    ));
    v.push((
        "SEND reply to a PING",
        encode(&Reply::status_only(
            MessageKind::SEND,
            PROTOCOL_V1,
            id,
            NtStatus::STATUS_SUCCESS,
        )),
        MalformedReason::UnexpectedReply,
    ));
    v
}

#[test]
fn ping_replies_of_the_wrong_size_or_content_are_bad_replies() {
    let sim = ready();
    let case = Arc::new(AtomicU64::new(0));
    let c2 = Arc::clone(&case);
    respond_with(&sim, move |gp| {
        let m = parse_guest_message(&gp.payload).ok()?;
        let GuestBody::Ping { nonce } = m.body else {
            return answer_normally(gp);
        };
        let i = usize::try_from(c2.load(Ordering::SeqCst)).unwrap();
        let (_, bytes, _) = bad_ping_replies(m.id, nonce).swap_remove(i);
        Some((NtStatus::STATUS_SUCCESS, bytes))
    });
    let cases = bad_ping_replies(0, 0);
    for (i, (name, _, reason)) in cases.iter().enumerate() {
        case.store(i as u64, Ordering::SeqCst);
        let before = stats(&sim).malformed(*reason);
        assert_eq!(ping(&sim).status, BAD_REPLY_STATUS, "{name}");
        assert_eq!(
            stats(&sim).malformed(*reason),
            before + 1,
            "{name}: {reason:?}"
        );
    }
    let s = stats(&sim);
    assert_eq!(s.ping_failed.get(), cases.len() as u64);
    assert_eq!(s.malformed_total.get(), cases.len() as u64);
    assert_eq!(s.ping_ok.get(), 0);
    assert_eq!(
        s.ping_rtt_count.get(),
        0,
        "no round trip recorded for a bad reply"
    );
    respond_with(&sim, answer_normally);
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn send_replies_of_the_wrong_size_are_bad_replies() {
    let sim = ready();
    let shape = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&shape);
    respond_with(&sim, move |gp| {
        let m = parse_guest_message(&gp.payload).ok()?;
        if !matches!(m.body, GuestBody::Send { .. }) {
            return answer_normally(gp);
        }
        let good = encode(&Reply::status_only(
            MessageKind::SEND,
            m.version,
            m.id,
            NtStatus::STATUS_SUCCESS,
        ));
        let bytes = match s2.load(Ordering::SeqCst) {
            0 => good[..good.len() - 1].to_vec(),
            1 => {
                // A success with a body (SEND replies have none), length field consistent.
                let mut b = good.clone();
                b.extend_from_slice(&[7; 8]);
                b[8..12].copy_from_slice(&8u32.to_le_bytes());
                b
            }
            2 => {
                let mut b = good.clone();
                b.extend_from_slice(&[7; 8]);
                b
            }
            _ => Vec::new(),
        };
        Some((NtStatus::STATUS_SUCCESS, bytes))
    });
    for (i, reason) in [
        MalformedReason::Truncated,
        MalformedReason::LengthMismatch,
        MalformedReason::LengthMismatch,
        MalformedReason::Truncated,
    ]
    .into_iter()
    .enumerate()
    {
        shape.store(i as u64, Ordering::SeqCst);
        let before = stats(&sim).malformed(reason);
        assert_eq!(send(&sim, b"payload").status, BAD_REPLY_STATUS, "shape {i}");
        assert_eq!(
            stats(&sim).malformed(reason),
            before + 1,
            "shape {i}: {reason:?}"
        );
    }
    assert_eq!(stats(&sim).send_failed.get(), 4);
    respond_with(&sim, answer_normally);
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn a_failure_status_from_the_transport_fails_the_request_with_that_status() {
    let sim = ready();
    respond_with(&sim, |gp| {
        Some((NtStatus::STATUS_DEVICE_BUSY, good_reply(&gp.payload)))
    });
    assert_eq!(ping(&sim).status, NtStatus::STATUS_DEVICE_BUSY);
    assert_eq!(send(&sim, b"x").status, NtStatus::STATUS_DEVICE_BUSY);
    let s = stats(&sim);
    assert_eq!((s.ping_failed.get(), s.send_failed.get()), (1, 1));
    respond_with(&sim, answer_normally);
    still_serving(&sim);
    finish_clean(sim);
}

/// NEGOTIATE replies of the wrong size (case name, bytes).
fn bad_negotiate_reply(case: usize, id: u64) -> (&'static str, Vec<u8>) {
    let mut good = encode(&Reply::negotiate_accept(id, PROTOCOL_V1));
    assert_eq!(good.len(), NEGOTIATE_REPLY_SIZE);
    match case {
        0 => ("empty", Vec::new()),
        1 => {
            good.pop();
            ("one byte short", good)
        }
        2 => {
            good.push(0);
            ("one byte long", good)
        }
        _ => {
            good.resize(4096, 1);
            ("4 KiB", good)
        }
    }
}

#[test]
fn negotiate_replies_of_the_wrong_size_fail_negotiation() {
    for case in 0..4 {
        let name = bad_negotiate_reply(case, 0).0;
        let sim = Simulation::new(quick()).expect("new");
        respond_with(&sim, move |gp| {
            let id = parse_guest_message(&gp.payload).ok()?.id;
            Some((NtStatus::STATUS_SUCCESS, bad_negotiate_reply(case, id).1))
        });
        sim.host().open().expect("open");
        assert_eq!(
            sim.core().state(),
            ChannelState::NEGOTIATION_FAILED,
            "{name}"
        );
        // Every wrong size is counted: short ones by the parser, long ones because KMCL
        // reports STATUS_BUFFER_OVERFLOW for a reply larger than the reply buffer.
        let reason = if case == 0 {
            MalformedReason::Truncated
        } else {
            MalformedReason::LengthMismatch
        };
        assert_eq!(stats(&sim).malformed(reason), 1, "{name}");
        assert_eq!(ping(&sim).status, NOT_READY_STATUS, "{name}");
        // Host data is refused as premature, but completed and counted.
        let reply = sim.host_echo(b"early", T).unwrap();
        assert!(peek_header(&reply).unwrap().status().is_error(), "{name}");
        assert_eq!(
            stats(&sim).malformed(MalformedReason::Premature),
            1,
            "{name}"
        );
        finish_clean(sim);
    }
}

// ---- rescind at every step ---------------------------------------------------------------------

#[test]
fn rescind_before_the_open_is_a_no_op_and_the_channel_still_opens() {
    let sim = Simulation::new(SimConfig::default()).expect("new");
    sim.host().rescind();
    assert_eq!(sim.core().state(), ChannelState::WAITING_FOR_HOST);
    assert_eq!(ping(&sim).status, NOT_READY_STATUS);
    assert_eq!(sim.host().open(), Err(kmcl_model::OpenError::NoOffer));
    sim.host().reoffer();
    sim.host().open().expect("open");
    assert_eq!(sim.core().state(), ChannelState::READY);
    still_serving(&sim);
    finish_clean(sim);
}

#[test]
fn rescind_right_after_opened_fails_negotiation_and_closes() {
    let sim = Simulation::new(SimConfig::default()).expect("new");
    sim.host().faults().rescind_after_opened();
    sim.host().open().expect("the open sequence ran");
    assert_not_ready(&sim);
    assert_eq!(sim.core().protocol_version(), 0);
    assert_eq!(sim.host().stats().sync_requests, 0, "NEGOTIATE refused");
    assert_eq!(ping(&sim).status, NOT_READY_STATUS);
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN).status,
        NOT_READY_STATUS
    );
    assert!(
        sim.host().send(b"anyone?", true).is_err(),
        "the host is gone"
    );
    finish_clean(sim);
}

#[test]
fn rescind_while_negotiate_waits_for_the_host_closes_and_a_late_accept_is_ignored() {
    let sim = Simulation::new(SimConfig::default()).expect("new");
    let seen = respond_with(&sim, |_| None);
    let open = sim.host().open_async();
    wait_for("the NEGOTIATE", || {
        !seen.ids(MessageKind::NEGOTIATE).is_empty()
    });
    assert_eq!(sim.core().state(), ChannelState::NEGOTIATING);
    sim.host().rescind();
    open.wait().expect("the open sequence ran");
    assert_not_ready(&sim);
    // The host accepts after all: too late, the driver never sees it.
    let id = seen.ids(MessageKind::NEGOTIATE)[0];
    let reply = encode(&Reply::negotiate_accept(1, PROTOCOL_V1));
    sim.host()
        .complete_transaction(id, NtStatus::STATUS_SUCCESS, &reply);
    assert_eq!(sim.host().stats().ignored_host_completions, 1);
    assert_not_ready(&sim);
    assert_eq!(sim.core().protocol_version(), 0);
    assert_eq!(ping(&sim).status, NOT_READY_STATUS);
    finish_clean(sim);
}

#[test]
fn rescind_after_negotiation_completes_parked_and_in_flight_requests() {
    let sim = ready();
    sim.host_notify(b"queued before the rescind", T).unwrap();
    let seen = respond_with(&sim, |_| None);
    let recv_parked: Vec<Pending> = {
        // The first RECV takes the queued notification; the next two park.
        let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
        assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
        (0..2)
            .map(|_| sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN))
            .collect()
    };
    let p = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    let s = sim.ioctl(IOCTL_VMBMSG_SEND, &send_input(b"s"), size_of::<SendOut>());
    wait_for("PING and SEND at the host", || {
        seen.0.lock().unwrap().len() == 2
    });
    sim.host().rescind();
    // Closed, then enabled again by the work item (tests/host_close.rs): not ready either way.
    assert_not_ready(&sim);
    for r in recv_parked {
        assert_eq!(r.wait(T).unwrap().status, NOT_READY_STATUS);
    }
    assert_eq!(p.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    assert_eq!(s.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    assert_eq!(sim.host().stats().packets_allocated, 0);
    finish_clean(sim);
}

#[test]
fn rescind_in_the_middle_of_traffic_both_ways_on_four_delivery_threads() {
    // A race, so several rounds with the rescind at different moments.
    for round in 0..10 {
        let sim = ready_with(SimConfig {
            delivery_threads: 4,
            ..SimConfig::default()
        });
        let stop = AtomicBool::new(false);
        let (sent, completed, dropped) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let outcomes = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..2u64 {
                let (sim, stop, sent, completed, dropped) =
                    (&sim, &stop, &sent, &completed, &dropped);
                scope.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        i += 1;
                        let payload = [t as u8; 40];
                        let m = if i.is_multiple_of(3) {
                            HostMessage::notify(PROTOCOL_V1, i, &payload)
                        } else {
                            HostMessage::echo(PROTOCOL_V1, i, &payload)
                        };
                        let Ok(txn) = sim.host_message(m) else {
                            break; // rescinded: the host cannot send any more
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        match sim.host().wait_completion(txn, T) {
                            Some(c) => {
                                assert!(!c.failed);
                                completed.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
            let (sim, stop, outcomes) = (&sim, &stop, &outcomes);
            scope.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let r = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
                    let p = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
                    let s = sim.ioctl(IOCTL_VMBMSG_SEND, &send_input(b"mid"), size_of::<SendOut>());
                    let mut o = outcomes.lock().unwrap();
                    o.push(("PING", p.wait(T).expect("PING completes").status));
                    o.push(("SEND", s.wait(T).expect("SEND completes").status));
                    drop(o);
                    // A parked RECV is completed by a notification or by the rescind.
                    let c = r.wait(T).expect("RECV completes");
                    outcomes.lock().unwrap().push(("RECV", c.status));
                }
            });
            std::thread::sleep(Duration::from_millis(10 + 5 * round));
            sim.host().rescind();
            stop.store(true, Ordering::Release);
        });
        let allowed_after = [NtStatus::STATUS_CANCELLED, NOT_READY_STATUS];
        for (what, status) in outcomes.into_inner().unwrap() {
            assert!(
                status == NtStatus::STATUS_SUCCESS || allowed_after.contains(&status),
                "{what} completed with {status}"
            );
        }
        assert_not_ready(&sim);
        let h = sim.host().stats();
        assert_eq!(
            sent.load(Ordering::Relaxed),
            completed.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed)
        );
        assert_eq!(h.dropped_undelivered, dropped.load(Ordering::Relaxed));
        assert!(
            completed.load(Ordering::Relaxed) > 0,
            "traffic flowed before the rescind"
        );
        finish_clean(sim);
    }
}

#[test]
fn every_fault_leaves_the_host_model_consistent() {
    // The model's own bookkeeping after a mixed run of every fault above, on one channel.
    let sim = ready();
    let h: &Host = sim.host();
    h.faults().fail_allocations(1);
    assert_eq!(ping(&sim).status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    h.faults().fail_sends(1, NtStatus::STATUS_UNSUCCESSFUL);
    assert_eq!(send(&sim, b"a").status, NtStatus::STATUS_UNSUCCESSFUL);
    h.complete_transaction(999_999, NtStatus::STATUS_SUCCESS, b"nobody");
    let seen = respond_with(&sim, |gp| {
        Some((NtStatus::STATUS_SUCCESS, gp.payload.clone()))
    });
    assert_eq!(
        ping(&sim).status,
        BAD_REPLY_STATUS,
        "the request echoed back is no reply"
    );
    let id = seen.ids(MessageKind::PING)[0];
    h.complete_transaction(id, NtStatus::STATUS_SUCCESS, b"again");
    respond_with(&sim, answer_normally);
    still_serving(&sim);
    let s = stats(&sim);
    assert_eq!(s.alloc_failures.get(), 1);
    assert_eq!(s.ping_failed.get(), 2);
    assert_eq!(s.send_failed.get(), 1);
    assert_eq!(h.stats().ignored_host_completions, 2);
    finish_clean(sim);
}
