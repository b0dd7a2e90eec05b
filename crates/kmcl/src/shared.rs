//! Reading and writing memory the host may write at the same time.
//!
//! A packet buffer KMCL may hand over in place (module `bounce`) and a GPADL buffer the host has
//! mapped are shared with another VM: its bytes can change between two reads. Rust has no
//! `&[u8]` for such memory (a shared reference promises the bytes do not change), and reading
//! it twice and trusting both reads is the double-fetch bug the hardening rules forbid. Every
//! access therefore goes through these functions, which copy between shared memory and private
//! memory in one pass that nothing reads back: the private side ends with, for every byte, a
//! value the shared byte held during the copy, and is never refreshed from shared memory.
//!
//! * with relaxed atomic accesses (8 bytes at a time where aligned, each byte once): well
//!   defined whatever the other side does, and on x86-64 and arm64 plain loads and stores;
//! * on x86-64, in inline assembly: below [`REP_MOVSB_MIN`] bytes 16-byte SSE moves the way
//!   memcpy makes them (up to 128 bytes the first and last pieces, overlapping; past that a
//!   128-byte loop and the last 128 bytes), from [`REP_MOVSB_MIN`] on one `rep movsb`, which
//!   the CPU runs as a wide copy (Enhanced REP MOVSB, every x86-64 CPU since Ivy Bridge and
//!   Zen); the same split as glibc's memcpy for 16-byte vectors. SSE registers are usable in
//!   kernel mode on x64 Windows without saving them (the compiler's own memcpy uses them); no
//!   AVX, which would need `KeSaveExtendedProcessorState`. An assembly block is opaque to the
//!   compiler: it cannot assume the bytes stable, or merge, repeat or drop the accesses, so a
//!   concurrent writer is not a data race in the Rust sense. The overlapping moves load a few
//!   source bytes twice (the later value lands in the copy; nothing is decided on either) and,
//!   into shared memory, store a few bytes twice with the same value. This is how hypervisor
//!   code copies guest memory that the other side may change (openvmm's `trycopy`, the Linux
//!   kernel's copy routines). The word loop (other targets, and Miri) reads 8 bytes per cycle
//!   at best; the assembly copy runs at memcpy speed (docs/performance.md, "The bounce copy
//!   per packet").

#[cfg(not(all(target_arch = "x86_64", not(miri))))]
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// From this many bytes on, x86-64 copies with `rep movsb` rather than the SSE loop (below it,
/// the instruction's start-up cost is more than the loop's; glibc's threshold for 16-byte
/// vectors).
pub const REP_MOVSB_MIN: usize = 2048;

/// `rep movsb`: copies `len` bytes from `src` to `dst`, each byte read once and written once.
///
/// # Safety
/// `src` readable and `dst` writable for `len` bytes for the duration of the call; the ranges do
/// not overlap. Others may read or write either range concurrently.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn rep_movsb(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller guarantees both ranges; `rep movsb` touches exactly `len` bytes of
    // each, forwards (the direction flag is clear on entry to an `asm!` block, Rust reference
    // "Inline assembly", rules for inline assembly), uses no stack and changes no flags.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Copies `len` (< [`REP_MOVSB_MIN`]) bytes from `src` to `dst` with 16-byte SSE moves, the
