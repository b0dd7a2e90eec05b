//! The fuzzers' harness: the real driver [`Core`] over a `kmcl-model` world whose host side
//! the fuzz input controls packet by packet.
//!
//! Unlike `vmbmsg::sim::Simulation` there is no host thread: the host's responder records
//! every guest packet and either answers it at once (inline, as the model allows) or holds
//! it, and the input later completes held transactions by id — well, late, twice, with a
//! made-up id or with the wrong bytes. Everything runs on the fuzzing thread and the model's
//! delivery threads, so a run ends as soon as its checks are done.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arbitrary::Arbitrary;
use kmcl_model::{GuestPacket, Host, HostTxn, ModelConfig};
use vmbmsg::sim::{Pending, SimPlatform};
use vmbmsg::{Core, CoreConfig, Library, NtStatus, ParentDevice};
use vmbmsg_proto::ioctl::{
    IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_GET_STATS, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV,
    IOCTL_VMBMSG_SEND, InfoOut, PingOut, SendOut, StatsOut, parse_recv_output, read_output,
};
use vmbmsg_proto::wire::{
    GuestBody, HEADER_SIZE, HostMessage, MAX_BULK_PAYLOAD, MAX_MESSAGE, MessageKind, PROTOCOL_V1,
    PROTOCOL_V1_1, Reply, ReplyBody, parse_guest_message, parse_reply, peek_header,
};

/// The most bytes a fuzzer puts in one buffer (a little over the largest message).
pub const MAX_BYTES: usize = MAX_MESSAGE + 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Caps a fuzzer-made buffer at [`MAX_BYTES`].
#[must_use]
pub fn capped(mut v: Vec<u8>) -> Vec<u8> {
    v.truncate(MAX_BYTES);
    v
}

/// How the host answers the driver's NEGOTIATE.
#[derive(Arbitrary, Clone, Debug)]
pub enum Negotiation {
    /// Accepts with version 1.1 (bulk transfers), the highest the driver proposes.
    Accept,
    /// Accepts with version 1.0 (no bulk area).
    AcceptV1_0,
    /// Accepts with this version (usually outside the proposal).
    AcceptVersion(u32),
    /// Rejects.
    Reject,
    /// Answers with these bytes.
    Bytes(Vec<u8>),
    /// Answers a correct reply with this transport status.
    TransportStatus(i32),
    /// Never answers (the driver's negotiate timeout is a few milliseconds).
    Silent,
}

/// How the host answers one PING or SEND.
#[derive(Arbitrary, Clone, Debug)]
pub enum Answer {
    /// The correct reply.
    Good,
    /// The correct reply, with this transport status.
    TransportStatus(i32),
    /// A body-less reply with this protocol status in its header.
    HostStatus(i32),
    /// These bytes.
    Bytes(Vec<u8>),
    /// The correct reply, cut short by this many bytes.
    Truncated(u8),
    /// The correct reply followed by these bytes.
    Extended(Vec<u8>),
    /// The correct reply with another request id.
    WrongId(u64),
    /// A PING reply with another nonce (the correct reply for SEND).
    WrongNonce(u64),
    /// A reply of another kind.
    WrongKind(u16),
    /// No bytes at all.
    Empty,
}

/// What the responder does with guest packets other than NEGOTIATE.
#[derive(Arbitrary, Clone, Debug)]
pub enum Mode {
    /// Answers at once.
    Answer(Answer),
    /// Holds them for [`Peer::complete_held`].
    Hold,
}

/// A guest packet the host holds: its transaction and what the driver asked.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// The model's transaction id.
    pub txn: u64,
    /// The protocol message's kind, id, version and (PING) nonce.
    pub kind: MessageKind,
    /// Request id in the message header.
    pub id: u64,
    /// Header version.
    pub version: u32,
    /// PING nonce (0 otherwise).
    pub nonce: u64,
}

impl Held {
    fn of(gp: &GuestPacket) -> Self {
        let (kind, id, version, nonce) = match parse_guest_message(&gp.payload) {
            Ok(m) => (
                peek_header(&gp.payload).map_or(MessageKind::new(0), |h| h.kind),
                m.id,
                m.version,
                match m.body {
                    GuestBody::Ping { nonce } => nonce,
                    _ => 0,
                },
            ),
            Err(_) => (MessageKind::new(0), 0, PROTOCOL_V1, 0),
        };
        Self {
            txn: gp.id(),
            kind,
            id,
            version,
            nonce,
        }
    }
}

