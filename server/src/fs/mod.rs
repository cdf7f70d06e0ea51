//! File-system access for the `fs/*` methods and process working directories:
//! lexical path normalisation and the optional `--fs-root` confinement. Errors are
//! `io::Error`s (and `CopyError`, `RelativePath`); `handlers` maps them to JSON-RPC
//! codes. Without a root, paths go to `std::fs`; with one,
//! every access is resolved by `cap-std` beneath the root directory handle, which
//! refuses `..` and symlink escapes in any component without check-then-use races.
//! Trees are walked by `walk`, from directory handle to directory handle.

mod bfs;
mod copy;
mod walk;

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use cap_std::fs::Dir;

pub use bfs::{walk as walk_tree, FoundKind, WalkLimits};
pub use copy::{copy, CopyError};

use crate::faults::{self, Fault};

/// Files larger than this are refused by `fs/readFile`.
pub const MAX_READ_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// How the server reaches the file system.
pub enum FileSystem {
    Unconfined,
    /// Every path must resolve beneath `root` (already canonical).
    Confined {
        root: PathBuf,
        dir: Dir,
    },
}

/// What the fs methods need to know about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    /// FIFOs, sockets and devices: never copied.
    Special,
}

#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub size: u64,
    /// Device and inode: two paths name the same file when these are equal.
    pub identity: (u64, u64),
}

fn millis(time: io::Result<SystemTime>) -> u64 {
    time.ok()
        .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_millis() as u64)
}

fn kind(is_symlink: bool, is_dir: bool, is_file: bool) -> Kind {
    match (is_symlink, is_dir, is_file) {
        (true, _, _) => Kind::Symlink,
        (_, true, _) => Kind::Directory,
        (_, _, true) => Kind::File,
        _ => Kind::Special,
    }
}

impl From<std::fs::Metadata> for Meta {
    fn from(meta: std::fs::Metadata) -> Self {
        let file_type = meta.file_type();
        Meta {
            kind: kind(
                file_type.is_symlink(),
                file_type.is_dir(),
                file_type.is_file(),
            ),
            created_ms: millis(meta.created()),
            modified_ms: millis(meta.modified()),
            size: meta.len(),
            identity: (
                std::os::unix::fs::MetadataExt::dev(&meta),
                std::os::unix::fs::MetadataExt::ino(&meta),
            ),
        }
    }
}

impl From<cap_std::fs::Metadata> for Meta {
    fn from(meta: cap_std::fs::Metadata) -> Self {
        let file_type = meta.file_type();
        Meta {
            kind: kind(
                file_type.is_symlink(),
                file_type.is_dir(),
                file_type.is_file(),
            ),
            created_ms: millis(meta.created().map(|time| time.into_std())),
            modified_ms: millis(meta.modified().map(|time| time.into_std())),
            size: meta.len(),
            identity: (
                cap_std::fs::MetadataExt::dev(&meta),
                cap_std::fs::MetadataExt::ino(&meta),
            ),
        }
    }
}

/// Keeps `file` if it is a regular file (then clears O_NONBLOCK, which only mattered for
/// the open); a directory is EISDIR, anything else (FIFO, socket, device) invalid input.
fn regular(file: std::fs::File, path: &Path) -> io::Result<std::fs::File> {
    let meta = file.metadata()?;
    if meta.is_dir() {
        // What read(2) would report, so it maps like any other OS error.
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    Ok(file)
}

/// Normalises an absolute path lexically (`.` dropped, `..` pops, never above `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

/// Whether an operation follows symbolic links in its path (`followSymlinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Today's behaviour (`followSymlinks` absent or `true`).
    Links,
    /// `followSymlinks: false`: a path with a symbolic link anywhere is refused.
    NoLinks,
}

impl Follow {
    /// `followSymlinks` as sent: absent follows.
    pub fn from_param(follow_symlinks: Option<bool>) -> Follow {
        match follow_symlinks {
            Some(false) => Follow::NoLinks,
            None | Some(true) => Follow::Links,
        }
    }

    fn open_flags(self) -> libc::c_int {
        match self {
            Follow::Links => 0,
            Follow::NoLinks => libc::O_NOFOLLOW,
        }
    }

    fn cap_follow(self) -> cap_fs_ext::FollowSymlinks {
        match self {
            Follow::Links => cap_fs_ext::FollowSymlinks::Yes,
            Follow::NoLinks => cap_fs_ext::FollowSymlinks::No,
        }
    }

    /// `O_NOFOLLOW` on a final link fails with ELOOP: that is a link in the path.
    fn map_open_error<T>(self, opened: io::Result<T>) -> io::Result<T> {
        match opened {
            Err(err) if self == Follow::NoLinks && err.raw_os_error() == Some(libc::ELOOP) => {
                Err(symlink_in_path())
            }
            other => other,
        }
    }
}

