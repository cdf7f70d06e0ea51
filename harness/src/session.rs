//! A handshaken session and typed helpers for processes: start, write, signal, and
//! read to the end with `process/read`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::error::{HarnessError, Result};
use crate::server::ExecServer;

/// A process id chosen by the harness (or by you, with [`ProcessSpec::id`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessId(pub String);

impl AsRef<str> for ProcessId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a process wrote, by stream, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Bytes of the `stdout` stream.
    pub stdout: Vec<u8>,
    /// Bytes of the `stderr` stream.
    pub stderr: Vec<u8>,
    /// Bytes of the `pty` stream (processes started with `tty`).
    pub pty: Vec<u8>,
    /// The exit code (128 + N for a signal), once known.
    pub exit_code: Option<i32>,
}

impl ProcessOutput {
    /// `stdout` as (lossy) UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// `stderr` as (lossy) UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How to start a process: argv plus options. Defaults: a harness-chosen id, the
/// test's current directory, `envPolicy {inherit: "core"}` (PATH, HOME, … from the
/// server), no tty, no stdin.
///
/// ```
/// use exec_server_harness::ProcessSpec;
/// let spec = ProcessSpec::new(["cat"]).id("cat-1").pipe_stdin(true).env("LANG", "C");
/// # let _ = spec;
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    id: Option<String>,
    params: Map<String, Value>,
    env: BTreeMap<String, String>,
}

impl ProcessSpec {
    /// A spec for `argv` with the defaults above.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        let cwd = std::env::current_dir()
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".to_owned());
        let mut params = Map::new();
        params.insert("argv".into(), json!(argv));
        params.insert("cwd".into(), json!(cwd));
        params.insert("envPolicy".into(), json!({"inherit": "core"}));
        Self {
            id: None,
            params,
            env: BTreeMap::new(),
        }
    }

    /// Uses this `processId` instead of a generated one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The working directory (absolute).
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.params.insert("cwd".into(), json!(cwd.into()));
        self
    }

    /// One variable of `env` (overlaid last on the policy's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Replaces `envPolicy`; `None` makes the child's environment exactly `env`.
    pub fn env_policy(mut self, policy: Option<Value>) -> Self {
        match policy {
            Some(policy) => self.params.insert("envPolicy".into(), policy),
            None => self.params.remove("envPolicy"),
        };
        self
    }

    /// Runs the process on a PTY (24×80); output arrives on the `pty` stream.
    pub fn tty(mut self, tty: bool) -> Self {
        self.params.insert("tty".into(), json!(tty));
        self
    }

    /// Gives the process a writable stdin pipe.
    pub fn pipe_stdin(mut self, pipe_stdin: bool) -> Self {
        self.params.insert("pipeStdin".into(), json!(pipe_stdin));
        self
    }

    /// Overrides `argv[0]` as the process sees it.
    pub fn arg0(mut self, arg0: impl Into<String>) -> Self {
        self.params.insert("arg0".into(), json!(arg0.into()));
        self
    }

    /// Any other param, as raw JSON.
    pub fn param(mut self, key: impl Into<String>, value: Value) -> Self {
        self.params.insert(key.into(), value);
        self
    }

    fn into_params(self, process_id: &str) -> Value {
        let mut params = self.params;
        params.insert("processId".into(), json!(process_id));
        params.insert("env".into(), json!(self.env));
        Value::Object(params)
    }
}

/// A session on an [`ExecServer`] connection, after `initialize` and `initialized`.
#[derive(Clone)]
pub struct Session {
    server: ExecServer,
    id: String,
    initialize_result: Value,
}

impl Session {
    pub(crate) fn new(server: ExecServer, id: String, initialize_result: Value) -> Self {
        Self {
            server,
            id,
            initialize_result,
        }
    }

    /// The server-assigned session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole `initialize` result (`serverInfo`, `capabilities`, …).
    pub fn initialize_result(&self) -> &Value {
        &self.initialize_result
    }

    /// The server this session lives on.
    pub fn server(&self) -> &ExecServer {
        &self.server
    }

