//! The rest of the client API through kmcl's safe types, against kmcl-model: GPADLs, external
//! data both ways, preallocated packets, the packet's channel, interrupt latency, MMIO space,
//! the client context size and the PnP failure callback.
#![allow(
    unsafe_code,
    reason = "external-data sends take an MDL or PFNs, which only the caller can vouch for"
)]

mod common;

use std::sync::{Arc, Mutex, mpsc};

use common::{Mode, Recorder, T, builder, enabled, library, wait_until};
use kmcl::{
    ChannelBuilder, ChannelHandler, ChannelRef, ExternalData, GpadlAccess, IncomingPacket,
    NtStatus, PacketFlags, SendFlags, SharedBuffer,
};
use kmcl_model::{ModelConfig, ViolationKind, connected, connected_with};

// ---- GPADLs ---------------------------------------------------------------------------------

#[test]
fn a_gpadl_maps_its_buffer_and_gives_it_back_once_deleted() {
    let host = connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let buffer = SharedBuffer::try_new(5000).expect("two pages");
    assert_eq!(buffer.len(), 8192, "whole pages");
    buffer.write(4096, b"second page").expect("in range");
    assert_eq!(
        buffer.write(8190, b"xyz"),
        Err(NtStatus::STATUS_INVALID_PARAMETER),
        "past the end"
    );
    let gpadl = channel
        .handle()
        .create_gpadl(buffer, GpadlAccess::ReadOnly)
        .map_err(|(_, s)| s)
        .expect("create");
    let seen = host.gpadl_bytes(gpadl.handle()).expect("the host sees it");
    assert_eq!(&seen[4096..4107], b"second page");
    assert_eq!(host.stats().gpadls_alive, 1);
    // The buffer is only reachable through the GPADL while mapped, by copies.
    let mut out = [0u8; 11];
    gpadl
        .buffer()
        .expect("ours")
        .read(4096, &mut out)
        .expect("read");
    assert_eq!(&out, b"second page");
    let buffer = gpadl.delete().expect("the buffer back");
    assert_eq!(host.stats().gpadls_alive, 0, "deleted once");
    buffer.read(4096, &mut out).expect("still ours");
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_gpadl_before_the_open_is_refused_and_the_buffer_comes_back() {
    let host = connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    let buffer = SharedBuffer::try_new(4096).expect("buffer");
    buffer.write(0, b"kept").expect("write");
    let (back, status) = channel
        .handle()
        .create_gpadl(buffer, GpadlAccess::ReadWrite)
        .expect_err("not open");
    assert_eq!(status, NtStatus::STATUS_INVALID_DEVICE_STATE);
    let mut out = [0u8; 4];
    back.read(0, &mut out).expect("read");
    assert_eq!(&out, b"kept");
    let v = host.take_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::GpadlOnClosedChannel);
}

#[test]
fn a_dropped_gpadl_is_deleted_and_a_channel_waits_for_its_last_gpadl() {
    let host = connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    {
        let _scoped = channel
            .handle()
            .create_gpadl(SharedBuffer::try_new(4096).unwrap(), GpadlAccess::ReadWrite)
            .map_err(|(_, s)| s)
            .expect("create");
        assert_eq!(host.stats().gpadls_alive, 1);
    }
    assert_eq!(host.stats().gpadls_alive, 0, "dropped: deleted");
    // A GPADL still alive when its channel goes: KMCL's rule (deleted by the end of Closed) is
    // broken, which the model reports; kmcl keeps the channel's handle and library alive
    // until that GPADL is deleted, so nothing dangles.
    let late = channel
        .handle()
        .create_gpadl(SharedBuffer::try_new(4096).unwrap(), GpadlAccess::ReadWrite)
        .map_err(|(_, s)| s)
        .expect("create");
    drop(channel);
    assert_eq!(
        host.interface_references(),
        1,
        "the channel's context, with its library reference, waits for the GPADL"
    );
    drop(late);
    assert_eq!(host.stats().gpadls_alive, 0);
    assert_eq!(host.interface_references(), 0, "and goes with it");
    let kinds: Vec<_> = host.take_violations().into_iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&ViolationKind::GpadlLeak), "{kinds:?}");
}

