//! The IOCTL handlers: GET_INFO, GET_STATS, RESET_STATS, PING, SEND, RECV.
//!
//! Each validates the code and buffer sizes first (one table, `IoctlCode::check_buffers`),
//! then either completes the request or hands it to the path that will (a send's completion,
//! the parked-RECV queue). Every request is completed exactly once.

use crate::try_arc::TryArc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use kmcl::{ChannelRef, Completion, NtStatus, OutgoingPacket, SendError, SendFlags};
use vmbmsg_proto::ioctl::{
    ABI_VERSION, BAD_REPLY_STATUS, ChannelState, InfoOut, IoctlCode, NOT_READY_STATUS, PingOut,
    SEND_PAYLOAD_MAX, SendOut, StateReason, TOO_MANY_PARKED_STATUS, parse_send_input, write_output,
    write_recv_output,
};
use vmbmsg_proto::wire::{
    BULK_REF_SIZE, GuestMessage, HEADER_SIZE, MAX_PAYLOAD, MessageKind, PING_SIZE, SUPPORTED_MIN,
    parse_ping_reply, parse_reply,
};
use zerocopy::little_endian::{I32, U16, U32, U64};

use crate::stats::bump;
use crate::sync::atomic::AtomicU64;
use crate::sync::now_ns;

use crate::{CancelToken, Core, DRIVER_VERSION, IoRequest, Platform, Shared};

pub(crate) fn handle<P: Platform>(core: &Core<P>, code: u32, request: P::Request) {
    let Some(code) = IoctlCode::from_raw(code) else {
        request.complete(NtStatus::STATUS_INVALID_DEVICE_REQUEST, 0);
        return;
    };
    let mut request = request;
    let (input_len, output_len) = (request.input().len(), request.output().len());
    if let Err(e) = code.check_buffers(input_len, output_len) {
        request.complete(e.status(), 0);
        return;
    }
    match code {
        IoctlCode::GetInfo => {
            let info = info(&core.shared);
            complete_with(request, &info);
        }
        IoctlCode::GetStats => {
            let stats = core.shared.stats.snapshot();
            complete_with(request, &stats);
        }
        IoctlCode::ResetStats => {
            core.shared.stats.reset();
            request.complete(NtStatus::STATUS_SUCCESS, 0);
        }
        IoctlCode::Ping => ping(core, request),
        IoctlCode::Send => send(core, request),
        IoctlCode::Recv => recv(&core.shared, request),
    }
}

/// Writes `value` to the output and completes with its size.
fn complete_with<R: IoRequest, T: zerocopy::IntoBytes + zerocopy::Immutable>(
    mut request: R,
    value: &T,
) {
    match write_output(request.output(), value) {
        Ok(len) => request.complete(NtStatus::STATUS_SUCCESS, len),
        Err(e) => request.complete(e.status(), 0),
    }
}

fn info<P: Platform>(shared: &Shared<P>) -> InfoOut {
    let (major, minor, patch) = DRIVER_VERSION;
    let as_u32 = |v: usize| U32::new(u32::try_from(v).unwrap_or(u32::MAX));
    InfoOut {
        abi_version: U32::new(ABI_VERSION),
        channel_state: shared.state(),
        driver_major: U16::new(major),
        driver_minor: U16::new(minor),
        driver_patch: U16::new(patch),
        state_reason: StateReason::new(shared.state_reason.load(Ordering::Acquire)),
        protocol_version: U32::new(shared.version.load(Ordering::Acquire)),
        protocol_min: U32::new(SUPPORTED_MIN),
        protocol_max: U32::new(crate::packet::proposed_max(&shared.config)),
        max_payload: as_u32(if shared.bulk.is_set() {
            SEND_PAYLOAD_MAX
        } else {
            MAX_PAYLOAD
        }),
        notify_queue_depth: as_u32(shared.config.notify_depth),
        max_parked_recv: as_u32(shared.config.max_parked_recv),
    }
}

