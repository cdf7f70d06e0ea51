//! `fs/walk` (docs/protocol.md §0, revision 2026-08): a bounded, breadth-first listing of
//! a tree. Iterative: a queue of directories, never recursion.
//!
//! Directories are reached from directory handles, never by re-resolving a path that a
//! swapped symlink could redirect: a real subdirectory is opened from its parent's handle
//! without following links; a link to a directory (only with `followDirectorySymlinks`)
//! is followed from its parent's handle when unconfined, and resolved by `cap-std`
//! beneath the root handle under `--fs-root`, so it never leads out of the root (a link
//! that points outside is treated as broken: neither listed nor entered). The handles of
//! one line of ancestors stay open between directories (at most depth + 1, depth ≤ 64),
//! so siblings visited one after the other cost one open each.
//!
//! Semantics where upstream's description is silent (documented in the report and here):
//! - depth: the top is depth 0; its entries are depth 1. Entries of depth ≤ `maxDepth` are
//!   listed; directories of depth < `maxDepth` are entered. `maxDepth` 1 lists the direct
//!   children only; `maxDepth` 0 lists nothing (the top must still be a directory).
//! - `maxDirectories` counts directories the walk reads (tries to read), the top
//!   included. `truncated` is set only when the walk had more to do: an entry to list
//!   once `maxEntries` are listed, or a directory to read once `maxDirectories` were read.
//! - `pruneHiddenDirectories`: a directory (or followed link to one) whose name starts
//!   with `.` is listed but not entered (like `find -prune`); hidden files are listed.
//! - A directory that is one of its own ancestors on the way down (same device and
//!   inode: a followed link back up, or a bind-mount loop) is listed but not entered, so
//!   link cycles end. Two links to one directory that is not an ancestor are both
//!   entered (as `find -L` does); the limits bound that.
//! - Links to anything but a directory are omitted, as are broken links; special files
//!   (FIFOs, sockets, devices) are kind `other`.

use std::collections::{BinaryHeap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, MetadataExt};

use super::walk::Identity;
use super::FileSystem;

/// What bounds a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_depth: u64,
    pub max_directories: u64,
    pub max_entries: u64,
    pub follow_directory_links: bool,
    pub prune_hidden_directories: bool,
    /// [ext] The most bytes the encoded result may take; a walk that would take more
    /// stops as truncated, so the caller can reserve room for the result before walking.
    pub max_result_bytes: usize,
    /// The most bytes one byte of a path can take once encoded (escaped in JSON, or
    /// percent-encoded in a URI): each path is counted at its worst.
    pub bytes_per_path_byte: usize,
}

/// Bytes an entry or an error costs besides its path and message (its JSON framing).
const ENTRY_OVERHEAD_BYTES: usize = 64;
/// The most bytes one byte of an error message can take once escaped in JSON.
const MESSAGE_BYTES_PER_BYTE: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundKind {
    File,
    Directory,
    /// A FIFO, socket or device.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The top's path joined with the names on the way (links are not resolved).
    pub path: PathBuf,
    pub kind: FoundKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Walked {
    pub entries: Vec<Found>,
    pub errors: Vec<Unreadable>,
    pub truncated: bool,
}

/// A directory to enter.
struct Node {
    /// Index of the parent node; the top is its own parent.
    parent: usize,
    name: OsString,
    depth: u64,
    /// Reached through a symlink, which must be followed to open it.
    via_link: bool,
    identity: Identity,
    /// Its entry in [`Walked::entries`] (which holds its path); unused for the top.
    entry: usize,
}

/// A child as read from its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ChildType {
    Directory,
    File,
    Symlink,
    Other,
}

struct Walker<'a> {
    fs: &'a FileSystem,
    top: PathBuf,
    limits: WalkLimits,
    nodes: Vec<Node>,
    /// The open handles of one line of nodes from the top down: `chain[0]` is the top.
    chain: Vec<(usize, Dir)>,
    walked: Walked,
    result_bytes: usize,
}

