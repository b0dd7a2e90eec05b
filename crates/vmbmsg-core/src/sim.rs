//! The in-process simulation (not on Windows): the real driver [`Core`] against `kmcl-model`,
//! with a host peer that speaks the vmbmsg protocol and can misbehave on request.
//!
//! This is what the integration tests and `vmbctl --sim` drive: [`Simulation::start`] brings
//! the channel up, the simulated host opens it and negotiates, and [`Simulation::ioctl`] sends
//! IOCTLs exactly as the WDF shell would deliver them.
//!
//! ```
//! use std::time::Duration;
//! use vmbmsg_core::sim::{SimConfig, Simulation};
//! use vmbmsg_proto::ioctl::{ChannelState, IOCTL_VMBMSG_PING, PingOut, read_output};
//!
//! let sim = Simulation::start(SimConfig::default()).expect("the host opens the channel");
//! assert_eq!(sim.core().state(), ChannelState::READY);
//! let ping = sim.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>());
//! let done = ping.wait(Duration::from_secs(5)).expect("the host answers");
//! assert!(done.status.is_success());
//! let out: PingOut = read_output(&done.output).expect("a PingOut");
//! assert_eq!(out.host_status.get(), 0);
//! ```

extern crate std;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use kmcl_model::{GpadlError, GuestPacket, Host, HostSendError, HostTxn, ModelConfig, OpenError};
use vmbmsg_proto::wire::{
    GuestBody, HostMessage, MessageKind, PROTOCOL_V1, PROTOCOL_V1_1, Reply, choose_version,
    parse_guest_message,
};

use crate::{CancelToken, Core, CoreConfig, IoRequest, Library, NtStatus, ParentDevice, Platform};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a completed request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The status the driver completed it with.
    pub status: NtStatus,
    /// The first `information` bytes of the output buffer.
    pub output: Vec<u8>,
}

#[derive(Debug, Default)]
struct Slot {
    result: Mutex<Option<Completed>>,
    done: Condvar,
    cancel: Mutex<CancelState>,
}

/// What the I/O manager knows of a request's cancellation: the IRP's `Cancel` flag and the
/// cancel routine that `WdfRequestMarkCancelableEx` registers.
#[derive(Debug, Default)]
enum CancelState {
    /// Not cancellable: the driver is working on it, it is parked (the parked queue cancels
    /// it), or it is done.
    #[default]
    NotCancelable,
    /// Cancellable while it waits for the host: cancelling it calls the token.
    Cancelable(CancelToken<SimRequest>),
    /// Its caller cancelled it: either the token was taken to cancel it, or it was not
    /// cancellable then and a later [`IoRequest::mark_cancelable`] fails with
    /// `STATUS_CANCELLED` (as `WdfRequestMarkCancelableEx` does for a cancelled IRP).
    Cancelled,
}

/// An IOCTL request as the simulation delivers it: input bytes, an output buffer of a chosen
/// size, and a completion slot that a [`Pending`] waits on.
#[derive(Debug)]
pub struct SimRequest {
    id: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    slot: Arc<Slot>,
}

impl IoRequest for SimRequest {
    fn input(&self) -> &[u8] {
        &self.input
    }

    fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }

    fn complete(self, status: NtStatus, information: usize) {
        let mut output = self.output;
        output.truncate(information);
        *lock(&self.slot.result) = Some(Completed { status, output });
        self.slot.done.notify_all();
    }

    fn mark_cancelable(&mut self, token: CancelToken<Self>) -> Result<(), NtStatus> {
        let mut state = lock(&self.slot.cancel);
        if matches!(*state, CancelState::Cancelled) {
            // Dropping the token is all: the core completes the request.
            return Err(NtStatus::STATUS_CANCELLED);
        }
        *state = CancelState::Cancelable(token);
        Ok(())
    }

    fn unmark_cancelable(&mut self) -> bool {
        let mut state = lock(&self.slot.cancel);
        match *state {
            // `Pending::cancel` took the token and calls it (or has called it already).
            CancelState::Cancelled => false,
            // The token, if any, is dropped: no cancellation will happen.
            _ => {
                *state = CancelState::NotCancelable;
                true
            }
        }
    }
}

