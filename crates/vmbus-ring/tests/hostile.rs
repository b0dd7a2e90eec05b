//! Property tests: a hostile peer controls every shared byte (control-page indices, mask,
//! pending send size, ring data). Whatever it writes, the ring core never panics, never asks
//! the memory for a byte outside the ring, never reads data the writer has not published, and
//! reports corruption as `Corrupt` (and keeps reporting it). And a well-behaved writer and
//! reader move any sequence of packets through any ring intact and in order.

use std::cell::RefCell;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicU32;

use proptest::prelude::*;
use vmbus_ring::protocol::{CONTROL_WORDS, PENDING_SEND_SIZE_OFFSET, WRITE_INDEX_OFFSET};
use vmbus_ring::{
    Error, FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, PacketType,
    ReadError, RingMem, WriteError,
};

/// Ring memory that checks every access the ring core makes: in bounds, u64 accesses aligned,
/// and (for data reads) inside the published window `[out, out + available)`.
struct Checked {
    inner: FlatRingMem,
    window: RefCell<Option<(usize, usize)>>,
    reads: RefCell<usize>,
}

impl Checked {
    fn new(inner: FlatRingMem) -> Self {
        Self {
            inner,
            window: RefCell::new(None),
            reads: RefCell::new(0),
        }
    }

    fn check(&self, offset: usize, n: usize, what: &str) {
        let len = self.inner.data_len();
        assert!(offset < len, "{what}: offset {offset} >= len {len}");
        assert!(n <= len, "{what}: {n} bytes > len {len}");
        if let Some((start, avail)) = *self.window.borrow() {
            let rel = (offset + len - start) % len;
            assert!(
                rel + n <= avail,
                "{what}: bytes {offset}..+{n} outside the published window {start}..+{avail}"
            );
        }
        *self.reads.borrow_mut() += 1;
    }
}

impl RingMem for Checked {
    fn control(&self) -> &[AtomicU32; CONTROL_WORDS] {
        self.inner.control()
    }
    fn data_len(&self) -> usize {
        self.inner.data_len()
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), "read_at");
        self.inner.read_at(offset, dst);
    }
    fn write_at(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), "write_at");
        self.inner.write_at(offset, src);
    }
    fn read_u64(&self, offset: usize) -> u64 {
        assert_eq!(offset % 8, 0, "unaligned read_u64({offset})");
        self.check(offset, 8, "read_u64");
        self.inner.read_u64(offset)
    }
    fn write_u64(&self, offset: usize, value: u64) {
        assert_eq!(offset % 8, 0, "unaligned write_u64({offset})");
        self.check(offset, 8, "write_u64");
        self.inner.write_u64(offset, value);
    }
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A data area of `pages8` 8-byte units filled with arbitrary bytes, biased towards
/// descriptors that look almost valid.
fn ring_bytes() -> impl Strategy<Value = Vec<u8>> {
    (1usize..=64).prop_flat_map(|words| {
        let raw = proptest::collection::vec(any::<u8>(), words * 8);
        let plausible = proptest::collection::vec(
            (
                prop_oneof![Just(6u16), Just(0xB), Just(7), Just(9), any::<u16>()],
                0u16..6,
                0u16..12,
                prop_oneof![Just(0u16), Just(1), any::<u16>()],
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            words.div_ceil(4),
        )
        .prop_map(move |ds| {
            let mut out = Vec::new();
            for (t, o, l, f, id, body) in ds {
                for v in [t, o, l, f] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&body);
            }
            out.resize(words * 8, 0);
            out
        });
        prop_oneof![raw, plausible]
    })
}

