//! Turns a validated `process/start` request into a running child: its own cgroup (when
//! it has one) and session and process group, a parent-death signal, exact environment,
//! and pipes or a PTY. The child is left unreaped, watched through its [`Leader`].

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use tokio::io::{AsyncRead, AsyncWrite};

use super::leader::Leader;
use super::pty::{self, PtyMaster};
use crate::cgroup::{self, Cgroup};
use exec_protocol::Stream;

pub struct SpawnRequest<'a> {
    pub argv: &'a [String],
    pub arg0: Option<&'a str>,
    pub cwd: &'a std::path::Path,
    /// An open directory to start in instead of `cwd`: `process/start` always opens it
    /// (under `--fs-root` beneath the root), so a bad `cwd` is found before the spawn.
    pub cwd_dir: Option<std::os::fd::OwnedFd>,
    pub env: &'a BTreeMap<String, String>,
    pub tty: bool,
    pub pipe_stdin: bool,
}

/// The open-file limits (soft, hard) the server was started with, if it raised its own:
/// children get them back, since programs that use `select()` or close every descriptor
/// up to the soft limit expect the usual value.
static CHILD_OPEN_FILE_LIMITS: OnceLock<(libc::rlim_t, libc::rlim_t)> = OnceLock::new();

/// Raises the server's soft open-file limit to the hard limit (each process holds a few
/// descriptors, each connection one); children still start with the original limit.
pub fn raise_open_file_limit() -> nix::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        let _ = CHILD_OPEN_FILE_LIMITS.set((soft, hard));
    }
    Ok(())
}

pub type OutputReader = Box<dyn AsyncRead + Send + Unpin>;
pub type InputWriter = Box<dyn AsyncWrite + Send + Unpin>;

pub struct Spawned {
    pub leader: Leader,
    /// Process id of the child, which is also its process-group and session id.
    pub pid: i32,
    pub outputs: Vec<(Stream, OutputReader)>,
    pub stdin: Option<InputWriter>,
    pub pty: Option<PtyMaster>,
}

/// Spawns the child, inside `cgroup` if given. Must run on a long-lived runtime thread:
/// Linux delivers the parent-death signal when the *thread* that forked the child exits.
/// std's `Command` is used rather than tokio's, which would reap the child.
/// Why a spawn failed.
#[derive(Debug)]
pub enum SpawnFailure {
    /// What starting the program reported: not found, not executable, or a step of
    /// the child's own set-up between fork and exec.
    Program(io::Error),
    /// The server's set-up around it: the cgroup, a PTY, the pidfd.
    Setup(io::Error),
}