/// The caller's side of a [`SimRequest`]: wait for its completion or cancel it.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    slot: Arc<Slot>,
    platform: SimPlatform,
}

impl Pending {
    /// Waits up to `timeout` for the request to complete.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> Option<Completed> {
        let guard = lock(&self.slot.result);
        let (guard, _) = self
            .slot
            .done
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }

    /// The completion, if it already happened.
    #[must_use]
    pub fn try_get(&self) -> Option<Completed> {
        lock(&self.slot.result).clone()
    }

    /// Cancels the request as the I/O manager does on `CancelIoEx`: a parked RECV is taken out
    /// of the parked queue, a PING or SEND waiting for the host has its cancel routine called
    /// ([`CancelToken::cancel`]); either completes with `STATUS_CANCELLED`. Returns whether it
    /// was cancelled that way. Otherwise (the driver is still working on it, or it has
    /// completed) the cancellation is only remembered, like the IRP's `Cancel` flag: the
    /// driver's later attempt to make it cancellable fails with `STATUS_CANCELLED`.
    pub fn cancel(&self) -> bool {
        if self.platform.cancel(self.id) {
            return true;
        }
        let token = {
            let mut state = lock(&self.slot.cancel);
            match core::mem::replace(&mut *state, CancelState::Cancelled) {
                CancelState::Cancelable(token) => Some(token),
                CancelState::NotCancelable | CancelState::Cancelled => None,
            }
        };
        // Called without the state lock: the core's `unmark_cancelable` takes it under the
        // core's own lock, which `cancel` takes.
        match token {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Default)]
struct Parking {
    parked: Mutex<VecDeque<SimRequest>>,
    next_id: std::sync::atomic::AtomicU64,
    /// The simulation's restart work item: queued by `channel_closed_by_host`, run by the
    /// simulation's work-item thread (`Simulation::work_items`).
    restart: Mutex<WorkItem>,
    restart_cv: std::sync::Condvar,
}

/// A work item's state, as `WDFWORKITEM` has it: queued once however often it is enqueued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WorkItem {
    #[default]
    Idle,
    Queued,
    /// The device is going away: nothing runs any more.
    Stopped,
}

/// The simulation's [`Platform`]: a FIFO of parked RECV requests that can be cancelled, like a
/// manual `WDFQUEUE`.
#[derive(Debug, Clone, Default)]
pub struct SimPlatform {
    inner: Arc<Parking>,
}

impl SimPlatform {
    /// A request with `input` and an output buffer of `output_len` bytes.
    #[must_use]
    pub fn request(&self, input: &[u8], output_len: usize) -> (SimRequest, Pending) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        let request = SimRequest {
            id,
            input: input.to_vec(),
            output: vec![0; output_len],
            slot: slot.clone(),
        };
        let pending = Pending {
            id,
            slot,
            platform: self.clone(),
        };
        (request, pending)
    }

    fn cancel(&self, id: u64) -> bool {
        let request = {
            let mut parked = lock(&self.inner.parked);
            let index = parked.iter().position(|r| r.id == id);
            index.and_then(|i| parked.remove(i))
        };
        match request {
            Some(r) => {
                r.complete(NtStatus::STATUS_CANCELLED, 0);
                true
            }
            None => false,
        }
    }
}

impl Platform for SimPlatform {
    type Request = SimRequest;

    fn park_recv(&self, request: SimRequest) -> Result<(), (SimRequest, NtStatus)> {
        lock(&self.inner.parked).push_back(request);
        Ok(())
    }

    fn next_parked_recv(&self) -> Option<SimRequest> {
        lock(&self.inner.parked).pop_front()
    }

    fn parked_recv_count(&self) -> usize {
        lock(&self.inner.parked).len()
    }

    fn channel_closed_by_host(&self) {
        let mut item = lock(&self.inner.restart);
        if *item == WorkItem::Idle {
            *item = WorkItem::Queued;
            self.inner.restart_cv.notify_all();
        }
    }
}

