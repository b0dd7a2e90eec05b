//! Channel lifecycle (§5): allocate, configure, enable, open, pause/start, rescind, disable,
//! cleanup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{
    ChannelState, Irql, ModelConfig, NtStatus, OpenError, ViolationKind, connected, connected_with,
    with_irql,
};

use crate::common::*;

fn passive_events(g: &Guest) -> Vec<String> {
    let ev = lock(&g.events).clone();
    for (name, irql) in &ev {
        assert_eq!(*irql, Irql::Passive, "{name} ran at {irql:?}");
    }
    ev.into_iter().map(|(n, _)| n).collect()
}

#[test]
fn open_runs_opened_started_post_started_in_order_at_passive() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    assert_eq!(host.channel_state(), ChannelState::Enabled);
    assert!(
        g.event_names().is_empty(),
        "Enable returns before any callback"
    );
    host.open().expect("open");
    assert_eq!(host.channel_state(), ChannelState::Active);
    assert_eq!(passive_events(g), ["opened", "started", "post_started"]);
    g.teardown();
    assert_eq!(
        passive_events(g),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    assert_eq!(host.channel_state(), ChannelState::CleanedUp);
}

#[test]
fn open_without_an_enabled_channel_fails() {
    let host = connected();
    assert_eq!(host.open(), Err(OpenError::NoEnabledChannel));
    let g = GuestBuilder::new(&host).build();
    assert_eq!(host.open(), Err(OpenError::NoEnabledChannel));
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn opened_failure_rolls_back_to_enabled_with_no_traffic() {
    let host = connected();
    let _guard = host.violation_guard();
    let fail_once = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = Arc::clone(&fail_once);
    let g = GuestBuilder::new(&host)
        .on_opened(move |_| {
            if f.swap(false, std::sync::atomic::Ordering::SeqCst) {
                NtStatus::STATUS_INSUFFICIENT_RESOURCES
            } else {
                NtStatus::STATUS_SUCCESS
            }
        })
        .enabled();
    assert_eq!(
        host.open(),
        Err(OpenError::OpenedFailed(
            NtStatus::STATUS_INSUFFICIENT_RESOURCES
        ))
    );
    assert_eq!(host.channel_state(), ChannelState::Enabled);
    assert_eq!(
        host.send(b"x", true),
        Err(kmcl_model::HostSendError::NotOpen)
    );
    assert_eq!(g.event_names(), ["opened"]);
    // The host may offer again; this time it opens.
    host.open().expect("second open");
    assert_eq!(
        g.event_names(),
        ["opened", "opened", "started", "post_started"]
    );
    g.teardown();
}

#[test]
fn disable_of_a_channel_never_opened_runs_no_callbacks() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    g.teardown();
    assert!(g.event_names().is_empty());
}

#[test]
fn a_host_close_ends_disabled_and_the_channel_can_be_re_enabled() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    host.close();
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    assert_eq!(
        passive_events(g),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    assert_eq!(
        host.send(b"x", true),
        Err(kmcl_model::HostSendError::NotOpen)
    );
    // A guest channel ends Disabled and must be re-enabled (§5.8); Init setters stay refused.
    assert_eq!(enable(g.ch), NtStatus::STATUS_SUCCESS);
    host.open().expect("reopen");
    let txn = host.send(b"again", true).expect("send");
    assert_eq!(
        host.wait_completion(txn, T).expect("completion").payload,
        b"again"
    );
    g.teardown();
    assert_eq!(g.event_names().iter().filter(|e| *e == "closed").count(), 2);
}

#[test]
fn rescind_without_an_open_channel_is_a_no_op() {
    let host = connected();
    let g = GuestBuilder::new(&host).enabled();
    host.rescind();
    assert_eq!(host.channel_state(), ChannelState::Enabled);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn pause_suspends_and_start_restarts_delivery() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    pause(g.ch);
    assert_eq!(host.channel_state(), ChannelState::Paused);
    let txn = host
        .send(b"while paused", true)
        .expect("the host may queue while paused");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.delivered.load(std::sync::atomic::Ordering::SeqCst), 0);
    start(g.ch);
    assert_eq!(host.channel_state(), ChannelState::Active);
    assert_eq!(
        host.wait_completion(txn, T).expect("done").payload,
        b"while paused"
    );
    assert_eq!(
        passive_events(g),
        [
            "opened",
            "started",
            "post_started",
            "suspend",
            "started",
            "post_started"
        ]
    );
    g.teardown();
}

#[test]
fn pause_before_enable_arms_a_paused_open() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).build();
    pause(g.ch);
    assert_eq!(enable(g.ch), NtStatus::STATUS_SUCCESS);
    host.open().expect("open");
    assert_eq!(host.channel_state(), ChannelState::Paused);
    assert_eq!(g.event_names(), ["opened"]);
    start(g.ch);
    assert_eq!(g.event_names(), ["opened", "started", "post_started"]);
    g.teardown();
}