fn encode(reply: &Reply<'_>) -> Vec<u8> {
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// The correct reply to `h`.
fn good(h: &Held) -> Vec<u8> {
    encode(&match h.kind {
        MessageKind::PING => Reply::ping(h.version, h.id, h.nonce),
        MessageKind::NEGOTIATE => Reply::negotiate_accept(h.id, PROTOCOL_V1_1),
        kind => Reply::status_only(kind, h.version, h.id, NtStatus::STATUS_SUCCESS),
    })
}

/// The bytes and transport status `answer` gives to `h`.
pub fn render(answer: &Answer, h: &Held) -> (NtStatus, Vec<u8>) {
    let ok = NtStatus::STATUS_SUCCESS;
    match answer {
        Answer::Good => (ok, good(h)),
        Answer::TransportStatus(s) => (NtStatus(*s), good(h)),
        Answer::HostStatus(s) => (
            ok,
            encode(&Reply::status_only(h.kind, h.version, h.id, NtStatus(*s))),
        ),
        Answer::Bytes(b) => (ok, capped(b.clone())),
        Answer::Truncated(n) => {
            let mut b = good(h);
            b.truncate(b.len().saturating_sub(usize::from(*n).max(1)));
            (ok, b)
        }
        Answer::Extended(more) => {
            let mut b = good(h);
            b.extend_from_slice(more);
            (ok, capped(b))
        }
        Answer::WrongId(id) => {
            let held = Held {
                id: if *id == h.id { !id } else { *id },
                ..*h
            };
            (ok, good(&held))
        }
        Answer::WrongNonce(n) => {
            let held = Held {
                nonce: if *n == h.nonce { !n } else { *n },
                ..*h
            };
            (ok, good(&held))
        }
        Answer::WrongKind(k) => {
            let held = Held {
                kind: MessageKind::new(*k),
                ..*h
            };
            (ok, good(&held))
        }
        Answer::Empty => (ok, Vec::new()),
    }
}

/// The guest's bulk area as its last BULK_OFFER described it (1.1).
#[derive(Clone, Copy, Debug)]
pub struct BulkArea {
    /// The GPADL handle.
    pub gpadl: u32,
    /// Bytes of the guest's half (offset 0).
    pub guest_half: u32,
    /// Bytes of the host's half (after the guest's).
    pub host_half: u32,
}

/// The host side's shared state (the responder runs on the guest's sending thread).
#[derive(Debug)]
struct HostSide {
    negotiation: Negotiation,
    offer: Answer,
    mode: Mode,
    held: Vec<Held>,
    bulk: Option<BulkArea>,
}

/// How the model delivers host packets to the driver in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// On the fuzzing thread, inside each host call (`ModelConfig::inline_delivery`): the same
    /// input always takes the same path, and a run has no thread to start or wake. What the
    /// fuzzers run.
    Inline,
    /// On the model's delivery threads, [`PeerConfig::delivery_threads`] of them, concurrently
    /// with the fuzzing thread. What the seed replay in `cargo test` adds, so the corpora also
    /// run with concurrent delivery.
    Threads,
}

/// How a [`Peer`] starts.
#[derive(Arbitrary, Clone, Debug)]
pub struct PeerConfig {
    /// Delivery threads of the model, 1..=4, with [`Delivery::Threads`].
    pub delivery_threads: u8,
    /// Notification queue depth, 0..=8.
    pub notify_depth: u8,
    /// Parked RECV limit, 0..=4.
    pub max_parked_recv: u8,
    /// ECHO reply buffers, 0..=4.
    pub reply_buffers: u8,
    /// The host's answer to NEGOTIATE.
    pub negotiation: Negotiation,
    /// The host's answer to the BULK_OFFER of a 1.1 session (at once, never held).
    pub offer: Answer,
    /// The host's answers to PING and SEND at first.
    pub mode: Mode,
}

impl PeerConfig {
    /// A well-behaved host and default-sized driver.
    #[must_use]
    pub fn friendly() -> Self {
        Self {
            delivery_threads: 1,
            notify_depth: 4,
            max_parked_recv: 2,
            reply_buffers: 2,
            negotiation: Negotiation::Accept,
            offer: Answer::Good,
            mode: Mode::Answer(Answer::Good),
        }
    }
}

