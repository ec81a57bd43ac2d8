//! How much memory the host can still give this process, to refuse up front work that cannot fit
//! (a KV cache sized for a million positions) instead of failing, or being killed, half-way.

use crate::ModelError;

/// Bytes the process can still allocate: the system's available memory (`MemAvailable`), or less
/// where a cgroup (a container) limits the process. `None` where the platform does not say.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut avail = meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })?;
    // cgroup v2: the limit less what the group already uses.
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    if let (Some(max), Some(cur)) = (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// Errors when `bytes` for `what` exceed the memory available (see [`available`]).
pub fn check(bytes: u64, what: impl FnOnce() -> String) -> Result<(), ModelError> {
    match available() {
        Some(avail) if bytes > avail => Err(ModelError::Memory {
            what: what(),
            needed: bytes,
            available: Some(avail),
        }),
        _ => Ok(()),
    }
}
