//! The `ExecServer` handle: one running server and its current connection, with raw
//! and typed requests, buffered events, deadline-bound waits, and the failure report.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{HarnessError, Result, RpcFailure};
use crate::event::Event;
use crate::launch::{self, Launched, Program, Running, Transport};
use crate::session::{ProcessOutput, Session};
use crate::trace::{Direction, Trace, TraceEntry, abbreviate};
use exec_client::wire::{self, Frame, FrameReader as Reader, FrameWriter as Writer};
use exec_client::{BearerToken, TokenError};

/// Default deadline of every wait, before the time scale is applied.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const TIME_SCALE_VAR: &str = "EXEC_HARNESS_TIME_SCALE";
/// How long a child server gets to exit after SIGTERM at teardown.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// Configures and starts a server. Obtain one with [`ExecServer::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
/// use exec_server_harness::ExecServer;
/// let server = ExecServer::builder()
///     .stdio()
///     .arg("--output-retention")
///     .arg("4096")
///     .time_scale(2.0)
///     .start()
///     .await?;
/// server.initialize("builder-example").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ExecServerBuilder {
    transport: Transport,
    program: Program,
    listen: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    time_scale: Option<f64>,
    /// Checked when set, reported by `start` (its `Debug` never shows the secret).
    auth_token: Option<std::result::Result<BearerToken, TokenError>>,
}

impl ExecServerBuilder {
    /// Serve over a websocket (the default).
    pub fn websocket(mut self) -> Self {
        self.transport = Transport::WebSocket;
        self
    }

    /// Serve over stdio (JSON Lines on the server's stdin and stdout).
    pub fn stdio(mut self) -> Self {
        self.transport = Transport::Stdio;
        self
    }

    /// Serve over the given transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Run this binary instead of the in-process server. The harness appends
    /// `--listen ws://127.0.0.1:0` or `--listen stdio`, then the extra [`arg`](Self::arg)s.
    pub fn binary(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into().to_string_lossy().into_owned();
        self.command([path])
    }

    /// Run this command line (program and leading arguments) instead of the in-process
    /// server; `--listen …` and the extra args are appended.
    pub fn command<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.program = Program::Command(words.into_iter().map(Into::into).collect());
        self
    }

    /// Overrides the value passed to `--listen` for a binary or command (e.g. `stdio://`);
    /// it must still select the builder's transport.
    pub fn listen(mut self, url: impl Into<String>) -> Self {
        self.listen = Some(url.into());
        self
    }

    /// One extra server argument, e.g. `--output-retention`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Several extra server arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for a child server (ignored in-process).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Requires this bearer token: the harness writes it to a private file, passes
    /// `--auth-token-file FILE` to the server, and sends `Authorization: Bearer …` on
    /// every websocket connection it opens. A token that cannot be sent in an HTTP
    /// header (empty, spaces, control characters) makes [`start`](Self::start) fail.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(BearerToken::new(token.into()));
        self
    }

    /// Multiplies every deadline; overrides `EXEC_HARNESS_TIME_SCALE`.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = Some(scale);
        self
    }

    /// Starts the server and opens the first connection. For a child server on
    /// websocket this reads the start-up line and polls `/readyz`, within the deadline.
    pub async fn start(self) -> Result<ExecServer> {
        let scale = self.time_scale.unwrap_or_else(time_scale_from_env);
        let default_wait = DEFAULT_WAIT.mul_f64(scale);
        let mut args = self.args.clone();
        // The server reads the file at start-up; it only has to outlive the launch.
        let (token, _token_file) = match self.auth_token {
            None => (None, None),
            Some(token) => {
                let token =
                    token.map_err(|err| HarnessError::Startup(format!("auth_token: {err}")))?;
                let file = write_token_file(&token)?;
                args.push("--auth-token-file".into());
                args.push(file.path().to_string_lossy().into_owned());
                (Some(token), Some(file))
            }
        };
        let mut launched = launch::launch(
            &self.program,
            self.transport,
            self.listen.as_deref(),
            &args,
            &self.env,
            default_wait * 2,
        )
        .await?;
        let (writer, reader) = match launched.stdio.take() {
            Some((read, write)) => wire::lines(read, write),
            None => {
                let url = launched
                    .url
                    .clone()
                    .ok_or_else(|| HarnessError::Startup("no URL".into()))?;
                match launch::connect(&url, token.as_ref()).await {
                    Ok(halves) => halves,
                    Err(err) => {
                        launch::stop(&mut launched.running, TEARDOWN_GRACE);
                        return Err(err);
                    }
                }
            }
        };
        let Launched { running, url, .. } = launched;
        let process = Arc::new(ServerProcess {
            running: Mutex::new(running),
            token,
        });
        Ok(ExecServer::over(
            process,
            self.transport,
            url,
            default_wait,
            writer,
            reader,
        ))
    }
}

