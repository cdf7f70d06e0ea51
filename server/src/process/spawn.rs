//! Turns a validated `process/start` request into a running child: its own cgroup (when
//! it has one) and session and process group, a parent-death signal, exact environment,
//! and pipes or a PTY. The child is left unreaped, watched through its [`Leader`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use tokio::io::AsyncWrite;

use super::clone_exec::{self, CgroupFds, ChildPlan};
use super::leader::Leader;
use super::pty::{self, PtyMaster};
use super::reader::OutputReader;
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

pub type InputWriter = Box<dyn AsyncWrite + Send + Unpin>;

pub struct Spawned {
    pub leader: Leader,
    /// Process id of the child, which is also its process-group and session id.
    pub pid: i32,
    pub outputs: Vec<(Stream, OutputReader)>,
    pub stdin: Option<InputWriter>,
    pub pty: Option<PtyMaster>,
}

/// Why a spawn failed.
#[derive(Debug)]
pub enum SpawnFailure {
    /// What starting the program reported: not found, not executable, or a step of
    /// the child's own set-up between fork and exec.
    Program(io::Error),
    /// The server's set-up around it: the cgroup, a PTY, the pidfd.
    Setup(io::Error),
}

/// Spawns the child, inside the cgroup given, through [`clone_exec`] (a vfork-style
/// clone: the multi-threaded server is not forked). Must run on a long-lived runtime
/// thread: Linux delivers the parent-death signal when the *thread* that cloned the
/// child exits. The child is left unreaped (tokio's `Command` would reap it).
pub fn spawn(
    request: &SpawnRequest<'_>,
    cgroup: Option<CgroupFds>,
) -> Result<Spawned, SpawnFailure> {
    use SpawnFailure::Setup;
    let (program, args) = request
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "argv must not be empty"))
        .map_err(Setup)?;
    crate::sigchld::keep_children_for_us_to_reap();
    let program_error = |what: &str| {
        SpawnFailure::Program(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nul byte found in provided data ({what})"),
        ))
    };
    let c_string = |text: &str, what: &str| CString::new(text).map_err(|_| program_error(what));
    let mut argv = Vec::with_capacity(request.argv.len());
    argv.push(c_string(request.arg0.unwrap_or(program), "argv")?);
    for arg in args {
        argv.push(c_string(arg, "argv")?);
    }
    let envp = request
        .env
        .iter()
        .map(|(key, value)| c_string(&format!("{key}={value}"), "env"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = candidates(program, request.env.get("PATH").map(String::as_str))
        .into_iter()
        .map(|path| c_string(&path, "program"))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd_fd = request.cwd_dir.as_ref().map(|dir| dir.as_raw_fd());
    let cwd_path = match cwd_fd {
        Some(_) => None,
        None => Some(
            CString::new(request.cwd.as_os_str().as_bytes()).map_err(|_| program_error("cwd"))?,
        ),
    };
    let tty = request.tty;
    let open_file_limits = CHILD_OPEN_FILE_LIMITS
        .get()
        .map(|&(rlim_cur, rlim_max)| libc::rlimit { rlim_cur, rlim_max });
    // Opened before the clone: the child only makes async-signal-safe calls.
    let pty_pair = if tty {
        Some(pty::open().map_err(Setup)?)
    } else {
        None
    };
    // The parent's ends and the child's ends, all close-on-exec: a child spawned by
    // another thread meanwhile inherits none of them.
    let mut ours = Pipes::default();
    let stdio: [OwnedFd; 3];
    match &pty_pair {
        Some(pair) => {
            let slave = || pair.slave.try_clone().map_err(Setup);
            stdio = [slave()?, slave()?, slave()?];
        }
        None => {
            let stdin = if request.pipe_stdin {
                let (read, write) = pipe().map_err(Setup)?;
                ours.stdin = Some(write);
                read
            } else {
                OwnedFd::from(std::fs::File::open("/dev/null").map_err(Setup)?)
            };
            let (stdout_read, stdout_write) = pipe().map_err(Setup)?;
            let (stderr_read, stderr_write) = pipe().map_err(Setup)?;
            ours.stdout = Some(stdout_read);
            ours.stderr = Some(stderr_read);
            stdio = [stdin, stdout_write, stderr_write];
        }
    }
    let plan = ChildPlan {
        candidates,
        argv,
        envp,
        stdio: [
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ],
        cgroup,
        cwd_fd,
        cwd_path,
        controlling_tty: tty,
        open_file_limits,
    };
    let pid = clone_exec::spawn(&plan).map_err(|failure| match failure {
        clone_exec::Failure::Setup(err) => Setup(err),
        clone_exec::Failure::Child(err) => SpawnFailure::Program(err),
    })?;
    // The child's ends (PTY slave copies included): EOF reaches us once the child's close.
    drop(stdio);
    match watch(ours, pid, pty_pair) {
        Ok(spawned) => Ok(spawned),
        Err(err) => {
            // Unreaped, so the group id is still this child's.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(Setup(err))
        }
    }
}

/// Where execvp would look for `program`: itself if it names a path, else each entry
/// of the child's `PATH` (glibc's default `/bin:/usr/bin` without one; an empty entry
/// is the working directory). An empty name is found nowhere.
fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
    if program.is_empty() {
        return Vec::new();
    }
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.unwrap_or("/bin:/usr/bin")
        .split(':')
        .map(|dir| match dir {
            "" => program.to_owned(),
            dir => format!("{}/{program}", dir.trim_end_matches('/')),
        })
        .collect()
}

/// A close-on-exec pipe (std's): (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = io::pipe()?;
    Ok((read.into(), write.into()))
}

/// The server's ends of the child's pipes.
#[derive(Default)]
struct Pipes {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// Opens the leader's pidfd and hands the child's pipes or PTY to tokio's reactor.
fn watch(pipes: Pipes, pid: i32, pty_pair: Option<pty::PtyPair>) -> io::Result<Spawned> {
    let leader = Leader::open(pid)?;
    match pty_pair {
        Some(pair) => {
            drop(pair.slave);
            let master = pair.master;
            Ok(Spawned {
                leader,
                pid,
                outputs: vec![(Stream::Pty, OutputReader::Pty(master.clone()))],
                stdin: Some(Box::new(master.clone())),
                pty: Some(master),
            })
        }
        None => {
            let mut outputs: Vec<(Stream, OutputReader)> = Vec::with_capacity(2);
            if let Some(stdout) = pipes.stdout {
                outputs.push((Stream::Stdout, OutputReader::pipe(stdout)?));
            }
            if let Some(stderr) = pipes.stderr {
                outputs.push((Stream::Stderr, OutputReader::pipe(stderr)?));
            }
            let stdin = match pipes.stdin {
                Some(stdin) => Some(
                    Box::new(tokio::process::ChildStdin::from_std(stdin.into())?) as InputWriter,
                ),
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

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn a_name_is_looked_up_along_path_as_execvp_does() {
        assert_eq!(
            candidates("ls", Some("/usr/local/bin:/bin/::.")),
            ["/usr/local/bin/ls", "/bin/ls", "ls", "./ls"]
        );
        // No PATH in the child's environment: glibc's default.
        assert_eq!(candidates("ls", None), ["/bin/ls", "/usr/bin/ls"]);
    }

    #[test]
    fn a_path_is_taken_as_it_is_and_an_empty_name_is_found_nowhere() {
        assert_eq!(candidates("./run.sh", Some("/bin")), ["./run.sh"]);
        assert_eq!(candidates("/bin/true", Some("/usr/bin")), ["/bin/true"]);
        assert!(candidates("", Some("/bin")).is_empty());
    }
}
