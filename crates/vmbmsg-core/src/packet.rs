//! The packet-processing callback (`on_packet`), negotiation, and the channel's state
//! callbacks: the [`kmcl::ChannelHandler`] of the driver.

use core::sync::atomic::Ordering;

use kmcl::{ChannelHandler, ChannelRef, IncomingPacket, NtStatus, PacketFlags, Timeout};
use vmbmsg_proto::ioctl::{ChannelState, StateReason, write_recv_output};
use vmbmsg_proto::wire::{
    BULK_REF_SIZE, GuestMessage, HostBody, HostMessage, MalformedReason, MessageKind,
    NEGOTIATE_REPLY_SIZE, NEGOTIATE_REQUEST_SIZE, NegotiateOutcome, PREMATURE_STATUS, PROTOCOL_V1,
    PROTOCOL_V1_1, QUEUE_FULL_STATUS, Reply, STATUS_REPLY_SIZE, SUPPORTED_MAX, SUPPORTED_MIN,
    parse_host_message, parse_negotiate_reply, parse_session_message,
};

use crate::notify::PushError;
use crate::stats::bump;
use crate::sync::Lease;
use crate::try_arc::TryArc;
use crate::{IoRequest, Platform, ReplyBuffer, Shared};

/// The driver's channel handler: a view of the device's shared state.
pub(crate) struct Handler<P: Platform> {
    shared: TryArc<Shared<P>>,
}

impl<P: Platform> Handler<P> {
    pub(crate) fn new(shared: TryArc<Shared<P>>) -> Self {
        Self { shared }
    }
}

/// [`MAX_MESSAGE`](vmbmsg_proto::wire::MAX_MESSAGE) as KMCL counts sizes.
pub(crate) const MAX_MESSAGE_U32: u32 = {
    assert!(vmbmsg_proto::wire::MAX_MESSAGE <= u32::MAX as usize);
    vmbmsg_proto::wire::MAX_MESSAGE as u32
};

impl<P: Platform> ChannelHandler for Handler<P> {
    // No message is longer, so no packet that reaches `on_packet` is: its parse's length checks
    // against the protocol's maximum fold away.
    const MAX_PACKET_SIZE: Option<u32> = Some(MAX_MESSAGE_U32);

    // Inlined into kmcl's callback trampoline: one frame per delivery instead of two.
    #[inline(always)]
    fn process_packet(
        &self,
        _channel: ChannelRef<'_>,
        packet: IncomingPacket,
        data: &[u8],
        _flags: PacketFlags,
    ) {
        on_packet(&self.shared, packet, data);
    }

    fn opened(&self, _channel: ChannelRef<'_>) -> NtStatus {
        // Opened while paused (the pause came first): it negotiates when it resumes.
        if !self.shared.paused.load(Ordering::Acquire) {
            self.shared.set_state(ChannelState::NEGOTIATING);
        }
        NtStatus::STATUS_SUCCESS
    }

    fn started(&self, _channel: ChannelRef<'_>) {
        // A resume after Core::pause_channel: the host's session went on, so take it up again
        // here, before the incoming queue runs and delivers what waited in the ring.
        let session = self.shared.paused_version.swap(0, Ordering::AcqRel);
        if session != 0 {
            self.shared.open_sends(session);
        }
    }

    fn post_started(&self, channel: ChannelRef<'_>) {
        if self.shared.ready_version().is_some() {
            return; // the session was taken up again in `started`
        }
        let Some(version) = negotiate(&self.shared, channel) else {
            return;
        };
        // 1.1: offer the bulk area before any data message; the session runs without it when
        // that fails (SEND payloads up to MAX_PAYLOAD), and GET_INFO says so.
        let mut without_bulk = false;
        if version >= PROTOCOL_V1_1 && !self.shared.bulk.is_set() {
            match crate::bulk::offer(&self.shared, channel, version) {
                Some(bulk) => self.shared.bulk.set(bulk),
                None => without_bulk = true,
            }
        }
        self.shared.open_sends(version);
        if without_bulk {
            self.shared
                .state_reason
                .store(StateReason::BULK_UNAVAILABLE.get(), Ordering::Release);
        }
    }

    fn suspend(&self, _channel: ChannelRef<'_>) {
        // No data message is accepted from here on; sends stop (IOCTLs see CLOSED), and the
        // ones that already passed their READY check return before Suspend does.
        self.shared.stop_sends();
    }

