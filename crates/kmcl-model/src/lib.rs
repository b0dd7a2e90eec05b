//! A user-mode model of the VMBus Kernel Mode Client Library (KMCL, `vmbkmcl.lib`), for
//! building and testing KMCL client code on machines without Windows.
//!
//! Three things in one crate:
//!
//! * **The library.** The 40 client functions that `kmcl-sys` declares are defined here under
//!   the same names and signatures (`#[unsafe(no_mangle)] extern "C"`), implementing the
//!   documented contract of the KMCL reference: the channel state model (§5), packet lifetimes
//!   (§6), every function (§7) and callback (§8). Where the reference marks a rule `[inf]`, the
//!   model takes that conservative choice and says so in a comment. Code that calls
//!   `kmcl_sys::Vmb*` links against these definitions when this crate is in the build, and
//!   [`query_interface`] (or [`Host::query_interface`]) hands out a
//!   `KMCL_CLIENT_INTERFACE_V1` table of the same functions, as the VMBus bus driver does,
//!   counting references.
//! * **A scriptable host.** [`connected`] creates an isolated world and returns its [`Host`]:
//!   the guest allocates its channel under [`Host::parent_device`], the test opens it
//!   ([`Host::open`]), sends packets ([`Host::send`]), receives and completes the guest's
//!   packets ([`Host::recv`], [`GuestPacket::complete`], [`Host::set_responder`]) and closes
//!   it ([`Host::rescind`]). Worlds never share state, so tests run in parallel.
//! * **A verifier.** Every contract violation the model sees (a packet completed twice, a
//!   PASSIVE-only call at DISPATCH, a leak at cleanup, ...) is recorded as a [`Violation`] in
//!   the world's log ([`Host::violations`], [`Host::assert_no_violations`],
//!   [`Host::violation_guard`]) or, when no world can be named, in [`orphan_violations`].
//!
//! Handles are opaque tokens, never pointers: any value (NULL, stale, garbage) is looked up,
//! recorded and refused, so misuse is a violation, never undefined behaviour. The model never
//! calls a guest callback while holding one of its locks, so the guest may call back into it
//! from any callback, on any thread.
//!
//! IRQL is simulated per thread ([`current_irql`], [`with_irql`]): delivery threads and host
//! completions run guest callbacks at DISPATCH_LEVEL, state-change callbacks at PASSIVE_LEVEL.
//!
//! A test drives both sides: the guest through `kmcl_sys::Vmb*` (or a safe wrapper over it),
//! the host through [`Host`]:
//!
//! ```
//! use kmcl_model::{ChannelState, ModelConfig, OpenError, connected_with};
//! use std::time::Duration;
//!
//! let host = connected_with(ModelConfig { delivery_threads: 4, ..Default::default() });
//! let _check = host.violation_guard(); // fails the test on any contract violation
//! // The guest would now call VmbChannelAllocate(host.parent_device(), 0, &mut ch), the Init
//! // setters and VmbChannelEnable; until then there is nothing to open.
//! assert_eq!(host.channel_state(), ChannelState::None);
//! assert_eq!(host.open(), Err(OpenError::NoEnabledChannel));
//! assert!(host.recv(Duration::ZERO).is_none());
//! ```
// UNSAFETY: this crate defines the `extern "C"` KMCL functions: it receives raw pointers to
// guest buffers and out-parameters (wrapped once, in `raw`) and calls the guest's C callbacks.
#![allow(
    unsafe_code,
    reason = "defines the KMCL C ABI and calls guest callbacks"
)]

mod exports;
mod handle;
mod host;
mod interface;
mod irql;
mod mdl;
mod raw;
mod transport;
mod violation;
mod world;

pub use host::{
    ChannelState, DEFAULT_INTERFACE_INSTANCE, DEFAULT_INTERFACE_TYPE, DeliveryMode, FaultPlan,
    GuestCompletion, GuestPacket, Host, HostSendError, HostStats, HostTxn, ModelConfig, OpenError,
    OpenTask, ViolationGuard, Vm, connected, connected_with,
};
pub use interface::query_interface;
pub use irql::{Irql, current_irql, in_guest_callback, in_guest_code, with_irql};
pub use mdl::{mdl_bytes, mdl_create, mdl_free};
pub use ntstatus::NtStatus;
pub use transport::{RingSnapshot, TransportStats};
pub use violation::{Violation, ViolationKind, orphan_violations};
pub use vmbus_ring::RingStats;
pub use world::{GpadlError, RawRings};

/// Re-exported so tests name the same FFI types the model implements.
pub use kmcl_sys;
