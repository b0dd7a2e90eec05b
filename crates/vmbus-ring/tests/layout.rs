//! Interoperability without another implementation at hand: packets hand-built byte by byte
//! from the published layout are read as the layout says, and what the ring writes is checked
//! byte for byte against the same layout, wrap-around included.
//!
//! The layout, as Linux (`include/linux/hyperv.h`: `struct hv_ring_buffer`,
//! `struct vmpacket_descriptor`; `drivers/hv/ring_buffer.c`), openvmm (`vmbus_ring`) and
//! Microsoft's `VmbusPacketFormat.h` define it (reference `vmbus-wire-and-anchors.md` §1.2–1.6):
//!
//! * control page: `u32 write_index` at 0, `u32 read_index` at 4, `u32 interrupt_mask` at 8,
//!   `u32 pending_send_sz` at 12, `u32 feature_bits` at 64 (bit 0: pending send size);
//! * every packet: `u16 type, u16 offset8, u16 len8, u16 flags, u64 trans_id`, the payload from
//!   `offset8 * 8`, zero padding to `len8 * 8`, then an 8-byte trailer whose high 32 bits are
//!   the offset the packet starts at (Linux: `prev_indices = write_index << 32`);
//! * a packet that reaches the end of the data area continues at offset 0.
//!
//! Two choices the specification leaves to each side, decided here and tested:
//!
//! * **The largest footprint a writer may use is the ring size − 8.** Linux's writer requires
//!   `bytes_avail_towrite > packet + trailer` (strictly), Microsoft's `PkpFreeBytes` is
//!   `out − in − 1`: both keep one 8-byte slot free so that a full ring never looks empty
//!   (`write_index == read_index`), and both accept a footprint of exactly size − 8. openvmm's
//!   writer stops 8 bytes earlier (size − 16), which is stricter than it needs to be; a reader
//!   must accept what Linux and Windows write, so this ring writes and reads up to size − 8.
//! * **A new incoming ring leaves the interrupt mask clear (0).** The reader wants the first
//!   packet signalled: Linux's guest rings start zeroed and unmasked (`hv_ringbuffer_init`), and
//!   the driver's channel waits for an interrupt, not polls. openvmm's reader starts masked
//!   because it polls first and unmasks only before it waits; a peer that starts masked just
//!   delays its first signal, which the tests of the model cover.

use std::num::NonZeroU64;

use vmbus_ring::{
    FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, WriteError,
};

const RING: usize = 256;

/// The control page's first 68 bytes with these indices (mask, pending size, features 0).
fn control(write_index: u32, read_index: u32) -> Vec<u8> {
    let mut c = vec![0u8; 68];
    c[0..4].copy_from_slice(&write_index.to_le_bytes());
    c[4..8].copy_from_slice(&read_index.to_le_bytes());
    c
}

/// Writes `bytes` into a ring image at `at`, continuing at 0 past the end.
fn put(ring: &mut [u8], at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let n = ring.len();
        ring[(at + i) % n] = *b;
    }
}

