//! The host ↔ guest wire protocol carried in VMBus in-band packets and their completions.
//!
//! Every message, request or reply, is one [`MessageHeader`] (24 bytes) followed by
//! `payload_len` body bytes. The layouts, kinds and the reply rule are in the crate-level
//! tables ([`crate`]); this module holds the structs, the three parse functions
//! ([`parse_host_message`], [`parse_guest_message`], [`parse_reply`]), the writers and
//! [`ProtoError`].
//!
//! # Parsing rules
//!
//! Parsers copy the header out with `read_from_prefix` and borrow the payload from the input;
//! they never allocate and never panic. Checks run in this order, and the first failure is
//! returned:
//!
//! 1. at least [`HEADER_SIZE`] bytes ([`ProtoError::Truncated`]);
//! 2. `version` is in [`SUPPORTED_MIN`]`..=`[`SUPPORTED_MAX`] ([`ProtoError::UnsupportedVersion`]);
//! 3. no unknown `flags` bit ([`ProtoError::ReservedNonZero`]);
//! 4. requests: a known kind ([`ProtoError::UnknownKind`]), the REPLY flag clear
//!    ([`ProtoError::ReplyFlag`]), the kind known in the header's version
//!    ([`ProtoError::UnknownKind`]: the 1.1 kinds are unknown in a 1.0 message), the kind travels in this direction
//!    ([`ProtoError::WrongDirection`]), `status` is 0 ([`ProtoError::ReservedNonZero`]);
//!    replies: the REPLY flag set, the expected kind ([`ProtoError::KindMismatch`]) and id
//!    ([`ProtoError::IdMismatch`]);
//! 5. NEGOTIATE (request and reply) carries exactly [`NEGOTIATE_HEADER_VERSION`];
//! 6. `payload_len <= MAX_PAYLOAD` ([`ProtoError::PayloadTooLarge`]) and
//!    `payload_len == bytes.len() - HEADER_SIZE` ([`ProtoError::LengthMismatch`]);
//! 7. the body: a fixed-size body shorter than its struct is [`ProtoError::Truncated`], longer is
//!    [`ProtoError::BodyLength`]; reserved body fields are zero; a NEGOTIATE range is valid; a
//!    success reply's kind is known in its version ([`ProtoError::UnknownKind`]; a failure reply
//!    may carry any kind, it answers whatever arrived); a bulk reference is 1..=
//!    [`MAX_BULK_PAYLOAD`] bytes ending within `u32` and a BULK_OFFER has two non-empty halves
//!    ([`ProtoError::BadBulkReference`]).
//!
//! A parser checks what one message can show. Session rules are the caller's: a data message
//! before negotiation ([`MalformedReason::Premature`], completed with [`PREMATURE_STATUS`]), a
//! header version other than the negotiated one, a PING reply whose nonce is not the one sent
//! ([`parse_ping_reply`] checks that one).
//!
//! # Examples
//!
//! Negotiation, both sides:
//!
//! ```
//! use vmbmsg_proto::wire::*;
//!
//! // Guest: the synchronous NEGOTIATE request.
//! let mut request = [0u8; NEGOTIATE_REQUEST_SIZE];
//! GuestMessage::negotiate(1, SUPPORTED_MIN, SUPPORTED_MAX).write(&mut request)?;
//!
//! // Host: pick a version or reject.
//! let msg = parse_guest_message(&request)?;
//! let reply = match msg.body {
//!     GuestBody::Negotiate { min_version, max_version } => {
//!         match choose_version(min_version, max_version, &[PROTOCOL_V1]) {
//!             Some(v) => Reply::negotiate_accept(msg.id, v),
//!             None => Reply::negotiate_reject(msg.id),
//!         }
//!     }
//!     _ => unreachable!("a NEGOTIATE was sent"),
//! };
//! let mut completion = [0u8; NEGOTIATE_REPLY_SIZE]; // a multiple of 8, as KMCL requires
//! let n = reply.write(&mut completion)?;
//!
//! // Guest: check the answer against the proposal.
//! let outcome = parse_negotiate_reply(&completion[..n], 1, SUPPORTED_MIN, SUPPORTED_MAX)?;
//! assert_eq!(outcome, NegotiateOutcome::Accepted(PROTOCOL_V1));
//! # Ok::<(), ProtoError>(())
//! ```
//!
//! The guest's packet path: every packet gets a reply, a malformed one a failure reply.
//!
//! ```
//! use vmbmsg_proto::NtStatus;
//! use vmbmsg_proto::wire::*;
//!
//! fn on_packet(packet: &[u8], reply: &mut [u8; MAX_MESSAGE]) -> Result<usize, ProtoError> {
//!     match parse_host_message(packet) {
//!         Ok(HostMessage { version, id, body: HostBody::Echo { payload } }) => {
//!             Reply::echo(version, id, payload).write(reply)
//!         }
//!         Ok(HostMessage { version, id, body: HostBody::Notify { payload: _ } }) => {
//!             let queued = true; // push a copy of the payload into the bounded queue
//!             let status = if queued { NtStatus::STATUS_SUCCESS } else { QUEUE_FULL_STATUS };
//!             Reply::status_only(MessageKind::NOTIFY, version, id, status).write(reply)
//!         }
//!         Ok(HostMessage { version, id, body: HostBody::EchoBulk { offset, len } }) => {
//!             // 1.1: check the range against the host's half of the bulk area, copy it out
//!             // and back; without a bulk area:
//!             let _ = (offset, len);
//!             let status = NtStatus::STATUS_DATA_ERROR;
//!             Reply::status_only(MessageKind::ECHO_BULK, version, id, status).write(reply)
//!         }
//!         Err(e) => {
//!             // count e.reason(), then:
//!             Reply::for_malformed(packet, e.status()).write(reply)
//!         }
//!     }
//! }
//!
//! let mut packet = [0u8; 64];
//! let n = HostMessage::echo(PROTOCOL_V1, 7, b"ping!").write(&mut packet)?;
//! let mut reply = [0u8; MAX_MESSAGE];
//! let len = on_packet(&packet[..n], &mut reply)?;
//! let parsed = parse_reply(&reply[..len], MessageKind::ECHO, 7)?;
//! assert_eq!(parsed.body, ReplyBody::Echo { payload: b"ping!" });
//!
//! let len = on_packet(&packet[..n - 1], &mut reply)?; // truncated
//! let parsed = parse_reply(&reply[..len], MessageKind::ECHO, 7)?;
//! assert_eq!(parsed.status, NtStatus::STATUS_DATA_ERROR);
//! # Ok::<(), ProtoError>(())
//! ```

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

