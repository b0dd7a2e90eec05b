//! The driver core through the linked KMCL functions (`kmcl::Library::linked`, the driver's
//! `linked-kmcl` feature) instead of the queried client interface table that every other suite
//! uses: the same behaviour, and no interface ever queried.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::Duration;

use common::{RECV_LEN, T, finish, info, ioctl, ready_with, send_input, stats};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{Behavior, KmclPath, SimConfig};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_SEND, PingOut, SendOut,
    parse_recv_output, read_output,
};

fn linked() -> SimConfig {
    SimConfig {
        kmcl: KmclPath::Linked,
        delivery_threads: 2,
        ..SimConfig::default()
    }
}

#[test]
fn every_ioctl_and_host_message_works_through_the_linked_functions() {
    let sim = ready_with(linked());
    assert_eq!(
        sim.host().interface_queries(),
        0,
        "the table is never queried"
    );
    assert_eq!(info(&sim).channel_state.get(), ChannelState::READY.get());

    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let c = ioctl(
        &sim,
        IOCTL_VMBMSG_SEND,
        &send_input(b"linked"),
        size_of::<SendOut>(),
    );
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let out: SendOut = read_output(&c.output).unwrap();
    assert_eq!(out.host_status.get(), 0);

    assert!(sim.host_echo(&[7; 1000], T).unwrap().len() > 1000);
    let pending = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    sim.host_notify(b"through the plain functions", T).unwrap();
    let c = pending.wait(T).expect("RECV completes");
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    assert_eq!(
        parse_recv_output(&c.output).unwrap().1,
        b"through the plain functions"
    );

    let s = stats(&sim);
    assert_eq!((s.ping_ok.get(), s.send_ok.get()), (1, 1));
    assert_eq!((s.echo_count.get(), s.notify_delivered.get()), (1, 1));
    finish(sim);
}

#[test]
fn a_restart_and_a_silent_host_work_through_the_linked_functions() {
    let sim = ready_with(linked());
    sim.restart().expect("channel up again");
    sim.host().open().expect("the host opens it again");
    assert_eq!(sim.core().state(), ChannelState::READY);
    sim.set_behavior(|c| c.behavior = Behavior::Silent);
    let pending = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    std::thread::sleep(Duration::from_millis(20));
    sim.core().channel_down();
    let c = pending.wait(T).expect("completed at channel down");
    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
    assert_eq!(sim.host().stats().packets_allocated, 0);
    assert_eq!(sim.host().interface_queries(), 0);
    finish(sim);
}
