//! Version negotiation when the channel opens: accepted, rejected, host never answers, garbage.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::Duration;

use common::{finish, info, ioctl, quick};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{Negotiation, SimConfig, Simulation};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_PING, NOT_READY_STATUS, PingOut, StateReason,
};
use vmbmsg_proto::wire::{MalformedReason, PROTOCOL_V1, make_version, peek_header};

#[test]
fn accepted_negotiation_makes_the_channel_ready_with_the_hosts_choice() {
    let sim = Simulation::start(SimConfig {
        host_versions: vec![make_version(0, 9), PROTOCOL_V1, make_version(2, 0)],
        ..SimConfig::default()
    })
    .expect("start");
    assert_eq!(sim.core().state(), ChannelState::READY);
    let info = info(&sim);
    assert_eq!(info.channel_state, ChannelState::READY);
    assert_eq!(info.state_reason, StateReason::NONE);
    assert_eq!(
        info.protocol_version.get(),
        PROTOCOL_V1,
        "newest common version"
    );
    finish(sim);
}

#[test]
fn rejected_negotiation_fails_the_channel_and_refuses_data() {
    let sim = Simulation::start(SimConfig {
        negotiation: Negotiation::Reject,
        ..SimConfig::default()
    })
    .expect("start");
    assert_eq!(sim.core().state(), ChannelState::NEGOTIATION_FAILED);
    assert_eq!(info(&sim).protocol_version.get(), 0);
    assert_eq!(info(&sim).state_reason, StateReason::REJECTED);
    // Data before (or without) negotiation is refused with a premature status and counted.
    let reply = sim.host_echo(b"too early", common::T).expect("host send");
    let header = peek_header(&reply).expect("a reply header");
    assert_eq!(header.status(), vmbmsg_proto::wire::PREMATURE_STATUS);
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NOT_READY_STATUS);
    let stats = common::stats(&sim);
    assert_eq!(stats.malformed(MalformedReason::Premature), 1);
    assert_eq!(stats.completions_not_ready.get(), 1);
    finish(sim);
}

#[test]
fn a_host_that_never_answers_times_out_into_negotiation_failed() {
    let sim = Simulation::start(SimConfig {
        negotiation: Negotiation::Silent,
        ..quick()
    })
    .expect("start");
    assert_eq!(sim.core().state(), ChannelState::NEGOTIATION_FAILED);
    assert_eq!(info(&sim).state_reason, StateReason::TIMED_OUT);
    finish(sim);
}

#[test]
fn a_garbage_negotiate_reply_is_counted_and_fails_negotiation() {
    let sim = Simulation::start(SimConfig {
        negotiation: Negotiation::Garbage,
        ..SimConfig::default()
    })
    .expect("start");
    assert_eq!(sim.core().state(), ChannelState::NEGOTIATION_FAILED);
    assert_eq!(info(&sim).state_reason, StateReason::MALFORMED_REPLY);
    assert_eq!(common::stats(&sim).malformed_total.get(), 1);
    finish(sim);
}

#[test]
fn a_host_offering_no_common_version_is_rejected() {
    let sim = Simulation::start(SimConfig {
        host_versions: vec![make_version(7, 0)],
        ..SimConfig::default()
    })
    .expect("start");
    assert_eq!(sim.core().state(), ChannelState::NEGOTIATION_FAILED);
    assert_eq!(info(&sim).state_reason, StateReason::REJECTED);
    finish(sim);
}

#[test]
fn before_the_host_opens_the_channel_the_device_waits_for_it() {
    let sim = Simulation::new(SimConfig::default()).expect("new");
    assert_eq!(sim.core().state(), ChannelState::WAITING_FOR_HOST);
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        NOT_READY_STATUS
    );
    sim.host().open().expect("open");
    assert_eq!(sim.core().state(), ChannelState::READY);
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        NtStatus::STATUS_SUCCESS
    );
    finish(sim);
}
