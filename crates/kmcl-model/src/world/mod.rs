//! One world: the guest channels of one [`Host`](crate::Host), their packets, the host's
//! queues, the delivery threads and the verifier's log.
//!
//! Locking: one mutex per world guards all of its state; condition variables wake the
//! delivery threads (`work_cv`), [`Host::recv`](crate::Host::recv) (`recv_cv`),
//! [`Host::wait_completion`](crate::Host::wait_completion) (`txn_cv`), synchronous requests
//! (`sync_cv`) and state transitions (`state_cv`). **No guest callback is ever called with the
//! lock held**: every path that calls the guest first takes what it needs out of the state,
//! releases the lock, calls, then locks again and re-validates.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kmcl_sys as sys;
use ntstatus::NtStatus;

use crate::handle::{self, Kind, MAX_SERIAL};
use crate::host::{
    ChannelState, DeliveryMode, FaultPlan, GuestCompletion, GuestPacket, HostSendError, HostStats,
    ModelConfig, OpenError, guid_eq, relock,
};
use crate::interface::InterfaceState;
use crate::irql::{Frame, FrameKind, Irql, StateCb, current_irql, in_callback};
use crate::mdl;
use crate::raw::{AlignedBuf, GuestBytes};
use crate::transport::{
    AUX_EXTERNAL, AUX_FLAGS, AUX_SYNCHRONOUS, Dir, GuestWrite, HostWriteError, Item, Link,
    RingSnapshot, TransportStats, max_payload, wire_id,
};
use crate::violation::{Violation, ViolationKind as V};
use vmbus_ring::OutgoingKind;

mod gpadl;
pub use gpadl::GpadlError;
pub(crate) use gpadl::GpadlMemory;
mod incoming;
mod outgoing;
mod poison;
mod transitions;
pub use poison::RawRings;

/// [inf] Default maximum packet size when the guest sets none.
pub(crate) const DEFAULT_MAX_PACKET: u32 = 4096;
/// [inf] Default ring sizes (pages) when the guest sets none.
pub(crate) const DEFAULT_RING_PAGES: u32 = 16;
const PAGE_SIZE: usize = 4096;
/// How long a host thread waits for its own packet to come out of the other end of a ring
/// (only while another thread runs that end's interrupt handler).
const HANDOFF_WAIT: Duration = Duration::from_secs(30);
/// How often a host thread that waits (recv, wait_completion) polls its incoming ring.
const HOST_POLL: Duration = Duration::from_millis(5);
/// [inf] `VmbChannelSizeofPacket` = maximum packet size + this much bookkeeping.
pub(crate) const PACKET_OBJECT_OVERHEAD: u32 = 0x100;
/// Delivered payload copies kept (poisoned) after the guest's right to read them ended, so a
/// late read sees 0xDB bytes instead of freed memory.
const QUARANTINE: usize = 64;

pub(crate) type Responder = dyn Fn(&GuestPacket) -> Option<(NtStatus, Vec<u8>)> + Send + Sync;

fn violate(
    log: &mut Vec<Violation>,
    kind: V,
    function: &'static str,
    handle: usize,
    detail: impl Into<String>,
) {
    log.push(Violation::new(kind, function, handle, detail));
}

/// Where a channel is in its life (§5 of the reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Disabled,
    Enabled,
    /// `EvtChannelOpened` running.
    Opening,
    /// Opened; `EvtChannelStarted` running (queue off).
    Starting,
    /// Queue on; `EvtChannelPostStarted` running.
    PostStarting,
    Active,
    /// `VmbChannelPause` in progress.
    Pausing,
    Paused,
    /// Disable or rescind in progress.
    Closing,
}

impl Phase {
    /// The host has opened the channel (Opened succeeded or is running) and it has not been
    /// closed yet.
    const fn is_open(self) -> bool {
        matches!(
            self,
            Self::Opening
                | Self::Starting
                | Self::PostStarting
                | Self::Active
                | Self::Pausing
                | Self::Paused
                | Self::Closing
        )
    }

    /// A guest packet sent now goes to the host at once (else it waits for the open).
    const fn delivers_to_host(self) -> bool {
        matches!(
            self,
            Self::Starting
                | Self::PostStarting
                | Self::Active
                | Self::Pausing
                | Self::Paused
                | Self::Closing
        )
    }
}

