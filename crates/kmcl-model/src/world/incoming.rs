//! Host→guest traffic: the host's sends, the rings' interrupt handlers, delivery to the guest's
//! ProcessPacket and the retiring of incoming packets.

use super::*;

impl World {
    pub(crate) fn host_send(
        &self,
        payload: &[u8],
        external: Option<Vec<u8>>,
        completion_requested: bool,
        inline: bool,
    ) -> Result<crate::HostTxn, HostSendError> {
        let mut g = self.lock();
        let st = &mut *g;
        let serial = st.open_channel.ok_or(HostSendError::NotOpen)?;
        let c = st.channels.get_mut(&serial).ok_or(HostSendError::NotOpen)?;
        if !matches!(
            c.phase,
            Phase::Starting | Phase::PostStarting | Phase::Active | Phase::Pausing | Phase::Paused
        ) {
            return Err(HostSendError::NotOpen);
        }
        let link = c.link.clone().ok_or(HostSendError::NotOpen)?;
        if let Some(e) = &external {
            // The guest sized its rings and MDL chains for what it declared
            // (VmbChannelInitSetMaximumExternalData); the model's MDLs are one-element chains.
            let limit = c.max_external.map(|(size, _)| size);
            if limit.is_none_or(|l| e.len() > usize::try_from(l).unwrap_or(usize::MAX)) {
                return Err(HostSendError::ExternalDataRefused {
                    len: e.len(),
                    limit,
                });
            }
        }
        let len = payload.len() + external.as_ref().map_or(0, Vec::len);
        let limit = link.h2g_max_payload();
        if len > limit || u32::try_from(payload.len()).is_err() {
            return Err(HostSendError::TooLarge { len, limit });
        }
        let txn = st.next_txn;
        st.next_txn += 1;
        st.host_txns.insert(
            txn,
            HostTxnRec {
                completion_requested,
                result: None,
                dropped: false,
            },
        );
        let aux = if external.is_some() { AUX_EXTERNAL } else { 0 };
        if let Some(e) = external {
            st.h2g_side.insert(txn, Arc::new(e));
        }
        if inline {
            st.inline_txns.insert(txn);
        }
        drop(g);
        let kind = OutgoingKind::InBand {
            transaction_id: wire_id(txn),
            completion_requested,
        };
        match link.host_write(kind, aux, payload, || self.guest_isr(&link)) {
            Ok(true) => self.guest_isr(&link),
            Ok(false) => {} // the guest is draining the ring (or will be): no signal
            Err(_) => {
                // The channel closed meanwhile: dropped undelivered.
                let mut g = self.lock();
                g.stats.dropped_undelivered += 1;
                g.h2g_side.remove(&txn);
                g.inline_txns.remove(&txn);
                if let Some(hr) = g.host_txns.get_mut(&txn) {
                    hr.dropped = true;
                }
                drop(g);
                self.txn_cv.notify_all();
            }
        }
        Ok(crate::HostTxn(txn))
    }

    /// [`Host::send_inline`](crate::Host::send_inline): sends, then runs the packet's
    /// ProcessPacket on this thread when it is next in line and the queue can take it.
    pub(crate) fn host_send_inline(
        &self,
        payload: &[u8],
        completion_requested: bool,
    ) -> Result<crate::HostTxn, HostSendError> {
        let handle = self.host_send(payload, None, completion_requested, true)?;
        let txn = handle.0;
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut g = self.lock();
        let job = loop {
            let serial = g.open_channel;
            let st = &mut *g;
            let c = serial.and_then(|s| st.channels.get_mut(&s));
            let Some(c) = c else {
                break None;
            };
            let ours = c.next_is_inline() && c.to_guest.front().is_some_and(|p| p.txn == txn);
            if ours && c.can_deliver() {
                break self.take_delivery_from(st, serial);
            }
            let queued = c.to_guest.iter_mut().find(|p| p.txn == txn);
            if let Some(p) = queued {
                // Not deliverable now: the delivery threads take it in turn.
                p.inline = false;
                break None;
            } else if !st.inline_txns.contains(&txn) || g.shutdown || Instant::now() >= deadline {
                // Delivered already, dropped, or never read out of the ring.
                g.inline_txns.remove(&txn);
                break None;
            }
            // Still in the ring: another thread runs the guest's interrupt handler.
            let (ng, _) = Self::wait_until(&self.state_cv, g, Some(Instant::now() + HOST_POLL));
            g = ng;
        };
        drop(g);
        match job {
            Some(job) => self.run_delivery(job),
            None => self.work_cv.notify_all(),
        }
        Ok(handle)
    }

