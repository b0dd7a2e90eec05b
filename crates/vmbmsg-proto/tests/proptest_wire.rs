//! Property tests of the wire protocol: parsing is total (never panics), every well-formed
//! message round-trips, and truncation, length lies and unknown kinds are rejected precisely.

use proptest::collection::vec;
use proptest::prelude::*;
use vmbmsg_proto::NtStatus;
use vmbmsg_proto::wire::GuestBody;
use vmbmsg_proto::wire::GuestMessage;
use vmbmsg_proto::wire::HEADER_SIZE;
use vmbmsg_proto::wire::HostBody;
use vmbmsg_proto::wire::HostMessage;
use vmbmsg_proto::wire::MAX_BULK_PAYLOAD;
use vmbmsg_proto::wire::MAX_MESSAGE;
use vmbmsg_proto::wire::MAX_PAYLOAD;
use vmbmsg_proto::wire::MessageKind;
use vmbmsg_proto::wire::PROTOCOL_V1;
use vmbmsg_proto::wire::PROTOCOL_V1_1;
use vmbmsg_proto::wire::ProtoError;
use vmbmsg_proto::wire::Reply;
use vmbmsg_proto::wire::ReplyBody;
use vmbmsg_proto::wire::parse_guest_message;
use vmbmsg_proto::wire::parse_host_message;
use vmbmsg_proto::wire::parse_negotiate_reply;
use vmbmsg_proto::wire::parse_ping_reply;
use vmbmsg_proto::wire::parse_reply;

/// A well-formed message with owned payload, and how to parse it back.
#[derive(Clone, Debug)]
enum Msg {
    Host {
        echo: bool,
        id: u64,
        payload: Vec<u8>,
    },
    /// An ECHO_BULK (1.1).
    HostBulk {
        id: u64,
        offset: u32,
        len: u32,
    },
    Guest(GuestOwned),
    Reply(ReplyOwned),
}

#[derive(Clone, Debug)]
enum GuestOwned {
    Negotiate {
        id: u64,
        min: u32,
        max: u32,
    },
    Send {
        id: u64,
        payload: Vec<u8>,
    },
    Ping {
        id: u64,
        nonce: u64,
    },
    BulkOffer {
        id: u64,
        gpadl: u32,
        g2h: u32,
        h2g: u32,
    },
    SendBulk {
        id: u64,
        offset: u32,
        len: u32,
    },
}

#[derive(Clone, Debug)]
struct ReplyOwned {
    kind: MessageKind,
    id: u64,
    status: NtStatus,
    body: BodyOwned,
}

#[derive(Clone, Debug)]
enum BodyOwned {
    Empty,
    Negotiate(u32),
    Ping(u64),
    Echo(Vec<u8>),
    EchoBulk(u32, u32),
}

impl GuestOwned {
    fn view(&self) -> GuestMessage<'_> {
        match self {
            Self::Negotiate { id, min, max } => GuestMessage::negotiate(*id, *min, *max),
            Self::Send { id, payload } => GuestMessage::send(PROTOCOL_V1, *id, payload),
            Self::Ping { id, nonce } => GuestMessage::ping(PROTOCOL_V1, *id, *nonce),
            Self::BulkOffer {
                id,
                gpadl,
                g2h,
                h2g,
            } => GuestMessage::bulk_offer(PROTOCOL_V1_1, *id, *gpadl, *g2h, *h2g),
            Self::SendBulk { id, offset, len } => {
                GuestMessage::send_bulk(PROTOCOL_V1_1, *id, *offset, *len)
            }
        }
    }
}

