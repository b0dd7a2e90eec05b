//! Incoming packets: one completion obligation per packet, in a type.

use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicU64, Ordering};

use kmcl_sys as sys;

use crate::library::{PacketCompleteFn, PacketExternalFn, PacketRetireFn, entry, hot_entry};
use ntstatus::NtStatus;

/// Packets dropped without being completed, failed or deferred, in this driver (all channels).
static UNCONSUMED: AtomicU64 = AtomicU64::new(0);

/// How many [`IncomingPacket`]s were dropped unconsumed (and so completed with the handler's
/// [`UNCONSUMED_RESPONSE`](crate::ChannelHandler::UNCONSUMED_RESPONSE)) since the driver
/// loaded. Non-zero means a bug in the driver's packet path; tests assert it stays put.
///
/// # IRQL
/// Any.
#[must_use]
pub fn unconsumed_packets() -> u64 {
    UNCONSUMED.load(Ordering::Relaxed)
}

/// The flags KMCL passes with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketFlags(u32);

impl PacketFlags {
    /// The packet references external data (`VmbChannelPacketGetExternalData`).
    pub const EXTERNAL_DATA: Self = Self(sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA);

    pub(crate) const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw bits, unknown ones included.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One packet the host sent, not yet retired.
///
/// Retire it exactly once with [`complete`](Self::complete), [`fail`](Self::fail) or
/// [`defer_to_passive`](Self::defer_to_passive); each consumes it. It is `Send`: it may be
/// parked and completed later from another thread (KMCL's disable and pause wait for it).
/// Dropping it unconsumed completes it with the handler's `UNCONSUMED_RESPONSE` and counts it
/// in [`unconsumed_packets`].
#[must_use = "complete, fail or defer every packet"]
#[derive(Debug)]
pub struct IncomingPacket {
    raw: sys::VMBPACKETCOMPLETION,
    // Behind a thin reference: two words in all, so the packet travels in registers.
    fallback: &'static &'static [u8],
}

// SAFETY: a VMBPACKETCOMPLETION may be completed from any thread at ≤ DISPATCH_LEVEL
// (reference §6.1: "inside the callback, or at any time later"); the fallback is 'static.
unsafe impl Send for IncomingPacket {}

impl IncomingPacket {
    /// Wraps the completion token KMCL passed to `EvtVmbChannelProcessPacket`.
    ///
    /// # Safety
    /// `raw` must be a token KMCL delivered and nobody has retired, and it must be wrapped
    /// once: the returned value owns the obligation to retire it.
    pub(crate) unsafe fn from_raw(
        raw: sys::VMBPACKETCOMPLETION,
        fallback: &'static &'static [u8],
    ) -> Self {
        Self { raw, fallback }
    }

    /// Completes the packet (`VmbChannelPacketComplete`): if the host asked for a completion,
    /// `response` is sent back. `response` must fit the channel's maximum packet size; it may
    /// be freed as soon as this returns.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn complete(self, response: &[u8]) {
        let this = ManuallyDrop::new(self);
        retire(this.raw, response);
    }

    /// Fails the packet (`VmbChannelPacketFail`) as hopelessly malformed. **This stops the
    /// channel's incoming queue**: no more packets are delivered until the channel is closed.
    /// For a packet that is merely invalid, [`complete`](Self::complete) it with an error
    /// response instead.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn fail(self) {
        let this = ManuallyDrop::new(self);
        if let Some(fail) = entry!(PACKET_FAIL as PacketRetireFn) {
            // SAFETY: `this.raw` is an unretired token owned by this value, which is consumed,
            // so it is retired exactly once (Fail is terminal, reference §6.1). `fail` is the
            // library's, and the packet's channel holds a reference on it.
            unsafe { fail(this.raw) };
        }
    }

    /// Returns the packet to KMCL to be delivered again at PASSIVE_LEVEL
    /// (`VmbChannelPacketDeferToPassive`); the redelivery carries the obligation.
    ///
    /// # IRQL
    /// Only inline, from the `process_packet` call that delivered this packet (the model's
    /// verifier flags any other use).
    pub fn defer_to_passive(self) {
        let this = ManuallyDrop::new(self);
        if let Some(defer) = entry!(PACKET_DEFER as PacketRetireFn) {
            // SAFETY: unretired token owned by this consumed value; handed back to KMCL once,
            // through the library's function (the channel holds a reference on it).
            unsafe { defer(this.raw) };
        }
    }
}

