//! The JSON-RPC 2.0 envelope (docs/protocol.md §3): request ids, error objects, the
//! classifier that turns any frame into a [`Message`] without failing, and the
//! encoders for every kind of outbound message.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::code;

/// A request id: a string or an integer, echoed back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Integer(i64),
    /// An integer above `i64::MAX`.
    Unsigned(u64),
    String(String),
}

impl RequestId {
    /// The id a JSON value names, if it is a string or an integer.
    pub fn from_value(value: &Value) -> Option<RequestId> {
        match value {
            Value::String(text) => Some(RequestId::String(text.clone())),
            Value::Number(number) => number
                .as_i64()
                .map(RequestId::Integer)
                .or_else(|| number.as_u64().map(RequestId::Unsigned)),
            _ => None,
        }
    }

    /// Bytes of the id as encoded in a message.
    pub fn encoded_len(&self) -> usize {
        match self {
            RequestId::String(text) => serde_json::to_string(text).map_or(text.len(), |s| s.len()),
            RequestId::Integer(n) => n.to_string().len(),
            RequestId::Unsigned(n) => n.to_string().len(),
        }
    }
}

impl From<u64> for RequestId {
    fn from(id: u64) -> Self {
        i64::try_from(id).map_or(RequestId::Unsigned(id), RequestId::Integer)
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        RequestId::String(id.to_owned())
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        RequestId::String(id)
    }
}

impl std::fmt::Display for RequestId {
    /// As JSON: strings quoted, so `1` and `"1"` stay apart in messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Integer(n) => write!(f, "{n}"),
            RequestId::Unsigned(n) => write!(f, "{n}"),
            RequestId::String(text) => write!(f, "{}", Value::String(text.clone())),
        }
    }
}

/// A JSON-RPC error object; also the error type every handler returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(code::PARSE_ERROR, message)
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(code::INTERNAL_ERROR, message)
    }
}

/// What one frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: RequestId,
        method: String,
        /// `Null` when the frame had none.
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: RequestId,
        result: Value,
    },
    /// An error response; `id` is `None` when the peer could not tell which request
    /// failed (a parse error).
    Error {
        id: Option<RequestId>,
        error: ErrorObject,
    },
    /// Not a usable JSON-RPC message. A server answers it with `error`, under the id
    /// the frame carried if one could be recovered.
    Invalid {
        id: Option<RequestId>,
        error: ErrorObject,
    },
}

/// Classifies one frame. Never fails: every problem becomes [`Message::Invalid`]. The
/// frame is read with [`parse_frame`]: duplicate keys and too many values are parse
/// errors.
pub fn classify(frame: &str) -> Message {
    match parse_frame(frame) {
        Ok(value) => classify_value(value),
        Err(error) => Message::Invalid { id: None, error },
    }
}

/// The most JSON values one message may hold (revision 2026-08, docs/protocol.md §0).
/// Every value counts once — each object, array, string, number, boolean and null at
/// any depth, the outermost included; object keys do not.
pub const MAX_JSON_VALUES: usize = 262_144;

/// Parses a frame as [`serde_json::from_str`] would into a [`Value`] (with its
/// recursion limit), in one pass, but refuses what upstream treats as malformed since
/// revision 2026-08: an object with a duplicate key (serde_json keeps the last one
/// silently), and more than [`MAX_JSON_VALUES`] values. The error is a parse error
/// (-32700).
pub fn parse_frame(frame: &str) -> Result<Value, ErrorObject> {
    let mut deserializer = serde_json::Deserializer::from_str(frame);
    let mut budget = MAX_JSON_VALUES;
    let parsed = serde::de::DeserializeSeed::deserialize(Checked(&mut budget), &mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    parsed.map_err(|err| ErrorObject::parse(format!("parse error: {err}")))
}

/// Builds a [`Value`] while counting values against the budget it holds and refusing
/// duplicate keys.
struct Checked<'b>(&'b mut usize);