impl ReplyOwned {
    fn view(&self) -> Reply<'_> {
        // A success reply of a 1.1 kind is in 1.1; failures may be in 1.0 whatever the kind.
        let version = if self.status.is_success() {
            self.kind.since()
        } else {
            PROTOCOL_V1
        };
        let body = match &self.body {
            BodyOwned::Empty => ReplyBody::Empty,
            BodyOwned::Negotiate(version) => ReplyBody::Negotiate { version: *version },
            BodyOwned::Ping(nonce) => ReplyBody::Ping { nonce: *nonce },
            BodyOwned::Echo(payload) => ReplyBody::Echo { payload },
            BodyOwned::EchoBulk(offset, len) => ReplyBody::EchoBulk {
                offset: *offset,
                len: *len,
            },
        };
        Reply {
            kind: self.kind,
            version,
            id: self.id,
            status: self.status,
            body,
        }
    }
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = match self {
            Self::Host { echo, id, payload } => {
                let m = if *echo {
                    HostMessage::echo(PROTOCOL_V1, *id, payload)
                } else {
                    HostMessage::notify(PROTOCOL_V1, *id, payload)
                };
                assert_eq!(m.encoded_len(), HEADER_SIZE + payload.len());
                m.write(&mut buf)
            }
            Self::HostBulk { id, offset, len } => {
                HostMessage::echo_bulk(PROTOCOL_V1_1, *id, *offset, *len).write(&mut buf)
            }
            Self::Guest(g) => g.view().write(&mut buf),
            Self::Reply(r) => r.view().write(&mut buf),
        };
        let n = n.expect("a well-formed message is writable");
        buf.truncate(n);
        buf
    }

    fn kind(&self) -> MessageKind {
        match self {
            Self::Host { echo: true, .. } => MessageKind::ECHO,
            Self::Host { echo: false, .. } => MessageKind::NOTIFY,
            Self::HostBulk { .. } => MessageKind::ECHO_BULK,
            Self::Guest(g) => g.view().kind(),
            Self::Reply(r) => r.kind,
        }
    }

    fn id(&self) -> u64 {
        match self {
            Self::Host { id, .. }
            | Self::HostBulk { id, .. }
            | Self::Guest(
                GuestOwned::Negotiate { id, .. }
                | GuestOwned::Send { id, .. }
                | GuestOwned::Ping { id, .. }
                | GuestOwned::BulkOffer { id, .. }
                | GuestOwned::SendBulk { id, .. },
            )
            | Self::Reply(ReplyOwned { id, .. }) => *id,
        }
    }

    /// Parses `bytes` with the parser for this message's direction.
    fn parse(&self, bytes: &[u8]) -> Result<(), ProtoError> {
        match self {
            Self::Host { .. } | Self::HostBulk { .. } => parse_host_message(bytes).map(drop),
            Self::Guest(_) => parse_guest_message(bytes).map(drop),
            Self::Reply(r) => parse_reply(bytes, r.kind, r.id).map(drop),
        }
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..=64),
        1 => vec(any::<u8>(), MAX_PAYLOAD - 8..=MAX_PAYLOAD),
    ]
}

/// A bulk reference the parsers accept: 1..=MAX_BULK_PAYLOAD bytes, its end within u32.
fn bulk_ref() -> impl Strategy<Value = (u32, u32)> {
    (
        1u32..=u32::try_from(MAX_BULK_PAYLOAD).unwrap(),
        any::<u32>(),
    )
        .prop_map(|(len, offset)| (offset.min(u32::MAX - len), len))
}

