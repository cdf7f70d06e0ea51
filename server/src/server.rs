//! Wires a server together: options, the shared `ServerState`, and the entry points
//! that serve a websocket listener or stdio until shutdown, then kill every process.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::session::{SessionRegistry, SessionSettings};
use crate::shutdown::Shutdown;
use crate::transport::{stdio, ws::WebSocketListener};
use crate::watchdog::Watchdog;

pub const DEFAULT_OUTPUT_RETENTION_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct ServerOptions {
    /// Newest output bytes kept per process for `process/read`.
    pub output_retention_bytes: usize,
    /// Inbound message size limit.
    pub max_message_bytes: usize,
    /// Orphan watchdog, if the embedding process started one.
    pub watchdog: Option<Watchdog>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            output_retention_bytes: DEFAULT_OUTPUT_RETENTION_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            watchdog: None,
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
            watchdog: options.watchdog.clone(),
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
        stdio::serve(Arc::clone(&self.state)).await;
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

    /// Serves until shutdown is triggered, then kills every managed process.
    pub async fn serve(self) -> std::io::Result<()> {
        let result = self.listener.serve().await;
        self.state.registry.destroy_all();
        result
    }
}