// ---- versions -------------------------------------------------------------------------------

/// A protocol version as `major << 16 | minor`.
#[must_use]
pub const fn make_version(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// The major half of a `major << 16 | minor` version.
#[must_use]
pub const fn version_major(version: u32) -> u16 {
    (version >> 16) as u16
}

/// The minor half of a `major << 16 | minor` version.
#[must_use]
pub const fn version_minor(version: u32) -> u16 {
    (version & 0xFFFF) as u16
}

/// Protocol version 1.0 (`0x0001_0000`).
pub const PROTOCOL_V1: u32 = make_version(1, 0);

/// The oldest protocol version this guest (and this crate's parsers) speaks.
pub const SUPPORTED_MIN: u32 = PROTOCOL_V1;

/// Protocol version 1.1 (`0x0001_0001`): 1.0 plus bulk transfers through a GPADL
/// ([`MessageKind::BULK_OFFER`], [`MessageKind::SEND_BULK`], [`MessageKind::ECHO_BULK`]).
pub const PROTOCOL_V1_1: u32 = make_version(1, 1);

/// The newest protocol version this guest (and this crate's parsers) speaks.
pub const SUPPORTED_MAX: u32 = PROTOCOL_V1_1;
const _: () = assert!(SUPPORTED_MIN <= SUPPORTED_MAX && version_major(SUPPORTED_MIN) >= 1);

/// The header version of every NEGOTIATE request and reply, whatever versions they talk
/// about: the negotiate exchange is frozen at V1 framing so that any two peers can run it.
pub const NEGOTIATE_HEADER_VERSION: u32 = PROTOCOL_V1;

/// True when `version` is in [`SUPPORTED_MIN`]`..=`[`SUPPORTED_MAX`].
#[must_use]
pub const fn is_supported_version(version: u32) -> bool {
    SUPPORTED_MIN <= version && version <= SUPPORTED_MAX
}

/// For host implementations: the newest version in `host_supported` that lies inside the
/// guest's proposal `guest_min..=guest_max`, or `None` (reply with
/// [`NEGOTIATE_REJECT_STATUS`]). An empty or inverted proposal gives `None`.
#[must_use]
pub fn choose_version(guest_min: u32, guest_max: u32, host_supported: &[u32]) -> Option<u32> {
    host_supported
        .iter()
        .copied()
        .filter(|v| guest_min <= *v && *v <= guest_max)
        .max()
}

/// For the guest: accepts the host's `chosen` version only if it lies inside the proposal.
///
/// # Errors
/// [`ProtoError::VersionOutOfRange`] when `chosen` is outside `min..=max`.
pub const fn check_chosen_version(chosen: u32, min: u32, max: u32) -> Result<u32, ProtoError> {
    if min <= chosen && chosen <= max {
        Ok(chosen)
    } else {
        Err(ProtoError::VersionOutOfRange { chosen, min, max })
    }
}

// ---- sizes and statuses -----------------------------------------------------------------------

/// Size of [`MessageHeader`], the prefix of every message.
pub const HEADER_SIZE: usize = size_of::<MessageHeader>();

/// The largest body (`payload_len`) of any message.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// The largest message, request or reply: the channel's maximum packet size.
pub const MAX_MESSAGE: usize = HEADER_SIZE + MAX_PAYLOAD;

/// The largest payload a bulk transfer (1.1) moves through the GPADL: four ring packets' worth.
pub const MAX_BULK_PAYLOAD: usize = 64 * 1024;

/// Size of a BULK_OFFER request (header + [`BulkOffer`]).
pub const BULK_OFFER_SIZE: usize = HEADER_SIZE + size_of::<BulkOffer>();

/// Size of a SEND_BULK or ECHO_BULK request, and of a successful ECHO_BULK reply (header +
/// [`BulkRef`]).
pub const BULK_REF_SIZE: usize = HEADER_SIZE + size_of::<BulkRef>();

/// Size of a NEGOTIATE request (header + [`NegotiateRequest`]).
pub const NEGOTIATE_REQUEST_SIZE: usize = HEADER_SIZE + size_of::<NegotiateRequest>();

/// Size of an accepting NEGOTIATE reply (header + [`NegotiateReply`]); a rejection is
/// [`STATUS_REPLY_SIZE`]. Use this as the synchronous request's completion buffer size.
pub const NEGOTIATE_REPLY_SIZE: usize = HEADER_SIZE + size_of::<NegotiateReply>();

/// Size of a PING request and of its successful reply (header + [`PingBody`]).
pub const PING_SIZE: usize = HEADER_SIZE + size_of::<PingBody>();

/// Size of a reply without a body: any failure reply, and SEND / NOTIFY successes.
pub const STATUS_REPLY_SIZE: usize = HEADER_SIZE;

const _: () = assert!(HEADER_SIZE == 24);
const _: () = assert!(MAX_MESSAGE == 16_408);
const _: () = assert!(MAX_MESSAGE.is_multiple_of(8));
const _: () =
    assert!(NEGOTIATE_REPLY_SIZE.is_multiple_of(8) && STATUS_REPLY_SIZE.is_multiple_of(8));
const _: () = assert!(NEGOTIATE_REQUEST_SIZE == 32 && NEGOTIATE_REPLY_SIZE == 32);
const _: () = assert!(PING_SIZE == 32);
// payload_len is a u32 on the wire.
const _: () = assert!(MAX_PAYLOAD <= u32::MAX as usize);

/// The status of a NEGOTIATE reply that rejects the proposal.
pub const NEGOTIATE_REJECT_STATUS: NtStatus = NtStatus::STATUS_REVISION_MISMATCH;

/// The status the guest completes a NOTIFY with when its notification queue is full.
pub const QUEUE_FULL_STATUS: NtStatus = NtStatus::STATUS_QUOTA_EXCEEDED;

/// The status the guest completes a data message (ECHO / NOTIFY) with when it arrives before
/// negotiation succeeded ([`MalformedReason::Premature`]).
pub const PREMATURE_STATUS: NtStatus = NtStatus::STATUS_INVALID_DEVICE_STATE;

/// Every status [`ProtoError::status`] gives for a parse error (class
/// [`StatusClass::Malformed`]).
pub const MALFORMED_STATUSES: &[NtStatus] = &[
    NtStatus::STATUS_DATA_ERROR,
    NtStatus::STATUS_REVISION_MISMATCH,
    NtStatus::STATUS_NOT_SUPPORTED,
    NtStatus::STATUS_INVALID_DEVICE_REQUEST,
    NtStatus::STATUS_INVALID_NETWORK_RESPONSE,
];

/// The class of a completion status, for the per-class completion counters in
/// [`StatsOut`](crate::ioctl::StatsOut).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatusClass {
    /// `NT_SUCCESS(status)`.
    Ok,
    /// One of [`MALFORMED_STATUSES`].
    Malformed,
    /// [`QUEUE_FULL_STATUS`].
    QueueFull,
    /// [`PREMATURE_STATUS`]: the channel was not ready for the message.
    NotReady,
    /// Anything else.
    Other,
}

