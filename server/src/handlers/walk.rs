//! `fs/walk` (docs/protocol.md §0, revision 2026-08): options above upstream's maximums
//! are refused (-32600); the walk itself is `crate::fs::walk_tree`, run off the async
//! threads; result paths take the form of the request's path.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use exec_protocol::{
    EntryKind, ErrorObject, PartialReply, PathForm, WalkEntry, WalkError, WalkParams, WalkResult,
    MAX_WALK_DEPTH, MAX_WALK_DIRECTORIES, MAX_WALK_ENTRIES,
};

use super::errors::io_error;
use super::fs::{blocking, refuse_sandbox_profiles};
use super::paths::{resolve, PathRules};
use crate::fs::{self, FileSystem, FoundKind, WalkLimits};
use crate::outbound::ReplyRoom;

/// [ext] The most bytes one walk's result may take: room for it is reserved in the
/// connection's outbound budget before the walk starts, and a walk that would list more
/// stops as `truncated`.
const MAX_WALK_RESULT_BYTES: usize = 32 * 1024 * 1024;
/// Room reserved per requested entry, so that a small walk does not hold a big share of
/// the outbound budget (paths are counted at their worst encoding, 3× or 6× their bytes).
const RESERVED_BYTES_PER_ENTRY: usize = 4096;
/// Room for the result's framing and a few errors, whatever `maxEntries` says.
const RESERVED_BASE_BYTES: usize = 64 * 1024;

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
    let max_result_bytes = usize::try_from(options.max_entries)
        .unwrap_or(usize::MAX)
        .saturating_mul(RESERVED_BYTES_PER_ENTRY)
        .saturating_add(RESERVED_BASE_BYTES)
        .min(MAX_WALK_RESULT_BYTES);
    // Reserved before walking (docs/protocol.md §3): the walk never builds more.
    room.reserve(max_result_bytes).await?;
    let limits = WalkLimits {
        max_depth: options.max_depth,
        max_directories: options.max_directories,
        max_entries: options.max_entries,
        follow_directory_links: options.follow_directory_symlinks,
        prune_hidden_directories: options.prune_hidden_directories.unwrap_or(false),
        max_result_bytes,
        bytes_per_path_byte: match form {
            // Percent-encoding triples a byte at worst.
            PathForm::FileUri => 3,
            // A control byte escapes as \u00XX in JSON.
            PathForm::Plain => 6,
        },
    };
    let result = blocking(fs, move |fs| {
        let walked = fs::walk_tree(fs, &top, limits).map_err(io_error)?;
        let render = |path: &std::path::Path| form.render(path.as_os_str().as_bytes());
        let entries: Vec<WalkEntry> = walked
            .entries
            .into_iter()
            .map(|found| {
                let path = render(&found.path);
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
        Ok(result)
    })
    .await?;
    Ok(PartialReply::new(&result))
}
