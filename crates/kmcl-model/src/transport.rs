//! The transport of an open channel: two VMBus rings in shared memory, host→guest and
//! guest→host, byte-exact to the wire format (`vmbus-ring`), and what each side does with
//! them.
//!
//! * **Packets.** A host packet is an in-band packet (type 0x6, `COMPLETION_REQUESTED` when
//!   the host wants the guest's completion); a guest packet likewise; each completion is a
//!   type 0xB packet carrying the transaction id. Transaction ids are the world's transaction
//!   numbers, never 0.
//! * **KMCL framing.** VMBus lengths are multiples of 8 but KMCL hands out exact byte counts,
//!   so every payload starts with an 8-byte model header (like the pipe header of pipe-mode
//!   channels): `u32` exact length, then `u32` aux: for data the send flags (bit 31
//!   synchronous request, bit 30 external data), for completions the NTSTATUS.
//! * **External data** (MDLs, PFN lists) would travel as GPA ranges outside the ring; the
//!   model keeps those bytes in a side table keyed by the transaction id.
//! * **Readers.** The guest's KMCL copies every host packet out of the ring at once (into its
//!   delivery queue) and commits. The host endpoint copies each guest packet out too, but
//!   keeps its ring space until the packet is *consumed*: at once when a responder is set (it
//!   looked at the packet, answered it or kept its own copy for [`Host::recv`]), otherwise when
//!   [`Host::recv`] takes it. The read index only moves over the consumed prefix, so packets a
//!   host without a responder has not received fill the ring as they would on a real host.
//!
//! [`Host::recv`]: crate::Host::recv
//! * **Signals** follow §1.8 exactly (counted in [`TransportStats`]); a signal is delivered by
//!   running the peer's interrupt handler on the signalling thread. Readers mask interrupts
//!   while they drain, unmask, and re-check; a host reader that holds packets re-checks
//!   whenever it frees space.
//! * **Full rings.** A host writer sets the pending send size and waits for the guest's reader
//!   (which the model runs on the waiting thread). A guest send that does not fit is queued on
//!   the channel (§6.2 of the KMCL reference) and written when the host's reader signals that
//!   the pending send size is free.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ntstatus::NtStatus;
use vmbus_ring::{
    FlatRingMem, IncomingRing, OutgoingKind, OutgoingPacket, OutgoingRing, PacketRef, PacketType,
    ReadError, RingStats, WriteError,
};

use crate::host::relock;

type Mem = Arc<FlatRingMem>;

/// Bytes of the model's KMCL header at the start of every payload.
pub(crate) const KMCL_HEADER: usize = 8;
/// Aux bit of a data packet: sent by `VmbChannelSendSynchronousRequest`.
pub(crate) const AUX_SYNCHRONOUS: u32 = 1 << 31;
/// Aux bit of a data packet: external data waits in the side table.
pub(crate) const AUX_EXTERNAL: u32 = 1 << 30;
/// Aux bits of a data packet that carry the `VMBUS_CHANNEL_FORMAT_FLAG_*` send flags.
pub(crate) const AUX_FLAGS: u32 = 0xFFFF;

/// The model's header for a payload of `len` bytes.
pub(crate) fn kmcl_header(len: usize, aux: u32) -> [u8; KMCL_HEADER] {
    let mut h = [0; KMCL_HEADER];
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&aux.to_le_bytes());
    h
}

/// The most payload bytes (after the model header) one packet carries in a ring of
/// `ring_len` data bytes.
pub(crate) const fn max_payload(ring_len: usize) -> usize {
    // descriptor + header + payload (padded) + trailer <= ring_len - 8
    ring_len.saturating_sub(8 + 16 + KMCL_HEADER + 8)
}

/// One packet read from a ring, copied out of it.
#[derive(Debug)]
pub(crate) enum Item {
    Data {
        txn: u64,
        completion_requested: bool,
        aux: u32,
        payload: Vec<u8>,
        /// Host side: the packet's place among the held packets (see [`Link::consume`]).
        slot: u64,
    },
    Completion {
        txn: u64,
        status: NtStatus,
        payload: Vec<u8>,
    },
}