impl StatusClass {
    /// Classifies a completion status.
    #[must_use]
    pub fn of(status: NtStatus) -> Self {
        if status.is_success() {
            Self::Ok
        } else if status == QUEUE_FULL_STATUS {
            Self::QueueFull
        } else if status == PREMATURE_STATUS {
            Self::NotReady
        } else if MALFORMED_STATUSES.contains(&status) {
            Self::Malformed
        } else {
            Self::Other
        }
    }
}

// ---- open enums -----------------------------------------------------------------------------

open_enum! {
    /// The kind of a message (header offset 4, LE u16). Guest→host kinds are `0x00xx`,
    /// host→guest kinds `0x01xx`; 0 is never sent.
    pub struct MessageKind(pub U16 => u16) {
        /// Guest→host, synchronous at PASSIVE_LEVEL when the channel opens: propose a version
        /// range ([`NegotiateRequest`]); the reply carries the chosen version
        /// ([`NegotiateReply`]) or [`NEGOTIATE_REJECT_STATUS`].
        NEGOTIATE = 0x0001,
        /// Guest→host: a payload from user mode; the host replies with a status.
        SEND = 0x0002,
        /// Guest→host: a [`PingBody`] nonce; the host's reply echoes it.
        PING = 0x0003,
        /// Host→guest: a payload the guest echoes back in its reply.
        ECHO = 0x0101,
        /// Host→guest: a payload the guest queues for user mode; the reply is a status
        /// (success or [`QUEUE_FULL_STATUS`]).
        NOTIFY = 0x0102,
        /// Guest→host, 1.1: the guest's bulk area, a GPADL ([`BulkOffer`]); the reply is a
        /// status. The host may use it only after a success reply.
        BULK_OFFER = 0x0004,
        /// Guest→host, 1.1: a SEND whose payload lies in the guest's half of the bulk area
        /// ([`BulkRef`]); the reply is the host's status.
        SEND_BULK = 0x0005,
        /// Host→guest, 1.1: an ECHO whose payload lies in the host's half of the bulk area
        /// ([`BulkRef`]); the guest writes the echo back over it and replies with the same
        /// [`BulkRef`].
        ECHO_BULK = 0x0103,
    }
}

impl MessageKind {
    /// The protocol version that introduced the kind (1.0 for unknown kinds).
    #[must_use]
    pub const fn since(self) -> u32 {
        match self.get() {
            0x0004 | 0x0005 | 0x0103 => PROTOCOL_V1_1,
            _ => PROTOCOL_V1,
        }
    }
}

/// Which way a request travels; a reply travels the other way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Sent by the guest, completed by the host.
    GuestToHost,
    /// Sent by the host, completed by the guest.
    HostToGuest,
}

impl MessageKind {
    /// The direction of a known kind's request, `None` for an unknown kind.
    #[must_use]
    pub const fn direction(self) -> Option<Direction> {
        match self.get() {
            0x0001..=0x0005 => Some(Direction::GuestToHost),
            0x0101..=0x0103 => Some(Direction::HostToGuest),
            _ => None,
        }
    }
}

open_enum! {
    /// Header flags (offset 6, LE u16). Bits other than [`MessageFlags::REPLY`] are reserved
    /// and must be zero.
    pub struct MessageFlags(pub U16 => u16) {
        /// A request: no flag set.
        NONE = 0x0000,
        /// The message is a reply (completion payload) to the request with the same `id`.
        REPLY = 0x0001,
    }
}

impl MessageFlags {
    /// The bits this version defines.
    pub const DEFINED_BITS: u16 = Self::REPLY.get();

    /// True when the REPLY bit is set.
    #[must_use]
    pub const fn is_reply(self) -> bool {
        self.get() & Self::REPLY.get() != 0
    }
}

// ---- wire structs ---------------------------------------------------------------------------

/// The header of every message, request or reply (24 bytes, all fields naturally aligned).
///
/// | Offset | Field | Type | Meaning |
/// |---|---|---|---|
/// | 0 | `version` | LE u32 | protocol version the message is encoded in (`major << 16 \| minor`) |
/// | 4 | `kind` | LE u16 | [`MessageKind`] |
/// | 6 | `flags` | LE u16 | [`MessageFlags`]: bit 0 REPLY, others reserved (0) |
/// | 8 | `payload_len` | LE u32 | body bytes after the header, `<= MAX_PAYLOAD` |
/// | 12 | `status` | LE i32 | NTSTATUS: 0 in requests, the completion status in replies |
/// | 16 | `id` | LE u64 | request id, chosen by the sender, echoed by the reply |
///
/// The status sits in the one header (rather than in a reply header after it) so that every
/// reply, including an ECHO reply with a full payload, fits in [`MAX_MESSAGE`].
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct MessageHeader {
    /// Protocol version the message is encoded in.
    pub version: U32,
    /// What the message is.
    pub kind: MessageKind,
    /// [`MessageFlags::REPLY`] on replies.
    pub flags: MessageFlags,
    /// Number of body bytes after the header.
    pub payload_len: U32,
    /// 0 in requests; the NTSTATUS of the completion in replies.
    pub status: I32,
    /// Request id, echoed by the reply.
    pub id: U64,
}
const _: () = assert!(size_of::<MessageHeader>() == 24);
const _: () = assert!(core::mem::offset_of!(MessageHeader, payload_len) == 8);
const _: () = assert!(core::mem::offset_of!(MessageHeader, id) == 16);

