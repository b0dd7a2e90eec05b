//! PING and SEND requests waiting for the host's answer, and their cancellation.
//!
//! A PING or SEND request waits until the host answers its packet, which may be never (a
//! silent or hung host). While it waits, two paths may finish it:
//!
//! * the send's completion closure (`ioctl::ping_answered` / `send_answered`), when KMCL runs
//!   the packet's completion: the host's answer, a failed send, or the channel closing;
//! * the platform's cancel routine, when the request's caller cancels it (`CancelIoEx`, the
//!   process exiting): [`CancelToken::cancel`].
//!
//! Both take the request out of one table, each under its lock, so exactly one of them gets it
//! and completes it, once. The packet itself cannot be recalled (KMCL has no cancel for a sent
//! packet): after a cancellation its completion still runs later, finds the request gone,
//! counts the transaction, and KMCL frees the packet as always.
//!
//! The protocol with the platform is KMDF's ("Synchronizing Cancel and Completion Code",
//! learn.microsoft.com): the request is made cancellable under the table lock with the request
//! already in the table ([`IoRequest::mark_cancelable`], `WdfRequestMarkCancelableEx`), so a
//! cancel routine running at once on another processor waits for the lock and then finds it;
//! the completion path makes it non-cancellable under the same lock before taking it
//! ([`IoRequest::unmark_cancelable`], `WdfRequestUnmarkCancelable`), and leaves it for the
//! cancel routine when the platform says a cancellation is already under way.
//!
//! Why a table in the core's shared state rather than an `Arc` per request: the shared slot
//! must be allocated fallibly (a failed allocation in the driver is a bugcheck, not a panic),
//! and stable Rust has no fallible `Arc` constructor (`Arc::try_new` needs `allocator_api`).
//! The table grows with `Vec::try_reserve_exact`, outside its lock, and only grows: it holds
//! at most as many entries as PING and SEND requests were ever waiting at once.

// UNSAFETY: the cancel token erases its owner's type by hand (a pointer and two functions),
// because `TryArc` cannot coerce to `dyn` on stable Rust.
#![expect(unsafe_code, reason = "the type-erased owner of CancelToken")]

use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ptr::NonNull;

use kmcl::NtStatus;

use crate::IoRequest;
use crate::sync::SpinLock;
use crate::try_arc::TryArc;

/// The table's first capacity when it grows from empty.
const FIRST_CAPACITY: usize = 8;

/// What a [`CancelToken`] cancels through: the core's shared state, which owns the table.
pub(crate) trait CancelWaiting<R>: Send + Sync {
    /// Takes the request waiting under `key`, if it is still there, and completes it with
    /// `STATUS_CANCELLED`.
    fn cancel_waiting(&self, key: u64);
}

/// The platform's means to cancel one PING or SEND request while it waits for the host.
///
/// The core hands one to [`IoRequest::mark_cancelable`]. The platform keeps it while the
/// request is cancellable and then either calls [`cancel`](Self::cancel) (its caller cancelled
/// the request) or drops it ([`IoRequest::unmark_cancelable`] returned `true`, or
/// `mark_cancelable` failed). Dropping it does nothing else. It is neither `Clone` nor `Copy`:
/// one cancellation per marking.
pub struct CancelToken<R> {
    /// One reference of a `TryArc<S>` (`TryArc::into_raw`) of the owner type `ops` was made
    /// for.
    owner: NonNull<()>,
    ops: &'static TokenOps,
    key: u64,
    _request: PhantomData<fn(R)>,
}

/// What a [`CancelToken`] does with its erased owner.
struct TokenOps {
    /// `CancelWaiting::cancel_waiting` on the owner.
    cancel: unsafe fn(NonNull<()>, u64),
    /// Gives the owner reference back (drops the `TryArc`).
    release: unsafe fn(NonNull<()>),
}

/// The [`TokenOps`] of owner type `S` for requests `R`, as a constant (promoted to `'static`).
trait Ops<R> {
    const OPS: TokenOps;
}

