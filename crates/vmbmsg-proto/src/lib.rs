//! The vmbmsg protocols, defined once for the driver, the simulated host and `vmbctl`:
//!
//! * [`wire`]: the host ↔ guest messages carried in VMBus packets and their completions;
//! * [`ioctl`]: the IOCTL codes and buffers between `vmbctl` and the driver;
//! * [`guid`]: the device interface GUID and the VMBus channel interface type.
//!
//! `no_std`, no allocation, no `unsafe`. Every struct is `#[repr(C)]`, derives zerocopy's
//! `IntoBytes, FromBytes, Immutable, KnownLayout`, has its size asserted next to it and uses
//! little-endian integer types, so it is correct on any host and any buffer alignment.
//! Enumerations read from a peer are open enums: an unknown value parses and is reported as
//! unknown. Parsing never panics (property-tested on arbitrary bytes).
//!
//! # Wire protocol
//!
//! Every message, request or reply, is a 24-byte [`MessageHeader`](wire::MessageHeader)
//! followed by `payload_len` body bytes (little-endian throughout):
//!
//! | Offset | Field | Type | Meaning |
//! |---|---|---|---|
//! | 0 | `version` | u32 | protocol version the message is encoded in, `major << 16 \| minor` |
//! | 4 | `kind` | u16 | [`MessageKind`](wire::MessageKind), below |
//! | 6 | `flags` | u16 | bit 0 `REPLY`; other bits reserved, 0 |
//! | 8 | `payload_len` | u32 | body bytes after the header, at most `MAX_PAYLOAD` = 16384 |
//! | 12 | `status` | i32 | NTSTATUS: 0 in requests, the completion status in replies |
//! | 16 | `id` | u64 | request id chosen by the sender, echoed by the reply |
//!
//! The largest message is `MAX_MESSAGE` = 24 + 16384 = 16408 bytes (the channel's maximum
//! packet size, a multiple of 8); replies fit in it too because the status is in the header.
//! Requests travel as in-band packets with a completion requested; the reply is the
//! completion payload.
//!
//! | Kind | Value | Direction | Request body | Request size | Reply body on success | Reply size |
//! |---|---|---|---|---|---|---|
//! | `NEGOTIATE` | `0x0001` | guest → host | `min_version: u32, max_version: u32` | 32 | `version: u32, reserved: u32` (the chosen version); rejection: status `STATUS_REVISION_MISMATCH`, no body | 32 (rejection 24) |
//! | `SEND` | `0x0002` | guest → host | payload, 0..=16384 bytes | 24..=16408 | none; the host's status | 24 |
//! | `PING` | `0x0003` | guest → host | `nonce: u64` | 32 | `nonce: u64` (the same) | 32 |
//! | `ECHO` | `0x0101` | host → guest | payload, 0..=16384 bytes | 24..=16408 | the same payload | 24..=16408 |
//! | `NOTIFY` | `0x0102` | host → guest | payload, 0..=16384 bytes | 24..=16408 | none; `STATUS_SUCCESS`, or `STATUS_QUOTA_EXCEEDED` when the guest's queue is full | 24 |
//! | `BULK_OFFER` | `0x0004` | guest → host | 1.1: `gpadl: u32, guest_to_host_len: u32, host_to_guest_len: u32, reserved: u32` (the bulk area) | 40 | none; the host's status (it may use the area only after success) | 24 |
//! | `SEND_BULK` | `0x0005` | guest → host | 1.1: `offset: u32, len: u32`, the payload in the guest's half of the bulk area | 32 | none; the host's status | 24 |
//! | `ECHO_BULK` | `0x0103` | host → guest | 1.1: `offset: u32, len: u32`, the payload in the host's half | 32 | the same `offset, len`: the echo lies there | 32 |
//!
//! **Reply rule.** A reply has the REPLY flag, the request's kind and id, and a status. With a
//! success status it carries the body above; with a failure status it has no body
//! (`payload_len` 0), whatever the kind. A message the guest cannot parse is completed with a
//! bodiless failure reply echoing the raw kind and id
//! ([`Reply::for_malformed`](wire::Reply::for_malformed)) and the status of
//! [`ProtoError::status`](wire::ProtoError::status): `STATUS_DATA_ERROR` (framing, lengths,
//! reserved fields), `STATUS_REVISION_MISMATCH` (version), `STATUS_NOT_SUPPORTED` (unknown
//! kind), `STATUS_INVALID_DEVICE_REQUEST` (wrong direction). An ECHO or NOTIFY that arrives
//! before negotiation succeeded is completed with `STATUS_INVALID_DEVICE_STATE`.
//!
//! **Versions.** `PROTOCOL_V1` = 1.0 = `0x00010000` and `PROTOCOL_V1_1` = 1.1 = `0x00010001`;
//! this guest supports `SUPPORTED_MIN..=SUPPORTED_MAX` = V1..=V1_1. When the channel opens, the guest sends NEGOTIATE
//! as a synchronous request at PASSIVE_LEVEL with a 32-byte completion buffer, proposing
//! its range. The host answers with one version inside the range
//! ([`choose_version`](wire::choose_version): the newest both support) or rejects with
//! `STATUS_REVISION_MISMATCH`; the guest refuses a version outside its proposal
//! ([`parse_negotiate_reply`](wire::parse_negotiate_reply)). NEGOTIATE and its reply always
//! carry version V1 in the header (the negotiate exchange is frozen); every later message
//! carries the negotiated version. A header version this crate does not support is rejected
//! by every parser, and a 1.1 kind in a 1.0 message is an unknown kind.
//!
//! **Bulk transfers (1.1).** A payload larger than one ring packet travels through guest memory
//! the host maps, a GPADL. Right after a 1.1 negotiation, before any data message, the guest
//! creates its bulk area and offers it with BULK_OFFER (synchronous, like NEGOTIATE): its first
//! `guest_to_host_len` bytes are the guest's half, the next `host_to_guest_len` bytes the
//! host's. The sender of a bulk message owns the range it names, from the moment it sends the
//! message until the reply arrives: the guest writes a SEND_BULK payload into its half and does
//! not touch it until the host's reply; the host writes an ECHO_BULK payload into its half and
//! the guest, before replying, reads it and writes the echo back over it. Payloads are 1..=
//! `MAX_BULK_PAYLOAD` = 65536 bytes (four ring packets' worth); smaller ones (≤ 16384) still
//! travel in the ring as SEND and ECHO. A range outside the sender's half, or a bulk message on
//! a session without an accepted offer, is refused with `STATUS_DATA_ERROR`. The guest deletes
//! the GPADL when the channel closes; the host must not use it after the close.
//!
//! # IOCTL interface
//!
//! All codes are `CTL_CODE(FILE_DEVICE_VMBMSG = 0x8A4D, function, METHOD_BUFFERED, access)`.
//! Queries and RECV need read access; RESET_STATS, PING and SEND change state or talk to the
//! host and need write access. Output sizes are what the driver writes (`Information`); the
//! output buffer must be at least that large.
//!
//! | Code | Value | Function | Access | Input | Output | Statuses |
//! |---|---|---|---|---|---|---|
//! | `IOCTL_VMBMSG_GET_INFO` | `0x8A4D6000` | `0x800` | read | none | `InfoOut`, 40 bytes | `STATUS_SUCCESS`, `STATUS_BUFFER_TOO_SMALL` |
//! | `IOCTL_VMBMSG_GET_STATS` | `0x8A4D6004` | `0x801` | read | none | `StatsOut`, 328 bytes | `STATUS_SUCCESS`, `STATUS_BUFFER_TOO_SMALL` |
//! | `IOCTL_VMBMSG_RESET_STATS` | `0x8A4DA008` | `0x802` | write | none | none | `STATUS_SUCCESS` |
//! | `IOCTL_VMBMSG_PING` | `0x8A4DA00C` | `0x803` | write | none | `PingOut`, 24 bytes (the host's status inside) | `STATUS_SUCCESS`, `STATUS_BUFFER_TOO_SMALL`, `STATUS_DEVICE_NOT_READY` (channel not READY), `STATUS_INSUFFICIENT_RESOURCES`, `STATUS_INVALID_NETWORK_RESPONSE` (bad reply), `STATUS_CANCELLED` |
//! | `IOCTL_VMBMSG_SEND` | `0x8A4DA010` | `0x804` | write | `SendIn` (8 bytes) + exactly `payload_len` bytes, at most GET_INFO's `max_payload` (16384; 65536 with a bulk area) | `SendOut`, 8 bytes (the host's status inside) | `STATUS_SUCCESS`, `STATUS_BUFFER_TOO_SMALL`, `STATUS_INVALID_PARAMETER` (length mismatch, payload too large, flags), `STATUS_DEVICE_NOT_READY`, `STATUS_DEVICE_BUSY` (every bulk slot in use: retry), `STATUS_INSUFFICIENT_RESOURCES`, `STATUS_INVALID_NETWORK_RESPONSE`, `STATUS_CANCELLED` |
//! | `IOCTL_VMBMSG_RECV` | `0x8A4D6014` | `0x805` | read | none | `RecvOut` (24 bytes) + payload; buffer at least 16408 bytes | `STATUS_SUCCESS` (pends while the queue is empty), `STATUS_BUFFER_TOO_SMALL`, `STATUS_QUOTA_EXCEEDED` (too many parked RECVs), `STATUS_CANCELLED` |
//!
//! Any other code completes with `STATUS_INVALID_DEVICE_REQUEST`. Buffer errors come from
//! [`IoctlError::status`](ioctl::IoctlError::status); the others are the driver's channel
//! and request states: [`ioctl::NOT_READY_STATUS`], [`ioctl::BAD_REPLY_STATUS`],
//! [`ioctl::TOO_MANY_PARKED_STATUS`], `STATUS_INSUFFICIENT_RESOURCES` (no packet or queue
//! entry could be allocated) and `STATUS_CANCELLED` (the request was cancelled or the channel
//! closed while it was pending). PING and SEND succeed whenever the host answered with a
//! well-formed reply; the host's own status is in `PingOut` / `SendOut`. A pending PING, SEND
//! or RECV can be cancelled (`CancelIoEx`, or its process exiting): it completes at once with
//! `STATUS_CANCELLED`. A cancelled PING or SEND has already gone to the host, which cannot be
//! undone: its transaction ends when the host answers or the channel closes, and is then
//! counted in `ping_failed` / `send_failed`, whatever the answer. The ABI version is 1 ([`ioctl::ABI_VERSION`], reported by GET_INFO).
//!
//! # GUIDs
//!
//! * Device interface: `GUID_DEVINTERFACE_VMBMSG` = `{FE1E9ED9-8391-473D-AA69-8198762F76C5}`.
//! * VMBus channel interface type: `VMBMSG_INTERFACE_TYPE` =
//!   `{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}`, INF hardware id
//!   `VMBUS\{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}`.
#![no_std]
#![forbid(unsafe_code)]

