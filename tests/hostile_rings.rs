//! A host that breaks the ring protocol itself: it writes raw bytes into the live rings
//! (indices, descriptors, packet types, flags, the pending send size) and raises the guest's
//! interrupt (`kmcl_model::RawRings`). The guest's KMCL (the model) must refuse the corrupt
//! ring and close the channel; the driver must see an ordinary close (it enables the channel
//! again and waits for the host), serve again once the host reopens, and leak nothing. The
//! ring-level checks themselves are `vmbus-ring`'s tests; this is the whole stack's reaction.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::time::{Duration, Instant};

use common::{T, finish, ioctl, ready, stats};
use kmcl_model::RawRings;
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::Simulation;
use vmbmsg_proto::ioctl::{ChannelState, IOCTL_VMBMSG_PING, PingOut};

const WRITE_INDEX: usize = 0;
const READ_INDEX: usize = 1;
const PENDING_SEND_SIZE: usize = 3;

fn wait_for(sim: &Simulation, what: &str, done: impl Fn(&Simulation) -> bool) {
    let deadline = Instant::now() + T;
    while !done(sim) {
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; driver state {:?}, model {:?}",
            sim.core().state(),
            sim.host().stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One raw packet as the ring format lays it out: 16-byte descriptor (type, offset8, len8,
/// flags, transaction id), the body padded to 8, the 8-byte trailer (start offset << 32).
fn raw_packet(typ: u16, offset8: u16, len8: u16, flags: u16, body: &[u8], start: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for field in [typ, offset8, len8, flags] {
        p.extend_from_slice(&field.to_le_bytes());
    }
    p.extend_from_slice(&7u64.to_le_bytes());
    p.extend_from_slice(body);
    p.resize(p.len().next_multiple_of(8), 0);
    p.extend_from_slice(&(u64::from(start) << 32).to_le_bytes());
    p
}

/// Writes `packet` at the host→guest write index and publishes a write index `advance` bytes
/// further (the honest value is the packet's length).
fn append(rings: &RawRings, packet: &[u8], advance: u32) {
    let w = rings.host_to_guest_control(WRITE_INDEX);
    rings.write_host_to_guest(w as usize, packet);
    let len = u32::try_from(rings.host_to_guest_len()).expect("ring size");
    rings.set_host_to_guest_control(WRITE_INDEX, (w + advance) % len);
}

/// Breaks the open channel's rings with `corrupt`, then checks the whole reaction.
fn survives(name: &str, corrupt: impl FnOnce(&Simulation, &RawRings)) {
    let sim = ready();
    let rings = sim.host().raw_rings().expect("open channel");
    corrupt(&sim, &rings);
    wait_for(&sim, "the model to close the poisoned channel", |s| {
        s.host().stats().rings_poisoned == 1
    });
    // The driver saw a close: it enabled the channel again and waits for the host.
    wait_for(&sim, "the driver to wait for the host again", |s| {
        s.core().state() == ChannelState::WAITING_FOR_HOST
    });
    assert!(
        sim.host().ring_stats().is_none(),
        "{name}: the poisoned rings are gone"
    );
    assert_eq!(
        stats(&sim).malformed_total.get(),
        0,
        "{name}: no corrupt byte reached the driver as a message"
    );
    drop(rings);
    // The host opens again, on fresh rings, and everything works.
    sim.host().open().expect("reopen");
    assert_eq!(sim.core().state(), ChannelState::READY, "{name}");
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        NtStatus::STATUS_SUCCESS,
        "{name}"
    );
    assert!(
        sim.host_echo(b"after", T)
            .expect("echo")
            .ends_with(b"after"),
        "{name}"
    );
    assert_eq!(
        sim.host().stats().rings_poisoned,
        1,
        "{name}: poisoned once"
    );
    finish(sim);
}

#[test]
fn a_write_index_that_is_not_8_aligned_closes_the_channel() {
    survives("unaligned write index", |_, r| {
        r.set_host_to_guest_control(WRITE_INDEX, 13);
        r.signal_guest();
    });
}

#[test]
fn a_write_index_past_the_ring_closes_the_channel() {
    survives("write index past the end", |_, r| {
        let len = u32::try_from(r.host_to_guest_len()).expect("len");
        r.set_host_to_guest_control(WRITE_INDEX, len + 8);
        r.signal_guest();
    });
}

#[test]
fn a_packet_type_the_guest_does_not_know_closes_the_channel() {
    survives("unknown packet type", |_, r| {
        let w = r.host_to_guest_control(WRITE_INDEX);
        let p = raw_packet(0x1, 2, 3, 0, &[0; 8], w);
        append(r, &p, u32::try_from(p.len()).expect("len"));
        r.signal_guest();
    });
}

#[test]
fn an_undefined_descriptor_flag_closes_the_channel() {
    survives("undefined flag", |_, r| {
        let w = r.host_to_guest_control(WRITE_INDEX);
        let p = raw_packet(0x6, 2, 3, 0x8000, &[0; 8], w);
        append(r, &p, u32::try_from(p.len()).expect("len"));
        r.signal_guest();
    });
}

#[test]
fn a_data_offset_past_the_packet_closes_the_channel() {
    survives("offset8 > len8", |_, r| {
        let w = r.host_to_guest_control(WRITE_INDEX);
        let p = raw_packet(0x6, 9, 3, 0, &[0; 8], w);
        append(r, &p, u32::try_from(p.len()).expect("len"));
        r.signal_guest();
    });
}

#[test]
fn a_packet_longer_than_what_was_published_closes_the_channel() {
    survives("len8 past the write index", |_, r| {
        let w = r.host_to_guest_control(WRITE_INDEX);
        // The descriptor claims 200 bytes; the write index publishes 32.
        let p = raw_packet(0x6, 2, 25, 0, &[0; 8], w);
        append(r, &p, 32);
        r.signal_guest();
    });
}

#[test]
fn a_corrupt_read_index_in_the_guest_to_host_ring_closes_the_channel() {
    survives("guest→host read index", |sim, r| {
        // The host commits its read index after it has answered what it read (the BULK_OFFER
        // of the session's start, say): wait until it has, or that commit overwrites the
        // corrupt index and the guest's writer never sees it.
        wait_for(
            sim,
            "the host to have read everything the guest sent",
            |_| r.guest_to_host_control(READ_INDEX) == r.guest_to_host_control(WRITE_INDEX),
        );
        r.set_guest_to_host_control(READ_INDEX, 5);
        // The guest's writer finds it on this send: it publishes the PING, then reads the
        // reader's index to decide on a signal, finds it corrupt and poisons the ring. The
        // PING is already in the ring by then, so a host that reads it at once may still
        // answer it; either way the request completes and the channel closes (checked by
        // `survives`).
        let c = ioctl(sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
        assert!(
            c.status == NtStatus::STATUS_SUCCESS || c.output.is_empty(),
            "the PING completes, with an answer or a failure"
        );
    });
}

/// A garbage pending send size is not corruption: it only decides when the reader signals.
#[test]
fn a_garbage_pending_send_size_does_not_stop_the_channel() {
    let sim = ready();
    let rings = sim.host().raw_rings().expect("open channel");
    rings.set_host_to_guest_control(PENDING_SEND_SIZE, u32::MAX);
    for i in 0..200u32 {
        let payload = i.to_le_bytes();
        assert!(
            sim.host_echo(&payload, T)
                .expect("echo")
                .ends_with(&payload),
            "ECHO {i}"
        );
    }
    assert_eq!(sim.host().stats().rings_poisoned, 0);
    assert_eq!(sim.core().state(), ChannelState::READY);
    drop(rings);
    finish(sim);
}
