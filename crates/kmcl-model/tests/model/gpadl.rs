//! GPADLs (§6.4).

use std::sync::Mutex;

use std::sync::atomic::{AtomicU8, Ordering};

use kmcl_model::{GpadlError, NtStatus, connected, mdl_create, mdl_free};

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

/// Hyper-V maps the guest's pages: what the host writes, the guest reads in place, and the
/// other way round, until the GPADL is deleted; after that the host reaches nothing.
#[test]
fn the_host_reads_and_writes_a_buffer_gpadl_in_place_until_it_is_deleted() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    let buf: Vec<AtomicU8> = (0..64).map(|_| AtomicU8::new(1)).collect();
    // SAFETY: `buf` outlives the GPADL (deleted below) and is only accessed atomically.
    let (s, h) = unsafe { gpadl_from_raw(g.ch, 0, buf.as_ptr().cast_mut().cast(), buf.len()) };
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert_eq!(host.gpadl_len(h), Some(64));
    host.gpadl_write(h, 8, b"host").expect("in range");
    let seen: Vec<u8> = buf[6..14]
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    assert_eq!(seen, [1, 1, b'h', b'o', b's', b't', 1, 1]);
    buf[63].store(9, Ordering::Relaxed);
    let mut tail = [0u8; 2];
    host.gpadl_read(h, 62, &mut tail).expect("in range");
    assert_eq!(tail, [1, 9]);
    assert_eq!(
        host.gpadl_read(h, 63, &mut tail),
        Err(GpadlError::OutOfRange)
    );
    assert_eq!(
        host.gpadl_write(h, usize::MAX, b"x"),
        Err(GpadlError::OutOfRange)
    );
    gpadl_delete(g.ch, h);
    assert_eq!(
        host.gpadl_read(h, 0, &mut tail),
        Err(GpadlError::NoSuchGpadl)
    );
    assert_eq!(
        host.gpadl_write(h, 0, b"late"),
        Err(GpadlError::NoSuchGpadl)
    );
    assert!(
        buf.iter()
            .skip(12)
            .take(50)
            .all(|b| b.load(Ordering::Relaxed) == 1)
    );
    let mdl = mdl_create(b"abcdefgh");
    let (s, hm) = gpadl_from_mdl(g.ch, mdl, 0, 0);
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert_eq!(host.gpadl_write(hm, 0, b"x"), Err(GpadlError::ReadOnly));
    gpadl_delete(g.ch, hm);
    assert!(mdl_free(mdl));
    g.teardown();
}
