//! The driver's statistics: lock-free counters shared by the packet callback (any processor,
//! DISPATCH_LEVEL) and the IOCTL paths, snapshotted into the IOCTL ABI's `StatsOut`.

use crate::sync::atomic::AtomicU64;
use crate::sync::atomic::Ordering::Relaxed;

use ntstatus::NtStatus;
use vmbmsg_proto::ioctl::{MALFORMED_REASON_SLOTS, StatsOut};
use vmbmsg_proto::wire::{MalformedReason, StatusClass};
use zerocopy::FromZeros;
use zerocopy::little_endian::U64;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Every counter, named as in `StatsOut`.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(pub(crate) $name: AtomicU64,)*
            pub(crate) malformed_by_reason: [AtomicU64; MALFORMED_REASON_SLOTS],
            /// `kmcl::unconsumed_packets()` at the last reset.
            unconsumed_baseline: AtomicU64,
        }

        impl Stats {
            /// A consistent-enough copy for GET_STATS (each counter is read atomically; the
            /// set is not a single atomic snapshot, which no reader needs).
            pub fn snapshot(&self) -> StatsOut {
                let mut out = StatsOut::new_zeroed();
                $(out.$name = U64::new(self.$name.load(Relaxed));)*
                for (dst, src) in out.malformed_by_reason.iter_mut().zip(&self.malformed_by_reason) {
                    *dst = U64::new(src.load(Relaxed));
                }
                out.ping_rtt_min_ns = U64::new(reported_min(out.ping_rtt_min_ns.get()));
                let unconsumed = kmcl::unconsumed_packets()
                    .saturating_sub(self.unconsumed_baseline.load(Relaxed));
                out.unconsumed_packets = U64::new(unconsumed);
                out
            }

            /// Sets every counter back to zero (RESET_STATS); the RTT minimum to "none".
            pub fn reset(&self) {
                $(self.$name.store(0, Relaxed);)*
                for c in &self.malformed_by_reason {
                    c.store(0, Relaxed);
                }
                self.ping_rtt_min_ns.store(u64::MAX, Relaxed);
                self.unconsumed_baseline.store(kmcl::unconsumed_packets(), Relaxed);
            }
        }
    };
}

counters!(
    rx_packets,
    rx_bytes,
    tx_packets,
    tx_bytes,
    echo_count,
    notify_count,
    malformed_total,
    completions_ok,
    completions_malformed,
    completions_queue_full,
    completions_not_ready,
    completions_other,
    notify_queued,
    notify_dropped,
    notify_delivered,
    send_ok,
    send_failed,
    ping_ok,
    ping_failed,
    ping_rtt_min_ns,
    ping_rtt_max_ns,
    ping_rtt_sum_ns,
    ping_rtt_count,
    alloc_failures,
);

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    /// Fresh statistics (the RTT minimum starts at "none").
    pub fn new() -> Self {
        let s = Self::default();
        s.ping_rtt_min_ns.store(u64::MAX, Relaxed);
        s
    }

    /// Counts a host packet received.
    pub(crate) fn received(&self, bytes: usize) {
        bump(&self.rx_packets);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a packet sent to the host.
    pub(crate) fn sent(&self, bytes: usize) {
        bump(&self.tx_packets);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a malformed (or premature) host message.
    pub(crate) fn malformed(&self, reason: MalformedReason) {
        bump(&self.malformed_total);
        if let Some(c) = self.malformed_by_reason.get(reason.index()) {
            bump(c);
        }
    }

    /// Counts the status a host packet was completed with.
    pub(crate) fn completed(&self, status: NtStatus) {
        bump(match StatusClass::of(status) {
            StatusClass::Ok => &self.completions_ok,
            StatusClass::Malformed => &self.completions_malformed,
            StatusClass::QueueFull => &self.completions_queue_full,
            StatusClass::NotReady => &self.completions_not_ready,
            StatusClass::Other => &self.completions_other,
        });
    }

    /// Records one PING round trip.
    pub(crate) fn rtt(&self, ns: u64) {
        self.ping_rtt_min_ns.fetch_min(ns, Relaxed);
        self.ping_rtt_max_ns.fetch_max(ns, Relaxed);
        self.ping_rtt_sum_ns.fetch_add(ns, Relaxed);
        bump(&self.ping_rtt_count);
    }
}

/// The RTT minimum as reported: 0 when no PING completed.
pub(crate) fn reported_min(raw: u64) -> u64 {
    if raw == u64::MAX { 0 } else { raw }
}
