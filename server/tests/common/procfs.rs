//! What the tests read of a process in `/proc`. Each helper panics, naming the path and
//! the error, if it cannot be read or lacks the field: a 0 would make the checks built
//! on it pass vacuously.

use std::fs::ReadDir;
use std::path::Path;

/// The number after `key` (with its colon: `"VmRSS:"`, `"wchar:"`) in `/proc/PID/FILE`,
/// as written there (kB for the memory fields of `status`).
pub fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let path = format!("/proc/{pid}/{file}");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no numeric field {key:?} in {path}:\n{text}"))
}

/// The resident memory of `pid` (`VmRSS`) in bytes.
pub fn resident_bytes(pid: i32) -> u64 {
    proc_field(pid, "status", "VmRSS:") * 1024
}

fn fd_dir(pid: i32) -> ReadDir {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"))
}

/// The number of descriptors `pid` holds.
pub fn open_fds(pid: i32) -> usize {
    fd_dir(pid).count()
}

/// The number of descriptors `pid` holds open on `file`.
pub fn fds_on(pid: i32, file: &Path) -> usize {
    fd_dir(pid)
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == file)
        .count()
}
