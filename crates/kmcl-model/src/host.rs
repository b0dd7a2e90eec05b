//! The host endpoint: the public, scriptable side of a world.
//!
//! A [`Host`] is one isolated world (its own channels, packets, GPADLs, violation log and
//! delivery threads). The guest reaches it through the KMCL exports with the parent device
//! from [`Host::parent_device`]; the test drives the host side through the methods below.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kmcl_sys::{GUID, PDEVICE_OBJECT};
use ntstatus::NtStatus;

use crate::handle::{self, Kind};
use crate::transport::{RingSnapshot, TransportStats};
use crate::violation::{Violation, format_list};
use crate::world::World;

/// The interface type GUID a default [`ModelConfig`] offers
/// (`{6d8c3e52-1b7a-4f0e-9a43-5c2e7b1d9f60}`, made up for the model).
pub const DEFAULT_INTERFACE_TYPE: GUID = GUID {
    Data1: 0x6d8c_3e52,
    Data2: 0x1b7a,
    Data3: 0x4f0e,
    Data4: [0x9a, 0x43, 0x5c, 0x2e, 0x7b, 0x1d, 0x9f, 0x60],
};

/// The interface instance GUID a default [`ModelConfig`] offers
/// (`{0f3a9b2c-6e41-4d8a-b7c5-21e9a0d4c3f8}`).
pub const DEFAULT_INTERFACE_INSTANCE: GUID = GUID {
    Data1: 0x0f3a_9b2c,
    Data2: 0x6e41,
    Data3: 0x4d8a,
    Data4: [0xb7, 0xc5, 0x21, 0xe9, 0xa0, 0xd4, 0xc3, 0xf8],
};

/// How a world behaves.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Worker threads that deliver host packets to the guest's ProcessPacket concurrently (like
    /// DPCs on several processors). At least 1 is used.
    pub delivery_threads: usize,
    /// How long Disable, Pause and a rescind wait for delivered packets to be completed before
    /// recording [`ViolationKind::UncompletedAtDisable`](crate::ViolationKind) and retiring
    /// them by force.
    pub teardown_timeout: Duration,
    /// The interface type of the host's offer. A guest channel with a target
    /// (`VmbClientChannelInitSetTargetPnp`) is only opened when its type matches.
    pub interface_type: GUID,
    /// The interface instance of the host's offer (what `VmbChannelGetInterfaceInstance`
    /// returns once the channel is open).
    pub interface_instance: GUID,
    /// The offer's MMIO range, `(address, size)`, as `VmbChannelGetMmioSpace` (a member of
    /// the client interface table only) reports it. None by default, as for most offers.
    pub mmio_space: (u64, u64),
    /// What the `Buffer` of `EvtVmbChannelProcessPacket` points at.
    pub delivery: DeliveryMode,
    /// No delivery threads: every host call (send, completion, open, waiting) delivers what can
    /// be delivered on the calling thread before it returns, and the guest's calls that free
    /// the queue (a packet completed outside its callback, `VmbChannelStart`) do the same, so
    /// a run is deterministic and has no thread hand-off. [`Host::open`] runs the open on the
    /// calling thread too. For fuzzing, where the same input must take the same path and a run
    /// must be cheap; concurrency is what the default mode, the stress tests and loom are for.
    /// `delivery_threads` is ignored.
    pub inline_delivery: bool,
}

/// What the `Buffer` KMCL hands `EvtVmbChannelProcessPacket` is, in a world. Real KMCL does not
/// document whether it is a private copy or the host-writable incoming ring, so a guest must be
/// correct with either; the model can play both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// A private copy of the packet, stable for the whole callback.
    #[default]
    PrivateCopy,
    /// Memory the host can still write, and does: while the callback runs, a host thread
    /// keeps rewriting every byte (atomically, as another VM's processor would), so a guest
    /// that reads the buffer twice sees it change, and one that keeps a `&[u8]` over it has
    /// a data race. Each delivery starts the rewriting before the callback and stops it after.
    InPlaceHostile,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            delivery_threads: 1,
            teardown_timeout: Duration::from_secs(10),
            interface_type: DEFAULT_INTERFACE_TYPE,
            interface_instance: DEFAULT_INTERFACE_INSTANCE,
            mmio_space: (0, 0),
            delivery: DeliveryMode::PrivateCopy,
            inline_delivery: false,
        }
    }
}

