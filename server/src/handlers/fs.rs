//! `fs/*` methods (docs/protocol.md §7): refuse relative paths and sandbox profiles,
//! then run the blocking file-system work off the async threads.

use std::io::{Read, Write};
use std::sync::Arc;

use exec_protocol::fast::ReadFileReply;
use exec_protocol::{
    CanonicalizeParams, CopyParams, CreateDirectoryParams, DirectoryEntry, Empty, ErrorObject,
    GetMetadataParams, JoinParams, Metadata, ParentParams, ParentResult, PartialReply, PathError,
    PathResult, ReadDirectoryParams, ReadDirectoryResult, ReadFileParams, RemoveParams,
    WriteFileParams,
};
use serde_json::Value;

use super::errors::io_error;
use super::paths::{render, resolve, PathRules};
use crate::faults::{self, Fault};
use crate::fs::{self, FileSystem, Follow, Kind, MAX_READ_FILE_BYTES};
use crate::outbound::ReplyRoom;

/// A file is read in blocks of this many bytes (a multiple of 3, so that no block but
/// the last needs carrying over to the next when encoded).
const READ_BLOCK: usize = 3 * 4 * 256 * 1024;

/// Upstream's per-request `sandbox`: we run no sandbox profiles, so anything but an
/// explicit full-access request is refused rather than silently run unrestricted.
pub(crate) fn refuse_sandbox_profiles(sandbox: &Option<Value>) -> Result<(), ErrorObject> {
    const FULL_ACCESS: [&str; 2] = ["danger-full-access", "dangerFullAccess"];
    let full_access = |value: &Value| {
        value
            .as_str()
            .is_some_and(|name| FULL_ACCESS.contains(&name))
    };
    match sandbox {
        None | Some(Value::Null) => Ok(()),
        Some(value) if full_access(value) => Ok(()),
        Some(Value::Object(object))
            if ["type", "mode", "profile"]
                .iter()
                .any(|key| object.get(*key).is_some_and(full_access)) =>
        {
            Ok(())
        }
        Some(_) => Err(ErrorObject::invalid_params(
            "sandbox profiles are not supported",
        )),
    }
}

/// Runs blocking file-system work on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    fs: &Arc<FileSystem>,
    work: impl FnOnce(&FileSystem) -> Result<T, ErrorObject> + Send + 'static,
) -> Result<T, ErrorObject> {
    let fs = Arc::clone(fs);
    tokio::task::spawn_blocking(move || work(&fs))
        .await
        .map_err(|err| ErrorObject::internal(format!("file-system task failed: {err}")))?
}

/// Opens and sizes the file, waits for room for its encoding in the connection's
/// outbound budget (a file bigger than the budget waits until nothing else is queued),
/// and only then reads it, encoding straight into the reply.
pub async fn read_file(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: ReadFileParams,
    room: &mut ReplyRoom,
) -> Result<PartialReply, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    let follow = Follow::from_param(params.follow_symlinks);
    let too_large = {
        let path = path.clone();
        move || {
            ErrorObject::invalid_request(format!(
                "{} is larger than {MAX_READ_FILE_BYTES} bytes, the most fs/readFile reads",
                path.display()
            ))
        }
    };
    let (file, size) = blocking(fs, {
        let too_large = too_large.clone();
        move |fs| {
            let file = fs.open_read_with(&path, follow).map_err(io_error)?;
            let size = file.metadata().map_err(io_error)?.len();
            if size > MAX_READ_FILE_BYTES {
                return Err(too_large());
            }
            Ok((file, size))
        }
    })
    .await?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let encoded_size = size.div_ceil(3).saturating_mul(4);
    room.reserve(encoded_size.saturating_add(READ_FILE_OVERHEAD))
        .await?;
    let handle = tokio::task::spawn_blocking(move || {
        // The size can grow while we read (a log file): never read past the limit.
        let mut file = file.take(MAX_READ_FILE_BYTES + 1);
        let mut total = 0u64;
        // Encode straight into the reply: the file's bytes are never held whole.
        let mut reply = ReadFileReply::new(size);
        let mut block = vec![0u8; READ_BLOCK];
        loop {
            let filled = fill(&mut file, &mut block).map_err(io_error)?;
            total += filled as u64;
            if total > MAX_READ_FILE_BYTES {
                return Err(too_large());
            }
            reply.push(&block[..filled]);
            if filled < block.len() {
                break;
            }
        }
        Ok(reply.finish())
    });
    handle
        .await
        .map_err(|err| ErrorObject::internal(format!("file-system task failed: {err}")))?
}

/// Bytes of an `fs/readFile` reply besides the base64 (the envelope and the id).
const READ_FILE_OVERHEAD: usize = 256;

/// Reads until `buffer` is full or the file ends; returns how much was read.
fn fill(file: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The bytes arrive decoded: bad base64 was refused (-32602, naming `dataBase64`) before
/// the file was touched.
pub async fn write_file(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: WriteFileParams,
) -> Result<Empty, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    let follow = Follow::from_param(params.follow_symlinks);
    let data = params.data_base64.into_inner();
    blocking(fs, move |fs| {
        let mut file = fs.create_with(&path, follow).map_err(io_error)?;
        file.write_all(&data).map_err(io_error)?;
        file.flush().map_err(io_error)?;
        Ok(Empty {})
    })
    .await
}

