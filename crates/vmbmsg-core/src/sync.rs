//! The two primitives the portable core needs from the platform: a spin lock that is safe at
//! DISPATCH_LEVEL, and a monotonic clock.
//!
//! * On Windows the lock is a `KSPIN_LOCK` taken with `KeAcquireSpinLockRaiseToDpc`, so the
//!   holder runs at DISPATCH_LEVEL and a DPC on the same processor can never spin on it
//!   forever; the clock is `KeQueryPerformanceCounter`.
//! * Elsewhere (tests, the simulation, benchmarks) the lock is a spin lock on an `AtomicBool`
//!   that yields the processor when it has spun for a while, and the clock
//!   `std::time::Instant`.
//! * In the loom build (`RUSTFLAGS="--cfg loom"`, Linux only) the lock is `loom::sync::Mutex`,
//!   and the atomics ([`atomic`]), the `Arc` of [`Rundown`] and [`relax`] are loom's, so that
//!   `src/loom_tests.rs` explores every interleaving of the real code.
//!
//! Rules for users: hold a guard only for a few instructions of bookkeeping, never across a
//! KMCL call or a request completion (style §6), and never allocate under it.

use core::ops::{Deref, DerefMut};

#[cfg(windows)]
mod imp {
    // UNSAFETY: the kernel spin lock and clock are FFI calls into ntoskrnl.
    #![expect(
        unsafe_code,
        reason = "KSPIN_LOCK and KeQueryPerformanceCounter through wdk-sys"
    )]

    use core::cell::UnsafeCell;
    use wdk_sys::{KIRQL, KSPIN_LOCK};

    pub struct Lock<T> {
        lock: UnsafeCell<KSPIN_LOCK>,
        value: UnsafeCell<T>,
    }

    // SAFETY: the value is only reached through a guard, and a guard exists on one processor at
    // a time (the spin lock), so sharing the lock is sharing `T` across threads one at a time.
    unsafe impl<T: Send> Sync for Lock<T> {}
    // SAFETY: moving the lock moves `T`; a KSPIN_LOCK that nobody holds is plain data.
    unsafe impl<T: Send> Send for Lock<T> {}

    pub struct Guard<'a, T> {
        lock: &'a Lock<T>,
        old_irql: KIRQL,
    }

    impl<T> Lock<T> {
        pub const fn new(value: T) -> Self {
            // An initialised KSPIN_LOCK is zero (KeInitializeSpinLock stores 0).
            Self {
                lock: UnsafeCell::new(0),
                value: UnsafeCell::new(value),
            }
        }

        pub fn lock(&self) -> Guard<'_, T> {
            // SAFETY: `self.lock` is an initialised KSPIN_LOCK that lives as long as `self`;
            // the caller runs at ≤ DISPATCH_LEVEL (documented on every core entry point).
            let old_irql = unsafe { wdk_sys::ntddk::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
            Guard {
                lock: self,
                old_irql,
            }
        }
    }

    impl<T> Guard<'_, T> {
        pub fn get(&self) -> &T {
            // SAFETY: the spin lock is held for the guard's lifetime: no other reference exists.
            unsafe { &*self.lock.value.get() }
        }

        pub fn get_mut(&mut self) -> &mut T {
            // SAFETY: as above, and `&mut self` makes this the only borrow through the guard.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            // SAFETY: this guard acquired the lock with KeAcquireSpinLockRaiseToDpc, which
            // returned `old_irql`; it is released exactly once, here.
            unsafe { wdk_sys::ntddk::KeReleaseSpinLock(self.lock.lock.get(), self.old_irql) };
        }
    }

    /// Nanoseconds from a monotonic clock.
    pub fn now_ns() -> u64 {
        let mut freq = wdk_sys::LARGE_INTEGER::default();
        // SAFETY: `freq` is a valid out pointer; callable at any IRQL.
        let ticks = unsafe { wdk_sys::ntddk::KeQueryPerformanceCounter(&raw mut freq) };
        // SAFETY: the kernel just wrote the counter as a 64-bit count; every bit pattern of the
        // union is a valid `QuadPart`.
        let ticks = unsafe { ticks.QuadPart };
        // SAFETY: as above, for the frequency the kernel wrote through `freq`.
        let freq = unsafe { freq.QuadPart };
        let (Ok(ticks), Ok(freq)) = (u128::try_from(ticks), u128::try_from(freq)) else {
            return 0;
        };
        if freq == 0 {
            return 0;
        }
        u64::try_from(ticks * 1_000_000_000 / freq).unwrap_or(u64::MAX)
    }
}

#[cfg(all(not(windows), not(loom)))]
mod imp {
    // UNSAFETY: a spin lock over an `UnsafeCell`, like the Windows build's KSPIN_LOCK. A std
    // `Mutex` here cost the receive path a poison check per lock and per unlock (measured in
    // docs/performance.md); a kernel spin lock has neither.
    #![expect(unsafe_code, reason = "a spin lock over an UnsafeCell, as on Windows")]

    extern crate std;
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Instant;

