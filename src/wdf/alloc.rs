//! The driver's global allocator: non-paged, no-execute pool from `ExAllocatePoolWithTag`, with
//! every `Layout` alignment honoured.
//!
//! Why not wdk-alloc 0.4.2's `WdkAllocator`:
//!
//! * It calls `ExAllocatePool2`, which ntoskrnl exports only from Windows 10 version 2004
//!   (build 19041; learn.microsoft.com, `ExAllocatePool2`, Requirements). A driver that imports
//!   it does not load on Windows Server 2019 or Windows 10 1803-1909, which the INF and the KMDF
//!   minimum (1.25) otherwise support. `ExAllocatePoolWithTag` is exported by every version.
//! * It ignores `Layout::align` (its own FIXME). Pool blocks are `MEMORY_ALLOCATION_ALIGNMENT`
//!   (16 bytes on 64-bit Windows) aligned; kmcl's bounce buffers ask for 64. A larger alignment
//!   is honoured here by over-allocating and keeping the block's start just before the
//!   pointer handed out.
//!
//! `NonPagedPoolNx`: usable up to DISPATCH_LEVEL, never executable (what `POOL_FLAG_NON_PAGED`
//! gives `ExAllocatePool2`). Memory is not zeroed (Rust does not need it; `alloc_zeroed`
//! zeroes). A failed allocation returns null, never panics: every allocation of the driver
//! is fallible (`try_reserve`, kmcl's `try_box`), and Driver Verifier's low-resources
//! simulation makes these fail on purpose.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use wdk_sys::{SIZE_T, ULONG};

/// `'vmbm'` in a pool dump (tags are stored little-endian).
const TAG: ULONG = u32::from_le_bytes(*b"vmbm");

/// `POOL_TYPE::NonPagedPoolNx` (wdm.h): non-paged, no-execute.
const NON_PAGED_POOL_NX: i32 = 512;

/// `MEMORY_ALLOCATION_ALIGNMENT` on 64-bit Windows: what every pool block already has.
const POOL_ALIGN: usize = 16;

unsafe extern "system" {
    /// ntoskrnl's `ExAllocatePoolWithTag` (wdm.h), which wdk-sys leaves out of its bindings as
    /// deprecated (wdk-build `blocklist_item("ExAllocatePoolWithTag")`). `POOL_TYPE` is a C enum,
    /// an `int`. Linked through ntoskrnl.lib, which wdk-sys already links. <= DISPATCH_LEVEL for
    /// non-paged pool.
    fn ExAllocatePoolWithTag(pool_type: i32, number_of_bytes: SIZE_T, tag: ULONG) -> *mut c_void;
}

/// The driver's allocator (see the module docs).
pub(super) struct PoolAllocator;

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()`, owned by the caller until `dealloc` with the same layout, which frees
// exactly that block; neither unwinds (no panics).
unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= POOL_ALIGN {
            let Ok(size) = SIZE_T::try_from(layout.size()) else {
                return core::ptr::null_mut();
            };
            // SAFETY: non-paged pool at <= DISPATCH_LEVEL, where all driver code allocates.
            return unsafe { ExAllocatePoolWithTag(NON_PAGED_POOL_NX, size, TAG) }.cast();
        }
        // Over-allocate by the alignment: room to move the start up to an aligned address with
        // at least one pointer-sized slot before it for the block's real start.
        let Some(size) = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| SIZE_T::try_from(n).ok())
        else {
            return core::ptr::null_mut();
        };
        // SAFETY: as above.
        let block = unsafe { ExAllocatePoolWithTag(NON_PAGED_POOL_NX, size, TAG) }.cast::<u8>();
        if block.is_null() {
            return block;
        }
        // `block` is 16-aligned and align > 16, so the offset is in 16..=align: the slot before
        // the aligned pointer is inside the block and 8-aligned.
        let offset = layout.align() - (block.addr() & (layout.align() - 1));
        let aligned = block.wrapping_add(offset);
        // SAFETY: `aligned - 8 .. aligned` lies inside the block (offset >= 16) and is
        // 8-aligned (both `aligned` and the block are 16-aligned).
        unsafe { aligned.cast::<*mut u8>().wrapping_sub(1).write(block) };
        aligned
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let block = if layout.align() <= POOL_ALIGN {
            ptr
        } else {
            // SAFETY: `alloc` wrote the block's start just before `ptr` for this layout.
            unsafe { ptr.cast::<*mut u8>().wrapping_sub(1).read() }
        };
        // SAFETY: `block` came from `ExAllocatePoolWithTag` with `TAG` and is freed once.
        unsafe { wdk_sys::ntddk::ExFreePoolWithTag(block.cast(), TAG) };
    }
}
