//! The server's resource caps (docs/protocol.md §1, §3): their defaults, their wire
//! names, and `LimitReached`, which `handlers` turns into a -32005 error. Every cap is
//! per server except `maxProcesses` and `maxOpenHandles` (per session); reaching one
//! refuses that request only.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Live websocket connections (`--max-connections`); one more gets HTTP 503.
    pub max_connections: usize,
    /// Sessions, attached or detached (`--max-sessions`).
    pub max_sessions: usize,
    /// Process entries per session, running or closed and not yet evicted.
    pub max_processes: usize,
    /// Output retained by all processes together (`--max-retained-bytes`).
    pub max_retained_bytes: usize,
    /// `fs/open` handles open at once per session. No command-line flag: the default
    /// (256) is set here, and an embedder may change it.
    pub max_open_handles: usize,
}

pub const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 1024,
    max_sessions: 16 * 1024,
    max_processes: 4096,
    max_retained_bytes: 1024 * 1024 * 1024,
    max_open_handles: 256,
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// A request was refused because a cap is reached; `value` is the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("the server has {value} sessions, its limit (--max-sessions); resume a detached session or wait for one to expire")]
    Sessions { value: usize },
    #[error("this session has {value} processes, its limit (--max-processes); terminate some, or wait until closed ones are evicted")]
    Processes { value: usize },
    #[error("this session has {value} open file handles, its limit; close some with fs/close")]
    OpenHandles { value: usize },
}

impl LimitReached {
    /// The cap's name in `capabilities.limits` and in the error's `data.limit`.
    pub fn wire_name(self) -> &'static str {
        match self {
            LimitReached::Sessions { .. } => "maxSessions",
            LimitReached::Processes { .. } => "maxProcesses",
            LimitReached::OpenHandles { .. } => "maxOpenHandles",
        }
    }

    pub fn value(self) -> usize {
        match self {
            LimitReached::Sessions { value }
            | LimitReached::Processes { value }
            | LimitReached::OpenHandles { value } => value,
        }
    }
}