    fn closed(&self, _channel: ChannelRef<'_>) {
        // Suspend did this already when the channel was running; not when it was paused.
        self.shared.stop_sends();
        // Every GPADL is deleted by the end of this callback (KMCL's rule). Nothing uses the
        // bulk area any more (deliveries are over, sends stopped); its memory is kept for the
        // next 1.1 session.
        if let Some(bulk) = self.shared.bulk.take_and_wait()
            && let Some(buffer) = bulk.delete()
        {
            *self.shared.bulk_spare.lock() = Some(buffer);
        }
        // No notification can arrive any more: a parked RECV would wait forever. When the
        // host closed the channel, user mode may retry later; when we are tearing the device
        // down, it is gone.
        let going_down = self.shared.going_down.load(Ordering::Acquire);
        let status = if going_down {
            NtStatus::STATUS_DEVICE_REMOVED
        } else {
            vmbmsg_proto::ioctl::NOT_READY_STATUS
        };
        self.shared.finish_parked(status);
        if !going_down {
            // The host closed it: KMCL left the channel disabled; enable it again from outside
            // this callback (Core::restart_channel, through the platform's work item).
            self.shared.closed_by_host.store(true, Ordering::Release);
            self.shared.platform.channel_closed_by_host();
        }
    }
}

/// Retires a host packet with a status-only reply and counts the status.
fn complete_status<P: Platform>(
    shared: &Shared<P>,
    packet: IncomingPacket,
    kind: MessageKind,
    version: u32,
    id: u64,
    status: NtStatus,
) {
    let mut buf = [0u8; STATUS_REPLY_SIZE];
    let reply = Reply::status_only(kind, version, id, status);
    // A status-only reply always fits STATUS_REPLY_SIZE; an empty response is the fallback.
    let len = reply.write(&mut buf).unwrap_or(0);
    // Counted first, so that whoever sees the completion sees it counted.
    shared.stats.completed(status);
    packet.complete(buf.get(..len).unwrap_or_default());
}

/// The packet-processing callback: parse, validate, dispatch, and complete `packet` exactly
/// once. Malformed, unknown or premature packets are completed with an error status and
/// counted by reason; nothing here panics or allocates.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub(crate) fn on_packet<P: Platform>(shared: &Shared<P>, packet: IncomingPacket, data: &[u8]) {
    shared.stats.received(data.len());
    // The hot case (a well-formed ECHO or NOTIFY of the session's version) straight on;
    // anything else — malformed, premature, of another version, ECHO_BULK — through the full
    // parse and the session checks, out of line, which report what is wrong or dispatch it.
    if let Some(version) = shared.ready_session()
        && let Some(message) = parse_session_message(data, version)
    {
        dispatch(shared, packet, version.get(), message);
    } else {
        on_other_packet(shared, packet, data);
    }
}

/// [`on_packet`] for a packet the session's fast parse did not accept: normally malformed or
/// premature, or an ECHO_BULK.
#[cold]
#[inline(never)]
fn on_other_packet<P: Platform>(shared: &Shared<P>, packet: IncomingPacket, data: &[u8]) {
    let message = match parse_host_message(data) {
        Ok(m) => m,
        Err(e) => {
            shared.stats.malformed(e.reason());
            let status = e.status();
            let mut buf = [0u8; STATUS_REPLY_SIZE];
            let len = Reply::for_malformed(data, status)
                .write(&mut buf)
                .unwrap_or(0);
            shared.stats.completed(status);
            packet.complete(buf.get(..len).unwrap_or_default());
            return;
        }
    };
    on_message(shared, packet, message);
}

/// [`on_packet`] for a parsed message: session checks, dispatch, completion.
#[inline]
fn on_message<P: Platform>(shared: &Shared<P>, packet: IncomingPacket, message: HostMessage<'_>) {
    let kind = match message.body {
        HostBody::Echo { .. } => MessageKind::ECHO,
        HostBody::Notify { .. } => MessageKind::NOTIFY,
        HostBody::EchoBulk { .. } => MessageKind::ECHO_BULK,
    };
    let Some(version) = shared.ready_version() else {
        shared.stats.malformed(MalformedReason::Premature);
        complete_status(
            shared,
            packet,
            kind,
            message.version,
            message.id,
            PREMATURE_STATUS,
        );
        return;
    };
    if message.version != version {
        shared.stats.malformed(MalformedReason::UnsupportedVersion);
        complete_status(
            shared,
            packet,
            kind,
            message.version,
            message.id,
            NtStatus::STATUS_REVISION_MISMATCH,
        );
        return;
    }
    dispatch(shared, packet, version, message);
}