/// One packet as the layout defines it: descriptor, payload, zero padding, trailer. Returns
/// the offset after it.
fn hand_built(ring: &mut [u8], at: usize, ty: u16, flags: u16, id: u64, payload: &[u8]) -> usize {
    let padded = payload.len().div_ceil(8) * 8;
    let len8 = u16::try_from((16 + padded) / 8).unwrap();
    let mut p = Vec::new();
    p.extend_from_slice(&ty.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes()); // offset8: the payload right after the descriptor
    p.extend_from_slice(&len8.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(payload);
    p.resize(16 + padded, 0);
    p.extend_from_slice(&((at as u64) << 32).to_le_bytes());
    put(ring, at, &p);
    (at + p.len()) % ring.len()
}

#[test]
fn hand_built_packets_are_read_as_the_layout_says() {
    let mut data = vec![0u8; RING];
    // An in-band packet with a completion requested, a completion, then one that wraps: its
    // descriptor at 200, its 48-byte payload from 216 past the end to 8, its trailer at 8.
    let a = hand_built(&mut data, 104, 0x6, 1, 0x1122_3344_5566_7788, b"hello");
    let b = hand_built(&mut data, a, 0xB, 0, 7, &[0x5A; 16]);
    assert_eq!(b, 176);
    let wrap: Vec<u8> = (0..48u8).collect();
    let c = hand_built(&mut data, 200, 0x6, 0, 9, &wrap);
    assert_eq!(c, 16, "it wrapped");
    // Bytes 176..200 are not a packet: the reader starts at the first one, 104, and the
    // second's end is not the third's start, so give the reader two batches.
    let mem = FlatRingMem::new(RING).unwrap();
    mem.load(&control(176, 104), &data);
    let mut rx = IncomingRing::new(&mem).unwrap();
    let mut buf = [0u8; 64];
    let p = rx.read(&mut buf).unwrap();
    assert_eq!(
        (p.packet_type.0, p.completion_requested, p.transaction_id),
        (0x6, true, 0x1122_3344_5566_7788)
    );
    assert_eq!(p.payload_len, 8, "in-band payloads are whole 8-byte units");
    assert_eq!(&buf[..5], b"hello");
    assert_eq!((p.start, p.end, p.footprint), (104, 136, 32));
    let p = rx.read(&mut buf).unwrap();
    assert_eq!(
        (p.packet_type.0, p.completion_requested, p.transaction_id),
        (0xB, false, 7)
    );
    assert_eq!(&buf[..16], &[0x5A; 16]);
    assert_eq!(p.end, 176);
    rx.commit_read().unwrap();
    assert_eq!(
        &mem.control_bytes()[4..8],
        &176u32.to_le_bytes(),
        "read index published"
    );

    let mem = FlatRingMem::new(RING).unwrap();
    mem.load(&control(16, 200), &data);
    let mut rx = IncomingRing::new(&mem).unwrap();
    let p = rx.read(&mut buf).unwrap();
    assert_eq!((p.transaction_id, p.payload_len), (9, 48));
    assert_eq!(
        &buf[..48],
        &wrap[..],
        "the payload across the end of the ring"
    );
    assert_eq!((p.start, p.end), (200, 16));
}

#[test]
fn the_writer_produces_the_layout_byte_for_byte_across_the_end() {
    let mem = FlatRingMem::new(RING).unwrap();
    // Old bytes everywhere, so that padding the writer forgets to zero shows.
    mem.load(&control(200, 200), &[0xEE; RING]);
    let mut tx = OutgoingRing::new(&mem).unwrap();
    let payload: Vec<u8> = (1..=45u8).collect();
    let pieces: [&[u8]; 1] = [&payload];
    let packet = OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::new(0xABCD).unwrap(),
            completion_requested: true,
        },
        payload: &pieces,
    };
    assert!(
        tx.write_and_commit(&packet).unwrap(),
        "empty → non-empty, mask clear: signal"
    );

    let mut want = vec![0xEEu8; RING];
    let end = hand_built(&mut want, 200, 0x6, 1, 0xABCD, &payload);
    assert_eq!(end, 16);
    assert_eq!(
        mem.data_bytes(),
        want,
        "descriptor, payload, zero padding, trailer, wrapped"
    );
    let c = mem.control_bytes();
    assert_eq!(
        &c[0..4],
        &16u32.to_le_bytes(),
        "write index after the trailer"
    );
    assert_eq!(
        &c[4..8],
        &200u32.to_le_bytes(),
        "the reader's index untouched"
    );
    assert_eq!(&c[8..12], &[0; 4], "the reader's interrupt mask untouched");
    assert_eq!(&c[12..16], &[0; 4], "no pending send size");
    assert_eq!(c[64] & 1, 1, "feature bit 0: pending send size supported");
}

#[test]
fn the_largest_packet_leaves_exactly_one_eight_byte_slot() {
    let mem = FlatRingMem::new(RING).unwrap();
    let mut tx = OutgoingRing::new(&mem).unwrap();
    assert_eq!(tx.max_footprint(), RING - 8);
    let fits = vec![1u8; RING - 8 - 16 - 8]; // footprint: 16 + 224 + 8 = 248
    let big = vec![1u8; RING - 8 - 16 - 8 + 1]; // pads to 232: footprint 256
    let in_band = |pieces| OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::MIN,
            completion_requested: false,
        },
        payload: pieces,
    };
    let big_pieces: [&[u8]; 1] = [&big];
    assert!(matches!(
        tx.write(&in_band(&big_pieces)),
        Err(WriteError::TooLarge {
            needed: 256,
            max: 248
        })
    ));
    let pieces: [&[u8]; 1] = [&fits];
    let fitting = in_band(&pieces);
    tx.write_and_commit(&fitting).unwrap();
    assert_eq!(
        &mem.control_bytes()[0..4],
        &248u32.to_le_bytes(),
        "not back at 0: not empty"
    );
    assert_eq!(tx.free().unwrap(), 0);

    // And a reader takes a packet of that footprint written by someone else.
    let mut data = vec![0u8; RING];
    hand_built(&mut data, 0, 0x6, 0, 5, &fits);
    let mem = FlatRingMem::new(RING).unwrap();
    mem.load(&control(248, 0), &data);
    let mut rx = IncomingRing::new(&mem).unwrap();
    let mut buf = vec![0u8; RING];
    let p = rx.read(&mut buf).unwrap();
    assert_eq!((p.footprint, p.payload_len), (248, 224));
}

#[test]
fn a_new_incoming_ring_leaves_the_interrupt_mask_clear() {
    let mem = FlatRingMem::new(RING).unwrap();
    let _rx = IncomingRing::new(&mem).unwrap();
    assert_eq!(
        &mem.control_bytes()[8..12],
        &[0; 4],
        "unmasked: the first packet is signalled"
    );
    let mut tx = OutgoingRing::new(&mem).unwrap();
    let pieces: [&[u8]; 1] = [b"x"];
    let packet = OutgoingPacket {
        kind: OutgoingKind::InBand {
            transaction_id: NonZeroU64::MIN,
            completion_requested: false,
        },
        payload: &pieces,
    };
    assert!(
        tx.write_and_commit(&packet).unwrap(),
        "the writer signals the first packet"
    );
}
