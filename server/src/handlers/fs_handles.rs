//! `fs/open`, `fs/readBlock` and `fs/close` (docs/protocol.md §0, revision 2026-08):
//! streamed reads of large files through handles the client names, which belong to the
//! session (`session::HandleTable`).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use exec_protocol::{
    code, CloseParams, Empty, ErrorObject, OpenParams, OpenResult, PartialReply, ReadBlockParams,
    ReadBlockResult, MAX_READ_BLOCK_BYTES,
};

use super::errors::{io_error, limit_reached};
use super::fs::{blocking, refuse_sandbox_profiles};
use super::paths::{resolve, PathRules};
use crate::fs::FileSystem;
use crate::outbound::ReplyRoom;
use crate::session::{HandleError, Session};

fn handle_error(err: HandleError) -> ErrorObject {
    match err {
        HandleError::LimitReached(reached) => limit_reached(reached),
        HandleError::Duplicate(_) | HandleError::Destroyed => {
            ErrorObject::invalid_request(err.to_string())
        }
    }
}

/// Opens a regular file under `handleId`. A taken id (-32600) or a full table (-32005)
/// is refused before the file is touched; a directory is -32600, as upstream answers.
pub async fn open(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    session: &Arc<Session>,
    params: OpenParams,
) -> Result<OpenResult, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (path, _) = resolve(&params.path, "path", rules)?;
    session
        .handles()
        .check_free(&params.handle_id)
        .map_err(handle_error)?;
    let file = blocking(fs, move |fs| {
        fs.open_read(&path).map_err(|err| {
            if err.raw_os_error() == Some(libc::EISDIR) {
                ErrorObject::invalid_request(format!("{} is a directory", path.display()))
            } else {
                io_error(err)
            }
        })
    })
    .await?;
    // Checked again: another open may have taken the id or the last slot meanwhile.
    session
        .handles()
        .insert(&params.handle_id, file)
        .map_err(handle_error)?;
    Ok(OpenResult {
        handle_id: params.handle_id,
    })
}

/// Bytes of a `fs/readBlock` reply besides the chunk's base64.
const READ_BLOCK_OVERHEAD: usize = 64;

/// Up to `len` bytes from `offset`, read positionally (no shared cursor) off the async
/// threads, once the reply's room is reserved. `eof` is true when the block reaches the
/// end of the file (also when it ends exactly there); at or past the end the chunk is
/// empty.
pub async fn read_block(
    session: &Arc<Session>,
    params: ReadBlockParams,
    room: &mut ReplyRoom,
) -> Result<PartialReply, ErrorObject> {
    if !(1..=MAX_READ_BLOCK_BYTES).contains(&params.len) {
        return Err(ErrorObject::invalid_request(format!(
            "len must be between 1 and {MAX_READ_BLOCK_BYTES}, got {}",
            params.len
        )));
    }
    let file = session.handles().get(&params.handle_id).ok_or_else(|| {
        ErrorObject::new(
            code::NOT_FOUND,
            format!("unknown file handle {:?}", params.handle_id),
        )
    })?;
    let len = params.len as usize;
    room.reserve(len.div_ceil(3) * 4 + READ_BLOCK_OVERHEAD)
        .await?;
    let offset = params.offset;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<ReadBlockResult> {
        let size = file.metadata()?.len();
        if offset >= size {
            return Ok(ReadBlockResult {
                chunk: Vec::new().into(),
                eof: true,
            });
        }
        // No bigger than what is there (a short file needs no 1 MiB buffer).
        let wanted = len.min(usize::try_from(size - offset).unwrap_or(usize::MAX));
        let mut chunk = vec![0u8; wanted];
        let mut filled = 0;
        while filled < wanted {
            match file.read_at(&mut chunk[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        chunk.truncate(filled);
        // The file may have grown or shrunk meanwhile: ask again where it ends.
        let eof = offset + filled as u64 >= file.metadata()?.len();
        Ok(ReadBlockResult {
            chunk: chunk.into(),
            eof,
        })
    })
    .await
    .map_err(|err| ErrorObject::internal(format!("file-system task failed: {err}")))?
    .map_err(io_error)?;
    Ok(PartialReply::new(&read))
}

/// Closes the handle; an unknown one is no error. A read still in flight on it keeps the
/// file open until it ends.
pub fn close(session: &Arc<Session>, params: CloseParams) -> Result<Empty, ErrorObject> {
    session.handles().remove(&params.handle_id);
    Ok(Empty {})
}
