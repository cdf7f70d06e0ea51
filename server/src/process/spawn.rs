//! Turns a validated `process/start` request into a running child: its own session and
//! process group, a parent-death signal, exact environment, and pipes or a PTY.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

use super::pty::{self, PtyMaster};
use crate::protocol::Stream;

pub struct SpawnRequest<'a> {
    pub argv: &'a [String],
    pub arg0: Option<&'a str>,
    pub cwd: &'a str,
    /// An open directory to start in instead of `cwd` (used under `--fs-root`).
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
    pub child: Child,
    /// Process id of the child, which is also its process-group and session id.
    pub pid: i32,
    pub outputs: Vec<(Stream, OutputReader)>,
    pub stdin: Option<InputWriter>,
    pub pty: Option<PtyMaster>,
}

/// Spawns the child. Must run on a long-lived thread: Linux delivers the parent-death
/// signal when the *thread* that forked the child exits.
pub fn spawn(request: &SpawnRequest<'_>) -> io::Result<Spawned> {
    let (program, args) = request
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "argv must not be empty"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(request.env)
        .kill_on_drop(false);
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
    let pty_pair = if tty { Some(pty::open()?) } else { None };
    match &pty_pair {
        Some(pair) => {
            command
                .stdin(Stdio::from(pair.slave.try_clone()?))
                .stdout(Stdio::from(pair.slave.try_clone()?))
                .stderr(Stdio::from(pair.slave.try_clone()?));
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
    // SAFETY: the closure only makes async-signal-safe system calls (fchdir, setsid,
    // ioctl, prctl, getppid, setrlimit) between fork and exec; `cwd_fd` outlives the spawn.
    unsafe {
        command.pre_exec(move || {
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
            if libc::getppid() != server_pid {
                return Err(io::Error::other("exec-server exited during spawn"));
            }
            if let Some(limits) = &open_file_limits {
                if libc::setrlimit(libc::RLIMIT_NOFILE, limits) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    match pty_pair {
        Some(pair) => {
            // Dropping our slave copy (inside `command` and `pair`) lets EOF reach the master.
            drop(command);
            drop(pair.slave);
            let master = pair.master;
            Ok(Spawned {
                child,
                pid,
                outputs: vec![(Stream::Pty, Box::new(master.clone()))],
                stdin: Some(Box::new(master.clone())),
                pty: Some(master),
            })
        }
        None => {
            let mut outputs: Vec<(Stream, OutputReader)> = Vec::with_capacity(2);
            if let Some(stdout) = child.stdout.take() {
                outputs.push((Stream::Stdout, Box::new(stdout)));
            }
            if let Some(stderr) = child.stderr.take() {
                outputs.push((Stream::Stderr, Box::new(stderr)));
            }
            let stdin = child
                .stdin
                .take()
                .map(|stdin| Box::new(stdin) as InputWriter);
            Ok(Spawned {
                child,
                pid,
                outputs,
                stdin,
                pty: None,
            })
        }
    }
}
