//! Exhaustive concurrency checks (loom) of the structures the packet callback shares with the
//! IOCTL paths, on the real code: the RECV parking hand-off and the notification queue, the
//! ECHO reply-buffer pool, the statistics, the send permit against `EvtChannelSuspend`, the
//! channel rundown of `channel_down`, and the hand-off of a waiting PING between the host's
//! answer and its caller's cancellation.
//!
//! Run (Linux): `.ci/reliability loom`, or `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo
//! test --release -p vmbmsg-core --lib loom_tests`. The lock, atomics, `Arc` and spin-wait of `src/sync.rs` are loom's in that
//! build; each test explores every interleaving of its threads up to the preemption bound.

extern crate std;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use std::sync::Arc as StdArc;

use kmcl::Completion;
use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Mutex};
use loom::thread;
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_RECV, PingOut, RECV_OUT_MAX, parse_recv_output, read_output,
};
use vmbmsg_proto::wire::{PROTOCOL_V1, Reply};

use crate::ioctl::{ping_answered, wait_for_answer};
use crate::packet::{deliver_notification, take_reply_buffer};
use crate::sync::Rundown;
use crate::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use crate::{CancelToken, Core, CoreConfig, IoRequest, NtStatus, Platform};

/// A completed request as user mode sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Done {
    id: u32,
    status: NtStatus,
    output: Vec<u8>,
}

#[derive(Debug, Default)]
struct Requests {
    parked: Mutex<VecDeque<LoomRequest>>,
    done: Mutex<Vec<Done>>,
    /// The I/O manager's cancellation state of the requests that have one, by id.
    cancel: Mutex<Vec<(u32, Cancel)>>,
}

/// What `WdfRequestMarkCancelableEx` and the IRP's `Cancel` flag amount to.
#[derive(Debug)]
enum Cancel {
    /// Marked cancellable: the I/O manager's cancel calls the token.
    Cancelable(CancelToken<LoomRequest>),
    /// The cancel routine (the token) runs on this thread: until it returns, only it may
    /// complete the request (KMDF: after `WdfRequestUnmarkCancelable` returned
    /// `STATUS_CANCELLED`, the driver must not complete the request before `EvtRequestCancel`
    /// runs).
    InCancelRoutine(thread::ThreadId),
    /// Cancelled: the cancel routine ran, or the request was not cancellable yet (a later
    /// marking fails with `STATUS_CANCELLED`).
    Cancelled,
}

/// A manual queue of parked RECVs (like the simulation's), on loom's locks.
#[derive(Debug, Clone, Default)]
struct LoomPlatform(Arc<Requests>);

#[derive(Debug)]
struct LoomRequest {
    id: u32,
    output: Vec<u8>,
    sink: Arc<Requests>,
}

impl IoRequest for LoomRequest {
    fn input(&self) -> &[u8] {
        &[]
    }
    fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }
    fn complete(self, status: NtStatus, information: usize) {
        // KMDF's rules for a request marked cancellable: unmark it before completing it, and
        // leave it to the cancel routine once that is under way.
        if let Some((_, state)) = self
            .sink
            .cancel
            .lock()
            .unwrap()
            .iter()
            .find(|(id, _)| *id == self.id)
        {
            match state {
                Cancel::Cancelable(_) => panic!("completed while cancellable"),
                Cancel::InCancelRoutine(t) => assert_eq!(
                    *t,
                    thread::current().id(),
                    "completed outside the cancel routine while it runs"
                ),
                Cancel::Cancelled => {}
            }
        }
        let mut output = self.output;
        output.truncate(information);
        self.sink.done.lock().unwrap().push(Done {
            id: self.id,
            status,
            output,
        });
    }
    fn mark_cancelable(&mut self, token: CancelToken<Self>) -> Result<(), NtStatus> {
        let mut cancel = self.sink.cancel.lock().unwrap();
        if cancel.iter().any(|(id, _)| *id == self.id) {
            return Err(NtStatus::STATUS_CANCELLED);
        }
        cancel.push((self.id, Cancel::Cancelable(token)));
        Ok(())
    }
    fn unmark_cancelable(&mut self) -> bool {
        let mut cancel = self.sink.cancel.lock().unwrap();
        match cancel.iter().position(|(id, _)| *id == self.id) {
            Some(i) if matches!(cancel[i].1, Cancel::Cancelable(_)) => {
                cancel.remove(i);
                true
            }
            // The cancel routine is running or has run.
            Some(_) => false,
            None => true,
        }
    }
}

