//! The portable core of vmbmsg, a Hyper-V guest driver that exchanges messages with the host
//! over a VMBus channel.
//!
//! Everything of the driver except the KMDF shell (the `vmbmsg` package's `#[cfg(windows)]`
//! `wdf` module, which re-exports this crate) is here: portable `no_std` + `alloc` code that is
//! built and tested on Linux against `kmcl-model`:
//!
//! * [`Core`] is one device: it brings the channel up and down ([`Core::channel_up`],
//!   [`Core::channel_down`]), processes every host packet (`on_packet`, through
//!   [`kmcl::ChannelHandler`]) and serves the IOCTL interface ([`Core::handle_ioctl`]).
//! * [`Platform`] and [`IoRequest`] are what the core needs from its host environment: the WDF
//!   shell implements them with a manual `WDFQUEUE` and `WDFREQUEST`s; tests and `vmbctl --sim`
//!   implement them in memory.
//!
//! The shell only translates WDF types and calls these four entry points.
//!
//! # The packet path
//!
//! Every host packet is parsed ([`vmbmsg_proto::wire::parse_host_message`]), validated against
//! the session (negotiated, right version) and completed exactly once with a protocol reply:
//! ECHO with its payload, NOTIFY with a status after the payload went to a parked RECV request
//! or into the bounded notification queue, anything malformed or premature with an error status
//! (counted by reason). The ECHO path allocates nothing: replies are built in buffers reserved
//! when the core is created.
#![no_std]
// Off Windows only `sim` (one call) and `sync`'s spin lock use unsafe, each opted in and
// commented; the rest of the portable core has none.
#![cfg_attr(not(windows), deny(unsafe_code))]

extern crate alloc;

// Off Windows the simulation (`sim`) uses threads; the core itself only uses `core` and `alloc`.
#[cfg(not(windows))]
extern crate std;

pub mod bulk;
mod ioctl;
#[cfg(all(test, loom))]
mod loom_tests;
mod notify;
mod packet;
#[cfg(not(windows))]
pub mod sim;
mod stats;
pub mod sync;
mod try_arc;
mod waiting;

use alloc::vec::Vec;
use core::time::Duration;

use kmcl::{Channel, ChannelBuilder};
use vmbmsg_proto::ioctl::ChannelState;
use vmbmsg_proto::wire::MAX_MESSAGE;

pub use kmcl::{Library, NtStatus, ParentDevice};

use crate::notify::NotifyQueue;
use crate::packet::Handler;
use crate::stats::Stats;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::sync::{Rundown, RundownRef, SlotPool, SpinLock};
use crate::try_arc::TryArc;
use crate::waiting::{CancelWaiting, WaitingRequests};

pub use crate::waiting::CancelToken;

/// The driver's version, reported by GET_INFO.
pub const DRIVER_VERSION: (u16, u16, u16) = (0, 1, 0);

/// One IOCTL request as the core sees it (`METHOD_BUFFERED`).
///
/// With `METHOD_BUFFERED` the input and output are the same system buffer: read all of the
/// input before writing any output (the borrows of [`input`](Self::input) and
/// [`output`](Self::output) cannot overlap, which enforces it).
///
/// A PING or SEND request waits for the host's answer, possibly for ever, so the core makes it
/// cancellable while it waits ([`mark_cancelable`](Self::mark_cancelable)) and takes that back
/// before completing it with the answer ([`unmark_cancelable`](Self::unmark_cancelable)): the
/// `WdfRequestMarkCancelableEx` / `WdfRequestUnmarkCancelable` pair of KMDF. The request itself
/// stays with the core throughout; only the core completes it.
pub trait IoRequest: Sized + Send + 'static {
    /// The caller's input bytes.
    fn input(&self) -> &[u8];
    /// The caller's output buffer, to fill before completing.
    fn output(&mut self) -> &mut [u8];
    /// Completes the request with `status`, reporting `information` output bytes.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    fn complete(self, status: NtStatus, information: usize);

    /// Makes the request cancellable while it waits for the host.
    ///
    /// On success the platform keeps `token` until exactly one of these happens:
    /// * the request's caller cancels it: the platform calls [`CancelToken::cancel`], once, which
    ///   completes the request with `STATUS_CANCELLED` (never call it from this method or from
    ///   [`unmark_cancelable`](Self::unmark_cancelable): both run with the lock it takes);
    /// * [`unmark_cancelable`](Self::unmark_cancelable) returns `true`: the platform drops it.
    ///
    /// Called with the request already in the core's table of waiting requests and that
    /// table's lock held, so a cancellation on another processor waits for the lock and then
    /// finds the request. The platform never completes the request itself.
    ///
    /// # Errors
    /// The status the core then completes the request with; the platform has dropped `token`
    /// and will not call it. `STATUS_CANCELLED` when the caller cancelled the request before it
    /// could be made cancellable.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn mark_cancelable(&mut self, token: CancelToken<Self>) -> Result<(), NtStatus>;

    /// Makes a request that [`mark_cancelable`](Self::mark_cancelable) made cancellable
    /// non-cancellable again, before the core completes it with the host's answer.
    ///
    /// Returns `true` when no cancellation will happen: the platform has dropped the token, and
    /// the core completes the request. Returns `false` when a cancellation is under way: the
    /// platform has called or will call [`CancelToken::cancel`], which completes the request
    /// with `STATUS_CANCELLED`; the core leaves it where that call finds it.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn unmark_cancelable(&mut self) -> bool;
}