// ---- external data, incoming ------------------------------------------------------------------

/// Maps each packet's external data and answers with its bytes (or `no data`).
#[derive(Debug, Default)]
struct External {
    /// (the IRQL it ran at, what external_data said) per call.
    seen: Mutex<Vec<(kmcl_model::Irql, &'static str)>>,
    pnp_failures: Mutex<Vec<NtStatus>>,
}

#[derive(Debug, Clone, Default)]
struct ExternalHandler(Arc<External>);

impl ChannelHandler for ExternalHandler {
    const UNCONSUMED_RESPONSE: &'static [u8] = b"unconsumed";

    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        _data: &[u8],
        flags: PacketFlags,
    ) {
        let irql = kmcl_model::current_irql();
        if !flags.contains(PacketFlags::EXTERNAL_DATA) {
            self.0.seen.lock().unwrap().push((irql, "none"));
            packet.complete(b"no data");
            return;
        }
        match packet.external_data(true) {
            ExternalData::Mapped { packet, mdl } => {
                self.0.seen.lock().unwrap().push((irql, "mapped"));
                // The model's MDLs are readable through it (on Windows: map the MDL).
                let bytes = kmcl_model::mdl_bytes(mdl).unwrap_or_default();
                packet.complete(&bytes);
            }
            ExternalData::Pending => self.0.seen.lock().unwrap().push((irql, "pending")),
            ExternalData::Failed { packet, status } => {
                self.0.seen.lock().unwrap().push((irql, "failed"));
                packet.complete(&status.0.to_le_bytes());
            }
        }
    }

    fn pnp_failure(&self, _channel: ChannelRef<'_>, status: NtStatus) {
        self.0.pnp_failures.lock().unwrap().push(status);
    }
}

fn external_channel(
    host: &kmcl_model::Host,
    handler: ExternalHandler,
    max_external: Option<u32>,
) -> kmcl::Channel<ExternalHandler> {
    // SAFETY: the model's device token is valid for the host's lifetime.
    let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
    let mut b = ChannelBuilder::new(&library(host), parent, handler).expect("allocate");
    b.max_packet_size(4096).expect("max packet size");
    if let Some(size) = max_external {
        b.max_external_data(size, 1).expect("max external data");
    }
    b.enable().map_err(|(_, s)| s).expect("enable")
}

