//! The IOCTL ABI between `vmbctl` and the driver (all codes `METHOD_BUFFERED`).
//!
//! The codes, buffers and statuses are in the crate-level IOCTL table ([`crate`]). Every
//! buffer struct is `#[repr(C)]`, little-endian, alignment 1 (so a `Vec<u8>` of any alignment
//! works) and size-asserted.
//!
//! # Versioning
//!
//! [`InfoOut::abi_version`] is [`ABI_VERSION`]; the tool reads it first ([`InfoOut::parse`]).
//! Within an ABI version the struct sizes are fixed. A later ABI version may only append
//! fields, so a reader accepts an output at least as long as the struct it knows and reads its
//! prefix ([`read_output`]), and a writer needs a buffer at least that long ([`write_output`]).
//!
//! # Buffer rules the driver applies
//!
//! [`IoctlCode::check_buffers`] checks the fixed minimum sizes of each code before anything
//! else (`STATUS_BUFFER_TOO_SMALL`); SEND's input is then checked exactly with
//! [`parse_send_input`]. RECV needs room for the largest notification ([`RECV_OUT_MAX`]) so
//! that a parked request can take whatever arrives next.

use core::mem::size_of;

use ntstatus::NtStatus;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;
use zerocopy::Unaligned;
use zerocopy::little_endian::I32;
use zerocopy::little_endian::U16;
use zerocopy::little_endian::U32;
use zerocopy::little_endian::U64;

use crate::open_enum::open_enum;
use crate::wire::MAX_BULK_PAYLOAD;
use crate::wire::MAX_PAYLOAD;
use crate::wire::MalformedReason;

// ---- CTL_CODE ---------------------------------------------------------------------------------

/// `METHOD_BUFFERED`: the I/O manager copies input and output through one system buffer.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`: any open handle may send the code.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`: the handle needs read access.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`: the handle needs write access.
pub const FILE_WRITE_ACCESS: u32 = 2;

/// The device type of the vmbmsg control device (custom types are `>= 0x8000`).
pub const FILE_DEVICE_VMBMSG: u32 = 0x8A4D;
const _: () = assert!(FILE_DEVICE_VMBMSG >= 0x8000 && FILE_DEVICE_VMBMSG <= 0xFFFF);

/// The `CTL_CODE` macro of `winioctl.h` / `devioctl.h`:
/// `(device_type << 16) | (access << 14) | (function << 2) | method`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// Function code of GET_INFO (custom functions are `>= 0x800`).
pub const FUNCTION_GET_INFO: u32 = 0x800;
/// Function code of GET_STATS.
pub const FUNCTION_GET_STATS: u32 = 0x801;
/// Function code of RESET_STATS.
pub const FUNCTION_RESET_STATS: u32 = 0x802;
/// Function code of PING.
pub const FUNCTION_PING: u32 = 0x803;
/// Function code of SEND.
pub const FUNCTION_SEND: u32 = 0x804;
/// Function code of RECV.
pub const FUNCTION_RECV: u32 = 0x805;

/// `0x8A4D6000`: driver and channel information ([`InfoOut`]). Read access.
pub const IOCTL_VMBMSG_GET_INFO: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_GET_INFO,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);
/// `0x8A4D6004`: counters ([`StatsOut`]). Read access.
pub const IOCTL_VMBMSG_GET_STATS: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_GET_STATS,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);
/// `0x8A4DA008`: zero the counters. Write access (it changes driver state).
pub const IOCTL_VMBMSG_RESET_STATS: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_RESET_STATS,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// `0x8A4DA00C`: PING the host ([`PingOut`]). Write access (it sends to the host).
pub const IOCTL_VMBMSG_PING: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_PING,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// `0x8A4DA010`: SEND a payload to the host ([`SendIn`] + payload → [`SendOut`]). Write access.
pub const IOCTL_VMBMSG_SEND: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_SEND,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// `0x8A4D6014`: take the next notification ([`RecvOut`] + payload), pending while the queue
/// is empty. Read access.
pub const IOCTL_VMBMSG_RECV: u32 = ctl_code(
    FILE_DEVICE_VMBMSG,
    FUNCTION_RECV,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);

const _: () = assert!(IOCTL_VMBMSG_GET_INFO == 0x8A4D_6000);
const _: () = assert!(IOCTL_VMBMSG_GET_STATS == 0x8A4D_6004);
const _: () = assert!(IOCTL_VMBMSG_RESET_STATS == 0x8A4D_A008);
const _: () = assert!(IOCTL_VMBMSG_PING == 0x8A4D_A00C);
const _: () = assert!(IOCTL_VMBMSG_SEND == 0x8A4D_A010);
const _: () = assert!(IOCTL_VMBMSG_RECV == 0x8A4D_6014);

/// The IOCTL codes the driver handles; anything else is [`IoctlError::UnknownCode`].
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum IoctlCode {
    /// [`IOCTL_VMBMSG_GET_INFO`].
    GetInfo = IOCTL_VMBMSG_GET_INFO,
    /// [`IOCTL_VMBMSG_GET_STATS`].
    GetStats = IOCTL_VMBMSG_GET_STATS,
    /// [`IOCTL_VMBMSG_RESET_STATS`].
    ResetStats = IOCTL_VMBMSG_RESET_STATS,
    /// [`IOCTL_VMBMSG_PING`].
    Ping = IOCTL_VMBMSG_PING,
    /// [`IOCTL_VMBMSG_SEND`].
    Send = IOCTL_VMBMSG_SEND,
    /// [`IOCTL_VMBMSG_RECV`].
    Recv = IOCTL_VMBMSG_RECV,
}