mod open_enum;

pub mod guid;
pub mod ioctl;
pub mod wire;

pub use guid::GUID_DEVINTERFACE_VMBMSG;
pub use guid::Guid;
pub use guid::VMBMSG_INTERFACE_TYPE;
pub use ntstatus::NtStatus;

#[cfg(test)]
mod doc_tables {
    //! The release notes copy the crate-level tables: check that they say what the code does.

    extern crate std;
    use std::string::String;
    use std::string::ToString;
    use std::vec::Vec;

    use crate::guid;
    use crate::ioctl;
    use crate::ioctl::IoctlCode;
    use crate::wire;
    use crate::wire::MessageKind;

    /// The cells of the crate-doc table rows whose first cell is `` `name` ``.
    fn row(name: &str) -> Vec<String> {
        let source = include_str!("lib.rs");
        let prefix = std::format!("//! | `{name}` |");
        let line = source
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no table row for {name}"));
        line.trim_start_matches("//!")
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| String::from(c.trim()))
            .collect()
    }

    fn hex_cell(cell: &str) -> u32 {
        let digits = cell.trim_matches('`').trim_start_matches("0x");
        u32::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("{cell}: {e}"))
    }

    #[test]
    fn protocol_table_matches_kinds_and_sizes() {
        assert_eq!(MessageKind::KNOWN.len(), 8);
        for kind in MessageKind::KNOWN {
            let name = kind.name().unwrap_or_default();
            let cells = row(name);
            assert_eq!(hex_cell(&cells[1]), u32::from(kind.get()), "{name}");
            let direction = match kind.direction() {
                Some(wire::Direction::GuestToHost) => "guest → host",
                Some(wire::Direction::HostToGuest) => "host → guest",
                None => unreachable!(),
            };
            assert_eq!(cells[2], direction, "{name}");
        }
        assert_eq!(
            row("NEGOTIATE")[4],
            wire::NEGOTIATE_REQUEST_SIZE.to_string()
        );
        assert_eq!(
            row("NEGOTIATE")[6],
            std::format!(
                "{} (rejection {})",
                wire::NEGOTIATE_REPLY_SIZE,
                wire::STATUS_REPLY_SIZE
            )
        );
        assert_eq!(row("PING")[4], wire::PING_SIZE.to_string());
        assert_eq!(row("PING")[6], wire::PING_SIZE.to_string());
        let variable = std::format!("{}..={}", wire::HEADER_SIZE, wire::MAX_MESSAGE);
        for name in ["SEND", "ECHO", "NOTIFY"] {
            assert_eq!(row(name)[4], variable, "{name}");
        }
        assert_eq!(row("ECHO")[6], variable);
        assert_eq!(row("SEND")[6], wire::STATUS_REPLY_SIZE.to_string());
        assert_eq!(row("NOTIFY")[6], wire::STATUS_REPLY_SIZE.to_string());
        assert_eq!(row("BULK_OFFER")[4], wire::BULK_OFFER_SIZE.to_string());
        assert_eq!(row("BULK_OFFER")[6], wire::STATUS_REPLY_SIZE.to_string());
        assert_eq!(row("SEND_BULK")[4], wire::BULK_REF_SIZE.to_string());
        assert_eq!(row("SEND_BULK")[6], wire::STATUS_REPLY_SIZE.to_string());
        assert_eq!(row("ECHO_BULK")[4], wire::BULK_REF_SIZE.to_string());
        assert_eq!(row("ECHO_BULK")[6], wire::BULK_REF_SIZE.to_string());
        assert_eq!(wire::MAX_BULK_PAYLOAD, 65536);
        assert_eq!(wire::PROTOCOL_V1_1, 0x0001_0001);
        // The header table and the limits the text quotes.
        assert_eq!(wire::HEADER_SIZE, 24);
        assert_eq!(wire::MAX_PAYLOAD, 16384);
        assert_eq!(wire::MAX_MESSAGE, 16408);
        assert_eq!(wire::PROTOCOL_V1, 0x0001_0000);
    }

    #[test]
    fn ioctl_table_matches_codes_and_sizes() {
        for code in IoctlCode::ALL {
            let cells = row(code.name());
            assert_eq!(hex_cell(&cells[1]), code.code(), "{}", code.name());
            assert_eq!(hex_cell(&cells[2]), code.function(), "{}", code.name());
            let access = match code.access() {
                ioctl::FILE_READ_ACCESS => "read",
                ioctl::FILE_WRITE_ACCESS => "write",
                other => panic!("unexpected access {other}"),
            };
            assert_eq!(cells[3], access, "{}", code.name());
        }
        let out = |name: &str| row(name)[5].clone();
        assert!(out("IOCTL_VMBMSG_GET_INFO").starts_with(&std::format!(
            "`InfoOut`, {} bytes",
            size_of::<ioctl::InfoOut>()
        )));
        assert!(out("IOCTL_VMBMSG_GET_STATS").starts_with(&std::format!(
            "`StatsOut`, {} bytes",
            size_of::<ioctl::StatsOut>()
        )));
        assert!(out("IOCTL_VMBMSG_PING").starts_with(&std::format!(
            "`PingOut`, {} bytes",
            size_of::<ioctl::PingOut>()
        )));
        assert!(out("IOCTL_VMBMSG_SEND").starts_with(&std::format!(
            "`SendOut`, {} bytes",
            size_of::<ioctl::SendOut>()
        )));
        assert!(
            out("IOCTL_VMBMSG_RECV")
                .contains(&std::format!("at least {} bytes", ioctl::RECV_OUT_MAX))
        );
        let statuses = |name: &str| row(name)[6].clone();
        for name in ["IOCTL_VMBMSG_PING", "IOCTL_VMBMSG_SEND"] {
            for s in [ioctl::NOT_READY_STATUS, ioctl::BAD_REPLY_STATUS] {
                let n = s.name().unwrap_or_default();
                assert!(statuses(name).contains(n), "{name} lacks {n}");
            }
        }
        let n = ioctl::TOO_MANY_PARKED_STATUS.name().unwrap_or_default();
        assert!(statuses("IOCTL_VMBMSG_RECV").contains(n));
        for code in IoctlCode::ALL {
            let too_small = crate::NtStatus::STATUS_BUFFER_TOO_SMALL
                .name()
                .unwrap_or_default();
            let needs_buffers = code.min_input_len() + code.min_output_len() > 0;
            assert_eq!(
                statuses(code.name()).contains(too_small),
                needs_buffers,
                "{}",
                code.name()
            );
        }
        assert!(row("IOCTL_VMBMSG_SEND")[4].starts_with(&std::format!(
            "`SendIn` ({} bytes)",
            size_of::<ioctl::SendIn>()
        )));
    }

    #[test]
    fn guid_lines_match() {
        let source = include_str!("lib.rs");
        assert!(source.contains(&std::format!(
            "`GUID_DEVINTERFACE_VMBMSG` = `{}`",
            guid::GUID_DEVINTERFACE_VMBMSG
        )));
        assert!(source.contains(&std::format!(
            "`VMBMSG_INTERFACE_TYPE` =\n//!   `{}`",
            guid::VMBMSG_INTERFACE_TYPE
        )));
        assert!(source.contains(&std::format!("`{}`.", guid::VMBMSG_HARDWARE_ID)));
    }
}
