//! Typed params and results of every method, as they travel on the wire
//! (camelCase, base64 for bytes). Handlers decode into these; nothing else does I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::MAX_ID_BYTES;

/// A client-chosen name (`processId`, `clientName`) of at most `MAX_ID_BYTES` bytes:
/// ids are echoed in every notification and keyed in maps, so their size is capped.
fn capped_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let id = String::deserialize(deserializer)?;
    if id.len() > MAX_ID_BYTES {
        return Err(serde::de::Error::custom(format!(
            "must be at most {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    Ok(id)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    #[serde(deserialize_with = "capped_id")]
    pub client_name: String,
    #[serde(default)]
    pub resume_session_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
    pub argv: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub pipe_stdin: bool,
    #[serde(default)]
    pub arg0: Option<String>,
    #[serde(default)]
    pub env_policy: Option<EnvPolicy>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    #[default]
    Core,
    All,
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    #[serde(default)]
    pub inherit: Inherit,
    #[serde(default)]
    pub ignore_default_excludes: bool,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub include_only: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIdParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
    #[serde(default)]
    pub after_seq: u64,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
    pub chunk: String,
    #[serde(default)]
    pub close_stdin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
    pub signal: SignalName,
}

/// Signals a client may send by name; `interrupt` is upstream's, the rest are ours.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignalName {
    Interrupt,
    Terminate,
    Kill,
    Hangup,
    Quit,
}

impl SignalName {
    pub const ALL: [&'static str; 5] = ["interrupt", "terminate", "kill", "hangup", "quit"];

    pub fn to_signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            SignalName::Interrupt => Signal::SIGINT,
            SignalName::Terminate => Signal::SIGTERM,
            SignalName::Kill => Signal::SIGKILL,
            SignalName::Hangup => Signal::SIGHUP,
            SignalName::Quit => Signal::SIGQUIT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    #[serde(deserialize_with = "capped_id")]
    pub process_id: String,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    Accepted,
    UnknownProcess,
    Starting,
    StdinClosed,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathParams {
    pub path: String,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    pub path: String,
    pub data_base64: String,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDirectoryParams {
    pub path: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    pub path: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default = "yes")]
    pub force: bool,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    pub source_path: String,
    pub destination_path: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinParams {
    pub base_path: String,
    pub path: String,
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}