impl MessageHeader {
    /// The status field as an [`NtStatus`].
    pub const fn status(&self) -> NtStatus {
        NtStatus(self.status.get())
    }
}

/// NEGOTIATE request body: the guest's version range, `min_version <= max_version`,
/// `min_version != 0`.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct NegotiateRequest {
    /// Oldest version the guest accepts.
    pub min_version: U32,
    /// Newest version the guest accepts.
    pub max_version: U32,
}
const _: () = assert!(size_of::<NegotiateRequest>() == 8);

/// Body of an accepting NEGOTIATE reply (status success): the chosen version.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct NegotiateReply {
    /// The version the host chose, inside the proposed range.
    pub version: U32,
    /// Must be zero (keeps the reply a multiple of 8 bytes).
    pub reserved: U32,
}
const _: () = assert!(size_of::<NegotiateReply>() == 8);

/// BULK_OFFER request body (1.1): the guest's bulk area, one GPADL of
/// `guest_to_host_len + host_to_guest_len` bytes. The guest writes SEND_BULK payloads in the
/// first `guest_to_host_len` bytes; the host writes ECHO_BULK payloads in the
/// `host_to_guest_len` bytes after them. Both lengths are non-zero.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct BulkOffer {
    /// The GPADL handle.
    pub gpadl: U32,
    /// Bytes of the guest's half (offset 0).
    pub guest_to_host_len: U32,
    /// Bytes of the host's half (offset `guest_to_host_len`).
    pub host_to_guest_len: U32,
    /// Must be zero.
    pub reserved: U32,
}
const _: () = assert!(size_of::<BulkOffer>() == 16);

/// SEND_BULK and ECHO_BULK body (1.1): where in the bulk area the payload lies, as an offset
/// into the sender's half and a length of 1..=[`MAX_BULK_PAYLOAD`] bytes. Whether the range is
/// inside that half is the receiver's session check.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct BulkRef {
    /// Offset into the sender's half of the bulk area.
    pub offset: U32,
    /// Payload bytes.
    pub len: U32,
}
const _: () = assert!(size_of::<BulkRef>() == 8);

/// Body of a PING request and of its successful reply.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, IntoBytes, FromBytes, Immutable, KnownLayout, Unaligned,
)]
pub struct PingBody {
    /// Chosen by the guest; the reply carries the same value.
    pub nonce: U64,
}
const _: () = assert!(size_of::<PingBody>() == 8);

// ---- errors ---------------------------------------------------------------------------------

/// Why a message was rejected (or, for the writer variants, could not be written).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ProtoError {
    /// Shorter than its header or than its kind's fixed body (sizes of the whole message).
    #[error("message truncated: needs {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes there are.
        got: usize,
    },
    /// The header's `payload_len` disagrees with the bytes after the header.
    #[error("payload length {header} in the header, but {actual} bytes follow it")]
    LengthMismatch {
        /// `payload_len` from the header.
        header: u32,
        /// Bytes actually after the header.
        actual: usize,
    },
    /// A fixed-size body (or the empty body of a status reply) is longer than allowed.
    #[error("body of a {kind} message is {got} bytes, expected {expected}")]
    BodyLength {
        /// The message kind.
        kind: MessageKind,
        /// Body size the kind (and status) requires.
        expected: usize,
        /// Body size received.
        got: usize,
    },
    /// A kind this crate does not define.
    #[error("unknown message kind {0:#06x}")]
    UnknownKind(u16),
    /// A header version outside [`SUPPORTED_MIN`]`..=`[`SUPPORTED_MAX`] (or, for NEGOTIATE,
    /// other than [`NEGOTIATE_HEADER_VERSION`]).
    #[error("unsupported protocol version {0:#010x}")]
    UnsupportedVersion(u32),
    /// `payload_len` above [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Declared or given payload length.
        len: usize,
        /// [`MAX_PAYLOAD`].
        max: usize,
    },
    /// A reserved field or flag bit, or the status of a request, is not zero.
    #[error("reserved field `{field}` is not zero")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
    },
    /// A known kind that travels the other way (e.g. the guest received a SEND).
    #[error("message kind {kind} is not sent in this direction")]
    WrongDirection {
        /// The message kind.
        kind: MessageKind,
    },
    /// The REPLY flag is set on a request or clear on a reply.
    #[error("reply flag is {}, expected {}", if *expected_reply { "clear" } else { "set" }, if *expected_reply { "set" } else { "clear" })]
    ReplyFlag {
        /// Whether a reply was expected.
        expected_reply: bool,
    },
    /// A reply of another kind than the request's.
    #[error("reply kind {got} does not match request kind {expected}")]
    KindMismatch {
        /// The request's kind.
        expected: MessageKind,
        /// The reply's kind.
        got: MessageKind,
    },
    /// A reply whose id is not the request's.
    #[error("reply id {got:#x} does not match request id {expected:#x}")]
    IdMismatch {
        /// The request's id.
        expected: u64,
        /// The reply's id.
        got: u64,
    },
    /// A PING reply whose nonce is not the one sent.
    #[error("ping reply nonce {got:#x} does not match {expected:#x}")]
    NonceMismatch {
        /// The nonce sent.
        expected: u64,
        /// The nonce received.
        got: u64,
    },
    /// A NEGOTIATE proposal with `min > max` or `min == 0`.
    #[error("invalid version range {min:#010x}..={max:#010x}")]
    InvalidVersionRange {
        /// Proposed minimum.
        min: u32,
        /// Proposed maximum.
        max: u32,
    },
    /// The host chose a version outside the guest's proposal.
    #[error("chosen version {chosen:#010x} is outside {min:#010x}..={max:#010x}")]
    VersionOutOfRange {
        /// What the host chose.
        chosen: u32,
        /// Proposed minimum.
        min: u32,
        /// Proposed maximum.
        max: u32,
    },
    /// 1.1: a bulk reference (or a BULK_OFFER's halves) that cannot describe a range: a zero
    /// length, one above [`MAX_BULK_PAYLOAD`], or an end past `u32::MAX`. A range outside the
    /// offered area is the receiver's session check and fails the same way.
    #[error("bad bulk range: offset {offset}, length {len}")]
    BadBulkReference {
        /// Offset (for a BULK_OFFER: the guest half's length).
        offset: u32,
        /// Length (for a BULK_OFFER: the host half's length).
        len: u32,
    },
    /// Writers only: the output buffer is too small.
    #[error("output buffer too small: needs {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// Writers only: a reply body that does not fit its kind and status.
    #[error("reply body does not match kind {kind} and its status")]
    BodyShape {
        /// The reply's kind.
        kind: MessageKind,
    },
}