/// The server itself, shared by every connection to it; dropping the last handle
/// stops it.
struct ServerProcess {
    running: Mutex<Running>,
    /// Sent on every websocket connection, if the server requires one.
    token: Option<BearerToken>,
}

/// A file only this user can read (tempfile creates it with mode 0600).
fn write_token_file(token: &BearerToken) -> Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    let mut file = tempfile::Builder::new()
        .prefix("exec-server-token-")
        .tempfile()?;
    file.write_all(token.secret().as_bytes())?;
    file.flush()?;
    Ok(file)
}

impl ServerProcess {
    fn running(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        launch::stop(&mut self.running(), TEARDOWN_GRACE);
    }
}

fn time_scale_from_env() -> f64 {
    std::env::var(TIME_SCALE_VAR)
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|scale| *scale > 0.0)
        .unwrap_or(1.0)
}

/// Everything received on the current connection and not yet consumed.
#[derive(Default)]
struct Inbox {
    /// Responses by id; a queue because several errors may carry `id: null`.
    responses: HashMap<String, VecDeque<Value>>,
    events: VecDeque<Event>,
    /// Frames that were not JSON-RPC messages (a protocol violation by the server).
    invalid: Vec<String>,
    disconnected: bool,
}

/// One connection to a server, with everything received on it.
pub(crate) struct Inner {
    server: Arc<ServerProcess>,
    transport: Transport,
    url: Option<String>,
    default_wait: Duration,
    writer: tokio::sync::Mutex<Option<Writer>>,
    reader: tokio::sync::Mutex<Option<Reader>>,
    inbox: Mutex<Inbox>,
    trace: Trace,
    next_id: AtomicU64,
    pub(crate) next_process: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.failure_report());
        }
    }
}

impl Inner {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stderr_tail(&self) -> Option<String> {
        match &*self.server.running() {
            Running::Child { stderr, .. } => Some(stderr.text()),
            Running::InProcess { .. } => None,
        }
    }

    fn failure_report(&self) -> String {
        let stderr = self.stderr_tail().unwrap_or_else(|| {
            "(in-process server: its logs go to this test's own output)\n".into()
        });
        format!(
            "==== exec-server harness: wire trace ({:?}) ====\n{}==== exec-server stderr (tail) ====\n{}==== end ====",
            self.transport,
            self.trace.render(),
            stderr
        )
    }

    /// Files one inbound frame as a response, an event, or an invalid frame.
    fn file(&self, frame: Frame) {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Other(description) => {
                self.trace.record(Direction::Received, &description);
                self.inbox().invalid.push(description);
                return;
            }
        };
        self.trace.record(Direction::Received, &text);
        let mut inbox = self.inbox();
        match serde_json::from_str::<Value>(&text) {
            Ok(message @ Value::Object(_)) => match message.get("method") {
                Some(Value::String(method)) => {
                    let method = method.clone();
                    let params = message.get("params").cloned().unwrap_or(Value::Null);
                    inbox.events.push_back(Event {
                        method,
                        params,
                        message,
                    });
                }
                _ => {
                    let id = message.get("id").cloned().unwrap_or(Value::Null);
                    inbox
                        .responses
                        .entry(id.to_string())
                        .or_default()
                        .push_back(message);
                }
            },
            _ => inbox.invalid.push(text),
        }
    }

    /// Reads frames until `check` yields a value, the connection ends, or `within` passes.
    async fn wait_for<T>(
        &self,
        expected: &str,
        within: Duration,
        mut check: impl FnMut(&mut Inbox) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = check(&mut self.inbox()) {
                return Ok(found);
            }
            if self.inbox().disconnected {
                return Err(HarnessError::Disconnected {
                    expected: expected.to_owned(),
                });
            }
            let timed_out = || self.timeout_error(expected, within);
            let mut reader = tokio::time::timeout_at(deadline, self.reader.lock())
                .await
                .map_err(|_| timed_out())?;
            // Another waiter may have read what we need while we queued for the reader.
            if let Some(found) = check(&mut self.inbox()) {
                return Ok(found);
            }
            let Some(stream) = reader.as_mut() else {
                self.inbox().disconnected = true;
                continue;
            };
            match tokio::time::timeout_at(deadline, stream.next_frame()).await {
                Err(_) => return Err(timed_out()),
                Ok(Some(frame)) => self.file(frame),
                Ok(None) => {
                    *reader = None;
                    self.trace
                        .record(Direction::Note, "connection closed by the server");
                    self.inbox().disconnected = true;
                }
            }
        }
    }

    fn timeout_error(&self, expected: &str, waited: Duration) -> HarnessError {
        let inbox = self.inbox();
        let mut arrived: Vec<String> = inbox
            .events
            .iter()
            .take(20)
            .map(ToString::to_string)
            .collect();
        if inbox.events.len() > 20 {
            arrived.push(format!("… and {} more events", inbox.events.len() - 20));
        }
        arrived.extend(
            inbox
                .responses
                .values()
                .flatten()
                .take(10)
                .map(|response| format!("response {}", abbreviate(&response.to_string(), 200))),
        );
        arrived.extend(
            inbox
                .invalid
                .iter()
                .map(|frame| format!("invalid frame {}", abbreviate(frame, 200))),
        );
        HarnessError::Timeout {
            expected: expected.to_owned(),
            waited,
            arrived: if arrived.is_empty() {
                "nothing".to_owned()
            } else {
                arrived.join("; ")
            },
        }
    }
}

