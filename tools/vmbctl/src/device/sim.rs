//! The simulation backend: the real driver core in-process against kmcl-model
//! (`vmbmsg::sim::Simulation`), with a host that speaks the protocol and misbehaves on request.
//!
//! IOCTLs go to `Core::handle_ioctl` exactly as the WDF shell delivers them. The tool also
//! plays the host ([`HostPeer`]): NOTIFY packets for `recv` and `smoke`, ECHO packets for the
//! host→guest half of `bench`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntstatus::NtStatus;
use vmbmsg::sim::{Behavior, Negotiation, SimConfig, Simulation};
use vmbmsg_proto::ioctl::IoctlCode;
use vmbmsg_proto::wire::{HostMessage, MessageKind, PROTOCOL_V1, ReplyBody, parse_reply};

use super::{
    BackendInfo, Completion, Device, DeviceError, EchoRun, HostPeer, NotifierGuard, PendingIoctl,
};

/// How long the simulated host waits for the guest to complete one of its packets.
const HOST_WAIT: Duration = Duration::from_secs(10);

/// The simulation's settings, from the command line.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// PING and SEND answers.
    pub behavior: Behavior,
    /// NEGOTIATE answers.
    pub negotiation: Negotiation,
    /// The status the host completes SEND with.
    pub send_status: NtStatus,
    /// The host speaks only protocol 1.0 (no bulk area).
    pub only_v1_0: bool,
}

/// `normal`, `slow:<ms>`, `silent`, `malformed`.
pub fn behavior_name(b: Behavior) -> String {
    match b {
        Behavior::Normal => "normal".into(),
        Behavior::Slow(d) => format!("slow:{}", d.as_millis()),
        Behavior::Silent => "silent".into(),
        Behavior::Malformed => "malformed".into(),
    }
}

/// `accept`, `accept-1.0`, `reject`, `silent`, `garbage`.
pub fn negotiation_name(o: &SimOptions) -> &'static str {
    match o.negotiation {
        Negotiation::Accept if o.only_v1_0 => "accept-1.0",
        Negotiation::Accept => "accept",
        Negotiation::Reject => "reject",
        Negotiation::Silent => "silent",
        Negotiation::Garbage => "garbage",
    }
}

/// The driver core and its simulated host.
#[derive(Debug)]
pub struct SimDevice {
    sim: Arc<Simulation>,
    options: SimOptions,
}

impl SimDevice {
    /// Starts the simulation: the core brings its channel up, the host opens it and answers
    /// (or not) the negotiation.
    ///
    /// # Errors
    /// [`DeviceError::SimStart`].
    pub fn start(options: SimOptions) -> Result<Self, DeviceError> {
        let config = SimConfig {
            negotiation: options.negotiation,
            behavior: options.behavior,
            send_status: options.send_status,
            host_versions: if options.only_v1_0 {
                vec![PROTOCOL_V1]
            } else {
                SimConfig::default().host_versions
            },
            ..SimConfig::default()
        };
        let sim = Simulation::start(config).map_err(|e| DeviceError::SimStart(e.to_string()))?;
        Ok(Self {
            sim: Arc::new(sim),
            options,
        })
    }

    fn version(&self) -> u32 {
        match self.sim.core().protocol_version() {
            0 => PROTOCOL_V1,
            v => v,
        }
    }
}

struct SimPending(vmbmsg::sim::Pending);

impl PendingIoctl for SimPending {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Completion>, DeviceError> {
        let done = match timeout {
            Some(t) => self.0.wait(t),
            None => loop {
                if let Some(c) = self.0.wait(Duration::from_secs(3600)) {
                    break Some(c);
                }
            },
        };
        Ok(done.map(|c| Completion {
            status: c.status,
            output: c.output,
            win32_error: None,
        }))
    }

    fn cancel(&mut self) -> bool {
        // As `CancelIoEx` on Windows, where a request that already completed is not an error
        // (ERROR_NOT_FOUND): the wait that follows sees the completion at once.
        self.0.cancel() || self.0.try_get().is_some()
    }
}

impl Device for SimDevice {
    fn backend(&self) -> BackendInfo {
        BackendInfo::Simulation {
            host_behavior: behavior_name(self.options.behavior),
            negotiation: negotiation_name(&self.options).into(),
            send_status: self.options.send_status,
        }
    }