impl Platform for LoomPlatform {
    type Request = LoomRequest;
    fn park_recv(&self, request: LoomRequest) -> Result<(), (LoomRequest, NtStatus)> {
        self.0.parked.lock().unwrap().push_back(request);
        Ok(())
    }
    fn next_parked_recv(&self) -> Option<LoomRequest> {
        self.0.parked.lock().unwrap().pop_front()
    }
    fn parked_recv_count(&self) -> usize {
        self.0.parked.lock().unwrap().len()
    }
    /// No host closes a channel in these models (they drive the shared structures directly).
    fn channel_closed_by_host(&self) {}
}

impl LoomPlatform {
    fn recv_request(&self, id: u32) -> LoomRequest {
        LoomRequest {
            id,
            output: vec![0; RECV_OUT_MAX],
            sink: self.0.clone(),
        }
    }
    /// What the I/O manager does on CancelIo for a parked request.
    fn cancel(&self, id: u32) {
        let request = {
            let mut parked = self.0.parked.lock().unwrap();
            let i = parked.iter().position(|r| r.id == id);
            i.and_then(|i| parked.remove(i))
        };
        if let Some(r) = request {
            r.complete(NtStatus::STATUS_CANCELLED, 0);
        }
    }
    fn done(&self) -> Vec<Done> {
        self.0.done.lock().unwrap().clone()
    }
    /// A PING request.
    fn ping_request(&self, id: u32) -> LoomRequest {
        LoomRequest {
            id,
            output: vec![0; size_of::<PingOut>()],
            sink: self.0.clone(),
        }
    }
    /// What the I/O manager does on CancelIoEx for a request that is not parked: calls its
    /// cancel routine if it is cancellable, or sets its `Cancel` flag.
    fn cancel_irp(&self, id: u32) {
        let me = thread::current().id();
        let token = {
            let mut cancel = self.0.cancel.lock().unwrap();
            match cancel.iter().position(|(i, _)| *i == id) {
                Some(i) => {
                    match core::mem::replace(&mut cancel[i].1, Cancel::InCancelRoutine(me)) {
                        Cancel::Cancelable(token) => Some(token),
                        other => {
                            cancel[i].1 = other;
                            None
                        }
                    }
                }
                None => {
                    cancel.push((id, Cancel::Cancelled));
                    None
                }
            }
        };
        if let Some(token) = token {
            token.cancel(); // EvtRequestCancel
            let mut cancel = self.0.cancel.lock().unwrap();
            if let Some((_, state)) = cancel.iter_mut().find(|(i, _)| *i == id) {
                *state = Cancel::Cancelled;
            }
        }
    }
    /// Tokens the platform still holds (none once every request is finished).
    fn tokens_held(&self) -> usize {
        let cancel = self.0.cancel.lock().unwrap();
        cancel
            .iter()
            .filter(|(_, c)| matches!(c, Cancel::Cancelable(_)))
            .count()
    }
}

/// A core with small buffers whose channel is READY (no KMCL channel: these tests drive the
/// shared structures directly).
fn ready_core(notify_depth: usize, reply_buffers: usize) -> StdArc<Core<LoomPlatform>> {
    let core = Core::with_config(
        LoomPlatform::default(),
        CoreConfig {
            notify_depth,
            reply_buffers,
            max_parked_recv: 4,
            ..CoreConfig::default()
        },
    )
    .expect("core");
    core.shared.open_sends(PROTOCOL_V1);
    assert_eq!(core.state(), ChannelState::READY);
    StdArc::new(core)
}

fn recv(core: &Core<LoomPlatform>, id: u32) {
    core.handle_ioctl(IOCTL_VMBMSG_RECV, core.platform().recv_request(id));
}

/// (sequence, payload) of a successful RECV.
fn notification(d: &Done) -> (u64, Vec<u8>) {
    assert_eq!(d.status, NtStatus::STATUS_SUCCESS, "{d:?}");
    let (h, payload) = parse_recv_output(&d.output).expect("a RecvOut");
    (h.sequence.get(), payload.to_vec())
}

