//! Reading and writing memory the host may write at the same time.
//!
//! A packet buffer KMCL may hand over in place (module `bounce`) and a GPADL buffer the host has
//! mapped are shared with another VM: its bytes can change between two reads. Rust has no
//! `&[u8]` for such memory (a shared reference promises the bytes do not change), and reading
//! it twice and trusting both reads is the double-fetch bug the hardening rules forbid. Every
//! access therefore goes through these functions, which read or write each byte exactly once:
//!
//! * with relaxed atomic accesses (8 bytes at a time where aligned): well defined whatever the
//!   other side does, and on x86-64 and arm64 plain loads and stores;
//! * on x86-64, in inline assembly: below [`REP_MOVSB_MIN`] bytes a loop of 16-byte SSE moves
//!   (64 bytes per iteration, then 16, 8, 4, 2 and 1), from [`REP_MOVSB_MIN`] on one
//!   `rep movsb`, which the CPU runs as a wide copy (Enhanced REP MOVSB, every x86-64 CPU since
//!   Ivy Bridge and Zen); the same split as glibc's memcpy for 16-byte vectors. SSE registers
//!   are usable in kernel mode on x64 Windows without saving them (the compiler's own memcpy
//!   uses them); no AVX, which would need `KeSaveExtendedProcessorState`. An assembly block is
//!   opaque to the compiler: it cannot assume the bytes stable, merge or repeat the reads, so a
//!   concurrent writer is not a data race in the Rust sense, and each byte is still read (or
//!   written) once: no overlapping moves. This is how hypervisor code copies guest memory that
//!   the other side may change (openvmm's `trycopy`, the Linux kernel's copy routines). The
//!   word loop (other targets, and Miri) reads 8 bytes per cycle at best; the assembly copy
//!   runs at memcpy speed (docs/performance.md, "The bounce copy per packet").

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

/// Copies `len` bytes from `src` to `dst` with 16-byte SSE moves (four per iteration while 64
/// bytes are left, then one 16-, 8-, 4-, 2- and 1-byte step as the length's bits say), each
/// byte read once and written once, in address order within each step.
///
/// # Safety
/// As [`rep_movsb`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn sse_copy(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller guarantees both ranges. Every move stays inside them: a 64-byte
    // iteration runs only while 64 or more bytes are left, a 16-byte one while 16 or more are,
    // and the 8/4/2/1 steps run for the set bits of the remaining length (< 16), so the moves
    // cover exactly `len` bytes once. SSE2 is part of x86-64. No stack use; flags change.
    unsafe {
        core::arch::asm!(
            "2:",
            "cmp {len}, 64",
            "jb 3f",
            "movdqu {a}, [{src}]",
            "movdqu {b}, [{src} + 16]",
            "movdqu {c}, [{src} + 32]",
            "movdqu {d}, [{src} + 48]",
            "movdqu [{dst}], {a}",
            "movdqu [{dst} + 16], {b}",
            "movdqu [{dst} + 32], {c}",
            "movdqu [{dst} + 48], {d}",
            "add {src}, 64",
            "add {dst}, 64",
            "sub {len}, 64",
            "jmp 2b",
            "3:",
            "cmp {len}, 16",
            "jb 4f",
            "movdqu {a}, [{src}]",
            "movdqu [{dst}], {a}",
            "add {src}, 16",
            "add {dst}, 16",
            "sub {len}, 16",
            "jmp 3b",
            "4:",
            "test {len}, 8",
            "jz 5f",
            "mov {t}, qword ptr [{src}]",
            "mov qword ptr [{dst}], {t}",
            "add {src}, 8",
            "add {dst}, 8",
            "5:",
            "test {len}, 4",
            "jz 6f",
            "mov {t:e}, dword ptr [{src}]",
            "mov dword ptr [{dst}], {t:e}",
            "add {src}, 4",
            "add {dst}, 4",
            "6:",
            "test {len}, 2",
            "jz 7f",
            "mov {t:x}, word ptr [{src}]",
            "mov word ptr [{dst}], {t:x}",
            "add {src}, 2",
            "add {dst}, 2",
            "7:",
            "test {len}, 1",
            "jz 8f",
            "mov {t:l}, byte ptr [{src}]",
            "mov byte ptr [{dst}], {t:l}",
            "8:",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            len = inout(reg) len => _,
            t = out(reg) _,
            a = out(xmm_reg) _,
            b = out(xmm_reg) _,
            c = out(xmm_reg) _,
            d = out(xmm_reg) _,
            options(nostack),
        );
    }
}

/// Copies `dst.len()` bytes from `src` into `dst`, reading each source byte exactly once.
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

/// Copies `src` into shared memory at `dst`, writing each byte exactly once.
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