#[test]
fn incoming_external_data_is_mapped_and_pending_means_delivered_again() {
    let host = connected();
    let handler = ExternalHandler::default();
    let seen = handler.0.clone();
    let channel = external_channel(&host, handler, Some(64 * 1024));
    host.open().expect("open");
    let txn = host
        .send_with_external(b"header", b"the external bytes")
        .expect("send");
    let c = host.wait_completion(txn, T).expect("completed");
    assert_eq!(c.payload, b"the external bytes");
    // Pending: the packet goes back to KMCL unretired and comes again at PASSIVE_LEVEL.
    host.faults().external_data_pending(1);
    let txn = host.send_with_external(b"header", b"later").expect("send");
    let c = host
        .wait_completion(txn, T)
        .expect("completed after the redelivery");
    assert_eq!(c.payload, b"later");
    assert_eq!(
        *seen.seen.lock().unwrap(),
        [
            (kmcl_model::Irql::Dispatch, "mapped"),
            (kmcl_model::Irql::Dispatch, "pending"),
            (kmcl_model::Irql::Passive, "mapped"),
        ]
    );
    assert_eq!(kmcl::unconsumed_packets(), 0);
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn a_channel_without_maximum_external_data_takes_none() {
    let host = connected();
    let channel = external_channel(&host, ExternalHandler::default(), None);
    host.open().expect("open");
    assert!(matches!(
        host.send_with_external(b"h", b"x"),
        Err(kmcl_model::HostSendError::ExternalDataRefused { limit: None, .. })
    ));
    drop(channel);
    let mut b = {
        // SAFETY: as in `external_channel`.
        let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
        ChannelBuilder::new(&library(&host), parent, ExternalHandler::default()).unwrap()
    };
    assert_eq!(
        b.max_external_data(0, 1),
        Err(NtStatus::STATUS_INVALID_PARAMETER_2)
    );
    assert_eq!(
        b.max_external_data(1, 0),
        Err(NtStatus::STATUS_INVALID_PARAMETER_3)
    );
    host.assert_no_violations();
}

// ---- external data, outgoing ------------------------------------------------------------------

#[test]
fn sends_with_an_external_mdl_or_pfns_carry_them_and_wait_for_completion() {
    let host = connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    let mdl = kmcl_model::mdl_create(b"0123456789external");
    let (tx, rx) = mpsc::channel();
    let packet = channel.handle().allocate_packet().expect("allocate");
    let tx1 = tx.clone();
    // SAFETY: the model's MDL stays valid until it is freed below, after the completion.
    unsafe {
        packet.send_with_external_mdl(b"with mdl", mdl, 10, 8, move |c| {
            tx1.send(c.status).unwrap();
        })
    }
    .map_err(|e| e.status)
    .expect("send");
    let gp = host.recv(T).expect("the packet");
    assert_eq!(gp.payload, b"with mdl");
    assert_eq!(gp.external.as_deref(), Some(&b"external"[..]));
    assert!(gp.completion_requested(), "always a transaction");
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(rx.recv_timeout(T).unwrap(), NtStatus::STATUS_SUCCESS);

    let packet = channel.handle().allocate_packet().expect("allocate");
    // SAFETY: the model does not touch memory behind PFNs; they only travel.
    unsafe {
        packet.send_with_external_pfns(b"with pfns", &[0x1000, 0x2000, 0x2001], move |c| {
            tx.send(c.status).unwrap();
        })
    }
    .map_err(|e| e.status)
    .expect("send");
    let gp = host.recv(T).expect("the packet");
    assert_eq!(gp.pfns.as_deref(), Some(&[0x1000, 0x2000, 0x2001][..]));
    gp.complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(rx.recv_timeout(T).unwrap(), NtStatus::STATUS_SUCCESS);
    kmcl_model::mdl_free(mdl);
    drop(channel);
    host.assert_no_violations();
    assert_eq!(host.stats().packets_allocated, 0);
}

// ---- preallocated packets ---------------------------------------------------------------------

#[test]
fn preallocated_packets_are_made_in_place_and_go_back_to_the_pool() {
    let host = connected();
    let rec = Recorder::new(Mode::Echo);
    let mut b = builder(&host, &rec);
    assert_eq!(
        b.preallocated_packets(65),
        Err(NtStatus::STATUS_INVALID_PARAMETER)
    );
    b.preallocated_packets(2).expect("two");
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    host.open().expect("open");
    let handle = channel.handle();
    assert!(
        handle.packet_object_size() > 4096,
        "sized for the maximum packet"
    );
    assert_eq!(handle.preallocated_available(), 2);
    let first = handle.preallocated_packet().expect("first");
    let second = handle.preallocated_packet().expect("second");
    assert_eq!(
        handle.preallocated_packet().map(|_| ()),
        Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES),
        "all in use"
    );
    drop(second); // unsent: straight back
    assert_eq!(handle.preallocated_available(), 1);
    let (tx, rx) = mpsc::channel();
    first
        .send(b"from the pool", SendFlags::WAIT_FOR_COMPLETION, move |c| {
            tx.send(c.response.to_vec()).unwrap();
        })
        .map_err(|e| e.status)
        .expect("send");
    assert_eq!(handle.preallocated_available(), 1, "in flight");
    let gp = host.recv(T).expect("the packet");
    assert_eq!(gp.payload, b"from the pool");
    gp.complete(NtStatus::STATUS_SUCCESS, b"done");
    assert_eq!(rx.recv_timeout(T).unwrap(), b"done");
    assert!(wait_until(T, || handle.preallocated_available() == 2));
    // In flight when the channel closes: cancelled, and back in the pool before cleanup.
    handle
        .preallocated_packet()
        .unwrap()
        .send(b"never answered", SendFlags::WAIT_FOR_COMPLETION, |_| {})
        .map_err(|e| e.status)
        .expect("send");
    drop(channel);
    // VmbPacketFree on an initialized packet would have been recorded.
    host.assert_no_violations();
}