/// PING: sends a nonce and completes when the host echoes it, with the round trip; or with
/// `STATUS_CANCELLED` when its caller cancels it first.
fn ping<P: Platform>(core: &Core<P>, request: P::Request) {
    let shared = &core.shared;
    // Held until the send returned: the channel cannot be suspended in between.
    let (Some(permit), Some(channel)) = (shared.begin_send(), core.channel()) else {
        request.complete(NOT_READY_STATUS, 0);
        return;
    };
    let version = permit.version;
    let id = shared.next_id();
    let nonce = id;
    let mut message = [0u8; PING_SIZE];
    let Ok(len) = GuestMessage::ping(version, id, nonce).write(&mut message) else {
        request.complete(NtStatus::STATUS_INTERNAL_ERROR, 0);
        return;
    };
    let Some(packet) = packet_for(
        core,
        channel.handle(),
        id,
        request,
        &shared.stats.ping_failed,
    ) else {
        return;
    };
    let done = {
        let shared = TryArc::clone(shared);
        let started = now_ns();
        move |c: Completion<'_>| ping_answered(&shared, id, nonce, started, c)
    };
    let sent = packet.send(
        message.get(..len).unwrap_or_default(),
        SendFlags::WAIT_FOR_COMPLETION,
        done,
    );
    drop(permit);
    after_send(shared, sent, len);
}

/// The packet of a PING or SEND, allocated, with its request put in the table of requests
/// waiting for the host ([`wait_for_answer`]). On failure the request is completed with the
/// status and counted in `failed` (and in `alloc_failures` when no packet could be allocated),
/// and `None` is returned; a packet already allocated is freed unsent.
fn packet_for<'ch, P: Platform>(
    core: &Core<P>,
    channel: ChannelRef<'ch>,
    id: u64,
    request: P::Request,
    failed: &AtomicU64,
) -> Option<OutgoingPacket<'ch>> {
    let packet = match channel.allocate_packet() {
        Ok(p) => p,
        Err(status) => {
            bump(&core.shared.stats.alloc_failures);
            bump(failed);
            request.complete(status, 0);
            return None;
        }
    };
    match wait_for_answer(core, id, request) {
        Ok(()) => Some(packet),
        Err((request, status)) => {
            bump(failed);
            request.complete(status, 0);
            None
        }
    }
}

/// After a PING's or SEND's `send`: counts the bytes the bus took, or runs the closure a
/// refused send gave back with the refusal's status (the closure completes the request).
fn after_send<P: Platform, F: FnOnce(Completion<'_>)>(
    shared: &Shared<P>,
    sent: Result<(), SendError<'_, F>>,
    len: usize,
) {
    match sent {
        Ok(()) => shared.stats.sent(len),
        // Runs the closure, unless KMCL already ran the completion routine for the refused
        // send (which ran it with KMCL's status): either way the request completes once.
        Err(e) => e.complete_with_status(),
    }
}

/// Puts a PING or SEND request in the table of requests waiting for the host, under the
/// message id `id`, cancellable from now on.
///
/// # Errors
/// The request back with the status to fail it with (`STATUS_INSUFFICIENT_RESOURCES`, counted
/// as an allocation failure; `STATUS_CANCELLED` when its caller already cancelled it).
pub(crate) fn wait_for_answer<P: Platform>(
    core: &Core<P>,
    id: u64,
    request: P::Request,
) -> Result<(), (P::Request, NtStatus)> {
    let token = CancelToken::new(core.shared.clone(), id);
    let inserted = core.shared.waiting.insert(id, request, token);
    if let Err((_, NtStatus::STATUS_INSUFFICIENT_RESOURCES)) = &inserted {
        bump(&core.shared.stats.alloc_failures);
    }
    inserted
}