fn queued(core: &Core<LoomPlatform>) -> Vec<Vec<u8>> {
    let mut state = core.shared.notify.lock();
    let mut out = Vec::new();
    while let Some((_, m)) = state.queue.front() {
        out.push(m.to_vec());
        state.queue.pop_front();
    }
    out
}

#[test]
fn a_notification_racing_a_recv_is_never_stranded() {
    loom::model(|| {
        let core = ready_core(2, 0);
        let host = StdArc::clone(&core);
        let t = thread::spawn(move || {
            assert_eq!(
                deliver_notification(&host.shared, b"n1"),
                NtStatus::STATUS_SUCCESS
            );
        });
        recv(&core, 1);
        t.join().unwrap();
        // Whichever came first, the RECV got the notification: it was not left in the queue
        // while the RECV stayed parked.
        let done = core.platform().done();
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(notification(&done[0]), (1, b"n1".to_vec()));
        assert_eq!(core.platform().parked_recv_count(), 0);
        assert!(queued(&core).is_empty());
        assert_eq!(core.stats().notify_delivered.get(), 1);
    });
}

#[test]
fn a_cancelled_recv_loses_no_notification() {
    loom::model(|| {
        let core = ready_core(2, 0);
        let host = StdArc::clone(&core);
        let t = thread::spawn(move || {
            assert_eq!(
                deliver_notification(&host.shared, b"n1"),
                NtStatus::STATUS_SUCCESS
            );
        });
        recv(&core, 1);
        core.platform().cancel(1);
        t.join().unwrap();
        let done = core.platform().done();
        assert_eq!(done.len(), 1, "completed exactly once: {done:?}");
        let queue = queued(&core);
        if done[0].status == NtStatus::STATUS_CANCELLED {
            assert_eq!(queue, [b"n1".to_vec()], "kept for the next RECV");
        } else {
            assert_eq!(notification(&done[0]).1, b"n1");
            assert!(queue.is_empty(), "delivered once, not also queued");
        }
    });
}

#[test]
fn two_notifications_two_recvs_each_delivered_once_in_sequence() {
    loom::model(|| {
        let core = ready_core(2, 0);
        let host = StdArc::clone(&core);
        let t = thread::spawn(move || {
            let _ = deliver_notification(&host.shared, b"a");
            let _ = deliver_notification(&host.shared, b"b");
        });
        let other = StdArc::clone(&core);
        let u = thread::spawn(move || recv(&other, 2));
        recv(&core, 1);
        t.join().unwrap();
        u.join().unwrap();
        let mut got: Vec<_> = core.platform().done().iter().map(notification).collect();
        got.sort();
        assert_eq!(got, [(1, b"a".to_vec()), (2, b"b".to_vec())]);
        assert_eq!(core.platform().parked_recv_count(), 0);
        assert!(queued(&core).is_empty());
    });
}

#[test]
fn a_recv_racing_the_channel_closing_is_completed() {
    loom::model(|| {
        let core = ready_core(2, 0);
        let closer = StdArc::clone(&core);
        let t = thread::spawn(move || {
            // What EvtChannelClosed does after a host rescind.
            closer.shared.stop_sends();
            closer
                .shared
                .finish_parked(vmbmsg_proto::ioctl::NOT_READY_STATUS);
        });
        recv(&core, 1);
        t.join().unwrap();
        let done = core.platform().done();
        assert_eq!(
            done.len(),
            1,
            "not left parked on a closed channel: {done:?}"
        );
        assert_eq!(done[0].status, vmbmsg_proto::ioctl::NOT_READY_STATUS);
    });
}

#[test]
fn no_send_passes_its_permit_after_suspend_returned() {
    loom::model(|| {
        let core = ready_core(0, 0);
        let suspended = Arc::new(AtomicBool::new(false));
        let (sender, flag) = (StdArc::clone(&core), Arc::clone(&suspended));
        let t = thread::spawn(move || {
            if let Some(permit) = sender.shared.begin_send() {
                // Here the IOCTL path calls VmbPacketSend.
                assert!(!flag.load(SeqCst), "sent after EvtChannelSuspend returned");
                drop(permit);
            }
        });
        core.shared.stop_sends(); // EvtChannelSuspend
        suspended.store(true, SeqCst);
        t.join().unwrap();
        assert!(core.shared.begin_send().is_none());
    });
}