/// What the core needs from its environment besides requests.
pub trait Platform: Send + Sync + 'static {
    /// The platform's request type.
    type Request: IoRequest;

    /// Parks a RECV request until a notification arrives. The platform makes it cancellable
    /// while parked: a cancelled request is completed with `STATUS_CANCELLED` by the platform
    /// and never returned by [`next_parked_recv`](Self::next_parked_recv).
    ///
    /// # Errors
    /// The request back with a status when it cannot be parked.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn park_recv(&self, request: Self::Request) -> Result<(), (Self::Request, NtStatus)>;

    /// The oldest parked RECV request that has not been cancelled, now owned by the caller.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn next_parked_recv(&self) -> Option<Self::Request>;

    /// How many RECV requests are parked now (cancelled ones excluded once the platform has
    /// completed them).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn parked_recv_count(&self) -> usize;

    /// The host closed the channel (not the core's own `channel_down`): a guest channel the
    /// host closes ends disabled "and must be restarted using VmbChannelEnable"
    /// (vmbuskernelmodeclientlibapi.h). The platform arranges for
    /// [`Core::restart_channel`] to run soon, at PASSIVE_LEVEL and outside every channel
    /// callback (the WDF shell: a `WDFWORKITEM`), and never after the device's teardown began.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (from `EvtChannelClosed`); must not block.
    fn channel_closed_by_host(&self);
}

/// Tunables of a [`Core`]. The defaults are what the driver uses; [`memory`](Self::memory)
/// says what they cost in non-paged memory.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long `post_started` waits for the host's NEGOTIATE reply.
    pub negotiate_timeout: Duration,
    /// Notifications kept for user mode while no RECV request is parked (at most).
    pub notify_depth: usize,
    /// The bytes those notifications may take together: the queue's memory. A notification
    /// that does not fit is dropped and counted (the host gets `QUEUE_FULL_STATUS`).
    pub notify_bytes: usize,
    /// RECV requests that may be parked at once.
    pub max_parked_recv: usize,
    /// ECHO reply buffers (at most this many ECHO packets are answered concurrently; beyond
    /// that one is completed with `STATUS_INSUFFICIENT_RESOURCES`, never allocated for). More
    /// than [`concurrent_deliveries`](Self::concurrent_deliveries) is never used, and with that
    /// many an ECHO never finds the pool empty, however the host times its packets: a reply
    /// buffer is taken and given back inside the delivery of its ECHO, which holds one of the
    /// channel's `concurrent_deliveries` bounce buffers (tests/faults.rs,
    /// `back_to_back_echoes_never_find_the_reply_pool_empty`). Fewer saves memory at the price
    /// of failed ECHOs under concurrent load. At most [`MAX_REPLY_BUFFERS`] are allocated.
    pub reply_buffers: usize,
    /// Packets KMCL may deliver at once before one is handed back for PASSIVE_LEVEL
    /// (`kmcl::ChannelBuilder::concurrent_deliveries`): the channel's bounce buffers.
    pub concurrent_deliveries: u32,
    /// Ring size of each direction, in 4 KiB pages (KMCL allocates the rings).
    pub ring_pages: u32,
    /// Protocol 1.1's bulk area, the guest's half: this many slots of 64 KiB
    /// ([`MAX_BULK_PAYLOAD`](vmbmsg_proto::wire::MAX_BULK_PAYLOAD)), one per SEND above 16 KiB in
    /// flight (one more at once fails with `STATUS_DEVICE_BUSY`). At most 32; 0 turns 1.1 off
    /// (the driver proposes 1.0 only).
    pub bulk_send_slots: u32,
    /// The bulk area's host half, in bytes: room for the host's ECHO_BULK payloads in flight.
    /// 0 turns 1.1 off.
    pub bulk_host_bytes: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            negotiate_timeout: Duration::from_secs(5),
            notify_depth: 32,
            notify_bytes: 64 * 1024,
            max_parked_recv: 16,
            reply_buffers: 4,
            concurrent_deliveries: 4,
            ring_pages: 32,
            bulk_send_slots: 2,
            bulk_host_bytes: 64 * 1024,
        }
    }
}

