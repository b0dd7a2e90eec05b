//! Test harness: safe wrappers over the raw `kmcl_sys` declarations (the model accepts any
//! handle value, so only buffer arguments carry preconditions, and those come from slices
//! here), and a configurable test guest whose C callbacks record what they saw.

use std::ptr;
use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use kmcl_model::kmcl_sys as sys;
use kmcl_model::{Host, Irql, NtStatus, Violation, ViolationKind, current_irql};

pub const T: Duration = Duration::from_secs(10);
pub const WAIT: u32 = sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `cond` until it holds or `T` passes.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Asserts the world recorded exactly one violation, of `kind`, in `function`; returns it.
#[track_caller]
pub fn expect_one(host: &Host, kind: ViolationKind, function: &str) -> Violation {
    let vs = host.take_violations();
    assert_eq!(vs.len(), 1, "expected exactly one {kind:?}, got {vs:#?}");
    let v = vs.into_iter().next().expect("one violation");
    assert_eq!(v.kind, kind, "{v}");
    assert_eq!(v.function, function, "{v}");
    v
}

// ---- handles as plain values (raw pointers are neither Send nor Sync) --------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ch(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pkt(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tok(pub usize);

impl Ch {
    pub fn raw(self) -> sys::VMBCHANNEL {
        ptr::without_provenance_mut(self.0)
    }
}
impl Pkt {
    pub fn raw(self) -> sys::VMBPACKET {
        ptr::with_exposed_provenance_mut(self.0)
    }
}
impl Tok {
    pub fn raw(self) -> sys::VMBPACKETCOMPLETION {
        ptr::without_provenance_mut(self.0)
    }
}

fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).expect("test buffers are small")
}

// ---- safe wrappers, one per KMCL function ------------------------------------------------------

