//! The websocket transport: an axum HTTP listener with the websocket upgrade on `/`
//! and `GET /readyz`. Every upgrade passes the `security` rules (token, `Origin`,
//! `Host`) and the connection cap before any JSON-RPC is read; `/readyz` needs neither.
//! Every accepted socket gets TCP_NODELAY, so small notifications are not held back by
//! the peer's delayed ACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{SplitStream, StreamExt};
use futures_util::SinkExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::connection::{self, FrameSource, InboundFrame, OUTBOUND_QUEUE_MESSAGES};
use crate::security::Refusal;
use crate::server::ServerState;
use crate::shutdown::Shutdown;

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
            .route("/readyz", get(|| async { StatusCode::OK }))
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

/// A peer must send a whole request head within this (PROTOCOL.md §2).
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

async fn upgrade(
    State(gate): State<Arc<Gate>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refusal) = gate
        .state
        .options
        .upgrade_policy
        .admit(&headers, gate.bound)
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
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
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
    let limit = state.options.max_message_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // Outbound messages are not limited (a read result may be many MiB), so the
        // write buffer must take any one message. Memory stays bounded anyway: the
        // writer awaits the sink, which flushes before accepting the next message.
        .max_write_buffer_size(usize::MAX)
        .on_upgrade(move |socket| serve_socket(socket, state, permit))
}

/// Keepalive: the writer pings every `keepalive`; the reader ends a connection whose
/// peer has sent nothing, not even a pong, for `SILENT_INTERVALS` of them. A peer that
/// vanished without FIN or RST is thus detached, and its session can be resumed.
const SILENT_INTERVALS: u32 = 3;

/// `_slot` is this connection's place under `--max-connections`, freed when it ends.
async fn serve_socket(socket: WebSocket, state: Arc<ServerState>, _slot: OwnedSemaphorePermit) {
    let (mut sink, stream) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<String>(OUTBOUND_QUEUE_MESSAGES);
    let keepalive = state.options.ws_keepalive;
    let writer = tokio::spawn(async move {
        let mut pings =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = pings.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if sink.feed(Message::Text(message.into())).await.is_err() {
                return;
            }
            while let Ok(more) = queue.try_recv() {
                if sink.feed(Message::Text(more.into())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let silence_limit = keepalive * SILENT_INTERVALS;
    let source = MessageSource {
        stream,
        silence_limit,
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

/// How long a finished connection's writer may keep flushing.
const WRITER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

struct MessageSource {
    stream: SplitStream<WebSocket>,
    silence_limit: std::time::Duration,
}

impl FrameSource for MessageSource {
    async fn next_frame(&mut self) -> Option<InboundFrame> {
        loop {
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
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return None,
            });
        }
    }
}
