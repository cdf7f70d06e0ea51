//! Starting the server under test (our release binary or a `--peer` command) as a child
//! in its own process group, reading its RSS, and stopping it within a bound: SIGTERM
//! (so it kills its own process trees), then SIGKILL to the group after 3 s.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

/// Which transport a server is started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Stdio,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Stdio => "stdio",
        }
    }
}

/// An implementation to benchmark: its command words (before `--listen`).
#[derive(Debug, Clone)]
pub struct Implementation {
    pub name: String,
    pub command: Vec<String>,
    /// Paths as `file:` URIs and `writeId`s (revision 2026-08 peers).
    pub file_uris: bool,
    /// Whether this is our own server (which takes our `[ext]` options).
    pub ours: bool,
}

impl Implementation {
    /// Our release `exec-server`, found beside the bench's own executable.
    pub fn ours() -> Result<Implementation> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("the bench executable has no directory"))?;
        let binary: PathBuf = dir.join("exec-server");
        if !binary.is_file() {
            bail!(
                "{} is missing: build it first with `cargo build --release -p exec-server` \
                 (same CARGO_TARGET_DIR as the bench)",
                binary.display()
            );
        }
        Ok(Implementation {
            name: "ours".into(),
            command: vec![binary.to_string_lossy().into_owned()],
            file_uris: false,
            ours: true,
        })
    }

    /// A `--peer` command line (shell words).
    pub fn peer(command: &str, file_uris: bool) -> Result<Implementation> {
        let words =
            shlex::split(command).ok_or_else(|| anyhow!("cannot parse --peer {command:?}"))?;
        if words.is_empty() {
            bail!("--peer is empty");
        }
        Ok(Implementation {
            name: "peer".into(),
            command: words,
            file_uris,
            ours: false,
        })
    }

    /// The `cwd` to send in `process/start`.
    pub fn root_dir(&self) -> &'static str {
        if self.file_uris {
            "file:///"
        } else {
            "/"
        }
    }
}

/// A running server; dropping it stops it and its process group.
pub struct Server {
    child: Child,
    pub url: Option<String>,
    /// The server's stdin and stdout on stdio.
    pub pipes: Option<(std::process::ChildStdin, std::process::ChildStdout)>,
    /// A websocket server's stdin, held open: EOF there is no signal to it.
    _stdin: Option<std::process::ChildStdin>,
}

impl Server {
    /// Starts `implementation` on `transport`, with `extra` arguments (ours only), and
    /// waits up to 10 s for its `ws://` line.
    pub fn start(
        implementation: &Implementation,
        transport: Transport,
        extra: &[&str],
    ) -> Result<Server> {
        let mut command = Command::new(&implementation.command[0]);
        command.args(&implementation.command[1..]);
        command.arg("--listen").arg(match transport {
            Transport::WebSocket => "ws://127.0.0.1:0",
            Transport::Stdio => "stdio",
        });
        if implementation.ours {
            command.args(extra);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {:?}", implementation.command))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            bail!("no pipes to the server");
        };
        let mut server = Server {
            child,
            url: None,
            pipes: None,
            _stdin: None,
        };
        match transport {
            Transport::Stdio => server.pipes = Some((stdin, stdout)),
            Transport::WebSocket => {
                server.url = Some(read_url(stdout, Duration::from_secs(10))?);
                server._stdin = Some(stdin);
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// The first stdout line, which must be `ws://…`, within `limit`.
fn read_url(stdout: std::process::ChildStdout, limit: Duration) -> Result<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        let _ = sender.send(read);
        // Drain whatever else it prints, so it never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = receiver
        .recv_timeout(limit)
        .map_err(|_| anyhow!("no ws:// line on stdout within {limit:?}"))??;
    let url = line.trim();
    if !url.starts_with("ws://") {
        bail!("expected a ws:// line on stdout, got {url:?}");
    }
    Ok(url.to_string())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.pipes = None;
        self._stdin = None;
        // The server leads its own group (process_group(0)); SIGTERM lets it kill its
        // own trees, and SIGKILL after the grace ends whatever is left.
        exec_client::teardown::terminate_group(&mut self.child, Duration::from_secs(3));
    }
}
