//! Opaque handles and the registry of worlds.
//!
//! A handle the model gives out is not a pointer to anything: it is a token that encodes its
//! kind, the world it belongs to and a serial number that is never reused, laid out so that
//! the value is not a canonical user-mode address (dereferencing it faults instead of
//! corrupting memory):
//!
//! ```text
//! bits 56..64  kind tag (0xC1 channel, 0xC2 packet, 0xC3 incoming token, 0xC4 MDL, 0xC5 device)
//! bits 48..56  0xA5 marker
//! bits 28..48  world id (20 bits)           | MDL: bits 0..48 a process-wide serial
//! bits  0..28  serial within world and kind |
//! ```
//!
//! Packets from `VmbPacketInitialize` are the exception: their handle is the caller's buffer,
//! so the model keeps a process-wide map from that address to the world.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use crate::world::World;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("kmcl-model encodes handles in 64-bit pointer values");

/// The kind of object a handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Channel,
    Packet,
    Completion,
    Mdl,
    Device,
}

impl Kind {
    const fn tag(self) -> usize {
        match self {
            Self::Channel => 0xC1,
            Self::Packet => 0xC2,
            Self::Completion => 0xC3,
            Self::Mdl => 0xC4,
            Self::Device => 0xC5,
        }
    }

    const fn from_tag(tag: usize) -> Option<Self> {
        match tag {
            0xC1 => Some(Self::Channel),
            0xC2 => Some(Self::Packet),
            0xC3 => Some(Self::Completion),
            0xC4 => Some(Self::Mdl),
            0xC5 => Some(Self::Device),
            _ => None,
        }
    }
}

const MARKER: usize = 0xA5;
const WORLD_BITS: u32 = 20;
const SERIAL_BITS: u32 = 28;
/// The largest serial a world-scoped handle can carry.
pub(crate) const MAX_SERIAL: u64 = (1 << SERIAL_BITS) - 1;
const MDL_SERIAL_BITS: u32 = 48;

/// Encodes a world-scoped handle value. `serial` must be `1..=MAX_SERIAL`.
pub(crate) fn encode(kind: Kind, world: u32, serial: u64) -> usize {
    let world = usize::try_from(world).unwrap_or(0) & ((1 << WORLD_BITS) - 1);
    let serial = usize::try_from(serial).unwrap_or(0) & ((1 << SERIAL_BITS) - 1);
    (kind.tag() << 56) | (MARKER << 48) | (world << SERIAL_BITS) | serial
}

/// Encodes an MDL handle from its process-wide serial.
pub(crate) fn encode_mdl(serial: u64) -> usize {
    let serial = usize::try_from(serial).unwrap_or(0) & ((1 << MDL_SERIAL_BITS) - 1);
    (Kind::Mdl.tag() << 56) | (MARKER << 48) | serial
}

/// A decoded model handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) kind: Kind,
    pub(crate) world: u32,
    pub(crate) serial: u64,
}

/// Decodes a value the model may have handed out; `None` for anything else (NULL, caller
/// memory, garbage).
pub(crate) fn decode(value: usize) -> Option<Decoded> {
    if (value >> 48) & 0xFF != MARKER {
        return None;
    }
    let kind = Kind::from_tag(value >> 56)?;
    if kind == Kind::Mdl {
        let serial = u64::try_from(value & ((1 << MDL_SERIAL_BITS) - 1)).ok()?;
        return Some(Decoded {
            kind,
            world: 0,
            serial,
        });
    }
    let world = u32::try_from((value >> SERIAL_BITS) & ((1 << WORLD_BITS) - 1)).ok()?;
    let serial = u64::try_from(value & ((1 << SERIAL_BITS) - 1)).ok()?;
    Some(Decoded {
        kind,
        world,
        serial,
    })
}

struct Registry {
    worlds: BTreeMap<u32, Weak<World>>,
    next: u32,
}

static WORLDS: RwLock<Registry> = RwLock::new(Registry {
    worlds: BTreeMap::new(),
    next: 1,
});

/// Creates a world under a fresh id (ids wrap at 2^20, skipping live ones) and registers it.
pub(crate) fn register_world(make: impl FnOnce(u32) -> Arc<World>) -> Arc<World> {
    let mut reg = WORLDS.write().unwrap_or_else(PoisonError::into_inner);
    reg.worlds.retain(|_, w| w.strong_count() > 0);
    let limit = 1u32 << WORLD_BITS;
    let mut id = reg.next;
    while id == 0 || id >= limit || reg.worlds.contains_key(&id) {
        id = if id == 0 || id >= limit { 1 } else { id + 1 };
    }
    reg.next = id + 1;
    let world = make(id);
    reg.worlds.insert(id, Arc::downgrade(&world));
    world
}

/// Removes a world from the registry: its handles become unattributable (orphans).
pub(crate) fn unregister_world(id: u32) {
    WORLDS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .worlds
        .remove(&id);
    CALLER_PACKETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|_, w| *w != id);
}

/// The live world with this id.
pub(crate) fn world(id: u32) -> Option<Arc<World>> {
    WORLDS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .worlds
        .get(&id)
        .and_then(Weak::upgrade)
}

/// The live worlds of VM `vm` (the offers of one VMBus).
pub(crate) fn vm_worlds(vm: u32) -> Vec<Arc<World>> {
    WORLDS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .worlds
        .values()
        .filter_map(Weak::upgrade)
        .filter(|w| w.vm == vm)
        .collect()
}

/// Caller-memory packets (`VmbPacketInitialize`): address -> world id.
static CALLER_PACKETS: Mutex<BTreeMap<usize, u32>> = Mutex::new(BTreeMap::new());

pub(crate) fn register_caller_packet(addr: usize, world: u32) {
    CALLER_PACKETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(addr, world);
}

pub(crate) fn unregister_caller_packet(addr: usize, world: u32) {
    let mut map = CALLER_PACKETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if map.get(&addr) == Some(&world) {
        map.remove(&addr);
    }
}

pub(crate) fn caller_packet_world(addr: usize) -> Option<u32> {
    CALLER_PACKETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&addr)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [Kind::Channel, Kind::Packet, Kind::Completion, Kind::Device] {
            let v = encode(kind, 0xABCDE, 0x0123_4567);
            assert_eq!(
                decode(v),
                Some(Decoded {
                    kind,
                    world: 0xABCDE,
                    serial: 0x0123_4567
                })
            );
        }
        let m = encode_mdl(0x1234_5678_9ABC);
        assert_eq!(
            decode(m).map(|d| (d.kind, d.serial)),
            Some((Kind::Mdl, 0x1234_5678_9ABC))
        );
    }

    #[test]
    fn foreign_values_do_not_decode() {
        assert_eq!(decode(0), None);
        assert_eq!(decode(0x7fff_1234_5678), None);
        assert_eq!(decode(usize::MAX), None);
        assert_eq!(decode((0xC9 << 56) | (MARKER << 48) | 5), None);
    }

    #[test]
    fn handles_are_not_canonical_user_addresses() {
        let v = encode(Kind::Channel, 1, 1);
        // Bits 47..64 are not all equal: not canonical on x86-64 with 48- or 57-bit VAs.
        assert!(v >> 47 != 0 && v >> 47 != (usize::MAX >> 47));
    }
}
