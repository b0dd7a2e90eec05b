extern crate std;
use std::format;
use std::vec;
use std::vec::Vec;

use super::*;

const V1: u32 = PROTOCOL_V1;

fn encode_host(m: &HostMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    assert_eq!(m.write(&mut buf), Ok(buf.len()));
    buf
}

fn encode_guest(m: &GuestMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    assert_eq!(m.write(&mut buf), Ok(buf.len()));
    buf
}

fn encode_reply(r: &Reply<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; r.encoded_len()];
    assert_eq!(r.write(&mut buf), Ok(buf.len()));
    buf
}

/// A raw header with chosen fields, for building bad messages byte by byte.
fn raw(version: u32, kind: u16, flags: u16, payload_len: u32, status: i32, id: u64) -> Vec<u8> {
    MessageHeader {
        version: U32::new(version),
        kind: MessageKind::new(kind),
        flags: MessageFlags::new(flags),
        payload_len: U32::new(payload_len),
        status: I32::new(status),
        id: U64::new(id),
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn header_bytes_are_little_endian_at_documented_offsets() {
    let bytes = encode_host(&HostMessage::echo(V1, 0x0102_0304_0506_0708, b"hi"));
    assert_eq!(
        bytes,
        [
            0x00, 0x00, 0x01, 0x00, // version 1.0
            0x01, 0x01, // kind ECHO
            0x00, 0x00, // flags
            0x02, 0x00, 0x00, 0x00, // payload_len
            0x00, 0x00, 0x00, 0x00, // status
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // id
            b'h', b'i',
        ]
    );
    let reply = encode_reply(&Reply::status_only(
        MessageKind::NOTIFY,
        V1,
        1,
        QUEUE_FULL_STATUS,
    ));
    assert_eq!(reply.len(), STATUS_REPLY_SIZE);
    assert_eq!(&reply[4..8], &[0x02, 0x01, 0x01, 0x00]); // NOTIFY, REPLY
    assert_eq!(&reply[12..16], &0xC000_0044u32.to_le_bytes()); // STATUS_QUOTA_EXCEEDED
}

#[test]
fn versions() {
    assert_eq!(PROTOCOL_V1, 0x0001_0000);
    assert_eq!(make_version(2, 7), 0x0002_0007);
    assert_eq!(version_major(0x0002_0007), 2);
    assert_eq!(version_minor(0x0002_0007), 7);
    assert!(is_supported_version(V1));
    assert!(is_supported_version(PROTOCOL_V1_1));
    assert_eq!(PROTOCOL_V1_1, 0x0001_0001);
    assert!(!is_supported_version(make_version(1, 2)));
    assert!(!is_supported_version(0));
}

#[test]
fn choose_version_picks_newest_common() {
    let v = |a, b| make_version(a, b);
    let host = [v(1, 0), v(1, 1), v(2, 0), v(3, 0)];
    assert_eq!(choose_version(v(1, 0), v(2, 0), &host), Some(v(2, 0)));
    assert_eq!(choose_version(v(1, 0), v(1, 5), &host), Some(v(1, 1)));
    assert_eq!(choose_version(v(1, 0), v(1, 0), &host), Some(v(1, 0)));
    assert_eq!(choose_version(v(4, 0), v(5, 0), &host), None);
    assert_eq!(choose_version(v(2, 0), v(1, 0), &host), None); // inverted
    assert_eq!(choose_version(v(1, 0), v(9, 0), &[]), None);
    assert_eq!(
        choose_version(SUPPORTED_MIN, SUPPORTED_MAX, &[V1]),
        Some(V1)
    );
}

#[test]
fn chosen_version_must_lie_in_the_proposal() {
    let (min, max) = (make_version(1, 0), make_version(2, 0));
    for chosen in [min, make_version(1, 3), max] {
        assert_eq!(check_chosen_version(chosen, min, max), Ok(chosen));
    }
    for chosen in [0, make_version(0, 9), make_version(2, 1), u32::MAX] {
        assert_eq!(
            check_chosen_version(chosen, min, max),
            Err(ProtoError::VersionOutOfRange { chosen, min, max })
        );
    }
}

#[test]
fn echo_and_notify_round_trip() {
    for m in [
        HostMessage::echo(V1, 7, b"hello"),
        HostMessage::notify(V1, u64::MAX, b""),
        HostMessage::echo(V1, 0, &[0xAB; MAX_PAYLOAD]),
    ] {
        let bytes = encode_host(&m);
        assert_eq!(parse_host_message(&bytes), Ok(m));
        assert!(bytes.len() <= MAX_MESSAGE);
    }
}

#[test]
fn negotiate_send_ping_round_trip() {
    for m in [
        GuestMessage::negotiate(1, SUPPORTED_MIN, SUPPORTED_MAX),
        GuestMessage::negotiate(2, make_version(1, 0), make_version(7, 3)),
        GuestMessage::send(V1, 3, b"payload"),
        GuestMessage::send(V1, 4, &[1; MAX_PAYLOAD]),
        GuestMessage::ping(V1, 5, 0xDEAD_BEEF),
    ] {
        let bytes = encode_guest(&m);
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(parse_guest_message(&bytes), Ok(m));
    }
    assert_eq!(
        encode_guest(&GuestMessage::negotiate(1, V1, V1)).len(),
        NEGOTIATE_REQUEST_SIZE
    );
    assert_eq!(encode_guest(&GuestMessage::ping(V1, 1, 1)).len(), PING_SIZE);
}

#[test]
fn replies_round_trip() {
    let payload = [9u8; 100];
    for r in [
        Reply::negotiate_accept(1, V1),
        Reply::negotiate_reject(1),
        Reply::ping(V1, 2, 42),
        Reply::echo(V1, 3, &payload),
        Reply::echo(V1, 3, &[]),
        Reply::status_only(MessageKind::SEND, V1, 4, NtStatus::STATUS_SUCCESS),
        Reply::status_only(MessageKind::SEND, V1, 4, NtStatus::STATUS_ACCESS_DENIED),
        Reply::status_only(MessageKind::NOTIFY, V1, 5, NtStatus::STATUS_SUCCESS),
        Reply::status_only(MessageKind::NOTIFY, V1, 5, QUEUE_FULL_STATUS),
        Reply::status_only(MessageKind::ECHO, V1, 6, NtStatus::STATUS_DATA_ERROR),
        Reply::status_only(MessageKind::PING, V1, 6, NtStatus::STATUS_UNSUCCESSFUL),
    ] {
        let bytes = encode_reply(&r);
        assert_eq!(parse_reply(&bytes, r.kind, r.id), Ok(r));
    }
    assert_eq!(
        encode_reply(&Reply::negotiate_accept(1, V1)).len(),
        NEGOTIATE_REPLY_SIZE
    );
    assert_eq!(
        encode_reply(&Reply::negotiate_reject(1)).len(),
        STATUS_REPLY_SIZE
    );
    let full = [0u8; MAX_PAYLOAD];
    assert_eq!(encode_reply(&Reply::echo(V1, 1, &full)).len(), MAX_MESSAGE);
}

#[test]
fn negotiate_reply_outcomes() {
    let accept = encode_reply(&Reply::negotiate_accept(9, V1));
    assert_eq!(
        parse_negotiate_reply(&accept, 9, SUPPORTED_MIN, SUPPORTED_MAX),
        Ok(NegotiateOutcome::Accepted(V1))
    );
    // A host choosing any version inside a wider proposal is accepted; outside is not.
    assert_eq!(
        parse_negotiate_reply(&accept, 9, make_version(0, 5), make_version(3, 0)),
        Ok(NegotiateOutcome::Accepted(V1))
    );
    let (min, max) = (make_version(2, 0), make_version(3, 0));
    assert_eq!(
        parse_negotiate_reply(&accept, 9, min, max),
        Err(ProtoError::VersionOutOfRange {
            chosen: V1,
            min,
            max
        })
    );
    let zero = encode_reply(&Reply::negotiate_accept(9, 0));
    assert!(matches!(
        parse_negotiate_reply(&zero, 9, V1, V1),
        Err(ProtoError::VersionOutOfRange { chosen: 0, .. })
    ));
    let reject = encode_reply(&Reply::negotiate_reject(9));
    assert_eq!(
        parse_negotiate_reply(&reject, 9, V1, V1),
        Ok(NegotiateOutcome::Rejected(
            NtStatus::STATUS_REVISION_MISMATCH
        ))
    );
    assert_eq!(
        parse_negotiate_reply(&reject, 8, V1, V1),
        Err(ProtoError::IdMismatch {
            expected: 8,
            got: 9
        })
    );
    // Reserved field of the accepting body.
    let mut bad = accept.clone();
    bad[HEADER_SIZE + 4] = 1;
    assert_eq!(
        parse_negotiate_reply(&bad, 9, V1, V1),
        Err(ProtoError::ReservedNonZero { field: "reserved" })
    );
}

#[test]
fn ping_reply_checks_the_nonce() {
    let ok = encode_reply(&Reply::ping(V1, 3, 77));
    assert_eq!(parse_ping_reply(&ok, 3, 77), Ok(NtStatus::STATUS_SUCCESS));
    assert_eq!(
        parse_ping_reply(&ok, 3, 78),
        Err(ProtoError::NonceMismatch {
            expected: 78,
            got: 77
        })
    );
    let failed = encode_reply(&Reply::status_only(
        MessageKind::PING,
        V1,
        3,
        NtStatus::STATUS_DEVICE_BUSY,
    ));
    assert_eq!(
        parse_ping_reply(&failed, 3, 78),
        Ok(NtStatus::STATUS_DEVICE_BUSY)
    );
}

#[test]
fn truncated_header() {
    let bytes = encode_host(&HostMessage::echo(V1, 1, b"x"));
    for n in 0..HEADER_SIZE {
        let err = ProtoError::Truncated {
            needed: HEADER_SIZE,
            got: n,
        };
        assert_eq!(parse_host_message(&bytes[..n]), Err(err));
        assert_eq!(parse_guest_message(&bytes[..n]), Err(err));
        assert_eq!(parse_reply(&bytes[..n], MessageKind::ECHO, 1), Err(err));
    }
}

#[test]
fn truncated_or_oversized_fixed_body() {
    // PING with a 4-byte body that the header agrees with: shorter than the fixed body.
    let mut b = raw(V1, MessageKind::PING.get(), 0, 4, 0, 1);
    b.extend_from_slice(&[0; 4]);
    assert_eq!(
        parse_guest_message(&b),
        Err(ProtoError::Truncated {
            needed: PING_SIZE,
            got: HEADER_SIZE + 4
        })
    );
    // NEGOTIATE with 12 bytes: longer than the fixed body.
    let mut b = raw(V1, MessageKind::NEGOTIATE.get(), 0, 12, 0, 1);
    b.extend_from_slice(&[1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(
        parse_guest_message(&b),
        Err(ProtoError::BodyLength {
            kind: MessageKind::NEGOTIATE,
            expected: 8,
            got: 12
        })
    );
    // A failure reply with a body, a SEND success with a body.
    let mut b = raw(
        V1,
        MessageKind::ECHO.get(),
        1,
        3,
        NtStatus::STATUS_DATA_ERROR.0,
        5,
    );
    b.extend_from_slice(b"abc");
    assert_eq!(
        parse_reply(&b, MessageKind::ECHO, 5),
        Err(ProtoError::BodyLength {
            kind: MessageKind::ECHO,
            expected: 0,
            got: 3
        })
    );
    let mut b = raw(V1, MessageKind::SEND.get(), 1, 1, 0, 5);
    b.push(0);
    assert!(matches!(
        parse_reply(&b, MessageKind::SEND, 5),
        Err(ProtoError::BodyLength { expected: 0, .. })
    ));
}

#[test]
fn length_field_must_match() {
    let bytes = encode_guest(&GuestMessage::send(V1, 1, b"abcd"));
    // Cut inside the payload, or add a trailing byte.
    assert_eq!(
        parse_guest_message(&bytes[..bytes.len() - 1]),
        Err(ProtoError::LengthMismatch {
            header: 4,
            actual: 3
        })
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        parse_guest_message(&longer),
        Err(ProtoError::LengthMismatch {
            header: 4,
            actual: 5
        })
    );
    // Declared above the maximum.
    let mut b = raw(V1, MessageKind::ECHO.get(), 0, u32::MAX, 0, 1);
    b.extend_from_slice(&[0; 8]);
    assert_eq!(
        parse_host_message(&b),
        Err(ProtoError::PayloadTooLarge {
            len: u32::MAX as usize,
            max: MAX_PAYLOAD
        })
    );
    let b = raw(V1, MessageKind::ECHO.get(), 0, MAX_PAYLOAD as u32 + 1, 0, 1);
    assert!(matches!(
        parse_host_message(&b),
        Err(ProtoError::PayloadTooLarge { .. })
    ));
}

#[test]
fn header_field_checks() {
    let echo = MessageKind::ECHO.get();
    // Unsupported version, including a NEGOTIATE in a non-V1 header.
    for v in [0, make_version(1, 2), make_version(2, 0), u32::MAX] {
        assert_eq!(
            parse_host_message(&raw(v, echo, 0, 0, 0, 1)),
            Err(ProtoError::UnsupportedVersion(v))
        );
    }
    let mut neg = raw(make_version(2, 0), MessageKind::NEGOTIATE.get(), 0, 8, 0, 1);
    neg.extend_from_slice(&[0, 0, 1, 0, 0, 0, 1, 0]);
    assert_eq!(
        parse_guest_message(&neg),
        Err(ProtoError::UnsupportedVersion(make_version(2, 0)))
    );
    // Unknown flag bits.
    assert_eq!(
        parse_host_message(&raw(V1, echo, 0x8000, 0, 0, 1)),
        Err(ProtoError::ReservedNonZero { field: "flags" })
    );
    // Unknown kinds.
    for k in [0, 4, 0x100, 0x103, 0xFFFF] {
        assert_eq!(
            parse_host_message(&raw(V1, k, 0, 0, 0, 1)),
            Err(ProtoError::UnknownKind(k))
        );
        assert_eq!(
            parse_guest_message(&raw(V1, k, 0, 0, 0, 1)),
            Err(ProtoError::UnknownKind(k))
        );
    }
    // A reply where a request is expected, and the other way round.
    assert_eq!(
        parse_host_message(&raw(V1, echo, 1, 0, 0, 1)),
        Err(ProtoError::ReplyFlag {
            expected_reply: false
        })
    );
    assert_eq!(
        parse_reply(&raw(V1, echo, 0, 0, 0, 1), MessageKind::ECHO, 1),
        Err(ProtoError::ReplyFlag {
            expected_reply: true
        })
    );
    // Wrong direction.
    let send = encode_guest(&GuestMessage::send(V1, 1, b""));
    assert_eq!(
        parse_host_message(&send),
        Err(ProtoError::WrongDirection {
            kind: MessageKind::SEND
        })
    );
    let notify = encode_host(&HostMessage::notify(V1, 1, b""));
    assert_eq!(
        parse_guest_message(&notify),
        Err(ProtoError::WrongDirection {
            kind: MessageKind::NOTIFY
        })
    );
    // Status in a request.
    assert_eq!(
        parse_host_message(&raw(V1, echo, 0, 0, 1, 1)),
        Err(ProtoError::ReservedNonZero { field: "status" })
    );
}

#[test]
fn reply_kind_and_id_checks() {
    let r = encode_reply(&Reply::ping(V1, 10, 1));
    assert_eq!(
        parse_reply(&r, MessageKind::SEND, 10),
        Err(ProtoError::KindMismatch {
            expected: MessageKind::SEND,
            got: MessageKind::PING
        })
    );
    assert_eq!(
        parse_reply(&r, MessageKind::PING, 11),
        Err(ProtoError::IdMismatch {
            expected: 11,
            got: 10
        })
    );
    // A success reply of an unknown kind the caller asked for.
    let odd = raw(V1, 0x7777, 1, 0, 0, 1);
    assert_eq!(
        parse_reply(&odd, MessageKind::new(0x7777), 1),
        Err(ProtoError::UnknownKind(0x7777))
    );
}

#[test]
fn negotiate_range_checks() {
    let bad = |min: u32, max: u32| {
        let mut b = raw(V1, MessageKind::NEGOTIATE.get(), 0, 8, 0, 1);
        b.extend_from_slice(&min.to_le_bytes());
        b.extend_from_slice(&max.to_le_bytes());
        parse_guest_message(&b).map(|_| ())
    };
    assert_eq!(
        bad(make_version(2, 0), V1),
        Err(ProtoError::InvalidVersionRange {
            min: make_version(2, 0),
            max: V1
        })
    );
    assert_eq!(
        bad(0, V1),
        Err(ProtoError::InvalidVersionRange { min: 0, max: V1 })
    );
    assert!(bad(V1, V1).is_ok());
    let mut buf = [0u8; 64];
    assert_eq!(
        GuestMessage::negotiate(1, 5, 4).write(&mut buf),
        Err(ProtoError::InvalidVersionRange { min: 5, max: 4 })
    );
}

#[test]
fn writer_errors() {
    let m = HostMessage::echo(V1, 1, b"abc");
    let mut buf = [0u8; HEADER_SIZE + 3];
    assert_eq!(m.write(&mut buf), Ok(HEADER_SIZE + 3));
    assert_eq!(
        m.write(&mut buf[..HEADER_SIZE + 2]),
        Err(ProtoError::BufferTooSmall {
            needed: HEADER_SIZE + 3,
            got: HEADER_SIZE + 2
        })
    );
    assert!(matches!(
        GuestMessage::ping(V1, 1, 1).write(&mut buf[..4]),
        Err(ProtoError::BufferTooSmall { .. })
    ));
    let big = vec![0u8; MAX_PAYLOAD + 1];
    let mut out = vec![0u8; MAX_MESSAGE + 8];
    assert_eq!(
        HostMessage::notify(V1, 1, &big).write(&mut out),
        Err(ProtoError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        })
    );
    assert_eq!(
        GuestMessage::send(make_version(9, 0), 1, b"").write(&mut out),
        Err(ProtoError::UnsupportedVersion(make_version(9, 0)))
    );
    let mut neg = GuestMessage::negotiate(1, V1, V1);
    neg.version = make_version(1, 1);
    assert_eq!(
        neg.write(&mut out),
        Err(ProtoError::UnsupportedVersion(make_version(1, 1)))
    );
    // Reply bodies that break the reply rule.
    let shapes = [
        Reply {
            body: ReplyBody::Empty,
            ..Reply::ping(V1, 1, 1)
        },
        Reply {
            status: NtStatus::STATUS_UNSUCCESSFUL,
            ..Reply::ping(V1, 1, 1)
        },
        Reply {
            body: ReplyBody::Ping { nonce: 1 },
            ..Reply::negotiate_accept(1, V1)
        },
        Reply::status_only(MessageKind::ECHO, V1, 1, NtStatus::STATUS_SUCCESS),
    ];
    for r in shapes {
        assert_eq!(
            r.write(&mut out),
            Err(ProtoError::BodyShape { kind: r.kind })
        );
    }
    assert_eq!(
        Reply::status_only(MessageKind::new(0x55), V1, 1, NtStatus::STATUS_SUCCESS).write(&mut out),
        Err(ProtoError::UnknownKind(0x55))
    );
}

#[test]
fn failure_reply_to_a_malformed_message() {
    // Readable header with an unknown kind: the reply echoes kind and id.
    let bad = raw(V1, 0x4242, 0, 0, 0, 0xABCD);
    let err = parse_host_message(&bad).unwrap_err();
    let reply = Reply::for_malformed(&bad, err.status());
    let bytes = encode_reply(&reply);
    assert_eq!(bytes.len(), STATUS_REPLY_SIZE);
    let parsed = parse_reply(&bytes, MessageKind::new(0x4242), 0xABCD);
    assert_eq!(parsed.map(|r| r.status), Ok(NtStatus::STATUS_NOT_SUPPORTED));
    // Unreadable header: kind 0, id 0; unsupported version: V1 in the reply.
    for raw_bytes in [
        &[1u8, 2, 3][..],
        &raw(make_version(5, 0), 1, 0, 0, 0, 7)[..],
    ] {
        let r = Reply::for_malformed(raw_bytes, NtStatus::STATUS_DATA_ERROR);
        assert_eq!(r.version, V1);
        let bytes = encode_reply(&r);
        assert!(parse_reply(&bytes, r.kind, r.id).is_ok());
    }
    assert_eq!(peek_header(&[0; 23]), None);
    assert_eq!(peek_header(&bad).map(|h| h.id.get()), Some(0xABCD));
}

/// A `SessionVersion` exists exactly for the supported versions.
#[test]
fn session_versions_are_the_supported_ones() {
    for v in [
        0,
        V1 - 1,
        V1,
        PROTOCOL_V1_1,
        PROTOCOL_V1_1 + 1,
        make_version(2, 0),
        u32::MAX,
    ] {
        assert_eq!(
            SessionVersion::new(v).map(SessionVersion::get),
            is_supported_version(v).then_some(v),
            "{v:#x}"
        );
    }
}

/// The session parse accepts exactly what the full rule-by-rule parse accepts of its version,
/// with the same value: every header byte of valid ECHOs and NOTIFYs of both versions set to
/// interesting values, and the messages cut short and extended.
#[test]
fn session_parse_agrees_with_the_full_parse() {
    let mut inputs = Vec::new();
    for payload_len in [0usize, 1, 64, MAX_PAYLOAD] {
        let payload = vec![0x5Au8; payload_len];
        for m in [
            HostMessage::echo(V1, 7, &payload),
            HostMessage::notify(V1, 7, &payload),
            HostMessage::echo(PROTOCOL_V1_1, 7, &payload),
            HostMessage::notify(PROTOCOL_V1_1, 7, &payload),
        ] {
            let good = encode_host(&m);
            for i in 0..HEADER_SIZE {
                for v in [0x00, 0x01, 0x02, 0x03, 0x40, 0x80, 0xFF] {
                    let mut b = good.clone();
                    if let Some(byte) = b.get_mut(i) {
                        *byte = v;
                    }
                    inputs.push(b);
                }
            }
            for cut in [0, 1, HEADER_SIZE - 1, HEADER_SIZE, good.len() - 1] {
                inputs.push(good.get(..cut).unwrap_or_default().to_vec());
            }
            let mut longer = good.clone();
            longer.push(0);
            inputs.push(longer);
            inputs.push(good);
        }
    }
    let mut accepted = 0;
    for b in &inputs {
        let full = parse_host_message(b);
        for session in [V1, PROTOCOL_V1_1] {
            let expect = full.ok().filter(|m| m.version == session);
            let version = SessionVersion::new(session).expect("supported");
            assert_eq!(
                parse_session_message(b, version),
                expect,
                "{session:#x} {b:02x?}"
            );
        }
        accepted += usize::from(full.is_ok());
    }
    assert!(accepted > 16, "valid messages were among the inputs");
}

#[test]
fn every_parse_error_maps_to_a_malformed_status_and_reason() {
    let parse_errors = [
        ProtoError::Truncated { needed: 1, got: 0 },
        ProtoError::LengthMismatch {
            header: 1,
            actual: 0,
        },
        ProtoError::BodyLength {
            kind: MessageKind::PING,
            expected: 8,
            got: 9,
        },
        ProtoError::UnknownKind(9),
        ProtoError::UnsupportedVersion(9),
        ProtoError::PayloadTooLarge { len: 1, max: 0 },
        ProtoError::ReservedNonZero { field: "flags" },
        ProtoError::WrongDirection {
            kind: MessageKind::SEND,
        },
        ProtoError::ReplyFlag {
            expected_reply: true,
        },
        ProtoError::KindMismatch {
            expected: MessageKind::SEND,
            got: MessageKind::PING,
        },
        ProtoError::IdMismatch {
            expected: 1,
            got: 2,
        },
        ProtoError::NonceMismatch {
            expected: 1,
            got: 2,
        },
        ProtoError::InvalidVersionRange { min: 2, max: 1 },
        ProtoError::VersionOutOfRange {
            chosen: 3,
            min: 1,
            max: 2,
        },
    ];
    for e in parse_errors {
        assert_eq!(StatusClass::of(e.status()), StatusClass::Malformed, "{e}");
        assert!(!e.status().is_success());
        assert!(!matches!(
            e.reason(),
            MalformedReason::Other | MalformedReason::Premature
        ));
        let text = format!("{e}");
        assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
    }
    assert_eq!(
        ProtoError::UnsupportedVersion(0).status(),
        NtStatus::STATUS_REVISION_MISMATCH
    );
    assert_eq!(
        ProtoError::UnknownKind(0).status(),
        NtStatus::STATUS_NOT_SUPPORTED
    );
    assert_eq!(
        ProtoError::Truncated { needed: 0, got: 0 }.status(),
        NtStatus::STATUS_DATA_ERROR
    );
    let w = ProtoError::BufferTooSmall { needed: 2, got: 1 };
    assert_eq!(w.status(), NtStatus::STATUS_BUFFER_TOO_SMALL);
    assert_eq!(w.reason(), MalformedReason::Other);
    assert_eq!(
        format!(
            "{}",
            ProtoError::ReplyFlag {
                expected_reply: true
            }
        ),
        "reply flag is clear, expected set"
    );
}

#[test]
fn status_classes() {
    assert_eq!(StatusClass::of(NtStatus::STATUS_SUCCESS), StatusClass::Ok);
    assert_eq!(StatusClass::of(QUEUE_FULL_STATUS), StatusClass::QueueFull);
    assert_eq!(StatusClass::of(PREMATURE_STATUS), StatusClass::NotReady);
    assert_eq!(
        StatusClass::of(NtStatus::STATUS_INSUFFICIENT_RESOURCES),
        StatusClass::Other
    );
    for s in MALFORMED_STATUSES {
        assert_eq!(StatusClass::of(*s), StatusClass::Malformed);
    }
}

#[test]
fn malformed_reasons_are_dense_and_named() {
    assert_eq!(MalformedReason::COUNT, 12);
    let mut names = std::collections::HashSet::new();
    for (i, r) in MalformedReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(MalformedReason::from_index(i), Some(*r));
        assert!(names.insert(r.name()));
    }
    assert_eq!(MalformedReason::from_index(MalformedReason::COUNT), None);
    assert_eq!(MalformedReason::Premature as u32, 9);
    assert_eq!(MalformedReason::BadBulkRange as u32, 11);
}

#[test]
fn open_enums_keep_unknown_values() {
    let k = MessageKind::new(0x1234);
    assert!(!k.is_known());
    assert_eq!(k.direction(), None);
    assert_eq!(format!("{k:?}"), "MessageKind(0x1234)");
    assert_eq!(format!("{:?}", MessageKind::ECHO), "ECHO");
    assert_eq!(MessageKind::NOTIFY.name(), Some("NOTIFY"));
    for k in MessageKind::KNOWN {
        assert!(k.direction().is_some());
    }
    assert!(MessageFlags::REPLY.is_reply());
    assert!(!MessageFlags::NONE.is_reply());
}

const V1_1: u32 = PROTOCOL_V1_1;

#[test]
fn bulk_messages_bytes_and_round_trips() {
    let offer = encode_guest(&GuestMessage::bulk_offer(
        V1_1,
        7,
        0xAABB_CCDD,
        0x2_0000,
        0x1_0000,
    ));
    assert_eq!(offer.len(), BULK_OFFER_SIZE);
    assert_eq!(BULK_OFFER_SIZE, 40);
    assert_eq!(
        &offer[0..8],
        &[0x01, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00]
    );
    assert_eq!(
        &offer[24..40],
        &[
            0xDD, 0xCC, 0xBB, 0xAA, // gpadl
            0x00, 0x00, 0x02, 0x00, // guest_to_host_len
            0x00, 0x00, 0x01, 0x00, // host_to_guest_len
            0, 0, 0, 0, // reserved
        ]
    );
    assert_eq!(
        parse_guest_message(&offer).map(|m| m.body),
        Ok(GuestBody::BulkOffer {
            gpadl: 0xAABB_CCDD,
            guest_to_host_len: 0x2_0000,
            host_to_guest_len: 0x1_0000
        })
    );
    let send = encode_guest(&GuestMessage::send_bulk(V1_1, 8, 4096, 20_000));
    assert_eq!(send.len(), BULK_REF_SIZE);
    assert_eq!(BULK_REF_SIZE, 32);
    assert_eq!(&send[4..6], &[0x05, 0x00]);
    assert_eq!(
        parse_guest_message(&send).map(|m| m.body),
        Ok(GuestBody::SendBulk {
            offset: 4096,
            len: 20_000
        })
    );
    let echo = encode_host(&HostMessage::echo_bulk(V1_1, 9, 0, MAX_BULK_PAYLOAD as u32));
    assert_eq!(&echo[4..6], &[0x03, 0x01]);
    let parsed = parse_host_message(&echo).expect("ECHO_BULK parses");
    assert_eq!(
        parsed.body,
        HostBody::EchoBulk {
            offset: 0,
            len: 65536
        }
    );
    assert_eq!(
        parse_session_message(&echo, SessionVersion::new(V1_1).expect("supported")),
        None,
        "ECHO_BULK takes the full parse"
    );
    let reply = encode_reply(&Reply::echo_bulk(V1_1, 9, 0, 65536));
    assert_eq!(reply.len(), BULK_REF_SIZE);
    assert_eq!(
        parse_reply(&reply, MessageKind::ECHO_BULK, 9).map(|r| r.body),
        Ok(ReplyBody::EchoBulk {
            offset: 0,
            len: 65536
        })
    );
    for kind in [MessageKind::BULK_OFFER, MessageKind::SEND_BULK] {
        let ok = encode_reply(&Reply::status_only(kind, V1_1, 3, NtStatus::STATUS_SUCCESS));
        assert_eq!(ok.len(), STATUS_REPLY_SIZE);
        assert!(parse_reply(&ok, kind, 3).is_ok());
    }
}

#[test]
fn bulk_kinds_need_1_1_and_sane_ranges() {
    // A 1.1 kind in a 1.0 message is unknown; its failure reply is still writable in 1.0.
    let mut echo = encode_host(&HostMessage::echo_bulk(V1_1, 1, 0, 8));
    echo[0..4].copy_from_slice(&V1.to_le_bytes());
    let err = parse_host_message(&echo).unwrap_err();
    assert_eq!(err, ProtoError::UnknownKind(0x0103));
    let failure = Reply::for_malformed(&echo, err.status());
    assert_eq!(failure.version, V1);
    let bytes = encode_reply(&failure);
    assert!(parse_reply(&bytes, MessageKind::ECHO_BULK, 1).is_ok());
    assert_eq!(
        HostMessage::echo_bulk(V1, 1, 0, 8).write(&mut [0u8; 64]),
        Err(ProtoError::UnknownKind(0x0103))
    );
    assert_eq!(
        Reply::echo_bulk(V1, 1, 0, 8).write(&mut [0u8; 64]),
        Err(ProtoError::UnknownKind(0x0103))
    );
    // Ranges: zero, too long, past u32.
    for (offset, len) in [(0, 0), (0, MAX_BULK_PAYLOAD as u32 + 1), (u32::MAX, 1)] {
        assert_eq!(
            GuestMessage::send_bulk(V1_1, 1, offset, len).write(&mut [0u8; 64]),
            Err(ProtoError::BadBulkReference { offset, len })
        );
    }
    let e = ProtoError::BadBulkReference { offset: 1, len: 0 };
    assert_eq!(e.status(), NtStatus::STATUS_DATA_ERROR);
    assert_eq!(e.reason(), MalformedReason::BadBulkRange);
    // An offer with an empty half, or halves past u32, or a reserved field set.
    for (g2h, h2g) in [(0, 1), (1, 0), (u32::MAX, 1)] {
        assert_eq!(
            GuestMessage::bulk_offer(V1_1, 1, 5, g2h, h2g).write(&mut [0u8; 64]),
            Err(ProtoError::BadBulkReference {
                offset: g2h,
                len: h2g
            })
        );
    }
    let mut offer = encode_guest(&GuestMessage::bulk_offer(V1_1, 1, 5, 1, 1));
    offer[36] = 1;
    assert_eq!(
        parse_guest_message(&offer),
        Err(ProtoError::ReservedNonZero { field: "reserved" })
    );
    // A bulk body of the wrong size.
    let mut short = raw(V1_1, MessageKind::SEND_BULK.get(), 0, 4, 0, 1);
    short.extend_from_slice(&[0; 4]);
    assert!(matches!(
        parse_guest_message(&short),
        Err(ProtoError::Truncated { .. })
    ));
}
