//! Each host-to-guest message, good and malformed: every packet completed exactly once with
//! the right status, malformed ones counted by reason, and nothing lost.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use common::{RECV_LEN, T, finish, ioctl, ready, stats};
use vmbmsg_core::NtStatus;
use vmbmsg_proto::ioctl::{IOCTL_VMBMSG_RECV, parse_recv_output};
use vmbmsg_proto::wire::{
    HEADER_SIZE, HostMessage, MAX_PAYLOAD, MalformedReason, MessageKind, PROTOCOL_V1_1,
    QUEUE_FULL_STATUS, ReplyBody, make_version, parse_reply, peek_header,
};

#[test]
fn echo_returns_the_same_payload_for_every_size() {
    let sim = ready();
    for len in [0, 1, 7, 64, 1024, 4096, MAX_PAYLOAD] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let txn = sim
            .host_message(HostMessage::echo(PROTOCOL_V1_1, 42, &payload))
            .expect("send");
        let reply = sim.completion(txn, T);
        let reply = parse_reply(&reply, MessageKind::ECHO, 42).expect("a valid ECHO reply");
        assert_eq!(reply.status, NtStatus::STATUS_SUCCESS);
        assert_eq!(reply.body, ReplyBody::Echo { payload: &payload });
    }
    let s = stats(&sim);
    assert_eq!(s.echo_count.get(), 7);
    assert_eq!(s.completions_ok.get(), 7);
    assert_eq!(s.malformed_total.get(), 0);
    finish(sim);
}

#[test]
fn notify_is_queued_for_recv_and_reported_full_when_the_queue_is() {
    let sim = ready();
    let depth = sim.core().stats().notify_queued.get(); // 0
    assert_eq!(depth, 0);
    let config_depth = 32; // CoreConfig::default().notify_depth
    for i in 0..config_depth {
        let reply = sim
            .host_notify(format!("note {i}").as_bytes(), T)
            .expect("send");
        let reply = parse_reply(&reply, MessageKind::NOTIFY, 0).expect("reply");
        assert_eq!(reply.status, NtStatus::STATUS_SUCCESS);
    }
    let reply = sim.host_notify(b"one too many", T).expect("send");
    assert_eq!(
        parse_reply(&reply, MessageKind::NOTIFY, 0).unwrap().status,
        QUEUE_FULL_STATUS
    );
    // RECV drains in order; the first one after the drop reports it.
    let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let (header, payload) = parse_recv_output(&c.output).expect("RecvOut");
    assert_eq!(payload, b"note 0");
    assert_eq!(header.dropped_since_last.get(), 1);
    for i in 1..config_depth {
        let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
        let (header, payload) = parse_recv_output(&c.output).expect("RecvOut");
        assert_eq!(payload, format!("note {i}").as_bytes());
        assert_eq!(header.dropped_since_last.get(), 0);
    }
    let s = stats(&sim);
    assert_eq!(s.notify_count.get(), 33);
    assert_eq!(s.notify_queued.get(), 32);
    assert_eq!(s.notify_dropped.get(), 1);
    assert_eq!(s.notify_delivered.get(), 32);
    assert_eq!(s.completions_queue_full.get(), 1);
    finish(sim);
}

/// A raw host packet and what the guest must answer.
fn malformed(sim: &vmbmsg_core::sim::Simulation, bytes: &[u8]) -> NtStatus {
    let txn = sim.host().send(bytes, true).expect("send");
    let reply = sim.completion(txn, T);
    peek_header(&reply).map_or(NtStatus(0x7777), |h| h.status())
}

fn valid(kind: MessageKind, payload: &[u8]) -> Vec<u8> {
    let m = if kind == MessageKind::ECHO {
        HostMessage::echo(PROTOCOL_V1_1, 9, payload)
    } else {
        HostMessage::notify(PROTOCOL_V1_1, 9, payload)
    };
    let mut buf = vec![0; m.encoded_len()];
    m.write(&mut buf).unwrap();
    buf
}

#[test]
fn malformed_packets_are_completed_with_an_error_and_counted_by_reason() {
    let sim = ready();
    let good = valid(MessageKind::ECHO, b"abcdefgh");

    // Shorter than a header.
    assert!(malformed(&sim, &good[..HEADER_SIZE - 1]).is_error());
    // Header says 8 payload bytes, 4 present.
    assert!(malformed(&sim, &good[..good.len() - 4]).is_error());
    // Unknown kind.
    let mut unknown = good.clone();
    unknown[4..6].copy_from_slice(&0x0777u16.to_le_bytes());
    assert_eq!(malformed(&sim, &unknown), NtStatus::STATUS_NOT_SUPPORTED);
    // Unsupported header version.
    let mut version = good.clone();
    version[0..4].copy_from_slice(&make_version(9, 9).to_le_bytes());
    assert_eq!(
        malformed(&sim, &version),
        NtStatus::STATUS_REVISION_MISMATCH
    );
    // Payload over the limit (the length field lies about a huge payload).
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(malformed(&sim, &huge).is_error());
    // A guest-to-host kind sent by the host.
    let mut wrong = good.clone();
    wrong[4..6].copy_from_slice(&MessageKind::PING.get().to_le_bytes());
    assert_eq!(
        malformed(&sim, &wrong),
        NtStatus::STATUS_INVALID_DEVICE_REQUEST
    );
    // Empty packet.
    assert!(malformed(&sim, &[]).is_error());

    let s = stats(&sim);
    assert_eq!(s.malformed(MalformedReason::Truncated), 2);
    assert_eq!(s.malformed(MalformedReason::LengthMismatch), 1);
    assert_eq!(s.malformed(MalformedReason::UnknownKind), 1);
    assert_eq!(s.malformed(MalformedReason::UnsupportedVersion), 1);
    assert_eq!(s.malformed(MalformedReason::PayloadTooLarge), 1);
    assert_eq!(s.malformed(MalformedReason::WrongDirection), 1);
    assert_eq!(s.malformed_total.get(), 7);
    assert_eq!(s.completions_malformed.get(), 7);
    assert_eq!(s.rx_packets.get(), 7);
    // Still serving afterwards.
    let reply = sim.host_echo(b"still here", T).expect("send");
    assert!(
        parse_reply(&reply, MessageKind::ECHO, 0)
            .unwrap()
            .status
            .is_success()
    );
    assert_eq!(
        sim.host().stats().failed_by_guest,
        0,
        "never VmbChannelPacketFail"
    );
    finish(sim);
}

#[test]
fn packets_without_completion_request_are_still_completed() {
    let sim = ready();
    let bytes = valid(MessageKind::NOTIFY, b"fire and forget");
    sim.host().send(&bytes, false).expect("send");
    let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    assert_eq!(parse_recv_output(&c.output).unwrap().1, b"fire and forget");
    // The RECV can finish before the NOTIFY's own completion call returns: wait for it.
    let deadline = std::time::Instant::now() + T;
    while sim.host().stats().completed_by_guest < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let host = sim.host().stats();
    assert_eq!(host.completed_by_guest, host.delivered_to_guest);
    assert_eq!(host.incoming_outstanding, 0);
    finish(sim);
}