pub fn allocate(parent: sys::PDEVICE_OBJECT) -> Result<Ch, NtStatus> {
    let mut ch: sys::VMBCHANNEL = ptr::null_mut();
    // SAFETY: `&mut ch` is writable for one VMBCHANNEL; the parent is only looked up.
    let s = NtStatus(unsafe { sys::VmbChannelAllocate(parent, 0, &raw mut ch) });
    s.ok().map(|()| Ch(ch.addr()))
}
pub fn cleanup(ch: Ch) {
    // SAFETY: handle-only call; the model accepts any value.
    unsafe { sys::VmbChannelCleanup(ch.raw()) }
}
pub fn enable(ch: Ch) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbChannelEnable(ch.raw()) })
}
pub fn disable(ch: Ch) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelDisable(ch.raw()) }
}
pub fn pause(ch: Ch) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelPause(ch.raw()) }
}
pub fn start(ch: Ch) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelStart(ch.raw()) }
}
pub fn set_max_packet(ch: Ch, n: u32) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbChannelInitSetMaximumPacketSize(ch.raw(), n) })
}
pub fn set_max_external(ch: Ch, size: u32, chain: u32) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbChannelInitSetMaximumExternalData(ch.raw(), size, chain) })
}
pub fn set_client_context(ch: Ch, n: u32) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbChannelInitSetClientContextSize(ch.raw(), n) })
}
pub fn set_process_packet(
    ch: Ch,
    pp: sys::PFN_VMB_CHANNEL_PROCESS_PACKET,
    pc: sys::PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NtStatus {
    // SAFETY: the callbacks have the KMCL signatures (type-checked).
    NtStatus(unsafe { sys::VmbChannelInitSetProcessPacketCallbacks(ch.raw(), pp, pc) })
}
pub fn set_state_callbacks(ch: Ch, cb: &sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> NtStatus {
    let mut copy = *cb;
    // SAFETY: `copy` is a whole, readable VMB_CHANNEL_STATE_CHANGE_CALLBACKS.
    NtStatus(unsafe { sys::VmbChannelInitSetStateChangeCallbacks(ch.raw(), &raw mut copy) })
}
pub fn set_friendly_name(ch: Ch, name: &str) -> NtStatus {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    let bytes = u16::try_from(units.len() * 2).expect("short name");
    let us = sys::UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: units.as_mut_ptr(),
    };
    // SAFETY: `us` is a well-formed UNICODE_STRING whose buffer is readable for Length bytes.
    NtStatus(unsafe { sys::VmbChannelInitSetFriendlyName(ch.raw(), &raw const us) })
}
pub fn set_flags(ch: Ch, f: u32) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbChannelInitSetFlags(ch.raw(), f) })
}
pub fn set_ring_pages(ch: Ch, i: u32, o: u32) -> NtStatus {
    // SAFETY: handle-only call.
    NtStatus(unsafe { sys::VmbClientChannelInitSetRingBufferPageCount(ch.raw(), i, o) })
}
pub fn set_target(ch: Ch, ty: Option<&sys::GUID>, inst: Option<&sys::GUID>) -> NtStatus {
    let ty = ty.map_or(ptr::null(), ptr::from_ref);
    let inst = inst.map_or(ptr::null(), ptr::from_ref);
    // SAFETY: the GUID pointers are NULL or point to live GUIDs.
    NtStatus(unsafe { sys::VmbClientChannelInitSetTargetPnp(ch.raw(), ty, inst, None) })
}
pub fn set_passive(ch: Ch, p: bool) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelSetIncomingProcessingAtPassive(ch.raw(), u8::from(p)) }
}
pub fn set_quota(ch: Ch, n: u32) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelSetTransactionQuota(ch.raw(), n) }
}
pub fn set_latency(ch: Ch, n: u16) -> (NtStatus, u16) {
    let mut old = 0xFFFF;
    // SAFETY: `old` is writable for one u16.
    let s = NtStatus(unsafe { sys::VmbChannelSetInterruptLatency(ch.raw(), n, &raw mut old) });
    (s, old)
}
pub fn interface_instance(ch: Ch) -> sys::GUID {
    let mut g = sys::GUID {
        Data1: 0xFFFF_FFFF,
        ..Default::default()
    };
    // SAFETY: `g` is writable for one GUID.
    unsafe { sys::VmbChannelGetInterfaceInstance(ch.raw(), &raw mut g) };
    g
}
pub fn set_pointer(ch: Ch, p: usize) {
    // SAFETY: the pointer is stored, not dereferenced.
    unsafe { sys::VmbChannelSetPointer(ch.raw(), ptr::with_exposed_provenance_mut(p)) }
}
pub fn get_pointer(ch: Ch) -> usize {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelGetPointer(ch.raw()) }.expose_provenance()
}
pub fn complete(t: Tok, resp: &[u8]) {
    // SAFETY: `resp` is readable for its length during the call.
    unsafe { sys::VmbChannelPacketComplete(t.raw(), resp.as_ptr().cast_mut().cast(), len32(resp)) }
}
pub fn complete_raw(t: Tok, len: u32) {
    // SAFETY: a NULL buffer is never read by the model (it records the misuse).
    unsafe { sys::VmbChannelPacketComplete(t.raw(), ptr::null_mut(), len) }
}
pub fn fail(t: Tok) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelPacketFail(t.raw()) }
}
pub fn defer(t: Tok) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelPacketDeferToPassive(t.raw()) }
}
pub fn external(t: Tok, flags: u32) -> (NtStatus, sys::PMDL) {
    let mut m: sys::PMDL = ptr::null_mut();
    // SAFETY: `m` is writable for one PMDL.
    let s = NtStatus(unsafe { sys::VmbChannelPacketGetExternalData(t.raw(), flags, &raw mut m) });
    (s, m)
}
pub fn sizeof_packet(ch: Ch) -> u32 {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelSizeofPacket(ch.raw()) }
}
pub fn packet_allocate(ch: Ch) -> Option<Pkt> {
    // SAFETY: handle-only call.
    let p = unsafe { sys::VmbPacketAllocate(ch.raw()) };
    (!p.is_null()).then(|| Pkt(p.addr()))
}
/// Caller memory for `VmbPacketInitialize`, 16-byte aligned, pinned for the test's life.
pub fn packet_memory(bytes: usize) -> &'static mut [u128] {
    Box::leak(vec![0u128; bytes.div_ceil(16)].into_boxed_slice())
}
pub fn packet_initialize(ch: Ch, mem: &mut [u128], n: u32) -> (NtStatus, Pkt) {
    let p: sys::VMBPACKET = mem.as_mut_ptr().cast();
    // SAFETY: `mem` is writable memory of at least `n` bytes (callers pass its size or less).
    let s = NtStatus(unsafe { sys::VmbPacketInitialize(ch.raw(), p, n) });
    (s, Pkt(p.expose_provenance()))
}
pub fn packet_initialize_handle(ch: Ch, p: Pkt, n: u32) -> NtStatus {
    // SAFETY: used only with model handles, which the model never dereferences.
    NtStatus(unsafe { sys::VmbPacketInitialize(ch.raw(), p.raw(), n) })
}
pub fn packet_free(p: Pkt) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbPacketFree(p.raw()) }
}
pub fn set_routine(p: Pkt, r: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE) {
    // SAFETY: the routine has the KMCL signature (type-checked).
    unsafe { sys::VmbPacketSetCompletionRoutine(p.raw(), r) }
}
pub fn send(p: Pkt, data: &[u8], flags: u32) -> NtStatus {
    // SAFETY: `data` is readable for its length; the model copies it during the call.
    NtStatus(unsafe {
        sys::VmbPacketSend(
            p.raw(),
            data.as_ptr().cast_mut().cast(),
            len32(data),
            ptr::null_mut(),
            flags,
        )
    })
}
pub fn send_mdl(p: Pkt, data: &[u8], mdl: sys::PMDL, off: u32, len: u32, flags: u32) -> NtStatus {
    // SAFETY: `data` is readable for its length; the MDL is a model token.
    NtStatus(unsafe {
        sys::VmbPacketSendWithExternalMdl(
            p.raw(),
            data.as_ptr().cast_mut().cast(),
            len32(data),
            mdl,
            off,
            len,
            flags,
        )
    })
}
pub fn send_pfns(p: Pkt, data: &[u8], pfns: &[u64], flags: u32) -> NtStatus {
    let n = u32::try_from(pfns.len()).expect("short list");
    // SAFETY: `data` and `pfns` are readable for their lengths during the call.
    NtStatus(unsafe {
        sys::VmbPacketSendWithExternalPfns(
            p.raw(),
            data.as_ptr().cast_mut().cast(),
            len32(data),
            pfns.as_ptr().cast_mut(),
            n,
            flags,
        )
    })
}
/// A synchronous request with a response buffer of `cap` bytes; `timeout` in
/// KeWaitForSingleObject form. Returns the status and the bytes the model reported written.
pub fn sync_request(
    ch: Ch,
    data: &[u8],
    flags: u32,
    cap: u32,
    timeout: Option<i64>,
) -> (NtStatus, Vec<u8>) {
    let mut resp = vec![0u8; usize::try_from(cap).expect("small")];
    let mut size = cap;
    let mut t = sys::LARGE_INTEGER {
        QuadPart: timeout.unwrap_or(0),
    };
    let tp: sys::PLARGE_INTEGER = if timeout.is_some() {
        &raw mut t
    } else {
        ptr::null_mut()
    };
    // SAFETY: every pointer is NULL or points to live memory of the size the model is told.
    let s = NtStatus(unsafe {
        sys::VmbChannelSendSynchronousRequest(
            ch.raw(),
            data.as_ptr().cast_mut().cast(),
            len32(data),
            ptr::null_mut(),
            flags,
            resp.as_mut_ptr().cast(),
            &raw mut size,
            tp,
        )
    });
    resp.truncate(usize::try_from(size).expect("small"));
    (s, resp)
}
pub fn packet_channel(p: Pkt) -> Ch {
    // SAFETY: handle-only call.
    Ch(unsafe { sys::VmbPacketGetChannel(p.raw()) }.addr())
}
pub fn packet_set_pointer(p: Pkt, v: usize) {
    // SAFETY: the pointer is stored, not dereferenced.
    unsafe { sys::VmbPacketSetPointer(p.raw(), ptr::with_exposed_provenance_mut(v)) }
}
pub fn packet_get_pointer(p: Pkt) -> usize {
    // SAFETY: handle-only call.
    unsafe { sys::VmbPacketGetPointer(p.raw()) }.expose_provenance()
}
/// A GPADL over static bytes: the host may read them (a host write would fault: they are
/// read-only; use [`gpadl_from_raw`] for memory the host writes).
pub fn gpadl_from_buffer(ch: Ch, flags: u32, buf: &'static [u8]) -> (NtStatus, u32) {
    // SAFETY: static bytes are readable for ever; the tests using this never write them.
    unsafe { gpadl_from_raw(ch, flags, buf.as_ptr().cast_mut(), buf.len()) }
}

