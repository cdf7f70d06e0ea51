//! The harness's error type: every failure says what was expected and what happened.

use std::time::Duration;

use serde_json::Value;

/// A JSON-RPC error object returned by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFailure {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A wait ran past its deadline.
    #[error("timed out after {waited:?} waiting for {expected}; arrived instead: {arrived}")]
    Timeout {
        expected: String,
        waited: Duration,
        /// What was received and not consumed, summarised.
        arrived: String,
    },
    /// The connection closed while something was still expected.
    #[error("connection closed while waiting for {expected}")]
    Disconnected { expected: String },
    /// The server answered a request with an error.
    #[error("{method} failed: {failure}")]
    Rpc { method: String, failure: RpcFailure },
    /// A request that was expected to fail succeeded.
    #[error("{method} was expected to fail but returned {result}")]
    UnexpectedSuccess { method: String, result: Value },
    /// The server could not be started or did not come up.
    #[error("server start-up failed: {0}")]
    Startup(String),
    /// The server sent something that is not valid protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