/// A host packet on its way to the guest.
#[derive(Debug)]
struct ToGuest {
    txn: u64,
    payload: Vec<u8>,
    external: Option<Arc<Vec<u8>>>,
    deferred: bool,
    /// Delivered by the thread of [`Host::send_inline`](crate::Host::send_inline), not by
    /// the delivery threads.
    inline: bool,
}

#[derive(Debug)]
struct Channel {
    serial: u64,
    handle: usize,
    phase: Phase,
    ever_enabled: bool,
    /// A state transition (open, pause, start, close) owns the channel.
    transition: bool,
    pause_armed: bool,
    suspend_called: bool,
    queue_on: bool,
    queue_failed: bool,
    quota: u32,
    quota_blocked: bool,
    /// Delivered, not yet retired.
    outstanding: u32,
    /// ProcessPacket / ProcessingComplete calls running now.
    delivering: u32,
    /// Packets delivered since the last ProcessingComplete.
    batch: u32,
    /// Packet completion routines running now.
    routines_running: u32,
    /// The rings, from the host's open to the close.
    link: Option<Arc<Link>>,
    // Configuration (Init setters).
    max_packet: u32,
    max_external: Option<(u32, u32)>,
    client_context: u32,
    flags: u32,
    friendly_name: Option<String>,
    ring_pages: (u32, u32),
    target: Option<(sys::GUID, Option<sys::GUID>)>,
    pnp_failure: sys::PFN_VMB_CHANNEL_PNP_FAILURE,
    passive: bool,
    process_packet: sys::PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: sys::PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    callbacks: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    pointer: usize,
    latency: u16,
    instance: sys::GUID,
    to_guest: VecDeque<ToGuest>,
    deferred: VecDeque<ToGuest>,
    pre_open: VecDeque<GuestPacket>,
}

impl Channel {
    fn new(serial: u64, handle: usize) -> Self {
        Self {
            serial,
            handle,
            phase: Phase::Disabled,
            ever_enabled: false,
            transition: false,
            pause_armed: false,
            suspend_called: false,
            queue_on: false,
            queue_failed: false,
            quota: u32::MAX,
            quota_blocked: false,
            outstanding: 0,
            delivering: 0,
            batch: 0,
            routines_running: 0,
            link: None,
            max_packet: DEFAULT_MAX_PACKET,
            max_external: None,
            client_context: 0,
            flags: 0,
            friendly_name: None,
            ring_pages: (DEFAULT_RING_PAGES, DEFAULT_RING_PAGES),
            target: None,
            pnp_failure: None,
            passive: false,
            process_packet: None,
            processing_complete: None,
            callbacks: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS::default(),
            pointer: 0,
            latency: 0,
            instance: sys::GUID::default(),
            to_guest: VecDeque::new(),
            deferred: VecDeque::new(),
            pre_open: VecDeque::new(),
        }
    }

    fn raw(&self) -> sys::VMBCHANNEL {
        ptr::without_provenance_mut(self.handle)
    }

    /// Sending now is within the contract: not Disabled, and not after `EvtChannelSuspend`.
    fn may_send(&self) -> bool {
        match self.phase {
            Phase::Disabled => false,
            Phase::Pausing | Phase::Paused | Phase::Closing => !self.suspend_called,
            _ => true,
        }
    }

    fn has_queued(&self) -> bool {
        !self.deferred.is_empty() || !self.to_guest.is_empty()
    }

    /// The next packet is for a [`Host::send_inline`](crate::Host::send_inline) caller.
    fn next_is_inline(&self) -> bool {
        self.deferred.is_empty() && self.to_guest.front().is_some_and(|p| p.inline)
    }

    /// The delivery threads may take a packet of this channel now.
    fn can_deliver(&self) -> bool {
        self.queue_on
            && !self.queue_failed
            && !self.quota_blocked
            && self.has_queued()
            && self.outstanding < self.quota
    }

    fn delivery_irql(&self) -> Irql {
        if self.passive {
            Irql::Passive
        } else {
            Irql::Dispatch
        }
    }

    fn ring_bytes(pages: u32) -> usize {
        usize::try_from(pages)
            .unwrap_or(usize::MAX)
            .saturating_mul(PAGE_SIZE)
    }
}

/// Where an outgoing packet object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PacketKey {
    /// From `VmbPacketAllocate`: the serial in its handle.
    Lib(u64),
    /// From `VmbPacketInitialize`: the address of the caller's memory.
    Caller(usize),
}

