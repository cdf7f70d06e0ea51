//! The orphan watchdog: a tiny process forked at start-up that outlives a crashed
//! server and kills what the server leaves when it exits (even by `kill -9`), when its
//! pipe from the server reaches EOF. The parent-death signal alone only reaches direct
//! children. The server keeps the pipe open until the kernel closes it at its exit, and
//! the watchdog waits until the server has exited before it acts, so that it never kills
//! or removes alongside a server that is still tearing its processes down. What it kills
//! depends on the containment:
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
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, signal, SigHandler, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, getppid, pipe2, setsid, ForkResult, Pid};

use crate::cgroup::Cgroup;
use crate::containment::Containment;

/// Handle used by the server to register and unregister process groups.
#[derive(Clone)]
pub struct Watchdog {
    /// The write end of the pipe, never closed while this process runs (see `start`).
    pipe: &'static Mutex<File>,
}

impl Watchdog {
    /// Forks the watchdog process, which will kill what `containment` holds. Returns once
    /// the watchdog has left this process's group and session, so that nothing aimed at
    /// the server's group from then on (a harness's teardown, a terminal's signals) can
    /// kill it before it has cleaned up.
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
        let server = getpid();
        let (reader, writer) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (ready_reader, ready_writer) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the caller guarantees the process is single-threaded (see # Safety).
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(writer);
                drop(ready_reader);
                run_watchdog(reader, ready_writer, cgroup, server)
            }
            ForkResult::Parent { child } => {
                drop(reader);
                drop(ready_writer);
                // A forked child may wait a while for a CPU: one still in our group when
                // the group is killed, by a harness dropping a server it just started, is
                // killed with us and leaves our cgroup behind.
                let mut ready = [0u8; 1];
                if let Err(err) = File::from(ready_reader).read_exact(&mut ready) {
                    // It died before it was ready (EOF), or cannot tell us: our child, not
                    // yet reaped, so its pid is still its own.
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Err(io::Error::new(
                        err.kind(),
                        format!("the watchdog did not start: {err}"),
                    ));
                }
                // EOF tells the watchdog that this process is gone, so the write end must
                // stay open until the kernel closes it at exit. Were it closed with the
                // last handle, which the server drops when it stops serving while its
                // runtime still kills and removes its processes' cgroups, the watchdog
                // would remove the same directories at the same time, and a directory
                // gone under its feet made it give up on the server's own.
                let pipe = Box::leak(Box::new(Mutex::new(File::from(writer))));
                Ok(Watchdog { pipe })
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

fn run_watchdog(reader: OwnedFd, ready: OwnedFd, cgroup: Option<Cgroup>, server: Pid) -> ! {
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
    // Out of the server's group and deaf to its signals: let `start` return.
    let _ = File::from(ready).write_all(b"1");
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
    wait_for_exit(server);
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

/// Returns once `server`, our parent, has exited. EOF on the pipe comes as the server's
/// last thread releases its descriptors, a moment before it is gone; and should the pipe
/// ever be closed early, the server would still be running and tearing down its own
/// processes. It has exited once the kernel has given us another parent, which it does
/// only when no thread of the server is left.
fn wait_for_exit(server: Pid) {
    let mut pause = Duration::from_micros(100);
    while getppid() == server {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Kills everything in `cgroup` and its descendants, waits for it to die, then removes
/// the cgroup directories, all within [`EMPTY_DEADLINE`](crate::cgroup::EMPTY_DEADLINE).
/// Nobody else will remove them, so a busy cgroup is retried until then.
fn kill_and_remove(cgroup: &Cgroup) {
    let deadline = Instant::now() + crate::cgroup::EMPTY_DEADLINE;
    let _ = cgroup.kill();
    loop {
        // A cgroup in which a process still runs cannot be removed (EBUSY).
        let _ = cgroup.wait_empty(deadline);
        match cgroup.remove() {
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                // Busy although it read empty (should the kernel lag behind `populated`),
                // or a process got in after the kill: kill again, and retry shortly.
                let _ = cgroup.kill();
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}
