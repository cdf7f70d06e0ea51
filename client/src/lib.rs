//! `ExecServerClient`: a typed client for exec-server over a websocket URL or a stdio
//! command (PROTOCOL.md §8).
//!
//! One reader task per connection files responses by id and notifications by process;
//! each process's events reach the caller in `seq` order whatever order they arrived
//! in. A lost transport fails every pending and later call with "exec-server transport
//! disconnected" and ends every event stream with [`ProcessEvent::Failed`] — unless
//! reconnect is enabled (websocket only): then the client resumes its session, re-sends
//! pending reads, reports mutating calls whose response was lost, and re-reads every
//! process from its last seen seq so no retained output is lost.
//!
//! ```no_run
//! # async fn demo() -> Result<(), exec_client::ClientError> {
//! use exec_client::{ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, StartRequest};
//! let transport = ExecServerTransport::WebSocketUrl("ws://127.0.0.1:8765".into());
//! let client = ExecServerClient::connect(transport, ClientOptions::default()).await?;
//! let mut process = client.start(StartRequest::new(["echo", "hi"])).await?;
//! while let Some(event) = process.next_event().await {
//!     if let ProcessEvent::Output { data, .. } = event {
//!         print!("{}", String::from_utf8_lossy(&data));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod environments;
pub mod teardown;
mod token;
pub mod transport;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

pub use token::{BearerToken, TokenError, MAX_TOKEN_BYTES};
pub use transport::{ExecServerTransport, StdioChild};
use wire::{Frame, FrameReader, FrameWriter};

pub const DISCONNECTED: &str = "exec-server transport disconnected";

/// The environment variable `exec` reads a bearer token from (never a command-line value).
pub const TOKEN_VAR: &str = "EXEC_SERVER_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("exec-server transport disconnected")]
    Disconnected,
    /// The connection dropped after a mutating request was sent and before its answer
    /// came; it may or may not have taken effect. It is never re-sent.
    #[error("{method}: the connection dropped before the response; the request may or may not have taken effect")]
    ResponseLost { method: String },
    #[error("{method} failed: {message} ({code})")]
    Server {
        method: String,
        code: i64,
        message: String,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as `clientName` in `initialize`.
    pub client_name: String,
    /// Limit for opening the transport.
    pub connect_timeout: Duration,
    /// Limit for the `initialize` answer.
    pub initialize_timeout: Duration,
    /// Sent as `Authorization: Bearer …` on the websocket upgrade (the server's
    /// `--auth-token-file`); unused on stdio.
    pub bearer_token: Option<BearerToken>,
    /// Websocket only: after a transport loss, keep trying to resume the session for
    /// this long. `None` (the default) fails everything at the first loss.
    pub reconnect: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: "exec-server-client".into(),
            connect_timeout: Duration::from_secs(10),
            initialize_timeout: Duration::from_secs(10),
            bearer_token: None,
            reconnect: None,
        }
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
    Pty,
}

/// One event of a process, delivered in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Output {
        seq: u64,
        stream: OutputStream,
        data: Vec<u8>,
    },
    Exited {
        seq: u64,
        exit_code: i32,
        signal: Option<String>,
    },
    /// The last event: the process exited and all its output has been delivered.
    Closed { seq: u64 },
    /// After a reconnect, these seqs were no longer retained by the server.
    Lost { from_seq: u64, to_seq: u64 },
    /// The transport failed; no further events will come.
    Failed { reason: String },
}

/// What to start. Defaults: cwd `/`, `envPolicy {inherit: "core"}`, no tty, no stdin.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub process_id: Option<String>,
    pub argv: Vec<String>,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub env_policy: Option<Value>,
    pub tty: bool,
    pub pipe_stdin: bool,
    pub arg0: Option<String>,
}

impl StartRequest {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            process_id: None,
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: "/".into(),
            env: BTreeMap::new(),
            env_policy: Some(json!({"inherit": "core"})),
            tty: false,
            pipe_stdin: false,
            arg0: None,
        }
    }
}

/// A started process: its id and its ordered event stream.
pub struct ProcessHandle {
    id: String,
    events: mpsc::UnboundedReceiver<ProcessEvent>,
}

