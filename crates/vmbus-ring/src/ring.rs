//! The two ends of one ring: [`OutgoingRing`] (the writer) and [`IncomingRing`] (the reader).
//!
//! Each end keeps private offsets and publishes its own index only in `commit_*`, so a batch
//! of packets costs one index store (a full barrier), and one signal decision (§1.3, §1.8). The
//! peer's index is read once per refresh, validated (`< len`, 8-aligned) and cached; all
//! arithmetic uses the cached copy.

use core::fmt;
use core::num::NonZeroU64;

use crate::mem::{RingMem, load_control, or_control, publish_control, store_control, valid_len};
use crate::protocol::{
    DEFINED_FLAGS, DESCRIPTOR_SIZE, FEATURE_BITS, FEATURE_SUPPORTS_PENDING_SEND_SIZE,
    FLAG_COMPLETION_REQUESTED, INTERRUPT_MASK, PENDING_SEND_SIZE, PacketType, READ_INDEX,
    TRAILER_SIZE, WRITE_INDEX, descriptor_word, packet_footprint, split_descriptor_word,
    trailer_word,
};

/// What makes a ring unusable: the peer (or the memory) broke the ring protocol. Once a ring
/// end has seen one, it is poisoned and returns it from every later call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The data area size is not a non-zero multiple of 8 below 4 GiB.
    BadRingSize(usize),
    /// The write index in the control page is not `< len` and 8-aligned.
    BadWriteIndex(u32),
    /// The read index in the control page is not `< len` and 8-aligned.
    BadReadIndex(u32),
    /// The ring holds fewer bytes than the smallest packet (descriptor + trailer).
    Truncated {
        /// Bytes between the read and write indices.
        available: usize,
    },
    /// `offset8` is below the type's header size (2 for in-band and completions) or above
    /// `len8`.
    BadDataOffset {
        /// The descriptor's `offset8`.
        offset8: u16,
        /// The descriptor's `len8`.
        len8: u16,
    },
    /// `len8 * 8` plus the 8-byte trailer is more than the ring holds.
    PacketPastWriteIndex {
        /// The descriptor's `len8`.
        len8: u16,
        /// Bytes between the read and write indices.
        available: usize,
    },
    /// A flag bit other than `COMPLETION_REQUESTED`.
    BadFlags(u16),
    /// A packet type other than 0x6, 0x7, 0x9, 0xB.
    UnknownType(u16),
    /// The payload is larger than the reader accepts (its maximum packet size).
    PacketTooLarge {
        /// Payload bytes in the packet.
        payload: usize,
        /// The most the reader accepts.
        max: usize,
    },
    /// [`IncomingRing::commit_read_to`] was given an offset that is not the end of a packet
    /// read since the last commit. The reader's own mistake: the ring is not poisoned and
    /// nothing is published.
    NotAPacketEnd(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRingSize(n) => write!(f, "bad ring data size {n}"),
            Self::BadWriteIndex(i) => write!(f, "write index {i:#x} out of range or unaligned"),
            Self::BadReadIndex(i) => write!(f, "read index {i:#x} out of range or unaligned"),
            Self::Truncated { available } => {
                write!(f, "{available} bytes in the ring, less than a packet")
            }
            Self::BadDataOffset { offset8, len8 } => {
                write!(f, "descriptor offset8 {offset8} invalid for len8 {len8}")
            }
            Self::PacketPastWriteIndex { len8, available } => write!(
                f,
                "packet of len8 {len8} (+ trailer) exceeds the {available} bytes in the ring"
            ),
            Self::BadFlags(fl) => write!(f, "undefined descriptor flags {fl:#x}"),
            Self::UnknownType(t) => write!(f, "unknown packet type {t:#x}"),
            Self::PacketTooLarge { payload, max } => {
                write!(f, "payload of {payload} bytes exceeds the maximum {max}")
            }
            Self::NotAPacketEnd(end) => {
                write!(
                    f,
                    "offset {end} is not the end of a packet read since the last commit"
                )
            }
        }
    }
}

/// Why [`IncomingRing::read_packet`] returned no packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Nothing to read: back-pressure, not an error.
    Empty,
    /// The ring is corrupt (now poisoned).
    Corrupt(Error),
}

/// Why [`OutgoingRing::write`] did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Not enough free space now: `needed` bytes (the packet's footprint), `free` available.
    Full {
        /// Footprint of the packet.
        needed: usize,
        /// Free bytes (one 8-byte slot is always kept free).
        free: usize,
    },
    /// The packet can never fit this ring (or its `len8` would overflow).
    TooLarge {
        /// Footprint of the packet.
        needed: usize,
        /// The largest footprint the ring takes (`len - 8`).
        max: usize,
    },
    /// The ring is corrupt (now poisoned).
    Corrupt(Error),
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        Self::Corrupt(e)
    }
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        Self::Corrupt(e)
    }
}

/// Counters of one ring end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Packets written or read.
    pub packets: u64,
    /// Ring bytes those packets took (descriptor, padded payload, trailer).
    pub bytes: u64,
    /// Commits that require signalling the peer (writer: empty → non-empty with the mask
    /// clear; reader: free space crossed the writer's pending send size).
    pub signals: u64,
    /// Commits that published an index but needed no signal.
    pub signals_skipped: u64,
    /// Writes refused because the ring was full.
    pub full: u64,
}