impl IoctlCode {
    /// Every code, in function order.
    pub const ALL: [Self; 6] = [
        Self::GetInfo,
        Self::GetStats,
        Self::ResetStats,
        Self::Ping,
        Self::Send,
        Self::Recv,
    ];

    /// The code for a raw `IoControlCode`, `None` for one this driver does not define.
    #[must_use]
    pub const fn from_raw(code: u32) -> Option<Self> {
        match code {
            IOCTL_VMBMSG_GET_INFO => Some(Self::GetInfo),
            IOCTL_VMBMSG_GET_STATS => Some(Self::GetStats),
            IOCTL_VMBMSG_RESET_STATS => Some(Self::ResetStats),
            IOCTL_VMBMSG_PING => Some(Self::Ping),
            IOCTL_VMBMSG_SEND => Some(Self::Send),
            IOCTL_VMBMSG_RECV => Some(Self::Recv),
            _ => None,
        }
    }

    /// The raw `IoControlCode`.
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The `CTL_CODE` function field (bits 2..=13).
    #[must_use]
    pub const fn function(self) -> u32 {
        (self.code() >> 2) & 0xFFF
    }

    /// The `CTL_CODE` required-access field (bits 14..=15).
    #[must_use]
    pub const fn access(self) -> u32 {
        (self.code() >> 14) & 0x3
    }

    /// The constant's name, e.g. `"IOCTL_VMBMSG_GET_INFO"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::GetInfo => "IOCTL_VMBMSG_GET_INFO",
            Self::GetStats => "IOCTL_VMBMSG_GET_STATS",
            Self::ResetStats => "IOCTL_VMBMSG_RESET_STATS",
            Self::Ping => "IOCTL_VMBMSG_PING",
            Self::Send => "IOCTL_VMBMSG_SEND",
            Self::Recv => "IOCTL_VMBMSG_RECV",
        }
    }

    /// The smallest input buffer the code accepts (SEND: its fixed header; the exact length
    /// is checked by [`parse_send_input`]). Extra input on other codes is ignored.
    #[must_use]
    pub const fn min_input_len(self) -> usize {
        match self {
            Self::Send => size_of::<SendIn>(),
            Self::GetInfo | Self::GetStats | Self::ResetStats | Self::Ping | Self::Recv => 0,
        }
    }

    /// The smallest output buffer the code accepts.
    #[must_use]
    pub const fn min_output_len(self) -> usize {
        match self {
            Self::GetInfo => size_of::<InfoOut>(),
            Self::GetStats => size_of::<StatsOut>(),
            Self::ResetStats => 0,
            Self::Ping => size_of::<PingOut>(),
            Self::Send => size_of::<SendOut>(),
            Self::Recv => RECV_OUT_MAX,
        }
    }

    /// Checks the buffer lengths of a request against [`Self::min_input_len`] and
    /// [`Self::min_output_len`].
    ///
    /// # Errors
    /// [`IoctlError::InputTooSmall`] or [`IoctlError::OutputTooSmall`].
    pub const fn check_buffers(
        self,
        input_len: usize,
        output_len: usize,
    ) -> Result<(), IoctlError> {
        let needed = self.min_input_len();
        if input_len < needed {
            return Err(IoctlError::InputTooSmall {
                needed,
                got: input_len,
            });
        }
        let needed = self.min_output_len();
        if output_len < needed {
            return Err(IoctlError::OutputTooSmall {
                needed,
                got: output_len,
            });
        }
        Ok(())
    }
}

impl TryFrom<u32> for IoctlCode {
    type Error = IoctlError;

    fn try_from(code: u32) -> Result<Self, IoctlError> {
        Self::from_raw(code).ok_or(IoctlError::UnknownCode(code))
    }
}

// ---- request statuses -----------------------------------------------------------------------

/// PING / SEND / RECV: the channel is not READY (not negotiated yet, failed, or closed).
pub const NOT_READY_STATUS: NtStatus = NtStatus::STATUS_DEVICE_NOT_READY;

/// PING / SEND: the host's reply did not parse (the [`crate::wire::ProtoError`] is counted by
/// reason in [`StatsOut::malformed_by_reason`]).
pub const BAD_REPLY_STATUS: NtStatus = NtStatus::STATUS_INVALID_NETWORK_RESPONSE;

/// RECV: [`InfoOut::max_parked_recv`] requests are already waiting.
pub const TOO_MANY_PARKED_STATUS: NtStatus = NtStatus::STATUS_QUOTA_EXCEEDED;

// ---- errors ---------------------------------------------------------------------------------

/// Why an IOCTL buffer was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IoctlError {
    /// An `IoControlCode` the driver does not define.
    #[error("unknown ioctl code {0:#010x}")]
    UnknownCode(u32),
    /// The input buffer is shorter than the code's fixed input.
    #[error("input buffer too small: needs {needed} bytes, got {got}")]
    InputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The output buffer is shorter than what must be written (or, reading an output, shorter
    /// than the struct).
    #[error("output buffer too small: needs {needed} bytes, got {got}")]
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A `payload_len` field disagrees with the bytes that follow its fixed header.
    #[error("payload length {header} in the header, but {actual} bytes follow it")]
    LengthMismatch {
        /// `payload_len` from the fixed header.
        header: u32,
        /// Bytes actually after the fixed header.
        actual: usize,
    },
    /// A payload above its maximum ([`SEND_PAYLOAD_MAX`] for SEND, [`MAX_PAYLOAD`] for RECV).
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Declared or given length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A reserved field or flag is not zero.
    #[error("reserved field `{field}` is not zero")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
    },
    /// The driver speaks another ABI version than the tool.
    #[error("driver ABI version {got}, this tool speaks {expected}")]
    UnsupportedAbi {
        /// The driver's [`InfoOut::abi_version`].
        got: u32,
        /// [`ABI_VERSION`].
        expected: u32,
    },
}

