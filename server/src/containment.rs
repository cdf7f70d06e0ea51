//! What holds each process tree together so that it can be killed whole (docs/protocol.md
//! §6.1, §9), chosen once at start-up (`--containment`): where the cgroup v2 hierarchy
//! is writable, the server creates a cgroup inside its own and gives every
//! process a child cgroup in it, which catches descendants that left the process group
//! with `setsid()`; otherwise every process is contained by its process group only.
//! A few fresh cgroups are created ahead of need, off the request's path.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cgroup::{self, Cgroup, OpenCgroup};

/// The `--containment` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ContainmentMode {
    /// A cgroup per process where the cgroup v2 hierarchy is writable, else process groups
    #[default]
    Auto,
    /// A cgroup per process; refuse to start where that is impossible
    Cgroup,
    /// Process groups only (descendants that call setsid() escape)
    ProcessGroup,
}

/// How the processes of this server are contained. Embedders get process groups by
/// default; cgroups are cleaned up at exit by the orphan watchdog, which only the
/// binary starts.
#[derive(Clone, Default)]
pub enum Containment {
    #[default]
    ProcessGroup,
    Cgroup(Arc<ServerCgroup>),
}

/// A fresh cgroup for one process, with its directory open (to start the child in it)
/// and its `cgroup.procs` (for a child to join where that cannot be done).
pub struct ProcessCgroup {
    pub cgroup: Cgroup,
    pub dir: OwnedFd,
    pub procs: OwnedFd,
}

/// How many empty process cgroups are kept ready: creating one takes a `mkdir` in
/// cgroupfs (tens of microseconds), which a `process/start` should not wait for.
const SPARE_CGROUPS: usize = 2;

/// The server's cgroup directory, under which each process gets its own.
pub struct ServerCgroup {
    /// Held open: each process's cgroup is made, killed and removed from it by one name.
    cgroup: OpenCgroup,
    next_id: AtomicU64,
    /// Fresh, never used cgroups, already open (a used one is removed, never handed out again: its
    /// process could have changed its settings, frozen it, or made cgroups inside it).
    spares: Mutex<VecDeque<ProcessCgroup>>,
    refilling: AtomicBool,
}

impl Containment {
    /// Applies `mode`: `Auto` falls back to process groups (logging why) where cgroups
    /// cannot be used; `Cgroup` then fails with the reason.
    pub fn select(mode: ContainmentMode) -> Result<Containment, String> {
        if mode == ContainmentMode::ProcessGroup {
            return Ok(Containment::ProcessGroup);
        }
        match ServerCgroup::create() {
            Ok(server) => Ok(Containment::Cgroup(Arc::new(server))),
            Err(reason) if mode == ContainmentMode::Auto => {
                tracing::warn!(
                    "no cgroup containment ({reason}); processes are contained by their process group, which descendants that call setsid() escape"
                );
                Ok(Containment::ProcessGroup)
            }
            Err(reason) => Err(format!("--containment cgroup: {reason}")),
        }
    }

    /// The name `capabilities.process.containment` advertises.
    pub fn name(&self) -> &'static str {
        match self {
            Containment::ProcessGroup => "processGroup",
            Containment::Cgroup(_) => "cgroup",
        }
    }

    /// The cgroup that holds every process's cgroup, if processes get one.
    pub fn server_cgroup(&self) -> Option<&Cgroup> {
        match self {
            Containment::ProcessGroup => None,
            Containment::Cgroup(server) => Some(server.cgroup.cgroup()),
        }
    }

    /// A new, empty cgroup for one process (`None` with process groups): a spare if
    /// one is ready, else made now. Call [`Containment::replenish`] once the process
    /// has been spawned.
    pub fn process_cgroup(&self) -> io::Result<Option<ProcessCgroup>> {
        let Containment::Cgroup(server) = self else {
            return Ok(None);
        };
        match server.take_spare() {
            Some(cgroup) => Ok(Some(cgroup)),
            None => server.create_process_cgroup().map(Some),
        }
    }

    /// Makes spare cgroups up to [`SPARE_CGROUPS`] from a task of its own, which runs
    /// once the current task yields: after the spawn it follows, whose clone would
    /// otherwise contend with the `mkdir`s for the cgroup core's lock.
    pub fn replenish(&self) {
        if let Containment::Cgroup(server) = self {
            server.refill_later();
        }
    }
}