/// What kind of packet to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutgoingKind {
    /// In-band data (type 0x6).
    InBand {
        /// The sender's transaction id (never 0: a peer does not complete id 0).
        transaction_id: NonZeroU64,
        /// Sets `COMPLETION_REQUESTED`: the peer answers with a completion carrying the id.
        completion_requested: bool,
    },
    /// The completion (type 0xB) of the peer's packet with this transaction id.
    Completion {
        /// The id of the packet being completed.
        transaction_id: NonZeroU64,
    },
}

/// A packet to write: its kind and its payload, gathered from several slices (written in
/// order, then zero-padded to 8 bytes).
#[derive(Clone, Copy, Debug)]
pub struct OutgoingPacket<'a> {
    /// Type, transaction id and flags.
    pub kind: OutgoingKind,
    /// The payload pieces.
    pub payload: &'a [&'a [u8]],
}

impl OutgoingPacket<'_> {
    /// Total payload bytes (saturating).
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.payload
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.len()))
    }

    /// Ring bytes this packet takes.
    #[must_use]
    pub fn footprint(&self) -> usize {
        packet_footprint(self.payload_len())
    }
}

/// A validated packet descriptor, captured once from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The packet type (one of the four known ones).
    pub packet_type: PacketType,
    /// `COMPLETION_REQUESTED` was set.
    pub completion_requested: bool,
    /// The transaction id as the peer wrote it (may be 0 from a misbehaving peer).
    pub transaction_id: u64,
    /// Payload bytes: `(len8 - offset8) * 8` (in-band payloads are padded to 8).
    pub payload_len: usize,
    /// Ring bytes the packet takes, trailer included.
    pub footprint: usize,
    /// Data offset of the packet's descriptor.
    pub start: u32,
    /// Data offset just past the packet's trailer (where the next packet starts).
    pub end: u32,
    payload_at: u32,
}

fn check_index(len: usize, index: u32, bad: fn(u32) -> Error) -> Result<usize, Error> {
    let i = usize::try_from(index).map_err(|_| bad(index))?;
    if i < len && i.is_multiple_of(8) {
        Ok(i)
    } else {
        Err(bad(index))
    }
}

/// Bytes from `from` forward to `to` in a ring of `len` (both `< len`).
const fn distance(len: usize, from: usize, to: usize) -> usize {
    if to >= from {
        to - from
    } else {
        len - from + to
    }
}

/// `at + n` wrapped into the ring (`at < len`, `n <= len`).
const fn advance(len: usize, at: usize, n: usize) -> usize {
    let end = at + n;
    if end >= len { end - len } else { end }
}