impl IoctlError {
    /// The one mapping from an IOCTL error to the status the request completes with.
    ///
    /// | Error | Status |
    /// |---|---|
    /// | `UnknownCode` | `STATUS_INVALID_DEVICE_REQUEST` |
    /// | `InputTooSmall`, `OutputTooSmall` | `STATUS_BUFFER_TOO_SMALL` |
    /// | `LengthMismatch`, `PayloadTooLarge`, `ReservedNonZero` | `STATUS_INVALID_PARAMETER` |
    /// | `UnsupportedAbi` | `STATUS_REVISION_MISMATCH` |
    pub const fn status(&self) -> NtStatus {
        match self {
            Self::UnknownCode(_) => NtStatus::STATUS_INVALID_DEVICE_REQUEST,
            Self::InputTooSmall { .. } | Self::OutputTooSmall { .. } => {
                NtStatus::STATUS_BUFFER_TOO_SMALL
            }
            Self::LengthMismatch { .. }
            | Self::PayloadTooLarge { .. }
            | Self::ReservedNonZero { .. } => NtStatus::STATUS_INVALID_PARAMETER,
            Self::UnsupportedAbi { .. } => NtStatus::STATUS_REVISION_MISMATCH,
        }
    }
}

// ---- structs --------------------------------------------------------------------------------

/// The ABI version this crate defines ([`InfoOut::abi_version`]).
pub const ABI_VERSION: u32 = 1;

/// Slots in [`StatsOut::malformed_by_reason`]; slot `i` counts [`MalformedReason`] `i`, slots
/// past [`MalformedReason::COUNT`] stay zero (room for new reasons without an ABI change).
pub const MALFORMED_REASON_SLOTS: usize = 16;
const _: () = assert!(MalformedReason::COUNT <= MALFORMED_REASON_SLOTS);

open_enum! {
    /// The channel's state as GET_INFO reports it (LE u32).
    pub struct ChannelState(pub U32 => u32) {
        /// No channel (device not started, or the offer is gone).
        DOWN = 0,
        /// The channel is being opened; waiting for the host.
        WAITING_FOR_HOST = 1,
        /// Open; the NEGOTIATE request is in flight.
        NEGOTIATING = 2,
        /// Negotiated: ECHO, NOTIFY, SEND and PING flow.
        READY = 3,
        /// The host rejected the proposal or answered with garbage.
        NEGOTIATION_FAILED = 4,
        /// Closed (device stopping, or the host closed or rescinded the channel).
        CLOSED = 5,
        /// Paused by the driver (`VmbChannelPause`): open, but nothing flows until it resumes
        /// and negotiates again.
        PAUSED = 6,
    }
}

open_enum! {
    /// Why the channel is in its state, where the state alone does not say (LE u16, in
    /// GET_INFO's formerly reserved field: a driver that predates it reports 0, `NONE`).
    pub struct StateReason(pub U16 => u16) {
        /// Nothing to add (or a driver that does not say).
        NONE = 0,
        /// NEGOTIATION_FAILED: the host rejected every version the driver proposes.
        REJECTED = 1,
        /// NEGOTIATION_FAILED: the host did not answer the proposal within the driver's
        /// negotiation timeout.
        TIMED_OUT = 2,
        /// NEGOTIATION_FAILED: the host's answer was not a valid reply (counted by reason in
        /// GET_STATS).
        MALFORMED_REPLY = 3,
        /// NEGOTIATION_FAILED: the proposal could not be sent, or the channel closed while it
        /// waited.
        SEND_FAILED = 4,
        /// READY with protocol 1.1, but without its bulk area (the driver could not allocate
        /// or map it, or the host refused it): SEND payloads are limited to
        /// [`MAX_PAYLOAD`] bytes (`max_payload`).
        BULK_UNAVAILABLE = 5,
    }
}

/// GET_INFO output (40 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct InfoOut {
    /// [`ABI_VERSION`] of the driver.
    pub abi_version: U32,
    /// Current channel state.
    pub channel_state: ChannelState,
    /// Driver version, major.
    pub driver_major: U16,
    /// Driver version, minor.
    pub driver_minor: U16,
    /// Driver version, patch.
    pub driver_patch: U16,
    /// Why the channel is in `channel_state` (0 before this field existed).
    pub state_reason: StateReason,
    /// The negotiated protocol version (`major << 16 | minor`), 0 if none.
    pub protocol_version: U32,
    /// The oldest protocol version the driver proposes ([`crate::wire::SUPPORTED_MIN`]).
    pub protocol_min: U32,
    /// The newest protocol version the driver proposes ([`crate::wire::SUPPORTED_MAX`]).
    pub protocol_max: U32,
    /// Largest SEND payload now: [`SEND_PAYLOAD_MAX`] on a session with a bulk area (protocol
    /// 1.1), [`MAX_PAYLOAD`] otherwise (the largest RECV payload always).
    pub max_payload: U32,
    /// Capacity of the notification queue.
    pub notify_queue_depth: U32,
    /// How many RECV requests may be parked waiting for a notification.
    pub max_parked_recv: U32,
}
const _: () = assert!(size_of::<InfoOut>() == 40);

