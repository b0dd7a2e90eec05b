//! 1 000 000 mixed host packets on four delivery threads, with IOCTL traffic alongside: zero
//! verifier violations, zero leaks, and statistics that add up exactly.
#![cfg(not(windows))] // the simulation (vmbmsg_core::sim) runs on the model, which the Windows build does not link

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{RECV_LEN, T, ioctl};
use vmbmsg_core::sim::{SimConfig, Simulation};
use vmbmsg_core::{CoreConfig, NtStatus};
use vmbmsg_proto::ioctl::{
    IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_SEND, NOT_READY_STATUS, PingOut, SendIn,
    SendOut, parse_recv_output, write_send_input,
};
use vmbmsg_proto::wire::{
    HostMessage, MessageKind, PROTOCOL_V1_1, QUEUE_FULL_STATUS, ReplyBody, parse_reply, peek_header,
};

const TOTAL: u64 = 1_000_000;
const BATCH: u64 = 2_000;

/// What packet `i` is: 60 % ECHO, 20 % NOTIFY, 10 % truncated, 10 % unknown kind.
fn packet(i: u64) -> (u8, Vec<u8>) {
    let payload: Vec<u8> = (0..(i % 200)).map(|b| (b ^ i) as u8).collect();
    match i % 10 {
        0..=5 => (0, encode(HostMessage::echo(PROTOCOL_V1_1, i, &payload))),
        6 | 7 => (1, encode(HostMessage::notify(PROTOCOL_V1_1, i, &payload))),
        8 => {
            let mut b = encode(HostMessage::echo(PROTOCOL_V1_1, i, &payload));
            b.truncate(b.len().saturating_sub(1).min(23));
            (2, b)
        }
        _ => {
            let mut b = encode(HostMessage::echo(PROTOCOL_V1_1, i, &payload));
            b[4..6].copy_from_slice(&0x0666u16.to_le_bytes());
            (3, b)
        }
    }
}

fn encode(m: HostMessage<'_>) -> Vec<u8> {
    let mut b = vec![0; m.encoded_len()];
    let n = m.write(&mut b).unwrap();
    b.truncate(n);
    b
}

#[test]
fn a_million_mixed_packets_on_four_delivery_threads() {
    let sim = Simulation::start(SimConfig {
        delivery_threads: 4,
        core: CoreConfig {
            notify_depth: 64,
            ..CoreConfig::default()
        },
        ..SimConfig::default()
    })
    .expect("start");
    let start = Instant::now();
    let done = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let (mut echo, mut notify, mut malformed, mut queue_full) = (0u64, 0u64, 0u64, 0u64);
    let (pings, sends) = std::thread::scope(|s| {
        // User mode draining notifications with RECV, parked most of the time.
        let reader = s.spawn(|| {
            loop {
                let pending = sim.ioctl(IOCTL_VMBMSG_RECV, &[], RECV_LEN);
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
                    return;
                }
            }
        });
        // User mode pinging and sending alongside.
        let talker = s.spawn(|| {
            let (mut pings, mut sends) = (0u64, 0u64);
            let mut input = vec![0; size_of::<SendIn>() + 32];
            while !done.load(Ordering::Acquire) {
                let c = ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
                assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
                pings += 1;
                let n = write_send_input(&mut input, &pings.to_le_bytes()).unwrap();
                let c = ioctl(&sim, IOCTL_VMBMSG_SEND, &input[..n], size_of::<SendOut>());
                assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
                sends += 1;
            }
            (pings, sends)
        });
        // The host: a million packets, completions checked batch by batch.
        let mut i = 0;
        while i < TOTAL {
            let batch: Vec<_> = (i..(i + BATCH).min(TOTAL))
                .map(|k| {
                    let (class, bytes) = packet(k);
                    (k, class, sim.host().send(&bytes, true).expect("host send"))
                })
                .collect();
            for (k, class, txn) in batch {
                let reply = sim.completion(txn, T);
                match class {
                    0 => {
                        let r = parse_reply(&reply, MessageKind::ECHO, k).expect("ECHO reply");
                        let ReplyBody::Echo { payload } = r.body else {
                            panic!("ECHO reply without payload");
                        };
                        assert_eq!(payload.len() as u64, k % 200);
                        echo += 1;
                    }
                    1 => {
                        let r = parse_reply(&reply, MessageKind::NOTIFY, k).expect("reply");
                        if r.status == QUEUE_FULL_STATUS {
                            queue_full += 1;
                        } else {
                            assert!(r.status.is_success());
                        }
                        notify += 1;
                    }
                    _ => {
                        assert!(
                            peek_header(&reply)
                                .expect("error reply")
                                .status()
                                .is_error()
                        );
                        malformed += 1;
                    }
                }
            }
            i += BATCH;
        }
        done.store(true, Ordering::Release);
        reader.join().expect("reader");
        talker.join().expect("talker")
    });
    // Drain what is still queued.
    while sim.core().stats().notify_delivered.get() < notify - queue_full {
        let c = ioctl(&sim, IOCTL_VMBMSG_RECV, &[], RECV_LEN);
        assert_eq!(c.status, NtStatus::STATUS_SUCCESS);
        received.fetch_add(1, Ordering::Relaxed);
    }
    let elapsed = start.elapsed();

    let s = sim.core().stats();
    assert_eq!(echo + notify + malformed, TOTAL);
    assert_eq!(s.rx_packets.get(), TOTAL);
    assert_eq!(s.echo_count.get(), echo);
    assert_eq!(s.notify_count.get(), notify);
    assert_eq!(s.malformed_total.get(), malformed);
    assert_eq!(s.completions_ok.get(), echo + notify - queue_full);
    assert_eq!(s.completions_queue_full.get(), queue_full);
    assert_eq!(s.completions_malformed.get(), malformed);
    assert_eq!(
        common::completions(&s),
        TOTAL,
        "every packet completed exactly once"
    );
    assert_eq!(s.notify_dropped.get(), queue_full);
    assert_eq!(s.notify_delivered.get(), received.load(Ordering::Relaxed));
    assert_eq!(s.notify_delivered.get() + s.notify_dropped.get(), notify);
    assert_eq!(s.ping_ok.get(), pings);
    assert_eq!(s.send_ok.get(), sends);
    assert_eq!(
        s.tx_packets.get(),
        2 + pings + sends,
        "NEGOTIATE, BULK_OFFER, PINGs and SENDs"
    );
    assert_eq!(s.unconsumed_packets.get(), 0);
    let host = sim.host().stats();
    assert_eq!(host.delivered_to_guest, TOTAL);
    assert_eq!(host.completed_by_guest, TOTAL);
    assert_eq!(host.failed_by_guest, 0);
    sim.core().channel_down();
    assert_eq!(sim.host().stats().packets_allocated, 0, "no packet leaked");
    assert_eq!(
        ioctl(&sim, IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()).status,
        NOT_READY_STATUS
    );
    sim.host().assert_no_violations();
    println!(
        "million: {TOTAL} host packets ({echo} ECHO, {notify} NOTIFY of which {queue_full} queue-full, \
         {malformed} malformed) + {pings} PING + {sends} SEND IOCTLs on 4 delivery threads in \
         {elapsed:.2?}; violations: {}, packets leaked: {}",
        sim.host().violations().len(),
        sim.host().stats().packets_allocated
    );
}