impl SimPlatform {
    /// Waits until the restart work item is queued (`true`, and it is taken) or stopped.
    fn next_restart(&self) -> bool {
        let mut item = lock(&self.inner.restart);
        loop {
            match *item {
                WorkItem::Queued => {
                    *item = WorkItem::Idle;
                    return true;
                }
                WorkItem::Stopped => return false,
                WorkItem::Idle => {
                    item = self
                        .inner
                        .restart_cv
                        .wait(item)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    /// Stops the restart work item for good (the device's teardown began).
    fn stop_work_items(&self) {
        *lock(&self.inner.restart) = WorkItem::Stopped;
        self.inner.restart_cv.notify_all();
    }
}

/// How the simulated host answers NEGOTIATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// Choose the newest version in the guest's range among `SimConfig::host_versions`.
    Accept,
    /// Reject with `STATUS_REVISION_MISMATCH`.
    Reject,
    /// Never answer (the guest times out).
    Silent,
    /// Answer with bytes that are not a NEGOTIATE reply.
    Garbage,
}

/// How the simulated host answers PING and SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Answer at once.
    Normal,
    /// Answer after this delay, from a host thread.
    Slow(Duration),
    /// Never answer (the transaction stays in flight until the channel closes).
    Silent,
    /// Answer at once with bytes that are not a valid reply.
    Malformed,
}

/// The simulated host's behaviour; can be changed while the simulation runs
/// ([`Simulation::set_behavior`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// NEGOTIATE answers.
    pub negotiation: Negotiation,
    /// Versions the host speaks.
    pub host_versions: Vec<u32>,
    /// PING and SEND answers.
    pub behavior: Behavior,
    /// The status the host completes SEND with.
    pub send_status: NtStatus,
    /// Delivery threads of the model (simulated DPCs).
    pub delivery_threads: usize,
    /// The driver core's tunables.
    pub core: CoreConfig,
    /// How the driver reaches KMCL: the queried client interface table (what the driver does
    /// by default) or the linked functions (its `linked-kmcl` feature).
    pub kmcl: KmclPath,
    /// Whether the host accepts the guest's BULK_OFFER (1.1); refused, the session runs
    /// without a bulk area.
    pub accept_bulk: bool,
}

/// The guest's bulk area as the simulated host knows it from an accepted BULK_OFFER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkArea {
    /// The GPADL handle.
    pub gpadl: u32,
    /// Bytes of the guest's half (offset 0).
    pub guest_half: u32,
    /// Bytes of the host's half (offset `guest_half`).
    pub host_half: u32,
}

/// What the simulated host remembers between packets: the session's bulk area and the last
/// SEND payloads it received (ring or bulk), for tests to check.
#[derive(Debug, Default)]
pub struct HostSide {
    bulk: Mutex<Option<BulkArea>>,
    sends: Mutex<VecDeque<Vec<u8>>>,
}

/// How many SEND payloads [`HostSide`] keeps.
const SENDS_KEPT: usize = 16;

impl HostSide {
    /// The bulk area of the session, if the host accepted one.
    #[must_use]
    pub fn bulk(&self) -> Option<BulkArea> {
        *lock(&self.bulk)
    }

    /// The last SEND payloads received (at most 16), oldest first.
    #[must_use]
    pub fn sends(&self) -> Vec<Vec<u8>> {
        lock(&self.sends).iter().cloned().collect()
    }

    fn record_send(&self, payload: Vec<u8>) {
        let mut sends = lock(&self.sends);
        if sends.len() == SENDS_KEPT {
            sends.pop_front();
        }
        sends.push_back(payload);
    }
}

/// Why the simulated host could not run a bulk echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkEchoError {
    /// No bulk area was offered and accepted in this session.
    NoBulkArea,
    /// The payload does not fit the host's half at that offset (or is empty or above 64 KiB).
    OutOfRange,
    /// The host could not reach the GPADL (deleted).
    Gpadl(GpadlError),
    /// The model refused the send.
    Send(HostSendError),
}