/// The end of a PING's transaction (the send's completion closure): the host's answer, a
/// failed send, or the channel closing. Completes the request, unless its caller cancelled it
/// (then it was completed with `STATUS_CANCELLED`, and the transaction counts as failed
/// whatever the host answered).
pub(crate) fn ping_answered<P: Platform>(
    shared: &Shared<P>,
    id: u64,
    nonce: u64,
    started: u64,
    c: Completion<'_>,
) {
    let rtt = now_ns().saturating_sub(started);
    let request = shared.waiting.take_answered(id);
    let host_status = match (
        c.status.is_success(),
        parse_ping_reply(c.response, id, nonce),
    ) {
        (true, Ok(host_status)) => Ok(host_status),
        (true, Err(e)) => {
            shared.stats.malformed(e.reason());
            Err(BAD_REPLY_STATUS)
        }
        (false, _) => Err(c.status),
    };
    let (request, host_status) = match (request, host_status) {
        (Some(request), Ok(host_status)) => (request, host_status),
        (Some(request), Err(status)) => {
            bump(&shared.stats.ping_failed);
            request.complete(status, 0);
            return;
        }
        // Cancelled: the cancel path completed the request with STATUS_CANCELLED. The
        // transaction ends here, failed whatever the host answered.
        (None, _) => {
            bump(&shared.stats.ping_failed);
            return;
        }
    };
    if host_status.is_success() {
        bump(&shared.stats.ping_ok);
        shared.stats.rtt(rtt);
    } else {
        bump(&shared.stats.ping_failed);
    }
    let out = PingOut {
        nonce: U64::new(nonce),
        round_trip_ns: U64::new(rtt),
        host_status: I32::new(host_status.0),
        reserved: U32::ZERO,
    };
    complete_with(request, &out);
}

/// SEND: sends the caller's payload and completes with the host's status; or with
/// `STATUS_CANCELLED` when its caller cancels it first.
fn send<P: Platform>(core: &Core<P>, request: P::Request) {
    let shared = &core.shared;
    let payload = match parse_send_input(request.input()) {
        Ok(p) => p,
        Err(e) => {
            request.complete(e.status(), 0);
            return;
        }
    };
    // Held until the send returned: the channel cannot be suspended in between.
    let (Some(permit), Some(channel)) = (shared.begin_send(), core.channel()) else {
        request.complete(NOT_READY_STATUS, 0);
        return;
    };
    if payload.len() > MAX_PAYLOAD {
        send_bulk(core, request, &permit, channel.handle());
        drop(permit);
        return;
    }
    let version = permit.version;
    let id = shared.next_id();
    let mut message = Vec::new();
    if message
        .try_reserve_exact(HEADER_SIZE + payload.len())
        .is_err()
    {
        bump(&shared.stats.alloc_failures);
        request.complete(NtStatus::STATUS_INSUFFICIENT_RESOURCES, 0);
        return;
    }
    message.resize(HEADER_SIZE + payload.len(), 0);
    let len = match GuestMessage::send(version, id, payload).write(&mut message) {
        Ok(len) => len,
        Err(e) => {
            request.complete(e.status(), 0);
            return;
        }
    };
    message.truncate(len);
    let Some(packet) = packet_for(
        core,
        channel.handle(),
        id,
        request,
        &shared.stats.send_failed,
    ) else {
        return;
    };
    let done = {
        let shared = TryArc::clone(shared);
        move |c: Completion<'_>| send_answered(&shared, MessageKind::SEND, id, c)
    };
    let sent = packet.send_vec(message, SendFlags::WAIT_FOR_COMPLETION, done);
    drop(permit);
    after_send(shared, sent, len);
}

