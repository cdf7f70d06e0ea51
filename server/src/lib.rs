//! `exec-server`: a JSON-RPC 2.0 server that runs processes, streams their output,
//! takes their stdin and kills whole process trees, over websocket or stdio. The wire
//! itself (names, params, results, envelope) is `exec-protocol`'s.
//!
//! Layering (see ARCHITECTURE.md), each module importing only from those below it:
//! `server` → `transport` (frames) → `connection` (JSON-RPC, handshake, ordering) →
//! `handlers` (one module per method family, the only place that maps domain errors to
//! JSON-RPC errors) → `state` → `session` → `process` / `fs` (domain, no JSON-RPC) →
//! `ordering`, `outbound`, `limits`, `containment`, `watchdog` and the other leaves.
//! `faults` (negative controls, public only with the `faults` feature) is a leaf that
//! any module may ask.
//! `server/tests/module_graph.rs` checks that no two modules import each other.
//!
//! The public surface is what an embedder needs: [`Server`] and its options (with the
//! [`FileSystem`] and [`Limits`] an embedder may set; containment, watchdog and upgrade
//! policy come from [`start_up`] and [`cli`]), its handles and shutdown signal, [`cli`]
//! for the command line, [`start_up`], the binary's start-up sequence, and [`run`], which
//! serves from a binary's `main`.

// A server that can be broken on purpose must never be an optimised build someone
// might ship: the `faults` feature is for debug builds (the negative-controls step).
#[cfg(all(feature = "faults", not(debug_assertions)))]
compile_error!("the `faults` feature (negative controls) is for debug builds only");

mod cgroup;
pub mod cli;
mod connection;
mod containment;
// Negative controls: `broken-server` needs `faults::set`; without the feature the
// module is private and its hooks compile to nothing.
#[cfg(feature = "faults")]
pub mod faults;
#[cfg(not(feature = "faults"))]
mod faults;
mod fs;
mod handlers;
mod limits;
mod options;
mod ordering;
mod outbound;
mod process;
mod run;
mod security;
mod server;
mod session;
mod shutdown;
mod sigchld;
mod startup;
mod state;
mod transport;
mod watchdog;

pub use fs::FileSystem;
pub use limits::Limits;
pub use options::ServerOptions;
pub use run::run;
pub use server::{BoundServer, Server, ServerHandle};
pub use shutdown::Shutdown;
pub use startup::{start_up, StartupError};
