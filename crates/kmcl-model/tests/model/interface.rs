//! The client interface table: the model answers the query as the VMBus bus driver does, the
//! table's functions are the model's, and references are counted.

use std::ptr;

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{ModelConfig, NtStatus, connected, connected_with};

use crate::common::*;

#[test]
fn the_query_fills_the_header_and_all_41_functions() {
    let host = connected();
    let table = query_v1(&host);
    let h = sys::interface_header(&table);
    assert_eq!(h.Size, 0x168);
    assert_eq!(h.Version, 1);
    assert!(!h.Context.is_null());
    assert!(h.InterfaceReference.is_some() && h.InterfaceDereference.is_some());
    // The plain exports and the table's members are the same functions.
    let plain_allocate: unsafe extern "C" fn(_, _, _) -> _ = sys::VmbChannelAllocate;
    let plain_send: unsafe extern "C" fn(_, _, _, _, _) -> _ = sys::VmbPacketSend;
    assert!(
        table
            .VmbChannelAllocate
            .is_some_and(|f| std::ptr::fn_addr_eq(f, plain_allocate))
    );
    assert!(
        table
            .VmbPacketSend
            .is_some_and(|f| std::ptr::fn_addr_eq(f, plain_send))
    );
    assert!(
        table.VmbChannelGetMmioSpace.is_some(),
        "the table-only member"
    );
    assert_eq!(host.interface_references(), 1);
    assert_eq!(host.interface_queries(), 1);
    interface_dereference(&table);
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
    host.assert_no_violations();
}

#[test]
fn another_interface_type_is_not_supported_and_is_no_violation() {
    let host = connected();
    let mut table = sys::KMCL_CLIENT_INTERFACE_V1::default();
    let other = sys::GUID {
        Data1: 1,
        ..sys::GUID::default()
    };
    // SAFETY: `table` is writable for its size.
    let status = unsafe {
        host.query_interface(
            &other,
            ptr::from_mut(sys::interface_header_mut(&mut table)),
            sys::KMCL_CLIENT_INTERFACE_V1_SIZE,
            1,
        )
    };
    assert_eq!(status, NtStatus::STATUS_NOT_SUPPORTED);
    assert!(table.VmbChannelAllocate.is_none(), "nothing was written");
    assert_eq!(host.interface_references(), 0);
    host.assert_no_violations();
}

#[test]
fn references_count_up_and_down_and_a_guest_drives_a_channel_through_the_table() {
    let host = connected_with(ModelConfig {
        mmio_space: (0xF800_0000, 0x20_0000),
        ..Default::default()
    });
    let table = query_v1(&host);
    interface_reference(&table);
    assert_eq!(host.interface_references(), 2);
    let mut ch: sys::VMBCHANNEL = ptr::null_mut();
    // SAFETY: the table's function with a valid out pointer.
    let status = unsafe {
        table.VmbChannelAllocate.expect("allocate")(host.parent_device(), 0, &raw mut ch)
    };
    assert_eq!(NtStatus(status), NtStatus::STATUS_SUCCESS);
    let (mut address, mut size) = (0u64, 0u64);
    // SAFETY: the table's function with valid out pointers.
    unsafe {
        table.VmbChannelGetMmioSpace.expect("mmio")(ch, &raw mut address, &raw mut size);
    };
    assert_eq!((address, size), (0xF800_0000, 0x20_0000));
    // SAFETY: the channel was never enabled.
    unsafe { table.VmbChannelCleanup.expect("cleanup")(ch) };
    interface_dereference(&table);
    interface_dereference(&table);
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
    host.assert_no_violations();
}

#[test]
fn a_failing_bus_driver_fails_the_query_and_takes_no_reference() {
    let host = connected();
    host.faults()
        .fail_interface_queries(1, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    let (status, table) = query_table(&host, sys::KMCL_CLIENT_INTERFACE_V1_SIZE, 1);
    assert_eq!(status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
    assert!(table.VmbChannelAllocate.is_none());
    assert_eq!(host.interface_references(), 0);
    // The next query works.
    let table = query_v1(&host);
    interface_dereference(&table);
    host.remove_device();
    host.assert_no_violations();
}

#[test]
fn a_guest_that_never_queried_is_a_linked_guest_and_is_not_counted() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    g.teardown();
    host.remove_device();
    host.assert_no_violations();
}