/// way memcpy does for 16-byte vectors: up to 128 bytes with one load of the first and one of
/// the last 1, 2, 4, 8 or 16-byte pieces (their ranges overlap when the length is not their sum),
/// all loads before the stores; past 128 bytes a loop of eight 16-byte moves, then the last 128
/// bytes (overlapping the loop's last pass).
///
/// Overlapping moves load some source bytes twice and store some destination bytes twice: the
/// destination still ends with, for every byte, a value the source byte held during the copy,
/// and nothing is decided on a source byte, so a concurrent writer can only choose which of its
/// values land in the copy, never change the copy afterwards. The destination's twice-stored
/// bytes get the same value both times when the source is private (`copy_to_shared`).
///
/// # Safety
/// As [`rep_movsb`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn sse_copy(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller guarantees both ranges for `len` bytes. Every move stays inside them:
    // each branch below runs only for the lengths in its comment, and its moves start at 0 or
    // end at `len` (`len - 16` etc. are >= 0 there); the loop runs while `i < len - 128`, so its
    // moves end at `i + 128 <= len`. SSE2 is part of x86-64 and usable in kernel mode on x64
    // Windows without saving state. No stack use; flags change.
    unsafe {
        core::arch::asm!(
            "cmp {len}, 32",
            "ja 5f",
            "cmp {len}, 16",
            "jb 2f",
            // 16..=32: the first and the last 16 bytes.
            "movdqu {a}, [{src}]",
            "movdqu {b}, [{src} + {len} - 16]",
            "movdqu [{dst}], {a}",
            "movdqu [{dst} + {len} - 16], {b}",
            "jmp 9f",
            "2:",
            "cmp {len}, 8",
            "jb 3f",
            // 8..16: the first and the last 8 bytes.
            "mov {t}, qword ptr [{src}]",
            "mov {u}, qword ptr [{src} + {len} - 8]",
            "mov qword ptr [{dst}], {t}",
            "mov qword ptr [{dst} + {len} - 8], {u}",
            "jmp 9f",
            "3:",
            "cmp {len}, 4",
            "jb 4f",
            // 4..8: the first and the last 4 bytes.
            "mov {t:e}, dword ptr [{src}]",
            "mov {u:e}, dword ptr [{src} + {len} - 4]",
            "mov dword ptr [{dst}], {t:e}",
            "mov dword ptr [{dst} + {len} - 4], {u:e}",
            "jmp 9f",
            "4:",
            "test {len}, {len}",
            "jz 9f",
            // 1..4: the first byte, and from 2 on the last 2 bytes.
            "movzx {t:e}, byte ptr [{src}]",
            "cmp {len}, 2",
            "jb 41f",
            "movzx {u:e}, word ptr [{src} + {len} - 2]",
            "mov word ptr [{dst} + {len} - 2], {u:x}",
            "41:",
            "mov byte ptr [{dst}], {t:l}",
            "jmp 9f",
            "5:",
            "cmp {len}, 64",
            "ja 6f",
            // 33..=64: the first and the last 32 bytes.
            "movdqu {a}, [{src}]",
            "movdqu {b}, [{src} + 16]",
            "movdqu {c}, [{src} + {len} - 32]",
            "movdqu {d}, [{src} + {len} - 16]",
            "movdqu [{dst}], {a}",
            "movdqu [{dst} + 16], {b}",
            "movdqu [{dst} + {len} - 32], {c}",
            "movdqu [{dst} + {len} - 16], {d}",
            "jmp 9f",
            "6:",
            "cmp {len}, 128",
            "ja 7f",
            // 65..=128: the first and the last 64 bytes.
            "movdqu {a}, [{src}]",
            "movdqu {b}, [{src} + 16]",
            "movdqu {c}, [{src} + 32]",
            "movdqu {d}, [{src} + 48]",
            "movdqu {e}, [{src} + {len} - 64]",
            "movdqu {f}, [{src} + {len} - 48]",
            "movdqu {g}, [{src} + {len} - 32]",
            "movdqu {h}, [{src} + {len} - 16]",
            "movdqu [{dst}], {a}",
            "movdqu [{dst} + 16], {b}",
            "movdqu [{dst} + 32], {c}",
            "movdqu [{dst} + 48], {d}",
            "movdqu [{dst} + {len} - 64], {e}",
            "movdqu [{dst} + {len} - 48], {f}",
            "movdqu [{dst} + {len} - 32], {g}",
            "movdqu [{dst} + {len} - 16], {h}",
            "jmp 9f",
            "7:",
            // 129..REP_MOVSB_MIN: 128 bytes per pass while more than 128 are left after `i`,
            // then the last 128 bytes.
            "lea {u}, [{len} - 128]",
            "xor {t:e}, {t:e}",
            "71:",
            "movdqu {a}, [{src} + {t}]",
            "movdqu {b}, [{src} + {t} + 16]",
            "movdqu {c}, [{src} + {t} + 32]",
            "movdqu {d}, [{src} + {t} + 48]",
            "movdqu {e}, [{src} + {t} + 64]",
            "movdqu {f}, [{src} + {t} + 80]",
            "movdqu {g}, [{src} + {t} + 96]",
            "movdqu {h}, [{src} + {t} + 112]",
            "movdqu [{dst} + {t}], {a}",
            "movdqu [{dst} + {t} + 16], {b}",
            "movdqu [{dst} + {t} + 32], {c}",
            "movdqu [{dst} + {t} + 48], {d}",
            "movdqu [{dst} + {t} + 64], {e}",
            "movdqu [{dst} + {t} + 80], {f}",
            "movdqu [{dst} + {t} + 96], {g}",
            "movdqu [{dst} + {t} + 112], {h}",
            "add {t}, 128",
            "cmp {t}, {u}",
            "jb 71b",
            "movdqu {a}, [{src} + {u}]",
            "movdqu {b}, [{src} + {u} + 16]",
            "movdqu {c}, [{src} + {u} + 32]",
            "movdqu {d}, [{src} + {u} + 48]",
            "movdqu {e}, [{src} + {u} + 64]",
            "movdqu {f}, [{src} + {u} + 80]",
            "movdqu {g}, [{src} + {u} + 96]",
            "movdqu {h}, [{src} + {u} + 112]",
            "movdqu [{dst} + {u}], {a}",
            "movdqu [{dst} + {u} + 16], {b}",
            "movdqu [{dst} + {u} + 32], {c}",
            "movdqu [{dst} + {u} + 48], {d}",
            "movdqu [{dst} + {u} + 64], {e}",
            "movdqu [{dst} + {u} + 80], {f}",
            "movdqu [{dst} + {u} + 96], {g}",
            "movdqu [{dst} + {u} + 112], {h}",
            "9:",
            src = in(reg) src,
            dst = in(reg) dst,
            len = in(reg) len,
            t = out(reg) _,
            u = out(reg) _,
            a = out(xmm_reg) _,
            b = out(xmm_reg) _,
            c = out(xmm_reg) _,
            d = out(xmm_reg) _,
            e = out(xmm_reg) _,
            f = out(xmm_reg) _,
            g = out(xmm_reg) _,
            h = out(xmm_reg) _,
            options(nostack),
        );
    }
}

