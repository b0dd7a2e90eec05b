//! Shared test fixtures: a recording handler and channel setup against kmcl-model.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    unsafe_code,
    reason = "ParentDevice::from_raw on the model's device token"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmcl::{ChannelBuilder, ChannelHandler, ChannelRef, IncomingPacket, NtStatus, PacketFlags};
use kmcl_model::{Host, Irql};

/// A state-change or packet event the handler saw, with the IRQL it saw it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Opened(Irql),
    Started(Irql),
    PostStarted(Irql),
    Suspend(Irql),
    Closed(Irql),
}

/// What the handler does with each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Complete inline with the payload echoed back.
    Echo,
    /// Keep the packet for the test to complete later.
    Park,
    /// Drop the packet without consuming it.
    Drop,
}

pub(crate) const FALLBACK: &[u8] = b"UNCONSUMED";

#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) events: Mutex<Vec<Event>>,
    pub(crate) mode: Mutex<Mode>,
    pub(crate) parked: Mutex<Vec<(IncomingPacket, Vec<u8>)>>,
    pub(crate) packets: AtomicU64,
    pub(crate) dispatch_packets: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// The packet counts the batches reported, added up.
    pub(crate) batched_packets: AtomicU64,
    pub(crate) opened_status: Mutex<NtStatus>,
}

impl Recorder {
    pub(crate) fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            mode: Mutex::new(mode),
            parked: Mutex::new(Vec::new()),
            packets: AtomicU64::new(0),
            dispatch_packets: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_packets: AtomicU64::new(0),
            opened_status: Mutex::new(NtStatus::STATUS_SUCCESS),
        })
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn take_parked(&self) -> Vec<(IncomingPacket, Vec<u8>)> {
        std::mem::take(&mut *self.parked.lock().unwrap())
    }

    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
}

/// The handler: an `Arc<Recorder>` so the test keeps a view of it.
#[derive(Debug, Clone)]
pub(crate) struct Handler(pub Arc<Recorder>);

impl Handler {
    fn batch_done(&self, _channel: ChannelRef<'_>, packets: u32) {
        self.0.batches.fetch_add(1, Ordering::Relaxed);
        self.0
            .batched_packets
            .fetch_add(u64::from(packets), Ordering::Relaxed);
    }
}

impl ChannelHandler for Handler {
    const UNCONSUMED_RESPONSE: &'static [u8] = FALLBACK;
    const PROCESSING_COMPLETE: Option<fn(&Self, ChannelRef<'_>, u32)> = Some(Self::batch_done);

    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        self.0.packets.fetch_add(1, Ordering::Relaxed);
        if kmcl_model::current_irql() == Irql::Dispatch {
            self.0.dispatch_packets.fetch_add(1, Ordering::Relaxed);
        }
        let mode = *self.0.mode.lock().unwrap();
        match mode {
            Mode::Echo => packet.complete(data),
            Mode::Park => self.0.parked.lock().unwrap().push((packet, data.to_vec())),
            Mode::Drop => drop(packet),
        }
    }

    fn opened(&self, _channel: ChannelRef<'_>) -> NtStatus {
        self.0.push(Event::Opened(kmcl_model::current_irql()));
        *self.0.opened_status.lock().unwrap()
    }

    fn started(&self, _channel: ChannelRef<'_>) {
        self.0.push(Event::Started(kmcl_model::current_irql()));
    }

    fn post_started(&self, _channel: ChannelRef<'_>) {
        self.0.push(Event::PostStarted(kmcl_model::current_irql()));
    }

    fn suspend(&self, _channel: ChannelRef<'_>) {
        self.0.push(Event::Suspend(kmcl_model::current_irql()));
    }

    fn closed(&self, _channel: ChannelRef<'_>) {
        self.0.push(Event::Closed(kmcl_model::current_irql()));
    }
}

/// The client interface table of `host`'s device, queried as the bus driver answers
/// `WdfFdoQueryForInterface`.
pub(crate) fn library(host: &Host) -> kmcl::Library {
    {
        let query = |iface, size, version, ty: &_| {
            // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
            unsafe { host.query_interface(ty, iface, size, version) }
        };
        // SAFETY: see above: the model's query fills the whole table and takes one
        // reference for the caller, as a PnP query-interface does.
        unsafe { kmcl::Library::query(query) }
    }
    .expect("query the client interface")
}

/// A builder for a channel under `host`, through `host`'s queried table, configured like a
/// typical client. The channel keeps its own reference on the table.
pub(crate) fn builder(host: &Host, recorder: &Arc<Recorder>) -> ChannelBuilder<Handler> {
    builder_with(&library(host), host, recorder)
}

/// [`builder`] through `library`.
pub(crate) fn builder_with(
    library: &kmcl::Library,
    host: &Host,
    recorder: &Arc<Recorder>,
) -> ChannelBuilder<Handler> {
    builder_of(library, host, Handler(recorder.clone()))
}

/// [`builder_with`] for any handler.
pub(crate) fn builder_of<H: ChannelHandler>(
    library: &kmcl::Library,
    host: &Host,
    handler: H,
) -> ChannelBuilder<H> {
    // SAFETY: the model's device token is valid for the host's lifetime, which every test
    // keeps longer than the channel.
    let parent = unsafe { kmcl::ParentDevice::from_raw(host.parent_device()) };
    let mut b = ChannelBuilder::new(library, parent, handler).expect("allocate");
    b.max_packet_size(4096).expect("max packet size");
    b.ring_pages(16, 16).expect("ring pages");
    b.friendly_name("kmcl-test").expect("friendly name");
    b
}

/// A channel under `host`, configured by [`builder`] and enabled (not yet opened).
pub(crate) fn enabled(host: &Host, recorder: &Arc<Recorder>) -> kmcl::Channel<Handler> {
    enabled_of(host, Handler(recorder.clone()))
}

/// [`enabled`] for any handler.
pub(crate) fn enabled_of<H: ChannelHandler>(host: &Host, handler: H) -> kmcl::Channel<H> {
    builder_of(&library(host), host, handler)
        .enable()
        .map_err(|(_, s)| s)
        .expect("enable")
}

/// Polls `f` until it is true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}

pub(crate) const T: Duration = Duration::from_secs(10);