/// A message of the session's `version`, accepted: counted, answered, completed.
#[inline]
fn dispatch<P: Platform>(
    shared: &Shared<P>,
    packet: IncomingPacket,
    version: u32,
    message: HostMessage<'_>,
) {
    match message.body {
        HostBody::Echo { payload } => {
            bump(&shared.stats.echo_count);
            echo(shared, packet, version, message.id, payload);
        }
        HostBody::Notify { payload } => {
            bump(&shared.stats.notify_count);
            let status = deliver_notification(shared, payload);
            complete_status(
                shared,
                packet,
                MessageKind::NOTIFY,
                version,
                message.id,
                status,
            );
        }
        HostBody::EchoBulk { offset, len } => {
            bump(&shared.stats.echo_count);
            echo_bulk(shared, packet, version, message.id, offset, len);
        }
    }
}

/// Answers an ECHO_BULK (1.1): the host's range of the bulk area is echoed in place, and the
/// reply names it. A session without a bulk area, or a range outside the host's half, is the
/// host's error: completed with `STATUS_DATA_ERROR`, counted as a bad bulk range.
#[cold]
#[inline(never)]
fn echo_bulk<P: Platform>(
    shared: &Shared<P>,
    packet: IncomingPacket,
    version: u32,
    id: u64,
    offset: u32,
    len: u32,
) {
    // A free ECHO reply buffer makes the echo a few long copies; without one, the stack
    // chunk does the same in more, shorter ones (docs/performance.md, "Bulk path").
    let echoed = match shared.bulk.get() {
        Some(bulk) => match take_reply_buffer(shared) {
            Some(mut scratch) => bulk.echo_in_place(offset, len, &mut scratch[..]),
            None => bulk.echo_in_place(offset, len, &mut [0u8; crate::bulk::ECHO_CHUNK]),
        },
        None => Err(NtStatus::STATUS_DATA_ERROR),
    };
    if let Err(status) = echoed {
        if status == NtStatus::STATUS_DATA_ERROR {
            shared.stats.malformed(MalformedReason::BadBulkRange);
        }
        complete_status(shared, packet, MessageKind::ECHO_BULK, version, id, status);
        return;
    }
    let mut buf = [0u8; BULK_REF_SIZE];
    match Reply::echo_bulk(version, id, offset, len).write(&mut buf) {
        Ok(n) => {
            shared.stats.completed(NtStatus::STATUS_SUCCESS);
            packet.complete(buf.get(..n).unwrap_or_default());
        }
        Err(e) => complete_status(
            shared,
            packet,
            MessageKind::ECHO_BULK,
            version,
            id,
            e.status(),
        ),
    }
}

/// Answers an ECHO with its payload, in a reply buffer reserved at start-up.
fn echo<P: Platform>(
    shared: &Shared<P>,
    packet: IncomingPacket,
    version: u32,
    id: u64,
    payload: &[u8],
) {
    let Some(mut buffer) = take_reply_buffer(shared) else {
        bump(&shared.stats.alloc_failures);
        complete_status(
            shared,
            packet,
            MessageKind::ECHO,
            version,
            id,
            NtStatus::STATUS_INSUFFICIENT_RESOURCES,
        );
        return;
    };
    match Reply::echo(version, id, payload).write_bytes(&mut buffer[..]) {
        Ok(reply) => {
            shared.stats.completed(NtStatus::STATUS_SUCCESS);
            packet.complete(reply);
        }
        Err(e) => complete_status(shared, packet, MessageKind::ECHO, version, id, e.status()),
    }
    // The buffer goes back to the pool here (`buffer` drops), after KMCL is done with it.
}

/// A free ECHO reply buffer (`MAX_MESSAGE` bytes), if one is left; dropping the lease gives
/// it back.
///
/// # IRQL
/// Any.
pub(crate) fn take_reply_buffer<P: Platform>(shared: &Shared<P>) -> Option<Lease<'_, ReplyBuffer>> {
    shared.replies.take()
}

/// Hands a notification to the oldest parked RECV request, or queues it. Returns the status
/// the NOTIFY packet is completed with.
pub(crate) fn deliver_notification<P: Platform>(shared: &Shared<P>, payload: &[u8]) -> NtStatus {
    let mut state = shared.notify.lock();
    let seq = state.next_seq;
    if let Some(mut request) = shared.platform.next_parked_recv() {
        state.next_seq += 1;
        let dropped = core::mem::take(&mut state.dropped_since_last);
        drop(state);
        // A parked request's output was checked against RECV_OUT_MAX before it was parked.
        match write_recv_output(request.output(), seq, dropped, payload) {
            Ok(len) => {
                bump(&shared.stats.notify_delivered);
                request.complete(NtStatus::STATUS_SUCCESS, len);
            }
            Err(e) => request.complete(e.status(), 0),
        }
        return NtStatus::STATUS_SUCCESS;
    }
    match state.queue.push(seq, payload) {
        Ok(()) => {
            state.next_seq += 1;
            drop(state);
            bump(&shared.stats.notify_queued);
            NtStatus::STATUS_SUCCESS
        }
        Err(PushError::Full | PushError::TooLarge) => {
            state.dropped_since_last += 1;
            drop(state);
            bump(&shared.stats.notify_dropped);
            QUEUE_FULL_STATUS
        }
    }
}

