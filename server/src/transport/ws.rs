//! The websocket transport: an axum HTTP listener with the websocket upgrade on `/`
//! and `GET /readyz`. Every upgrade passes the `security` rules (token, `Origin`,
//! `Host`) and the connection cap before any JSON-RPC is read; `/readyz` needs neither.
//! Every accepted socket gets TCP_NODELAY, so small notifications are not held back by
//! the peer's delayed ACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use super::handshake;
use super::unflushed::{Unflushed, WritePressure};
use crate::connection::{self, FrameSource, InboundFrame};
use crate::faults::{self, Fault};
use crate::outbound::{self, OutboundQueue, OUTBOUND_BUDGET_BYTES};
use crate::security::Refusal;
use crate::shutdown::Shutdown;
use crate::state::ServerState;

/// A bound websocket listener, not yet serving.
pub struct WebSocketListener {
    listener: TcpListener,
    state: Arc<ServerState>,
}

impl WebSocketListener {
    pub async fn bind(addr: SocketAddr, state: Arc<ServerState>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The public URL, `ws://IP:PORT`.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!("ws://{}", self.local_addr()?))
    }

    /// Serves until shutdown is triggered. HTTP/1.1 only: every request head must
    /// arrive within `REQUEST_HEAD_TIMEOUT`, and at shutdown requests still in progress
    /// get `HTTP_DRAIN` to finish, so no peer can hold a descriptor, or the shutdown,
    /// for long without authenticating.
    pub async fn serve(self) -> std::io::Result<()> {
        let shutdown = self.state.shutdown.clone();
        let gate = Arc::new(Gate {
            bound: self.local_addr()?,
            connections: Arc::new(Semaphore::new(self.state.options.limits.max_connections)),
            state: self.state,
        });
        let app = Router::new()
            .route("/", get(upgrade))
            // Negative control: not ready, ever.
            .route(
                "/readyz",
                get(|| async {
                    match faults::active(Fault::NoReadyz) {
                        true => StatusCode::NOT_FOUND,
                        false => StatusCode::OK,
                    }
                }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND })
            .method_not_allowed_fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(gate);
        let http_connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shutdown.triggered() => break,
            };
            let tcp = match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(err) => {
                    // Typically out of descriptors: back off rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::warn!(%err, "could not set TCP_NODELAY");
            }
            http_connections.spawn(serve_http(tcp, app.clone(), shutdown.clone()));
        }
        http_connections.close();
        http_connections.wait().await;
        Ok(())
    }
}

/// A peer must send a whole request head within this (docs/protocol.md §2).
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown, how long a request still in progress may take to finish.
const HTTP_DRAIN: Duration = Duration::from_secs(1);
/// Pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One HTTP connection until it is answered or upgraded (the websocket then lives on in
/// its own task, see `serve_socket`).
async fn serve_http(tcp: TcpStream, app: Router, shutdown: Shutdown) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(err) = served {
                tracing::debug!(%err, "HTTP connection ended with an error");
            }
            return;
        }
        _ = shutdown.triggered() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(HTTP_DRAIN, connection).await;
}

/// What the upgrade route needs besides the server state: the address it is bound to
/// (for the `Host` rule) and one permit per live connection (`--max-connections`).
struct Gate {
    state: Arc<ServerState>,
    bound: SocketAddr,
    connections: Arc<Semaphore>,
}

async fn upgrade(State(gate): State<Arc<Gate>>, mut request: Request) -> Response {
    if let Err(refusal) = gate
        .state
        .options
        .upgrade_policy
        .admit(request.headers(), gate.bound)
    {
        tracing::warn!(%refusal, "websocket upgrade refused");
        return match refusal {
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                refusal.to_string(),
            )
                .into_response(),
            Refusal::ForeignOrigin(_) | Refusal::ForeignHost(_) => {
                (StatusCode::FORBIDDEN, refusal.to_string()).into_response()
            }
        };
    }
    let accept_key = match handshake::accept_key(request.method(), request.headers()) {
        Ok(accept_key) => accept_key,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        let message = "this connection cannot be upgraded (HTTP/1.1 is required)";
        return (StatusCode::UPGRADE_REQUIRED, message).into_response();
    };
    let Ok(permit) = Arc::clone(&gate.connections).try_acquire_owned() else {
        let limit = gate.state.options.limits.max_connections;
        tracing::warn!(limit, "websocket upgrade refused: connection limit reached");
        let message = format!(
            "the server has {limit} connections, its limit (--max-connections); try again later"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    };
    let state = Arc::clone(&gate.state);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve_socket(upgraded, state, permit).await,
            Err(err) => tracing::debug!(%err, "websocket upgrade failed"),
        }
    });
    handshake::switching_protocols(&accept_key)
}