#[test]
fn target_pnp_must_match_the_offer() {
    let host = connected();
    let _guard = host.violation_guard();
    let other = sys::GUID {
        Data1: 1,
        ..Default::default()
    };
    let g = GuestBuilder::new(&host).target(other, None).enabled();
    assert_eq!(host.open(), Err(OpenError::TargetMismatch));
    assert_eq!(host.channel_state(), ChannelState::Enabled);
    g.teardown();

    let cfg = host.config().clone();
    let g = GuestBuilder::new(&host)
        .target(cfg.interface_type, Some(cfg.interface_instance))
        .enabled();
    let before = interface_instance(g.ch);
    assert_eq!(before.Data1, 0, "zeros before the open");
    host.open().expect("open");
    let inst = interface_instance(g.ch);
    assert_eq!(
        (inst.Data1, inst.Data2, inst.Data3, inst.Data4),
        (
            cfg.interface_instance.Data1,
            cfg.interface_instance.Data2,
            cfg.interface_instance.Data3,
            cfg.interface_instance.Data4
        )
    );
    g.teardown();
}

#[test]
fn init_setters_check_their_arguments() {
    let host = connected();
    let _guard = host.violation_guard();
    let ch = allocate(host.parent_device()).expect("allocate");
    use NtStatus as S;
    assert_eq!(set_max_packet(ch, 0), S::STATUS_INVALID_PARAMETER_2);
    assert_eq!(set_max_packet(ch, 8192), S::STATUS_SUCCESS);
    assert_eq!(set_max_external(ch, 0, 1), S::STATUS_INVALID_PARAMETER_2);
    assert_eq!(set_max_external(ch, 1, 0), S::STATUS_INVALID_PARAMETER_3);
    assert_eq!(set_max_external(ch, 65536, 4), S::STATUS_SUCCESS);
    assert_eq!(set_client_context(ch, 64), S::STATUS_SUCCESS);
    assert_eq!(set_flags(ch, 0x2), S::STATUS_INVALID_PARAMETER_2);
    assert_eq!(
        set_flags(ch, sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE),
        S::STATUS_SUCCESS
    );
    assert_eq!(set_ring_pages(ch, 0, 4), S::STATUS_INVALID_PARAMETER_2);
    assert_eq!(set_ring_pages(ch, 4, 0), S::STATUS_INVALID_PARAMETER_3);
    assert_eq!(set_ring_pages(ch, 256, 256), S::STATUS_SUCCESS);
    assert_eq!(set_friendly_name(ch, "vmbmsg test"), S::STATUS_SUCCESS);
    assert_eq!(set_target(ch, None, None), S::STATUS_INVALID_PARAMETER_2);
    let mut cb = sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
    cb.Version = 2;
    assert_eq!(set_state_callbacks(ch, &cb), S::STATUS_INVALID_PARAMETER_2);
    cb.Version = 1;
    cb.Size = 40;
    assert_eq!(set_state_callbacks(ch, &cb), S::STATUS_INVALID_PARAMETER_2);
    cb.Size = 48;
    assert_eq!(set_state_callbacks(ch, &cb), S::STATUS_SUCCESS);
    assert_eq!(
        set_process_packet(ch, None, None),
        S::STATUS_INVALID_PARAMETER_2
    );
    // Enable without a ProcessPacket callback is refused [inf].
    assert_eq!(enable(ch), S::STATUS_INVALID_DEVICE_STATE);
    assert_eq!(sizeof_packet(ch), 8192 + 0x100);
    cleanup(ch);
}

#[test]
fn interrupt_latency_is_only_valid_while_open() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    assert_eq!(
        set_latency(g.ch, 10).0,
        NtStatus::STATUS_INVALID_DEVICE_STATE
    );
    host.open().expect("open");
    assert_eq!(set_latency(g.ch, 10), (NtStatus::STATUS_SUCCESS, 0));
    assert_eq!(set_latency(g.ch, 20), (NtStatus::STATUS_SUCCESS, 10));
    g.teardown();
}

#[test]
fn channel_pointer_works_at_any_irql() {
    let host = connected();
    let ch = allocate(host.parent_device()).expect("allocate");
    assert_eq!(get_pointer(ch), 0, "starts NULL");
    with_irql(Irql::Dispatch, || set_pointer(ch, 0x1234));
    assert_eq!(with_irql(Irql::Dispatch, || get_pointer(ch)), 0x1234);
    cleanup(ch);
    host.assert_no_violations();
}

#[test]
fn disable_blocks_until_closed_and_waits_for_outstanding_packets() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    host.send(b"held", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let completer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        for t in g.take_held() {
            complete(t, b"late");
        }
    });
    let t0 = Instant::now();
    disable(g.ch);
    assert!(
        t0.elapsed() >= Duration::from_millis(90),
        "Disable waited for the completion"
    );
    assert_eq!(
        g.event_names(),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    completer.join().expect("completer");
    cleanup(g.ch);
}

