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

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;

use super::leader::Leader;
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
        }
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
    /// Closes the leader's pidfd.
    pub async fn reap_when_done(&self, leader: Leader) {
        if !self.is_empty().await {
            let mut killed = self.killed.subscribe();
            // The sender lives in `self`, so this only returns once the tree is killed.
            let _ = killed.wait_for(|killed| *killed).await;
        }
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
        if let Some(cgroup) = &self.cgroup {
            remove_once_empty(cgroup).await;
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

/// Removes `cgroup` once the processes it killed are gone (they take a moment to die).
async fn remove_once_empty(cgroup: &Cgroup) {
    // Past this the cgroup is left to the watchdog, which removes the server's cgroups
    // when the server exits.
    let deadline = Instant::now() + crate::cgroup::EMPTY_DEADLINE;
    let mut pause = Duration::from_millis(1);
    while matches!(cgroup.is_populated(), Ok(true)) && Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    if let Err(err) = cgroup.remove() {
        tracing::warn!(cgroup = %cgroup.path().display(), %err, "cgroup left for the watchdog to remove");
    }
}
