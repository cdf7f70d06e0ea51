//! Command-line interface (docs/protocol.md §1): argument parsing and listen-URL rules.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::containment::{Containment, ContainmentMode};
use crate::fs::FileSystem;
use crate::limits::{Limits, DEFAULT_LIMITS};
use crate::options::ServerOptions;
use crate::security::{exposes_network, BearerToken, TokenError, UpgradePolicy};

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
    propagate_version = true,
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
    Exec(Box<ExecArgs>),
    /// Print a shell completion script to stdout (e.g. `exec-server completions bash >
    /// ~/.local/share/bash-completion/completions/exec-server`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// Exit codes of `exec`, shown by `exec --help`.
const EXEC_EXIT_CODES: &str = "\
Exit codes:
  N      the remote command's exit code (128+N when it was killed by signal N)
  126    the program was found but could not be executed
  127    the program was not found
  255    no connection (or it was lost), a bad --cwd, or another client failure
  130    a second Ctrl-C within 2 s terminated the remote command
  143    exec got SIGTERM (129: SIGHUP) and terminated the remote command
  141    (killed by SIGPIPE) our stdout or stderr was closed; the remote command is
         terminated
  2      bad arguments";

/// Options of the client command `exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXEC_EXIT_CODES)]
pub struct ExecArgs {
    /// ws://HOST:PORT, wss://…, or stdio:'COMMAND' (spawn a server over stdio, e.g. through ssh)
    #[arg(long, value_name = "ADDRESS", conflicts_with = "environment")]
    pub connect: Option<String>,

    /// An environment id from the environments file
    #[arg(long, value_name = "ID")]
    pub environment: Option<String>,

    /// Environments file (TOML) [default: $XDG_CONFIG_HOME/exec-server/environments.toml,
    /// else ~/.config/exec-server/environments.toml]
    #[arg(long, value_name = "FILE", env = "EXEC_SERVER_ENVIRONMENTS")]
    pub environments_file: Option<PathBuf>,

    /// Forward our stdin (and its EOF) to the command; without it the command's stdin
    /// is not connected and ours is not read
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,

    /// Run the command on a PTY (TERM is passed on); with -i our terminal goes raw, and
    /// its size is followed
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Working directory of the remote command
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub cwd: String,

    /// Set a variable for the remote command (repeatable); NAME alone passes our value
    /// (nothing if it is unset)
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env_arg)]
    pub env: Vec<(String, Option<String>)>,

    /// Read variables from FILE: NAME=VALUE lines, `#` comments and blank lines
    /// (repeatable; -e wins)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// How long to keep retrying a websocket server that refuses the connection
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// File holding the server's bearer token (one trailing newline is trimmed); the
    /// token itself may also come from the environment variable EXEC_SERVER_TOKEN
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `NAME=VALUE`, or `NAME` alone (our value is passed).
fn parse_env_arg(text: &str) -> Result<(String, Option<String>), String> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (text, None),
    };
    if name.is_empty() {
        return Err(format!("{text:?} is not NAME=VALUE or NAME"));
    }
    Ok((name.to_owned(), value))
}

/// The variables of an `--env-file`: `NAME=VALUE` lines; blank lines and lines starting
/// with `#` are skipped. An error names the line (`LINE: …`).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut variables = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                variables.push((name.to_owned(), value.to_owned()));
            }
            _ => return Err((index + 1, format!("expected NAME=VALUE, found {trimmed:?}"))),
        }
    }
    Ok(variables)
}

/// Options of the server.
#[derive(Debug, Parser)]
#[command(name = "exec-server")]
pub struct ServeArgs {
    /// ws://IP:PORT (port 0 picks a free port), stdio, or stdio://
    #[arg(long, default_value = "ws://127.0.0.1:0", value_name = "URL")]
    pub listen: Listen,

    /// Newest output bytes kept per process for process/read (units allowed: 64KiB)
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_bytes)]
    pub output_retention: usize,

    /// Largest inbound message accepted (units allowed: 16MiB)
    #[arg(long, default_value = "64MiB", value_name = "BYTES", value_parser = parse_bytes)]
    pub max_message_bytes: usize,

    /// How long a disconnected websocket session can be resumed (e.g. 500ms, 10s, 2m)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// Websocket ping interval, at least 1s; a peer silent for 3 intervals is disconnected
    /// (detached)
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_keepalive)]
    pub ws_keepalive: Duration,

    /// Confine every fs path and process cwd to this directory
    #[arg(long, value_name = "DIR")]
    pub fs_root: Option<PathBuf>,

    /// Refuse plain absolute paths with -32602 and accept only `file:` URIs, as upstream
    /// does at revision 2026-08 (for compatibility testing; by default both are accepted)
    #[arg(long, hide = true)]
    pub require_file_uris: bool,

    /// Require `Authorization: Bearer <token>` on every websocket upgrade; the token is
    /// this file's content, one trailing newline trimmed
    #[arg(long, value_name = "FILE", env = "EXEC_SERVER_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Accept websocket upgrades carrying this Origin (repeatable); every other Origin,
    /// `null` included, is refused (web pages send one, native clients do not)
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,

    /// On a loopback bind, also accept this Host header value (repeatable; e.g.
    /// dev.internal:8765), besides the bound IP:PORT, localhost, 127.0.0.1 and [::1]
    #[arg(long, value_name = "HOST")]
    pub allow_host: Vec<String>,

    /// Serve a non-loopback address without a token: anyone who reaches the port runs
    /// commands as this user. Only for a network you trust completely
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Live websocket connections; one more gets HTTP 503
    #[arg(long, default_value_t = DEFAULT_LIMITS.max_connections, value_name = "N", value_parser = parse_count)]
    pub max_connections: usize,

    /// Sessions, attached or detached; initialize of one more fails with -32005
    #[arg(long, default_value_t = DEFAULT_LIMITS.max_sessions, value_name = "N", value_parser = parse_count)]
    pub max_sessions: usize,

    /// Processes per session (closed ones count until evicted); one more fails with -32005
    #[arg(long, default_value_t = DEFAULT_LIMITS.max_processes, value_name = "N", value_parser = parse_count)]
    pub max_processes: usize,

    /// Output retained by all processes together; beyond it the oldest output of the
    /// largest retainer is dropped (units allowed: 512MiB)
    #[arg(long, default_value = "1GiB", value_name = "BYTES", value_parser = parse_bytes)]
    pub max_retained_bytes: usize,

    /// What holds each process tree for killing: auto (a cgroup per process where cgroup
    /// v2 is writable, else process groups), cgroup (required), or process-group
    #[arg(long, value_enum, default_value_t = ContainmentMode::Auto, value_name = "MODE")]
    pub containment: ContainmentMode,
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|err| format!("{err} (e.g. 4096, 64KiB, 1MiB, 1GiB)"))?;
    usize::try_from(bytes).map_err(|_| format!("{text} is too large"))
}