impl ServerCgroup {
    /// Creates `exec-server-PID-RANDOM` inside the server's own cgroup and checks that a
    /// child can be moved into it and that it can be killed.
    fn create() -> Result<ServerCgroup, String> {
        let own = Cgroup::current().map_err(|err| format!("cgroup v2: {err}"))?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("exec-server-{}-{}", std::process::id(), &suffix[..8]);
        let cgroup = own
            .create_child(&name)
            .map_err(|err| format!("cannot create a cgroup in {}: {err}", own.path().display()))?;
        let usable = if !cgroup.can_kill() {
            Err("the kernel has no cgroup.kill (Linux 5.14 or later needed)".to_owned())
        } else {
            probe_join(&cgroup).map_err(|err| {
                format!(
                    "cannot move a process into {}: {err}",
                    cgroup.path().display()
                )
            })
        };
        let opened = usable.and_then(|()| {
            cgroup
                .clone()
                .hold_open()
                .map_err(|err| format!("cannot open {}: {err}", cgroup.path().display()))
        });
        match opened {
            Ok(cgroup) => Ok(ServerCgroup {
                cgroup,
                next_id: AtomicU64::new(1),
                spares: Mutex::new(VecDeque::with_capacity(SPARE_CGROUPS)),
                refilling: AtomicBool::new(false),
            }),
            Err(reason) => {
                let _ = cgroup.remove();
                Err(reason)
            }
        }
    }

    fn create_process_cgroup(&self) -> io::Result<ProcessCgroup> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cgroup = self.cgroup.create_child(&format!("p{id}"))?;
        match cgroup
            .open_dir()
            .and_then(|dir| Ok((dir, cgroup.open_procs()?)))
        {
            Ok((dir, procs)) => Ok(ProcessCgroup { cgroup, dir, procs }),
            Err(err) => {
                let _ = cgroup.remove();
                Err(err)
            }
        }
    }

    /// The oldest spare, if any: a fixed order, which tests can follow.
    fn take_spare(&self) -> Option<ProcessCgroup> {
        self.lock_spares().pop_front()
    }

    fn lock_spares(&self) -> MutexGuard<'_, VecDeque<ProcessCgroup>> {
        self.spares
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Tops the spares up from a task of their own (one at a time). Spares left at exit
    /// are removed with the server's cgroup by the watchdog.
    fn refill_later(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let server = Arc::clone(self);
        runtime.spawn(async move {
            // Cleared however the task ends (even dropped unrun at shutdown).
            let refilling = ClearOnDrop(&server.refilling);
            tokio::task::yield_now().await;
            while server.lock_spares().len() < SPARE_CGROUPS {
                match server.create_process_cgroup() {
                    Ok(cgroup) => server.lock_spares().push_back(cgroup),
                    Err(err) => {
                        // Each start then makes its own, and reports the error if it persists.
                        tracing::debug!(%err, "cannot make a spare cgroup");
                        return;
                    }
                }
            }
            drop(refilling);
            // A start may have taken one after the last check and found us busy.
            if server.lock_spares().len() < SPARE_CGROUPS {
                server.refill_later();
            }
        });
    }
}

/// Stores `false` in its flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Forks a child that moves itself into `cgroup` and exits with the errno of the
/// attempt: the same step every process takes before `exec`.
fn probe_join(cgroup: &Cgroup) -> io::Result<()> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let procs = cgroup.open_procs()?;
    crate::sigchld::keep_children_for_us_to_reap();
    // SAFETY: the child only calls write(2) and _exit(2), which are async-signal-safe.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = match cgroup::join(procs.as_raw_fd()) {
                Ok(()) => 0,
                Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
            };
            // SAFETY: leaves the forked copy without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, errno) => Err(io::Error::from_raw_os_error(errno)),
            other => Err(io::Error::other(format!("probe ended with {other:?}"))),
        },
    }
}