/// A GPADL over `len` bytes at `ptr`.
///
/// # Safety
/// `ptr` is readable (and writable, if the host writes) for `len` bytes until the GPADL is
/// deleted, and only accessed atomically meanwhile.
pub unsafe fn gpadl_from_raw(ch: Ch, flags: u32, ptr: *mut u8, len: usize) -> (NtStatus, u32) {
    let mut h = 0;
    // SAFETY: the caller's guarantee on `ptr`; `h` is writable.
    let s = NtStatus(unsafe {
        sys::VmbChannelCreateGpadlFromBuffer(
            ch.raw(),
            flags,
            ptr.cast(),
            u32::try_from(len).expect("a test buffer fits u32"),
            &raw mut h,
        )
    });
    (s, h)
}
pub fn gpadl_from_mdl(ch: Ch, mdl: sys::PMDL, off: u32, len: u32) -> (NtStatus, u32) {
    let mut h = 0;
    // SAFETY: the MDL is a model token; `h` is writable.
    let s = NtStatus(unsafe {
        sys::VmbChannelCreateGpadlFromMdl(ch.raw(), 0, mdl, off, len, &raw mut h)
    });
    (s, h)
}
pub fn gpadl_delete(ch: Ch, h: u32) {
    // SAFETY: handle-only call.
    unsafe { sys::VmbChannelDeleteGpadl(ch.raw(), h) }
}

