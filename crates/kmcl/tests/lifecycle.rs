//! The channel lifecycle through kmcl against the model: callback order and IRQL, rescind,
//! re-enable, failed open, teardown with nothing left behind.

mod common;

use common::{Event, Mode, Recorder, T, builder, enabled};
use kmcl::NtStatus;
use kmcl_model::{ChannelState, Irql};

#[test]
fn open_runs_opened_started_post_started_at_passive_in_order() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    assert!(
        rec.events().is_empty(),
        "nothing may run before the host opens the channel"
    );
    host.open().expect("open");
    assert_eq!(
        rec.events(),
        [
            Event::Opened(Irql::Passive),
            Event::Started(Irql::Passive),
            Event::PostStarted(Irql::Passive)
        ]
    );
    drop(channel);
    assert_eq!(
        rec.events()[3..],
        [Event::Suspend(Irql::Passive), Event::Closed(Irql::Passive)]
    );
    host.assert_no_violations();
}

#[test]
fn rescind_closes_the_channel_and_it_can_be_enabled_again() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let channel = enabled(&host, &rec);
    host.open().expect("open");
    host.close();
    assert_eq!(
        rec.events()[3..],
        [Event::Suspend(Irql::Passive), Event::Closed(Irql::Passive)]
    );
    assert_eq!(host.channel_state(), ChannelState::Disabled);

    // A guest channel the host closed must be re-enabled to carry traffic again.
    let disabled = channel.disable();
    let channel = disabled.enable().map_err(|(_, s)| s).expect("re-enable");
    host.open().expect("second open");
    let txn = host.send(b"again", true).expect("send after reopen");
    let done = host.wait_completion(txn, T).expect("completion");
    assert_eq!(done.payload, b"again");
    drop(channel);
    assert_eq!(host.channel_state(), ChannelState::CleanedUp);
    host.assert_no_violations();
}

#[test]
fn a_failed_open_carries_no_traffic_and_tears_down_cleanly() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    *rec.opened_status.lock().unwrap() = NtStatus::STATUS_INSUFFICIENT_RESOURCES;
    let channel = enabled(&host, &rec);
    assert!(host.open().is_err(), "Opened failed, so the open must fail");
    assert_eq!(rec.events(), [Event::Opened(Irql::Passive)]);
    assert!(
        host.send(b"x", true).is_err(),
        "no traffic after a failed open"
    );
    drop(channel);
    host.assert_no_violations();
}

#[test]
fn dropping_an_unenabled_builder_cleans_the_channel_up() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let b = builder(&host, &rec);
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    drop(b);
    assert_eq!(host.channel_state(), ChannelState::CleanedUp);
    host.assert_no_violations();
}

#[test]
fn init_setters_validate_their_arguments() {
    let host = kmcl_model::connected();
    let rec = Recorder::new(Mode::Echo);
    let mut b = builder(&host, &rec);
    assert_eq!(
        b.max_packet_size(0),
        Err(NtStatus::STATUS_INVALID_PARAMETER_2)
    );
    let long = "x".repeat(65);
    assert_eq!(
        b.friendly_name(&long),
        Err(NtStatus::STATUS_INVALID_PARAMETER)
    );
    drop(b);
    host.assert_no_violations();
}

#[test]
fn target_must_match_the_offer() {
    let config = kmcl_model::ModelConfig::default();
    let offered = config.interface_type;
    let host = kmcl_model::connected_with(config);
    let rec = Recorder::new(Mode::Echo);
    let mut b = builder(&host, &rec);
    let other = kmcl::Guid {
        data1: offered.Data1 ^ 1,
        data2: 0,
        data3: 0,
        data4: [0; 8],
    };
    b.target(other, None).expect("target");
    let channel = b.enable().map_err(|(_, s)| s).expect("enable");
    assert!(
        host.open().is_err(),
        "a channel targeting another interface must not open"
    );
    assert!(rec.events().is_empty());
    drop(channel);
    host.assert_no_violations();
}