fn to_u32(offset: usize) -> u32 {
    // Ring offsets are < len <= u32::MAX (checked at construction).
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct OutgoingRing<M: RingMem> {
    mem: M,
    len: usize,
    /// Where the next packet goes (written but uncommitted packets lie before it).
    next_in: usize,
    /// The write index as last published.
    committed_in: usize,
    /// The reader's index as last read and validated.
    cached_out: usize,
    poisoned: Option<Error>,
    stats: RingStats,
}

impl<M: RingMem> OutgoingRing<M> {
    /// Takes the writing end of `mem`: validates both indices, sets
    /// `FEATURE_SUPPORTS_PENDING_SEND_SIZE` and clears the pending send size.
    ///
    /// # Errors
    /// [`Error::BadRingSize`], [`Error::BadWriteIndex`], [`Error::BadReadIndex`].
    pub fn new(mem: M) -> Result<Self, Error> {
        let len = mem.data_len();
        if !valid_len(len) {
            return Err(Error::BadRingSize(len));
        }
        let next_in = check_index(len, load_control(&mem, WRITE_INDEX), Error::BadWriteIndex)?;
        let cached_out = check_index(len, load_control(&mem, READ_INDEX), Error::BadReadIndex)?;
        or_control(&mem, FEATURE_BITS, FEATURE_SUPPORTS_PENDING_SEND_SIZE);
        store_control(&mem, PENDING_SEND_SIZE, 0);
        Ok(Self {
            mem,
            len,
            next_in,
            committed_in: next_in,
            cached_out,
            poisoned: None,
            stats: RingStats::default(),
        })
    }

    /// The ring memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// The largest footprint a packet may have (one 8-byte slot always stays free).
    #[must_use]
    pub fn max_footprint(&self) -> usize {
        self.len - 8
    }

    /// The poison, if the ring was found corrupt.
    #[must_use]
    pub fn poisoned(&self) -> Option<Error> {
        self.poisoned
    }

    fn poison(&mut self, e: Error) -> Error {
        *self.poisoned.get_or_insert(e)
    }

    fn free_with(&self, out: usize) -> usize {
        self.len - distance(self.len, out, self.next_in) - 8
    }

    fn refresh_out(&mut self) -> Result<usize, Error> {
        let raw = load_control(&self.mem, READ_INDEX);
        match check_index(self.len, raw, Error::BadReadIndex) {
            Ok(out) => {
                self.cached_out = out;
                Ok(out)
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Free bytes now (re-reads the reader's index).
    ///
    /// # Errors
    /// The ring is corrupt.
    pub fn free(&mut self) -> Result<usize, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let out = self.refresh_out()?;
        Ok(self.free_with(out))
    }

    /// Writes one packet after the uncommitted ones; the reader sees it after
    /// [`commit_write`](Self::commit_write).
    ///
    /// # Errors
    /// [`WriteError::Full`] (nothing written; retry after the reader frees space),
    /// [`WriteError::TooLarge`], [`WriteError::Corrupt`].
    pub fn write(&mut self, packet: &OutgoingPacket<'_>) -> Result<(), WriteError> {
        if let Some(e) = self.poisoned {
            return Err(e.into());
        }
        let total = packet.payload_len();
        let padded = total.next_multiple_of(8);
        let needed = packet_footprint(total);
        let len8 = u16::try_from((DESCRIPTOR_SIZE + padded) / 8);
        let max = self.max_footprint();
        let Ok(len8) = len8 else {
            return Err(WriteError::TooLarge { needed, max });
        };
        if needed > max {
            return Err(WriteError::TooLarge { needed, max });
        }
        if self.free_with(self.cached_out) < needed {
            let out = self.refresh_out()?;
            let free = self.free_with(out);
            if free < needed {
                self.stats.full += 1;
                return Err(WriteError::Full { needed, free });
            }
        }
        let (typ, id, flags) = match packet.kind {
            OutgoingKind::InBand {
                transaction_id,
                completion_requested,
            } => (
                PacketType::DATA_INBAND,
                transaction_id,
                if completion_requested {
                    FLAG_COMPLETION_REQUESTED
                } else {
                    0
                },
            ),
            OutgoingKind::Completion { transaction_id } => {
                (PacketType::COMPLETION, transaction_id, 0)
            }
        };
        let start = self.next_in;
        let len = self.len;
        self.mem
            .write_u64(start, descriptor_word(typ, 2, len8, flags));
        self.mem.write_u64(advance(len, start, 8), id.get());
        let mut at = advance(len, start, DESCRIPTOR_SIZE);
        for piece in packet.payload {
            if !piece.is_empty() {
                self.mem.write_at(at, piece);
                at = advance(len, at, piece.len());
            }
        }
        let pad = padded - total;
        if pad > 0 {
            self.mem
                .write_at(at, [0u8; 8].get(..pad).unwrap_or_default());
            at = advance(len, at, pad);
        }
        self.mem.write_u64(at, trailer_word(to_u32(start)));
        self.next_in = advance(len, at, TRAILER_SIZE);
        self.stats.packets += 1;
        self.stats.bytes += needed as u64;
        Ok(())
    }

    /// Publishes every packet written since the last commit. Returns whether the reader must
    /// be signalled: only if the ring was empty before this batch and the reader's interrupt
    /// mask is clear (§1.8).
    ///
    /// # Errors
    /// The reader's index is corrupt (the packets are published; the ring is poisoned).
    pub fn commit_write(&mut self) -> Result<bool, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if self.next_in == self.committed_in {
            return Ok(false);
        }
        publish_control(&self.mem, WRITE_INDEX, to_u32(self.next_in));
        let masked = load_control(&self.mem, INTERRUPT_MASK) != 0;
        let was_empty = self.refresh_out()? == self.committed_in;
        self.committed_in = self.next_in;
        let signal = was_empty && !masked;
        if signal {
            self.stats.signals += 1;
        } else {
            self.stats.signals_skipped += 1;
        }
        Ok(signal)
    }

    /// [`write`](Self::write) then [`commit_write`](Self::commit_write).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_and_commit(&mut self, packet: &OutgoingPacket<'_>) -> Result<bool, WriteError> {
        self.write(packet)?;
        Ok(self.commit_write()?)
    }

    /// The writer is blocked on a packet of footprint `needed`: publishes the pending send size
    /// (so the reader signals once that much is free), then re-checks the free space to close
    /// the race with a reader that freed space meanwhile. Returns whether the packet fits now.
    ///
    /// # Errors
    /// The ring is corrupt.
    pub fn set_pending_send_size(&mut self, needed: usize) -> Result<bool, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let want = needed.min(self.max_footprint());
        publish_control(&self.mem, PENDING_SEND_SIZE, to_u32(want));
        let out = self.refresh_out()?;
        Ok(self.free_with(out) >= needed)
    }

    /// Clears the pending send size (the writer is no longer blocked).
    pub fn clear_pending_send_size(&mut self) {
        store_control(&self.mem, PENDING_SEND_SIZE, 0);
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct IncomingRing<M: RingMem> {
    mem: M,
    len: usize,
    /// Where the next packet starts (read but uncommitted packets lie before it).
    next_out: usize,
    /// The read index as last published.
    committed_out: usize,
    /// The writer's index as last read and validated.
    cached_in: usize,
    poisoned: Option<Error>,
    stats: RingStats,
}

impl<M: RingMem> IncomingRing<M> {
    /// Takes the reading end of `mem`, validating both indices.
    ///
    /// # Errors
    /// [`Error::BadRingSize`], [`Error::BadWriteIndex`], [`Error::BadReadIndex`].
    pub fn new(mem: M) -> Result<Self, Error> {
        let len = mem.data_len();
        if !valid_len(len) {
            return Err(Error::BadRingSize(len));
        }
        let next_out = check_index(len, load_control(&mem, READ_INDEX), Error::BadReadIndex)?;
        let cached_in = check_index(len, load_control(&mem, WRITE_INDEX), Error::BadWriteIndex)?;
        Ok(Self {
            mem,
            len,
            next_out,
            committed_out: next_out,
            cached_in,
            poisoned: None,
            stats: RingStats::default(),
        })
    }

    /// The ring memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// The poison, if the ring was found corrupt.
    #[must_use]
    pub fn poisoned(&self) -> Option<Error> {
        self.poisoned
    }

    /// Where the next read starts (the end of the last packet read).
    #[must_use]
    pub fn read_position(&self) -> u32 {
        to_u32(self.next_out)
    }

    fn poison(&mut self, e: Error) -> Error {
        *self.poisoned.get_or_insert(e)
    }

    fn refresh_in(&mut self) -> Result<usize, Error> {
        let raw = load_control(&self.mem, WRITE_INDEX);
        match check_index(self.len, raw, Error::BadWriteIndex) {
            Ok(i) => {
                self.cached_in = i;
                Ok(i)
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Sets (`true`) or clears the interrupt mask: while set, the writer does not signal on
    /// empty → non-empty. Clear it before waiting, then check [`is_empty`](Self::is_empty)
    /// again (a packet may have arrived while it was set).
    pub fn set_interrupt_mask(&self, masked: bool) {
        publish_control(&self.mem, INTERRUPT_MASK, u32::from(masked));
    }

    /// Whether the writer announced `FEATURE_SUPPORTS_PENDING_SEND_SIZE` on this ring.
    #[must_use]
    pub fn writer_uses_pending_send_size(&self) -> bool {
        load_control(&self.mem, FEATURE_BITS) & FEATURE_SUPPORTS_PENDING_SEND_SIZE != 0
    }

    /// Whether nothing is left to read (re-reads the writer's index).
    ///
    /// # Errors
    /// The ring is corrupt.
    pub fn is_empty(&mut self) -> Result<bool, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        Ok(self.refresh_in()? == self.next_out)
    }

    /// Captures and validates the next packet's descriptor. The packet stays in the ring until
    /// [`PacketRef::consume`]; its payload is copied out with [`PacketRef::copy_payload`].
    ///
    /// # Errors
    /// [`ReadError::Empty`], or [`ReadError::Corrupt`] for an invalid index or descriptor
    /// (the ring is then poisoned).
    pub fn read_packet(&mut self) -> Result<PacketRef<'_, M>, ReadError> {
        if let Some(e) = self.poisoned {
            return Err(e.into());
        }
        let len = self.len;
        let mut available = distance(len, self.next_out, self.cached_in);
        if available == 0 {
            available = distance(len, self.next_out, self.refresh_in()?);
            if available == 0 {
                return Err(ReadError::Empty);
            }
        }
        match self.validate(available) {
            Ok(info) => Ok(PacketRef { ring: self, info }),
            Err(e) => Err(self.poison(e).into()),
        }
    }

    fn validate(&self, available: usize) -> Result<PacketInfo, Error> {
        let len = self.len;
        if available < DESCRIPTOR_SIZE + TRAILER_SIZE {
            return Err(Error::Truncated { available });
        }
        let start = self.next_out;
        // One load per descriptor word: the values below are all the reader ever uses.
        let (typ, offset8, len8, flags) = split_descriptor_word(self.mem.read_u64(start));
        let transaction_id = self.mem.read_u64(advance(len, start, 8));
        if !typ.is_known() {
            return Err(Error::UnknownType(typ.0));
        }
        if flags & !DEFINED_FLAGS != 0 {
            return Err(Error::BadFlags(flags));
        }
        if offset8 < typ.min_offset8() || offset8 > len8 {
            return Err(Error::BadDataOffset { offset8, len8 });
        }
        let body = usize::from(len8) * 8;
        let footprint = body + TRAILER_SIZE;
        if footprint > available {
            return Err(Error::PacketPastWriteIndex { len8, available });
        }
        let data_offset = usize::from(offset8) * 8;
        Ok(PacketInfo {
            packet_type: typ,
            completion_requested: flags & FLAG_COMPLETION_REQUESTED != 0,
            transaction_id,
            payload_len: body - data_offset,
            footprint,
            start: to_u32(start),
            end: to_u32(advance(len, start, footprint)),
            payload_at: to_u32(advance(len, start, data_offset)),
        })
    }

    /// Reads the next packet and copies its whole payload into `buf` (copy out once, then
    /// parse the copy); the payload is `buf[..info.payload_len]`.
    ///
    /// # Errors
    /// As [`read_packet`](Self::read_packet); [`Error::PacketTooLarge`] (poisoning) when the
    /// payload is longer than `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<PacketInfo, ReadError> {
        let max = buf.len();
        let packet = self.read_packet()?;
        let info = packet.info;
        let Some(dst) = buf.get_mut(..info.payload_len) else {
            let e = Error::PacketTooLarge {
                payload: info.payload_len,
                max,
            };
            return Err(packet.ring.poison(e).into());
        };
        packet.copy_payload(0, dst);
        packet.consume();
        Ok(info)
    }

    /// Publishes the read index at the end of every packet consumed so far. Returns whether
    /// the writer must be signalled: only if it set a pending send size and the free space
    /// crossed it (was below before this commit, is at least it now; §1.8).
    ///
    /// # Errors
    /// The writer's index is corrupt (the ring is poisoned).
    pub fn commit_read(&mut self) -> Result<bool, Error> {
        let to = self.next_out;
        self.commit_to(to)
    }

    /// Like [`commit_read`](Self::commit_read), but frees only the packets up to `end` (the
    /// [`PacketInfo::end`] of a packet read since the last commit): a reader that still holds
    /// later packets in place keeps their space. `end` equal to the committed read index
    /// commits nothing.
    ///
    /// Publishing any other offset would hand the writer a read index in the middle of a
    /// packet (or one it rejects as corrupt), so `end` is checked: 8-aligned, inside the range
    /// read since the last commit, and on a packet boundary, found by stepping over the
    /// descriptors of the packets read since the last commit (each validated when it was read;
    /// a peer that rewrote one since can only make the check refuse).
    ///
    /// # Errors
    /// [`Error::NotAPacketEnd`] for an `end` that fails the check (nothing published, the ring
    /// not poisoned); otherwise as [`commit_read`](Self::commit_read).
    pub fn commit_read_to(&mut self, end: u32) -> Result<bool, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let refuse = Error::NotAPacketEnd(end);
        let Ok(to) = usize::try_from(end) else {
            return Err(refuse);
        };
        let consumed = distance(self.len, self.committed_out, self.next_out);
        if to >= self.len || !to.is_multiple_of(8) {
            return Err(refuse);
        }
        let wanted = distance(self.len, self.committed_out, to);
        if wanted > consumed {
            return Err(refuse);
        }
        // Step over whole packets from the committed index until `to` is reached or passed.
        let mut walked = 0;
        while walked < wanted {
            let at = advance(self.len, self.committed_out, walked);
            let (_, _, len8, _) = split_descriptor_word(self.mem.read_u64(at));
            walked += usize::from(len8) * 8 + TRAILER_SIZE;
        }
        if walked != wanted {
            return Err(refuse);
        }
        self.commit_to(to)
    }

    fn commit_to(&mut self, to: usize) -> Result<bool, Error> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if to == self.committed_out {
            return Ok(false);
        }
        publish_control(&self.mem, READ_INDEX, to_u32(to));
        // Low bits masked: some writers ask for "ring size - 1", which no free space equals.
        let pending = usize::try_from(load_control(&self.mem, PENDING_SEND_SIZE) & !7).unwrap_or(0);
        let before = self.committed_out;
        self.committed_out = to;
        if pending == 0 {
            self.stats.signals_skipped += 1;
            return Ok(false);
        }
        let write = self.refresh_in()?;
        let free_before = self.len - distance(self.len, before, write) - 8;
        let free_after = self.len - distance(self.len, to, write) - 8;
        let signal = free_before < pending && free_after >= pending;
        if signal {
            self.stats.signals += 1;
        } else {
            self.stats.signals_skipped += 1;
        }
        Ok(signal)
    }
}

/// A packet whose descriptor was captured and validated, still in the ring.
#[derive(Debug)]
#[must_use = "consume() the packet to move past it"]
pub struct PacketRef<'a, M: RingMem> {
    ring: &'a mut IncomingRing<M>,
    info: PacketInfo,
}