/// What a device's memory is made of, in bytes of non-paged pool (docs/design.md, "Memory per
/// device").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The notification queue: its bytes and its per-message bookkeeping.
    pub notify_queue: usize,
    /// The ECHO reply buffers, one maximum-size message each.
    pub reply_buffers: usize,
    /// kmcl's bounce buffers, one maximum-size packet each (rounded up to cache lines).
    pub bounce_buffers: usize,
    /// The driver's share, everything above plus the fixed-size state.
    pub driver_total: usize,
    /// The two rings KMCL allocates for the channel (not the driver's allocation, but the
    /// device's cost).
    pub rings: usize,
    /// Protocol 1.1's bulk area, allocated when a session negotiates 1.1 (not in
    /// `driver_total`: a 1.0 host never costs it), kept across sessions once allocated.
    pub bulk_area: usize,
}

impl CoreConfig {
    /// The non-paged memory a device with this configuration holds while its channel is up.
    /// Nothing grows with traffic: the per-request table grows with concurrently waiting PING
    /// and SEND requests only, a few words each.
    #[must_use]
    pub fn memory(&self) -> Memory {
        let notify_queue = self
            .notify_bytes
            .saturating_add(self.notify_depth.saturating_mul(3 * size_of::<u64>()));
        let reply_buffers = self
            .reply_buffers
            .min(MAX_REPLY_BUFFERS)
            .saturating_mul(MAX_MESSAGE);
        let slot = MAX_MESSAGE.next_multiple_of(64);
        let bounce_buffers = usize::try_from(self.concurrent_deliveries)
            .unwrap_or(usize::MAX)
            .saturating_mul(slot);
        let fixed = 4096; // the shared state, the channel's context, the table headers
        let rings = usize::try_from(self.ring_pages)
            .unwrap_or(usize::MAX)
            .saturating_mul(2 * 4096);
        let bulk_area = self.bulk_halves().map_or(0, |(guest, host)| {
            usize::try_from(u64::from(guest) + u64::from(host))
                .unwrap_or(usize::MAX)
                .next_multiple_of(4096)
        });
        Memory {
            notify_queue,
            reply_buffers,
            bounce_buffers,
            driver_total: notify_queue
                .saturating_add(reply_buffers)
                .saturating_add(bounce_buffers)
                .saturating_add(fixed),
            rings,
            bulk_area,
        }
    }
}

/// One ECHO reply buffer of the pool.
pub(crate) type ReplyBuffer = alloc::boxed::Box<[u8; MAX_MESSAGE]>;

/// Most ECHO reply buffers a device has ([`CoreConfig::reply_buffers`] above it allocates this
/// many): a channel delivers at most `kmcl::MAX_BOUNCE_BUFFERS` packets at once, so more would
/// never be used.
pub const MAX_REPLY_BUFFERS: usize = kmcl::MAX_BOUNCE_BUFFERS as usize;

const _: () = assert!(MAX_REPLY_BUFFERS <= sync::MAX_SLOTS);