/// A path that contains a symbolic link where none may be: -32600, as upstream answers.
pub fn symlink_in_path() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "path contains a symbolic link")
}

/// A path that must be absolute was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: path must be absolute, got {path:?}")]
pub struct RelativePath {
    pub field: &'static str,
    pub path: String,
}

impl FileSystem {
    /// Confines every access to `root`, which must be an existing directory.
    pub fn confined(root: &Path) -> io::Result<FileSystem> {
        let root = std::fs::canonicalize(root)?;
        // Negative control: a root that confines nothing (still advertised as a root).
        let root = match faults::active(Fault::FsEscapeRoot) {
            true => PathBuf::from("/"),
            false => root,
        };
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        Ok(FileSystem::Confined { root, dir })
    }

    pub fn root(&self) -> Option<&Path> {
        match self {
            FileSystem::Unconfined => None,
            FileSystem::Confined { root, .. } => Some(root),
        }
    }

    /// The path relative to the root handle, or an error if it lies outside the root.
    fn beneath<'a>(root: &Path, path: &'a Path) -> io::Result<&'a Path> {
        match path.strip_prefix(root) {
            Ok(relative) if relative.as_os_str().is_empty() => Ok(Path::new(".")),
            Ok(relative) => Ok(relative),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is outside the fs root {}",
                    path.display(),
                    root.display()
                ),
            )),
        }
    }

    pub fn metadata(&self, path: &Path) -> io::Result<Meta> {
        match self {
            FileSystem::Unconfined => std::fs::metadata(path).map(Meta::from),
            FileSystem::Confined { root, dir } => {
                dir.metadata(Self::beneath(root, path)?).map(Meta::from)
            }
        }
    }

    pub fn symlink_metadata(&self, path: &Path) -> io::Result<Meta> {
        match self {
            FileSystem::Unconfined => std::fs::symlink_metadata(path).map(Meta::from),
            FileSystem::Confined { root, dir } => dir
                .symlink_metadata(Self::beneath(root, path)?)
                .map(Meta::from),
        }
    }

    /// Opens a regular file for reading. The open itself never blocks (a FIFO would wait
    /// for a writer forever on a thread nothing can cancel), and anything that is not a
    /// regular file — FIFOs, sockets, devices such as `/dev/zero` — is refused.
    pub fn open_read(&self, path: &Path) -> io::Result<std::fs::File> {
        self.open_read_with(path, Follow::Links)
    }

    /// [`FileSystem::open_read`]; with [`Follow::NoLinks`], a path that contains a
    /// symbolic link is refused (see [`FileSystem::refuse_symlinks`]).
    pub fn open_read_with(&self, path: &Path, follow: Follow) -> io::Result<std::fs::File> {
        self.refuse_symlinks_if(path, follow)?;
        let file = match self {
            FileSystem::Unconfined => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | follow.open_flags())
                    .open(path)
            }
            FileSystem::Confined { root, dir } => {
                use cap_fs_ext::OpenOptionsFollowExt;
                use cap_std::fs::OpenOptionsExt;
                let mut options = cap_std::fs::OpenOptions::new();
                options
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .follow(follow.cap_follow());
                dir.open_with(Self::beneath(root, path)?, &options)
                    .map(|file| file.into_std())
            }
        };
        regular(follow.map_open_error(file)?, path)
    }

    /// Creates or truncates a regular file for writing; never blocks on a FIFO.
    pub fn create(&self, path: &Path) -> io::Result<std::fs::File> {
        self.create_with(path, Follow::Links)
    }

    /// [`FileSystem::create`]; with [`Follow::NoLinks`], a path that contains a
    /// symbolic link is refused (see [`FileSystem::refuse_symlinks`]).
    pub fn create_with(&self, path: &Path, follow: Follow) -> io::Result<std::fs::File> {
        self.refuse_symlinks_if(path, follow)?;
        let file = match self {
            FileSystem::Unconfined => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_NONBLOCK | follow.open_flags())
                    .open(path)
            }
            FileSystem::Confined { root, dir } => {
                use cap_fs_ext::OpenOptionsFollowExt;
                use cap_std::fs::OpenOptionsExt;
                let mut options = cap_std::fs::OpenOptions::new();
                options
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .follow(follow.cap_follow());
                dir.open_with(Self::beneath(root, path)?, &options)
                    .map(|file| file.into_std())
            }
        };
        regular(follow.map_open_error(file)?, path)
    }

    /// Refuses `path` (`followSymlinks: false`, docs/protocol.md §0) if any existing
    /// component of it — beneath the root, under `--fs-root` — is a symbolic link.
    ///
    /// Checked component by component with lstat, then the operation runs on the path:
    /// a directory component swapped for a link between the check and the use is not
    /// noticed (the final component of `fs/readFile` and `fs/writeFile` is also opened
    /// with `O_NOFOLLOW`, so a link there is refused without a race). Under `--fs-root`
    /// such a swap still cannot leave the root.
    pub fn refuse_symlinks(&self, path: &Path) -> io::Result<()> {
        let start = match self {
            FileSystem::Unconfined => PathBuf::from("/"),
            FileSystem::Confined { root, .. } => root.clone(),
        };
        // Outside the root: the operation itself refuses it.
        let Ok(rest) = path.strip_prefix(&start) else {
            return Ok(());
        };
        let mut current = start;
        for component in rest.components() {
            current.push(component);
            match self.symlink_metadata(&current) {
                Ok(meta) if meta.kind == Kind::Symlink => return Err(symlink_in_path()),
                Ok(_) => {}
                // Missing (or not a directory): nothing further exists to be a link, and
                // the operation reports the problem in its own words.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    pub fn refuse_symlinks_if(&self, path: &Path, follow: Follow) -> io::Result<()> {
        match follow {
            Follow::Links => Ok(()),
            Follow::NoLinks => self.refuse_symlinks(path),
        }
    }

    pub fn create_dir(&self, path: &Path, recursive: bool) -> io::Result<()> {
        match (self, recursive) {
            (FileSystem::Unconfined, true) => std::fs::create_dir_all(path),
            (FileSystem::Unconfined, false) => std::fs::create_dir(path),
            (FileSystem::Confined { root, dir }, true) => {
                dir.create_dir_all(Self::beneath(root, path)?)
            }
            (FileSystem::Confined { root, dir }, false) => {
                dir.create_dir(Self::beneath(root, path)?)
            }
        }
    }

    /// Entry names of a directory, in no particular order.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        match self {
            FileSystem::Unconfined => std::fs::read_dir(path)?
                .map(|entry| entry.map(|entry| entry.file_name()))
                .collect(),
            FileSystem::Confined { root, dir } => dir
                .read_dir(Self::beneath(root, path)?)?
                .map(|entry| entry.map(|entry| entry.file_name()))
                .collect(),
        }
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            FileSystem::Unconfined => std::fs::remove_file(path),
            FileSystem::Confined { root, dir } => dir.remove_file(Self::beneath(root, path)?),
        }
    }

    pub fn remove_dir(&self, path: &Path, recursive: bool) -> io::Result<()> {
        match (self, recursive) {
            // Not `remove_dir_all` (std's or cap-std's): both recurse once per level.
            (_, true) => {
                walk::remove_contents(self.open_tree(path)?)?;
                self.remove_dir(path, false)
            }
            (FileSystem::Unconfined, false) => std::fs::remove_dir(path),
            (FileSystem::Confined { root, dir }, false) => {
                dir.remove_dir(Self::beneath(root, path)?)
            }
        }
    }

    /// Opens the directory at `path` as the top of a walk; a symlink there is an error,
    /// never followed.
    fn open_tree(&self, path: &Path) -> io::Result<Dir> {
        use cap_fs_ext::DirExt;
        match self {
            FileSystem::Unconfined => match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => {
                    Dir::open_ambient_dir(parent, cap_std::ambient_authority())?
                        .open_dir_nofollow(name)
                }
                _ => Dir::open_ambient_dir(path, cap_std::ambient_authority()),
            },
            FileSystem::Confined { root, dir } => dir.open_dir_nofollow(Self::beneath(root, path)?),
        }
    }

    /// The raw target of a symlink.
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        match self {
            FileSystem::Unconfined => std::fs::read_link(path),
            FileSystem::Confined { root, dir } => {
                dir.read_link_contents(Self::beneath(root, path)?)
            }
        }
    }

    /// Creates a symlink at `link` whose raw target is `target`.
    pub fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        match self {
            FileSystem::Unconfined => std::os::unix::fs::symlink(target, link),
            FileSystem::Confined { root, dir } => {
                dir.symlink_contents(target, Self::beneath(root, link)?)
            }
        }
    }

    /// The canonical absolute path, as the client names paths.
    pub fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        match self {
            FileSystem::Unconfined => std::fs::canonicalize(path),
            FileSystem::Confined { root, dir } => {
                let relative = dir.canonicalize(Self::beneath(root, path)?)?;
                Ok(root.join(relative))
            }
        }
    }

    /// An open handle on a directory, for a child to `fchdir` into: the directory that
    /// was checked is the one used, whatever happens to the path afterwards.
    pub fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        match self {
            FileSystem::Unconfined => {
                let file = std::fs::File::open(path)?;
                if !file.metadata()?.is_dir() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                Ok(OwnedFd::from(file))
            }
            FileSystem::Confined { root, dir } => {
                let opened = dir.open_dir(Self::beneath(root, path)?)?;
                Ok(OwnedFd::from(opened.into_std_file()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_normalised_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }
}
