//! Small shared utilities: progress display and atomic file writes.

pub mod fsx;
pub mod progress;

/// Keep freed buffers in the process: glibc returns large blocks to the OS
/// (munmap) and re-faults them on the next step, which costs page faults,
/// zeroing and TLB shootdowns on every training step.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
