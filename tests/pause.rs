//! Pausing the channel without closing it (`Core::pause_channel`, `VmbChannelPause`) and
//! resuming it (`Core::resume_channel`, `VmbChannelStart`): while paused nothing flows, host
//! packets wait in the ring and requests that wait for a notification keep waiting; after the
//! resume the channel negotiates again and everything that waited arrives.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::{Duration, Instant};

use common::{RECV_LEN, T, finish, info, ioctl, ready, stats};
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{SimConfig, Simulation};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, NOT_READY_STATUS, PingOut,
    parse_recv_output,
};
use vmbmsg_proto::wire::{HostMessage, MessageKind, PROTOCOL_V1_1, ReplyBody, parse_reply};

fn ping(sim: &Simulation) -> NtStatus {
    ioctl(sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status
}

#[test]
fn a_paused_channel_holds_everything_and_hands_it_over_after_the_resume() {
    let sim = ready();
    let negotiations = sim.host().stats().sync_requests;
    let recv = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);

    sim.core().pause_channel().expect("pause");
    assert_eq!(sim.core().state(), ChannelState::PAUSED);
    assert_eq!(info(&sim).channel_state, ChannelState::PAUSED);
    assert_eq!(sim.core().protocol_version(), 0, "no session while paused");
    assert_eq!(ping(&sim), NOT_READY_STATUS, "nothing is sent while paused");

    // The host keeps its side open: what it sends waits in the ring.
    let version = PROTOCOL_V1_1;
    let received = stats(&sim).rx_packets.get();
    let echo = sim
        .host_message(HostMessage::echo(version, 7, b"sent while paused"))
        .expect("the host can still send");
    let note = sim
        .host_message(HostMessage::notify(version, 8, b"note while paused"))
        .expect("the host can still send");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        stats(&sim).rx_packets.get(),
        received,
        "nothing is delivered while paused"
    );
    assert!(
        recv.wait(Duration::from_millis(50)).is_none(),
        "the parked RECV keeps waiting: the channel is not closed"
    );

    sim.core().resume_channel().expect("resume");
    assert_eq!(sim.core().state(), ChannelState::READY);
    assert_eq!(
        sim.core().protocol_version(),
        PROTOCOL_V1_1,
        "the session goes on"
    );
    assert_eq!(
        sim.host().stats().sync_requests,
        negotiations,
        "no new NEGOTIATE: the host never saw the pause"
    );

    let reply = sim.completion(echo, T);
    let r = parse_reply(&reply, MessageKind::ECHO, 7).expect("the ECHO sent while paused");
    assert_eq!(
        r.body,
        ReplyBody::Echo {
            payload: b"sent while paused"
        }
    );
    assert_eq!(
        parse_reply(&sim.completion(note, T), MessageKind::NOTIFY, 8)
            .expect("NOTIFY reply")
            .status,
        NtStatus::STATUS_SUCCESS
    );
    let c = recv.wait(T).expect("the parked RECV gets the notification");
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    let (_, payload) = parse_recv_output(&c.output).expect("RecvOut");
    assert_eq!(payload, b"note while paused");
    assert_eq!(ping(&sim), NtStatus::STATUS_SUCCESS);
    finish(sim);
}

#[test]
fn pause_and_resume_refuse_the_wrong_state() {
    let sim = ready();
    assert_eq!(
        sim.core().resume_channel(),
        Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "not paused"
    );
    sim.core().pause_channel().expect("pause");
    assert_eq!(
        sim.core().pause_channel(),
        Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "already paused"
    );
    sim.core().resume_channel().expect("resume");
    assert_eq!(sim.core().state(), ChannelState::READY);
    sim.core().channel_down();
    assert_eq!(
        sim.core().pause_channel(),
        Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "no channel"
    );
    assert_eq!(
        sim.core().resume_channel(),
        Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "no channel"
    );
    finish(sim);
}

#[test]
fn a_pause_before_the_host_opens_waits_for_the_open_after_the_resume() {
    let sim = Simulation::new(SimConfig::default()).expect("new");
    assert_eq!(sim.core().state(), ChannelState::WAITING_FOR_HOST);
    sim.core()
        .pause_channel()
        .expect("pause an enabled channel");
    assert_eq!(sim.core().state(), ChannelState::PAUSED);
    // The host opens meanwhile: the channel stays paused (no Started, no negotiation).
    sim.host().open().expect("open");
    assert_eq!(sim.core().state(), ChannelState::PAUSED);
    assert_eq!(sim.host().stats().sync_requests, 0);
    sim.core().resume_channel().expect("resume");
    assert_eq!(sim.core().state(), ChannelState::READY);
    assert_eq!(ping(&sim), NtStatus::STATUS_SUCCESS);
    finish(sim);
}

#[test]
fn a_host_close_while_paused_restarts_the_channel_running() {
    let sim = ready();
    sim.core().pause_channel().expect("pause");
    sim.host().close();
    let deadline = Instant::now() + T;
    while sim.core().state() != ChannelState::WAITING_FOR_HOST {
        assert!(Instant::now() < deadline, "state {:?}", sim.core().state());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        sim.core().resume_channel(),
        Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "the restart left it running, not paused"
    );
    sim.host().open().expect("the host opens it again");
    assert_eq!(sim.core().state(), ChannelState::READY);
    assert_eq!(ping(&sim), NtStatus::STATUS_SUCCESS);
    finish(sim);
}
