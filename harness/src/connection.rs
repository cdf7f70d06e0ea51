//! [`Connection`]: one wire connection to a server under test. Raw frames (text and
//! binary), pipelined and typed requests, responses by id, the wire trace, and
//! disconnect / reset / reconnect. Events are awaited with the methods in `expect`; the
//! handshake and sessions are in `session`.
//!
//! The harness reads from the connection only while a call waits, so a test can send
//! hundreds of requests before reading any reply, and await the replies in any order.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use exec_client::wire::{self, Frame, FrameReader, FrameWriter};
use exec_protocol::{
    Call, ErrorObject, PathForm, RequestId, Revision, WirePath, encode_notification, encode_request,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{HarnessError, Report, Result};
use crate::inbox::Inbox;
use crate::launch::Transport;
use crate::response::Response;
use crate::server::ExecServer;
use crate::trace::{Direction, Trace, TraceEntry};
use crate::wait::bounded;

impl ExecServer {
    /// Opens a connection, within the default deadline.
    ///
    /// On websocket every call opens a new, independent connection (with the bearer
    /// token, if the server requires one). On stdio the server has exactly one
    /// connection, its stdin and stdout: the first call returns it, later calls fail
    /// with [`HarnessError::Unsupported`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// let server = exec_server_harness::exec_server().await?;
    /// let (first, second) = (server.connect().await?, server.connect().await?);
    /// let a = first.initialize("a").await?;
    /// let b = second.initialize("b").await?;
    /// assert_ne!(a.id(), b.id());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(&self) -> Result<Connection> {
        let (writer, reader) = open(self).await.map_err(|err| {
            err.with_report(|| {
                Report::new(
                    None,
                    self.process.stderr_tail(),
                    format!("{:?}, connecting", self.transport()),
                )
            })
        })?;
        let connection = Connection {
            inner: Arc::new(Inner {
                server: self.clone(),
                writer: tokio::sync::Mutex::new(Some(writer)),
                reader: tokio::sync::Mutex::new(Some(reader)),
                inbox: Mutex::new(Inbox::default()),
                trace: Arc::new(Trace::new()),
                next_id: AtomicU64::new(1),
                next_process: AtomicU64::new(1),
                revision: Mutex::new(self.revision()),
                write_id_prefix: uuid::Uuid::new_v4().simple().to_string(),
                next_write: AtomicU64::new(1),
            }),
        };
        connection.inner.trace.record(Direction::Note, "connected");
        Ok(connection)
    }
}

/// The frame halves of a new connection to `server`.
async fn open(server: &ExecServer) -> Result<(FrameWriter, FrameReader)> {
    let process = &server.process;
    match process.transport {
        Transport::Stdio => {
            let pipes = process
                .stdio
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (read, write) = pipes.ok_or_else(|| {
                HarnessError::Unsupported(
                    "a stdio server has exactly one connection (its stdin and stdout), already opened"
                        .into(),
                )
            })?;
            Ok(wire::lines(read, write))
        }
        Transport::WebSocket => {
            let url = process.url.clone().ok_or_else(|| {
                HarnessError::Unsupported("the websocket server has no URL".into())
            })?;
            let within = server.default_wait();
            bounded(
                || format!("a websocket connection to {url}"),
                within,
                async { Ok(wire::connect_websocket(&url, process.token.as_ref()).await?) },
            )
            .await
        }
    }
}

/// One connection to a server, with everything received on it and its wire trace.
/// Cheap to clone (clones share the connection); the server stays up while any
/// connection to it exists.
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    server: ExecServer,
    writer: tokio::sync::Mutex<Option<FrameWriter>>,
    reader: tokio::sync::Mutex<Option<FrameReader>>,
    inbox: Mutex<Inbox>,
    trace: Arc<Trace>,
    next_id: AtomicU64,
    /// For process ids the harness generates (`proc-1`, …).
    pub(crate) next_process: AtomicU64,
    /// What the typed helpers speak (see [`Connection::set_revision`]).
    revision: Mutex<Revision>,
    /// `writeId`s are `<prefix>-<n>`: a random UUID v4 per connection and a counter.
    write_id_prefix: String,
    next_write: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report().render());
        }
    }
}

impl Inner {
    fn report(&self) -> Report {
        Report::new(
            Some(Arc::clone(&self.trace)),
            self.server.process.stderr_tail(),
            format!("{:?}", self.server.transport()),
        )
    }
}

impl Connection {
    pub(crate) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inner.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server this connection is to.
    pub fn server(&self) -> &ExecServer {
        &self.inner.server
    }

    /// The default deadline of every wait (see [`ExecServer::default_wait`]).
    pub fn default_wait(&self) -> Duration {
        self.inner.server.default_wait()
    }

