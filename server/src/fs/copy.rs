//! `fs/copy`: files, symlinks (copied as links), and directory trees, never into
//! themselves; special files are skipped inside a tree and refused on their own.

use std::io;
use std::path::Path;

use super::{io_error, FileSystem, Kind};
use crate::rpc::RpcError;

pub fn copy(
    fs: &FileSystem,
    source: &Path,
    destination: &Path,
    recursive: bool,
) -> Result<(), RpcError> {
    match fs.symlink_metadata(source).map_err(io_error)?.kind {
        Kind::Symlink => copy_link(fs, source, destination).map_err(io_error),
        Kind::File => copy_file(fs, source, destination).map_err(io_error),
        Kind::Special => Err(RpcError::invalid_request(format!(
            "{} is not a regular file, directory or symlink and cannot be copied",
            source.display()
        ))),
        Kind::Directory if !recursive => Err(RpcError::invalid_request(format!(
            "{} is a directory: copying it needs recursive: true",
            source.display()
        ))),
        Kind::Directory => {
            refuse_copy_into_itself(fs, source, destination)?;
            copy_tree(fs, source, destination).map_err(io_error)
        }
    }
}

/// The destination, once resolved, must not be the source or lie beneath it.
fn refuse_copy_into_itself(
    fs: &FileSystem,
    source: &Path,
    destination: &Path,
) -> Result<(), RpcError> {
    let source = fs.canonicalize(source).map_err(io_error)?;
    let (Some(parent), Some(name)) = (destination.parent(), destination.file_name()) else {
        return Err(RpcError::invalid_request("cannot copy a directory onto /"));
    };
    let resolved = fs.canonicalize(parent).map_err(io_error)?.join(name);
    if resolved.starts_with(&source) {
        return Err(RpcError::invalid_request(format!(
            "cannot copy {} into itself ({})",
            source.display(),
            resolved.display()
        )));
    }
    Ok(())
}

fn copy_tree(fs: &FileSystem, source: &Path, destination: &Path) -> io::Result<()> {
    match fs.create_dir(destination, false) {
        Err(err)
            if err.kind() == io::ErrorKind::AlreadyExists
                && fs.symlink_metadata(destination)?.kind == Kind::Directory => {}
        other => other?,
    }
    for name in fs.read_dir(source)? {
        let (from, to) = (source.join(&name), destination.join(&name));
        match fs.symlink_metadata(&from)?.kind {
            Kind::Directory => copy_tree(fs, &from, &to)?,
            Kind::File => copy_file(fs, &from, &to)?,
            Kind::Symlink => copy_link(fs, &from, &to)?,
            Kind::Special => {
                tracing::debug!(path = %from.display(), "skipping special file in copy")
            }
        }
    }
    Ok(())
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
    let mut input = fs.open_read(source)?;
    let permissions = input.metadata()?.permissions();
    let mut output = fs.create(destination)?;
    io::copy(&mut input, &mut output)?;
    output.set_permissions(permissions)
}

fn copy_link(fs: &FileSystem, source: &Path, destination: &Path) -> io::Result<()> {
    fs.symlink(&fs.read_link(source)?, destination)
}
