//! Integration tests of kmcl-model, driven through the raw `kmcl_sys` declarations (the same
//! symbols guest code calls), so every call reaches the model through the linker.
// UNSAFETY: the tests call the KMCL C functions and implement C callbacks.
#![allow(unsafe_code, reason = "tests drive the KMCL C ABI directly")]
#![allow(missing_docs, reason = "test binary")]

mod close_accounting;
mod common;
mod gpadl;
mod hostile;
mod incoming;
mod interface;
mod lifecycle;
mod link;
mod outgoing;
mod rings;
mod stress;
mod sync;
mod violations;
