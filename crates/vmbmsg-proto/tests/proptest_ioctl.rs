//! Property tests of the IOCTL buffers: parsing is total, variable-length buffers round-trip
//! and any length lie is rejected.

use proptest::collection::vec;
use proptest::prelude::*;
use vmbmsg_proto::ioctl::InfoOut;
use vmbmsg_proto::ioctl::IoctlCode;
use vmbmsg_proto::ioctl::IoctlError;
use vmbmsg_proto::ioctl::RECV_OUT_MAX;
use vmbmsg_proto::ioctl::SEND_IN_MAX;
use vmbmsg_proto::ioctl::StatsOut;
use vmbmsg_proto::ioctl::parse_recv_output;
use vmbmsg_proto::ioctl::parse_send_input;
use vmbmsg_proto::ioctl::read_output;
use vmbmsg_proto::ioctl::write_recv_output;
use vmbmsg_proto::ioctl::write_send_input;
use vmbmsg_proto::wire::MAX_PAYLOAD;

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..=64),
        1 => vec(any::<u8>(), MAX_PAYLOAD - 8..=MAX_PAYLOAD),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_buffers_never_panic(bytes in vec(any::<u8>(), 0..=96)) {
        if let Ok(payload) = parse_send_input(&bytes) {
            let mut buf = vec![0u8; SEND_IN_MAX];
            let n = write_send_input(&mut buf, payload).unwrap();
            prop_assert_eq!(&buf[..n], &bytes[..]);
        }
        if let Ok((header, payload)) = parse_recv_output(&bytes) {
            let mut buf = vec![0u8; RECV_OUT_MAX];
            let n = write_recv_output(
                &mut buf,
                header.sequence.get(),
                header.dropped_since_last.get(),
                payload,
            )
            .unwrap();
            prop_assert_eq!(&buf[..n], &bytes[..]);
        }
        let _ = InfoOut::parse(&bytes);
        let _ = read_output::<StatsOut>(&bytes);
    }

    #[test]
    fn send_input_round_trips(payload in payload()) {
        let mut buf = vec![0u8; SEND_IN_MAX];
        let n = write_send_input(&mut buf, &payload).unwrap();
        prop_assert_eq!(n, 8 + payload.len());
        prop_assert_eq!(parse_send_input(&buf[..n]), Ok(&payload[..]));
        // Any truncation or extension is rejected.
        for cut in [0, 7, n - 1] {
            prop_assert!(cut >= n || parse_send_input(&buf[..cut]).is_err());
        }
        prop_assert!(n == SEND_IN_MAX || parse_send_input(&buf[..n + 1]).is_err());
    }

    #[test]
    fn send_input_length_field_must_match(payload in payload(), declared in any::<u32>()) {
        prop_assume!(usize::try_from(declared).unwrap() != payload.len());
        let mut buf = vec![0u8; SEND_IN_MAX];
        let n = write_send_input(&mut buf, &payload).unwrap();
        buf[..4].copy_from_slice(&declared.to_le_bytes());
        let err = parse_send_input(&buf[..n]).unwrap_err();
        let ok = matches!(
            err,
            IoctlError::LengthMismatch { .. } | IoctlError::PayloadTooLarge { .. }
        );
        prop_assert!(ok, "{:?}", err);
    }

    #[test]
    fn recv_output_round_trips(seq in any::<u64>(), dropped in any::<u64>(), payload in payload()) {
        let mut buf = vec![0u8; RECV_OUT_MAX];
        let n = write_recv_output(&mut buf, seq, dropped, &payload).unwrap();
        let (header, got) = parse_recv_output(&buf[..n]).unwrap();
        prop_assert_eq!(header.sequence.get(), seq);
        prop_assert_eq!(header.dropped_since_last.get(), dropped);
        prop_assert_eq!(got, &payload[..]);
        let short = write_recv_output(&mut buf[..n - 1], seq, dropped, &payload);
        prop_assert_eq!(short, Err(IoctlError::OutputTooSmall { needed: n, got: n - 1 }));
    }

    #[test]
    fn only_defined_codes_are_known(code in any::<u32>()) {
        match IoctlCode::from_raw(code) {
            Some(c) => prop_assert_eq!(c.code(), code),
            None => prop_assert!(IoctlCode::ALL.iter().all(|c| c.code() != code)),
        }
    }
}