#[derive(Debug)]
struct PacketRec {
    channel: u64,
    handle: usize,
    in_flight: bool,
    routine: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE,
    pointer: usize,
}

#[derive(Clone, Copy, Debug)]
enum OutWhat {
    Packet(PacketKey),
    Sync(u64),
}

#[derive(Clone, Copy, Debug)]
struct OutTxn {
    channel: u64,
    what: OutWhat,
    /// A host completion of this transaction is crossing the ring: a second one (a duplicate
    /// from a hostile host, racing the first) is ignored at once instead of also being written.
    completing: bool,
}

#[derive(Debug)]
struct HostTxnRec {
    completion_requested: bool,
    result: Option<GuestCompletion>,
    dropped: bool,
}

#[derive(Debug)]
struct IncomingRec {
    channel: u64,
    packet: ToGuest,
    mdl: Option<usize>,
    /// `VmbChannelPacketGetExternalData` returned `STATUS_PENDING` for it: redelivered when
    /// its callback returns.
    pending: bool,
}

#[derive(Debug)]
struct Gpadl {
    channel: u64,
    memory: gpadl::GpadlMemory,
    leak_reported: bool,
}

/// The largest `VmbChannelInitSetClientContextSize` the model accepts.
pub(crate) const MAX_CLIENT_CONTEXT: u32 = 4096;

/// One Init setter's arguments, parsed at the FFI boundary (`Invalid` when parsing already
/// found a bad argument).
#[derive(Debug)]
pub(crate) enum InitOp {
    Invalid(NtStatus),
    MaxPacketSize(u32),
    MaxExternalData(u32, u32),
    ClientContextSize(u32),
    ProcessPacket(
        sys::PFN_VMB_CHANNEL_PROCESS_PACKET,
        sys::PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ),
    StateCallbacks(sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS),
    FriendlyName(String),
    Flags(u32),
    RingPages(u32, u32),
    Target(
        sys::GUID,
        Option<sys::GUID>,
        sys::PFN_VMB_CHANNEL_PNP_FAILURE,
    ),
    IncomingAtPassive(bool),
}

impl InitOp {
    fn apply(self, c: &mut Channel) -> NtStatus {
        use NtStatus as S;
        match self {
            Self::Invalid(s) => return s,
            Self::MaxPacketSize(0) => return S::STATUS_INVALID_PARAMETER_2,
            Self::MaxPacketSize(n) => c.max_packet = n,
            Self::MaxExternalData(0, _) => return S::STATUS_INVALID_PARAMETER_2,
            Self::MaxExternalData(_, 0) => return S::STATUS_INVALID_PARAMETER_3,
            Self::MaxExternalData(size, chain) => c.max_external = Some((size, chain)),
            // [inf] The documentation names no limit; the model takes up to one page, a size
            // no reasonable per-packet context exceeds.
            Self::ClientContextSize(n) if n > MAX_CLIENT_CONTEXT => {
                return S::STATUS_INVALID_PARAMETER_2;
            }
            Self::ClientContextSize(n) => c.client_context = n,
            Self::ProcessPacket(None, _) => return S::STATUS_INVALID_PARAMETER_2, // [inf] required
            Self::ProcessPacket(pp, pc) => {
                c.process_packet = pp;
                c.processing_complete = pc;
            }
            Self::StateCallbacks(cb) => {
                if cb.Version != sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION
                    || cb.Size != sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_SIZE
                {
                    return S::STATUS_INVALID_PARAMETER_2;
                }
                c.callbacks = cb; // [inf] copied: the caller's struct may be temporary
            }
            Self::FriendlyName(n) => c.friendly_name = Some(n),
            Self::Flags(f) if f & !sys::VMBUS_CHANNEL_INIT_FLAGS != 0 => {
                return S::STATUS_INVALID_PARAMETER_2;
            }
            Self::Flags(f) => c.flags = f,
            Self::RingPages(0, _) => return S::STATUS_INVALID_PARAMETER_2, // [inf]
            Self::RingPages(_, 0) => return S::STATUS_INVALID_PARAMETER_3, // [inf]
            Self::RingPages(i, o) => c.ring_pages = (i, o),
            Self::Target(ty, inst, pnp) => {
                c.target = Some((ty, inst));
                c.pnp_failure = pnp;
            }
            Self::IncomingAtPassive(p) => c.passive = p,
        }
        S::STATUS_SUCCESS
    }
}

