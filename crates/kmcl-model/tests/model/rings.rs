//! The transport: packets really cross two VMBus rings, byte for byte as on the wire, with
//! signals counted and full rings handled on both sides.

use std::sync::Arc;
use std::time::Duration;

use kmcl_model::{ModelConfig, NtStatus, connected, connected_with};

use crate::common::*;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn host_packet_and_guest_completion_are_byte_exact_in_the_rings() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    let txn = host.send(b"hello", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let snap = host.ring_snapshot().expect("open");
    let d = &snap.host_to_guest_data;
    // Descriptor: in-band, offset8 2, len8 (16 + 8 header + 8 padded payload) / 8 = 4,
    // COMPLETION_REQUESTED, the transaction id.
    assert_eq!(u16_at(d, 0), 0x6);
    assert_eq!(u16_at(d, 2), 2);
    assert_eq!(u16_at(d, 4), 4);
    assert_eq!(u16_at(d, 6), 1);
    assert_eq!(u64_at(d, 8), txn.id());
    assert_ne!(txn.id(), 0, "transaction ids are never 0");
    // Model KMCL header (exact length, aux), payload, zero padding, trailer.
    assert_eq!(u32_at(d, 16), 5);
    assert_eq!(u32_at(d, 20), 0);
    assert_eq!(&d[24..29], b"hello");
    assert_eq!(&d[29..32], &[0, 0, 0]);
    assert_eq!(u64_at(d, 32), 0, "trailer: start offset 0 in the high half");
    let c = &snap.host_to_guest_control;
    assert_eq!(c.len(), 4096);
    assert_eq!(u32_at(c, 0), 40, "write index");
    assert_eq!(u32_at(c, 4), 40, "read index: KMCL copied the packet out");
    assert_eq!(u32_at(c, 8), 0, "interrupt mask clear once drained");
    assert_eq!(u32_at(c, 12), 0, "no pending send size");
    assert_eq!(u32_at(c, 64), 1, "feature: pending send size");

    let tok = g.take_held()[0];
    complete(tok, b"ok");
    assert_eq!(
        host.wait_completion(txn, T).expect("done").payload,
        b"ok".to_vec()
    );
    let snap = host.ring_snapshot().expect("open");
    let d = &snap.guest_to_host_data;
    assert_eq!(u16_at(d, 0), 0xB, "completion packet");
    assert_eq!((u16_at(d, 2), u16_at(d, 4), u16_at(d, 6)), (2, 4, 0));
    assert_eq!(u64_at(d, 8), txn.id(), "carries the host's transaction id");
    assert_eq!(
        (u32_at(d, 16), u32_at(d, 20)),
        (2, 0),
        "2 bytes, STATUS_SUCCESS"
    );
    assert_eq!(&d[24..26], b"ok");
    assert_eq!(u32_at(&snap.guest_to_host_control, 0), 40);
    assert_eq!(u32_at(&snap.guest_to_host_control, 4), 40);
    g.teardown();
}

#[test]
fn guest_packet_and_host_completion_cross_the_rings() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"abc", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let gp = host.recv(T).expect("recv");
    let id = gp.id();
    let snap = host.ring_snapshot().expect("open");
    let d = &snap.guest_to_host_data;
    assert_eq!(
        (u16_at(d, 0), u16_at(d, 6)),
        (0x6, 1),
        "in-band, completion requested"
    );
    assert_eq!(u64_at(d, 8), id);
    assert_eq!(u32_at(d, 16), 3);
    assert_eq!(u32_at(d, 20), WAIT, "aux: the send flags");
    assert_eq!(&d[24..27], b"abc");
    gp.complete(NtStatus::STATUS_DATA_ERROR, b"no");
    assert_eq!(c.len(), 1);
    assert_eq!(c.all()[0].status, NtStatus::STATUS_DATA_ERROR);
    let snap = host.ring_snapshot().expect("open");
    let d = &snap.host_to_guest_data;
    assert_eq!(u16_at(d, 0), 0xB);
    assert_eq!(u64_at(d, 8), id);
    assert_eq!(
        u32_at(d, 20),
        NtStatus::STATUS_DATA_ERROR.as_u32(),
        "aux: the status"
    );
    assert_eq!(&d[24..26], b"no");
    g.teardown();
}

#[test]
fn signals_only_on_empty_to_non_empty() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    for i in 0..10u8 {
        let txn = host.send(&[i], true).expect("send");
        assert_eq!(host.wait_completion(txn, T).expect("done").payload, [i]);
    }
    let s = host.ring_stats().expect("open");
    // Each host packet found the ring empty: one signal each; the guest's KMCL drained it at
    // once. Each guest completion likewise.
    assert_eq!(s.host_to_guest_writer.packets, 10);
    assert_eq!(s.host_to_guest_writer.signals, 10);
    assert_eq!(s.host_to_guest_writer.signals_skipped, 0);
    assert_eq!(s.host_to_guest_reader.packets, 10);
    assert_eq!(s.guest_to_host_writer.packets, 10);
    assert_eq!(s.guest_to_host_writer.signals, 10);
    // Nobody waited for space: readers never signalled back.
    assert_eq!(s.host_to_guest_reader.signals, 0);
    assert_eq!(s.guest_to_host_reader.signals, 0);
    g.teardown();
}

