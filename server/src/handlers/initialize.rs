//! The `initialize` result: session id, server identity and advertised capabilities
//! (docs/protocol.md §4, §9). The handshake state machine itself is in `connection`.

use exec_protocol::capabilities::{
    AuthCapabilities, FsCapabilities, LimitCapabilities, ProcessCapabilities, SessionCapabilities,
};
use exec_protocol::{Capabilities, InitializeResult, ServerInfo, SignalName};

use crate::state::ServerState;

/// `resumable`: whether this connection's session can be resumed (websocket, not stdio).
pub fn result(state: &ServerState, session_id: &str, resumable: bool) -> InitializeResult {
    let options = &state.options;
    let limits = &options.limits;
    let count = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    InitializeResult {
        session_id: session_id.to_owned(),
        server_info: Some(ServerInfo {
            name: "exec-server".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
        capabilities: Some(Capabilities {
            revisions: Some(
                exec_protocol::Revision::ALL
                    .iter()
                    .map(|revision| revision.as_str().to_owned())
                    .collect(),
            ),
            transports: Some(vec!["ws".to_owned(), "stdio".to_owned()]),
            process: Some(ProcessCapabilities {
                tty: Some(true),
                signal: Some(
                    SignalName::ALL
                        .iter()
                        .map(|s| s.as_str().to_owned())
                        .collect(),
                ),
                resize: Some(true),
                close_stdin: Some(true),
                first_retained_seq: Some(true),
                containment: Some(options.containment.name().to_owned()),
                output_retention_bytes: Some(count(options.output_retention_bytes)),
            }),
            session: Some(SessionCapabilities {
                resume: Some(resumable),
                ttl_ms: Some(options.session_ttl.as_millis() as u64),
            }),
            fs: Some(FsCapabilities {
                root: Some(options.file_system.root().is_some()),
            }),
            auth: Some(AuthCapabilities {
                token: Some(options.upgrade_policy.token.is_some()),
            }),
            limits: Some(LimitCapabilities {
                max_connections: Some(count(limits.max_connections)),
                max_sessions: Some(count(limits.max_sessions)),
                max_processes: Some(count(limits.max_processes)),
                max_retained_bytes: Some(count(limits.max_retained_bytes)),
                max_open_handles: Some(count(limits.max_open_handles)),
            }),
        }),
    }
}
