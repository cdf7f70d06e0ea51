//! What a server is configured with ([`ServerOptions`]) and the defaults of its options.

use std::sync::Arc;

use crate::containment::Containment;
use crate::fs::FileSystem;
use crate::limits::Limits;
use crate::security::UpgradePolicy;
use crate::watchdog::Watchdog;

pub(crate) const DEFAULT_OUTPUT_RETENTION_BYTES: usize = 1024 * 1024;
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub(crate) const DEFAULT_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30);
pub(crate) const DEFAULT_WS_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub struct ServerOptions {
    /// Newest output bytes kept per process for `process/read`.
    pub output_retention_bytes: usize,
    /// Inbound message size limit.
    pub max_message_bytes: usize,
    /// How long a detached session can be resumed.
    pub session_ttl: std::time::Duration,
    /// Websocket ping interval; a peer silent for three of them is disconnected.
    pub ws_keepalive: std::time::Duration,
    /// Where `fs/*` and process working directories may reach (`--fs-root`).
    pub file_system: Arc<FileSystem>,
    /// A cgroup per process, or process groups (the default: a server's cgroups are
    /// removed at exit by the watchdog, which only the binary starts).
    pub containment: Containment,
    /// Orphan watchdog, if the embedding process started one.
    pub watchdog: Option<Watchdog>,
    /// Token, `Origin` and `Host` rules for websocket upgrades.
    pub upgrade_policy: UpgradePolicy,
    pub limits: Limits,
    /// Whether plain absolute paths are accepted besides `file:` URIs (the default).
    /// `--require-file-uris` clears it, to behave like upstream at revision 2026-08.
    pub accept_plain_paths: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            output_retention_bytes: DEFAULT_OUTPUT_RETENTION_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            session_ttl: DEFAULT_SESSION_TTL,
            ws_keepalive: DEFAULT_WS_KEEPALIVE,
            file_system: Arc::new(FileSystem::Unconfined),
            containment: Containment::ProcessGroup,
            watchdog: None,
            upgrade_policy: UpgradePolicy::default(),
            limits: Limits::default(),
            accept_plain_paths: true,
        }
    }
}
