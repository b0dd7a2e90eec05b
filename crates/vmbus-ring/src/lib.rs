//! VMBus ring buffers, byte-exact to the wire format (reference
//! `shared/reference/vmbus-wire-and-anchors.md` §1), for endpoints that do not trust their peer.
//!
//! A VMBus channel is two unidirectional rings. Each ring is a 4 KiB control page followed by
//! a data area:
//!
//! | Control-page offset | Field | Written by |
//! |---|---|---|
//! | 0 | `u32` write index (`in`) | writer |
//! | 4 | `u32` read index (`out`) | reader |
//! | 8 | `u32` interrupt mask | reader |
//! | 12 | `u32` pending send size | writer (when blocked) |
//! | 64 | `u32` feature bits (bit 0: pending send size supported) | writer |
//!
//! Every packet in the data area is a 16-byte descriptor (`u16 type, u16 offset8, u16 len8,
//! u16 flags, u64 transaction_id`), the payload from `offset8 * 8` to `len8 * 8` zero-padded to
//! 8 bytes, and an 8-byte trailer holding the packet's start offset in its high half. Indices
//! are byte offsets, 8-aligned, `< len`; `in == out` is empty, and one 8-byte slot always stays
//! free.
//!
//! This crate writes in-band data packets (type 0x6, optionally with `COMPLETION_REQUESTED`)
//! and completions (0xB) with transaction ids that are never 0 ([`core::num::NonZeroU64`]),
//! and reads any of the four data-path types. Signalling follows §1.8: the writer signals only
//! on empty → non-empty with the reader's interrupt mask clear; the reader signals only when
//! the free space crosses the writer's pending send size. Both are reported by the `commit_*`
//! calls and counted in [`RingStats`]; raising the interrupt is the caller's business.
//!
//! A reader captures the writer's index once per refresh, validates it (`< len`, 8-aligned),
//! captures each descriptor once, validates it (`len8 >= offset8 >= 2`, `len8 * 8 + 8 <=`
//! bytes available, flags ⊆ {bit 0}, known type) and copies the payload out once; anything
//! else is [`Error`] and poisons that ring end. No input makes it panic or access memory
//! outside the ring (property-tested in `tests/hostile.rs`).
//!
//! ```
//! use core::num::NonZeroU64;
//! use vmbus_ring::{FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, PacketType};
//!
//! let mem = FlatRingMem::with_pages(1)?;
//! let mut tx = OutgoingRing::new(&mem)?;
//! let mut rx = IncomingRing::new(&mem)?;
//! let id = NonZeroU64::new(7).unwrap();
//! let kind = OutgoingKind::InBand { transaction_id: id, completion_requested: true };
//! let signal = tx.write_and_commit(&OutgoingPacket { kind, payload: &[b"hello"] })?;
//! assert!(signal, "empty -> non-empty with the mask clear");
//!
//! let mut buf = [0u8; 64];
//! let info = rx.read(&mut buf)?;
//! assert_eq!(info.packet_type, PacketType::DATA_INBAND);
//! assert_eq!((info.transaction_id, info.completion_requested), (7, true));
//! assert_eq!(&buf[..info.payload_len], b"hello\0\0\0"); // padded to 8
//! assert!(!rx.commit_read()?, "the writer is not waiting for space");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![deny(unsafe_code)] // mem::flat opts in for its two bulk copies

#[cfg(feature = "alloc")]
extern crate alloc;

mod mem;
pub mod protocol;
mod ring;

#[cfg(feature = "alloc")]
pub use mem::FlatRingMem;
pub use mem::{BadRingSize, RingMem};
pub use protocol::{PacketType, packet_footprint};
pub use ring::{
    Error, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, PacketInfo, PacketRef,
    ReadError, RingStats, WriteError,
};

impl core::error::Error for Error {}
impl core::error::Error for BadRingSize {}
impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => f.write_str("ring empty"),
            Self::Corrupt(e) => write!(f, "ring corrupt: {e}"),
        }
    }
}
impl core::error::Error for ReadError {}
impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full { needed, free } => write!(f, "ring full: need {needed}, {free} free"),
            Self::TooLarge { needed, max } => {
                write!(f, "packet of {needed} ring bytes can never fit (max {max})")
            }
            Self::Corrupt(e) => write!(f, "ring corrupt: {e}"),
        }
    }
}
impl core::error::Error for WriteError {}
