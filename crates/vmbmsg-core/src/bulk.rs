//! Protocol 1.1's bulk area: a GPADL the guest offers right after negotiating 1.1, through
//! which SEND and ECHO payloads larger than one ring packet travel (the protocol in
//! `vmbmsg_proto`'s crate docs, "Bulk transfers").
//!
//! The area is one [`kmcl::SharedBuffer`]: the guest's half is [`CoreConfig::bulk_send_slots`]
//! slots of [`MAX_BULK_PAYLOAD`] bytes, one per SEND_BULK in flight; the host's half is
//! [`CoreConfig::bulk_host_bytes`]. It is only ever read and written through kmcl's copies (the
//! host may write it at any time), and lives from `EvtChannelPostStarted` (created, offered)
//! to `EvtChannelClosed` (deleted, its buffer kept for the next session).
//!
//! Who may touch what, and when:
//! * a SEND IOCTL takes a free slot, copies the caller's payload into it and sends SEND_BULK;
//!   the slot is free again when that transaction ends (the host's reply, a failed send or the
//!   close), so the guest never rewrites bytes the host may still be reading;
//! * an ECHO_BULK delivery reads the host's range and writes the echo back over it before it
//!   completes the packet; the host owns the range until then;
//! * `EvtChannelClosed` takes the area out of its [`Rundown`](crate::sync::Rundown) (waiting for
//!   the uses above, each a copy long) and deletes the GPADL, which KMCL requires by the end of
//!   that callback.

use kmcl::{ChannelRef, Gpadl, GpadlAccess, NtStatus, SharedBuffer};
use vmbmsg_proto::wire::{
    GuestMessage, MAX_BULK_PAYLOAD, MessageKind, STATUS_REPLY_SIZE, parse_reply,
};

use crate::sync::atomic::{AtomicU32, Ordering};
use crate::{CoreConfig, Platform, Shared};

/// The live bulk area of a 1.1 session.
pub(crate) struct Bulk {
    gpadl: Gpadl,
    /// Bytes of the guest's half (offset 0).
    guest_half: u32,
    /// Bytes of the host's half (offset `guest_half`).
    host_half: u32,
}

/// The most slots [`CoreConfig::bulk_send_slots`] may ask for (one bit each).
pub(crate) const MAX_SLOTS: u32 = 32;

impl CoreConfig {
    /// The bulk area's halves `(guest, host)` in bytes, `None` when the configuration turns
    /// protocol 1.1 off (no slot, or no host half).
    pub(crate) fn bulk_halves(&self) -> Option<(u32, u32)> {
        let slots = self.bulk_send_slots;
        if slots == 0 || slots > MAX_SLOTS || self.bulk_host_bytes == 0 {
            return None;
        }
        let guest = slots.checked_mul(u32::try_from(MAX_BULK_PAYLOAD).ok()?)?;
        guest.checked_add(self.bulk_host_bytes)?;
        Some((guest, self.bulk_host_bytes))
    }
}

/// Free slots of the guest's half: bit `i` set while slot `i` is free.
pub(crate) struct Slots(AtomicU32);

impl Slots {
    /// `count` free slots (at most [`MAX_SLOTS`]).
    pub(crate) fn new(count: u32) -> Self {
        let mask = match count {
            0 => 0,
            n if n >= MAX_SLOTS => u32::MAX,
            n => (1u32 << n) - 1,
        };
        Self(AtomicU32::new(mask))
    }

    /// Takes a free slot.
    ///
    /// # IRQL
    /// Any.
    pub(crate) fn take(&self) -> Option<u32> {
        let mut free = self.0.load(Ordering::Relaxed);
        loop {
            if free == 0 {
                return None;
            }
            let slot = free.trailing_zeros();
            match self.0.compare_exchange_weak(
                free,
                free & !(1 << slot),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(slot),
                Err(now) => free = now,
            }
        }
    }

    /// Gives a slot from [`take`](Self::take) back.
    ///
    /// # IRQL
    /// Any.
    pub(crate) fn give_back(&self, slot: u32) {
        if slot < MAX_SLOTS {
            self.0.fetch_or(1 << slot, Ordering::Release);
        }
    }
}

impl Bulk {
    fn buffer(&self) -> Result<&SharedBuffer, NtStatus> {
        self.gpadl.buffer().ok_or(NtStatus::STATUS_INTERNAL_ERROR)
    }

