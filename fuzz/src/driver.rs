//! Target (b): the driver's whole receive path (and the IOCTLs interleaved with it) through
//! `kmcl-model`, driven by an `arbitrary` list of moves of a hostile host and of user mode.

use arbitrary::{Arbitrary, Unstructured};
use vmbmsg_proto::ioctl::{
    IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_GET_STATS, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV,
    IOCTL_VMBMSG_RESET_STATS, IOCTL_VMBMSG_SEND, InfoOut, PingOut, RECV_OUT_MAX, SEND_PAYLOAD_MAX,
    SendIn, SendOut, StatsOut, write_send_input,
};
use vmbmsg_proto::wire::{MAX_BULK_PAYLOAD, MAX_PAYLOAD};

use crate::peer::{Answer, Delivery, Mode, Peer, PeerConfig, capped};

/// At most this many moves per run.
pub const MAX_ACTIONS: usize = 64;

/// One move.
#[derive(Arbitrary, Clone, Debug)]
pub enum Action {
    /// The host sends arbitrary bytes.
    HostRaw {
        /// The packet.
        bytes: Vec<u8>,
        /// The host asks for a completion.
        completion: bool,
    },
    /// The host sends a well-formed ECHO.
    HostEcho {
        /// Request id.
        id: u64,
        /// Payload length (modulo `MAX_PAYLOAD + 1`).
        len: u16,
        /// Payload byte.
        fill: u8,
        /// The host asks for a completion.
        completion: bool,
    },
    /// The host sends a well-formed NOTIFY.
    HostNotify {
        /// Request id.
        id: u64,
        /// Payload length (modulo `MAX_PAYLOAD + 1`).
        len: u16,
        /// Payload byte.
        fill: u8,
        /// The host asks for a completion.
        completion: bool,
    },
    /// The host writes into its half of the bulk area and sends an ECHO_BULK (1.1).
    HostEchoBulk {
        /// Request id.
        id: u64,
        /// Offset into the host's half (`fit`: modulo its size).
        offset: u32,
        /// Payload bytes (`fit`: 1 up to what fits from `offset`).
        len: u32,
        /// Byte the host writes.
        fill: u8,
        /// Fit the range into the host's half; otherwise it goes on the wire as given.
        fit: bool,
        /// The host asks for a completion.
        completion: bool,
    },
    /// The host writes anywhere in the bulk area, the guest's half included.
    HostScribble {
        /// Where (modulo the area's size).
        at: u32,
        /// What.
        bytes: Vec<u8>,
    },
    /// The host sends this many small ECHOs and NOTIFYs back to back (concurrent delivery).
    HostBurst(u8),
    /// The host completes one held guest packet.
    HostComplete {
        /// Which one (modulo the number held).
        which: u8,
        /// With what.
        answer: Answer,
        /// Keep it held, so that it can be completed again.
        again: bool,
    },
    /// The host completes a transaction id it made up.
    HostCompleteUnknown {
        /// The id.
        txn: u64,
        /// The response.
        bytes: Vec<u8>,
    },
    /// The host changes how it answers PING and SEND.
    HostMode(Mode),
    /// The host opens the channel (if it is not open).
    Open,
    /// The host rescinds the channel.
    Rescind,
    /// The device goes down and up again and the host reopens the channel.
    Restart,
    /// The next `n` packet allocations fail.
    FailAllocations(u8),
    /// The next `n` sends fail with `status`.
    FailSends(u8, i32),
    /// User mode: PING.
    Ping,
    /// User mode: SEND of `payload`.
    Send(Vec<u8>),
    /// User mode: SEND of `MAX_PAYLOAD + 1 + len % (SEND_PAYLOAD_MAX - MAX_PAYLOAD)` bytes of
    /// `fill`: above one ring packet, so through the bulk area in 1.1.
    SendBulk {
        /// Size selector.
        len: u16,
        /// Payload byte.
        fill: u8,
    },
    /// User mode: SEND with a raw input buffer.
    SendRaw {
        /// The input buffer.
        input: Vec<u8>,
        /// The output buffer's size.
        out_len: u8,
    },
    /// User mode: RECV with an output buffer of `RECV_OUT_MAX - 64 + out_len` bytes.
    Recv {
        /// Size selector.
        out_len: u8,
    },
    /// User mode cancels one of its requests (`CancelIoEx`): a parked RECV, or a PING or SEND
    /// waiting for the host's answer (whose later answer is then only counted); a no-op for
    /// anything else.
    Cancel(u8),
    /// User mode: GET_INFO, GET_STATS or RESET_STATS.
    Query(u8),
    /// Waits for the host packets sent so far to be completed.
    Drain,
}