/// Walks the tree under `top` (an absolute, normalised path; a link there is followed).
/// A missing top, or one that is not a directory, is an error; a subdirectory that
/// cannot be read goes to `errors`.
pub fn walk(fs: &FileSystem, top: &Path, limits: WalkLimits) -> io::Result<Walked> {
    let top_dir = open_top(fs, top)?;
    let top_identity = identity_of(&top_dir)?;
    let mut walker = Walker {
        fs,
        top: top.to_owned(),
        limits,
        nodes: vec![Node {
            parent: 0,
            name: OsString::new(),
            depth: 0,
            via_link: false,
            identity: top_identity,
            entry: usize::MAX,
        }],
        chain: vec![(0, top_dir)],
        walked: Walked::default(),
        result_bytes: 0,
    };
    if limits.max_depth > 0 {
        walker.run();
    }
    Ok(walker.walked)
}

fn open_top(fs: &FileSystem, top: &Path) -> io::Result<Dir> {
    match fs {
        FileSystem::Unconfined => Dir::open_ambient_dir(top, cap_std::ambient_authority()),
        FileSystem::Confined { root, dir } => dir.open_dir(FileSystem::beneath(root, top)?),
    }
}

fn identity_of(dir: &Dir) -> io::Result<Identity> {
    let meta = dir.dir_metadata()?;
    Ok((meta.dev(), meta.ino()))
}

impl Walker<'_> {
    fn node_path(&self, node: usize) -> &Path {
        match node {
            0 => &self.top,
            _ => &self.walked.entries[self.nodes[node].entry].path,
        }
    }

    fn run(&mut self) {
        let mut queue = VecDeque::from([0usize]);
        let mut read = 0u64;
        while let Some(node) = queue.pop_front() {
            if read >= self.limits.max_directories {
                self.walked.truncated = true;
                return;
            }
            read += 1;
            let remaining = self.limits.max_entries - self.walked.entries.len() as u64;
            let follow = self.limits.follow_directory_links;
            let children = match self
                .open(node)
                .and_then(|dir| read_children(dir, remaining, follow))
            {
                Ok(children) => children,
                Err(err) => {
                    let path = self.node_path(node).to_owned();
                    let message = err.to_string();
                    self.result_bytes += path.as_os_str().len() * self.limits.bytes_per_path_byte
                        + message.len() * MESSAGE_BYTES_PER_BYTE
                        + ENTRY_OVERHEAD_BYTES;
                    if self.result_bytes > self.limits.max_result_bytes {
                        self.walked.truncated = true;
                        return;
                    }
                    self.walked.errors.push(Unreadable { path, message });
                    continue;
                }
            };
            if !self.list(node, children, &mut queue) {
                self.walked.truncated = true;
                return;
            }
        }
    }

    /// Lists `children` of `node`, queueing the directories to enter. `false` once a
    /// limit stopped the walk.
    fn list(&mut self, node: usize, children: Children, queue: &mut VecDeque<usize>) -> bool {
        let depth = self.nodes[node].depth + 1;
        let enter_below = depth < self.limits.max_depth;
        for (name, child_type) in children.sorted {
            let (kind, target) = match child_type {
                ChildType::File => (FoundKind::File, None),
                ChildType::Other => (FoundKind::Other, None),
                ChildType::Directory => (FoundKind::Directory, Some(false)),
                ChildType::Symlink if self.limits.follow_directory_links => {
                    (FoundKind::Directory, Some(true))
                }
                ChildType::Symlink => continue,
            };
            let path = self.node_path(node).join(&name);
            // A link is listed only if it leads to a directory (beneath the root).
            let identity = match target {
                Some(via_link) => match self.child_identity(node, &name, &path, via_link) {
                    Ok(identity) => Some(identity),
                    Err(_) if via_link => continue,
                    // A directory that vanished or cannot be stat'ed is still listed; it
                    // is not entered.
                    Err(_) => None,
                },
                None => None,
            };
            if self.walked.entries.len() as u64 >= self.limits.max_entries {
                return false;
            }
            self.result_bytes +=
                path.as_os_str().len() * self.limits.bytes_per_path_byte + ENTRY_OVERHEAD_BYTES;
            if self.result_bytes > self.limits.max_result_bytes {
                return false;
            }
            self.walked.entries.push(Found { path, kind });
            let hidden = name.as_bytes().first() == Some(&b'.');
            let (Some(identity), Some(via_link)) = (identity, target) else {
                continue;
            };
            if !enter_below
                || (hidden && self.limits.prune_hidden_directories)
                || self.is_ancestor(node, identity)
            {
                continue;
            }
            self.nodes.push(Node {
                parent: node,
                name,
                depth,
                via_link,
                identity,
                entry: self.walked.entries.len() - 1,
            });
            queue.push_back(self.nodes.len() - 1);
        }
        // A directory whose later names did not fit had more to list.
        !children.cut
    }

    /// Whether `identity` is `node` or one of its ancestors.
    fn is_ancestor(&self, mut node: usize, identity: Identity) -> bool {
        loop {
            if self.nodes[node].identity == identity {
                return true;
            }
            if node == 0 {
                return false;
            }
            node = self.nodes[node].parent;
        }
    }

    /// The identity of a child directory of `node` (of its target, for a link).
    fn child_identity(
        &mut self,
        node: usize,
        name: &OsString,
        path: &Path,
        via_link: bool,
    ) -> io::Result<Identity> {
        if !via_link {
            let meta = self.open(node)?.symlink_metadata(name)?;
            return Ok((meta.dev(), meta.ino()));
        }
        let meta = match self.fs {
            FileSystem::Unconfined => {
                let stat = nix::sys::stat::fstatat(
                    self.open(node)?,
                    name.as_os_str(),
                    nix::fcntl::AtFlags::empty(),
                )?;
                if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                return Ok((stat.st_dev, stat.st_ino));
            }
            FileSystem::Confined { root, dir } => dir.metadata(FileSystem::beneath(root, path)?)?,
        };
        if !meta.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok((meta.dev(), meta.ino()))
    }

    /// The handle of `node`, opening what is missing of its line from the deepest open
    /// ancestor down; each level opened must be the directory that was listed.
    fn open(&mut self, node: usize) -> io::Result<&Dir> {
        let mut line = Vec::new();
        let mut at = node;
        while at != 0 {
            line.push(at);
            at = self.nodes[at].parent;
        }
        line.reverse();
        let mut keep = 1;
        while keep < self.chain.len() && keep <= line.len() && self.chain[keep].0 == line[keep - 1]
        {
            keep += 1;
        }
        self.chain.truncate(keep);
        for &next in &line[keep - 1..] {
            let parent = &self.chain.last().expect("the top stays open").1;
            let step = &self.nodes[next];
            let dir = if step.via_link {
                self.follow(parent, next)?
            } else {
                parent.open_dir_nofollow(&step.name)?
            };
            if identity_of(&dir)? != step.identity {
                return Err(io::Error::other(
                    "the directory was replaced while it was being walked",
                ));
            }
            self.chain.push((next, dir));
        }
        Ok(&self.chain.last().expect("the top stays open").1)
    }

    /// Opens the directory a link node points to.
    fn follow(&self, parent: &Dir, node: usize) -> io::Result<Dir> {
        match self.fs {
            FileSystem::Unconfined => {
                use nix::fcntl::OFlag;
                let fd = nix::fcntl::openat(
                    parent,
                    self.nodes[node].name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                Ok(Dir::from_std_file(std::fs::File::from(fd)))
            }
            FileSystem::Confined { root, dir } => {
                dir.open_dir(FileSystem::beneath(root, self.node_path(node))?)
            }
        }
    }
}

