//! `rpc::classify` on arbitrary frames: it never panics, its verdict agrees with the
//! JSON parser and docs/protocol.md §3, and what the server would send back for it is a
//! well-formed JSON-RPC message echoing the id.
#![no_main]

use exec_server::rpc::{self, Inbound, RpcError, INVALID_REQUEST, PARSE_ERROR};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn is_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// What the connection would send for an error: a JSON-RPC 2.0 error echoing `id`.
fn check_error_reply(id: &Value, error: &RpcError) {
    let reply: Value = serde_json::from_str(&rpc::encode_error(id, error)).expect("reply is JSON");
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(&reply["id"], id);
    assert_eq!(reply["error"]["code"], error.code);
    assert!(reply["error"]["message"].is_string());
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = serde_json::from_str::<Value>(frame);
    match rpc::classify(frame) {
        Inbound::Invalid { id, error } => {
            assert!(id.is_null() || is_id(&id), "bad id {id}");
            match &parsed {
                Err(_) => {
                    assert_eq!(error.code, PARSE_ERROR);
                    assert!(id.is_null());
                }
                Ok(value) => {
                    assert_eq!(error.code, INVALID_REQUEST, "{frame:?}");
                    // Recovered ids are the frame's own id.
                    if !id.is_null() {
                        assert_eq!(value.get("id"), Some(&id));
                    }
                }
            }
            check_error_reply(&id, &error);
        }
        Inbound::Request(request) => {
            let value = parsed.expect("a request is JSON");
            assert!(is_id(&request.id));
            assert_eq!(value.get("id"), Some(&request.id));
            assert_eq!(value["method"], request.method.as_str());
            assert!(value.get("jsonrpc").is_none_or(|v| v == "2.0"));
            let reply: Value =
                serde_json::from_str(&rpc::encode_result(&request.id, serde_json::json!({})))
                    .expect("reply is JSON");
            assert_eq!(reply["id"], request.id);
            check_error_reply(&request.id, &RpcError::method_not_found(&request.method));
        }
        Inbound::Notification(notification) => {
            let value = parsed.expect("a notification is JSON");
            assert!(value.get("id").is_none());
            assert_eq!(value["method"], notification.method.as_str());
        }
        Inbound::Response { id } => {
            let value = parsed.expect("a response is JSON");
            assert!(is_id(&id));
            assert!(value.get("method").is_none());
            assert!(value.get("result").is_some() || value.get("error").is_some());
        }
    }
});