impl<R, S: CancelWaiting<R>> Ops<R> for S {
    const OPS: TokenOps = TokenOps {
        cancel: cancel_owner::<R, S>,
        release: release_owner::<S>,
    };
}

/// # Safety
/// `owner` is a given-up reference of a `TryArc<S>` that stays given up during the call.
unsafe fn cancel_owner<R, S: CancelWaiting<R>>(owner: NonNull<()>, key: u64) {
    // SAFETY: caller's contract.
    unsafe { TryArc::<S>::value_of(owner) }.cancel_waiting(key);
}

/// # Safety
/// `owner` is a given-up reference of a `TryArc<S>`, taken back here once.
unsafe fn release_owner<S>(owner: NonNull<()>) {
    // SAFETY: caller's contract.
    drop(unsafe { TryArc::<S>::from_raw(owner) });
}

// SAFETY: the owner is `Send + Sync` (`CancelWaiting` requires both, and a `TryArc` of it is
// both), and the token only calls its `&self` method or drops the reference.
unsafe impl<R> Send for CancelToken<R> {}
// SAFETY: as above; `cancel` consumes the token, `&CancelToken` exposes nothing.
unsafe impl<R> Sync for CancelToken<R> {}

impl<R> CancelToken<R> {
    /// A token that cancels through `owner` (one reference of it, given back when the token is
    /// used or dropped) the request waiting under `key`.
    pub(crate) fn new<S: CancelWaiting<R>>(owner: TryArc<S>, key: u64) -> Self {
        Self {
            owner: TryArc::into_raw(owner),
            ops: &<S as Ops<R>>::OPS,
            key,
            _request: PhantomData,
        }
    }

    /// The request's caller cancelled it: the core takes it back and completes it with
    /// `STATUS_CANCELLED` (the host's later answer is still counted). If the send's completion
    /// has already taken it, which a platform following the contract of
    /// [`IoRequest::unmark_cancelable`] never lets happen, this does nothing.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL. It takes the core's lock of waiting requests, so it must not be called
    /// from [`IoRequest::mark_cancelable`] or [`IoRequest::unmark_cancelable`], which run with
    /// that lock held.
    pub fn cancel(self) {
        // SAFETY: `owner` is the given-up reference `new` stored with these ops; `self` keeps it
        // given up until it is dropped, after this call.
        unsafe { (self.ops.cancel)(self.owner, self.key) };
    }
}

impl<R> Drop for CancelToken<R> {
    fn drop(&mut self) {
        // SAFETY: `owner` is the given-up reference `new` stored with these ops, given back
        // exactly once, here.
        unsafe { (self.ops.release)(self.owner) };
    }
}

impl<R> core::fmt::Debug for CancelToken<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CancelToken")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The PING and SEND requests waiting for the host, by key (the request's message id).
pub(crate) struct WaitingRequests<R> {
    table: SpinLock<Vec<(u64, R)>>,
}

impl<R: IoRequest> WaitingRequests<R> {
    /// An empty table (it allocates on first use).
    pub(crate) fn new() -> Self {
        Self {
            table: SpinLock::new(Vec::new()),
        }
    }