impl InfoOut {
    /// Reads a GET_INFO output and checks its ABI version (the tool's first call).
    ///
    /// # Errors
    /// [`IoctlError::OutputTooSmall`] for a short buffer, [`IoctlError::UnsupportedAbi`].
    pub fn parse(bytes: &[u8]) -> Result<Self, IoctlError> {
        let info: Self = read_output(bytes)?;
        let got = info.abi_version.get();
        if got == ABI_VERSION {
            Ok(info)
        } else {
            Err(IoctlError::UnsupportedAbi {
                got,
                expected: ABI_VERSION,
            })
        }
    }
}

macro_rules! stats_out {
    (
        $( $(#[$doc:meta])* $vis:vis $field:ident, )*
        ;
        $(#[$adoc:meta])* $avis:vis $array:ident: $aty:ty,
    ) => {
        /// GET_STATS output: all counters are LE u64 since the driver loaded or the last
        /// RESET_STATS (328 bytes). rx is host→guest, tx guest→host.
        #[repr(C)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned)]
        pub struct StatsOut {
            $( $(#[$doc])* $vis $field: U64, )*
            $(#[$adoc])* $avis $array: $aty,
        }

        impl StatsOut {
            /// The names of the scalar counters, in layout order.
            pub const COUNTER_NAMES: &'static [&'static str] = &[$(stringify!($field),)*];

            /// Every scalar counter as `(name, value)`, in layout order (for the tool's
            /// human and JSON output).
            pub fn counters(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($field), self.$field.get()),)*].into_iter()
            }
        }
    };
}

stats_out! {
    /// Packets received from the host (ECHO, NOTIFY and malformed ones).
    pub rx_packets,
    /// Bytes of those packets.
    pub rx_bytes,
    /// Packets sent to the host (NEGOTIATE, SEND, PING).
    pub tx_packets,
    /// Bytes of those packets.
    pub tx_bytes,
    /// ECHO requests handled.
    pub echo_count,
    /// NOTIFY requests handled.
    pub notify_count,
    /// Malformed messages (the sum of `malformed_by_reason`).
    pub malformed_total,
    /// Host packets completed with a success status.
    pub completions_ok,
    /// ... with a malformed-message status ([`crate::wire::StatusClass::Malformed`]).
    pub completions_malformed,
    /// ... with [`crate::wire::QUEUE_FULL_STATUS`].
    pub completions_queue_full,
    /// ... with [`crate::wire::PREMATURE_STATUS`] (channel not ready).
    pub completions_not_ready,
    /// ... with any other status.
    pub completions_other,
    /// Notifications put in the queue.
    pub notify_queued,
    /// Notifications dropped because the queue was full.
    pub notify_dropped,
    /// Notifications handed to user mode by RECV.
    pub notify_delivered,
    /// SENDs the host completed with a success status.
    pub send_ok,
    /// SENDs that failed (host status, malformed reply, or not sent), and SENDs cancelled by
    /// their caller, counted when their transaction ends (the host's answer, whatever it is,
    /// or the channel closing).
    pub send_failed,
    /// PINGs the host answered correctly.
    pub ping_ok,
    /// PINGs that failed, and PINGs cancelled by their caller, counted as for `send_failed`.
    pub ping_failed,
    /// Shortest PING round trip, ns (0 while `ping_rtt_count` is 0).
    pub ping_rtt_min_ns,
    /// Longest PING round trip, ns.
    pub ping_rtt_max_ns,
    /// Sum of PING round trips, ns.
    pub ping_rtt_sum_ns,
    /// Round trips in the sum.
    pub ping_rtt_count,
    /// Allocation failures (packets, queue entries).
    pub alloc_failures,
    /// Host packets retired without being processed (dropped unconsumed, or outstanding
    /// when the channel closed).
    pub unconsumed_packets,
    ;
    /// Malformed messages by [`MalformedReason`] (slot = reason value).
    pub malformed_by_reason: [U64; MALFORMED_REASON_SLOTS],
}
const _: () = assert!(size_of::<StatsOut>() == 328);

impl StatsOut {
    /// The count for one reason.
    #[must_use]
    pub fn malformed(&self, reason: MalformedReason) -> u64 {
        self.malformed_by_reason
            .get(reason.index())
            .map_or(0, |v| v.get())
    }
}

/// PING output (24 bytes).
///
/// The IOCTL succeeds when the driver got a well-formed reply; the host's own verdict is
/// `host_status`.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct PingOut {
    /// The nonce the driver sent (and the host echoed).
    pub nonce: U64,
    /// Round trip, send to completion, in nanoseconds.
    pub round_trip_ns: U64,
    /// The reply's status (NTSTATUS).
    pub host_status: I32,
    /// Zero.
    pub reserved: U32,
}
const _: () = assert!(size_of::<PingOut>() == 24);

/// SEND input: this fixed header, then exactly `payload_len` payload bytes (8 + n bytes).
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct SendIn {
    /// Payload bytes after this header, `<= MAX_PAYLOAD`.
    pub payload_len: U32,
    /// No flags are defined: zero.
    pub flags: U32,
}
const _: () = assert!(size_of::<SendIn>() == 8);

/// SEND output (8 bytes). The IOCTL succeeds when the host replied; its verdict is
/// `host_status`.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct SendOut {
    /// The reply's status (NTSTATUS).
    pub host_status: I32,
    /// Zero.
    pub reserved: U32,
}
const _: () = assert!(size_of::<SendOut>() == 8);

