fn main() -> color_eyre::Result<()> {
    cap_malloc_mmap_threshold();
    deltalink::cli::main()
}

/// glibc serves blocks above its mmap threshold with their own mappings, returned on free, but
/// raises that threshold (up to 32 MiB) each time such a block is freed: after the first
/// megabyte-sized buffers of a run, later ones come from the per-thread arenas and their pages
/// stay resident there. Capping it at 1 MiB keeps large buffers (decoded columns, file bytes)
/// out of the arenas, at some cost in time (see README, Performance: the 1M-row lake's incremental
/// peak 0.65–0.67× → 0.50–0.54× the baseline's, its run 8 % slower). glibc's own
/// `MALLOC_MMAP_THRESHOLD_`, when set, is left to rule.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_mmap_threshold() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_mmap_threshold() {}
