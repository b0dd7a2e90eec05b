//! The verifier's findings: each broken KMCL contract rule the model sees becomes a
//! [`Violation`] in the log of the world the handle belongs to, or in the process-wide orphan
//! log when the handle names no world.

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// The contract rule a guest broke. Each kind has a test in `tests/model/violations.rs` that
/// commits it on purpose (`violation_<kind_snake>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// `VmbChannelPacketComplete`/`Fail`/`DeferToPassive` on a packet already retired.
    IncomingCompletedTwice,
    /// A `VMBPACKETCOMPLETION` the model never handed out.
    UnknownIncomingToken,
    /// Disable, Pause or a rescind waited `teardown_timeout` for delivered packets that were
    /// never completed (or for a ProcessPacket call that did not return); they were retired
    /// by force.
    UncompletedAtDisable,
    /// `VmbPacketFree` on a packet already freed (by the guest or by the default completion
    /// routine).
    PacketFreedTwice,
    /// `VmbPacketFree` while the packet's send has not completed.
    PacketFreedInFlight,
    /// Any use but Free of a freed packet.
    PacketUseAfterFree,
    /// Any use of a channel handle after `VmbChannelCleanup`.
    ChannelUseAfterCleanup,
    /// `VmbChannelCleanup` on a channel that is not Disabled.
    CleanupWhileEnabled,
    /// A PASSIVE_LEVEL-only entry point called at DISPATCH_LEVEL.
    PassiveOnlyAtDispatch,
    /// An Init setter after `VmbChannelEnable`.
    InitAfterEnable,
    /// A send on a channel that is Disabled, cleaned up, or after `EvtChannelSuspend`.
    SendOnClosedChannel,
    /// A completion response longer than the channel's maximum packet size.
    CompletionTooLarge,
    /// `VmbChannelCleanup` with packets from `VmbPacketAllocate` still not freed.
    LeakAtCleanup,
    /// `VmbChannelPacketDeferToPassive` outside the ProcessPacket call for that packet.
    DeferOutsideCallback,
    /// A send longer than the channel's maximum packet size.
    SendTooLarge,
    /// Flag bits outside the mask the function accepts.
    InvalidFlags,
    /// A packet from `VmbPacketInitialize` sent without a completion routine.
    SendWithoutCompletionRoutine,
    /// `VmbChannelSendSynchronousRequest` from inside `EvtChannelStarted` (it would never
    /// return on Windows).
    SyncRequestInStarted,
    /// A GPADL still alive after `EvtChannelClosed` returned.
    GpadlLeak,
    /// A NULL or unknown handle, or a handle of the wrong type.
    InvalidHandle,
    /// Disable, Pause or Start from inside a state-change or packet callback of the same
    /// channel (it would deadlock on Windows).
    StateCallbackReentry,
    /// Send, re-initialize or change the completion routine of a packet that is in flight.
    PacketInFlight,
    /// A packet from `VmbPacketAllocate` passed to `VmbPacketInitialize`.
    InitializeOfAllocatedPacket,
    /// `VmbPacketFree` on a packet from `VmbPacketInitialize` (caller memory).
    FreeOfInitializedPacket,
    /// `VmbPacketSendWithExternalMdl`/`Pfns` without `WAIT_FOR_COMPLETION`.
    ExternalDataWithoutWait,
    /// `VmbChannelPacketGetExternalData` on a packet that has no external data.
    NoExternalData,
    /// A GPADL created while the channel is not open.
    GpadlOnClosedChannel,
    /// `VmbChannelDeleteGpadl` on a GPADL already deleted.
    GpadlDeletedTwice,
    /// `VmbChannelDeleteGpadl` on a GPADL handle never created on this channel.
    UnknownGpadl,
    /// Another argument the function cannot report an error for (NULL out-pointer on a VOID
    /// function, a zero quota, ...).
    InvalidParameter,
    /// The test's host responder panicked (the model caught it at the FFI boundary).
    ResponderPanicked,
    /// A KMCL function called after every reference on the client interface table of its
    /// device was released (or after the device was removed): a call through a released table.
    InterfaceUseAfterRelease,
    /// `InterfaceDereference` on an interface with no reference left (released twice).
    InterfaceReleasedTwice,
    /// The device was removed with references on its client interface table still held (a
    /// missing `InterfaceDereference`).
    InterfaceNotReleased,
    /// A query for `KMCL_CLIENT_INTERFACE_TYPE` whose size or version is not
    /// `KMCL_CLIENT_INTERFACE_V1`'s (the model serves V1 only).
    InterfaceQueryMismatch,
    /// `VmbClientChannelInitSetTargetPnp` with no interface instance while the VM offers
    /// several channels of that type: the channel may bind another device's offer.
    AmbiguousTarget,
    /// A packet retired (completed, failed, deferred) after `VmbChannelPacketGetExternalData`
    /// returned `STATUS_PENDING` for it: KMCL keeps it and delivers it again.
    RetiredAfterPending,
    /// A send or synchronous request with `WAIT_FOR_COMPLETION` on a pipe-mode channel
    /// (`VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`: no transactions).
    TransactionOnPipe,
}

