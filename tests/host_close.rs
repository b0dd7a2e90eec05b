//! The host closes the channel without rescinding it (its service restarted): KMCL leaves a
//! guest channel disabled, "must be restarted using VmbChannelEnable" (header). The driver
//! enables it again from its work item, so the channel opens and negotiates when the host
//! opens it again, and the device serves as before. A rescind looks the same to the driver:
//! the channel is enabled again and waits for an offer, until PnP removes the device.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::{Duration, Instant};

use common::{RECV_LEN, T, finish, ioctl, ready};
use vmbmsg_core::NtStatus;
use vmbmsg_proto::ioctl::{ChannelState, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, PingOut};

fn wait_for_state(sim: &vmbmsg_core::sim::Simulation, state: ChannelState) {
    let deadline = Instant::now() + T;
    while sim.core().state() != state {
        assert!(
            Instant::now() < deadline,
            "state {:?}, waiting for {state:?}",
            sim.core().state()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn after_a_host_close_the_channel_is_enabled_again_and_reopens() {
    let sim = ready();
    let recv = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
    sim.host().close();
    // The parked RECV learns at once that the channel is not ready.
    let c = recv.wait(T).expect("RECV completed at the close");
    assert_eq!(c.status, vmbmsg_proto::ioctl::NOT_READY_STATUS);
    // The work item enables the channel again: it waits for the host.
    wait_for_state(&sim, ChannelState::WAITING_FOR_HOST);
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        vmbmsg_proto::ioctl::NOT_READY_STATUS
    );
    sim.host().open().expect("the host opens it again");
    assert_eq!(sim.core().state(), ChannelState::READY);
    let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    assert!(
        sim.host_echo(b"after the close", T)
            .unwrap()
            .ends_with(b"after the close")
    );
    // And again.
    sim.host().close();
    wait_for_state(&sim, ChannelState::WAITING_FOR_HOST);
    sim.host().open().expect("third open");
    assert_eq!(sim.core().state(), ChannelState::READY);
    finish(sim);
}

#[test]
fn after_a_rescind_the_channel_waits_for_an_offer_until_the_device_goes() {
    let sim = ready();
    sim.host().rescind();
    wait_for_state(&sim, ChannelState::WAITING_FOR_HOST);
    assert_eq!(
        sim.host().open(),
        Err(kmcl_model::OpenError::NoOffer),
        "nothing to open"
    );
    sim.host().reoffer();
    sim.host().open().expect("the offer came back");
    assert_eq!(sim.core().state(), ChannelState::READY);
    finish(sim);
}