/// Keepalive: the writer pings every `keepalive`; the reader ends a connection whose
/// peer has sent nothing, not even a pong, for `SILENT_INTERVALS` of them. A peer that
/// vanished without FIN or RST is thus detached, and its session can be resumed.
const SILENT_INTERVALS: u32 = 3;

/// `_slot` is this connection's place under `--max-connections`, freed when it ends.
async fn serve_socket(upgraded: Upgraded, state: Arc<ServerState>, _slot: OwnedSemaphorePermit) {
    let socket = Unflushed::new(TokioIo::new(upgraded));
    let pressure = socket.pressure();
    let limit = state.options.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        // Outbound messages are not limited (a read result may be many MiB), so the
        // write buffer must take any one message; what is unflushed is bounded by the
        // outbound budget and `Unflushed` instead.
        .max_write_buffer_size(usize::MAX)
        // tungstenite zeroes the free part of its read buffer before every read, even
        // one that finds nothing: at the default 128 KiB that was 80% of a small
        // request's instructions (issue 18). Frames larger than this still arrive whole,
        // over more reads.
        .read_buffer_size(READ_BUFFER_BYTES);
    let socket = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let (outbound, queue) = outbound::channel(OUTBOUND_BUDGET_BYTES);
    let keepalive = state.options.ws_keepalive;
    let stall_limit = keepalive * SILENT_INTERVALS;
    let writer = tokio::spawn(write_messages(
        sink,
        queue,
        keepalive,
        stall_limit,
        Arc::clone(&pressure),
    ));
    let source = MessageSource {
        stream,
        silence_limit: stall_limit,
        pressure,
    };
    connection::serve(state, source, outbound, true).await;
    // Let the writer flush and send Close, but not forever: a peer that vanished without
    // a FIN can stall the socket, and a process's output pump may be waiting on this
    // queue. Aborting drops the queue, which frees that pump for the resumed session.
    let mut writer = writer;
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// What tungstenite reads from the socket at most at once (see `serve_socket`).
const READ_BUFFER_BYTES: usize = 8 * 1024;

type Socket = WebSocketStream<Unflushed<TokioIo<Upgraded>>>;

/// Drains the outbound queue into the socket, pings every `keepalive`, and flushes
/// when the reader asks (it waits for unflushed bytes to drain). Each message keeps
/// its room in the outbound budget until the flush that wrote it is done. A peer that
/// takes nothing for `stall_limit` while we have something to write is gone: the
/// writer ends, which ends the connection (and detaches its session).
async fn write_messages(
    sink: SplitSink<Socket, Message>,
    mut queue: OutboundQueue,
    keepalive: Duration,
    stall_limit: Duration,
    pressure: Arc<WritePressure>,
) {
    let mut writer = Writer {
        sink,
        pressure,
        stall_limit,
    };
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            queued = queue.recv() => match queued {
                Some(queued) => queued,
                None => break,
            },
            _ = pings.tick() => {
                if !writer.send(Message::Ping(Default::default())).await {
                    return;
                }
                continue;
            }
            _ = writer.pressure.flush_wanted().notified() => {
                if !writer.flush().await {
                    return;
                }
                continue;
            }
        };
        let mut written = vec![first];
        while let Ok(more) = queue.try_recv() {
            written.push(more);
        }
        for queued in &mut written {
            if !writer.feed_text(std::mem::take(&mut queued.text)).await {
                return;
            }
        }
        if !writer.flush().await {
            return;
        }
    }
    let _ = writer.send(Message::Close(None)).await;
}

