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

    /// Gives the processor away for about a millisecond (`KeDelayExecutionThread`, a
    /// non-alertable kernel-mode wait: the scheduler runs whatever is ready, on a one-vCPU
    /// guest the very thread being waited for).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (APC_LEVEL at most), which every caller guarantees.
    pub fn sleep_a_little() {
        // Relative, in 100 ns units: 1 ms (the timer rounds it up to its resolution).
        let mut interval = wdk_sys::LARGE_INTEGER { QuadPart: -10_000 };
        // SAFETY: `interval` is a valid relative timeout; a kernel-mode, non-alertable wait at
        // PASSIVE_LEVEL (documented on every caller) cannot be interrupted by user APCs. The
        // status is always STATUS_SUCCESS for such a wait.
        let _ = unsafe {
            wdk_sys::ntddk::KeDelayExecutionThread(
                wdk_sys::_MODE::KernelMode as wdk_sys::KPROCESSOR_MODE,
                0,
                &raw mut interval,
            )
        };
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
            if self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                self.lock_contended();
            }
            Guard { lock: self }
        }

        /// [`lock`](Self::lock) when the first try failed: out of line, so that the
        /// uncontended path holds no loop and no call.
        #[cold]
        #[inline(never)]
        fn lock_contended(&self) {
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

    /// The Windows build's `KeDelayExecutionThread` of about a millisecond.
    pub fn sleep_a_little() {
        std::thread::sleep(std::time::Duration::from_millis(1));
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

    /// Under loom a wait must yield, or the model never schedules the thread it waits for.
    pub fn sleep_a_little() {
        loom::thread::yield_now();
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

/// How many times [`wait_until`] checks its condition back to back, with a processor pause in
/// between, before it starts sleeping: what it waits for (a send returning, a short IOCTL path)
/// normally ends within these few microseconds.
const SPINS_BEFORE_SLEEPING: u32 = 64;

/// Waits until `done()` is true, the way the kernel waits for a rundown (the wait of
/// `ExWaitForRundownProtectionRelease`): briefly spinning, then giving the processor away
/// about a millisecond at a time (`KeDelayExecutionThread` on Windows, a sleep elsewhere, a
/// yield under loom), so that on a one-vCPU guest the thread being waited for runs. Never a
/// busy loop of unbounded length.
///
/// # IRQL
/// PASSIVE_LEVEL.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_SLEEPING && !cfg!(loom) {
            spins += 1;
            core::hint::spin_loop();
        } else {
            imp::sleep_a_little();
        }
    }
}

/// A lock for PASSIVE_LEVEL code that may hold it across blocking calls (the channel's up,
/// down and restart): waits for it [`wait_until`]'s way, sleeping, never spinning for long.
pub(crate) struct PassiveLock {
    held: atomic::AtomicBool,
}

/// Holds a [`PassiveLock`] until dropped.
pub(crate) struct PassiveGuard<'a> {
    lock: &'a PassiveLock,
}

impl PassiveLock {
    pub(crate) fn new() -> Self {
        Self {
            held: atomic::AtomicBool::new(false),
        }
    }

    /// Takes the lock, waiting for it.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL. Not reentrant.
    pub(crate) fn lock(&self) -> PassiveGuard<'_> {
        wait_until(|| {
            self.held
                .compare_exchange(
                    false,
                    true,
                    atomic::Ordering::Acquire,
                    atomic::Ordering::Relaxed,
                )
                .is_ok()
        });
        PassiveGuard { lock: self }
    }
}

impl Drop for PassiveGuard<'_> {
    fn drop(&mut self) {
        self.lock.held.store(false, atomic::Ordering::Release);
    }
}

pub(crate) use rundown::{Rundown, RundownRef};

mod rundown {
    // UNSAFETY: the slot's value lives in an `UnsafeCell` guarded by the rundown word, as a
    // kernel `EX_RUNDOWN_REF` guards what it protects.
    #![expect(unsafe_code, reason = "the value cell of the rundown-protected slot")]

    /// [`Rundown::state`]'s bit saying no new reference is granted; the other bits count them.
    const RUNDOWN_CLOSED: u32 = 1 << 31;

    /// A slot for at most one value that callers borrow by reference count for short uses, and that
    /// its owner takes back after waiting for every borrow to end: the driver's channel, borrowed
    /// by the IOCTL paths around an allocate-and-send and taken by `channel_down` before
    /// `VmbChannelDisable`. An `EX_RUNDOWN_REF` around the value, in one word (the closed bit and
    /// the count), with the value stored in place: nothing is allocated, so nothing can fail.
    pub(crate) struct Rundown<T> {
        state: super::atomic::AtomicU32,
        value: super::cell::Cell<Option<T>>,
    }

