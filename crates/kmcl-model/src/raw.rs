//! Guest memory the exports receive as raw pointers, wrapped once at the FFI boundary so the
//! rest of the model reads and writes it through safe methods.
//!
//! The invariant is established by the `unsafe` constructors, whose callers (the `extern "C"`
//! functions) cite the KMCL contract of the argument: `_In_reads_bytes_(len)` for
//! [`GuestBytes`], `_Out_` for [`GuestOut`].

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr;

/// A guest buffer of `len` bytes that the model may read during the current call.
#[derive(Debug)]
pub(crate) struct GuestBytes<'a> {
    ptr: *const u8,
    len: usize,
    _call: PhantomData<&'a [u8]>,
}

impl GuestBytes<'_> {
    /// # Safety
    /// `ptr` is NULL or valid for reads of `len` bytes for as long as the value lives (the
    /// duration of the export call), as the function's `_In_reads_bytes_` annotation requires.
    pub(crate) unsafe fn new(ptr: *const c_void, len: u32) -> Self {
        Self {
            ptr: ptr.cast(),
            len: usize::try_from(len).unwrap_or(usize::MAX),
            _call: PhantomData,
        }
    }

    /// An empty buffer.
    pub(crate) const fn empty() -> Self {
        Self {
            ptr: ptr::null(),
            len: 0,
            _call: PhantomData,
        }
    }

    /// The length the guest claims.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// NULL with a non-zero length: the guest broke `_In_reads_bytes_`.
    pub(crate) fn is_null_with_length(&self) -> bool {
        self.ptr.is_null() && self.len > 0
    }

    /// The bytes, borrowed for the call; empty when the pointer is NULL.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: `new`'s contract: `ptr` is readable for `len` bytes for as long as `self`
        // lives (the export call), and the returned borrow cannot outlive `self`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Copies the first `min(len, max)` bytes; empty when the pointer is NULL.
    pub(crate) fn to_vec(&self, max: usize) -> Vec<u8> {
        let n = self.len.min(max);
        if self.ptr.is_null() || n == 0 {
            return Vec::new();
        }
        // SAFETY: `new`'s contract: `ptr` is readable for `len` bytes during the call, and
        // `n <= len`; the slice is copied before this function returns.
        unsafe { core::slice::from_raw_parts(self.ptr, n) }.to_vec()
    }
}

/// A guest out-parameter (`_Out_ T*`) the model may write once during the current call.
#[derive(Debug)]
pub(crate) struct GuestOut<'a, T> {
    ptr: *mut T,
    _call: PhantomData<&'a mut T>,
}

impl<T> GuestOut<'_, T> {
    /// # Safety
    /// `ptr` is NULL or valid for writes of one (possibly unaligned) `T` during the export
    /// call, as the function's `_Out_` annotation requires.
    pub(crate) unsafe fn new(ptr: *mut T) -> Self {
        Self {
            ptr,
            _call: PhantomData,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        self.ptr.is_null()
    }

    /// Writes `value`; false (nothing written) when the pointer is NULL.
    pub(crate) fn write(&self, value: T) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        // SAFETY: `new`'s contract: non-NULL `ptr` is writable for one `T` during the call.
        unsafe { self.ptr.write_unaligned(value) };
        true
    }
}

/// A guest in/out parameter (`_Inout_ T*`) the model may read and write during the call.
#[derive(Debug)]
pub(crate) struct GuestInOut<'a, T: Copy> {
    ptr: *mut T,
    _call: PhantomData<&'a mut T>,
}

impl<T: Copy> GuestInOut<'_, T> {
    /// # Safety
    /// `ptr` is NULL or valid for reads and writes of one (possibly unaligned) `T` during the
    /// export call.
    pub(crate) unsafe fn new(ptr: *mut T) -> Self {
        Self {
            ptr,
            _call: PhantomData,
        }
    }

    /// The current value; `None` for NULL.
    pub(crate) fn read(&self) -> Option<T> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: `new`'s contract: non-NULL `ptr` is readable for one `T` during the call.
        Some(unsafe { self.ptr.read_unaligned() })
    }

    /// Writes `value` (no-op for NULL).
    pub(crate) fn write(&self, value: T) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: `new`'s contract: non-NULL `ptr` is writable for one `T` during the call.
        unsafe { self.ptr.write_unaligned(value) };
    }
}

