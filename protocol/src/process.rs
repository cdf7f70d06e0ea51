//! `process/*` methods and their notifications (docs/protocol.md §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bytes::Base64Bytes;
use crate::method::{Call, Method, NotificationMethod, Notify};
use crate::path::WirePath;
use crate::Empty;

fn is_false(value: &bool) -> bool {
    !*value
}

/// `process/start` (§6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
    /// Non-empty; `argv[0]` is resolved by the OS, no shell.
    pub argv: Vec<String>,
    pub cwd: WirePath,
    /// Without `envPolicy`, exactly the child's environment; with it, an overlay.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub pipe_stdin: bool,
    /// Overrides `argv[0]` as the child sees it.
    #[serde(default)]
    pub arg0: Option<String>,
    #[serde(default)]
    pub env_policy: Option<EnvPolicy>,
    /// 2026-08: upstream's sandbox profile (docs/protocol.md §7's rule applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Value>,
    /// 2026-08, codex-specific: ignored when null or absent, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_snapshot: Option<Value>,
    /// 2026-08, codex-specific: ignored when null or absent, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_network: Option<Value>,
    /// 2026-08, codex-specific: ignored when null or absent, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_managed_network: Option<Value>,
    /// 2026-08, codex-specific: ignored when null or absent, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_proxy: Option<Value>,
}

impl StartParams {
    /// A start with an empty environment, no tty, stdin `/dev/null`.
    pub fn new<I, S>(process_id: impl Into<String>, argv: I, cwd: impl Into<WirePath>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            process_id: process_id.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
            tty: false,
            pipe_stdin: false,
            arg0: None,
            env_policy: None,
            sandbox: None,
            shell_snapshot: None,
            managed_network: None,
            enforce_managed_network: None,
            network_proxy: None,
        }
    }
}

/// Which of the server's variables a child inherits (§6.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    /// PATH SHELL TMPDIR TEMP TMP HOME LANG LC_ALL LC_CTYPE LOGNAME USER.
    #[default]
    Core,
    All,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    #[serde(default)]
    pub inherit: Inherit,
    /// Keep names matching `*KEY*`, `*SECRET*`, `*TOKEN*`.
    #[serde(default)]
    pub ignore_default_excludes: bool,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub include_only: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartResult {
    pub process_id: String,
    /// 2026-08: the sandbox the process runs in; `"none"` from our server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_type: Option<String>,
}

impl Call for StartParams {
    const METHOD: Method = Method::ProcessStart;
    type Result = StartResult;
}

/// `process/read` (§6.3): a long-poll for retained output after `afterSeq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
    #[serde(default)]
    pub after_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub wait_ms: u64,
}

/// Which output stream a chunk came from; `pty` for every chunk of a tty process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

impl Stream {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Pty => "pty",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    pub seq: u64,
    pub stream: Stream,
    pub chunk: Base64Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub chunks: Vec<OutputChunk>,
    /// Last returned seq + 1; with no chunks, the next unassigned seq.
    pub next_seq: u64,
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub closed: bool,
    /// `null` from a server; clients use it to report transport loss.
    pub failure: Option<String>,
    /// [ext] The oldest seq still retained: below it, output was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_retained_seq: Option<u64>,
    /// [ext] The exit event's seq once the exit is known.
    #[serde(default)]
    pub exited_seq: Option<u64>,
    /// [ext] The close event's seq once the process is closed.
    #[serde(default)]
    pub closed_seq: Option<u64>,
    /// 2026-08: whether a sandbox denied something; `false` from our server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_denied: Option<bool>,
}

impl Call for ReadParams {
    const METHOD: Method = Method::ProcessRead;
    type Result = ReadResult;
}

/// `process/write` (§6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
    pub chunk: Base64Bytes,
    /// [ext] Close stdin after writing `chunk` (which may be empty).
    #[serde(default, skip_serializing_if = "is_false")]
    pub close_stdin: bool,
    /// 2026-08: names this write, so that a re-sent copy is not written twice
    /// (non-empty, at most [`crate::MAX_ID_BYTES`] bytes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::optional_write_id"
    )]
    pub write_id: Option<String>,
}

