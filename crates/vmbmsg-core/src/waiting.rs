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

use alloc::sync::Arc;
use alloc::vec::Vec;

use kmcl::NtStatus;

use crate::IoRequest;
use crate::sync::SpinLock;

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
    owner: Arc<dyn CancelWaiting<R>>,
    key: u64,
}

impl<R> CancelToken<R> {
    pub(crate) fn new(owner: Arc<dyn CancelWaiting<R>>, key: u64) -> Self {
        Self { owner, key }
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
        self.owner.cancel_waiting(self.key);
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
