//! Which VMBus channel a device binds: its own. A Hyper-V VM may offer several channels of the
//! vmbmsg interface type (one child device, one PDO, per offer); each vmbmsg device sits on one
//! of those PDOs and must bind that offer and no other.
//!
//! The driver allocates its channel under its own FDO and does not call
//! `VmbClientChannelInitSetTargetPnp`: the header says that when TargetPnp is called "KMCL will
//! use PnP to find the vmbus PDO corresponding to the provided interface", and that without an
//! instance "any instance with the provided type will be accepted"; without it, KMCL binds the
//! VMBus device below the parent. The model records a TargetPnp without instance in a VM with
//! two offers of the type as `AmbiguousTarget`, which is what the driver did before.
#![cfg(not(windows))] // the model stands in for KMCL off Windows only
#![expect(
    unsafe_code,
    reason = "the model's device token for ParentDevice, and its query"
)]

use std::time::Duration;

use kmcl_model::{Host, ModelConfig, Vm};
use vmbmsg_core::sim::{HostSide, SimConfig, SimPlatform, answer};
use vmbmsg_core::{Core, Library, NtStatus, ParentDevice};
use vmbmsg_proto::ioctl::ChannelState;
use vmbmsg_proto::wire::{HostMessage, PROTOCOL_V1_1};

const T: Duration = Duration::from_secs(10);

fn offer(vm: &Vm, instance: u32) -> Host {
    let host = vm.offer(ModelConfig {
        interface_type: vmbmsg_core::sim::interface_type(),
        interface_instance: kmcl_model::kmcl_sys::GUID {
            Data1: instance,
            ..kmcl_model::DEFAULT_INTERFACE_INSTANCE
        },
        ..ModelConfig::default()
    });
    let sim = SimConfig::default();
    let side = HostSide::default();
    host.set_responder(move |gp| answer(&sim, &side, gp).map(|r| (NtStatus::STATUS_SUCCESS, r)));
    host
}

/// A device on `host`'s PDO, as the WDF shell makes one: the interface queried on it, the
/// channel allocated under it.
fn device(host: &Host) -> (Core<SimPlatform>, Library) {
    let query = |iface, size, version, ty: &_| {
        // SAFETY: `iface` is the table kmcl passes, writable for `size` bytes.
        unsafe { host.query_interface(ty, iface, size, version) }
    };
    // SAFETY: the model's query is a PnP query-interface.
    let library = unsafe { Library::query(query) }.expect("query");
    let core = Core::new(SimPlatform::default()).expect("core");
    // SAFETY: the model's token outlives the channel (taken down before the host drops).
    let parent = unsafe { ParentDevice::from_raw(host.parent_device()) };
    core.channel_up(&library, parent).expect("channel up");
    (core, library)
}

fn echo(host: &Host, payload: &[u8]) -> Vec<u8> {
    let message = HostMessage::echo(PROTOCOL_V1_1, 1, payload);
    let mut buf = vec![0; message.encoded_len()];
    let n = message.write(&mut buf).unwrap();
    buf.truncate(n);
    let txn = host.send(&buf, true).expect("send");
    host.wait_completion(txn, T).expect("completion").payload
}

#[test]
fn two_offers_of_one_type_two_devices_each_binds_its_own() {
    let vm = Vm::new();
    let (a, b) = (offer(&vm, 0xA), offer(&vm, 0xB));
    let (core_a, lib_a) = device(&a);
    let (core_b, lib_b) = device(&b);
    // Opening A's offer opens A's device only.
    a.open().expect("A opens");
    assert_eq!(core_a.state(), ChannelState::READY);
    assert_eq!(core_b.state(), ChannelState::WAITING_FOR_HOST);
    b.open().expect("B opens");
    assert_eq!(core_b.state(), ChannelState::READY);
    // Traffic on each offer reaches its own device.
    assert!(echo(&a, b"to A").ends_with(b"to A"));
    assert!(echo(&a, b"to A again").ends_with(b"to A again"));
    assert!(echo(&b, b"to B").ends_with(b"to B"));
    assert_eq!(
        (
            core_a.stats().echo_count.get(),
            core_b.stats().echo_count.get()
        ),
        (2, 1)
    );
    for (host, core, lib) in [(&a, core_a, lib_a), (&b, core_b, lib_b)] {
        core.channel_down();
        drop(core);
        drop(lib);
        host.remove_device();
        host.assert_no_violations();
    }
}