    // SAFETY: the value is written only while the slot is closed with no reference out (`set`,
    // `take_and_wait`, serialised by their callers) and read only through `RundownRef`s, which
    // exist only while it is open; so `&Rundown` gives shared access to `T` across threads (`T:
    // Sync`) and moves it between threads (`T: Send`).
    unsafe impl<T: Send + Sync> Sync for Rundown<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Send for Rundown<T> {}

    /// A borrow of the value in a [`Rundown`]: while it exists, the owner's
    /// [`take_and_wait`](Rundown::take_and_wait) does not return.
    pub(crate) struct RundownRef<'a, T> {
        rundown: &'a Rundown<T>,
        value: &'a T,
    }

    impl<T> Rundown<T> {
        /// An empty, closed slot.
        pub(crate) fn new() -> Self {
            Self {
                state: super::atomic::AtomicU32::new(RUNDOWN_CLOSED),
                value: super::cell::Cell::new(None),
            }
        }

        /// Whether the slot holds a value (is open).
        ///
        /// # IRQL
        /// Any.
        pub(crate) fn is_set(&self) -> bool {
            self.state.load(super::atomic::Ordering::Acquire) & RUNDOWN_CLOSED == 0
        }

        /// Puts `value` in the slot and opens it. The caller serialises `set` and `take_and_wait`
        /// (they are the channel's up and down, PnP-serialised) and has checked
        /// [`is_set`](Self::is_set): the slot is closed, so no reference exists.
        ///
        /// # IRQL
        /// ≤ DISPATCH_LEVEL.
        pub(crate) fn set(&self, value: T) {
            // SAFETY: closed with no reference out (caller), and no concurrent `set` or
            // `take_and_wait` (caller): nothing else accesses the value.
            self.value.with_mut(|v| unsafe { *v = Some(value) });
            self.state
                .fetch_and(!RUNDOWN_CLOSED, super::atomic::Ordering::Release);
        }

        /// A reference to the value for a short, non-blocking use; [`take_and_wait`](Self::take_and_wait)
        /// waits for it to be dropped. `None` when the slot is empty or being emptied.
        ///
        /// # IRQL
        /// ≤ DISPATCH_LEVEL.
        pub(crate) fn get(&self) -> Option<RundownRef<'_, T>> {
            let mut current = self.state.load(super::atomic::Ordering::Relaxed);
            loop {
                if current & RUNDOWN_CLOSED != 0 {
                    return None;
                }
                match self.state.compare_exchange_weak(
                    current,
                    current + 1,
                    super::atomic::Ordering::Acquire,
                    super::atomic::Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
            // SAFETY: the reference just taken keeps the slot open and `take_and_wait` waiting,
            // so the value stays set and only shared for as long as the `RundownRef` (which gives
            // the reference back when dropped) borrows it.
            let value = self.value.with(|v| unsafe { (*v).as_ref() });
            match value {
                Some(value) => Some(RundownRef {
                    rundown: self,
                    value,
                }),
                // Never: `set` writes the value before it opens the slot. Give the reference back.
                None => {
                    self.state.fetch_sub(1, super::atomic::Ordering::Release);
                    None
                }
            }
        }

        /// Closes the slot, so that [`get`](Self::get) returns `None` from now on, waits until every
        /// reference taken before is dropped ([`wait_until`]), and returns the value.
        ///
        /// # IRQL
        /// PASSIVE_LEVEL.
        pub(crate) fn take_and_wait(&self) -> Option<T> {
            let before = self
                .state
                .fetch_or(RUNDOWN_CLOSED, super::atomic::Ordering::AcqRel);
            if before & RUNDOWN_CLOSED != 0 {
                return None;
            }
            super::wait_until(|| {
                self.state.load(super::atomic::Ordering::Acquire) == RUNDOWN_CLOSED
            });
            // SAFETY: closed with no reference out (just waited), and no concurrent `set` or
            // `take_and_wait` (callers serialise them): nothing else accesses the value.
            self.value.with_mut(|v| unsafe { (*v).take() })
        }
    }

    impl<T> core::ops::Deref for RundownRef<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.value
        }
    }

    impl<T> Drop for RundownRef<'_, T> {
        fn drop(&mut self) {
            self.rundown
                .state
                .fetch_sub(1, super::atomic::Ordering::Release);
        }
    }
}

pub(crate) use slot_pool::{Lease, MAX_SLOTS, SlotPool};

mod slot_pool {
    // UNSAFETY: each value lives in an `UnsafeCell` lent out exclusively by its bit in the
    // free mask, as kmcl's bounce buffers are.
    #![expect(unsafe_code, reason = "the value cells lent out by the free mask")]

    use super::atomic::{AtomicU64, Ordering};
    use super::cell::Cell;

