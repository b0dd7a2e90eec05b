//! Each IOCTL with good and bad buffers, and the statuses user mode relies on.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::Duration;

use common::{RECV_LEN, T, finish, info, ioctl, ready, ready_with, send_input, stats};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{Behavior, SimConfig};
use vmbmsg_proto::ioctl::{
    ABI_VERSION, BAD_REPLY_STATUS, IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_GET_STATS,
    IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_RESET_STATS, IOCTL_VMBMSG_SEND, InfoOut,
    PingOut, SEND_IN_MAX, SEND_PAYLOAD_MAX, SendOut, StatsOut, TOO_MANY_PARKED_STATUS,
    parse_recv_output, read_output,
};
use vmbmsg_proto::wire::{MAX_PAYLOAD, PROTOCOL_V1_1};

#[test]
fn unknown_codes_are_invalid_device_requests() {
    let sim = ready();
    for code in [0, 0x8A4D_6018, 0x0022_2000, u32::MAX] {
        let c = ioctl(&sim, code, &[1, 2, 3], 64);
        assert_eq!(
            c.status,
            NtStatus::STATUS_INVALID_DEVICE_REQUEST,
            "{code:#x}"
        );
        assert!(c.output.is_empty());
    }
    finish(sim);
}

#[test]
fn get_info_reports_versions_state_and_limits() {
    let sim = ready();
    let i = info(&sim);
    assert_eq!(i.abi_version.get(), ABI_VERSION);
    assert_eq!(i.protocol_version.get(), PROTOCOL_V1_1);
    assert_eq!(
        i.max_payload.get() as usize,
        SEND_PAYLOAD_MAX,
        "a 1.1 session with its bulk area"
    );
    assert_eq!(i.notify_queue_depth.get(), 32);
    let (major, minor, patch) = vmbmsg_core::DRIVER_VERSION;
    assert_eq!(
        (
            i.driver_major.get(),
            i.driver_minor.get(),
            i.driver_patch.get()
        ),
        (major, minor, patch)
    );
    let short = ioctl(&sim, IOCTL_VMBMSG_GET_INFO, &[], size_of::<InfoOut>() - 1);
    assert_eq!(short.status, NtStatus::STATUS_BUFFER_TOO_SMALL);
    finish(sim);
}

#[test]
fn get_stats_and_reset_stats() {
    let sim = ready();
    sim.host_echo(b"count me", T).unwrap();
    assert_eq!(stats(&sim).echo_count.get(), 1);
    let short = ioctl(&sim, IOCTL_VMBMSG_GET_STATS, &[], size_of::<StatsOut>() - 8);
    assert_eq!(short.status, NtStatus::STATUS_BUFFER_TOO_SMALL);
    let r = ioctl(&sim, IOCTL_VMBMSG_RESET_STATS, &[], 0);
    assert_eq!(r.status, NtStatus::STATUS_SUCCESS);
    let s = stats(&sim);
    assert_eq!(s.echo_count.get(), 0);
    assert_eq!(s.rx_packets.get(), 0);
    assert_eq!(
        s.ping_rtt_min_ns.get(),
        0,
        "no RTT recorded since the reset"
    );
    finish(sim);
}

#[test]
fn ping_measures_the_round_trip_and_fails_clearly() {
    let sim = ready();
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let out: PingOut = read_output(&c.output).unwrap();
    assert_eq!(out.host_status.get(), 0);
    assert_ne!(out.nonce.get(), 0);
    let short = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>() - 1);
    assert_eq!(short.status, NtStatus::STATUS_BUFFER_TOO_SMALL);

    sim.set_behavior(|c| c.behavior = Behavior::Slow(Duration::from_millis(30)));
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let slow: PingOut = read_output(&c.output).unwrap();
    assert!(
        slow.round_trip_ns.get() >= 30_000_000,
        "{}",
        slow.round_trip_ns.get()
    );

    sim.set_behavior(|c| c.behavior = Behavior::Malformed);
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, BAD_REPLY_STATUS);

    sim.host().faults().fail_allocations(1);
    sim.set_behavior(|c| c.behavior = Behavior::Normal);
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);

    let s = stats(&sim);
    assert_eq!(s.ping_ok.get(), 2);
    assert_eq!(s.ping_failed.get(), 2);
    assert_eq!(s.ping_rtt_count.get(), 2);
    assert!(s.ping_rtt_max_ns.get() >= 30_000_000);
    assert!(s.ping_rtt_min_ns.get() <= s.ping_rtt_max_ns.get());
    assert_eq!(s.alloc_failures.get(), 1);
    finish(sim);
}

