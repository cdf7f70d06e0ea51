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

/// `exec-server [OPTIONS]` serves; `exec-server exec …` runs one command on a server.
#[derive(Debug, Parser)]
#[command(
    name = "exec-server",
    version,
    about = "Run processes for remote clients over JSON-RPC (websocket or stdio)",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a command on an exec-server, streaming its output and stdin (like kubectl exec)
    Exec(ExecArgs),
}

/// Options of the client command `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// ws://HOST:PORT, wss://…, or stdio:'COMMAND' (spawn a server over stdio, e.g. through ssh)
    #[arg(long, value_name = "ADDRESS", conflicts_with = "environment")]
    pub connect: Option<String>,

    /// An environment id from the environments file
    #[arg(long, value_name = "ID")]
    pub environment: Option<String>,

    /// Environments file (TOML) [default: ~/.config/exec-server/environments.toml]
    #[arg(long, value_name = "FILE", env = "EXEC_SERVER_ENVIRONMENTS")]
    pub environments_file: Option<PathBuf>,

    /// Run the command on a PTY; our terminal goes raw and its size is followed
    #[arg(long)]
    pub tty: bool,

    /// Working directory of the remote command
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub cwd: String,

    /// Set a variable for the remote command (repeatable)
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_assignment)]
    pub env: Vec<(String, String)>,

    /// Bearer token for the websocket upgrade
    #[arg(long, env = "EXEC_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

/// Options of the server.
#[derive(Debug, Parser)]
#[command(name = "exec-server")]
pub struct ServeArgs {
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

impl ServeArgs {
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