/// State shared by the channel callbacks and the IOCTL paths.
struct Shared<P: Platform> {
    platform: P,
    config: CoreConfig,
    stats: Stats,
    /// A [`ChannelState`] value.
    state: AtomicU32,
    /// A [`vmbmsg_proto::ioctl::StateReason`] value for the state (0 for most).
    state_reason: core::sync::atomic::AtomicU16,
    /// The session's negotiated protocol version while the state is READY, 0 otherwise: stored
    /// after the state becomes READY and cleared before it changes from READY
    /// ([`Shared::open_sends`], [`Shared::set_state`]), so a version seen non-zero means the
    /// channel is READY and one word answers the packet path's "ready, and at which version?".
    version: AtomicU32,
    notify: SpinLock<NotifyState>,
    /// The ECHO reply buffers, each `MAX_MESSAGE` bytes, lent out without a lock (one
    /// compare-exchange to take one, one `fetch_or` to give it back). Fixed-size boxes: the
    /// reply writer's bounds check folds against the array length.
    replies: SlotPool<ReplyBuffer>,
    /// PING and SEND requests waiting for the host's answer, cancellable meanwhile.
    waiting: WaitingRequests<P::Request>,
    /// Request ids and PING nonces; never 0.
    next_id: AtomicU64,
    /// The bulk area of a 1.1 session: set in `EvtChannelPostStarted` when the host accepted
    /// it, taken and deleted in `EvtChannelClosed` (module `bulk`).
    bulk: Rundown<bulk::Bulk>,
    /// Free slots of the bulk area's guest half. Not reset between sessions: a slot comes back
    /// when its SEND_BULK transaction ends, whichever session it was.
    bulk_slots: bulk::Slots,
    /// The bulk area's memory between sessions, reused by the next 1.1 session.
    bulk_spare: SpinLock<Option<kmcl::SharedBuffer>>,
    /// `channel_down` is tearing the channel down (so its Closed callback is ours, not the
    /// host's rescind).
    going_down: AtomicBool,
    /// [`Core::pause_channel`] paused the channel and [`Core::resume_channel`] has not resumed
    /// it (cleared when the channel goes down or is restarted).
    paused: AtomicBool,
    /// The session a pause interrupted (its version; 0: none), taken up again when the channel
    /// starts: the host never sees a guest's pause, so its session goes on.
    paused_version: AtomicU32,
    /// The host closed the channel and [`Core::restart_channel`] has not enabled it again yet.
    closed_by_host: AtomicBool,
    /// Who may send to the host: [`GATE_CLOSED`] plus the number of [`SendPermit`]s out
    /// (IOCTL paths between their READY check and the return of their `VmbPacketSend`).
    /// Opened when negotiation succeeds; `EvtChannelSuspend` closes it and waits for the
    /// permits to come back.
    send_gate: AtomicU32,
}

/// [`Shared::send_gate`]'s bit saying no new permit is granted; the other bits count them.
const GATE_CLOSED: u32 = 1 << 31;

/// Permission to send one packet to the host, from [`Shared::begin_send`]: while one exists,
/// `EvtChannelSuspend` does not return, so no `VmbPacketSend*` call can reach KMCL after
/// Suspend (reference/vmbus-kmcl-api.md §5 step 7: the driver must stop sending). A rundown
/// reference, like `EX_RUNDOWN_REF`: one word holds the closed bit and the count, so every
/// grant and the close are ordered by that word alone.
pub(crate) struct SendPermit<'a> {
    gate: &'a AtomicU32,
    /// The negotiated version the permit was granted under.
    pub(crate) version: u32,
}

impl Drop for SendPermit<'_> {
    fn drop(&mut self) {
        self.gate.fetch_sub(1, Ordering::Release);
    }
}

struct NotifyState {
    queue: NotifyQueue,
    next_seq: u64,
    dropped_since_last: u64,
}

impl<P: Platform> Shared<P> {
    fn state(&self) -> ChannelState {
        ChannelState::new(self.state.load(Ordering::Acquire))
    }

    /// Sets the state; any state but READY clears the session's version first.
    fn set_state(&self, state: ChannelState) {
        if state != ChannelState::READY {
            self.version.store(0, Ordering::Release);
        }
        self.state_reason.store(0, Ordering::Release);
        self.state.store(state.get(), Ordering::Release);
    }

    /// NEGOTIATION_FAILED, and why (GET_INFO's `state_reason`).
    fn negotiation_failed(&self, why: vmbmsg_proto::ioctl::StateReason) {
        self.set_state(ChannelState::NEGOTIATION_FAILED);
        self.state_reason.store(why.get(), Ordering::Release);
    }