    fn submit(
        &self,
        code: IoctlCode,
        input: &[u8],
        output_len: usize,
    ) -> Result<Box<dyn PendingIoctl + '_>, DeviceError> {
        Ok(Box::new(SimPending(self.sim.ioctl(
            code.code(),
            input,
            output_len,
        ))))
    }

    fn host(&self) -> Option<&dyn HostPeer> {
        Some(self)
    }

    fn close(self: Box<Self>) -> Result<(), DeviceError> {
        // Idempotent; the Simulation's Drop does it again. Doing it here lets the model's
        // verifier see the whole teardown before it is asked.
        self.sim.core().channel_down();
        let violations: Vec<String> = self
            .sim
            .host()
            .violations()
            .iter()
            .map(ToString::to_string)
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(DeviceError::Violations(violations))
        }
    }
}

/// The host sends `message` and returns the guest's completion payload.
fn host_roundtrip(sim: &Simulation, message: HostMessage<'_>) -> Result<Vec<u8>, String> {
    let txn = sim
        .host_message(message)
        .map_err(|e| format!("the simulated host could not send: {e}"))?;
    sim.host()
        .wait_completion(txn, HOST_WAIT)
        .map(|c| c.payload)
        .ok_or_else(|| {
            format!(
                "the guest did not complete the host's packet within {} s",
                HOST_WAIT.as_secs()
            )
        })
}

/// The status of the guest's reply to NOTIFY `id`.
fn notify_status(reply: &[u8], id: u64) -> Result<NtStatus, String> {
    parse_reply(reply, MessageKind::NOTIFY, id)
        .map(|r| r.status)
        .map_err(|e| format!("the guest's NOTIFY reply does not parse: {e}"))
}

impl HostPeer for SimDevice {
    fn notify(&self, payload: &[u8]) -> Result<NtStatus, String> {
        let id = 1;
        let reply = host_roundtrip(&self.sim, HostMessage::notify(self.version(), id, payload))?;
        notify_status(&reply, id)
    }

    fn start_notifier(&self, per_second: f64) -> Box<dyn NotifierGuard> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (sim, stop, sent) = (self.sim.clone(), stop.clone(), sent.clone());
            let version = self.version();
            std::thread::Builder::new()
                .name("sim-notifier".into())
                .spawn(move || notifier(&sim, version, per_second, &stop, &sent))
                .ok()
        };
        Box::new(Notifier { stop, sent, thread })
    }

    fn echo_run(
        &self,
        payload: &[u8],
        depth: usize,
        keep_going: &mut dyn FnMut(u64) -> bool,
    ) -> Result<EchoRun, String> {
        let version = self.version();
        let host = self.sim.host();
        let mut window = VecDeque::with_capacity(depth.max(1));
        let mut run = EchoRun::default();
        let mut next_id = 1u64;
        loop {
            while window.len() < depth.max(1) && keep_going(run.packets) {
                let txn = self
                    .sim
                    .host_message(HostMessage::echo(version, next_id, payload))
                    .map_err(|e| format!("the simulated host could not send: {e}"))?;
                window.push_back((txn, next_id));
                next_id += 1;
            }
            let Some((txn, id)) = window.pop_front() else {
                break;
            };
            let completion = host.wait_completion(txn, HOST_WAIT).ok_or_else(|| {
                format!(
                    "the guest did not complete an ECHO within {} s",
                    HOST_WAIT.as_secs()
                )
            })?;
            match parse_reply(&completion.payload, MessageKind::ECHO, id) {
                Ok(r) if matches!(r.body, ReplyBody::Echo { payload: p } if p == payload) => {
                    run.packets += 1;
                }
                _ => run.errors += 1,
            }
        }
        Ok(run)
    }
}

/// Sends numbered NOTIFY packets at `per_second` until `stop`.
fn notifier(sim: &Simulation, version: u32, per_second: f64, stop: &AtomicBool, sent: &AtomicU64) {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / per_second);
    let mut n = 0u32;
    while !stop.load(Ordering::Acquire) {
        // An absolute schedule: a slow round trip does not lower the rate it can keep.
        let due = start + period * n;
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        n = n.saturating_add(1);
        let text = format!("notification {n} from the simulated host");
        let Ok(txn) = sim.host_message(HostMessage::notify(version, u64::from(n), text.as_bytes()))
        else {
            break;
        };
        // Counted once sent: the guest may hand it to vmbctl before its completion comes back.
        sent.fetch_add(1, Ordering::Relaxed);
        if sim.host().wait_completion(txn, HOST_WAIT).is_none() {
            break;
        }
    }
}

struct Notifier {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl NotifierGuard for Notifier {
    fn stop(mut self: Box<Self>) -> u64 {
        self.halt();
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.halt();
    }
}
