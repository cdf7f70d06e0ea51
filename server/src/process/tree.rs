//! One process tree: its leader, what contains it (a cgroup of its own, or its process
//! group), and the rules that keep every kill aimed at it and at nobody else.
//!
//! A process-group id is the leader's pid. Once the leader is reaped and the group has
//! emptied, the kernel may give that number to a stranger, and a `killpg` meant for the
//! old tree would kill the stranger's group. So the leader stays unreaped (a zombie)
//! while anything may still signal its group, and is reaped only when its tree has
//! been killed, or when it exits and its tree is already empty; after that, nothing is
//! ever signalled by that number again. With a cgroup, kills go to the cgroup, never to
//! a number, and the cgroup is removed once nothing runs in it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;

use super::leader::Leader;
use super::reader::OutputReader;
use crate::cgroup::Cgroup;
use crate::faults::{self, Fault};
use crate::watchdog::Watchdog;

pub struct Tree {
    /// The leader's pid, which is also its process-group id.
    pid: i32,
    cgroup: Option<Cgroup>,
    /// Only without a cgroup: the watchdog knows the group id until the leader is reaped.
    watchdog: Option<Watchdog>,
    /// Held while signalling and while reaping, so a signal never races the reap.
    reaped: Mutex<bool>,
    killed: watch::Sender<bool>,
    /// Output pipes that reached EOF, closed at the teardown (see [`TEARDOWN`]); `None`
    /// once it is done.
    spent: Mutex<Option<Vec<OutputReader>>>,
}

impl Tree {
    pub fn new(pid: i32, cgroup: Option<Cgroup>, watchdog: Option<Watchdog>) -> Tree {
        // With a cgroup the watchdog kills the server's cgroup and needs no numbers.
        let watchdog = watchdog.filter(|_| cgroup.is_none());
        if let Some(watchdog) = &watchdog {
            watchdog.register(pid);
        }
        Tree {
            pid,
            cgroup,
            watchdog,
            reaped: Mutex::new(false),
            killed: watch::Sender::new(false),
            spent: Mutex::new(Some(Vec::new())),
        }
    }

    /// Takes `reader`, whose pipe or PTY reached EOF, to close it with the rest of the
    /// teardown; closes it at once if that is done, or if the tree outlived its leader.
    pub fn close_at_teardown(&self, reader: OutputReader) {
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match spent.as_mut() {
            Some(spent) => spent.push(reader),
            None => {
                drop(spent);
                drop(reader);
            }
        }
    }

    /// Closes the spent readers, and any handed over from now on at once.
    fn close_spent(&self) {
        let spent = self
            .spent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        drop(spent);
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.reaped
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// SIGKILLs the whole tree: its cgroup, or its process group. Once the leader has
    /// been reaped there is nothing left to kill, and its pid may be someone else's.
    pub fn kill(&self) {
        let reaped = self.lock();
        if *reaped {
            return;
        }
        let result = match &self.cgroup {
            // Negative control: the leader dies, its descendants are left running.
            _ if faults::active(Fault::OrphanChildren) => {
                match kill(Pid::from_raw(self.pid), Signal::SIGKILL) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                    Err(errno) => Err(errno.into()),
                }
            }
            Some(cgroup) => cgroup.kill(),
            None => match killpg(Pid::from_raw(self.pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(errno) => Err(errno.into()),
            },
        };
        if let Err(err) = result {
            tracing::warn!(pid = self.pid, %err, "could not kill a process tree");
        }
        drop(reaped);
        self.killed.send_replace(true);
    }

    /// Sends `signal` to the process group, unless the leader has been reaped (then the
    /// group was killed or empty, and the number may be someone else's).
    pub fn signal_group(&self, signal: Signal) -> nix::Result<()> {
        let reaped = self.lock();
        if *reaped {
            return Ok(());
        }
        // Negative control: the leader alone gets the signal.
        if faults::active(Fault::OrphanChildren) {
            return kill(Pid::from_raw(self.pid), signal);
        }
        killpg(Pid::from_raw(self.pid), signal)
    }

    /// Reaps `leader`, which has exited, as soon as its tree is empty or has been
    /// killed, then removes its cgroup. Call once, after the exit has been published.
    /// Closes the leader's pidfd and the pipes handed to [`Tree::close_at_teardown`].
    pub async fn reap_when_done(&self, leader: Leader) {
        let mut killed = self.killed.subscribe();
        // A killed tree is reaped whatever is left in it, so it needs no look.
        if !*killed.borrow_and_update() && !self.is_empty().await {
            // The tree outlives its leader (a background job): its spent pipes or PTY
            // are closed now, and later ones at once, not held until it is killed.
            self.close_spent();
            // The sender lives in `self`, so this only returns once the tree is killed.
            let _ = killed.wait_for(|killed| *killed).await;
        }
        let removed = {
            let _turn = teardown_turn().await;
            {
                let mut reaped = self.lock();
                // The watchdog must forget the number before the kernel can reuse it.
                if let Some(watchdog) = &self.watchdog {
                    watchdog.unregister(self.pid);
                }
                if let Err(err) = leader.reap() {
                    tracing::warn!(pid = self.pid, %err, "could not reap a process");
                }
                *reaped = true;
            }
            drop(leader);
            self.close_spent();
            self.cgroup.as_ref().map(Cgroup::remove)
        };
        if let (Some(cgroup), Some(Err(err))) = (&self.cgroup, removed) {
            remove_once_empty(cgroup, err).await;
        }
    }

    /// Whether nothing but the (exited) leader is left: an empty cgroup, or no other
    /// process in the group.
    async fn is_empty(&self) -> bool {
        match &self.cgroup {
            Some(cgroup) => matches!(cgroup.is_populated(), Ok(false)),
            None => {
                let pgid = self.pid;
                tokio::task::spawn_blocking(move || !group_has_members(pgid))
                    .await
                    .unwrap_or(false)
            }
        }
    }
}

/// Whether a process other than the leader is in process group `pgid`, by a scan of
/// `/proc` (the kernel lists no group's members). New members come from forks of
/// members, or from `setpgid` by a process of the leader's own session, so an empty
/// group stays empty.
fn group_has_members(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            return false;
        };
        if pid == pgid {
            return false;
        }
        // Fields after the command name: state, ppid, pgrp, …
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, fields) = stat.rsplit_once(") ")?;
                fields.split(' ').nth(2)?.parse::<i32>().ok()
            })
            == Some(pgid)
    })
}

