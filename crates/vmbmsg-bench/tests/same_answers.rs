//! The C receive path is a fair baseline only if it does the driver's work: every host packet,
//! well-formed or not, gets the same completion bytes from the C guest as from the driver
//! (same parse rules, same order, same statuses, same reply).
#![cfg(not(windows))] // Linux only: the harness runs against kmcl-model

use vmbmsg_bench::{Guest, RxWorld, echo_message};

/// `echo_message(payload)` with bytes `at..` replaced by `with`.
fn patched(payload: usize, at: usize, with: &[u8]) -> Vec<u8> {
    let mut m = echo_message(payload);
    m[at..at + with.len()].copy_from_slice(with);
    m
}

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut notify = echo_message(40);
    notify[4..6].copy_from_slice(&0x0102u16.to_le_bytes());
    let mut long = echo_message(16);
    long.extend_from_slice(&[0; 8]);
    vec![
        ("ECHO 0 B", echo_message(0)),
        ("ECHO 64 B", echo_message(64)),
        ("ECHO 1 KiB", echo_message(1024)),
        ("ECHO 16 KiB", echo_message(16 * 1024)),
        ("NOTIFY", notify),
        ("empty", Vec::new()),
        ("truncated header", echo_message(0)[..23].to_vec()),
        ("version 2.0", patched(8, 0, &0x0002_0000u32.to_le_bytes())),
        (
            "version 1.1 on a 1.0 session",
            patched(8, 0, &0x0001_0001u32.to_le_bytes()),
        ),
        ("unknown kind", patched(8, 4, &0x0666u16.to_le_bytes())),
        (
            "ECHO_BULK kind on 1.0",
            patched(8, 4, &0x0103u16.to_le_bytes()),
        ),
        ("guest kind SEND", patched(8, 4, &0x0002u16.to_le_bytes())),
        ("NEGOTIATE kind", patched(8, 4, &0x0001u16.to_le_bytes())),
        ("REPLY flag", patched(8, 6, &1u16.to_le_bytes())),
        ("reserved flag", patched(8, 6, &2u16.to_le_bytes())),
        ("status set", patched(8, 12, &1u32.to_le_bytes())),
        (
            "payload_len too large",
            patched(8, 8, &16_385u32.to_le_bytes()),
        ),
        ("payload_len short", patched(8, 8, &7u32.to_le_bytes())),
        ("payload_len long", patched(8, 8, &9u32.to_le_bytes())),
        ("bytes after the payload", long),
    ]
}

#[test]
fn the_c_path_answers_every_packet_as_the_driver_does() {
    let rust = RxWorld::new(Guest::Rust);
    let c = RxWorld::new(Guest::C);
    for (what, message) in messages() {
        let (r, k) = (rust.deliver(&message), c.deliver(&message));
        assert!(r.len() >= 24, "{what}: the driver answers with a reply");
        assert_eq!(
            r, k,
            "{what}: the C path's completion differs from the driver's"
        );
    }
    assert_eq!(rust.echo_count(), c.echo_count(), "ECHOs counted alike");
}
