//! Orphans: the processes of one case, found by the marker the case gives each of them
//! (in argv or in the environment: `$marker`, see `fixtures/README.md`), so that a
//! survivor can be reported and killed.

use std::time::Duration;

/// A live process carrying a case's marker: its pid and command line.
pub type Marked = (i32, String);

/// Processes whose environment or argv carries `marker`, except the runner itself. The
/// server under test never carries it: only what a case starts does.
pub fn marked_processes(marker: &str) -> Vec<Marked> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own || !exec_server_harness::process_alive(pid) {
            continue;
        }
        let carries = |file: &str| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
        };
        if carries("environ") || carries("cmdline") {
            found.push((pid, command_line(pid)));
        }
    }
    found
}

fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Waits up to `within` for the case's processes to be gone, then records and
/// SIGKILLs any survivor (returned).
pub async fn reap_marked(marker: &str, within: Duration) -> Vec<Marked> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let alive = marked_processes(marker);
        if alive.is_empty() {
            return alive;
        }
        if tokio::time::Instant::now() >= deadline {
            for (pid, _) in &alive {
                // SAFETY: kill(2) has no memory effects; the pid carries this case's
                // unique marker, so it is one of the case's own processes.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_marked_process_is_found_and_killed() {
        let marker = format!("hygiene-test-{}", uuid::Uuid::new_v4().simple());
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exec sleep 600"])
            .env("XT_MARKER", &marker)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !marked_processes(&marker).iter().any(|(p, _)| *p == pid) {
            assert!(std::time::Instant::now() < deadline, "never found {pid}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let survivors = reap_marked(&marker, Duration::ZERO).await;
        assert_eq!(survivors.len(), 1, "{survivors:?}");
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