// ---- the test guest ----------------------------------------------------------------------------

/// One ProcessPacket call as the guest saw it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub tok: Tok,
    pub data: Vec<u8>,
    pub flags: u32,
    pub irql: Irql,
}

type PacketFn = Box<dyn Fn(&Guest, Delivery) + Send + Sync>;
type StateFn = Box<dyn Fn(&Guest) + Send + Sync>;
type OpenedFn = Box<dyn Fn(&Guest) -> NtStatus + Send + Sync>;

/// A guest driver for tests: records every callback (name, IRQL) and runs the closures it was
/// built with. Callbacks must not panic (that aborts the process), so closures record and the
/// test asserts afterwards.
pub struct Guest {
    pub ch: Ch,
    pub events: Mutex<Vec<(String, Irql)>>,
    pub deliveries: Mutex<Vec<Delivery>>,
    pub held: Mutex<Vec<Tok>>,
    pub batches: Mutex<Vec<u32>>,
    pub delivered: AtomicU64,
    on_packet: PacketFn,
    on_opened: OpenedFn,
    on_started: Option<StateFn>,
    on_post_started: Option<StateFn>,
    on_suspend: Option<StateFn>,
    on_closed: Option<StateFn>,
}

impl Guest {
    pub fn event(&self, name: impl Into<String>) {
        lock(&self.events).push((name.into(), current_irql()));
    }
    pub fn event_names(&self) -> Vec<String> {
        lock(&self.events).iter().map(|(n, _)| n.clone()).collect()
    }
    pub fn take_held(&self) -> Vec<Tok> {
        std::mem::take(&mut *lock(&self.held))
    }
    pub fn held_len(&self) -> usize {
        lock(&self.held).len()
    }
    /// Disable and cleanup.
    pub fn teardown(&self) {
        disable(self.ch);
        cleanup(self.ch);
    }
}

/// Builds a [`Guest`] on a host's world.
pub struct GuestBuilder<'h> {
    host: &'h Host,
    on_packet: PacketFn,
    on_opened: OpenedFn,
    on_started: Option<StateFn>,
    on_post_started: Option<StateFn>,
    on_suspend: Option<StateFn>,
    on_closed: Option<StateFn>,
    processing_complete: bool,
    passive: bool,
    max_packet: Option<u32>,
    max_external: Option<(u32, u32)>,
    flags: u32,
    ring: Option<(u32, u32)>,
    target: Option<(sys::GUID, Option<sys::GUID>)>,
}

