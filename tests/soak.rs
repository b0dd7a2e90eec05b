//! Soak: 10 000 000 packets both ways (set `VMBMSG_SOAK_PACKETS` for another number) with
//! faults injected at fixed rates on both sides, on four delivery threads, with user mode
//! receiving, cancelling, pinging and sending alongside. At the end: every packet and request
//! accounted for, zero contract violations, zero leaks, and resident memory flat (VmRSS read
//! from `/proc/self/status` after warm-up and at the end; VmHWM reported).
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! VMBMSG_SOAK_PACKETS=400000 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Fault rates (per 1 000):
//! * host packets: 100 truncated, 100 unknown kind, 20 wrong header version, 20 length lies,
//!   100 without completion requested (NOTIFY);
//! * host answers to PING/SEND: 20 malformed (cut short), 20 transport failure status,
//!   20 wrong request id, 20 answered twice (a duplicate completion after the right one),
//!   plus one completion of a made-up transaction per 50 requests;
//! * library: 10 `VmbPacketAllocate` failures and 10 `VmbPacketSend` failures per 1 000
//!   requests;
//! * user mode: 10 of 1 000 parked RECVs cancelled.
//!
//! The session is protocol 1.1 with a bulk area: 10 of 1 000 host packets are ECHO_BULKs
//! (written into the host's half, checked in place after the reply), and one SEND in 50 carries
//! 20 000 bytes, so it goes through the guest's half (SEND_BULK; the host reads and checks
//! every byte from the GPADL).
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{RECV_LEN, T, send_input};
use kmcl_model::GuestPacket;
use vmbmsg_core::CoreConfig;
use vmbmsg_core::NtStatus;
use vmbmsg_core::sim::{BulkArea, SimConfig, Simulation};
use vmbmsg_proto::ioctl::{
    BAD_REPLY_STATUS, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_SEND, PingOut, SendOut,
    parse_recv_output,
};
use vmbmsg_proto::wire::{
    GuestBody, HostMessage, MessageKind, PROTOCOL_V1_1, QUEUE_FULL_STATUS, Reply, ReplyBody,
    make_version, parse_guest_message, parse_reply, peek_header,
};

/// The large SEND payload of talker `t`, request `k`: above one ring packet.
fn bulk_payload(t: u64, k: u64) -> Vec<u8> {
    (0..20_000u64).map(|b| (b * 7 + k + t) as u8).collect()
}

/// `(VmRSS, VmHWM)` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn encode(m: HostMessage<'_>) -> Vec<u8> {
    let mut b = vec![0; m.encoded_len()];
    let n = m.write(&mut b).unwrap();
    b.truncate(n);
    b
}

fn encode_reply(r: &Reply<'_>) -> Vec<u8> {
    let mut b = vec![0; r.encoded_len()];
    let n = r.write(&mut b).unwrap();
    b.truncate(n);
    b
}

/// What host packet `i` is, and how its completion is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Echo,
    /// ECHO_BULK of `len` bytes at `offset` of the host's half.
    EchoBulk {
        offset: u32,
        len: u32,
    },
    Notify,
    NotifyNoCompletion,
    Malformed,
}

/// Host packets that are ECHO_BULKs: 10 per 1 000, each batch of 2 000 has 20, in their own
/// 3 KiB of the host's half.
fn bulk_echo(i: u64) -> Option<(u32, u32)> {
    let (in_batch, in_1000) = (i % 2000, i % 1000);
    if !(540..550).contains(&in_1000) {
        return None;
    }
    let slot = (in_batch / 1000) * 10 + (in_1000 - 540);
    Some(((slot * 3072) as u32, 1 + (i % 3072) as u32))
}