/// The check-then-send the driver did before `SendPermit`: loom finds the interleaving in
/// which the send happens after Suspend returned (kept to show the check has teeth).
#[test]
#[should_panic(expected = "sent after EvtChannelSuspend returned")]
fn check_then_send_without_a_permit_races_suspend() {
    loom::model(|| {
        let core = ready_core(0, 0);
        let suspended = Arc::new(AtomicBool::new(false));
        let (sender, flag) = (StdArc::clone(&core), Arc::clone(&suspended));
        let t = thread::spawn(move || {
            if sender.shared.ready_version().is_some() {
                assert!(!flag.load(SeqCst), "sent after EvtChannelSuspend returned");
            }
        });
        core.shared.stop_sends();
        suspended.store(true, SeqCst);
        t.join().unwrap();
    });
}

#[test]
fn reply_buffers_are_taken_and_returned_without_loss_or_allocation() {
    // Every buffer of the pool, each taken and given back (its address).
    fn addresses(core: &Core<LoomPlatform>) -> Vec<usize> {
        let leases: Vec<_> = std::iter::from_fn(|| take_reply_buffer(&core.shared)).collect();
        leases.iter().map(|b| b.as_ptr().addr()).collect()
    }
    loom::model(|| {
        let core = ready_core(0, 2);
        let before = addresses(&core);
        assert_eq!(before.len(), 2);
        // Two ECHOs at once, each writing its mark into its buffer and finding it there after
        // letting the other run: the leases exclude each other, and the buffers come back.
        let echo = |core: &Core<LoomPlatform>, mark: u8| match take_reply_buffer(&core.shared) {
            Some(mut b) => {
                b.fill(mark);
                thread::yield_now();
                assert!(b.iter().all(|&x| x == mark), "a buffer lent to two ECHOs");
                true
            }
            None => false,
        };
        let other = StdArc::clone(&core);
        let t = thread::spawn(move || echo(&other, 2));
        let mine = echo(&core, 1);
        let theirs = t.join().unwrap();
        assert!(mine && theirs, "two buffers serve two ECHOs at once");
        let mut after = addresses(&core);
        after.sort_unstable();
        let mut before = before;
        before.sort_unstable();
        assert_eq!(
            after, before,
            "the same buffers came back, nothing allocated"
        );
    });
}

#[test]
fn statistics_add_up_and_a_completion_is_counted_before_it_is_seen() {
    loom::model(|| {
        let core = ready_core(0, 0);
        let completed = Arc::new(AtomicBool::new(false));
        let (a, seen) = (StdArc::clone(&core), Arc::clone(&completed));
        // Delivery thread 1: a good packet; the Release store stands for the completion the
        // host observes (VmbChannelPacketComplete synchronises through KMCL).
        let t = thread::spawn(move || {
            a.shared.stats.received(10);
            a.shared.stats.completed(NtStatus::STATUS_SUCCESS);
            seen.store(true, Release);
        });
        // Delivery thread 2: a malformed one.
        let b = StdArc::clone(&core);
        let u = thread::spawn(move || {
            b.shared.stats.received(3);
            b.shared
                .stats
                .malformed(vmbmsg_proto::wire::MalformedReason::Truncated);
            b.shared.stats.completed(NtStatus::STATUS_INVALID_PARAMETER);
        });
        // User mode: GET_STATS after seeing the completion sees it counted.
        if completed.load(Acquire) {
            assert!(core.stats().completions_ok.get() >= 1);
        }
        t.join().unwrap();
        u.join().unwrap();
        let s = core.stats();
        assert_eq!(s.rx_packets.get(), 2);
        assert_eq!(s.rx_bytes.get(), 13);
        assert_eq!(s.malformed_total.get(), 1);
        assert_eq!(
            s.completions_ok.get() + s.completions_malformed.get() + s.completions_other.get(),
            2
        );
    });
}