impl ProcessHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event in `seq` order; `None` after `Closed` or `Failed`.
    pub async fn next_event(&mut self) -> Option<ProcessEvent> {
        self.events.recv().await
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadChunk {
    pub seq: u64,
    pub stream: OutputStream,
    #[serde(deserialize_with = "base64_bytes")]
    pub chunk: Vec<u8>,
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BASE64.decode(text).map_err(serde::de::Error::custom)
}

/// The result of `process/read`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub chunks: Vec<ReadChunk>,
    pub next_seq: u64,
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub closed: bool,
    pub failure: Option<String>,
    #[serde(default)]
    pub first_retained_seq: Option<u64>,
    /// The seq of the exit event once the exit is known; `None` from servers that do
    /// not send it (PROTOCOL.md §6.3).
    #[serde(default)]
    pub exited_seq: Option<u64>,
    /// The seq of the close event once the process is closed; `None` from servers that
    /// do not send it.
    #[serde(default)]
    pub closed_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub is_directory: bool,
    pub is_file: bool,
    pub is_symlink: bool,
    pub created_at_ms: u64,
    pub modified_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub file_name: String,
    pub is_directory: bool,
    pub is_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Shell {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EnvironmentInfo {
    pub shell: Shell,
}

/// Whether the client can send right now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    Connected,
    Reconnecting,
    Closed(String),
}

struct PendingCall {
    method: String,
    /// Kept for calls that are re-sent after a reconnect (reads only).
    replay: Option<Value>,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

/// Per process: the reorder buffer in front of its event stream.
struct Tracker {
    next_seq: u64,
    pending: BTreeMap<u64, ProcessEvent>,
    sender: mpsc::UnboundedSender<ProcessEvent>,
    /// The exit event has been received (delivered or buffered).
    exit_seen: bool,
    done: bool,
    /// `process/start` was answered. Until then a catch-up read may reach the server
    /// before the start does and find no such process; that is not a failure.
    started: bool,
}

impl Tracker {
    fn deliver(&mut self, seq: u64, event: ProcessEvent) {
        if self.done || seq < self.next_seq {
            return;
        }
        self.exit_seen |= matches!(event, ProcessEvent::Exited { .. });
        self.pending.insert(seq, event);
        self.flush();
    }

    /// Sends every buffered event that is next in line.
    fn flush(&mut self) {
        while let Some(event) = self.pending.remove(&self.next_seq) {
            self.next_seq += 1;
            self.send(event);
            if self.done {
                return;
            }
        }
    }

    fn send(&mut self, event: ProcessEvent) {
        if matches!(event, ProcessEvent::Closed { .. }) {
            self.done = true;
            self.pending.clear();
        }
        let _ = self.sender.send(event);
    }

    /// Seqs below `seq` can no longer be read: deliver what is buffered, report the rest lost.
    fn skip_to(&mut self, seq: u64) {
        while self.next_seq < seq && !self.done {
            match self.pending.remove(&self.next_seq) {
                Some(event) => {
                    self.next_seq += 1;
                    self.send(event);
                }
                None => {
                    let next_known = self
                        .pending
                        .range(self.next_seq..seq)
                        .next()
                        .map(|(known, _)| *known);
                    let to = next_known.unwrap_or(seq) - 1;
                    let from = self.next_seq;
                    self.next_seq = to + 1;
                    self.send(ProcessEvent::Lost {
                        from_seq: from,
                        to_seq: to,
                    });
                }
            }
        }
        self.flush();
    }

    /// Applies one catch-up read: the exit and close events whose seqs the server gave
    /// (PROTOCOL.md §6.3 `exitedSeq`, `closedSeq`) first, so a retention gap cannot
    /// swallow them, then the gap below `firstRetainedSeq`, then the chunks. `finished`:
    /// the read returned no chunk, so every chunk up to `nextSeq` has been read.
    fn catch_up(&mut self, mut read: ReadResult, finished: bool) {
        if let (Some(seq), Some(exit_code)) = (read.exited_seq, read.exit_code) {
            if read.exited && !self.exit_seen {
                self.deliver(seq, exited(seq, exit_code));
            }
        }
        if let Some(seq) = read.closed_seq.filter(|_| read.closed) {
            self.deliver(seq, ProcessEvent::Closed { seq });
        }
        if let Some(first) = read.first_retained_seq {
            if first > self.next_seq {
                self.skip_to(first);
            }
        }
        for chunk in std::mem::take(&mut read.chunks) {
            let (seq, stream, data) = (chunk.seq, chunk.stream, chunk.chunk);
            self.deliver(seq, ProcessEvent::Output { seq, stream, data });
        }
        if finished {
            self.infer_exit_and_close(&read);
        }
    }

    /// For a server that does not send `exitedSeq`/`closedSeq`: with every chunk read up
    /// to `read.next_seq` (the next seq the server will assign), the close is the seq
    /// just below it, and the exit is the one seq left that no chunk and no event has.
    fn infer_exit_and_close(&mut self, read: &ReadResult) {
        let closed_seq = (read.closed && read.closed_seq.is_none())
            .then(|| read.next_seq.checked_sub(1))
            .flatten()
            .filter(|seq| *seq >= self.next_seq);
        if read.exited && read.exited_seq.is_none() && !self.exit_seen {
            let exit = (self.next_seq..read.next_seq)
                .find(|seq| !self.pending.contains_key(seq) && Some(*seq) != closed_seq);
            if let (Some(seq), Some(exit_code)) = (exit, read.exit_code) {
                self.deliver(seq, exited(seq, exit_code));
            }
        }
        if let Some(seq) = closed_seq {
            self.deliver(seq, ProcessEvent::Closed { seq });
        }
    }

    fn fail(&mut self, reason: &str) {
        if !self.done {
            self.done = true;
            let _ = self.sender.send(ProcessEvent::Failed {
                reason: reason.to_owned(),
            });
        }
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    session_id: Option<String>,
    pending: HashMap<u64, PendingCall>,
    processes: HashMap<String, Tracker>,
    next_process: u64,
}

struct Inner {
    transport: ExecServerTransport,
    options: ClientOptions,
    writer: tokio::sync::Mutex<Option<FrameWriter>>,
    state: Mutex<State>,
    link: watch::Sender<Link>,
    child: Mutex<Option<StdioChild>>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.get_mut().ok().and_then(Option::take) {
            reader.abort();
        }
        // Dropping the guard terminates a stdio child.
        self.child.get_mut().ok().and_then(Option::take);
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn terminate_child(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            child.terminate();
        }
    }
}

/// A connected client. Cheap to clone; the connection (and a stdio child) ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct ExecServerClient {
    inner: Arc<Inner>,
}

impl ExecServerClient {
    /// Opens the transport and performs `initialize` + `initialized`.
    pub async fn connect(
        transport: ExecServerTransport,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let opened = tokio::time::timeout(
            options.connect_timeout,
            transport::open(&transport, options.bearer_token.as_ref()),
        )
        .await
        .map_err(|_| {
            ClientError::Timeout(format!("connecting within {:?}", options.connect_timeout))
        })?
        .map_err(|err| ClientError::Connect(err.to_string()))?;
        let inner = Arc::new(Inner {
            transport,
            options,
            writer: tokio::sync::Mutex::new(Some(opened.writer)),
            state: Mutex::new(State {
                next_id: 1,
                next_process: 1,
                ..State::default()
            }),
            link: watch::Sender::new(Link::Connected),
            child: Mutex::new(opened.child),
            reader: Mutex::new(None),
        });
        start_reader(&inner, opened.reader);
        let client = ExecServerClient { inner };
        let params = json!({"clientName": client.inner.options.client_name});
        let result = client.initialize(params).await?;
        let session_id = result
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ClientError::Protocol(format!("initialize result without sessionId: {result}"))
            })?;
        client.inner.state().session_id = Some(session_id.to_owned());
        client.notify("initialized", json!({})).await?;
        Ok(client)
    }

    async fn initialize(&self, params: Value) -> Result<Value, ClientError> {
        let timeout = self.inner.options.initialize_timeout;
        let answer =
            tokio::time::timeout(timeout, send_call(&self.inner, "initialize", params, false))
                .await;
        match answer {
            Ok(answer) => answer,
            Err(_) => {
                connection_lost(&self.inner, "initialize timed out", false);
                Err(ClientError::Timeout(format!(
                    "initialize within {timeout:?}"
                )))
            }
        }
    }

    /// The session id the server assigned.
    pub fn session_id(&self) -> Option<String> {
        self.inner.state().session_id.clone()
    }

    /// The pid of a stdio child, if this client spawned one.
    pub fn child_pid(&self) -> Option<u32> {
        self.inner
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(StdioChild::pid)
    }

    /// Sends a request and waits for its result. Reads are re-sent after a reconnect;
    /// other calls whose answer was lost fail with [`ClientError::ResponseLost`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        wait_until_connected(&self.inner).await?;
        send_call(&self.inner, method, params, method == "process/read").await
    }

    async fn notify(&self, method: &str, params: Value) -> Result<(), ClientError> {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string();
        send_frame(&self.inner, &message).await
    }

    /// Starts a process; its events arrive on the returned handle in `seq` order.
    pub async fn start(&self, request: StartRequest) -> Result<ProcessHandle, ClientError> {
        let (sender, events) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.inner.state();
            let id = request.process_id.clone().unwrap_or_else(|| {
                let n = state.next_process;
                state.next_process += 1;
                format!("client-{n}")
            });
            // A second start with a live id must not take the first one's events.
            if state.processes.contains_key(&id) {
                return Err(ClientError::Server {
                    method: "process/start".into(),
                    code: exec_protocol::code::INVALID_REQUEST,
                    message: format!("process {id} already exists"),
                });
            }
            // Registered before sending: notifications may beat the response.
            state.processes.insert(
                id.clone(),
                Tracker {
                    next_seq: 1,
                    pending: BTreeMap::new(),
                    sender,
                    exit_seen: false,
                    done: false,
                    started: false,
                },
            );
            id
        };
        let mut params = json!({
            "processId": id,
            "argv": request.argv,
            "cwd": request.cwd,
            "env": request.env,
            "tty": request.tty,
            "pipeStdin": request.pipe_stdin,
            "arg0": request.arg0,
        });
        if let Some(policy) = request.env_policy {
            params["envPolicy"] = policy;
        }
        if let Err(err) = self.call("process/start", params).await {
            self.inner.state().processes.remove(&id);
            return Err(err);
        }
        if let Some(tracker) = self.inner.state().processes.get_mut(&id) {
            tracker.started = true;
        }
        Ok(ProcessHandle { id, events })
    }

    pub async fn read(
        &self,
        process_id: &str,
        after_seq: u64,
        max_bytes: Option<u64>,
        wait: Duration,
    ) -> Result<ReadResult, ClientError> {
        let params = json!({"processId": process_id, "afterSeq": after_seq, "maxBytes": max_bytes, "waitMs": wait.as_millis() as u64});
        decode("process/read", self.call("process/read", params).await?)
    }

    /// Writes to stdin; returns the status (`accepted`, `stdinClosed`, …).
    pub async fn write(&self, process_id: &str, data: &[u8]) -> Result<String, ClientError> {
        self.write_params(process_id, data, false).await
    }

    /// Writes `data` then closes stdin (the child sees EOF).
    pub async fn close_stdin(&self, process_id: &str, data: &[u8]) -> Result<String, ClientError> {
        self.write_params(process_id, data, true).await
    }

    async fn write_params(
        &self,
        process_id: &str,
        data: &[u8],
        close: bool,
    ) -> Result<String, ClientError> {
        let params =
            json!({"processId": process_id, "chunk": BASE64.encode(data), "closeStdin": close});
        let result = self.call("process/write", params).await?;
        Ok(result
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Sends a signal by name: `interrupt`, `terminate`, `kill`, `hangup` or `quit`.
    pub async fn signal(&self, process_id: &str, signal: &str) -> Result<(), ClientError> {
        self.call(
            "process/signal",
            json!({"processId": process_id, "signal": signal}),
        )
        .await
        .map(drop)
    }

    /// Kills the process tree; returns whether it was still running.
    pub async fn terminate(&self, process_id: &str) -> Result<bool, ClientError> {
        let result = self
            .call("process/terminate", json!({"processId": process_id}))
            .await?;
        Ok(result
            .get("running")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    pub async fn resize(&self, process_id: &str, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.call(
            "process/resize",
            json!({"processId": process_id, "rows": rows, "cols": cols}),
        )
        .await
        .map(drop)
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let result = self.call("fs/readFile", json!({"path": path})).await?;
        let data = result
            .get("dataBase64")
            .and_then(Value::as_str)
            .unwrap_or_default();
        BASE64
            .decode(data)
            .map_err(|err| ClientError::Protocol(format!("fs/readFile: {err}")))
    }

    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), ClientError> {
        self.call(
            "fs/writeFile",
            json!({"path": path, "dataBase64": BASE64.encode(data)}),
        )
        .await
        .map(drop)
    }

    pub async fn create_directory(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        self.call(
            "fs/createDirectory",
            json!({"path": path, "recursive": recursive}),
        )
        .await
        .map(drop)
    }

    pub async fn get_metadata(&self, path: &str) -> Result<Metadata, ClientError> {
        decode(
            "fs/getMetadata",
            self.call("fs/getMetadata", json!({"path": path})).await?,
        )
    }

    pub async fn read_directory(&self, path: &str) -> Result<Vec<DirectoryEntry>, ClientError> {
        let mut result = self.call("fs/readDirectory", json!({"path": path})).await?;
        decode("fs/readDirectory", result["entries"].take())
    }

    pub async fn remove(
        &self,
        path: &str,
        recursive: bool,
        force: bool,
    ) -> Result<(), ClientError> {
        self.call(
            "fs/remove",
            json!({"path": path, "recursive": recursive, "force": force}),
        )
        .await
        .map(drop)
    }

    pub async fn copy(
        &self,
        source: &str,
        destination: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        let params =
            json!({"sourcePath": source, "destinationPath": destination, "recursive": recursive});
        self.call("fs/copy", params).await.map(drop)
    }

    pub async fn canonicalize(&self, path: &str) -> Result<String, ClientError> {
        let result = self.call("fs/canonicalize", json!({"path": path})).await?;
        decode("fs/canonicalize", result["path"].clone())
    }

    pub async fn join(&self, base: &str, path: &str) -> Result<String, ClientError> {
        let result = self
            .call("fs/join", json!({"basePath": base, "path": path}))
            .await?;
        decode("fs/join", result["path"].clone())
    }

    pub async fn parent(&self, path: &str) -> Result<Option<String>, ClientError> {
        let result = self.call("fs/parent", json!({"path": path})).await?;
        decode("fs/parent", result["path"].clone())
    }

    pub async fn environment_info(&self) -> Result<EnvironmentInfo, ClientError> {
        decode(
            "environment/info",
            self.call("environment/info", json!({})).await?,
        )
    }
}

fn decode<T: serde::de::DeserializeOwned>(method: &str, value: Value) -> Result<T, ClientError> {
    serde_json::from_value(value)
        .map_err(|err| ClientError::Protocol(format!("{method}: unexpected result: {err}")))
}

async fn wait_until_connected(inner: &Inner) -> Result<(), ClientError> {
    let mut link = inner.link.subscribe();
    loop {
        match &*link.borrow_and_update() {
            Link::Connected => return Ok(()),
            Link::Closed(_) => return Err(ClientError::Disconnected),
            Link::Reconnecting => {}
        }
        if link.changed().await.is_err() {
            return Err(ClientError::Disconnected);
        }
    }
}

async fn send_frame(inner: &Inner, message: &str) -> Result<(), ClientError> {
    let mut writer = inner.writer.lock().await;
    let Some(frames) = writer.as_mut() else {
        return Err(ClientError::Disconnected);
    };
    frames
        .send_text(message)
        .await
        .map_err(|_| ClientError::Disconnected)
}

async fn send_call(
    inner: &Arc<Inner>,
    method: &str,
    params: Value,
    replayable: bool,
) -> Result<Value, ClientError> {
    let (reply, answer) = oneshot::channel();
    let id = {
        let mut state = inner.state();
        let id = state.next_id;
        state.next_id += 1;
        let replay = replayable.then(|| params.clone());
        state.pending.insert(
            id,
            PendingCall {
                method: method.to_owned(),
                replay,
                reply,
            },
        );
        id
    };
    let message =
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    if send_frame(inner, &message).await.is_err() {
        connection_lost(inner, "sending failed", true);
    }
    answer.await.unwrap_or(Err(ClientError::Disconnected))
}

fn start_reader(inner: &Arc<Inner>, mut reader: FrameReader) {
    let weak = Arc::downgrade(inner);
    let task = tokio::spawn(async move {
        let reason = loop {
            let Some(frame) = reader.next_frame().await else {
                break "the server closed the connection";
            };
            let Some(inner) = weak.upgrade() else { return };
            if let Err(reason) = on_frame(&inner, frame) {
                inner.terminate_child();
                break reason;
            }
        };
        if let Some(inner) = weak.upgrade() {
            connection_lost(&inner, reason, true);
        }
    });
    if let Some(old) = inner
        .reader
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(task)
    {
        old.abort();
    }
}

/// Files one frame. An error ends the connection (and terminates a stdio child).
fn on_frame(inner: &Inner, frame: Frame) -> Result<(), &'static str> {
    let Frame::Text(text) = frame else {
        return Err("malformed message from the server");
    };
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&text) else {
        tracing::warn!(message = %text, "malformed message from exec-server");
        return Err("malformed message from the server");
    };
    match (
        message.get("method").and_then(Value::as_str),
        message.get("id"),
    ) {
        (Some(method), Some(_)) => {
            tracing::warn!(
                method,
                "exec-server sent a request; clients do not serve requests"
            );
            Err("unexpected request from the server")
        }
        (Some(method), None) => {
            on_notification(inner, method, message.get("params").unwrap_or(&Value::Null));
            Ok(())
        }
        (None, Some(id)) => {
            let Some(id) = id.as_u64() else {
                return Err("response with an id this client never sent");
            };
            let Some(call) = inner.state().pending.remove(&id) else {
                tracing::debug!(id, "response to no pending call");
                return Ok(());
            };
            let outcome = match (message.get("result"), message.get("error")) {
                (Some(result), None) => Ok(result.clone()),
                (_, Some(error)) => Err(ClientError::Server {
                    method: call.method.clone(),
                    code: error
                        .get("code")
                        .and_then(Value::as_i64)
                        .unwrap_or_default(),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }),
                (None, None) => Err(ClientError::Protocol(format!(
                    "{}: response without result",
                    call.method
                ))),
            };
            let _ = call.reply.send(outcome);
            Ok(())
        }
        (None, None) => Err("malformed message from the server"),
    }
}

