//! JSON-RPC error codes (docs/protocol.md §3). Errors are matched by code, never by
//! message text.

/// Not JSON, duplicate keys, too deep: the frame could not be parsed.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC shape, or a request the current state refuses (handshake order,
/// unknown process or session, a path the file system refuses).
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Params that do not decode; the message names the field.
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The file system found no such file or directory.
pub const NOT_FOUND: i64 = -32004;
/// [ext] A server cap is reached; `data` is `{limit, value}`.
pub const LIMIT_REACHED: i64 = -32005;
/// Resume of a session that another connection holds (revision 2026-08; 2026-06 servers
/// send [`INVALID_REQUEST`]).
pub const SESSION_ALREADY_ATTACHED: i64 = -32010;

/// The name of a code, for messages and traces; `None` for a code this protocol lacks.
pub fn name(code: i64) -> Option<&'static str> {
    Some(match code {
        PARSE_ERROR => "parse error",
        INVALID_REQUEST => "invalid request",
        METHOD_NOT_FOUND => "method not found",
        INVALID_PARAMS => "invalid params",
        INTERNAL_ERROR => "internal error",
        NOT_FOUND => "not found",
        LIMIT_REACHED => "limit reached",
        SESSION_ALREADY_ATTACHED => "session already attached",
        _ => return None,
    })
}