    /// Puts `request` in the table under `key` and makes it cancellable with `token`.
    ///
    /// # Errors
    /// The request back, not in the table and not cancellable, with the status to complete it
    /// with: `STATUS_INSUFFICIENT_RESOURCES` when the table cannot grow, or the platform's
    /// failure to make it cancellable (`STATUS_CANCELLED`: its caller has already cancelled
    /// it).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn insert(
        &self,
        key: u64,
        request: R,
        token: CancelToken<R>,
    ) -> Result<(), (R, NtStatus)> {
        loop {
            let mut table = self.table.lock();
            if table.len() < table.capacity() {
                // Room: `push` does not allocate.
                table.push((key, request));
                let marked = match table.last_mut() {
                    Some((_, request)) => request.mark_cancelable(token),
                    None => Err(NtStatus::STATUS_INTERNAL_ERROR),
                };
                return match marked {
                    Ok(()) => Ok(()),
                    Err(status) => match table.pop() {
                        Some((_, request)) => Err((request, status)),
                        // Just pushed, under the lock held since: not reachable.
                        None => Ok(()),
                    },
                };
            }
            let capacity = table.capacity();
            drop(table);
            if !self.grow(capacity) {
                return Err((request, NtStatus::STATUS_INSUFFICIENT_RESOURCES));
            }
        }
    }

    /// Replaces a full table of `capacity` with a larger one, allocated outside the lock.
    /// Returns false when the allocation fails. Someone else may have grown it meanwhile; then
    /// the new storage is simply freed.
    fn grow(&self, capacity: usize) -> bool {
        let wanted = capacity.saturating_mul(2).max(FIRST_CAPACITY);
        let mut bigger = Vec::new();
        if bigger.try_reserve_exact(wanted).is_err() {
            return false;
        }
        let mut table = self.table.lock();
        if table.capacity() < bigger.capacity() {
            // `bigger` has room for every entry: `append` moves them without allocating.
            bigger.append(&mut table);
            core::mem::swap(&mut *table, &mut bigger);
        }
        drop(table);
        // The old storage (or the unused new one) is freed here, without the lock.
        drop(bigger);
        true
    }

    /// The send's completion: takes the request under `key` to complete it with the host's
    /// answer, after making it non-cancellable. `None` when a cancellation has it: it was
    /// cancelled and completed already, or the platform's cancel routine is about to (it is
    /// left in the table for [`take_cancelled`](Self::take_cancelled)).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn take_answered(&self, key: u64) -> Option<R> {
        let mut table = self.table.lock();
        let index = table.iter().position(|(k, _)| *k == key)?;
        let ours = table
            .get_mut(index)
            .is_some_and(|(_, request)| request.unmark_cancelable());
        // `index` came from `position` under the lock held since, so it is in bounds.
        ours.then(|| table.swap_remove(index).1)
    }

    /// The cancel path: takes the request under `key`, if the completion has not taken it.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn take_cancelled(&self, key: u64) -> Option<R> {
        let mut table = self.table.lock();
        let index = table.iter().position(|(k, _)| *k == key)?;
        Some(table.swap_remove(index).1)
    }

    /// How many requests are waiting.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The table on its own: a test request type, and a global allocator that fails on
    //! request, so that the growth path's `STATUS_INSUFFICIENT_RESOURCES` is exercised.

    // UNSAFETY: a global allocator is an `unsafe` trait implementation; it only forwards to
    // `System` or fails.
    #![expect(
        unsafe_code,
        reason = "the failing test allocator of this test binary (vmbmsg-core's unit tests)"
    )]

    extern crate std;

    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::Cell;
    use std::alloc::System;
    use std::sync::Mutex;

    use kmcl::NtStatus;

    use super::{CancelToken, CancelWaiting, FIRST_CAPACITY, WaitingRequests};
    use crate::IoRequest;

    std::thread_local! {
        /// Allocations on this thread fail while set.
        static FAIL: Cell<bool> = const { Cell::new(false) };
    }

    /// The system allocator, except that it returns null on a thread that set [`FAIL`].
    struct FailingAlloc;

    // SAFETY: every call is forwarded to `System` with the same arguments, or returns null,
    // which `GlobalAlloc::alloc` allows to report a failure.
    unsafe impl GlobalAlloc for FailingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if FAIL.with(Cell::get) {
                return core::ptr::null_mut();
            }
            // SAFETY: forwarded from our caller.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: every pointer this allocator returned came from `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOC: FailingAlloc = FailingAlloc;

    /// Runs `f` with this thread's allocations failing.
    fn without_memory<T>(f: impl FnOnce() -> T) -> T {
        FAIL.with(|fail| fail.set(true));
        let result = f();
        FAIL.with(|fail| fail.set(false));
        result
    }

    /// What happened to the test requests, by id (with room reserved, so that logging does not
    /// allocate while allocations fail).
    #[derive(Debug)]
    struct Log {
        marked: Mutex<Vec<u64>>,
        completed: Mutex<Vec<(u64, NtStatus)>>,
    }

    impl Log {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                marked: Mutex::new(Vec::with_capacity(64)),
                completed: Mutex::new(Vec::with_capacity(64)),
            })
        }
    }

    #[derive(Debug)]
    struct TestRequest {
        id: u64,
        log: Arc<Log>,
        /// What `unmark_cancelable` answers.
        unmark: bool,
    }

    impl IoRequest for TestRequest {
        fn input(&self) -> &[u8] {
            &[]
        }
        fn output(&mut self) -> &mut [u8] {
            &mut []
        }
        fn complete(self, status: NtStatus, _information: usize) {
            self.log.completed.lock().unwrap().push((self.id, status));
        }
        fn mark_cancelable(&mut self, _token: CancelToken<Self>) -> Result<(), NtStatus> {
            self.log.marked.lock().unwrap().push(self.id);
            Ok(())
        }
        fn unmark_cancelable(&mut self) -> bool {
            self.unmark
        }
    }

    /// A token owner that cancels nothing (these tests call the table directly).
    struct Nobody;

    impl CancelWaiting<TestRequest> for Nobody {
        fn cancel_waiting(&self, _key: u64) {}
    }

    fn token(key: u64) -> CancelToken<TestRequest> {
        match crate::try_arc::TryArc::try_new(Nobody) {
            Ok(owner) => CancelToken::new(owner, key),
            Err(_) => panic!("test allocation"),
        }
    }

    fn request(log: &Arc<Log>, id: u64) -> TestRequest {
        TestRequest {
            id,
            log: Arc::clone(log),
            unmark: true,
        }
    }

    #[test]
    fn a_table_that_cannot_grow_gives_the_request_back_unmarked() {
        let log = Log::new();
        let table = WaitingRequests::new();
        // Empty, no capacity: the first insert must allocate.
        let (tok, req) = (token(1), request(&log, 1));
        let refused = without_memory(|| table.insert(1, req, tok));
        let Err((back, status)) = refused else {
            panic!("inserted without memory");
        };
        assert_eq!(status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
        assert_eq!(back.id, 1);
        assert!(
            log.marked.lock().unwrap().is_empty(),
            "not made cancellable"
        );
        assert_eq!(table.len(), 0);
        // With memory it goes in, and fills the first capacity without allocating again.
        assert!(table.insert(1, back, token(1)).is_ok());
        for id in 2..=FIRST_CAPACITY as u64 {
            let (tok, req) = (token(id), request(&log, id));
            assert!(
                without_memory(|| table.insert(id, req, tok)).is_ok(),
                "{id}"
            );
        }
        // Full: the next one needs the table to grow, which fails; nothing is lost.
        let next = FIRST_CAPACITY as u64 + 1;
        let (tok, req) = (token(next), request(&log, next));
        assert!(without_memory(|| table.insert(next, req, tok)).is_err());
        assert_eq!(table.len(), FIRST_CAPACITY);
        // Growing keeps every entry.
        assert!(table.insert(next, request(&log, next), token(next)).is_ok());
        assert_eq!(table.len(), FIRST_CAPACITY + 1);
        for id in 1..=next {
            assert_eq!(table.take_answered(id).map(|r| r.id), Some(id));
        }
        assert_eq!(table.len(), 0);
        assert_eq!(log.marked.lock().unwrap().len(), FIRST_CAPACITY + 1);
        assert!(
            log.completed.lock().unwrap().is_empty(),
            "the table gives requests back, it never completes one"
        );
    }

    #[test]
    fn an_answer_leaves_a_request_whose_cancellation_is_under_way() {
        let log = Log::new();
        let table = WaitingRequests::new();
        let mut req = request(&log, 7);
        req.unmark = false; // the platform's cancel routine has it
        assert!(table.insert(7, req, token(7)).is_ok());
        assert!(table.take_answered(7).is_none(), "left to the cancel path");
        assert_eq!(table.len(), 1);
        assert_eq!(table.take_cancelled(7).map(|r| r.id), Some(7));
        assert!(table.take_cancelled(7).is_none(), "taken once");
        assert!(table.take_answered(7).is_none());
        assert!(table.take_answered(8).is_none(), "unknown key");
        assert!(log.completed.lock().unwrap().is_empty());
    }
}