/// Reads the model header and copies the payload after it (each shared byte read once).
fn decode(p: &PacketRef<'_, Mem>) -> Option<Item> {
    let info = *p.info();
    let mut h = [0u8; KMCL_HEADER];
    if !p.copy_payload(0, &mut h) {
        return None;
    }
    let (len, aux) = h.split_at(4);
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let aux = u32::from_le_bytes(aux.try_into().ok()?);
    if len > info.payload_len.saturating_sub(KMCL_HEADER) {
        return None;
    }
    let mut payload = vec![0; len];
    if !p.copy_payload(KMCL_HEADER, &mut payload) {
        return None;
    }
    match info.packet_type {
        PacketType::DATA_INBAND => Some(Item::Data {
            txn: info.transaction_id,
            completion_requested: info.completion_requested,
            aux,
            payload,
            slot: 0,
        }),
        PacketType::COMPLETION => Some(Item::Completion {
            txn: info.transaction_id,
            status: NtStatus(i32::from_le_bytes(aux.to_le_bytes())),
            payload,
        }),
        // Transfer-page and GPA-direct packets are never sent by the model's peers.
        _ => None,
    }
}

/// A guest packet waiting for space in the guest→host ring (KMCL's queue on the channel).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) kind: OutgoingKind,
    /// Model header + payload.
    pub(crate) bytes: Vec<u8>,
}

impl Queued {
    fn new(kind: OutgoingKind, header: &[u8], payload: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(header.len() + payload.len());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(payload);
        Self { kind, bytes }
    }
}

/// What happened to a guest write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestWrite {
    /// In the ring; the host must be signalled (empty → non-empty, mask clear).
    Signal,
    /// In the ring; no signal (the host is draining or holds earlier packets).
    NoSignal,
    /// Queued on the channel until the ring has room.
    Queued,
    /// Did not fit and queueing was not allowed (or earlier packets are queued).
    Full,
    /// Can never fit the ring.
    TooLarge,
    /// The channel closed (or its ring is corrupt).
    Closed,
}

/// Why a host write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostWriteError {
    TooLarge,
    Closed,
}

/// Counters of a channel's transport, from [`Host::ring_stats`](crate::Host::ring_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Host→guest ring, the host's writing end.
    pub host_to_guest_writer: RingStats,
    /// Host→guest ring, the guest's reading end (KMCL).
    pub host_to_guest_reader: RingStats,
    /// Guest→host ring, the guest's writing end (KMCL).
    pub guest_to_host_writer: RingStats,
    /// Guest→host ring, the host's reading end.
    pub guest_to_host_reader: RingStats,
    /// Host writes that found the host→guest ring full and waited for the guest's reader.
    pub host_waits_for_space: u64,
    /// Guest packets queued on the channel because the guest→host ring was full.
    pub guest_sends_queued: u64,
    /// Guest packets queued now.
    pub guest_queue_len: u64,
    /// Packets dropped because their ring was corrupt or their framing invalid.
    pub corrupt: u64,
    /// Completions whose transaction nobody was waiting for.
    pub unknown_completions: u64,
}

#[derive(Debug)]
struct GuestTx {
    ring: OutgoingRing<Mem>,
    backlog: VecDeque<Queued>,
}

/// A packet the host read and has not consumed yet: its ring space stays in use.
#[derive(Debug)]
struct Held {
    slot: u64,
    end: u32,
    consumed: bool,
}

#[derive(Debug)]
struct HostRx {
    ring: IncomingRing<Mem>,
    held: VecDeque<Held>,
    next_slot: u64,
}