/// Copies `dst.len()` bytes from `src` into `dst` in one pass (module docs: what a concurrent
/// writer can and cannot do to the copy).
///
/// kmcl uses it to copy every incoming packet into a bounce buffer; a driver uses it to read a
/// buffer it shares with the host (a GPADL). Any IRQL; it does not allocate.
///
/// # Safety
/// `src` must be valid for reads of `dst.len()` bytes for the duration of the call; the bytes
/// may be written concurrently by anyone (that is the point), but not freed.
// Never inlined: one symbol, so that a profile (docs/performance.md) shows what the bounce copy
// costs per packet; the call is a few instructions next to the copy.
#[inline(never)]
pub unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if dst.len() >= REP_MOVSB_MIN {
        // SAFETY: `src` readable for `dst.len()` bytes (caller), `dst` is exclusively ours and
        // cannot overlap memory someone else may write.
        unsafe { rep_movsb(src, dst.as_mut_ptr(), dst.len()) };
    } else {
        // SAFETY: as above.
        unsafe { sse_copy(src, dst.as_mut_ptr(), dst.len()) };
    }
    // SAFETY: the caller's guarantees are what `words_from_shared` needs.
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    unsafe {
        words_from_shared(src, dst);
    }
}

/// The portable [`copy_from_shared`]: relaxed atomic loads, 8 bytes at a time where aligned.
///
/// # Safety
/// As [`copy_from_shared`].
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
unsafe fn words_from_shared(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let mut i = 0;
    // Bytes up to the source's first 8-byte boundary (or the end).
    let head = src.align_offset(8).min(len);
    while i < head {
        // SAFETY: `src + i` is in the readable range (caller); `AtomicU8` has the size and
        // alignment of `u8`, so any byte address is a valid `AtomicU8`.
        let byte = unsafe { AtomicU8::from_ptr(src.wrapping_add(i).cast_mut()) };
        if let Some(d) = dst.get_mut(i) {
            *d = byte.load(Ordering::Relaxed);
        }
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: `src + i` is 8-aligned (past the head) and `src + i .. + 8` is readable
        // (caller, `i + 8 <= len`), which is what `AtomicU64::from_ptr` needs.
        let word = unsafe { AtomicU64::from_ptr(src.wrapping_add(i).cast::<u64>().cast_mut()) };
        let value = word.load(Ordering::Relaxed);
        if let Some(d) = dst.get_mut(i..i + 8) {
            d.copy_from_slice(&value.to_ne_bytes());
        }
        i += 8;
    }
    while i < len {
        // SAFETY: as for the head bytes.
        let byte = unsafe { AtomicU8::from_ptr(src.wrapping_add(i).cast_mut()) };
        if let Some(d) = dst.get_mut(i) {
            *d = byte.load(Ordering::Relaxed);
        }
        i += 1;
    }
}

