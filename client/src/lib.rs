//! `ExecServerClient`: a typed client for exec-server over a websocket URL or a stdio
//! command (docs/protocol.md §8).
//!
//! One reader task per connection files responses by id and notifications by process;
//! each process's events reach the caller in `seq` order whatever order they arrived
//! in. A lost transport fails every pending and later call with "exec-server transport
//! disconnected" and ends every event stream with [`ProcessEvent::Failed`] — unless
//! reconnect is enabled (websocket only): then the client resumes its session, re-sends
//! pending reads, reports mutating calls whose response was lost, and re-reads every
//! process from its last seen seq so no retained output is lost.
//!
//! Everything on the wire goes through `exec-protocol`: requests are its typed params
//! ([`ExecServerClient::call`] takes any of them), results and notifications decode
//! into its types, and server errors are matched by their code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), exec_client::ClientError> {
//! use exec_client::{
//!     ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, StartRequest,
//! };
//! let transport = ExecServerTransport::WebSocketUrl("ws://127.0.0.1:8765".into());
//! let client = ExecServerClient::connect(transport, ClientOptions::default()).await?;
//! let mut process = client.start(StartRequest::new(["echo", "hi"])).await?;
//! while let Some(event) = process.next_event().await {
//!     if let ProcessEvent::Output { data, .. } = event {
//!         print!("{}", String::from_utf8_lossy(&data));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod environments;
pub mod teardown;
pub mod transport;
pub mod wire;

mod client;
mod connection;
mod error;
mod events;
mod options;
mod reader;
mod reconnect;
mod start;
mod token;
mod tracker;

pub use client::ExecServerClient;
pub use error::{ClientError, DISCONNECTED};
pub use events::{ProcessEvent, ProcessHandle};
pub use options::{ClientOptions, DEFAULT_CALL_TIMEOUT, TOKEN_VAR};
pub use start::StartRequest;
pub use token::{BearerToken, TokenError, MAX_TOKEN_BYTES};
pub use transport::ExecServerTransport;

/// The protocol types that appear in this crate's API.
pub use exec_protocol::{
    DirectoryEntry, EnvPolicy, EnvironmentInfo, Inherit, Metadata, Method, OutputChunk, ReadResult,
    Shell, SignalName, Stream, WriteStatus,
};
