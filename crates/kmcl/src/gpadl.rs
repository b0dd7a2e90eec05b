//! GPADLs: guest memory the host maps (`VmbChannelCreateGpadlFromBuffer` / `...FromMdl`,
//! `VmbChannelDeleteGpadl`).
//!
//! # What the types guarantee
//!
//! * **The memory outlives its GPADL.** A [`Gpadl`] owns the [`SharedBuffer`] it describes:
//!   the buffer is moved in when the GPADL is created and comes back only from
//!   [`Gpadl::delete`], after `VmbChannelDeleteGpadl` returned (which waits while the host still
//!   has it mapped). Freeing or reusing the memory while the host can reach it does not compile:
//!
//!   ```compile_fail
//!   fn free_while_mapped(channel: kmcl::ChannelRef<'_>, buffer: kmcl::SharedBuffer) {
//!       let gpadl = channel.create_gpadl(buffer, kmcl::GpadlAccess::ReadWrite);
//!       drop(buffer); // use of moved value: the GPADL owns it
//!   }
//!   ```
//!
//! * **Deleted exactly once.** Dropping a `Gpadl` deletes it; [`Gpadl::delete`] consumes it.
//! * **No `&[u8]` over memory the host can write.** The buffer is only read and written
//!   through one-pass copies to and from private memory ([`SharedBuffer::read`],
//!   [`SharedBuffer::write`], `crate::shared`), whether or not it is mapped.
//! * **No GPADL outlives its channel handle.** The channel's cleanup (`VmbChannelCleanup` and
//!   the context with its library reference) waits for the last `Gpadl` of the channel: if one
//!   is still alive when the channel is dropped, that `Gpadl`'s drop does the cleanup. KMCL's
//!   rule is stricter: every GPADL deleted by the end of `EvtChannelClosed` (reference §6.4);
//!   a driver keeps it by deleting its GPADLs in [`ChannelHandler::closed`] at the latest, and
//!   the model's verifier reports any that is not (`ViolationKind::GpadlLeak`).
//!
//! [`ChannelHandler::closed`]: crate::ChannelHandler::closed

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use kmcl_sys as sys;
use ntstatus::NtStatus;

use crate::library::{Api, kmcl_call};
use crate::shared::{copy_from_shared, copy_to_shared};

/// The page size GPADLs are made of.
pub const PAGE_SIZE: usize = 4096;

/// Memory for a GPADL: page-aligned, zeroed, owned. Once a GPADL maps it the host may read or
/// write it at any time, so it is only ever accessed by copying bytes in or out, in one pass.
pub struct SharedBuffer {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its memory, and every access goes through atomic copies (`shared`),
// so sharing or moving it between threads cannot race in the Rust sense.
unsafe impl Send for SharedBuffer {}
// SAFETY: as above.
unsafe impl Sync for SharedBuffer {}

impl core::fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("len", &self.len())
            .finish()
    }
}

impl SharedBuffer {
    /// `len` bytes (rounded up to whole pages), zeroed.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for 0 or more than 4 GiB; `STATUS_INSUFFICIENT_RESOURCES`
    /// when the memory cannot be had.
    ///
    /// # IRQL
    /// Where the allocator may be used (the driver's: ≤ DISPATCH_LEVEL).
    pub fn try_new(len: usize) -> Result<Self, NtStatus> {
        let pages = len.div_ceil(PAGE_SIZE);
        if pages == 0 || u32::try_from(pages * PAGE_SIZE).is_err() {
            return Err(NtStatus::STATUS_INVALID_PARAMETER);
        }
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE)
            .map_err(|_| NtStatus::STATUS_INVALID_PARAMETER)?;
        // SAFETY: `layout` has a non-zero size.
        let base = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })
            .ok_or(NtStatus::STATUS_INSUFFICIENT_RESOURCES)?;
        Ok(Self { base, layout })
    }

    /// Its size in bytes (whole pages).
    #[must_use]
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never true (a buffer has at least one page); for clippy's `len_without_is_empty`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the buffer in one pass
    /// (the host may be writing them).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is not inside the buffer.
    ///
    /// # IRQL
    /// Any.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), NtStatus> {
        self.check(offset, dst.len())?;
        // SAFETY: `offset..offset + dst.len()` is inside the allocation (checked), which lives
        // as long as `self`; others may write it concurrently, which `copy_from_shared` allows.
        unsafe { copy_from_shared(self.base.as_ptr().wrapping_add(offset), dst) };
        Ok(())
    }

    /// Copies `src` into the buffer at `offset` in one pass.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is not inside the buffer.
    ///
    /// # IRQL
    /// Any.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), NtStatus> {
        self.check(offset, src.len())?;
        // SAFETY: as for `read`; `copy_to_shared` allows concurrent readers and writers.
        unsafe { copy_to_shared(src, self.base.as_ptr().wrapping_add(offset)) };
        Ok(())
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), NtStatus> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(NtStatus::STATUS_INVALID_PARAMETER),
        }
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated with `layout` in `try_new` and freed only here; no GPADL maps it
        // (a mapped buffer is owned by its `Gpadl`, which gives it back only after deleting).
        unsafe { alloc::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// Whether the host may write a GPADL's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpadlAccess {
    /// The host may read and write it.
    ReadWrite,
    /// `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`: a hint that the host only reads it (it speeds up
    /// snapshots and live migration; it is not a protection, reference §7.6).
    ReadOnly,
}