    /// Most values a [`SlotPool`] holds (one bit each in the free mask).
    pub(crate) const MAX_SLOTS: usize = 64;

    /// Up to [`MAX_SLOTS`] values lent out one at a time without a lock: bit `i` of the free
    /// mask set means value `i` is free. A [`take`](Self::take) is one compare-exchange on the
    /// mask (Acquire), a [`Lease`]'s drop one `fetch_or` (Release), so the packet path never
    /// waits for another processor and nothing is allocated after the values are added.
    pub(crate) struct SlotPool<T> {
        free: AtomicU64,
        slots: arrayvec::ArrayVec<Cell<T>, MAX_SLOTS>,
    }

    // SAFETY: a value is reached only through the one `Lease` its cleared bit allows (or
    // through `&mut self`), so sharing the pool moves each `T` between threads one at a time.
    unsafe impl<T: Send> Sync for SlotPool<T> {}

    /// One value of a [`SlotPool`], the caller's alone until this is dropped, which gives it
    /// back.
    pub(crate) struct Lease<'a, T> {
        free: &'a AtomicU64,
        bit: u64,
        value: &'a mut T,
    }

    impl<T> SlotPool<T> {
        /// An empty pool.
        pub(crate) fn new() -> Self {
            Self {
                free: AtomicU64::new(0),
                slots: arrayvec::ArrayVec::new(),
            }
        }

        /// Adds `value`, free; gives it back when the pool holds [`MAX_SLOTS`] already.
        pub(crate) fn try_add(&mut self, value: T) -> Result<(), T> {
            let bit = 1u64 << (self.slots.len() % MAX_SLOTS);
            match self.slots.try_push(Cell::new(value)) {
                Ok(()) => {
                    self.free.fetch_or(bit, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(e.element().into_inner()),
            }
        }

        /// How many values the pool holds, lent out or not (for the simulation-backed unit
        /// tests).
        #[cfg(all(test, not(windows), not(loom)))]
        pub(crate) fn len(&self) -> usize {
            self.slots.len()
        }

        /// A free value, or `None` when every one is lent out.
        ///
        /// # IRQL
        /// Any.
        pub(crate) fn take(&self) -> Option<Lease<'_, T>> {
            let mut free = self.free.load(Ordering::Relaxed);
            loop {
                if free == 0 {
                    return None;
                }
                // The lowest free value: its bit alone, and the mask without it.
                let bit = free & free.wrapping_neg();
                match self.free.compare_exchange_weak(
                    free,
                    free ^ bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let index = usize::try_from(bit.trailing_zeros()).unwrap_or(0);
                        // SAFETY: only bits below `slots.len()` are ever set (`try_add`), so
                        // `index` is in bounds.
                        let cell = unsafe { self.slots.get_unchecked(index) };
                        // SAFETY: this thread just cleared the value's bit (Acquire: after
                        // the previous holder's Release), and only the holder of a cleared
                        // bit reaches a value until it sets the bit again (the lease's drop),
                        // so this `&mut` is the only reference for the lease's lifetime.
                        let value = cell.with_mut(|v| unsafe { &mut *v });
                        return Some(Lease {
                            free: &self.free,
                            bit,
                            value,
                        });
                    }
                    Err(now) => free = now,
                }
            }
        }
    }

    impl<T> core::ops::Deref for Lease<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.value
        }
    }

    impl<T> core::ops::DerefMut for Lease<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.value
        }
    }

    impl<T> Drop for Lease<'_, T> {
        fn drop(&mut self) {
            self.free.fetch_or(self.bit, Ordering::Release);
        }
    }
}

/// `UnsafeCell`, or loom's (which checks the accesses) in the loom build.
pub(crate) mod cell {
    #[cfg(loom)]
    pub(crate) use loom::cell::UnsafeCell as Cell;

    /// `core::cell::UnsafeCell` with loom's `with` / `with_mut` API.
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct Cell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> Cell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }
}

#[cfg(all(test, not(windows), not(loom)))]
mod tests {
    extern crate std;
    use super::SpinLock;
    use std::vec::Vec;

    /// The lock excludes: four threads adding to a plain (non-atomic) counter under it, each
    /// many times with the lock held across a yield now and then, lose no increment. Most
    /// acquisitions find the lock taken and go through the out-of-line contended path.
    #[test]
    fn spin_lock_excludes_under_contention() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 20_000;
        let lock = SpinLock::new(0u64);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        for i in 0..ROUNDS {
                            let mut n = lock.lock();
                            let seen = *n;
                            if i % 1000 == 0 {
                                std::thread::yield_now();
                            }
                            *n = seen + 1;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("thread");
            }
        });
        assert_eq!(*lock.lock(), THREADS * ROUNDS);
    }
}
