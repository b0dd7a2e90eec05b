//! Heap buffers with a chosen alignment, for baselines that must not be flattered or hurt by
//! where the allocator happens to put them.

/// A heap buffer with a given alignment.
#[derive(Debug)]
pub struct AlignedVec {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
    len: usize,
}

impl AlignedVec {
    /// `len` bytes (at least 1 allocated) aligned to `align` (a power of two), byte `i` set
    /// to `fill(i)`.
    ///
    /// # Panics
    /// If `align` is not a power of two or the memory cannot be had.
    #[must_use]
    pub fn new(len: usize, align: usize, fill: impl Fn(usize) -> u8) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(1), align).expect("layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).expect("memory");
        let mut v = Self { ptr, layout, len };
        for (i, b) in v.bytes_mut().iter_mut().enumerate() {
            *b = fill(i);
        }
        v
    }

    /// The bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` owns `layout.size() >= len` initialised (zeroed, then filled) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedVec {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
