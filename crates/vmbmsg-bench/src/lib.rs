//! The harness of vmbmsg's benchmarks (Linux: everything runs against kmcl-model).
//!
//! * [`RxWorld`]: one guest on one model world whose host delivers packets **on the calling
//!   thread** ([`kmcl_model::Host::send_inline`]): the guest's ProcessPacket runs, completes,
//!   and the completion crosses the guest→host ring before `deliver` returns. The guest is
//!   the real driver core ([`Guest::Rust`]), the same receive path in C ([`Guest::C`],
//!   `c/rx_path.c`) or a null guest that completes every packet with its own bytes
//!   ([`Guest::Null`]: the model's share, to subtract).
//! * [`e2e`]: the in-process equivalent of `vmbctl --sim bench` through
//!   [`vmbmsg_core::sim::Simulation`] (the report runs vmbctl itself when it can).
//! * [`ring`]: the ring against memcpy, interleaved (a ratio that survives a busy machine).
//! * [`bulk`]: protocol 1.1's bulk copies (into, out of and in place in a GPADL's buffer)
//!   against memcpy between page-aligned buffers, interleaved the same way.
//! * [`allocs`]: a counting global allocator (the zero-allocation proof).
//! * [`aligned`]: heap buffers with a chosen alignment (the memcpy baselines).
//! * [`report`]: machine description and formatting for the results table
//!   (`benches/perf_report.rs`).
#![cfg_attr(windows, allow(missing_docs, reason = "nothing here on Windows"))]
// UNSAFETY: the C receive path is reached through `extern "C"` declarations, the driver
// core needs its parent device as a raw KMCL handle, and the counting allocator implements
// `GlobalAlloc`.
#![cfg_attr(
    not(windows),
    expect(
        unsafe_code,
        reason = "FFI to the C receive path; the driver's parent device; GlobalAlloc"
    )
)]

#[cfg(not(windows))]
pub mod aligned;
#[cfg(not(windows))]
pub mod allocs;
#[cfg(not(windows))]
pub mod bulk;
#[cfg(not(windows))]
pub mod e2e;
#[cfg(not(windows))]
pub mod report;
#[cfg(not(windows))]
pub mod ring;
#[cfg(not(windows))]
mod rx;

#[cfg(not(windows))]
pub use rx::{Guest, PAYLOAD_SIZES, RxWorld, echo_message};
