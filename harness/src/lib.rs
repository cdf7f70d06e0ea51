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
//! let session = server.initialize("my-test").await?;
//! let pid = session.start(["sh", "-c", "echo hi"]).await?;
//! let out = session.read_to_end(&pid).await?;
//! assert_eq!(out.stdout, b"hi\n");
//! server.expect_event(|e| e.is_exited(&pid)).within(Duration::from_secs(2)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Any implementation can be tested the same way:
//! `ExecServer::builder().stdio().binary(path).start()` runs `path --listen stdio` in its
//! own process group. When a test panics, the harness prints the wire trace and the
//! server's stderr tail; teardown is bounded and ends with SIGKILL of the server's group.
//!
//! Every wait defaults to 5 s, multiplied by `EXEC_HARNESS_TIME_SCALE` (e.g. `3` on a
//! slow CI machine) or by [`ExecServerBuilder::time_scale`].

#![warn(missing_docs)]

mod error;
mod event;
mod launch;
mod orphans;
mod server;
mod session;
mod trace;

pub use error::{HarnessError, Result, RpcFailure};
pub use event::Event;
pub use launch::Transport;
pub use orphans::{process_alive, wait_for_process_gone};
pub use server::{EventWait, ExecServer, ExecServerBuilder, Response};
pub use session::{ProcessId, ProcessOutput, ProcessSpec, Session};
pub use trace::{Direction, TraceEntry};

/// Starts the in-tree server in-process on a websocket bound to an ephemeral loopback
/// port. Nothing needs to be built beforehand; each call starts a fresh, independent
/// server, and dropping the handle stops it and kills every process it started.
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
