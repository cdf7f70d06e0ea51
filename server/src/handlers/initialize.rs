//! The `initialize` result: session id, server identity and advertised capabilities
//! (PROTOCOL.md §4, §9). The handshake state machine itself is in `connection`.

use serde_json::{json, Value};

use crate::protocol::SignalName;
use crate::server::ServerState;

/// `resumable`: whether this connection's session can be resumed (websocket, not stdio).
pub fn result(state: &ServerState, session_id: &str, resumable: bool) -> Value {
    let limits = &state.options.limits;
    json!({
        "sessionId": session_id,
        "serverInfo": {"name": "exec-server", "version": env!("CARGO_PKG_VERSION")},
        "capabilities": {
            "transports": ["ws", "stdio"],
            "process": {
                "tty": true,
                "signal": SignalName::ALL,
                "resize": true,
                "closeStdin": true,
                "firstRetainedSeq": true,
                "containment": state.options.containment.name(),
                "outputRetentionBytes": state.options.output_retention_bytes,
            },
            "session": {
                "resume": resumable,
                "ttlMs": state.options.session_ttl.as_millis() as u64,
            },
            "fs": {"root": state.options.file_system.root().is_some()},
            "auth": {"token": state.options.upgrade_policy.token.is_some()},
            "limits": {
                "maxConnections": limits.max_connections,
                "maxSessions": limits.max_sessions,
                "maxProcesses": limits.max_processes,
                "maxRetainedBytes": limits.max_retained_bytes,
            },
        },
    })
}
