//! [ext] What a server advertises in `initialize` (docs/protocol.md §9). Every field is
//! optional when decoding: a server that advertises nothing is not wrong.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Protocol revisions served, e.g. `["2026-06"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions: Option<Vec<String>>,
    /// `"ws"`, `"stdio"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessCapabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionCapabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsCapabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthCapabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitCapabilities>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Signal names `process/signal` accepts (strings: a server may know more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_stdin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_retained_seq: Option<bool>,
    /// `"cgroup"` or `"processGroup"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_retention_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCapabilities {
    /// Whether this connection's session can be resumed (false on stdio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsCapabilities {
    /// Whether `--fs-root` confines the file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthCapabilities {
    /// Whether upgrades need a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retained_bytes: Option<u64>,
    /// Open `fs/open` handles per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_handles: Option<u64>,
}