#[test]
fn dropping_the_host_with_an_open_channel_does_not_hang() {
    let host = connected_with(ModelConfig {
        delivery_threads: 4,
        ..Default::default()
    });
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    for _ in 0..10 {
        host.send(b"x", true).expect("send");
    }
    wait_until("deliveries", || g.held_len() == 10);
    let t0 = Instant::now();
    drop(host);
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The guest's handles are dead now: a late completion is an orphan, not a crash.
    for t in g.take_held() {
        complete(t, b"");
    }
}

#[test]
fn violation_guard_is_silent_on_a_clean_world() {
    let host = connected();
    let guard = host.violation_guard();
    let ch = allocate(host.parent_device()).expect("allocate");
    cleanup(ch);
    drop(guard);
}

#[test]
#[should_panic(expected = "CleanupWhileEnabled")]
fn violation_guard_fails_the_test_on_a_violation() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).enabled();
    cleanup(g.ch);
}

#[test]
fn dropping_the_host_calls_no_guest_callback() {
    assert_eq!(kmcl_model::current_irql(), Irql::Passive);
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    // Drop with the channel still enabled: the world is torn down without callbacks.
    drop(host);
    assert_eq!(g.event_names(), ["opened", "started", "post_started"]);
}

#[test]
fn open_async_runs_the_open_on_its_own_thread() {
    let host = connected();
    let _guard = host.violation_guard();
    let test_thread = std::thread::current().id();
    static OPEN_THREAD: std::sync::Mutex<Option<std::thread::ThreadId>> =
        std::sync::Mutex::new(None);
    let g = GuestBuilder::new(&host)
        .on_opened(|_| {
            *lock(&OPEN_THREAD) = Some(std::thread::current().id());
            NtStatus::STATUS_SUCCESS
        })
        .enabled();
    let task = host.open_async();
    task.wait().expect("open");
    assert_ne!(*lock(&OPEN_THREAD), Some(test_thread));
    assert_eq!(host.channel_state(), ChannelState::Active);
    g.teardown();
}

#[test]
fn sends_from_opened_reach_the_host_after_opened_returns() {
    let host = connected();
    let _guard = host.violation_guard();
    host.set_responder(|gp| Some((NtStatus::STATUS_SUCCESS, gp.payload.clone())));
    let c = Completions::new(true);
    let g = GuestBuilder::new(&host)
        .on_opened(move |g| send(tracked_packet(g.ch, c), b"from opened", WAIT))
        .opened();
    assert_eq!(c.all()[0].data, b"from opened");
    assert_eq!(host.stats().received_from_guest, 1);
    g.teardown();
}

#[test]
fn uncompleted_packets_at_rescind_and_pause_are_reported() {
    let host = connected_with(ModelConfig {
        teardown_timeout: Duration::from_millis(50),
        ..Default::default()
    });
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    host.send(b"x", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    pause(g.ch);
    expect_one(
        &host,
        ViolationKind::UncompletedAtDisable,
        "VmbChannelPause",
    );
    start(g.ch);
    host.send(b"y", true).expect("send");
    wait_until("delivery", || g.held_len() == 2);
    host.rescind();
    expect_one(
        &host,
        ViolationKind::UncompletedAtDisable,
        "EvtChannelSuspend",
    );
    assert_eq!(host.stats().force_retired, 2);
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn a_rescinded_offer_cannot_be_opened_until_it_is_offered_again() {
    let host = connected();
    let _guard = host.violation_guard();
    let g = GuestBuilder::new(&host).opened();
    host.rescind();
    assert_eq!(host.channel_state(), ChannelState::Disabled);
    assert_eq!(
        enable(g.ch),
        NtStatus::STATUS_SUCCESS,
        "enable waits for an offer"
    );
    assert_eq!(host.open(), Err(kmcl_model::OpenError::NoOffer));
    host.reoffer();
    host.open().expect("open the new offer");
    g.teardown();
}

#[test]
fn rings_that_cannot_be_allocated_fail_the_open_before_any_callback() {
    let host = connected();
    let g = GuestBuilder::new(&host).ring(u32::MAX, u32::MAX).enabled();
    assert_eq!(
        host.open(),
        Err(OpenError::RingsNotAllocated(
            NtStatus::STATUS_INSUFFICIENT_RESOURCES
        ))
    );
    assert!(
        g.event_names().is_empty(),
        "no state callback: {:?}",
        g.event_names()
    );
    assert!(host.send(b"x", true).is_err(), "not open");
    // Disabling and cleaning up the channel that never opened is clean.
    g.teardown();
    host.assert_no_violations();
}
