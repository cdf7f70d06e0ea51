//! The leader of a process tree (the child the server spawned), watched through a pidfd:
//! its exit status is read *without reaping it* (`waitid(…, WEXITED | WNOWAIT)`), so
//! its pid, which is also the tree's process-group id, stays taken until [`Leader::reap`].
//! Also keeps an inherited, ignored SIGCHLD from making the kernel reap children for us.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::wait::WaitPidFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How the leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

pub struct Leader {
    pidfd: AsyncFd<OwnedFd>,
}

impl Leader {
    /// Opens a pidfd on `pid`, a child of ours that nobody has reaped yet (so the pid
    /// cannot name anyone else). Needs a tokio runtime.
    pub fn open(pid: i32) -> io::Result<Leader> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own (it is close-on-exec).
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
        Ok(Leader { pidfd })
    }

    /// Waits until the leader has exited and returns how, leaving it a zombie.
    pub async fn exited(&self) -> io::Result<Exit> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            match self.wait(WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG)? {
                Some(exit) => return Ok(exit),
                None => ready.clear_ready(),
            }
        }
    }

    /// Reaps the leader, which must have exited: from here on its pid may be reused.
    pub fn reap(&self) -> io::Result<()> {
        self.wait(WaitPidFlag::WNOHANG).map(drop)
    }

    fn wait(&self, flags: WaitPidFlag) -> io::Result<Option<Exit>> {
        // SAFETY: a zeroed siginfo_t is a valid value; waitid(2) fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let pidfd = self.pidfd.get_ref().as_raw_fd() as libc::id_t;
        loop {
            // SAFETY: waitid(2) on our pidfd writing into `info`, which outlives the call.
            let result = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    pidfd,
                    &mut info,
                    (WaitPidFlag::WEXITED | flags).bits(),
                )
            };
            if result == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        // SAFETY: waitid filled `info` for a child (si_pid is 0 if it has not exited).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        }))
    }
}
