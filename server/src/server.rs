//! Wires a server together: options, the shared `ServerState`, and the entry points
//! that serve a websocket listener or stdio until shutdown, then kill every process.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::containment::Containment;
use crate::fs::FileSystem;
use crate::limits::Limits;
use crate::process::retention::RetentionPool;
use crate::security::UpgradePolicy;
use crate::session::{SessionRegistry, SessionSettings};
use crate::shutdown::Shutdown;
use crate::transport::{stdio, ws::WebSocketListener};
use crate::watchdog::Watchdog;

pub const DEFAULT_OUTPUT_RETENTION_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30);
pub const DEFAULT_WS_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub struct ServerOptions {
    /// Newest output bytes kept per process for `process/read`.
    pub output_retention_bytes: usize,
    /// Inbound message size limit.
    pub max_message_bytes: usize,
    /// How long a detached session can be resumed.
    pub session_ttl: std::time::Duration,
    /// Websocket ping interval; a peer silent for three of them is disconnected.
    pub ws_keepalive: std::time::Duration,
    /// Where `fs/*` and process working directories may reach (`--fs-root`).
    pub file_system: Arc<FileSystem>,
    /// A cgroup per process, or process groups (the default: a server's cgroups are
    /// removed at exit by the watchdog, which only the binary starts).
    pub containment: Containment,
    /// Orphan watchdog, if the embedding process started one.
    pub watchdog: Option<Watchdog>,
    /// Token, `Origin` and `Host` rules for websocket upgrades.
    pub upgrade_policy: UpgradePolicy,
    pub limits: Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            output_retention_bytes: DEFAULT_OUTPUT_RETENTION_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            session_ttl: DEFAULT_SESSION_TTL,
            ws_keepalive: DEFAULT_WS_KEEPALIVE,
            file_system: Arc::new(FileSystem::Unconfined),
            containment: Containment::ProcessGroup,
            watchdog: None,
            upgrade_policy: UpgradePolicy::default(),
            limits: Limits::default(),
        }
    }
}

/// State shared by every connection of one server.
pub struct ServerState {
    pub options: ServerOptions,
    pub registry: SessionRegistry,
    pub shutdown: Shutdown,
}

/// A configured server; serve it on one transport.
pub struct Server {
    state: Arc<ServerState>,
}

impl Server {
    pub fn new(options: ServerOptions, shutdown: Shutdown) -> Self {
        let registry = SessionRegistry::new(SessionSettings {
            output_retention_bytes: options.output_retention_bytes,
            containment: options.containment.clone(),
            watchdog: options.watchdog.clone(),
            detached_ttl: options.session_ttl,
            limits: options.limits,
            retention_pool: RetentionPool::new(options.limits.max_retained_bytes),
        });
        Self {
            state: Arc::new(ServerState {
                options,
                registry,
                shutdown,
            }),
        }
    }

    /// Binds the websocket listener; serve it with [`BoundServer::serve`].
    pub async fn bind_websocket(self, addr: SocketAddr) -> std::io::Result<BoundServer> {
        let listener = WebSocketListener::bind(addr, Arc::clone(&self.state)).await?;
        Ok(BoundServer {
            listener,
            state: self.state,
        })
    }

    /// Serves one JSON-RPC connection over stdin/stdout until EOF or shutdown, then
    /// kills every managed process.
    pub async fn serve_stdio(self) {
        let limit = self.state.options.max_message_bytes;
        self.serve_stdio_streams(tokio::io::stdin(), tokio::io::stdout(), limit)
            .await
    }

    /// The stdio transport over any byte streams (e.g. an in-memory pipe in tests):
    /// JSON Lines in, JSON Lines out, until `input` reaches EOF or shutdown.
    pub async fn serve_stdio_streams(
        self,
        input: impl AsyncRead + Send + Unpin,
        output: impl AsyncWrite + Send + Unpin + 'static,
        max_line_bytes: usize,
    ) {
        stdio::serve(Arc::clone(&self.state), input, output, max_line_bytes).await;
        self.state.registry.destroy_all();
    }

    /// A handle that can stop this server from anywhere, even from a `Drop`.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: Arc::clone(&self.state),
        }
    }
}

/// Stops a server: triggers shutdown and kills every managed process tree at once,
/// without waiting for any task (usable in `Drop`).
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
}

impl ServerHandle {
    pub fn shutdown(&self) {
        self.state.shutdown.trigger();
        self.state.registry.destroy_all();
    }
}

pub struct BoundServer {
    listener: WebSocketListener,
    state: Arc<ServerState>,
}

impl BoundServer {
    /// `ws://IP:PORT` with the real port.
    pub fn url(&self) -> std::io::Result<String> {
        self.listener.url()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Serves until shutdown is triggered, then kills every managed process.
    pub async fn serve(self) -> std::io::Result<()> {
        let result = self.listener.serve().await;
        self.state.registry.destroy_all();
        result
    }
}
