//! GPADLs (§6.4).

use std::sync::Mutex;

use kmcl_model::{NtStatus, connected, mdl_create, mdl_free};

use crate::common::*;

#[test]
fn gpadl_created_in_opened_is_visible_to_the_host_and_deleted_in_closed() {
    static HANDLE: Mutex<u32> = Mutex::new(0);
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host)
        .on_opened(|g| {
            let (s, h) = gpadl_from_buffer(g.ch, 0, b"shared ring memory");
            *lock(&HANDLE) = h;
            s
        })
        .on_closed(|g| gpadl_delete(g.ch, *lock(&HANDLE)))
        .opened();
    let h = *lock(&HANDLE);
    assert_ne!(h, 0, "GPADL handles are never 0");
    assert_eq!(host.gpadl_bytes(h).expect("alive"), b"shared ring memory");
    assert_eq!(host.stats().gpadls_alive, 1);
    g.teardown();
    assert_eq!(host.gpadl_bytes(h), None);
    assert_eq!(host.stats().gpadls_alive, 0);
}

#[test]
fn gpadl_from_an_mdl_range() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let mdl = mdl_create(b"abcdefgh");
    let (s, h1) = gpadl_from_mdl(g.ch, mdl, 2, 3);
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    let (s, h2) = gpadl_from_mdl(g.ch, mdl, 4, 0);
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert_ne!(h1, h2);
    assert_eq!(host.gpadl_bytes(h1).expect("alive"), b"cde");
    assert_eq!(host.gpadl_bytes(h2).expect("alive"), b"efgh");
    assert_eq!(
        gpadl_from_mdl(g.ch, mdl, 6, 5).0,
        NtStatus::STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        gpadl_from_buffer(g.ch, 0x2, b"x").0,
        NtStatus::STATUS_INVALID_PARAMETER_2
    );
    gpadl_delete(g.ch, h1);
    gpadl_delete(g.ch, h2);
    assert!(mdl_free(mdl));
    g.teardown();
}