    /// Starts `argv` with the [`ProcessSpec`] defaults.
    pub async fn start<I, S>(&self, argv: I) -> Result<ProcessId>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.start_with(ProcessSpec::new(argv)).await
    }

    /// Starts a process described by `spec`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use exec_server_harness::{exec_server, ProcessSpec};
    /// let server = exec_server().await?;
    /// let session = server.initialize("doc").await?;
    /// let pid = session.start_with(ProcessSpec::new(["cat"]).pipe_stdin(true)).await?;
    /// session.write(&pid, b"ping").await?;
    /// session.close_stdin(&pid).await?;
    /// assert_eq!(session.read_to_end(&pid).await?.stdout, b"ping");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with(&self, spec: ProcessSpec) -> Result<ProcessId> {
        let id = spec.id.clone().unwrap_or_else(|| {
            format!(
                "proc-{}",
                self.server
                    .inner
                    .next_process
                    .fetch_add(1, Ordering::Relaxed)
            )
        });
        self.server
            .call("process/start", spec.into_params(&id))
            .await?;
        Ok(ProcessId(id))
    }

    /// Writes to stdin; returns the status (`accepted`, `stdinClosed`, …).
    pub async fn write(&self, process_id: impl AsRef<str>, data: &[u8]) -> Result<String> {
        self.write_params(process_id.as_ref(), data, false).await
    }

    /// Closes stdin (the child sees EOF).
    pub async fn close_stdin(&self, process_id: impl AsRef<str>) -> Result<String> {
        self.write_params(process_id.as_ref(), b"", true).await
    }

    async fn write_params(&self, process_id: &str, data: &[u8], close: bool) -> Result<String> {
        let params =
            json!({"processId": process_id, "chunk": BASE64.encode(data), "closeStdin": close});
        let result = self.server.call("process/write", params).await?;
        Ok(result["status"].as_str().unwrap_or_default().to_owned())
    }

    /// `process/terminate`; returns whether it was still running.
    pub async fn terminate(&self, process_id: impl AsRef<str>) -> Result<bool> {
        let result = self
            .server
            .call(
                "process/terminate",
                json!({"processId": process_id.as_ref()}),
            )
            .await?;
        Ok(result["running"].as_bool().unwrap_or(false))
    }

    /// `process/signal` with a signal name (`interrupt`, `terminate`, …).
    pub async fn signal(&self, process_id: impl AsRef<str>, signal: &str) -> Result<()> {
        let params = json!({"processId": process_id.as_ref(), "signal": signal});
        self.server.call("process/signal", params).await.map(drop)
    }

    /// One `process/read` call; returns the raw result.
    pub async fn read(
        &self,
        process_id: impl AsRef<str>,
        after_seq: u64,
        wait_ms: u64,
    ) -> Result<Value> {
        let params =
            json!({"processId": process_id.as_ref(), "afterSeq": after_seq, "waitMs": wait_ms});
        self.server.call("process/read", params).await
    }

    /// Reads with `process/read` until the process is closed, within the default deadline.
    pub async fn read_to_end(&self, process_id: impl AsRef<str>) -> Result<ProcessOutput> {
        read_to_end(
            &self.server,
            process_id.as_ref(),
            self.server.default_wait(),
        )
        .await
    }

    /// Like [`read_to_end`](Self::read_to_end) with an explicit deadline.
    pub async fn read_to_end_within(
        &self,
        process_id: impl AsRef<str>,
        within: Duration,
    ) -> Result<ProcessOutput> {
        read_to_end(&self.server, process_id.as_ref(), within).await
    }
}

/// Pull-reads every retained chunk until `closed`. Fails if retention dropped output
/// the reader had not seen, since the result would not be the whole output.
pub(crate) async fn read_to_end(
    server: &ExecServer,
    process_id: &str,
    within: Duration,
) -> Result<ProcessOutput> {
    let deadline = Instant::now() + within;
    let mut output = ProcessOutput::default();
    let mut after_seq = 0u64;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HarnessError::Timeout {
                expected: format!("process {process_id} to close"),
                waited: within,
                arrived: format!(
                    "{} stdout, {} stderr, {} pty bytes; exit code {:?}",
                    output.stdout.len(),
                    output.stderr.len(),
                    output.pty.len(),
                    output.exit_code
                ),
            });
        }
        let wait_ms = remaining.as_millis().min(1_000) as u64;
        let params = json!({"processId": process_id, "afterSeq": after_seq, "waitMs": wait_ms});
        let result = server.call("process/read", params).await?;
        if let Some(first_retained) = result.get("firstRetainedSeq").and_then(Value::as_u64)
            && after_seq + 1 < first_retained
        {
            return Err(HarnessError::Protocol(format!(
                "output of {process_id} was lost: seqs {}..{first_retained} are no longer retained",
                after_seq + 1
            )));
        }
        let chunks = result
            .get("chunks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for chunk in &chunks {
            let data = chunk
                .get("chunk")
                .and_then(Value::as_str)
                .and_then(|text| BASE64.decode(text).ok())
                .ok_or_else(|| {
                    HarnessError::Protocol(format!("bad chunk in process/read: {chunk}"))
                })?;
            match chunk.get("stream").and_then(Value::as_str) {
                Some("stdout") => output.stdout.extend(data),
                Some("stderr") => output.stderr.extend(data),
                Some("pty") => output.pty.extend(data),
                other => return Err(HarnessError::Protocol(format!("unknown stream {other:?}"))),
            }
        }
        if let Some(code) = result.get("exitCode").and_then(Value::as_i64) {
            output.exit_code = i32::try_from(code).ok();
        }
        let next_seq = result
            .get("nextSeq")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                HarnessError::Protocol(format!("process/read without nextSeq: {result}"))
            })?;
        after_seq = next_seq.saturating_sub(1);
        if chunks.is_empty() && result.get("closed") == Some(&Value::Bool(true)) {
            return Ok(output);
        }
    }
}