impl Checked<'_> {
    fn count<E: serde::de::Error>(&mut self) -> Result<(), E> {
        match self.0.checked_sub(1) {
            Some(left) => {
                *self.0 = left;
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "more than {MAX_JSON_VALUES} JSON values"
            ))),
        }
    }

    fn nested(&mut self) -> Checked<'_> {
        Checked(&mut *self.0)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(mut self, value: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: serde::de::Error>(mut self, value: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: serde::de::Error>(mut self, value: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(mut self, value: f64) -> Result<Value, E> {
        self.count()?;
        // serde_json never hands over a non-finite float.
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(mut self, value: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(mut self, value: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(self.nested())? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                // Named, but only its start: the key may be as big as the frame.
                let shown: String = key.chars().take(64).collect();
                let more = if shown.len() < key.len() { "…" } else { "" };
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate object key {}{more}",
                    Value::String(shown)
                )));
            }
            let value = map.next_value_seed(self.nested())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Classifies an already parsed frame, as [`classify`] does.
pub fn classify_value(value: Value) -> Message {
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => return invalid(None, "batch requests are not supported"),
        _ => return invalid(None, "a JSON-RPC message must be an object"),
    };
    let raw_id = object.remove("id");
    let id = match &raw_id {
        None => None,
        Some(value) => match RequestId::from_value(value) {
            Some(id) => Some(id),
            // An error response for a request the peer could not identify.
            None if value.is_null() && object.contains_key("error") => None,
            None => return invalid(None, "id must be a string or an integer"),
        },
    };
    let null_id = raw_id.as_ref().is_some_and(Value::is_null);
    if let Some(version) = object.get("jsonrpc") {
        if version != "2.0" {
            return match null_id {
                true => invalid(None, "id must be a string or an integer"),
                false => invalid(id, "jsonrpc must be \"2.0\""),
            };
        }
    }
    let params = object.remove("params").unwrap_or(Value::Null);
    let message = match (object.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Message::Request { id, method, params },
        (Some(Value::String(method)), None) if raw_id.is_none() => {
            Message::Notification { method, params }
        }
        (Some(Value::String(_)), None) => invalid(None, "id must be a string or an integer"),
        (Some(_), id) => invalid(id, "method must be a string"),
        (None, id) => match (object.remove("result"), object.remove("error"), id) {
            (Some(result), None, Some(id)) => Message::Response { id, result },
            (None, Some(error), id) => match serde_json::from_value::<ErrorObject>(error) {
                Ok(error) => Message::Error { id, error },
                Err(err) if id.is_some() => invalid(id, &format!("malformed error object: {err}")),
                Err(_) => invalid(None, "not a JSON-RPC request"),
            },
            (_, _, id) => invalid(id, "not a JSON-RPC request"),
        },
    };
    // Only a well-formed error response may carry a null id; anything else with one is
    // refused for the id first, as revision 2026-06 servers answer it.
    match message {
        Message::Invalid { .. } if null_id => invalid(None, "id must be a string or an integer"),
        message => message,
    }
}

/// Whether a frame is shaped like a response: an object with a string or integer `id`,
/// no `method`, a `result` or an `error`, and no wrong `jsonrpc` version — however
/// malformed its `error` object, or if it has both. A peer that sends no requests (a
/// server) ignores these rather than answer them; [`classify_value`] calls some of
/// them [`Message::Invalid`].
pub fn is_response_shaped(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    object.get("id").and_then(RequestId::from_value).is_some()
        && object.get("jsonrpc").is_none_or(|version| version == "2.0")
        && !object.contains_key("method")
        && (object.contains_key("result") || object.contains_key("error"))
}

fn invalid(id: Option<RequestId>, message: &str) -> Message {
    Message::Invalid {
        id,
        error: ErrorObject::invalid_request(message),
    }
}

/// Decodes `params` (absent = `{}`) into `T`; the error (-32602) names the field.
pub fn decode_params<T: DeserializeOwned>(params: Value) -> Result<T, ErrorObject> {
    let params = match params {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    serde_path_to_error::deserialize(params).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            ErrorObject::invalid_params(format!("invalid params: {}", err.inner()))
        } else {
            ErrorObject::invalid_params(format!("invalid params: {path}: {}", err.inner()))
        }
    })
}

#[derive(Serialize)]
struct RequestOut<'a, P> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    method: &'a str,
    params: &'a P,
}

#[derive(Serialize)]
struct NotificationOut<'a, P> {
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a P,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    jsonrpc: &'static str,
    id: Option<&'a RequestId>,
    error: &'a ErrorObject,
}

fn to_json(message: &impl Serialize) -> String {
    // Serializing these shapes into a String cannot fail: every map key is a string.
    serde_json::to_string(message).unwrap_or_default()
}

pub fn encode_request(id: &RequestId, method: impl AsRef<str>, params: &impl Serialize) -> String {
    to_json(&RequestOut {
        jsonrpc: "2.0",
        id,
        method: method.as_ref(),
        params,
    })
}

pub fn encode_notification(method: impl AsRef<str>, params: &impl Serialize) -> String {
    to_json(&NotificationOut {
        jsonrpc: "2.0",
        method: method.as_ref(),
        params,
    })
}

pub fn encode_result(id: &RequestId, result: &impl Serialize) -> String {
    PartialReply::new(result).with_id(id)
}

/// An error response; `id: None` is sent as `null`.
pub fn encode_error(id: Option<&RequestId>, error: &ErrorObject) -> String {
    to_json(&ErrorOut {
        jsonrpc: "2.0",
        id,
        error,
    })
}