// ---- small queries ----------------------------------------------------------------------------

#[test]
fn packet_channel_latency_mmio_and_client_context() {
    let host = connected_with(ModelConfig {
        mmio_space: (0xF800_0000, 0x0010_0000),
        ..ModelConfig::default()
    });
    let rec = Recorder::new(Mode::Echo);
    let mut b = builder(&host, &rec);
    assert_eq!(b.client_context_size(64), Ok(()));
    assert_eq!(
        b.client_context_size(1 << 20),
        Err(NtStatus::STATUS_INVALID_PARAMETER_2)
    );
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    let handle = channel.handle();
    assert!(
        handle.set_interrupt_latency(100).is_err(),
        "only while the channel is open"
    );
    host.open().expect("open");
    let previous = handle.set_interrupt_latency(100).expect("open now");
    assert_eq!(handle.set_interrupt_latency(50), Ok(100), "was {previous}");
    assert_eq!(handle.mmio_space(), Some((0xF800_0000, 0x0010_0000)));
    let packet = handle.allocate_packet().expect("allocate");
    assert_eq!(
        packet.channel().interface_instance(),
        handle.interface_instance(),
        "VmbPacketGetChannel gives the packet's channel"
    );
    drop(packet);
    drop(channel);
    host.assert_no_violations();
}

// `Library::linked` needs kmcl's `linked` feature (on in workspace test runs: vmbmsg-core's
// simulation turns it on).
#[cfg(feature = "linked")]
#[test]
fn the_linked_library_has_no_mmio_space() {
    let host = connected_with(ModelConfig {
        mmio_space: (0xF800_0000, 0x0010_0000),
        ..ModelConfig::default()
    });
    let rec = Recorder::new(Mode::Echo);
    let channel = common::builder_with(&kmcl::Library::linked(), &host, &rec)
        .enable()
        .map_err(|(_, s)| s)
        .expect("enable");
    host.open().expect("open");
    assert_eq!(channel.handle().mmio_space(), None);
    drop(channel);
    host.assert_no_violations();
}

// ---- PnP failure ------------------------------------------------------------------------------

#[test]
fn a_pnp_connection_failure_reaches_the_handler() {
    let host = connected();
    let handler = ExternalHandler::default();
    let seen = handler.0.clone();
    // SAFETY: the model's device token is valid for the host's lifetime.
    let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
    let mut b = ChannelBuilder::new(&library(&host), parent, handler).expect("allocate");
    let ty = host.config().interface_type;
    let ty = kmcl::Guid {
        data1: ty.Data1,
        data2: ty.Data2,
        data3: ty.Data3,
        data4: ty.Data4,
    };
    b.target(ty, None).expect("target");
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    assert_eq!(host.fail_pnp_connection(NtStatus::STATUS_NO_SUCH_DEVICE), 1);
    assert_eq!(
        *seen.pnp_failures.lock().unwrap(),
        [NtStatus::STATUS_NO_SUCH_DEVICE]
    );
    drop(channel);
    host.assert_no_violations();
}

// ---- runtime calls ----------------------------------------------------------------------------

/// Retires each packet the way the current `How` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Defer at DISPATCH_LEVEL, complete at PASSIVE_LEVEL.
    DeferOnce,
    /// Fail it (stops the channel's incoming queue).
    Fail,
}

#[derive(Debug)]
struct Retirer {
    how: How,
    seen: Mutex<Vec<kmcl_model::Irql>>,
}

#[derive(Debug, Clone)]
struct RetireHandler(Arc<Retirer>);

impl ChannelHandler for RetireHandler {
    const UNCONSUMED_RESPONSE: &'static [u8] = b"unconsumed";

    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        let irql = kmcl_model::current_irql();
        self.0.seen.lock().unwrap().push(irql);
        match (self.0.how, irql) {
            (How::DeferOnce, kmcl_model::Irql::Dispatch) => packet.defer_to_passive(),
            (How::DeferOnce, _) => packet.complete(data),
            (How::Fail, _) => packet.fail(),
        }
    }
}

