//! `fs/copy`: files, symlinks (copied as links), and directory trees, never into
//! themselves; special files are skipped inside a tree and refused on their own. Trees
//! are walked with `walk::Descent`, however deep.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

use super::walk::Descent;
use super::{kind, regular, FileSystem, Kind, Meta};

/// Why a copy was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{} is not a regular file, directory or symlink and cannot be copied", .0.display())]
    Special(PathBuf),
    #[error("{} is a directory: copying it needs recursive: true", .0.display())]
    DirectoryNeedsRecursive(PathBuf),
    #[error("cannot copy a directory onto /")]
    OntoRoot,
    #[error("cannot copy {} into itself ({})", .directory.display(), .resolved.display())]
    IntoItself {
        directory: PathBuf,
        resolved: PathBuf,
    },
}

pub fn copy(
    fs: &FileSystem,
    source: &Path,
    destination: &Path,
    recursive: bool,
) -> Result<(), CopyError> {
    match fs.symlink_metadata(source)?.kind {
        Kind::Symlink => Ok(copy_link(fs, source, destination)?),
        Kind::File => Ok(copy_file(fs, source, destination)?),
        Kind::Special => Err(CopyError::Special(source.to_owned())),
        Kind::Directory if !recursive => Err(CopyError::DirectoryNeedsRecursive(source.to_owned())),
        Kind::Directory => {
            refuse_copy_into_itself(fs, source, destination)?;
            Ok(copy_tree(fs, source, destination)?)
        }
    }
}

/// The destination, once resolved, must not be the source or lie beneath it.
fn refuse_copy_into_itself(
    fs: &FileSystem,
    source: &Path,
    destination: &Path,
) -> Result<(), CopyError> {
    let source = fs.canonicalize(source)?;
    let (Some(parent), Some(name)) = (destination.parent(), destination.file_name()) else {
        return Err(CopyError::OntoRoot);
    };
    let resolved = fs.canonicalize(parent)?.join(name);
    if resolved.starts_with(&source) {
        return Err(CopyError::IntoItself {
            directory: source,
            resolved,
        });
    }
    Ok(())
}

fn copy_tree(fs: &FileSystem, source: &Path, destination: &Path) -> io::Result<()> {
    let from = fs.open_tree(source)?;
    match fs.create_dir(destination, false) {
        Err(err)
            if err.kind() == io::ErrorKind::AlreadyExists
                && fs.symlink_metadata(destination)?.kind == Kind::Directory => {}
        other => other?,
    }
    copy_contents(from, fs.open_tree(destination)?)
}

/// Copies everything beneath `from` into `to`, merging into what `to` holds, without
/// recursion and without following a symlink on either side.
fn copy_contents(from: Dir, to: Dir) -> io::Result<()> {
    let mut source = Descent::new(from)?;
    let mut destination = Descent::new(to)?;
    // Compared by identity as well as by path: a bind mount, or a rename while the copy
    // runs, could put the destination inside the source, and the copy would never end.
    let into = destination.identity();
    let refuse_into_itself = |source: &Descent| {
        if source.identity() == into {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot copy a directory into itself",
            ));
        }
        Ok(())
    };
    refuse_into_itself(&source)?;
    // Per level, the subdirectories still to copy.
    let mut pending = vec![copy_entries(source.current()?, destination.current()?)?];
    loop {
        match pending.last_mut().and_then(Vec::pop) {
            Some(name) => {
                source.descend(name.clone())?;
                refuse_into_itself(&source)?;
                let parent = destination.current()?;
                match parent.create_dir(&name) {
                    Err(err)
                        if err.kind() == io::ErrorKind::AlreadyExists
                            && parent.symlink_metadata(&name)?.is_dir() => {}
                    other => other?,
                }
                destination.descend(name)?;
                pending.push(copy_entries(source.current()?, destination.current()?)?);
            }
            None => {
                if source.ascend().is_none() {
                    return Ok(());
                }
                destination.ascend();
                pending.pop();
            }
        }
    }
}

/// Copies the files and symlinks of `from` into `to`, skipping special files; returns the
/// names of its subdirectories.
fn copy_entries(from: &Dir, to: &Dir) -> io::Result<Vec<OsString>> {
    let mut subdirectories = Vec::new();
    for entry in from.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        let file_type = entry.file_type()?;
        match kind(
            file_type.is_symlink(),
            file_type.is_dir(),
            file_type.is_file(),
        ) {
            Kind::Directory => subdirectories.push(name),
            Kind::File => copy_entry_file(from, to, &name)?,
            Kind::Symlink => to.symlink_contents(from.read_link_contents(&name)?, &name)?,
            Kind::Special => tracing::debug!(?name, "skipping special file in copy"),
        }
    }
    Ok(subdirectories)
}

/// Copies the regular file `name` of `from` into `to`. An existing symlink in `to` is an
/// error, not written through.
fn copy_entry_file(from: &Dir, to: &Dir, name: &OsStr) -> io::Result<()> {
    // Creating the destination truncates it: if it is the source, the data would be gone.
    if let Ok(existing) = to.symlink_metadata(name) {
        if Meta::from(existing).identity == Meta::from(from.symlink_metadata(name)?).identity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is the same file in the source and the destination",
                    Path::new(name).display()
                ),
            ));
        }
    }
    let mut read = OpenOptions::new();
    read.read(true)
        .custom_flags(libc::O_NONBLOCK)
        .follow(FollowSymlinks::No);
    let input = regular(from.open_with(name, &read)?.into_std(), Path::new(name))?;
    let mut write = OpenOptions::new();
    write
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK)
        .follow(FollowSymlinks::No);
    let output = regular(to.open_with(name, &write)?.into_std(), Path::new(name))?;
    copy_bytes(input, output)
}

fn copy_file(fs: &FileSystem, source: &Path, destination: &Path) -> io::Result<()> {
    // Creating the destination truncates it: if it is the source, the data would be gone.
    if let Ok(existing) = fs.metadata(destination) {
        if existing.identity == fs.metadata(source)?.identity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} and {} are the same file",
                    source.display(),
                    destination.display()
                ),
            ));
        }
    }
    copy_bytes(fs.open_read(source)?, fs.create(destination)?)
}

/// Copies the bytes and then the permission bits.
fn copy_bytes(mut input: File, mut output: File) -> io::Result<()> {
    let permissions = input.metadata()?.permissions();
    io::copy(&mut input, &mut output)?;
    output.set_permissions(permissions)
}

fn copy_link(fs: &FileSystem, source: &Path, destination: &Path) -> io::Result<()> {
    fs.symlink(&fs.read_link(source)?, destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_inside_the_source_is_refused_by_identity_too() -> io::Result<()> {
        let temp = tempfile::tempdir()?;
        let top = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority())?;
        top.create_dir_all("source/inner")?;
        // What a bind mount or a concurrent rename can do behind the path check's back.
        let err = copy_contents(top.open_dir("source")?, top.open_dir("source/inner")?)
            .expect_err("copying into itself");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        Ok(())
    }
}