/// RECV output: this fixed header, then `payload_len` payload bytes (24 + n bytes).
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct RecvOut {
    /// Payload bytes after this header.
    pub payload_len: U32,
    /// Zero.
    pub reserved: U32,
    /// The notification's sequence number: 1 for the first one queued, +1 per notification
    /// queued (dropped ones take no number).
    pub sequence: U64,
    /// Notifications dropped (queue full) since the previous RECV returned one.
    pub dropped_since_last: U64,
}
const _: () = assert!(size_of::<RecvOut>() == 24);

/// The largest SEND payload the IOCTL accepts: [`MAX_BULK_PAYLOAD`]. Above [`MAX_PAYLOAD`] it
/// travels through the bulk area, so only a session that has one takes it (GET_INFO's
/// `max_payload`); others fail it with `STATUS_INVALID_PARAMETER`.
pub const SEND_PAYLOAD_MAX: usize = MAX_BULK_PAYLOAD;

/// The largest SEND input.
pub const SEND_IN_MAX: usize = size_of::<SendIn>() + SEND_PAYLOAD_MAX;

/// The largest RECV output, and the output size RECV requires.
pub const RECV_OUT_MAX: usize = size_of::<RecvOut>() + MAX_PAYLOAD;

// ---- helpers --------------------------------------------------------------------------------

fn payload_len_u32(len: usize, max: usize) -> Result<u32, IoctlError> {
    let too_large = IoctlError::PayloadTooLarge { len, max };
    if len > max {
        return Err(too_large);
    }
    u32::try_from(len).map_err(|_| too_large)
}

/// Writes a fixed-size output struct to the front of `buf`; returns its size (the request's
/// `Information`).
///
/// # Errors
/// [`IoctlError::OutputTooSmall`].
pub fn write_output<T: IntoBytes + Immutable>(
    buf: &mut [u8],
    value: &T,
) -> Result<usize, IoctlError> {
    let bytes = value.as_bytes();
    let got = buf.len();
    let out = buf
        .get_mut(..bytes.len())
        .ok_or(IoctlError::OutputTooSmall {
            needed: bytes.len(),
            got,
        })?;
    out.copy_from_slice(bytes);
    Ok(bytes.len())
}

/// Reads a fixed-size output struct from the front of `bytes` (the tool's side). Longer
/// outputs (a later ABI that appended fields) are accepted.
///
/// # Errors
/// [`IoctlError::OutputTooSmall`].
pub fn read_output<T: FromBytes>(bytes: &[u8]) -> Result<T, IoctlError> {
    T::read_from_prefix(bytes)
        .map(|(v, _)| v)
        .map_err(|_| IoctlError::OutputTooSmall {
            needed: size_of::<T>(),
            got: bytes.len(),
        })
}

/// Parses a SEND input (the driver's side): [`SendIn`] then exactly `payload_len` bytes;
/// returns the payload.
///
/// # Errors
/// [`IoctlError::InputTooSmall`], [`IoctlError::ReservedNonZero`],
/// [`IoctlError::PayloadTooLarge`], [`IoctlError::LengthMismatch`].
pub fn parse_send_input(input: &[u8]) -> Result<&[u8], IoctlError> {
    let (header, payload) =
        SendIn::read_from_prefix(input).map_err(|_| IoctlError::InputTooSmall {
            needed: size_of::<SendIn>(),
            got: input.len(),
        })?;
    if header.flags.get() != 0 {
        return Err(IoctlError::ReservedNonZero { field: "flags" });
    }
    let declared = header.payload_len.get();
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > SEND_PAYLOAD_MAX {
        return Err(IoctlError::PayloadTooLarge {
            len,
            max: SEND_PAYLOAD_MAX,
        });
    }
    if len != payload.len() {
        return Err(IoctlError::LengthMismatch {
            header: declared,
            actual: payload.len(),
        });
    }
    Ok(payload)
}

/// Writes `header` then `payload` to the front of `buf`.
fn write_variable(
    buf: &mut [u8],
    header: &[u8],
    payload: &[u8],
    too_small: fn(usize, usize) -> IoctlError,
) -> Result<usize, IoctlError> {
    let total = header.len() + payload.len();
    let got = buf.len();
    let out = buf.get_mut(..total).ok_or_else(|| too_small(total, got))?;
    let (head, tail) = out
        .split_at_mut_checked(header.len())
        .ok_or_else(|| too_small(total, got))?;
    head.copy_from_slice(header);
    tail.copy_from_slice(payload);
    Ok(total)
}

/// Builds a SEND input in `buf` (the tool's side); returns its length.
///
/// # Errors
/// [`IoctlError::PayloadTooLarge`], [`IoctlError::InputTooSmall`] when `buf` is too short.
pub fn write_send_input(buf: &mut [u8], payload: &[u8]) -> Result<usize, IoctlError> {
    let header = SendIn {
        payload_len: U32::new(payload_len_u32(payload.len(), SEND_PAYLOAD_MAX)?),
        flags: U32::ZERO,
    };
    write_variable(buf, header.as_bytes(), payload, |needed, got| {
        IoctlError::InputTooSmall { needed, got }
    })
}

