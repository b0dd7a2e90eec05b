//! The bytes a handler sees: a private copy, stable even when the host rewrites the buffer KMCL
//! passed while the handler runs, never allocated per packet; too many deliveries at once are
//! handed back for later, and too long a packet never reaches the handler.

// UNSAFETY: ParentDevice::from_raw on the model's device token.
#![expect(
    unsafe_code,
    reason = "ParentDevice::from_raw on the model's device token"
)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{T, library};
use kmcl::{BounceStats, ChannelBuilder, ChannelHandler, ChannelRef, IncomingPacket, PacketFlags};
use kmcl_model::{DeliveryMode, ModelConfig};

/// Reads the packet twice, `gap` apart, and records whether both reads agreed.
#[derive(Debug, Default)]
struct Sampler {
    gap: Duration,
    stable: AtomicU64,
    changed: AtomicU64,
    seen: Mutex<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone)]
struct Handler(Arc<Sampler>);

impl ChannelHandler for Handler {
    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        let second = self.0.sample(data);
        packet.complete(&second);
    }
}

impl Sampler {
    /// Reads `data` twice, `gap` apart; records the first read and whether the second agreed,
    /// and returns the second.
    fn sample(&self, data: &[u8]) -> Vec<u8> {
        let first = data.to_vec();
        std::thread::sleep(self.gap);
        let second = data.to_vec();
        if first == second {
            self.stable.fetch_add(1, Ordering::Relaxed);
        } else {
            self.changed.fetch_add(1, Ordering::Relaxed);
        }
        self.seen.lock().unwrap().push(first);
        second
    }
}

/// A [`Sampler`] for a protocol whose packets are at most 100 bytes, known at compile time;
/// it answers with the first byte of what it read second (a response fits any channel).
#[derive(Debug, Clone)]
struct Bounded(Arc<Sampler>);

impl ChannelHandler for Bounded {
    const MAX_PACKET_SIZE: Option<u32> = Some(100);

    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        assert!(data.len() <= 100, "the handler's bound holds");
        let second = self.0.sample(data);
        packet.complete(second.get(..1).unwrap_or_default());
    }
}

/// A host whose guest's KMCL delivers on four threads at once.
fn four_delivery_threads() -> kmcl_model::Host {
    kmcl_model::connected_with(ModelConfig {
        delivery_threads: 4,
        ..Default::default()
    })
}

/// A sampler that holds each packet 2 ms, so that deliveries overlap.
fn slow_sampler() -> Arc<Sampler> {
    Arc::new(Sampler {
        gap: Duration::from_millis(2),
        ..Sampler::default()
    })
}

fn channel(
    host: &kmcl_model::Host,
    sampler: &Arc<Sampler>,
    max_packet: u32,
    deliveries: u32,
) -> kmcl::Channel<Handler> {
    channel_of(host, Handler(sampler.clone()), max_packet, deliveries)
}

fn channel_of<H: ChannelHandler>(
    host: &kmcl_model::Host,
    handler: H,
    max_packet: u32,
    deliveries: u32,
) -> kmcl::Channel<H> {
    // SAFETY: the model's device token outlives the channel.
    let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
    let mut b = ChannelBuilder::new(&library(host), parent, handler).expect("allocate");
    b.max_packet_size(max_packet).expect("max packet size");
    b.concurrent_deliveries(deliveries).expect("bounce buffers");
    b.enable().map_err(|(_, s)| s).expect("enable")
}

#[test]
fn a_host_rewriting_the_buffer_during_the_callback_cannot_change_what_the_handler_reads() {
    let host = kmcl_model::connected_with(ModelConfig {
        delivery: DeliveryMode::InPlaceHostile,
        ..Default::default()
    });
    let _check = host.violation_guard();
    let sampler = Arc::new(Sampler {
        gap: Duration::from_millis(5),
        ..Sampler::default()
    });
    let ch = channel(&host, &sampler, 4096, 4);
    host.open().expect("open");
    for i in 0..20u8 {
        let txn = host.send(&[i; 256], true).expect("send");
        host.wait_completion(txn, T).expect("completion");
    }
    assert_eq!(sampler.stable.load(Ordering::Relaxed), 20);
    assert_eq!(sampler.changed.load(Ordering::Relaxed), 0);
    assert_eq!(sampler.seen.lock().unwrap().len(), 20);
    assert_eq!(
        ch.bounce_stats(),
        BounceStats::default(),
        "none handed back or oversized"
    );
    drop(ch);
    host.remove_device();
}