#[test]
fn a_host_holding_packets_is_not_signalled_but_polls() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    // The host receives nothing: the first packet signals, the others find it non-empty.
    for i in 0..3u8 {
        assert_eq!(
            send(tracked_packet(g.ch, c), &[i], WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let s = host.ring_stats().expect("open");
    assert_eq!(s.guest_to_host_writer.signals, 1);
    assert_eq!(s.guest_to_host_writer.signals_skipped, 2);
    // The guest's completion of a host packet sits behind them, unsignalled; the host finds
    // it while it waits.
    let txn = host.send(b"x", true).expect("send");
    assert_eq!(host.wait_completion(txn, T).expect("done").payload, b"x");
    for i in 0..3u8 {
        let gp = host.recv(T).expect("in order");
        assert_eq!(gp.payload, [i]);
        gp.complete(NtStatus::STATUS_SUCCESS, b"");
    }
    assert_eq!(c.len(), 3);
    g.teardown();
}

#[test]
fn full_guest_ring_queues_sends_on_the_channel_in_order() {
    let host = connected();
    let _guard = host.violation_guard();
    // One data page: 4088 usable bytes; 1000-byte packets take 1032.
    let g = GuestBuilder::new(&host).ring(1, 1).opened();
    let c = Completions::new(true);
    for i in 0..10u8 {
        assert_eq!(
            send(tracked_packet(g.ch, c), &[i; 1000], WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let s = host.ring_stats().expect("open");
    assert_eq!(s.guest_to_host_writer.packets, 3);
    assert_eq!(s.guest_sends_queued, 7);
    assert_eq!(s.guest_queue_len, 7);
    let pending = u32_at(
        &host.ring_snapshot().expect("open").guest_to_host_control,
        12,
    );
    assert!(
        pending >= 1032,
        "the blocked guest asks for space: {pending}"
    );
    for i in 0..10u8 {
        let gp = host.recv(T).expect("recv");
        assert_eq!(gp.payload, [i; 1000], "FIFO across the queue");
        gp.complete(NtStatus::STATUS_SUCCESS, b"");
    }
    assert_eq!(c.len(), 10);
    let s = host.ring_stats().expect("open");
    assert_eq!(s.guest_queue_len, 0);
    assert_eq!(s.guest_to_host_writer.packets, 10);
    assert!(
        s.guest_to_host_reader.signals >= 1,
        "the host signalled when the pending send size became free"
    );
    assert_eq!(
        u32_at(
            &host.ring_snapshot().expect("open").guest_to_host_control,
            12
        ),
        0,
        "pending send size cleared"
    );
    g.teardown();
}

#[test]
fn host_senders_share_a_small_ring() {
    let host = Arc::new(connected_with(ModelConfig {
        delivery_threads: 2,
        ..Default::default()
    }));
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).ring(1, 4).opened();
    let senders: Vec<_> = (0..4u8)
        .map(|t| {
            let h = Arc::clone(&host);
            std::thread::spawn(move || {
                for i in 0..200u8 {
                    let body = vec![t ^ i; 900];
                    let txn = h.send(&body, true).expect("send");
                    let done = h.wait_completion(txn, T).expect("done");
                    assert_eq!(done.payload, body);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let s = host.ring_stats().expect("open");
    assert_eq!(s.host_to_guest_writer.packets, 800);
    assert_eq!(s.host_to_guest_reader.packets, 800);
    assert_eq!(s.corrupt + s.unknown_completions, 0);
    g.teardown();
}

#[test]
fn send_inline_runs_process_packet_on_the_calling_thread() {
    let host = connected();
    let _guard = host.violation_guard();
    let me = std::thread::current().id();
    static SEEN: std::sync::Mutex<Vec<std::thread::ThreadId>> = std::sync::Mutex::new(Vec::new());
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            lock(&SEEN).push(std::thread::current().id());
            complete(d.tok, &d.data);
        })
        .opened();
    let txn = host.send_inline(b"now", true).expect("send");
    assert_eq!(
        *lock(&SEEN),
        [me],
        "delivered on this thread, before send_inline returned"
    );
    assert_eq!(
        host.wait_completion(txn, Duration::ZERO)
            .expect("done")
            .payload,
        b"now"
    );
    g.teardown();
}

#[test]
fn packets_a_responder_declines_do_not_hold_ring_space() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|_| None); // looks at every packet, answers none now
    let g = GuestBuilder::new(&host).ring(1, 1).opened();
    let c = Completions::new(true);
    for i in 0..10u8 {
        assert_eq!(
            send(tracked_packet(g.ch, c), &[i; 1000], WAIT),
            NtStatus::STATUS_SUCCESS
        );
    }
    let s = host.ring_stats().expect("open");
    assert_eq!(s.guest_sends_queued, 0, "the host copied each one out");
    assert_eq!(s.guest_to_host_writer.packets, 10);
    // A host packet's completion is not stuck behind them.
    let txn = host.send(b"ping", true).expect("send");
    assert_eq!(host.wait_completion(txn, T).expect("done").payload, b"ping");
    for i in 0..10u8 {
        let gp = host.recv(T).expect("recv");
        assert_eq!(gp.payload, [i; 1000]);
        gp.complete(NtStatus::STATUS_SUCCESS, b"");
    }
    assert_eq!(c.len(), 10);
    g.teardown();
}