fn version_range() -> impl Strategy<Value = (u32, u32)> {
    (1u32.., 1u32..).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn failure_status() -> impl Strategy<Value = NtStatus> {
    (i32::MIN..0).prop_map(NtStatus)
}

fn reply() -> impl Strategy<Value = ReplyOwned> {
    let any_kind = prop::sample::select(MessageKind::KNOWN.to_vec());
    let failure =
        (any_kind, any::<u64>(), failure_status()).prop_map(|(kind, id, status)| ReplyOwned {
            kind,
            id,
            status,
            body: BodyOwned::Empty,
        });
    let ok = |kind: MessageKind, id: u64, body: BodyOwned| ReplyOwned {
        kind,
        id,
        status: NtStatus::STATUS_SUCCESS,
        body,
    };
    prop_oneof![
        failure,
        (any::<u64>(), 1u32..).prop_map(move |(id, v)| ok(
            MessageKind::NEGOTIATE,
            id,
            BodyOwned::Negotiate(v)
        )),
        (any::<u64>(), any::<u64>()).prop_map(move |(id, n)| ok(
            MessageKind::PING,
            id,
            BodyOwned::Ping(n)
        )),
        (any::<u64>(), payload()).prop_map(move |(id, p)| ok(
            MessageKind::ECHO,
            id,
            BodyOwned::Echo(p)
        )),
        (any::<u64>(), 0..4usize).prop_map(move |(id, which)| {
            let kind = [
                MessageKind::SEND,
                MessageKind::NOTIFY,
                MessageKind::BULK_OFFER,
                MessageKind::SEND_BULK,
            ][which];
            ok(kind, id, BodyOwned::Empty)
        }),
        (any::<u64>(), bulk_ref()).prop_map(move |(id, (offset, len))| ok(
            MessageKind::ECHO_BULK,
            id,
            BodyOwned::EchoBulk(offset, len)
        )),
    ]
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (any::<bool>(), any::<u64>(), payload()).prop_map(|(echo, id, payload)| Msg::Host {
            echo,
            id,
            payload
        }),
        (any::<u64>(), version_range())
            .prop_map(|(id, (min, max))| Msg::Guest(GuestOwned::Negotiate { id, min, max })),
        (any::<u64>(), payload())
            .prop_map(|(id, payload)| Msg::Guest(GuestOwned::Send { id, payload })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, nonce)| Msg::Guest(GuestOwned::Ping { id, nonce })),
        (any::<u64>(), bulk_ref()).prop_map(|(id, (offset, len))| Msg::HostBulk {
            id,
            offset,
            len
        }),
        (any::<u64>(), any::<u32>(), 1u32..=1 << 30, 1u32..=1 << 30).prop_map(
            |(id, gpadl, g2h, h2g)| Msg::Guest(GuestOwned::BulkOffer {
                id,
                gpadl,
                g2h,
                h2g
            })
        ),
        (any::<u64>(), bulk_ref())
            .prop_map(|(id, (offset, len))| Msg::Guest(GuestOwned::SendBulk { id, offset, len })),
        reply().prop_map(Msg::Reply),
    ]
}

/// Runs every parser on `bytes`; whatever parses must re-encode to exactly `bytes`.
fn parse_everything(bytes: &[u8], kind: MessageKind, id: u64) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    if let Ok(m) = parse_host_message(bytes) {
        let n = m.write(&mut buf).expect("a parsed message is writable");
        assert_eq!(&buf[..n], bytes);
    }
    if let Ok(m) = parse_guest_message(bytes) {
        let n = m.write(&mut buf).expect("a parsed message is writable");
        assert_eq!(&buf[..n], bytes);
    }
    if let Ok(r) = parse_reply(bytes, kind, id) {
        let n = r.write(&mut buf).expect("a parsed reply is writable");
        assert_eq!(&buf[..n], bytes);
    }
    let _ = parse_negotiate_reply(bytes, id, 1, u32::MAX);
    let _ = parse_ping_reply(bytes, id, id);
}

