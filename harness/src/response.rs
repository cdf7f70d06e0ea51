//! [`Response`]: the server's answer to one request, success or error.

use exec_protocol::{ErrorObject, RequestId};
use serde_json::Value;

use crate::error::{HarnessError, Report, Result};

/// A response to one request.
#[derive(Debug, Clone)]
pub struct Response {
    /// The id the response carries (`None` for an error about a frame the server could
    /// not identify, sent with `id: null`).
    pub id: Option<RequestId>,
    /// The method of the request, when this connection sent it through the harness.
    pub method: Option<String>,
    /// The `result` member, for a success.
    pub result: Option<Value>,
    /// The `error` member, for a failure.
    pub error: Option<ErrorObject>,
    /// The frame as received.
    pub raw: String,
    pub(crate) report: Report,
    /// Its place in the order responses arrived on its connection.
    pub(crate) arrival: u64,
}

impl Response {
    /// The whole message as received (to check envelope members such as `jsonrpc`).
    pub fn message(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
    }

    fn method_name(&self) -> String {
        self.method
            .clone()
            .unwrap_or_else(|| format!("request {}", self.id_text()))
    }

    fn id_text(&self) -> String {
        self.id
            .as_ref()
            .map_or_else(|| "null".to_owned(), ToString::to_string)
    }

    /// The result, or the server's error as [`HarnessError::Rpc`].
    pub fn into_result(self) -> Result<Value> {
        match (self.result, self.error) {
            (Some(result), _) => Ok(result),
            (None, Some(failure)) => Err(HarnessError::Rpc {
                method: self.method.unwrap_or_else(|| "request".into()),
                failure,
                report: self.report,
            }),
            (None, None) => Err(HarnessError::Protocol {
                message: "empty response".into(),
                report: self.report,
            }),
        }
    }

    /// The server's error; a success is [`HarnessError::UnexpectedSuccess`].
    pub fn into_error(self) -> Result<ErrorObject> {
        let method = self.method_name();
        match (self.error, self.result) {
            (Some(failure), _) => Ok(failure),
            (None, result) => Err(HarnessError::UnexpectedSuccess {
                method,
                result: result.unwrap_or(Value::Null),
                report: self.report,
            }),
        }
    }
}