/// A run: how the world starts, then the moves.
#[derive(Debug)]
pub struct Scenario {
    /// The start.
    pub config: PeerConfig,
    /// Open the channel before the first move.
    pub open: bool,
    /// The moves.
    pub actions: Vec<Action>,
}

impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let config = PeerConfig::arbitrary(u)?;
        let open = bool::arbitrary(u)?;
        let mut actions = Vec::new();
        while actions.len() < MAX_ACTIONS && !u.is_empty() {
            actions.push(Action::arbitrary(u)?);
        }
        Ok(Self {
            config,
            open,
            actions,
        })
    }
}

fn payload(len: u16, fill: u8) -> Vec<u8> {
    vec![fill; usize::from(len) % (MAX_PAYLOAD + 1)]
}

fn send_input(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(SEND_PAYLOAD_MAX)];
    let mut buf = vec![0; size_of::<SendIn>() + payload.len()];
    let n = write_send_input(&mut buf, payload).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Plays one move.
pub fn play(peer: &mut Peer, action: Action) {
    match action {
        Action::HostRaw { bytes, completion } => peer.host_raw(&capped(bytes), completion),
        Action::HostEcho {
            id,
            len,
            fill,
            completion,
        } => peer.host_message(false, id, &payload(len, fill), completion),
        Action::HostNotify {
            id,
            len,
            fill,
            completion,
        } => peer.host_message(true, id, &payload(len, fill), completion),
        Action::HostEchoBulk {
            id,
            offset,
            len,
            fill,
            fit,
            completion,
        } => {
            let (offset, len) = match peer.bulk_area() {
                Some(area) if fit && area.host_half > 0 => {
                    let offset = offset % area.host_half;
                    let room = (area.host_half - offset).min(MAX_BULK_PAYLOAD as u32);
                    (offset, 1 + len % room)
                }
                _ => (offset, len),
            };
            peer.host_echo_bulk(id, offset, len, fill, completion);
        }
        Action::HostScribble { at, bytes } => peer.host_scribble(at, &capped(bytes)),
        Action::HostBurst(n) => {
            for i in 0..n % 32 {
                peer.host_message(i % 3 == 2, u64::from(i), &[i; 16], true);
            }
        }
        Action::HostComplete {
            which,
            answer,
            again,
        } => peer.complete_held(which, &answer, again),
        Action::HostCompleteUnknown { txn, bytes } => peer.complete_unknown(txn, &capped(bytes)),
        Action::HostMode(mode) => peer.set_mode(mode),
        Action::Open => peer.open(),
        Action::Rescind => peer.host().rescind(),
        Action::Restart => peer.restart(),
        Action::FailAllocations(n) => peer.host().faults().fail_allocations(u32::from(n % 4)),
        Action::FailSends(n, status) => {
            // A send fault is a failure status by definition.
            let status = vmbmsg::NtStatus(status | i32::MIN);
            peer.host().faults().fail_sends(u32::from(n % 4), status);
        }
        Action::Ping => peer.ioctl(IOCTL_VMBMSG_PING, &[], size_of::<PingOut>()),
        Action::Send(p) => peer.ioctl(IOCTL_VMBMSG_SEND, &send_input(&p), size_of::<SendOut>()),
        Action::SendBulk { len, fill } => {
            let n = MAX_PAYLOAD + 1 + usize::from(len) % (SEND_PAYLOAD_MAX - MAX_PAYLOAD);
            let input = send_input(&vec![fill; n]);
            peer.ioctl(IOCTL_VMBMSG_SEND, &input, size_of::<SendOut>());
        }
        Action::SendRaw { input, out_len } => {
            peer.ioctl(IOCTL_VMBMSG_SEND, &capped(input), usize::from(out_len % 16));
        }
        Action::Recv { out_len } => {
            peer.ioctl(
                IOCTL_VMBMSG_RECV,
                &[],
                RECV_OUT_MAX - 64 + usize::from(out_len),
            );
        }
        Action::Cancel(which) => peer.cancel(which),
        Action::Query(q) => match q % 3 {
            0 => peer.ioctl(IOCTL_VMBMSG_GET_INFO, &[], size_of::<InfoOut>()),
            1 => peer.ioctl(IOCTL_VMBMSG_GET_STATS, &[], size_of::<StatsOut>()),
            _ => {
                peer.note_stats_reset();
                peer.ioctl(IOCTL_VMBMSG_RESET_STATS, &[], 0);
            }
        },
        Action::Drain => peer.drain_host_packets(),
    }
}

