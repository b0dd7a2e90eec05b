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
//! * **The linked functions, feature `linked`.** [`Library::linked`] makes the same table of the
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
//! one of the channel's bounce buffers first (each byte read once, atomically) and hands the
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
