//! Reading and writing memory the host may write at the same time.
//!
//! A packet buffer KMCL may hand over in place (module `bounce`) and a GPADL buffer the host has
//! mapped are shared with another VM: its bytes can change between two reads. Rust has no
//! `&[u8]` for such memory (a shared reference promises the bytes do not change), and reading
//! it twice and trusting both reads is the double-fetch bug the hardening rules forbid. Every
//! access therefore goes through these functions, which read or write each byte exactly once
//! with relaxed atomic accesses (8 bytes at a time where aligned): well defined whatever the
//! other side does, and on x86-64 and arm64 plain loads and stores.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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

    #[test]
    fn copies_every_length_and_misalignment_exactly() {
        let backing: Vec<u64> = (0..40u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let base = backing.as_ptr().cast::<u8>();
        for offset in 0..9 {
            for len in 0..100 {
                let mut out = std::vec![0xAAu8; len];
                // SAFETY: offset + len <= 109 < 320 bytes of `backing`.
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
            for len in 0..100usize {
                let mut backing = std::vec![0u64; 40];
                let base = backing.as_mut_ptr().cast::<u8>();
                let src: Vec<u8> = (0..len)
                    .map(|i| u8::try_from(i % 251).unwrap_or(0) + 1)
                    .collect();
                // SAFETY: offset + len <= 109 < 320 bytes of `backing`.
                unsafe { copy_to_shared(&src, base.wrapping_add(offset)) };
                // SAFETY: the whole backing store, read plainly after the writes.
                let all = unsafe { core::slice::from_raw_parts(base, 320) };
                assert!(all[..offset].iter().all(|b| *b == 0));
                assert_eq!(&all[offset..offset + len], &src[..]);
                assert!(all[offset + len..].iter().all(|b| *b == 0));
            }
        }
    }
}