/// The first names of a directory in byte order, at most as many as may still be listed.
struct Children {
    sorted: Vec<(OsString, ChildType)>,
    /// More names did not fit.
    cut: bool,
}

/// Reads a directory's names, keeping only the `keep` smallest (memory stays bounded by
/// the entries still allowed, however large the directory). Links are skipped unless
/// they may be followed.
fn read_children(dir: &Dir, keep: u64, links: bool) -> io::Result<Children> {
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let mut heap: BinaryHeap<(Vec<u8>, ChildType)> = BinaryHeap::new();
    let mut cut = false;
    for entry in dir.entries()? {
        // An entry that vanished while the directory was read is skipped.
        let Ok(entry) = entry else { continue };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let child_type = if file_type.is_dir() {
            ChildType::Directory
        } else if file_type.is_file() {
            ChildType::File
        } else if file_type.is_symlink() {
            if !links {
                continue;
            }
            ChildType::Symlink
        } else {
            ChildType::Other
        };
        heap.push((entry.file_name().as_bytes().to_vec(), child_type));
        if heap.len() > keep {
            heap.pop();
            cut = true;
        }
    }
    let sorted = heap
        .into_sorted_vec()
        .into_iter()
        .map(|(name, child_type)| {
            (
                OsString::from(std::ffi::OsStr::from_bytes(&name)),
                child_type,
            )
        })
        .collect();
    Ok(Children { sorted, cut })
}