fn on_notification(inner: &Inner, method: &str, params: &Value) {
    let (Some(process_id), Some(seq)) = (
        params.get("processId").and_then(Value::as_str),
        params.get("seq").and_then(Value::as_u64),
    ) else {
        tracing::debug!(method, "notification without processId/seq");
        return;
    };
    let event = match method {
        "process/output" => {
            let stream =
                serde_json::from_value(params["stream"].clone()).unwrap_or(OutputStream::Stdout);
            let data = params["chunk"]
                .as_str()
                .and_then(|text| BASE64.decode(text).ok())
                .unwrap_or_default();
            ProcessEvent::Output { seq, stream, data }
        }
        "process/exited" => ProcessEvent::Exited {
            seq,
            exit_code: params["exitCode"]
                .as_i64()
                .and_then(|code| i32::try_from(code).ok())
                .unwrap_or(-1),
            signal: params["signal"].as_str().map(str::to_owned),
        },
        "process/closed" => ProcessEvent::Closed { seq },
        _ => {
            tracing::debug!(method, "unknown notification");
            return;
        }
    };
    let mut state = inner.state();
    if let Some(tracker) = state.processes.get_mut(process_id) {
        tracker.deliver(seq, event);
        if tracker.done {
            // Dropping the sender ends the stream after `Closed`.
            state.processes.remove(process_id);
        }
    }
}