pub async fn create_directory(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: CreateDirectoryParams,
) -> Result<Empty, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    let follow = Follow::from_param(params.follow_symlinks);
    blocking(fs, move |fs| {
        fs.refuse_symlinks_if(&path, follow).map_err(io_error)?;
        fs.create_dir(&path, params.recursive).map_err(io_error)?;
        Ok(Empty {})
    })
    .await
}

pub async fn get_metadata(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: GetMetadataParams,
) -> Result<Metadata, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    let follow = Follow::from_param(params.follow_symlinks);
    blocking(fs, move |fs| {
        fs.refuse_symlinks_if(&path, follow).map_err(io_error)?;
        let link = fs.symlink_metadata(&path).map_err(io_error)?;
        // The type follows links; a broken link has none, so it reports its own times.
        let target = match fs.metadata(&path) {
            Ok(target) => target,
            Err(_) if link.kind == Kind::Symlink => link,
            Err(err) => return Err(io_error(err)),
        };
        Ok(Metadata {
            is_directory: target.kind == Kind::Directory,
            is_file: target.kind == Kind::File,
            is_symlink: link.kind == Kind::Symlink,
            created_at_ms: target.created_ms,
            modified_at_ms: target.modified_ms,
            size: Some(target.size),
        })
    })
    .await
}

pub async fn read_directory(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: ReadDirectoryParams,
) -> Result<ReadDirectoryResult, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    blocking(fs, move |fs| {
        let mut entries = Vec::new();
        for name in fs.read_dir(&path).map_err(io_error)? {
            // Types follow links; broken links (and links leaving the root) are skipped.
            let Ok(meta) = fs.metadata(&path.join(&name)) else {
                continue;
            };
            entries.push(DirectoryEntry {
                file_name: name.to_string_lossy().into_owned(),
                is_directory: meta.kind == Kind::Directory,
                is_file: meta.kind == Kind::File,
            });
        }
        Ok(ReadDirectoryResult { entries })
    })
    .await
}

/// A symlink is removed itself, never its target, whatever `followSymlinks` says;
/// `followSymlinks: false` refuses a path with a link anywhere, and is unsupported
/// (-32603, as upstream answers) together with `recursive`.
pub async fn remove(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: RemoveParams,
) -> Result<Empty, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    let follow = Follow::from_param(params.follow_symlinks);
    if follow == Follow::NoLinks && params.recursive {
        return Err(ErrorObject::internal(
            "fs/remove with followSymlinks: false and recursive is not supported",
        ));
    }
    blocking(fs, move |fs| {
        fs.refuse_symlinks_if(&path, follow).map_err(io_error)?;
        let kind = match fs.symlink_metadata(&path) {
            Ok(meta) => meta.kind,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && params.force => {
                return Ok(Empty {})
            }
            Err(err) => return Err(io_error(err)),
        };
        // Negative control: what the link points to goes first.
        if faults::active(Fault::FsFollowSymlinkOnRemove) && kind == Kind::Symlink {
            let _ = fs.canonicalize(&path).and_then(|target| {
                (fs.remove_dir(&target, true)).or_else(|_| fs.remove_file(&target))
            });
        }
        // A symlink is removed itself, never what it points to.
        let removed = match kind {
            Kind::Directory => fs.remove_dir(&path, params.recursive),
            Kind::File | Kind::Symlink | Kind::Special => fs.remove_file(&path),
        };
        match removed {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && params.force => {}
            other => other.map_err(io_error)?,
        }
        Ok(Empty {})
    })
    .await
}

pub async fn copy(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: CopyParams,
) -> Result<Empty, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (source, _) = resolve(&params.source_path, "sourcePath", rules)?;
    let (destination, _) = resolve(&params.destination_path, "destinationPath", rules)?;
    blocking(fs, move |fs| {
        fs::copy(fs, &source, &destination, params.recursive)?;
        Ok(Empty {})
    })
    .await
}

pub async fn canonicalize(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: CanonicalizeParams,
) -> Result<PathResult, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, form) = resolve(&params.path, "path", rules)?;
    blocking(fs, move |fs| {
        let canonical = fs.canonicalize(&path).map_err(io_error)?;
        Ok(PathResult {
            path: render(form, &canonical),
        })
    })
    .await
}

/// `basePath` joined with `path`, normalised lexically, in `basePath`'s form. `path`
/// may be relative (a plain relative path, never refused, even one that looks like
/// `scheme:rest`, such as `notes:2024.txt`); a `file:` URI or a plain absolute path
/// there replaces the base, as `Path::join` does.
pub fn join(rules: PathRules, params: JoinParams) -> Result<PathResult, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (base, form) = resolve(&params.base_path, "basePath", rules)?;
    let joined = match params.path.resolve() {
        Err(PathError::Relative(relative)) => base.join(relative),
        Err(PathError::OtherScheme(_)) => base.join(params.path.as_str()),
        _ => resolve(&params.path, "path", rules)?.0,
    };
    Ok(PathResult {
        path: render(form, &fs::normalize(&joined)),
    })
}

/// The parent, in the request path's form; `null` for the root.
pub fn parent(rules: PathRules, params: ParentParams) -> Result<ParentResult, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, form) = resolve(&params.path, "path", rules)?;
    Ok(ParentResult {
        path: path.parent().map(|parent| render(form, parent)),
    })
}