fn retire_channel(
    host: &kmcl_model::Host,
    how: How,
) -> (kmcl::Channel<RetireHandler>, Arc<Retirer>) {
    let retirer = Arc::new(Retirer {
        how,
        seen: Mutex::new(Vec::new()),
    });
    // SAFETY: the model's device token is valid for the host's lifetime.
    let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
    let mut b =
        ChannelBuilder::new(&library(host), parent, RetireHandler(retirer.clone())).unwrap();
    b.max_packet_size(4096).unwrap();
    (b.enable().map_err(|(_, s)| s).expect("enable"), retirer)
}

#[test]
fn defer_to_passive_delivers_the_packet_again_at_passive() {
    let host = connected();
    let (channel, retirer) = retire_channel(&host, How::DeferOnce);
    host.open().expect("open");
    let txn = host.send(b"deferred", true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("done").payload,
        b"deferred"
    );
    assert_eq!(
        *retirer.seen.lock().unwrap(),
        [kmcl_model::Irql::Dispatch, kmcl_model::Irql::Passive]
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn fail_stops_the_incoming_queue_until_the_channel_closes() {
    let host = connected();
    let (channel, retirer) = retire_channel(&host, How::Fail);
    host.open().expect("open");
    let first = host.send(b"bad", true).expect("send");
    assert!(host.wait_completion(first, T).expect("failed").failed);
    let second = host.send(b"never delivered", true).expect("send");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(retirer.seen.lock().unwrap().len(), 1, "the queue stopped");
    drop(channel);
    assert!(
        host.wait_completion(second, T).is_none(),
        "dropped at the close"
    );
    host.assert_no_violations();
}

#[test]
fn pause_start_quota_passive_delivery_and_pipe_mode() {
    let host = connected();
    let rec = Recorder::new(Mode::Park);
    let mut b = builder(&host, &rec);
    b.incoming_at_passive(true);
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    host.open().expect("open");
    let handle = channel.handle();
    // Quota 1: the second packet waits until the first is retired.
    handle.set_transaction_quota(1);
    let t1 = host.send(b"one", true).expect("send");
    let t2 = host.send(b"two", true).expect("send");
    assert!(wait_until(T, || rec
        .packets
        .load(std::sync::atomic::Ordering::Relaxed)
        == 1));
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        rec.packets.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "held back"
    );
    for (p, data) in rec.take_parked() {
        p.complete(&data);
    }
    assert!(wait_until(T, || rec
        .packets
        .load(std::sync::atomic::Ordering::Relaxed)
        == 2));
    for (p, data) in rec.take_parked() {
        p.complete(&data);
    }
    assert!(host.wait_completion(t1, T).is_some() && host.wait_completion(t2, T).is_some());
    assert_eq!(
        rec.dispatch_packets
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "incoming_at_passive: every delivery at PASSIVE_LEVEL"
    );
    // Pause runs Suspend; Start runs Started and PostStarted again.
    handle.pause();
    handle.start();
    let events = rec.events();
    let tail: Vec<_> = events.iter().rev().take(3).rev().cloned().collect();
    assert_eq!(
        tail,
        [
            common::Event::Suspend(kmcl_model::Irql::Passive),
            common::Event::Started(kmcl_model::Irql::Passive),
            common::Event::PostStarted(kmcl_model::Irql::Passive),
        ]
    );
    drop(channel);
    // A pipe-mode channel has no transactions.
    let rec = Recorder::new(Mode::Echo);
    let mut b = builder(&host, &rec);
    b.flags(kmcl::ChannelFlags::IS_PIPE).expect("pipe mode");
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    host.open().expect("open");
    let refused = channel
        .handle()
        .allocate_packet()
        .unwrap()
        .send(b"x", SendFlags::WAIT_FOR_COMPLETION, |_| {})
        .expect_err("no transactions on a pipe");
    assert_eq!(refused.status, NtStatus::STATUS_INVALID_PARAMETER);
    refused.complete_with_status();
    let v = host.take_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::TransactionOnPipe);
    drop(channel);
    host.assert_no_violations();
}
