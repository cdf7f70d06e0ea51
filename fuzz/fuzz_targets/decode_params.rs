//! `exec_protocol::decode_params` into every params type the server decodes: never
//! panics, a failure is always -32602 "invalid params…" and encodes to a well-formed
//! error, and a success respects the id caps.
#![no_main]

use exec_protocol::code::INVALID_PARAMS;
use exec_protocol::*;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn decode<T: DeserializeOwned + std::fmt::Debug>(params: &Value) -> Option<T> {
    match decode_params::<T>(params.clone()) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            check(&error);
            None
        }
    }
}

fn check(error: &ErrorObject) {
    assert_eq!(error.code, INVALID_PARAMS, "{error:?}");
    assert!(error.message.starts_with("invalid params"), "{error:?}");
    assert!(error.data.is_none());
    let reply: Value =
        serde_json::from_str(&encode_error(Some(&RequestId::from(1)), error)).expect("JSON");
    assert_eq!(reply["error"]["message"], error.message.as_str());
}

fn capped(id: &str) {
    assert!(
        id.len() <= MAX_ID_BYTES,
        "an id of {} bytes was accepted",
        id.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(p) = decode::<InitializeParams>(&params) {
        capped(&p.client_name);
    }
    if let Some(p) = decode::<StartParams>(&params) {
        capped(&p.process_id);
    }
    if let Some(p) = decode::<TerminateParams>(&params) {
        capped(&p.process_id);
    }
    if let Some(p) = decode::<ReadParams>(&params) {
        capped(&p.process_id);
    }
    if let Some(p) = decode::<WriteParams>(&params) {
        capped(&p.process_id);
    }
    if let Some(p) = decode::<SignalParams>(&params) {
        capped(&p.process_id);
        assert!(SignalName::ALL.contains(&p.signal));
    }
    if let Some(p) = decode::<ResizeParams>(&params) {
        capped(&p.process_id);
    }
    decode::<EnvPolicy>(&params);
    decode::<ReadFileParams>(&params);
    decode::<WriteFileParams>(&params);
    decode::<CreateDirectoryParams>(&params);
    decode::<GetMetadataParams>(&params);
    decode::<ReadDirectoryParams>(&params);
    decode::<RemoveParams>(&params);
    decode::<CopyParams>(&params);
    decode::<CanonicalizeParams>(&params);
    decode::<JoinParams>(&params);
    decode::<ParentParams>(&params);
});
