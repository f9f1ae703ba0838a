//! Process-wide memory-allocator tuning for inference.
//!
//! Every network layer allocates its output afresh, and on the original
//! network those are 16-270 MB each. glibc's defaults hand buffers that big
//! straight back to the operating system when freed (`munmap`, or a heap trim
//! above 128 KB of free top), so the next layer takes page faults and zeroes
//! pages again: about a tenth of a forward pass in `perf`. Keeping freed memory
//! for reuse removes that cost; the price is that the process's resident size
//! stays at its peak instead of shrinking between requests, which is what a
//! node serving a steady stream of images does anyway.
//!
//! Buffers above glibc's largest mmap threshold (32 MB: the original network's
//! top four levels at a 1024 input) are still mapped fresh for every layer.
//! [`HugePageAllocator`] asks the kernel to back those mappings with 2 MB
//! transparent huge pages, so a 268 MB activation costs about 130 page faults
//! instead of 65,000 (what `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` does, but
//! without an environment variable that must be set before the process starts).

use std::alloc::{GlobalAlloc, Layout, System};

/// Smallest allocation [`HugePageAllocator`] advises: glibc's mmap threshold as
/// [`keep_freed_memory_for_reuse`] sets it, so only fresh mappings are advised,
/// never parts of the reused heap.
const HUGE_PAGE_MIN_BYTES: usize = 32 << 20;

/// The system allocator, plus `madvise(MADV_HUGEPAGE)` on allocations of 32 MB
/// and more (Linux; elsewhere exactly the system allocator). Install it with
/// `#[global_allocator]` in a binary that runs large networks. The advice is a
/// hint: where transparent huge pages are off (`never`), nothing changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAllocator;

impl HugePageAllocator {
    /// Advises the whole pages inside `[ptr, ptr + size)` when the block is large.
    #[inline]
    fn advise(ptr: *mut u8, size: usize) {
        #[cfg(target_os = "linux")]
        if !ptr.is_null() && size >= HUGE_PAGE_MIN_BYTES {
            const PAGE: usize = 4096;
            let start = (ptr as usize).next_multiple_of(PAGE);
            let end = (ptr as usize + size) / PAGE * PAGE;
            if end > start {
                // SAFETY: the range lies inside a block the allocator just handed
                // out; MADV_HUGEPAGE changes no contents and fails harmlessly
                // (ignored) where huge pages are unavailable.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (ptr, size);
    }
}

// SAFETY: every call is forwarded to `System`, which upholds the contract;
// `advise` only adds a hint on memory the caller now owns.
unsafe impl GlobalAlloc for HugePageAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller's contract.
        let ptr = unsafe { System.alloc(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller's contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller's contract.
        let ptr = unsafe { System.realloc(ptr, layout, new_size) };
        Self::advise(ptr, new_size);
        ptr
    }
}

/// Asks glibc malloc to serve buffers up to 32 MB from the heap and to keep up
/// to 1 GB of freed memory instead of returning it to the OS. Call once at
/// process start, before the first inference (the `spheromesh` binary and the
/// benchmarks do). A no-op on other C libraries.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // 32 MB is glibc's largest accepted mmap threshold on 64-bit targets.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        const TOP_PAD: libc::c_int = 64 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call
        // at any time and rejects values it does not accept (returns 0).
        let accepted = unsafe {
            [
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                libc::mallopt(libc::M_TOP_PAD, TOP_PAD),
            ]
        };
        if accepted.contains(&0) {
            tracing::warn!(?accepted, "glibc rejected part of the allocator tuning");
        }
    }
}
