//! vmbmsg: a Hyper-V guest driver that exchanges messages with the host over a VMBus channel.
//!
//! This package is the driver binary (`vmbmsg.sys` on Windows). Its logic is the portable core,
//! [`vmbmsg_core`], re-exported here whole; what this crate adds is the `#[cfg(windows)]` KMDF
//! shell (`wdf`), which translates WDF types and calls the core's four entry points
//! ([`Core::channel_up`], [`Core::channel_down`], [`Core::handle_ioctl`] and, through KMCL, the
//! packet callback). See `docs/architecture.md`.
#![no_std]
#![cfg_attr(not(windows), forbid(unsafe_code))]

pub use vmbmsg_core::*;

// The package is a cdylib on every host. Off Windows there is no wdk-panic, so std supplies the
// panic handler of that cdylib.
#[cfg(not(windows))]
extern crate std;

#[cfg(windows)]
mod wdf;
