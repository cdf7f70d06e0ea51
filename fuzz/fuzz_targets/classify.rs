//! `exec_protocol::classify` on arbitrary frames: it never panics, its verdict agrees
//! with the JSON parser and docs/protocol.md §3, and what the server would send back for
//! it is a well-formed JSON-RPC message echoing the id.
#![no_main]

use exec_protocol::code::{INVALID_REQUEST, PARSE_ERROR};
use exec_protocol::{
    classify, encode_error, encode_result, is_response_shaped, ErrorObject, Message, RequestId,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn is_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

fn id_value(id: Option<&RequestId>) -> Value {
    serde_json::to_value(id).expect("an id is JSON")
}

/// What the connection would send for an error: a JSON-RPC 2.0 error echoing `id`.
fn check_error_reply(id: Option<&RequestId>, error: &ErrorObject) {
    let reply: Value = serde_json::from_str(&encode_error(id, error)).expect("reply is JSON");
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(reply["id"], id_value(id));
    assert_eq!(reply["error"]["code"], error.code);
    assert!(reply["error"]["message"].is_string());
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = serde_json::from_str::<Value>(frame);
    match classify(frame) {
        Message::Invalid { id, error } => {
            match &parsed {
                Err(_) => {
                    assert_eq!(error.code, PARSE_ERROR);
                    assert!(id.is_none());
                }
                Ok(value) => {
                    assert_eq!(error.code, INVALID_REQUEST, "{frame:?}");
                    // Recovered ids are the frame's own id.
                    if let Some(id) = &id {
                        assert_eq!(value.get("id"), Some(&id_value(Some(id))));
                    }
                }
            }
            check_error_reply(id.as_ref(), &error);
        }
        Message::Request { id, method, .. } => {
            let value = parsed.expect("a request is JSON");
            assert_eq!(value.get("id"), Some(&id_value(Some(&id))));
            assert_eq!(value["method"], method.as_str());
            assert!(value.get("jsonrpc").is_none_or(|v| v == "2.0"));
            let reply: Value = serde_json::from_str(&encode_result(&id, &serde_json::json!({})))
                .expect("reply is JSON");
            assert_eq!(reply["id"], id_value(Some(&id)));
            check_error_reply(Some(&id), &ErrorObject::method_not_found(&method));
        }
        Message::Notification { method, .. } => {
            let value = parsed.expect("a notification is JSON");
            assert!(value.get("id").is_none());
            assert_eq!(value["method"], method.as_str());
        }
        Message::Response { id, .. } => {
            let value = parsed.expect("a response is JSON");
            assert!(is_id(&id_value(Some(&id))));
            assert!(is_response_shaped(&value));
        }
        Message::Error { id, .. } => {
            let value = parsed.expect("an error response is JSON");
            assert!(value.get("method").is_none());
            assert_eq!(id.is_some(), is_response_shaped(&value));
        }
    }
});