/// The teardown of a process whose exit is announced and whose tree is empty or killed
/// (reaping the leader, closing its pidfd and spent pipes, removing its cgroup) runs one
/// process at a time in the whole server, behind whatever else the runtime has ready.
/// Nothing on the wire waits for it, and it holds the costliest calls of a process's end
/// (an rmdir in cgroupfs deletes every interface file under `cgroup_mutex`, which each
/// `cgroup.kill` takes too): so a burst of terminates first kills and announces every
/// process, then tidies up. One at a time costs little: the kernel serializes the
/// rmdirs (and the reaps, under `tasklist_lock`) anyway.
static TEARDOWN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tasks waiting for a turn at [`TEARDOWN`].
static TEARDOWN_WAITING: AtomicUsize = AtomicUsize::new(0);

/// How many teardowns may wait behind other work. A runtime that is never idle runs a
/// yielded task only every few dozen polls, slower than a steady stream of process
/// ends: past this many waiting, a turn does not yield, so zombies, pidfds and cgroups
/// cannot pile up under sustained load.
const TEARDOWN_BACKLOG: usize = 1024;

/// Counts a task waiting for its turn, also if it is dropped while waiting.
struct Waiting;

impl Waiting {
    fn new() -> Waiting {
        TEARDOWN_WAITING.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        TEARDOWN_WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for this task's turn at [`TEARDOWN`], then (unless too many are waiting) lets
/// every task that is ready run first: a yield puts it behind them.
async fn teardown_turn() -> tokio::sync::MutexGuard<'static, ()> {
    let waiting = Waiting::new();
    let turn = TEARDOWN.lock().await;
    drop(waiting);
    if TEARDOWN_WAITING.load(Ordering::Relaxed) < TEARDOWN_BACKLOG {
        tokio::task::yield_now().await;
    }
    turn
}

/// Retries removing `cgroup`, whose first removal failed with `first`, until the
/// processes it killed are gone (they take a moment to die).
async fn remove_once_empty(cgroup: &Cgroup, first: std::io::Error) {
    // Past this the cgroup is left to the watchdog, which removes the server's cgroups
    // when the server exits.
    let deadline = Instant::now() + crate::cgroup::EMPTY_DEADLINE;
    let mut pause = Duration::from_millis(1);
    let mut failed = first;
    // Removing is the test: its rmdir fails (`EBUSY`) while anything runs in it, and
    // usually nothing does by the first try, so a look at `cgroup.events` would be wasted.
    while crate::cgroup::is_busy(&failed) && Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
        let removed = {
            let _turn = teardown_turn().await;
            cgroup.remove()
        };
        match removed {
            Ok(()) => return,
            Err(err) => failed = err,
        }
    }
    tracing::warn!(
        cgroup = %cgroup.path().display(),
        err = %failed,
        "cgroup left for the watchdog to remove"
    );
}