/// What the host expects of a packet it sent.
#[derive(Debug)]
enum Expect {
    /// Any reply-shaped completion.
    Reply,
    /// A well-formed ECHO with this id and payload, sent while READY: an ECHO reply with the
    /// payload, or a body-less failure reply.
    Echo(u64, Vec<u8>),
    /// An ECHO_BULK with this id, offset and length, sent while READY in 1.1: an ECHO_BULK
    /// reply naming the same range, or a body-less failure reply (`STATUS_DATA_ERROR` when
    /// the range is outside the host's half).
    EchoBulk(u64, u32, u32),
}

/// The driver core, its model world and everything the fuzzer started.
pub struct Peer {
    // Field order is drop order: the core (whose Drop takes the channel down) before the
    // device's library reference, and both before the host.
    core: Core<SimPlatform>,
    library: Library,
    host: Host,
    side: Arc<Mutex<HostSide>>,
    /// Every IOCTL: its code, output size, completion, and whether a cancel of it took effect.
    requests: Vec<(u32, usize, Pending, bool)>,
    sent: Vec<(HostTxn, bool, Expect)>,
    stats_reset: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// The client interface table of `host`'s device, as the WDF shell queries it.
#[expect(
    unsafe_code,
    reason = "the query hands kmcl a raw interface buffer, as WdfFdoQueryForInterface does"
)]
fn library_of(host: &Host) -> Library {
    let query = |iface, size, version, ty: &_| {
        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
        unsafe { host.query_interface(ty, iface, size, version) }
    };
    // SAFETY: see above: the model's query fills the whole table and takes one reference for
    // the caller, as a PnP query-interface does.
    unsafe { Library::query(query) }.expect("query the client interface")
}

/// The model's parent-device token for `host`.
#[expect(unsafe_code, reason = "wrapping the model's device token")]
fn parent_of(host: &Host) -> ParentDevice {
    // SAFETY: `ParentDevice::from_raw` needs a device object valid for as long as any channel
    // allocated under it exists. The model's token is valid for the life of `host`, and a
    // `Peer` drops its core (which takes the channel down) before its host.
    unsafe { ParentDevice::from_raw(host.parent_device()) }
}

impl Peer {
    /// A world and a core with its channel up (enabled, not opened).
    ///
    /// # Panics
    /// If the core cannot be created or its channel brought up (never, with the model).
    #[must_use]
    pub fn new(cfg: &PeerConfig, delivery: Delivery) -> Self {
        let host = kmcl_model::connected_with(ModelConfig {
            delivery_threads: usize::from(cfg.delivery_threads % 4) + 1,
            inline_delivery: delivery == Delivery::Inline,
            teardown_timeout: Duration::from_secs(10),
            interface_type: vmbmsg::sim::interface_type(),
            ..ModelConfig::default()
        });
        let silent = matches!(cfg.negotiation, Negotiation::Silent);
        let core = Core::with_config(
            SimPlatform::default(),
            CoreConfig {
                negotiate_timeout: Duration::from_millis(if silent { 2 } else { 10_000 }),
                notify_depth: usize::from(cfg.notify_depth % 9),
                max_parked_recv: usize::from(cfg.max_parked_recv % 5),
                reply_buffers: usize::from(cfg.reply_buffers % 5),
                ring_pages: 8,
                ..CoreConfig::default()
            },
        )
        .expect("core");
        let side = Arc::new(Mutex::new(HostSide {
            negotiation: cfg.negotiation.clone(),
            offer: cfg.offer.clone(),
            mode: cfg.mode.clone(),
            held: Vec::new(),
            bulk: None,
        }));
        {
            let side = Arc::clone(&side);
            host.set_responder(move |gp| respond(&mut lock(&side), gp));
        }
        let library = library_of(&host);
        core.channel_up(&library, parent_of(&host))
            .expect("channel up");
        Self {
            core,
            library,
            host,
            side,
            requests: Vec::new(),
            sent: Vec::new(),
            stats_reset: false,
        }
    }

    /// The driver core.
    #[must_use]
    pub fn core(&self) -> &Core<SimPlatform> {
        &self.core
    }

    /// The model's host endpoint.
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host opens the channel (runs negotiation); errors are fine (already open, ...).
    pub fn open(&self) {
        let _ = self.host.open();
    }

    /// Takes the channel down and up again, then opens it.
    pub fn restart(&self) {
        self.core.channel_down();
        self.core
            .channel_up(&self.library, parent_of(&self.host))
            .expect("channel up again");
        self.open();
    }

