//! Command-line interface (PROTOCOL.md §1): argument parsing and listen-URL rules.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::fs::FileSystem;
use crate::server::{ServerOptions, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_OUTPUT_RETENTION_BYTES};
use crate::watchdog::Watchdog;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    WebSocket(SocketAddr),
    Stdio,
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        const FORMS: &str = "expected ws://IP:PORT (an IP literal, e.g. ws://127.0.0.1:0 or ws://[::1]:0), stdio, or stdio://";
        if url == "stdio" || url == "stdio://" {
            return Ok(Listen::Stdio);
        }
        let Some(authority) = url.strip_prefix("ws://") else {
            return Err(format!("unsupported listen URL {url:?}: {FORMS}"));
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        authority
            .parse::<SocketAddr>()
            .map(Listen::WebSocket)
            .map_err(|_| format!("invalid listen URL {url:?}: {FORMS}"))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "exec-server",
    version,
    about = "Run processes for remote clients over JSON-RPC (websocket or stdio)"
)]
pub struct Args {
    /// ws://IP:PORT (port 0 picks a free port), stdio, or stdio://
    #[arg(long, default_value = "ws://127.0.0.1:0", value_name = "URL")]
    pub listen: Listen,

    /// Newest output bytes kept per process for process/read
    #[arg(long, default_value_t = DEFAULT_OUTPUT_RETENTION_BYTES, value_name = "BYTES")]
    pub output_retention: usize,

    /// Largest inbound message accepted, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    pub max_message_bytes: usize,

    /// How long a disconnected websocket session can be resumed (e.g. 500ms, 10s, 2m)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// Websocket ping interval; a peer silent for 3 intervals is disconnected (detached)
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub ws_keepalive: Duration,

    /// Confine every fs path and process cwd to this directory
    #[arg(long, value_name = "DIR")]
    pub fs_root: Option<PathBuf>,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be longer than zero".to_owned()),
        duration => Ok(duration),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (e.g. 500ms, 10s, 2m)"))
}

impl Args {
    /// The server options these arguments select. Fails if `--fs-root` cannot be opened.
    pub fn server_options(&self, watchdog: Option<Watchdog>) -> std::io::Result<ServerOptions> {
        let file_system = match &self.fs_root {
            None => FileSystem::Unconfined,
            Some(root) => FileSystem::confined(root).map_err(|err| {
                std::io::Error::new(err.kind(), format!("--fs-root {}: {err}", root.display()))
            })?,
        };
        Ok(ServerOptions {
            output_retention_bytes: self.output_retention,
            max_message_bytes: self.max_message_bytes,
            session_ttl: self.session_ttl,
            ws_keepalive: self.ws_keepalive,
            file_system: Arc::new(file_system),
            watchdog,
        })
    }
}

impl Listen {
    pub fn default_addr() -> SocketAddr {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!("stdio".parse(), Ok(Listen::Stdio));
        assert_eq!("stdio://".parse(), Ok(Listen::Stdio));
        assert_eq!(
            "ws://127.0.0.1:0".parse(),
            Ok(Listen::WebSocket(Listen::default_addr()))
        );
        assert!(matches!("ws://[::1]:9".parse(), Ok(Listen::WebSocket(addr)) if addr.is_ipv6()));
        for bad in [
            "ws://localhost:1",
            "http://127.0.0.1:1",
            "ws://127.0.0.1",
            "tcp://x",
        ] {
            let err = bad.parse::<Listen>().unwrap_err();
            assert!(err.contains("ws://IP:PORT"), "{bad}: {err}");
        }
    }
}