    /// Sets `to` if the state is still `from`.
    fn replace_state(&self, from: ChannelState, to: ChannelState) {
        let _ =
            self.state
                .compare_exchange(from.get(), to.get(), Ordering::AcqRel, Ordering::Acquire);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The session's version when the channel is ready for data: one load, since the version
    /// is non-zero only while the state is READY (see [`Shared::version`]) and only a
    /// negotiated one, which is supported, is ever stored.
    #[inline]
    fn ready_session(&self) -> Option<vmbmsg_proto::wire::SessionVersion> {
        vmbmsg_proto::wire::SessionVersion::new(self.version.load(Ordering::Acquire))
    }

    /// [`ready_session`](Self::ready_session) as a number.
    fn ready_version(&self) -> Option<u32> {
        self.ready_session()
            .map(vmbmsg_proto::wire::SessionVersion::get)
    }

    /// A [`SendPermit`] when the gate is open and the channel READY, `None` otherwise.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    fn begin_send(&self) -> Option<SendPermit<'_>> {
        let mut current = self.send_gate.load(Ordering::Relaxed);
        loop {
            if current & GATE_CLOSED != 0 {
                return None;
            }
            match self.send_gate.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let mut permit = SendPermit {
            gate: &self.send_gate,
            version: 0,
        };
        permit.version = self.ready_version()?;
        Some(permit)
    }

    /// Negotiation succeeded: the channel is READY with `version`, and sends may start.
    fn open_sends(&self, version: u32) {
        self.set_state(ChannelState::READY);
        // After READY: a packet that sees the version sees the state READY too.
        self.version.store(version, Ordering::Release);
        self.send_gate.fetch_and(!GATE_CLOSED, Ordering::Release);
    }

    /// Closes the gate (and makes the state CLOSED), then waits until every granted
    /// [`SendPermit`] is dropped, that is until every send that passed its READY check has
    /// returned.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (from `EvtChannelSuspend` / `EvtChannelClosed`); the wait is as long as
    /// one `VmbPacketSend` call.
    fn stop_sends(&self) {
        self.set_state(ChannelState::CLOSED);
        self.send_gate.fetch_or(GATE_CLOSED, Ordering::AcqRel);
        // The kernel's way to wait for a rundown: a few spins, then sleeps that let the sender
        // run (on a one-vCPU guest it may be the thread this one preempted).
        sync::wait_until(|| self.send_gate.load(Ordering::Acquire) == GATE_CLOSED);
    }

    /// Completes every parked RECV request with `status`.
    fn finish_parked(&self, status: NtStatus) {
        loop {
            let next = {
                let _guard = self.notify.lock();
                self.platform.next_parked_recv()
            };
            match next {
                Some(request) => request.complete(status, 0),
                None => break,
            }
        }
    }
}

impl<P: Platform> CancelWaiting<P::Request> for Shared<P> {
    fn cancel_waiting(&self, key: u64) {
        // Counted when the packet's transaction ends (`ioctl::ping_answered` /
        // `send_answered`), which has not happened yet: the host may still answer.
        if let Some(request) = self.waiting.take_cancelled(key) {
            request.complete(NtStatus::STATUS_CANCELLED, 0);
        }
    }
}

/// One vmbmsg device.
pub struct Core<P: Platform> {
    shared: TryArc<Shared<P>>,
    channel: Rundown<Channel<Handler<P>>>,
    /// Serialises bringing the channel up, down and back after a host close (PnP callbacks and
    /// the platform's restart work item).
    lifecycle: sync::PassiveLock,
}

impl<P: Platform> core::fmt::Debug for Core<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Core<P> {
    /// A device with no channel yet, with the default [`CoreConfig`].
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the notification queue or the reply buffers cannot
    /// be allocated.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn new(platform: P) -> Result<Self, NtStatus> {
        Self::with_config(platform, CoreConfig::default())
    }

