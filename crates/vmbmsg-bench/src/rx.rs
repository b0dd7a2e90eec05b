//! One guest on one world, packets delivered on the calling thread.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use kmcl_model::kmcl_sys::{GUID, PDEVICE_OBJECT};
use kmcl_model::{Host, ModelConfig, NtStatus, connected_with};
use vmbmsg_core::sim::SimPlatform;
use vmbmsg_core::{Core, CoreConfig, Library, ParentDevice};
use vmbmsg_proto::wire::{GuestBody, HostMessage, PROTOCOL_V1, Reply, parse_guest_message};

/// The payload sizes every receive-path and ring measurement uses.
pub const PAYLOAD_SIZES: [usize; 4] = [0, 64, 1024, 16 * 1024];

unsafe extern "C" {
    fn rxc_start(
        parent: PDEVICE_OBJECT,
        interface_type: *const GUID,
        null_guest: i32,
    ) -> *mut c_void;
    fn rxc_ready(dev: *const c_void) -> i32;
    fn rxc_echo_count(dev: *const c_void) -> u64;
    fn rxc_stop(dev: *mut c_void);
}

/// Which receive path a world's guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// The driver core (`vmbmsg_core::Core`, through `kmcl`'s callback trampoline).
    Rust,
    /// The same path in C (`rxc_process_packet` in `c/rx_path.c`).
    C,
    /// Completes each packet with its own bytes (`null_process_packet`).
    Null,
}

impl Guest {
    /// Every guest, in table order.
    pub const ALL: [Self; 3] = [Self::Rust, Self::C, Self::Null];

    /// A short name for tables and command lines.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::C => "c",
            Self::Null => "null",
        }
    }

    /// The guest's ProcessPacket function as callgrind names it (a glob).
    #[must_use]
    pub const fn callback_symbol(self) -> &'static str {
        match self {
            Self::Rust => "*evt_process_packet*",
            Self::C => "rxc_process_packet",
            Self::Null => "null_process_packet",
        }
    }

    /// Parses [`name`](Self::name).
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }
}

/// An ECHO request with a `payload`-byte body (protocol V1, id 1).
#[must_use]
pub fn echo_message(payload: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let m = HostMessage::echo(PROTOCOL_V1, 1, &body);
    let mut buf = vec![0; m.encoded_len()];
    let n = m.write(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// The host's answer to the guest's NEGOTIATE (the only guest packet in these worlds).
fn negotiate_responder(gp: &kmcl_model::GuestPacket) -> Option<(NtStatus, Vec<u8>)> {
    let m = parse_guest_message(&gp.payload).ok()?;
    let GuestBody::Negotiate { .. } = m.body else {
        return None;
    };
    let reply = Reply::negotiate_accept(m.id, PROTOCOL_V1);
    let mut buf = vec![0; reply.encoded_len()];
    let n = reply.write(&mut buf).ok()?;
    buf.truncate(n);
    Some((NtStatus::STATUS_SUCCESS, buf))
}

enum Dev {
    /// The core and its device's KMCL (the queried client interface table, the driver's
    /// default).
    Rust(Box<(Core<SimPlatform>, Library)>),
    C(*mut c_void),
}

/// A world whose guest is ready for ECHO packets.
pub struct RxWorld {
    guest: Guest,
    dev: Dev,
    host: Arc<Host>,
}

impl std::fmt::Debug for RxWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxWorld")
            .field("guest", &self.guest)
            .finish_non_exhaustive()
    }
}

impl RxWorld {
    /// Brings `guest` up on a fresh world (one delivery thread, which stays idle: packets are
    /// delivered by the caller), opens the channel and waits for negotiation.
    ///
    /// # Panics
    /// If the guest does not come up (a broken build, not a measurement).
    #[must_use]
    pub fn new(guest: Guest) -> Self {
        let interface_type = vmbmsg_core::sim::interface_type();
        let host = Arc::new(connected_with(ModelConfig {
            delivery_threads: 1,
            interface_type,
            ..ModelConfig::default()
        }));
        host.set_responder(negotiate_responder);
        let dev = match guest {
            Guest::Rust => {
                let core =
                    Core::with_config(SimPlatform::default(), CoreConfig::default()).expect("core");
                // SAFETY: `ParentDevice::from_raw` needs a device valid while any channel
                // under it exists: the model's token lives as long as `host`, and `Drop` takes
                // the core's channel down before `host` goes.
                let parent = unsafe { ParentDevice::from_raw(host.parent_device()) };
                let library = {
                    let query = |iface, size, version, ty: &_| {
                        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
                        unsafe { host.query_interface(ty, iface, size, version) }
                    };
                    // SAFETY: see above: the model's query fills the whole table and takes one
                    // reference for the caller, as a PnP query-interface does.
                    unsafe { Library::query(query) }
                }
                .expect("query the client interface");
                core.channel_up(&library, parent).expect("channel up");
                Dev::Rust(Box::new((core, library)))
            }
            Guest::C | Guest::Null => {
                let null = i32::from(guest == Guest::Null);
                // SAFETY: the parent is the model's token and the GUID outlives the call; the
                // C side copies what it keeps.
                let dev =
                    unsafe { rxc_start(host.parent_device(), &raw const interface_type, null) };
                assert!(!dev.is_null(), "rxc_start failed");
                Dev::C(dev)
            }
        };
        host.open().expect("open");
        let world = Self { guest, dev, host };
        assert!(world.ready(), "{guest:?} guest did not negotiate");
        world
    }

    fn ready(&self) -> bool {
        match &self.dev {
            Dev::Rust(dev) => dev.0.state() == vmbmsg_proto::ioctl::ChannelState::READY,
            // SAFETY: `dev` came from `rxc_start` and lives until `Drop`.
            Dev::C(dev) => (unsafe { rxc_ready(*dev) }) != 0,
        }
    }

    /// Which guest this world runs.
    #[must_use]
    pub const fn guest(&self) -> Guest {
        self.guest
    }

    /// The world's host.
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// One host packet through the guest's receive path on this thread; returns the guest's
    /// completion payload (empty if the guest did not complete it inline).
    #[must_use]
    pub fn deliver(&self, message: &[u8]) -> Vec<u8> {
        let Ok(txn) = self.host.send_inline(message, true) else {
            return Vec::new();
        };
        self.host
            .wait_completion(txn, Duration::ZERO)
            .map(|c| c.payload)
            .unwrap_or_default()
    }

    /// ECHO packets the guest answered (C guest: its counter; Rust: the driver's statistics).
    #[must_use]
    pub fn echo_count(&self) -> u64 {
        match &self.dev {
            Dev::Rust(dev) => dev.0.stats().echo_count.get(),
            // SAFETY: `dev` came from `rxc_start` and lives until `Drop`.
            Dev::C(dev) => unsafe { rxc_echo_count(*dev) },
        }
    }
}

impl Drop for RxWorld {
    fn drop(&mut self) {
        match &self.dev {
            Dev::Rust(dev) => dev.0.channel_down(),
            // SAFETY: `dev` came from `rxc_start`; stopped once, here.
            Dev::C(dev) => unsafe { rxc_stop(*dev) },
        }
        self.host.assert_no_violations();
    }
}
