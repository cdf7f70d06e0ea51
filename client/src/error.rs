//! What a client call can fail with. Server errors keep their JSON-RPC `code`, `message`
//! and `data`; callers match them by `code` (`exec_protocol::code`), never by text.

use std::time::Duration;

use exec_protocol::{ErrorObject, Method};
use serde_json::Value;

/// The text of [`ClientError::Disconnected`] and of the `reason` that ends every event
/// stream when the transport is lost (docs/protocol.md §8).
pub const DISCONNECTED: &str = "exec-server transport disconnected";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("exec-server transport disconnected")]
    Disconnected,
    /// The connection dropped after a mutating request was sent and before its answer
    /// came; it may or may not have taken effect. It is never re-sent.
    #[error("{method}: the connection dropped before the response; the request may or may not have taken effect")]
    ResponseLost { method: Method },
    /// The server answered with a JSON-RPC error.
    #[error("{method} failed: {message} ({code})")]
    Server {
        method: Method,
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// No answer within `ClientOptions::call_timeout` (plus a
    /// long-poll's `waitMs`), or `initialize_timeout` for `initialize`. The request may
    /// still take effect on the server.
    #[error("{method}: no response within {after:?}")]
    Timeout { method: Method, after: Duration },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    pub(crate) fn server(method: Method, error: ErrorObject) -> Self {
        ClientError::Server {
            method,
            code: error.code,
            message: error.message,
            data: error.data,
        }
    }
}

/// Why a connection ended, as the reader and the sender say it; the connect error
/// (`transport`) explains each to the user.
pub(crate) const SERVER_CLOSED: &str = "the server closed the connection";
pub(crate) const UNEXPECTED_REQUEST: &str = "unexpected request from the server";
pub(crate) const SENDING_FAILED: &str = "sending failed";