/// Text messages larger than this go out as fragments of this size, so tungstenite's
/// own write buffer, which keeps its capacity, never grows past it.
const FRAGMENT_BYTES: usize = 1024 * 1024;

struct Writer {
    sink: SplitSink<Socket, Message>,
    pressure: Arc<WritePressure>,
    stall_limit: Duration,
}

impl Writer {
    /// Runs one sink operation; false if it failed or the socket took nothing for the
    /// stall limit.
    async fn until_stalled(
        pressure: &WritePressure,
        stall_limit: Duration,
        operation: impl std::future::Future<Output = Result<(), tungstenite::Error>>,
    ) -> bool {
        tokio::pin!(operation);
        loop {
            let progress = pressure.progress().notified();
            tokio::select! {
                // The operation first: when it is done at once (the common case), the
                // timer is never registered.
                biased;
                done = &mut operation => return done.is_ok(),
                _ = progress => {}
                _ = tokio::time::sleep(stall_limit) => {
                    tracing::info!(stall = ?stall_limit, "websocket peer stopped reading; disconnecting");
                    return false;
                }
            }
        }
    }

    async fn send(&mut self, message: Message) -> bool {
        Self::until_stalled(&self.pressure, self.stall_limit, self.sink.send(message)).await
    }

    async fn flush(&mut self) -> bool {
        Self::until_stalled(&self.pressure, self.stall_limit, self.sink.flush()).await
    }

    /// Queues one text message in the sink, in fragments if it is large.
    async fn feed_text(&mut self, text: String) -> bool {
        if text.len() <= FRAGMENT_BYTES {
            let message = Message::Text(text.into());
            return Self::until_stalled(&self.pressure, self.stall_limit, self.sink.feed(message))
                .await;
        }
        let bytes = Bytes::from(text.into_bytes());
        let mut start = 0;
        while start < bytes.len() {
            let end = (start + FRAGMENT_BYTES).min(bytes.len());
            let opcode = match start {
                0 => OpCode::Data(Data::Text),
                _ => OpCode::Data(Data::Continue),
            };
            let frame = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
            let fed = self.sink.feed(Message::Frame(frame));
            if !Self::until_stalled(&self.pressure, self.stall_limit, fed).await {
                return false;
            }
            start = end;
        }
        true
    }
}

/// How long a finished connection's writer may keep flushing.
const WRITER_GRACE: Duration = Duration::from_secs(1);

struct MessageSource {
    stream: SplitStream<Socket>,
    silence_limit: Duration,
    pressure: Arc<WritePressure>,
}

impl MessageSource {
    /// Waits while more is unflushed than the outbound budget (a peer that does not read
    /// what we send, pongs included); false if the socket took nothing for the silence
    /// limit, which counts as a vanished peer.
    async fn wait_for_room_to_write(&self) -> bool {
        // Fast path: nothing to wait for, so no waiter to register.
        if self.pressure.unflushed() <= OUTBOUND_BUDGET_BYTES {
            return true;
        }
        loop {
            let progress = self.pressure.progress().notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.pressure.unflushed() <= OUTBOUND_BUDGET_BYTES {
                return true;
            }
            self.pressure.flush_wanted().notify_one();
            if tokio::time::timeout(self.silence_limit, progress)
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

impl FrameSource for MessageSource {
    async fn next_frame(&mut self) -> Option<InboundFrame> {
        loop {
            if !self.wait_for_room_to_write().await {
                tracing::info!(silence = ?self.silence_limit, "websocket peer stopped reading; disconnecting");
                return None;
            }
            let next = tokio::time::timeout(self.silence_limit, self.stream.next()).await;
            let Ok(next) = next else {
                tracing::info!(silence = ?self.silence_limit, "websocket peer went silent; disconnecting");
                return None;
            };
            let message = match next? {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(%err, "websocket read failed");
                    return None;
                }
            };
            return Some(match message {
                Message::Text(text) => InboundFrame::Message(text.as_str().to_owned()),
                Message::Binary(bytes) => match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => InboundFrame::Message(text),
                    Err(_) => InboundFrame::NotUtf8,
                },
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(_) => return None,
            });
        }
    }
}