impl GpadlAccess {
    fn flags(self) -> u32 {
        match self {
            Self::ReadWrite => 0,
            Self::ReadOnly => sys::VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
        }
    }
}

/// The part of a channel's context its GPADLs share (the first field of the context, so a
/// channel handle leads to it whatever the handler type): how many GPADLs of the channel are
/// alive, whether the channel's owner has asked for cleanup, and how to do that cleanup.
pub(crate) struct GpadlShare {
    /// Live GPADLs, plus [`CLEANUP_PENDING`].
    count: AtomicU32,
    /// `VmbChannelCleanup` and freeing the context, for the handler type of this channel.
    finish: unsafe fn(sys::VMBCHANNEL, NonNull<GpadlShare>),
    /// The channel's library (in the context, alive until `finish`).
    api: NonNull<Api>,
}

/// Set in [`GpadlShare::count`] once the owner wants the channel cleaned up.
const CLEANUP_PENDING: u32 = 1 << 31;

impl GpadlShare {
    /// A share with no GPADL; `api` is set once the context is in place.
    pub(crate) const fn new(finish: unsafe fn(sys::VMBCHANNEL, NonNull<GpadlShare>)) -> Self {
        Self {
            count: AtomicU32::new(0),
            finish,
            api: NonNull::dangling(),
        }
    }

    /// Records where the channel's library is.
    ///
    /// # Safety
    /// `api` stays valid until `finish` runs; called before any GPADL is created.
    pub(crate) unsafe fn set_api(&mut self, api: NonNull<Api>) {
        self.api = api;
    }

    /// The owner is done with the channel: clean it up now if no GPADL is alive, otherwise
    /// when the last one is deleted. Returns whether it must clean up now.
    pub(crate) fn cleanup_now(&self) -> bool {
        self.count.fetch_or(CLEANUP_PENDING, Ordering::AcqRel) & !CLEANUP_PENDING == 0
    }
}

/// A GPADL of a channel: the host may map the [`SharedBuffer`] it owns. Deleted
/// (`VmbChannelDeleteGpadl`, blocking while the host still has it mapped) when dropped or by
/// [`delete`](Self::delete).
///
/// # IRQL
/// Dropping it needs PASSIVE_LEVEL.
pub struct Gpadl {
    channel: sys::VMBCHANNEL,
    share: NonNull<GpadlShare>,
    handle: u32,
    /// Not deleted yet.
    live: bool,
    /// `None` for a GPADL over a caller's MDL.
    buffer: Option<SharedBuffer>,
}

// SAFETY: the channel handle and the GPADL handle may be used from any thread; the share is
// only touched through atomics and read-only fields; the buffer is `Send + Sync`.
unsafe impl Send for Gpadl {}
// SAFETY: `&Gpadl` only reads the handle and the buffer (through copies).
unsafe impl Sync for Gpadl {}

