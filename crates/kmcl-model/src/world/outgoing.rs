//! Guest→host traffic: packet allocation, sends (with external data), synchronous requests,
//! completions by the host and cancellation at close.

use super::*;

impl World {
    pub(crate) fn packet_allocate(&self, serial: u64, h: usize) -> usize {
        const F: &str = "VmbPacketAllocate";
        let mut g = self.lock();
        if g.channel(F, serial, h).is_none() {
            return 0;
        }
        if self.faults.take_allocation_failure() || g.next_packet > MAX_SERIAL {
            return 0;
        }
        let s = g.next_packet;
        g.next_packet += 1;
        let ph = handle::encode(Kind::Packet, self.id, s);
        g.packets.insert(
            PacketKey::Lib(s),
            PacketRec {
                channel: serial,
                handle: ph,
                in_flight: false,
                routine: None,
                pointer: 0,
            },
        );
        g.allocated += 1;
        ph
    }

    pub(crate) fn packet_initialize(
        &self,
        serial: u64,
        h: usize,
        addr: usize,
        bytes: u32,
    ) -> NtStatus {
        const F: &str = "VmbPacketInitialize";
        let mut g = self.lock();
        let Some(c) = g.channel(F, serial, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        let need = c.max_packet.saturating_add(PACKET_OBJECT_OVERHEAD);
        if bytes < need {
            return NtStatus::STATUS_INVALID_PARAMETER_3;
        }
        if let Some(old) = g.packets.get(&PacketKey::Caller(addr))
            && old.in_flight
        {
            g.record(
                V::PacketInFlight,
                F,
                addr,
                "re-initializing packet memory whose send has not completed",
            );
            return NtStatus::STATUS_INVALID_PARAMETER_2;
        }
        g.packets.insert(
            PacketKey::Caller(addr),
            PacketRec {
                channel: serial,
                handle: addr,
                in_flight: false,
                routine: None,
                pointer: 0,
            },
        );
        handle::register_caller_packet(addr, self.id);
        NtStatus::STATUS_SUCCESS
    }

    pub(crate) fn packet_free(&self, key: PacketKey, h: usize) {
        const F: &str = "VmbPacketFree";
        let mut g = self.lock();
        let st = &mut *g;
        let Some(p) = st.packets.get(&key) else {
            match key {
                PacketKey::Lib(s) if s != 0 && s < st.next_packet => st.record(
                    V::PacketFreedTwice,
                    F,
                    h,
                    "the packet was already freed (by VmbPacketFree, by the default completion \
                     routine, or by VmbChannelCleanup)",
                ),
                _ => st.record(V::InvalidHandle, F, h, "no such packet"),
            }
            return;
        };
        if p.in_flight {
            st.record(
                V::PacketFreedInFlight,
                F,
                h,
                "the packet's send has not completed; the packet was not freed",
            );
            return;
        }
        if matches!(key, PacketKey::Caller(_)) {
            st.record(
                V::FreeOfInitializedPacket,
                F,
                h,
                "packets from VmbPacketInitialize live in caller memory and must not be freed",
            );
            return;
        }
        st.free_packet(key);
    }

    pub(crate) fn packet_set_routine(
        &self,
        key: PacketKey,
        h: usize,
        routine: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE,
    ) {
        const F: &str = "VmbPacketSetCompletionRoutine";
        let mut g = self.lock();
        let Some(p) = g.packet(F, key, h) else {
            return;
        };
        if p.in_flight {
            g.record(
                V::PacketInFlight,
                F,
                h,
                "completion routine changed while a send is in flight; ignored",
            );
            return;
        }
        p.routine = routine;
    }

    pub(crate) fn packet_pointer(
        &self,
        func: &'static str,
        key: PacketKey,
        h: usize,
        set: Option<usize>,
    ) -> usize {
        let mut g = self.lock();
        let Some(p) = g.packet(func, key, h) else {
            return 0;
        };
        match set {
            Some(v) => {
                p.pointer = v;
                v
            }
            None => p.pointer,
        }
    }

    pub(crate) fn packet_channel(&self, key: PacketKey, h: usize) -> usize {
        const F: &str = "VmbPacketGetChannel";
        let mut g = self.lock();
        let Some(p) = g.packet(F, key, h) else {
            return 0;
        };
        let serial = p.channel;
        if g.is_channel_serial_live(serial) {
            handle::encode(Kind::Channel, self.id, serial)
        } else {
            g.record(
                V::ChannelUseAfterCleanup,
                F,
                h,
                "the packet's channel was cleaned up",
            );
            0
        }
    }

    /// `VmbPacketSend`, `...WithExternalMdl`, `...WithExternalPfns`.
    /// The calling thread is inside `EvtChannelSuspend` of channel `serial`: told to stop
    /// sending, and sending anyway.
    pub(super) fn sending_from_suspend(&self, serial: u64) -> bool {
        crate::irql::channel_callback_frame(self.id, serial)
            .is_some_and(|f| f.kind == FrameKind::State(StateCb::Suspend))
    }

    pub(crate) fn packet_send(
        &self,
        func: &'static str,
        key: PacketKey,
        h: usize,
        buf: &GuestBytes<'_>,
        external: External,
        flags: u32,
    ) -> NtStatus {
        // SendWithExternalMdl/Pfns need WAIT_FOR_COMPLETION; VmbPacketSend's optional MDL does
        // not (§7.5).
        let external_needs_wait = func != "VmbPacketSend";
        let wait = flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let mut g = self.lock();
        let st = &mut *g;
        let Some(p) = st.packet(func, key, h) else {
            return NtStatus::STATUS_INVALID_PARAMETER_1;
        };
        let serial = p.channel;
        let (in_flight, routine) = (p.in_flight, p.routine);
        let Some(c) = st.channel(func, serial, h) else {
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        };
        let max = c.max_packet;
        let pipe = c.flags & sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE != 0;
        let ring_max = max_payload(Channel::ring_bytes(c.ring_pages.1));
        let (may_send, phase, immediate) = (
            c.may_send() && !self.sending_from_suspend(serial),
            c.phase,
            c.phase.delivers_to_host(),
        );
        if flags & !sys::VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            st.record(
                V::InvalidFlags,
                func,
                h,
                format!("flags {flags:#x} outside VMBUS_CHANNEL_FORMAT_FLAGS"),
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if wait && pipe {
            st.record(
                V::TransactionOnPipe,
                func,
                h,
                "a pipe-mode channel (VMBUS_CHANNEL_INIT_FLAG_IS_PIPE) has no transactions: \
                 no WAIT_FOR_COMPLETION",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if !wait && external_needs_wait {
            st.record(
                V::ExternalDataWithoutWait,
                func,
                h,
                "external data requires VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            st.record(
                V::SendTooLarge,
                func,
                h,
                format!("{} bytes > maximum packet size {max}", buf.len()),
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.is_null_with_length() {
            st.record(
                V::InvalidParameter,
                func,
                h,
                "NULL buffer with a non-zero length",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if buf.len() > ring_max {
            // [inf] A packet that can never fit the outgoing ring cannot be sent.
            return NtStatus::STATUS_INVALID_BUFFER_SIZE;
        }
        if matches!(key, PacketKey::Caller(_)) && routine.is_none() {
            st.record(
                V::SendWithoutCompletionRoutine,
                func,
                h,
                "a packet from VmbPacketInitialize needs VmbPacketSetCompletionRoutine first",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        if in_flight {
            st.record(
                V::PacketInFlight,
                func,
                h,
                "the packet is already in flight",
            );
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        if !may_send {
            st.record(
                V::SendOnClosedChannel,
                func,
                h,
                format!("channel is {phase:?} (after EvtChannelSuspend or disabled)"),
            );
            return NtStatus::STATUS_INVALID_DEVICE_STATE;
        }
        if flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0
            && current_irql() != Irql::Passive
        {
            st.record(
                V::PassiveOnlyAtDispatch,
                func,
                h,
                "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER needs PASSIVE_LEVEL (pageable buffer)",
            );
            return NtStatus::STATUS_INVALID_PARAMETER;
        }
        let (ext_bytes, pfns) = match external {
            External::None => (None, None),
            External::Pfns(v) => (None, Some(v)),
            External::Mdl {
                mdl: m,
                offset,
                len,
            } => {
                let Some(all) = mdl::bytes(ptr::without_provenance_mut(m)) else {
                    st.record(
                        V::InvalidHandle,
                        func,
                        m,
                        "external MDL is not a valid model MDL",
                    );
                    return NtStatus::STATUS_INVALID_PARAMETER;
                };
                let off = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = if len == 0 {
                    Some(all.len())
                } else {
                    off.checked_add(usize::try_from(len).unwrap_or(usize::MAX))
                };
                match end.and_then(|e| all.get(off..e)) {
                    Some(b) => (Some(b.to_vec()), None),
                    None => return NtStatus::STATUS_INVALID_PARAMETER,
                }
            }
        };
        if let Some(status) = self.faults.take_send_failure() {
            if self.faults.runs_routine_of_failed_sends() {
                // A KMCL that also completes the refused packet through its routine, before
                // the send returns (FaultPlan::run_routine_of_failed_sends): the reference
                // infers it does not (§7.5 [inf]), and a guest must be right either way.
                drop(g);
                self.run_completion(serial, h, routine, status, &[]);
            }
            return status;
        }
        let txn = st.next_txn;
        st.next_txn += 1;
        let gp = GuestPacket {
            payload: buf.to_vec(usize::MAX),
            flags,
            synchronous: false,
            external: ext_bytes,
            pfns,
            id: txn,
            channel: serial,
            needs_completion: wait,
            world: self.me.clone(),
            held: None,
        };
        if let Some(p) = st.packets.get_mut(&key) {
            p.in_flight = true;
        }
        st.in_flight += 1;
        if wait {
            st.out_txns.insert(
                txn,
                OutTxn {
                    channel: serial,
                    what: OutWhat::Packet(key),
                    completing: false,
                },
            );
        }
        let gp = st.now_or_at_open(serial, gp, immediate);
        drop(g);
        if let Some(gp) = gp {
            self.deliver_to_host(gp, true);
        }
        if !wait {
            // [inf] Without WAIT_FOR_COMPLETION the routine runs as soon as the packet is
            // queued: inline, before VmbPacketSend returns.
            self.finish_without_wait(serial, key);
        }
        NtStatus::STATUS_SUCCESS
    }

    pub(super) fn finish_without_wait(&self, serial: u64, key: PacketKey) {
        let mut g = self.lock();
        let Some(p) = g.packets.get_mut(&key) else {
            return;
        };
        p.in_flight = false;
        let (h, routine) = (p.handle, p.routine);
        g.in_flight = g.in_flight.saturating_sub(1);
        if let Some(c) = g.channels.get_mut(&serial) {
            c.routines_running += 1;
        }
        drop(g);
        self.run_completion(serial, h, routine, NtStatus::STATUS_SUCCESS, &[]);
        let mut g = self.lock();
        if let Some(c) = g.channels.get_mut(&serial) {
            c.routines_running = c.routines_running.saturating_sub(1);
        }
        if routine.is_none() {
            g.free_packet(key);
        }
        drop(g);
        self.state_cv.notify_all();
    }

    /// Runs a packet's completion routine at DISPATCH on this thread (nothing for the default
    /// routine, whose freeing the caller does).
    pub(super) fn run_completion(
        &self,
        serial: u64,
        h: usize,
        routine: sys::PFN_VMB_PACKET_COMPLETION_ROUTINE,
        status: NtStatus,
        response: &[u8],
    ) {
        let Some(f) = routine else {
            return;
        };
        let mut buf = AlignedBuf::from_slice(response);
        let (data, len) = if response.is_empty() {
            (ptr::null_mut(), 0)
        } else {
            (buf.as_mut_ptr(), buf.len_u32())
        };
        let pkt: sys::VMBPACKET = ptr::without_provenance_mut(h);
        let pkt = if handle::decode(h).is_none() {
            // Caller memory: hand back the very pointer the guest gave us.
            ptr::with_exposed_provenance_mut(h)
        } else {
            pkt
        };
        in_callback(
            self.frame(serial, FrameKind::Completion),
            Irql::Dispatch,
            || {
                // SAFETY: `f` is the completion routine the guest set on this packet; it runs
                // exactly once per send, with the packet handle, the transaction status and a
                // response buffer readable for `len` bytes during the call, at DISPATCH, with no
                // model lock held.
                unsafe { f(pkt, status.0, data, len) }
            },
        );
        buf.poison();
    }

    /// The guest's KMCL sends `gp` through the guest→host ring (queued on the channel when the
    /// ring is full and `queue`). When this write signals the host, the host's interrupt
    /// handler runs here and this thread offers its own packet to the host (so the responder
    /// answers inline, before the send returns); otherwise whoever drains the ring offers it.
    pub(super) fn deliver_to_host(&self, gp: GuestPacket, queue: bool) -> GuestWrite {
        let Some(link) = self.link_of(gp.channel) else {
            return GuestWrite::Closed; // the channel closed while the packet was on its way
        };
        let id = gp.id;
        let mut aux = gp.flags & AUX_FLAGS;
        if gp.synchronous {
            aux |= AUX_SYNCHRONOUS;
        }
        if gp.external.is_some() || gp.pfns.is_some() {
            aux |= AUX_EXTERNAL;
            self.lock()
                .g2h_side
                .insert(id, (gp.channel, gp.external, gp.pfns));
        }
        let kind = OutgoingKind::InBand {
            transaction_id: wire_id(id),
            completion_requested: gp.needs_completion,
        };
        link.expect(Dir::G2h, id);
        let wrote = link.guest_write(kind, aux, &gp.payload, queue);
        if wrote == GuestWrite::Signal {
            self.host_isr(&link);
        }
        self.check_poisoned(&link);
        // Ours if the host's handler handed it to us (it did, if we signalled).
        let mine = if link.unexpect(Dir::G2h, id) {
            None
        } else {
            link.take(Dir::G2h, id, HANDOFF_WAIT)
        };
        if let Some(item) = mine {
            let flags = self.offer_item(&link, item);
            self.after_consume(&link, flags);
        }
        if !matches!(
            wrote,
            GuestWrite::Signal | GuestWrite::NoSignal | GuestWrite::Queued
        ) {
            self.lock().g2h_side.remove(&id);
        }
        wrote
    }

    /// The host takes a guest packet: the responder answers it (the packet is consumed) or it
    /// waits for `recv` (still holding its ring space). Returns the consume flags.
    pub(super) fn offer_to_host(&self, mut gp: GuestPacket) -> (bool, bool) {
        let responder = relock(&self.responder).clone();
        let has_responder = responder.is_some();
        let answer = responder.and_then(|r| match catch_unwind(AssertUnwindSafe(|| r(&gp))) {
            Ok(a) => a,
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.record(
                    V::ResponderPanicked,
                    "Host::set_responder",
                    0,
                    format!("the responder panicked on transaction {}: {msg}", gp.id),
                );
                None
            }
        });
        let mut g = self.lock();
        g.stats.received_from_guest += 1;
        let (id, wait) = (gp.id, gp.needs_completion);
        match answer {
            Some((status, response)) => {
                drop(g);
                let (_, flags) = Self::consume(&gp);
                if wait {
                    self.host_complete(id, status, &response);
                }
                flags
            }
            None => {
                let cancelled = wait && !g.out_txns.contains_key(&id);
                let open = g.channels.get(&gp.channel).is_some_and(|c| {
                    c.phase.delivers_to_host() && g.open_channel == Some(c.serial)
                });
                if cancelled || !open {
                    // Cancelled meanwhile (channel closed or request timed out), or the
                    // channel closed while the packet was on its way.
                    drop(g);
                    return Self::consume(&gp).1;
                }
                // A host with a responder has looked at the packet: it keeps its own copy for
                // later and frees the ring space. A host without one has not read it yet: the
                // packet keeps its ring space until `recv` takes it.
                let flags = if has_responder {
                    drop(g); // ring locks are taken before the world's, never after
                    let flags = Self::consume(&gp).1;
                    gp.held = None;
                    g = self.lock();
                    flags
                } else {
                    (false, false)
                };
                g.to_host.push_back(gp);
                drop(g);
                self.recv_cv.notify_one();
                flags
            }
        }
    }

    pub(crate) fn recv(&self, timeout: Duration) -> Option<GuestPacket> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut g = self.lock();
            if let Some(gp) = g.to_host.pop_front() {
                drop(g);
                if let (Some(link), flags) = Self::consume(&gp) {
                    self.after_consume(&link, flags);
                }
                return Some(gp);
            }
            if g.shutdown {
                return None;
            }
            let link = self.open_link(&g);
            drop(g);
            // Poll: a guest packet is not signalled while the host holds unreceived ones.
            if let Some(link) = link {
                self.host_isr(&link);
            }
            let g = self.lock();
            if !g.to_host.is_empty() {
                continue;
            }
            let slice = Instant::now() + HOST_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let (g, _) = Self::wait_until(&self.recv_cv, g, Some(until));
            let empty = g.to_host.is_empty();
            drop(g);
            if empty && deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }

    /// The host completes guest transaction `id`: a completion packet through the
    /// host→guest ring, then (on this thread, once the guest's handler read it out) the
    /// guest-side effect: the packet's completion routine or the synchronous requester's wake.
    pub(crate) fn host_complete(&self, id: u64, status: NtStatus, response: &[u8]) {
        let link = {
            let mut g = self.lock();
            let channel = match g.out_txns.get_mut(&id) {
                // Unknown, already completed, cancelled or timed out, or a completion of it
                // already crossing the ring: ignored, never seen by the guest, and never
                // written to the ring (a hostile host may complete twice, concurrently, or make
                // ids up, 0 included).
                None
                | Some(OutTxn {
                    completing: true, ..
                }) => {
                    g.stats.ignored_host_completions += 1;
                    return;
                }
                Some(t) => {
                    t.completing = true;
                    t.channel
                }
            };
            g.channels.get(&channel).and_then(|c| c.link.clone())
        };
        let Some(link) = link else {
            self.finish_host_completion(id, status, response);
            return;
        };
        link.expect(Dir::H2g, id);
        let kind = OutgoingKind::Completion {
            transaction_id: wire_id(id),
        };
        let aux = u32::from_le_bytes(status.0.to_le_bytes());
        match link.host_write(kind, aux, response, || self.guest_isr(&link)) {
            Ok(signal) => {
                if signal {
                    self.guest_isr(&link);
                }
                if let Some(Item::Completion {
                    status, payload, ..
                }) = link.take(Dir::H2g, id, HANDOFF_WAIT)
                {
                    self.finish_host_completion(id, status, &payload);
                }
            }
            Err(HostWriteError::TooLarge) => {
                // Larger than the ring: KMCL would never see it; hand it over as is.
                link.unexpect(Dir::H2g, id);
                self.finish_host_completion(id, status, response);
            }
            Err(HostWriteError::Closed) => {
                link.unexpect(Dir::H2g, id);
            }
        }
    }

    /// The host completes guest transaction `id`.
    /// The guest side of a host completion: the routine runs here, or the synchronous
    /// requester wakes.
    pub(super) fn finish_host_completion(&self, id: u64, status: NtStatus, response: &[u8]) {
        let mut g = self.lock();
        let st = &mut *g;
        let Some(t) = st.out_txns.remove(&id) else {
            // Unknown, already completed, cancelled or timed out: ignored, never seen by the
            // guest (a hostile host may complete twice or make ids up).
            st.stats.ignored_host_completions += 1;
            return;
        };
        st.stats.completed_by_host += 1;
        match t.what {
            OutWhat::Sync(slot) => {
                if let Some(s) = st.sync_slots.get_mut(&slot) {
                    *s = Some(SyncAnswer::Host(status, response.to_vec()));
                }
                drop(g);
                self.sync_cv.notify_all();
            }
            OutWhat::Packet(key) => {
                let Some(p) = st.packets.get_mut(&key) else {
                    return;
                };
                p.in_flight = false;
                let (h, routine) = (p.handle, p.routine);
                st.in_flight = st.in_flight.saturating_sub(1);
                if let Some(c) = st.channels.get_mut(&t.channel) {
                    c.routines_running += 1;
                }
                drop(g);
                self.run_completion(t.channel, h, routine, status, response);
                let mut g = self.lock();
                if let Some(c) = g.channels.get_mut(&t.channel) {
                    c.routines_running = c.routines_running.saturating_sub(1);
                }
                if routine.is_none() {
                    // The default completion routine frees the packet.
                    g.free_packet(key);
                }
                drop(g);
                self.state_cv.notify_all();
            }
        }
    }

    /// `VmbChannelSendSynchronousRequest` (§6.3).
    #[expect(clippy::too_many_arguments, reason = "mirrors the KMCL function")]
    pub(crate) fn sync_request(
        &self,
        serial: u64,
        h: usize,
        buf: &GuestBytes<'_>,
        external_mdl: usize,
        flags: u32,
        capacity: Option<u32>,
        timeout: Option<i64>,
    ) -> SyncOutcome {
        const F: &str = "VmbChannelSendSynchronousRequest";
        let fail = |status| SyncOutcome {
            status,
            response: None,
        };
        let wait = flags & sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let no_wait_call = timeout == Some(0) && !wait;
        if !no_wait_call && !self.require_passive(F, h) {
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        if let Some(f) = crate::irql::channel_callback_frame(self.id, serial)
            && f.kind == FrameKind::State(StateCb::Started)
        {
            self.record(
                V::SyncRequestInStarted,
                F,
                h,
                "a synchronous request from EvtChannelStarted never returns on Windows (the \
                 incoming queue is not running yet); failed with STATUS_INVALID_DEVICE_STATE",
            );
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        if capacity.is_some_and(|c| c % 8 != 0) {
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        let mut g = self.lock();
        let st = &mut *g;
        let Some(c) = st.channel(F, serial, h) else {
            return fail(NtStatus::STATUS_INVALID_PARAMETER_1);
        };
        let (max, phase, may_send, immediate) = (
            c.max_packet,
            c.phase,
            c.may_send() && !self.sending_from_suspend(serial),
            c.phase.delivers_to_host(),
        );
        if wait && c.flags & sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE != 0 {
            st.record(
                V::TransactionOnPipe,
                F,
                h,
                "a pipe-mode channel (VMBUS_CHANNEL_INIT_FLAG_IS_PIPE) has no transactions: \
                 no WAIT_FOR_COMPLETION",
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        let ring_max = max_payload(Channel::ring_bytes(c.ring_pages.1));
        let link = c.link.clone();
        if flags & !sys::VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            st.record(V::InvalidFlags, F, h, format!("flags {flags:#x}"));
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if buf.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            st.record(
                V::SendTooLarge,
                F,
                h,
                format!("{} bytes > maximum packet size {max}", buf.len()),
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if buf.is_null_with_length() {
            st.record(
                V::InvalidParameter,
                F,
                h,
                "NULL buffer with a non-zero length",
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        }
        if phase == Phase::Closing || (st.rescind_pending && st.open_channel == Some(serial)) {
            return fail(NtStatus::STATUS_DEVICE_REMOVED);
        }
        if !may_send {
            st.record(
                V::SendOnClosedChannel,
                F,
                h,
                format!("channel is {phase:?}"),
            );
            return fail(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let external = if external_mdl == 0 {
            None
        } else if let Some(b) = mdl::bytes(ptr::without_provenance_mut(external_mdl)) {
            Some(b.as_ref().clone())
        } else {
            st.record(
                V::InvalidHandle,
                F,
                external_mdl,
                "external MDL is not a valid model MDL",
            );
            return fail(NtStatus::STATUS_INVALID_PARAMETER);
        };
        if buf.len() > ring_max {
            // [inf] A request that can never fit the outgoing ring cannot be sent.
            return fail(NtStatus::STATUS_INVALID_BUFFER_SIZE);
        }
        drop(g);
        // A request that must not wait fails when the ring has no room for it now.
        if timeout == Some(0) && link.as_ref().is_some_and(|l| !l.guest_has_room(buf.len())) {
            return fail(NtStatus::STATUS_BUFFER_OVERFLOW);
        }
        let payload = buf.to_vec(usize::MAX);
        let mut g = self.lock();
        let st = &mut *g;
        let txn = st.next_txn;
        st.next_txn += 1;
        st.stats.sync_requests += 1;
        if wait {
            st.sync_slots.insert(txn, None);
            st.out_txns.insert(
                txn,
                OutTxn {
                    channel: serial,
                    what: OutWhat::Sync(txn),
                    completing: false,
                },
            );
        }
        let gp = GuestPacket {
            payload,
            flags,
            synchronous: true,
            external,
            pfns: None,
            id: txn,
            channel: serial,
            needs_completion: wait,
            world: self.me.clone(),
            held: None,
        };
        let gp = st.now_or_at_open(serial, gp, immediate);
        drop(g);
        if let Some(gp) = gp {
            // A request that must not wait is not queued on the channel either.
            let queue = timeout != Some(0);
            if self.deliver_to_host(gp, queue) == GuestWrite::Full {
                let mut g = self.lock();
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_BUFFER_OVERFLOW);
            }
        }
        if !wait {
            // [inf] Without WAIT_FOR_COMPLETION the request is done once it is queued.
            return SyncOutcome {
                status: NtStatus::STATUS_SUCCESS,
                response: Some(Vec::new()),
            };
        }
        let deadline = timeout.map(timeout_deadline);
        let mut g = self.lock();
        loop {
            if let Some(Some(_)) = g.sync_slots.get(&txn) {
                return match g.sync_slots.remove(&txn).flatten() {
                    Some(SyncAnswer::Host(status, response)) => SyncOutcome {
                        status,
                        response: Some(response),
                    },
                    _ => fail(NtStatus::STATUS_DEVICE_REMOVED),
                };
            }
            if g.shutdown {
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_DEVICE_REMOVED);
            }
            let (ng, expired) = Self::wait_until(&self.sync_cv, g, deadline);
            g = ng;
            if expired && matches!(g.sync_slots.get(&txn), Some(None)) {
                // KeWaitForSingleObject timed out: the request is cancelled.
                g.sync_slots.remove(&txn);
                g.out_txns.remove(&txn);
                return fail(NtStatus::STATUS_CANCELLED);
            }
        }
    }
}