impl HostRx {
    /// Commits the read index over the consumed prefix; true if the guest must be signalled.
    fn commit_consumed(&mut self) -> Result<bool, vmbus_ring::Error> {
        let mut end = None;
        while self.held.front().is_some_and(|h| h.consumed) {
            end = self.held.pop_front().map(|h| h.end);
        }
        match end {
            Some(e) => self.ring.commit_read_to(e),
            None => Ok(false),
        }
    }
}

#[derive(Debug, Default)]
struct Handoff {
    /// Guest senders waiting to offer their own packet to the host (by transaction).
    g2h_waiting: HashSet<u64>,
    g2h_arrived: HashMap<u64, Item>,
    /// Host completers waiting to run their completion on the guest side.
    h2g_waiting: HashSet<u64>,
    h2g_arrived: HashMap<u64, Item>,
}

#[derive(Debug, Default)]
struct Counters {
    host_waits: AtomicU64,
    queued: AtomicU64,
    corrupt: AtomicU64,
    unknown_completions: AtomicU64,
}

/// The two rings of one open channel and the state of their four ends.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) channel: u64,
    closed: AtomicBool,
    /// The guest's KMCL found one of its ring ends corrupt (the host broke the ring protocol):
    /// the channel must be closed ([`take_guest_poisoned`](Self::take_guest_poisoned)).
    /// 0: no, 1: yes, not yet taken, 2: taken (a poisoned ring stays poisoned: once is enough).
    guest_poisoned: AtomicU8,
    h2g: Mem,
    g2h: Mem,
    host_tx: Mutex<OutgoingRing<Mem>>,
    guest_rx: Mutex<IncomingRing<Mem>>,
    guest_tx: Mutex<GuestTx>,
    host_rx: Mutex<HostRx>,
    handoff: Mutex<Handoff>,
    handoff_cv: Condvar,
    counters: Counters,
}

/// Which direction a hand-off is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// A guest data packet, to its sender.
    G2h,
    /// A host completion, to its completer.
    H2g,
}

impl Link {
    /// Fresh rings of `h2g_pages` and `g2h_pages` 4 KiB data pages.
    pub(crate) fn new(channel: u64, h2g_pages: u32, g2h_pages: u32) -> Option<Arc<Self>> {
        let pages = |n: u32| usize::try_from(n).ok();
        let h2g = Arc::new(FlatRingMem::with_pages(pages(h2g_pages)?).ok()?);
        let g2h = Arc::new(FlatRingMem::with_pages(pages(g2h_pages)?).ok()?);
        Some(Arc::new(Self {
            channel,
            closed: AtomicBool::new(false),
            guest_poisoned: AtomicU8::new(0),
            host_tx: Mutex::new(OutgoingRing::new(Arc::clone(&h2g)).ok()?),
            guest_rx: Mutex::new(IncomingRing::new(Arc::clone(&h2g)).ok()?),
            guest_tx: Mutex::new(GuestTx {
                ring: OutgoingRing::new(Arc::clone(&g2h)).ok()?,
                backlog: VecDeque::new(),
            }),
            host_rx: Mutex::new(HostRx {
                ring: IncomingRing::new(Arc::clone(&g2h)).ok()?,
                held: VecDeque::new(),
                next_slot: 1,
            }),
            h2g,
            g2h,
            handoff: Mutex::new(Handoff::default()),
            handoff_cv: Condvar::new(),
            counters: Counters::default(),
        }))
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut h = relock(&self.handoff);
        h.g2h_waiting.clear();
        h.h2g_waiting.clear();
        drop(h);
        self.handoff_cv.notify_all();
    }