/// Stands for the KMCL channel: `disabled` is set by VmbChannelDisable.
#[derive(Debug)]
struct Probe {
    disabled: AtomicBool,
}

#[test]
fn channel_down_waits_for_every_ioctl_using_the_channel() {
    loom::model(|| {
        let slot = StdArc::new(Rundown::new());
        slot.set(Probe {
            disabled: AtomicBool::new(false),
        });
        let user = StdArc::clone(&slot);
        let t = thread::spawn(move || {
            // An IOCTL: allocate and send on the channel if it is there.
            if let Some(channel) = user.get() {
                assert!(!channel.disabled.load(SeqCst), "used after disable");
                thread::yield_now();
                assert!(!channel.disabled.load(SeqCst), "used after disable");
            }
        });
        // channel_down
        let channel = slot.take_and_wait().expect("the channel was up");
        channel.disabled.store(true, SeqCst);
        assert!(slot.get().is_none() && !slot.is_set());
        t.join().unwrap();
        // channel_up again
        slot.set(Probe {
            disabled: AtomicBool::new(false),
        });
        assert!(slot.is_set());
        assert!(slot.take_and_wait().is_some());
    });
}

/// The host's good answer to PING `id` (nonce = id), as KMCL hands it to the completion.
fn ping_reply(id: u64) -> Vec<u8> {
    let reply = Reply::ping(PROTOCOL_V1, id, id);
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_cancel_racing_the_hosts_answer_completes_the_ping_once() {
    loom::model(|| {
        let core = ready_core(0, 0);
        let request = core.platform().ping_request(1);
        assert!(wait_for_answer(&core, 7, request).is_ok());
        let host = StdArc::clone(&core);
        // KMCL running the packet's completion with the host's answer.
        let t = thread::spawn(move || {
            let reply = ping_reply(7);
            let answer = Completion {
                status: NtStatus::STATUS_SUCCESS,
                response: &reply,
            };
            ping_answered(&host.shared, 7, 7, 0, answer);
        });
        // The caller cancelling it at the same time.
        core.platform().cancel_irp(1);
        t.join().unwrap();
        let done = core.platform().done();
        assert_eq!(done.len(), 1, "completed exactly once: {done:?}");
        let s = core.stats();
        assert_eq!(s.ping_ok.get() + s.ping_failed.get(), 1, "counted once");
        if done[0].status == NtStatus::STATUS_CANCELLED {
            assert!(done[0].output.is_empty());
            assert_eq!(s.ping_failed.get(), 1, "the late answer is counted");
        } else {
            assert_eq!(done[0].status, NtStatus::STATUS_SUCCESS);
            let out: PingOut = read_output(&done[0].output).unwrap();
            assert_eq!(out.nonce.get(), 7);
            assert_eq!(s.ping_ok.get(), 1);
        }
        assert_eq!(core.waiting_requests(), 0);
        assert_eq!(core.platform().tokens_held(), 0, "no token left behind");
    });
}

#[test]
fn a_cancel_racing_the_marking_is_not_lost() {
    loom::model(|| {
        let core = ready_core(0, 0);
        let user = core.platform().clone();
        // The caller cancelling while the IOCTL path is still making the request cancellable.
        let t = thread::spawn(move || user.cancel_irp(1));
        let request = core.platform().ping_request(1);
        let inserted = match wait_for_answer(&core, 7, request) {
            Ok(()) => true,
            Err((request, status)) => {
                // What `ping` does when the request cannot be made cancellable.
                assert_eq!(status, NtStatus::STATUS_CANCELLED);
                request.complete(status, 0);
                false
            }
        };
        t.join().unwrap();
        if inserted {
            // The channel closing later: KMCL cancels the packet's transaction.
            let closed = Completion {
                status: NtStatus::STATUS_CANCELLED,
                response: &[],
            };
            ping_answered(&core.shared, 7, 7, 0, closed);
        }
        let done = core.platform().done();
        assert_eq!(done.len(), 1, "completed exactly once: {done:?}");
        assert_eq!(done[0].status, NtStatus::STATUS_CANCELLED);
        assert_eq!(core.waiting_requests(), 0);
        assert_eq!(core.platform().tokens_held(), 0);
    });
}