    pub(crate) fn wait_completion(&self, txn: u64, timeout: Duration) -> Option<GuestCompletion> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.pump();
            let mut g = self.lock();
            match g.host_txns.get(&txn) {
                None => return None,
                Some(r) if r.result.is_some() || r.dropped => {
                    return g.host_txns.remove(&txn).and_then(|r| r.result);
                }
                Some(_) => {}
            }
            if g.shutdown {
                return None;
            }
            let link = self.open_link(&g);
            drop(g);
            // The host polls its incoming ring while it waits: a guest completion is not
            // signalled while the host holds unreceived packets.
            if let Some(link) = link {
                self.host_isr(&link);
            }
            let g = self.lock();
            if g.host_txns
                .get(&txn)
                .is_some_and(|r| r.result.is_some() || r.dropped)
            {
                continue;
            }
            let slice = Instant::now() + HOST_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let (g, _) = Self::wait_until(&self.txn_cv, g, Some(until));
            drop(g);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut g = self.lock();
                let done = g
                    .host_txns
                    .get(&txn)
                    .is_some_and(|r| r.result.is_some() || r.dropped);
                return if done {
                    g.host_txns.remove(&txn).and_then(|r| r.result)
                } else {
                    None
                };
            }
        }
    }

    // ---- the rings ----------------------------------------------------------------------------

    /// The link of the open channel.
    pub(super) fn open_link(&self, st: &State) -> Option<Arc<Link>> {
        st.open_channel
            .and_then(|s| st.channels.get(&s))
            .and_then(|c| c.link.clone())
    }

    pub(super) fn link_of(&self, serial: u64) -> Option<Arc<Link>> {
        self.lock()
            .channels
            .get(&serial)
            .and_then(|c| c.link.clone())
    }

    /// The guest's interrupt handler for the host→guest ring (KMCL's ISR/DPC): host packets
    /// go to the channel's delivery queue, completions to the host thread that completes.
    pub(super) fn guest_isr(&self, link: &Arc<Link>) {
        let mut woke = false;
        link.guest_drain(|item| match item {
            Item::Data {
                txn, aux, payload, ..
            } => woke |= self.enqueue_to_guest(link, txn, aux, payload),
            Item::Completion { txn, .. } => {
                if link.hand_off(Dir::H2g, txn, item).is_some() {
                    link.note_unknown_completion();
                }
            }
        });
        if woke {
            self.work_cv.notify_one();
        }
        self.state_cv.notify_all();
        self.check_poisoned(link);
    }

    /// A host packet read out of the ring joins the channel's delivery queue. Returns whether
    /// a delivery thread should wake.
    pub(super) fn enqueue_to_guest(
        &self,
        link: &Arc<Link>,
        txn: u64,
        aux: u32,
        payload: Vec<u8>,
    ) -> bool {
        let mut g = self.lock();
        let st = &mut *g;
        let external = if aux & AUX_EXTERNAL != 0 {
            st.h2g_side.remove(&txn)
        } else {
            None
        };
        let inline = st.inline_txns.remove(&txn);
        let live = st
            .channels
            .get_mut(&link.channel)
            .filter(|c| c.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)));
        let Some(c) = live else {
            st.stats.dropped_undelivered += 1;
            if let Some(hr) = st.host_txns.get_mut(&txn) {
                hr.dropped = true;
            }
            drop(g);
            self.txn_cv.notify_all();
            return false;
        };
        c.to_guest.push_back(ToGuest {
            txn,
            payload,
            external,
            deferred: false,
            inline,
        });
        !inline
    }

    /// The host's interrupt handler for the guest→host ring (also its poll): copies new guest
    /// packets out, records guest completions, hands each packet to the guest thread waiting
    /// to offer it or offers it here, and writes queued guest packets when space frees up.
    pub(super) fn host_isr(&self, link: &Arc<Link>) {
        loop {
            let mut unowned = Vec::new();
            let mut signal = link.host_drain(|item| match item {
                Item::Completion {
                    txn,
                    status,
                    payload,
                } => self.record_guest_completion(link, txn, status, payload),
                Item::Data { txn, .. } => {
                    if let Some(item) = link.hand_off(Dir::G2h, txn, item) {
                        unowned.push(item);
                    }
                }
            });
            let mut again = false;
            for item in unowned {
                let (s, more) = self.offer_item(link, item);
                signal |= s;
                again |= more;
            }
            if signal && link.flush_backlog() {
                again = true;
            }
            self.check_poisoned(link);
            if !again {
                return;
            }
        }
    }

    /// Reacts to a consumed packet: writes queued guest packets if the host's reader signalled,
    /// and drains what arrived without a signal.
    pub(super) fn after_consume(&self, link: &Arc<Link>, (signal, more): (bool, bool)) {
        let wrote = signal && link.flush_backlog();
        self.check_poisoned(link);
        if wrote || more {
            self.host_isr(link);
        }
    }

    pub(super) fn record_guest_completion(
        &self,
        link: &Link,
        txn: u64,
        status: NtStatus,
        payload: Vec<u8>,
    ) {
        let mut g = self.lock();
        match g.host_txns.get_mut(&txn) {
            Some(hr) if hr.result.is_none() && hr.completion_requested => {
                hr.result = Some(GuestCompletion {
                    payload,
                    failed: !status.is_success(),
                });
                drop(g);
                self.txn_cv.notify_all();
            }
            _ => {
                drop(g);
                link.note_unknown_completion();
            }
        }
    }

    /// The guest packet that a ring item carries.
    pub(super) fn guest_packet(&self, link: &Arc<Link>, item: Item) -> Option<GuestPacket> {
        let Item::Data {
            txn,
            completion_requested,
            aux,
            payload,
            slot,
        } = item
        else {
            return None;
        };
        let (external, pfns) = if aux & AUX_EXTERNAL != 0 {
            self.lock()
                .g2h_side
                .remove(&txn)
                .map_or((None, None), |(_, e, p)| (e, p))
        } else {
            (None, None)
        };
        Some(GuestPacket {
            payload,
            flags: aux & AUX_FLAGS,
            synchronous: aux & AUX_SYNCHRONOUS != 0,
            external,
            pfns,
            id: txn,
            channel: link.channel,
            needs_completion: completion_requested,
            world: self.me.clone(),
            held: Some((Arc::downgrade(link), slot)),
        })
    }

    /// Offers a packet read out of the ring; returns the consume flags to react to.
    pub(super) fn offer_item(&self, link: &Arc<Link>, item: Item) -> (bool, bool) {
        match self.guest_packet(link, item) {
            Some(gp) => self.offer_to_host(gp),
            None => (false, false),
        }
    }

    /// Frees a guest packet's ring space; returns the consume flags.
    pub(super) fn consume(gp: &GuestPacket) -> (Option<Arc<Link>>, (bool, bool)) {
        match &gp.held {
            Some((link, slot)) => match link.upgrade() {
                Some(l) => {
                    let flags = l.consume(*slot);
                    (Some(l), flags)
                }
                None => (None, (false, false)),
            },
            None => (None, (false, false)),
        }
    }

    /// The delivery thread body: pull a packet, call ProcessPacket at the channel's IRQL,
    /// account, and call ProcessingComplete at the end of a batch.
    /// Inline delivery ([`ModelConfig::inline_delivery`](crate::ModelConfig)): runs every
    /// delivery that can run now on this thread, unless this thread is inside a guest callback
    /// or already delivering (the next packet is delivered when the current callback returns,
    /// as KMCL does on one processor). A no-op with delivery threads.
    pub(crate) fn pump(&self) {
        thread_local! {
            static PUMPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if !self.cfg.inline_delivery || PUMPING.get() || crate::irql::innermost_frame().is_some() {
            return;
        }
        PUMPING.set(true);
        let _model = crate::irql::ModelCode::enter();
        loop {
            let job = {
                let mut g = self.lock();
                if g.shutdown {
                    break;
                }
                self.take_delivery(&mut g)
            };
            match job {
                Some(job) => self.run_delivery(job),
                None => break,
            }
        }
        PUMPING.set(false);
    }

    pub(super) fn delivery_loop(self: Arc<Self>) {
        loop {
            let mut g = self.lock();
            let job = loop {
                if g.shutdown {
                    return;
                }
                if let Some(job) = self.take_delivery(&mut g) {
                    break job;
                }
                g = Self::wait(&self.work_cv, g);
            };
            drop(g);
            self.run_delivery(job);
        }
    }

    pub(super) fn take_delivery(&self, st: &mut State) -> Option<Delivery> {
        let mut chosen = None;
        for c in st.channels.values_mut() {
            if c.queue_on
                && !c.queue_failed
                && !c.quota_blocked
                && c.has_queued()
                && c.outstanding >= c.quota
            {
                // §6.1.4: the queue stops until a packet completes.
                c.quota_blocked = true;
            }
            if c.can_deliver() && !c.next_is_inline() {
                chosen = Some(c.serial);
                break;
            }
        }
        self.take_delivery_from(st, chosen)
    }

    /// Takes the next packet of channel `serial` for delivery (the caller checked it may).
    pub(super) fn take_delivery_from(
        &self,
        st: &mut State,
        serial: Option<u64>,
    ) -> Option<Delivery> {
        if st.next_token > MAX_SERIAL {
            return None;
        }
        let token = st.next_token;
        let c = st.channels.get_mut(&serial?)?;
        let p = c.deferred.pop_front().or_else(|| c.to_guest.pop_front())?;
        c.outstanding += 1;
        c.delivering += 1;
        c.batch += 1;
        let irql = if p.deferred {
            Irql::Passive
        } else {
            c.delivery_irql()
        };
        let flags = if p.external.is_some() {
            sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
        } else {
            0
        };
        let job = Delivery {
            channel: c.serial,
            ch: c.raw(),
            token,
            callback: c.process_packet,
            view: AlignedBuf::from_slice(&p.payload),
            flags,
            irql,
        };
        if p.deferred {
            st.stats.redelivered_at_passive += 1;
        } else {
            st.stats.delivered_to_guest += 1;
        }
        st.next_token += 1;
        st.incoming.insert(
            token,
            IncomingRec {
                channel: job.channel,
                packet: p,
                mdl: None,
                pending: false,
            },
        );
        Some(job)
    }

    pub(super) fn run_delivery(&self, mut job: Delivery) {
        let tok: sys::VMBPACKETCOMPLETION =
            ptr::without_provenance_mut(handle::encode(Kind::Completion, self.id, job.token));
        let (buf, len) = (job.view.as_mut_ptr(), job.view.len_u32());
        if let Some(f) = job.callback {
            let deliver = || {
                in_callback(
                    self.frame(job.channel, FrameKind::Packet(job.token)),
                    job.irql,
                    || {
                        // SAFETY: `f` is the channel's registered EvtVmbChannelProcessPacket;
                        // it gets the channel handle, a fresh completion token, and `buf`,
                        // which is readable for `len` bytes until this call returns (the
                        // model poisons it afterwards and keeps it allocated in the
                        // quarantine).
                        unsafe { f(job.ch, tok, buf, len, job.flags) }
                    },
                );
            };
            match self.cfg.delivery {
                DeliveryMode::PrivateCopy => deliver(),
                DeliveryMode::InPlaceHostile => {
                    let words = job.view.shared_words();
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let stop_ref = &stop;
                    std::thread::scope(|s| {
                        // SAFETY: the view's words stay allocated until the scope ends (the
                        // view is poisoned and quarantined only after it); meanwhile only
                        // the guest reads them, through the raw pointer it was given.
                        s.spawn(move || {
                            let _model = crate::irql::ModelCode::enter();
                            // SAFETY: see above.
                            unsafe { crate::raw::scribble(words, stop_ref) }
                        });
                        deliver();
                        stop.store(true, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
        job.view.poison();
        let mut g = self.lock();
        let st = &mut *g;
        // `VmbChannelPacketGetExternalData` said STATUS_PENDING: the packet stays KMCL's and is
        // delivered again at PASSIVE_LEVEL, where its data is ready.
        if st.incoming.get(&job.token).is_some_and(|r| r.pending)
            && let Some(rec) = st.incoming.remove(&job.token)
        {
            if rec.mdl.is_some() {
                mdl::retire_incoming(self.id, job.token);
            }
            if let Some(c) = st.channels.get_mut(&rec.channel) {
                c.outstanding = c.outstanding.saturating_sub(1);
                let mut p = rec.packet;
                p.deferred = true;
                c.deferred.push_back(p);
            }
            self.work_cv.notify_all();
        }
        st.quarantine.push_back(job.view);
        if st.quarantine.len() > QUARANTINE {
            st.quarantine.pop_front();
        }
        let mut batch_end = None;
        if let Some(c) = st.channels.get_mut(&job.channel) {
            c.delivering = c.delivering.saturating_sub(1);
            if c.delivering == 0 && c.batch > 0 && !c.can_deliver() {
                let n = std::mem::take(&mut c.batch);
                if let Some(pc) = c.processing_complete {
                    c.delivering += 1;
                    batch_end = Some((pc, n, c.delivery_irql()));
                }
            }
        }
        drop(g);
        self.state_cv.notify_all();
        if let Some((pc, n, irql)) = batch_end {
            in_callback(
                self.frame(job.channel, FrameKind::ProcessingComplete),
                irql,
                || {
                    // SAFETY: the channel's registered EvtVmbChannelProcessingComplete, called
                    // with its channel handle after the last ProcessPacket of the batch.
                    unsafe { pc(job.ch, n) }
                },
            );
            let mut g = self.lock();
            g.stats.processing_complete_calls += 1;
            if let Some(c) = g.channels.get_mut(&job.channel) {
                c.delivering = c.delivering.saturating_sub(1);
            }
            drop(g);
            self.state_cv.notify_all();
        }
    }

    /// Complete, Fail or Defer of an incoming packet.
    pub(crate) fn retire_incoming(
        &self,
        how: Retire,
        token: u64,
        h: usize,
        response: &GuestBytes<'_>,
    ) {
        let func = how.function();
        if how == Retire::Defer {
            let inline = crate::irql::innermost_frame()
                .is_some_and(|f| f.world == self.id && f.kind == FrameKind::Packet(token));
            let known = self.lock().incoming.contains_key(&token);
            if known && !inline {
                self.record(
                    V::DeferOutsideCallback,
                    func,
                    h,
                    "DeferToPassive is only valid inline from the ProcessPacket call that \
                     delivered this packet; the packet is still outstanding",
                );
                return;
            }
        }
        let mut g = self.lock();
        let st = &mut *g;
        let Some(rec) = st.incoming.remove(&token) else {
            if st.force_retired.remove(&token) {
                return; // already reported as UncompletedAtDisable
            }
            if token != 0 && token < st.next_token {
                st.record(
                    V::IncomingCompletedTwice,
                    func,
                    h,
                    "the packet was already completed, failed or deferred",
                );
            } else {
                st.record(
                    V::UnknownIncomingToken,
                    func,
                    h,
                    "no such packet was delivered",
                );
            }
            return;
        };
        if rec.pending {
            st.record(
                V::RetiredAfterPending,
                func,
                h,
                "VmbChannelPacketGetExternalData returned STATUS_PENDING for this packet: return \
                 without retiring it, KMCL delivers it again",
            );
        }
        let Some(c) = st.channels.get_mut(&rec.channel) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        let unblocked = std::mem::replace(&mut c.quota_blocked, false);
        let chan_h = c.handle;
        let max = usize::try_from(c.max_packet).unwrap_or(usize::MAX);
        let link = c.link.clone();
        if rec.mdl.is_some() {
            mdl::retire_incoming(self.id, token);
        }
        let mut wake_workers = unblocked;
        // The host asked for a completion: it travels as a completion packet (below, after
        // the lock), carrying this status; otherwise only the host's bookkeeping sees it.
        let mut wire: Option<(Arc<Link>, u64, NtStatus)> = None;
        let requested = st
            .host_txns
            .get(&rec.packet.txn)
            .is_some_and(|hr| hr.completion_requested);
        match how {
            Retire::Complete => {
                if response.is_null_with_length() {
                    st.record(
                        V::InvalidParameter,
                        func,
                        h,
                        format!("NULL completion buffer with length {}", response.len()),
                    );
                } else if response.len() > max {
                    st.record(
                        V::CompletionTooLarge,
                        func,
                        h,
                        format!(
                            "completion of {} bytes exceeds the maximum packet size {max} of \
                             channel {chan_h:#x}; truncated",
                            response.len()
                        ),
                    );
                }
                st.stats.completed_by_guest += 1;
                if let (true, Some(l)) = (requested, &link) {
                    wire = Some((Arc::clone(l), rec.packet.txn, NtStatus::STATUS_SUCCESS));
                } else if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    let payload = if hr.completion_requested {
                        response.to_vec(max)
                    } else {
                        Vec::new()
                    };
                    hr.result = Some(GuestCompletion {
                        payload,
                        failed: false,
                    });
                }
            }
            Retire::Fail => {
                st.stats.failed_by_guest += 1;
                c.queue_failed = true; // §6.1.2: Fail stops the queue until the channel closes.
                if let (true, Some(l)) = (requested, &link) {
                    wire = Some((Arc::clone(l), rec.packet.txn, NtStatus::STATUS_UNSUCCESSFUL));
                } else if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    hr.result = Some(GuestCompletion {
                        payload: Vec::new(),
                        failed: true,
                    });
                }
            }
            Retire::Defer => {
                st.stats.deferred_by_guest += 1;
                let mut p = rec.packet;
                p.deferred = true;
                c.deferred.push_back(p);
                wake_workers = true;
            }
        }
        drop(g);
        if let Some((link, txn, status)) = wire {
            let body = if status.is_success() {
                let all = response.as_slice();
                all.get(..max).unwrap_or(all)
            } else {
                &[]
            };
            let kind = OutgoingKind::Completion {
                transaction_id: wire_id(txn),
            };
            let aux = u32::from_le_bytes(status.0.to_le_bytes());
            if link.guest_write(kind, aux, body, true) == GuestWrite::Signal {
                self.host_isr(&link);
            }
            self.check_poisoned(&link);
        }
        self.txn_cv.notify_all();
        self.state_cv.notify_all();
        if wake_workers {
            self.work_cv.notify_all();
        }
        // Inline delivery: a packet retired outside its callback may free the queue (quota).
        self.pump();
    }

    pub(crate) fn external_data(
        &self,
        token: u64,
        h: usize,
        flags: u32,
    ) -> Result<usize, NtStatus> {
        const F: &str = "VmbChannelPacketGetExternalData";
        let mut g = self.lock();
        let st = &mut *g;
        let Some(rec) = st.incoming.get_mut(&token) else {
            let kind = if token != 0 && token < st.next_token {
                V::IncomingCompletedTwice
            } else {
                V::UnknownIncomingToken
            };
            st.record(kind, F, h, "the packet is not outstanding");
            return Err(NtStatus::STATUS_INVALID_PARAMETER_1);
        };
        if flags & !sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
            st.record(V::InvalidFlags, F, h, format!("flags {flags:#x}"));
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        let Some(bytes) = rec.packet.external.clone() else {
            st.record(
                V::NoExternalData,
                F,
                h,
                "the packet was delivered without VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA",
            );
            return Err(NtStatus::STATUS_INVALID_PARAMETER);
        };
        if self.faults.take_external_data_pending() {
            rec.pending = true;
            return Err(NtStatus::STATUS_PENDING);
        }
        if let Some(m) = rec.mdl {
            return Ok(m);
        }
        let m = mdl::register(bytes, mdl::Owner::Incoming(self.id, token)).addr();
        rec.mdl = Some(m);
        Ok(m)
    }
}
