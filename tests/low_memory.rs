//! Low memory, as Driver Verifier's low-resources simulation makes it: for every k, the k-th
//! allocation the driver makes (the core and kmcl, on any thread: device add, channel up,
//! negotiation, every IOCTL, host packets, teardown) fails. Each run must end without a panic
//! (a panic in a driver is a bugcheck; here, with this allocator, an abort of the test), with
//! every request and host packet completed once with a clean status, nothing leaked (no
//! packet, no interface reference, no violation; the ASan run of `.ci/reliability` adds
//! LeakSanitizer), and the device usable again once memory is back.
//!
//! Only the driver's allocations fail: the model's are its own business (it marks them,
//! `kmcl_model::in_guest_code`), and so are the test platform's, which stands for WDF and
//! allocates nothing while the driver runs.
#![cfg(not(windows))] // the model stands in for KMCL off Windows only
#![expect(
    unsafe_code,
    reason = "a counting global allocator, and the model's device token for ParentDevice"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmcl_model::{Host, ModelConfig};
use vmbmsg_core::sim::{HostSide, SimConfig, answer};
use vmbmsg_core::{
    CancelToken, Core, CoreConfig, IoRequest, Library, NtStatus, ParentDevice, Platform,
};
use vmbmsg_proto::ioctl::{
    ChannelState, IOCTL_VMBMSG_GET_INFO, IOCTL_VMBMSG_PING, IOCTL_VMBMSG_RECV, IOCTL_VMBMSG_SEND,
    InfoOut, NOT_READY_STATUS, PingOut, RECV_OUT_MAX, SendIn, SendOut, write_send_input,
};
use vmbmsg_proto::wire::{HostMessage, MessageKind, PROTOCOL_V1_1, ReplyBody, parse_reply};

// ---- the allocator -----------------------------------------------------------------------------