    /// A logical duration multiplied by the time scale.
    pub fn scaled(&self, logical: Duration) -> Duration {
        self.inner.server.scaled(logical)
    }

    /// The revision this connection's typed helpers speak: the server's
    /// [`revision`](ExecServer::revision) unless [`set_revision`](Self::set_revision)
    /// changed it.
    pub fn revision(&self) -> Revision {
        *self
            .inner
            .revision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this connection's typed helpers (and its clones', and its sessions') speak
    /// `revision` from now on. At [`Revision::R2026_08`]: `file:` URIs for
    /// [`ProcessSpec`](crate::ProcessSpec)'s `cwd` and the typed fs helpers, and a
    /// `writeId` on every `Session::write` / `close_stdin`. Raw JSON and
    /// [`call`](Self::call) are never rewritten.
    pub fn set_revision(&self, revision: Revision) {
        *self
            .inner
            .revision
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = revision;
    }

    /// How this connection's typed helpers spell paths: `file:` URIs at 2026-08.
    pub fn path_form(&self) -> PathForm {
        match self.revision() {
            Revision::R2026_06 => PathForm::Plain,
            Revision::R2026_08 => PathForm::FileUri,
        }
    }

    /// `path` as the typed helpers send it ([`path_form`](Self::path_form)): an
    /// absolute path in that form, anything else (relative, already a URI) as given.
    pub fn wire_path(&self, path: &str) -> WirePath {
        match path.starts_with('/') {
            true => self.path_form().render(path.as_bytes()),
            false => WirePath::from(path),
        }
    }

    /// A fresh `writeId`, unique to this connection: `<uuid>-<n>`.
    pub fn next_write_id(&self) -> String {
        let n = self.inner.next_write.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.write_id_prefix)
    }

    /// The wire trace and the server's stderr tail, as a failing test prints them.
    pub fn report(&self) -> Report {
        self.inner.report()
    }

    /// The report printed when a test fails: wire trace and stderr tail.
    pub fn failure_report(&self) -> String {
        self.report().render()
    }

