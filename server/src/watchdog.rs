//! The orphan watchdog: a tiny process forked at start-up that outlives a crashed
//! server and kills what the server leaves when it exits (even by `kill -9`), when its
//! pipe from the server reaches EOF. The parent-death signal alone only reaches direct
//! children. What it kills depends on the containment:
//!
//! - **cgroup**: the server's cgroup, and with it every process's cgroup and everything
//!   in them, `setsid()` or not; then it removes those directories. No number is used.
//! - **process groups**: the groups the server registered over the pipe (`+pgid` /
//!   `-pgid` lines). The server unregisters a group before it reaps the group's leader,
//!   so while registered the number is still that leader's pid and cannot have been
//!   reused. One window is left: when the server dies, its unreaped leaders are reaped
//!   by init, and a group whose members were all gone by then could lose its number to
//!   a new process before the watchdog's `killpg` — only if pids wrap around in between.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

use crate::cgroup::Cgroup;
use crate::containment::Containment;

/// Handle used by the server to register and unregister process groups.
#[derive(Clone)]
pub struct Watchdog {
    pipe: Arc<Mutex<File>>,
}

impl Watchdog {
    /// Forks the watchdog process, which will kill what `containment` holds.
    ///
    /// # Safety
    ///
    /// The calling process must be single-threaded: no other thread may exist (call it
    /// before building the tokio runtime or spawning any thread). The forked child goes
    /// on to allocate, read the pipe, open files and walk cgroup directories; after a
    /// fork of a multi-threaded process it could deadlock on a lock (the allocator's,
    /// stdio's) that another thread held at the moment of the fork.
    pub unsafe fn start(containment: &Containment) -> io::Result<Watchdog> {
        let cgroup = containment.server_cgroup().cloned();
        let (reader, writer) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the caller guarantees the process is single-threaded (see # Safety).
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(writer);
                run_watchdog(reader, cgroup)
            }
            ForkResult::Parent { .. } => {
                drop(reader);
                Ok(Watchdog {
                    pipe: Arc::new(Mutex::new(File::from(writer))),
                })
            }
        }
    }

    pub fn register(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    pub fn unregister(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        let mut pipe = self
            .pipe
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Lines are shorter than PIPE_BUF, so each write is atomic.
        if let Err(err) = pipe.write_all(line.as_bytes()) {
            tracing::warn!(%err, "orphan watchdog is gone; process groups are unguarded");
        }
    }
}

fn run_watchdog(reader: OwnedFd, cgroup: Option<Cgroup>) -> ! {
    // Leave the server's process group and session, so that killing the server's group
    // (as test harnesses do) does not take the watchdog with it; ignore terminal signals.
    let _ = setsid();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for target in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays valid during the call.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
    let mut groups: Vec<i32> = Vec::new();
    for line in BufReader::new(File::from(reader)).lines() {
        let Ok(line) = line else { break };
        match line.split_at_checked(1) {
            Some(("+", pgid)) => groups.extend(pgid.parse::<i32>().ok()),
            Some(("-", pgid)) => {
                if let Ok(pgid) = pgid.parse::<i32>() {
                    groups.retain(|&known| known != pgid);
                }
            }
            _ => {}
        }
    }
    match cgroup {
        Some(cgroup) => kill_and_remove(&cgroup),
        None => {
            for pgid in groups {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
    // SAFETY: _exit skips the parent's atexit handlers and buffered-output flushes,
    // which belong to the server, not to this forked copy.
    unsafe { libc::_exit(0) }
}

/// Kills everything in `cgroup` and its descendants, waits for it to die, then removes
/// the cgroup directories.
fn kill_and_remove(cgroup: &Cgroup) {
    let _ = cgroup.kill();
    let deadline = Instant::now() + crate::cgroup::EMPTY_DEADLINE;
    while matches!(cgroup.is_populated(), Ok(true)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = cgroup.remove();
}