fn host_packet(i: u64, payload: &mut Vec<u8>) -> (Class, Vec<u8>) {
    payload.clear();
    if let Some((offset, len)) = bulk_echo(i) {
        payload.extend((0..u64::from(len)).map(|b| (b * 3 + i) as u8));
        return (
            Class::EchoBulk { offset, len },
            encode(HostMessage::echo_bulk(PROTOCOL_V1_1, i, offset, len)),
        );
    }
    payload.extend((0..(i % 96)).map(|b| (b ^ i) as u8));
    match i % 1000 {
        0..=99 => {
            let mut b = encode(HostMessage::echo(PROTOCOL_V1_1, i, payload));
            b.truncate(b.len().saturating_sub(1).min(23));
            (Class::Malformed, b)
        }
        100..=199 => {
            let mut b = encode(HostMessage::echo(PROTOCOL_V1_1, i, payload));
            b[4..6].copy_from_slice(&0x0666u16.to_le_bytes());
            (Class::Malformed, b)
        }
        200..=219 => {
            let mut b = encode(HostMessage::notify(PROTOCOL_V1_1, i, payload));
            b[0..4].copy_from_slice(&make_version(3, 0).to_le_bytes());
            (Class::Malformed, b)
        }
        220..=239 => {
            let mut b = encode(HostMessage::echo(PROTOCOL_V1_1, i, payload));
            b[8..12].copy_from_slice(&(payload.len() as u32 + 8).to_le_bytes());
            (Class::Malformed, b)
        }
        240..=339 => (
            Class::NotifyNoCompletion,
            encode(HostMessage::notify(PROTOCOL_V1_1, i, payload)),
        ),
        340..=539 => (
            Class::Notify,
            encode(HostMessage::notify(PROTOCOL_V1_1, i, payload)),
        ),
        _ => (
            Class::Echo,
            encode(HostMessage::echo(PROTOCOL_V1_1, i, payload)),
        ),
    }
}