impl core::fmt::Debug for Gpadl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gpadl")
            .field("handle", &self.handle)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Gpadl {
    /// Creates a GPADL over `buffer`, which it owns from now on.
    ///
    /// # Safety
    /// `channel` is a live channel built by kmcl (its context starts with the `GpadlShare`),
    /// reached through `api`, not yet cleaned up; PASSIVE_LEVEL.
    pub(crate) unsafe fn create(
        channel: sys::VMBCHANNEL,
        api: &Api,
        share: NonNull<GpadlShare>,
        buffer: SharedBuffer,
        access: GpadlAccess,
    ) -> Result<Self, (SharedBuffer, NtStatus)> {
        let Ok(len) = u32::try_from(buffer.len()) else {
            return Err((buffer, NtStatus::STATUS_INVALID_PARAMETER));
        };
        let mut handle = 0u32;
        // SAFETY: live channel (caller); the buffer is valid for `len` bytes and stays so (it
        // is owned by the `Gpadl` until after the delete); `handle` is a valid out-pointer.
        let status = NtStatus(unsafe {
            kmcl_call!(
                api,
                VmbChannelCreateGpadlFromBuffer(
                    channel,
                    access.flags(),
                    buffer.base.as_ptr().cast(),
                    len,
                    &raw mut handle,
                ),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        });
        if !status.is_success() {
            return Err((buffer, status));
        }
        // SAFETY: the share lives in the channel's context until `finish` (caller).
        Ok(unsafe { Self::counted(channel, share, handle, Some(buffer)) })
    }

    /// Creates a GPADL over `len` bytes of a caller's MDL chain from `offset` (0: to the end).
    ///
    /// # Safety
    /// As [`create`](Self::create); and `mdl` describes locked memory that stays locked and
    /// valid until the returned `Gpadl` is dropped.
    pub(crate) unsafe fn create_from_mdl(
        channel: sys::VMBCHANNEL,
        api: &Api,
        share: NonNull<GpadlShare>,
        mdl: sys::PMDL,
        offset: u32,
        len: u32,
        access: GpadlAccess,
    ) -> Result<Self, NtStatus> {
        let mut handle = 0u32;
        // SAFETY: live channel and a valid MDL that outlives the GPADL (caller).
        NtStatus(unsafe {
            kmcl_call!(
                api,
                VmbChannelCreateGpadlFromMdl(
                    channel,
                    access.flags(),
                    mdl,
                    offset,
                    len,
                    &raw mut handle
                ),
                NtStatus::STATUS_NOT_SUPPORTED.0
            )
        })
        .ok()?;
        // SAFETY: as in `create`.
        Ok(unsafe { Self::counted(channel, share, handle, None) })
    }

    /// A GPADL KMCL just created, counted in its channel's share (the channel's cleanup
    /// waits for the count to drop to zero).
    ///
    /// # Safety
    /// `share` lives in the channel's context until `finish`.
    unsafe fn counted(
        channel: sys::VMBCHANNEL,
        share: NonNull<GpadlShare>,
        handle: u32,
        buffer: Option<SharedBuffer>,
    ) -> Self {
        // SAFETY: `share` is live (caller).
        unsafe { share.as_ref() }
            .count
            .fetch_add(1, Ordering::AcqRel);
        Self {
            channel,
            share,
            handle,
            live: true,
            buffer,
        }
    }

    /// The handle the host knows it by (send it to the host in a message).
    #[must_use]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The memory, for copies in and out (`None` for a GPADL over a caller's MDL).
    #[must_use]
    pub fn buffer(&self) -> Option<&SharedBuffer> {
        self.buffer.as_ref()
    }

    /// Deletes the GPADL and gives its buffer back, unmapped (`None` for an MDL's GPADL).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    #[must_use = "the buffer comes back to be reused or dropped"]
    pub fn delete(mut self) -> Option<SharedBuffer> {
        self.delete_now();
        let buffer = self.buffer.take();
        drop(self); // nothing left to delete; releases the channel share
        buffer
    }

    fn delete_now(&mut self) {
        if !self.live {
            return;
        }
        // SAFETY: the share and the api live until `finish`, which cannot run while this GPADL
        // is counted; the channel handle is valid until then too (type invariant).
        let share = unsafe { self.share.as_ref() };
        // SAFETY: as above: the api lives in the channel's context until `finish`.
        let api = unsafe { share.api.as_ref() };
        // SAFETY: our GPADL of this live channel, deleted exactly once (`live` is cleared).
        unsafe { kmcl_call!(api, VmbChannelDeleteGpadl(self.channel, self.handle), ()) };
        self.live = false;
    }
}

impl Drop for Gpadl {
    fn drop(&mut self) {
        self.delete_now();
        // Unmapped now: the buffer (if still here) may go; then the channel, if its owner is
        // done with it and this was its last GPADL.
        drop(self.buffer.take());
        // SAFETY: the share is alive while this GPADL is counted.
        let share = unsafe { self.share.as_ref() };
        if share.count.fetch_sub(1, Ordering::AcqRel) == CLEANUP_PENDING | 1 {
            let finish = share.finish;
            // SAFETY: the owner asked for cleanup and this was the last GPADL: nothing else
            // uses the channel or its context any more.
            unsafe { finish(self.channel, self.share) };
        }
    }
}
