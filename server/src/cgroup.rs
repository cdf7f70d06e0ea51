//! Cgroup v2 directories: where the unified hierarchy is mounted and which cgroup this
//! process runs in (`/proc/self/mountinfo`, `/proc/self/cgroup`), creating a child
//! cgroup, moving a forked child into one before `exec`, killing everything in a cgroup
//! and its descendants (`cgroup.kill`), telling whether anything still runs in one (or
//! waiting until nothing does), and removing it. Only file operations: the policy is in
//! `containment`.
//!
//! A cgroup held open ([`OpenCgroup`]) reaches its children from its directory:
//! opening `pN/cgroup.kill` there looks up two names, where the whole path from `/`
//! crosses a mount and takes a lookup and a permission check per component, which was
//! most of the open's cost in a burst of terminates.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// How long the killed processes of a cgroup may take to die before its directory is
/// given up on (by a process's teardown: then the watchdog removes it at server exit).
pub const EMPTY_DEADLINE: Duration = Duration::from_secs(10);

/// One cgroup v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
    /// For a child made by [`OpenCgroup::create_child`]: where its files are opened from.
    parent: Option<Parent>,
}

/// A held-open parent's directory and a child's name in it.
#[derive(Debug, Clone)]
struct Parent {
    dir: Arc<OwnedFd>,
    name: String,
}

/// A cgroup whose directory is held open, for making children that are reached from it.
#[derive(Debug, Clone)]
pub struct OpenCgroup {
    cgroup: Cgroup,
    dir: Arc<OwnedFd>,
}

impl OpenCgroup {
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Creates the child cgroup `name` (a single name, no `/`).
    pub fn create_child(&self, name: &str) -> io::Result<Cgroup> {
        // As `fs::create_dir`: everything the umask allows.
        let mode = Mode::S_IRWXU | Mode::S_IRWXG | Mode::S_IRWXO;
        nix::sys::stat::mkdirat(&*self.dir, name, mode)?;
        Ok(Cgroup {
            dir: self.cgroup.dir.join(name),
            parent: Some(Parent {
                dir: Arc::clone(&self.dir),
                name: name.to_owned(),
            }),
        })
    }
}

impl Cgroup {
    /// The cgroup the calling process runs in.
    pub fn current() -> io::Result<Cgroup> {
        let unavailable = |why: &str| io::Error::new(io::ErrorKind::NotFound, why.to_owned());
        let membership = fs::read_to_string("/proc/self/cgroup")?;
        let path = membership
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .ok_or_else(|| unavailable("this process is in no cgroup v2 hierarchy"))?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let dir = mountinfo
            .lines()
            .filter_map(cgroup2_mount)
            .find_map(|(root, mount_point)| {
                let inside = Path::new(path).strip_prefix(&root).ok()?;
                Some(match inside.as_os_str().is_empty() {
                    true => mount_point,
                    false => mount_point.join(inside),
                })
            })
            .ok_or_else(|| unavailable("no cgroup v2 hierarchy is mounted here"))?;
        Ok(Cgroup { dir, parent: None })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the child cgroup `name`.
    pub fn create_child(&self, name: &str) -> io::Result<Cgroup> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        Ok(Cgroup { dir, parent: None })
    }

    /// Opens this cgroup's directory, to make children that are reached from it.
    pub fn hold_open(self) -> io::Result<OpenCgroup> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(&self.dir, flags, Mode::empty())?;
        Ok(OpenCgroup {
            cgroup: self,
            dir: Arc::new(dir),
        })
    }

    /// Opens the interface file `file` of this cgroup (close-on-exec).
    fn open_file(&self, file: &str, flags: OFlag) -> io::Result<fs::File> {
        let flags = flags | OFlag::O_CLOEXEC;
        let fd = match &self.parent {
            Some(parent) => nix::fcntl::openat(
                &*parent.dir,
                format!("{}/{file}", parent.name).as_str(),
                flags,
                Mode::empty(),
            )?,
            None => nix::fcntl::open(&self.dir.join(file), flags, Mode::empty())?,
        };
        Ok(fs::File::from(fd))
    }

    /// Whether the kernel offers `cgroup.kill` (Linux 5.14 and later).
    pub fn can_kill(&self) -> bool {
        self.dir.join("cgroup.kill").exists()
    }

    /// Opens the directory itself, for `clone3`'s `CLONE_INTO_CGROUP`.
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)?;
        Ok(OwnedFd::from(dir))
    }

    /// Opens `cgroup.procs` for a forked child to [`join`] before `exec`.
    pub fn open_procs(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(
            self.open_file("cgroup.procs", OFlag::O_WRONLY)?,
        ))
    }

    /// SIGKILLs every process in this cgroup and its descendants, forks in flight included.
    pub fn kill(&self) -> io::Result<()> {
        use std::io::Write as _;
        self.open_file("cgroup.kill", OFlag::O_WRONLY)?
            .write_all(b"1")
    }

    /// Whether a live process is in this cgroup or a descendant (zombies do not count).
    pub fn is_populated(&self) -> io::Result<bool> {
        let mut events = String::new();
        self.open_file("cgroup.events", OFlag::O_RDONLY)?
            .read_to_string(&mut events)?;
        Ok(populated(&events))
    }

    /// Waits until no live process is left in this cgroup or a descendant, or until
    /// `deadline`; whether it emptied. Blocks the calling thread (for the watchdog, not
    /// for the runtime): it sleeps in poll(2) on `cgroup.events`, which the kernel flags
    /// when `populated` changes, so it wakes as soon as the last process is gone.
    pub fn wait_empty(&self, deadline: Instant) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut events = fs::File::open(self.dir.join("cgroup.events"))?;
        let mut text = String::new();
        loop {
            // Reading re-arms the notification: poll then waits for the next change.
            text.clear();
            events.seek(SeekFrom::Start(0))?;
            events.read_to_string(&mut text)?;
            if !populated(&text) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            // Each wait is short, so a missed notification costs a re-read, not the deadline.
            let millis = left.min(Duration::from_millis(100)).as_millis();
            let timeout = PollTimeout::from(u16::try_from(millis).unwrap_or(100).max(1));
            let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLPRI)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Removes this cgroup and its descendant cgroups, deepest first. Fails (`EBUSY`)
    /// while a process still runs in one of them. A cgroup that someone else removed
    /// meanwhile counts as removed: stopping at it would leave its parent behind.
    pub fn remove(&self) -> io::Result<()> {
        // A process's cgroup seldom has children: one rmdir, without reading the
        // directory (a cgroupfs readdir lists every interface file, and takes the same
        // kernfs lock as every kill and rmdir). Any child cgroup makes it fail `EBUSY`.
        let removed = match &self.parent {
            Some(parent) => nix::unistd::unlinkat(
                &*parent.dir,
                parent.name.as_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            )
            .map_err(io::Error::from),
            None => fs::remove_dir(&self.dir),
        };
        match removed {
            // Still populated (its killed processes dying): busy until they are gone,
            // which the directory would not tell.
            Err(err) if is_busy(&err) && matches!(self.is_populated(), Ok(true)) => {
                return Err(err)
            }
            Err(err) if is_busy(&err) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            result => return result,
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                Cgroup {
                    dir: entry.path(),
                    parent: None,
                }
                .remove()?;
            }
        }
        match fs::remove_dir(&self.dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }
}

