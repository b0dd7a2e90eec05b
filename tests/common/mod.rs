//! Helpers shared by the driver's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use vmbmsg_core::sim::{Completed, SimConfig, Simulation};
use vmbmsg_core::{CoreConfig, NtStatus};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_GET_STATS, InfoOut, RECV_OUT_MAX, SendIn,
    StatsOut, read_output, write_send_input,
};

pub(crate) const T: Duration = Duration::from_secs(10);

/// A simulation that has negotiated, with test-friendly timeouts.
pub(crate) fn ready() -> Simulation {
    ready_with(SimConfig::default())
}

pub(crate) fn ready_with(config: SimConfig) -> Simulation {
    let sim = Simulation::start(config).expect("simulation starts");
    assert_eq!(sim.core().state(), ChannelState::READY);
    sim
}

/// A config whose negotiation gives up quickly.
pub(crate) fn quick() -> SimConfig {
    SimConfig {
        core: CoreConfig {
            negotiate_timeout: Duration::from_millis(200),
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    }
}

/// Runs one IOCTL to completion.
pub(crate) fn ioctl(sim: &Simulation, code: u32, input: &[u8], output_len: usize) -> Completed {
    sim.ioctl(code, input, output_len)
        .wait(T)
        .expect("the IOCTL completes")
}

pub(crate) fn info(sim: &Simulation) -> InfoOut {
    let c = ioctl(sim, IOCTL_VMBMSG_GET_INFO, &[], size_of::<InfoOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    InfoOut::parse(&c.output).expect("a valid InfoOut")
}

pub(crate) fn stats(sim: &Simulation) -> StatsOut {
    let c = ioctl(sim, IOCTL_VMBMSG_GET_STATS, &[], size_of::<StatsOut>());
    assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
    read_output(&c.output).expect("a valid StatsOut")
}

/// The input buffer of a SEND IOCTL carrying `payload`.
pub(crate) fn send_input(payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; size_of::<SendIn>() + payload.len()];
    let n = write_send_input(&mut buf, payload).unwrap();
    buf.truncate(n);
    buf
}

/// Host packets the driver completed, over every completion status it counts: equal to
/// `rx_packets` when each packet was completed exactly once with a counted status.
pub(crate) fn completions(s: &StatsOut) -> u64 {
    s.completions_ok.get()
        + s.completions_malformed.get()
        + s.completions_queue_full.get()
        + s.completions_not_ready.get()
        + s.completions_other.get()
}

/// RECV's minimum output size.
pub(crate) const RECV_LEN: usize = RECV_OUT_MAX;

/// Ends a test: the device goes away (channel down, KMCL reference released, the model's bus
/// driver sees the removal) and the model saw no contract violation.
pub(crate) fn finish(mut sim: Simulation) {
    sim.remove_device();
    sim.host().assert_no_violations();
    assert_eq!(sim.host().interface_references(), 0);
    assert!(kmcl_model::orphan_violations().is_empty());
}