/// Results, not errors: a write to a process that cannot take it says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    /// Queued, in order.
    Accepted,
    UnknownProcess,
    Starting,
    /// No writable stdin, or already closed.
    StdinClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub status: WriteStatus,
}

impl Call for WriteParams {
    const METHOD: Method = Method::ProcessWrite;
    type Result = WriteResult;
}

/// Signals a client may send by name; `interrupt` is upstream's, the rest [ext].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalName {
    Interrupt,
    Terminate,
    Kill,
    Hangup,
    Quit,
}

impl SignalName {
    pub const ALL: [SignalName; 5] = [
        SignalName::Interrupt,
        SignalName::Terminate,
        SignalName::Kill,
        SignalName::Hangup,
        SignalName::Quit,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SignalName::Interrupt => "interrupt",
            SignalName::Terminate => "terminate",
            SignalName::Kill => "kill",
            SignalName::Hangup => "hangup",
            SignalName::Quit => "quit",
        }
    }
}

impl std::fmt::Display for SignalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `process/signal` (§6.5) → `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
    pub signal: SignalName,
}

impl Call for SignalParams {
    const METHOD: Method = Method::ProcessSignal;
    type Result = Empty;
}

/// `process/terminate` (§6.5): SIGKILL to the whole tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateResult {
    /// Whether the direct child was still running.
    pub running: bool,
}

impl Call for TerminateParams {
    const METHOD: Method = Method::ProcessTerminate;
    type Result = TerminateResult;
}

/// [ext] `process/resize` (§6.5) → `{}`, for tty processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    #[serde(deserialize_with = "crate::capped_id")]
    pub process_id: String,
    pub rows: u16,
    pub cols: u16,
}

impl Call for ResizeParams {
    const METHOD: Method = Method::ProcessResize;
    type Result = Empty;
}

/// `process/output` (§6.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOutput {
    pub process_id: String,
    pub seq: u64,
    pub stream: Stream,
    pub chunk: Base64Bytes,
}

impl Notify for ProcessOutput {
    const METHOD: NotificationMethod = NotificationMethod::ProcessOutput;
}

/// `process/exited` (§6.2): sent when the direct child is reaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessExited {
    pub process_id: String,
    pub seq: u64,
    /// 128 + N for a child killed by signal N.
    pub exit_code: i32,
    /// [ext] The killing signal's name, e.g. `"SIGKILL"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// 2026-08: whether a sandbox denied something; `false` from our server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_denied: Option<bool>,
}

impl Notify for ProcessExited {
    const METHOD: NotificationMethod = NotificationMethod::ProcessExited;
}

/// `process/closed` (§6.2): exited and every stream at EOF; the last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessClosed {
    pub process_id: String,
    pub seq: u64,
}

impl Notify for ProcessClosed {
    const METHOD: NotificationMethod = NotificationMethod::ProcessClosed;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode_params;

    #[test]
    fn ids_longer_than_the_cap_are_refused_naming_the_field() {
        let long = "x".repeat(crate::MAX_ID_BYTES + 1);
        let err = decode_params::<TerminateParams>(json!({"processId": long})).unwrap_err();
        assert_eq!(err.code, crate::code::INVALID_PARAMS);
        assert!(err.message.contains("processId"), "{}", err.message);
    }

    #[test]
    fn bad_base64_in_a_write_names_the_chunk() {
        let err =
            decode_params::<WriteParams>(json!({"processId": "p", "chunk": "%%"})).unwrap_err();
        assert!(
            err.message.starts_with("invalid params: chunk: not base64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn start_params_round_trip_with_upstreams_field_names() {
        let mut params = StartParams::new("p", ["ls", "-l"], "/tmp");
        params.env_policy = Some(EnvPolicy::default());
        let value = serde_json::to_value(&params).expect("serialize");
        assert_eq!(value["processId"], "p");
        assert_eq!(value["pipeStdin"], false);
        assert_eq!(value["envPolicy"]["inherit"], "core");
        assert_eq!(
            serde_json::from_value::<StartParams>(value).expect("decode"),
            params
        );
    }
}
