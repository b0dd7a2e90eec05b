//! Zero heap allocations per received ECHO packet in the driver.
//!
//! A counting global allocator counts what the delivering thread allocates while ECHO packets
//! go through the whole path (host write, KMCL copy-out, the driver's ProcessPacket, its
//! completion through the ring, the host's read). The model allocates (packet copies,
//! bookkeeping) and so does any guest's delivery; the null guest (completes each packet with
//! its own bytes, a reply of the same size) measures exactly that share. The driver must add
//! nothing: the same number of allocations and bytes per packet, at every payload size.
#![cfg(not(windows))] // Linux only: the harness runs against kmcl-model

use vmbmsg_bench::allocs::{CountingAllocator, Counts, count};
use vmbmsg_bench::{Guest, PAYLOAD_SIZES, RxWorld, echo_message};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const PACKETS: u64 = 500;

fn per_packet(world: &RxWorld, payload: usize) -> Counts {
    let message = echo_message(payload);
    for _ in 0..100 {
        assert_eq!(world.deliver(&message).len(), message.len(), "warm-up echo");
    }
    let ((), c) = count(|| {
        for _ in 0..PACKETS {
            let _ = world.deliver(&message);
        }
    });
    assert_eq!(
        c.allocations % PACKETS,
        0,
        "the same allocations every packet: {c:?}"
    );
    Counts {
        allocations: c.allocations / PACKETS,
        bytes: c.bytes / PACKETS,
    }
}

#[test]
fn the_driver_allocates_nothing_per_echo() {
    let driver = RxWorld::new(Guest::Rust);
    let null = RxWorld::new(Guest::Null);
    let before = driver.echo_count();
    for size in PAYLOAD_SIZES {
        let d = per_packet(&driver, size);
        let n = per_packet(&null, size);
        assert!(n.allocations > 0, "the counting allocator is installed");
        assert_eq!(
            d, n,
            "{size}-byte ECHO: the driver's path allocates beyond the model's share"
        );
    }
    let echoed = driver.echo_count() - before;
    assert_eq!(
        echoed,
        PAYLOAD_SIZES.len() as u64 * (PACKETS + 100),
        "every packet was an ECHO"
    );
}

#[test]
fn the_c_path_allocates_nothing_per_echo_either() {
    let c = RxWorld::new(Guest::C);
    let null = RxWorld::new(Guest::Null);
    for size in [0, 1024] {
        assert_eq!(
            per_packet(&c, size),
            per_packet(&null, size),
            "{size} bytes"
        );
    }
}