/// Faults the model injects on request. Interior mutability: arm faults through
/// [`Host::faults`] at any time, from any thread. Each fault is a counter consumed by the next
/// matching calls.
#[derive(Debug, Default)]
pub struct FaultPlan {
    inner: Mutex<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    fail_allocations: u32,
    fail_sends: u32,
    send_status: Option<NtStatus>,
    rescind_after_opened: bool,
    fail_interface_queries: u32,
    interface_query_status: Option<NtStatus>,
    routine_of_failed_sends: bool,
    external_data_pending: u32,
}

impl FaultPlan {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` calls of `VmbPacketAllocate` return NULL.
    pub fn fail_allocations(&self, n: u32) {
        self.faults().fail_allocations = n;
    }

    /// The next `n` calls of `VmbPacketSend*` that pass the argument checks return `status`
    /// without sending. Meant for failure statuses. By default the caller still owns the packet
    /// and its completion routine does not run; see
    /// [`run_routine_of_failed_sends`](Self::run_routine_of_failed_sends).
    pub fn fail_sends(&self, n: u32, status: NtStatus) {
        let mut f = self.faults();
        f.fail_sends = n;
        f.send_status = Some(status);
    }

    /// The next [`Host::open`] rescinds the channel as soon as `EvtChannelOpened` has returned
    /// successfully: the rest of the open sequence runs as a real KMCL would run it with a
    /// rescind queued behind it (Started, PostStarted, whose synchronous requests fail at once
    /// with `STATUS_DEVICE_REMOVED`), then the channel is closed (Suspend, Closed) on the open
    /// thread before `Host::open` returns.
    pub fn rescind_after_opened(&self) {
        self.faults().rescind_after_opened = true;
    }

    /// From now on (`true`) a send failed by [`fail_sends`](Self::fail_sends) also runs the
    /// packet's completion routine, with the failure status and no response, before the send
    /// returns: the other way a KMCL could behave (the reference only infers that a failed
    /// send runs no routine). Guests must complete and free each packet exactly once either way.
    pub fn run_routine_of_failed_sends(&self, yes: bool) {
        self.faults().routine_of_failed_sends = yes;
    }

    pub(crate) fn runs_routine_of_failed_sends(&self) -> bool {
        self.faults().routine_of_failed_sends
    }

    /// The next `n` queries of the client interface table fail with `status` (a bus driver
    /// that does not export it, or one that cannot take a reference).
    pub fn fail_interface_queries(&self, n: u32, status: NtStatus) {
        let mut f = self.faults();
        f.fail_interface_queries = n;
        f.interface_query_status = Some(status);
    }

    pub(crate) fn take_interface_query_failure(&self) -> Option<NtStatus> {
        let mut f = self.faults();
        if f.fail_interface_queries == 0 {
            return None;
        }
        f.fail_interface_queries -= 1;
        Some(
            f.interface_query_status
                .unwrap_or(NtStatus::STATUS_NOT_SUPPORTED),
        )
    }

    /// The next `n` calls of `VmbChannelPacketGetExternalData` return `STATUS_PENDING`: the
    /// data is not mapped yet. The guest must return from its callback without retiring the
    /// packet; the model then delivers it again at PASSIVE_LEVEL, where the call succeeds
    /// (reference §6.1). A guest that retires it anyway is recorded
    /// ([`ViolationKind::RetiredAfterPending`](crate::ViolationKind::RetiredAfterPending)).
    pub fn external_data_pending(&self, n: u32) {
        self.faults().external_data_pending = n;
    }

    pub(crate) fn take_external_data_pending(&self) -> bool {
        take_one(&mut self.faults().external_data_pending)
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        *self.faults() = Faults::default();
    }

    pub(crate) fn take_allocation_failure(&self) -> bool {
        take_one(&mut self.faults().fail_allocations)
    }

    pub(crate) fn take_rescind_after_opened(&self) -> bool {
        std::mem::take(&mut self.faults().rescind_after_opened)
    }

    pub(crate) fn take_send_failure(&self) -> Option<NtStatus> {
        let mut f = self.faults();
        if take_one(&mut f.fail_sends) {
            f.send_status
        } else {
            None
        }
    }
}

/// Takes one from an armed fault's count: true if it was armed.
fn take_one(count: &mut u32) -> bool {
    if *count > 0 {
        *count -= 1;
        true
    } else {
        false
    }
}

/// The state of a world's guest channel (the most recently allocated one), as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelState {
    /// No channel was allocated in this world.
    None,
    /// Allocated (or closed) and not enabled.
    Disabled,
    /// Enabled, waiting for the host to open it (or running `EvtChannelOpened`).
    Enabled,
    /// Opened; `EvtChannelStarted`/`EvtChannelPostStarted` running.
    Opened,
    /// Open and running.
    Active,
    /// Open and paused (after `VmbChannelPause`, or opened with an armed pause).
    Paused,
    /// Being closed (Suspend .. Closed running).
    Closing,
    /// Cleaned up: the handle is dead.
    CleanedUp,
}

/// Counters of a world. Snapshot from [`Host::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Packets delivered to the guest's ProcessPacket for the first time.
    pub delivered_to_guest: u64,
    /// ProcessPacket calls that re-delivered a deferred packet at PASSIVE_LEVEL.
    pub redelivered_at_passive: u64,
    /// `VmbChannelPacketDeferToPassive` calls accepted.
    pub deferred_by_guest: u64,
    /// `VmbChannelPacketComplete` calls accepted.
    pub completed_by_guest: u64,
    /// `VmbChannelPacketFail` calls accepted.
    pub failed_by_guest: u64,
    /// Delivered packets the model retired by force at a teardown deadline.
    pub force_retired: u64,
    /// Host packets dropped undelivered because the channel closed.
    pub dropped_undelivered: u64,
    /// Packets delivered and not yet retired, now.
    pub incoming_outstanding: u64,
    /// `EvtVmbChannelProcessingComplete` calls.
    pub processing_complete_calls: u64,
    /// Guest packets that reached the host (sends and synchronous requests).
    pub received_from_guest: u64,
    /// Guest transactions the host completed (a completion that found the transaction already
    /// cancelled or timed out is not counted).
    pub completed_by_host: u64,
    /// Guest transactions cancelled because the channel closed.
    pub cancelled_at_close: u64,
    /// Host completions that named no guest transaction in flight (unknown, already
    /// completed, cancelled or timed out) and were ignored: [`Host::complete_transaction`],
    /// or [`GuestPacket::complete`] after the channel closed.
    pub ignored_host_completions: u64,
    /// Packets from `VmbPacketAllocate` not yet freed, now.
    pub packets_allocated: u64,
    /// Guest packets sent and not yet completed, now.
    pub packets_in_flight: u64,
    /// `VmbChannelSendSynchronousRequest` calls that sent a request.
    pub sync_requests: u64,
    /// GPADLs created and not deleted, now.
    pub gpadls_alive: u64,
    /// Guest packets waiting for [`Host::recv`], now.
    pub pending_for_recv: u64,
    /// Channels closed because the guest's KMCL found one of its rings corrupt (a host that
    /// broke the ring protocol, [`Host::raw_rings`]).
    pub rings_poisoned: u64,
}