/// External data of an outgoing send, resolved at the FFI boundary.
#[derive(Debug)]
pub(crate) enum External {
    None,
    /// An MDL handle and the byte range of it that is sent (`len == 0`: to the end).
    Mdl {
        mdl: usize,
        offset: u32,
        len: u32,
    },
    Pfns(Vec<u64>),
}

/// How a guest retires an incoming packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retire {
    Complete,
    Fail,
    Defer,
}

impl Retire {
    const fn function(self) -> &'static str {
        match self {
            Self::Complete => "VmbChannelPacketComplete",
            Self::Fail => "VmbChannelPacketFail",
            Self::Defer => "VmbChannelPacketDeferToPassive",
        }
    }
}

/// How a synchronous request ended.
#[derive(Debug)]
enum SyncAnswer {
    /// The host completed it.
    Host(NtStatus, Vec<u8>),
    /// The channel closed first.
    Removed,
}

/// What a synchronous request returns to the export.
#[derive(Debug)]
pub(crate) struct SyncOutcome {
    pub(crate) status: NtStatus,
    pub(crate) response: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct State {
    shutdown: bool,
    next_channel: u64,
    next_packet: u64,
    next_token: u64,
    next_txn: u64,
    next_gpadl: u32,
    channels: BTreeMap<u64, Channel>,
    last_channel: Option<u64>,
    open_channel: Option<u64>,
    packets: HashMap<PacketKey, PacketRec>,
    allocated: u64,
    in_flight: u64,
    incoming: HashMap<u64, IncomingRec>,
    force_retired: HashSet<u64>,
    host_txns: HashMap<u64, HostTxnRec>,
    out_txns: HashMap<u64, OutTxn>,
    sync_slots: HashMap<u64, Option<SyncAnswer>>,
    to_host: VecDeque<GuestPacket>,
    /// External data of packets in a ring (it would travel as GPA ranges): guest→host by
    /// transaction (channel, MDL bytes, PFNs), host→guest by transaction.
    g2h_side: HashMap<u64, SideData>,
    h2g_side: HashMap<u64, Arc<Vec<u8>>>,
    /// Host transactions that [`Host::send_inline`](crate::Host::send_inline) delivers itself.
    inline_txns: HashSet<u64>,
    gpadls: BTreeMap<u32, Gpadl>,
    deleted_gpadls: HashSet<u32>,
    violations: Vec<Violation>,
    stats: HostStats,
    quarantine: VecDeque<AlignedBuf>,
    /// A rescind of the open channel is waiting for (or running after) the current transition:
    /// synchronous requests fail at once.
    rescind_pending: bool,
    /// The host offers the channel ([`Host::rescind`](crate::Host::rescind) withdraws it).
    withdrawn: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            shutdown: false,
            next_channel: 1,
            next_packet: 1,
            next_token: 1,
            next_txn: 1,
            next_gpadl: 1,
            channels: BTreeMap::new(),
            last_channel: None,
            open_channel: None,
            packets: HashMap::new(),
            allocated: 0,
            in_flight: 0,
            incoming: HashMap::new(),
            force_retired: HashSet::new(),
            host_txns: HashMap::new(),
            out_txns: HashMap::new(),
            sync_slots: HashMap::new(),
            to_host: VecDeque::new(),
            g2h_side: HashMap::new(),
            h2g_side: HashMap::new(),
            inline_txns: HashSet::new(),
            gpadls: BTreeMap::new(),
            deleted_gpadls: HashSet::new(),
            violations: Vec::new(),
            stats: HostStats::default(),
            quarantine: VecDeque::new(),
            rescind_pending: false,
            withdrawn: false,
        }
    }
}

impl State {
    /// A guest packet to hand to the host now (`immediate`), or `None` once it waits on its
    /// channel for the open: before the open there is no ring yet (§6.2).
    fn now_or_at_open(
        &mut self,
        serial: u64,
        gp: GuestPacket,
        immediate: bool,
    ) -> Option<GuestPacket> {
        if immediate {
            return Some(gp);
        }
        if let Some(c) = self.channels.get_mut(&serial) {
            c.pre_open.push_back(gp);
        }
        None
    }