    /// Copies a SEND payload into `slot` of the guest's half; returns its offset there.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the payload or the slot does not fit.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn write_slot(&self, slot: u32, payload: &[u8]) -> Result<u32, NtStatus> {
        let offset = usize::try_from(slot)
            .ok()
            .and_then(|s| s.checked_mul(MAX_BULK_PAYLOAD))
            .filter(|o| {
                payload.len() <= MAX_BULK_PAYLOAD
                    && o + MAX_BULK_PAYLOAD <= usize::try_from(self.guest_half).unwrap_or(0)
            })
            .ok_or(NtStatus::STATUS_INVALID_PARAMETER)?;
        self.buffer()?.write(offset, payload)?;
        u32::try_from(offset).map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)
    }

    /// Echoes the host's `len` bytes at `offset` of its half: reads them (one pass, in chunks
    /// through `scratch`) and writes them back in place.
    ///
    /// # Errors
    /// `STATUS_DATA_ERROR` when the range is not inside the host's half.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (no allocation).
    pub(crate) fn echo_in_place(
        &self,
        offset: u32,
        len: u32,
        scratch: &mut [u8],
    ) -> Result<(), NtStatus> {
        let end = u64::from(offset) + u64::from(len);
        if len == 0 || end > u64::from(self.host_half) {
            return Err(NtStatus::STATUS_DATA_ERROR);
        }
        let start = usize::try_from(u64::from(self.guest_half) + u64::from(offset))
            .map_err(|_| NtStatus::STATUS_DATA_ERROR)?;
        let len = usize::try_from(len).map_err(|_| NtStatus::STATUS_DATA_ERROR)?;
        echo_in_place(self.buffer()?, start, len, scratch)
    }

    /// Deletes the GPADL (waiting while the host has it mapped) and gives the buffer back.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub(crate) fn delete(self) -> Option<SharedBuffer> {
        self.gpadl.delete()
    }
}

/// The stack chunk an ECHO_BULK falls back to when no reply buffer is free: small enough for
/// a DPC's stack.
pub const ECHO_CHUNK: usize = 512;

/// Echoes the `len` bytes at `start` of `buffer` in place: copies them out, `scratch.len()`
/// bytes at a time, and back, so each byte is read once and written once and the host never
/// sees a half-echoed chunk. What the driver does per ECHO_BULK once the range is checked
/// (with a free ECHO reply buffer as `scratch`, else [`ECHO_CHUNK`] bytes of stack); public
/// for the benchmark that compares it with memcpy.
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` when the range is not inside `buffer` or `scratch` is empty.
///
/// # IRQL
/// Any (no allocation).
pub fn echo_in_place(
    buffer: &SharedBuffer,
    start: usize,
    len: usize,
    scratch: &mut [u8],
) -> Result<(), NtStatus> {
    if scratch.is_empty() {
        return Err(NtStatus::STATUS_INVALID_PARAMETER);
    }
    let mut done = 0;
    while done < len {
        let n = (len - done).min(scratch.len());
        let part = scratch
            .get_mut(..n)
            .ok_or(NtStatus::STATUS_INTERNAL_ERROR)?;
        buffer.read(start + done, part)?;
        buffer.write(start + done, part)?;
        done += n;
    }
    Ok(())
}

/// Creates the bulk area and offers it to the host (BULK_OFFER, synchronous): the area of the
/// session on success, `None` when 1.1 runs without one (no memory, no GPADL, the host refused
/// or did not answer), which GET_INFO reports.
///
/// # IRQL
/// PASSIVE_LEVEL (from `EvtChannelPostStarted`, after NEGOTIATE).
pub(crate) fn offer<P: Platform>(
    shared: &Shared<P>,
    channel: ChannelRef<'_>,
    version: u32,
) -> Option<Bulk> {
    let (guest_half, host_half) = shared.config.bulk_halves()?;
    let total = usize::try_from(u64::from(guest_half) + u64::from(host_half)).ok()?;
    let spare = shared.bulk_spare.lock().take();
    let buffer = match spare {
        Some(b) if b.len() >= total => b,
        _ => match SharedBuffer::try_new(total) {
            Ok(b) => b,
            Err(_) => {
                crate::stats::bump(&shared.stats.alloc_failures);
                return None;
            }
        },
    };
    let gpadl = match channel.create_gpadl(buffer, GpadlAccess::ReadWrite) {
        Ok(g) => g,
        Err((buffer, _status)) => {
            *shared.bulk_spare.lock() = Some(buffer);
            return None;
        }
    };
    let bulk = Bulk {
        gpadl,
        guest_half,
        host_half,
    };
    let id = shared.next_id();
    let message = GuestMessage::bulk_offer(version, id, bulk.gpadl.handle(), guest_half, host_half);
    let mut reply = [0u8; STATUS_REPLY_SIZE];
    let accepted = match crate::packet::sync_request(shared, channel, &message, &mut reply) {
        Ok(reply) => match parse_reply(reply, MessageKind::BULK_OFFER, id) {
            Ok(r) => r.status.is_success(),
            Err(e) => {
                shared.stats.malformed(e.reason());
                false
            }
        },
        // Not sent, timed out, closing, or an overlong reply (counted by `sync_request`).
        Err(_) => false,
    };
    if accepted {
        Some(bulk)
    } else {
        if let Some(buffer) = bulk.delete() {
            *shared.bulk_spare.lock() = Some(buffer);
        }
        None
    }
}