/// A success response encoded up to, but not including, its id:
/// `{"jsonrpc":"2.0","result":…` — [`PartialReply::with_id`] appends `,"id":…}`. Lets
/// a result be built, sized and queued by code that does not know the request id, and
/// a very large result (a file's contents) be built once, in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialReply(String);

impl PartialReply {
    const PREFIX: &'static str = r#"{"jsonrpc":"2.0","result":"#;

    pub fn new(result: &impl Serialize) -> Self {
        let mut message = String::from(Self::PREFIX);
        message.push_str(&to_json(result));
        Self(message)
    }

    /// Starts a reply whose result the caller writes itself, after the prefix.
    pub(crate) fn start(capacity: usize) -> Self {
        let mut message = String::with_capacity(capacity + Self::PREFIX.len() + 32);
        message.push_str(Self::PREFIX);
        Self(message)
    }

    pub(crate) fn buffer(&mut self) -> &mut String {
        &mut self.0
    }

    /// Bytes so far, without the id.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn with_id(mut self, id: &RequestId) -> String {
        self.0.push_str(",\"id\":");
        self.0.push_str(&id.to_string());
        self.0.push('}');
        self.0
    }
}

impl AsRef<str> for crate::Method {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for crate::NotificationMethod {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn invalid_code(frame: &str) -> i64 {
        match classify(frame) {
            Message::Invalid { error, .. } => error.code,
            other => panic!("{frame} classified as {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_parse_errors() {
        for frame in [
            r#"{"id":1,"id":2,"method":"m"}"#,
            r#"{"id":1,"method":"m","params":{"a":1,"b":{"c":1,"c":1}}}"#,
            r#"{"id":1,"method":"m","params":[{"x":1},{"y":[{"z":1,"z":2}]}]}"#,
            "{\"id\":1,\"method\":\"m\",\"params\":{\"a\":1,\"\\u0061\":2}}",
        ] {
            match classify(frame) {
                Message::Invalid { id: None, error } => {
                    assert_eq!(error.code, code::PARSE_ERROR, "{frame}");
                    assert!(error.message.contains("duplicate object key"), "{error:?}");
                }
                other => panic!("{frame} classified as {other:?}"),
            }
        }
        // The same key in sibling objects is fine.
        assert!(matches!(
            classify(r#"{"id":1,"method":"m","params":[{"a":1},{"a":2}]}"#),
            Message::Request { .. }
        ));
    }

    #[test]
    fn more_than_the_most_values_is_a_parse_error() {
        // The envelope holds 4 values (object, id, method, params array): fill to the cap.
        let frame = |elements: usize| {
            format!(
                r#"{{"id":1,"method":"m","params":[{}]}}"#,
                vec!["0"; elements].join(",")
            )
        };
        assert!(matches!(
            classify(&frame(MAX_JSON_VALUES - 4)),
            Message::Request { .. }
        ));
        match classify(&frame(MAX_JSON_VALUES - 3)) {
            Message::Invalid { id: None, error } => {
                assert_eq!(error.code, code::PARSE_ERROR);
                assert!(error.message.contains("262144 JSON values"), "{error:?}");
            }
            other => panic!("{other:?}"),
        }
        // Nested values count too.
        let nested = format!(r#"{{"a":[{}]}}"#, vec!["{}"; MAX_JSON_VALUES].join(","));
        assert!(parse_frame(&nested).is_err());
    }

    #[test]
    fn the_checked_parser_reads_what_serde_json_reads() {
        for frame in [
            r#"{"a":[1,-2,3.5,18446744073709551615,true,false,null,"s\u00e9\n"],"b":{}}"#,
            r#"[]"#,
            r#""x""#,
            r#"  {"nested":{"deeper":[[[]]]}}  "#,
            r#"{"trace":{"traceparent":"00-abc-def-01","tracestate":""},"id":1,"method":"m"}"#,
        ] {
            assert_eq!(
                parse_frame(frame).expect(frame),
                serde_json::from_str::<Value>(frame).expect(frame),
                "{frame}"
            );
        }
        for frame in [r#"{"a":1"#, r#"{"a":1} x"#, "", r#"{"a":01}"#] {
            assert_eq!(
                parse_frame(frame).unwrap_err().code,
                code::PARSE_ERROR,
                "{frame}"
            );
        }
        // serde_json's recursion limit still holds.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_frame(&deep).is_err());
    }

    #[test]
    fn a_trace_is_accepted_and_ignored() {
        let frame = r#"{"id":1,"method":"m","params":{},"trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v"}}"#;
        assert_eq!(
            classify(frame),
            Message::Request {
                id: RequestId::Integer(1),
                method: "m".into(),
                params: json!({})
            }
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error_without_id() {
        assert_eq!(invalid_code("{not json"), code::PARSE_ERROR);
    }

    #[test]
    fn batches_and_non_objects_are_invalid_requests() {
        assert_eq!(
            invalid_code(r#"[{"id":1,"method":"initialize"}]"#),
            code::INVALID_REQUEST
        );
        assert_eq!(invalid_code("7"), code::INVALID_REQUEST);
    }

    #[test]
    fn requests_with_and_without_jsonrpc_field_are_accepted() {
        for frame in [
            r#"{"id":"a","method":"m","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"m"}"#,
        ] {
            assert!(
                matches!(classify(frame), Message::Request { .. }),
                "{frame}"
            );
        }
    }

    #[test]
    fn notifications_responses_and_errors_are_recognised() {
        assert!(matches!(
            classify(r#"{"method":"initialized"}"#),
            Message::Notification { .. }
        ));
        assert_eq!(
            classify(r#"{"id":3,"result":{}}"#),
            Message::Response {
                id: RequestId::Integer(3),
                result: json!({})
            }
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#),
            Message::Error {
                id: None,
                error: ErrorObject::parse("x")
            }
        );
    }

    #[test]
    fn response_shapes_include_malformed_responses_only() {
        let shaped = |frame: &str| is_response_shaped(&serde_json::from_str(frame).expect("json"));
        assert!(shaped(r#"{"id":3,"error":{}}"#));
        assert!(shaped(
            r#"{"id":"a","result":1,"error":{"code":1,"message":"x"}}"#
        ));
        assert!(!shaped(r#"{"id":null,"error":{"code":1,"message":"x"}}"#));
        assert!(!shaped(r#"{"jsonrpc":"1.0","id":3,"result":1}"#));
        assert!(!shaped(r#"{"id":3,"method":"m","result":1}"#));
        assert!(!shaped(r#"{"id":3}"#));
    }

    #[test]
    fn float_object_and_null_request_ids_are_invalid() {
        for frame in [
            r#"{"id":1.5,"method":"m"}"#,
            r#"{"id":{},"method":"m"}"#,
            r#"{"id":null,"method":"m"}"#,
        ] {
            assert_eq!(invalid_code(frame), code::INVALID_REQUEST, "{frame}");
        }
    }

    #[test]
    fn frames_with_a_null_id_are_refused_for_the_id_unless_a_clean_error_response() {
        for frame in [
            r#"{"id":null,"error":"bad"}"#,
            r#"{"id":null,"error":{"code":1,"message":"m"},"result":1}"#,
            r#"{"jsonrpc":"1.0","id":null,"error":{"code":1,"message":"m"}}"#,
            r#"{"id":null,"method":5,"error":{}}"#,
        ] {
            match classify(frame) {
                Message::Invalid { id: None, error } => {
                    assert_eq!(
                        error.message, "id must be a string or an integer",
                        "{frame}"
                    )
                }
                other => panic!("{frame} classified as {other:?}"),
            }
        }
        match classify(r#"{"error":"bad"}"#) {
            Message::Invalid { id: None, error } => {
                assert_eq!(error.message, "not a JSON-RPC request")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_jsonrpc_version_keeps_the_id() {
        match classify(r#"{"jsonrpc":"1.0","id":"x","method":"m"}"#) {
            Message::Invalid { id, .. } => assert_eq!(id, Some(RequestId::from("x"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encoders_produce_what_the_classifier_reads() {
        let id = RequestId::from(7);
        assert_eq!(
            classify(&encode_request(
                &id,
                crate::Method::FsRemove,
                &json!({"path": "/x"})
            )),
            Message::Request {
                id: id.clone(),
                method: "fs/remove".into(),
                params: json!({"path": "/x"})
            }
        );
        assert_eq!(
            classify(&encode_result(&id, &json!({"a": 1}))),
            Message::Response {
                id: id.clone(),
                result: json!({"a": 1})
            }
        );
        let error = ErrorObject::new(code::LIMIT_REACHED, "full")
            .with_data(json!({"limit": "maxProcesses"}));
        assert_eq!(
            classify(&encode_error(Some(&id), &error)),
            Message::Error {
                id: Some(id),
                error: error.clone()
            }
        );
        let null_id: Value = serde_json::from_str(&encode_error(None, &error)).expect("json");
        assert_eq!(null_id["id"], Value::Null);
    }

    #[test]
    fn param_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            argv: Vec<String>,
        }
        let err = decode_params::<P>(json!({"argv": "ls"})).unwrap_err();
        assert_eq!(err.code, code::INVALID_PARAMS);
        assert!(err.message.contains("argv"), "{}", err.message);
        let err = decode_params::<P>(json!({})).unwrap_err();
        assert!(err.message.contains("argv"), "{}", err.message);
    }
}