/// The transport is gone. With reconnect enabled on a websocket, resume in the
/// background; otherwise fail everything.
fn connection_lost(inner: &Arc<Inner>, reason: &str, may_reconnect: bool) {
    let reconnect = match (&inner.transport, inner.options.reconnect, may_reconnect) {
        (ExecServerTransport::WebSocketUrl(_), Some(window), true) => Some(window),
        _ => None,
    };
    let reconnect = reconnect.filter(|_| inner.state().session_id.is_some());
    // Decide and switch in one step, so a failing send and the reader cannot both act.
    let switched = inner.link.send_if_modified(|link| {
        if *link != Link::Connected {
            return false;
        }
        *link = match reconnect {
            Some(_) => Link::Reconnecting,
            None => Link::Closed(reason.to_owned()),
        };
        true
    });
    if !switched {
        // The connection of a resume attempt died before the resume finished: fail the
        // attempt's `initialize` now, so it is retried at once instead of waiting out
        // `initialize_timeout`, which can outlast the session's TTL.
        if *inner.link.borrow() == Link::Reconnecting {
            fail_unreplayable(inner);
        }
        return;
    }
    tracing::warn!(reason, "exec-server connection lost");
    match reconnect {
        Some(window) => {
            fail_unreplayable(inner);
            tokio::spawn(reconnect_loop(Arc::downgrade(inner), window));
        }
        _ => close(inner, reason),
    }
}

