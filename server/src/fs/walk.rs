//! Walks over directory trees without recursion. A client can build a tree deeper than any
//! thread's stack and than PATH_MAX, so a walk neither recurses nor names a file by a path:
//! it goes from one directory handle to the next by single entry names, never following a
//! symlink, and remembers the way down as names rather than as one open handle per level.

use std::ffi::OsString;
use std::io;

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, MetadataExt};

/// A [`Descent`] keeps open the handle of every `CHECKPOINT`-th level and those below the
/// deepest such level: about depth / CHECKPOINT + CHECKPOINT descriptors whatever the
/// depth, and a level closed on the way down is reopened once on the way back up.
const CHECKPOINT: usize = 64;

/// Device and inode: what makes a directory the same one.
pub(super) type Identity = (u64, u64);

fn identity(dir: &Dir) -> io::Result<Identity> {
    let meta = dir.dir_metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// The way from the top directory of a walk down to the current one.
pub(super) struct Descent {
    top: Dir,
    top_identity: Identity,
    /// Level `i + 1` below the top: its name in the level above, and its identity, so a
    /// level reopened by name is known to be the directory that was left.
    path: Vec<(OsString, Identity)>,
    /// The open handles of levels below the top, shallowest first.
    open: Vec<(usize, Dir)>,
}

impl Descent {
    pub(super) fn new(top: Dir) -> io::Result<Descent> {
        Ok(Descent {
            top_identity: identity(&top)?,
            top,
            path: Vec::new(),
            open: Vec::new(),
        })
    }

    /// The current directory's identity.
    pub(super) fn identity(&self) -> Identity {
        self.path
            .last()
            .map_or(self.top_identity, |(_, identity)| *identity)
    }

    fn deepest_open(&self) -> (usize, &Dir) {
        self.open
            .last()
            .map_or((0, &self.top), |(level, dir)| (*level, dir))
    }

    /// The current directory, reopened level by level from the deepest open one if its
    /// handle was closed on the way down.
    pub(super) fn current(&mut self) -> io::Result<&Dir> {
        let (mut level, _) = self.deepest_open();
        while level < self.path.len() {
            let (name, expected) = &self.path[level];
            let dir = self.deepest_open().1.open_dir_nofollow(name)?;
            if identity(&dir)? != *expected {
                return Err(io::Error::other(format!(
                    "directory {name:?} was replaced while it was being walked"
                )));
            }
            level += 1;
            self.open.push((level, dir));
        }
        Ok(self.deepest_open().1)
    }

    /// Makes the subdirectory `name` of the current directory current; a symlink there is
    /// an error, never followed.
    pub(super) fn descend(&mut self, name: OsString) -> io::Result<()> {
        let dir = self.current()?.open_dir_nofollow(&name)?;
        self.path.push((name, identity(&dir)?));
        let level = self.path.len();
        if level.is_multiple_of(CHECKPOINT) {
            self.open
                .retain(|(open, _)| open.is_multiple_of(CHECKPOINT));
        }
        self.open.push((level, dir));
        Ok(())
    }

    /// Makes the parent current and returns the name of the directory left, or `None` at
    /// the top.
    pub(super) fn ascend(&mut self) -> Option<OsString> {
        let (name, _) = self.path.pop()?;
        while self
            .open
            .last()
            .is_some_and(|(level, _)| *level > self.path.len())
        {
            self.open.pop();
        }
        Some(name)
    }

    #[cfg(test)]
    fn open_handles(&self) -> usize {
        1 + self.open.len()
    }
}

/// Removes everything beneath `top`, leaving it empty. Symlinks are removed, never
/// followed; an entry someone else removed first is no error.
pub(super) fn remove_contents(top: Dir) -> io::Result<()> {
    let mut descent = Descent::new(top)?;
    // Per level, the subdirectories still to remove.
    let mut pending = vec![remove_all_but_subdirectories(descent.current()?)?];
    loop {
        match pending.last_mut().and_then(Vec::pop) {
            Some(name) => match descent.descend(name) {
                Ok(()) => pending.push(remove_all_but_subdirectories(descent.current()?)?),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            },
            None => match descent.ascend() {
                Some(name) => {
                    pending.pop();
                    gone_is_fine(descent.current()?.remove_dir(&name))?;
                }
                None => return Ok(()),
            },
        }
    }
}

/// Removes the entries of `dir` that are not directories and returns the names of those
/// that are.
fn remove_all_but_subdirectories(dir: &Dir) -> io::Result<Vec<OsString>> {
    let mut subdirectories = Vec::new();
    for entry in dir.entries()? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            subdirectories.push(entry.file_name());
        } else {
            gone_is_fine(entry.remove_file())?;
        }
    }
    Ok(subdirectories)
}