/// The host's answer to guest packet number `n` (fault-injected at fixed rates), and whether
/// it is to be completed a second time.
fn answer(n: u64, gp: &GuestPacket, area: &BulkArea) -> (NtStatus, Vec<u8>, bool) {
    let ok = NtStatus::STATUS_SUCCESS;
    let Ok(m) = parse_guest_message(&gp.payload) else {
        return (ok, Vec::new(), false);
    };
    let kind = peek_header(&gp.payload).map_or(MessageKind::new(0), |h| h.kind);
    if let GuestBody::SendBulk { offset, len } = m.body {
        // Every byte arrived: the talker's pattern, read from the guest's half.
        assert!(offset + len <= area.guest_half);
        let mut got = vec![0; len as usize];
        gp.gpadl_read(area.gpadl, offset as usize, &mut got)
            .expect("the GPADL is mapped");
        let first = got[0];
        assert!(
            got.iter()
                .enumerate()
                .all(|(b, v)| *v == first.wrapping_add((b * 7) as u8)),
            "a bulk SEND's payload arrived intact"
        );
    }
    let good = |id| match m.body {
        GuestBody::Negotiate { .. } => encode_reply(&Reply::negotiate_accept(id, PROTOCOL_V1_1)),
        GuestBody::Ping { nonce } => encode_reply(&Reply::ping(m.version, id, nonce)),
        GuestBody::Send { .. } | GuestBody::SendBulk { .. } | GuestBody::BulkOffer { .. } => {
            encode_reply(&Reply::status_only(kind, m.version, id, ok))
        }
    };
    if kind == MessageKind::NEGOTIATE || kind == MessageKind::BULK_OFFER {
        return (ok, good(m.id), false);
    }
    match n % 1000 {
        0..=19 => {
            let mut b = good(m.id);
            b.pop();
            (ok, b, false)
        }
        20..=39 => (NtStatus::STATUS_UNSUCCESSFUL, good(m.id), false),
        40..=59 => (ok, good(m.id ^ 0x8000), false),
        60..=79 => (ok, good(m.id), true),
        _ => (ok, good(m.id), false),
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    bad_reply: AtomicU64,
    transport: AtomicU64,
    no_memory: AtomicU64,
    alloc_injected: AtomicU64,
    send_injected: AtomicU64,
    duplicates: AtomicU64,
    made_up: AtomicU64,
}

#[test]
#[ignore = "soak: minutes in release; run with --ignored (README, Reliability)"]
fn soak_ten_million_packets_with_faults_both_ways() {
    let total: u64 = std::env::var("VMBMSG_SOAK_PACKETS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let host_total = total / 5 * 4;
    let per_talker = (total - host_total) / 2;
    let sim = Simulation::start(SimConfig {
        delivery_threads: 4,
        core: CoreConfig {
            notify_depth: 64,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    })
    .expect("start");
    // The simulation's host negotiated 1.1 and accepted the bulk area; this responder takes
    // over the session.
    let area = sim
        .host_side()
        .bulk()
        .expect("a 1.1 session with a bulk area");
    // The host's answers: numbered, fault-injected; transactions to complete twice queued.
    let guest_packets = std::sync::Arc::new(AtomicU64::new(0));
    let twice = std::sync::Arc::new(Mutex::new(Vec::<u64>::new()));
    {
        let (n, twice) = (guest_packets.clone(), twice.clone());
        sim.host().set_responder(move |gp| {
            let (status, reply, again) = answer(n.fetch_add(1, Ordering::Relaxed), gp, &area);
            if again {
                twice.lock().unwrap().push(gp.id());
            }
            Some((status, reply))
        });
    }
    let start = Instant::now();
    let warm = AtomicBool::new(false);
    let mem_warm = Mutex::new((0, 0));
    let done = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let cancelled = AtomicU64::new(0);
    let tally = Tally::default();
    let mut counts = [0u64; 4]; // echo, notify (incl. queue-full), no-completion, malformed
    let mut queue_full = 0u64;
    let mut echo_bulk = 0u64;

    std::thread::scope(|s| {
        // User mode draining notifications, cancelling one parked RECV in a hundred.
        let reader = s.spawn(|| {
            let mut k = 0u64;
            loop {
                k += 1;
                let pending = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
                if k.is_multiple_of(100) && pending.cancel() {
                    let c = pending.wait(T).expect("cancelled RECV completes");
                    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let c = loop {
                    if let Some(c) = pending.wait(Duration::from_millis(50)) {
                        break c;
                    }
                    if done.load(Ordering::Acquire) && pending.cancel() {
                        return;
                    }
                };
                if c.status == NtStatus::STATUS_SUCCESS {
                    parse_recv_output(&c.output).expect("RecvOut");
                    received.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_eq!(c.status, NtStatus::STATUS_CANCELLED);
                    if done.load(Ordering::Acquire) {
                        return;
                    }
                    cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Two user-mode threads pinging and sending, with library faults at fixed rates and
        // the host's duplicate and made-up completions injected between requests.
        let talkers: Vec<_> = (0..2u64)
            .map(|t| {
                let (sim, tally, twice) = (&sim, &tally, &twice);
                s.spawn(move || {
                    let payload = [t as u8; 48];
                    let input = send_input(&payload);
                    for k in 0..per_talker {
                        let bulk_input;
                        let input = if k % 50 == 1 {
                            bulk_input = send_input(&bulk_payload(t, k));
                            &bulk_input
                        } else {
                            &input
                        };
                        match k % 1000 {
                            500 if t == 0 => {
                                sim.host().faults().fail_allocations(1);
                                tally.alloc_injected.fetch_add(1, Ordering::Relaxed);
                            }
                            500 => {
                                sim.host()
                                    .faults()
                                    .fail_sends(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
                                tally.send_injected.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        let c = if k % 2 == 0 {
                            sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>())
                        } else {
                            sim.ioctl(IOCTL_VMBMSG_SEND, input, size_of::<SendOut>())
                        }
                        .wait(T)
                        .expect("PING/SEND completes");
                        let bucket = match c.status {
                            NtStatus::STATUS_SUCCESS => &tally.ok,
                            BAD_REPLY_STATUS => &tally.bad_reply,
                            NtStatus::STATUS_UNSUCCESSFUL => &tally.transport,
                            NtStatus::STATUS_INSUFFICIENT_RESOURCES => &tally.no_memory,
                            other => panic!("unexpected status {other}"),
                        };
                        bucket.fetch_add(1, Ordering::Relaxed);
                        let again: Vec<u64> = std::mem::take(&mut *twice.lock().unwrap());
                        for id in again {
                            sim.host()
                                .complete_transaction(id, NtStatus::STATUS_SUCCESS, b"again");
                            tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if k % 50 == 25 {
                            let made_up = (1 << 60) + k;
                            sim.host()
                                .complete_transaction(made_up, NtStatus::STATUS_SUCCESS, &[]);
                            tally.made_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        // The host.
        const BATCH: u64 = 2_000;
        let mut payload = Vec::with_capacity(128);
        let mut i = 0;
        let mut next_report = host_total / 10;
        while i < host_total {
            let batch: Vec<_> = (i..(i + BATCH).min(host_total))
                .map(|k| {
                    let (class, bytes) = host_packet(k, &mut payload);
                    if let Class::EchoBulk { offset, .. } = class {
                        let at = (area.guest_half + offset) as usize;
                        sim.host()
                            .gpadl_write(area.gpadl, at, &payload)
                            .expect("the host writes its half");
                    }
                    let completion = class != Class::NotifyNoCompletion;
                    let txn = sim.host().send(&bytes, completion).expect("host send");
                    (k, class, txn)
                })
                .collect();
            for (k, class, txn) in batch {
                let c = sim.host().wait_completion(txn, T).expect("completed");
                assert!(!c.failed);
                match class {
                    Class::Echo => {
                        let r = parse_reply(&c.payload, MessageKind::ECHO, k).expect("ECHO reply");
                        let ReplyBody::Echo { payload } = r.body else {
                            panic!("ECHO reply without payload: {r:?}");
                        };
                        assert_eq!(payload.len() as u64, k % 96);
                        counts[0] += 1;
                    }
                    Class::EchoBulk { offset, len } => {
                        let r = parse_reply(&c.payload, MessageKind::ECHO_BULK, k)
                            .expect("ECHO_BULK reply");
                        assert_eq!(r.body, ReplyBody::EchoBulk { offset, len });
                        let mut echoed = vec![0; len as usize];
                        let at = (area.guest_half + offset) as usize;
                        sim.host()
                            .gpadl_read(area.gpadl, at, &mut echoed)
                            .expect("mapped");
                        assert!(
                            echoed
                                .iter()
                                .enumerate()
                                .all(|(b, v)| *v == (b as u64 * 3 + k) as u8)
                        );
                        counts[0] += 1;
                        echo_bulk += 1;
                    }
                    Class::Notify => {
                        let r = parse_reply(&c.payload, MessageKind::NOTIFY, k).expect("reply");
                        if r.status == QUEUE_FULL_STATUS {
                            queue_full += 1;
                        } else {
                            assert!(r.status.is_success(), "{r:?}");
                        }
                        counts[1] += 1;
                    }
                    Class::NotifyNoCompletion => counts[2] += 1,
                    Class::Malformed => {
                        let h = peek_header(&c.payload).expect("an error reply");
                        assert!(h.status().is_error());
                        counts[3] += 1;
                    }
                }
            }
            i += BATCH;
            if !warm.load(Ordering::Relaxed) && i >= host_total / 50 {
                *mem_warm.lock().unwrap() = memory_kib();
                warm.store(true, Ordering::Relaxed);
            }
            if i >= next_report {
                let (rss, hwm) = memory_kib();
                eprintln!(
                    "soak: {i}/{host_total} host packets, {:.1?}, VmRSS {rss} KiB, VmHWM {hwm} KiB",
                    start.elapsed()
                );
                next_report += host_total / 10;
            }
        }
        for t in talkers {
            t.join().expect("talker");
        }
        done.store(true, Ordering::Release);
        reader.join().expect("reader");
    });
    let elapsed = start.elapsed();
    let mem_end = memory_kib();
    let mem_warm = *mem_warm.lock().unwrap();

    // Everything accounted for.
    let s = sim.core().stats();
    let notify_total = counts[1] + counts[2];
    let (echo, malformed) = (counts[0], counts[3]);
    assert_eq!(echo + notify_total + malformed, host_total);
    assert_eq!(s.rx_packets.get(), host_total);
    assert_eq!(s.echo_count.get(), echo);
    assert_eq!(s.notify_count.get(), notify_total);
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // Malformed host packets, and malformed host replies to PING/SEND.
    assert_eq!(s.malformed_total.get(), malformed + t(&tally.bad_reply));
    assert_eq!(
        common::completions(&s),
        host_total,
        "every host packet completed exactly once"
    );
    assert!(s.completions_queue_full.get() >= queue_full);
    let requests = 2 * per_talker;
    assert_eq!(
        t(&tally.ok) + t(&tally.bad_reply) + t(&tally.transport) + t(&tally.no_memory),
        requests
    );
    assert_eq!(s.ping_ok.get() + s.send_ok.get(), t(&tally.ok));
    assert_eq!(
        s.ping_failed.get() + s.send_failed.get(),
        requests - t(&tally.ok)
    );
    assert_eq!(s.alloc_failures.get(), t(&tally.alloc_injected));
    assert_eq!(
        t(&tally.no_memory),
        t(&tally.alloc_injected) + t(&tally.send_injected)
    );
    let host = sim.host().stats();
    assert_eq!(host.delivered_to_guest, host_total);
    assert_eq!(host.completed_by_guest, host_total);
    assert_eq!(host.failed_by_guest, 0);
    assert_eq!(
        host.ignored_host_completions,
        t(&tally.duplicates) + t(&tally.made_up)
    );
    sim.core().channel_down();
    assert_eq!(sim.host().stats().packets_allocated, 0, "no packet leaked");
    assert_eq!(
        sim.core().stats().notify_delivered.get(),
        received.load(Ordering::Relaxed)
    );
    sim.host().assert_no_violations();
    assert!(kmcl_model::orphan_violations().is_empty());
    assert!(echo_bulk > 0, "the bulk echo path ran");
    assert!(
        sim.host().stats().gpadls_alive == 0,
        "the bulk area's GPADL was deleted with the channel"
    );
    let guest_total = guest_packets.load(Ordering::Relaxed);
    let injected = t(&tally.alloc_injected)
        + t(&tally.send_injected)
        + t(&tally.duplicates)
        + t(&tally.made_up)
        + t(&tally.bad_reply)
        + t(&tally.transport)
        + malformed
        + cancelled.load(Ordering::Relaxed);
    println!(
        "soak: {} packets ({host_total} host->guest: {echo} ECHO ({echo_bulk} of them bulk), {notify_total} NOTIFY of which \
         {} without completion and {queue_full} queue-full, {malformed} malformed; {guest_total} \
         guest->host for {requests} PING/SEND) in {elapsed:.2?}; faults injected {injected} \
         (library: {} alloc + {} send; host answers: {} bad, {} transport, {} duplicate, {} \
         made-up; user: {} RECV cancels); violations 0, packets leaked 0; VmRSS after warm-up \
         {} KiB, at end {} KiB; VmHWM {} KiB -> {} KiB",
        host_total + guest_total,
        counts[2],
        t(&tally.alloc_injected),
        t(&tally.send_injected),
        t(&tally.bad_reply),
        t(&tally.transport),
        t(&tally.duplicates),
        t(&tally.made_up),
        cancelled.load(Ordering::Relaxed),
        mem_warm.0,
        mem_end.0,
        mem_warm.1,
        mem_end.1,
    );
    // Flat: no growth with the packet count beyond allocator noise.
    assert!(
        mem_end.0 <= mem_warm.0 + 32 * 1024,
        "VmRSS grew from {} KiB to {} KiB",
        mem_warm.0,
        mem_end.0
    );
}