/// A host→guest transaction, for [`Host::wait_completion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostTxn(pub(crate) u64);

impl HostTxn {
    /// The transaction's number (unique within its world).
    #[must_use]
    pub const fn id(self) -> u64 {
        self.0
    }
}

/// How the guest retired a host packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCompletion {
    /// The completion payload (`VmbChannelPacketComplete`'s buffer), kept only when the host
    /// asked for a completion; empty otherwise.
    pub payload: Vec<u8>,
    /// The guest called `VmbChannelPacketFail` (or the model retired the packet by force).
    pub failed: bool,
}

/// A packet the guest sent to the host (`VmbPacketSend*` or a synchronous request).
#[derive(Debug)]
pub struct GuestPacket {
    /// The inline payload, copied at send time.
    pub payload: Vec<u8>,
    /// The send flags (`VMBUS_CHANNEL_FORMAT_FLAG_*`).
    pub flags: u32,
    /// Sent by `VmbChannelSendSynchronousRequest`.
    pub synchronous: bool,
    /// External data described by an MDL, copied at send time.
    pub external: Option<Vec<u8>>,
    /// External data described as page frame numbers (`VmbPacketSendWithExternalPfns`).
    pub pfns: Option<Vec<u64>>,
    pub(crate) id: u64,
    pub(crate) channel: u64,
    pub(crate) needs_completion: bool,
    pub(crate) world: Weak<World>,
    /// Where the packet sits in the guest→host ring while the host holds it.
    pub(crate) held: Option<(Weak<crate::transport::Link>, u64)>,
}