#[test]
fn send_delivers_the_payload_and_returns_the_hosts_status() {
    let sim = ready_with(SimConfig {
        send_status: NtStatus::STATUS_DEVICE_BUSY,
        ..SimConfig::default()
    });
    let c = ioctl(
        &sim,
        IOCTL_VMBMSG_SEND,
        &send_input(b"hello host"),
        size_of::<SendOut>(),
    );
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let out: SendOut = read_output(&c.output).unwrap();
    assert_eq!(
        NtStatus(out.host_status.get()),
        NtStatus::STATUS_DEVICE_BUSY
    );

    let big = vec![7u8; MAX_PAYLOAD];
    let c = ioctl(
        &sim,
        IOCTL_VMBMSG_SEND,
        &send_input(&big),
        size_of::<SendOut>(),
    );
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);

    // Bad inputs: no header, lying length, over the limit, output too small.
    let bad = [
        (
            Vec::new(),
            size_of::<SendOut>(),
            NtStatus::STATUS_BUFFER_TOO_SMALL,
        ),
        (
            {
                let mut v = send_input(b"abc");
                v.pop();
                v
            },
            size_of::<SendOut>(),
            NtStatus::STATUS_INVALID_PARAMETER,
        ),
        (
            send_input(b"abc"),
            size_of::<SendOut>() - 1,
            NtStatus::STATUS_BUFFER_TOO_SMALL,
        ),
    ];
    for (input, out_len, want) in bad {
        assert_eq!(ioctl(&sim, IOCTL_VMBMSG_SEND, &input, out_len).status, want);
    }
    let mut over = vec![0u8; SEND_IN_MAX + 1];
    over[..4].copy_from_slice(&((SEND_PAYLOAD_MAX + 1) as u32).to_le_bytes());
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_SEND, &over, size_of::<SendOut>()).status,
        NtStatus::STATUS_INVALID_PARAMETER
    );
    let s = stats(&sim);
    assert_eq!(
        s.send_failed.get(),
        2,
        "the host's failure status counts as a failed SEND"
    );
    assert_eq!(s.tx_packets.get(), 4, "NEGOTIATE, BULK_OFFER and two SENDs");
    finish(sim);
}

#[test]
fn recv_parks_until_a_notification_arrives() {
    let sim = ready();
    let pending = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        pending.try_get().is_none(),
        "parked while the queue is empty"
    );
    sim.host_notify(b"wake up", T).unwrap();
    let c = pending.wait(T).expect("completed by the notification");
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let (header, payload) = parse_recv_output(&c.output).unwrap();
    assert_eq!(payload, b"wake up");
    assert_eq!(header.sequence.get(), 1);
    assert_eq!(stats(&sim).notify_delivered.get(), 1);
    assert_eq!(
        stats(&sim).notify_queued.get(),
        0,
        "went straight to the parked request"
    );
    finish(sim);
}

#[test]
fn a_parked_recv_can_be_cancelled() {
    let sim = ready();
    let pending = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    std::thread::sleep(Duration::from_millis(10));
    assert!(pending.cancel());
    assert_eq!(pending.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    // The notification that comes next is queued, not lost.
    sim.host_notify(b"after cancel", T).unwrap();
    let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    assert_eq!(parse_recv_output(&c.output).unwrap().1, b"after cancel");
    finish(sim);
}

#[test]
fn recv_buffer_and_parking_limits() {
    let sim = ready();
    let small = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN - 1);
    assert_eq!(small.status, NtStatus::STATUS_BUFFER_TOO_SMALL);
    let parked: Vec<_> = (0..16)
        .map(|_| sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN))
        .collect();
    let extra = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    assert_eq!(extra.status, TOO_MANY_PARKED_STATUS);
    for p in &parked {
        assert!(p.try_get().is_none());
    }
    sim.core().channel_down();
    for p in parked {
        assert_eq!(p.wait(T).unwrap().status, NtStatus::STATUS_DEVICE_REMOVED);
    }
    finish(sim);
}
