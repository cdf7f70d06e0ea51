//! [`Event`]: one notification from the server, with typed accessors for the
//! `process/*` notifications of exec-protocol.

use exec_protocol::{NotificationMethod, Notify, Stream};
use serde_json::Value;

/// One notification from the server, e.g. `process/output`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The notification method as received, e.g. `process/output`.
    pub method: String,
    /// Its params (JSON `null` when absent).
    pub params: Value,
    /// The frame as received.
    pub raw: String,
}

impl Event {
    /// The whole message as received (to check envelope members such as `jsonrpc`).
    pub fn message(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
    }

    /// The notification method, if exec-protocol has one by this name.
    pub fn kind(&self) -> Option<NotificationMethod> {
        NotificationMethod::parse(&self.method)
    }

    /// The params decoded as notification `N` (`None` for another method, or params
    /// that do not decode).
    ///
    /// ```
    /// use exec_server_harness::{Event, protocol::ProcessExited};
    /// let event = Event {
    ///     method: "process/exited".into(),
    ///     params: serde_json::json!({"processId": "p", "seq": 2, "exitCode": 0}),
    ///     raw: String::new(),
    /// };
    /// assert_eq!(event.decode::<ProcessExited>().map(|e| e.exit_code), Some(0));
    /// ```
    pub fn decode<N: Notify>(&self) -> Option<N> {
        if self.method != N::METHOD.as_str() {
            return None;
        }
        serde_json::from_value(self.params.clone()).ok()
    }

    /// `params.processId`, if any.
    pub fn process_id(&self) -> Option<&str> {
        self.params.get("processId").and_then(Value::as_str)
    }

    /// `params.seq`, if any.
    pub fn seq(&self) -> Option<u64> {
        self.params.get("seq").and_then(Value::as_u64)
    }

    /// This notification, of this process.
    pub fn is(&self, method: NotificationMethod, process_id: impl AsRef<str>) -> bool {
        self.method == method.as_str() && self.process_id() == Some(process_id.as_ref())
    }

    /// A `process/output` notification of this process.
    pub fn is_output(&self, process_id: impl AsRef<str>) -> bool {
        self.is(NotificationMethod::ProcessOutput, process_id)
    }

    /// A `process/exited` notification of this process.
    pub fn is_exited(&self, process_id: impl AsRef<str>) -> bool {
        self.is(NotificationMethod::ProcessExited, process_id)
    }

    /// A `process/closed` notification of this process.
    pub fn is_closed(&self, process_id: impl AsRef<str>) -> bool {
        self.is(NotificationMethod::ProcessClosed, process_id)
    }

    /// The stream of an output event.
    pub fn stream(&self) -> Option<Stream> {
        serde_json::from_value(self.params.get("stream")?.clone()).ok()
    }

    /// The decoded bytes of an output event.
    pub fn chunk(&self) -> Option<Vec<u8>> {
        let chunk = self.params.get("chunk")?.clone();
        serde_json::from_value::<exec_protocol::Base64Bytes>(chunk)
            .ok()
            .map(|bytes| bytes.0)
    }

    /// The exit code of an exited event.
    pub fn exit_code(&self) -> Option<i32> {
        let code = self.params.get("exitCode")?.as_i64()?;
        i32::try_from(code).ok()
    }

    /// The signal name of an exited event of a killed process (`"SIGKILL"`).
    pub fn signal(&self) -> Option<&str> {
        self.params.get("signal").and_then(Value::as_str)
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
