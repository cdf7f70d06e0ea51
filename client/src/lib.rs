//! `ExecServerClient`: a typed client for exec-server over a websocket URL or a stdio
//! command (docs/protocol.md §8).
//!
//! One reader task per connection files responses by id and notifications by process;
//! each process's events reach the caller in `seq` order whatever order they arrived
//! in. A lost transport fails every pending and later call with "exec-server transport
//! disconnected" and ends every event stream with [`ProcessEvent::Failed`] — unless
//! reconnect is enabled (websocket only): then the client resumes its session, re-sends
//! pending reads, re-sends pending writes (each carries a `writeId`) when the server
//! advertises revision 2026-08 and so de-duplicates them, reports every other mutating
//! call whose response was lost, and re-reads every process from its last seen seq so
//! no retained output is lost.
//!
//! Paths: [`ClientOptions::path_form`] picks plain paths (the default) or `file:` URIs
//! (what upstream requires at revision 2026-08) for every path the client sends; paths
//! in results come back as plain paths in both modes.
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

pub use client::{ExecServerClient, FsOptions};
pub use error::{ClientError, DISCONNECTED};
pub use events::{ProcessEvent, ProcessHandle};
pub use options::{ClientOptions, DEFAULT_CALL_TIMEOUT, TOKEN_VAR};
pub use start::StartRequest;
pub use token::{BearerToken, TokenError, MAX_TOKEN_BYTES};
pub use transport::ExecServerTransport;

/// The protocol types that appear in this crate's API.
pub use exec_protocol::{
    DirectoryEntry, EntryKind, EnvPolicy, EnvironmentInfo, EnvironmentStatus, Inherit, Metadata,
    Method, OutputChunk, PathForm, ReadBlockResult, ReadResult, Revision, Shell, SignalName,
    Stream, WalkEntry, WalkError, WalkOptions, WalkResult, WirePath, WriteStatus,
};