/// A count between 1 and `u32::MAX` (a semaphore holds at most 2^61 permits).
fn parse_count(text: &str) -> Result<usize, String> {
    let out_of_range = || format!("must be a whole number from 1 to {}", u32::MAX);
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err(out_of_range()),
        Ok(count) => usize::try_from(count).map_err(|_| out_of_range()),
    }
}

/// Why the server options could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The arguments themselves are wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Something the arguments name could not be used (exit code 1).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The shortest `--ws-keepalive`. Below it pings are no keepalive but a flood, and a
/// peer is cut off after three intervals of ordinary latency (at `1ns`, at once).
const MIN_WS_KEEPALIVE: Duration = Duration::from_secs(1);

fn parse_keepalive(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration < MIN_WS_KEEPALIVE => Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_WS_KEEPALIVE)
        )),
        duration => Ok(duration),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (e.g. 500ms, 10s, 2m)"))
}

impl ServeArgs {
    /// The server options these arguments select (without a watchdog, and with process
    /// groups: `--containment` is applied by the binary, since a cgroup needs the watchdog
    /// to be removed). Reads the token file and opens `--fs-root`; refuses to serve the
    /// network without a token.
    pub fn server_options(&self) -> Result<ServerOptions, OptionsError> {
        let token = match &self.auth_token_file {
            None => None,
            Some(path) => Some(BearerToken::read_file(path).map_err(|err| {
                let message = format!("--auth-token-file {}: {err}", path.display());
                match err {
                    TokenError::Unreadable(_) => OptionsError::Io(std::io::Error::other(message)),
                    _ => OptionsError::Usage(message),
                }
            })?),
        };
        if let Listen::WebSocket(addr) = self.listen {
            if exposes_network(addr) && token.is_none() && !self.insecure_no_auth {
                return Err(OptionsError::Usage(format!(
                    "refusing to serve ws://{addr} without authentication: anyone who reaches it could run commands as this user. Give --auth-token-file FILE (clients then send `Authorization: Bearer <token>`), listen on a loopback address, or pass --insecure-no-auth on a network you trust completely"
                )));
            }
        }
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
            containment: Containment::ProcessGroup,
            watchdog: None,
            upgrade_policy: UpgradePolicy {
                token,
                allowed_origins: self.allow_origin.clone(),
                allowed_hosts: self.allow_host.clone(),
            },
            limits: Limits {
                max_connections: self.max_connections,
                max_sessions: self.max_sessions,
                max_processes: self.max_processes,
                max_retained_bytes: self.max_retained_bytes,
                ..DEFAULT_LIMITS
            },
            accept_plain_paths: !self.require_file_uris,
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

    #[test]
    fn env_arguments_and_files() {
        assert_eq!(parse_env_arg("A=1=2"), Ok(("A".into(), Some("1=2".into()))));
        assert_eq!(parse_env_arg("A="), Ok(("A".into(), Some(String::new()))));
        assert_eq!(parse_env_arg("HOME"), Ok(("HOME".into(), None)));
        assert!(parse_env_arg("=x").is_err());
        assert_eq!(
            parse_env_file("# c\n\nA=1\r\n  B=two words\n"),
            Ok(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(parse_env_file("A=1\nnope\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("=1\n").unwrap_err().0, 1);
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_bytes("1 GiB"), Ok(1024 * 1024 * 1024));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn counts_are_positive_and_bounded() {
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count("4096"), Ok(4096));
        for bad in ["0", "-1", "4294967296", "many"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keepalives_are_at_least_a_second() {
        assert_eq!(parse_keepalive("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_keepalive("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0s", "1ns", "999ms", "soon"] {
            assert!(parse_keepalive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_defaults_are_the_documented_limits() {
        let args = ServeArgs::try_parse_from(["exec-server"]).expect("defaults");
        let options = args.server_options().expect("options");
        assert_eq!(options.limits, DEFAULT_LIMITS);
        assert_eq!(
            options.output_retention_bytes,
            crate::options::DEFAULT_OUTPUT_RETENTION_BYTES
        );
        assert_eq!(
            options.max_message_bytes,
            crate::options::DEFAULT_MAX_MESSAGE_BYTES
        );
        assert!(options.upgrade_policy.token.is_none());
        assert_eq!(args.containment, ContainmentMode::Auto);
    }
}
