//! Protocol 1.1's bulk path against memcpy, measured interleaved like [`crate::ring`]: each
//! round times, back to back, a burst of each copy, so a load change hits them alike; the
//! ratios are medians over rounds.
//!
//! What the bulk path copies, through the driver's own code:
//! * **SEND_BULK, guest side**: the caller's payload into a slot of the shared area
//!   ([`kmcl::SharedBuffer::write`], what the driver's `write_slot` does): one copy.
//! * **SEND_BULK, host side**: a host reading it out ([`kmcl::SharedBuffer::read`]): one copy.
//! * **ECHO_BULK**: the driver's in-place echo ([`vmbmsg_core::bulk::echo_in_place`]): each
//!   byte read once and written once, through a free ECHO reply buffer (`MAX_MESSAGE` bytes,
//!   what the driver uses) and, for comparison, through the
//!   [`ECHO_CHUNK`]-byte stack chunk it falls back to.
//!
//! The baseline is `copy_from_slice` between two **page-aligned** buffers (so 64-byte
//! co-aligned: glibc's best case), and the shared area is page-aligned too, as a GPADL is.

use std::hint::black_box;
use std::time::Instant;

use kmcl::SharedBuffer;

use crate::aligned::AlignedVec;
use crate::report::median;
use vmbmsg_core::bulk::{ECHO_CHUNK, echo_in_place};

/// Medians of one payload size.
#[derive(Clone, Copy, Debug)]
pub struct BulkVsMemcpy {
    /// Payload bytes.
    pub size: usize,
    /// `copy_from_slice` between page-aligned buffers: ns per copy.
    pub memcpy_ns: f64,
    /// The guest's copy into the shared area: ns.
    pub copy_in_ns: f64,
    /// A host's copy out of the shared area: ns.
    pub copy_out_ns: f64,
    /// The driver's in-place echo through a reply buffer: ns.
    pub echo_ns: f64,
    /// The same through the stack chunk: ns.
    pub echo_chunk_ns: f64,
    /// Median over rounds of memcpy time / copy-in time.
    pub copy_in_share: f64,
    /// Median over rounds of memcpy time / copy-out time.
    pub copy_out_share: f64,
    /// Median over rounds of memcpy time / echo time. An echo copies each byte out and back,
    /// two copies, so its ceiling is 50 %.
    pub echo_share: f64,
}

/// Measures `size`-byte payloads (at most 64 KiB) over `rounds` rounds.
///
/// # Panics
/// If a copy is refused (a bug, not a measurement).
#[must_use]
pub fn bulk_vs_memcpy(size: usize, rounds: usize) -> BulkVsMemcpy {
    // The baseline's buffers are page-aligned, as the shared area is.
    let src = AlignedVec::new(size, 4096, |i| i as u8);
    let mut dst = AlignedVec::new(size, 4096, |_| 0);
    let area = SharedBuffer::try_new(size.max(1)).expect("memory");
    let burst = (200_000 / (size / 64 + 1)).max(16);
    let mut scratch = vec![0u8; vmbmsg_proto::wire::MAX_MESSAGE];
    let (mut copy, mut cin, mut cout, mut echo) = (vec![], vec![], vec![], vec![]);
    let mut chunked = vec![];
    let (mut si, mut so, mut se) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..burst {
            dst.bytes_mut().copy_from_slice(black_box(src.bytes()));
            black_box(dst.bytes());
        }
        let m = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            area.write(0, black_box(src.bytes())).expect("in range");
        }
        let i = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            area.read(0, dst.bytes_mut()).expect("in range");
            black_box(dst.bytes());
        }
        let o = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            echo_in_place(&area, 0, black_box(size), &mut scratch).expect("in range");
        }
        let e = t.elapsed().as_nanos() as f64 / burst as f64;
        let t = Instant::now();
        for _ in 0..burst {
            let mut chunk = [0u8; ECHO_CHUNK];
            echo_in_place(&area, 0, black_box(size), &mut chunk).expect("in range");
        }
        chunked.push(t.elapsed().as_nanos() as f64 / burst as f64);
        copy.push(m);
        cin.push(i);
        cout.push(o);
        echo.push(e);
        si.push(m / i);
        so.push(m / o);
        se.push(m / e);
    }
    assert_eq!(
        {
            let mut back = vec![0u8; size];
            area.read(0, &mut back).expect("in range");
            back
        },
        src.bytes(),
        "the echo left the bytes as they were"
    );
    BulkVsMemcpy {
        size,
        memcpy_ns: median(copy),
        copy_in_ns: median(cin),
        copy_out_ns: median(cout),
        echo_ns: median(echo),
        echo_chunk_ns: median(chunked),
        copy_in_share: median(si),
        copy_out_share: median(so),
        echo_share: median(se),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measurement_runs_and_reports_positive_times() {
        let r = bulk_vs_memcpy(4096, 3);
        assert_eq!(r.size, 4096);
        for ns in [
            r.memcpy_ns,
            r.copy_in_ns,
            r.copy_out_ns,
            r.echo_ns,
            r.echo_chunk_ns,
        ] {
            assert!(ns > 0.0 && ns.is_finite(), "{r:?}");
        }
    }
}
