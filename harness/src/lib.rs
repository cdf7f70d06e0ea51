//! `exec-server-harness`: start an exec-server, talk to it over the wire, and wait for
//! what it sends, with a deadline on every wait.
//!
//! ```
//! use std::time::Duration;
//! use exec_server_harness::exec_server;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), exec_server_harness::HarnessError> {
//! let server = exec_server().await?; // the in-tree server, in-process, on websocket
//! let conn = server.connect().await?;
//! let session = conn.initialize("my-test").await?;
//! let pid = session.start(["sh", "-c", "echo hi"]).await?;
//! let out = session.read_to_end(&pid).await?;
//! assert_eq!(out.stdout, b"hi\n");
//! conn.expect_event(|e| e.is_exited(&pid)).within(Duration::from_secs(2)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//!
//! - [`ExecServer`]: the server under test (url, pid, stderr, signals, exit). Start one
//!   with [`exec_server()`] or [`ExecServer::builder`]; any implementation can be tested
//!   the same way: `ExecServer::builder().stdio().binary(path).start()` runs
//!   `path --listen stdio` in its own process group.
//! - [`Connection`]: one wire connection, from [`ExecServer::connect`]. On websocket
//!   each `connect` opens a new connection; on stdio the server has exactly one, its
//!   stdin and stdout, and only the first `connect` succeeds. Raw frames, pipelined and
//!   typed requests ([`Connection::call`] with exec-protocol's params types, or
//!   [`Connection::request`] with raw JSON), events, the wire trace, disconnect /
//!   reset / reconnect.
//! - [`Session`]: after the handshake ([`Connection::initialize`] or
//!   [`Connection::resume`]), typed process calls.
//!
//! # Deadlines
//!
//! Nothing waits unbounded: sending a frame, connecting, reconnecting, the close of a
//! disconnect, every response and event wait, reading a process to its end, waiting for
//! the server to exit. Each deadline is a logical duration — [`DEFAULT_WAIT`] (5 s)
//! unless the call takes one (`…_within(d)`, `.within(d)`) — multiplied by the time
//! scale: [`ExecServerBuilder::time_scale`], else `EXEC_HARNESS_TIME_SCALE` (e.g. `3`
//! on a slow CI machine), else 1. [`ExecServer::default_wait`] is already scaled;
//! durations you pass are scaled by the harness, so pass logical ones.
//!
//! # Failure reports
//!
//! When a test panics while a connection is alive, the harness prints the wire trace
//! and the server's stderr tail. A [`HarnessError`]'s `Debug` output carries the same
//! report, so a test returning `Err` shows it too. Printable output chunks are shown
//! decoded in the trace. Teardown is bounded and ends with SIGKILL of the server's group.

#![warn(missing_docs)]

mod builder;
mod connection;
mod error;
mod event;
mod expect;
mod http;
mod inbox;
mod launch;
mod orphans;
mod process;
mod response;
mod server;
mod session;
mod trace;
mod wait;

pub use builder::ExecServerBuilder;
pub use connection::{Connection, PendingRequest};
pub use error::{HarnessError, Report, Result, RpcFailure};
pub use event::Event;
pub use expect::EventWait;
pub use http::{HttpHead, HttpRequest, MAX_HTTP_BODY_BYTES, http_head};
pub use launch::Transport;
pub use orphans::{process_alive, wait_for_process_gone};
pub use process::{ProcessId, ProcessOutput, ProcessSpec};
pub use response::Response;
pub use server::ExecServer;
pub use session::Session;
pub use trace::{Direction, TraceEntry};
pub use wait::{DEFAULT_WAIT, TIME_SCALE_VAR};

/// exec-protocol, the one definition of the wire: params and result types, method
/// names, [`protocol::RequestId`], [`protocol::code`], … for writing params.
pub use exec_protocol as protocol;
pub use serde_json::{Value, json};

/// Starts the in-tree server in-process on a websocket bound to an ephemeral loopback
/// port. Nothing needs to be built beforehand; each call starts a fresh, independent
/// server, and dropping the handle (and every connection) stops it and kills every
/// process it started.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
/// let server = exec_server_harness::exec_server().await?;
/// assert!(server.url().unwrap().starts_with("ws://127.0.0.1:"));
/// # Ok(())
/// # }
/// ```
pub async fn exec_server() -> Result<ExecServer> {
    ExecServer::builder().start().await
}
