//! One test per [`ViolationKind`]: each commits the violation on purpose and checks that the
//! verifier recorded exactly that kind, in the right function, so the verifier cannot quietly
//! become a no-op. `every_kind_has_a_test` keeps this list complete.

use std::sync::Mutex;
use std::time::Duration;

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{
    Irql, ModelConfig, NtStatus, ViolationKind as V, connected, connected_with, orphan_violations,
    with_irql,
};

use crate::common::*;

#[test]
fn every_kind_has_a_test() {
    let src = include_str!("violations.rs");
    for kind in V::ALL {
        let name = format!("{kind:?}");
        let mut snake = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        assert!(
            src.contains(&format!("fn violation_{snake}()")),
            "no test violation_{snake} for {kind:?}"
        );
    }
}

#[test]
fn violation_incoming_completed_twice() {
    let host = connected();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    host.send(b"x", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let t = g.take_held()[0];
    complete(t, b"once");
    complete(t, b"twice");
    fail(t);
    let vs = host.take_violations();
    assert_eq!(vs.len(), 2);
    assert!(
        vs.iter()
            .all(|v| v.kind == V::IncomingCompletedTwice && v.handle == t.0)
    );
    assert_eq!(
        (vs[0].function, vs[1].function),
        ("VmbChannelPacketComplete", "VmbChannelPacketFail")
    );
    assert_eq!(host.stats().completed_by_guest, 1);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_unknown_incoming_token() {
    let host = connected();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    host.send(b"x", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let t = g.take_held()[0];
    complete(Tok(t.0 + 1000), b"");
    expect_one(&host, V::UnknownIncomingToken, "VmbChannelPacketComplete");
    complete(t, b"");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_uncompleted_at_disable() {
    let host = connected_with(ModelConfig {
        teardown_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    let txn = host.send(b"never completed", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    disable(g.ch);
    let v = expect_one(&host, V::UncompletedAtDisable, "VmbChannelDisable");
    let t = g.take_held()[0];
    assert!(
        v.detail.contains(&format!("{:#x}", t.0)),
        "lists the token: {v}"
    );
    assert_eq!(host.stats().force_retired, 1);
    assert!(host.wait_completion(txn, T).expect("retired").failed);
    complete(t, b"late");
    host.assert_no_violations(); // a force-retired token is not reported twice
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn violation_packet_freed_twice() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    packet_free(p);
    packet_free(p);
    expect_one(&host, V::PacketFreedTwice, "VmbPacketFree");
    // The classic variant: freeing a packet the default completion routine already freed.
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_SUCCESS);
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    packet_free(p);
    expect_one(&host, V::PacketFreedTwice, "VmbPacketFree");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_packet_freed_in_flight() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(false);
    let p = tracked_packet(g.ch, c);
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_SUCCESS);
    packet_free(p);
    expect_one(&host, V::PacketFreedInFlight, "VmbPacketFree");
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(
        c.len(),
        1,
        "the packet was not freed: its routine still ran"
    );
    packet_free(p);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_packet_use_after_free() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    packet_free(p);
    packet_set_pointer(p, 1);
    expect_one(&host, V::PacketUseAfterFree, "VmbPacketSetPointer");
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_INVALID_PARAMETER_1);
    expect_one(&host, V::PacketUseAfterFree, "VmbPacketSend");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_channel_use_after_cleanup() {
    let host = connected();
    let ch = allocate(host.parent_device()).expect("allocate");
    cleanup(ch);
    assert_eq!(enable(ch), NtStatus::STATUS_INVALID_PARAMETER_1);
    expect_one(&host, V::ChannelUseAfterCleanup, "VmbChannelEnable");
    cleanup(ch);
    expect_one(&host, V::ChannelUseAfterCleanup, "VmbChannelCleanup");
    assert!(packet_allocate(ch).is_none());
    expect_one(&host, V::ChannelUseAfterCleanup, "VmbPacketAllocate");
}

#[test]
fn violation_cleanup_while_enabled() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    cleanup(g.ch);
    expect_one(&host, V::CleanupWhileEnabled, "VmbChannelCleanup");
    assert_eq!(
        host.channel_state(),
        kmcl_model::ChannelState::Active,
        "not cleaned up"
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_passive_only_at_dispatch() {
    let host = connected();
    let g = GuestBuilder::new(&host).build();
    let s = with_irql(Irql::Dispatch, || enable(g.ch));
    assert_eq!(s, NtStatus::STATUS_INVALID_DEVICE_STATE);
    expect_one(&host, V::PassiveOnlyAtDispatch, "VmbChannelEnable");
    assert_eq!(host.channel_state(), kmcl_model::ChannelState::Disabled);
    // From a real DISPATCH callback: Disable inside ProcessPacket.
    let g2 = GuestBuilder::new(&host)
        .on_packet(|g, d| {
            disable(g.ch);
            complete(d.tok, b"");
        })
        .enabled();
    cleanup(g.ch);
    host.open().expect("open");
    let txn = host.send(b"x", true).expect("send");
    host.wait_completion(txn, T).expect("done");
    expect_one(&host, V::PassiveOnlyAtDispatch, "VmbChannelDisable");
    g2.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_init_after_enable() {
    let host = connected();
    let g = GuestBuilder::new(&host).enabled();
    assert_eq!(
        set_max_packet(g.ch, 1024),
        NtStatus::STATUS_INVALID_PARAMETER_1
    );
    expect_one(
        &host,
        V::InitAfterEnable,
        "VmbChannelInitSetMaximumPacketSize",
    );
    set_passive(g.ch, true);
    expect_one(
        &host,
        V::InitAfterEnable,
        "VmbChannelSetIncomingProcessingAtPassive",
    );
    disable(g.ch);
    // Still refused on the disabled channel: it was enabled once [inf].
    assert_eq!(set_flags(g.ch, 0), NtStatus::STATUS_INVALID_PARAMETER_1);
    expect_one(&host, V::InitAfterEnable, "VmbChannelInitSetFlags");
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn violation_send_on_closed_channel() {
    let host = connected();
    let g = GuestBuilder::new(&host).build();
    let p = packet_allocate(g.ch).expect("packets exist before Enable");
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_INVALID_DEVICE_STATE);
    expect_one(&host, V::SendOnClosedChannel, "VmbPacketSend");
    packet_free(p);
    cleanup(g.ch);
    // After EvtChannelSuspend: the driver must stop sending.
    static RESULT: Mutex<Option<NtStatus>> = Mutex::new(None);
    let g = GuestBuilder::new(&host)
        .on_suspend(|g| {
            let p = packet_allocate(g.ch).expect("allocate");
            *lock(&RESULT) = Some(send(p, b"x", WAIT));
            packet_free(p);
        })
        .opened();
    host.rescind();
    assert_eq!(*lock(&RESULT), Some(NtStatus::STATUS_INVALID_DEVICE_STATE));
    expect_one(&host, V::SendOnClosedChannel, "VmbPacketSend");
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn violation_completion_too_large() {
    let host = connected();
    let g = GuestBuilder::new(&host)
        .max_packet(16)
        .on_packet(|_, d| complete(d.tok, &[7; 17]))
        .opened();
    let txn = host.send(b"x", true).expect("send");
    let c = host.wait_completion(txn, T).expect("done");
    assert_eq!(c.payload, [7; 16], "not delivered beyond the limit");
    expect_one(&host, V::CompletionTooLarge, "VmbChannelPacketComplete");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_leak_at_cleanup() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    g.teardown();
    let v = expect_one(&host, V::LeakAtCleanup, "VmbChannelCleanup");
    assert!(v.detail.contains(&format!("{:#x}", p.0)), "{v}");
    assert_eq!(host.stats().packets_allocated, 0);
}

#[test]
fn violation_defer_outside_callback() {
    let host = connected();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    let txn = host.send(b"x", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let t = g.take_held()[0];
    defer(t);
    expect_one(
        &host,
        V::DeferOutsideCallback,
        "VmbChannelPacketDeferToPassive",
    );
    complete(t, b"still mine");
    assert_eq!(
        host.wait_completion(txn, T).expect("done").payload,
        b"still mine"
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_send_too_large() {
    let host = connected();
    let g = GuestBuilder::new(&host).max_packet(16).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(send(p, &[0; 17], WAIT), NtStatus::STATUS_INVALID_PARAMETER);
    expect_one(&host, V::SendTooLarge, "VmbPacketSend");
    assert_eq!(
        sync_request(g.ch, &[0; 17], WAIT, 8, Some(0)).0,
        NtStatus::STATUS_INVALID_PARAMETER
    );
    expect_one(&host, V::SendTooLarge, "VmbChannelSendSynchronousRequest");
    packet_free(p);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_invalid_flags() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    // 0x20: the first bit past VMBUS_CHANNEL_FORMAT_FLAGS (0x1F since 10.0.22621).
    assert_eq!(
        send(p, b"x", 0x20 | WAIT),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    expect_one(&host, V::InvalidFlags, "VmbPacketSend");
    packet_free(p);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_send_without_completion_routine() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let n = sizeof_packet(g.ch);
    let mem = packet_memory(usize::try_from(n).expect("small"));
    let (s, p) = packet_initialize(g.ch, mem, n);
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    assert_eq!(send(p, b"x", WAIT), NtStatus::STATUS_INVALID_PARAMETER);
    expect_one(&host, V::SendWithoutCompletionRoutine, "VmbPacketSend");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_sync_request_in_started() {
    static RESULT: Mutex<Option<NtStatus>> = Mutex::new(None);
    let host = connected();
    let g = GuestBuilder::new(&host)
        .on_started(|g| *lock(&RESULT) = Some(sync_request(g.ch, b"x", WAIT, 8, None).0))
        .opened();
    assert_eq!(
        *lock(&RESULT),
        Some(NtStatus::STATUS_INVALID_DEVICE_STATE),
        "no deadlock"
    );
    expect_one(
        &host,
        V::SyncRequestInStarted,
        "VmbChannelSendSynchronousRequest",
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_gpadl_leak() {
    static HANDLE: Mutex<u32> = Mutex::new(0);
    let host = connected();
    let g = GuestBuilder::new(&host)
        .on_opened(|g| {
            let (s, h) = gpadl_from_buffer(g.ch, 0, b"leaked");
            *lock(&HANDLE) = h;
            s
        })
        .opened();
    host.rescind();
    let v = expect_one(&host, V::GpadlLeak, "EvtChannelClosed");
    let h = *lock(&HANDLE);
    assert!(v.detail.contains(&h.to_string()), "{v}");
    gpadl_delete(g.ch, h);
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn violation_invalid_handle() {
    let host = connected();
    let g = GuestBuilder::new(&host).build();
    // A value shaped like a handle of this world, but never handed out.
    let bogus = Ch(g.ch.0 + 1000);
    assert_eq!(enable(bogus), NtStatus::STATUS_INVALID_PARAMETER_1);
    expect_one(&host, V::InvalidHandle, "VmbChannelEnable");
    // A packet handle passed as a channel.
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(enable(Ch(p.0)), NtStatus::STATUS_INVALID_PARAMETER_1);
    expect_one(&host, V::InvalidHandle, "VmbChannelEnable");
    packet_free(p);
    cleanup(g.ch);
    host.assert_no_violations();
}

#[test]
fn invalid_handle_null_goes_to_the_orphan_log() {
    let garbage = Ch(0x0000_7fff_dead_0000);
    assert_eq!(enable(garbage), NtStatus::STATUS_INVALID_PARAMETER_1);
    assert!(
        orphan_violations()
            .iter()
            .any(|v| v.kind == V::InvalidHandle
                && v.function == "VmbChannelEnable"
                && v.handle == garbage.0)
    );
    disable(Ch(0));
    assert!(
        orphan_violations()
            .iter()
            .any(|v| v.kind == V::InvalidHandle
                && v.function == "VmbChannelDisable"
                && v.handle == 0)
    );
    assert_eq!(packet_get_pointer(Pkt(0)), 0);
    assert!(sizeof_packet(Ch(0)) == 0);
}

#[test]
fn violation_state_callback_reentry() {
    let host = connected();
    let g = GuestBuilder::new(&host)
        .on_post_started(|g| pause(g.ch))
        .opened();
    expect_one(&host, V::StateCallbackReentry, "VmbChannelPause");
    assert_eq!(
        host.channel_state(),
        kmcl_model::ChannelState::Active,
        "the call did nothing"
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_packet_in_flight() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    let p = tracked_packet(g.ch, c);
    assert_eq!(send(p, b"1", WAIT), NtStatus::STATUS_SUCCESS);
    assert_eq!(send(p, b"2", WAIT), NtStatus::STATUS_INVALID_DEVICE_STATE);
    expect_one(&host, V::PacketInFlight, "VmbPacketSend");
    set_routine(p, None);
    expect_one(&host, V::PacketInFlight, "VmbPacketSetCompletionRoutine");
    host.recv(T)
        .expect("recv")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    assert!(
        host.recv(Duration::from_millis(20)).is_none(),
        "the second send did not happen"
    );
    assert_eq!(c.len(), 1);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_initialize_of_allocated_packet() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    let s = packet_initialize_handle(g.ch, p, sizeof_packet(g.ch));
    assert_eq!(s, NtStatus::STATUS_INVALID_PARAMETER_2);
    expect_one(&host, V::InitializeOfAllocatedPacket, "VmbPacketInitialize");
    packet_free(p);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_free_of_initialized_packet() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let n = sizeof_packet(g.ch);
    let mem = packet_memory(usize::try_from(n).expect("small"));
    let (_, p) = packet_initialize(g.ch, mem, n);
    packet_free(p);
    expect_one(&host, V::FreeOfInitializedPacket, "VmbPacketFree");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_external_data_without_wait() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(
        send_pfns(p, b"x", &[1, 2], 0),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    expect_one(
        &host,
        V::ExternalDataWithoutWait,
        "VmbPacketSendWithExternalPfns",
    );
    let mdl = kmcl_model::mdl_create(b"ext");
    assert_eq!(
        send_mdl(p, b"x", mdl, 0, 0, 0),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    expect_one(
        &host,
        V::ExternalDataWithoutWait,
        "VmbPacketSendWithExternalMdl",
    );
    kmcl_model::mdl_free(mdl);
    packet_free(p);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_no_external_data() {
    let host = connected();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    host.send(b"plain", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    let t = g.take_held()[0];
    let (s, mdl) = external(t, 0);
    assert_eq!(
        (s, mdl.is_null()),
        (NtStatus::STATUS_INVALID_PARAMETER, true)
    );
    expect_one(&host, V::NoExternalData, "VmbChannelPacketGetExternalData");
    complete(t, b"");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_gpadl_on_closed_channel() {
    let host = connected();
    let g = GuestBuilder::new(&host).enabled();
    let (s, h) = gpadl_from_buffer(g.ch, 0, b"too early");
    assert_eq!((s, h), (NtStatus::STATUS_INVALID_DEVICE_STATE, 0));
    expect_one(
        &host,
        V::GpadlOnClosedChannel,
        "VmbChannelCreateGpadlFromBuffer",
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_gpadl_deleted_twice() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    let (s, h) = gpadl_from_buffer(g.ch, sys::VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, b"buf");
    assert_eq!(s, NtStatus::STATUS_SUCCESS);
    gpadl_delete(g.ch, h);
    gpadl_delete(g.ch, h);
    expect_one(&host, V::GpadlDeletedTwice, "VmbChannelDeleteGpadl");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_unknown_gpadl() {
    let host = connected();
    let g = GuestBuilder::new(&host).opened();
    gpadl_delete(g.ch, 12345);
    expect_one(&host, V::UnknownGpadl, "VmbChannelDeleteGpadl");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_invalid_parameter() {
    let host = connected();
    let g = GuestBuilder::new(&host).on_packet(hold).opened();
    set_quota(g.ch, 0);
    expect_one(&host, V::InvalidParameter, "VmbChannelSetTransactionQuota");
    let txn = host.send(b"x", true).expect("send");
    wait_until("delivery", || g.held_len() == 1);
    complete_raw(g.take_held()[0], 5);
    expect_one(&host, V::InvalidParameter, "VmbChannelPacketComplete");
    assert!(
        host.wait_completion(txn, T)
            .expect("retired")
            .payload
            .is_empty()
    );
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_responder_panicked() {
    let host = connected();
    host.set_responder(|_| panic!("responder bug"));
    let g = GuestBuilder::new(&host).opened();
    let c = Completions::new(true);
    assert_eq!(
        send(tracked_packet(g.ch, c), b"x", WAIT),
        NtStatus::STATUS_SUCCESS
    );
    let v = expect_one(&host, V::ResponderPanicked, "Host::set_responder");
    assert!(v.detail.contains("responder bug"), "{v}");
    host.recv(T)
        .expect("queued for recv instead")
        .complete(NtStatus::STATUS_SUCCESS, b"");
    assert_eq!(c.len(), 1);
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_interface_use_after_release() {
    let host = connected();
    let table = query_v1(&host);
    interface_dereference(&table);
    let mut ch: sys::VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: the (released) table's function with a valid out pointer: the call itself is the
    // violation, and the model still answers it.
    let status = unsafe {
        table.VmbChannelAllocate.expect("allocate")(host.parent_device(), 0, &raw mut ch)
    };
    assert_eq!(NtStatus(status), NtStatus::STATUS_SUCCESS);
    expect_one(&host, V::InterfaceUseAfterRelease, "VmbChannelAllocate");
    // After the device is removed, even with a reference still held, every call is one.
    let table = query_v1(&host);
    host.remove_device();
    expect_one(&host, V::InterfaceNotReleased, "IRP_MN_REMOVE_DEVICE");
    // SAFETY: a channel of this world, never enabled.
    unsafe { table.VmbChannelCleanup.expect("cleanup")(ch) };
    expect_one(&host, V::InterfaceUseAfterRelease, "VmbChannelCleanup");
    interface_dereference(&table);
    host.assert_no_violations();
}

#[test]
fn violation_interface_released_twice() {
    let host = connected();
    let table = query_v1(&host);
    interface_dereference(&table);
    interface_dereference(&table);
    expect_one(&host, V::InterfaceReleasedTwice, "InterfaceDereference");
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
    host.assert_no_violations();
}

#[test]
fn violation_interface_not_released() {
    let host = connected();
    let table = query_v1(&host);
    interface_reference(&table);
    interface_dereference(&table);
    host.remove_device();
    let v = expect_one(&host, V::InterfaceNotReleased, "IRP_MN_REMOVE_DEVICE");
    assert!(v.detail.contains("1 reference"), "{v}");
}

#[test]
fn violation_interface_query_mismatch() {
    let host = connected();
    // The trap kmcl-interface-facts warns of: KMCL_CLIENT_INTERFACE_VERSION_LATEST with
    // sizeof(KMCL_CLIENT_INTERFACE_V1).
    let (status, table) = query_table(&host, sys::KMCL_CLIENT_INTERFACE_V1_SIZE, 5);
    assert_eq!(status, NtStatus::STATUS_NOT_SUPPORTED);
    assert!(table.VmbChannelAllocate.is_none());
    expect_one(&host, V::InterfaceQueryMismatch, "IRP_MN_QUERY_INTERFACE");
    // A V2-sized query with version 1.
    let (status, _) = query_table(&host, sys::KMCL_CLIENT_INTERFACE_V1_SIZE + 24, 1);
    assert_eq!(status, NtStatus::STATUS_NOT_SUPPORTED);
    expect_one(&host, V::InterfaceQueryMismatch, "IRP_MN_QUERY_INTERFACE");
    assert_eq!(host.interface_references(), 0);
    host.remove_device();
    host.assert_no_violations();
}

#[test]
fn violation_ambiguous_target() {
    let vm = kmcl_model::Vm::new();
    let offer = |data1| ModelConfig {
        interface_instance: sys::GUID {
            Data1: data1,
            ..kmcl_model::DEFAULT_INTERFACE_INSTANCE
        },
        ..Default::default()
    };
    let (a, b) = (vm.offer(offer(1)), vm.offer(offer(2)));
    let ty = kmcl_model::DEFAULT_INTERFACE_TYPE;
    // With an instance, or with one offer of the type, there is nothing to choose from.
    let ch = allocate(a.parent_device()).expect("allocate");
    let inst = a.config().interface_instance;
    assert_eq!(
        set_target(ch, Some(&ty), Some(&inst)),
        NtStatus::STATUS_SUCCESS
    );
    a.assert_no_violations();
    // Type only, with two offers of it: PnP may bind either.
    assert_eq!(set_target(ch, Some(&ty), None), NtStatus::STATUS_SUCCESS);
    expect_one(&a, V::AmbiguousTarget, "VmbClientChannelInitSetTargetPnp");
    cleanup(ch);
    let lone = connected();
    let ch = allocate(lone.parent_device()).expect("allocate");
    assert_eq!(set_target(ch, Some(&ty), None), NtStatus::STATUS_SUCCESS);
    cleanup(ch);
    lone.assert_no_violations();
    b.assert_no_violations();
}

#[test]
fn violation_retired_after_pending() {
    let host = connected();
    let g = GuestBuilder::new(&host)
        .on_packet(|_, d| {
            let (s, _) = external(d.tok, 0);
            assert_eq!(s, NtStatus::STATUS_PENDING);
            complete(d.tok, b"too soon"); // KMCL still has it
        })
        .max_external(4096, 1)
        .opened();
    host.faults().external_data_pending(1);
    host.send_with_external(b"hdr", b"data").expect("send");
    wait_until("the violation", || !host.violations().is_empty());
    expect_one(&host, V::RetiredAfterPending, "VmbChannelPacketComplete");
    g.teardown();
    host.assert_no_violations();
}

#[test]
fn violation_transaction_on_pipe() {
    let host = connected();
    let g = GuestBuilder::new(&host)
        .flags(sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE)
        .opened();
    let p = packet_allocate(g.ch).expect("allocate");
    assert_eq!(
        send(p, b"x", sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
        NtStatus::STATUS_INVALID_PARAMETER
    );
    expect_one(&host, V::TransactionOnPipe, "VmbPacketSend");
    // Without a transaction a pipe sends as usual.
    assert_eq!(send(p, b"x", 0), NtStatus::STATUS_SUCCESS);
    assert!(host.recv(T).is_some());
    g.teardown();
    host.assert_no_violations();
}