/// Completes every packet inline, echoing its payload.
pub fn echo(_: &Guest, d: Delivery) {
    complete(d.tok, &d.data);
}

/// Keeps every packet for the test to retire.
pub fn hold(g: &Guest, d: Delivery) {
    lock(&g.held).push(d.tok);
}

impl<'h> GuestBuilder<'h> {
    pub fn new(host: &'h Host) -> Self {
        Self {
            host,
            on_packet: Box::new(echo),
            on_opened: Box::new(|_| NtStatus::STATUS_SUCCESS),
            on_started: None,
            on_post_started: None,
            on_suspend: None,
            on_closed: None,
            processing_complete: false,
            passive: false,
            max_packet: None,
            max_external: None,
            flags: 0,
            ring: None,
            target: None,
        }
    }
    pub fn on_packet(mut self, f: impl Fn(&Guest, Delivery) + Send + Sync + 'static) -> Self {
        self.on_packet = Box::new(f);
        self
    }
    pub fn on_opened(mut self, f: impl Fn(&Guest) -> NtStatus + Send + Sync + 'static) -> Self {
        self.on_opened = Box::new(f);
        self
    }
    pub fn on_started(mut self, f: impl Fn(&Guest) + Send + Sync + 'static) -> Self {
        self.on_started = Some(Box::new(f));
        self
    }
    pub fn on_post_started(mut self, f: impl Fn(&Guest) + Send + Sync + 'static) -> Self {
        self.on_post_started = Some(Box::new(f));
        self
    }
    pub fn on_suspend(mut self, f: impl Fn(&Guest) + Send + Sync + 'static) -> Self {
        self.on_suspend = Some(Box::new(f));
        self
    }
    pub fn on_closed(mut self, f: impl Fn(&Guest) + Send + Sync + 'static) -> Self {
        self.on_closed = Some(Box::new(f));
        self
    }
    pub fn processing_complete(mut self) -> Self {
        self.processing_complete = true;
        self
    }
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    pub fn max_packet(mut self, n: u32) -> Self {
        self.max_packet = Some(n);
        self
    }
    pub fn max_external(mut self, size: u32, chain: u32) -> Self {
        self.max_external = Some((size, chain));
        self
    }
    pub fn flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
    pub fn ring(mut self, i: u32, o: u32) -> Self {
        self.ring = Some((i, o));
        self
    }
    pub fn target(mut self, ty: sys::GUID, inst: Option<sys::GUID>) -> Self {
        self.target = Some((ty, inst));
        self
    }