/// How a simulated driver reaches KMCL ([`kmcl::Library`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KmclPath {
    /// `KMCL_CLIENT_INTERFACE_V1`, queried from the model's bus driver, referenced and released
    /// as the WDF shell does.
    #[default]
    Table,
    /// The plain functions (on Windows, `vmbkmcl.lib`; here, the model's exports).
    Linked,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            negotiation: Negotiation::Accept,
            host_versions: vec![PROTOCOL_V1, PROTOCOL_V1_1],
            behavior: Behavior::Normal,
            send_status: NtStatus::STATUS_SUCCESS,
            delivery_threads: 1,
            core: CoreConfig::default(),
            kmcl: KmclPath::Table,
            accept_bulk: true,
        }
    }
}

/// The answer the simulated host gives to one guest packet under `config`, with the session's
/// memory `side` (`None`: answer later or never): what [`Simulation`]'s host responder sends,
/// for harnesses that drive a [`Core`] themselves.
#[must_use]
pub fn answer(config: &SimConfig, side: &HostSide, packet: &GuestPacket) -> Option<Vec<u8>> {
    let message = match parse_guest_message(&packet.payload) {
        Ok(m) => m,
        Err(e) => {
            let mut buf = vec![0; vmbmsg_proto::wire::STATUS_REPLY_SIZE];
            let n = Reply::for_malformed(&packet.payload, e.status())
                .write(&mut buf)
                .unwrap_or(0);
            buf.truncate(n);
            return Some(buf);
        }
    };
    let reply = match message.body {
        GuestBody::Negotiate {
            min_version,
            max_version,
        } => match config.negotiation {
            Negotiation::Accept => {
                // A new session: the old one's bulk area is gone with its channel.
                *lock(&side.bulk) = None;
                match choose_version(min_version, max_version, &config.host_versions) {
                    Some(v) => Reply::negotiate_accept(message.id, v),
                    None => Reply::negotiate_reject(message.id),
                }
            }
            Negotiation::Reject => Reply::negotiate_reject(message.id),
            Negotiation::Silent => return None,
            Negotiation::Garbage => return Some(b"not a negotiate reply".to_vec()),
        },
        GuestBody::BulkOffer {
            gpadl,
            guest_to_host_len,
            host_to_guest_len,
        } => {
            let total = u64::from(guest_to_host_len) + u64::from(host_to_guest_len);
            // The GPADL exists and is as long as the offer says (the parser made both halves
            // non-empty, so `total >= 2`).
            let mut last = [0u8; 1];
            let mapped = usize::try_from(total - 1)
                .is_ok_and(|end| packet.gpadl_read(gpadl, end, &mut last).is_ok());
            let status = if config.accept_bulk && mapped {
                *lock(&side.bulk) = Some(BulkArea {
                    gpadl,
                    guest_half: guest_to_host_len,
                    host_half: host_to_guest_len,
                });
                NtStatus::STATUS_SUCCESS
            } else {
                NtStatus::STATUS_NOT_SUPPORTED
            };
            Reply::status_only(MessageKind::BULK_OFFER, message.version, message.id, status)
        }
        GuestBody::Send { .. } | GuestBody::Ping { .. } | GuestBody::SendBulk { .. } => {
            match config.behavior {
                Behavior::Slow(_) | Behavior::Silent => return None,
                Behavior::Malformed => return Some(vec![0xA5; 40]),
                Behavior::Normal => match message.body {
                    GuestBody::Ping { nonce } => Reply::ping(message.version, message.id, nonce),
                    GuestBody::Send { payload } => {
                        side.record_send(payload.to_vec());
                        Reply::status_only(
                            MessageKind::SEND,
                            message.version,
                            message.id,
                            config.send_status,
                        )
                    }
                    GuestBody::SendBulk { offset, len } => {
                        let status = match read_guest_half(side, packet, offset, len) {
                            Some(payload) => {
                                side.record_send(payload);
                                config.send_status
                            }
                            None => NtStatus::STATUS_DATA_ERROR,
                        };
                        Reply::status_only(
                            MessageKind::SEND_BULK,
                            message.version,
                            message.id,
                            status,
                        )
                    }
                    GuestBody::Negotiate { .. } | GuestBody::BulkOffer { .. } => return None,
                },
            }
        }
    };
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).unwrap_or(0);
    buf.truncate(n);
    Some(buf)
}