    /// A device with no channel yet.
    ///
    /// All the memory the packet path needs is allocated here, every allocation fallibly (the
    /// shared state too: [`TryArc`](crate::try_arc)).
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the notification queue, the reply buffers or the
    /// shared state cannot be allocated.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn with_config(platform: P, config: CoreConfig) -> Result<Self, NtStatus> {
        const NO_MEMORY: NtStatus = NtStatus::STATUS_INSUFFICIENT_RESOURCES;
        let queue =
            NotifyQueue::try_new(config.notify_depth, config.notify_bytes).ok_or(NO_MEMORY)?;
        let mut replies = SlotPool::new();
        for _ in 0..config.reply_buffers.min(MAX_REPLY_BUFFERS) {
            let mut buf = Vec::new();
            buf.try_reserve_exact(MAX_MESSAGE).map_err(|_| NO_MEMORY)?;
            buf.resize(MAX_MESSAGE, 0);
            let buf = ReplyBuffer::try_from(buf.into_boxed_slice()).map_err(|_| NO_MEMORY)?;
            replies.try_add(buf).map_err(|_| NO_MEMORY)?;
        }
        let bulk_slots = bulk::Slots::new(config.bulk_send_slots);
        let shared = TryArc::try_new(Shared {
            platform,
            config,
            stats: Stats::new(),
            state: AtomicU32::new(ChannelState::DOWN.get()),
            state_reason: core::sync::atomic::AtomicU16::new(0),
            version: AtomicU32::new(0),
            notify: SpinLock::new(NotifyState {
                queue,
                next_seq: 1,
                dropped_since_last: 0,
            }),
            replies,
            waiting: WaitingRequests::new(),
            next_id: AtomicU64::new(1),
            bulk: Rundown::new(),
            bulk_slots,
            bulk_spare: SpinLock::new(None),
            going_down: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            paused_version: AtomicU32::new(0),
            closed_by_host: AtomicBool::new(false),
            send_gate: AtomicU32::new(GATE_CLOSED),
        })
        .map_err(|_| NO_MEMORY)?;
        Ok(Self {
            shared,
            channel: Rundown::new(),
            lifecycle: sync::PassiveLock::new(),
        })
    }

    /// The platform this core was created with.
    pub fn platform(&self) -> &P {
        &self.shared.platform
    }

    /// The channel state, as GET_INFO reports it.
    #[must_use]
    pub fn state(&self) -> ChannelState {
        self.shared.state()
    }

    /// The negotiated protocol version, 0 if none.
    #[must_use]
    pub fn protocol_version(&self) -> u32 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// How many PING and SEND requests are waiting for the host's answer now (a request
    /// cancelled meanwhile is no longer counted, though its packet may still be in flight).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn waiting_requests(&self) -> usize {
        self.shared.waiting.len()
    }

    /// A copy of the statistics, as GET_STATS reports them.
    #[must_use]
    pub fn stats(&self) -> vmbmsg_proto::ioctl::StatsOut {
        self.shared.stats.snapshot()
    }

    /// Allocates, configures and enables the VMBus channel of the VMBus device under `parent`
    /// (this device's own offer: no lookup by GUID), through `library` (the device's KMCL; the
    /// channel keeps its own reference on it). Returns once the channel is enabled; it opens
    /// (and negotiates) when the host opens it.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` if the channel is already up; KMCL's status if the
    /// channel cannot be allocated, configured or enabled.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn channel_up(&self, library: &Library, parent: ParentDevice) -> Result<(), NtStatus> {
        let _lifecycle = self.lifecycle.lock();
        if self.channel.is_set() {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let handler = Handler::new(self.shared.clone());
        let mut builder = ChannelBuilder::new(library, parent, handler)?;
        builder.max_packet_size(packet::MAX_MESSAGE_U32)?;
        builder.concurrent_deliveries(self.shared.config.concurrent_deliveries)?;
        let pages = self.shared.config.ring_pages;
        builder.ring_pages(pages, pages)?;
        builder.friendly_name("vmbmsg")?;
        // No `target()` (VmbClientChannelInitSetTargetPnp): this device is the function driver
        // of one VMBus child PDO (one per offer, instance path VMBUS\{type}\{instance}), and
        // `parent` is its own FDO on that PDO's stack, so KMCL binds exactly that offer. With
        // TargetPnp, "KMCL will use PnP to find the vmbus PDO corresponding to the provided
        // interface", and without an instance "any instance with the provided type will be
        // accepted" (vmbuskernelmodeclientlibapi.h): two offers of our type could bind the
        // same device twice or cross over. The in-box vpci.sys, a function driver on its VMBus
        // child PDO, allocates its channel in device add without TargetPnp either (MSRC,
        // "Fuzzing para-virtualized devices in Hyper-V", 2019). tests/binding.rs.
        self.shared.set_state(ChannelState::WAITING_FOR_HOST);
        match builder.enable() {
            Ok(channel) => {
                self.channel.set(channel);
                Ok(())
            }
            Err((_builder, status)) => {
                self.shared.set_state(ChannelState::DOWN);
                Err(status)
            }
        }
    }

    /// The channel, if it is up, for one IOCTL's use: `channel_down` waits until the returned
    /// reference is dropped.
    fn channel(&self) -> Option<RundownRef<'_, Channel<Handler<P>>>> {
        self.channel.get()
    }

    /// Disables and cleans up the channel: blocks until every delivered packet is retired and
    /// every in-flight send has completed or been cancelled (the requests still waiting for
    /// them complete with `STATUS_CANCELLED`), then completes every parked RECV request with
    /// `STATUS_DEVICE_REMOVED` and drops every queued notification (counted as dropped).
    /// Calling it again, or without a channel, only does the last two steps.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn channel_down(&self) {
        let _lifecycle = self.lifecycle.lock();
        self.shared.going_down.store(true, Ordering::Release);
        self.shared.closed_by_host.store(false, Ordering::Release);
        self.shared.paused.store(false, Ordering::Release);
        self.shared.paused_version.store(0, Ordering::Release);
        // IOCTL paths hold a reference only around an allocate-and-send, which never blocks.
        if let Some(channel) = self.channel.take_and_wait() {
            drop(channel); // VmbChannelDisable + VmbChannelCleanup
        }
        self.shared.set_state(ChannelState::DOWN);
        self.shared.finish_parked(NtStatus::STATUS_DEVICE_REMOVED);
        let dropped = self.shared.notify.lock().queue.clear();
        self.shared
            .stats
            .notify_dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        self.shared.going_down.store(false, Ordering::Release);
    }

    /// Pauses the channel without closing it (`VmbChannelPause`): returns once Suspend has run
    /// and every delivered packet is retired. While paused, host packets wait in the ring,
    /// nothing is sent (PING and SEND fail with the not-ready status), parked RECV requests stay
    /// parked and queued notifications stay queued, and GET_INFO says PAUSED. The negotiated
    /// session survives the pause (the host does not see it): [`resume_channel`](Self::resume_channel)
    /// takes it up again before the first packet that waited is delivered, without a new
    /// NEGOTIATE. A channel that had not negotiated yet negotiates when it starts.
    /// For a driver that quiesces its channel for a while without giving it up (the host keeps
    /// its side open); the driver's PnP and power paths close the channel instead
    /// ([`channel_down`](Self::channel_down)), since a VM's channels do not survive hibernation.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not up or already paused.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, outside every channel callback (the pause waits for them).
    pub fn pause_channel(&self) -> Result<(), NtStatus> {
        let _lifecycle = self.lifecycle.lock();
        let channel = self
            .channel
            .get()
            .ok_or(NtStatus::STATUS_INVALID_DEVICE_STATE)?;
        if self.shared.paused.swap(true, Ordering::AcqRel) {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let session = self.shared.ready_version().unwrap_or(0);
        channel.handle().pause();
        // Suspend stopped the sends (CLOSED) if the channel was running; unless the host closed
        // it meanwhile, keep the session for the resume and say why nothing flows.
        if !self.shared.closed_by_host.load(Ordering::Acquire) {
            self.shared.paused_version.store(session, Ordering::Release);
            self.shared.set_state(ChannelState::PAUSED);
        }
        Ok(())
    }

    /// Resumes a channel [`pause_channel`](Self::pause_channel) paused (`VmbChannelStart`):
    /// Started takes the interrupted session up again (READY) before the incoming queue runs;
    /// a channel that was open but had not negotiated negotiates in PostStarted, as after an
    /// open; one that never opened waits for the host again (WAITING_FOR_HOST).
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not up or not paused.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, outside every channel callback.
    pub fn resume_channel(&self) -> Result<(), NtStatus> {
        let _lifecycle = self.lifecycle.lock();
        let channel = self
            .channel
            .get()
            .ok_or(NtStatus::STATUS_INVALID_DEVICE_STATE)?;
        if !self.shared.paused.swap(false, Ordering::AcqRel) {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        channel.handle().start();
        // Started resumed the session, or PostStarted negotiated, if the channel was open; one
        // that never opened runs nothing on Start and waits for the host again.
        self.shared
            .replace_state(ChannelState::PAUSED, ChannelState::WAITING_FOR_HOST);
        Ok(())
    }

    /// Enables the channel again after the host closed it ([`Platform::channel_closed_by_host`]),
    /// so that it opens, and negotiates, when the host opens it again: the state goes from
    /// CLOSED to WAITING_FOR_HOST. A rescinded channel is enabled too and simply waits (the
    /// device is removed, or the offer comes back). Does nothing unless the host closed the
    /// channel and `channel_down` has not run since.
    ///
    /// # Errors
    /// KMCL's status if the channel cannot be enabled again; the channel is then cleaned up
    /// and the state is DOWN until the next start.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, outside every channel callback (it disables the channel, which waits for
    /// them).
    pub fn restart_channel(&self) -> Result<(), NtStatus> {
        let _lifecycle = self.lifecycle.lock();
        if !self.shared.closed_by_host.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // Enabled again below: running, whether or not it was paused when the host closed it,
        // and with a new session.
        self.shared.paused.store(false, Ordering::Release);
        self.shared.paused_version.store(0, Ordering::Release);
        let Some(channel) = self.channel.take_and_wait() else {
            return Ok(());
        };
        // The host's close left the channel disabled: VmbChannelDisable has nothing left to
        // wait for, and the kmcl types want the disabled state spelled out.
        let disabled = channel.disable();
        match disabled.enable() {
            Ok(channel) => {
                self.shared.set_state(ChannelState::WAITING_FOR_HOST);
                self.channel.set(channel);
                Ok(())
            }
            Err((disabled, status)) => {
                self.shared.set_state(ChannelState::DOWN);
                drop(disabled); // VmbChannelCleanup
                Err(status)
            }
        }
    }

    /// Serves one IOCTL: validates `code` and the buffers and either completes `request` or
    /// keeps it (PING, SEND, RECV) until the host answers or a notification arrives, or its
    /// caller cancels it (`STATUS_CANCELLED`).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn handle_ioctl(&self, code: u32, request: P::Request) {
        ioctl::handle(self, code, request);
    }
}

