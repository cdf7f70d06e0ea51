//! The handshake (docs/protocol.md §4): `initialize` and the `initialized` notification.

use serde::{Deserialize, Serialize};

use crate::capabilities::Capabilities;
use crate::method::{Call, Method, NotificationMethod, Notify};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub client_name: String,
    /// Resume this detached session instead of creating one (§5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    pub session_id: String,
    /// [ext] Absent from servers that do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<ServerInfo>,
    /// [ext] §9; absent from servers that advertise nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
}

impl Call for InitializeParams {
    const METHOD: Method = Method::Initialize;
    type Result = InitializeResult;
}

/// `initialized` takes any params; we send `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initialized {}

impl Notify for Initialized {
    const METHOD: NotificationMethod = NotificationMethod::Initialized;
}
