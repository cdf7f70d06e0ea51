//! `fs/*` methods (PROTOCOL.md §7): decode params, refuse relative paths and sandbox
//! profiles, then run the blocking file-system work off the async threads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::fs::{self, absolute, io_error, FileSystem, Kind, MAX_READ_FILE_BYTES};
use crate::outbound::ReplyRoom;
use crate::protocol::{
    CopyParams, CreateDirectoryParams, JoinParams, PathParams, RemoveParams, WriteFileParams,
};
use crate::rpc::{decode_params, Reply, RpcError};

/// Base64 is encoded and decoded in blocks of this many input bytes (a multiple of 3
/// and of 4), so that no block but the last carries padding.
const BASE64_BLOCK: usize = 3 * 4 * 256 * 1024;

/// Upstream's per-request `sandbox`: we run no sandbox profiles, so anything but an
/// explicit full-access request is refused rather than silently run unrestricted.
fn refuse_sandbox_profiles(sandbox: &Option<Value>) -> Result<(), RpcError> {
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
        Some(_) => Err(RpcError::invalid_params(
            "sandbox profiles are not supported",
        )),
    }
}

/// Runs blocking file-system work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    fs: &Arc<FileSystem>,
    work: impl FnOnce(&FileSystem) -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    let fs = Arc::clone(fs);
    tokio::task::spawn_blocking(move || work(&fs))
        .await
        .map_err(|err| RpcError::internal(format!("file-system task failed: {err}")))?
}

