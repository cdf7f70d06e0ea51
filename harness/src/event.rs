//! Server-initiated messages (notifications) and predicates for waiting on them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

/// One notification from the server, e.g. `process/output`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The notification method, e.g. `process/output`.
    pub method: String,
    /// Its params (JSON `null` when absent).
    pub params: Value,
    /// The whole message as received.
    pub message: Value,
}

impl Event {
    /// `params.processId`, if any.
    pub fn process_id(&self) -> Option<&str> {
        self.params.get("processId").and_then(Value::as_str)
    }

    /// `params.seq`, if any.
    pub fn seq(&self) -> Option<u64> {
        self.params.get("seq").and_then(Value::as_u64)
    }

    fn is(&self, method: &str, process_id: &str) -> bool {
        self.method == method && self.process_id() == Some(process_id)
    }

    /// A `process/output` notification of this process.
    pub fn is_output(&self, process_id: impl AsRef<str>) -> bool {
        self.is("process/output", process_id.as_ref())
    }

    /// A `process/exited` notification of this process.
    pub fn is_exited(&self, process_id: impl AsRef<str>) -> bool {
        self.is("process/exited", process_id.as_ref())
    }

    /// A `process/closed` notification of this process.
    pub fn is_closed(&self, process_id: impl AsRef<str>) -> bool {
        self.is("process/closed", process_id.as_ref())
    }

    /// `stdout`, `stderr` or `pty` for an output event.
    pub fn stream(&self) -> Option<&str> {
        self.params.get("stream").and_then(Value::as_str)
    }

    /// The decoded bytes of an output event.
    pub fn chunk(&self) -> Option<Vec<u8>> {
        let text = self.params.get("chunk")?.as_str()?;
        BASE64.decode(text).ok()
    }

    /// The exit code of an exited event.
    pub fn exit_code(&self) -> Option<i64> {
        self.params.get("exitCode").and_then(Value::as_i64)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.method,
            crate::trace::abbreviate(&self.params.to_string(), 200)
        )
    }
}
