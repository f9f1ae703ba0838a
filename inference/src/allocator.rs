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
