//! The wire format of one VMBus ring (reference `vmbus-wire-and-anchors.md` §1.2–§1.6), as
//! constants. Every multi-byte field is little-endian.

/// Bytes in the control page that precedes a ring's data area.
pub const CONTROL_PAGE_SIZE: usize = 4096;
/// `u32` words in the control page.
pub const CONTROL_WORDS: usize = CONTROL_PAGE_SIZE / 4;

/// Control-page byte offset of the write index (`in`), owned by the writer.
pub const WRITE_INDEX_OFFSET: usize = 0;
/// Control-page byte offset of the read index (`out`), owned by the reader.
pub const READ_INDEX_OFFSET: usize = 4;
/// Control-page byte offset of the interrupt mask, set by the reader: nonzero means "do not
/// signal me on empty → non-empty".
pub const INTERRUPT_MASK_OFFSET: usize = 8;
/// Control-page byte offset of the pending send size, set by a blocked writer: the reader
/// signals when the free space crosses it.
pub const PENDING_SEND_SIZE_OFFSET: usize = 12;
/// Control-page byte offset of the feature bits, set by the writer of the ring.
pub const FEATURE_BITS_OFFSET: usize = 64;
/// Feature bit 0: the writer sets `pending_send_size` when blocked and honours it in the
/// opposite ring.
pub const FEATURE_SUPPORTS_PENDING_SEND_SIZE: u32 = 1;

pub(crate) const WRITE_INDEX: usize = WRITE_INDEX_OFFSET / 4;
pub(crate) const READ_INDEX: usize = READ_INDEX_OFFSET / 4;
pub(crate) const INTERRUPT_MASK: usize = INTERRUPT_MASK_OFFSET / 4;
pub(crate) const PENDING_SEND_SIZE: usize = PENDING_SEND_SIZE_OFFSET / 4;
pub(crate) const FEATURE_BITS: usize = FEATURE_BITS_OFFSET / 4;

/// Bytes of a packet descriptor: `u16 type, u16 offset8, u16 len8, u16 flags, u64 transaction_id`.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Bytes of the trailer after every packet: `u32 reserved (0), u32 start offset of the packet`.
pub const TRAILER_SIZE: usize = 8;
/// Descriptor flag: the sender asks for a completion packet with the same transaction id.
pub const FLAG_COMPLETION_REQUESTED: u16 = 1;
/// The descriptor flags that are defined (any other bit is corruption).
pub const DEFINED_FLAGS: u16 = FLAG_COMPLETION_REQUESTED;

/// A packet type (descriptor offset 0). An open enum: every value is representable, and the
/// reader accepts only the four the data path uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketType(pub u16);

impl PacketType {
    /// `VM_PKT_DATA_INBAND`: the payload is inline in the ring.
    pub const DATA_INBAND: Self = Self(0x6);
    /// `VM_PKT_DATA_USING_XFER_PAGES`: ranges of a pre-registered transfer-page set.
    pub const DATA_USING_XFER_PAGES: Self = Self(0x7);
    /// `VM_PKT_DATA_USING_GPA_DIRECT`: guest page ranges.
    pub const DATA_USING_GPA_DIRECT: Self = Self(0x9);
    /// `VM_PKT_COMP`: the completion of the packet with the same transaction id.
    pub const COMPLETION: Self = Self(0xB);

    /// One of the four types a reader accepts.
    #[must_use]
    pub const fn is_known(self) -> bool {
        matches!(self.0, 0x6 | 0x7 | 0x9 | 0xB)
    }

    /// The 8-byte units the type's fixed header needs (descriptor included): `offset8` must be
    /// at least this.
    #[must_use]
    pub const fn min_offset8(self) -> u16 {
        match self.0 {
            // Descriptor + {u16 set id, u8, u8, u32 range count} or {u32 reserved, u32 count}.
            0x7 | 0x9 => 3,
            _ => 2,
        }
    }
}

/// Ring bytes one packet with `payload` bytes of in-band data takes: descriptor, payload
/// rounded up to 8, trailer (§1.6: a 4000-byte payload takes 4024 bytes).
#[must_use]
pub const fn packet_footprint(payload: usize) -> usize {
    DESCRIPTOR_SIZE + payload.next_multiple_of(8) + TRAILER_SIZE
}

/// The first descriptor word as it sits in the ring (`type | offset8 << 16 | len8 << 32 |
/// flags << 48`).
#[must_use]
pub(crate) const fn descriptor_word(typ: PacketType, offset8: u16, len8: u16, flags: u16) -> u64 {
    (typ.0 as u64) | ((offset8 as u64) << 16) | ((len8 as u64) << 32) | ((flags as u64) << 48)
}

/// The fields of a first descriptor word: (type, offset8, len8, flags).
#[must_use]
pub(crate) const fn split_descriptor_word(w: u64) -> (PacketType, u16, u16, u16) {
    (
        PacketType(w as u16),
        (w >> 16) as u16,
        (w >> 32) as u16,
        (w >> 48) as u16,
    )
}

/// The trailer word after a packet that starts at `start`.
#[must_use]
pub(crate) const fn trailer_word(start: u32) -> u64 {
    (start as u64) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_word_is_little_endian_field_order() {
        let w = descriptor_word(PacketType::DATA_INBAND, 2, 5, FLAG_COMPLETION_REQUESTED);
        assert_eq!(w.to_le_bytes(), [6, 0, 2, 0, 5, 0, 1, 0]);
        assert_eq!(split_descriptor_word(w), (PacketType::DATA_INBAND, 2, 5, 1));
        assert_eq!(
            trailer_word(0x1238).to_le_bytes(),
            [0, 0, 0, 0, 0x38, 0x12, 0, 0]
        );
    }

    #[test]
    fn footprint_matches_the_reference_example() {
        assert_eq!(packet_footprint(4000), 4024);
        assert_eq!(packet_footprint(0), 24);
        assert_eq!(packet_footprint(1), 32);
    }
}
