//! `environment/*` methods (docs/protocol.md §7, last line).

use serde::{Deserialize, Serialize};

use crate::method::{Call, Method};
use crate::path::WirePath;

/// `environment/info` takes no params (an object, whose fields are ignored, or none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentInfoParams {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentInfo {
    /// The shell the server would use.
    pub shell: Shell,
    /// 2026-08: the server's working directory, a `file:` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<WirePath>,
    /// 2026-08: the temporary directory, a `file:` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<WirePath>,
    /// 2026-08: every temporary directory, `file:` URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_directories: Option<Vec<WirePath>>,
    /// 2026-08: codex feature flags; all `false` from our server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<EnvironmentFeatures>,
}

/// 2026-08: codex feature flags of `environment/info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentFeatures {
    #[serde(default)]
    pub network_proxy_launch: bool,
    #[serde(default)]
    pub capability_discovery_sandbox: bool,
    #[serde(default)]
    pub environment_config_read: bool,
    #[serde(default)]
    pub http_header_env_vars: bool,
    #[serde(default)]
    pub sandboxed_file_streaming: bool,
    #[serde(default)]
    pub shell_snapshot_v2: bool,
}

/// 2026-08: `environment/status` takes no params.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentStatusParams {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    /// `"ready"`.
    pub status: String,
}

impl Call for EnvironmentStatusParams {
    const METHOD: Method = Method::EnvironmentStatus;
    type Result = EnvironmentStatus;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shell {
    pub name: String,
    pub path: String,
}

impl Call for EnvironmentInfoParams {
    const METHOD: Method = Method::EnvironmentInfo;
    type Result = EnvironmentInfo;
}