fn control_words() -> impl Strategy<Value = (u32, u32, u32, u32)> {
    let index = prop_oneof![0u32..64, (0u32..64).prop_map(|i| i * 8), any::<u32>()];
    (index.clone(), index, any::<u32>(), any::<u32>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn reader_survives_any_ring(
        data in ring_bytes(),
        (in_, out, mask, pending) in control_words(),
        buf_len in prop_oneof![Just(0usize), 0usize..600],
    ) {
        let mem = FlatRingMem::new(data.len()).expect("ring");
        let mut control = Vec::new();
        for w in [in_, out, mask, pending] {
            control.extend_from_slice(&w.to_le_bytes());
        }
        mem.load(&control, &data);
        let mem = Checked::new(mem);
        let len = mem.data_len() as u64;
        let Ok(mut rx) = IncomingRing::new(&mem) else {
            // Refused at once: an index was out of range or unaligned.
            prop_assert!(u64::from(in_) >= len || in_ % 8 != 0 || u64::from(out) >= len || out % 8 != 0);
            return Ok(());
        };
        let published = ((u64::from(in_) + len - u64::from(out)) % len) as usize;
        *mem.window.borrow_mut() = Some((out as usize, published));
        let mut buf = vec![0u8; buf_len];
        let mut seen = 0usize;
        let mut corrupt = None;
        for _ in 0..80 {
            match rx.read(&mut buf) {
                Ok(info) => {
                    prop_assert!(info.packet_type.is_known());
                    prop_assert!(info.payload_len <= buf.len());
                    prop_assert!(info.footprint >= 24 && info.footprint % 8 == 0);
                    prop_assert_eq!(info.start as usize, (out as usize + seen) % data.len());
                    seen += info.footprint;
                    prop_assert!(seen <= published, "read past the write index");
                }
                Err(ReadError::Empty) => {
                    prop_assert_eq!(seen, published);
                    break;
                }
                Err(ReadError::Corrupt(e)) => {
                    corrupt = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = corrupt {
            // Poisoned for good.
            prop_assert_eq!(rx.read(&mut buf), Err(ReadError::Corrupt(e)));
            prop_assert_eq!(rx.commit_read(), Err(e));
        } else {
            // The commit honours the (hostile) pending send size without failing.
            *mem.window.borrow_mut() = None;
            prop_assert!(rx.commit_read().is_ok());
        }
    }

    #[test]
    fn writer_survives_any_reader_index(
        pages8 in 4usize..64,
        out in any::<u32>(),
        mask in any::<u32>(),
        payloads in proptest::collection::vec(0usize..200, 1..20),
    ) {
        let mem = Checked::new(FlatRingMem::new(pages8 * 8).expect("ring"));
        let mut tx = OutgoingRing::new(&mem).expect("fresh ring");
        mem.control()[1].store(out, std::sync::atomic::Ordering::SeqCst);
        mem.control()[2].store(mask, std::sync::atomic::Ordering::SeqCst);
        let valid = (out as usize) < mem.data_len() && out % 8 == 0;
        for (i, n) in payloads.into_iter().enumerate() {
            let body = vec![0xC3; n];
            let p = OutgoingPacket {
                kind: OutgoingKind::InBand {
                    transaction_id: NonZeroU64::new(i as u64 + 1).expect("non-zero"),
                    completion_requested: true,
                },
                payload: &[&body],
            };
            match tx.write_and_commit(&p) {
                Ok(_) | Err(WriteError::Full { .. } | WriteError::TooLarge { .. }) => {}
                Err(WriteError::Corrupt(e)) => {
                    prop_assert!(!valid);
                    prop_assert_eq!(e, Error::BadReadIndex(out));
                }
            }
        }
    }

    #[test]
    fn any_packet_sequence_round_trips_in_order(
        ring_len8 in 8usize..256,
        ops in proptest::collection::vec((0usize..300, any::<bool>(), any::<bool>(), 0usize..3), 1..120),
    ) {
        let mem = FlatRingMem::new(ring_len8 * 8).expect("ring");
        let mut tx = OutgoingRing::new(&mem).expect("tx");
        let mut rx = IncomingRing::new(&mem).expect("rx");
        let mut in_flight = std::collections::VecDeque::new();
        let mut buf = vec![0u8; 4096];
        let mut next_id = 1u64;
        for (n, completion, is_completion, reads) in ops {
            let body: Vec<u8> = (0..n).map(|i| (i as u64 ^ next_id) as u8).collect();
            let id = NonZeroU64::new(next_id).expect("ids start at 1");
            let kind = if is_completion {
                OutgoingKind::Completion { transaction_id: id }
            } else {
                OutgoingKind::InBand { transaction_id: id, completion_requested: completion }
            };
            let p = OutgoingPacket { kind, payload: &[&body[..n / 2], &body[n / 2..]] };
            match tx.write_and_commit(&p) {
                Ok(_) => {
                    in_flight.push_back((next_id, kind, body));
                    next_id += 1;
                }
                Err(WriteError::Full { needed, free }) => prop_assert!(needed > free),
                Err(WriteError::TooLarge { needed, max }) => {
                    prop_assert!(needed > max);
                    prop_assert_eq!(max, ring_len8 * 8 - 8);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
            for _ in 0..reads {
                match rx.read(&mut buf) {
                    Ok(info) => {
                        let (id, kind, body) = in_flight.pop_front().expect("sent");
                        prop_assert_eq!(info.transaction_id, id);
                        let (typ, cr) = match kind {
                            OutgoingKind::InBand { completion_requested, .. } => {
                                (PacketType::DATA_INBAND, completion_requested)
                            }
                            OutgoingKind::Completion { .. } => (PacketType::COMPLETION, false),
                        };
                        prop_assert_eq!(info.packet_type, typ);
                        prop_assert_eq!(info.completion_requested, cr);
                        prop_assert_eq!(info.payload_len, body.len().next_multiple_of(8));
                        prop_assert_eq!(&buf[..body.len()], &body[..]);
                        prop_assert!(buf[body.len()..info.payload_len].iter().all(|b| *b == 0));
                    }
                    Err(ReadError::Empty) => prop_assert!(in_flight.is_empty()),
                    Err(e) => prop_assert!(false, "{e}"),
                }
                rx.commit_read().expect("commit");
            }
            // The bytes in the control page are the ends' private positions.
            let c = mem.control_bytes();
            prop_assert_eq!(le32(&c, WRITE_INDEX_OFFSET) as usize % 8, 0);
            prop_assert_eq!(le32(&c, PENDING_SEND_SIZE_OFFSET), 0);
        }
    }
}