#[test]
fn deliveries_beyond_the_bounce_buffers_are_handed_back_and_all_complete() {
    let host = four_delivery_threads();
    let _check = host.violation_guard();
    let sampler = slow_sampler();
    let ch = channel(&host, &sampler, 4096, 1);
    host.open().expect("open");
    let txns: Vec<_> = (0..40u8)
        .map(|i| host.send(&[i; 64], true).expect("send"))
        .collect();
    for (i, txn) in txns.into_iter().enumerate() {
        let done = host
            .wait_completion(txn, T)
            .expect("every packet completes");
        assert_eq!(done.payload, vec![u8::try_from(i).unwrap(); 64]);
    }
    let stats = ch.bounce_stats();
    assert_eq!(
        sampler.seen.lock().unwrap().len(),
        40,
        "each packet reached the handler once"
    );
    assert!(
        stats.deferred > 0,
        "with one buffer and four delivery threads some deliveries were handed back: {stats:?}"
    );
    assert_eq!(
        host.stats().redelivered_at_passive,
        stats.deferred,
        "each handed back once, delivered again at PASSIVE_LEVEL"
    );
    drop(ch);
    host.remove_device();
}

#[test]
fn a_packet_longer_than_the_maximum_never_reaches_the_handler() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    let sampler = Arc::new(Sampler::default());
    let ch = channel(&host, &sampler, 64, 2);
    host.open().expect("open");
    let txn = host.send(&[7; 65], true).expect("send");
    let done = host.wait_completion(txn, T).expect("completed");
    assert_eq!(
        done.payload,
        <Handler as ChannelHandler>::UNCONSUMED_RESPONSE
    );
    let txn = host.send(&[7; 64], true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("completed").payload,
        [7; 64]
    );
    assert_eq!(sampler.seen.lock().unwrap().len(), 1);
    assert_eq!(ch.bounce_stats().oversized, 1);
    drop(ch);
    host.remove_device();
}

/// A handler's compile-time maximum (`ChannelHandler::MAX_PACKET_SIZE`) bounds what reaches it
/// even on a channel whose maximum packet size is larger: one byte more is refused like any
/// packet too long for the channel.
#[test]
fn a_packet_longer_than_the_handlers_maximum_never_reaches_it() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    let sampler = Arc::new(Sampler::default());
    let ch = channel_of(&host, Bounded(sampler.clone()), 4096, 2);
    host.open().expect("open");
    let txn = host.send(&[9; 101], true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("completed").payload,
        <Bounded as ChannelHandler>::UNCONSUMED_RESPONSE
    );
    let txn = host.send(&[9; 100], true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("completed").payload,
        [9]
    );
    assert_eq!(sampler.seen.lock().unwrap().len(), 1);
    assert_eq!(ch.bounce_stats().oversized, 1);
    drop(ch);
    host.remove_device();
}

/// A channel whose maximum packet size is below its handler's maximum still gets bounce buffers
/// of the handler's size: packets up to it, delivered at once on several processors, each reach
/// the handler whole and unchanged while it holds them (with buffers of the channel's 64 bytes
/// they would overlap, and run past the allocation).
#[test]
fn bounce_buffers_hold_the_handlers_maximum_whatever_the_channels() {
    let host = four_delivery_threads();
    let _check = host.violation_guard();
    let sampler = slow_sampler();
    let ch = channel_of(&host, Bounded(sampler.clone()), 64, 4);
    host.open().expect("open");
    let txns: Vec<_> = (0..40u8)
        .map(|i| host.send(&[i; 100], true).expect("send"))
        .collect();
    for (i, txn) in txns.into_iter().enumerate() {
        let done = host
            .wait_completion(txn, T)
            .expect("every packet completes");
        assert_eq!(done.payload, [u8::try_from(i).unwrap()]);
    }
    assert_eq!(sampler.changed.load(Ordering::Relaxed), 0);
    let seen = sampler.seen.lock().unwrap();
    assert_eq!(seen.len(), 40, "each packet reached the handler once");
    assert!(
        seen.iter()
            .all(|p| p.len() == 100 && p.iter().all(|&b| b == p[0])),
        "every packet whole"
    );
    drop(seen);
    assert_eq!(ch.bounce_stats().oversized, 0);
    drop(ch);
    host.remove_device();
}

/// An empty packet takes a bounce buffer like any other (one path through the trampoline) and
/// gives it back: the handler sees no bytes, the host gets the completion, and a channel with
/// a single buffer keeps delivering packets after it, empty and not, in order.
#[test]
fn empty_packets_reach_the_handler_and_give_their_buffer_back() {
    let host = kmcl_model::connected_with(ModelConfig::default());
    let _check = host.violation_guard();
    let sampler = Arc::new(Sampler::default());
    let ch = channel(&host, &sampler, 4096, 1);
    host.open().expect("open");
    for i in 0..10u8 {
        let payload = if i % 2 == 0 { Vec::new() } else { vec![i; 40] };
        let txn = host.send(&payload, true).expect("send");
        let done = host.wait_completion(txn, T).expect("completion");
        assert_eq!(done.payload, payload, "packet {i}");
    }
    let seen = sampler.seen.lock().unwrap();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().step_by(2).all(Vec::is_empty), "{seen:?}");
    drop(seen);
    assert_eq!(ch.bounce_stats(), BounceStats::default());
    drop(ch);
    host.remove_device();
}
