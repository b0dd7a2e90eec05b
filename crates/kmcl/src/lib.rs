//! Safe Rust over the VMBus Kernel Mode Client Library (KMCL).
//!
//! Usable by any VMBus client (guest) driver, not only vmbmsg. `no_std` + `alloc`.
//!
//! # Reaching KMCL
//!
//! Every call goes through a [`Library`], one `KMCL_CLIENT_INTERFACE_V1` function table:
//!
//! * **The queried table, the default.** Since Windows 10 1803 the documentation describes
//!   KMCL only as an interface that the VMBus bus driver (Vmbkmcl.sys) hands out: a driver
//!   queries `KMCL_CLIENT_INTERFACE_TYPE` on its own device (`WdfFdoQueryForInterface`) and calls
//!   every `Vmb*` function through the table's pointers (learn.microsoft.com,
//!   `_KMCL_CLIENT_INTERFACE_V1` and every `nc-vmbuskernelmodeclientlibapi-fn_vmb_*` page; the
//!   pages stopped naming `Vmbkmcl.lib` in 2018). [`Library::query`] takes the result and its
//!   reference. It needs no import library, so it builds with any WDK that has the header.
//! * **The linked functions, feature `linked`.** `Library::linked` makes the same table of the
//!   plain functions that `vmbkmcl.lib` exports (kmcl-sys links it with its `link` feature), for
//!   WDKs that still ship that library; whether WDK 10.0.26100 does is not established.
//!
//! Both give the same types and the same behaviour; on Linux, `kmcl-model` answers the query
//! and defines the plain functions, so both are tested. A `Library` owns one interface
//! reference, released once when it is dropped; each channel keeps its own clone (another
//! reference) until `VmbChannelCleanup` returns, so no KMCL call can outlive the table it goes
//! through ([`Library`]'s module docs say how the callbacks find it).
//!
//! # Incoming bytes
//!
//! [`ChannelHandler::process_packet`] receives the packet as `&[u8]`. Whether KMCL's buffer is
//! a private copy or the host-writable ring is not documented, so kmcl copies every packet into
//! one of the channel's bounce buffers first (one pass, never read back from shared memory) and hands the
//! handler that copy: no `&[u8]` ever covers memory the host can write, and nothing is
//! allocated per packet ([`ChannelBuilder::concurrent_deliveries`], [`BounceStats`]).
//!
//! # What the types guarantee (reference/vmbus-kmcl-api.md §5–§6)
//!
//! * **Channel lifecycle.** [`ChannelBuilder`] is an allocated, disabled channel: the only type
//!   with the `VmbChannelInitSet*` setters. [`ChannelBuilder::enable`] consumes it and returns a
//!   [`Channel`], which has no setters, so configuring an enabled channel does not compile.
//!   Dropping a [`Channel`] disables and cleans it up; dropping a builder cleans it up.
//! * **Incoming packets.** Every packet the host sends reaches
//!   [`ChannelHandler::process_packet`] as an [`IncomingPacket`]: neither `Clone` nor `Copy`,
//!   retired by exactly one of [`IncomingPacket::complete`], [`IncomingPacket::fail`] or
//!   [`IncomingPacket::defer_to_passive`], each of which takes `self`. It may be kept and
//!   completed later from another thread. Dropping it unconsumed completes it with the
//!   channel's fallback response and counts it ([`unconsumed_packets`]), so a packet is never
//!   silently lost.
//! * **Outgoing packets.** [`ChannelRef::allocate_packet`] gives an [`OutgoingPacket`] (KMCL's
//!   NULL is [`NtStatus::STATUS_INSUFFICIENT_RESOURCES`], not a crash). [`OutgoingPacket::send`]
//!   consumes it: the bus owns it while in flight, the completion closure runs once with the
//!   host's status and response, and the packet is freed exactly once after that, also when
//!   KMCL runs the completion routine of a send that it refused ([`SendError`]). An unsent
//!   packet is freed on drop.
//!
//! What the compiler refuses:
//!
//! ```compile_fail
//! fn complete_twice(p: kmcl::IncomingPacket) {
//!     p.complete(&[]);
//!     p.complete(&[]); // use of moved value
//! }
//! ```
//!
//! ```compile_fail
//! fn touch_after_send(p: kmcl::OutgoingPacket<'_>) {
//!     let _ = p.send(&[0; 8], kmcl::SendFlags::WAIT_FOR_COMPLETION, |_| {});
//!     let _ = p.send(&[0; 8], kmcl::SendFlags::WAIT_FOR_COMPLETION, |_| {}); // moved
//! }
//! ```
//!
//! ```compile_fail
//! fn configure_enabled<H: kmcl::ChannelHandler>(ch: &mut kmcl::Channel<H>) {
//!     ch.max_packet_size(4096); // no init setters on an enabled channel
//! }
//! ```
//!
//! The same operations in their legal order compile:
//!
//! ```no_run
//! fn legal<H: kmcl::ChannelHandler>(
//!     p: kmcl::IncomingPacket,
//!     b: kmcl::ChannelBuilder<H>,
//! ) -> Result<(), kmcl::NtStatus> {
//!     p.complete(&[]);
//!     let mut b = b;
//!     b.max_packet_size(4096)?;
//!     b.concurrent_deliveries(2)?;
//!     let ch = b.enable().map_err(|(_, status)| status)?;
//!     let packet = ch.handle().allocate_packet()?;
//!     packet
//!         .send(&[0; 8], kmcl::SendFlags::WAIT_FOR_COMPLETION, |_| {})
//!         .map_err(|e| e.status)?;
//!     Ok(())
//! }
//! ```
//!
//! What it cannot refuse (a packet completed after its channel is gone, a PASSIVE-only call
//! made at DISPATCH_LEVEL) is documented on each function under `# IRQL` and caught at run time
//! by the model's verifier on Linux and by Driver Verifier on Windows.
//!
//! # Every client function
//!
//! The 40 functions of the client API and the interface-only `VmbChannelGetMmioSpace`, where
//! kmcl reaches each, what `kmcl-model` does for it, and the tests (kmcl's `tests/*.rs`, the
//! model's `tests/model/*.rs`, the driver's `tests/*.rs`). Functions kmcl calls itself are
//! "internal": a driver never sees them.
//!
//! | KMCL function | kmcl | kmcl-model | Tests |
//! |---|---|---|---|
//! | `VmbChannelAllocate` | [`ChannelBuilder::new`] | a disabled channel under the parent device | lifecycle.rs; model lifecycle.rs |
//! | `VmbChannelCleanup` | dropping [`ChannelBuilder`], [`Channel`], [`DisabledChannel`] (after the last [`Gpadl`]) | refuses an enabled channel, reports leaks | api.rs; model violations.rs |
//! | `VmbChannelEnable` | [`ChannelBuilder::enable`], [`DisabledChannel::enable`] | waits for the host's open | lifecycle.rs |
//! | `VmbChannelDisable` | [`Channel::disable`], dropping a [`Channel`] | Suspend, waits for delivered packets, cancels sends, Closed | incoming.rs, outgoing.rs |
//! | `VmbChannelPause` / `VmbChannelStart` | [`ChannelRef::pause`], [`ChannelRef::start`] | Suspend / Started, PostStarted | api.rs; driver pause.rs |
//! | `VmbChannelSetPointer` / `VmbChannelGetPointer` | internal: the channel's context (handler, library, bounce buffers, GPADL count, packet pool) | a pointer slot | every test |
//! | `VmbChannelInitSetMaximumPacketSize` | [`ChannelBuilder::max_packet_size`] (also sizes the bounce buffers) | refuses larger sends and completions | lifecycle.rs, bytes.rs |
//! | `VmbChannelInitSetMaximumExternalData` | [`ChannelBuilder::max_external_data`] | the host's external data is limited to it | api.rs; model incoming.rs |
//! | `VmbChannelInitSetClientContextSize` | [`ChannelBuilder::client_context_size`] (V1 has no accessor) | up to one page | api.rs |
//! | `VmbChannelInitSetProcessPacketCallbacks` | internal: [`ChannelHandler::process_packet`], [`ChannelHandler::PROCESSING_COMPLETE`] (registered only when the handler has one) | DISPATCH_LEVEL deliveries, batches | incoming.rs |
//! | `VmbChannelInitSetStateChangeCallbacks` | internal: [`ChannelHandler::opened`] .. [`ChannelHandler::closed`] | the state model, at PASSIVE_LEVEL | lifecycle.rs |
//! | `VmbChannelInitSetFriendlyName` | [`ChannelBuilder::friendly_name`] | kept | lifecycle.rs |
//! | `VmbChannelInitSetFlags` | [`ChannelBuilder::flags`] ([`ChannelFlags::IS_PIPE`]) | pipe mode: no transactions | api.rs; model violations.rs |
//! | `VmbClientChannelInitSetRingBufferPageCount` | [`ChannelBuilder::ring_pages`] | ring sizes; too large fails the open | lifecycle.rs; model lifecycle.rs |
//! | `VmbClientChannelInitSetTargetPnp` | [`ChannelBuilder::target`], [`ChannelHandler::pnp_failure`] | PnP lookup by GUID, ambiguity reported, `Host::fail_pnp_connection` | lifecycle.rs, api.rs; driver binding.rs |
//! | `VmbChannelSetIncomingProcessingAtPassive` | [`ChannelBuilder::incoming_at_passive`] | PASSIVE_LEVEL deliveries | api.rs |
//! | `VmbChannelSetInterruptLatency` | [`ChannelRef::set_interrupt_latency`] | only while open; returns the previous value | api.rs |
//! | `VmbChannelSetTransactionQuota` | [`ChannelRef::set_transaction_quota`] | holds deliveries back at the quota | api.rs |
//! | `VmbChannelGetInterfaceInstance` | [`ChannelRef::interface_instance`] | the offer's instance once open | api.rs |
//! | `VmbChannelGetMmioSpace` (table only) | [`ChannelRef::mmio_space`] | `ModelConfig::mmio_space` | api.rs |
//! | `VmbChannelPacketComplete` | [`IncomingPacket::complete`], dropping an [`IncomingPacket`] | once per packet; the response to the host | incoming.rs |
//! | `VmbChannelPacketFail` | [`IncomingPacket::fail`] | stops the incoming queue | api.rs |
//! | `VmbChannelPacketDeferToPassive` | [`IncomingPacket::defer_to_passive`] (and kmcl's own, when every bounce buffer is busy) | redelivered at PASSIVE_LEVEL; only inline | api.rs, bytes.rs |
//! | `VmbChannelPacketGetExternalData` | [`IncomingPacket::external_data`] ([`ExternalData::Pending`]) | an MDL; `STATUS_PENDING` on request, then redelivery | api.rs; model incoming.rs |
//! | `VmbChannelSendSynchronousRequest` | [`ChannelRef::send_sync`] | waits for the host; timeouts, refused in Started | outgoing.rs; driver negotiation.rs |
//! | `VmbChannelSizeofPacket` | [`ChannelRef::packet_object_size`] (sizes the pool) | maximum packet size plus an overhead | api.rs |
//! | `VmbPacketAllocate` | [`ChannelRef::allocate_packet`] | NULL on request (`FaultPlan::fail_allocations`) | outgoing.rs |
//! | `VmbPacketInitialize` | [`ChannelRef::preallocated_packet`] ([`ChannelBuilder::preallocated_packets`]) | caller memory; never freed by `VmbPacketFree` | api.rs |
//! | `VmbPacketFree` | dropping an unsent [`OutgoingPacket`]; after its completion | once; not in flight; not for initialized packets | outgoing.rs |
//! | `VmbPacketSend` | [`OutgoingPacket::send`], [`OutgoingPacket::send_vec`] | through the ring; failures on request, with or without the routine | outgoing.rs; driver faults.rs |
//! | `VmbPacketSendWithExternalMdl` | [`OutgoingPacket::send_with_external_mdl`] (`unsafe`: the MDL) | needs `WAIT_FOR_COMPLETION` | api.rs |
//! | `VmbPacketSendWithExternalPfns` | [`OutgoingPacket::send_with_external_pfns`] (`unsafe`: the pages) | needs `WAIT_FOR_COMPLETION` | api.rs |
//! | `VmbPacketSetCompletionRoutine` | internal: every send's completion trampoline | runs once, with the host's status | outgoing.rs |
//! | `VmbPacketSetPointer` / `VmbPacketGetPointer` | internal: a send's in-flight state | a pointer slot | outgoing.rs |
//! | `VmbPacketGetChannel` | [`OutgoingPacket::channel`] | the packet's channel | api.rs |
//! | `VmbChannelCreateGpadlFromBuffer` | [`ChannelRef::create_gpadl`] (the [`Gpadl`] owns the [`SharedBuffer`]) | only while open; the host sees the bytes | api.rs; model gpadl.rs |
//! | `VmbChannelCreateGpadlFromMdl` | [`ChannelRef::create_gpadl_from_mdl`] (`unsafe`: the MDL) | as from a buffer | model gpadl.rs |
//! | `VmbChannelDeleteGpadl` | dropping a [`Gpadl`], [`Gpadl::delete`] | once; all by the end of Closed | api.rs; model violations.rs |
#![no_std]
// UNSAFETY: this crate is the one place where KMCL's raw handles and callbacks are turned into
// owned Rust values; every block states the KMCL rule it relies on.
#![allow(unsafe_code, reason = "safe wrapper over the KMCL FFI")]

