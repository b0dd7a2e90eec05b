//! The kmcl-sys declarations resolve to the model's definitions.

use std::ptr;

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{ChannelState, NtStatus, ViolationKind, connected, orphan_violations};

#[test]
fn kmcl_sys_declarations_reach_the_model() {
    let host = connected();
    let mut ch: sys::VMBCHANNEL = ptr::null_mut();
    // SAFETY: `ch` is writable; this is the kmcl-sys declaration, resolved by the linker.
    let s = NtStatus(unsafe { sys::VmbChannelAllocate(host.parent_device(), 0, &raw mut ch) });
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert!(!ch.is_null());
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelCleanup(ch) };
    assert_eq!(host.channel_state(), ChannelState::CleanedUp);
    host.assert_no_violations();
}

#[test]
fn allocate_rejects_unknown_parent_and_server_endpoints() {
    let host = connected();
    let bogus: sys::PDEVICE_OBJECT = ptr::without_provenance_mut(0x0bad_0000_1234_5678);
    let mut ch: sys::VMBCHANNEL = ptr::null_mut();
    // SAFETY: `ch` is writable.
    let s = NtStatus(unsafe { sys::VmbChannelAllocate(bogus, 0, &raw mut ch) });
    assert_eq!(s, NtStatus::STATUS_INVALID_PARAMETER_1);
    assert!(ch.is_null(), "*Channel is written only on success");
    assert!(orphan_violations().iter().any(|v| v.handle == bogus.addr()
        && v.kind == ViolationKind::InvalidHandle
        && v.function == "VmbChannelAllocate"));
    // SAFETY: `ch` is writable.
    let s = NtStatus(unsafe { sys::VmbChannelAllocate(host.parent_device(), 1, &raw mut ch) });
    assert_eq!(s, NtStatus::STATUS_NOT_SUPPORTED);
    // SAFETY: a NULL out-pointer is refused, not written.
    let s = NtStatus(unsafe { sys::VmbChannelAllocate(host.parent_device(), 0, ptr::null_mut()) });
    assert_eq!(s, NtStatus::STATUS_INVALID_PARAMETER_3);
    host.assert_no_violations();
}

#[test]
fn worlds_are_isolated() {
    let a = connected();
    let b = connected();
    let ch = super::common::allocate(a.parent_device()).expect("allocate");
    assert_eq!(a.channel_state(), ChannelState::Disabled);
    assert_eq!(b.channel_state(), ChannelState::None);
    super::common::cleanup(ch);
    super::common::cleanup(ch);
    assert_eq!(a.take_violations().len(), 1);
    b.assert_no_violations();
}

#[test]
fn handles_of_a_dropped_world_are_orphans() {
    let host = connected();
    let ch = super::common::allocate(host.parent_device()).expect("allocate");
    drop(host);
    super::common::cleanup(ch);
    assert!(orphan_violations().iter().any(|v| v.handle == ch.0
        && v.kind == ViolationKind::InvalidHandle
        && v.function == "VmbChannelCleanup"));
}
