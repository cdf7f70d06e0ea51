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
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Why a `process/start` could not start its child (docs/protocol.md §6.1), and what
/// to blame: the working directory (checked by the server before it spawns) or the
/// program (anything the spawn itself reports).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot use cwd {}: {source}", cwd.display())]
    Cwd {
        cwd: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("failed to start {program}: {source}")]
    Program {
        program: String,
        source: std::io::Error,
    },
    /// The server's own set-up around the spawn failed (its cgroup, a PTY, a pidfd):
    /// nothing says the program is missing or not executable.
    #[error("cannot start {program}: the server could not set up the process: {source}")]
    Setup {
        program: String,
        source: std::io::Error,
    },
}

impl SpawnError {
    /// What failed, as the error's `data.subject` names it.
    pub fn subject(&self) -> &'static str {
        match self {
            SpawnError::Cwd { .. } => "cwd",
            SpawnError::Program { .. } => "program",
            SpawnError::Setup { .. } => "server",
        }
    }

    /// The OS error number of a failure of the program or its cwd; `None` for the
    /// server's own set-up, which must not be read as "not found" or "not executable".
    pub fn errno(&self) -> Option<i32> {
        match self {
            SpawnError::Cwd { source, .. } | SpawnError::Program { source, .. } => {
                source.raw_os_error()
            }
            SpawnError::Setup { .. } => None,
        }
    }
}
