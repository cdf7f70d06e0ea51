//! Where a client's server is: a websocket URL, or a command whose stdin/stdout carry
//! the protocol. A command's child is tied to the client by [`StdioChild`]: when the
//! client goes away, or the connection fails, the child's process group is terminated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::token::BearerToken;
use crate::wire::{self, FrameReader, FrameWriter};

/// How long a stdio child gets between SIGTERM and SIGKILL.
pub(crate) const STDIO_CHILD_GRACE: Duration = Duration::from_secs(2);

/// How to reach an exec-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecServerTransport {
    /// `ws://` or `wss://` URL.
    WebSocketUrl(String),
    /// Spawn `program args…` (env overlaid on ours, in `cwd`) and speak over its stdio.
    StdioCommand {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
}

impl ExecServerTransport {
    /// Parses a `--connect` value: a `ws://`/`wss://` URL, or `stdio:CMD` where CMD is a
    /// shell-quoted command line (e.g. `stdio:'ssh box exec-server --listen stdio'`).
    pub fn parse(spec: &str) -> Result<ExecServerTransport, String> {
        if spec.starts_with("ws://") || spec.starts_with("wss://") {
            return Ok(ExecServerTransport::WebSocketUrl(spec.to_owned()));
        }
        if let Some(command) = spec.strip_prefix("stdio:") {
            let words =
                shlex::split(command).ok_or_else(|| format!("unbalanced quotes in {spec:?}"))?;
            let (program, args) = words
                .split_first()
                .ok_or_else(|| format!("no command after stdio: in {spec:?}"))?;
            return Ok(ExecServerTransport::StdioCommand {
                program: program.clone(),
                args: args.to_vec(),
                env: BTreeMap::new(),
                cwd: None,
            });
        }
        Err(format!(
            "{spec:?} is not a ws://, wss:// or stdio:COMMAND address"
        ))
    }
}

/// A spawned stdio server. Dropping it terminates the child's process group: SIGTERM,
/// up to [`STDIO_CHILD_GRACE`], then SIGKILL, and the child is reaped (off-thread, so
/// the drop itself never blocks).
pub(crate) struct StdioChild {
    child: Option<std::process::Child>,
}

impl StdioChild {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Terminates the child now (idempotent).
    pub(crate) fn terminate(&mut self) {
        if let Some(child) = self.child.take() {
            terminate_child(child);
        }
    }
}

impl Drop for StdioChild {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(unix)]
fn terminate_child(mut child: std::process::Child) {
    // SIGTERM now, so the server hears it even if this process exits right after;
    // the grace period and SIGKILL run off-thread so that dropping never blocks.
    let _ = crate::teardown::signal_group(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    std::thread::spawn(move || crate::teardown::terminate_group(&mut child, STDIO_CHILD_GRACE));
}

/// Windows has no process groups to signal: `taskkill /T /F` ends the whole tree. All
/// three of its standard streams are null so nothing leaks into the user's terminal.
#[cfg(windows)]
fn terminate_child(mut child: std::process::Child) {
    let status = std::process::Command::new("taskkill")
        .args(["/PID", &child.id().to_string(), "/T", "/F"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(status) if status.success()) {
        let _ = child.kill();
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// An open transport: the frame halves and, for a command, the child guard.
pub(crate) struct Opened {
    pub(crate) writer: FrameWriter,
    pub(crate) reader: FrameReader,
    pub(crate) child: Option<StdioChild>,
}

pub(crate) async fn open(
    transport: &ExecServerTransport,
    bearer_token: Option<&BearerToken>,
) -> std::io::Result<Opened> {
    match transport {
        ExecServerTransport::WebSocketUrl(url) => {
            let (writer, reader) = wire::connect_websocket(url, bearer_token).await?;
            Ok(Opened {
                writer,
                reader,
                child: None,
            })
        }
        ExecServerTransport::StdioCommand {
            program,
            args,
            env,
            cwd,
        } => spawn_stdio(program, args, env, cwd.as_ref()),
    }
}

fn spawn_stdio(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&PathBuf>,
) -> std::io::Result<Opened> {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot run {program}: {err}")))?;
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let guard = StdioChild { child: Some(child) };
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        return Err(std::io::Error::other("the child's pipes were not created"));
    };
    let stdin = tokio::process::ChildStdin::from_std(stdin)?;
    let stdout = tokio::process::ChildStdout::from_std(stdout)?;
    let stderr = tokio::process::ChildStderr::from_std(stderr)?;
    let program = program.to_owned();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "exec_client::stderr", server = %program, "{line}");
        }
    });
    let (writer, reader) = wire::lines(Box::new(stdout), Box::new(stdin));
    Ok(Opened {
        writer,
        reader,
        child: Some(guard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_specs() {
        assert_eq!(
            ExecServerTransport::parse("ws://127.0.0.1:9"),
            Ok(ExecServerTransport::WebSocketUrl("ws://127.0.0.1:9".into()))
        );
        let ExecServerTransport::StdioCommand { program, args, .. } =
            ExecServerTransport::parse("stdio:ssh box 'exec-server --listen stdio'")
                .expect("stdio")
        else {
            panic!("stdio command");
        };
        assert_eq!(program, "ssh");
        assert_eq!(args, ["box", "exec-server --listen stdio"]);
        assert!(ExecServerTransport::parse("http://x").is_err());
        assert!(ExecServerTransport::parse("stdio:").is_err());
        assert!(ExecServerTransport::parse("stdio:'oops").is_err());
    }
}