/// A running server under test and the harness's connection to it. Cheap to clone;
/// the server stops when the last clone (and every [`Session`]) is dropped.
#[derive(Clone)]
pub struct ExecServer {
    pub(crate) inner: Arc<Inner>,
}

/// A response to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id the response carries (`null` for errors about unreadable frames).
    pub id: Value,
    /// The `result` member, for a success.
    pub result: Option<Value>,
    /// The `error` member, for a failure.
    pub error: Option<RpcFailure>,
    /// The whole message as received (to check envelope members such as `jsonrpc`).
    pub message: Value,
}

impl Response {
    fn from_message(method: &str, message: Value) -> Result<Response> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let error = match message.get("error") {
            None => None,
            Some(error) => Some(RpcFailure {
                code: error.get("code").and_then(Value::as_i64).ok_or_else(|| {
                    HarnessError::Protocol(format!(
                        "{method}: error without an integer code: {message}"
                    ))
                })?,
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                data: error.get("data").cloned(),
            }),
        };
        let result = message.get("result").cloned();
        if result.is_some() == error.is_some() {
            return Err(HarnessError::Protocol(format!(
                "{method}: a response needs exactly one of result and error: {message}"
            )));
        }
        Ok(Response {
            id,
            result,
            error,
            message,
        })
    }

    /// The result, or the server's error as [`HarnessError::Rpc`].
    pub fn into_result(self, method: &str) -> Result<Value> {
        match (self.result, self.error) {
            (Some(result), _) => Ok(result),
            (None, Some(failure)) => Err(HarnessError::Rpc {
                method: method.to_owned(),
                failure,
            }),
            (None, None) => Err(HarnessError::Protocol(format!("{method}: empty response"))),
        }
    }
}

impl ExecServer {
    fn over(
        server: Arc<ServerProcess>,
        transport: Transport,
        url: Option<String>,
        default_wait: Duration,
        writer: Writer,
        reader: Reader,
    ) -> ExecServer {
        let inner = Arc::new(Inner {
            server,
            transport,
            url,
            default_wait,
            writer: tokio::sync::Mutex::new(Some(writer)),
            reader: tokio::sync::Mutex::new(Some(reader)),
            inbox: Mutex::new(Inbox::default()),
            trace: Trace::new(),
            next_id: AtomicU64::new(1),
            next_process: AtomicU64::new(1),
        });
        inner.trace.record(Direction::Note, "connected");
        ExecServer { inner }
    }

