//! Why a session operation was refused. `handlers` maps each to its JSON-RPC error.

use crate::limits::LimitReached;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, destroyed, or expired at resume time.
    #[error("unknown session id {0}")]
    UnknownSession(String),
    #[error("session {0} is already attached to another connection")]
    AlreadyAttached(String),
    #[error(transparent)]
    LimitReached(#[from] LimitReached),
    #[error("process {0} already exists")]
    ProcessExists(String),
    /// The session was destroyed while the process was spawning.
    #[error("session has been destroyed")]
    Destroyed,
    /// The OS refused the spawn; the error's text names what failed.
    #[error("failed to start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}