pub fn spawn(request: &SpawnRequest<'_>, cgroup: Option<&Cgroup>) -> Result<Spawned, SpawnFailure> {
    use SpawnFailure::Setup;
    let (program, args) = request
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "argv must not be empty"))
        .map_err(Setup)?;
    crate::sigchld::keep_children_for_us_to_reap();
    let mut command = Command::new(program);
    command.args(args).env_clear().envs(request.env);
    let cwd_fd = request.cwd_dir.as_ref().map(|dir| dir.as_raw_fd());
    if cwd_fd.is_none() {
        command.current_dir(request.cwd);
    }
    if let Some(arg0) = request.arg0 {
        command.arg0(arg0);
    }
    let tty = request.tty;
    let server_pid = std::process::id() as libc::pid_t;
    let open_file_limits = CHILD_OPEN_FILE_LIMITS
        .get()
        .map(|&(rlim_cur, rlim_max)| libc::rlimit { rlim_cur, rlim_max });
    // Opened before the fork: the child must only make async-signal-safe calls.
    let cgroup_procs = cgroup.map(Cgroup::open_procs).transpose().map_err(Setup)?;
    let cgroup_procs_fd = cgroup_procs.as_ref().map(|procs| procs.as_raw_fd());
    let pty_pair = if tty {
        Some(pty::open().map_err(Setup)?)
    } else {
        None
    };
    match &pty_pair {
        Some(pair) => {
            command
                .stdin(Stdio::from(pair.slave.try_clone().map_err(Setup)?))
                .stdout(Stdio::from(pair.slave.try_clone().map_err(Setup)?))
                .stderr(Stdio::from(pair.slave.try_clone().map_err(Setup)?));
        }
        None => {
            command
                .stdin(if request.pipe_stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    // SAFETY: the closure only makes async-signal-safe system calls (write, fchdir,
    // setsid, ioctl, prctl, getppid, setrlimit, sigaction) between fork and exec, and does not
    // allocate: the server is multi-threaded, so another thread may have held the
    // allocator's lock at the fork, and the child would deadlock on it. Errors are
    // therefore only `io::Error::last_os_error()` / `from_raw_os_error`, which carry an
    // errno and no heap data (std hands the child's errno back to `spawn`). `cwd_fd` and
    // `cgroup_procs_fd` outlive the spawn.
    unsafe {
        command.pre_exec(move || {
            // First, so that everything the child does (and forks) is inside its cgroup.
            if let Some(procs) = cgroup_procs_fd {
                cgroup::join(procs)?;
            }
            if let Some(fd) = cwd_fd {
                if libc::fchdir(fd) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The server may have died between fork and prctl; then nobody would signal us.
            // ESRCH ("no such process"): the parent is gone. Not `io::Error::other`, which
            // allocates (see the SAFETY note above).
            if libc::getppid() != server_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(limits) = &open_file_limits {
                if libc::setrlimit(libc::RLIMIT_NOFILE, limits) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            reset_ignored_signals();
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(SpawnFailure::Program)?;
    // The command holds copies of the PTY slave; EOF reaches the master once all are closed.
    drop(command);
    drop(cgroup_procs);
    let pid =
        i32::try_from(child.id()).map_err(|_| Setup(io::Error::other("child pid out of range")))?;
    match watch(&mut child, pid, pty_pair) {
        Ok(spawned) => Ok(spawned),
        Err(err) => {
            // Unreaped, so the group id is still this child's.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            Err(Setup(err))
        }
    }
}

/// Gives every signal its default action in the child, as a login session gets them.
/// `exec` resets caught signals but keeps ignored ones, so a server started from a
/// background job (where SIGINT and SIGQUIT are ignored) or under `nohup` would hand
/// that on, and `process/signal interrupt` would do nothing. Only `sigaction` (through
/// `signal`), which is async-signal-safe; the numbers it refuses (SIGKILL, SIGSTOP,
/// those past the last real-time signal) are skipped.
fn reset_ignored_signals() {
    for signal in 1..=64 {
        // SAFETY: SIG_DFL installs no handler code; called between fork and exec.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Opens the leader's pidfd and hands the child's pipes or PTY to tokio's reactor.
fn watch(child: &mut Child, pid: i32, pty_pair: Option<pty::PtyPair>) -> io::Result<Spawned> {
    let leader = Leader::open(pid)?;
    match pty_pair {
        Some(pair) => {
            drop(pair.slave);
            let master = pair.master;
            Ok(Spawned {
                leader,
                pid,
                outputs: vec![(Stream::Pty, Box::new(master.clone()))],
                stdin: Some(Box::new(master.clone())),
                pty: Some(master),
            })
        }
        None => {
            let mut outputs: Vec<(Stream, OutputReader)> = Vec::with_capacity(2);
            if let Some(stdout) = child.stdout.take() {
                let stdout = tokio::process::ChildStdout::from_std(stdout)?;
                outputs.push((Stream::Stdout, Box::new(stdout)));
            }
            if let Some(stderr) = child.stderr.take() {
                let stderr = tokio::process::ChildStderr::from_std(stderr)?;
                outputs.push((Stream::Stderr, Box::new(stderr)));
            }
            let stdin = match child.stdin.take() {
                Some(stdin) => {
                    Some(Box::new(tokio::process::ChildStdin::from_std(stdin)?) as InputWriter)
                }
                None => None,
            };
            Ok(Spawned {
                leader,
                pid,
                outputs,
                stdin,
                pty: None,
            })
        }
    }
}
