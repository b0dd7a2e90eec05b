//! placeholder
#![no_std]

// The package is a cdylib on every host (that is what becomes vmbmsg.sys on Windows). Off
// Windows there is no wdk-panic, so std supplies the panic handler of that cdylib; the code of
// this crate still only uses `core` and `alloc`.
#[cfg(not(windows))]
extern crate std;