    /// Allocated and configured, not enabled.
    pub fn build(self) -> &'static Guest {
        let ch = allocate(self.host.parent_device()).expect("VmbChannelAllocate");
        // The guest lives for the rest of the process: callbacks may reach it until Cleanup.
        let guest: &'static Guest = Box::leak(Box::new(Guest {
            ch,
            events: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
            delivered: AtomicU64::new(0),
            on_packet: self.on_packet,
            on_opened: self.on_opened,
            on_started: self.on_started,
            on_post_started: self.on_post_started,
            on_suspend: self.on_suspend,
            on_closed: self.on_closed,
        }));
        set_pointer(ch, ptr::from_ref(guest).expose_provenance());
        let pc: sys::PFN_VMB_CHANNEL_PROCESSING_COMPLETE = if self.processing_complete {
            Some(cb_processing_complete)
        } else {
            None
        };
        assert_eq!(
            set_process_packet(ch, Some(cb_process_packet), pc),
            NtStatus::STATUS_SUCCESS
        );
        let mut cbs = sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
        cbs.EvtChannelOpened = Some(cb_opened);
        cbs.EvtChannelStarted = Some(cb_started);
        cbs.EvtChannelPostStarted = Some(cb_post_started);
        cbs.EvtChannelSuspend = Some(cb_suspend);
        cbs.EvtChannelClosed = Some(cb_closed);
        assert_eq!(set_state_callbacks(ch, &cbs), NtStatus::STATUS_SUCCESS);
        if let Some(n) = self.max_packet {
            assert_eq!(set_max_packet(ch, n), NtStatus::STATUS_SUCCESS);
        }
        if let Some((size, chain)) = self.max_external {
            assert_eq!(set_max_external(ch, size, chain), NtStatus::STATUS_SUCCESS);
        }
        if self.flags != 0 {
            assert_eq!(set_flags(ch, self.flags), NtStatus::STATUS_SUCCESS);
        }
        if let Some((i, o)) = self.ring {
            assert_eq!(set_ring_pages(ch, i, o), NtStatus::STATUS_SUCCESS);
        }
        if let Some((ty, inst)) = &self.target {
            assert_eq!(
                set_target(ch, Some(ty), inst.as_ref()),
                NtStatus::STATUS_SUCCESS
            );
        }
        if self.passive {
            set_passive(ch, true);
        }
        guest
    }

    /// Built and enabled.
    pub fn enabled(self) -> &'static Guest {
        let g = self.build();
        assert_eq!(enable(g.ch), NtStatus::STATUS_SUCCESS);
        g
    }

    /// Built, enabled and opened by the host.
    pub fn opened(self) -> &'static Guest {
        let host = self.host;
        let g = self.enabled();
        host.open().expect("host open");
        g
    }
}

fn guest_of(ch: sys::VMBCHANNEL) -> &'static Guest {
    // SAFETY: handle-only call.
    let p = unsafe { sys::VmbChannelGetPointer(ch) }
        .cast::<Guest>()
        .cast_const();
    // SAFETY: `build` stored a pointer to a leaked (never freed) Guest before enabling.
    unsafe { &*p }
}

unsafe extern "C" fn cb_process_packet(
    ch: sys::VMBCHANNEL,
    tok: sys::VMBPACKETCOMPLETION,
    buf: sys::PVOID,
    len: u32,
    flags: u32,
) {
    let g = guest_of(ch);
    let n = usize::try_from(len).unwrap_or(0);
    // SAFETY: the model passes a buffer readable for `len` bytes during this call.
    let data = unsafe { slice::from_raw_parts(buf.cast::<u8>().cast_const(), n) }.to_vec();
    let d = Delivery {
        tok: Tok(tok.addr()),
        data,
        flags,
        irql: current_irql(),
    };
    g.delivered.fetch_add(1, Ordering::SeqCst);
    lock(&g.deliveries).push(d.clone());
    (g.on_packet)(g, d);
}

unsafe extern "C" fn cb_processing_complete(ch: sys::VMBCHANNEL, n: u32) {
    let g = guest_of(ch);
    g.event("processing_complete");
    lock(&g.batches).push(n);
}

unsafe extern "C" fn cb_opened(ch: sys::VMBCHANNEL) -> sys::NTSTATUS {
    let g = guest_of(ch);
    g.event("opened");
    (g.on_opened)(g).0
}

unsafe extern "C" fn cb_started(ch: sys::VMBCHANNEL) {
    let g = guest_of(ch);
    g.event("started");
    if let Some(f) = &g.on_started {
        f(g);
    }
}

unsafe extern "C" fn cb_post_started(ch: sys::VMBCHANNEL) {
    let g = guest_of(ch);
    g.event("post_started");
    if let Some(f) = &g.on_post_started {
        f(g);
    }
}

unsafe extern "C" fn cb_suspend(ch: sys::VMBCHANNEL) {
    let g = guest_of(ch);
    g.event("suspend");
    if let Some(f) = &g.on_suspend {
        f(g);
    }
}

unsafe extern "C" fn cb_closed(ch: sys::VMBCHANNEL) {
    let g = guest_of(ch);
    g.event("closed");
    if let Some(f) = &g.on_closed {
        f(g);
    }
}

// ---- outgoing completions ----------------------------------------------------------------------

/// What one completion routine call saw.
#[derive(Clone, Debug)]
pub struct Done {
    pub packet: Pkt,
    pub status: NtStatus,
    pub data: Vec<u8>,
    pub irql: Irql,
    pub thread: ThreadId,
}