thread_local! {
    /// Set by the test around its calls into the driver core (device add, channel up, IOCTLs,
    /// teardown): the driver runs on this thread then.
    static IN_DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// Driver allocations so far in this run.
static DRIVER_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// The driver allocation (1-based) that fails; 0: none.
static FAIL_AT: AtomicU64 = AtomicU64::new(0);
/// Driver allocations refused.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Whether the allocation being made is the driver's: guest code of the model (not inside a
/// KMCL function or on a model thread outside a guest callback), and either inside a callback
/// the model called or inside the test's own call into the driver.
fn drivers() -> bool {
    kmcl_model::in_guest_code() && (kmcl_model::in_guest_callback() || IN_DRIVER.with(Cell::get))
}

struct Counting;

// SAFETY: forwards to `System`, or returns null (a failed allocation) for one chosen driver
// allocation; no unwinding.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if drivers() {
            let n = DRIVER_ALLOCS.fetch_add(1, Ordering::Relaxed) + 1;
            if n == FAIL_AT.load(Ordering::Relaxed) {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return std::ptr::null_mut();
            }
        }
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if drivers() {
            let n = DRIVER_ALLOCS.fetch_add(1, Ordering::Relaxed) + 1;
            if n == FAIL_AT.load(Ordering::Relaxed) {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return std::ptr::null_mut();
            }
        }
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if drivers() {
            let n = DRIVER_ALLOCS.fetch_add(1, Ordering::Relaxed) + 1;
            if n == FAIL_AT.load(Ordering::Relaxed) {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return std::ptr::null_mut();
            }
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: every pointer came from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` as the driver (its allocations count).
fn driver<R>(f: impl FnOnce() -> R) -> R {
    IN_DRIVER.with(|d| d.set(true));
    let r = f();
    IN_DRIVER.with(|d| d.set(false));
    r
}

// ---- a platform that allocates nothing while the driver runs ------------------------------------

/// Completions of the run's requests, by id: how many times, and the last status.
#[derive(Default)]
struct Outcomes {
    times: [AtomicUsize; 16],
    status: [AtomicU64; 16],
}

struct Req {
    id: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    token: Option<CancelToken<Req>>,
    outcomes: Arc<Outcomes>,
}

impl IoRequest for Req {
    fn input(&self) -> &[u8] {
        &self.input
    }
    fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }
    fn complete(self, status: NtStatus, _information: usize) {
        self.outcomes.times[self.id].fetch_add(1, Ordering::SeqCst);
        self.outcomes.status[self.id].store(u64::from(status.as_u32()), Ordering::SeqCst);
    }
    fn mark_cancelable(&mut self, token: CancelToken<Self>) -> Result<(), NtStatus> {
        self.token = Some(token);
        Ok(())
    }
    fn unmark_cancelable(&mut self) -> bool {
        drop(self.token.take());
        true
    }
}

/// Parked RECVs in a fixed array (no allocation).
#[derive(Default)]
struct Plat {
    parked: Mutex<[Option<Req>; 4]>,
}

impl Platform for Plat {
    type Request = Req;
    fn park_recv(&self, request: Req) -> Result<(), (Req, NtStatus)> {
        let mut slots = self.parked.lock().unwrap();
        match slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(request);
                Ok(())
            }
            None => Err((request, NtStatus::STATUS_INSUFFICIENT_RESOURCES)),
        }
    }
    fn next_parked_recv(&self) -> Option<Req> {
        self.parked
            .lock()
            .unwrap()
            .iter_mut()
            .find_map(Option::take)
    }
    fn parked_recv_count(&self) -> usize {
        self.parked.lock().unwrap().iter().flatten().count()
    }
    /// No host close in these runs (the host never closes the channel here).
    fn channel_closed_by_host(&self) {}
}

// ---- one run -----------------------------------------------------------------------------------

const T: Duration = Duration::from_secs(10);

struct Run {
    host: Host,
    outcomes: Arc<Outcomes>,
    next_id: usize,
}

impl Run {
    fn request(&mut self, input: Vec<u8>, output_len: usize) -> Req {
        let id = self.next_id;
        self.next_id += 1;
        Req {
            id,
            input,
            output: vec![0; output_len],
            token: None,
            outcomes: self.outcomes.clone(),
        }
    }

    fn ioctl(&mut self, core: &Core<Plat>, code: u32, input: Vec<u8>, output_len: usize) -> usize {
        let request = self.request(input, output_len);
        let id = request.id;
        driver(|| core.handle_ioctl(code, request));
        id
    }

    fn wait_done(&self, id: usize) -> NtStatus {
        let deadline = std::time::Instant::now() + T;
        while self.outcomes.times[id].load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "request {id} never completed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        NtStatus(self.outcomes.status[id].load(Ordering::SeqCst) as u32 as i32)
    }
}

fn library(host: &Host) -> Library {
    let query = |iface, size, version, ty: &_| {
        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
        unsafe { host.query_interface(ty, iface, size, version) }
    };
    // SAFETY: the model's query is a PnP query-interface.
    unsafe { Library::query(query) }.expect("query")
}

fn parent(host: &Host) -> ParentDevice {
    // SAFETY: the model's device token outlives every channel of the run.
    unsafe { ParentDevice::from_raw(host.parent_device()) }
}

fn send_in(payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; size_of::<SendIn>() + payload.len()];
    let n = write_send_input(&mut buf, payload).unwrap();
    buf.truncate(n);
    buf
}

/// Statuses a request may end with in a low-memory run.
fn clean(status: NtStatus) -> bool {
    status == NtStatus::STATUS_SUCCESS
        || status == NtStatus::STATUS_INSUFFICIENT_RESOURCES
        || status == NOT_READY_STATUS
}

/// The host's ECHO and NOTIFY, and whether the guest's completion was a reply of the right
/// kind (an error status counts: it is what a driver out of memory answers).
fn host_traffic(host: &Host) {
    for (kind, message) in [
        (
            MessageKind::ECHO,
            HostMessage::echo(PROTOCOL_V1_1, 1, b"echo in low memory"),
        ),
        (
            MessageKind::NOTIFY,
            HostMessage::notify(PROTOCOL_V1_1, 2, b"notify in low memory"),
        ),
    ] {
        let mut buf = vec![0; message.encoded_len()];
        let n = message.write(&mut buf).unwrap();
        buf.truncate(n);
        let Ok(txn) = host.send(&buf, true) else {
            continue; // not open: nothing was accepted, nothing to complete
        };
        let done = host
            .wait_completion(txn, T)
            .expect("every host packet is completed");
        let reply =
            parse_reply(&done.payload, kind, message.id).expect("the completion is a reply");
        assert!(matches!(
            reply.body,
            ReplyBody::Echo { .. } | ReplyBody::Empty
        ));
    }
}

/// One run with the `fail_at`-th driver allocation failing (0: none). Returns the number of
/// driver allocations it made.
fn run(fail_at: u64) -> u64 {
    DRIVER_ALLOCS.store(0, Ordering::SeqCst);
    REFUSED.store(0, Ordering::SeqCst);
    FAIL_AT.store(fail_at, Ordering::SeqCst);
    let host = kmcl_model::connected_with(ModelConfig {
        interface_type: vmbmsg_core::sim::interface_type(),
        ..ModelConfig::default()
    });
    let sim = SimConfig::default();
    let side = HostSide::default();
    host.set_responder(move |gp| answer(&sim, &side, gp).map(|r| (NtStatus::STATUS_SUCCESS, r)));
    let mut run = Run {
        host,
        outcomes: Arc::new(Outcomes::default()),
        next_id: 0,
    };
    let config = CoreConfig {
        negotiate_timeout: Duration::from_secs(5),
        notify_depth: 2,
        max_parked_recv: 2,
        reply_buffers: 2,
        ring_pages: 8,
        ..CoreConfig::default()
    };
    let lib = library(&run.host);

    // Device add: the core itself may fail; then the device add fails (nothing to undo) and
    // PnP retries it later, when memory is back.
    let core = match driver(|| Core::with_config(Plat::default(), config.clone())) {
        Ok(core) => Some(core),
        Err(status) => {
            assert_eq!(status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
            None
        }
    };
    if let Some(core) = &core {
        // Start: the channel may fail to come up; the device start fails, cleanly.
        let up = driver(|| core.channel_up(&lib, parent(&run.host)));
        match up {
            Ok(()) => {
                run.host.open().expect("the host opens the channel");
            }
            Err(status) => {
                assert_eq!(status, NtStatus::STATUS_INSUFFICIENT_RESOURCES);
                assert_eq!(core.state(), ChannelState::DOWN);
            }
        }
        // Traffic, whatever state the channel is in.
        let info = run.ioctl(core, IOCTL_VMBMSG_GET_INFO, vec![], size_of::<InfoOut>());
        let ping = run.ioctl(core, IOCTL_VMBMSG_PING, vec![], size_of::<PingOut>());
        let send = run.ioctl(
            core,
            IOCTL_VMBMSG_SEND,
            send_in(b"hello"),
            size_of::<SendOut>(),
        );
        let recv = run.ioctl(core, IOCTL_VMBMSG_RECV, vec![], RECV_OUT_MAX);
        for id in [info, ping, send] {
            let status = run.wait_done(id);
            assert!(clean(status), "request {id}: {status}");
        }
        host_traffic(&run.host);
        // The NOTIFY completed the parked RECV, or it was refused/not parked; a RECV still
        // parked is completed by the teardown.
        let _ = recv;
    }
    let allocations = DRIVER_ALLOCS.load(Ordering::SeqCst);
    if fail_at != 0 {
        assert!(
            fail_at > allocations || REFUSED.load(Ordering::SeqCst) == 1,
            "the {fail_at}-th driver allocation was refused"
        );
    }

    // Memory is back: the device works again (a new start, or a retried device add).
    FAIL_AT.store(0, Ordering::SeqCst);
    let core = match core {
        Some(core) => core,
        None => driver(|| Core::with_config(Plat::default(), config.clone())).expect("device add"),
    };
    if core.state() != ChannelState::READY {
        driver(|| core.channel_down());
        driver(|| core.channel_up(&lib, parent(&run.host))).expect("channel up again");
        run.host.open().expect("open again");
    }
    assert_eq!(core.state(), ChannelState::READY, "usable again");
    let ping = run.ioctl(&core, IOCTL_VMBMSG_PING, vec![], size_of::<PingOut>());
    assert_eq!(run.wait_done(ping), NtStatus::STATUS_SUCCESS);
    host_traffic(&run.host);

    // Teardown: every request completed exactly once, nothing leaked.
    driver(|| core.channel_down());
    driver(|| drop(core));
    drop(lib);
    run.host.remove_device();
    for id in 0..run.next_id {
        assert_eq!(
            run.outcomes.times[id].load(Ordering::SeqCst),
            1,
            "request {id} completed exactly once (fail_at {fail_at})"
        );
        let status = NtStatus(run.outcomes.status[id].load(Ordering::SeqCst) as u32 as i32);
        assert!(
            clean(status) || status == NtStatus::STATUS_DEVICE_REMOVED,
            "request {id}: {status} (fail_at {fail_at})"
        );
    }
    let s = run.host.stats();
    assert_eq!(
        (s.packets_allocated, s.packets_in_flight),
        (0, 0),
        "fail_at {fail_at}"
    );
    assert_eq!(s.incoming_outstanding, 0, "fail_at {fail_at}");
    assert_eq!(run.host.interface_references(), 0, "fail_at {fail_at}");
    run.host.assert_no_violations();
    allocations
}

#[test]
fn every_driver_allocation_can_fail_without_a_panic_a_leak_or_a_lost_request() {
    let total = run(0);
    assert!(total > 10, "the run makes the driver allocate ({total})");
    for k in 1..=total {
        run(k);
    }
    eprintln!("low memory: failed each of the {total} driver allocations of a run, one per run");
}