/// Opens and sizes the file, waits for room for its encoding in the connection's
/// outbound budget (a file bigger than the budget waits until nothing else is queued),
/// and only then reads it, encoding straight into the reply.
pub async fn read_file(
    fs: &Arc<FileSystem>,
    params: Value,
    room: &mut ReplyRoom,
) -> Result<Reply, RpcError> {
    let params: PathParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    let too_large = {
        let path = path.clone();
        move || {
            RpcError::invalid_request(format!(
                "{} is larger than {MAX_READ_FILE_BYTES} bytes, the most fs/readFile reads",
                path.display()
            ))
        }
    };
    let (file, size) = blocking(fs, {
        let too_large = too_large.clone();
        move |fs| {
            let file = fs.open_read(&path).map_err(io_error)?;
            let size = file.metadata().map_err(io_error)?.len();
            if size > MAX_READ_FILE_BYTES {
                return Err(too_large());
            }
            Ok((file, size))
        }
    })
    .await?;
    let encoded_size = usize::try_from(size.div_ceil(3) * 4).unwrap_or(usize::MAX);
    room.reserve(encoded_size.saturating_add(READ_FILE_OVERHEAD))
        .await?;
    let handle = tokio::task::spawn_blocking(move || {
        // The size can grow while we read (a log file): never read past the limit.
        let mut file = file.take(MAX_READ_FILE_BYTES + 1);
        let mut total = 0u64;
        // Encode straight into the reply: the file's bytes are never held whole.
        let mut message = String::with_capacity(encoded_size + READ_FILE_OVERHEAD);
        message.push_str(r#"{"jsonrpc":"2.0","result":{"dataBase64":""#);
        let mut block = vec![0u8; BASE64_BLOCK];
        loop {
            let filled = fill(&mut file, &mut block).map_err(io_error)?;
            total += filled as u64;
            if total > MAX_READ_FILE_BYTES {
                return Err(too_large());
            }
            BASE64.encode_string(&block[..filled], &mut message);
            if filled < block.len() {
                break;
            }
        }
        message.push_str("\"}");
        Ok(Reply::EncodedWithoutId(message))
    });
    handle
        .await
        .map_err(|err| RpcError::internal(format!("file-system task failed: {err}")))?
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

pub async fn write_file(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: WriteFileParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    let data = params.data_base64;
    let invalid = |err: base64::DecodeError| {
        RpcError::invalid_params(format!("invalid params: dataBase64: not base64: {err}"))
    };
    blocking(fs, move |fs| {
        // Validate everything before truncating the file, then decode block by block.
        let blocks = || data.as_bytes().chunks(BASE64_BLOCK / 3 * 4);
        let mut decoded = Vec::with_capacity(BASE64_BLOCK);
        for block in blocks() {
            decoded.clear();
            BASE64.decode_vec(block, &mut decoded).map_err(invalid)?;
        }
        let mut file = fs.create(&path).map_err(io_error)?;
        for block in blocks() {
            decoded.clear();
            BASE64.decode_vec(block, &mut decoded).map_err(invalid)?;
            file.write_all(&decoded).map_err(io_error)?;
        }
        file.flush().map_err(io_error)?;
        Ok(json!({}).into())
    })
    .await
}

pub async fn create_directory(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: CreateDirectoryParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    blocking(fs, move |fs| {
        fs.create_dir(&path, params.recursive).map_err(io_error)?;
        Ok(json!({}).into())
    })
    .await
}

pub async fn get_metadata(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: PathParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    blocking(fs, move |fs| {
        let link = fs.symlink_metadata(&path).map_err(io_error)?;
        // The type follows links; a broken link has none, so it reports its own times.
        let target = match fs.metadata(&path) {
            Ok(target) => target,
            Err(_) if link.kind == Kind::Symlink => link,
            Err(err) => return Err(io_error(err)),
        };
        Ok(json!({
            "isDirectory": target.kind == Kind::Directory,
            "isFile": target.kind == Kind::File,
            "isSymlink": link.kind == Kind::Symlink,
            "createdAtMs": target.created_ms,
            "modifiedAtMs": target.modified_ms,
        })
        .into())
    })
    .await
}

pub async fn read_directory(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: PathParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    blocking(fs, move |fs| {
        let mut entries = Vec::new();
        for name in fs.read_dir(&path).map_err(io_error)? {
            // Types follow links; broken links (and links leaving the root) are skipped.
            let Ok(meta) = fs.metadata(&path.join(&name)) else {
                continue;
            };
            entries.push(json!({
                "fileName": name.to_string_lossy(),
                "isDirectory": meta.kind == Kind::Directory,
                "isFile": meta.kind == Kind::File,
            }));
        }
        Ok(json!({"entries": entries}).into())
    })
    .await
}

pub async fn remove(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: RemoveParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    blocking(fs, move |fs| {
        let kind = match fs.symlink_metadata(&path) {
            Ok(meta) => meta.kind,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && params.force => {
                return Ok(json!({}).into())
            }
            Err(err) => return Err(io_error(err)),
        };
        // A symlink is removed itself, never what it points to.
        let removed = match kind {
            Kind::Directory => fs.remove_dir(&path, params.recursive),
            Kind::File | Kind::Symlink | Kind::Special => fs.remove_file(&path),
        };
        match removed {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && params.force => {}
            other => other.map_err(io_error)?,
        }
        Ok(json!({}).into())
    })
    .await
}

pub async fn copy(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: CopyParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let source = absolute(&params.source_path, "sourcePath")?;
    let destination = absolute(&params.destination_path, "destinationPath")?;
    blocking(fs, move |fs| {
        fs::copy(fs, &source, &destination, params.recursive)?;
        Ok(json!({}).into())
    })
    .await
}

pub async fn canonicalize(fs: &Arc<FileSystem>, params: Value) -> Result<Reply, RpcError> {
    let params: PathParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    blocking(fs, move |fs| {
        let canonical = fs.canonicalize(&path).map_err(io_error)?;
        Ok(json!({"path": canonical.to_string_lossy()}).into())
    })
    .await
}

/// `basePath` joined with `path` (which may be relative), normalised lexically.
pub fn join(params: Value) -> Result<Reply, RpcError> {
    let params: JoinParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let base = absolute(&params.base_path, "basePath")?;
    let joined: PathBuf = base.join(&params.path);
    let joined = absolute(&joined.to_string_lossy(), "path")?;
    Ok(json!({"path": joined.to_string_lossy()}).into())
}

pub fn parent(params: Value) -> Result<Reply, RpcError> {
    let params: PathParams = decode_params(params)?;
    refuse_sandbox_profiles(&params.sandbox)?;
    let path = absolute(&params.path, "path")?;
    let parent = path.parent().map(Path::to_string_lossy);
    Ok(json!({"path": parent}).into())
}
