//! A host that breaks the ring protocol, and what the guest's KMCL does about it.
//!
//! [`RawRings`] writes raw bytes into a live channel's rings (indices, descriptors, packet
//! types, flags, the pending send size) and raises the guest's interrupt, as a hostile host can.
//! When the guest's end of a ring then finds it corrupt, the ring is poisoned (`vmbus-ring`
//! refuses every further use of it), the model counts it
//! ([`HostStats::rings_poisoned`](crate::HostStats::rings_poisoned)) and
//! closes the channel the way a host close does (Suspend if running, Closed), from a thread of
//! its own: the guest driver sees an ordinary close, never the corrupt bytes. Whether the real
//! library closes, resets or ignores a corrupt ring is not documented; closing is what keeps a
//! driver safe in every case, so it is what the model holds drivers to.

use std::sync::Arc;

use vmbus_ring::{FlatRingMem, RingMem};

use super::{Irql, World};
use crate::transport::Link;

impl World {
    /// After the guest's KMCL used an end of `link`'s rings: if it found one corrupt, count it
    /// and close the channel (from a new thread: this can run inside a host write or a guest
    /// send, under ring locks the close takes).
    pub(crate) fn check_poisoned(&self, link: &Arc<Link>) {
        if !link.take_guest_poisoned() {
            return;
        }
        self.lock().stats.rings_poisoned += 1;
        let Some(world) = self.me.upgrade() else {
            return;
        };
        let link = Arc::clone(link);
        let spawned = std::thread::Builder::new()
            .name(format!("kmcl-model world {} poisoned ring", self.id))
            .spawn(move || world.close_channel_of(Some(&link)));
        if let Ok(handle) = spawned {
            super::relock(&self.workers).push(handle);
        }
    }

    /// The open channel's rings, for a host that ignores the ring protocol.
    pub(crate) fn raw_rings(&self) -> Option<RawRings> {
        let link = self.open_link(&self.lock())?;
        Some(RawRings {
            world: self.me.upgrade()?,
            link,
        })
    }
}

/// Raw access to one open channel's two rings, as a hostile host has it: it writes the shared
/// memory without the ring protocol ([`Host::raw_rings`](crate::Host::raw_rings)).
///
/// Control page words (`u32`, index `i` at byte `4 * i`): 0 write index, 1 read index,
/// 2 interrupt mask, 3 pending send size, 16 feature bits.
pub struct RawRings {
    world: Arc<World>,
    link: Arc<Link>,
}

impl std::fmt::Debug for RawRings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRings")
            .field("world", &self.world.id)
            .field("channel", &self.link.channel)
            .finish_non_exhaustive()
    }
}

impl RawRings {
    fn rings(&self) -> (&FlatRingMem, &FlatRingMem) {
        self.link.memory()
    }

    /// Bytes in the host→guest ring's data area.
    #[must_use]
    pub fn host_to_guest_len(&self) -> usize {
        self.rings().0.data_len()
    }

    /// Writes `bytes` into the host→guest data area at `offset` (modulo its size), wrapping at
    /// its end; at most the whole data area.
    pub fn write_host_to_guest(&self, offset: usize, bytes: &[u8]) {
        let ring = self.rings().0;
        let len = ring.data_len();
        let bytes = bytes.get(..len).unwrap_or(bytes);
        ring.write_at(offset % len, bytes);
    }

    /// Word `word` of the host→guest control page (0 if out of range).
    #[must_use]
    pub fn host_to_guest_control(&self, word: usize) -> u32 {
        load_word(self.rings().0, word)
    }

    /// Stores `value` in word `word` of the host→guest control page (ignored if out of range).
    pub fn set_host_to_guest_control(&self, word: usize, value: u32) {
        store_word(self.rings().0, word, value);
    }

    /// Word `word` of the guest→host control page (0 if out of range).
    #[must_use]
    pub fn guest_to_host_control(&self, word: usize) -> u32 {
        load_word(self.rings().1, word)
    }

    /// Stores `value` in word `word` of the guest→host control page (the host is that ring's
    /// reader: its read index and interrupt mask live there; ignored if out of range).
    pub fn set_guest_to_host_control(&self, word: usize, value: u32) {
        store_word(self.rings().1, word, value);
    }

    /// Interrupts the guest for the host→guest ring: its KMCL reads what the ring now holds,
    /// as after a host write's signal.
    pub fn signal_guest(&self) {
        crate::irql::with_irql(Irql::Passive, || self.world.guest_isr(&self.link));
    }

    /// Tells the guest's writer that the host freed space in the guest→host ring.
    pub fn signal_guest_writer(&self) {
        crate::irql::with_irql(Irql::Passive, || {
            self.link.flush_backlog();
            self.world.check_poisoned(&self.link);
        });
    }
}

/// Word `word` of `ring`'s control page (0 if out of range).
fn load_word(ring: &FlatRingMem, word: usize) -> u32 {
    ring.control()
        .get(word)
        .map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
}

/// Stores `value` in word `word` of `ring`'s control page (ignored if out of range).
fn store_word(ring: &FlatRingMem, word: usize, value: u32) {
    if let Some(w) = ring.control().get(word) {
        w.store(value, std::sync::atomic::Ordering::Release);
    }
}