impl<M: RingMem> PacketRef<'_, M> {
    /// The captured descriptor.
    #[must_use]
    pub fn info(&self) -> &PacketInfo {
        &self.info
    }

    /// Copies payload bytes `[at, at + dst.len())` into `dst`; false (nothing copied) if that
    /// range is not inside the payload. Copy each byte once and use the copy: the peer may
    /// change the ring under a second read.
    pub fn copy_payload(&self, at: usize, dst: &mut [u8]) -> bool {
        let in_payload = at
            .checked_add(dst.len())
            .is_some_and(|end| end <= self.info.payload_len);
        if !in_payload {
            return false;
        }
        if !dst.is_empty() {
            let len = self.ring.len;
            let from = advance(len, usize::try_from(self.info.payload_at).unwrap_or(0), at);
            self.ring.mem.read_at(from, dst);
        }
        true
    }

    /// Moves past the packet (it is freed for the writer at the next commit).
    pub fn consume(self) {
        let r = self.ring;
        r.next_out = usize::try_from(self.info.end).unwrap_or(0);
        r.stats.packets += 1;
        r.stats.bytes += self.info.footprint as u64;
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    extern crate std;
    use core::sync::atomic::Ordering;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::mem::FlatRingMem;
    use crate::protocol::{
        CONTROL_PAGE_SIZE, FEATURE_BITS_OFFSET, INTERRUPT_MASK_OFFSET, PENDING_SEND_SIZE_OFFSET,
        READ_INDEX_OFFSET, WRITE_INDEX_OFFSET,
    };

    fn id(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).expect("non-zero id")
    }

    fn inband<'a>(n: u64, completion: bool, payload: &'a [&'a [u8]]) -> OutgoingPacket<'a> {
        OutgoingPacket {
            kind: OutgoingKind::InBand {
                transaction_id: id(n),
                completion_requested: completion,
            },
            payload,
        }
    }

    fn pair(mem: &FlatRingMem) -> (OutgoingRing<&FlatRingMem>, IncomingRing<&FlatRingMem>) {
        (
            OutgoingRing::new(mem).expect("writer"),
            IncomingRing::new(mem).expect("reader"),
        )
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn read_vec<M: RingMem>(rx: &mut IncomingRing<M>) -> Result<(PacketInfo, Vec<u8>), ReadError> {
        let mut buf = vec![0; 1 << 16];
        let info = rx.read(&mut buf)?;
        buf.truncate(info.payload_len);
        Ok((info, buf))
    }

    #[test]
    fn inband_packet_is_byte_exact() {
        let mem = FlatRingMem::with_pages(1).expect("ring");
        let (mut tx, _) = pair(&mem);
        let signal = tx
            .write_and_commit(&inband(0x1122_3344_5566_7788, true, &[b"hello", b" vmbus"]))
            .expect("write");
        assert!(signal);
        let d = mem.data_bytes();
        // 11 payload bytes -> 16 padded; len8 = (16 + 16) / 8 = 4; offset8 = 2.
        assert_eq!(
            &d[..8],
            &[0x06, 0, 2, 0, 4, 0, 1, 0],
            "type, offset8, len8, flags"
        );
        assert_eq!(
            &d[8..16],
            &0x1122_3344_5566_7788u64.to_le_bytes(),
            "transaction id"
        );
        assert_eq!(&d[16..27], b"hello vmbus");
        assert_eq!(&d[27..32], &[0; 5], "zero padding");
        assert_eq!(
            &d[32..40],
            &[0, 0, 0, 0, 0, 0, 0, 0],
            "trailer: reserved 0, start 0"
        );
        let c = mem.control_bytes();
        assert_eq!(c.len(), CONTROL_PAGE_SIZE);
        assert_eq!(u32_at(&c, WRITE_INDEX_OFFSET), 40);
        assert_eq!(u32_at(&c, READ_INDEX_OFFSET), 0);
        assert_eq!(u32_at(&c, INTERRUPT_MASK_OFFSET), 0);
        assert_eq!(u32_at(&c, PENDING_SEND_SIZE_OFFSET), 0);
        assert_eq!(
            u32_at(&c, FEATURE_BITS_OFFSET),
            1,
            "pending-send-size feature"
        );
        // The second packet's trailer names its own start.
        tx.write_and_commit(&OutgoingPacket {
            kind: OutgoingKind::Completion {
                transaction_id: id(0x1122_3344_5566_7788),
            },
            payload: &[&[0xAB; 8]],
        })
        .expect("write");
        let d = mem.data_bytes();
        assert_eq!(
            &d[40..48],
            &[0x0B, 0, 2, 0, 3, 0, 0, 0],
            "completion, no flags"
        );
        assert_eq!(&d[48..56], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&d[56..64], &[0xAB; 8]);
        assert_eq!(&d[64..72], &(40u64 << 32).to_le_bytes());
        assert_eq!(u32_at(&mem.control_bytes(), WRITE_INDEX_OFFSET), 72);
    }

    #[test]
    fn round_trip_and_empty() {
        let mem = FlatRingMem::with_pages(1).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        assert_eq!(read_vec(&mut rx).err(), Some(ReadError::Empty));
        tx.write(&inband(1, false, &[b"abc"])).expect("write");
        assert_eq!(
            read_vec(&mut rx).err(),
            Some(ReadError::Empty),
            "not visible before commit"
        );
        tx.commit_write().expect("commit");
        let (info, data) = read_vec(&mut rx).expect("packet");
        assert_eq!(info.packet_type, PacketType::DATA_INBAND);
        assert!(!info.completion_requested);
        assert_eq!(info.transaction_id, 1);
        assert_eq!(data, b"abc\0\0\0\0\0");
        assert_eq!((info.start, info.end, info.footprint), (0, 32, 32));
        assert_eq!(read_vec(&mut rx).err(), Some(ReadError::Empty));
        assert!(!rx.commit_read().expect("commit"));
        assert_eq!(u32_at(&mem.control_bytes(), READ_INDEX_OFFSET), 32);
        assert!(rx.is_empty().expect("empty"));
        assert_eq!(rx.stats().packets, 1);
        assert_eq!(tx.stats().bytes, 32);
    }

    #[test]
    fn wrap_around_splits_descriptor_payload_and_trailer() {
        // 128-byte ring; packets of 40 bytes (16-byte payload) walk the start offset through
        // every 8-byte position of the wrap.
        let mem = FlatRingMem::new(128).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        for n in 1..=40u64 {
            let payload = [n as u8; 16];
            tx.write_and_commit(&inband(n, true, &[&payload]))
                .expect("fits: the reader keeps up");
            let (info, data) = read_vec(&mut rx).expect("packet");
            assert_eq!(info.transaction_id, n);
            assert_eq!(data, payload);
            let start = ((n - 1) * 40 % 128) as u32;
            assert_eq!(info.start, start);
            assert_eq!(info.end, (start + 40) % 128);
            // The trailer sits just before `end` and names the start.
            let trailer_at = (info.end as usize + 128 - 8) % 128;
            assert_eq!(mem.read_u64(trailer_at), u64::from(start) << 32);
            rx.commit_read().expect("commit");
        }
    }

    #[test]
    fn full_exact_fit_and_too_large() {
        // 64-byte ring: 56 usable. A 32-byte payload takes 16 + 32 + 8 = 56: an exact fit.
        let mem = FlatRingMem::new(64).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        assert_eq!(
            tx.write(&inband(1, false, &[&[0; 33]])),
            Err(WriteError::TooLarge {
                needed: 64,
                max: 56
            })
        );
        tx.write_and_commit(&inband(1, false, &[&[1; 32]]))
            .expect("exact fit");
        assert_eq!(tx.free(), Ok(0));
        assert_eq!(
            tx.write(&inband(2, false, &[])),
            Err(WriteError::Full {
                needed: 24,
                free: 0
            })
        );
        assert_eq!(tx.stats().full, 1);
        let (_, data) = read_vec(&mut rx).expect("packet");
        assert_eq!(data, [1; 32]);
        rx.commit_read().expect("commit");
        assert_eq!(tx.free(), Ok(56));
        // Now at offset 56: the next exact fit wraps.
        tx.write_and_commit(&inband(3, false, &[&[3; 32]]))
            .expect("exact fit across the end");
        let (info, data) = read_vec(&mut rx).expect("packet");
        assert_eq!((info.start, info.end, data), (56, 48, vec![3; 32]));
    }

    #[test]
    fn interrupt_mask_suppresses_the_empty_to_nonempty_signal() {
        let mem = FlatRingMem::with_pages(1).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        rx.set_interrupt_mask(true);
        assert!(!tx.write_and_commit(&inband(1, false, &[b"x"])).expect("w"));
        let _ = read_vec(&mut rx).expect("packet");
        rx.commit_read().expect("commit");
        rx.set_interrupt_mask(false);
        assert!(rx.is_empty().expect("re-check after unmasking"));
        assert!(tx.write_and_commit(&inband(2, false, &[b"y"])).expect("w"));
        // Not empty before this one: no signal, mask or not.
        assert!(!tx.write_and_commit(&inband(3, false, &[b"z"])).expect("w"));
        // A batch of two into an empty ring: one signal.
        let _ = read_vec(&mut rx).expect("2");
        let _ = read_vec(&mut rx).expect("3");
        rx.commit_read().expect("commit");
        tx.write(&inband(4, false, &[b"a"])).expect("w");
        tx.write(&inband(5, false, &[b"b"])).expect("w");
        assert!(tx.commit_write().expect("commit"));
        assert!(!tx.commit_write().expect("nothing new"));
        let s = tx.stats();
        assert_eq!((s.signals, s.signals_skipped), (2, 2));
    }

    #[test]
    fn pending_send_size_signals_once_on_the_crossing() {
        // 16 KiB ring, 4000-byte payloads (4024 ring bytes each): four fit, 280 bytes free.
        let mem = FlatRingMem::new(16384).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        let payload = [0x5A; 4000];
        for n in 1..=4 {
            assert!(tx.write(&inband(n, false, &[&payload])).is_ok());
        }
        tx.commit_write().expect("commit");
        assert_eq!(
            tx.write(&inband(5, false, &[&payload])),
            Err(WriteError::Full {
                needed: 4024,
                free: 280
            })
        );
        // Ask for two packets' worth: the reader must signal after exactly two reads.
        assert!(!tx.set_pending_send_size(2 * 4024).expect("set"));
        assert_eq!(u32_at(&mem.control_bytes(), PENDING_SEND_SIZE_OFFSET), 8048);
        let mut signals = Vec::new();
        for _ in 0..4 {
            let _ = read_vec(&mut rx).expect("packet");
            signals.push(rx.commit_read().expect("commit"));
        }
        assert_eq!(signals, [false, true, false, false]);
        tx.clear_pending_send_size();
        assert_eq!(u32_at(&mem.control_bytes(), PENDING_SEND_SIZE_OFFSET), 0);
        assert_eq!(rx.stats().signals, 1);
    }

    #[test]
    fn pending_send_size_ignores_the_low_bits() {
        // A writer that asks for "ring size - 1" is satisfied by an empty ring (len - 8).
        let mem = FlatRingMem::new(128).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        tx.write_and_commit(&inband(1, false, &[&[0; 80]]))
            .expect("w");
        mem.control()[PENDING_SEND_SIZE].store(127, Ordering::SeqCst);
        let _ = read_vec(&mut rx).expect("packet");
        assert!(rx.commit_read().expect("commit"), "free 120 >= 127 & !7");
    }

    #[test]
    fn set_pending_send_size_rechecks_the_race() {
        let mem = FlatRingMem::new(64).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        tx.write_and_commit(&inband(1, false, &[&[1; 32]]))
            .expect("fill");
        let _ = read_vec(&mut rx).expect("packet");
        rx.commit_read()
            .expect("the reader frees space before the writer asks");
        assert!(
            tx.set_pending_send_size(56).expect("set"),
            "fits now: retry"
        );
    }

    #[test]
    fn partial_commit_keeps_later_packets_space() {
        let mem = FlatRingMem::new(128).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        for n in 1..=3 {
            tx.write(&inband(n, false, &[&[0; 8]])).expect("w"); // 32 bytes each
        }
        tx.commit_write().expect("commit");
        let first = read_vec(&mut rx).expect("1").0;
        let _ = read_vec(&mut rx).expect("2");
        assert!(!rx.commit_read_to(first.end).expect("commit first only"));
        assert_eq!(tx.free(), Ok(128 - 64 - 8));
        assert!(
            !rx.commit_read_to(first.end)
                .expect("already committed: nothing")
        );
        rx.commit_read().expect("commit the rest read");
        assert_eq!(tx.free(), Ok(128 - 32 - 8));
    }

    #[test]
    fn commit_read_to_refuses_an_end_that_is_not_a_read_packets_end() {
        let mem = FlatRingMem::new(256).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        for n in 1..=3 {
            tx.write(&inband(n, false, &[&[0; 8]])).expect("w"); // 32 bytes each
        }
        tx.commit_write().expect("commit");
        let first = read_vec(&mut rx).expect("1").0;
        let second = read_vec(&mut rx).expect("2").0;
        assert_eq!((first.end, second.end), (32, 64));
        for bad in [
            12,  // not 8-aligned
            24,  // aligned, inside the first packet
            40,  // aligned, inside the second packet
            96,  // the end of the third packet, which was not read
            200, // beyond everything written
            300, // outside the ring
            u32::MAX,
        ] {
            assert_eq!(
                rx.commit_read_to(bad),
                Err(Error::NotAPacketEnd(bad)),
                "end {bad}"
            );
            assert_eq!(tx.free(), Ok(256 - 96 - 8), "nothing published for {bad}");
            assert_eq!(rx.poisoned(), None, "a refused end does not poison");
        }
        assert_eq!(rx.commit_read_to(second.end), Ok(false));
        assert_eq!(tx.free(), Ok(256 - 32 - 8));
        // The writer keeps working against the published index.
        tx.write(&inband(4, false, &[&[0; 8]]))
            .expect("write after the commit");
    }

    /// A ring whose reader starts at 0 and whose writer index is `in_`, holding `data`.
    fn hostile(data: &[u8], in_: u32) -> FlatRingMem {
        let mem = FlatRingMem::new(64).expect("ring");
        mem.load(&in_.to_le_bytes(), data);
        mem
    }

    fn descriptor(typ: u16, offset8: u16, len8: u16, flags: u16) -> Vec<u8> {
        let mut d = Vec::new();
        for f in [typ, offset8, len8, flags] {
            d.extend_from_slice(&f.to_le_bytes());
        }
        d.extend_from_slice(&9u64.to_le_bytes());
        d.resize(64, 0);
        d
    }

    fn read_err(mem: &FlatRingMem) -> Error {
        let mut rx = IncomingRing::new(mem).expect("indices valid");
        let e = match read_vec(&mut rx) {
            Err(ReadError::Corrupt(e)) => e,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        // Poisoned: the same error from then on, even for calls that would succeed.
        assert_eq!(read_vec(&mut rx).err(), Some(ReadError::Corrupt(e)));
        assert_eq!(rx.commit_read(), Err(e));
        assert_eq!(rx.poisoned(), Some(e));
        e
    }

    #[test]
    fn malformed_descriptors_are_corrupt() {
        let cases: [(Vec<u8>, u32, Error); 8] = [
            (
                descriptor(6, 2, 3, 0),
                16,
                Error::Truncated { available: 16 },
            ),
            (descriptor(5, 2, 3, 0), 32, Error::UnknownType(5)),
            (descriptor(0, 2, 3, 0), 32, Error::UnknownType(0)),
            (descriptor(6, 2, 3, 2), 32, Error::BadFlags(2)),
            (
                descriptor(6, 1, 3, 0),
                32,
                Error::BadDataOffset {
                    offset8: 1,
                    len8: 3,
                },
            ),
            (
                descriptor(6, 4, 3, 0),
                32,
                Error::BadDataOffset {
                    offset8: 4,
                    len8: 3,
                },
            ),
            (
                descriptor(9, 2, 3, 0),
                32,
                Error::BadDataOffset {
                    offset8: 2,
                    len8: 3,
                },
            ),
            // len8 3 = 24 bytes + 8 trailer = 32 > 24 available: no room for the trailer.
            (
                descriptor(6, 2, 3, 0),
                24,
                Error::PacketPastWriteIndex {
                    len8: 3,
                    available: 24,
                },
            ),
        ];
        for (bytes, in_, want) in cases {
            assert_eq!(read_err(&hostile(&bytes, in_)), want, "{bytes:?} in={in_}");
        }
        // Exactly room for packet and trailer is fine.
        let mem = hostile(&descriptor(6, 2, 3, 1), 32);
        let (info, data) = read_vec(&mut IncomingRing::new(&mem).expect("rx")).expect("valid");
        assert_eq!(
            (info.payload_len, info.transaction_id, data),
            (8, 9, vec![0; 8])
        );
    }

    #[test]
    fn bad_indices_are_corrupt() {
        for bad in [3u32, 64, 1000, u32::MAX] {
            let mem = hostile(&[], 0);
            mem.load(&[], &[]);
            let mut rx = IncomingRing::new(&mem).expect("valid at first");
            mem.control()[WRITE_INDEX].store(bad, Ordering::SeqCst);
            assert_eq!(
                read_vec(&mut rx).err(),
                Some(ReadError::Corrupt(Error::BadWriteIndex(bad)))
            );
            let mem = hostile(&[], bad);
            assert_eq!(
                IncomingRing::new(&mem).err(),
                Some(Error::BadWriteIndex(bad))
            );
            let mem = FlatRingMem::new(64).expect("ring");
            let mut tx = OutgoingRing::new(&mem).expect("tx");
            mem.control()[READ_INDEX].store(bad, Ordering::SeqCst);
            assert_eq!(tx.free(), Err(Error::BadReadIndex(bad)));
            assert_eq!(
                tx.write(&inband(1, false, &[])),
                Err(WriteError::Corrupt(Error::BadReadIndex(bad)))
            );
        }
    }

    #[test]
    fn oversized_payload_for_the_reader_is_corrupt() {
        let mem = FlatRingMem::with_pages(1).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        tx.write_and_commit(&inband(1, false, &[&[0; 100]]))
            .expect("w");
        let mut small = [0; 64];
        assert_eq!(
            rx.read(&mut small),
            Err(ReadError::Corrupt(Error::PacketTooLarge {
                payload: 104,
                max: 64
            }))
        );
    }

    #[test]
    fn packet_ref_copies_any_inside_range_once() {
        let mem = FlatRingMem::new(64).expect("ring");
        let (mut tx, mut rx) = pair(&mem);
        tx.write_and_commit(&inband(1, false, &[b"0123456789abcdef"]))
            .expect("w");
        let p = rx.read_packet().expect("packet");
        let mut part = [0; 4];
        assert!(p.copy_payload(6, &mut part));
        assert_eq!(&part, b"6789");
        assert!(!p.copy_payload(14, &mut part), "past the payload");
        assert!(!p.copy_payload(usize::MAX, &mut part), "overflow");
        p.consume();
        assert_eq!(read_vec(&mut rx).err(), Some(ReadError::Empty));
    }
}