    /// Changes how the host answers PING and SEND from now on.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.side).mode = mode;
    }

    /// Completes the `which`-th held guest packet (modulo their number) with `answer`, and
    /// keeps it in the list when `again` (so it can be completed twice).
    pub fn complete_held(&self, which: u8, answer: &Answer, again: bool) {
        let held = {
            let mut side = lock(&self.side);
            if side.held.is_empty() {
                return;
            }
            let i = usize::from(which) % side.held.len();
            if again {
                side.held[i]
            } else {
                side.held.swap_remove(i)
            }
        };
        let (status, bytes) = render(answer, &held);
        self.host.complete_transaction(held.txn, status, &bytes);
    }

    /// The host completes a transaction id it made up.
    pub fn complete_unknown(&self, txn: u64, bytes: &[u8]) {
        self.host
            .complete_transaction(txn, NtStatus::STATUS_SUCCESS, bytes);
    }

    /// A raw host packet.
    pub fn host_raw(&mut self, bytes: &[u8], completion: bool) {
        if let Ok(txn) = self.host.send(bytes, completion) {
            self.sent.push((txn, completion, Expect::Reply));
        }
    }

    /// The version host messages carry: the session's, or 1.0 before there is one.
    fn message_version(&self) -> u32 {
        match self.core.protocol_version() {
            0 => PROTOCOL_V1,
            v => v,
        }
    }

    /// A well-formed ECHO (`NOTIFY` when `notify`) with `payload`.
    pub fn host_message(&mut self, notify: bool, id: u64, payload: &[u8], completion: bool) {
        let version = self.message_version();
        let ready = self.core.state() == vmbmsg_proto::ioctl::ChannelState::READY;
        let m = if notify {
            vmbmsg_proto::wire::HostMessage::notify(version, id, payload)
        } else {
            vmbmsg_proto::wire::HostMessage::echo(version, id, payload)
        };
        let mut buf = vec![0; m.encoded_len()];
        let Ok(n) = m.write(&mut buf) else {
            return;
        };
        buf.truncate(n);
        if let Ok(txn) = self.host.send(&buf, completion) {
            let expect = if ready && !notify {
                Expect::Echo(id, payload.to_vec())
            } else {
                Expect::Reply
            };
            self.sent.push((txn, completion, expect));
        }
    }

    /// The bulk area of the last BULK_OFFER the host saw, if any (it may be deleted since).
    #[must_use]
    pub fn bulk_area(&self) -> Option<BulkArea> {
        lock(&self.side).bulk
    }

    /// An ECHO_BULK for `len` bytes at `offset` of the host's half, after the host wrote
    /// `fill` bytes there through the GPADL (as far as the range lies inside the area).
    /// `offset` and `len` go on the wire as given, so they may lie outside the area, be 0 or
    /// exceed [`MAX_BULK_PAYLOAD`]: the driver must refuse those with a failure reply. Does
    /// nothing without a bulk area.
    pub fn host_echo_bulk(&mut self, id: u64, offset: u32, len: u32, fill: u8, completion: bool) {
        let Some(area) = self.bulk_area() else {
            return;
        };
        let version = self.message_version();
        let ready = self.core.state() == vmbmsg_proto::ioctl::ChannelState::READY;
        let start = u64::from(area.guest_half) + u64::from(offset);
        let end = (start + u64::from(len))
            .min(u64::from(area.guest_half) + u64::from(area.host_half))
            .min(start + MAX_BULK_PAYLOAD as u64);
        if let (Ok(at), Ok(n)) = (usize::try_from(start), usize::try_from(end))
            && n > at
        {
            // Gone with its channel, or out of range: the driver's check is what counts.
            let _ = self.host.gpadl_write(area.gpadl, at, &vec![fill; n - at]);
        }
        // Written with a valid range, then the range patched in: the writer refuses bad ones.
        let m = HostMessage::echo_bulk(version, id, 0, 1);
        let mut buf = vec![0; m.encoded_len()];
        let Ok(n) = m.write(&mut buf) else {
            return;
        };
        buf.truncate(n);
        buf[HEADER_SIZE..HEADER_SIZE + 4].copy_from_slice(&offset.to_le_bytes());
        buf[HEADER_SIZE + 4..HEADER_SIZE + 8].copy_from_slice(&len.to_le_bytes());
        if let Ok(txn) = self.host.send(&buf, completion) {
            let expect = if ready && version >= PROTOCOL_V1_1 {
                Expect::EchoBulk(id, offset, len)
            } else {
                Expect::Reply
            };
            self.sent.push((txn, completion, expect));
        }
    }

    /// The host writes `bytes` at `at` of the bulk area (either half), as a hostile host may
    /// at any time. Does nothing without a bulk area.
    pub fn host_scribble(&self, at: u32, bytes: &[u8]) {
        if let Some(area) = self.bulk_area() {
            let total = u64::from(area.guest_half) + u64::from(area.host_half);
            if let Ok(at) = usize::try_from(u64::from(at) % total.max(1)) {
                let _ = self.host.gpadl_write(area.gpadl, at, bytes);
            }
        }
    }

    /// Delivers an IOCTL; the request is checked at [`finish`](Self::finish).
    pub fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) {
        let (request, pending) = self.core.platform().request(input, output_len);
        self.core.handle_ioctl(code, request);
        self.requests.push((code, output_len, pending, false));
    }

    /// Cancels the `which`-th request (modulo their number), as `CancelIoEx` would: a parked
    /// RECV or a PING or SEND waiting for the host completes with `STATUS_CANCELLED`; anything
    /// else (completed, or not cancellable) is not affected.
    pub fn cancel(&mut self, which: u8) {
        if !self.requests.is_empty() {
            let i = usize::from(which) % self.requests.len();
            let request = &mut self.requests[i];
            if request.2.cancel() {
                request.3 = true;
            }
        }
    }

    /// RESET_STATS was issued: the driver's counters no longer cover the whole run.
    pub fn note_stats_reset(&mut self) {
        self.stats_reset = true;
    }

    /// Waits for the completions of the host packets sent so far and checks them.
    pub fn drain_host_packets(&mut self) {
        for (txn, completion, expect) in std::mem::take(&mut self.sent) {
            // `None`: dropped undelivered because the channel closed (checked by the
            // model's counters at the end), or a driver that never completes (the counters
            // catch that too).
            let Some(c) = self.host.wait_completion(txn, Duration::from_secs(10)) else {
                continue;
            };
            assert!(!c.failed, "the driver never fails a host packet");
            if !completion {
                continue;
            }
            let header = peek_header(&c.payload).expect("every completion is a reply header");
            assert!(header.flags.is_reply(), "completion without the reply flag");
            match expect {
                Expect::Echo(id, payload) => {
                    let r = parse_reply(&c.payload, MessageKind::ECHO, id).expect("an ECHO reply");
                    match r.body {
                        ReplyBody::Echo { payload: got } => assert_eq!(got, payload.as_slice()),
                        _ => assert!(
                            !r.status.is_success(),
                            "a success ECHO reply has the payload"
                        ),
                    }
                }
                Expect::EchoBulk(id, offset, len) => {
                    let r = parse_reply(&c.payload, MessageKind::ECHO_BULK, id)
                        .expect("an ECHO_BULK reply");
                    match r.body {
                        ReplyBody::EchoBulk { offset: o, len: l } => {
                            assert_eq!((o, l), (offset, len), "the reply names the same range");
                        }
                        _ => assert!(
                            !r.status.is_success(),
                            "a success ECHO_BULK reply names the range"
                        ),
                    }
                    if len == 0 || len as usize > MAX_BULK_PAYLOAD {
                        assert!(!r.status.is_success(), "a bad bulk range is refused");
                    }
                }
                Expect::Reply => {}
            }
        }
    }

    /// Ends the run: takes the channel down and checks that every request completed exactly
    /// once with a well-formed output, every host packet was retired, nothing leaked, the
    /// statistics add up, and the model recorded no contract violation.
    ///
    /// # Panics
    /// On any failed check (libFuzzer reports it as a crash).
    pub fn finish(mut self) {
        self.drain_host_packets();
        self.core.channel_down();
        assert_eq!(
            self.core.waiting_requests(),
            0,
            "a PING or SEND left waiting"
        );
        for (code, out_len, pending, cancelled) in &self.requests {
            let c = pending
                .try_get()
                .unwrap_or_else(|| panic!("IOCTL {code:#x} never completed"));
            assert_ne!(c.status, NtStatus::STATUS_PENDING, "completed as pending");
            if *cancelled {
                assert_eq!(
                    c.status,
                    NtStatus::STATUS_CANCELLED,
                    "IOCTL {code:#x}: cancelled, then completed otherwise"
                );
            }
            assert!(c.output.len() <= *out_len);
            if c.status != NtStatus::STATUS_SUCCESS {
                assert!(
                    c.output.is_empty(),
                    "{code:#x}: output with a failure status"
                );
                continue;
            }
            match *code {
                IOCTL_VMBMSG_PING => assert!(read_output::<PingOut>(&c.output).is_ok()),
                IOCTL_VMBMSG_SEND => assert!(read_output::<SendOut>(&c.output).is_ok()),
                IOCTL_VMBMSG_GET_INFO => assert!(InfoOut::parse(&c.output).is_ok()),
                IOCTL_VMBMSG_GET_STATS => assert!(read_output::<StatsOut>(&c.output).is_ok()),
                IOCTL_VMBMSG_RECV => assert!(parse_recv_output(&c.output).is_ok()),
                _ => {}
            }
        }
        let h = self.host.stats();
        assert_eq!(h.packets_allocated, 0, "packets leaked: {h:?}");
        assert_eq!(h.packets_in_flight, 0, "{h:?}");
        assert_eq!(h.incoming_outstanding, 0, "{h:?}");
        assert_eq!(h.failed_by_guest, 0, "{h:?}");
        assert_eq!(h.force_retired, 0, "{h:?}");
        assert_eq!(h.completed_by_guest, h.delivered_to_guest, "{h:?}");
        if !self.stats_reset {
            let s = self.core.stats();
            assert_eq!(s.rx_packets.get(), h.delivered_to_guest);
            assert_eq!(
                s.completions_ok.get()
                    + s.completions_malformed.get()
                    + s.completions_queue_full.get()
                    + s.completions_not_ready.get()
                    + s.completions_other.get(),
                s.rx_packets.get(),
                "every packet completed once, with a counted status"
            );
            assert_eq!(s.unconsumed_packets.get(), 0);
            assert!(
                s.notify_queued.get() + s.notify_delivered.get() + s.notify_dropped.get()
                    >= s.notify_count.get(),
                "every NOTIFY queued, delivered or dropped"
            );
        }
        self.host.assert_no_violations();
        let orphans = kmcl_model::orphan_violations();
        assert!(orphans.is_empty(), "{orphans:?}");
    }
}