    /// A second, independent connection to the same websocket server, with its own
    /// buffers and trace. The server keeps running until every handle is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// let first = exec_server_harness::exec_server().await?;
    /// let second = first.new_connection().await?;
    /// let a = first.initialize("a").await?;
    /// let b = second.initialize("b").await?;
    /// assert_ne!(a.id(), b.id());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new_connection(&self) -> Result<ExecServer> {
        let url = self.inner.url.clone().ok_or_else(|| {
            HarnessError::Startup("a stdio server has exactly one connection".into())
        })?;
        let (writer, reader) = launch::connect(&url, self.inner.server.token.as_ref()).await?;
        Ok(ExecServer::over(
            Arc::clone(&self.inner.server),
            self.inner.transport,
            Some(url),
            self.inner.default_wait,
            writer,
            reader,
        ))
    }

    /// A builder: in-tree server on websocket unless told otherwise.
    pub fn builder() -> ExecServerBuilder {
        ExecServerBuilder {
            transport: Transport::WebSocket,
            program: Program::InTree,
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
            time_scale: None,
            auth_token: None,
        }
    }

    /// `ws://IP:PORT` for a websocket server.
    pub fn url(&self) -> Option<&str> {
        self.inner.url.as_deref()
    }

    /// The transport the server was started on.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The default deadline of every wait (5 s × the time scale).
    pub fn default_wait(&self) -> Duration {
        self.inner.default_wait
    }

    /// The pid of a child server (`None` in-process); it leads its own process group.
    pub fn pid(&self) -> Option<i32> {
        match &*self.inner.server.running() {
            Running::Child { child, .. } => Some(child.id() as i32),
            Running::InProcess { .. } => None,
        }
    }

    /// The tail of a child server's stderr (empty in-process).
    pub fn stderr(&self) -> String {
        self.inner.stderr_tail().unwrap_or_default()
    }

    /// What a websocket child server printed on stdout after its start-up line (the
    /// protocol allows nothing).
    pub fn extra_stdout(&self) -> String {
        match &*self.inner.server.running() {
            Running::Child { extra_stdout, .. } => extra_stdout.text(),
            Running::InProcess { .. } => String::new(),
        }
    }

    /// Waits until a websocket child server's stdout reaches EOF (it exited), then
    /// returns everything it printed after the start-up line.
    pub async fn stdout_after_startup_line(&self, within: Duration) -> Result<String> {
        let tail = match &*self.inner.server.running() {
            Running::Child { extra_stdout, .. } => Arc::clone(extra_stdout),
            Running::InProcess { .. } => return Ok(String::new()),
        };
        tokio::time::timeout(within, tail.closed())
            .await
            .map_err(|_| HarnessError::Timeout {
                expected: "EOF on the server's stdout".into(),
                waited: within,
                arrived: format!("so far: {:?}", tail.text()),
            })?;
        Ok(tail.text())
    }

    /// The wire trace so far.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.inner.trace.entries()
    }

    /// The report printed when a test fails: wire trace and stderr tail.
    pub fn failure_report(&self) -> String {
        self.inner.failure_report()
    }

    /// Frames received that were not JSON-RPC messages.
    pub fn invalid_frames(&self) -> Vec<String> {
        self.inner.inbox().invalid.clone()
    }

    /// Sends one text frame (websocket) or line (stdio) exactly as given.
    pub async fn send_raw(&self, text: impl AsRef<str>) -> Result<()> {
        let text = text.as_ref();
        let mut writer = self.inner.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(|| HarnessError::Disconnected {
            expected: "an open connection to send on".into(),
        })?;
        self.inner.trace.record(Direction::Sent, text);
        writer.send_text(text).await?;
        Ok(())
    }

    /// Sends a binary websocket frame (raw bytes on stdio).
    pub async fn send_raw_bytes(&self, data: &[u8]) -> Result<()> {
        let mut writer = self.inner.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(|| HarnessError::Disconnected {
            expected: "an open connection to send on".into(),
        })?;
        self.inner.trace.record(
            Direction::Sent,
            &format!("binary: {}", String::from_utf8_lossy(data)),
        );
        writer.send_binary(data).await?;
        Ok(())
    }

    /// Sends a request without waiting; returns its id for [`response`](Self::response).
    pub async fn send_request(&self, method: &str, params: Value) -> Result<Value> {
        let id = json!(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(message.to_string()).await?;
        Ok(id)
    }

    /// Waits for the response with this id (within the default deadline).
    pub async fn response(&self, id: &Value) -> Result<Response> {
        self.response_within(id, self.inner.default_wait).await
    }

    /// Like [`response`](Self::response) with an explicit deadline.
    pub async fn response_within(&self, id: &Value, within: Duration) -> Result<Response> {
        let key = id.to_string();
        let message = self
            .inner
            .wait_for(&format!("the response to request {key}"), within, |inbox| {
                let queue = inbox.responses.get_mut(&key)?;
                let message = queue.pop_front();
                if queue.is_empty() {
                    inbox.responses.remove(&key);
                }
                message
            })
            .await?;
        Response::from_message(&key, message)
    }

    /// Sends a request and waits for its response (success or error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use serde_json::json;
    /// let server = exec_server_harness::exec_server().await?;
    /// let response = server.request("process/read", json!({"processId": "x"})).await?;
    /// assert_eq!(response.error.unwrap().code, -32600); // not initialized yet
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(&self, method: &str, params: Value) -> Result<Response> {
        let id = self.send_request(method, params).await?;
        self.response(&id).await
    }

    /// Sends a request and returns its result; an error response is an `Err`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.request(method, params).await?.into_result(method)
    }

    /// Sends a request that must fail and returns the server's error.
    pub async fn call_expecting_error(&self, method: &str, params: Value) -> Result<RpcFailure> {
        let response = self.request(method, params).await?;
        match (response.error, response.result) {
            (Some(failure), _) => Ok(failure),
            (None, result) => Err(HarnessError::UnexpectedSuccess {
                method: method.to_owned(),
                result: result.unwrap_or(Value::Null),
            }),
        }
    }

    /// Sends a notification (no id, no response).
    pub async fn notify(&self, method: &str, params: Value) -> Result<()> {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send_raw(message.to_string()).await
    }

    /// `initialize` + `initialized`: returns the new session.
    pub async fn initialize(&self, client_name: &str) -> Result<Session> {
        let result = self
            .call("initialize", json!({"clientName": client_name}))
            .await?;
        self.finish_handshake(result).await
    }

    /// Resumes a detached session by id (`initialize {resumeSessionId}` + `initialized`).
    pub async fn resume(&self, client_name: &str, session_id: &str) -> Result<Session> {
        let params = json!({"clientName": client_name, "resumeSessionId": session_id});
        let result = self.call("initialize", params).await?;
        self.finish_handshake(result).await
    }

    async fn finish_handshake(&self, result: Value) -> Result<Session> {
        let id = result
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                HarnessError::Protocol(format!("initialize result without sessionId: {result}"))
            })?
            .to_owned();
        self.notify("initialized", json!({})).await?;
        Ok(Session::new(self.clone(), id, result))
    }

    /// The next unconsumed event, whatever it is.
    pub async fn next_event(&self) -> Result<Event> {
        self.expect_event(|_| true).described("any event").await
    }

    /// Waits for the first unconsumed event matching `predicate` and removes it from
    /// the buffer; events before it stay buffered. Add `.within(d)` to change the deadline.
    pub fn expect_event<P>(&self, predicate: P) -> EventWait<'_, P>
    where
        P: Fn(&Event) -> bool + Send + Sync,
    {
        EventWait {
            server: self,
            predicate,
            within: self.inner.default_wait,
            discard_others: false,
            description: "an event matching the predicate".into(),
        }
    }

    /// Like [`expect_event`](Self::expect_event) but discards every event before the match.
    pub fn skip_until<P>(&self, predicate: P) -> EventWait<'_, P>
    where
        P: Fn(&Event) -> bool + Send + Sync,
    {
        EventWait {
            discard_others: true,
            ..self.expect_event(predicate)
        }
    }

    /// Fails if any unconsumed event is buffered or arrives within `window`.
    pub async fn expect_no_event(&self, window: Duration) -> Result<()> {
        let found = self
            .inner
            .wait_for("quiet", window, |inbox| inbox.events.front().cloned())
            .await;
        match found {
            Ok(event) => Err(HarnessError::Protocol(format!(
                "expected no event for {window:?}, got {event}"
            ))),
            Err(HarnessError::Timeout { .. }) | Err(HarnessError::Disconnected { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Every event buffered so far, in arrival order (not consumed).
    pub fn buffered_events(&self) -> Vec<Event> {
        self.inner.inbox().events.iter().cloned().collect()
    }

    /// Waits until the buffered events satisfy `done` (nothing is consumed).
    pub async fn wait_for_events(
        &self,
        description: &str,
        within: Duration,
        done: impl Fn(&VecDeque<Event>) -> bool,
    ) -> Result<Vec<Event>> {
        self.inner
            .wait_for(description, within, |inbox| {
                done(&inbox.events).then(|| inbox.events.iter().cloned().collect())
            })
            .await
    }

    /// Reads a process's output to the end with `process/read` (see [`Session::read_to_end`]).
    pub async fn read_process_to_end(&self, process_id: &str) -> Result<ProcessOutput> {
        crate::session::read_to_end(self, process_id, self.inner.default_wait).await
    }

    /// Closes the connection cleanly: a websocket Close frame, or EOF on a stdio server's
    /// stdin. Pending waits then fail with [`HarnessError::Disconnected`].
    /// Then waits (up to the default deadline) until the server closes its side, so a
    /// following resume finds the session already detached. What the server sent
    /// meanwhile stays buffered; after it, waits fail with `Disconnected`.
    pub async fn disconnect(&self) -> Result<()> {
        if let Some(mut writer) = self.inner.writer.lock().await.take() {
            writer.close().await;
        }
        self.inner.trace.record(Direction::Note, "disconnected");
        let closed = self
            .inner
            .wait_for(
                "the server to close its side",
                self.inner.default_wait,
                |inbox| inbox.disconnected.then_some(()),
            )
            .await;
        if closed.is_err() {
            self.inner
                .trace
                .record(Direction::Note, "the server did not close its side in time");
        }
        Ok(())
    }

    /// Drops the websocket's TCP connection without a Close frame (a TCP reset).
    pub async fn reset(&self) -> Result<()> {
        let writer = self.inner.writer.lock().await.take();
        let reader = self.inner.reader.lock().await.take();
        if let (Some(writer), Some(reader)) = (writer, reader) {
            wire::reset(writer, reader);
        }
        self.inner.inbox().disconnected = true;
        self.inner
            .trace
            .record(Direction::Note, "reset (TCP RST, no close frame)");
        Ok(())
    }

    /// Opens a new websocket connection to the same server, replacing the current one
    /// (which is closed first if still open). Unconsumed messages of the old one are dropped.
    pub async fn reconnect(&self) -> Result<()> {
        let url = self.inner.url.clone().ok_or_else(|| {
            HarnessError::Startup(
                "reconnect needs a websocket server; stdio has one connection".into(),
            )
        })?;
        if self.inner.writer.lock().await.is_some() {
            self.disconnect().await?;
        }
        let (writer, reader) = launch::connect(&url, self.inner.server.token.as_ref()).await?;
        *self.inner.writer.lock().await = Some(writer);
        *self.inner.reader.lock().await = Some(reader);
        *self.inner.inbox() = Inbox::default();
        self.inner.trace.record(Direction::Note, "reconnected");
        Ok(())
    }

    /// Sends `signal` to a child server process (not its group).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().ok_or_else(|| {
            HarnessError::Startup("an in-process server has no pid to signal".into())
        })?;
        // SAFETY: signalling the server process we started.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Waits for a child server to exit and returns its status.
    pub async fn wait_exit(&self, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            {
                let mut running = self.inner.server.running();
                match &mut *running {
                    Running::Child { child, .. } => {
                        if let Some(status) = child.try_wait()? {
                            return Ok(status);
                        }
                    }
                    Running::InProcess { .. } => {
                        return Err(HarnessError::Startup(
                            "an in-process server does not exit".into(),
                        ));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    expected: "the server process to exit".into(),
                    waited: within,
                    arrived: "it is still running".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A pending wait for an event; `.await` it, optionally after [`within`](Self::within).
pub struct EventWait<'a, P> {
    server: &'a ExecServer,
    predicate: P,
    within: Duration,
    discard_others: bool,
    description: String,
}

impl<P> EventWait<'_, P> {
    /// Overrides the deadline (not scaled by the time scale).
    pub fn within(mut self, within: Duration) -> Self {
        self.within = within;
        self
    }

    /// What the timeout error says was expected.
    pub fn described(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

impl<'a, P> IntoFuture for EventWait<'a, P>
where
    P: Fn(&Event) -> bool + Send + Sync + 'a,
{
    type Output = Result<Event>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Event>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let EventWait {
                server,
                predicate,
                within,
                discard_others,
                description,
            } = self;
            server
                .inner
                .wait_for(&description, within, |inbox| {
                    let index = inbox.events.iter().position(&predicate);
                    if discard_others {
                        let drop_count = index.unwrap_or(inbox.events.len());
                        inbox.events.drain(..drop_count);
                        return index.and_then(|_| inbox.events.pop_front());
                    }
                    index.and_then(|index| inbox.events.remove(index))
                })
                .await
        })
    }
}
