//! [`TryArc`]: an atomically reference-counted pointer whose construction reports a failed
//! allocation instead of aborting.
//!
//! The core's shared state is reached from the device, the channel's handler, in-flight
//! completions and the platform's cancel tokens, so it needs shared ownership; `alloc::sync::Arc`
//! has no fallible constructor on stable Rust (`Arc::try_new` needs `allocator_api`), and an
//! aborting allocation in a driver is a bugcheck (with wdk-panic) the moment Driver Verifier's
//! low-resources simulation fails it. Only what the core needs: `try_new`, `Clone`, `Deref`,
//! and a raw form for the type-erased [`CancelToken`](crate::CancelToken).

// UNSAFETY: a reference-counted allocation, as `alloc::sync::Arc` implements one.
#![expect(
    unsafe_code,
    reason = "a fallible Arc: raw allocation and reference counting"
)]

use alloc::boxed::Box;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering, fence};

struct Inner<T> {
    refs: AtomicUsize,
    value: T,
}

/// A shared, immutable `T` freed when the last clone is dropped.
pub(crate) struct TryArc<T> {
    inner: NonNull<Inner<T>>,
}

// SAFETY: as `Arc<T>`: clones on several threads share `&T` (`T: Sync`) and the last one drops
// `T` on whichever thread it is (`T: Send`); the count is atomic.
unsafe impl<T: Send + Sync> Send for TryArc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for TryArc<T> {}

impl<T> TryArc<T> {
    /// Moves `value` into a new allocation with one reference; `value` back if the allocation
    /// fails.
    pub(crate) fn try_new(value: T) -> Result<Self, T> {
        let layout = Layout::new::<Inner<T>>();
        // SAFETY: `Inner` has a non-zero size (it holds a `usize`).
        let raw = unsafe { alloc::alloc::alloc(layout) }.cast::<Inner<T>>();
        let Some(raw) = NonNull::new(raw) else {
            return Err(value);
        };
        // SAFETY: `raw` is valid for writes of one `Inner<T>` and aligned for it.
        unsafe {
            raw.as_ptr().write(Inner {
                refs: AtomicUsize::new(1),
                value,
            });
        };
        Ok(Self { inner: raw })
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: `inner` stays allocated while any `TryArc` to it exists (this one does).
        unsafe { self.inner.as_ref() }
    }

    /// Gives up this reference without dropping it: [`from_raw`](Self::from_raw) takes it back.
    pub(crate) fn into_raw(this: Self) -> NonNull<()> {
        let raw = this.inner.cast();
        core::mem::forget(this);
        raw
    }

    /// Takes back a reference given up by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `raw` comes from `into_raw` of a `TryArc<T>` of this same `T`, and is taken back once.
    pub(crate) unsafe fn from_raw(raw: NonNull<()>) -> Self {
        Self { inner: raw.cast() }
    }

    /// The value behind a reference given up by [`into_raw`](Self::into_raw), without taking
    /// it back.
    ///
    /// # Safety
    /// As for [`from_raw`](Self::from_raw), and the reference is still given up (not yet taken
    /// back) for the whole lifetime `'a`.
    pub(crate) unsafe fn value_of<'a>(raw: NonNull<()>) -> &'a T {
        // SAFETY: the given-up reference keeps the allocation alive for 'a (caller).
        unsafe { &raw.cast::<Inner<T>>().as_ref().value }
    }
}

impl<T> Clone for TryArc<T> {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: the new reference is made from an existing one, which orders it.
        // The count cannot realistically overflow: each clone is a live object in memory.
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        Self { inner: self.inner }
    }
}

impl<T> core::ops::Deref for TryArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Drop for TryArc<T> {
    fn drop(&mut self) {
        if self.inner().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other reference's uses happen before the value is dropped (`Arc`'s fence).
        fence(Ordering::Acquire);
        // SAFETY: the last reference: `inner` came from `alloc` with `Inner<T>`'s layout in
        // `try_new` and holds an initialised `Inner<T>`, which `Box` frees with that layout.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

impl<T> core::fmt::Debug for TryArc<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TryArc")
    }
}