fn gone_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ambient(path: &std::path::Path) -> Dir {
        Dir::open_ambient_dir(path, cap_std::ambient_authority()).expect("open temp dir")
    }

    /// A chain `d/d/…` of `depth` levels below `top`.
    fn chain(top: &Dir, depth: usize) -> io::Result<()> {
        let mut dir = top.try_clone()?;
        for _ in 0..depth {
            dir.create_dir("d")?;
            dir = dir.open_dir("d")?;
        }
        Ok(())
    }

    #[test]
    fn a_deep_descent_holds_few_handles_and_finds_its_way_back() -> io::Result<()> {
        let temp = tempfile::tempdir()?;
        let top = ambient(temp.path());
        let depth = 10 * CHECKPOINT + 5;
        chain(&top, depth)?;
        let mut descent = Descent::new(top.try_clone()?)?;
        let mut most_open = 0;
        let mut identities = vec![descent.identity()];
        for _ in 0..depth {
            descent.descend("d".into())?;
            identities.push(descent.identity());
            most_open = most_open.max(descent.open_handles());
        }
        assert!(
            most_open <= depth / CHECKPOINT + CHECKPOINT + 1,
            "{most_open}"
        );
        // Each level reopened on the way up is the directory that was left.
        while let Some(name) = descent.ascend() {
            assert_eq!(name, "d");
            identities.pop();
            let current = identity(descent.current()?)?;
            assert_eq!(Some(&current), identities.last());
            most_open = most_open.max(descent.open_handles());
        }
        assert!(
            most_open <= depth / CHECKPOINT + CHECKPOINT + 1,
            "{most_open}"
        );
        Ok(())
    }

    #[test]
    fn a_level_swapped_while_closed_is_refused() -> io::Result<()> {
        let temp = tempfile::tempdir()?;
        let top = ambient(temp.path());
        chain(&top, CHECKPOINT + 1)?;
        let mut descent = Descent::new(top.try_clone()?)?;
        for _ in 0..CHECKPOINT + 1 {
            descent.descend("d".into())?;
        }
        // Level CHECKPOINT - 1 was closed when the descent passed the checkpoint: swap it
        // for another directory of the same name before the descent climbs back to it.
        let mut parent = top.try_clone()?;
        for _ in 0..CHECKPOINT - 2 {
            parent = parent.open_dir("d")?;
        }
        parent.rename("d", &parent, "moved")?;
        parent.create_dir("d")?;
        descent.ascend();
        descent.ascend();
        let err = descent.current().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        Ok(())
    }

    #[test]
    fn contents_go_but_links_are_not_followed() -> io::Result<()> {
        let temp = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("keep"), "kept")?;
        let top = ambient(temp.path());
        chain(&top, 3)?;
        top.write("d/d/file", "x")?;
        top.symlink_contents(outside.path(), "d/link")?;
        remove_contents(top.try_clone()?)?;
        assert_eq!(top.entries()?.count(), 0, "emptied");
        assert_eq!(std::fs::read(outside.path().join("keep"))?, b"kept");
        Ok(())
    }
}
