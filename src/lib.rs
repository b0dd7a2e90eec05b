//! vmbmsg: a Hyper-V guest driver that exchanges messages with the host over a VMBus channel.
//!
//! This crate is the driver. Everything in it except [`wdf`] (the `#[cfg(windows)]` KMDF
//! shell) is portable `no_std` + `alloc` code that is built and tested on Linux against
//! `kmcl-model`:
//!
//! * [`Core`] is one device: it brings the channel up and down ([`Core::channel_up`],
//!   [`Core::channel_down`]), processes every host packet (`on_packet`, through
//!   [`kmcl::ChannelHandler`]) and serves the IOCTL interface ([`Core::handle_ioctl`]).
//! * [`Platform`] and [`IoRequest`] are what the core needs from its host environment: the WDF
//!   shell implements them with a manual `WDFQUEUE` and `WDFREQUEST`s; tests and `vmbctl --sim`
//!   implement them in memory.
//!
//! The shell only translates WDF types and calls these four entry points.
#![no_std]
#![cfg_attr(not(windows), forbid(unsafe_code))]

extern crate alloc;

// The package is a cdylib on every host (that is what becomes vmbmsg.sys on Windows). Off
// Windows there is no wdk-panic, so std supplies the panic handler of that cdylib; the code of
// this crate still only uses `core` and `alloc`.
#[cfg(not(windows))]
extern crate std;

pub mod sync;

#[cfg(windows)]
pub mod wdf;

pub use kmcl::{NtStatus, ParentDevice};

/// One IOCTL request as the core sees it (`METHOD_BUFFERED`).
///
/// With `METHOD_BUFFERED` the input and output are the same system buffer: read all of the
/// input before writing any output (the borrows of [`input`](Self::input) and
/// [`output`](Self::output) cannot overlap, which enforces it).
pub trait IoRequest: Send + 'static {
    /// The caller's input bytes.
    fn input(&self) -> &[u8];
    /// The caller's output buffer, to fill before completing.
    fn output(&mut self) -> &mut [u8];
    /// Completes the request with `status`, reporting `information` output bytes.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    fn complete(self, status: NtStatus, information: usize);
}

/// What the core needs from its environment besides requests.
pub trait Platform: Send + Sync + 'static {
    /// The platform's request type.
    type Request: IoRequest;

    /// Parks a RECV request until a notification arrives. The platform makes it cancellable
    /// while parked: a cancelled request is completed with `STATUS_CANCELLED` by the platform
    /// and never returned by [`next_parked_recv`](Self::next_parked_recv).
    ///
    /// # Errors
    /// The request back with a status when it cannot be parked.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn park_recv(&self, request: Self::Request) -> Result<(), (Self::Request, NtStatus)>;

    /// The oldest parked RECV request that has not been cancelled, now owned by the caller.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (called with the core's spin lock held).
    fn next_parked_recv(&self) -> Option<Self::Request>;
}

/// One vmbmsg device.
#[derive(Debug)]
pub struct Core<P: Platform> {
    platform: P,
}

impl<P: Platform> Core<P> {
    /// A device with no channel yet.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the notification queue cannot be allocated.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn new(platform: P) -> Result<Self, NtStatus> {
        Ok(Self { platform })
    }

    /// The platform this core was created with.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Allocates, configures and enables the VMBus channel under `parent`. Returns once the
    /// channel is enabled; it opens (and negotiates) when the host opens it.
    ///
    /// # Errors
    /// KMCL's status if the channel cannot be allocated, configured or enabled.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn channel_up(&self, parent: ParentDevice) -> Result<(), NtStatus> {
        let _ = parent;
        Err(NtStatus::STATUS_NOT_IMPLEMENTED)
    }

    /// Disables and cleans up the channel: blocks until every delivered packet is retired and
    /// every in-flight send has completed or been cancelled, then finishes every parked RECV
    /// request and drops every queued notification with a clear status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn channel_down(&self) {}

    /// Serves one IOCTL: validates `code` and the buffers and either completes `request` or
    /// keeps it (PING, SEND, RECV) until the host answers or a notification arrives.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn handle_ioctl(&self, code: u32, request: P::Request) {
        let _ = code;
        request.complete(NtStatus::STATUS_NOT_IMPLEMENTED, 0);
    }
}
