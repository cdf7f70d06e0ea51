//! The harness's error type: every failure says what was expected and what happened.

use std::time::Duration;

use serde_json::Value;

/// A JSON-RPC error object returned by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFailure {
    /// The JSON-RPC error code, e.g. -32600.
    pub code: i64,
    /// The error message.
    pub message: String,
    /// The optional `data` member.
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Every harness failure. `Debug` prints the same sentence as `Display`, so a test that
/// fails through `?` or `.expect()` shows what was expected and what arrived.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// A wait ran past its deadline.
    #[error("timed out after {waited:?} waiting for {expected}; arrived instead: {arrived}")]
    Timeout {
        /// What the wait was for.
        expected: String,
        /// How long it waited.
        waited: Duration,
        /// What was received and not consumed, summarised.
        arrived: String,
    },
    /// The connection closed while something was still expected.
    #[error("connection closed while waiting for {expected}")]
    Disconnected {
        /// What the wait was for.
        expected: String,
    },
    /// The server answered a request with an error.
    #[error("{method} failed: {failure}")]
    Rpc {
        /// The method that failed.
        method: String,
        /// The server's error.
        failure: RpcFailure,
    },
    /// A request that was expected to fail succeeded.
    #[error("{method} was expected to fail but returned {result}")]
    UnexpectedSuccess {
        /// The method that succeeded.
        method: String,
        /// Its result.
        result: Value,
    },
    /// The server could not be started or did not come up.
    #[error("server start-up failed: {0}")]
    Startup(String),
    /// The server sent something that is not valid protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    /// An I/O error talking to the server.
    Io(#[from] std::io::Error),
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `Result` with [`HarnessError`] as the default error.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
