//! Protocol 1.1: the bulk area (a GPADL the guest offers after negotiating 1.1) carries SEND
//! and ECHO payloads above one ring packet; 1.0 hosts, refused offers and bad ranges keep
//! working or fail cleanly; the GPADL never outlives the channel.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::Duration;

use common::{T, finish, info, ioctl, quick, ready, ready_with, send_input, stats};
use vmbmsg_core::sim::{Behavior, BulkEchoError, SimConfig, Simulation};
use vmbmsg_core::{CoreConfig, NtStatus};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_SEND, SEND_PAYLOAD_MAX, SendOut, StateReason, read_output,
};
use vmbmsg_proto::wire::{
    HostMessage, MAX_BULK_PAYLOAD, MAX_PAYLOAD, MalformedReason, MessageKind, PROTOCOL_V1,
    PROTOCOL_V1_1, ReplyBody, parse_reply,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn send(sim: &Simulation, payload: &[u8]) -> NtStatus {
    let c = ioctl(
        sim,
        IOCTL_VMBMSG_SEND,
        &send_input(payload),
        size_of::<SendOut>(),
    );
    if c.status.is_success() {
        let out: SendOut = read_output(&c.output).expect("a SendOut");
        assert_eq!(out.host_status.get(), 0, "the host's status");
    }
    c.status
}

#[test]
fn a_1_1_session_sends_payloads_above_one_ring_packet_through_the_bulk_area() {
    let sim = ready();
    assert_eq!(sim.core().protocol_version(), PROTOCOL_V1_1);
    let i = info(&sim);
    assert_eq!(i.protocol_max.get(), PROTOCOL_V1_1);
    assert_eq!(i.max_payload.get() as usize, SEND_PAYLOAD_MAX);
    assert_eq!(i.state_reason, StateReason::NONE);
    let area = sim.host_side().bulk().expect("the host accepted the area");
    assert_eq!(area.guest_half as usize, 2 * MAX_BULK_PAYLOAD);
    assert_eq!(area.host_half, 64 * 1024);
    assert_eq!(sim.host().stats().gpadls_alive, 1);
    // Just above the ring's limit, the largest, and one at the limit (which stays in the ring).
    for (len, seed) in [
        (MAX_PAYLOAD + 1, 1),
        (MAX_BULK_PAYLOAD, 2),
        (MAX_PAYLOAD, 3),
    ] {
        let payload = pattern(len, seed);
        assert_eq!(
            send(&sim, &payload),
            NtStatus::STATUS_SUCCESS,
            "{len} bytes"
        );
        assert_eq!(
            sim.host_side().sends().last(),
            Some(&payload),
            "{len} bytes arrive intact"
        );
    }
    // The bulk messages are 32 bytes on the ring; the ring-sized SEND is its whole payload.
    let s = stats(&sim);
    assert_eq!(s.send_ok.get(), 3);
    let guest_packets = sim.host().stats().received_from_guest;
    assert!(
        guest_packets >= 5,
        "NEGOTIATE, BULK_OFFER and three SENDs: {guest_packets}"
    );
    // Above the largest bulk payload, the IOCTL refuses the input itself.
    let too_big = pattern(MAX_BULK_PAYLOAD + 1, 4);
    let mut input = vec![0u8; 8];
    input[..4].copy_from_slice(&(too_big.len() as u32).to_le_bytes());
    input.extend_from_slice(&too_big);
    let c = ioctl(&sim, IOCTL_VMBMSG_SEND, &input, size_of::<SendOut>());
    assert_eq!(c.status, NtStatus::STATUS_INVALID_PARAMETER);
    finish(sim);
}

#[test]
fn a_host_echo_through_the_bulk_area_is_echoed_in_place() {
    let sim = ready();
    for (offset, len, seed) in [
        (0, 1, 5),
        (100, 40_000, 6),
        (0, 64 * 1024, 7),
        (65_535, 1, 8),
    ] {
        let payload = pattern(len, seed);
        let (completion, echoed) = sim
            .host_echo_bulk(offset, &payload, T)
            .expect("the host echoes through its half");
        let reply = parse_reply(&completion, MessageKind::ECHO_BULK, 0).expect("a reply");
        assert!(reply.status.is_success(), "{reply:?}");
        assert_eq!(reply.version, PROTOCOL_V1_1);
        assert_eq!(
            reply.body,
            ReplyBody::EchoBulk {
                offset,
                len: len as u32
            }
        );
        assert_eq!(echoed, payload);
    }
    assert_eq!(stats(&sim).echo_count.get(), 4);
    // Outside the host's half: the simulated host refuses to send it.
    assert_eq!(
        sim.host_echo_bulk(65_535, b"xy", T),
        Err(BulkEchoError::OutOfRange)
    );
    finish(sim);
}

/// With every ECHO reply buffer in use (here: none configured) the echo goes through the
/// small stack chunk, many chunks per payload, and the bytes still come back where they were.
#[test]
fn an_echo_without_a_free_reply_buffer_goes_through_the_stack_chunk() {
    let sim = ready_with(SimConfig {
        core: CoreConfig {
            reply_buffers: 0,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    });
    for (offset, len, seed) in [(3, 40_001, 9), (0, 64 * 1024, 10), (1000, 511, 11)] {
        let payload = pattern(len, seed);
        let (completion, echoed) = sim.host_echo_bulk(offset, &payload, T).expect("echo");
        let reply = parse_reply(&completion, MessageKind::ECHO_BULK, 0).expect("a reply");
        assert!(reply.status.is_success(), "{reply:?}");
        assert_eq!(echoed, payload, "{len} bytes at {offset}");
    }
    assert_eq!(
        stats(&sim).alloc_failures.get(),
        0,
        "not a resource failure"
    );
    finish(sim);
}

/// A host that breaks the bulk rules gets a failure reply for that message, counted, and the
/// session goes on.
#[test]
fn bad_bulk_messages_are_refused_counted_and_survived() {
    let sim = ready();
    let area = sim.host_side().bulk().expect("area");
    let status_of = |m: HostMessage<'_>| {
        let txn = sim.host_message(m).expect("sent");
        let c = sim.completion(txn, T);
        let h = vmbmsg_proto::wire::peek_header(&c).expect("a reply");
        assert_eq!(h.kind, MessageKind::ECHO_BULK);
        h.status()
    };
    // Past the end of the host's half, and wholly outside it.
    for (offset, len) in [
        (area.host_half - 10, 11),
        (area.host_half, 1),
        (u32::MAX - 8, 8),
    ] {
        assert_eq!(
            status_of(HostMessage::echo_bulk(PROTOCOL_V1_1, 1, offset, len)),
            NtStatus::STATUS_DATA_ERROR,
            "{offset}+{len}"
        );
    }
    let s = stats(&sim);
    assert_eq!(s.malformed(MalformedReason::BadBulkRange), 3);
    // A 1.1 kind in a 1.0 header is an unknown kind; in 1.1 it is fine again.
    let mut raw = vec![0u8; 32];
    let n = HostMessage::echo_bulk(PROTOCOL_V1_1, 2, 0, 4)
        .write(&mut raw)
        .unwrap();
    raw[0..4].copy_from_slice(&PROTOCOL_V1.to_le_bytes());
    let txn = sim.host().send(&raw[..n], true).expect("sent");
    let c = sim.completion(txn, T);
    let h = vmbmsg_proto::wire::peek_header(&c).expect("a reply");
    assert_eq!(h.status(), NtStatus::STATUS_NOT_SUPPORTED);
    assert_eq!(stats(&sim).malformed(MalformedReason::UnknownKind), 1);
    let (_, echoed) = sim.host_echo_bulk(0, b"still fine", T).expect("echo");
    assert_eq!(echoed, b"still fine");
    finish(sim);
}

#[test]
fn a_1_0_host_still_works_without_a_bulk_area() {
    let sim = ready_with(SimConfig {
        host_versions: vec![PROTOCOL_V1],
        ..SimConfig::default()
    });
    assert_eq!(sim.core().protocol_version(), PROTOCOL_V1);
    let i = info(&sim);
    assert_eq!(
        i.protocol_max.get(),
        PROTOCOL_V1_1,
        "the guest proposed 1.1"
    );
    assert_eq!(i.max_payload.get() as usize, MAX_PAYLOAD);
    assert_eq!(sim.host_side().bulk(), None);
    assert_eq!(sim.host().stats().gpadls_alive, 0, "no area without 1.1");
    let ring = pattern(MAX_PAYLOAD, 9);
    assert_eq!(send(&sim, &ring), NtStatus::STATUS_SUCCESS);
    assert_eq!(sim.host_side().sends().last(), Some(&ring));
    assert_eq!(
        send(&sim, &pattern(MAX_PAYLOAD + 1, 9)),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    let echo = sim.host_echo(b"one-oh", T).expect("sent");
    let r = parse_reply(&echo, MessageKind::ECHO, 0).expect("ECHO reply");
    assert_eq!(r.body, ReplyBody::Echo { payload: b"one-oh" });
    // An ECHO_BULK in this 1.0 session: the host's version is wrong for the session.
    let txn = sim
        .host_message(HostMessage::echo_bulk(PROTOCOL_V1_1, 3, 0, 8))
        .expect("sent");
    let c = sim.completion(txn, T);
    let h = vmbmsg_proto::wire::peek_header(&c).expect("a reply");
    assert_eq!(h.status(), NtStatus::STATUS_REVISION_MISMATCH);
    finish(sim);
}

#[test]
fn a_refused_offer_leaves_a_1_1_session_without_bulk_and_says_so() {
    let sim = ready_with(SimConfig {
        accept_bulk: false,
        ..SimConfig::default()
    });
    assert_eq!(sim.core().protocol_version(), PROTOCOL_V1_1);
    let i = info(&sim);
    assert_eq!(i.channel_state, ChannelState::READY);
    assert_eq!(i.state_reason, StateReason::BULK_UNAVAILABLE);
    assert_eq!(i.max_payload.get() as usize, MAX_PAYLOAD);
    assert_eq!(
        sim.host().stats().gpadls_alive,
        0,
        "the refused area's GPADL is deleted at once"
    );
    assert_eq!(
        send(&sim, &pattern(MAX_PAYLOAD + 1, 1)),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    assert_eq!(send(&sim, b"small"), NtStatus::STATUS_SUCCESS);
    // A host that sends ECHO_BULK anyway: a bad bulk range, refused.
    let txn = sim
        .host_message(HostMessage::echo_bulk(PROTOCOL_V1_1, 4, 0, 8))
        .expect("sent");
    let c = sim.completion(txn, T);
    assert_eq!(
        vmbmsg_proto::wire::peek_header(&c).expect("reply").status(),
        NtStatus::STATUS_DATA_ERROR
    );
    assert_eq!(stats(&sim).malformed(MalformedReason::BadBulkRange), 1);
    finish(sim);
}

#[test]
fn a_driver_configured_without_bulk_proposes_1_0_only() {
    let sim = ready_with(SimConfig {
        core: CoreConfig {
            bulk_send_slots: 0,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    });
    assert_eq!(sim.core().protocol_version(), PROTOCOL_V1);
    assert_eq!(info(&sim).protocol_max.get(), PROTOCOL_V1);
    assert_eq!(
        CoreConfig {
            bulk_send_slots: 0,
            ..CoreConfig::default()
        }
        .memory()
        .bulk_area,
        0
    );
    finish(sim);
}

/// KMCL requires every GPADL deleted by the end of EvtChannelClosed: across a host close, a
/// restart and a device removal, the area goes with its channel (the model's verifier would
/// report a leak), the host cannot reach it afterwards, and the next session has a new one.
#[test]
fn the_bulk_area_is_deleted_with_its_channel_and_offered_again_in_the_next_session() {
    let sim = ready();
    let first = sim.host_side().bulk().expect("area");
    sim.host().close();
    assert_eq!(sim.host().stats().gpadls_alive, 0);
    let mut probe = [0u8; 1];
    assert!(sim.host().gpadl_read(first.gpadl, 0, &mut probe).is_err());
    // The work item enables the channel again; the host opens it: a new session, a new area.
    let deadline = std::time::Instant::now() + T;
    while sim.core().state() != ChannelState::WAITING_FOR_HOST {
        assert!(std::time::Instant::now() < deadline, "restarted");
        std::thread::sleep(Duration::from_millis(5));
    }
    sim.host().open().expect("reopened");
    assert_eq!(sim.core().state(), ChannelState::READY);
    let second = sim.host_side().bulk().expect("a new area");
    assert_ne!(second.gpadl, first.gpadl);
    let payload = pattern(30_000, 3);
    assert_eq!(send(&sim, &payload), NtStatus::STATUS_SUCCESS);
    assert_eq!(sim.host_side().sends().last(), Some(&payload));
    sim.restart().expect("power cycle");
    sim.host().open().expect("opened");
    assert_eq!(sim.host().stats().gpadls_alive, 1);
    finish(sim);
}

/// Each SEND above 16 KiB holds a slot of the guest's half until its transaction ends: one
/// more than there are slots fails at once with STATUS_DEVICE_BUSY, and the slots come back
/// when the transactions end (here: when the channel closes under them).
#[test]
fn every_slot_in_use_fails_with_device_busy_until_a_transaction_ends() {
    let sim = ready();
    sim.set_behavior(|c| c.behavior = Behavior::Silent);
    let big = send_input(&pattern(20_000, 1));
    let held: Vec<_> = (0..2)
        .map(|_| sim.ioctl(IOCTL_VMBMSG_SEND, &big, size_of::<SendOut>()))
        .collect();
    // The host holds both (Silent).
    let deadline = std::time::Instant::now() + T;
    while sim.core().waiting_requests() < 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let busy = ioctl(&sim, IOCTL_VMBMSG_SEND, &big, size_of::<SendOut>());
    assert_eq!(busy.status, NtStatus::STATUS_DEVICE_BUSY);
    // Small SENDs do not need a slot.
    sim.set_behavior(|c| c.behavior = Behavior::Normal);
    assert_eq!(send(&sim, b"ring"), NtStatus::STATUS_SUCCESS);
    // A cancelled SEND keeps its slot: its packet went to the host, which may still read it.
    assert!(held[0].cancel());
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_SEND, &big, size_of::<SendOut>()).status,
        NtStatus::STATUS_DEVICE_BUSY
    );
    // The channel goes down: both transactions end, their slots come back.
    sim.restart().expect("restart");
    sim.host().open().expect("opened");
    for p in &held {
        assert!(p.wait(T).is_some());
    }
    assert_eq!(send(&sim, &pattern(20_000, 2)), NtStatus::STATUS_SUCCESS);
    assert_eq!(send(&sim, &pattern(20_000, 3)), NtStatus::STATUS_SUCCESS);
    finish(sim);
}

/// A host that does not answer the offer: the session still comes up (without bulk), after
/// the negotiation timeout.
#[test]
fn an_unanswered_offer_times_out_into_a_session_without_bulk() {
    let mut config = quick();
    config.accept_bulk = true;
    let sim = Simulation::new(config).expect("new");
    sim.host().set_responder(|gp| {
        let m = vmbmsg_proto::wire::parse_guest_message(&gp.payload).ok()?;
        match m.body {
            vmbmsg_proto::wire::GuestBody::Negotiate { .. } => {
                let r = vmbmsg_proto::wire::Reply::negotiate_accept(m.id, PROTOCOL_V1_1);
                let mut b = vec![0; r.encoded_len()];
                let n = r.write(&mut b).ok()?;
                b.truncate(n);
                Some((NtStatus::STATUS_SUCCESS, b))
            }
            _ => None, // the offer stays unanswered
        }
    });
    sim.host().open().expect("opened");
    assert_eq!(sim.core().state(), ChannelState::READY);
    let i = info(&sim);
    assert_eq!(i.state_reason, StateReason::BULK_UNAVAILABLE);
    assert_eq!(sim.host().stats().gpadls_alive, 0);
    finish(sim);
}

#[test]
fn the_default_bulk_area_costs_192_kib_and_only_on_1_1() {
    let m = CoreConfig::default().memory();
    assert_eq!(m.bulk_area, 192 * 1024);
}