/// A SEND above [`MAX_PAYLOAD`] (protocol 1.1): the payload goes into a free slot of the bulk
/// area and a SEND_BULK names it; the slot is free again when the transaction ends. Fails with
/// `STATUS_INVALID_PARAMETER` on a session without a bulk area (GET_INFO's `max_payload`) and
/// `STATUS_DEVICE_BUSY` while every slot is in use.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
#[inline(never)]
fn send_bulk<P: Platform>(
    core: &Core<P>,
    request: P::Request,
    permit: &crate::SendPermit<'_>,
    channel: ChannelRef<'_>,
) {
    let shared = &core.shared;
    let Some(bulk) = shared.bulk.get() else {
        request.complete(NtStatus::STATUS_INVALID_PARAMETER, 0);
        return;
    };
    let Some(slot) = shared.bulk_slots.take() else {
        bump(&shared.stats.send_failed);
        request.complete(NtStatus::STATUS_DEVICE_BUSY, 0);
        return;
    };
    // The input was parsed before; parse again for the borrow (cheap: a header).
    let written = parse_send_input(request.input())
        .map_err(|e| e.status())
        .and_then(|payload| {
            let offset = bulk.write_slot(slot, payload)?;
            let len =
                u32::try_from(payload.len()).map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)?;
            Ok((offset, len))
        });
    drop(bulk);
    let (offset, len) = match written {
        Ok(range) => range,
        Err(status) => {
            shared.bulk_slots.give_back(slot);
            request.complete(status, 0);
            return;
        }
    };
    let version = permit.version;
    let id = shared.next_id();
    let mut message = [0u8; BULK_REF_SIZE];
    let size = match GuestMessage::send_bulk(version, id, offset, len).write(&mut message) {
        Ok(n) => n,
        Err(e) => {
            shared.bulk_slots.give_back(slot);
            request.complete(e.status(), 0);
            return;
        }
    };
    let Some(packet) = packet_for(core, channel, id, request, &shared.stats.send_failed) else {
        shared.bulk_slots.give_back(slot);
        return;
    };
    let done = {
        let shared = TryArc::clone(shared);
        move |c: Completion<'_>| {
            // The host is done with the slot: it answered, or the send failed or was cancelled
            // by the close (after which the GPADL is gone).
            shared.bulk_slots.give_back(slot);
            send_answered(&shared, MessageKind::SEND_BULK, id, c);
        }
    };
    let sent = packet.send(
        message.get(..size).unwrap_or_default(),
        SendFlags::WAIT_FOR_COMPLETION,
        done,
    );
    after_send(shared, sent, size);
}

/// The end of a SEND's (or SEND_BULK's) transaction, as [`ping_answered`] for a PING.
fn send_answered<P: Platform>(shared: &Shared<P>, kind: MessageKind, id: u64, c: Completion<'_>) {
    let request = shared.waiting.take_answered(id);
    let host_status = if c.status.is_success() {
        match parse_reply(c.response, kind, id) {
            Ok(reply) => Ok(reply.status),
            Err(e) => {
                shared.stats.malformed(e.reason());
                Err(BAD_REPLY_STATUS)
            }
        }
    } else {
        Err(c.status)
    };
    let (request, host_status) = match (request, host_status) {
        (Some(request), Ok(host_status)) => (request, host_status),
        (Some(request), Err(status)) => {
            bump(&shared.stats.send_failed);
            request.complete(status, 0);
            return;
        }
        // Cancelled: the cancel path completed the request with STATUS_CANCELLED. The
        // transaction ends here, failed whatever the host answered.
        (None, _) => {
            bump(&shared.stats.send_failed);
            return;
        }
    };
    bump(if host_status.is_success() {
        &shared.stats.send_ok
    } else {
        &shared.stats.send_failed
    });
    let out = SendOut {
        host_status: I32::new(host_status.0),
        reserved: U32::ZERO,
    };
    complete_with(request, &out);
}

/// RECV: the oldest queued notification now, or park until one arrives.
fn recv<P: Platform>(shared: &Shared<P>, mut request: P::Request) {
    let mut state = shared.notify.lock();
    let dropped = state.dropped_since_last;
    let written = state
        .queue
        .front()
        .map(|(seq, message)| write_recv_output(request.output(), seq, dropped, message));
    match written {
        Some(Ok(len)) => {
            state.queue.pop_front();
            state.dropped_since_last = 0;
            drop(state);
            bump(&shared.stats.notify_delivered);
            request.complete(NtStatus::STATUS_SUCCESS, len);
        }
        Some(Err(e)) => {
            drop(state);
            request.complete(e.status(), 0);
        }
        None if shared.state() != ChannelState::READY => {
            drop(state);
            request.complete(NOT_READY_STATUS, 0);
        }
        None if shared.platform.parked_recv_count() >= shared.config.max_parked_recv => {
            drop(state);
            request.complete(TOO_MANY_PARKED_STATUS, 0);
        }
        None => {
            // Parked under the lock, so a notification arriving now either sees this request
            // or was queued before we looked.
            let parked = shared.platform.park_recv(request);
            drop(state);
            if let Err((request, status)) = parked {
                request.complete(status, 0);
            }
        }
    }
}