/// The context of [`cb_completion`] (set with `VmbPacketSetPointer`): records each call and
/// optionally frees the packet from inside the routine.
pub struct Completions {
    pub list: Mutex<Vec<Done>>,
    pub count: AtomicU64,
    pub free_in_routine: bool,
}

impl Completions {
    pub fn new(free_in_routine: bool) -> &'static Self {
        Box::leak(Box::new(Self {
            list: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
            free_in_routine,
        }))
    }
    pub fn len(&self) -> usize {
        lock(&self.list).len()
    }
    pub fn all(&self) -> Vec<Done> {
        lock(&self.list).clone()
    }
}

/// Allocates a packet whose routine is [`cb_completion`] recording into `c`.
pub fn tracked_packet(ch: Ch, c: &'static Completions) -> Pkt {
    let p = packet_allocate(ch).expect("VmbPacketAllocate");
    packet_set_pointer(p, ptr::from_ref(c).expose_provenance());
    set_routine(p, Some(cb_completion));
    p
}

pub unsafe extern "C" fn cb_completion(
    pkt: sys::VMBPACKET,
    status: sys::NTSTATUS,
    buf: sys::PVOID,
    len: u32,
) {
    let p = Pkt(pkt.expose_provenance());
    // SAFETY: handle-only call.
    let c = unsafe { sys::VmbPacketGetPointer(pkt) }
        .cast::<Completions>()
        .cast_const();
    // SAFETY: `tracked_packet` stored a pointer to a leaked Completions.
    let c = unsafe { &*c };
    let data = if buf.is_null() {
        Vec::new()
    } else {
        // SAFETY: the model passes a response readable for `len` bytes during the call.
        unsafe {
            slice::from_raw_parts(
                buf.cast::<u8>().cast_const(),
                usize::try_from(len).unwrap_or(0),
            )
        }
        .to_vec()
    };
    lock(&c.list).push(Done {
        packet: p,
        status: NtStatus(status),
        data,
        irql: current_irql(),
        thread: std::thread::current().id(),
    });
    c.count.fetch_add(1, Ordering::SeqCst);
    if c.free_in_routine {
        packet_free(p);
    }
}

// ---- the client interface table ----------------------------------------------------------------

/// Queries `host`'s client interface table with `size` and `version`, as
/// `WdfFdoQueryForInterface` would; the status and the table (zeroed unless it succeeded).
pub fn query_table(
    host: &Host,
    size: u16,
    version: u16,
) -> (NtStatus, sys::KMCL_CLIENT_INTERFACE_V1) {
    let mut table = sys::KMCL_CLIENT_INTERFACE_V1::default();
    let iface = ptr::from_mut(sys::interface_header_mut(&mut table));
    // SAFETY: `iface` is the start of `table`, writable for `size_of(table)` bytes; the model
    // writes at most `size` bytes, and only for the V1 size it accepts.
    let status =
        unsafe { host.query_interface(&sys::KMCL_CLIENT_INTERFACE_TYPE, iface, size, version) };
    (status, table)
}

/// [`query_table`] for `KMCL_CLIENT_INTERFACE_V1`, which must succeed.
pub fn query_v1(host: &Host) -> sys::KMCL_CLIENT_INTERFACE_V1 {
    let (status, table) = query_table(host, sys::KMCL_CLIENT_INTERFACE_V1_SIZE, 1);
    assert_eq!(status, NtStatus::STATUS_SUCCESS);
    table
}

/// Calls the table's `InterfaceReference`.
pub fn interface_reference(table: &sys::KMCL_CLIENT_INTERFACE_V1) {
    let h = sys::interface_header(table);
    let f = h.InterfaceReference.expect("InterfaceReference");
    // SAFETY: the provider's own function with its own context.
    unsafe { f(h.Context) };
}

/// Calls the table's `InterfaceDereference`.
pub fn interface_dereference(table: &sys::KMCL_CLIENT_INTERFACE_V1) {
    let h = sys::interface_header(table);
    let f = h.InterfaceDereference.expect("InterfaceDereference");
    // SAFETY: the provider's own function with its own context.
    unsafe { f(h.Context) };
}
