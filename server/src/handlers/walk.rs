//! `fs/walk` (docs/protocol.md §0, revision 2026-08): options above upstream's maximums
//! are refused (-32600); the walk itself is `crate::fs::walk_tree`, run off the async
//! threads; result paths take the form of the request's path.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use exec_protocol::{
    EntryKind, ErrorObject, PartialReply, WalkEntry, WalkError, WalkParams, WalkResult,
    MAX_WALK_DEPTH, MAX_WALK_DIRECTORIES, MAX_WALK_ENTRIES,
};

use super::errors::io_error;
use super::fs::{blocking, refuse_sandbox_profiles};
use super::paths::{resolve, PathRules};
use crate::fs::{self, FileSystem, FoundKind, WalkLimits};
use crate::outbound::ReplyRoom;

/// [ext] The listed paths of one walk may take about this many bytes; a walk that would
/// list more stops as `truncated` (only paths averaging over 1.3 KB reach it before
/// 50 000 entries).
pub const MAX_WALK_RESULT_BYTES: usize = 64 * 1024 * 1024;

pub async fn walk(
    fs: &Arc<FileSystem>,
    rules: PathRules,
    params: WalkParams,
    room: &mut ReplyRoom,
) -> Result<PartialReply, ErrorObject> {
    refuse_sandbox_profiles(&params.sandbox)?;
    let (top, form) = resolve(&params.path, "path", rules)?;
    let options = params.options;
    for (name, value, most) in [
        ("maxDepth", options.max_depth, MAX_WALK_DEPTH),
        (
            "maxDirectories",
            options.max_directories,
            MAX_WALK_DIRECTORIES,
        ),
        ("maxEntries", options.max_entries, MAX_WALK_ENTRIES),
    ] {
        if value > most {
            return Err(ErrorObject::invalid_request(format!(
                "options.{name} {value} is above the maximum, {most}"
            )));
        }
    }
    let limits = WalkLimits {
        max_depth: options.max_depth,
        max_directories: options.max_directories,
        max_entries: options.max_entries,
        follow_directory_links: options.follow_directory_symlinks,
        prune_hidden_directories: options.prune_hidden_directories.unwrap_or(false),
        max_result_bytes: MAX_WALK_RESULT_BYTES,
    };
    let (result, size) = blocking(fs, move |fs| {
        let walked = fs::walk_tree(fs, &top, limits).map_err(io_error)?;
        let mut size = 64;
        let render = |path: &std::path::Path| form.render(path.as_os_str().as_bytes());
        let entries: Vec<WalkEntry> = walked
            .entries
            .into_iter()
            .map(|found| {
                let path = render(&found.path);
                size += path.as_str().len() + fs::ENTRY_OVERHEAD_BYTES;
                WalkEntry {
                    path,
                    kind: match found.kind {
                        FoundKind::File => EntryKind::File,
                        FoundKind::Directory => EntryKind::Directory,
                        FoundKind::Other => EntryKind::Other,
                    },
                }
            })
            .collect();
        let errors: Vec<WalkError> = walked
            .errors
            .into_iter()
            .map(|unreadable| {
                let path = render(&unreadable.path);
                size += path.as_str().len() + unreadable.message.len() + 64;
                WalkError {
                    path,
                    message: unreadable.message,
                }
            })
            .collect();
        let result = WalkResult {
            entries,
            errors,
            truncated: walked.truncated,
        };
        Ok((result, size))
    })
    .await?;
    room.reserve(size).await?;
    Ok(PartialReply::new(&result))
}
