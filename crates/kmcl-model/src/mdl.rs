//! Memory descriptor lists, as opaque tokens.
//!
//! On Windows an MDL describes locked physical pages. In the model an MDL is a handle to a
//! byte buffer kept in a process-wide table: the model hands one out for the external data of
//! an incoming packet (valid until that packet is retired), and tests create their own with
//! [`mdl_create`] to pass to `VmbPacketSend*` or `VmbChannelCreateGpadlFromMdl`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use kmcl_sys::PMDL;

use crate::handle::{self, Kind};

/// Who owns an MDL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// External data of an incoming packet: world id, token serial.
    Incoming(u32, u64),
    /// Created by a test with [`mdl_create`].
    Test,
}

struct Entry {
    bytes: Arc<Vec<u8>>,
    owner: Owner,
}

static MDLS: LazyLock<Mutex<HashMap<u64, Entry>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT: AtomicU64 = AtomicU64::new(1);

fn table() -> std::sync::MutexGuard<'static, HashMap<u64, Entry>> {
    MDLS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn serial_of(mdl: PMDL) -> Option<u64> {
    let d = handle::decode(mdl as usize)?;
    (d.kind == Kind::Mdl).then_some(d.serial)
}

pub(crate) fn register(bytes: Arc<Vec<u8>>, owner: Owner) -> PMDL {
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(serial, Entry { bytes, owner });
    handle::encode_mdl(serial) as PMDL
}

/// Drops every MDL owned by the incoming packet `token` of `world`.
pub(crate) fn retire_incoming(world: u32, token: u64) {
    table().retain(|_, e| e.owner != Owner::Incoming(world, token));
}

/// Drops every MDL of incoming packets of `world` (the world is torn down).
pub(crate) fn retire_world(world: u32) {
    table().retain(|_, e| !matches!(e.owner, Owner::Incoming(w, _) if w == world));
}

/// The bytes an MDL describes, shared (no copy).
pub(crate) fn bytes(mdl: PMDL) -> Option<Arc<Vec<u8>>> {
    let serial = serial_of(mdl)?;
    table().get(&serial).map(|e| Arc::clone(&e.bytes))
}

/// The bytes a model MDL describes: the external data of an incoming packet (until the packet
/// is completed, failed or deferred) or a buffer from [`mdl_create`] (until [`mdl_free`]).
/// `None` for anything else, including an MDL that is no longer valid.
#[must_use]
pub fn mdl_bytes(mdl: PMDL) -> Option<Vec<u8>> {
    bytes(mdl).map(|b| b.as_ref().clone())
}

/// Creates an MDL describing a copy of `bytes`, for tests that pass external data to
/// `VmbPacketSend*`, `VmbChannelSendSynchronousRequest` or `VmbChannelCreateGpadlFromMdl`.
/// Valid in every world until [`mdl_free`].
#[must_use]
pub fn mdl_create(bytes: &[u8]) -> PMDL {
    register(Arc::new(bytes.to_vec()), Owner::Test)
}

/// Frees an MDL from [`mdl_create`]; false if it is not one (or was freed already).
pub fn mdl_free(mdl: PMDL) -> bool {
    let Some(serial) = serial_of(mdl) else {
        return false;
    };
    let mut t = table();
    if t.get(&serial).is_some_and(|e| e.owner == Owner::Test) {
        t.remove(&serial);
        true
    } else {
        false
    }
}