    /// The channel `serial`, or a violation (`ChannelUseAfterCleanup` for a cleaned-up one,
    /// `InvalidHandle` for one never allocated).
    fn channel(&mut self, func: &'static str, serial: u64, h: usize) -> Option<&mut Channel> {
        if !self.channels.contains_key(&serial) {
            let (kind, why) = if serial != 0 && serial < self.next_channel {
                (V::ChannelUseAfterCleanup, "the channel was cleaned up")
            } else {
                (V::InvalidHandle, "no such channel in this world")
            };
            violate(&mut self.violations, kind, func, h, why);
            return None;
        }
        self.channels.get_mut(&serial)
    }

    /// The packet `key`, or a violation (`PacketUseAfterFree` / `InvalidHandle`).
    fn packet(&mut self, func: &'static str, key: PacketKey, h: usize) -> Option<&mut PacketRec> {
        if !self.packets.contains_key(&key) {
            let (kind, why) = match key {
                PacketKey::Lib(s) if s != 0 && s < self.next_packet => {
                    (V::PacketUseAfterFree, "the packet was freed")
                }
                _ => (V::InvalidHandle, "no such packet in this world"),
            };
            violate(&mut self.violations, kind, func, h, why);
            return None;
        }
        self.packets.get_mut(&key)
    }

    fn record(&mut self, kind: V, func: &'static str, h: usize, detail: impl Into<String>) {
        violate(&mut self.violations, kind, func, h, detail);
    }

    fn free_packet(&mut self, key: PacketKey) {
        if self.packets.remove(&key).is_some() && matches!(key, PacketKey::Lib(_)) {
            self.allocated = self.allocated.saturating_sub(1);
        }
    }

    fn is_channel_serial_live(&self, serial: u64) -> bool {
        self.channels.contains_key(&serial)
    }
}

/// One world.
pub(crate) struct World {
    pub(crate) id: u32,
    /// The VM whose VMBus offers this world's channel (`Vm`): the offers a PnP lookup by GUID
    /// (`VmbClientChannelInitSetTargetPnp`) can find.
    pub(crate) vm: u32,
    pub(crate) cfg: ModelConfig,
    pub(crate) faults: FaultPlan,
    st: Mutex<State>,
    work_cv: Cv,
    recv_cv: Cv,
    txn_cv: Cv,
    sync_cv: Cv,
    state_cv: Cv,
    responder: Mutex<Option<Arc<Responder>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<World>,
    /// The client interface table's references (`interface.rs`).
    iface: InterfaceState,
}

type Guard<'a> = MutexGuard<'a, State>;

/// A condition variable of the world's lock that knows whether anyone waits: `notify_*` with
/// no waiter costs an atomic load instead of a futex system call (the world notifies after
/// every state change, and most have no waiter, always so with inline delivery).
///
/// Sound for the world's use: every waiter counts itself in while it holds the world lock,
/// before it waits (which releases the lock), and every state change a waiter waits for is
/// made under the world lock, before the notify. So a notifier that changed the state under
/// the lock and then sees no waiter knows that any later waiter will see the new state before
/// it waits.
#[derive(Debug, Default)]
struct Cv {
    cv: Condvar,
    waiters: std::sync::atomic::AtomicUsize,
}

impl Cv {
    fn wait<'a>(&self, g: Guard<'a>) -> Guard<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiters.fetch_add(1, SeqCst);
        let g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, SeqCst);
        g
    }

    fn wait_timeout<'a>(&self, g: Guard<'a>, timeout: Duration) -> Guard<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiters.fetch_add(1, SeqCst);
        let (g, _) = self
            .cv
            .wait_timeout(g, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, SeqCst);
        g
    }

    fn notify_one(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            self.cv.notify_one();
        }
    }

    fn notify_all(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            self.cv.notify_all();
        }
    }
}