    /// The wire trace so far.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.inner.trace.entries()
    }

    pub(crate) fn note(&self, text: &str) {
        self.inner.trace.record(Direction::Note, text);
    }

    /// Frames received that were not messages a server may send.
    pub fn invalid_frames(&self) -> Vec<String> {
        self.inbox().invalid.clone()
    }

    fn attach(&self, error: HarnessError) -> HarnessError {
        error.with_report(|| self.report())
    }

    /// Sends one text frame (websocket) or line (stdio) exactly as given, within the
    /// default deadline (a server that stops reading makes it time out).
    pub async fn send_raw(&self, text: impl AsRef<str>) -> Result<()> {
        self.send(Outgoing::Text(text.as_ref())).await
    }

    /// Sends a binary websocket frame (raw bytes on stdio), within the default deadline.
    pub async fn send_raw_bytes(&self, data: &[u8]) -> Result<()> {
        self.send(Outgoing::Binary(data)).await
    }

    async fn send(&self, outgoing: Outgoing<'_>) -> Result<()> {
        let within = self.default_wait();
        let work = async {
            let mut writer = self.inner.writer.lock().await;
            let writer = writer.as_mut().ok_or_else(|| HarnessError::Disconnected {
                expected: "an open connection to send on".into(),
                report: Report::default(),
            })?;
            match outgoing {
                Outgoing::Text(text) => {
                    self.inner.trace.record(Direction::Sent, text);
                    writer.send_text(text).await?;
                }
                Outgoing::Binary(data) => {
                    let shown = format!("binary: {}", String::from_utf8_lossy(data));
                    self.inner.trace.record(Direction::Sent, &shown);
                    writer.send_binary(data).await?;
                }
            }
            Ok(())
        };
        bounded(|| "room to send a frame".into(), within, work)
            .await
            .map_err(|err| self.attach(err))
    }

    fn next_id(&self) -> RequestId {
        RequestId::from(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a request with raw JSON params without waiting; returns its id for
    /// [`response`](Self::response). `method` is a [`Method`](exec_protocol::Method) or
    /// any string (to send a name the protocol lacks).
    pub async fn send_request(&self, method: impl AsRef<str>, params: Value) -> Result<RequestId> {
        let id = self.next_id();
        let method = method.as_ref();
        self.inbox().sent.insert(id.clone(), method.to_owned());
        self.send_raw(encode_request(&id, method, &params)).await?;
        Ok(id)
    }

    /// Sends a typed request without waiting; returns its id for [`response`](Self::response).
    pub async fn send_call<P: Call>(&self, params: &P) -> Result<RequestId> {
        let id = self.next_id();
        self.inbox().sent.insert(id.clone(), P::METHOD.to_string());
        self.send_raw(encode_request(&id, P::METHOD, params))
            .await?;
        Ok(id)
    }

    /// Waits (default deadline) for the response with this id.
    pub async fn response(&self, id: &RequestId) -> Result<Response> {
        self.response_for(Some(id.clone()), self.default_wait())
            .await
    }

    /// Like [`response`](Self::response) with a logical deadline (× the time scale).
    pub async fn response_within(&self, id: &RequestId, within: Duration) -> Result<Response> {
        self.response_for(Some(id.clone()), self.scaled(within))
            .await
    }

    /// Waits (default deadline) for an error response with `id: null`: the answer to a
    /// frame the server could not read (a parse error).
    pub async fn response_without_id(&self) -> Result<Response> {
        self.response_for(None, self.default_wait()).await
    }

    /// Waits up to `within` (logical, × the time scale) for the oldest response whose id
    /// satisfies `wanted` (`None`: `id: null`), e.g. an answer to a frame that carried
    /// no id this client sent. `description` names it in a timeout.
    pub async fn response_where(
        &self,
        description: &str,
        within: Duration,
        wanted: impl Fn(Option<&RequestId>) -> bool,
    ) -> Result<Response> {
        let mut response = self
            .wait_for(description, self.scaled(within), |inbox| {
                inbox.take_response_where(&wanted)
            })
            .await?;
        response.report = self.report();
        Ok(response)
    }

    async fn response_for(&self, id: Option<RequestId>, within: Duration) -> Result<Response> {
        let shown = id
            .as_ref()
            .map_or_else(|| "null".to_owned(), ToString::to_string);
        let mut response = self
            .wait_for(
                &format!("the response to request {shown}"),
                within,
                |inbox| inbox.take_response(&id),
            )
            .await?;
        response.report = self.report();
        Ok(response)
    }

    /// Sends a request with raw JSON params; `.await` it for the [`Response`] (success
    /// or error), or await `.result()` / `.error()`. For params that are not
    /// deliberately odd, prefer the typed [`call`](Self::call).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use exec_server_harness::{json, protocol::code};
    /// let conn = exec_server_harness::exec_server().await?.connect().await?;
    /// let error = conn.request("process/read", json!({"processId": "x"})).error().await?;
    /// assert_eq!(error.code, code::INVALID_REQUEST); // not initialized yet
    /// # Ok(())
    /// # }
    /// ```
    pub fn request(&self, method: impl AsRef<str>, params: Value) -> PendingRequest<'_> {
        PendingRequest {
            connection: self,
            method: method.as_ref().to_owned(),
            params,
            within: None,
        }
    }

    /// Sends a typed request and returns its typed result; an error response is
    /// [`HarnessError::Rpc`], a result that does not decode [`HarnessError::Protocol`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use exec_server_harness::protocol::EnvironmentInfoParams;
    /// let conn = exec_server_harness::exec_server().await?.connect().await?;
    /// conn.initialize("doc").await?;
    /// let info = conn.call(&EnvironmentInfoParams {}).await?;
    /// assert!(!info.shell.path.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call<P: Call>(&self, params: &P) -> Result<P::Result> {
        let id = self.send_call(params).await?;
        let result = self.response(&id).await?.into_result()?;
        serde_json::from_value(result.clone()).map_err(|err| {
            self.attach(HarnessError::protocol(format!(
                "{} result does not decode: {err}: {result}",
                P::METHOD
            )))
        })
    }

    /// Sends a typed request that must fail and returns the server's error.
    pub async fn call_expecting_error<P: Call>(&self, params: &P) -> Result<ErrorObject> {
        let id = self.send_call(params).await?;
        self.response(&id).await?.into_error()
    }

    /// Sends a notification (no id, no response). `method` is a
    /// [`NotificationMethod`](exec_protocol::NotificationMethod) or any string.
    pub async fn notify(&self, method: impl AsRef<str>, params: Value) -> Result<()> {
        self.send_raw(encode_notification(method.as_ref(), &params))
            .await
    }

    /// Reads frames until `check` yields a value, the connection ends, or `within`
    /// (already scaled) passes. Errors carry the report.
    pub(crate) async fn wait_for<T>(
        &self,
        expected: &str,
        within: Duration,
        check: impl FnMut(&mut Inbox) -> Option<T>,
    ) -> Result<T> {
        self.wait_inner(expected, within, check)
            .await
            .map_err(|err| self.attach(err))
    }

    async fn wait_inner<T>(
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
                    report: Report::default(),
                });
            }
            let timed_out = || HarnessError::Timeout {
                expected: expected.to_owned(),
                waited: within,
                arrived: self.inbox().summary(),
                report: Report::default(),
            };
            let mut reader = tokio::time::timeout_at(deadline, self.inner.reader.lock())
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
                Ok(Some(Frame::Text(text))) => {
                    self.inner.trace.record(Direction::Received, &text);
                    self.inbox().file(text);
                }
                Ok(Some(Frame::Other(description))) => {
                    self.inner.trace.record(Direction::Received, &description);
                    self.inbox().invalid.push(description);
                }
                Ok(None) => {
                    *reader = None;
                    self.note("connection closed by the server");
                    self.inbox().disconnected = true;
                }
            }
        }
    }

    /// Closes the connection cleanly: a websocket Close frame, or EOF on a stdio
    /// server's stdin. Then waits (default deadline) until the server closes its side,
    /// so a following resume finds the session already detached. What the server sent
    /// meanwhile stays buffered; after it, waits fail with `Disconnected`. Sending the
    /// close is bounded by the default deadline too.
    pub async fn disconnect(&self) -> Result<()> {
        let within = self.default_wait();
        let close = async {
            if let Some(mut writer) = self.inner.writer.lock().await.take() {
                writer.close().await;
            }
        };
        if tokio::time::timeout(within, close).await.is_err() {
            self.note("the close frame could not be sent in time");
        }
        self.note("disconnected");
        let closed = self
            .wait_for("the server to close its side", within, |inbox| {
                inbox.disconnected.then_some(())
            })
            .await;
        if closed.is_err() {
            self.note("the server did not close its side in time");
        }
        Ok(())
    }

    /// Drops the websocket's TCP connection without a Close frame (a TCP reset).
    pub async fn reset(&self) -> Result<()> {
        let within = self.default_wait();
        let take = async {
            let writer = self.inner.writer.lock().await.take();
            let reader = self.inner.reader.lock().await.take();
            (writer, reader)
        };
        let (writer, reader) = bounded(
            || "the connection to be idle for a reset".into(),
            within,
            async { Ok(take.await) },
        )
        .await
        .map_err(|err| self.attach(err))?;
        if let (Some(writer), Some(reader)) = (writer, reader) {
            wire::reset(writer, reader);
        }
        self.inbox().disconnected = true;
        self.note("reset (TCP RST, no close frame)");
        Ok(())
    }

    /// Replaces this connection with a new websocket connection to the same server
    /// (closing the current one first if still open), within the default deadline.
    /// Unconsumed messages of the old one are dropped; the trace continues. A stdio
    /// server has one connection: this fails with [`HarnessError::Unsupported`].
    pub async fn reconnect(&self) -> Result<()> {
        if self.server().transport() == Transport::Stdio {
            return Err(HarnessError::Unsupported(
                "reconnect needs a websocket server; stdio has one connection".into(),
            ));
        }
        if self.inner.writer.lock().await.is_some() {
            self.disconnect().await?;
        }
        let (writer, reader) = open(self.server()).await.map_err(|err| self.attach(err))?;
        // A concurrent wait holds the reader for as long as it waits: bound this one too.
        let install = async {
            *self.inner.writer.lock().await = Some(writer);
            *self.inner.reader.lock().await = Some(reader);
            Ok(())
        };
        bounded(
            || "the connection's other waits to let go of it, to reconnect".into(),
            self.default_wait(),
            install,
        )
        .await
        .map_err(|err| self.attach(err))?;
        let sent = std::mem::take(&mut self.inbox().sent);
        *self.inbox() = Inbox {
            sent,
            ..Inbox::default()
        };
        self.note("reconnected");
        Ok(())
    }
}