    /// After [`close`](Self::close): every packet still in the host→guest ring, in ring order
    /// (packets the host wrote and the guest never read out). It first waits for a host write
    /// in progress: a write that takes the host writer's lock after the close sees it and
    /// fails, so nothing can enter the ring after this returns. Takes the ring locks: call it
    /// without the world lock.
    pub(crate) fn drain_closed(&self) -> Vec<Item> {
        let _host_writer = relock(&self.host_tx);
        let mut rx = relock(&self.guest_rx);
        let mut left = Vec::new();
        while let Ok(p) = rx.read_packet() {
            match decode(&p) {
                Some(item) => left.push(item),
                None => self.corrupt(),
            }
            p.consume();
        }
        let _ = rx.commit_read();
        left
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn corrupt(&self) {
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    /// The guest's end of a ring is corrupt (its ring is poisoned: it refuses every further
    /// use): counted, and the channel is to be closed.
    fn poison_guest_end(&self) {
        self.corrupt();
        let _ = self
            .guest_poisoned
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether a guest end is poisoned: true once, for the first caller after the poisoning.
    pub(crate) fn take_guest_poisoned(&self) -> bool {
        self.guest_poisoned
            .compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The two rings' memory, for a host that writes it without the ring protocol
    /// ([`crate::RawRings`]): (host→guest, guest→host).
    pub(crate) fn memory(&self) -> (&FlatRingMem, &FlatRingMem) {
        (&self.h2g, &self.g2h)
    }

    /// The largest payload the host→guest ring carries.
    pub(crate) fn h2g_max_payload(&self) -> usize {
        max_payload(vmbus_ring::RingMem::data_len(&*self.h2g))
    }

    // ---- host -> guest ----------------------------------------------------------------------

    /// The host writes a packet, waiting while the ring is full: it publishes its pending send
    /// size and runs `guest_isr` (the guest's reader, which frees space) until the packet fits.
    /// Returns whether the guest must be signalled.
    pub(crate) fn host_write(
        &self,
        kind: OutgoingKind,
        aux: u32,
        payload: &[u8],
        mut guest_isr: impl FnMut(),
    ) -> Result<bool, HostWriteError> {
        let header = kmcl_header(payload.len(), aux);
        let pieces: [&[u8]; 2] = [&header, payload];
        let packet = OutgoingPacket {
            kind,
            payload: &pieces,
        };
        let mut tx = relock(&self.host_tx);
        let mut waited = false;
        loop {
            if self.is_closed() {
                return Err(HostWriteError::Closed);
            }
            match tx.write_and_commit(&packet) {
                Ok(signal) => {
                    if waited {
                        tx.clear_pending_send_size();
                    }
                    return Ok(signal);
                }
                Err(WriteError::Full { needed, .. }) => {
                    if !waited {
                        self.counters.host_waits.fetch_add(1, Ordering::Relaxed);
                        waited = true;
                    }
                    match tx.set_pending_send_size(needed) {
                        Ok(true) => {}
                        Ok(false) => guest_isr(),
                        Err(_) => {
                            self.corrupt();
                            return Err(HostWriteError::Closed);
                        }
                    }
                }
                Err(WriteError::TooLarge { .. }) => return Err(HostWriteError::TooLarge),
                Err(WriteError::Corrupt(_)) => {
                    self.corrupt();
                    return Err(HostWriteError::Closed);
                }
            }
        }
    }

    /// The guest's interrupt handler for the host→guest ring: with interrupts masked, copies
    /// every packet out (`sink` runs under the reader's lock, in ring order), commits, unmasks
    /// and re-checks.
    pub(crate) fn guest_drain(&self, mut sink: impl FnMut(Item)) {
        let mut rx = relock(&self.guest_rx);
        if self.is_closed() {
            return;
        }
        loop {
            rx.set_interrupt_mask(true);
            loop {
                match rx.read_packet() {
                    Ok(p) => {
                        let item = decode(&p);
                        p.consume();
                        match item {
                            Some(item) => sink(item),
                            None => self.corrupt(),
                        }
                    }
                    Err(ReadError::Empty) => break,
                    Err(ReadError::Corrupt(_)) => {
                        self.poison_guest_end();
                        return;
                    }
                }
            }
            // A signal to the host writer means "pending send size free"; a host writer that
            // waits re-checks after running this handler, so nothing else is needed.
            if rx.commit_read().is_err() {
                self.poison_guest_end();
                return;
            }
            rx.set_interrupt_mask(false);
            match rx.is_empty() {
                Ok(false) => {}
                Ok(true) | Err(_) => return,
            }
        }
    }

    // ---- guest -> host ----------------------------------------------------------------------

    /// The guest's KMCL writes a packet (`aux` and `payload` after the model header). With
    /// `queue`, a packet that does not fit (or would overtake queued ones) is copied into the
    /// channel's queue.
    pub(crate) fn guest_write(
        &self,
        kind: OutgoingKind,
        aux: u32,
        payload: &[u8],
        queue: bool,
    ) -> GuestWrite {
        let header = kmcl_header(payload.len(), aux);
        let mut tx = relock(&self.guest_tx);
        if self.is_closed() {
            return GuestWrite::Closed;
        }
        let tx = &mut *tx;
        if !tx.backlog.is_empty() {
            if !queue {
                return GuestWrite::Full;
            }
            tx.backlog.push_back(Queued::new(kind, &header, payload));
            self.counters.queued.fetch_add(1, Ordering::Relaxed);
            return GuestWrite::Queued;
        }
        let pieces: [&[u8]; 2] = [&header, payload];
        match tx.ring.write_and_commit(&OutgoingPacket {
            kind,
            payload: &pieces,
        }) {
            Ok(true) => GuestWrite::Signal,
            Ok(false) => GuestWrite::NoSignal,
            Err(WriteError::Full { needed, .. }) => {
                if !queue {
                    return GuestWrite::Full;
                }
                tx.backlog.push_back(Queued::new(kind, &header, payload));
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                // Ask for a quarter of the ring at least, so the host does not signal for
                // every packet it frees (reference §6.6).
                let want = needed.max(tx.ring.max_footprint() / 4);
                match tx.ring.set_pending_send_size(want) {
                    Ok(true) => {
                        // Space appeared meanwhile: write what fits now.
                        if self.flush_locked(tx) {
                            GuestWrite::Signal
                        } else {
                            GuestWrite::Queued
                        }
                    }
                    Ok(false) => GuestWrite::Queued,
                    Err(_) => {
                        self.poison_guest_end();
                        GuestWrite::Closed
                    }
                }
            }
            Err(WriteError::TooLarge { .. }) => GuestWrite::TooLarge,
            Err(WriteError::Corrupt(_)) => {
                self.poison_guest_end();
                GuestWrite::Closed
            }
        }
    }

    /// The guest's reaction to the host's "space available" signal: writes queued packets in
    /// order while they fit. Returns whether the host must be signalled.
    pub(crate) fn flush_backlog(&self) -> bool {
        let mut tx = relock(&self.guest_tx);
        if self.is_closed() {
            return false;
        }
        self.flush_locked(&mut tx)
    }

    fn flush_locked(&self, tx: &mut GuestTx) -> bool {
        while let Some(q) = tx.backlog.front() {
            let pieces: [&[u8]; 1] = [&q.bytes];
            let packet = OutgoingPacket {
                kind: q.kind,
                payload: &pieces,
            };
            match tx.ring.write(&packet) {
                Ok(()) => {
                    tx.backlog.pop_front();
                }
                Err(WriteError::Full { needed, .. }) => {
                    let want = needed.max(tx.ring.max_footprint() / 4);
                    match tx.ring.set_pending_send_size(want) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(_) => {
                            self.poison_guest_end();
                            return false;
                        }
                    }
                }
                Err(WriteError::Corrupt(_)) => {
                    // The queued packets are cancelled when the channel closes.
                    self.poison_guest_end();
                    return false;
                }
                Err(WriteError::TooLarge { .. }) => {
                    // Packets are sized for this ring before they are queued; drop it.
                    tx.backlog.pop_front();
                }
            }
        }
        if tx.backlog.is_empty() {
            tx.ring.clear_pending_send_size();
        }
        match tx.ring.commit_write() {
            Ok(signal) => signal,
            Err(_) => {
                self.poison_guest_end();
                false
            }
        }
    }

    /// Whether the guest's queue is empty and the ring has room for a packet of `payload`
    /// bytes now (for sends that must not wait).
    pub(crate) fn guest_has_room(&self, payload: usize) -> bool {
        let mut tx = relock(&self.guest_tx);
        let need = vmbus_ring::packet_footprint(KMCL_HEADER + payload);
        tx.backlog.is_empty() && tx.ring.free().is_ok_and(|f| f >= need)
    }

    /// The host's interrupt handler for the guest→host ring: with interrupts masked, copies
    /// every new packet out (`sink` runs under the reader's lock, in ring order; data packets
    /// are held until [`consume`](Self::consume)d, completions are consumed at once), commits
    /// the consumed prefix, unmasks and re-checks. Returns whether the guest must be signalled
    /// (its pending send size is free).
    pub(crate) fn host_drain(&self, mut sink: impl FnMut(Item)) -> bool {
        let mut rx = relock(&self.host_rx);
        if self.is_closed() {
            return false;
        }
        let mut signal = false;
        loop {
            rx.ring.set_interrupt_mask(true);
            loop {
                match rx.ring.read_packet() {
                    Ok(p) => {
                        let end = p.info().end;
                        let item = decode(&p);
                        p.consume();
                        let slot = rx.next_slot;
                        rx.next_slot += 1;
                        let consumed = !matches!(item, Some(Item::Data { .. }));
                        rx.held.push_back(Held {
                            slot,
                            end,
                            consumed,
                        });
                        match item {
                            Some(Item::Data {
                                txn,
                                completion_requested,
                                aux,
                                payload,
                                ..
                            }) => sink(Item::Data {
                                txn,
                                completion_requested,
                                aux,
                                payload,
                                slot,
                            }),
                            Some(c) => sink(c),
                            None => self.corrupt(),
                        }
                    }
                    Err(ReadError::Empty) => break,
                    Err(ReadError::Corrupt(_)) => {
                        self.corrupt();
                        return signal;
                    }
                }
            }
            match rx.commit_consumed() {
                Ok(s) => signal |= s,
                Err(_) => {
                    self.corrupt();
                    return signal;
                }
            }
            rx.ring.set_interrupt_mask(false);
            match rx.ring.is_empty() {
                Ok(false) => {}
                Ok(true) | Err(_) => return signal,
            }
        }
    }

    /// The host is done with the held packet `slot`: its space is freed once every earlier
    /// packet is done too. Returns (signal the guest, more packets arrived meanwhile).
    pub(crate) fn consume(&self, slot: u64) -> (bool, bool) {
        let mut rx = relock(&self.host_rx);
        let front = rx.held.front().map(|h| h.slot);
        let Some(front) = front else {
            return (false, false);
        };
        let index = slot
            .checked_sub(front)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(h) = index.and_then(|i| rx.held.get_mut(i)) {
            h.consumed = true;
        }
        let signal = rx.commit_consumed().unwrap_or(false);
        // Writers do not signal while this reader holds packets: look for new ones now.
        let more = !self.is_closed() && rx.ring.is_empty().is_ok_and(|e| !e);
        (signal, more)
    }

    // ---- hand-offs ----------------------------------------------------------------------------

    /// Registers that the caller will take the item for `txn` itself.
    pub(crate) fn expect(&self, dir: Dir, txn: u64) {
        let mut h = relock(&self.handoff);
        match dir {
            Dir::G2h => h.g2h_waiting.insert(txn),
            Dir::H2g => h.h2g_waiting.insert(txn),
        };
    }

    /// Gives up waiting for `txn`. False if it was handed off already (take it).
    pub(crate) fn unexpect(&self, dir: Dir, txn: u64) -> bool {
        let mut h = relock(&self.handoff);
        match dir {
            Dir::G2h => h.g2h_waiting.remove(&txn),
            Dir::H2g => h.h2g_waiting.remove(&txn),
        }
    }

    /// Hands `item` to the thread waiting for it; gives it back if nobody is.
    pub(crate) fn hand_off(&self, dir: Dir, txn: u64, item: Item) -> Option<Item> {
        let mut h = relock(&self.handoff);
        let h = &mut *h;
        let (waiting, arrived) = match dir {
            Dir::G2h => (&mut h.g2h_waiting, &mut h.g2h_arrived),
            Dir::H2g => (&mut h.h2g_waiting, &mut h.h2g_arrived),
        };
        if !waiting.remove(&txn) {
            return Some(item);
        }
        arrived.insert(txn, item);
        self.handoff_cv.notify_all();
        None
    }

    /// Takes the item for `txn`, waiting up to `timeout` (`None` when the channel closed or
    /// the time ran out).
    pub(crate) fn take(&self, dir: Dir, txn: u64, timeout: Duration) -> Option<Item> {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut h = relock(&self.handoff);
        loop {
            let arrived = match dir {
                Dir::G2h => &mut h.g2h_arrived,
                Dir::H2g => &mut h.h2g_arrived,
            };
            if let Some(item) = arrived.remove(&txn) {
                return Some(item);
            }
            if self.is_closed() {
                return None;
            }
            let now = std::time::Instant::now();
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            if left.is_zero() {
                match dir {
                    Dir::G2h => h.g2h_waiting.remove(&txn),
                    Dir::H2g => h.h2g_waiting.remove(&txn),
                };
                return None;
            }
            h = self
                .handoff_cv
                .wait_timeout(h, left)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    pub(crate) fn note_unknown_completion(&self) {
        self.counters
            .unknown_completions
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let (gw, queue_len) = {
            let tx = relock(&self.guest_tx);
            (tx.ring.stats(), tx.backlog.len())
        };
        TransportStats {
            host_to_guest_writer: relock(&self.host_tx).stats(),
            host_to_guest_reader: relock(&self.guest_rx).stats(),
            guest_to_host_writer: gw,
            guest_to_host_reader: relock(&self.host_rx).ring.stats(),
            host_waits_for_space: self.counters.host_waits.load(Ordering::Relaxed),
            guest_sends_queued: self.counters.queued.load(Ordering::Relaxed),
            guest_queue_len: u64::try_from(queue_len).unwrap_or(u64::MAX),
            corrupt: self.counters.corrupt.load(Ordering::Relaxed),
            unknown_completions: self.counters.unknown_completions.load(Ordering::Relaxed),
        }
    }

    /// The raw bytes of both rings: (h2g control, h2g data, g2h control, g2h data).
    pub(crate) fn snapshot(&self) -> RingSnapshot {
        RingSnapshot {
            host_to_guest_control: self.h2g.control_bytes(),
            host_to_guest_data: self.h2g.data_bytes(),
            guest_to_host_control: self.g2h.control_bytes(),
            guest_to_host_data: self.g2h.data_bytes(),
        }
    }
}

/// The bytes of a channel's two rings, as in shared memory ([`Host::ring_snapshot`]).
///
/// [`Host::ring_snapshot`]: crate::Host::ring_snapshot
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSnapshot {
    /// The host→guest ring's 4 KiB control page.
    pub host_to_guest_control: Vec<u8>,
    /// The host→guest ring's data area.
    pub host_to_guest_data: Vec<u8>,
    /// The guest→host ring's control page.
    pub guest_to_host_control: Vec<u8>,
    /// The guest→host ring's data area.
    pub guest_to_host_data: Vec<u8>,
}

/// A transaction id for the wire (the world's transaction numbers start at 1).
pub(crate) fn wire_id(txn: u64) -> NonZeroU64 {
    NonZeroU64::new(txn).unwrap_or(NonZeroU64::MAX)
}