/// Fails every pending call that is not re-sent after a reconnect: its answer is lost.
fn fail_unreplayable(inner: &Inner) {
    let lost: Vec<PendingCall> = {
        let mut state = inner.state();
        let ids: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, call)| call.replay.is_none())
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| state.pending.remove(&id))
            .collect()
    };
    for call in lost {
        let method = call.method.clone();
        let _ = call.reply.send(Err(ClientError::ResponseLost { method }));
    }
}

fn close(inner: &Inner, reason: &str) {
    inner.link.send_replace(Link::Closed(reason.to_owned()));
    inner.terminate_child();
    let (pending, mut processes) = {
        let mut state = inner.state();
        (
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.processes),
        )
    };
    for (_, call) in pending {
        let _ = call.reply.send(Err(ClientError::Disconnected));
    }
    for tracker in processes.values_mut() {
        tracker.fail(DISCONNECTED);
    }
}

async fn reconnect_loop(weak: Weak<Inner>, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    let mut backoff = Duration::from_millis(50);
    while tokio::time::Instant::now() < deadline {
        let Some(inner) = weak.upgrade() else { return };
        match resume(&inner).await {
            Ok(()) => {
                tracing::info!("exec-server session resumed");
                tokio::spawn(catch_up(weak.clone()));
                return;
            }
            Err(ResumeError::Fatal(reason)) => {
                close(&inner, &reason);
                return;
            }
            Err(ResumeError::Retry(reason)) => tracing::debug!(%reason, "resume attempt failed"),
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    if let Some(inner) = weak.upgrade() {
        close(&inner, "could not resume the session in time");
    }
}

enum ResumeError {
    Retry(String),
    Fatal(String),
}

async fn resume(inner: &Arc<Inner>) -> Result<(), ResumeError> {
    let session_id = inner
        .state()
        .session_id
        .clone()
        .ok_or_else(|| ResumeError::Fatal("no session".into()))?;
    let opened = tokio::time::timeout(
        inner.options.connect_timeout,
        transport::open(&inner.transport, inner.options.bearer_token.as_ref()),
    )
    .await
    .map_err(|_| ResumeError::Retry("connect timed out".into()))?
    .map_err(|err| ResumeError::Retry(err.to_string()))?;
    *inner.writer.lock().await = Some(opened.writer);
    start_reader(inner, opened.reader);
    let params = json!({"clientName": inner.options.client_name, "resumeSessionId": session_id});
    let answer = tokio::time::timeout(
        inner.options.initialize_timeout,
        send_call(inner, "initialize", params, false),
    )
    .await;
    match answer {
        Ok(Ok(_)) => {}
        Ok(Err(ClientError::Server { message, .. })) if message.contains("already attached") => {
            return Err(ResumeError::Retry(message));
        }
        Ok(Err(ClientError::Server { message, .. })) => return Err(ResumeError::Fatal(message)),
        Ok(Err(err)) => return Err(ResumeError::Retry(err.to_string())),
        Err(_) => return Err(ResumeError::Retry("initialize timed out".into())),
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}).to_string();
    send_frame(inner, &initialized)
        .await
        .map_err(|err| ResumeError::Retry(err.to_string()))?;
    inner.link.send_replace(Link::Connected);
    // The new connection may already have died while the link said Reconnecting, when
    // its loss was ignored: notice it now rather than sit connected to nothing.
    let reader_gone = inner
        .reader
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(tokio::task::JoinHandle::is_finished);
    if reader_gone {
        connection_lost(inner, "the connection ended while resuming", true);
        return Ok(());
    }
    let replays: Vec<(u64, String, Value)> = inner
        .state()
        .pending
        .iter()
        .filter_map(|(id, call)| {
            call.replay
                .clone()
                .map(|params| (*id, call.method.clone(), params))
        })
        .collect();
    for (id, method, params) in replays {
        let message =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        if send_frame(inner, &message).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// After a resume: read every unfinished process from its last delivered seq, so the
/// ordered streams have no gap; what retention dropped is reported as `Lost`. Processes
/// are read in id order, one after the other.
async fn catch_up(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let mut open: Vec<String> = inner.state().processes.keys().cloned().collect();
    open.sort();
    let client = ExecServerClient { inner };
    for process_id in open {
        let Some(mut cursor) = client
            .inner
            .state()
            .processes
            .get(&process_id)
            .map(|t| t.next_seq - 1)
        else {
            continue;
        };
        loop {
            // Taken before the read is sent: if the start was not answered by then, the
            // server may handle this read before the start (see below).
            let started = client
                .inner
                .state()
                .processes
                .get(&process_id)
                .is_some_and(|tracker| tracker.started);
            let read = match client.read(&process_id, cursor, None, Duration::ZERO).await {
                Ok(read) => read,
                // Lost again: the next resume catches up from where the streams are.
                Err(ClientError::Disconnected | ClientError::ResponseLost { .. }) => return,
                // A start sent after the resume and not answered when the read went out:
                // the process did not exist when the read was handled, so all its events
                // come live. (Its answer may well have come in since.)
                Err(ClientError::Server { code, message, .. })
                    if code == exec_protocol::code::INVALID_REQUEST
                        && message.starts_with("unknown process id")
                        && !started =>
                {
                    break;
                }
                Err(err) => {
                    if let Some(mut tracker) = client.inner.state().processes.remove(&process_id) {
                        tracker.fail(&format!("cannot catch up after reconnecting: {err}"));
                    }
                    break;
                }
            };
            let mut state = client.inner.state();
            let Some(tracker) = state.processes.get_mut(&process_id) else {
                break;
            };
            // The cursor follows the reads, not the stream: a chunk after a still
            // missing exit seq must not be read again and again.
            let next_cursor = read.next_seq.saturating_sub(1);
            let finished = read.chunks.is_empty();
            // Chunks always advance the cursor; if a server's do not, stop reading it.
            let stuck = next_cursor <= cursor;
            cursor = next_cursor;
            tracker.catch_up(read, finished);
            if tracker.done {
                state.processes.remove(&process_id);
                break;
            }
            if finished || stuck {
                break;
            }
        }
    }
}

/// An exit event rebuilt from a read result, which carries no signal name.
fn exited(seq: u64, exit_code: i32) -> ProcessEvent {
    ProcessEvent::Exited {
        seq,
        exit_code,
        signal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Tracker, mpsc::UnboundedReceiver<ProcessEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Tracker {
                next_seq: 1,
                pending: BTreeMap::new(),
                sender,
                exit_seen: false,
                done: false,
                started: true,
            },
            receiver,
        )
    }

    fn output(seq: u64) -> ProcessEvent {
        ProcessEvent::Output {
            seq,
            stream: OutputStream::Stdout,
            data: vec![seq as u8],
        }
    }

    fn drain(receiver: &mut mpsc::UnboundedReceiver<ProcessEvent>) -> Vec<ProcessEvent> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    #[test]
    fn events_are_delivered_in_seq_order_without_duplicates() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(2, output(2));
        assert!(drain(&mut events).is_empty(), "seq 1 first");
        tracker.deliver(1, output(1));
        tracker.deliver(1, output(1));
        tracker.deliver(3, ProcessEvent::Closed { seq: 3 });
        tracker.deliver(4, output(4));
        assert_eq!(
            drain(&mut events),
            [output(1), output(2), ProcessEvent::Closed { seq: 3 }]
        );
    }

    #[test]
    fn retention_gaps_are_reported_as_lost() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        tracker.deliver(6, output(6));
        tracker.skip_to(5);
        tracker.deliver(5, output(5));
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Lost {
                    from_seq: 2,
                    to_seq: 4
                },
                output(5),
                output(6)
            ]
        );
    }

    #[test]
    fn only_the_close_is_rebuilt_when_the_exit_already_arrived() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(
            1,
            ProcessEvent::Exited {
                seq: 1,
                exit_code: 0,
                signal: None,
            },
        );
        let read = ReadResult {
            chunks: vec![],
            next_seq: 3,
            exited: true,
            exit_code: Some(0),
            closed: true,
            failure: None,
            first_retained_seq: Some(1),
            exited_seq: None,
            closed_seq: None,
        };
        tracker.catch_up(read, true);
        assert_eq!(
            drain(&mut events),
            [
                ProcessEvent::Exited {
                    seq: 1,
                    exit_code: 0,
                    signal: None
                },
                ProcessEvent::Closed { seq: 2 }
            ]
        );
    }

    #[test]
    fn a_lost_exit_between_chunks_is_rebuilt_and_later_output_follows() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        tracker.deliver(3, output(3));
        let read = ReadResult {
            chunks: vec![],
            next_seq: 5,
            exited: true,
            exit_code: Some(7),
            closed: true,
            failure: None,
            first_retained_seq: Some(1),
            exited_seq: None,
            closed_seq: None,
        };
        tracker.catch_up(read, true);
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Exited {
                    seq: 2,
                    exit_code: 7,
                    signal: None
                },
                output(3),
                ProcessEvent::Closed { seq: 4 },
            ]
        );
    }

    #[test]
    fn missing_exit_and_close_are_rebuilt_from_a_read() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        let read = ReadResult {
            chunks: vec![],
            next_seq: 4,
            exited: true,
            exit_code: Some(3),
            closed: true,
            failure: None,
            first_retained_seq: Some(1),
            exited_seq: None,
            closed_seq: None,
        };
        tracker.catch_up(read, true);
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Exited {
                    seq: 2,
                    exit_code: 3,
                    signal: None
                },
                ProcessEvent::Closed { seq: 3 }
            ]
        );
    }
}