/// A guest output buffer (`_Out_writes_bytes_(cap)`).
#[derive(Debug)]
pub(crate) struct GuestBufOut<'a> {
    ptr: *mut u8,
    cap: usize,
    _call: PhantomData<&'a mut [u8]>,
}

impl GuestBufOut<'_> {
    /// # Safety
    /// `ptr` is NULL or valid for writes of `cap` bytes during the export call.
    pub(crate) unsafe fn new(ptr: *mut c_void, cap: u32) -> Self {
        Self {
            ptr: ptr.cast(),
            cap: if ptr.is_null() {
                0
            } else {
                usize::try_from(cap).unwrap_or(0)
            },
            _call: PhantomData,
        }
    }

    /// Copies as much of `data` as fits; returns the number of bytes written.
    pub(crate) fn fill(&self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap);
        if n == 0 {
            return 0;
        }
        // SAFETY: `new`'s contract: `ptr` is writable for `cap >= n` bytes during the call, and
        // `data` is a separate Rust slice, so the ranges do not overlap.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, n) };
        n
    }
}

/// An 8-byte aligned copy of a payload, as the guest sees it in the ring (never moves while
/// the model holds it).
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(a);
        }
        Self {
            words,
            len: bytes.len(),
        }
    }

    pub(crate) fn len_u32(&self) -> u32 {
        u32::try_from(self.len).unwrap_or(u32::MAX)
    }

    /// The words behind the bytes, for a host that writes them while the guest reads
    /// ([`scribble`]).
    pub(crate) fn shared_words(&mut self) -> SharedWords {
        SharedWords {
            ptr: self.words.as_mut_ptr(),
            len: self.words.len(),
        }
    }

    /// A pointer the guest may read `len` bytes from (never NULL, even when empty).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut c_void {
        self.words.as_mut_ptr().cast()
    }

    /// Overwrites the bytes with a recognisable pattern (0xDB) once the guest's right to read
    /// them has ended, so a late read sees garbage instead of plausible data.
    pub(crate) fn poison(&mut self) {
        self.words.fill(0xDBDB_DBDB_DBDB_DBDB);
    }
}

/// Reads one `T` from a guest `_In_` pointer; `None` for NULL.
///
/// # Safety
/// `p` is NULL or valid for reads of one (possibly unaligned) `T`.
pub(crate) unsafe fn read_in<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a non-NULL `p` is readable for one `T`.
    Some(unsafe { p.read_unaligned() })
}

/// Copies `n` values from a guest `_In_reads_(n)` array; `None` for NULL with `n > 0`.
///
/// # Safety
/// `p` is NULL or valid for reads of `n` (possibly unaligned) `T`s.
pub(crate) unsafe fn read_array<T: Copy>(p: *const T, n: usize) -> Option<Vec<T>> {
    if n == 0 {
        return Some(Vec::new());
    }
    if p.is_null() {
        return None;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let at = p.wrapping_add(i);
        // SAFETY: the caller guarantees `p` is readable for `n` values, and `i < n`.
        let item = unsafe { at.read_unaligned() };
        v.push(item);
    }
    Some(v)
}

/// The hostile host of [`DeliveryMode::InPlaceHostile`](crate::DeliveryMode): rewrites every
/// word of a delivered packet, atomically and over and over, until `stop`, as another VM
/// writing the shared ring would. The values change on every pass (a counter in each byte).
///
/// # Safety
/// `words` must point to `len` 8-aligned `u64`s that stay allocated until this returns and
/// that everyone else accesses only through atomic operations or raw reads while it runs (the
/// guest's reads are the point; the delivering thread does not touch them meanwhile).
pub(crate) unsafe fn scribble(words: SharedWords, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut pass: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        pass = pass.wrapping_add(0x0101_0101_0101_0101);
        for i in 0..words.len {
            // SAFETY: `i < len`, so the word is inside the allocation, 8-aligned (caller);
            // every concurrent access is atomic or a read (caller).
            let w = unsafe { AtomicU64::from_ptr(words.ptr.wrapping_add(i)) };
            w.store(pass, Ordering::Relaxed);
        }
        std::hint::spin_loop();
    }
}

/// The words of a delivered packet, handed to the scribbling host thread.
#[derive(Clone, Copy)]
pub(crate) struct SharedWords {
    pub(crate) ptr: *mut u64,
    pub(crate) len: usize,
}

// SAFETY: only used by `scribble`, whose contract covers concurrent access to the words.
unsafe impl Send for SharedWords {}
