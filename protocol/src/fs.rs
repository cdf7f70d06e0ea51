//! `fs/*` methods (docs/protocol.md §7). Every request may carry upstream's `sandbox`
//! object; a server decides what to do with it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bytes::Base64Bytes;
use crate::method::{Call, Method};
use crate::path::WirePath;
use crate::Empty;

fn yes() -> bool {
    true
}

/// Declares a params struct whose fields are the given ones plus `sandbox`.
macro_rules! fs_params {
    ($(#[$meta:meta])* $name:ident => $method:ident, $result:ty { $($(#[$fmeta:meta])* $field:ident: $type:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $type,)*
            /// Upstream's sandbox profile; `None` runs unconfined.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sandbox: Option<Value>,
        }

        impl Call for $name {
            const METHOD: Method = Method::$method;
            type Result = $result;
        }
    };
}

fs_params!(
    /// Files over 512 MiB are refused.
    ReadFileParams => FsReadFile, ReadFileResult {
        path: WirePath,
        /// 2026-08: `false` refuses a path with a symbolic link anywhere in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follow_symlinks: Option<bool>,
    }
);
fs_params!(
    /// Creates or truncates.
    WriteFileParams => FsWriteFile, Empty {
        path: WirePath,
        data_base64: Base64Bytes,
        /// 2026-08: `false` refuses a path with a symbolic link anywhere in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follow_symlinks: Option<bool>,
    }
);
fs_params!(CreateDirectoryParams => FsCreateDirectory, Empty {
    path: WirePath,
    #[serde(default = "yes")]
    recursive: bool,
    /// 2026-08: `false` refuses a path with a symbolic link anywhere in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follow_symlinks: Option<bool>,
});
fs_params!(GetMetadataParams => FsGetMetadata, Metadata {
    path: WirePath,
    /// 2026-08: `false` refuses a path with a symbolic link anywhere in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follow_symlinks: Option<bool>,
});
fs_params!(ReadDirectoryParams => FsReadDirectory, ReadDirectoryResult { path: WirePath, });
fs_params!(
    /// Removes a link, never its target.
    RemoveParams => FsRemove, Empty {
        path: WirePath,
        #[serde(default = "yes")]
        recursive: bool,
        #[serde(default = "yes")]
        force: bool,
        /// 2026-08: `false` refuses a path with a symbolic link anywhere in it, and
        /// with `recursive` is unsupported (-32603).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follow_symlinks: Option<bool>,
    }
);
fs_params!(CopyParams => FsCopy, Empty {
    source_path: WirePath,
    destination_path: WirePath,
    #[serde(default)]
    recursive: bool,
});
fs_params!(CanonicalizeParams => FsCanonicalize, PathResult { path: WirePath, });
fs_params!(
    /// [ext] `basePath` joined with `path` (which may be relative), normalised lexically.
    JoinParams => FsJoin, PathResult { base_path: WirePath, path: WirePath, }
);
fs_params!(
    /// [ext]
    ParentParams => FsParent, ParentResult { path: WirePath, }
);
fs_params!(
    /// 2026-08: opens a file for [`ReadBlockParams`]; `handleId` is chosen by the client,
    /// unique in its session.
    OpenParams => FsOpen, OpenResult {
        #[serde(deserialize_with = "crate::handle_id")]
        handle_id: String,
        path: WirePath,
    }
);
fs_params!(
    /// 2026-08: a bounded, breadth-first listing of the tree under `path`.
    WalkParams => FsWalk, WalkResult { path: WirePath, options: WalkOptions, }
);

/// 2026-08: `len` bytes from `offset` of an open file (`len` in 1..=1 MiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadBlockParams {
    #[serde(deserialize_with = "crate::handle_id")]
    pub handle_id: String,
    pub offset: u64,
    pub len: u64,
}

impl Call for ReadBlockParams {
    const METHOD: Method = Method::FsReadBlock;
    type Result = ReadBlockResult;
}

/// 2026-08: closes a handle; an unknown one is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseParams {
    #[serde(deserialize_with = "crate::handle_id")]
    pub handle_id: String,
}

impl Call for CloseParams {
    const METHOD: Method = Method::FsClose;
    type Result = Empty;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenResult {
    pub handle_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBlockResult {
    /// Empty at or past the end.
    pub chunk: Base64Bytes,
    pub eof: bool,
}

/// Upstream's maximums for [`WalkOptions`]; a request above one is refused (-32600).
pub const MAX_WALK_DEPTH: u64 = 64;
pub const MAX_WALK_DIRECTORIES: u64 = 10_000;
pub const MAX_WALK_ENTRIES: u64 = 50_000;
/// The most `fs/readBlock` reads at once.
pub const MAX_READ_BLOCK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkOptions {
    pub max_depth: u64,
    pub max_directories: u64,
    pub max_entries: u64,
    pub follow_directory_symlinks: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_hidden_directories: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkResult {
    /// Breadth-first; each directory's entries sorted by name.
    pub entries: Vec<WalkEntry>,
    /// Subdirectories that could not be read.
    pub errors: Vec<WalkError>,
    /// `maxEntries` or `maxDirectories` cut the walk short.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkEntry {
    /// In the form of the request's path.
    pub path: WirePath,
    pub kind: EntryKind,
}

/// What a walked entry is; a followed link to a directory is a `directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryKind {
    File,
    Directory,
    /// A device, socket or FIFO.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkError {
    pub path: WirePath,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileResult {
    pub data_base64: Base64Bytes,
}

/// Types follow links; `isSymlink` is the path's own; times are 0 when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub is_directory: bool,
    pub is_file: bool,
    pub is_symlink: bool,
    pub created_at_ms: u64,
    pub modified_at_ms: u64,
    /// 2026-08: bytes (of the target, for a link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirectoryResult {
    pub entries: Vec<DirectoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub file_name: String,
    pub is_directory: bool,
    pub is_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResult {
    pub path: WirePath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentResult {
    /// `None` for the root.
    pub path: Option<WirePath>,
}
