//! Target (c): the IOCTL handlers with arbitrary codes, input bytes and output sizes, against
//! a core whose channel is negotiated (or not, as the input chooses), with the host answering
//! PING and SEND in an arbitrary way and sending notifications in between so that parked RECVs
//! complete.

use arbitrary::{Arbitrary, Unstructured};
use vmbmsg_proto::ioctl::{
    IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_GET_STATS, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV,
    IOCTL_VMBMSG_RESET_STATS, IOCTL_VMBMSG_SEND,
};

use crate::peer::{Answer, Delivery, Mode, Negotiation, Peer, PeerConfig, capped};

/// The known codes, then a few near misses (other function numbers, methods and access bits
/// of the same device type).
const CODES: [u32; 6] = [
    IOCTL_VMBMSG_GET_INFO,
    IOCTL_VMBMSG_GET_STATS,
    IOCTL_VMBMSG_RESET_STATS,
    IOCTL_VMBMSG_PING,
    IOCTL_VMBMSG_SEND,
    IOCTL_VMBMSG_RECV,
];

/// An IOCTL code: one of ours, one of ours with some bits flipped, or any value.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Code {
    /// `CODES[i % 6]`.
    Known(u8),
    /// `CODES[i % 6] ^ mask`.
    NearMiss(u8, u32),
    /// Any value.
    Raw(u32),
}

impl Code {
    fn get(self) -> u32 {
        let pick = |i: u8| CODES[usize::from(i) % CODES.len()];
        match self {
            Self::Known(i) => pick(i),
            Self::NearMiss(i, mask) => pick(i) ^ mask,
            Self::Raw(c) => c,
        }
    }
}

/// One step.
#[derive(Arbitrary, Clone, Debug)]
pub enum Step {
    /// An IOCTL.
    Ioctl {
        /// The code.
        code: Code,
        /// Input bytes.
        input: Vec<u8>,
        /// Output buffer size (0..=65535 bytes).
        output_len: u16,
    },
    /// The host sends a NOTIFY of `len` bytes.
    Notify(u16),
    /// The host changes how it answers PING and SEND.
    HostMode(Mode),
    /// The host completes one held packet.
    HostComplete(u8, Answer),
    /// User mode cancels one of its requests.
    Cancel(u8),
}

/// One run of target (c), as the fuzzer runs it (inline delivery).
pub fn run(data: &[u8]) {
    run_with(data, Delivery::Inline);
}

/// One run of target (c) with `delivery`.
pub fn run_with(data: &[u8], delivery: Delivery) {
    let mut u = Unstructured::new(data);
    let Ok(negotiated) = bool::arbitrary(&mut u) else {
        return;
    };
    let Ok(mode) = Mode::arbitrary(&mut u) else {
        return;
    };
    let config = PeerConfig {
        negotiation: if negotiated {
            Negotiation::Accept
        } else {
            Negotiation::Reject
        },
        mode,
        ..PeerConfig::friendly()
    };
    let mut peer = Peer::new(&config, delivery);
    peer.open();
    let mut steps = 0;
    while steps < 64 && !u.is_empty() {
        steps += 1;
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Ioctl {
                code,
                input,
                output_len,
            } => {
                let code = code.get();
                if code == IOCTL_VMBMSG_RESET_STATS {
                    peer.note_stats_reset();
                }
                peer.ioctl(code, &capped(input), usize::from(output_len));
            }
            Step::Notify(len) => {
                let len = usize::from(len) % (vmbmsg_proto::wire::MAX_PAYLOAD + 1);
                peer.host_message(true, 7, &vec![0x4E; len], true);
            }
            Step::HostMode(mode) => peer.set_mode(mode),
            Step::HostComplete(which, answer) => peer.complete_held(which, &answer, false),
            Step::Cancel(which) => peer.cancel(which),
        }
    }
    peer.finish();
}
