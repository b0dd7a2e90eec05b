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

mod poison;
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
}

#[derive(Debug)]
struct Gpadl {
    channel: u64,
    bytes: Vec<u8>,
    leak_reported: bool,
}

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
    work_cv: Condvar,
    recv_cv: Condvar,
    txn_cv: Condvar,
    sync_cv: Condvar,
    state_cv: Condvar,
    responder: Mutex<Option<Arc<Responder>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<World>,
    /// The client interface table's references (`interface.rs`).
    iface: InterfaceState,
}

type Guard<'a> = MutexGuard<'a, State>;

impl World {
    pub(crate) fn new(id: u32, vm: u32, cfg: ModelConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            id,
            vm,
            cfg,
            faults: FaultPlan::default(),
            st: Mutex::new(State::default()),
            work_cv: Condvar::new(),
            recv_cv: Condvar::new(),
            txn_cv: Condvar::new(),
            sync_cv: Condvar::new(),
            state_cv: Condvar::new(),
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

    fn wait<'a>(cv: &Condvar, g: Guard<'a>) -> Guard<'a> {
        cv.wait(g).unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on `cv` until `deadline` (forever if `None`); returns the guard and whether the
    /// deadline has passed.
    fn wait_until<'a>(cv: &Condvar, g: Guard<'a>, deadline: Option<Instant>) -> (Guard<'a>, bool) {
        match deadline {
            None => (Self::wait(cv, g), false),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return (g, true);
                }
                let (g, _) = cv
                    .wait_timeout(g, d - now)
                    .unwrap_or_else(PoisonError::into_inner);
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

    // ---- transitions -------------------------------------------------------------------------

    /// Waits until no other transition owns the channel and takes it. `Err` (with the guard)
    /// if the channel is gone or the world shuts down.
    fn begin_transition<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
    ) -> Result<Guard<'a>, Guard<'a>> {
        loop {
            if g.shutdown {
                return Err(g);
            }
            match g.channels.get_mut(&serial) {
                None => return Err(g),
                Some(c) if !c.transition => {
                    c.transition = true;
                    return Ok(g);
                }
                Some(_) => g = Self::wait(&self.state_cv, g),
            }
        }
    }

    fn end_transition(&self, g: &mut State, serial: u64) {
        if let Some(c) = g.channels.get_mut(&serial) {
            c.transition = false;
        }
        self.state_cv.notify_all();
    }

    /// Waits (releasing the lock) until `done` holds, the deadline passes or the world shuts
    /// down. Returns whether `done` holds.
    fn wait_for<'a>(
        &'a self,
        mut g: Guard<'a>,
        deadline: Option<Instant>,
        done: impl Fn(&State) -> bool,
    ) -> (Guard<'a>, bool) {
        loop {
            if done(&g) {
                return (g, true);
            }
            if g.shutdown {
                return (g, false);
            }
            let (ng, expired) = Self::wait_until(&self.state_cv, g, deadline);
            g = ng;
            if expired {
                let ok = done(&g);
                return (g, ok);
            }
        }
    }

    fn call_state(
        &self,
        serial: u64,
        ch: sys::VMBCHANNEL,
        which: StateCb,
        f: Option<unsafe extern "C" fn(sys::VMBCHANNEL)>,
    ) {
        if let Some(f) = f {
            in_callback(
                self.frame(serial, FrameKind::State(which)),
                Irql::Passive,
                || {
                    // SAFETY: the guest registered `f` as this state-change callback of the
                    // channel (VmbChannelInitSetStateChangeCallbacks); it is called as KMCL calls
                    // it: at PASSIVE_LEVEL, with the channel's handle, and no model lock held.
                    unsafe { f(ch) }
                },
            );
        }
    }

    /// Runs the start half of the state model: Started, queue on, PostStarted, Active. The
    /// caller holds the transition; the lock is released around the callbacks.
    fn run_start<'a>(&'a self, mut g: Guard<'a>, serial: u64) -> Guard<'a> {
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        c.phase = Phase::Starting;
        c.suspend_called = false;
        let (ch, started, post) = (
            c.raw(),
            c.callbacks.EvtChannelStarted,
            c.callbacks.EvtChannelPostStarted,
        );
        drop(g);
        self.call_state(serial, ch, StateCb::Started, started);
        let mut g = self.lock();
        if g.shutdown {
            return g;
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        c.queue_on = true;
        c.phase = Phase::PostStarting;
        drop(g);
        self.work_cv.notify_all();
        self.call_state(serial, ch, StateCb::PostStarted, post);
        let mut g = self.lock();
        if let Some(c) = g.channels.get_mut(&serial) {
            c.phase = Phase::Active;
        }
        g
    }

    /// The host's open: Opened, then (unless a pause is armed) Started, PostStarted.
    pub(crate) fn open_sequence(self: Arc<Self>) -> Result<(), OpenError> {
        crate::irql::with_irql(Irql::Passive, || self.open_inner())
    }

    fn open_inner(&self) -> Result<(), OpenError> {
        let g = self.lock();
        if g.shutdown {
            return Err(OpenError::ShutDown);
        }
        if g.withdrawn {
            return Err(OpenError::NoOffer);
        }
        let serial = g
            .channels
            .values()
            .find(|c| c.phase == Phase::Enabled && !c.transition)
            .or_else(|| g.channels.values().find(|c| c.phase == Phase::Enabled))
            .map(|c| c.serial)
            .ok_or(OpenError::NoEnabledChannel)?;
        let mut g = self
            .begin_transition(g, serial)
            .map_err(|_| OpenError::ShutDown)?;
        let Some(c) = g.channels.get_mut(&serial) else {
            return Err(OpenError::NoEnabledChannel);
        };
        if c.phase != Phase::Enabled {
            self.end_transition(&mut g, serial);
            return Err(OpenError::NoEnabledChannel);
        }
        if let Some((ty, inst)) = &c.target {
            let inst_ok = inst
                .as_ref()
                .is_none_or(|i| guid_eq(i, &self.cfg.interface_instance));
            if !guid_eq(ty, &self.cfg.interface_type) || !inst_ok {
                self.end_transition(&mut g, serial);
                return Err(OpenError::TargetMismatch);
            }
        }
        // The guest's KMCL allocates the rings (and offers them to the host) before the host
        // can open; without them there is no open and no callback. The rings exist from the
        // open to the close.
        let Some(link) = Link::new(serial, c.ring_pages.0, c.ring_pages.1) else {
            self.end_transition(&mut g, serial);
            return Err(OpenError::RingsNotAllocated(
                NtStatus::STATUS_INSUFFICIENT_RESOURCES,
            ));
        };
        c.phase = Phase::Opening;
        c.instance = self.cfg.interface_instance;
        let (ch, opened) = (c.raw(), c.callbacks.EvtChannelOpened);
        g.open_channel = Some(serial);
        drop(g);

        let status = opened.map_or(NtStatus::STATUS_SUCCESS, |f| {
            in_callback(
                self.frame(serial, FrameKind::State(StateCb::Opened)),
                Irql::Passive,
                || {
                    // SAFETY: the guest registered `f` as EvtChannelOpened of this channel;
                    // called at PASSIVE_LEVEL with the channel handle, no model lock held.
                    NtStatus(unsafe { f(ch) })
                },
            )
        });

        let mut g = self.lock();
        if g.shutdown {
            return Err(OpenError::ShutDown);
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return Err(OpenError::ShutDown);
        };
        if !status.is_success() {
            // §5.4: a failure rolls the channel back to Enabled with no traffic.
            c.phase = Phase::Enabled;
            c.instance = sys::GUID::default();
            if g.open_channel == Some(serial) {
                g.open_channel = None;
            }
            self.end_transition(&mut g, serial);
            return Err(OpenError::OpenedFailed(status));
        }
        c.phase = Phase::Starting;
        c.link = Some(link);
        // Fault hook: a rescind queued behind the open (closed below, once the open returned).
        let rescind_queued = self.faults.take_rescind_after_opened();
        let pending: Vec<GuestPacket> = c.pre_open.drain(..).collect();
        let armed = c.pause_armed;
        if armed {
            c.phase = Phase::Paused;
            c.pause_armed = false;
        }
        if rescind_queued {
            g.rescind_pending = true;
        }
        drop(g);
        // Packets queued before the open reach the host now (§6.2).
        for gp in pending {
            self.deliver_to_host(gp, true);
        }
        let mut g = self.lock();
        if !armed {
            g = self.run_start(g, serial);
        }
        self.end_transition(&mut g, serial);
        drop(g);
        if rescind_queued {
            self.rescind();
        }
        Ok(())
    }

    pub(crate) fn pause(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelPause";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        let Some(c) = g.channels.get_mut(&serial) else {
            return;
        };
        match c.phase {
            Phase::Disabled | Phase::Enabled => c.pause_armed = true,
            Phase::Active => {
                c.phase = Phase::Pausing;
                g = self.suspend_and_drain(g, serial, F);
                if let Some(c) = g.channels.get_mut(&serial) {
                    c.phase = Phase::Paused;
                }
            }
            _ => {}
        }
        self.end_transition(&mut g, serial);
    }

    pub(crate) fn start(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelStart";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        let Some(c) = g.channels.get_mut(&serial) else {
            return;
        };
        match c.phase {
            Phase::Disabled | Phase::Enabled => c.pause_armed = false,
            Phase::Paused => g = self.run_start(g, serial),
            _ => {}
        }
        self.end_transition(&mut g, serial);
    }

    pub(crate) fn disable(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelDisable";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        g = self.close(g, serial, F, false);
        self.end_transition(&mut g, serial);
    }

    /// Offers the channel again, or withdraws the offer.
    pub(crate) fn set_offered(&self, offered: bool) {
        self.lock().withdrawn = !offered;
    }

    pub(crate) fn rescind(&self) {
        self.close_channel_of(None);
    }

    /// Closes the open channel (the host's close or rescind) if it runs on `link`'s rings, or
    /// whatever its rings with `None`.
    fn close_channel_of(&self, link: Option<&Arc<Link>>) {
        crate::irql::with_irql(Irql::Passive, || {
            let mut g = self.lock();
            let Some(serial) = g.open_channel else {
                return;
            };
            let on_link = |g: &State| {
                link.is_none_or(|link| {
                    g.channels
                        .get(&serial)
                        .and_then(|c| c.link.as_ref())
                        .is_some_and(|l| Arc::ptr_eq(l, link))
                })
            };
            if !on_link(&g) {
                return; // closed (and perhaps opened again) since: not that channel any more
            }
            // The open sequence may own the transition while PostStarted waits for a
            // synchronous request: fail those now (and new ones until the close ran), as the
            // library does for a channel being removed, so the open can return.
            g.rescind_pending = true;
            Self::cancel_sync_requests(&mut g, serial);
            drop(g);
            self.sync_cv.notify_all();
            let g = self.lock();
            let mut g = match self.begin_transition(g, serial) {
                Ok(g) => g,
                Err(mut g) => {
                    g.rescind_pending = false;
                    return;
                }
            };
            if on_link(&g) {
                g = self.close(g, serial, "EvtChannelSuspend", true);
            }
            g.rescind_pending = false;
            self.end_transition(&mut g, serial);
        });
    }

    /// Fails every synchronous request of channel `serial` that waits for the host with
    /// `STATUS_DEVICE_REMOVED` (the caller notifies `sync_cv`).
    fn cancel_sync_requests(st: &mut State, serial: u64) {
        let ids: Vec<(u64, u64)> = st
            .out_txns
            .iter()
            .filter_map(|(id, t)| match t.what {
                OutWhat::Sync(slot) if t.channel == serial => Some((*id, slot)),
                _ => None,
            })
            .collect();
        for (id, slot) in ids {
            st.out_txns.remove(&id);
            st.stats.cancelled_at_close += 1;
            if let Some(s) = st.sync_slots.get_mut(&slot) {
                *s = Some(SyncAnswer::Removed);
            }
        }
    }

    /// IRQL, channel and re-entry checks of Disable/Pause/Start.
    fn transition_entry_ok(&self, func: &'static str, serial: u64, h: usize) -> bool {
        if !self.require_passive(func, h) {
            return false;
        }
        let mut g = self.lock();
        if g.channel(func, serial, h).is_none() {
            return false;
        }
        if let Some(f) = crate::irql::channel_callback_frame(self.id, serial) {
            g.record(
                V::StateCallbackReentry,
                func,
                h,
                format!(
                    "called from inside {} of the same channel (would deadlock); the call did nothing",
                    match f.kind {
                        FrameKind::State(s) => s.name(),
                        FrameKind::Packet(_) => "EvtVmbChannelProcessPacket",
                        FrameKind::ProcessingComplete => "EvtVmbChannelProcessingComplete",
                        FrameKind::Completion => "a completion routine",
                    }
                ),
            );
            return false;
        }
        true
    }

    /// Stops the queue, waits for running ProcessPacket calls, calls Suspend, then waits for
    /// every delivered packet to be retired (force-retiring them at the deadline).
    fn suspend_and_drain<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
        func: &'static str,
    ) -> Guard<'a> {
        let deadline = Instant::now().checked_add(self.cfg.teardown_timeout);
        if let Some(c) = g.channels.get_mut(&serial) {
            c.queue_on = false;
        }
        let (ng, idle) = self.wait_for(g, deadline, |st| {
            st.channels.get(&serial).is_none_or(|c| c.delivering == 0)
        });
        g = ng;
        if !idle && !g.shutdown {
            let n = g.channels.get(&serial).map_or(0, |c| c.delivering);
            let h = g.channels.get(&serial).map_or(0, |c| c.handle);
            g.record(
                V::UncompletedAtDisable,
                func,
                h,
                format!(
                    "{n} ProcessPacket/ProcessingComplete call(s) still running after {:?}; \
                     suspending anyway",
                    self.cfg.teardown_timeout
                ),
            );
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        let (ch, suspend) = (c.raw(), c.callbacks.EvtChannelSuspend);
        drop(g);
        self.call_state(serial, ch, StateCb::Suspend, suspend);
        let mut g = self.lock();
        // Sends are refused once Suspend has *returned* (and from inside Suspend itself, see
        // `sending_from_suspend`): a send another thread began before the callback started may
        // still be running while it runs; the driver's Suspend waits for such sends, it cannot
        // undo them.
        if let Some(c) = g.channels.get_mut(&serial) {
            c.suspend_called = true;
        }
        self.drain_outstanding(g, serial, func, deadline)
    }

    fn drain_outstanding<'a>(
        &'a self,
        g: Guard<'a>,
        serial: u64,
        func: &'static str,
        deadline: Option<Instant>,
    ) -> Guard<'a> {
        let (mut g, drained) = self.wait_for(g, deadline, |st| {
            st.channels.get(&serial).is_none_or(|c| c.outstanding == 0)
        });
        if drained || g.shutdown {
            return g;
        }
        let st = &mut *g;
        let mut tokens: Vec<u64> = st
            .incoming
            .iter()
            .filter(|(_, r)| r.channel == serial)
            .map(|(t, _)| *t)
            .collect();
        tokens.sort_unstable();
        let h = st.channels.get(&serial).map_or(0, |c| c.handle);
        let list: Vec<String> = tokens
            .iter()
            .map(|t| format!("{:#x}", handle::encode(Kind::Completion, self.id, *t)))
            .collect();
        st.record(
            V::UncompletedAtDisable,
            func,
            h,
            format!(
                "{} delivered packet(s) not completed after {:?}, retired by force: {}",
                tokens.len(),
                self.cfg.teardown_timeout,
                list.join(", ")
            ),
        );
        for t in tokens {
            if let Some(rec) = st.incoming.remove(&t) {
                st.force_retired.insert(t);
                st.stats.force_retired += 1;
                if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    hr.result = Some(GuestCompletion {
                        payload: Vec::new(),
                        failed: true,
                    });
                }
                if rec.mdl.is_some() {
                    mdl::retire_incoming(self.id, t);
                }
            }
        }
        if let Some(c) = st.channels.get_mut(&serial) {
            c.outstanding = 0;
        }
        self.txn_cv.notify_all();
        g
    }

    /// Closes a channel (Disable or rescind), §5.7–5.8. The caller holds the transition.
    fn close<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
        func: &'static str,
        rescind: bool,
    ) -> Guard<'a> {
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        match c.phase {
            Phase::Active | Phase::Paused => {}
            Phase::Enabled if !rescind => {
                // Never opened: no callbacks; packets queued for the open are cancelled.
                c.pause_armed = false;
                c.phase = Phase::Closing;
                g = self.cancel_outgoing(g, serial);
                if let Some(c) = g.channels.get_mut(&serial) {
                    c.phase = Phase::Disabled;
                }
                return g;
            }
            _ => return g,
        }
        let running = c.phase == Phase::Active;
        c.phase = Phase::Closing;
        let deadline = Instant::now().checked_add(self.cfg.teardown_timeout);
        if running {
            g = self.suspend_and_drain(g, serial, func);
        } else {
            g = self.drain_outstanding(g, serial, func, deadline);
        }
        if g.shutdown {
            return g;
        }
        // The rings go away: packets still in them, undelivered host packets and queued guest
        // packets are dropped.
        let st = &mut *g;
        let mut closed_link = None;
        if let Some(c) = st.channels.get_mut(&serial) {
            if let Some(link) = c.link.take() {
                link.close();
                closed_link = Some(link);
            }
            c.queue_on = false;
            let dropped: Vec<ToGuest> = c.to_guest.drain(..).chain(c.deferred.drain(..)).collect();
            for p in dropped {
                st.stats.dropped_undelivered += 1;
                if let Some(hr) = st.host_txns.get_mut(&p.txn) {
                    hr.dropped = true;
                }
            }
        }
        self.txn_cv.notify_all();
        if let Some(link) = closed_link {
            // Host packets still in the host→guest ring were accepted by `Host::send` but never
            // read out: each is dropped and counted like the queued ones. Outside the world
            // lock, which the host writer and the guest's reader take under the ring locks.
            drop(g);
            for item in link.drain_closed() {
                if let Item::Data {
                    txn, aux, payload, ..
                } = item
                {
                    // The link is no longer the channel's: counted as dropped undelivered.
                    self.enqueue_to_guest(&link, txn, aux, payload);
                }
            }
            g = self.lock();
        }
        g = self.cancel_outgoing(g, serial);
        let (ng, _) = self.wait_for(g, deadline, |st| {
            st.channels
                .get(&serial)
                .is_none_or(|c| c.routines_running == 0)
        });
        g = ng;
        if g.open_channel == Some(serial) {
            g.open_channel = None;
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        let (ch, closed) = (c.raw(), c.callbacks.EvtChannelClosed);
        drop(g);
        self.call_state(serial, ch, StateCb::Closed, closed);
        let mut g = self.lock();
        let st = &mut *g;
        let leaked: Vec<u32> = st
            .gpadls
            .iter_mut()
            .filter(|(_, gp)| gp.channel == serial && !gp.leak_reported)
            .map(|(id, gp)| {
                gp.leak_reported = true;
                *id
            })
            .collect();
        if let Some(c) = st.channels.get_mut(&serial) {
            if !leaked.is_empty() {
                let h = c.handle;
                violate(
                    &mut st.violations,
                    V::GpadlLeak,
                    "EvtChannelClosed",
                    h,
                    format!(
                        "GPADL(s) {leaked:?} still alive after EvtChannelClosed returned; \
                         every GPADL must be deleted by then"
                    ),
                );
            }
            c.phase = Phase::Disabled;
            c.suspend_called = false;
            c.queue_failed = false;
            c.quota_blocked = false;
            c.pause_armed = false;
            c.instance = sys::GUID::default();
            c.batch = 0;
        }
        g
    }

    /// Cancels every guest transaction of the channel: completion routines run with
    /// `STATUS_CANCELLED` [inf] on this thread at DISPATCH, synchronous requests get
    /// `STATUS_DEVICE_REMOVED`, and packets not yet taken by the host disappear.
    fn cancel_outgoing<'a>(&'a self, mut g: Guard<'a>, serial: u64) -> Guard<'a> {
        let st = &mut *g;
        let ids: Vec<u64> = st
            .out_txns
            .iter()
            .filter(|(_, t)| t.channel == serial)
            .map(|(id, _)| *id)
            .collect();
        let mut routines = Vec::new();
        for id in ids {
            let Some(t) = st.out_txns.remove(&id) else {
                continue;
            };
            st.stats.cancelled_at_close += 1;
            match t.what {
                OutWhat::Sync(slot) => {
                    if let Some(s) = st.sync_slots.get_mut(&slot) {
                        *s = Some(SyncAnswer::Removed);
                    }
                }
                OutWhat::Packet(key) => {
                    if let Some(p) = st.packets.get_mut(&key) {
                        p.in_flight = false;
                        st.in_flight = st.in_flight.saturating_sub(1);
                        routines.push((key, p.handle, p.routine));
                    }
                }
            }
        }
        st.to_host.retain(|gp| gp.channel != serial);
        st.g2h_side.retain(|_, (channel, _, _)| *channel != serial);
        if let Some(c) = st.channels.get_mut(&serial) {
            c.pre_open.clear();
            c.routines_running += u32::try_from(routines.len()).unwrap_or(u32::MAX);
        }
        drop(g);
        self.sync_cv.notify_all();
        for (key, h, routine) in &routines {
            self.run_completion(serial, *h, *routine, NtStatus::STATUS_CANCELLED, &[]);
            let mut g = self.lock();
            if let Some(c) = g.channels.get_mut(&serial) {
                c.routines_running = c.routines_running.saturating_sub(1);
            }
            if routine.is_none() {
                g.free_packet(*key);
            }
        }
        self.state_cv.notify_all();
        self.lock()
    }

    // ---- incoming (host -> guest) ----------------------------------------------------------

    pub(crate) fn host_send(
        &self,
        payload: &[u8],
        external: Option<Vec<u8>>,
        completion_requested: bool,
        inline: bool,
    ) -> Result<crate::HostTxn, HostSendError> {
        let mut g = self.lock();
        let st = &mut *g;
        let serial = st.open_channel.ok_or(HostSendError::NotOpen)?;
        let c = st.channels.get_mut(&serial).ok_or(HostSendError::NotOpen)?;
        if !matches!(
            c.phase,
            Phase::Starting | Phase::PostStarting | Phase::Active | Phase::Pausing | Phase::Paused
        ) {
            return Err(HostSendError::NotOpen);
        }
        let link = c.link.clone().ok_or(HostSendError::NotOpen)?;
        let len = payload.len() + external.as_ref().map_or(0, Vec::len);
        let limit = link.h2g_max_payload();
        if len > limit || u32::try_from(payload.len()).is_err() {
            return Err(HostSendError::TooLarge { len, limit });
        }
        let txn = st.next_txn;
        st.next_txn += 1;
        st.host_txns.insert(
            txn,
            HostTxnRec {
                completion_requested,
                result: None,
                dropped: false,
            },
        );
        let aux = if external.is_some() { AUX_EXTERNAL } else { 0 };
        if let Some(e) = external {
            st.h2g_side.insert(txn, Arc::new(e));
        }
        if inline {
            st.inline_txns.insert(txn);
        }
        drop(g);
        let kind = OutgoingKind::InBand {
            transaction_id: wire_id(txn),
            completion_requested,
        };
        match link.host_write(kind, aux, payload, || self.guest_isr(&link)) {
            Ok(true) => self.guest_isr(&link),
            Ok(false) => {} // the guest is draining the ring (or will be): no signal
            Err(_) => {
                // The channel closed meanwhile: dropped undelivered.
                let mut g = self.lock();
                g.stats.dropped_undelivered += 1;
                g.h2g_side.remove(&txn);
                g.inline_txns.remove(&txn);
                if let Some(hr) = g.host_txns.get_mut(&txn) {
                    hr.dropped = true;
                }
                drop(g);
                self.txn_cv.notify_all();
            }
        }
        Ok(crate::HostTxn(txn))
    }

    /// [`Host::send_inline`](crate::Host::send_inline): sends, then runs the packet's
    /// ProcessPacket on this thread when it is next in line and the queue can take it.
    pub(crate) fn host_send_inline(
        &self,
        payload: &[u8],
        completion_requested: bool,
    ) -> Result<crate::HostTxn, HostSendError> {
        let handle = self.host_send(payload, None, completion_requested, true)?;
        let txn = handle.0;
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut g = self.lock();
        let job = loop {
            let serial = g.open_channel;
            let st = &mut *g;
            let c = serial.and_then(|s| st.channels.get_mut(&s));
            let Some(c) = c else {
                break None;
            };
            let ours = c.next_is_inline() && c.to_guest.front().is_some_and(|p| p.txn == txn);
            if ours && c.can_deliver() {
                break self.take_delivery_from(st, serial);
            }
            let queued = c.to_guest.iter_mut().find(|p| p.txn == txn);
            if let Some(p) = queued {
                // Not deliverable now: the delivery threads take it in turn.
                p.inline = false;
                break None;
            } else if !st.inline_txns.contains(&txn) || g.shutdown || Instant::now() >= deadline {
                // Delivered already, dropped, or never read out of the ring.
                g.inline_txns.remove(&txn);
                break None;
            }
            // Still in the ring: another thread runs the guest's interrupt handler.
            let (ng, _) = Self::wait_until(&self.state_cv, g, Some(Instant::now() + HOST_POLL));
            g = ng;
        };
        drop(g);
        match job {
            Some(job) => self.run_delivery(job),
            None => self.work_cv.notify_all(),
        }
        Ok(handle)
    }

    pub(crate) fn wait_completion(&self, txn: u64, timeout: Duration) -> Option<GuestCompletion> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut g = self.lock();
            match g.host_txns.get(&txn) {
                None => return None,
                Some(r) if r.result.is_some() || r.dropped => {
                    return g.host_txns.remove(&txn).and_then(|r| r.result);
                }
                Some(_) => {}
            }
            if g.shutdown {
                return None;
            }
            let link = self.open_link(&g);
            drop(g);
            // The host polls its incoming ring while it waits: a guest completion is not
            // signalled while the host holds unreceived packets.
            if let Some(link) = link {
                self.host_isr(&link);
            }
            let g = self.lock();
            if g.host_txns
                .get(&txn)
                .is_some_and(|r| r.result.is_some() || r.dropped)
            {
                continue;
            }
            let slice = Instant::now() + HOST_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let (g, _) = Self::wait_until(&self.txn_cv, g, Some(until));
            drop(g);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut g = self.lock();
                let done = g
                    .host_txns
                    .get(&txn)
                    .is_some_and(|r| r.result.is_some() || r.dropped);
                return if done {
                    g.host_txns.remove(&txn).and_then(|r| r.result)
                } else {
                    None
                };
            }
        }
    }

    // ---- the rings ----------------------------------------------------------------------------

    /// The link of the open channel.
    fn open_link(&self, st: &State) -> Option<Arc<Link>> {
        st.open_channel
            .and_then(|s| st.channels.get(&s))
            .and_then(|c| c.link.clone())
    }

    fn link_of(&self, serial: u64) -> Option<Arc<Link>> {
        self.lock()
            .channels
            .get(&serial)
            .and_then(|c| c.link.clone())
    }

    /// The guest's interrupt handler for the host→guest ring (KMCL's ISR/DPC): host packets
    /// go to the channel's delivery queue, completions to the host thread that completes.
    fn guest_isr(&self, link: &Arc<Link>) {
        let mut woke = false;
        link.guest_drain(|item| match item {
            Item::Data {
                txn, aux, payload, ..
            } => woke |= self.enqueue_to_guest(link, txn, aux, payload),
            Item::Completion { txn, .. } => {
                if link.hand_off(Dir::H2g, txn, item).is_some() {
                    link.note_unknown_completion();
                }
            }
        });
        if woke {
            self.work_cv.notify_one();
        }
        self.state_cv.notify_all();
        self.check_poisoned(link);
    }

    /// A host packet read out of the ring joins the channel's delivery queue. Returns whether
    /// a delivery thread should wake.
    fn enqueue_to_guest(&self, link: &Arc<Link>, txn: u64, aux: u32, payload: Vec<u8>) -> bool {
        let mut g = self.lock();
        let st = &mut *g;
        let external = if aux & AUX_EXTERNAL != 0 {
            st.h2g_side.remove(&txn)
        } else {
            None
        };
        let inline = st.inline_txns.remove(&txn);
        let live = st
            .channels
            .get_mut(&link.channel)
            .filter(|c| c.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)));
        let Some(c) = live else {
            st.stats.dropped_undelivered += 1;
            if let Some(hr) = st.host_txns.get_mut(&txn) {
                hr.dropped = true;
            }
            drop(g);
            self.txn_cv.notify_all();
            return false;
        };
        c.to_guest.push_back(ToGuest {
            txn,
            payload,
            external,
            deferred: false,
            inline,
        });
        !inline
    }

    /// The host's interrupt handler for the guest→host ring (also its poll): copies new guest
    /// packets out, records guest completions, hands each packet to the guest thread waiting
    /// to offer it or offers it here, and writes queued guest packets when space frees up.
    fn host_isr(&self, link: &Arc<Link>) {
        loop {
            let mut unowned = Vec::new();
            let mut signal = link.host_drain(|item| match item {
                Item::Completion {
                    txn,
                    status,
                    payload,
                } => self.record_guest_completion(link, txn, status, payload),
                Item::Data { txn, .. } => {
                    if let Some(item) = link.hand_off(Dir::G2h, txn, item) {
                        unowned.push(item);
                    }
                }
            });
            let mut again = false;
            for item in unowned {
                let (s, more) = self.offer_item(link, item);
                signal |= s;
                again |= more;
            }
            if signal && link.flush_backlog() {
                again = true;
            }
            self.check_poisoned(link);
            if !again {
                return;
            }
        }
    }

    /// Reacts to a consumed packet: writes queued guest packets if the host's reader signalled,
    /// and drains what arrived without a signal.
    fn after_consume(&self, link: &Arc<Link>, (signal, more): (bool, bool)) {
        let wrote = signal && link.flush_backlog();
        self.check_poisoned(link);
        if wrote || more {
            self.host_isr(link);
        }
    }

    fn record_guest_completion(&self, link: &Link, txn: u64, status: NtStatus, payload: Vec<u8>) {
        let mut g = self.lock();
        match g.host_txns.get_mut(&txn) {
            Some(hr) if hr.result.is_none() && hr.completion_requested => {
                hr.result = Some(GuestCompletion {
                    payload,
                    failed: !status.is_success(),
                });
                drop(g);
                self.txn_cv.notify_all();
            }
            _ => {
                drop(g);
                link.note_unknown_completion();
            }
        }
    }

    /// The guest packet that a ring item carries.
    fn guest_packet(&self, link: &Arc<Link>, item: Item) -> Option<GuestPacket> {
        let Item::Data {
            txn,
            completion_requested,
            aux,
            payload,
            slot,
        } = item
        else {
            return None;
        };
        let (external, pfns) = if aux & AUX_EXTERNAL != 0 {
            self.lock()
                .g2h_side
                .remove(&txn)
                .map_or((None, None), |(_, e, p)| (e, p))
        } else {
            (None, None)
        };
        Some(GuestPacket {
            payload,
            flags: aux & AUX_FLAGS,
            synchronous: aux & AUX_SYNCHRONOUS != 0,
            external,
            pfns,
            id: txn,
            channel: link.channel,
            needs_completion: completion_requested,
            world: self.me.clone(),
            held: Some((Arc::downgrade(link), slot)),
        })
    }

    /// Offers a packet read out of the ring; returns the consume flags to react to.
    fn offer_item(&self, link: &Arc<Link>, item: Item) -> (bool, bool) {
        match self.guest_packet(link, item) {
            Some(gp) => self.offer_to_host(gp),
            None => (false, false),
        }
    }

    /// Frees a guest packet's ring space; returns the consume flags.
    fn consume(gp: &GuestPacket) -> (Option<Arc<Link>>, (bool, bool)) {
        match &gp.held {
            Some((link, slot)) => match link.upgrade() {
                Some(l) => {
                    let flags = l.consume(*slot);
                    (Some(l), flags)
                }
                None => (None, (false, false)),
            },
            None => (None, (false, false)),
        }
    }

    /// The delivery thread body: pull a packet, call ProcessPacket at the channel's IRQL,
    /// account, and call ProcessingComplete at the end of a batch.
    fn delivery_loop(self: Arc<Self>) {
        loop {
            let mut g = self.lock();
            let job = loop {
                if g.shutdown {
                    return;
                }
                if let Some(job) = self.take_delivery(&mut g) {
                    break job;
                }
                g = Self::wait(&self.work_cv, g);
            };
            drop(g);
            self.run_delivery(job);
        }
    }

    fn take_delivery(&self, st: &mut State) -> Option<Delivery> {
        let mut chosen = None;
        for c in st.channels.values_mut() {
            if c.queue_on
                && !c.queue_failed
                && !c.quota_blocked
                && c.has_queued()
                && c.outstanding >= c.quota
            {
                // §6.1.4: the queue stops until a packet completes.
                c.quota_blocked = true;
            }
            if c.can_deliver() && !c.next_is_inline() {
                chosen = Some(c.serial);
                break;
            }
        }
        self.take_delivery_from(st, chosen)
    }

    /// Takes the next packet of channel `serial` for delivery (the caller checked it may).
    fn take_delivery_from(&self, st: &mut State, serial: Option<u64>) -> Option<Delivery> {
        if st.next_token > MAX_SERIAL {
            return None;
        }
        let token = st.next_token;
        let c = st.channels.get_mut(&serial?)?;
        let p = c.deferred.pop_front().or_else(|| c.to_guest.pop_front())?;
        c.outstanding += 1;
        c.delivering += 1;
        c.batch += 1;
        let irql = if p.deferred {
            Irql::Passive
        } else {
            c.delivery_irql()
        };
        let flags = if p.external.is_some() {
            sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
        } else {
            0
        };
        let job = Delivery {
            channel: c.serial,
            ch: c.raw(),
            token,
            callback: c.process_packet,
            view: AlignedBuf::from_slice(&p.payload),
            flags,
            irql,
        };
        if p.deferred {
            st.stats.redelivered_at_passive += 1;
        } else {
            st.stats.delivered_to_guest += 1;
        }
        st.next_token += 1;
        st.incoming.insert(
            token,
            IncomingRec {
                channel: job.channel,
                packet: p,
                mdl: None,
            },
        );
        Some(job)
    }

    fn run_delivery(&self, mut job: Delivery) {
        let tok: sys::VMBPACKETCOMPLETION =
            ptr::without_provenance_mut(handle::encode(Kind::Completion, self.id, job.token));
        let (buf, len) = (job.view.as_mut_ptr(), job.view.len_u32());
        if let Some(f) = job.callback {
            let deliver = || {
                in_callback(
                    self.frame(job.channel, FrameKind::Packet(job.token)),
                    job.irql,
                    || {
                        // SAFETY: `f` is the channel's registered EvtVmbChannelProcessPacket;
                        // it gets the channel handle, a fresh completion token, and `buf`,
                        // which is readable for `len` bytes until this call returns (the
                        // model poisons it afterwards and keeps it allocated in the
                        // quarantine).
                        unsafe { f(job.ch, tok, buf, len, job.flags) }
                    },
                );
            };
            match self.cfg.delivery {
                DeliveryMode::PrivateCopy => deliver(),
                DeliveryMode::InPlaceHostile => {
                    let words = job.view.shared_words();
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let stop_ref = &stop;
                    std::thread::scope(|s| {
                        // SAFETY: the view's words stay allocated until the scope ends (the
                        // view is poisoned and quarantined only after it); meanwhile only
                        // the guest reads them, through the raw pointer it was given.
                        s.spawn(move || {
                            let _model = crate::irql::ModelCode::enter();
                            // SAFETY: see above.
                            unsafe { crate::raw::scribble(words, stop_ref) }
                        });
                        deliver();
                        stop.store(true, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
        job.view.poison();
        let mut g = self.lock();
        let st = &mut *g;
        st.quarantine.push_back(job.view);
        if st.quarantine.len() > QUARANTINE {
            st.quarantine.pop_front();
        }
        let mut batch_end = None;
        if let Some(c) = st.channels.get_mut(&job.channel) {
            c.delivering = c.delivering.saturating_sub(1);
            if c.delivering == 0 && c.batch > 0 && !c.can_deliver() {
                let n = std::mem::take(&mut c.batch);
                if let Some(pc) = c.processing_complete {
                    c.delivering += 1;
                    batch_end = Some((pc, n, c.delivery_irql()));
                }
            }
        }
        drop(g);
        self.state_cv.notify_all();
        if let Some((pc, n, irql)) = batch_end {
            in_callback(
                self.frame(job.channel, FrameKind::ProcessingComplete),
                irql,
                || {
                    // SAFETY: the channel's registered EvtVmbChannelProcessingComplete, called
                    // with its channel handle after the last ProcessPacket of the batch.
                    unsafe { pc(job.ch, n) }
                },
            );
            let mut g = self.lock();
            g.stats.processing_complete_calls += 1;
            if let Some(c) = g.channels.get_mut(&job.channel) {
                c.delivering = c.delivering.saturating_sub(1);
            }
            drop(g);
            self.state_cv.notify_all();
        }
    }

    /// Complete, Fail or Defer of an incoming packet.
    pub(crate) fn retire_incoming(
        &self,
        how: Retire,
        token: u64,
        h: usize,
        response: &GuestBytes<'_>,
    ) {
        let func = how.function();
        if how == Retire::Defer {
            let inline = crate::irql::innermost_frame()
                .is_some_and(|f| f.world == self.id && f.kind == FrameKind::Packet(token));
            let known = self.lock().incoming.contains_key(&token);
            if known && !inline {
                self.record(
                    V::DeferOutsideCallback,
                    func,
                    h,
                    "DeferToPassive is only valid inline from the ProcessPacket call that \
                     delivered this packet; the packet is still outstanding",
                );
                return;
            }
        }
        let mut g = self.lock();
        let st = &mut *g;
        let Some(rec) = st.incoming.remove(&token) else {
            if st.force_retired.remove(&token) {
                return; // already reported as UncompletedAtDisable
            }
            if token != 0 && token < st.next_token {
                st.record(
                    V::IncomingCompletedTwice,
                    func,
                    h,
                    "the packet was already completed, failed or deferred",
                );
            } else {
                st.record(
                    V::UnknownIncomingToken,
                    func,
                    h,
                    "no such packet was delivered",
                );
            }
            return;
        };
        let Some(c) = st.channels.get_mut(&rec.channel) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        let unblocked = std::mem::replace(&mut c.quota_blocked, false);
        let chan_h = c.handle;
        let max = usize::try_from(c.max_packet).unwrap_or(usize::MAX);
        let link = c.link.clone();
        if rec.mdl.is_some() {
            mdl::retire_incoming(self.id, token);
        }
        let mut wake_workers = unblocked;
        // The host asked for a completion: it travels as a completion packet (below, after
        // the lock), carrying this status; otherwise only the host's bookkeeping sees it.
        let mut wire: Option<(Arc<Link>, u64, NtStatus)> = None;
        let requested = st
            .host_txns
            .get(&rec.packet.txn)
            .is_some_and(|hr| hr.completion_requested);
        match how {
            Retire::Complete => {
                if response.is_null_with_length() {
                    st.record(
                        V::InvalidParameter,
                        func,
                        h,
                        format!("NULL completion buffer with length {}", response.len()),
                    );
                } else if response.len() > max {
                    st.record(
                        V::CompletionTooLarge,
                        func,
                        h,
                        format!(
                            "completion of {} bytes exceeds the maximum packet size {max} of \
                             channel {chan_h:#x}; truncated",
                            response.len()
                        ),
                    );
                }
                st.stats.completed_by_guest += 1;
                if let (true, Some(l)) = (requested, &link) {
                    wire = Some((Arc::clone(l), rec.packet.txn, NtStatus::STATUS_SUCCESS));
                } else if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    let payload = if hr.completion_requested {
                        response.to_vec(max)
                    } else {
                        Vec::new()
                    };
                    hr.result = Some(GuestCompletion {
                        payload,
                        failed: false,
                    });
                }
            }
            Retire::Fail => {
                st.stats.failed_by_guest += 1;
                c.queue_failed = true; // §6.1.2: Fail stops the queue until the channel closes.
                if let (true, Some(l)) = (requested, &link) {
                    wire = Some((Arc::clone(l), rec.packet.txn, NtStatus::STATUS_UNSUCCESSFUL));
                } else if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    hr.result = Some(GuestCompletion {
                        payload: Vec::new(),
                        failed: true,
                    });
                }
            }
            Retire::Defer => {
                st.stats.deferred_by_guest += 1;
                let mut p = rec.packet;
                p.deferred = true;
                c.deferred.push_back(p);
                wake_workers = true;
            }
        }
        drop(g);
        if let Some((link, txn, status)) = wire {
            let body = if status.is_success() {
                let all = response.as_slice();
                all.get(..max).unwrap_or(all)
            } else {
                &[]
            };
            let kind = OutgoingKind::Completion {
                transaction_id: wire_id(txn),
            };
            let aux = u32::from_le_bytes(status.0.to_le_bytes());
            if link.guest_write(kind, aux, body, true) == GuestWrite::Signal {
                self.host_isr(&link);
            }
            self.check_poisoned(&link);
        }
        self.txn_cv.notify_all();
        self.state_cv.notify_all();
        if wake_workers {
            self.work_cv.notify_all();
        }
    }

    pub(crate) fn external_data(
        &self,
        token: u64,
        h: usize,
        flags: u32,
    ) -> Result<usize, NtStatus> {
        const F: &str = "VmbChannelPacketGetExternalData";
        let mut g = self.lock();
        let st = &mut *g;
        let Some(rec) = st.incoming.get_mut(&token) else {
            let kind = if token != 0 && token < st.next_token {
                V::IncomingCompletedTwice
            } else {
                V::UnknownIncomingToken
            };
            st.record(kind, F, h, "the packet is not outstanding");
            return Err(NtStatus::STATUS_INVALID_PARAMETER_1);
        };
        if flags & !sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
            st.record(V::InvalidFlags, F, h, format!("flags {flags:#x}"));
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        let Some(bytes) = rec.packet.external.clone() else {
            st.record(
                V::NoExternalData,
                F,
                h,
                "the packet was delivered without VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA",
            );
            return Err(NtStatus::STATUS_INVALID_PARAMETER);
        };
        if let Some(m) = rec.mdl {
            return Ok(m);
        }
        let m = mdl::register(bytes, mdl::Owner::Incoming(self.id, token)).addr();
        rec.mdl = Some(m);
        Ok(m)
    }

    // ---- outgoing (guest -> host) ----------------------------------------------------------

    pub(crate) fn packet_allocate(&self, serial: u64, h: usize) -> usize {
        const F: &str = "VmbPacketAllocate";
        let mut g = self.lock();
        if g.channel(F, serial, h).is_none() {
            return 0;
        }
        if self.faults.take_allocation_failure() || g.next_packet > MAX_SERIAL {
            return 0;
        }
        let s = g.next_packet;
        g.next_packet += 1;
        let ph = handle::encode(Kind::Packet, self.id, s);
        g.packets.insert(
            PacketKey::Lib(s),
            PacketRec {
                channel: serial,
                handle: ph,
                in_flight: false,
                routine: None,
                pointer: 0,
            },
        );
        g.allocated += 1;
        ph
    }

    pub(crate) fn packet_initialize(
        &self,
        serial: u64,
        h: usize,
        addr: usize,
        bytes: u32,
    ) -> NtStatus {
        const F: &str = "VmbPacketInitialize";
        let mut g = self.lock();
        let Some(c) = g.channel(F, serial, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        let need = c.max_packet.saturating_add(PACKET_OBJECT_OVERHEAD);
        if bytes < need {
            return NtStatus::STATUS_INVALID_PARAMETER_3;
        }
        if let Some(old) = g.packets.get(&PacketKey::Caller(addr))
            && old.in_flight
        {
            g.record(
                V::PacketInFlight,
                F,
                addr,
                "re-initializing packet memory whose send has not completed",
            );
            return NtStatus::STATUS_INVALID_PARAMETER_2;
        }
        g.packets.insert(
            PacketKey::Caller(addr),
            PacketRec {
                channel: serial,
                handle: addr,
                in_flight: false,
                routine: None,
                pointer: 0,
            },
        );
        handle::register_caller_packet(addr, self.id);
        NtStatus::STATUS_SUCCESS
    }

    pub(crate) fn packet_free(&self, key: PacketKey, h: usize) {
        const F: &str = "VmbPacketFree";
        let mut g = self.lock();
        let st = &mut *g;
        let Some(p) = st.packets.get(&key) else {
            match key {
                PacketKey::Lib(s) if s != 0 && s < st.next_packet => st.record(
                    V::PacketFreedTwice,
                    F,
                    h,
                    "the packet was already freed (by VmbPacketFree, by the default completion \
                     routine, or by VmbChannelCleanup)",
                ),
                _ => st.record(V::InvalidHandle, F, h, "no such packet"),
            }
            return;
        };
        if p.in_flight {
            st.record(
                V::PacketFreedInFlight,
                F,
                h,
                "the packet's send has not completed; the packet was not freed",
            );
            return;
        }
        if matches!(key, PacketKey::Caller(_)) {
            st.record(
                V::FreeOfInitializedPacket,
                F,
                h,
                "packets from VmbPacketInitialize live in caller memory and must not be freed",
            );
            return;
        }
        st.free_packet(key);
    }

    pub(crate) fn packet_set_routine(
        &self,
        key: PacketKey,
        h: usize,
        routine: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE,
    ) {
        const F: &str = "VmbPacketSetCompletionRoutine";
        let mut g = self.lock();
        let Some(p) = g.packet(F, key, h) else {
            return;
        };
        if p.in_flight {
            g.record(
                V::PacketInFlight,
                F,
                h,
                "completion routine changed while a send is in flight; ignored",
            );
            return;
        }
        p.routine = routine;
    }

    pub(crate) fn packet_pointer(
        &self,
        func: &'static str,
        key: PacketKey,
        h: usize,
        set: Option<usize>,
    ) -> usize {
        let mut g = self.lock();
        let Some(p) = g.packet(func, key, h) else {
            return 0;
        };
        match set {
            Some(v) => {
                p.pointer = v;
                v
            }
            None => p.pointer,
        }
    }

    pub(crate) fn packet_channel(&self, key: PacketKey, h: usize) -> usize {
        const F: &str = "VmbPacketGetChannel";
        let mut g = self.lock();
        let Some(p) = g.packet(F, key, h) else {
            return 0;
        };
        let serial = p.channel;
        if g.is_channel_serial_live(serial) {
            handle::encode(Kind::Channel, self.id, serial)
        } else {
            g.record(
                V::ChannelUseAfterCleanup,
                F,
                h,
                "the packet's channel was cleaned up",
            );
            0
        }
    }

    /// `VmbPacketSend`, `...WithExternalMdl`, `...WithExternalPfns`.
    /// The calling thread is inside `EvtChannelSuspend` of channel `serial`: told to stop
    /// sending, and sending anyway.
    fn sending_from_suspend(&self, serial: u64) -> bool {
        crate::irql::channel_callback_frame(self.id, serial)
            .is_some_and(|f| f.kind == FrameKind::State(StateCb::Suspend))
    }

    pub(crate) fn packet_send(
        &self,
        func: &'static str,
        key: PacketKey,
        h: usize,
        buf: &GuestBytes<'_>,
        external: External,
        flags: u32,
    ) -> NtStatus {
        // SendWithExternalMdl/Pfns need WAIT_FOR_COMPLETION; VmbPacketSend's optional MDL does
        // not (§7.5).
        let external_needs_wait = func != "VmbPacketSend";
        let wait = flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let mut g = self.lock();
        let st = &mut *g;
        let Some(p) = st.packet(func, key, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        let serial = p.channel;
        let (in_flight, routine) = (p.in_flight, p.routine);
        let Some(c) = st.channel(func, serial, h) else {
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        };
        let max = c.max_packet;
        let ring_max = max_payload(Channel::ring_bytes(c.ring_pages.1));
        let (may_send, phase, immediate) = (
            c.may_send() && !self.sending_from_suspend(serial),
            c.phase,
            c.phase.delivers_to_host(),
        );
        if flags & !sys::VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            st.record(
                V::InvalidFlags,
                func,
                h,
                format!("flags {flags:#x} outside VMBUS_CHANNEL_FORMAT_FLAGS"),
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if !wait && external_needs_wait {
            st.record(
                V::ExternalDataWithoutWait,
                func,
                h,
                "external data requires VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            st.record(
                V::SendTooLarge,
                func,
                h,
                format!("{} bytes > maximum packet size {max}", buf.len()),
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.is_null_with_length() {
            st.record(
                V::InvalidParameter,
                func,
                h,
                "NULL buffer with a non-zero length",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.len() > ring_max {
            // [inf] A packet that can never fit the outgoing ring cannot be sent.
            return NtStatus::STATUS_INVALID_BUFFER_SIZE;
        }
        if matches!(key, PacketKey::Caller(_)) && routine.is_none() {
            st.record(
                V::SendWithoutCompletionRoutine,
                func,
                h,
                "a packet from VmbPacketInitialize needs VmbPacketSetCompletionRoutine first",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if in_flight {
            st.record(
                V::PacketInFlight,
                func,
                h,
                "the packet is already in flight",
            );
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        if !may_send {
            st.record(
                V::SendOnClosedChannel,
                func,
                h,
                format!("channel is {phase:?} (after EvtChannelSuspend or disabled)"),
            );
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        if flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0
            && current_irql() != Irql::Passive
        {
            st.record(
                V::PassiveOnlyAtDispatch,
                func,
                h,
                "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER needs PASSIVE_LEVEL (pageable buffer)",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        let (ext_bytes, pfns) = match external {
            External::None => (None, None),
            External::Pfns(v) => (None, Some(v)),
            External::Mdl {
                mdl: m,
                offset,
                len,
            } => {
                let Some(all) = mdl::bytes(ptr::without_provenance_mut(m)) else {
                    st.record(
                        V::InvalidHandle,
                        func,
                        m,
                        "external MDL is not a valid model MDL",
                    );
                    return NtStatus::STATUS_INVALID_PARAMETER;
                };
                let off = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = if len == 0 {
                    Some(all.len())
                } else {
                    off.checked_add(usize::try_from(len).unwrap_or(usize::MAX))
                };
                match end.and_then(|e| all.get(off..e)) {
                    Some(b) => (Some(b.to_vec()), None),
                    None => return NtStatus::STATUS_INVALID_PARAMETER,
                }
            }
        };
        if let Some(status) = self.faults.take_send_failure() {
            if self.faults.runs_routine_of_failed_sends() {
                // A KMCL that also completes the refused packet through its routine, before
                // the send returns (FaultPlan::run_routine_of_failed_sends): the reference
                // infers it does not (§7.5 [inf]), and a guest must be right either way.
                drop(g);
                self.run_completion(serial, h, routine, status, &[]);
            }
            return status;
        }
        let txn = st.next_txn;
        st.next_txn += 1;
        let gp = GuestPacket {
            payload: buf.to_vec(usize::MAX),
            flags,
            synchronous: false,
            external: ext_bytes,
            pfns,
            id: txn,
            channel: serial,
            needs_completion: wait,
            world: self.me.clone(),
            held: None,
        };
        if let Some(p) = st.packets.get_mut(&key) {
            p.in_flight = true;
        }
        st.in_flight += 1;
        if wait {
            st.out_txns.insert(
                txn,
                OutTxn {
                    channel: serial,
                    what: OutWhat::Packet(key),
                    completing: false,
                },
            );
        }
        let gp = st.now_or_at_open(serial, gp, immediate);
        drop(g);
        if let Some(gp) = gp {
            self.deliver_to_host(gp, true);
        }
        if !wait {
            // [inf] Without WAIT_FOR_COMPLETION the routine runs as soon as the packet is
            // queued: inline, before VmbPacketSend returns.
            self.finish_without_wait(serial, key);
        }
        NtStatus::STATUS_SUCCESS
    }

    fn finish_without_wait(&self, serial: u64, key: PacketKey) {
        let mut g = self.lock();
        let Some(p) = g.packets.get_mut(&key) else {
            return;
        };
        p.in_flight = false;
        let (h, routine) = (p.handle, p.routine);
        g.in_flight = g.in_flight.saturating_sub(1);
        if let Some(c) = g.channels.get_mut(&serial) {
            c.routines_running += 1;
        }
        drop(g);
        self.run_completion(serial, h, routine, NtStatus::STATUS_SUCCESS, &[]);
        let mut g = self.lock();
        if let Some(c) = g.channels.get_mut(&serial) {
            c.routines_running = c.routines_running.saturating_sub(1);
        }
        if routine.is_none() {
            g.free_packet(key);
        }
        drop(g);
        self.state_cv.notify_all();
    }

    /// Runs a packet's completion routine at DISPATCH on this thread (nothing for the default
    /// routine, whose freeing the caller does).
    fn run_completion(
        &self,
        serial: u64,
        h: usize,
        routine: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE,
        status: NtStatus,
        response: &[u8],
    ) {
        let Some(f) = routine else {
            return;
        };
        let mut buf = AlignedBuf::from_slice(response);
        let (data, len) = if response.is_empty() {
            (ptr::null_mut(), 0)
        } else {
            (buf.as_mut_ptr(), buf.len_u32())
        };
        let pkt: sys::VMBPACKET = ptr::without_provenance_mut(h);
        let pkt = if handle::decode(h).is_none() {
            // Caller memory: hand back the very pointer the guest gave us.
            ptr::with_exposed_provenance_mut(h)
        } else {
            pkt
        };
        in_callback(
            self.frame(serial, FrameKind::Completion),
            Irql::Dispatch,
            || {
                // SAFETY: `f` is the completion routine the guest set on this packet; it runs
                // exactly once per send, with the packet handle, the transaction status and a
                // response buffer readable for `len` bytes during the call, at DISPATCH, with no
                // model lock held.
                unsafe { f(pkt, status.0, data, len) }
            },
        );
        buf.poison();
    }

    /// The guest's KMCL sends `gp` through the guest→host ring (queued on the channel when the
    /// ring is full and `queue`). When this write signals the host, the host's interrupt
    /// handler runs here and this thread offers its own packet to the host (so the responder
    /// answers inline, before the send returns); otherwise whoever drains the ring offers it.
    fn deliver_to_host(&self, gp: GuestPacket, queue: bool) -> GuestWrite {
        let Some(link) = self.link_of(gp.channel) else {
            return GuestWrite::Closed; // the channel closed while the packet was on its way
        };
        let id = gp.id;
        let mut aux = gp.flags & AUX_FLAGS;
        if gp.synchronous {
            aux |= AUX_SYNCHRONOUS;
        }
        if gp.external.is_some() || gp.pfns.is_some() {
            aux |= AUX_EXTERNAL;
            self.lock()
                .g2h_side
                .insert(id, (gp.channel, gp.external, gp.pfns));
        }
        let kind = OutgoingKind::InBand {
            transaction_id: wire_id(id),
            completion_requested: gp.needs_completion,
        };
        link.expect(Dir::G2h, id);
        let wrote = link.guest_write(kind, aux, &gp.payload, queue);
        if wrote == GuestWrite::Signal {
            self.host_isr(&link);
        }
        self.check_poisoned(&link);
        // Ours if the host's handler handed it to us (it did, if we signalled).
        let mine = if link.unexpect(Dir::G2h, id) {
            None
        } else {
            link.take(Dir::G2h, id, HANDOFF_WAIT)
        };
        if let Some(item) = mine {
            let flags = self.offer_item(&link, item);
            self.after_consume(&link, flags);
        }
        if !matches!(
            wrote,
            GuestWrite::Signal | GuestWrite::NoSignal | GuestWrite::Queued
        ) {
            self.lock().g2h_side.remove(&id);
        }
        wrote
    }

    /// The host takes a guest packet: the responder answers it (the packet is consumed) or it
    /// waits for `recv` (still holding its ring space). Returns the consume flags.
    fn offer_to_host(&self, mut gp: GuestPacket) -> (bool, bool) {
        let responder = relock(&self.responder).clone();
        let has_responder = responder.is_some();
        let answer = responder.and_then(|r| match catch_unwind(AssertUnwindSafe(|| r(&gp))) {
            Ok(a) => a,
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.record(
                    V::ResponderPanicked,
                    "Host::set_responder",
                    0,
                    format!("the responder panicked on transaction {}: {msg}", gp.id),
                );
                None
            }
        });
        let mut g = self.lock();
        g.stats.received_from_guest += 1;
        let (id, wait) = (gp.id, gp.needs_completion);
        match answer {
            Some((status, response)) => {
                drop(g);
                let (_, flags) = Self::consume(&gp);
                if wait {
                    self.host_complete(id, status, &response);
                }
                flags
            }
            None => {
                let cancelled = wait && !g.out_txns.contains_key(&id);
                let open = g.channels.get(&gp.channel).is_some_and(|c| {
                    c.phase.delivers_to_host() && g.open_channel == Some(c.serial)
                });
                if cancelled || !open {
                    // Cancelled meanwhile (channel closed or request timed out), or the
                    // channel closed while the packet was on its way.
                    drop(g);
                    return Self::consume(&gp).1;
                }
                // A host with a responder has looked at the packet: it keeps its own copy for
                // later and frees the ring space. A host without one has not read it yet: the
                // packet keeps its ring space until `recv` takes it.
                let flags = if has_responder {
                    drop(g); // ring locks are taken before the world's, never after
                    let flags = Self::consume(&gp).1;
                    gp.held = None;
                    g = self.lock();
                    flags
                } else {
                    (false, false)
                };
                g.to_host.push_back(gp);
                drop(g);
                self.recv_cv.notify_one();
                flags
            }
        }
    }

    pub(crate) fn recv(&self, timeout: Duration) -> Option<GuestPacket> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut g = self.lock();
            if let Some(gp) = g.to_host.pop_front() {
                drop(g);
                if let (Some(link), flags) = Self::consume(&gp) {
                    self.after_consume(&link, flags);
                }
                return Some(gp);
            }
            if g.shutdown {
                return None;
            }
            let link = self.open_link(&g);
            drop(g);
            // Poll: a guest packet is not signalled while the host holds unreceived ones.
            if let Some(link) = link {
                self.host_isr(&link);
            }
            let g = self.lock();
            if !g.to_host.is_empty() {
                continue;
            }
            let slice = Instant::now() + HOST_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let (g, _) = Self::wait_until(&self.recv_cv, g, Some(until));
            let empty = g.to_host.is_empty();
            drop(g);
            if empty && deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }

    /// The host completes guest transaction `id`: a completion packet through the
    /// host→guest ring, then (on this thread, once the guest's handler read it out) the
    /// guest-side effect: the packet's completion routine or the synchronous requester's wake.
    pub(crate) fn host_complete(&self, id: u64, status: NtStatus, response: &[u8]) {
        let link = {
            let mut g = self.lock();
            let channel = match g.out_txns.get_mut(&id) {
                // Unknown, already completed, cancelled or timed out, or a completion of it
                // already crossing the ring: ignored, never seen by the guest, and never
                // written to the ring (a hostile host may complete twice, concurrently, or make
                // ids up, 0 included).
                None
                | Some(OutTxn {
                    completing: true, ..
                }) => {
                    g.stats.ignored_host_completions += 1;
                    return;
                }
                Some(t) => {
                    t.completing = true;
                    t.channel
                }
            };
            g.channels.get(&channel).and_then(|c| c.link.clone())
        };
        let Some(link) = link else {
            self.finish_host_completion(id, status, response);
            return;
        };
        link.expect(Dir::H2g, id);
        let kind = OutgoingKind::Completion {
            transaction_id: wire_id(id),
        };
        let aux = u32::from_le_bytes(status.0.to_le_bytes());
        match link.host_write(kind, aux, response, || self.guest_isr(&link)) {
            Ok(signal) => {
                if signal {
                    self.guest_isr(&link);
                }
                if let Some(Item::Completion {
                    status, payload, ..
                }) = link.take(Dir::H2g, id, HANDOFF_WAIT)
                {
                    self.finish_host_completion(id, status, &payload);
                }
            }
            Err(HostWriteError::TooLarge) => {
                // Larger than the ring: KMCL would never see it; hand it over as is.
                link.unexpect(Dir::H2g, id);
                self.finish_host_completion(id, status, response);
            }
            Err(HostWriteError::Closed) => {
                link.unexpect(Dir::H2g, id);
            }
        }
    }

    /// The host completes guest transaction `id`.
    /// The guest side of a host completion: the routine runs here, or the synchronous
    /// requester wakes.
    fn finish_host_completion(&self, id: u64, status: NtStatus, response: &[u8]) {
        let mut g = self.lock();
        let st = &mut *g;
        let Some(t) = st.out_txns.remove(&id) else {
            // Unknown, already completed, cancelled or timed out: ignored, never seen by the
            // guest (a hostile host may complete twice or make ids up).
            st.stats.ignored_host_completions += 1;
            return;
        };
        st.stats.completed_by_host += 1;
        match t.what {
            OutWhat::Sync(slot) => {
                if let Some(s) = st.sync_slots.get_mut(&slot) {
                    *s = Some(SyncAnswer::Host(status, response.to_vec()));
                }
                drop(g);
                self.sync_cv.notify_all();
            }
            OutWhat::Packet(key) => {
                let Some(p) = st.packets.get_mut(&key) else {
                    return;
                };
                p.in_flight = false;
                let (h, routine) = (p.handle, p.routine);
                st.in_flight = st.in_flight.saturating_sub(1);
                if let Some(c) = st.channels.get_mut(&t.channel) {
                    c.routines_running += 1;
                }
                drop(g);
                self.run_completion(t.channel, h, routine, status, response);
                let mut g = self.lock();
                if let Some(c) = g.channels.get_mut(&t.channel) {
                    c.routines_running = c.routines_running.saturating_sub(1);
                }
                if routine.is_none() {
                    // The default completion routine frees the packet.
                    g.free_packet(key);
                }
                drop(g);
                self.state_cv.notify_all();
            }
        }
    }

    /// `VmbChannelSendSynchronousRequest` (§6.3).
    #[expect(clippy::too_many_arguments, reason = "mirrors the KMCL function")]
    pub(crate) fn sync_request(
        &self,
        serial: u64,
        h: usize,
        buf: &GuestBytes<'_>,
        external_mdl: usize,
        flags: u32,
        capacity: Option<u32>,
        timeout: Option<i64>,
    ) -> SyncOutcome {
        const F: &str = "VmbChannelSendSynchronousRequest";
        let fail = |status| SyncOutcome {
            status,
            response: None,
        };
        let wait = flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let no_wait_call = timeout == Some(0) && !wait;
        if !no_wait_call && !self.require_passive(F, h) {
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        if let Some(f) = crate::irql::channel_callback_frame(self.id, serial)
            && f.kind == FrameKind::State(StateCb::Started)
        {
            self.record(
                V::SyncRequestInStarted,
                F,
                h,
                "a synchronous request from EvtChannelStarted never returns on Windows (the \
                 incoming queue is not running yet); failed with STATUS_INVALID_DEVICE_STATE",
            );
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        if capacity.is_some_and(|c| c % 8 != 0) {
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        let mut g = self.lock();
        let st = &mut *g;
        let Some(c) = st.channel(F, serial, h) else {
            return fail(NtStatus::STATUS_INVALID_PARAMETER_1);
        };
        let (max, phase, may_send, immediate) = (
            c.max_packet,
            c.phase,
            c.may_send() && !self.sending_from_suspend(serial),
            c.phase.delivers_to_host(),
        );
        let ring_max = max_payload(Channel::ring_bytes(c.ring_pages.1));
        let link = c.link.clone();
        if flags & !sys::VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            st.record(V::InvalidFlags, F, h, format!("flags {flags:#x}"));
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if buf.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            st.record(
                V::SendTooLarge,
                F,
                h,
                format!("{} bytes > maximum packet size {max}", buf.len()),
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if buf.is_null_with_length() {
            st.record(
                V::InvalidParameter,
                F,
                h,
                "NULL buffer with a non-zero length",
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if phase == Phase::Closing || (st.rescind_pending && st.open_channel == Some(serial)) {
            return fail(NtStatus::STATUS_DEVICE_REMOVED);
        }
        if !may_send {
            st.record(
                V::SendOnClosedChannel,
                F,
                h,
                format!("channel is {phase:?}"),
            );
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let external = if external_mdl == 0 {
            None
        } else if let Some(b) = mdl::bytes(ptr::without_provenance_mut(external_mdl)) {
            Some(b.as_ref().clone())
        } else {
            st.record(
                V::InvalidHandle,
                F,
                external_mdl,
                "external MDL is not a valid model MDL",
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        };
        if buf.len() > ring_max {
            // [inf] A request that can never fit the outgoing ring cannot be sent.
            return fail(NtStatus::STATUS_INVALID_BUFFER_SIZE);
        }
        drop(g);
        // A request that must not wait fails when the ring has no room for it now.
        if timeout == Some(0) && link.as_ref().is_some_and(|l| !l.guest_has_room(buf.len())) {
            return fail(NtStatus::STATUS_BUFFER_OVERFLOW);
        }
        let payload = buf.to_vec(usize::MAX);
        let mut g = self.lock();
        let st = &mut *g;
        let txn = st.next_txn;
        st.next_txn += 1;
        st.stats.sync_requests += 1;
        if wait {
            st.sync_slots.insert(txn, None);
            st.out_txns.insert(
                txn,
                OutTxn {
                    channel: serial,
                    what: OutWhat::Sync(txn),
                    completing: false,
                },
            );
        }
        let gp = GuestPacket {
            payload,
            flags,
            synchronous: true,
            external,
            pfns: None,
            id: txn,
            channel: serial,
            needs_completion: wait,
            world: self.me.clone(),
            held: None,
        };
        let gp = st.now_or_at_open(serial, gp, immediate);
        drop(g);
        if let Some(gp) = gp {
            // A request that must not wait is not queued on the channel either.
            let queue = timeout != Some(0);
            if self.deliver_to_host(gp, queue) == GuestWrite::Full {
                let mut g = self.lock();
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_BUFFER_OVERFLOW);
            }
        }
        if !wait {
            // [inf] Without WAIT_FOR_COMPLETION the request is done once it is queued.
            return SyncOutcome {
                status: NtStatus::STATUS_SUCCESS,
                response: Some(Vec::new()),
            };
        }
        let deadline = timeout.map(timeout_deadline);
        let mut g = self.lock();
        loop {
            if let Some(Some(_)) = g.sync_slots.get(&txn) {
                return match g.sync_slots.remove(&txn).flatten() {
                    Some(SyncAnswer::Host(status, response)) => SyncOutcome {
                        status,
                        response: Some(response),
                    },
                    _ => fail(NtStatus::STATUS_DEVICE_REMOVED),
                };
            }
            if g.shutdown {
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_DEVICE_REMOVED);
            }
            let (ng, expired) = Self::wait_until(&self.sync_cv, g, deadline);
            g = ng;
            if expired && matches!(g.sync_slots.get(&txn), Some(None)) {
                // KeWaitForSingleObject timed out: the request is cancelled.
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_CANCELLED);
            }
        }
    }

    // ---- GPADLs ------------------------------------------------------------------------------

    pub(crate) fn gpadl_create(
        &self,
        func: &'static str,
        serial: u64,
        h: usize,
        flags: u32,
        bytes: Result<Vec<u8>, NtStatus>,
    ) -> Result<u32, NtStatus> {
        if !self.require_passive(func, h) {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let mut g = self.lock();
        let c = g
            .channel(func, serial, h)
            .ok_or(NtStatus::STATUS_INVALID_PARAMETER_1)?;
        let phase = c.phase;
        if flags & !sys::VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        let bytes = bytes?;
        if !phase.is_open() {
            g.record(
                V::GpadlOnClosedChannel,
                func,
                h,
                format!("channel is {phase:?}; create GPADLs from EvtChannelOpened on"),
            );
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let id = g.next_gpadl;
        if id == u32::MAX {
            return Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES);
        }
        g.next_gpadl += 1;
        g.gpadls.insert(
            id,
            Gpadl {
                channel: serial,
                bytes,
                leak_reported: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn gpadl_delete(&self, serial: u64, h: usize, id: u32) {
        const F: &str = "VmbChannelDeleteGpadl";
        if !self.require_passive(F, h) {
            return;
        }
        let mut g = self.lock();
        if g.channel(F, serial, h).is_none() {
            return;
        }
        match g.gpadls.get(&id) {
            Some(gp) if gp.channel == serial => {
                g.gpadls.remove(&id);
                g.deleted_gpadls.insert(id);
            }
            _ if g.deleted_gpadls.contains(&id) => {
                g.record(
                    V::GpadlDeletedTwice,
                    F,
                    h,
                    format!("GPADL {id} was already deleted"),
                );
            }
            _ => {
                g.record(
                    V::UnknownGpadl,
                    F,
                    h,
                    format!("no GPADL {id} on this channel"),
                );
            }
        }
    }

    pub(crate) fn gpadl_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.lock().gpadls.get(&id).map(|g| g.bytes.clone())
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