/// Copies `src` into shared memory at `dst` in one pass (a byte may be stored twice, always
/// with its value in `src`).
///
/// For a buffer the driver shares with the host (a GPADL). Any IRQL; it does not allocate.
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes for the duration of the call; others may
/// read or write those bytes concurrently, but not free them.
pub unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if src.len() >= REP_MOVSB_MIN {
        // SAFETY: `dst` writable for `src.len()` bytes (caller); `src` is a shared borrow of
        // memory nobody writes, so the ranges cannot overlap.
        unsafe { rep_movsb(src.as_ptr(), dst, src.len()) };
    } else {
        // SAFETY: as above.
        unsafe { sse_copy(src.as_ptr(), dst, src.len()) };
    }
    // SAFETY: the caller's guarantees are what `words_to_shared` needs.
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    unsafe {
        words_to_shared(src, dst);
    }
}

/// The portable [`copy_to_shared`]: relaxed atomic stores, 8 bytes at a time where aligned.
///
/// # Safety
/// As [`copy_to_shared`].
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
unsafe fn words_to_shared(src: &[u8], dst: *mut u8) {
    let len = src.len();
    let mut i = 0;
    let head = dst.align_offset(8).min(len);
    while i < head {
        // SAFETY: `dst + i` is in the writable range (caller); any byte address is a valid
        // `AtomicU8`.
        let byte = unsafe { AtomicU8::from_ptr(dst.wrapping_add(i)) };
        byte.store(src.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: `dst + i` is 8-aligned and `dst + i .. + 8` writable (caller).
        let word = unsafe { AtomicU64::from_ptr(dst.wrapping_add(i).cast::<u64>()) };
        let mut bytes = [0u8; 8];
        if let Some(s) = src.get(i..i + 8) {
            bytes.copy_from_slice(s);
        }
        word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        i += 8;
    }
    while i < len {
        // SAFETY: as for the head bytes.
        let byte = unsafe { AtomicU8::from_ptr(dst.wrapping_add(i)) };
        byte.store(src.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Lengths around and past [`REP_MOVSB_MIN`], where x86-64 switches from the SSE loop to
    /// `rep movsb` (every length below 300 is tried too: each SSE step and tail).
    const LONG: [usize; 7] = [
        REP_MOVSB_MIN - 1,
        REP_MOVSB_MIN,
        REP_MOVSB_MIN + 1,
        REP_MOVSB_MIN + 7,
        1000,
        4096,
        4099,
    ];

    #[test]
    fn copies_every_length_and_misalignment_exactly() {
        let backing: Vec<u64> = (0..600u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let base = backing.as_ptr().cast::<u8>();
        for offset in 0..9 {
            for len in (0..300).chain(LONG) {
                let mut out = std::vec![0xAAu8; len];
                // SAFETY: offset + len <= 8 + 4099 < 8 * 600 bytes of `backing`.
                unsafe { copy_from_shared(base.wrapping_add(offset), &mut out) };
                // SAFETY: the same range, read plainly (no concurrent writer here).
                let expect = unsafe { core::slice::from_raw_parts(base.wrapping_add(offset), len) };
                assert_eq!(out, expect, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn writes_every_length_and_misalignment_exactly() {
        for offset in 0..9 {
            for len in (0..300usize).chain(LONG) {
                let mut backing = std::vec![0u64; 600];
                let base = backing.as_mut_ptr().cast::<u8>();
                let src: Vec<u8> = (0..len)
                    .map(|i| u8::try_from(i % 251).unwrap_or(0) + 1)
                    .collect();
                // SAFETY: offset + len <= 8 + 4099 < 8 * 600 bytes of `backing`.
                unsafe { copy_to_shared(&src, base.wrapping_add(offset)) };
                // SAFETY: the whole backing store, read plainly after the writes.
                let all = unsafe { core::slice::from_raw_parts(base, 8 * 600) };
                assert!(all[..offset].iter().all(|b| *b == 0));
                assert_eq!(&all[offset..offset + len], &src[..]);
                assert!(all[offset + len..].iter().all(|b| *b == 0));
            }
        }
    }
}
