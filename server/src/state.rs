//! The state every connection of one server shares: its options, its sessions and its
//! shutdown signal. A leaf below `transport`, `connection` and `handlers`, which all
//! reach the server through it.

use std::sync::OnceLock;

use exec_protocol::PartialReply;

use crate::options::ServerOptions;
use crate::session::SessionRegistry;
use crate::shutdown::Shutdown;

/// State shared by every connection of one server.
pub(crate) struct ServerState {
    pub(crate) options: ServerOptions,
    pub(crate) registry: SessionRegistry,
    pub(crate) shutdown: Shutdown,
    /// The `environment/info` result, encoded on its first request.
    pub(crate) environment: OnceLock<PartialReply>,
}