impl<P: Platform> Drop for Core<P> {
    fn drop(&mut self) {
        self.channel_down();
    }
}

#[cfg(all(test, not(loom)))]
mod memory_tests {
    use super::{CoreConfig, MAX_MESSAGE};

    /// The budget docs/design.md states for the default configuration ("Memory per device"):
    /// before, 32 maximum-size notification slots and 16 reply buffers took about 768 KiB of
    /// non-paged pool per device, allocated at device add.
    #[test]
    fn the_default_device_holds_under_208_kib_of_its_own_non_paged_memory() {
        let m = CoreConfig::default().memory();
        assert_eq!(m.notify_queue, 64 * 1024 + 32 * 24);
        assert_eq!(m.reply_buffers, 4 * MAX_MESSAGE);
        assert_eq!(m.bounce_buffers, 4 * MAX_MESSAGE.next_multiple_of(64));
        assert!(m.driver_total < 208 * 1024, "{m:?}");
        assert_eq!(m.rings, 256 * 1024);
    }
}

// The simulation's platform (`sim`) exists off Windows only.
#[cfg(all(test, not(loom), not(windows)))]
mod session_tests {
    use super::{ChannelState, Core, CoreConfig, MAX_MESSAGE, MAX_REPLY_BUFFERS};
    use crate::sim::SimPlatform;
    use vmbmsg_proto::ioctl::StateReason;
    use vmbmsg_proto::wire::{PROTOCOL_V1, PROTOCOL_V1_1};