impl GuestPacket {
    /// The transaction's number (unique within its world).
    #[must_use]
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// [`Host::gpadl_read`] for a responder, which has the packet but not the host.
    ///
    /// # Errors
    /// As [`Host::gpadl_read`]; [`GpadlError::NoSuchGpadl`] once the world is gone.
    pub fn gpadl_read(
        &self,
        handle: u32,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), crate::GpadlError> {
        self.world
            .upgrade()
            .ok_or(crate::GpadlError::NoSuchGpadl)?
            .gpadl_read(handle, offset, dst)
    }

    /// [`Host::gpadl_write`] for a responder.
    ///
    /// # Errors
    /// As [`Host::gpadl_write`]; [`GpadlError::NoSuchGpadl`] once the world is gone.
    pub fn gpadl_write(
        &self,
        handle: u32,
        offset: usize,
        src: &[u8],
    ) -> Result<(), crate::GpadlError> {
        self.world
            .upgrade()
            .ok_or(crate::GpadlError::NoSuchGpadl)?
            .gpadl_write(handle, offset, src)
    }

    /// Whether the guest waits for a completion (`WAIT_FOR_COMPLETION`).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.needs_completion
    }

    /// Completes the guest's transaction: runs its completion routine on this thread (IRQL
    /// marked DISPATCH) with `status` and `response`, or wakes the synchronous requester.
    /// Works from any thread, in any order, at any later time; a no-op if the transaction
    /// needs no completion, was cancelled (channel closed, request timed out) or the world is
    /// gone. Dropping a `GuestPacket` instead leaves the transaction in flight (the model
    /// cancels it at close).
    pub fn complete(self, status: NtStatus, response: &[u8]) {
        if let Some(world) = self.world.upgrade() {
            world.host_complete(self.id, status, response);
        }
    }
}

/// Why [`Host::open`] did not open a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// No channel of this world is enabled and waiting for an offer.
    NoEnabledChannel,
    /// The guest's target (`VmbClientChannelInitSetTargetPnp`) does not match the offer.
    TargetMismatch,
    /// `EvtChannelOpened` returned this failure; the channel is back to Enabled, no traffic.
    OpenedFailed(NtStatus),
    /// The world is shutting down.
    ShutDown,
    /// The host rescinded its offer ([`Host::rescind`]) and has not offered it again
    /// ([`Host::reoffer`]).
    NoOffer,
    /// The guest's KMCL could not allocate the channel's rings (the page counts of
    /// `VmbClientChannelInitSetRingBufferPageCount` are more than memory allows), so it never
    /// asked the host to open: no callback ran, the channel is Enabled and waits, as with
    /// [`OpenedFailed`](Self::OpenedFailed). The status is the one KMCL gives for memory it
    /// cannot get, `STATUS_INSUFFICIENT_RESOURCES`.
    RingsNotAllocated(NtStatus),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEnabledChannel => f.write_str("no enabled guest channel to open"),
            Self::TargetMismatch => f.write_str("the guest's target GUIDs do not match the offer"),
            Self::OpenedFailed(s) => write!(f, "EvtChannelOpened failed with {s}"),
            Self::ShutDown => f.write_str("the world is shutting down"),
            Self::NoOffer => f.write_str("the host rescinded its offer"),
            Self::RingsNotAllocated(s) => {
                write!(f, "the guest could not allocate the channel's rings: {s}")
            }
        }
    }
}

impl std::error::Error for OpenError {}

