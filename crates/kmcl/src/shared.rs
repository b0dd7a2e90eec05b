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
//! * on x86-64, in assembly (one naked function, `shared_copy`): below [`REP_MOVSB_MIN`]
//!   bytes 16-byte SSE moves the way memcpy makes them (up to 128 bytes the first and last
//!   pieces, overlapping; past that a 128-byte loop and the last 128 bytes), from
//!   [`REP_MOVSB_MIN`] on the first 64 bytes with SSE moves and the rest with one `rep movsb`
//!   from the destination's next 64-byte boundary, which the CPU runs as a wide copy (Enhanced
//!   REP MOVSB, every x86-64 CPU since Ivy Bridge and Zen); the same split as glibc's memcpy for
//!   16-byte vectors. SSE registers are usable in
//!   kernel mode on x64 Windows without saving them (the compiler's own memcpy uses them); no
//!   AVX, which would need `KeSaveExtendedProcessorState`. Assembly is opaque to the
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

/// Copies `len` bytes from `src` to `dst`, the way memcpy does for 16-byte vectors: up to 128
/// bytes with one load of the first and one of the last 1, 2, 4, 8 or 16-byte pieces (their
/// ranges overlap when the length is not their sum), all loads before the stores; below
/// [`REP_MOVSB_MIN`] bytes a loop of eight 16-byte moves, then the last 128 bytes (overlapping
/// the loop's last pass); from [`REP_MOVSB_MIN`] on the first 64 bytes with SSE moves and the
/// rest with one `rep movsb` that starts at the destination's next 64-byte boundary.
///
/// Overlapping moves load some source bytes twice and store some destination bytes twice: the
/// destination still ends with, for every byte, a value the source byte held during the copy,
/// and nothing is decided on a source byte, so a concurrent writer can only choose which of its
/// values land in the copy, never change the copy afterwards. The destination's twice-stored
/// bytes get the same value both times when the source is private (`copy_to_shared`).
///
/// A naked function in the System V convention on every x86-64 target (`dst` in `rdi`, `src`
/// in `rsi`, as `rep movsb` wants them, `len` in `rdx`): every length class returns as soon as
/// its moves are done, and the smallest ones are tested first, so a packet header costs nine
/// instructions. It touches only `rcx`, `rdx`, `rsi`, `rdi`, `r8`, `r9`, `xmm0`–`xmm7` and the
/// flags (all caller-saved in that convention), no stack; SSE2 is part of x86-64 and usable in
/// kernel mode on x64 Windows without saving state, and the direction flag is clear on entry to
/// any function (both conventions), so `rep movsb` copies forwards.
///
/// # Safety
/// `src` readable and `dst` writable for `len` bytes for the duration of the call; the ranges do
/// not overlap. Others may read or write either range concurrently, but not free them.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[unsafe(naked)]
unsafe extern "sysv64" fn shared_copy(dst: *mut u8, src: *const u8, len: usize) {
    // Every move stays inside both ranges: each branch runs only for the lengths in its
    // comment, and its moves start at 0 or end at `len` (`len - 16` etc. are >= 0 there); the
    // loop runs while `i < len - 128`, so its moves end at `i + 128 <= len`.
    core::arch::naked_asm!(
        "cmp rdx, 32",
        "ja 5f",
        "cmp rdx, 16",
        "jb 2f",
        // 16..=32: the first and the last 16 bytes.
        "movdqu xmm0, [rsi]",
        "movdqu xmm1, [rsi + rdx - 16]",
        "movdqu [rdi], xmm0",
        "movdqu [rdi + rdx - 16], xmm1",
        "ret",
        "2:",
        "cmp rdx, 8",
        "jb 3f",
        // 8..16: the first and the last 8 bytes.
        "mov rcx, qword ptr [rsi]",
        "mov r8, qword ptr [rsi + rdx - 8]",
        "mov qword ptr [rdi], rcx",
        "mov qword ptr [rdi + rdx - 8], r8",
        "ret",
        "3:",
        "cmp rdx, 4",
        "jb 4f",
        // 4..8: the first and the last 4 bytes.
        "mov ecx, dword ptr [rsi]",
        "mov r8d, dword ptr [rsi + rdx - 4]",
        "mov dword ptr [rdi], ecx",
        "mov dword ptr [rdi + rdx - 4], r8d",
        "ret",
        "4:",
        "test rdx, rdx",
        "jz 41f",
        // 1..4: the first byte, and from 2 on the last 2 bytes.
        "movzx ecx, byte ptr [rsi]",
        "cmp rdx, 2",
        "jb 40f",
        "movzx r8d, word ptr [rsi + rdx - 2]",
        "mov word ptr [rdi + rdx - 2], r8w",
        "40:",
        "mov byte ptr [rdi], cl",
        "41:",
        "ret",
        "5:",
        "cmp rdx, 64",
        "ja 6f",
        // 33..=64: the first and the last 32 bytes.
        "movdqu xmm0, [rsi]",
        "movdqu xmm1, [rsi + 16]",
        "movdqu xmm2, [rsi + rdx - 32]",
        "movdqu xmm3, [rsi + rdx - 16]",
        "movdqu [rdi], xmm0",
        "movdqu [rdi + 16], xmm1",
        "movdqu [rdi + rdx - 32], xmm2",
        "movdqu [rdi + rdx - 16], xmm3",
        "ret",
        "6:",
        "cmp rdx, 128",
        "ja 7f",
        // 65..=128: the first and the last 64 bytes.
        "movdqu xmm0, [rsi]",
        "movdqu xmm1, [rsi + 16]",
        "movdqu xmm2, [rsi + 32]",
        "movdqu xmm3, [rsi + 48]",
        "movdqu xmm4, [rsi + rdx - 64]",
        "movdqu xmm5, [rsi + rdx - 48]",
        "movdqu xmm6, [rsi + rdx - 32]",
        "movdqu xmm7, [rsi + rdx - 16]",
        "movdqu [rdi], xmm0",
        "movdqu [rdi + 16], xmm1",
        "movdqu [rdi + 32], xmm2",
        "movdqu [rdi + 48], xmm3",
        "movdqu [rdi + rdx - 64], xmm4",
        "movdqu [rdi + rdx - 48], xmm5",
        "movdqu [rdi + rdx - 32], xmm6",
        "movdqu [rdi + rdx - 16], xmm7",
        "ret",
        "7:",
        "cmp rdx, {rep_min}",
        "jae 8f",
        // 129..REP_MOVSB_MIN: 128 bytes per pass while more than 128 are left after `rcx`,
        // then the last 128 bytes (from `r8` = len - 128).
        "lea r8, [rdx - 128]",
        "xor ecx, ecx",
        "71:",
        "movdqu xmm0, [rsi + rcx]",
        "movdqu xmm1, [rsi + rcx + 16]",
        "movdqu xmm2, [rsi + rcx + 32]",
        "movdqu xmm3, [rsi + rcx + 48]",
        "movdqu xmm4, [rsi + rcx + 64]",
        "movdqu xmm5, [rsi + rcx + 80]",
        "movdqu xmm6, [rsi + rcx + 96]",
        "movdqu xmm7, [rsi + rcx + 112]",
        "movdqu [rdi + rcx], xmm0",
        "movdqu [rdi + rcx + 16], xmm1",
        "movdqu [rdi + rcx + 32], xmm2",
        "movdqu [rdi + rcx + 48], xmm3",
        "movdqu [rdi + rcx + 64], xmm4",
        "movdqu [rdi + rcx + 80], xmm5",
        "movdqu [rdi + rcx + 96], xmm6",
        "movdqu [rdi + rcx + 112], xmm7",
        "add rcx, 128",
        "cmp rcx, r8",
        "jb 71b",
        "movdqu xmm0, [rsi + r8]",
        "movdqu xmm1, [rsi + r8 + 16]",
        "movdqu xmm2, [rsi + r8 + 32]",
        "movdqu xmm3, [rsi + r8 + 48]",
        "movdqu xmm4, [rsi + r8 + 64]",
        "movdqu xmm5, [rsi + r8 + 80]",
        "movdqu xmm6, [rsi + r8 + 96]",
        "movdqu xmm7, [rsi + r8 + 112]",
        "movdqu [rdi + r8], xmm0",
        "movdqu [rdi + r8 + 16], xmm1",
        "movdqu [rdi + r8 + 32], xmm2",
        "movdqu [rdi + r8 + 48], xmm3",
        "movdqu [rdi + r8 + 64], xmm4",
        "movdqu [rdi + r8 + 80], xmm5",
        "movdqu [rdi + r8 + 96], xmm6",
        "movdqu [rdi + r8 + 112], xmm7",
        "ret",
        "8:",
        // REP_MOVSB_MIN and more: the first 64 bytes with SSE moves, then one `rep movsb` from
        // the destination's next 64-byte boundary past `dst` (1 to 64 bytes on, so inside what
        // is copied already) to the end, as glibc's memcpy does: the string copy runs fastest
        // into an aligned destination.
        "movdqu xmm0, [rsi]",
        "movdqu xmm1, [rsi + 16]",
        "movdqu xmm2, [rsi + 32]",
        "movdqu xmm3, [rsi + 48]",
        "movdqu [rdi], xmm0",
        "movdqu [rdi + 16], xmm1",
        "movdqu [rdi + 32], xmm2",
        "movdqu [rdi + 48], xmm3",
        "lea rcx, [rdi + 64]",
        "and rcx, -64",
        "sub rcx, rdi",
        "add rsi, rcx",
        "add rdi, rcx",
        "sub rdx, rcx",
        "mov rcx, rdx",
        "rep movsb",
        "ret",
        rep_min = const REP_MOVSB_MIN,
    );
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
// Inlined: the call is to `shared_copy` (one symbol for a profile: docs/performance.md shows
// what the bounce copy costs per packet).
#[inline]
pub unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    // SAFETY: `src` readable for `dst.len()` bytes (caller), `dst` is exclusively ours and
    // cannot overlap memory someone else may write.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    unsafe {
        shared_copy(dst.as_mut_ptr(), src, dst.len());
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
    // SAFETY: `dst` writable for `src.len()` bytes (caller); `src` is a shared borrow of memory
    // nobody writes, so the ranges cannot overlap.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    unsafe {
        shared_copy(dst, src.as_ptr(), src.len());
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

    /// From [`REP_MOVSB_MIN`] on, the copy's `rep movsb` starts at the destination's next
    /// 64-byte boundary: every destination alignment, nothing outside the destination touched.
    #[test]
    fn copies_into_every_destination_alignment_exactly() {
        let backing: Vec<u64> = (0..600u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let src = backing.as_ptr().cast::<u8>();
        let mut out = std::vec![0u64; 600];
        let out_base = out.as_mut_ptr().cast::<u8>();
        // `out` is reached only through `out_base` from here on.
        for dst_offset in 0..72 {
            for len in [200, 300].into_iter().chain(LONG) {
                // SAFETY: `out_base` covers the 8 * 600 bytes of `out`, not referenced elsewhere.
                unsafe { core::ptr::write_bytes(out_base, 0, 8 * 600) };
                // SAFETY: `dst_offset + len <= 71 + 4099 < 8 * 600` bytes of `out`, which
                // nothing else references during the call.
                let dst = unsafe {
                    core::slice::from_raw_parts_mut(out_base.wrapping_add(dst_offset), len)
                };
                // SAFETY: `len <= 4099 < 8 * 600` bytes of `backing`.
                unsafe { copy_from_shared(src, dst) };
                // SAFETY: the source, read plainly (no concurrent writer here).
                let expect = unsafe { core::slice::from_raw_parts(src, len) };
                // SAFETY: all of `out`, read plainly after the copy.
                let all = unsafe { core::slice::from_raw_parts(out_base, 8 * 600) };
                assert_eq!(
                    &all[dst_offset..dst_offset + len],
                    expect,
                    "{dst_offset} {len}"
                );
                assert!(all[..dst_offset].iter().all(|b| *b == 0));
                assert!(all[dst_offset + len..].iter().all(|b| *b == 0));
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