impl ProtoError {
    /// The one mapping from a protocol error to the status a message is completed with.
    ///
    /// | Error | Status |
    /// |---|---|
    /// | `Truncated`, `LengthMismatch`, `BodyLength`, `PayloadTooLarge`, `ReservedNonZero`, `InvalidVersionRange`, `BadBulkReference` | `STATUS_DATA_ERROR` |
    /// | `UnsupportedVersion` | `STATUS_REVISION_MISMATCH` |
    /// | `UnknownKind` | `STATUS_NOT_SUPPORTED` |
    /// | `WrongDirection`, `ReplyFlag` | `STATUS_INVALID_DEVICE_REQUEST` |
    /// | `KindMismatch`, `IdMismatch`, `NonceMismatch`, `VersionOutOfRange` | `STATUS_INVALID_NETWORK_RESPONSE` |
    /// | `BufferTooSmall` (writer) | `STATUS_BUFFER_TOO_SMALL` |
    /// | `BodyShape` (writer) | `STATUS_INVALID_PARAMETER` |
    pub const fn status(&self) -> NtStatus {
        match self {
            Self::Truncated { .. }
            | Self::LengthMismatch { .. }
            | Self::BodyLength { .. }
            | Self::PayloadTooLarge { .. }
            | Self::ReservedNonZero { .. }
            | Self::InvalidVersionRange { .. }
            | Self::BadBulkReference { .. } => NtStatus::STATUS_DATA_ERROR,
            Self::UnsupportedVersion(_) => NtStatus::STATUS_REVISION_MISMATCH,
            Self::UnknownKind(_) => NtStatus::STATUS_NOT_SUPPORTED,
            Self::WrongDirection { .. } | Self::ReplyFlag { .. } => {
                NtStatus::STATUS_INVALID_DEVICE_REQUEST
            }
            Self::KindMismatch { .. }
            | Self::IdMismatch { .. }
            | Self::NonceMismatch { .. }
            | Self::VersionOutOfRange { .. } => NtStatus::STATUS_INVALID_NETWORK_RESPONSE,
            Self::BufferTooSmall { .. } => NtStatus::STATUS_BUFFER_TOO_SMALL,
            Self::BodyShape { .. } => NtStatus::STATUS_INVALID_PARAMETER,
        }
    }

    /// The statistics slot this error counts in.
    #[must_use]
    pub const fn reason(&self) -> MalformedReason {
        match self {
            Self::Truncated { .. } => MalformedReason::Truncated,
            Self::LengthMismatch { .. } | Self::BodyLength { .. } => {
                MalformedReason::LengthMismatch
            }
            Self::UnknownKind(_) => MalformedReason::UnknownKind,
            Self::UnsupportedVersion(_) => MalformedReason::UnsupportedVersion,
            Self::PayloadTooLarge { .. } => MalformedReason::PayloadTooLarge,
            Self::ReservedNonZero { .. } => MalformedReason::ReservedNonZero,
            Self::WrongDirection { .. } | Self::ReplyFlag { .. } => MalformedReason::WrongDirection,
            Self::KindMismatch { .. } | Self::IdMismatch { .. } | Self::NonceMismatch { .. } => {
                MalformedReason::UnexpectedReply
            }
            Self::InvalidVersionRange { .. } | Self::VersionOutOfRange { .. } => {
                MalformedReason::BadVersionRange
            }
            Self::BadBulkReference { .. } => MalformedReason::BadBulkRange,
            Self::BufferTooSmall { .. } | Self::BodyShape { .. } => MalformedReason::Other,
        }
    }
}

/// Why a message counted as malformed: the index into
/// [`StatsOut::malformed_by_reason`](crate::ioctl::StatsOut::malformed_by_reason).
///
/// Values are stable ABI (the tool names slots by them); new reasons are appended.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MalformedReason {
    /// [`ProtoError::Truncated`].
    Truncated = 0,
    /// [`ProtoError::LengthMismatch`], [`ProtoError::BodyLength`].
    LengthMismatch = 1,
    /// [`ProtoError::UnknownKind`].
    UnknownKind = 2,
    /// [`ProtoError::UnsupportedVersion`].
    UnsupportedVersion = 3,
    /// [`ProtoError::PayloadTooLarge`].
    PayloadTooLarge = 4,
    /// [`ProtoError::ReservedNonZero`].
    ReservedNonZero = 5,
    /// [`ProtoError::WrongDirection`], [`ProtoError::ReplyFlag`].
    WrongDirection = 6,
    /// [`ProtoError::KindMismatch`], [`ProtoError::IdMismatch`], [`ProtoError::NonceMismatch`].
    UnexpectedReply = 7,
    /// [`ProtoError::InvalidVersionRange`], [`ProtoError::VersionOutOfRange`].
    BadVersionRange = 8,
    /// A data message (ECHO, NOTIFY) before negotiation succeeded. Detected by the driver, not
    /// the parser; completed with [`PREMATURE_STATUS`].
    Premature = 9,
    /// Anything else (the writer-only errors; never produced by a parser).
    Other = 10,
    /// [`ProtoError::BadBulkReference`], and a bulk range outside the offered area or a bulk
    /// message on a session without one (1.1).
    BadBulkRange = 11,
}

impl MalformedReason {
    /// Every reason, indexed by its value.
    pub const ALL: [Self; 12] = [
        Self::Truncated,
        Self::LengthMismatch,
        Self::UnknownKind,
        Self::UnsupportedVersion,
        Self::PayloadTooLarge,
        Self::ReservedNonZero,
        Self::WrongDirection,
        Self::UnexpectedReply,
        Self::BadVersionRange,
        Self::Premature,
        Self::Other,
        Self::BadBulkRange,
    ];

