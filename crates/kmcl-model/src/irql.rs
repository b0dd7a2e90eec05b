//! The simulated IRQL of each thread, and the stack of guest callbacks the thread is inside.
//!
//! Windows tracks the IRQL per processor; the model tracks it per thread, which is what a
//! test can observe. Delivery threads and host completions mark DISPATCH_LEVEL while they run
//! a guest callback; state-change callbacks run at PASSIVE_LEVEL. PASSIVE-only entry points
//! check [`current_irql`] and record [`ViolationKind::PassiveOnlyAtDispatch`].
//!
//! [`ViolationKind::PassiveOnlyAtDispatch`]: crate::ViolationKind::PassiveOnlyAtDispatch

use std::cell::{Cell, RefCell};

/// A simulated interrupt request level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Irql {
    /// PASSIVE_LEVEL (0): threads may block and page.
    #[default]
    Passive,
    /// DISPATCH_LEVEL (2): DPCs, spin locks; no blocking, no pageable memory.
    Dispatch,
}

thread_local! {
    static IRQL: Cell<Irql> = const { Cell::new(Irql::Passive) };
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    /// Non-zero while the thread runs model code: inside a KMCL export, or on a thread the
    /// model owns outside a guest callback.
    static MODEL_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Guest callbacks the thread is inside (a plain counter, readable from an allocator).
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether the calling thread runs guest code rather than the model's: false inside a KMCL
/// function (plain or through the interface table) and on the model's own threads, except
/// inside the guest callbacks they call. Readable from a global allocator (it allocates
/// nothing and takes no lock), so that a test can fail the guest's allocations and only
/// those: the model itself allocates infallibly, as a test harness may.
#[must_use]
pub fn in_guest_code() -> bool {
    MODEL_DEPTH.with(Cell::get) == 0
}

/// Whether the calling thread is inside a guest callback the model called (packet, state
/// change, completion routine) and not back in the model. Readable from a global allocator.
#[must_use]
pub fn in_guest_callback() -> bool {
    in_guest_code() && CALLBACK_DEPTH.with(Cell::get) > 0
}

/// Marks the calling thread as running model code until dropped (nests).
pub(crate) struct ModelCode(());

impl ModelCode {
    pub(crate) fn enter() -> Self {
        MODEL_DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        Self(())
    }
}

impl Drop for ModelCode {
    fn drop(&mut self) {
        MODEL_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// The IRQL the calling thread is at (PASSIVE unless inside [`with_irql`] or a model callback
/// that marks DISPATCH).
#[must_use]
pub fn current_irql() -> Irql {
    IRQL.with(Cell::get)
}

/// Runs `f` with the calling thread's IRQL set to `irql`, then restores the previous level
/// (also if `f` panics). Tests use it to call an entry point "from a DPC".
pub fn with_irql<R>(irql: Irql, f: impl FnOnce() -> R) -> R {
    struct Restore(Irql);
    impl Drop for Restore {
        fn drop(&mut self) {
            IRQL.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(IRQL.with(|c| c.replace(irql)));
    f()
}

/// Which state-change callback a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateCb {
    Opened,
    Started,
    PostStarted,
    Suspend,
    Closed,
    PnpFailure,
}

impl StateCb {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Opened => "EvtChannelOpened",
            Self::Started => "EvtChannelStarted",
            Self::PostStarted => "EvtChannelPostStarted",
            Self::Suspend => "EvtChannelSuspend",
            Self::PnpFailure => "EvtVmbChannelPnpFailure",
            Self::Closed => "EvtChannelClosed",
        }
    }
}

/// What kind of guest callback a thread is inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    State(StateCb),
    /// `EvtVmbChannelProcessPacket` for this token serial.
    Packet(u64),
    ProcessingComplete,
    /// A packet completion routine.
    Completion,
}

/// One guest callback the thread is inside: world id, channel serial, kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) world: u32,
    pub(crate) channel: u64,
    pub(crate) kind: FrameKind,
}

/// Runs `f` as a guest callback: `frame` is pushed on the thread's callback stack and the IRQL
/// is `irql` for the duration of the call.
pub(crate) fn in_callback<R>(frame: Frame, irql: Irql, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            FRAMES.with(|s| {
                s.borrow_mut().pop();
            });
        }
    }
    /// Back to the model's depth (and one callback less) when the guest callback returns.
    struct Leave(u32);
    impl Drop for Leave {
        fn drop(&mut self) {
            CALLBACK_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
            MODEL_DEPTH.with(|d| d.set(self.0));
        }
    }
    FRAMES.with(|s| s.borrow_mut().push(frame));
    let _pop = Pop;
    let _leave = Leave(MODEL_DEPTH.with(|d| d.replace(0)));
    CALLBACK_DEPTH.with(|d| d.set(d.get().saturating_add(1)));
    with_irql(irql, f)
}

/// The innermost callback frame of the calling thread, if any.
pub(crate) fn innermost_frame() -> Option<Frame> {
    FRAMES.with(|s| s.borrow().last().copied())
}

/// The innermost frame on this thread that belongs to `channel` of `world` and is a
/// state-change or packet-processing callback (the contexts from which Disable, Pause and
/// Start would deadlock).
pub(crate) fn channel_callback_frame(world: u32, channel: u64) -> Option<Frame> {
    FRAMES.with(|s| {
        s.borrow()
            .iter()
            .rev()
            .find(|f| {
                f.world == world && f.channel == channel && !matches!(f.kind, FrameKind::Completion)
            })
            .copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_irql_nests_and_restores() {
        assert_eq!(current_irql(), Irql::Passive);
        with_irql(Irql::Dispatch, || {
            assert_eq!(current_irql(), Irql::Dispatch);
            with_irql(Irql::Passive, || assert_eq!(current_irql(), Irql::Passive));
            assert_eq!(current_irql(), Irql::Dispatch);
        });
        assert_eq!(current_irql(), Irql::Passive);
    }

    #[test]
    fn frames_push_and_pop() {
        let f = Frame {
            world: 7,
            channel: 3,
            kind: FrameKind::State(StateCb::Started),
        };
        assert!(innermost_frame().is_none());
        in_callback(f, Irql::Passive, || {
            assert_eq!(innermost_frame(), Some(f));
            assert_eq!(channel_callback_frame(7, 3), Some(f));
            assert_eq!(channel_callback_frame(7, 4), None);
        });
        assert!(innermost_frame().is_none());
    }
}