impl World {
    pub(crate) fn new(id: u32, vm: u32, cfg: ModelConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            id,
            vm,
            cfg,
            faults: FaultPlan::default(),
            st: Mutex::new(State::default()),
            work_cv: Cv::default(),
            recv_cv: Cv::default(),
            txn_cv: Cv::default(),
            sync_cv: Cv::default(),
            state_cv: Cv::default(),
            responder: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            me: me.clone(),
            iface: InterfaceState::default(),
        })
    }

    /// The client interface table's bookkeeping.
    pub(crate) fn interface(&self) -> &InterfaceState {
        &self.iface
    }

    /// `VmbClientChannelInitSetTargetPnp(type, instance)` on a channel of this world: "KMCL
    /// will use PnP to find the vmbus PDO corresponding to the provided interface" and, with no
    /// instance, "any instance with the provided type will be accepted" (header). When the VM
    /// offers more than one channel of that type and no instance is given, which offer the
    /// channel gets is up to PnP, so two devices may end up with the same offer or each other's:
    /// recorded as [`V::AmbiguousTarget`]. The model itself keeps binding the offer of the
    /// channel's own parent device (it does not move channels between worlds).
    pub(crate) fn check_target(
        &self,
        func: &'static str,
        h: usize,
        ty: &sys::GUID,
        instance: Option<&sys::GUID>,
    ) {
        let offers: Vec<sys::GUID> = handle::vm_worlds(self.vm)
            .iter()
            .filter(|w| guid_eq(&w.cfg.interface_type, ty))
            .map(|w| w.cfg.interface_instance)
            .collect();
        if instance.is_none() && offers.len() > 1 {
            self.record(
                V::AmbiguousTarget,
                func,
                h,
                format!(
                    "no interface instance, and the VM offers {} channels of this type: PnP may \
                     bind any of them",
                    offers.len()
                ),
            );
        }
    }

    /// Records [`V::InterfaceUseAfterRelease`] for a KMCL call made while the guest holds no
    /// reference on this world's table (or after its device was removed); the call itself goes
    /// on (the model cannot tell which table the pointer came from).
    pub(crate) fn check_interface(&self, func: &'static str, h: usize) {
        if let Err(why) = self.iface.check_call() {
            self.record(V::InterfaceUseAfterRelease, func, h, why);
        }
    }

    fn lock(&self) -> Guard<'_> {
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(cv: &Cv, g: Guard<'a>) -> Guard<'a> {
        cv.wait(g)
    }

    /// Waits on `cv` until `deadline` (forever if `None`); returns the guard and whether the
    /// deadline has passed.
    fn wait_until<'a>(cv: &Cv, g: Guard<'a>, deadline: Option<Instant>) -> (Guard<'a>, bool) {
        match deadline {
            None => (Self::wait(cv, g), false),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return (g, true);
                }
                let g = cv.wait_timeout(g, d - now);
                (g, Instant::now() >= d)
            }
        }
    }

    fn notify_all(&self) {
        self.work_cv.notify_all();
        self.recv_cv.notify_all();
        self.txn_cv.notify_all();
        self.sync_cv.notify_all();
        self.state_cv.notify_all();
    }

    /// Records a violation in this world's log.
    pub(crate) fn record(&self, kind: V, func: &'static str, h: usize, detail: impl Into<String>) {
        self.lock().record(kind, func, h, detail);
    }

    /// Records `PassiveOnlyAtDispatch` if the caller is at DISPATCH; true if it may go on.
    /// [inf] The call then fails without effect: blocking at DISPATCH would deadlock the model
    /// as it would hang Windows.
    pub(crate) fn require_passive(&self, func: &'static str, h: usize) -> bool {
        if current_irql() == Irql::Passive {
            return true;
        }
        self.record(
            V::PassiveOnlyAtDispatch,
            func,
            h,
            "PASSIVE_LEVEL-only function called at DISPATCH_LEVEL; the call did nothing",
        );
        false
    }

    fn frame(&self, channel: u64, kind: FrameKind) -> Frame {
        Frame {
            world: self.id,
            channel,
            kind,
        }
    }

    // ---- world life ----------------------------------------------------------------------

    pub(crate) fn start_workers(self: &Arc<Self>) {
        if self.cfg.inline_delivery {
            return; // `pump` delivers on the calling threads
        }
        let n = self.cfg.delivery_threads.max(1);
        let mut workers = relock(&self.workers);
        for i in 0..n {
            let world = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("kmcl-model-dpc-{}-{i}", self.id))
                .spawn(move || {
                    let _model = crate::irql::ModelCode::enter();
                    world.delivery_loop();
                });
            if let Ok(t) = spawned {
                workers.push(t);
            }
        }
    }

    /// Tears the world down: no guest callback runs any more, the delivery threads are joined,
    /// blocked guest calls return, and the world's handles become unknown.
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.notify_all();
        let workers = std::mem::take(&mut *relock(&self.workers));
        for t in workers {
            let _ = t.join();
        }
        handle::unregister_world(self.id);
        mdl::retire_world(self.id);
    }

    // ---- channel lifetime ------------------------------------------------------------------

    pub(crate) fn allocate(&self, func: &'static str) -> Result<usize, NtStatus> {
        let mut g = self.lock();
        if g.shutdown {
            return Err(NtStatus::STATUS_DEVICE_REMOVED);
        }
        let serial = g.next_channel;
        if serial > MAX_SERIAL {
            g.record(V::InvalidParameter, func, 0, "channel serials exhausted");
            return Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES);
        }
        g.next_channel += 1;
        let h = handle::encode(Kind::Channel, self.id, serial);
        g.channels.insert(serial, Channel::new(serial, h));
        g.last_channel = Some(serial);
        Ok(h)
    }

    pub(crate) fn cleanup(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelCleanup";
        if !self.require_passive(F, h) {
            return;
        }
        let mut g = self.lock();
        let Some(c) = g.channel(F, serial, h) else {
            return;
        };
        if c.phase != Phase::Disabled || c.transition {
            let phase = c.phase;
            g.record(
                V::CleanupWhileEnabled,
                F,
                h,
                format!("channel is {phase:?}; VmbChannelDisable must return first"),
            );
            return;
        }
        let st = &mut *g;
        let leaked: Vec<u64> = st
            .packets
            .iter()
            .filter_map(|(k, p)| match k {
                PacketKey::Lib(s) if p.channel == serial => Some(*s),
                _ => None,
            })
            .collect();
        if !leaked.is_empty() {
            let mut sorted = leaked.clone();
            sorted.sort_unstable();
            let handles: Vec<String> = sorted
                .iter()
                .map(|s| format!("{:#x}", handle::encode(Kind::Packet, self.id, *s)))
                .collect();
            st.record(
                V::LeakAtCleanup,
                F,
                h,
                format!(
                    "{} packet(s) from VmbPacketAllocate never freed: {}",
                    leaked.len(),
                    handles.join(", ")
                ),
            );
            for s in leaked {
                st.free_packet(PacketKey::Lib(s));
            }
        }
        let caller: Vec<usize> = st
            .packets
            .iter()
            .filter_map(|(k, p)| match k {
                PacketKey::Caller(a) if p.channel == serial => Some(*a),
                _ => None,
            })
            .collect();
        for a in caller {
            st.packets.remove(&PacketKey::Caller(a));
            handle::unregister_caller_packet(a, self.id);
        }
        st.gpadls.retain(|_, gp| gp.channel != serial);
        st.channels.remove(&serial);
        drop(g);
        self.state_cv.notify_all();
    }

    pub(crate) fn enable(&self, serial: u64, h: usize) -> NtStatus {
        const F: &str = "VmbChannelEnable";
        if !self.require_passive(F, h) {
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        let mut g = self.lock();
        let Some(c) = g.channel(F, serial, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        if c.phase != Phase::Disabled || c.transition {
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        if c.process_packet.is_none() {
            // [inf] The process-packet callback is required before Enable.
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        c.phase = Phase::Enabled;
        c.ever_enabled = true;
        NtStatus::STATUS_SUCCESS
    }

    /// An Init setter: the common checks (IRQL, handle, not yet enabled), then the argument
    /// checks of `op`, then its effect.
    pub(crate) fn init(&self, func: &'static str, serial: u64, h: usize, op: InitOp) -> NtStatus {
        if !self.require_passive(func, h) {
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        let mut g = self.lock();
        let Some(c) = g.channel(func, serial, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        if c.ever_enabled {
            g.record(
                V::InitAfterEnable,
                func,
                h,
                "Init setters are only valid before VmbChannelEnable",
            );
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        }
        op.apply(c)
    }

    pub(crate) fn set_pointer(&self, func: &'static str, serial: u64, h: usize, p: usize) {
        let mut g = self.lock();
        if let Some(c) = g.channel(func, serial, h) {
            c.pointer = p;
        }
    }

    pub(crate) fn get_pointer(&self, func: &'static str, serial: u64, h: usize) -> usize {
        let mut g = self.lock();
        g.channel(func, serial, h).map_or(0, |c| c.pointer)
    }

    pub(crate) fn set_quota(&self, serial: u64, h: usize, quota: u32) {
        const F: &str = "VmbChannelSetTransactionQuota";
        let mut g = self.lock();
        let Some(c) = g.channel(F, serial, h) else {
            return;
        };
        if quota == 0 {
            g.record(
                V::InvalidParameter,
                F,
                h,
                "quota must be > 0; the quota is unchanged",
            );
            return;
        }
        // §6.1: setting the quota never restarts a stopped queue by itself.
        c.quota = quota;
    }

    pub(crate) fn set_latency(&self, serial: u64, h: usize, latency: u16) -> Result<u16, NtStatus> {
        const F: &str = "VmbChannelSetInterruptLatency";
        let mut g = self.lock();
        let c = g
            .channel(F, serial, h)
            .ok_or(NtStatus::STATUS_INVALID_PARAMETER_1)?;
        if !c.phase.is_open() {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        Ok(std::mem::replace(&mut c.latency, latency))
    }

    pub(crate) fn interface_instance(&self, serial: u64, h: usize) -> Option<sys::GUID> {
        let mut g = self.lock();
        g.channel("VmbChannelGetInterfaceInstance", serial, h)
            .map(|c| c.instance)
    }

    pub(crate) fn sizeof_packet(&self, serial: u64, h: usize) -> u32 {
        let mut g = self.lock();
        g.channel("VmbChannelSizeofPacket", serial, h)
            .map_or(0, |c| c.max_packet.saturating_add(PACKET_OBJECT_OVERHEAD))
    }

    // ---- host queries ------------------------------------------------------------------------

    pub(crate) fn set_responder(&self, r: Option<Arc<Responder>>) {
        *relock(&self.responder) = r;
    }

    pub(crate) fn channel_state(&self) -> ChannelState {
        let g = self.lock();
        let Some(serial) = g.last_channel else {
            return ChannelState::None;
        };
        let Some(c) = g.channels.get(&serial) else {
            return ChannelState::CleanedUp;
        };
        match c.phase {
            Phase::Disabled => ChannelState::Disabled,
            Phase::Enabled | Phase::Opening => ChannelState::Enabled,
            Phase::Starting | Phase::PostStarting => ChannelState::Opened,
            Phase::Active => ChannelState::Active,
            Phase::Pausing | Phase::Paused => ChannelState::Paused,
            Phase::Closing => ChannelState::Closing,
        }
    }

    pub(crate) fn violations(&self, take: bool) -> Vec<Violation> {
        let mut g = self.lock();
        if take {
            std::mem::take(&mut g.violations)
        } else {
            g.violations.clone()
        }
    }

    pub(crate) fn ring_stats(&self) -> Option<TransportStats> {
        let link = self.open_link(&self.lock());
        link.map(|l| l.stats())
    }

    pub(crate) fn ring_snapshot(&self) -> Option<RingSnapshot> {
        let link = self.open_link(&self.lock());
        link.map(|l| l.snapshot())
    }

    pub(crate) fn stats(&self) -> HostStats {
        let g = self.lock();
        let mut s = g.stats.clone();
        s.incoming_outstanding = u64::try_from(g.incoming.len()).unwrap_or(u64::MAX);
        s.packets_allocated = g.allocated;
        s.packets_in_flight = g.in_flight;
        s.gpadls_alive = u64::try_from(g.gpadls.len()).unwrap_or(u64::MAX);
        s.pending_for_recv = u64::try_from(g.to_host.len()).unwrap_or(u64::MAX);
        s
    }
}

/// External data of a guest packet in the ring: (channel, MDL bytes, PFNs).
type SideData = (u64, Option<Vec<u8>>, Option<Vec<u64>>);

/// One ProcessPacket call to make.
struct Delivery {
    channel: u64,
    ch: sys::VMBCHANNEL,
    token: u64,
    callback: sys::PFN_VMB_CHANNEL_PROCESS_PACKET,
    view: AlignedBuf,
    flags: u32,
    irql: Irql,
}

/// The deadline of a KeWaitForSingleObject-style timeout: negative = relative in 100 ns units,
/// positive = absolute system time (100 ns since 1601-01-01), 0 = now.
fn timeout_deadline(t: i64) -> Instant {
    let now = Instant::now();
    let rel = if t < 0 {
        Duration::from_nanos(t.unsigned_abs().saturating_mul(100))
    } else {
        const EPOCH_DIFF_100NS: u64 = 116_444_736_000_000_000;
        let since_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now_100ns = u64::try_from(since_unix.as_nanos() / 100)
            .unwrap_or(u64::MAX)
            .saturating_add(EPOCH_DIFF_100NS);
        let target = t.unsigned_abs();
        Duration::from_nanos(target.saturating_sub(now_100ns).saturating_mul(100))
    };
    now.checked_add(rel)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}