    /// Number of reasons (`12`); `index() < COUNT` always.
    pub const COUNT: usize = Self::ALL.len();

    /// The counter slot of this reason.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason counted in slot `index`, if any.
    #[must_use]
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// A short snake_case name for tables and JSON (`"length_mismatch"`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::LengthMismatch => "length_mismatch",
            Self::UnknownKind => "unknown_kind",
            Self::UnsupportedVersion => "unsupported_version",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ReservedNonZero => "reserved_non_zero",
            Self::WrongDirection => "wrong_direction",
            Self::UnexpectedReply => "unexpected_reply",
            Self::BadVersionRange => "bad_version_range",
            Self::Premature => "premature",
            Self::Other => "other",
            Self::BadBulkRange => "bad_bulk_range",
        }
    }
}

// ---- typed messages ---------------------------------------------------------------------------

/// A host→guest request, as the guest's packet callback receives it (payload borrowed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostMessage<'a> {
    /// Header version (supported; the driver compares it with the negotiated one).
    pub version: u32,
    /// Request id, to echo in the reply.
    pub id: u64,
    /// Kind and body.
    pub body: HostBody<'a>,
}

/// The body of a [`HostMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostBody<'a> {
    /// Reply with [`Reply::echo`] carrying the same payload.
    Echo {
        /// Up to [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
    /// Queue the payload for user mode; reply with a status.
    Notify {
        /// Up to [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
    /// 1.1: echo the `len` bytes at `offset` of the host's half of the bulk area (write them
    /// back in place) and reply with [`Reply::echo_bulk`].
    EchoBulk {
        /// Offset into the host's half.
        offset: u32,
        /// 1..=[`MAX_BULK_PAYLOAD`] bytes.
        len: u32,
    },
}

/// A guest→host request, as the host receives it (payload borrowed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestMessage<'a> {
    /// Header version ([`NEGOTIATE_HEADER_VERSION`] for NEGOTIATE).
    pub version: u32,
    /// Request id, to echo in the reply.
    pub id: u64,
    /// Kind and body.
    pub body: GuestBody<'a>,
}

/// The body of a [`GuestMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestBody<'a> {
    /// Version proposal, `min_version..=max_version`.
    Negotiate {
        /// Oldest acceptable version.
        min_version: u32,
        /// Newest acceptable version.
        max_version: u32,
    },
    /// A payload from user mode.
    Send {
        /// Up to [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
    /// A round-trip probe.
    Ping {
        /// Echoed by the reply.
        nonce: u64,
    },
    /// 1.1: the guest's bulk area ([`BulkOffer`]).
    BulkOffer {
        /// The GPADL handle.
        gpadl: u32,
        /// Bytes of the guest's half.
        guest_to_host_len: u32,
        /// Bytes of the host's half.
        host_to_guest_len: u32,
    },
    /// 1.1: a SEND whose payload is the `len` bytes at `offset` of the guest's half.
    SendBulk {
        /// Offset into the guest's half.
        offset: u32,
        /// 1..=[`MAX_BULK_PAYLOAD`] bytes.
        len: u32,
    },
}

/// A reply (completion payload), in either direction.
///
/// The reply rule: a reply whose status is a success (`NT_SUCCESS`) carries its kind's reply
/// body — NEGOTIATE the chosen version, PING the nonce, ECHO the payload, SEND and NOTIFY
/// nothing. A reply with a failure status has no body (`payload_len == 0`) whatever its kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reply<'a> {
    /// The request's kind.
    pub kind: MessageKind,
    /// Header version (the request's).
    pub version: u32,
    /// The request's id.
    pub id: u64,
    /// Completion status.
    pub status: NtStatus,
    /// The body, per the reply rule.
    pub body: ReplyBody<'a>,
}

/// The body of a [`Reply`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReplyBody<'a> {
    /// No body: failures, and SEND / NOTIFY successes.
    Empty,
    /// Successful NEGOTIATE: the chosen version.
    Negotiate {
        /// The chosen version.
        version: u32,
    },
    /// Successful PING: the request's nonce.
    Ping {
        /// The nonce.
        nonce: u64,
    },
    /// Successful ECHO: the request's payload.
    Echo {
        /// Up to [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
    /// Successful ECHO_BULK: the request's range, where the echo now lies.
    EchoBulk {
        /// Offset into the host's half.
        offset: u32,
        /// Payload bytes.
        len: u32,
    },
}

/// The result of a NEGOTIATE, from the guest's point of view.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NegotiateOutcome {
    /// The host chose this version, inside the proposal.
    Accepted(u32),
    /// The host rejected the proposal with this (failure) status, normally
    /// [`NEGOTIATE_REJECT_STATUS`].
    Rejected(NtStatus),
}

// ---- parsing --------------------------------------------------------------------------------