/// What [`IncomingPacket::external_data`] found.
#[derive(Debug)]
pub enum ExternalData {
    /// The packet's external data, mapped: `mdl` describes its locked pages (no virtual
    /// address: map it with `MmGetSystemAddressForMdlSafe` to read it, and unmap it before
    /// retiring the packet). Valid until the packet is retired; KMCL frees it.
    Mapped {
        /// The packet, still to be retired.
        packet: IncomingPacket,
        /// The MDL (`PMDL`).
        mdl: sys::PMDL,
    },
    /// `STATUS_PENDING`: the data is not ready. The packet went back to KMCL unretired, as
    /// KMCL requires: return from `process_packet` without touching it; KMCL delivers it again
    /// (possibly at another IRQL) once the data is ready, and the call then succeeds
    /// (reference §6.1).
    Pending,
    /// Another failure; the packet comes back to be retired.
    Failed {
        /// The packet, still to be retired.
        packet: IncomingPacket,
        /// KMCL's status (a packet without external data is refused too).
        status: NtStatus,
    },
}

impl IncomingPacket {
    /// The packet's external data (`VmbChannelPacketGetExternalData`), for a packet delivered
    /// with [`PacketFlags::EXTERNAL_DATA`] on a channel that accepts it
    /// ([`ChannelBuilder::max_external_data`](crate::ChannelBuilder::max_external_data)).
    /// `read_only` maps it read-only.
    ///
    /// # IRQL
    /// The IRQL of the `process_packet` call that delivered it (call it from there).
    pub fn external_data(self, read_only: bool) -> ExternalData {
        let flags = if read_only {
            sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY
        } else {
            0
        };
        let Some(get) = entry!(PACKET_EXTERNAL as PacketExternalFn) else {
            return ExternalData::Failed {
                packet: self,
                status: NtStatus::STATUS_NOT_SUPPORTED,
            };
        };
        let mut mdl: sys::PMDL = core::ptr::null_mut();
        // SAFETY: `self.raw` is an unretired token owned by this value; `mdl` is a valid
        // out-pointer; `get` is the library's (the channel holds a reference on it).
        let status = NtStatus(unsafe { get(self.raw, flags, &raw mut mdl) });
        if status == NtStatus::STATUS_PENDING {
            // KMCL keeps the packet and delivers it again: the obligation is no longer ours.
            let _ = ManuallyDrop::new(self);
            return ExternalData::Pending;
        }
        if status.is_success() && !mdl.is_null() {
            ExternalData::Mapped { packet: self, mdl }
        } else {
            ExternalData::Failed {
                packet: self,
                status: if status.is_success() {
                    NtStatus::STATUS_INVALID_PARAMETER
                } else {
                    status
                },
            }
        }
    }
}

impl Drop for IncomingPacket {
    fn drop(&mut self) {
        UNCONSUMED.fetch_add(1, Ordering::Relaxed);
        retire(self.raw, self.fallback);
    }
}

fn retire(raw: sys::VMBPACKETCOMPLETION, response: &[u8]) {
    // A response can never be anywhere near 4 GiB; clamping keeps this total.
    let len = u32::try_from(response.len()).unwrap_or(u32::MAX);
    // Recorded by the `Library` the packet's channel was built with (never missing then).
    let complete = hot_entry!(PACKET_COMPLETE as PacketCompleteFn);
    // SAFETY: 1. `raw` is an unretired token and every caller consumes the `IncomingPacket`
    // that owned it, so it is retired exactly once. 2. `response` is readable for `len` bytes
    // during the call and KMCL is done with it on return (reference §7.4). 3. `complete` is the
    // library's (the channel holds a reference), or before any library, the no-op stand-in.
    unsafe { complete(raw, response.as_ptr().cast_mut().cast(), len) };
}