/// One run of target (b), as the fuzzer runs it (inline delivery).
pub fn run(data: &[u8]) {
    run_with(data, Delivery::Inline);
}

/// One run of target (b) with `delivery`.
pub fn run_with(data: &[u8], delivery: Delivery) {
    let mut u = Unstructured::new(data);
    let Ok(scenario) = Scenario::arbitrary(&mut u) else {
        return;
    };
    let mut peer = Peer::new(&scenario.config, delivery);
    if scenario.open {
        peer.open();
    }
    for action in scenario.actions {
        play(&mut peer, action);
    }
    peer.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{Delivery, Negotiation, PeerConfig};

    fn bulk_moves() -> Vec<Action> {
        vec![
            Action::SendBulk { len: 0, fill: 1 },
            Action::SendBulk {
                len: u16::MAX,
                fill: 2,
            },
            Action::HostEchoBulk {
                id: 1,
                offset: 100,
                len: 5000,
                fill: 3,
                fit: true,
                completion: true,
            },
            Action::HostEchoBulk {
                id: 2,
                offset: u32::MAX,
                len: 16,
                fill: 4,
                fit: false,
                completion: true,
            },
            Action::HostEchoBulk {
                id: 3,
                offset: 0,
                len: 0,
                fill: 5,
                fit: false,
                completion: true,
            },
            Action::HostScribble {
                at: 0,
                bytes: vec![0xEE; 64],
            },
            Action::SendBulk { len: 7, fill: 6 },
            Action::Drain,
            Action::Restart,
            Action::HostEchoBulk {
                id: 4,
                offset: 0,
                len: 1,
                fill: 7,
                fit: true,
                completion: true,
            },
            Action::Rescind,
        ]
    }

    /// The bulk moves on a 1.1 session, a 1.0 session and one whose offer the host refuses:
    /// every check of `finish` holds (requests completed once, ECHO_BULK replies naming their
    /// range or failing, bad ranges refused, no leak, no violation).
    #[test]
    fn bulk_moves_pass_the_checks_in_every_kind_of_session() {
        for (negotiation, offer, bulk_expected) in [
            (Negotiation::Accept, Answer::Good, true),
            (Negotiation::AcceptV1_0, Answer::Good, false),
            (Negotiation::Accept, Answer::HostStatus(-1), false),
        ] {
            for delivery in [Delivery::Inline, Delivery::Threads] {
                let config = PeerConfig {
                    negotiation: negotiation.clone(),
                    offer: offer.clone(),
                    ..PeerConfig::friendly()
                };
                let mut peer = Peer::new(&config, delivery);
                peer.open();
                let offered = peer.bulk_area().is_some();
                assert_eq!(offered, negotiation_offers(&negotiation), "{negotiation:?}");
                for action in bulk_moves().into_iter().take(8) {
                    play(&mut peer, action);
                }
                let s = peer.core().stats();
                let sent_bulk = s.send_ok.get();
                // With delivery threads the answers may still be on their way: counted inline.
                if delivery == Delivery::Inline && bulk_expected {
                    assert_eq!(
                        sent_bulk, 3,
                        "three SENDs above 16 KiB went through the area"
                    );
                    assert_eq!(s.echo_count.get(), 1, "one ECHO_BULK parsed");
                    assert_eq!(
                        s.malformed_by_reason
                            [vmbmsg_proto::wire::MalformedReason::BadBulkRange as usize]
                            .get(),
                        2,
                        "the parser refuses a range past u32::MAX and an empty one"
                    );
                } else if delivery == Delivery::Inline {
                    assert_eq!(sent_bulk, 0, "no area: large SENDs are refused");
                }
                for action in bulk_moves().into_iter().skip(8) {
                    play(&mut peer, action);
                }
                peer.finish();
            }
        }
    }

    fn negotiation_offers(n: &Negotiation) -> bool {
        matches!(n, Negotiation::Accept)
    }
}
