//! `exec-server`: a JSON-RPC 2.0 server that runs processes, streams their output,
//! takes their stdin and kills whole process trees, over websocket or stdio.
//!
//! Layering (see ARCHITECTURE.md): `transport` (frames) → `connection` (JSON-RPC,
//! handshake, ordering) → `handlers` (one module per method family) → `session` /
//! `process` (state), with `shutdown` as the server-wide stop signal.

pub mod cgroup;
pub mod cli;
pub mod connection;
pub mod containment;
pub mod fs;
pub mod handlers;
pub mod limits;
pub mod ordering;
pub mod outbound;
pub mod process;
pub mod protocol;
pub mod rpc;
pub mod security;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod transport;
pub mod watchdog;

pub use server::{BoundServer, Server, ServerHandle, ServerOptions};
pub use shutdown::Shutdown;