/// Builds a RECV output in `buf` (the driver's side); returns the length (`Information`).
///
/// # Errors
/// [`IoctlError::PayloadTooLarge`], [`IoctlError::OutputTooSmall`].
pub fn write_recv_output(
    buf: &mut [u8],
    sequence: u64,
    dropped_since_last: u64,
    payload: &[u8],
) -> Result<usize, IoctlError> {
    let header = RecvOut {
        payload_len: U32::new(payload_len_u32(payload.len(), MAX_PAYLOAD)?),
        reserved: U32::ZERO,
        sequence: U64::new(sequence),
        dropped_since_last: U64::new(dropped_since_last),
    };
    write_variable(buf, header.as_bytes(), payload, |needed, got| {
        IoctlError::OutputTooSmall { needed, got }
    })
}

/// Parses a RECV output (the tool's side; `bytes` is the `Information` bytes returned):
/// the header, and exactly `payload_len` payload bytes.
///
/// # Errors
/// [`IoctlError::OutputTooSmall`], [`IoctlError::ReservedNonZero`],
/// [`IoctlError::PayloadTooLarge`], [`IoctlError::LengthMismatch`].
pub fn parse_recv_output(bytes: &[u8]) -> Result<(RecvOut, &[u8]), IoctlError> {
    let (header, payload) =
        RecvOut::read_from_prefix(bytes).map_err(|_| IoctlError::OutputTooSmall {
            needed: size_of::<RecvOut>(),
            got: bytes.len(),
        })?;
    if header.reserved.get() != 0 {
        return Err(IoctlError::ReservedNonZero { field: "reserved" });
    }
    let declared = header.payload_len.get();
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(IoctlError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    if len != payload.len() {
        return Err(IoctlError::LengthMismatch {
            header: declared,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;
    use std::format;
    use std::vec;

    use zerocopy::FromZeros;

    use super::*;

    #[test]
    fn ctl_code_matches_windows_values() {
        // IOCTL_DISK_GET_DRIVE_GEOMETRY = CTL_CODE(FILE_DEVICE_DISK, 0, METHOD_BUFFERED, FILE_ANY_ACCESS)
        assert_eq!(
            ctl_code(7, 0, METHOD_BUFFERED, FILE_ANY_ACCESS),
            0x0007_0000
        );
        // IOCTL_STORAGE_GET_DEVICE_NUMBER = CTL_CODE(IOCTL_STORAGE_BASE, 0x0420, METHOD_BUFFERED, FILE_ANY_ACCESS)
        assert_eq!(
            ctl_code(0x2D, 0x420, METHOD_BUFFERED, FILE_ANY_ACCESS),
            0x002D_1080
        );
        // IOCTL_STORAGE_QUERY_PROPERTY = CTL_CODE(IOCTL_STORAGE_BASE, 0x0500, METHOD_BUFFERED, FILE_ANY_ACCESS)
        assert_eq!(
            ctl_code(0x2D, 0x500, METHOD_BUFFERED, FILE_ANY_ACCESS),
            0x002D_1400
        );
        // IOCTL_DISK_GET_LENGTH_INFO = CTL_CODE(IOCTL_DISK_BASE, 0x0017, METHOD_BUFFERED, FILE_READ_ACCESS)
        assert_eq!(
            ctl_code(7, 0x17, METHOD_BUFFERED, FILE_READ_ACCESS),
            0x0007_405C
        );
        // IOCTL_DISK_SET_DRIVE_LAYOUT_EX = CTL_CODE(IOCTL_DISK_BASE, 0x0015, METHOD_BUFFERED, FILE_READ_ACCESS | FILE_WRITE_ACCESS)
        assert_eq!(
            ctl_code(
                7,
                0x15,
                METHOD_BUFFERED,
                FILE_READ_ACCESS | FILE_WRITE_ACCESS
            ),
            0x0007_C054
        );
    }

    #[test]
    fn vmbmsg_codes() {
        let mut seen = HashSet::new();
        for code in IoctlCode::ALL {
            assert!(seen.insert(code.code()));
            assert_eq!(IoctlCode::from_raw(code.code()), Some(code));
            assert_eq!(IoctlCode::try_from(code.code()), Ok(code));
            assert!(code.function() >= 0x800);
            assert_eq!(code.code() >> 16, FILE_DEVICE_VMBMSG);
            assert_eq!(code.code() & 3, METHOD_BUFFERED);
            assert_eq!(
                ctl_code(
                    FILE_DEVICE_VMBMSG,
                    code.function(),
                    METHOD_BUFFERED,
                    code.access()
                ),
                code.code()
            );
            assert!(code.name().starts_with("IOCTL_VMBMSG_"));
        }
        let expected = [
            (IoctlCode::GetInfo, 0x8A4D_6000, FILE_READ_ACCESS),
            (IoctlCode::GetStats, 0x8A4D_6004, FILE_READ_ACCESS),
            (IoctlCode::ResetStats, 0x8A4D_A008, FILE_WRITE_ACCESS),
            (IoctlCode::Ping, 0x8A4D_A00C, FILE_WRITE_ACCESS),
            (IoctlCode::Send, 0x8A4D_A010, FILE_WRITE_ACCESS),
            (IoctlCode::Recv, 0x8A4D_6014, FILE_READ_ACCESS),
        ];
        for (code, value, access) in expected {
            assert_eq!(code.code(), value, "{}", code.name());
            assert_eq!(code.access(), access, "{}", code.name());
        }
        for unknown in [
            0,
            IOCTL_VMBMSG_GET_INFO + 4 * 6,
            IOCTL_VMBMSG_GET_INFO | 1,
            0x0007_0000,
        ] {
            assert_eq!(IoctlCode::from_raw(unknown), None);
            assert_eq!(
                IoctlCode::try_from(unknown),
                Err(IoctlError::UnknownCode(unknown))
            );
        }
        // Same function with another access is another code.
        assert_eq!(
            IoctlCode::from_raw(ctl_code(
                FILE_DEVICE_VMBMSG,
                FUNCTION_SEND,
                METHOD_BUFFERED,
                FILE_ANY_ACCESS
            )),
            None
        );
    }

    #[test]
    fn buffer_minimums() {
        assert_eq!(IoctlCode::GetInfo.check_buffers(0, 40), Ok(()));
        assert_eq!(
            IoctlCode::GetInfo.check_buffers(0, 39),
            Err(IoctlError::OutputTooSmall {
                needed: 40,
                got: 39
            })
        );
        assert_eq!(
            IoctlCode::Send.check_buffers(7, 8),
            Err(IoctlError::InputTooSmall { needed: 8, got: 7 })
        );
        assert_eq!(IoctlCode::Send.check_buffers(8, 8), Ok(()));
        assert_eq!(IoctlCode::ResetStats.check_buffers(0, 0), Ok(()));
        assert_eq!(IoctlCode::Ping.check_buffers(0, 24), Ok(()));
        assert_eq!(IoctlCode::GetStats.check_buffers(0, 328), Ok(()));
        assert!(IoctlCode::Recv.check_buffers(0, RECV_OUT_MAX - 1).is_err());
        assert_eq!(IoctlCode::Recv.check_buffers(0, RECV_OUT_MAX), Ok(()));
        assert_eq!(RECV_OUT_MAX, 24 + 16 * 1024);
        assert_eq!(SEND_IN_MAX, 8 + 64 * 1024);
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases = [
            (
                IoctlError::UnknownCode(1),
                NtStatus::STATUS_INVALID_DEVICE_REQUEST,
            ),
            (
                IoctlError::InputTooSmall { needed: 1, got: 0 },
                NtStatus::STATUS_BUFFER_TOO_SMALL,
            ),
            (
                IoctlError::OutputTooSmall { needed: 1, got: 0 },
                NtStatus::STATUS_BUFFER_TOO_SMALL,
            ),
            (
                IoctlError::LengthMismatch {
                    header: 1,
                    actual: 0,
                },
                NtStatus::STATUS_INVALID_PARAMETER,
            ),
            (
                IoctlError::PayloadTooLarge { len: 2, max: 1 },
                NtStatus::STATUS_INVALID_PARAMETER,
            ),
            (
                IoctlError::ReservedNonZero { field: "flags" },
                NtStatus::STATUS_INVALID_PARAMETER,
            ),
            (
                IoctlError::UnsupportedAbi {
                    got: 2,
                    expected: 1,
                },
                NtStatus::STATUS_REVISION_MISMATCH,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
            let text = format!("{e}");
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
        }
    }

    #[test]
    fn send_input_round_trip_and_checks() {
        let mut buf = vec![0u8; SEND_IN_MAX];
        for payload in [
            &b""[..],
            b"x",
            &[7u8; MAX_PAYLOAD],
            &[8u8; SEND_PAYLOAD_MAX],
        ] {
            let n = write_send_input(&mut buf, payload).unwrap();
            assert_eq!(n, 8 + payload.len());
            assert_eq!(parse_send_input(&buf[..n]), Ok(payload));
        }
        let n = write_send_input(&mut buf, b"abcd").unwrap();
        assert_eq!(&buf[..8], &[4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_send_input(&buf[..n - 1]),
            Err(IoctlError::LengthMismatch {
                header: 4,
                actual: 3
            })
        );
        assert_eq!(
            parse_send_input(&buf[..n + 1]),
            Err(IoctlError::LengthMismatch {
                header: 4,
                actual: 5
            })
        );
        for short in 0..8 {
            assert_eq!(
                parse_send_input(&buf[..short]),
                Err(IoctlError::InputTooSmall {
                    needed: 8,
                    got: short
                })
            );
        }
        let mut flagged = buf[..n].to_vec();
        flagged[4] = 1;
        assert_eq!(
            parse_send_input(&flagged),
            Err(IoctlError::ReservedNonZero { field: "flags" })
        );
        let mut huge = vec![0u8; 8];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_send_input(&huge),
            Err(IoctlError::PayloadTooLarge {
                len: u32::MAX as usize,
                max: SEND_PAYLOAD_MAX
            })
        );
        assert_eq!(
            write_send_input(&mut buf[..10], b"abc"),
            Err(IoctlError::InputTooSmall {
                needed: 11,
                got: 10
            })
        );
        let big = vec![0u8; SEND_PAYLOAD_MAX + 1];
        let mut out = vec![0u8; SEND_IN_MAX + 8];
        assert!(matches!(
            write_send_input(&mut out, &big),
            Err(IoctlError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn recv_output_round_trip_and_checks() {
        let mut buf = vec![0u8; RECV_OUT_MAX];
        let n = write_recv_output(&mut buf, 5, 2, b"note").unwrap();
        assert_eq!(n, 28);
        let (header, payload) = parse_recv_output(&buf[..n]).unwrap();
        assert_eq!(payload, b"note");
        assert_eq!(header.sequence.get(), 5);
        assert_eq!(header.dropped_since_last.get(), 2);
        assert_eq!(header.payload_len.get(), 4);
        assert!(matches!(
            parse_recv_output(&buf[..n - 1]),
            Err(IoctlError::LengthMismatch { .. })
        ));
        assert!(matches!(
            parse_recv_output(&buf[..23]),
            Err(IoctlError::OutputTooSmall { needed: 24, .. })
        ));
        assert_eq!(
            write_recv_output(&mut buf[..27], 1, 0, b"note"),
            Err(IoctlError::OutputTooSmall {
                needed: 28,
                got: 27
            })
        );
        let full = [3u8; MAX_PAYLOAD];
        assert_eq!(write_recv_output(&mut buf, 1, 0, &full), Ok(RECV_OUT_MAX));
        buf[4] = 1;
        assert_eq!(
            parse_recv_output(&buf),
            Err(IoctlError::ReservedNonZero { field: "reserved" })
        );
    }

    #[test]
    fn info_out_layout_and_abi_check() {
        assert_eq!(core::mem::offset_of!(InfoOut, channel_state), 4);
        assert_eq!(core::mem::offset_of!(InfoOut, driver_major), 8);
        assert_eq!(core::mem::offset_of!(InfoOut, protocol_version), 16);
        assert_eq!(core::mem::offset_of!(InfoOut, max_parked_recv), 36);
        let mut info = InfoOut::new_zeroed();
        info.abi_version = U32::new(ABI_VERSION);
        info.channel_state = ChannelState::READY;
        info.protocol_version = U32::new(crate::wire::PROTOCOL_V1);
        info.max_payload = U32::new(MAX_PAYLOAD as u32);
        let mut buf = [0u8; 64];
        assert_eq!(write_output(&mut buf, &info), Ok(40));
        assert_eq!(&buf[4..8], &[3, 0, 0, 0]);
        assert_eq!(InfoOut::parse(&buf[..40]), Ok(info));
        // A longer output (a later ABI appended fields) still parses its prefix.
        assert_eq!(InfoOut::parse(&buf), Ok(info));
        assert_eq!(
            InfoOut::parse(&buf[..39]),
            Err(IoctlError::OutputTooSmall {
                needed: 40,
                got: 39
            })
        );
        buf[0] = 2;
        assert_eq!(
            InfoOut::parse(&buf),
            Err(IoctlError::UnsupportedAbi {
                got: 2,
                expected: ABI_VERSION
            })
        );
        assert_eq!(
            write_output(&mut buf[..39], &info),
            Err(IoctlError::OutputTooSmall {
                needed: 40,
                got: 39
            })
        );
    }

    #[test]
    fn channel_states() {
        let names: std::vec::Vec<_> = ChannelState::KNOWN
            .iter()
            .filter_map(|s| s.name())
            .collect();
        assert_eq!(
            names,
            [
                "DOWN",
                "WAITING_FOR_HOST",
                "NEGOTIATING",
                "READY",
                "NEGOTIATION_FAILED",
                "CLOSED",
                "PAUSED"
            ]
        );
        for (i, s) in ChannelState::KNOWN.iter().enumerate() {
            assert_eq!(s.get() as usize, i);
        }
        let odd = ChannelState::new(77);
        assert!(!odd.is_known());
        assert_eq!(format!("{odd}"), "ChannelState(0x4d)");
    }

    #[test]
    fn stats_counters_are_in_layout_order() {
        // Put i into the i-th u64 of the struct: counters() must yield 0, 1, 2, ... in order,
        // which proves the name list matches the layout and covers every scalar.
        let mut bytes = [0u8; size_of::<StatsOut>()];
        for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&(i as u64).to_le_bytes());
        }
        let stats: StatsOut = read_output(&bytes).unwrap();
        let counters: std::vec::Vec<_> = stats.counters().collect();
        assert_eq!(counters.len(), StatsOut::COUNTER_NAMES.len());
        assert_eq!(
            counters.len() + MALFORMED_REASON_SLOTS,
            size_of::<StatsOut>() / 8
        );
        for (i, (name, value)) in counters.iter().enumerate() {
            assert_eq!(*value, i as u64);
            assert_eq!(*name, StatsOut::COUNTER_NAMES[i]);
        }
        assert_eq!(counters[0].0, "rx_packets");
        assert_eq!(counters.last().map(|c| c.0), Some("unconsumed_packets"));
        let base = counters.len() as u64;
        for r in MalformedReason::ALL {
            assert_eq!(stats.malformed(r), base + r.index() as u64);
        }
        let mut names = HashSet::new();
        assert!(StatsOut::COUNTER_NAMES.iter().all(|n| names.insert(*n)));
    }

    #[test]
    fn small_output_structs() {
        let ping = PingOut {
            nonce: U64::new(1),
            round_trip_ns: U64::new(2500),
            host_status: I32::new(NtStatus::STATUS_SUCCESS.0),
            reserved: U32::ZERO,
        };
        let mut buf = [0u8; 24];
        assert_eq!(write_output(&mut buf, &ping), Ok(24));
        assert_eq!(read_output::<PingOut>(&buf), Ok(ping));
        assert_eq!(&buf[8..10], &[0xC4, 0x09]);
        let send = SendOut {
            host_status: I32::new(NtStatus::STATUS_QUOTA_EXCEEDED.0),
            reserved: U32::ZERO,
        };
        assert_eq!(write_output(&mut buf, &send), Ok(8));
        assert_eq!(&buf[..4], &0xC000_0044u32.to_le_bytes());
        assert_eq!(read_output::<SendOut>(&buf[..8]), Ok(send));
        assert!(read_output::<SendOut>(&buf[..7]).is_err());
    }
}
