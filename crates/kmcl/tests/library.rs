//! How kmcl reaches KMCL: the queried client interface table, its references, and what a
//! channel keeps of it.

// UNSAFETY: the query hands kmcl a raw interface buffer, as WdfFdoQueryForInterface does.
#![expect(
    unsafe_code,
    reason = "the query hands kmcl a raw interface buffer, as WdfFdoQueryForInterface does"
)]

mod common;

use common::{Mode, Recorder, builder_with, library};
use kmcl::NtStatus;

#[test]
fn a_library_owns_one_reference_and_each_channel_its_own() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    let rec = Recorder::new(Mode::Echo);
    let lib = library(&host);
    assert!(lib.is_queried());
    assert_eq!(host.interface_references(), 1, "the query's reference");
    let channel = builder_with(&lib, &host, &rec)
        .enable()
        .map_err(|(_, s)| s)
        .expect("enable");
    assert_eq!(host.interface_references(), 2, "the channel's own");
    // The device releases its reference first (as the WDF shell's cleanup callback may): the
    // channel keeps working through its own.
    drop(lib);
    assert_eq!(host.interface_references(), 1);
    host.open().expect("open");
    let txn = host.send(b"still here", true).expect("send");
    assert_eq!(
        host.wait_completion(txn, common::T)
            .expect("completion")
            .payload,
        b"still here"
    );
    drop(channel);
    assert_eq!(
        host.interface_references(),
        0,
        "released once, after VmbChannelCleanup"
    );
    host.remove_device();
}

#[test]
fn a_clone_takes_a_reference_and_drop_releases_it() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    let lib = library(&host);
    let copy = lib.clone();
    assert_eq!(host.interface_references(), 2);
    drop(lib);
    drop(copy);
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
}

#[test]
fn a_failed_query_is_its_status_and_holds_nothing() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    host.faults()
        .fail_interface_queries(1, NtStatus::STATUS_NOT_SUPPORTED);
    let query = |iface, size, version, ty: &_| {
        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
        unsafe { host.query_interface(ty, iface, size, version) }
    };
    // SAFETY: the model's query is a PnP query-interface.
    let err = unsafe { kmcl::Library::query(query) }.expect_err("the query fails");
    assert_eq!(err, NtStatus::STATUS_NOT_SUPPORTED);
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
}

#[test]
fn a_table_with_a_wrong_version_is_refused_and_its_reference_released() {
    let host = kmcl_model::connected();
    let _check = host.violation_guard();
    // A provider that answers, but with another version in the header: kmcl must not use the
    // table, and must give back the reference the query took.
    let query = |iface: kmcl_model::kmcl_sys::PINTERFACE, size, version, ty: &_| {
        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
        let status = unsafe { host.query_interface(ty, iface, size, version) };
        // SAFETY: the header the model just filled.
        unsafe { (*iface).Version = 7 };
        status
    };
    // SAFETY: a PnP query-interface (the model's), then a header edited in place.
    let err = unsafe { kmcl::Library::query(query) }.expect_err("refused");
    assert_eq!(err, NtStatus::STATUS_NOT_SUPPORTED);
    assert_eq!(host.interface_references(), 0, "released by kmcl");
    host.remove_device();
}