enum Outgoing<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A request with raw JSON params, sent when awaited. `.await` gives the [`Response`];
/// [`result`](Self::result) the result (an error response is [`HarnessError::Rpc`]);
/// [`error`](Self::error) the error (a success is [`HarnessError::UnexpectedSuccess`]).
#[must_use = "a request is sent only when awaited"]
pub struct PendingRequest<'a> {
    connection: &'a Connection,
    method: String,
    params: Value,
    within: Option<Duration>,
}

impl PendingRequest<'_> {
    /// Waits for the response up to this logical deadline (× the time scale) instead
    /// of the default.
    pub fn within(mut self, within: Duration) -> Self {
        self.within = Some(within);
        self
    }

    async fn send(self) -> Result<Response> {
        let connection = self.connection;
        let id = connection.send_request(&self.method, self.params).await?;
        match self.within {
            Some(within) => connection.response_within(&id, within).await,
            None => connection.response(&id).await,
        }
    }

    /// The result; an error response is [`HarnessError::Rpc`].
    pub async fn result(self) -> Result<Value> {
        self.send().await?.into_result()
    }

    /// The server's error; a success is [`HarnessError::UnexpectedSuccess`].
    pub async fn error(self) -> Result<ErrorObject> {
        self.send().await?.into_error()
    }
}

impl<'a> IntoFuture for PendingRequest<'a> {
    type Output = Result<Response>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Response>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
