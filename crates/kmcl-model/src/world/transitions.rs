//! State transitions of a channel: enable, the host's open, pause and start, the host's close and
//! rescind, disable and cleanup, and the state callbacks they run.

use super::*;

/// `EVT_VMB_CHANNEL_PNP_FAILURE`.
type PnpFailureFn = unsafe extern "C" fn(sys::VMBCHANNEL, sys::NTSTATUS);

impl World {
    /// Waits until no other transition owns the channel and takes it. `Err` (with the guard)
    /// if the channel is gone or the world shuts down.
    pub(super) fn begin_transition<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
    ) -> Result<Guard<'a>, Guard<'a>> {
        loop {
            if g.shutdown {
                return Err(g);
            }
            match g.channels.get_mut(&serial) {
                None => return Err(g),
                Some(c) if !c.transition => {
                    c.transition = true;
                    return Ok(g);
                }
                Some(_) => g = Self::wait(&self.state_cv, g),
            }
        }
    }

    pub(super) fn end_transition(&self, g: &mut State, serial: u64) {
        if let Some(c) = g.channels.get_mut(&serial) {
            c.transition = false;
        }
        self.state_cv.notify_all();
    }

    /// Waits (releasing the lock) until `done` holds, the deadline passes or the world shuts
    /// down. Returns whether `done` holds.
    pub(super) fn wait_for<'a>(
        &'a self,
        mut g: Guard<'a>,
        deadline: Option<Instant>,
        done: impl Fn(&State) -> bool,
    ) -> (Guard<'a>, bool) {
        loop {
            if done(&g) {
                return (g, true);
            }
            if g.shutdown {
                return (g, false);
            }
            let (ng, expired) = Self::wait_until(&self.state_cv, g, deadline);
            g = ng;
            if expired {
                let ok = done(&g);
                return (g, ok);
            }
        }
    }

    pub(super) fn call_state(
        &self,
        serial: u64,
        ch: sys::VMBCHANNEL,
        which: StateCb,
        f: Option<unsafe extern "C" fn(sys::VMBCHANNEL)>,
    ) {
        if let Some(f) = f {
            in_callback(
                self.frame(serial, FrameKind::State(which)),
                Irql::Passive,
                || {
                    // SAFETY: the guest registered `f` as this state-change callback of the
                    // channel (VmbChannelInitSetStateChangeCallbacks); it is called as KMCL calls
                    // it: at PASSIVE_LEVEL, with the channel's handle, and no model lock held.
                    unsafe { f(ch) }
                },
            );
        }
    }

    /// [`Host::fail_pnp_connection`](crate::Host::fail_pnp_connection).
    pub(crate) fn fail_pnp_connection(&self, status: NtStatus) -> usize {
        let targets: Vec<(u64, sys::VMBCHANNEL, PnpFailureFn)> = {
            let g = self.lock();
            g.channels
                .values()
                .filter(|c| c.phase == Phase::Enabled && c.target.is_some())
                .filter_map(|c| c.pnp_failure.map(|f| (c.serial, c.raw(), f)))
                .collect()
        };
        crate::irql::with_irql(Irql::Passive, || {
            for &(serial, ch, f) in &targets {
                in_callback(
                    self.frame(serial, FrameKind::State(StateCb::PnpFailure)),
                    Irql::Passive,
                    || {
                        // SAFETY: the guest registered `f` as the channel's PnP failure
                        // callback (VmbClientChannelInitSetTargetPnp); it is called as KMCL
                        // calls it: at PASSIVE_LEVEL, with the channel handle and the status,
                        // and no model lock held.
                        unsafe { f(ch, status.0) }
                    },
                );
            }
        });
        targets.len()
    }

    /// Runs the start half of the state model: Started, queue on, PostStarted, Active. The
    /// caller holds the transition; the lock is released around the callbacks.
    pub(super) fn run_start<'a>(&'a self, mut g: Guard<'a>, serial: u64) -> Guard<'a> {
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        c.phase = Phase::Starting;
        c.suspend_called = false;
        let (ch, started, post) = (
            c.raw(),
            c.callbacks.EvtChannelStarted,
            c.callbacks.EvtChannelPostStarted,
        );
        drop(g);
        self.call_state(serial, ch, StateCb::Started, started);
        let mut g = self.lock();
        if g.shutdown {
            return g;
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        c.queue_on = true;
        c.phase = Phase::PostStarting;
        drop(g);
        self.work_cv.notify_all();
        self.call_state(serial, ch, StateCb::PostStarted, post);
        let mut g = self.lock();
        if let Some(c) = g.channels.get_mut(&serial) {
            c.phase = Phase::Active;
        }
        g
    }

    /// The host's open: Opened, then (unless a pause is armed) Started, PostStarted.
    pub(crate) fn open_sequence(self: Arc<Self>) -> Result<(), OpenError> {
        crate::irql::with_irql(Irql::Passive, || self.open_inner())
    }

    pub(super) fn open_inner(&self) -> Result<(), OpenError> {
        let g = self.lock();
        if g.shutdown {
            return Err(OpenError::ShutDown);
        }
        if g.withdrawn {
            return Err(OpenError::NoOffer);
        }
        let serial = g
            .channels
            .values()
            .find(|c| c.phase == Phase::Enabled && !c.transition)
            .or_else(|| g.channels.values().find(|c| c.phase == Phase::Enabled))
            .map(|c| c.serial)
            .ok_or(OpenError::NoEnabledChannel)?;
        let mut g = self
            .begin_transition(g, serial)
            .map_err(|_| OpenError::ShutDown)?;
        let Some(c) = g.channels.get_mut(&serial) else {
            return Err(OpenError::NoEnabledChannel);
        };
        if c.phase != Phase::Enabled {
            self.end_transition(&mut g, serial);
            return Err(OpenError::NoEnabledChannel);
        }
        if let Some((ty, inst)) = &c.target {
            let inst_ok = inst
                .as_ref()
                .is_none_or(|i| guid_eq(i, &self.cfg.interface_instance));
            if !guid_eq(ty, &self.cfg.interface_type) || !inst_ok {
                self.end_transition(&mut g, serial);
                return Err(OpenError::TargetMismatch);
            }
        }
        // The guest's KMCL allocates the rings (and offers them to the host) before the host
        // can open; without them there is no open and no callback. The rings exist from the
        // open to the close.
        let Some(link) = Link::new(serial, c.ring_pages.0, c.ring_pages.1) else {
            self.end_transition(&mut g, serial);
            return Err(OpenError::RingsNotAllocated(
                NtStatus::STATUS_INSUFFICIENT_RESOURCES,
            ));
        };
        c.phase = Phase::Opening;
        c.instance = self.cfg.interface_instance;
        let (ch, opened) = (c.raw(), c.callbacks.EvtChannelOpened);
        g.open_channel = Some(serial);
        drop(g);

        let status = opened.map_or(NtStatus::STATUS_SUCCESS, |f| {
            in_callback(
                self.frame(serial, FrameKind::State(StateCb::Opened)),
                Irql::Passive,
                || {
                    // SAFETY: the guest registered `f` as EvtChannelOpened of this channel;
                    // called at PASSIVE_LEVEL with the channel handle, no model lock held.
                    NtStatus(unsafe { f(ch) })
                },
            )
        });

        let mut g = self.lock();
        if g.shutdown {
            return Err(OpenError::ShutDown);
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return Err(OpenError::ShutDown);
        };
        if !status.is_success() {
            // §5.4: a failure rolls the channel back to Enabled with no traffic.
            c.phase = Phase::Enabled;
            c.instance = sys::GUID::default();
            if g.open_channel == Some(serial) {
                g.open_channel = None;
            }
            self.end_transition(&mut g, serial);
            return Err(OpenError::OpenedFailed(status));
        }
        c.phase = Phase::Starting;
        c.link = Some(link);
        // Fault hook: a rescind queued behind the open (closed below, once the open returned).
        let rescind_queued = self.faults.take_rescind_after_opened();
        let pending: Vec<GuestPacket> = c.pre_open.drain(..).collect();
        let armed = c.pause_armed;
        if armed {
            c.phase = Phase::Paused;
            c.pause_armed = false;
        }
        if rescind_queued {
            g.rescind_pending = true;
        }
        drop(g);
        // Packets queued before the open reach the host now (§6.2).
        for gp in pending {
            self.deliver_to_host(gp, true);
        }
        let mut g = self.lock();
        if !armed {
            g = self.run_start(g, serial);
        }
        self.end_transition(&mut g, serial);
        drop(g);
        if rescind_queued {
            self.rescind();
        }
        Ok(())
    }

    pub(crate) fn pause(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelPause";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        let Some(c) = g.channels.get_mut(&serial) else {
            return;
        };
        match c.phase {
            Phase::Disabled | Phase::Enabled => c.pause_armed = true,
            Phase::Active => {
                c.phase = Phase::Pausing;
                g = self.suspend_and_drain(g, serial, F);
                if let Some(c) = g.channels.get_mut(&serial) {
                    c.phase = Phase::Paused;
                }
            }
            _ => {}
        }
        self.end_transition(&mut g, serial);
    }

    pub(crate) fn start(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelStart";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        let Some(c) = g.channels.get_mut(&serial) else {
            return;
        };
        match c.phase {
            Phase::Disabled | Phase::Enabled => c.pause_armed = false,
            Phase::Paused => g = self.run_start(g, serial),
            _ => {}
        }
        self.end_transition(&mut g, serial);
        drop(g);
        self.pump();
    }

    pub(crate) fn disable(&self, serial: u64, h: usize) {
        const F: &str = "VmbChannelDisable";
        if !self.transition_entry_ok(F, serial, h) {
            return;
        }
        let g = self.lock();
        let Ok(mut g) = self.begin_transition(g, serial) else {
            return;
        };
        g = self.close(g, serial, F, false);
        self.end_transition(&mut g, serial);
    }

    /// Offers the channel again, or withdraws the offer.
    pub(crate) fn set_offered(&self, offered: bool) {
        self.lock().withdrawn = !offered;
    }

    pub(crate) fn rescind(&self) {
        self.close_channel_of(None);
    }

    /// Closes the open channel (the host's close or rescind) if it runs on `link`'s rings, or
    /// whatever its rings with `None`.
    pub(super) fn close_channel_of(&self, link: Option<&Arc<Link>>) {
        crate::irql::with_irql(Irql::Passive, || {
            let mut g = self.lock();
            let Some(serial) = g.open_channel else {
                return;
            };
            let on_link = |g: &State| {
                link.is_none_or(|link| {
                    g.channels
                        .get(&serial)
                        .and_then(|c| c.link.as_ref())
                        .is_some_and(|l| Arc::ptr_eq(l, link))
                })
            };
            if !on_link(&g) {
                return; // closed (and perhaps opened again) since: not that channel any more
            }
            // The open sequence may own the transition while PostStarted waits for a
            // synchronous request: fail those now (and new ones until the close ran), as the
            // library does for a channel being removed, so the open can return.
            g.rescind_pending = true;
            Self::cancel_sync_requests(&mut g, serial);
            drop(g);
            self.sync_cv.notify_all();
            let g = self.lock();
            let mut g = match self.begin_transition(g, serial) {
                Ok(g) => g,
                Err(mut g) => {
                    g.rescind_pending = false;
                    return;
                }
            };
            if on_link(&g) {
                g = self.close(g, serial, "EvtChannelSuspend", true);
            }
            g.rescind_pending = false;
            self.end_transition(&mut g, serial);
        });
    }

    /// Fails every synchronous request of channel `serial` that waits for the host with
    /// `STATUS_DEVICE_REMOVED` (the caller notifies `sync_cv`).
    pub(super) fn cancel_sync_requests(st: &mut State, serial: u64) {
        let ids: Vec<(u64, u64)> = st
            .out_txns
            .iter()
            .filter_map(|(id, t)| match t.what {
                OutWhat::Sync(slot) if t.channel == serial => Some((*id, slot)),
                _ => None,
            })
            .collect();
        for (id, slot) in ids {
            st.out_txns.remove(&id);
            st.stats.cancelled_at_close += 1;
            if let Some(s) = st.sync_slots.get_mut(&slot) {
                *s = Some(SyncAnswer::Removed);
            }
        }
    }

    /// IRQL, channel and re-entry checks of Disable/Pause/Start.
    pub(super) fn transition_entry_ok(&self, func: &'static str, serial: u64, h: usize) -> bool {
        if !self.require_passive(func, h) {
            return false;
        }
        let mut g = self.lock();
        if g.channel(func, serial, h).is_none() {
            return false;
        }
        if let Some(f) = crate::irql::channel_callback_frame(self.id, serial) {
            g.record(
                V::StateCallbackReentry,
                func,
                h,
                format!(
                    "called from inside {} of the same channel (would deadlock); the call did nothing",
                    match f.kind {
                        FrameKind::State(s) => s.name(),
                        FrameKind::Packet(_) => "EvtVmbChannelProcessPacket",
                        FrameKind::ProcessingComplete => "EvtVmbChannelProcessingComplete",
                        FrameKind::Completion => "a completion routine",
                    }
                ),
            );
            return false;
        }
        true
    }

    /// Stops the queue, waits for running ProcessPacket calls, calls Suspend, then waits for
    /// every delivered packet to be retired (force-retiring them at the deadline).
    pub(super) fn suspend_and_drain<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
        func: &'static str,
    ) -> Guard<'a> {
        let deadline = Instant::now().checked_add(self.cfg.teardown_timeout);
        if let Some(c) = g.channels.get_mut(&serial) {
            c.queue_on = false;
        }
        let (ng, idle) = self.wait_for(g, deadline, |st| {
            st.channels.get(&serial).is_none_or(|c| c.delivering == 0)
        });
        g = ng;
        if !idle && !g.shutdown {
            let n = g.channels.get(&serial).map_or(0, |c| c.delivering);
            let h = g.channels.get(&serial).map_or(0, |c| c.handle);
            g.record(
                V::UncompletedAtDisable,
                func,
                h,
                format!(
                    "{n} ProcessPacket/ProcessingComplete call(s) still running after {:?}; \
                     suspending anyway",
                    self.cfg.teardown_timeout
                ),
            );
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        let (ch, suspend) = (c.raw(), c.callbacks.EvtChannelSuspend);
        drop(g);
        self.call_state(serial, ch, StateCb::Suspend, suspend);
        let mut g = self.lock();
        // Sends are refused once Suspend has *returned* (and from inside Suspend itself, see
        // `sending_from_suspend`): a send another thread began before the callback started may
        // still be running while it runs; the driver's Suspend waits for such sends, it cannot
        // undo them.
        if let Some(c) = g.channels.get_mut(&serial) {
            c.suspend_called = true;
        }
        self.drain_outstanding(g, serial, func, deadline)
    }

    pub(super) fn drain_outstanding<'a>(
        &'a self,
        g: Guard<'a>,
        serial: u64,
        func: &'static str,
        deadline: Option<Instant>,
    ) -> Guard<'a> {
        let (mut g, drained) = self.wait_for(g, deadline, |st| {
            st.channels.get(&serial).is_none_or(|c| c.outstanding == 0)
        });
        if drained || g.shutdown {
            return g;
        }
        let st = &mut *g;
        let mut tokens: Vec<u64> = st
            .incoming
            .iter()
            .filter(|(_, r)| r.channel == serial)
            .map(|(t, _)| *t)
            .collect();
        tokens.sort_unstable();
        let h = st.channels.get(&serial).map_or(0, |c| c.handle);
        let list: Vec<String> = tokens
            .iter()
            .map(|t| format!("{:#x}", handle::encode(Kind::Completion, self.id, *t)))
            .collect();
        st.record(
            V::UncompletedAtDisable,
            func,
            h,
            format!(
                "{} delivered packet(s) not completed after {:?}, retired by force: {}",
                tokens.len(),
                self.cfg.teardown_timeout,
                list.join(", ")
            ),
        );
        for t in tokens {
            if let Some(rec) = st.incoming.remove(&t) {
                st.force_retired.insert(t);
                st.stats.force_retired += 1;
                if let Some(hr) = st.host_txns.get_mut(&rec.packet.txn) {
                    hr.result = Some(GuestCompletion {
                        payload: Vec::new(),
                        failed: true,
                    });
                }
                if rec.mdl.is_some() {
                    mdl::retire_incoming(self.id, t);
                }
            }
        }
        if let Some(c) = st.channels.get_mut(&serial) {
            c.outstanding = 0;
        }
        self.txn_cv.notify_all();
        g
    }

    /// Closes a channel (Disable or rescind), §5.7–5.8. The caller holds the transition.
    pub(super) fn close<'a>(
        &'a self,
        mut g: Guard<'a>,
        serial: u64,
        func: &'static str,
        rescind: bool,
    ) -> Guard<'a> {
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        match c.phase {
            Phase::Active | Phase::Paused => {}
            Phase::Enabled if !rescind => {
                // Never opened: no callbacks; packets queued for the open are cancelled.
                c.pause_armed = false;
                c.phase = Phase::Closing;
                g = self.cancel_outgoing(g, serial);
                if let Some(c) = g.channels.get_mut(&serial) {
                    c.phase = Phase::Disabled;
                }
                return g;
            }
            _ => return g,
        }
        let running = c.phase == Phase::Active;
        c.phase = Phase::Closing;
        let deadline = Instant::now().checked_add(self.cfg.teardown_timeout);
        if running {
            g = self.suspend_and_drain(g, serial, func);
        } else {
            g = self.drain_outstanding(g, serial, func, deadline);
        }
        if g.shutdown {
            return g;
        }
        // The rings go away: packets still in them, undelivered host packets and queued guest
        // packets are dropped.
        let st = &mut *g;
        let mut closed_link = None;
        if let Some(c) = st.channels.get_mut(&serial) {
            if let Some(link) = c.link.take() {
                link.close();
                closed_link = Some(link);
            }
            c.queue_on = false;
            let dropped: Vec<ToGuest> = c.to_guest.drain(..).chain(c.deferred.drain(..)).collect();
            for p in dropped {
                st.stats.dropped_undelivered += 1;
                if let Some(hr) = st.host_txns.get_mut(&p.txn) {
                    hr.dropped = true;
                }
            }
        }
        self.txn_cv.notify_all();
        if let Some(link) = closed_link {
            // Host packets still in the host→guest ring were accepted by `Host::send` but never
            // read out: each is dropped and counted like the queued ones. Outside the world
            // lock, which the host writer and the guest's reader take under the ring locks.
            drop(g);
            for item in link.drain_closed() {
                if let Item::Data {
                    txn, aux, payload, ..
                } = item
                {
                    // The link is no longer the channel's: counted as dropped undelivered.
                    self.enqueue_to_guest(&link, txn, aux, payload);
                }
            }
            g = self.lock();
        }
        g = self.cancel_outgoing(g, serial);
        let (ng, _) = self.wait_for(g, deadline, |st| {
            st.channels
                .get(&serial)
                .is_none_or(|c| c.routines_running == 0)
        });
        g = ng;
        if g.open_channel == Some(serial) {
            g.open_channel = None;
        }
        let Some(c) = g.channels.get_mut(&serial) else {
            return g;
        };
        let (ch, closed) = (c.raw(), c.callbacks.EvtChannelClosed);
        drop(g);
        self.call_state(serial, ch, StateCb::Closed, closed);
        let mut g = self.lock();
        let st = &mut *g;
        let leaked: Vec<u32> = st
            .gpadls
            .iter_mut()
            .filter(|(_, gp)| gp.channel == serial && !gp.leak_reported)
            .map(|(id, gp)| {
                gp.leak_reported = true;
                *id
            })
            .collect();
        if let Some(c) = st.channels.get_mut(&serial) {
            if !leaked.is_empty() {
                let h = c.handle;
                violate(
                    &mut st.violations,
                    V::GpadlLeak,
                    "EvtChannelClosed",
                    h,
                    format!(
                        "GPADL(s) {leaked:?} still alive after EvtChannelClosed returned; \
                         every GPADL must be deleted by then"
                    ),
                );
            }
            c.phase = Phase::Disabled;
            c.suspend_called = false;
            c.queue_failed = false;
            c.quota_blocked = false;
            c.pause_armed = false;
            c.instance = sys::GUID::default();
            c.batch = 0;
        }
        g
    }

    /// Cancels every guest transaction of the channel: completion routines run with
    /// `STATUS_CANCELLED` [inf] on this thread at DISPATCH, synchronous requests get
    /// `STATUS_DEVICE_REMOVED`, and packets not yet taken by the host disappear.
    pub(super) fn cancel_outgoing<'a>(&'a self, mut g: Guard<'a>, serial: u64) -> Guard<'a> {
        let st = &mut *g;
        let ids: Vec<u64> = st
            .out_txns
            .iter()
            .filter(|(_, t)| t.channel == serial)
            .map(|(id, _)| *id)
            .collect();
        let mut routines = Vec::new();
        for id in ids {
            let Some(t) = st.out_txns.remove(&id) else {
                continue;
            };
            st.stats.cancelled_at_close += 1;
            match t.what {
                OutWhat::Sync(slot) => {
                    if let Some(s) = st.sync_slots.get_mut(&slot) {
                        *s = Some(SyncAnswer::Removed);
                    }
                }
                OutWhat::Packet(key) => {
                    if let Some(p) = st.packets.get_mut(&key) {
                        p.in_flight = false;
                        st.in_flight = st.in_flight.saturating_sub(1);
                        routines.push((key, p.handle, p.routine));
                    }
                }
            }
        }
        st.to_host.retain(|gp| gp.channel != serial);
        st.g2h_side.retain(|_, (channel, _, _)| *channel != serial);
        if let Some(c) = st.channels.get_mut(&serial) {
            c.pre_open.clear();
            c.routines_running += u32::try_from(routines.len()).unwrap_or(u32::MAX);
        }
        drop(g);
        self.sync_cv.notify_all();
        for (key, h, routine) in &routines {
            self.run_completion(serial, *h, *routine, NtStatus::STATUS_CANCELLED, &[]);
            let mut g = self.lock();
            if let Some(c) = g.channels.get_mut(&serial) {
                c.routines_running = c.routines_running.saturating_sub(1);
            }
            if routine.is_none() {
                g.free_packet(*key);
            }
        }
        self.state_cv.notify_all();
        self.lock()
    }
}