    pub struct Lock<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // SAFETY: the value is only reached through a guard, and at most one guard exists at a
    // time (`locked`), so sharing the lock shares `T` across threads one at a time.
    unsafe impl<T: Send> Sync for Lock<T> {}

    pub struct Guard<'a, T> {
        lock: &'a Lock<T>,
    }

    impl<T> Lock<T> {
        pub const fn new(value: T) -> Self {
            Self {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }

        pub fn lock(&self) -> Guard<'_, T> {
            let mut spins = 0u32;
            while self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                // Wait until it looks free before trying again. User mode can be preempted
                // while holding the lock (a DPC cannot), so give the processor away after a
                // while instead of spinning out the holder's time slice.
                while self.locked.load(Ordering::Relaxed) {
                    if spins < 100 {
                        spins += 1;
                        core::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
            Guard { lock: self }
        }
    }

    impl<T> Guard<'_, T> {
        pub fn get(&self) -> &T {
            // SAFETY: this guard holds the lock: no other reference to the value exists.
            unsafe { &*self.lock.value.get() }
        }

        pub fn get_mut(&mut self) -> &mut T {
            // SAFETY: as above, and `&mut self` makes this the only borrow through the guard.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }

    /// Nanoseconds from a monotonic clock.
    pub fn now_ns() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(all(not(windows), loom))]
mod imp {
    extern crate std;
    use loom::sync::{Mutex, MutexGuard};
    use std::sync::{OnceLock, PoisonError};
    use std::time::Instant;

    pub struct Lock<T>(Mutex<T>);
    pub struct Guard<'a, T>(MutexGuard<'a, T>);

    impl<T> Lock<T> {
        pub fn new(value: T) -> Self {
            Self(Mutex::new(value))
        }

        pub fn lock(&self) -> Guard<'_, T> {
            Guard(self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    impl<T> Guard<'_, T> {
        pub fn get(&self) -> &T {
            &self.0
        }

        pub fn get_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }

    pub fn now_ns() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The atomics of the structures shared between the packet callback and the IOCTL paths:
/// `core`'s, or loom's in the loom build.
pub(crate) mod atomic {
    pub(crate) use core::sync::atomic::Ordering;
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
}

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

/// A lock usable from PASSIVE_LEVEL up to DISPATCH_LEVEL.
pub struct SpinLock<T>(imp::Lock<T>);

/// Holds a [`SpinLock`]; the lock is released (and the IRQL restored) when it drops.
pub struct SpinGuard<'a, T>(imp::Guard<'a, T>);

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self(imp::Lock::new(value))
    }

    /// A new, unlocked lock (loom's locks are created at run time, inside the model).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self(imp::Lock::new(value))
    }

    /// Acquires the lock, raising to DISPATCH_LEVEL on Windows.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL. Not reentrant.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        SpinGuard(self.0.lock())
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.get()
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

impl<T> core::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SpinLock")
    }
}

/// Nanoseconds from a monotonic clock (for round-trip times).
///
/// # IRQL
/// Any.
#[must_use]
pub fn now_ns() -> u64 {
    imp::now_ns()
}

impl<T> core::fmt::Debug for SpinGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SpinGuard")
    }
}

/// Lets another thread run while waiting for a short-held resource.
///
/// # IRQL
/// PASSIVE_LEVEL (it may yield the processor).
pub fn relax() {
    #[cfg(all(not(windows), not(loom)))]
    {
        extern crate std;
        std::thread::yield_now();
    }
    // A spin loop under loom must yield, or the model never schedules the thread it waits for.
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(windows)]
    core::hint::spin_loop();
}

/// A slot for at most one value that callers borrow by reference count for short uses, and
/// that its owner takes back after waiting for every borrow to end: the driver's channel,
/// borrowed by the IOCTL paths around an allocate-and-send and taken by `channel_down` before
/// `VmbChannelDisable` (like `EX_RUNDOWN_REF` around a pointer).
pub(crate) struct Rundown<T> {
    slot: SpinLock<Option<Arc<T>>>,
}

impl<T> Rundown<T> {
    /// An empty slot.
    pub(crate) fn new() -> Self {
        Self {
            slot: SpinLock::new(None),
        }
    }

    /// Whether the slot holds a value.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn is_set(&self) -> bool {
        self.slot.lock().is_some()
    }

    /// Puts `value` in the slot (replacing nothing: the caller checked [`is_set`](Self::is_set)
    /// under its own serialisation).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn set(&self, value: T) {
        *self.slot.lock() = Some(Arc::new(value));
    }

    /// A reference to the value for a short, non-blocking use; [`take_and_wait`](Self::take_and_wait)
    /// waits for it to be dropped.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn get(&self) -> Option<Arc<T>> {
        self.slot.lock().clone()
    }

    /// Empties the slot, so that [`get`](Self::get) returns `None` from now on, then waits
    /// until every reference taken before is dropped and returns the value.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (it spins with [`relax`]).
    pub(crate) fn take_and_wait(&self) -> Option<T> {
        let mut shared = self.slot.lock().take()?;
        loop {
            match Arc::try_unwrap(shared) {
                Ok(value) => return Some(value),
                Err(still_shared) => {
                    shared = still_shared;
                    relax();
                }
            }
        }
    }
}