impl ViolationKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::IncomingCompletedTwice,
        Self::UnknownIncomingToken,
        Self::UncompletedAtDisable,
        Self::PacketFreedTwice,
        Self::PacketFreedInFlight,
        Self::PacketUseAfterFree,
        Self::ChannelUseAfterCleanup,
        Self::CleanupWhileEnabled,
        Self::PassiveOnlyAtDispatch,
        Self::InitAfterEnable,
        Self::SendOnClosedChannel,
        Self::CompletionTooLarge,
        Self::LeakAtCleanup,
        Self::DeferOutsideCallback,
        Self::SendTooLarge,
        Self::InvalidFlags,
        Self::SendWithoutCompletionRoutine,
        Self::SyncRequestInStarted,
        Self::GpadlLeak,
        Self::InvalidHandle,
        Self::StateCallbackReentry,
        Self::PacketInFlight,
        Self::InitializeOfAllocatedPacket,
        Self::FreeOfInitializedPacket,
        Self::ExternalDataWithoutWait,
        Self::NoExternalData,
        Self::GpadlOnClosedChannel,
        Self::GpadlDeletedTwice,
        Self::UnknownGpadl,
        Self::InvalidParameter,
        Self::ResponderPanicked,
        Self::InterfaceUseAfterRelease,
        Self::InterfaceReleasedTwice,
        Self::InterfaceNotReleased,
        Self::InterfaceQueryMismatch,
        Self::AmbiguousTarget,
        Self::RetiredAfterPending,
        Self::TransactionOnPipe,
    ];
}

/// One contract violation the verifier recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule that was broken.
    pub kind: ViolationKind,
    /// The KMCL function (or callback) in which it was seen.
    pub function: &'static str,
    /// The raw value of the handle involved (0 when none).
    pub handle: usize,
    /// A human-readable explanation.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} in {} (handle {:#x}): {}",
            self.kind, self.function, self.handle, self.detail
        )
    }
}

impl Violation {
    pub(crate) fn new(
        kind: ViolationKind,
        function: &'static str,
        handle: usize,
        detail: impl Into<String>,
    ) -> Self {
        let v = Self {
            kind,
            function,
            handle,
            detail: detail.into(),
        };
        if std::env::var_os("KMCL_MODEL_TRACE").is_some() {
            eprintln!("kmcl-model violation: {v}");
        }
        v
    }
}

static ORPHANS: Mutex<Vec<Violation>> = Mutex::new(Vec::new());

/// Records a violation whose handle belongs to no live world.
pub(crate) fn record_orphan(v: Violation) {
    ORPHANS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(v);
}

/// Every violation recorded so far whose handle could not be attributed to a world (NULL
/// handles, garbage values, handles of a dropped [`Host`](crate::Host)). This log is shared by
/// every test of the process: filter it by handle or function.
#[must_use]
pub fn orphan_violations() -> Vec<Violation> {
    ORPHANS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Formats a list of violations for an assertion message.
pub(crate) fn format_list(vs: &[Violation]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (i, v) in vs.iter().enumerate() {
        let _ = writeln!(s, "  {}. {v}", i + 1);
    }
    s
}
