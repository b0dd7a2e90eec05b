//! The two primitives the portable core needs from the platform: a spin lock that is safe at
//! DISPATCH_LEVEL, and a monotonic clock.
//!
//! * On Windows the lock is a `KSPIN_LOCK` taken with `KeAcquireSpinLockRaiseToDpc`, so the
//!   holder runs at DISPATCH_LEVEL and a DPC on the same processor can never spin on it
//!   forever; the clock is `KeQueryPerformanceCounter`.
//! * Elsewhere (tests, the simulation) the lock is `std::sync::Mutex` and the clock
//!   `std::time::Instant`.
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
        // SAFETY: both values were just written by the kernel as 64-bit counts.
        let (ticks, freq) = unsafe { (ticks.QuadPart, freq.QuadPart) };
        let (Ok(ticks), Ok(freq)) = (u128::try_from(ticks), u128::try_from(freq)) else {
            return 0;
        };
        if freq == 0 {
            return 0;
        }
        u64::try_from(ticks * 1_000_000_000 / freq).unwrap_or(u64::MAX)
    }
}

#[cfg(not(windows))]
mod imp {
    extern crate std;
    use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::Instant;

    pub struct Lock<T>(Mutex<T>);
    pub struct Guard<'a, T>(MutexGuard<'a, T>);

    impl<T> Lock<T> {
        pub const fn new(value: T) -> Self {
            Self(Mutex::new(value))
        }

        pub fn lock(&self) -> Guard<'_, T> {
            // A panic while holding the lock is already a failed test; keep going with the data.
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

    /// Nanoseconds from a monotonic clock.
    pub fn now_ns() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A lock usable from PASSIVE_LEVEL up to DISPATCH_LEVEL.
pub struct SpinLock<T>(imp::Lock<T>);

/// Holds a [`SpinLock`]; the lock is released (and the IRQL restored) when it drops.
pub struct SpinGuard<'a, T>(imp::Guard<'a, T>);

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
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
    #[cfg(not(windows))]
    {
        extern crate std;
        std::thread::yield_now();
    }
    #[cfg(windows)]
    core::hint::spin_loop();
}
