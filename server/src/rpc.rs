//! The JSON-RPC 2.0 envelope: classifying inbound frames, error codes, and encoding
//! outbound messages. Knows nothing about methods or transports.

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::limits::LimitReached;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const NOT_FOUND: i64 = -32004;
/// [ext] A server cap is reached; `data` is `{limit, value}`.
pub const LIMIT_REACHED: i64 = -32005;

/// An error that is sent back to the client as a JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// The error object's optional `data` member.
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, message)
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("method not found: {method}"))
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }
}

impl From<LimitReached> for RpcError {
    fn from(reached: LimitReached) -> Self {
        Self {
            code: LIMIT_REACHED,
            message: reached.to_string(),
            data: Some(json!({"limit": reached.wire_name(), "value": reached.value()})),
        }
    }
}

/// A request id: JSON-RPC allows strings and numbers; it is echoed back unchanged.
pub type RequestId = Value;

#[derive(Debug)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Value,
}

#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// What one inbound frame turned out to be.
#[derive(Debug)]
pub enum Inbound {
    Request(Request),
    Notification(Notification),
    /// A response from the client; the server never sends requests, so it is ignored.
    Response {
        id: RequestId,
    },
    /// A frame that is not a usable JSON-RPC message; answered with this error and
    /// the id it carried, if any could be recovered.
    Invalid {
        id: RequestId,
        error: RpcError,
    },
}

/// Classifies one frame. Never fails: every problem becomes `Inbound::Invalid`.
pub fn classify(frame: &str) -> Inbound {
    let value: Value = match serde_json::from_str(frame) {
        Ok(value) => value,
        Err(err) => {
            return Inbound::Invalid {
                id: Value::Null,
                error: RpcError::parse(format!("parse error: {err}")),
            }
        }
    };
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return invalid(Value::Null, "batch requests are not supported");
        }
        _ => return invalid(Value::Null, "a JSON-RPC message must be an object"),
    };
    let id = object.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return invalid(Value::Null, "id must be a string or an integer");
        }
    }
    if let Some(version) = object.get("jsonrpc") {
        if version != "2.0" {
            return invalid(id.unwrap_or(Value::Null), "jsonrpc must be \"2.0\"");
        }
    }
    let params = object.remove("params").unwrap_or(Value::Null);
    match (object.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Inbound::Request(Request { id, method, params }),
        (Some(Value::String(method)), None) => {
            Inbound::Notification(Notification { method, params })
        }
        (Some(_), id) => invalid(id.unwrap_or(Value::Null), "method must be a string"),
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            Inbound::Response { id }
        }
        (None, id) => invalid(id.unwrap_or(Value::Null), "not a JSON-RPC request"),
    }
}

fn invalid(id: RequestId, message: &str) -> Inbound {
    Inbound::Invalid {
        id,
        error: RpcError::invalid_request(message),
    }
}

/// Decodes `params` into `T`, naming the offending field on failure.
pub fn decode_params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let params = match params {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    serde_path_to_error::deserialize(params).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            RpcError::invalid_params(format!("invalid params: {}", err.inner()))
        } else {
            RpcError::invalid_params(format!("invalid params: {path}: {}", err.inner()))
        }
    })
}

/// A successful result, ready to be sent.
#[derive(Debug)]
pub enum Reply {
    Json(Value),
    /// A success message encoded up to, but not including, its id:
    /// `{"jsonrpc":"2.0","result":…` — the connection appends `,"id":…}`. Lets a very
    /// large result (a file's contents) be built once, in place.
    EncodedWithoutId(String),
}

impl From<Value> for Reply {
    fn from(value: Value) -> Self {
        Reply::Json(value)
    }
}

pub fn encode_reply(id: &RequestId, reply: Reply) -> String {
    match reply {
        Reply::Json(result) => encode_result(id, result),
        Reply::EncodedWithoutId(mut message) => {
            message.push_str(",\"id\":");
            message.push_str(&id.to_string());
            message.push('}');
            message
        }
    }
}

pub fn encode_result(id: &RequestId, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

pub fn encode_error(id: &RequestId, error: &RpcError) -> String {
    let mut object = json!({"code": error.code, "message": error.message});
    if let Some(data) = &error.data {
        object["data"] = data.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": object}).to_string()
}

pub fn encode_notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_a_parse_error_with_null_id() {
        match classify("{not json") {
            Inbound::Invalid { id, error } => {
                assert_eq!(id, Value::Null);
                assert_eq!(error.code, PARSE_ERROR);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn batches_are_refused() {
        match classify(r#"[{"id":1,"method":"initialize"}]"#) {
            Inbound::Invalid { error, .. } => assert_eq!(error.code, INVALID_REQUEST),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn requests_with_and_without_jsonrpc_field_are_accepted() {
        for frame in [
            r#"{"id":"a","method":"m","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"m"}"#,
        ] {
            assert!(matches!(classify(frame), Inbound::Request(_)), "{frame}");
        }
    }

    #[test]
    fn notifications_and_responses_are_recognised() {
        assert!(matches!(
            classify(r#"{"method":"initialized"}"#),
            Inbound::Notification(_)
        ));
        assert!(matches!(
            classify(r#"{"id":3,"result":{}}"#),
            Inbound::Response { .. }
        ));
    }

    #[test]
    fn float_or_object_ids_are_invalid() {
        for frame in [r#"{"id":1.5,"method":"m"}"#, r#"{"id":{},"method":"m"}"#] {
            assert!(
                matches!(classify(frame), Inbound::Invalid { .. }),
                "{frame}"
            );
        }
    }

    #[test]
    fn a_reply_encoded_without_id_gets_its_id_appended() {
        let message = encode_reply(
            &json!(7),
            Reply::EncodedWithoutId(r#"{"jsonrpc":"2.0","result":{"a":1}"#.to_owned()),
        );
        let value: Value = serde_json::from_str(&message).expect("valid JSON");
        assert_eq!(
            value,
            json!({"jsonrpc": "2.0", "id": 7, "result": {"a": 1}})
        );
    }

    #[test]
    fn param_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            argv: Vec<String>,
        }
        let err = decode_params::<P>(json!({"argv": "ls"})).unwrap_err();
        assert_eq!(err.code, INVALID_PARAMS);
        assert!(err.message.contains("argv"), "{}", err.message);
        let err = decode_params::<P>(json!({})).unwrap_err();
        assert!(err.message.contains("argv"), "{}", err.message);
    }
}