/// The responder: NEGOTIATE per the configuration, PING and SEND per the mode.
fn respond(side: &mut HostSide, gp: &GuestPacket) -> Option<(NtStatus, Vec<u8>)> {
    let held = Held::of(gp);
    if held.kind == MessageKind::NEGOTIATE {
        let ok = NtStatus::STATUS_SUCCESS;
        side.bulk = None;
        return match &side.negotiation {
            Negotiation::Accept => Some((ok, good(&held))),
            Negotiation::AcceptV1_0 => {
                Some((ok, encode(&Reply::negotiate_accept(held.id, PROTOCOL_V1))))
            }
            Negotiation::AcceptVersion(v) => {
                Some((ok, encode(&Reply::negotiate_accept(held.id, *v))))
            }
            Negotiation::Reject => Some((ok, encode(&Reply::negotiate_reject(held.id)))),
            Negotiation::Bytes(b) => Some((ok, capped(b.clone()))),
            Negotiation::TransportStatus(s) => Some((NtStatus(*s), good(&held))),
            Negotiation::Silent => None,
        };
    }
    if held.kind == MessageKind::BULK_OFFER {
        if let Ok(m) = parse_guest_message(&gp.payload)
            && let GuestBody::BulkOffer {
                gpadl,
                guest_to_host_len,
                host_to_guest_len,
            } = m.body
        {
            side.bulk = Some(BulkArea {
                gpadl,
                guest_half: guest_to_host_len,
                host_half: host_to_guest_len,
            });
        }
        return Some(render(&side.offer, &held));
    }
    if held.kind == MessageKind::SEND_BULK
        && let Ok(m) = parse_guest_message(&gp.payload)
        && let GuestBody::SendBulk { offset, len } = m.body
        && let Some(area) = side.bulk
    {
        // A host reads the payload from the guest's half, as the simulation's does; the
        // guest must have left it readable (the model checks the GPADL is live).
        let mut payload = vec![0; (len as usize).min(MAX_BULK_PAYLOAD)];
        let _ = gp.gpadl_read(area.gpadl, offset as usize, &mut payload);
    }
    match &side.mode {
        Mode::Answer(a) => Some(render(a, &held)),
        Mode::Hold => {
            side.held.push(held);
            None
        }
    }
}
