//! Target (a): every parser of `vmbmsg-proto` on the same raw bytes.
//!
//! Checks: no parser panics; a successful parse re-encodes (with the crate's own writer) to
//! exactly the input bytes; the failure reply the driver builds for an unparsable message
//! always fits [`STATUS_REPLY_SIZE`] and parses back as a reply; the IOCTL buffer parsers
//! round-trip the same way.

use vmbmsg_proto::ioctl::{
    InfoOut, IoctlCode, PingOut, SendOut, StatsOut, parse_recv_output, parse_send_input,
    read_output, write_recv_output, write_send_input,
};
use vmbmsg_proto::wire::{
    HostBody, MessageKind, NegotiateOutcome, Reply, STATUS_REPLY_SIZE, parse_guest_message,
    parse_host_message, parse_negotiate_reply, parse_ping_reply, parse_reply, peek_header,
};

/// Re-encodes with `write` into a buffer of exactly `len` bytes and checks it equals `data`;
/// also checks that a buffer one byte short is refused without a panic.
fn round_trip(data: &[u8], len: usize, write: impl Fn(&mut [u8]) -> Result<usize, String>) {
    assert_eq!(len, data.len(), "encoded_len of a parsed message");
    let mut buf = vec![0u8; len];
    let n = write(&mut buf).unwrap_or_else(|e| panic!("re-encoding a parsed message: {e}"));
    assert_eq!(&buf[..n], data, "parse -> write is the identity");
    if len > 0 {
        let mut short = vec![0u8; len - 1];
        assert!(write(&mut short).is_err(), "a short buffer is refused");
    }
}

/// One run of target (a).
pub fn run(data: &[u8]) {
    let header = peek_header(data);

    // Host -> guest requests (what the driver's packet callback parses).
    match parse_host_message(data) {
        Ok(m) => {
            round_trip(data, m.encoded_len(), |b| {
                m.write(b).map_err(|e| e.to_string())
            });
            // The driver's answers to it are always writable.
            let echo = match m.body {
                HostBody::Echo { payload } | HostBody::Notify { payload } => {
                    Reply::echo(m.version, m.id, payload)
                }
                HostBody::EchoBulk { offset, len } => {
                    Reply::echo_bulk(m.version, m.id, offset, len)
                }
            };
            let mut buf = vec![0u8; echo.encoded_len()];
            let n = echo.write(&mut buf).expect("the reply to a parsed ECHO");
            let back = parse_reply(&buf[..n], echo.kind, m.id).expect("parses back");
            assert_eq!(back, echo);
        }
        Err(e) => {
            // What the driver does with it: count by reason, answer with a failure reply.
            let _ = e.reason().index();
            let status = e.status();
            assert!(status.is_error() || !status.is_success(), "{e}: {status}");
            let reply = Reply::for_malformed(data, status);
            let mut buf = [0u8; STATUS_REPLY_SIZE];
            let n = reply
                .write(&mut buf)
                .expect("a failure reply always fits STATUS_REPLY_SIZE");
            let back = parse_reply(&buf[..n], reply.kind, reply.id)
                .expect("the failure reply parses back");
            assert_eq!(back.status, status);
        }
    }

    // Guest -> host requests (what the simulated host parses).
    if let Ok(m) = parse_guest_message(data) {
        round_trip(data, m.encoded_len(), |b| {
            m.write(b).map_err(|e| e.to_string())
        });
    }

    // Replies, expecting the kind and id the header claims, then a fixed other pair.
    let expected = header.map(|h| (h.kind, h.id.get()));
    for (kind, id) in expected
        .into_iter()
        .chain([(MessageKind::PING, 0), (MessageKind::NEGOTIATE, 1)])
    {
        if let Ok(r) = parse_reply(data, kind, id) {
            assert_eq!((r.kind, r.id), (kind, id));
            round_trip(data, r.encoded_len(), |b| {
                r.write(b).map_err(|e| e.to_string())
            });
        }
    }
    if let Some((_, id)) = expected {
        for (min, max) in [(1, u32::MAX), (0x0001_0000, 0x0001_0000)] {
            if let Ok(NegotiateOutcome::Accepted(v)) = parse_negotiate_reply(data, id, min, max) {
                assert!((min..=max).contains(&v));
            }
        }
        let nonce = data
            .get(24..32)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        let _ = parse_ping_reply(data, id, nonce);
        let _ = parse_ping_reply(data, id, !nonce);
    }

    // IOCTL buffers.
    if let Ok(payload) = parse_send_input(data) {
        round_trip(data, data.len(), |b| {
            write_send_input(b, payload).map_err(|e| e.to_string())
        });
    }
    if let Ok((h, payload)) = parse_recv_output(data) {
        round_trip(data, data.len(), |b| {
            write_recv_output(b, h.sequence.get(), h.dropped_since_last.get(), payload)
                .map_err(|e| e.to_string())
        });
    }
    let _ = read_output::<InfoOut>(data);
    let _ = read_output::<PingOut>(data);
    let _ = read_output::<SendOut>(data);
    if let Ok(s) = read_output::<StatsOut>(data) {
        let _ = s.counters().count();
    }
    let _ = InfoOut::parse(data);
    for chunk in data.chunks(12).take(64) {
        let word = |i: usize| {
            chunk
                .get(i..i + 4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let (code, input, output) = (word(0), word(4), word(8));
        if let Some(c) = IoctlCode::from_raw(code) {
            assert_eq!(c.code(), code);
            let _ = c.name();
            let input = usize::try_from(input).unwrap_or(usize::MAX);
            let output = usize::try_from(output).unwrap_or(usize::MAX);
            if let Err(e) = c.check_buffers(input, output) {
                assert!(e.status().is_error());
            }
        }
    }
}