extern crate alloc;

mod bounce;
mod channel;
mod gpadl;
mod incoming;
mod library;
mod outgoing;
mod pool;
pub mod shared;

pub use bounce::{BounceStats, DEFAULT_BOUNCE_BUFFERS, MAX_BOUNCE_BUFFERS};
pub use channel::{
    Channel, ChannelBuilder, ChannelFlags, ChannelHandler, ChannelRef, DisabledChannel,
    ParentDevice, Timeout,
};
pub use gpadl::{Gpadl, GpadlAccess, PAGE_SIZE, SharedBuffer};
pub use incoming::{ExternalData, IncomingPacket, PacketFlags, unconsumed_packets};
pub use library::Library;
pub use ntstatus::NtStatus;
pub use outgoing::{Completion, OutgoingPacket, SendError, SendFlags};
pub use pool::MAX_PREALLOCATED_PACKETS;

/// A GUID in its Windows layout (`Data1`-`Data4`), for interface types and instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    /// The first 8 hex digits.
    pub data1: u32,
    /// The next 4 hex digits.
    pub data2: u16,
    /// The next 4 hex digits.
    pub data3: u16,
    /// The last 16 hex digits, as bytes.
    pub data4: [u8; 8],
}

impl Guid {
    fn to_sys(self) -> kmcl_sys::GUID {
        kmcl_sys::GUID {
            Data1: self.data1,
            Data2: self.data2,
            Data3: self.data3,
            Data4: self.data4,
        }
    }
}