/// Copies the header out of `bytes` without validating it (for instance to echo the kind and id
/// of a malformed message in its failure reply). `None` when shorter than a header.
#[must_use]
pub fn peek_header(bytes: &[u8]) -> Option<MessageHeader> {
    MessageHeader::read_from_prefix(bytes).ok().map(|(h, _)| h)
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Steps 1–3: header present, version supported, no unknown flag bit.
fn read_header(bytes: &[u8]) -> Result<(MessageHeader, &[u8]), ProtoError> {
    let (header, rest) =
        MessageHeader::read_from_prefix(bytes).map_err(|_| ProtoError::Truncated {
            needed: HEADER_SIZE,
            got: bytes.len(),
        })?;
    let version = header.version.get();
    if !is_supported_version(version) {
        return Err(ProtoError::UnsupportedVersion(version));
    }
    if header.flags.get() & !MessageFlags::DEFINED_BITS != 0 {
        return Err(ProtoError::ReservedNonZero { field: "flags" });
    }
    Ok((header, rest))
}

/// Step 5: NEGOTIATE in its frozen version; a kind only in the versions that have it (a 1.1
/// kind in a 1.0 message is an unknown kind).
fn check_kind_version(kind: MessageKind, version: u32) -> Result<(), ProtoError> {
    check_negotiate_version(kind, version)?;
    check_since(kind, version)
}

/// NEGOTIATE travels in its frozen header version only, request and reply, success or not.
fn check_negotiate_version(kind: MessageKind, version: u32) -> Result<(), ProtoError> {
    if kind == MessageKind::NEGOTIATE && version != NEGOTIATE_HEADER_VERSION {
        return Err(ProtoError::UnsupportedVersion(version));
    }
    Ok(())
}

/// A request, or a successful reply, of a kind its version does not have is of an unknown
/// kind. (A failure reply may carry one: it answers whatever arrived.)
fn check_since(kind: MessageKind, version: u32) -> Result<(), ProtoError> {
    if version < kind.since() {
        return Err(ProtoError::UnknownKind(kind.get()));
    }
    Ok(())
}

/// A [`BulkRef`] body: 1..=[`MAX_BULK_PAYLOAD`] bytes, `offset + len` within `u32`.
fn bulk_ref(kind: MessageKind, payload: &[u8]) -> Result<(u32, u32), ProtoError> {
    let b: BulkRef = fixed_body(kind, payload)?;
    let (offset, len) = (b.offset.get(), b.len.get());
    if len == 0 || to_usize(len) > MAX_BULK_PAYLOAD || offset.checked_add(len).is_none() {
        return Err(ProtoError::BadBulkReference { offset, len });
    }
    Ok((offset, len))
}

/// Step 6.
fn check_payload<'a>(header: &MessageHeader, rest: &'a [u8]) -> Result<&'a [u8], ProtoError> {
    let declared = header.payload_len.get();
    let len = to_usize(declared);
    if len > MAX_PAYLOAD {
        return Err(ProtoError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    if len != rest.len() {
        return Err(ProtoError::LengthMismatch {
            header: declared,
            actual: rest.len(),
        });
    }
    Ok(rest)
}

/// Step 7 for a fixed-size body.
fn fixed_body<T: FromBytes>(kind: MessageKind, payload: &[u8]) -> Result<T, ProtoError> {
    let expected = size_of::<T>();
    if payload.len() < expected {
        return Err(ProtoError::Truncated {
            needed: HEADER_SIZE + expected,
            got: HEADER_SIZE + payload.len(),
        });
    }
    T::read_from_bytes(payload).map_err(|_| ProtoError::BodyLength {
        kind,
        expected,
        got: payload.len(),
    })
}

fn empty_body(kind: MessageKind, payload: &[u8]) -> Result<(), ProtoError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::BodyLength {
            kind,
            expected: 0,
            got: payload.len(),
        })
    }
}

const fn check_range(min: u32, max: u32) -> Result<(), ProtoError> {
    if min == 0 || min > max {
        Err(ProtoError::InvalidVersionRange { min, max })
    } else {
        Ok(())
    }
}

/// Steps 1–6 for a request travelling in `direction`.
fn parse_request(bytes: &[u8], direction: Direction) -> Result<(MessageHeader, &[u8]), ProtoError> {
    let (header, rest) = read_header(bytes)?;
    let kind = header.kind;
    let Some(kind_direction) = kind.direction() else {
        return Err(ProtoError::UnknownKind(kind.get()));
    };
    if header.flags.is_reply() {
        return Err(ProtoError::ReplyFlag {
            expected_reply: false,
        });
    }
    check_since(kind, header.version.get())?;
    if kind_direction != direction {
        return Err(ProtoError::WrongDirection { kind });
    }
    if header.status.get() != 0 {
        return Err(ProtoError::ReservedNonZero { field: "status" });
    }
    check_negotiate_version(kind, header.version.get())?;
    let payload = check_payload(&header, rest)?;
    Ok((header, payload))
}

/// The header of a message as three little-endian words (for whole-word comparisons).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HeaderWords([U64; 3]);
const _: () = assert!(size_of::<HeaderWords>() == HEADER_SIZE);

/// A protocol version this implementation supports ([`is_supported_version`]): what a
/// session runs at once negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionVersion(u32);

impl SessionVersion {
    /// `version` if it is supported.
    #[inline]
    #[must_use]
    pub const fn new(version: u32) -> Option<Self> {
        if is_supported_version(version) {
            Some(Self(version))
        } else {
            None
        }
    }

    /// The version number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The guest's hot case for a session of `version`: `Some` exactly when [`parse_host_message`]
/// gives a well-formed ECHO or NOTIFY encoded in `version`, with the same value; `None` for
/// everything else, including any message of another version and every ECHO_BULK (give those
/// to [`parse_host_message`], which names the rule broken or parses them).
///
/// The header read as three little-endian words, the first two compared whole against what a
/// valid message of the session holds there (version, kind and no flags; `payload_len` equal
/// to the bytes after the header and status 0): the fewest instructions for the packets a
/// guest mostly receives.
#[inline]
#[must_use]
pub fn parse_session_message(bytes: &[u8], version: SessionVersion) -> Option<HostMessage<'_>> {
    let (words, payload) = HeaderWords::read_from_prefix(bytes).ok()?;
    let [w0, w1, id] = words.0.map(|w| w.get());
    let version = version.get();
    let v = u64::from(version);
    let echo = v | (u64::from(MessageKind::ECHO.get()) << 32);
    let notify = v | (u64::from(MessageKind::NOTIFY.get()) << 32);
    let len = payload.len();
    let ok = ((w0 == echo) | (w0 == notify))
        & (u64::try_from(len).ok() == Some(w1))
        & (len <= MAX_PAYLOAD);
    if !ok {
        return None;
    }
    let body = if w0 == echo {
        HostBody::Echo { payload }
    } else {
        HostBody::Notify { payload }
    };
    Some(HostMessage { version, id, body })
}

/// Parses what the guest receives: a host→guest request (ECHO, NOTIFY or, 1.1, ECHO_BULK),
/// every rule checked in order. A guest's hot case, a well-formed ECHO or NOTIFY of its
/// session, is [`parse_session_message`].
///
/// # Errors
/// The first rule of the module's parsing rules that `bytes` breaks.
pub fn parse_host_message(bytes: &[u8]) -> Result<HostMessage<'_>, ProtoError> {
    let (header, payload) = parse_request(bytes, Direction::HostToGuest)?;
    let body = match header.kind {
        MessageKind::ECHO => HostBody::Echo { payload },
        MessageKind::NOTIFY => HostBody::Notify { payload },
        MessageKind::ECHO_BULK => {
            let (offset, len) = bulk_ref(header.kind, payload)?;
            HostBody::EchoBulk { offset, len }
        }
        kind => return Err(ProtoError::WrongDirection { kind }),
    };
    Ok(HostMessage {
        version: header.version.get(),
        id: header.id.get(),
        body,
    })
}

