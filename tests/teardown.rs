//! The channel going away with requests parked and packets in flight: everything finished
//! with a clear status, nothing leaked, no contract violated.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::Duration;

use common::{RECV_LEN, T, finish, ioctl, ready};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::Behavior;
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, NOT_READY_STATUS, PingOut,
};

#[test]
fn rescind_with_recv_parked_and_ping_in_flight() {
    let sim = ready();
    sim.set_behavior(|c| c.behavior = Behavior::Silent);
    let recv = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    let ping = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    std::thread::sleep(Duration::from_millis(30));
    assert!(recv.try_get().is_none() && ping.try_get().is_none());
    assert_eq!(sim.host().stats().packets_in_flight, 1);

    sim.host().rescind();
    // CLOSED, or already enabled again by the driver's work item (tests/host_close.rs).
    let state = sim.core().state();
    assert!(
        state == ChannelState::CLOSED || state == ChannelState::WAITING_FOR_HOST,
        "{state:?}"
    );
    assert_eq!(recv.wait(T).unwrap().status, NOT_READY_STATUS);
    assert_eq!(ping.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    // New requests see the closed channel at once.
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        NOT_READY_STATUS
    );
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN).status,
        NOT_READY_STATUS
    );
    let host = sim.host().stats();
    assert_eq!(host.packets_allocated, 0, "no packet leaked");
    assert_eq!(host.incoming_outstanding, 0);
    finish(sim);
}

#[test]
fn channel_down_with_notifications_queued_and_sends_in_flight() {
    let sim = ready();
    for i in 0..5u8 {
        sim.host_notify(&[i; 10], T).unwrap();
    }
    sim.set_behavior(|c| c.behavior = Behavior::Silent);
    let pings: Vec<_> = (0..3)
        .map(|_| sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()))
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    sim.core().channel_down();
    for p in pings {
        assert_eq!(p.wait(T).unwrap().status, NtStatus::STATUS_CANCELLED);
    }
    let s = sim.core().stats();
    assert_eq!(
        s.notify_dropped.get(),
        5,
        "queued notifications are dropped and counted"
    );
    assert_eq!(s.ping_failed.get(), 3);
    assert_eq!(sim.core().state(), ChannelState::DOWN);
    assert_eq!(sim.host().stats().packets_allocated, 0);
    // Idempotent.
    sim.core().channel_down();
    finish(sim);
}

#[test]
fn the_channel_comes_up_again_after_going_down() {
    let sim = ready();
    sim.core().channel_down();
    assert_eq!(
        sim.host().channel_state(),
        kmcl_model::ChannelState::CleanedUp
    );
    finish(sim);
}