    fn core() -> Core<SimPlatform> {
        Core::with_config(SimPlatform::default(), CoreConfig::default()).expect("core")
    }

    /// The packet path asks one word, the version, whether the session is READY: a version
    /// must be visible exactly while the state is READY, whichever way the state leaves it.
    #[test]
    fn a_session_version_is_seen_exactly_while_ready() {
        let core = core();
        let shared = &core.shared;
        assert_eq!(shared.ready_session(), None, "a new device has no session");
        let others = [
            ChannelState::DOWN,
            ChannelState::WAITING_FOR_HOST,
            ChannelState::NEGOTIATING,
            ChannelState::NEGOTIATION_FAILED,
            ChannelState::CLOSED,
            ChannelState::PAUSED,
        ];
        for version in [PROTOCOL_V1, PROTOCOL_V1_1] {
            for next in others {
                shared.open_sends(version);
                assert_eq!(shared.state(), ChannelState::READY);
                assert_eq!(shared.ready_session().map(|v| v.get()), Some(version));
                assert_eq!(shared.ready_version(), Some(version));
                assert_eq!(core.protocol_version(), version);

                shared.set_state(next);
                assert_eq!(shared.ready_session(), None, "READY -> {next:?}");
                assert_eq!(core.protocol_version(), 0, "READY -> {next:?}");
            }
            shared.open_sends(version);
            shared.negotiation_failed(StateReason::REJECTED);
            assert_eq!(shared.ready_session(), None, "READY -> NEGOTIATION_FAILED");
            shared.open_sends(version);
            shared.stop_sends();
            assert_eq!(shared.ready_session(), None, "stop_sends");
        }
    }

    /// More reply buffers than a channel can ever use at once are not allocated: the pool holds
    /// at most `MAX_REPLY_BUFFERS`, and the memory figure says so.
    #[test]
    fn reply_buffers_above_the_maximum_allocate_the_maximum() {
        let config = CoreConfig {
            reply_buffers: MAX_REPLY_BUFFERS + 10,
            ..CoreConfig::default()
        };
        assert_eq!(
            config.memory().reply_buffers,
            MAX_REPLY_BUFFERS * MAX_MESSAGE
        );
        let core = Core::with_config(SimPlatform::default(), config).expect("core");
        assert_eq!(core.shared.replies.len(), MAX_REPLY_BUFFERS);
    }
}