/// Parses what the host receives: a guest→host request (NEGOTIATE, SEND, PING or, 1.1,
/// BULK_OFFER and SEND_BULK). Used by the
/// simulated host and the fuzzers.
///
/// # Errors
/// The first rule of the module's parsing rules that `bytes` breaks.
pub fn parse_guest_message(bytes: &[u8]) -> Result<GuestMessage<'_>, ProtoError> {
    let (header, payload) = parse_request(bytes, Direction::GuestToHost)?;
    let kind = header.kind;
    let body = match kind {
        MessageKind::NEGOTIATE => {
            let b: NegotiateRequest = fixed_body(kind, payload)?;
            let (min_version, max_version) = (b.min_version.get(), b.max_version.get());
            check_range(min_version, max_version)?;
            GuestBody::Negotiate {
                min_version,
                max_version,
            }
        }
        MessageKind::SEND => GuestBody::Send { payload },
        MessageKind::PING => {
            let b: PingBody = fixed_body(kind, payload)?;
            GuestBody::Ping {
                nonce: b.nonce.get(),
            }
        }
        MessageKind::BULK_OFFER => {
            let b: BulkOffer = fixed_body(kind, payload)?;
            if b.reserved.get() != 0 {
                return Err(ProtoError::ReservedNonZero { field: "reserved" });
            }
            let (g2h, h2g) = (b.guest_to_host_len.get(), b.host_to_guest_len.get());
            if g2h == 0 || h2g == 0 || g2h.checked_add(h2g).is_none() {
                return Err(ProtoError::BadBulkReference {
                    offset: g2h,
                    len: h2g,
                });
            }
            GuestBody::BulkOffer {
                gpadl: b.gpadl.get(),
                guest_to_host_len: g2h,
                host_to_guest_len: h2g,
            }
        }
        MessageKind::SEND_BULK => {
            let (offset, len) = bulk_ref(kind, payload)?;
            GuestBody::SendBulk { offset, len }
        }
        kind => return Err(ProtoError::WrongDirection { kind }),
    };
    Ok(GuestMessage {
        version: header.version.get(),
        id: header.id.get(),
        body,
    })
}

/// Parses a reply (completion payload) to the request of `expected_kind` and `expected_id`,
/// in either direction: the guest parses NEGOTIATE, SEND and PING replies, the host ECHO and
/// NOTIFY replies. The body follows the reply rule of [`Reply`].
///
/// # Errors
/// The first rule of the module's parsing rules that `bytes` breaks.
pub fn parse_reply(
    bytes: &[u8],
    expected_kind: MessageKind,
    expected_id: u64,
) -> Result<Reply<'_>, ProtoError> {
    let (header, rest) = read_header(bytes)?;
    if !header.flags.is_reply() {
        return Err(ProtoError::ReplyFlag {
            expected_reply: true,
        });
    }
    let kind = header.kind;
    if kind != expected_kind {
        return Err(ProtoError::KindMismatch {
            expected: expected_kind,
            got: kind,
        });
    }
    let id = header.id.get();
    if id != expected_id {
        return Err(ProtoError::IdMismatch {
            expected: expected_id,
            got: id,
        });
    }
    let version = header.version.get();
    check_negotiate_version(kind, version)?;
    let payload = check_payload(&header, rest)?;
    let status = header.status();
    let body = if status.is_success() {
        check_since(kind, version)?;
        match kind {
            MessageKind::NEGOTIATE => {
                let b: NegotiateReply = fixed_body(kind, payload)?;
                if b.reserved.get() != 0 {
                    return Err(ProtoError::ReservedNonZero { field: "reserved" });
                }
                ReplyBody::Negotiate {
                    version: b.version.get(),
                }
            }
            MessageKind::PING => {
                let b: PingBody = fixed_body(kind, payload)?;
                ReplyBody::Ping {
                    nonce: b.nonce.get(),
                }
            }
            MessageKind::ECHO => ReplyBody::Echo { payload },
            MessageKind::ECHO_BULK => {
                let (offset, len) = bulk_ref(kind, payload)?;
                ReplyBody::EchoBulk { offset, len }
            }
            MessageKind::SEND
            | MessageKind::NOTIFY
            | MessageKind::BULK_OFFER
            | MessageKind::SEND_BULK => {
                empty_body(kind, payload)?;
                ReplyBody::Empty
            }
            other => return Err(ProtoError::UnknownKind(other.get())),
        }
    } else {
        empty_body(kind, payload)?;
        ReplyBody::Empty
    };
    Ok(Reply {
        kind,
        version,
        id,
        status,
        body,
    })
}

/// Parses the reply to the guest's NEGOTIATE `id` that proposed `min..=max`.
///
/// # Errors
/// Those of [`parse_reply`], and [`ProtoError::VersionOutOfRange`] when the host accepted with
/// a version outside the proposal.
pub fn parse_negotiate_reply(
    bytes: &[u8],
    id: u64,
    min: u32,
    max: u32,
) -> Result<NegotiateOutcome, ProtoError> {
    let reply = parse_reply(bytes, MessageKind::NEGOTIATE, id)?;
    match reply.body {
        ReplyBody::Negotiate { version } => {
            check_chosen_version(version, min, max).map(NegotiateOutcome::Accepted)
        }
        _ => Ok(NegotiateOutcome::Rejected(reply.status)),
    }
}

/// Parses the reply to the guest's PING `id` carrying `nonce`; returns the host's status
/// (on success the nonce has been checked).
///
/// # Errors
/// Those of [`parse_reply`], and [`ProtoError::NonceMismatch`].
pub fn parse_ping_reply(bytes: &[u8], id: u64, nonce: u64) -> Result<NtStatus, ProtoError> {
    let reply = parse_reply(bytes, MessageKind::PING, id)?;
    match reply.body {
        ReplyBody::Ping { nonce: got } if got != nonce => Err(ProtoError::NonceMismatch {
            expected: nonce,
            got,
        }),
        _ => Ok(reply.status),
    }
}

mod write;

#[cfg(test)]
mod tests;