/// Why [`Host::send`] refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostSendError {
    /// No channel of this world is open.
    NotOpen,
    /// The packet does not fit in the guest's incoming ring.
    TooLarge {
        /// Payload plus external data, in bytes.
        len: usize,
        /// The most the ring takes.
        limit: usize,
    },
    /// The guest accepts no external data of this size: it set none
    /// (`VmbChannelInitSetMaximumExternalData`), or less than this.
    ExternalDataRefused {
        /// The external data, in bytes.
        len: usize,
        /// What the guest accepts (`None`: no external data at all).
        limit: Option<u32>,
    },
}

impl fmt::Display for HostSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOpen => f.write_str("no open channel"),
            Self::ExternalDataRefused { len, limit: None } => write!(
                f,
                "{len} bytes of external data, and the guest accepts none (no \
                 VmbChannelInitSetMaximumExternalData)"
            ),
            Self::ExternalDataRefused {
                len,
                limit: Some(l),
            } => write!(
                f,
                "{len} bytes of external data, and the guest accepts at most {l}"
            ),
            Self::TooLarge { len, limit } => {
                write!(
                    f,
                    "packet of {len} bytes does not fit the ring ({limit} bytes)"
                )
            }
        }
    }
}

impl std::error::Error for HostSendError {}

/// An open in progress ([`Host::open_async`]).
#[derive(Debug)]
#[must_use = "wait() for the open, or it is joined when dropped"]
pub struct OpenTask {
    thread: Option<JoinHandle<Result<(), OpenError>>>,
}

impl OpenTask {
    /// Waits until the open sequence returned (see [`Host::open`]).
    ///
    /// # Errors
    /// As [`Host::open`].
    pub fn wait(mut self) -> Result<(), OpenError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), OpenError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Err(OpenError::ShutDown),
        }
    }
}

impl Drop for OpenTask {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host side of one isolated world. Dropping it tears the world down without calling any
/// guest callback (the delivery threads are joined; the guest's handles become unknown).
pub struct Host {
    world: Arc<World>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("world", &self.world.id)
            .field("channel_state", &self.channel_state())
            .finish_non_exhaustive()
    }
}

/// A world with [`ModelConfig::default`].
#[must_use]
pub fn connected() -> Host {
    connected_with(ModelConfig::default())
}

/// A world with `config`, the one channel offer of a VM of its own.
#[must_use]
pub fn connected_with(config: ModelConfig) -> Host {
    Vm::new().offer(config)
}

/// A guest VM whose VMBus may offer several channels, each a world of its own (its own
/// [`Host`], parent device and interface table) with the same or different interface types.
/// Offers of one VM see each other only through `VmbClientChannelInitSetTargetPnp`, the PnP
/// lookup by GUID ([`ViolationKind::AmbiguousTarget`](crate::ViolationKind::AmbiguousTarget)).
#[derive(Debug)]
pub struct Vm {
    id: u32,
}