/// The kind and id in a header, when there is one, so that `parse_reply` gets past them.
fn header_kind_id(bytes: &[u8]) -> (MessageKind, u64) {
    vmbmsg_proto::wire::peek_header(bytes).map_or((MessageKind::ECHO, 0), |h| (h.kind, h.id.get()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..=2 * HEADER_SIZE + 64)) {
        let (kind, id) = header_kind_id(&bytes);
        parse_everything(&bytes, kind, id);
        for known in MessageKind::KNOWN {
            parse_everything(&bytes, *known, id);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = msg.encode();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        parse_everything(&bytes, msg.kind(), msg.id());
        let (kind, id) = header_kind_id(&bytes);
        parse_everything(&bytes, kind, id);
    }

    #[test]
    fn well_formed_messages_round_trip(msg in message()) {
        let bytes = msg.encode();
        prop_assert!(bytes.len() <= MAX_MESSAGE);
        match &msg {
            Msg::Host { echo, id, payload } => {
                let parsed = parse_host_message(&bytes).unwrap();
                prop_assert_eq!(parsed.id, *id);
                prop_assert_eq!(parsed.version, PROTOCOL_V1);
                let expected = if *echo {
                    HostBody::Echo { payload }
                } else {
                    HostBody::Notify { payload }
                };
                prop_assert_eq!(parsed.body, expected);
            }
            Msg::HostBulk { id, offset, len } => {
                let parsed = parse_host_message(&bytes).unwrap();
                prop_assert_eq!(parsed.id, *id);
                prop_assert_eq!(parsed.version, PROTOCOL_V1_1);
                prop_assert_eq!(parsed.body, HostBody::EchoBulk { offset: *offset, len: *len });
            }
            Msg::Guest(g) => {
                let parsed = parse_guest_message(&bytes).unwrap();
                prop_assert_eq!(parsed, g.view());
                prop_assert_eq!(bytes.len(), g.view().encoded_len());
                if let GuestBody::Send { payload } = parsed.body {
                    prop_assert_eq!(bytes.len(), HEADER_SIZE + payload.len());
                }
            }
            Msg::Reply(r) => {
                let parsed = parse_reply(&bytes, r.kind, r.id).unwrap();
                prop_assert_eq!(parsed, r.view());
                prop_assert_eq!(bytes.len(), r.view().encoded_len());
            }
        }
    }

    #[test]
    fn any_truncation_is_rejected(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = msg.encode();
        let n = cut.index(bytes.len()); // 0..len: always strictly shorter
        let err = msg.parse(&bytes[..n]).unwrap_err();
        if n < HEADER_SIZE {
            prop_assert_eq!(err, ProtoError::Truncated { needed: HEADER_SIZE, got: n });
        } else {
            let header = u32::try_from(bytes.len() - HEADER_SIZE).unwrap();
            prop_assert_eq!(err, ProtoError::LengthMismatch { header, actual: n - HEADER_SIZE });
        }
    }

    #[test]
    fn trailing_bytes_are_rejected(msg in message(), extra in vec(any::<u8>(), 1..16)) {
        let mut bytes = msg.encode();
        let actual = bytes.len() - HEADER_SIZE + extra.len();
        bytes.extend_from_slice(&extra);
        let err = msg.parse(&bytes).unwrap_err();
        let is_length_mismatch = matches!(err, ProtoError::LengthMismatch { actual: a, .. } if a == actual);
        prop_assert!(is_length_mismatch, "{:?}", err);
    }

    #[test]
    fn header_length_field_must_match(msg in message(), declared in any::<u32>()) {
        let mut bytes = msg.encode();
        let actual = bytes.len() - HEADER_SIZE;
        prop_assume!(usize::try_from(declared).unwrap() != actual);
        bytes[8..12].copy_from_slice(&declared.to_le_bytes());
        let err = msg.parse(&bytes).unwrap_err();
        if usize::try_from(declared).unwrap() > MAX_PAYLOAD {
            let is_too_large = matches!(err, ProtoError::PayloadTooLarge { .. });
            prop_assert!(is_too_large, "{:?}", err);
        } else {
            prop_assert_eq!(err, ProtoError::LengthMismatch { header: declared, actual });
        }
    }

    #[test]
    fn unknown_kinds_are_rejected(msg in message(), kind in any::<u16>()) {
        let kind = MessageKind::new(kind);
        prop_assume!(!kind.is_known());
        let mut bytes = msg.encode();
        bytes[4..6].copy_from_slice(&kind.get().to_le_bytes());
        match &msg {
            Msg::Host { .. } | Msg::HostBulk { .. } | Msg::Guest(_) => {
                prop_assert_eq!(parse_host_message(&bytes), Err(ProtoError::UnknownKind(kind.get())));
                prop_assert_eq!(parse_guest_message(&bytes), Err(ProtoError::UnknownKind(kind.get())));
            }
            Msg::Reply(r) => {
                prop_assert_eq!(
                    parse_reply(&bytes, r.kind, r.id),
                    Err(ProtoError::KindMismatch { expected: r.kind, got: kind })
                );
            }
        }
    }

    #[test]
    fn requests_parse_only_in_their_direction(msg in message()) {
        let bytes = msg.encode();
        match &msg {
            Msg::Host { .. } | Msg::HostBulk { .. } => {
                let err = parse_guest_message(&bytes).unwrap_err();
                prop_assert_eq!(err, ProtoError::WrongDirection { kind: msg.kind() });
            }
            Msg::Guest(_) => {
                let err = parse_host_message(&bytes).unwrap_err();
                prop_assert_eq!(err, ProtoError::WrongDirection { kind: msg.kind() });
            }
            Msg::Reply(_) => {
                let expected = ProtoError::ReplyFlag { expected_reply: false };
                prop_assert_eq!(parse_host_message(&bytes).unwrap_err(), expected);
                prop_assert_eq!(parse_guest_message(&bytes).unwrap_err(), expected);
            }
        }
    }

    #[test]
    fn parse_errors_have_malformed_statuses(bytes in vec(any::<u8>(), 0..=64)) {
        for err in [parse_host_message(&bytes).err(), parse_guest_message(&bytes).err()]
            .into_iter()
            .flatten()
        {
            prop_assert_eq!(
                vmbmsg_proto::wire::StatusClass::of(err.status()),
                vmbmsg_proto::wire::StatusClass::Malformed
            );
            prop_assert!(err.reason().index() < vmbmsg_proto::wire::MalformedReason::COUNT);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The 1.1 kinds do not exist in 1.0: a request (or success reply) of one in a 1.0 header
    /// is an unknown kind, answered as such; a failure reply may still carry it.
    #[test]
    fn bulk_kinds_are_unknown_in_1_0(msg in message()) {
        let kind = msg.kind();
        prop_assume!(kind.since() == PROTOCOL_V1_1);
        let failure = matches!(&msg, Msg::Reply(r) if !r.status.is_success());
        let mut bytes = msg.encode();
        bytes[0..4].copy_from_slice(&PROTOCOL_V1.to_le_bytes());
        if failure {
            prop_assert_eq!(msg.parse(&bytes), Ok(()));
        } else {
            prop_assert_eq!(msg.parse(&bytes), Err(ProtoError::UnknownKind(kind.get())));
        }
    }

    /// A bulk reference that cannot describe a range is refused by parser and writer alike.
    #[test]
    fn bad_bulk_references_are_rejected(id in any::<u64>(), offset in any::<u32>(), len in any::<u32>()) {
        let usable = len != 0
            && usize::try_from(len).unwrap() <= MAX_BULK_PAYLOAD
            && offset.checked_add(len).is_some();
        prop_assume!(!usable);
        let mut buf = vec![0u8; MAX_MESSAGE];
        let expected = Err(ProtoError::BadBulkReference { offset, len });
        prop_assert_eq!(GuestMessage::send_bulk(PROTOCOL_V1_1, id, offset, len).write(&mut buf), expected);
        prop_assert_eq!(HostMessage::echo_bulk(PROTOCOL_V1_1, id, offset, len).write(&mut buf), expected);
        // The same bytes, written by hand, do not parse.
        let good = HostMessage::echo_bulk(PROTOCOL_V1_1, id, 0, 1);
        let n = good.write(&mut buf).unwrap();
        buf[24..28].copy_from_slice(&offset.to_le_bytes());
        buf[28..32].copy_from_slice(&len.to_le_bytes());
        prop_assert_eq!(
            parse_host_message(&buf[..n]).map(drop),
            Err(ProtoError::BadBulkReference { offset, len })
        );
    }
}
