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
    ReadFileParams => FsReadFile, ReadFileResult { path: WirePath, }
);
fs_params!(
    /// Creates or truncates.
    WriteFileParams => FsWriteFile, Empty { path: WirePath, data_base64: Base64Bytes, }
);
fs_params!(CreateDirectoryParams => FsCreateDirectory, Empty {
    path: WirePath,
    #[serde(default = "yes")]
    recursive: bool,
});
fs_params!(GetMetadataParams => FsGetMetadata, Metadata { path: WirePath, });
fs_params!(ReadDirectoryParams => FsReadDirectory, ReadDirectoryResult { path: WirePath, });
fs_params!(
    /// Removes a link, never its target.
    RemoveParams => FsRemove, Empty {
        path: WirePath,
        #[serde(default = "yes")]
        recursive: bool,
        #[serde(default = "yes")]
        force: bool,
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