impl Vm {
    /// A VM with no offers yet.
    #[must_use]
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        Self {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A channel offer of this VM, with `config` (give two offers of one type different
    /// `interface_instance`s, as Hyper-V does).
    #[must_use]
    pub fn offer(&self, config: ModelConfig) -> Host {
        let world = handle::register_world(|id| World::new(id, self.id, config));
        world.start_workers();
        Host { world }
    }
}

impl Default for Vm {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    /// The `PDEVICE_OBJECT` the guest passes to `VmbChannelAllocate` to allocate a channel in
    /// this world (an opaque token, not a pointer).
    #[must_use]
    pub fn parent_device(&self) -> PDEVICE_OBJECT {
        std::ptr::without_provenance_mut(handle::encode(Kind::Device, self.world.id, 1))
    }

    /// This world's configuration.
    #[must_use]
    pub fn config(&self) -> &ModelConfig {
        &self.world.cfg
    }

    /// `IRP_MN_QUERY_INTERFACE` on this world's VMBus device, as the bus driver answers it
    /// (see [`query_interface`](crate::query_interface)): what a guest's
    /// `WdfFdoQueryForInterface` on [`parent_device`](Self::parent_device) reaches.
    ///
    /// # Safety
    /// `interface` is NULL or writable for `size` bytes.
    pub unsafe fn query_interface(
        &self,
        interface_type: &GUID,
        interface: kmcl_sys::PINTERFACE,
        size: u16,
        version: u16,
    ) -> NtStatus {
        // SAFETY: forwarded contract.
        unsafe {
            crate::interface::query_interface(
                self.parent_device(),
                interface_type,
                interface,
                size,
                version,
                std::ptr::null_mut(),
            )
        }
    }

    /// References the guest holds on this world's client interface table now.
    #[must_use]
    pub fn interface_references(&self) -> i64 {
        self.world.interface().references()
    }

    /// Successful queries of this world's client interface table so far.
    #[must_use]
    pub fn interface_queries(&self) -> u64 {
        self.world.interface().queries()
    }

    /// The guest's device is removed (`IRP_MN_REMOVE_DEVICE` reached the bus driver): records
    /// [`InterfaceNotReleased`](crate::ViolationKind::InterfaceNotReleased) if the guest still
    /// holds references on the client interface table; every KMCL call from now on is a use of
    /// a released table.
    pub fn remove_device(&self) {
        let held = self.world.interface().remove();
        if held > 0 {
            self.world.record(
                crate::ViolationKind::InterfaceNotReleased,
                "IRP_MN_REMOVE_DEVICE",
                self.parent_device().addr(),
                format!("{held} reference(s) on the client interface table still held"),
            );
        }
    }

    /// Opens the channel the guest has enabled: runs `EvtChannelOpened`, `EvtChannelStarted`
    /// and `EvtChannelPostStarted` on a PASSIVE worker thread and returns when PostStarted has
    /// returned (when Opened has returned, if the guest armed a pause).
    ///
    /// # Errors
    /// [`OpenError::OpenedFailed`] if Opened failed (the channel is Enabled again),
    /// [`OpenError::NoEnabledChannel`] if no channel of this world is enabled,
    /// [`OpenError::TargetMismatch`] if the guest's target GUIDs do not match the offer,
    /// [`OpenError::RingsNotAllocated`] if the guest's rings could not be allocated (no callback
    /// ran; the channel is Enabled again).
    pub fn open(&self) -> Result<(), OpenError> {
        if self.world.cfg.inline_delivery {
            let result = {
                let _model = crate::irql::ModelCode::enter();
                Arc::clone(&self.world).open_sequence()
            };
            self.world.pump();
            return result;
        }
        self.open_async().wait()
    }

    /// Starts [`Host::open`] on its worker thread and returns at once.
    pub fn open_async(&self) -> OpenTask {
        let world = Arc::clone(&self.world);
        let thread = std::thread::Builder::new()
            .name(format!("kmcl-model-open-{}", self.world.id))
            .spawn(move || {
                let _model = crate::irql::ModelCode::enter();
                world.open_sequence()
            });
        OpenTask {
            thread: thread.ok(),
        }
    }

    /// Host→guest in-band packet on the open channel. With `completion_requested` the guest's
    /// completion payload is kept for [`Host::wait_completion`].
    ///
    /// # Errors
    /// [`HostSendError::NotOpen`] if no channel is open, [`HostSendError::TooLarge`] if the
    /// payload does not fit the guest's incoming ring.
    pub fn send(
        &self,
        payload: &[u8],
        completion_requested: bool,
    ) -> Result<HostTxn, HostSendError> {
        let sent = self
            .world
            .host_send(payload, None, completion_requested, false);
        self.world.pump();
        sent
    }

    /// Like [`Host::send`], but the calling thread delivers the packet: when it is next in
    /// line and the queue can take it (started, not failed, under quota), the guest's
    /// ProcessPacket runs on this thread at the channel's IRQL before this returns;
    /// otherwise the delivery threads deliver it as usual. Benchmarks use it to measure the
    /// guest's receive path without thread hand-offs.
    ///
    /// # Errors
    /// As [`Host::send`].
    pub fn send_inline(
        &self,
        payload: &[u8],
        completion_requested: bool,
    ) -> Result<HostTxn, HostSendError> {
        self.world.host_send_inline(payload, completion_requested)
    }

    /// Host→guest packet with external data (`VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA`):
    /// the guest reads `external` through `VmbChannelPacketGetExternalData`. A completion is
    /// requested.
    ///
    /// # Errors
    /// As [`Host::send`].
    pub fn send_with_external(
        &self,
        payload: &[u8],
        external: &[u8],
    ) -> Result<HostTxn, HostSendError> {
        let sent = self
            .world
            .host_send(payload, Some(external.to_vec()), true, false);
        self.world.pump();
        sent
    }

    /// Waits up to `timeout` until the guest retired `txn` (completed or failed it). `None` on
    /// timeout, for an unknown or already-waited transaction, or when the packet was dropped
    /// undelivered because the channel closed.
    #[must_use]
    pub fn wait_completion(&self, txn: HostTxn, timeout: Duration) -> Option<GuestCompletion> {
        self.world.wait_completion(txn.0, timeout)
    }

    /// The host sends a completion for guest transaction `id` (see [`GuestPacket::id`]),
    /// whether or not that transaction is in flight: what a hostile or buggy host does when it
    /// completes a transaction twice, late, or with a made-up id. A transaction in flight is
    /// completed as by [`GuestPacket::complete`]; any other id is ignored and counted in
    /// [`HostStats::ignored_host_completions`] — the guest never sees it.
    pub fn complete_transaction(&self, id: u64, status: NtStatus, response: &[u8]) {
        self.world.host_complete(id, status, response);
        self.world.pump();
    }

    /// The next packet the guest sent (`VmbPacketSend*` or a synchronous request) that no
    /// responder answered, waiting up to `timeout`.
    #[must_use]
    pub fn recv(&self, timeout: Duration) -> Option<GuestPacket> {
        self.world.recv(timeout)
    }

    /// Automatic answers, run on the thread that delivers the guest's packet to the host (the
    /// sending guest thread, or the open thread for packets queued before the open): return
    /// `Some((status, response))` to complete the transaction at once (inline, before the
    /// guest's send returns), `None` to queue the packet for [`Host::recv`]. A panic in `f` is
    /// caught and recorded as [`ViolationKind::ResponderPanicked`](crate::ViolationKind).
    pub fn set_responder(
        &self,
        f: impl Fn(&GuestPacket) -> Option<(NtStatus, Vec<u8>)> + Send + Sync + 'static,
    ) {
        self.world.set_responder(Some(Arc::new(f)));
    }

    /// Removes the responder: every guest packet goes to [`Host::recv`].
    pub fn clear_responder(&self) {
        self.world.set_responder(None);
    }

    /// The host rescinds its offer: the open channel is closed (as [`close`](Self::close)) and
    /// the offer is gone, so a guest channel enabled again waits until
    /// [`reoffer`](Self::reoffer) (on Windows the VMBus child device is removed, and its
    /// driver's device with it). Returns when the close finished; must not be called from a
    /// guest callback.
    ///
    /// A rescind that arrives while the open sequence is still running (for instance while
    /// `EvtChannelPostStarted` waits for a synchronous request) fails the channel's waiting
    /// synchronous requests at once with `STATUS_DEVICE_REMOVED`, as do new ones, and closes
    /// the channel once the open sequence has returned.
    pub fn rescind(&self) {
        self.world.rescind();
        self.world.set_offered(false);
    }

    /// The host closes the open channel but keeps its offer (its service restarted, say):
    /// `EvtChannelSuspend` (if running), wait for delivered packets, cancel in-flight guest
    /// packets, `EvtChannelClosed`; the guest channel ends Disabled and "must be restarted
    /// using VmbChannelEnable" (header), after which [`open`](Self::open) opens it again.
    /// Returns when that finished; a no-op if no channel is open. Must not be called from a
    /// guest callback.
    pub fn close(&self) {
        self.world.rescind();
    }

    /// The connection to the guest's target device fails asynchronously with `status`: every
    /// enabled, not yet opened channel of this world that bound its offer by PnP lookup
    /// (`VmbClientChannelInitSetTargetPnp`) gets its `PnpFailureCallback`, at PASSIVE_LEVEL,
    /// on this thread. Returns how many callbacks ran.
    pub fn fail_pnp_connection(&self, status: NtStatus) -> usize {
        self.world.fail_pnp_connection(status)
    }

    /// The host offers the channel again after a [`rescind`](Self::rescind).
    pub fn reoffer(&self) {
        self.world.set_offered(true);
    }

    /// The state of the most recently allocated guest channel of this world.
    #[must_use]
    pub fn channel_state(&self) -> ChannelState {
        self.world.channel_state()
    }

    /// Every violation recorded in this world so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        self.world.violations(false)
    }

    /// Every violation recorded in this world so far, clearing the log.
    pub fn take_violations(&self) -> Vec<Violation> {
        self.world.violations(true)
    }

    /// Panics, listing every violation, if this world recorded any.
    ///
    /// # Panics
    /// If the verifier recorded a violation in this world.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "kmcl-model recorded {} contract violation(s):\n{}",
            v.len(),
            format_list(&v)
        );
    }

    /// A guard that calls [`Host::assert_no_violations`] when dropped (unless the thread is
    /// already panicking), so a test fails on any violation however it exits.
    pub fn violation_guard(&self) -> ViolationGuard<'_> {
        ViolationGuard {
            host: self,
            armed: true,
        }
    }

    /// A snapshot of this world's counters.
    #[must_use]
    pub fn stats(&self) -> HostStats {
        self.world.stats()
    }

    /// The faults this world injects.
    #[must_use]
    pub fn faults(&self) -> &FaultPlan {
        &self.world.faults
    }

    /// Counters of the open channel's rings (signals sent and skipped, full rings, queued
    /// sends); `None` when no channel is open.
    #[must_use]
    pub fn ring_stats(&self) -> Option<TransportStats> {
        self.world.ring_stats()
    }

    /// The bytes of the open channel's two rings as they are in shared memory now; `None`
    /// when no channel is open.
    #[must_use]
    pub fn ring_snapshot(&self) -> Option<RingSnapshot> {
        self.world.ring_snapshot()
    }

    /// Raw access to the open channel's rings, for a host that breaks the ring protocol
    /// ([`RawRings`](crate::RawRings)); `None` when no channel is open.
    #[must_use]
    pub fn raw_rings(&self) -> Option<crate::RawRings> {
        self.world.raw_rings()
    }

    /// A copy of all the guest memory a live GPADL describes, as it is now; `None` when no
    /// such GPADL is alive.
    #[must_use]
    pub fn gpadl_bytes(&self, handle: u32) -> Option<Vec<u8>> {
        let mut bytes = vec![0; self.world.gpadl_len(handle)?];
        self.world.gpadl_read(handle, 0, &mut bytes).ok()?;
        Some(bytes)
    }

    /// The length of a live GPADL.
    #[must_use]
    pub fn gpadl_len(&self, handle: u32) -> Option<usize> {
        self.world.gpadl_len(handle)
    }

    /// Reads `dst.len()` bytes at `offset` of a live GPADL: the guest's memory as it is now
    /// (the guest may change it at any time, as the host's writes change what it reads).
    ///
    /// # Errors
    /// [`GpadlError::NoSuchGpadl`] (never created, or deleted), [`GpadlError::OutOfRange`].
    pub fn gpadl_read(
        &self,
        handle: u32,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), crate::GpadlError> {
        self.world.gpadl_read(handle, offset, dst)
    }

    /// Writes `src` at `offset` of a live GPADL, into the guest's memory.
    ///
    /// # Errors
    /// As [`gpadl_read`](Self::gpadl_read), and [`GpadlError::ReadOnly`] for a GPADL created
    /// from a model MDL.
    pub fn gpadl_write(
        &self,
        handle: u32,
        offset: usize,
        src: &[u8],
    ) -> Result<(), crate::GpadlError> {
        self.world.gpadl_write(handle, offset, src)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.world.shutdown();
    }
}

/// Asserts that its [`Host`] recorded no violation when dropped ([`Host::violation_guard`]).
#[derive(Debug)]
#[must_use = "the guard checks the verifier's log when it is dropped"]
pub struct ViolationGuard<'a> {
    host: &'a Host,
    armed: bool,
}

impl ViolationGuard<'_> {
    /// Drops the guard without checking.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ViolationGuard<'_> {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            self.host.assert_no_violations();
        }
    }
}

pub(crate) fn guid_eq(a: &GUID, b: &GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// Keeps `std::sync::Mutex` poisoning out of the model: a poisoned lock's data is still used.
pub(crate) fn relock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
