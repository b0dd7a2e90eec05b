//! The in-process equivalent of `vmbctl --sim bench` (the report runs vmbctl itself and falls
//! back to this when it cannot): the simulation ([`vmbmsg_core::sim::Simulation`]: the driver core, kmcl-model with its delivery
//! thread, the simulated host) driven exactly as vmbctl drives it: guest→host SEND IOCTLs and
//! host→guest ECHO packets, `depth` requests in flight, each answer checked, for a fixed time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{SimConfig, Simulation};
use vmbmsg_proto::ioctl::IOCTL_VMBMSG_SEND;
use vmbmsg_proto::wire::{HostMessage, MessageKind, PROTOCOL_V1_1, parse_reply};

/// One measurement: a direction and payload size, packets answered in `elapsed`.
#[derive(Clone, Copy, Debug)]
pub struct E2eRow {
    /// `"guest->host"` or `"host->guest"`.
    pub direction: &'static str,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages answered (and checked).
    pub packets: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl E2eRow {
    /// Messages per second.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const ANSWER: Duration = Duration::from_secs(5);

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// A running simulation with the default configuration (one delivery thread).
///
/// # Panics
/// If the simulation does not start (a broken build).
#[must_use]
pub fn start() -> Simulation {
    Simulation::start(SimConfig::default()).expect("simulation")
}

/// guest→host: SEND IOCTLs with `size`-byte payloads, `depth` in flight, for `duration`.
///
/// # Panics
/// If an answer is missing or wrong (the measurement would be meaningless).
#[must_use]
pub fn guest_to_host(sim: &Simulation, size: usize, duration: Duration, depth: usize) -> E2eRow {
    let payload = pattern(size);
    let mut input = Vec::with_capacity(8 + size);
    input.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
    input.extend_from_slice(&0u32.to_le_bytes());
    input.extend_from_slice(&payload);
    let mut window = VecDeque::with_capacity(depth);
    let mut packets = 0;
    let start = Instant::now();
    let deadline = start + duration;
    loop {
        while window.len() < depth && Instant::now() < deadline {
            window.push_back(sim.ioctl(IOCTL_VMBMSG_SEND, &input, 8));
        }
        let Some(p) = window.pop_front() else {
            break;
        };
        let done = p.wait(ANSWER).expect("SEND answered");
        assert_eq!(done.status, NtStatus::STATUS_SUCCESS, "SEND failed");
        packets += 1;
    }
    E2eRow {
        direction: "guest->host",
        size,
        packets,
        elapsed: start.elapsed(),
    }
}

/// host→guest: ECHO packets with `size`-byte payloads, `depth` in flight, for `duration`.
///
/// # Panics
/// If an answer is missing or wrong.
#[must_use]
pub fn host_to_guest(sim: &Simulation, size: usize, duration: Duration, depth: usize) -> E2eRow {
    let payload = pattern(size);
    let mut window = VecDeque::with_capacity(depth);
    let mut packets = 0;
    let mut id = 1u64;
    let start = Instant::now();
    let deadline = start + duration;
    loop {
        while window.len() < depth && Instant::now() < deadline {
            let txn = sim
                .host_message(HostMessage::echo(PROTOCOL_V1_1, id, &payload))
                .expect("host send");
            window.push_back((id, txn));
            id += 1;
        }
        let Some((id, txn)) = window.pop_front() else {
            break;
        };
        let reply = sim.completion(txn, ANSWER);
        let parsed = parse_reply(&reply, MessageKind::ECHO, id).expect("ECHO reply");
        assert!(parsed.status.is_success(), "ECHO failed: {}", parsed.status);
        packets += 1;
    }
    E2eRow {
        direction: "host->guest",
        size,
        packets,
        elapsed: start.elapsed(),
    }
}