/// The newest version the driver proposes: [`SUPPORTED_MAX`] (1.1), or 1.0 when the
/// configuration has no bulk area.
pub(crate) fn proposed_max(config: &crate::CoreConfig) -> u32 {
    if config.bulk_halves().is_some() {
        SUPPORTED_MAX
    } else {
        PROTOCOL_V1
    }
}

/// The largest request [`sync_request`] sends (NEGOTIATE and BULK_OFFER).
const SYNC_REQUEST_MAX: usize = 64;
const _: () = assert!(NEGOTIATE_REQUEST_SIZE <= SYNC_REQUEST_MAX);
const _: () = assert!(vmbmsg_proto::wire::BULK_OFFER_SIZE <= SYNC_REQUEST_MAX);

/// Sends `message` as a synchronous request (waiting at most the negotiation timeout) and
/// counts it; returns the host's reply, in `reply`. A reply longer than `reply` is the host's
/// malformed reply: KMCL fails the request with `STATUS_BUFFER_OVERFLOW`, counted here as a
/// length mismatch.
///
/// # Errors
/// `STATUS_INTERNAL_ERROR` when `message` does not encode (nothing sent); KMCL's status
/// otherwise (timed out: `STATUS_CANCELLED` or `STATUS_IO_TIMEOUT`; closing; overflow).
///
/// # IRQL
/// PASSIVE_LEVEL.
pub(crate) fn sync_request<'r, P: Platform>(
    shared: &Shared<P>,
    channel: ChannelRef<'_>,
    message: &GuestMessage<'_>,
    reply: &'r mut [u8],
) -> Result<&'r [u8], NtStatus> {
    let mut request = [0u8; SYNC_REQUEST_MAX];
    let len = message
        .write(&mut request)
        .map_err(|_| NtStatus::STATUS_INTERNAL_ERROR)?;
    let sent = channel.send_sync(
        request.get(..len).unwrap_or_default(),
        reply,
        Timeout::After(shared.config.negotiate_timeout),
    );
    shared.stats.sent(len);
    match sent {
        Ok(n) => Ok(reply.get(..n).unwrap_or_default()),
        Err(status) => {
            if status == NtStatus::STATUS_BUFFER_OVERFLOW {
                shared.stats.malformed(MalformedReason::LengthMismatch);
            }
            Err(status)
        }
    }
}

/// Proposes our version range with a synchronous request; returns the version the host chose,
/// or records why there is none (NEGOTIATION_FAILED and its reason).
///
/// # IRQL
/// PASSIVE_LEVEL (from `EvtChannelPostStarted`).
fn negotiate<P: Platform>(shared: &Shared<P>, channel: ChannelRef<'_>) -> Option<u32> {
    shared.set_state(ChannelState::NEGOTIATING);
    let id = shared.next_id();
    let max = proposed_max(&shared.config);
    let mut reply = [0u8; NEGOTIATE_REPLY_SIZE];
    let message = GuestMessage::negotiate(id, SUPPORTED_MIN, max);
    let outcome = match sync_request(shared, channel, &message, &mut reply) {
        Ok(reply) => parse_negotiate_reply(reply, id, SUPPORTED_MIN, max),
        Err(status) => {
            // Not sent, timed out (STATUS_CANCELLED), channel closing, or a reply larger than
            // any NEGOTIATE reply (STATUS_BUFFER_OVERFLOW, counted as malformed): no version.
            let why = if status == NtStatus::STATUS_BUFFER_OVERFLOW {
                StateReason::MALFORMED_REPLY
            } else if status == NtStatus::STATUS_CANCELLED || status == NtStatus::STATUS_IO_TIMEOUT
            {
                StateReason::TIMED_OUT
            } else {
                StateReason::SEND_FAILED
            };
            shared.negotiation_failed(why);
            return None;
        }
    };
    match outcome {
        Ok(NegotiateOutcome::Accepted(version)) => Some(version),
        Ok(NegotiateOutcome::Rejected(_)) => {
            shared.negotiation_failed(StateReason::REJECTED);
            None
        }
        Err(e) => {
            shared.stats.malformed(e.reason());
            shared.negotiation_failed(StateReason::MALFORMED_REPLY);
            None
        }
    }
}
