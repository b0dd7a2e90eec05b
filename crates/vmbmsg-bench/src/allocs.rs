//! A counting global allocator for the zero-allocation proof: install it in a test or bench
//! binary with `#[global_allocator]`, then [`count`] what one thread allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator; counts allocations of the calling thread while
/// [`count`] runs on it.
#[derive(Debug)]
pub struct CountingAllocator;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + size as u64));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the bookkeeping uses thread-local `Cell`s with const initialisers, which never
// allocate or unwind.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's pointer (allocated by `System` through this allocator),
        // layout and new size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (and bytes requested) by this thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `alloc`, `alloc_zeroed` and `realloc` calls.
    pub allocations: u64,
    /// Bytes they asked for.
    pub bytes: u64,
}

/// Runs `f` and returns what this thread allocated meanwhile (zero unless the binary
/// installed [`CountingAllocator`]).
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    ALLOCS.with(|a| a.set(0));
    BYTES.with(|b| b.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    let counts = Counts {
        allocations: ALLOCS.with(Cell::get),
        bytes: BYTES.with(Cell::get),
    };
    (r, counts)
}
