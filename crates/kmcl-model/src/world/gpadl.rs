//! GPADLs: creation from a buffer or an MDL, deletion, and the host's view of their bytes.
//!
//! A GPADL over a guest buffer is that buffer, live: the host reads and writes the guest's
//! memory in place ([`Host::gpadl_read`](crate::Host::gpadl_read),
//! [`Host::gpadl_write`](crate::Host::gpadl_write)), as Hyper-V maps it, so a guest that reads
//! it twice sees what the host changed in between. Every access is a relaxed atomic byte copy
//! made under the world's lock, which `VmbChannelDeleteGpadl` takes too: the host never touches
//! the memory once the delete returned (on Windows the delete waits while the host still has
//! the GPADL mapped).

use std::sync::atomic::{AtomicU8, Ordering};

use super::*;

/// The memory a GPADL describes.
#[derive(Debug)]
pub(crate) enum GpadlMemory {
    /// `VmbChannelCreateGpadlFromBuffer`: the guest's buffer, which `_In_reads_bytes_` and the
    /// GPADL contract keep valid (and writable: the flags' READ_ONLY is only a hint) until
    /// `VmbChannelDeleteGpadl` returned.
    Guest {
        /// The buffer's address (exposed provenance).
        addr: usize,
        /// Its length (non-zero).
        len: usize,
    },
    /// `VmbChannelCreateGpadlFromMdl` over a model MDL: its bytes, which the host may read but
    /// not write (a model MDL's bytes are immutable; on Windows they would be the guest's
    /// pages).
    Mdl {
        /// The MDL's bytes.
        bytes: Arc<Vec<u8>>,
        /// Where the GPADL starts in them.
        offset: usize,
        /// Its length (non-zero, inside `bytes`).
        len: usize,
    },
}

impl GpadlMemory {
    pub(crate) const fn len(&self) -> usize {
        match self {
            Self::Guest { len, .. } | Self::Mdl { len, .. } => *len,
        }
    }
}

/// Why the host could not read or write a GPADL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpadlError {
    /// No such GPADL is alive (never created, or deleted).
    NoSuchGpadl,
    /// The range is not inside the GPADL.
    OutOfRange,
    /// The model cannot write a GPADL created from an MDL (its bytes are a test's copy).
    ReadOnly,
}

impl core::fmt::Display for GpadlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSuchGpadl => "no such GPADL",
            Self::OutOfRange => "the range is not inside the GPADL",
            Self::ReadOnly => "the model cannot write a GPADL made from an MDL",
        })
    }
}

impl std::error::Error for GpadlError {}

/// The byte at `addr + i`, as an atomic.
///
/// # Safety
/// `addr..addr + len` is a live guest buffer (a GPADL's, under the world lock) and `i < len`.
unsafe fn guest_byte<'a>(addr: usize, i: usize) -> &'a AtomicU8 {
    let p: *mut u8 = ptr::with_exposed_provenance_mut(addr.wrapping_add(i));
    // SAFETY: the byte is inside the live buffer (caller); `AtomicU8` has the size and
    // alignment of `u8`; the guest only touches the buffer with atomic or assembly copies
    // while it is shared (kmcl's `shared` module), so atomic accesses here cannot race.
    unsafe { AtomicU8::from_ptr(p) }
}

fn range(offset: usize, len: usize, size: usize) -> Result<(), GpadlError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(GpadlError::OutOfRange),
    }
}

impl World {
    pub(crate) fn gpadl_create(
        &self,
        func: &'static str,
        serial: u64,
        h: usize,
        flags: u32,
        memory: Result<GpadlMemory, NtStatus>,
    ) -> Result<u32, NtStatus> {
        if !self.require_passive(func, h) {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let mut g = self.lock();
        let c = g
            .channel(func, serial, h)
            .ok_or(NtStatus::STATUS_INVALID_PARAMETER_1)?;
        let phase = c.phase;
        if flags & !sys::VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        let memory = memory?;
        if !phase.is_open() {
            g.record(
                V::GpadlOnClosedChannel,
                func,
                h,
                format!("channel is {phase:?}; create GPADLs from EvtChannelOpened on"),
            );
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let id = g.next_gpadl;
        if id == u32::MAX {
            return Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES);
        }
        g.next_gpadl += 1;
        g.gpadls.insert(
            id,
            Gpadl {
                channel: serial,
                memory,
                leak_reported: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn gpadl_delete(&self, serial: u64, h: usize, id: u32) {
        const F: &str = "VmbChannelDeleteGpadl";
        if !self.require_passive(F, h) {
            return;
        }
        let mut g = self.lock();
        if g.channel(F, serial, h).is_none() {
            return;
        }
        match g.gpadls.get(&id) {
            Some(gp) if gp.channel == serial => {
                g.gpadls.remove(&id);
                g.deleted_gpadls.insert(id);
            }
            _ if g.deleted_gpadls.contains(&id) => {
                g.record(
                    V::GpadlDeletedTwice,
                    F,
                    h,
                    format!("GPADL {id} was already deleted"),
                );
            }
            _ => {
                g.record(
                    V::UnknownGpadl,
                    F,
                    h,
                    format!("no GPADL {id} on this channel"),
                );
            }
        }
    }

    /// The GPADL's length, if it is alive.
    pub(crate) fn gpadl_len(&self, id: u32) -> Option<usize> {
        self.lock().gpadls.get(&id).map(|g| g.memory.len())
    }

    /// Copies `dst.len()` bytes at `offset` of the GPADL out, each byte read once.
    pub(crate) fn gpadl_read(
        &self,
        id: u32,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpadlError> {
        let g = self.lock();
        let gp = g.gpadls.get(&id).ok_or(GpadlError::NoSuchGpadl)?;
        range(offset, dst.len(), gp.memory.len())?;
        match &gp.memory {
            GpadlMemory::Guest { addr, .. } => {
                for (i, d) in dst.iter_mut().enumerate() {
                    // SAFETY: `offset + i` is inside the live buffer (checked above; the lock
                    // keeps the GPADL from being deleted meanwhile).
                    *d = unsafe { guest_byte(*addr, offset + i) }.load(Ordering::Relaxed);
                }
            }
            GpadlMemory::Mdl {
                bytes,
                offset: start,
                ..
            } => {
                let src = bytes
                    .get(start + offset..start + offset + dst.len())
                    .ok_or(GpadlError::OutOfRange)?;
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// Copies `src` into the GPADL at `offset`, each byte written once.
    pub(crate) fn gpadl_write(&self, id: u32, offset: usize, src: &[u8]) -> Result<(), GpadlError> {
        let g = self.lock();
        let gp = g.gpadls.get(&id).ok_or(GpadlError::NoSuchGpadl)?;
        range(offset, src.len(), gp.memory.len())?;
        match &gp.memory {
            GpadlMemory::Guest { addr, .. } => {
                for (i, b) in src.iter().enumerate() {
                    // SAFETY: as in `gpadl_read`.
                    unsafe { guest_byte(*addr, offset + i) }.store(*b, Ordering::Relaxed);
                }
                Ok(())
            }
            GpadlMemory::Mdl { .. } => Err(GpadlError::ReadOnly),
        }
    }
}