/// The `len` bytes at `offset` of the guest's half of the session's bulk area, as a host reads
/// them; `None` when there is no area or the range is not inside the guest's half.
fn read_guest_half(
    side: &HostSide,
    packet: &GuestPacket,
    offset: u32,
    len: u32,
) -> Option<Vec<u8>> {
    let area = side.bulk()?;
    if u64::from(offset) + u64::from(len) > u64::from(area.guest_half) {
        return None;
    }
    let mut payload = vec![0; usize::try_from(len).ok()?];
    packet
        .gpadl_read(area.gpadl, usize::try_from(offset).ok()?, &mut payload)
        .ok()?;
    Some(payload)
}

/// The driver core and a simulated host, connected.
pub struct Simulation {
    host: Arc<Host>,
    core: Arc<Core<SimPlatform>>,
    /// Runs the platform's restart work item ([`Core::restart_channel`]) as a WDF work item
    /// would: on its own PASSIVE thread, after the host closed the channel.
    work_items: Option<JoinHandle<()>>,
    /// The device's KMCL, as the WDF shell holds it: released (with the model's removal check)
    /// when the simulation is dropped.
    library: Option<Library>,
    config: Arc<Mutex<SimConfig>>,
    side: Arc<HostSide>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl core::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Simulation")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// Why a simulation could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The core could not be created or its channel brought up.
    Core(NtStatus),
    /// The host could not open the channel.
    Open(OpenError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Core(s) => write!(f, "the driver core did not come up: {s}"),
            Self::Open(e) => write!(f, "the host did not open the channel: {e}"),
        }
    }
}

impl Simulation {
    /// Creates the core and the host, brings the channel up, and lets the host open it (which
    /// runs negotiation). Whether negotiation succeeded is in [`Core::state`].
    ///
    /// # Errors
    /// [`StartError`] when the core or the open fails.
    pub fn start(config: SimConfig) -> Result<Self, StartError> {
        let sim = Self::new(config)?;
        sim.host.open().map_err(StartError::Open)?;
        Ok(sim)
    }

