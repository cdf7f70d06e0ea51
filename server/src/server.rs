//! Wires a server together from its options and the shared `ServerState`: the entry points
//! that serve a websocket listener or stdio until shutdown, then kill every process.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::options::ServerOptions;
use crate::process::RetentionPool;
use crate::session::{SessionRegistry, SessionSettings};
use crate::shutdown::Shutdown;
use crate::state::ServerState;
use crate::transport::{stdio, ws::WebSocketListener};

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
                environment: Default::default(),
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
