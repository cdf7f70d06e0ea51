//! Where a client's server is: a websocket URL, or a command whose stdin/stdout carry
//! the protocol. A command's child is tied to the client by [`StdioChild`]: when the
//! client goes away, or the connection fails, the child's process group is terminated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// An open transport: the frame halves and, for a command, the child guard and what
/// it says on stderr.
pub(crate) struct Opened {
    pub(crate) writer: FrameWriter,
    pub(crate) reader: FrameReader,
    pub(crate) child: Option<StdioChild>,
    pub(crate) stderr: Option<Arc<StderrCapture>>,
}

/// Stderr lines of a stdio child kept until the handshake is over (at most this many;
/// the rest are counted).
const MAX_HELD_LINES: usize = 10;
/// Longest stderr line kept, in characters; the rest is cut off.
const MAX_LINE_CHARS: usize = 300;

/// A stdio child's stderr. Until the handshake succeeds its first lines are held, so
/// that a failed connect can show them in its error (and they are printed once);
/// after it, they are logged as they come (target `exec_client::stderr`, level info).
pub(crate) struct StderrCapture {
    program: String,
    state: Mutex<HeldLines>,
    ended: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct HeldLines {
    released: bool,
    lines: Vec<String>,
    more: usize,
}

impl StderrCapture {
    fn new(program: &str) -> Arc<StderrCapture> {
        Arc::new(StderrCapture {
            program: program.to_owned(),
            state: Mutex::new(HeldLines::default()),
            ended: tokio::sync::watch::Sender::new(false),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldLines> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_line(&self, line: &str) {
        let mut held = self.held();
        if held.released {
            drop(held);
            tracing::info!(target: "exec_client::stderr", server = %self.program, "{line}");
        } else if held.lines.len() < MAX_HELD_LINES {
            let mut kept: String = line.chars().take(MAX_LINE_CHARS).collect();
            if kept.len() < line.len() {
                kept.push('…');
            }
            held.lines.push(kept);
        } else {
            held.more += 1;
        }
    }

    /// The handshake succeeded: log what was held, and every later line as it comes.
    pub(crate) fn release(&self) {
        let mut held = self.held();
        held.released = true;
        let lines = std::mem::take(&mut held.lines);
        let more = std::mem::take(&mut held.more);
        drop(held);
        for line in lines {
            tracing::info!(target: "exec_client::stderr", server = %self.program, "{line}");
        }
        if more > 0 {
            tracing::info!(target: "exec_client::stderr", server = %self.program, "({more} more lines not shown)");
        }
    }

    /// The held lines and how many more there were, once stderr has ended or `wait` has
    /// passed (a child that failed is terminated, and its stderr ends soon after).
    pub(crate) async fn take_held(&self, wait: Duration) -> (Vec<String>, usize) {
        let mut ended = self.ended.subscribe();
        let _ = tokio::time::timeout(wait, ended.wait_for(|ended| *ended)).await;
        let mut held = self.held();
        (
            std::mem::take(&mut held.lines),
            std::mem::take(&mut held.more),
        )
    }
}

/// The transport as `--connect` spells it, for errors.
pub(crate) fn describe(transport: &ExecServerTransport) -> String {
    match transport {
        ExecServerTransport::WebSocketUrl(url) => url.clone(),
        ExecServerTransport::StdioCommand { program, args, .. } => {
            format!("stdio:{}", command_line(program, args))
        }
    }
}

/// A command line as the user would type it.
pub(crate) fn command_line(program: &str, args: &[String]) -> String {
    let words = std::iter::once(program).chain(args.iter().map(String::as_str));
    shlex::try_join(words).unwrap_or_else(|_| {
        std::iter::once(program.to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// The hint shown when a stdio command is no exec-server.
pub(crate) const STDIO_HINT: &str = "the command must run an exec-server speaking the protocol on its stdin and stdout, i.e. `exec-server --listen stdio` (e.g. stdio:'ssh HOST exec-server --listen stdio')";

/// Why a stdio command's handshake failed, with its first stderr lines: `reason` is
/// why the connection ended (if it did), `stray` the start of what it wrote instead of
/// the protocol, `error` the handshake's own error.
pub(crate) fn describe_stdio_failure(
    command: &str,
    reason: Option<&str>,
    stray: Option<&str>,
    error: &crate::ClientError,
    stderr: (Vec<String>, usize),
) -> String {
    let what = match (error, reason, stray) {
        (crate::ClientError::Timeout { after, .. }, _, _) => {
            format!("it did not answer the handshake (`initialize`) within {after:?}")
        }
        (_, _, Some(stray)) if reason == Some(crate::error::UNEXPECTED_REQUEST) => format!(
            "it sent a request instead of answering the handshake (does it echo its input, like cat?): {stray:?}"
        ),
        (_, _, Some(stray)) => {
            format!("it wrote {stray:?} on its stdout instead of the protocol")
        }
        (_, Some(crate::error::SERVER_CLOSED | crate::error::SENDING_FAILED), None) => {
            "it exited (or closed its stdin or stdout) before the handshake".to_owned()
        }
        (_, Some(reason), None) => format!("the handshake failed: {reason}"),
        (error, None, None) => format!("the handshake failed: {error}"),
    };
    let mut message = format!("`{command}`: {what}");
    let (lines, more) = stderr;
    if lines.is_empty() {
        message.push_str("; it wrote nothing on stderr");
    } else {
        message.push_str("; its stderr:");
        for line in &lines {
            message.push_str("\n    ");
            message.push_str(line);
        }
        if more > 0 {
            message.push_str(&format!("\n    ({more} more lines not shown)"));
        }
    }
    message.push_str("\n  hint: ");
    message.push_str(STDIO_HINT);
    message
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
                stderr: None,
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
    let capture = StderrCapture::new(program);
    let held = capture.clone();
    tokio::spawn(async move {
        let mut stderr = tokio::io::BufReader::new(stderr);
        let mut line = Vec::new();
        while let Ok(1..) = read_bounded_line(&mut stderr, &mut line).await {
            let text = String::from_utf8_lossy(&line);
            held.on_line(text.trim_end_matches(['\n', '\r']));
            line.clear();
        }
        held.ended.send_replace(true);
    });
    let (writer, reader) = wire::lines(Box::new(stdout), Box::new(stdin));
    Ok(Opened {
        writer,
        reader,
        child: Some(guard),
        stderr: Some(capture),
    })
}

/// Bytes of one stderr line kept; the rest of a longer line (binary output, `\r`
/// progress bars) is read and dropped, so a child cannot grow our memory.
const MAX_STDERR_LINE_BYTES: usize = 4096;

/// Reads up to the next `\n` (or EOF), keeping at most [`MAX_STDERR_LINE_BYTES`] of it
/// in `line`. Returns the bytes consumed: 0 at EOF.
async fn read_bounded_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use tokio::io::AsyncBufReadExt as _;
    let mut consumed = 0;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(consumed);
        }
        let (taken, complete) = match buffer.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (buffer.len(), false),
        };
        let room = MAX_STDERR_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&buffer[..taken.min(room)]);
        reader.consume(taken);
        consumed += taken;
        if complete {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stderr_lines_are_bounded_however_long() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nshort\n");
        let mut reader = tokio::io::BufReader::with_capacity(64, input.as_slice());
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut line).await.unwrap(),
            100_001
        );
        assert_eq!(line.len(), MAX_STDERR_LINE_BYTES);
        line.clear();
        assert_eq!(read_bounded_line(&mut reader, &mut line).await.unwrap(), 6);
        assert_eq!(line, b"short\n");
        line.clear();
        assert_eq!(read_bounded_line(&mut reader, &mut line).await.unwrap(), 0);
    }

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