    /// Creates the core and the host and brings the channel up, without opening it.
    ///
    /// # Errors
    /// [`StartError::Core`] when the core cannot be created, the client interface cannot be
    /// queried, or the channel brought up.
    pub fn new(config: SimConfig) -> Result<Self, StartError> {
        let host = Arc::new(kmcl_model::connected_with(ModelConfig {
            delivery_threads: config.delivery_threads.max(1),
            interface_type: interface_type(),
            ..ModelConfig::default()
        }));
        let core = Arc::new(
            Core::with_config(SimPlatform::default(), config.core.clone())
                .map_err(StartError::Core)?,
        );
        let work_items = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("sim-work-item".into())
                .spawn(move || {
                    while core.platform().next_restart() {
                        // A failure leaves the device DOWN, as the WDF shell's work item does;
                        // GET_INFO shows it.
                        let _ = core.restart_channel();
                    }
                })
                .ok()
        };
        let config = Arc::new(Mutex::new(config));
        let side = Arc::new(HostSide::default());
        {
            let (config, side) = (config.clone(), side.clone());
            host.set_responder(move |packet| {
                let config = lock(&config).clone();
                answer(&config, &side, packet).map(|r| (NtStatus::STATUS_SUCCESS, r))
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (host, config, side, stop) =
                (host.clone(), config.clone(), side.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sim-host".into())
                .spawn(move || slow_host(&host, &config, &side, &stop))
                .ok()
        };
        let path = lock(&config).kmcl;
        let library = library_of(&host, path).map_err(StartError::Core)?;
        let parent = parent_of(&host);
        // On an error `sim` drops: the channel (if any) comes down, then the library.
        let sim = Self {
            host,
            core,
            work_items,
            library: Some(library),
            config,
            side,
            stop,
            worker,
        };
        if let Some(library) = &sim.library {
            sim.core
                .channel_up(library, parent)
                .map_err(StartError::Core)?;
        }
        Ok(sim)
    }

    /// The device goes away as the WDF shell takes it away: the channel comes down, the
    /// device's KMCL reference is released (its cleanup callback), and the model's bus driver
    /// sees the removal (recording a reference still held, and any later KMCL call, as a
    /// violation). Dropping the simulation does this too.
    pub fn remove_device(&mut self) {
        self.core.platform().stop_work_items();
        if let Some(t) = self.work_items.take() {
            let _ = t.join();
        }
        self.core.channel_down();
        drop(self.library.take());
        self.host.remove_device();
    }

    /// Takes the channel down and brings it up again, as the WDF shell does across a power
    /// transition (`EvtDeviceSelfManagedIoSuspend` / `...Restart`).
    ///
    /// # Errors
    /// The core's status from `channel_up`.
    pub fn restart(&self) -> Result<(), NtStatus> {
        self.core.channel_down();
        match &self.library {
            Some(library) => self.core.channel_up(library, parent_of(&self.host)),
            None => Err(NtStatus::STATUS_INVALID_DEVICE_STATE),
        }
    }

    /// The driver core.
    #[must_use]
    pub fn core(&self) -> &Core<SimPlatform> {
        &self.core
    }

    /// The model's host endpoint (raw packets, rescind, violations, statistics).
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Changes how the host behaves from now on.
    pub fn set_behavior(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut lock(&self.config));
    }

    /// Delivers an IOCTL to the core as the WDF shell would.
    #[must_use]
    pub fn ioctl(&self, code: u32, input: &[u8], output_len: usize) -> Pending {
        let (request, pending) = self.core.platform().request(input, output_len);
        self.core.handle_ioctl(code, request);
        pending
    }

    /// The host sends an ECHO and waits for the guest's completion payload.
    ///
    /// # Errors
    /// The model's refusal to send (channel not open).
    pub fn host_echo(&self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, HostSendError> {
        let txn = self.host_message(HostMessage::echo(self.version(), 0, payload))?;
        Ok(self.completion(txn, timeout))
    }

    /// The host sends a NOTIFY and waits for the guest's completion payload.
    ///
    /// # Errors
    /// The model's refusal to send (channel not open).
    pub fn host_notify(&self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, HostSendError> {
        let txn = self.host_message(HostMessage::notify(self.version(), 0, payload))?;
        Ok(self.completion(txn, timeout))
    }

    /// What the host remembers of the session: its bulk area, the SEND payloads received.
    #[must_use]
    pub fn host_side(&self) -> &HostSide {
        &self.side
    }

    /// The host echoes `payload` through the bulk area (1.1): writes it at `offset` of its half,
    /// sends ECHO_BULK and waits for the guest's completion. Returns the completion payload and
    /// the bytes of the range after it (the guest's echo).
    ///
    /// # Errors
    /// [`BulkEchoError`].
    pub fn host_echo_bulk(
        &self,
        offset: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>), BulkEchoError> {
        let area = self.side.bulk().ok_or(BulkEchoError::NoBulkArea)?;
        let len = u32::try_from(payload.len()).map_err(|_| BulkEchoError::OutOfRange)?;
        if len == 0
            || payload.len() > vmbmsg_proto::wire::MAX_BULK_PAYLOAD
            || u64::from(offset) + u64::from(len) > u64::from(area.host_half)
        {
            return Err(BulkEchoError::OutOfRange);
        }
        let at = usize::try_from(u64::from(area.guest_half) + u64::from(offset))
            .map_err(|_| BulkEchoError::OutOfRange)?;
        self.host
            .gpadl_write(area.gpadl, at, payload)
            .map_err(BulkEchoError::Gpadl)?;
        let txn = self
            .host_message(HostMessage::echo_bulk(self.version(), 0, offset, len))
            .map_err(BulkEchoError::Send)?;
        let completion = self.completion(txn, timeout);
        let mut echoed = vec![0; payload.len()];
        self.host
            .gpadl_read(area.gpadl, at, &mut echoed)
            .map_err(BulkEchoError::Gpadl)?;
        Ok((completion, echoed))
    }

    /// Sends a host message with completion requested.
    ///
    /// # Errors
    /// The model's refusal to send.
    pub fn host_message(&self, message: HostMessage<'_>) -> Result<HostTxn, HostSendError> {
        let mut buf = vec![0; message.encoded_len()];
        let n = message.write(&mut buf).unwrap_or(0);
        buf.truncate(n);
        self.host.send(&buf, true)
    }

    /// The guest's completion payload of `txn` (empty if none arrived in time).
    #[must_use]
    pub fn completion(&self, txn: HostTxn, timeout: Duration) -> Vec<u8> {
        self.host
            .wait_completion(txn, timeout)
            .map(|c| c.payload)
            .unwrap_or_default()
    }

    /// The negotiated version, or V1 when none (for building host messages).
    fn version(&self) -> u32 {
        match self.core.protocol_version() {
            0 => PROTOCOL_V1,
            v => v,
        }
    }
}

/// The driver's channel interface type ([`vmbmsg_proto::VMBMSG_INTERFACE_TYPE`]) as the
/// model's `GUID`, for a world whose offer the driver binds.
#[must_use]
pub fn interface_type() -> kmcl_model::kmcl_sys::GUID {
    let ty = vmbmsg_proto::VMBMSG_INTERFACE_TYPE;
    kmcl_model::kmcl_sys::GUID {
        Data1: ty.data1,
        Data2: ty.data2,
        Data3: ty.data3,
        Data4: ty.data4,
    }
}

/// The model's parent-device token for `host`.
#[expect(
    unsafe_code,
    reason = "the one unsafe call of the simulation: wrapping the model's device token"
)]
fn parent_of(host: &Host) -> ParentDevice {
    // SAFETY: `ParentDevice::from_raw` needs a device object valid for as long as any channel
    // allocated under it exists. The model's token is valid for the life of `host`, and every
    // `Simulation` takes its core's channel down (in `Drop`) before its `host` is dropped.
    unsafe { ParentDevice::from_raw(host.parent_device()) }
}

/// The device's KMCL for `host` by `path`: the client interface table queried as the WDF shell
/// does (`WdfFdoQueryForInterface` on its own device), or the linked functions.
#[expect(
    unsafe_code,
    reason = "the query hands kmcl a raw interface buffer, as WdfFdoQueryForInterface does"
)]
fn library_of(host: &Host, path: KmclPath) -> Result<Library, NtStatus> {
    match path {
        KmclPath::Table => {
            let query = |iface, size, version, ty: &_| {
                // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
                unsafe { host.query_interface(ty, iface, size, version) }
            };
            // SAFETY: see above: the model's query fills the whole table and takes one
            // reference for the caller, as a PnP query-interface does.
            unsafe { Library::query(query) }
        }
        KmclPath::Linked => Ok(Library::linked()),
    }
}

/// Answers the packets the responder left for later: after the configured delay, or never.
fn slow_host(host: &Host, config: &Mutex<SimConfig>, side: &HostSide, stop: &AtomicBool) {
    let mut held = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let Some(packet) = host.recv(Duration::from_millis(20)) else {
            continue;
        };
        let now = lock(config).clone();
        match now.behavior {
            Behavior::Slow(delay) => {
                std::thread::sleep(delay);
                let normal = SimConfig {
                    behavior: Behavior::Normal,
                    negotiation: Negotiation::Accept,
                    ..now
                };
                match answer(&normal, side, &packet) {
                    Some(reply) => packet.complete(NtStatus::STATUS_SUCCESS, &reply),
                    None => held.push(packet),
                }
            }
            // Silent (or a silent NEGOTIATE): keep it in flight; the close cancels it.
            _ => held.push(packet),
        }
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        self.remove_device();
        self.stop.store(true, Ordering::Release);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