/// Whether `err` is what rmdir(2) of a cgroup gives while a process runs in it or it has
/// child cgroups.
pub fn is_busy(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY))
}

/// Whether the text of a `cgroup.events` says a live process is in the cgroup.
fn populated(events: &str) -> bool {
    events.lines().any(|line| line == "populated 1")
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `procs`.
/// Makes only async-signal-safe calls, so a forked child may call it before `exec`.
pub fn join(procs: RawFd) -> io::Result<()> {
    // SAFETY: write(2) from a valid buffer of one byte.
    if unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) } == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The root (inside the hierarchy) and mount point of a cgroup2 line of mountinfo.
fn cgroup2_mount(line: &str) -> Option<(PathBuf, PathBuf)> {
    let (mount, filesystem) = line.split_once(" - ")?;
    if filesystem.split(' ').next() != Some("cgroup2") {
        return None;
    }
    let mut fields = mount.split(' ').skip(3);
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    Some((PathBuf::from(root), PathBuf::from(mount_point)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash…).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_the_cgroup2_root_and_mount_point() {
        let hybrid =
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        let namespaced = r"7 6 0:9 /ns\040a /mnt/my\040cg rw - cgroup2 none rw,nsdelegate";
        assert_eq!(
            cgroup2_mount(namespaced),
            Some(("/ns a".into(), "/mnt/my cg".into()))
        );
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
    }

    /// A cgroup of this test inside ours, killed and removed on drop; `None` (the test
    /// prints why and passes) where cgroups cannot be created and killed here.
    struct Scratch(Cgroup);

    impl Scratch {
        fn new(test: &str) -> Option<Scratch> {
            let created = Cgroup::current().and_then(|own| {
                own.create_child(&format!("exec-server-unit-{test}-{}", std::process::id()))
            });
            match created {
                Ok(cgroup) if cgroup.can_kill() => Some(Scratch(cgroup)),
                Ok(cgroup) => {
                    let _ = cgroup.remove();
                    eprintln!("SKIPPED {test}: the kernel has no cgroup.kill");
                    None
                }
                Err(err) => {
                    eprintln!("SKIPPED {test}: cannot create a cgroup: {err}");
                    None
                }
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait_empty(Instant::now() + Duration::from_secs(5));
            let _ = self.0.remove();
        }
    }

    #[test]
    fn a_cgroup_removed_meanwhile_counts_as_removed() {
        let Some(scratch) = Scratch::new("removed-meanwhile") else {
            return;
        };
        let child = scratch.0.create_child("p1").expect("child cgroup");
        // What the server's own teardown may do while the watchdog removes the tree.
        fs::remove_dir(child.path()).expect("rmdir of the child");
        child.remove().expect("a child already gone is removed");
        scratch
            .0
            .remove()
            .expect("its parent is removed all the same");
        assert!(!scratch.0.path().exists());
        scratch
            .0
            .remove()
            .expect("removing it again changes nothing");
    }

    #[test]
    fn wait_empty_returns_once_the_killed_processes_are_gone() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let Some(scratch) = Scratch::new("wait-empty") else {
            return;
        };
        let tree = scratch.0.create_child("p1").expect("child cgroup");
        let procs = tree.open_procs().expect("cgroup.procs");
        let procs_fd = procs.as_raw_fd();
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "setsid sleep 1000 & exec sleep 1000"]);
        // SAFETY: `join` makes only async-signal-safe calls; `procs` outlives the spawn.
        unsafe { command.pre_exec(move || join(procs_fd)) };
        let mut child = command.spawn().expect("spawn sh");
        drop(procs);
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(!scratch.0.wait_empty(soon).expect("wait"), "sleeps run");
        scratch.0.kill().expect("cgroup.kill");
        let started = Instant::now();
        let emptied = scratch.0.wait_empty(started + Duration::from_secs(5));
        assert!(emptied.expect("wait"), "empty within 5 s of the kill");
        // The leader is still our unreaped child: a zombie does not keep it busy.
        scratch.0.remove().expect("an empty cgroup is removed");
        let _ = child.wait();
    }
}
