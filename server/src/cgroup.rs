//! Cgroup v2 directories: where the unified hierarchy is mounted and which cgroup this
//! process runs in (`/proc/self/mountinfo`, `/proc/self/cgroup`), creating a child
//! cgroup, moving a forked child into one before `exec`, killing everything in a cgroup
//! and its descendants (`cgroup.kill`), telling whether anything still runs in one, and
//! removing it. Only file operations: the policy is in `containment`.

use std::fs;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// How long the killed processes of a cgroup may take to die before its directory is
/// given up on (by a process's teardown: then the watchdog removes it at server exit).
pub const EMPTY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// One cgroup v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
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
        Ok(Cgroup { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the child cgroup `name`.
    pub fn create_child(&self, name: &str) -> io::Result<Cgroup> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        Ok(Cgroup { dir })
    }

    /// Whether the kernel offers `cgroup.kill` (Linux 5.14 and later).
    pub fn can_kill(&self) -> bool {
        self.dir.join("cgroup.kill").exists()
    }

    /// Opens `cgroup.procs` for a forked child to [`join`] before `exec`.
    pub fn open_procs(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(OwnedFd::from(file))
    }

    /// SIGKILLs every process in this cgroup and its descendants, forks in flight included.
    pub fn kill(&self) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.kill"), "1")
    }

    /// Whether a live process is in this cgroup or a descendant (zombies do not count).
    pub fn is_populated(&self) -> io::Result<bool> {
        let events = fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(events.lines().any(|line| line == "populated 1"))
    }

    /// Removes this cgroup and its descendant cgroups, deepest first. Fails (`EBUSY`)
    /// while a process still runs in one of them.
    pub fn remove(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                Cgroup { dir: entry.path() }.remove()?;
            }
        }
        fs::remove_dir(&self.dir)
    }
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
}
