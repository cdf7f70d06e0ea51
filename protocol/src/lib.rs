//! `exec-protocol`: the one definition of the exec-server wire (docs/protocol.md).
//!
//! Everything that crosses the wire is declared here and nowhere else: method names
//! ([`Method`]), typed params and results for every method ([`Call`] ties them
//! together), the notifications, the JSON-RPC envelope and its classifier
//! ([`envelope`]), the error codes ([`code`]) and the capabilities. Server, client,
//! harness and conformance suite all speak through these types.
//!
//! The crate does no I/O and has no runtime: it is plain data and serde.
//!
//! ```
//! use exec_protocol::{classify, encode_request, Call, Message, RequestId, StartParams};
//!
//! let params = StartParams::new("p1", ["echo", "hi"], "/");
//! let frame = encode_request(&RequestId::from(1), StartParams::METHOD, &params);
//! let Message::Request { method, .. } = classify(&frame) else { panic!() };
//! assert_eq!(method, "process/start");
//! ```

pub mod bytes;
pub mod capabilities;
pub mod code;
pub mod envelope;
pub mod environment;
pub mod fast;
pub mod fs;
pub mod initialize;
pub mod method;
pub mod path;
pub mod process;
pub mod revision;

pub use bytes::Base64Bytes;
pub use capabilities::Capabilities;
pub use envelope::{
    classify, classify_value, decode_params, encode_error, encode_notification, encode_request,
    encode_result, is_response_shaped, parse_frame, ErrorObject, Message, PartialReply, RequestId,
    MAX_JSON_VALUES,
};
pub use environment::*;
pub use fs::*;
pub use initialize::*;
pub use method::{Call, Family, Method, NotificationMethod, Notify};
pub use path::{PathError, PathForm, ResolvedPath, WirePath};
pub use process::*;
pub use revision::Revision;

/// `processId`, `clientName` and (2026-08) `writeId` are at most this many bytes
/// (docs/protocol.md §3): they are echoed in every notification and keyed in maps.
pub const MAX_ID_BYTES: usize = 256;

/// Deserializes a client-chosen id, refusing one longer than [`MAX_ID_BYTES`].
pub(crate) fn capped_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    let id = <String as serde::Deserialize>::deserialize(deserializer)?;
    if id.len() > MAX_ID_BYTES {
        return Err(serde::de::Error::custom(format!(
            "must be at most {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    Ok(id)
}

/// Deserializes an optional `writeId`: when present, non-empty and at most
/// [`MAX_ID_BYTES`] bytes.
pub(crate) fn optional_write_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let Some(id) = <Option<String> as serde::Deserialize>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if id.is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(serde::de::Error::custom(format!(
            "must be at most {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    Ok(Some(id))
}

/// `handleId` is at most this many bytes (upstream's cap, docs/protocol.md §3).
pub const MAX_HANDLE_ID_BYTES: usize = 32;

/// Deserializes a `handleId`, refusing one longer than [`MAX_HANDLE_ID_BYTES`].
pub(crate) fn handle_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    let id = <String as serde::Deserialize>::deserialize(deserializer)?;
    if id.len() > MAX_HANDLE_ID_BYTES {
        return Err(serde::de::Error::custom(format!(
            "must be at most {MAX_HANDLE_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    Ok(id)
}

/// The result of methods that answer `{}`; also the params of methods that take none.
/// Decoding ignores any fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty {}
