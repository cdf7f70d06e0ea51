//! `exec-server exec`: run one command on an exec-server like `kubectl exec` — stream
//! its stdout and stderr to ours, forward our stdin (and EOF) with `-i`, forward Ctrl-C
//! as an interrupt (or, with `--tty` and `-i`, put our terminal in raw mode and follow
//! its size), and exit with the remote exit code.
//!
//! Ending early never leaves the remote command behind: a broken pipe on our stdout or
//! stderr, SIGTERM, SIGHUP and a second Ctrl-C within [`SECOND_INTERRUPT`] all terminate
//! the remote process tree (`process/terminate`, waiting at most [`TERMINATE_WAIT`] for
//! the answer) before `exec` ends.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use exec_client::{
    ClientError, ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, ProcessHandle,
    SignalName, StartRequest, Stream, WriteStatus,
};

/// What `exec` runs, and where.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub transport: ExecServerTransport,
    pub bearer_token: Option<exec_client::BearerToken>,
    pub tty: bool,
    /// Forward our stdin (`-i`); without it the remote stdin is not piped.
    pub stdin: bool,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub argv: Vec<String>,
    /// How long to keep retrying a refused websocket connection.
    pub connect_timeout: Duration,
}

/// Exit code when the client failed: no connection, a connection lost mid-run, a bad
/// `--cwd`, a start failure the server did not explain.
pub const CONNECTION_FAILED: i32 = 255;
/// Exit code when the program was not found (as a shell gives).
pub const NOT_FOUND: i32 = 127;
/// Exit code when the program was found but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;

/// A second Ctrl-C within this time of the first terminates the remote command.
pub const SECOND_INTERRUPT: Duration = Duration::from_secs(2);
/// How long `exec` waits for the answer to `process/terminate` before it exits anyway.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(2);

/// How `exec` ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this code.
    Exit(i32),
    /// Our stdout or stderr is a broken pipe: die of SIGPIPE, as a pipeline expects.
    BrokenPipe,
}

/// Why `exec` failed, to print once (after the terminal is restored) and the code to
/// exit with.
#[derive(Debug)]
pub struct ExecError {
    pub message: String,
    pub exit_code: i32,
}

impl ExecError {
    fn client(err: &ClientError) -> ExecError {
        ExecError {
            message: describe(err),
            exit_code: CONNECTION_FAILED,
        }
    }
}

/// A client error as the user reads it: a server's message without its JSON-RPC code.
fn describe(err: &ClientError) -> String {
    match err {
        ClientError::Server { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The exit code for a refused `process/start`, from the error's `data`
/// (`{errno, subject: "program" | "cwd"}`): a bad cwd is the client's failure (255), a
/// program that does not exist gives 127, one that cannot be executed 126. Without
/// `data` (an older server), 255.
pub fn start_failure_exit_code(data: Option<&Value>) -> i32 {
    let Some(data) = data.and_then(Value::as_object) else {
        return CONNECTION_FAILED;
    };
    if data.get("subject").and_then(Value::as_str) == Some("cwd") {
        return CONNECTION_FAILED;
    }
    let not_found = match data.get("errno") {
        Some(Value::Number(number)) => number.as_i64() == Some(i64::from(libc::ENOENT)),
        Some(Value::String(name)) => name == "ENOENT",
        _ => return CONNECTION_FAILED,
    };
    if not_found {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    }
}

/// Runs the command and returns how to end.
pub async fn run(options: ExecOptions) -> Result<Outcome, ExecError> {
    let client_options = ClientOptions {
        client_name: "exec-server exec".into(),
        bearer_token: options.bearer_token.clone(),
        // Interactive: a write waits for as long as the command leaves its stdin full,
        // which is backpressure, not a fault. A lost server still ends every call.
        call_timeout: None,
        ..ClientOptions::default()
    };
    wait_until_listening(&options.transport, options.connect_timeout).await;
    let client = ExecServerClient::connect(options.transport.clone(), client_options)
        .await
        .map_err(|err| ExecError::client(&err))?;
    // Install the handlers before the terminal goes raw and before anything runs
    // remotely: a signal in between would otherwise kill us with the default action,
    // leaving the terminal raw or the command running.
    let mut signals = Signals::install();
    // Raw mode only when our input goes to the remote PTY: otherwise Ctrl-C stays a
    // signal here.
    let raw_terminal = if options.tty && options.stdin {
        RawTerminal::enable()
    } else {
        None
    };
    let mut request = StartRequest::new(options.argv.clone());
    request.cwd = options.cwd.clone();
    request.env = options.env.clone();
    request.tty = options.tty;
    request.pipe_stdin = options.stdin;
    let process = match client.start(request).await {
        Ok(process) => process,
        Err(err) => {
            drop(raw_terminal);
            let exit_code = match &err {
                ClientError::Server { data, .. } => start_failure_exit_code(data.as_ref()),
                _ => CONNECTION_FAILED,
            };
            return Err(ExecError {
                message: describe(&err),
                exit_code,
            });
        }
    };
    let id = process.id().to_owned();
    if options.tty {
        if let Some((rows, cols)) = terminal_size() {
            let _ = client.resize(&id, rows, cols).await;
        }
    }
    let stdin_task = options
        .stdin
        .then(|| tokio::spawn(forward_stdin(client.clone(), id.clone())));
    let mut pump = tokio::spawn(pump_output(process));
    let mut last_interrupt: Option<Instant> = None;
    let outcome = loop {
        tokio::select! {
            pumped = &mut pump => break match pumped {
                Ok(Pumped::Closed(code)) => Ok(Outcome::Exit(code)),
                Ok(Pumped::BrokenPipe) => {
                    terminate(&client, &id).await;
                    Ok(Outcome::BrokenPipe)
                }
                // The reason the library only logged is said here, once.
                Ok(Pumped::Failed(reason)) => Err(ExecError {
                    message: match client.disconnect_reason() {
                        Some(why) if why != reason => format!("{reason}: {why}"),
                        _ => reason,
                    },
                    exit_code: CONNECTION_FAILED,
                }),
                Err(err) => Err(ExecError {
                    message: format!("output task failed: {err}"),
                    exit_code: CONNECTION_FAILED,
                }),
            },
            Some(()) = recv(&mut signals.interrupt) => {
                let now = Instant::now();
                if last_interrupt.is_some_and(|first| now.duration_since(first) <= SECOND_INTERRUPT) {
                    terminate(&client, &id).await;
                    break Ok(Outcome::Exit(130));
                }
                last_interrupt = Some(now);
                let (client, id) = (client.clone(), id.clone());
                tokio::spawn(async move {
                    let _ = client.signal(&id, SignalName::Interrupt).await;
                });
            }
            Some(()) = recv(&mut signals.terminate) => {
                terminate(&client, &id).await;
                break Ok(Outcome::Exit(128 + libc::SIGTERM));
            }
            Some(()) = recv(&mut signals.hangup) => {
                terminate(&client, &id).await;
                break Ok(Outcome::Exit(128 + libc::SIGHUP));
            }
            Some(()) = recv(&mut signals.resize), if options.tty => {
                if let Some((rows, cols)) = terminal_size() {
                    let (client, id) = (client.clone(), id.clone());
                    tokio::spawn(async move {
                        let _ = client.resize(&id, rows, cols).await;
                    });
                }
            }
        }
    };
    // Let the helper tasks' client clones go before returning, so dropping the client
    // here (and with it a spawned stdio server) happens now, not at process exit. A
    // task blocked writing our stdout is left behind: the runtime is shut down without
    // waiting for it.
    pump.abort();
    if let Some(task) = stdin_task {
        task.abort();
        let _ = task.await;
    }
    drop(raw_terminal);
    drop(client);
    outcome
}

/// `process/terminate`, waiting at most [`TERMINATE_WAIT`] for the answer.
async fn terminate(client: &ExecServerClient, id: &str) {
    let _ = tokio::time::timeout(TERMINATE_WAIT, client.terminate(id)).await;
}

/// What the output pump ended with.
enum Pumped {
    Closed(i32),
    BrokenPipe,
    Failed(String),
}

/// Copies the process's output to our stdout and stderr until it closes, the
/// connection fails, or one of ours is a broken pipe.
async fn pump_output(mut process: ProcessHandle) -> Pumped {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut exit_code = CONNECTION_FAILED;
    while let Some(event) = process.next_event().await {
        let written = match event {
            ProcessEvent::Output {
                stream: Stream::Stderr,
                data,
                ..
            } => write_flush(&mut stderr, &data).await,
            ProcessEvent::Output { data, .. } => write_flush(&mut stdout, &data).await,
            ProcessEvent::Exited {
                exit_code: code, ..
            } => {
                exit_code = code;
                Ok(())
            }
            ProcessEvent::Closed { .. } => return Pumped::Closed(exit_code),
            ProcessEvent::Lost { from_seq, to_seq } => {
                tracing::warn!(from_seq, to_seq, "output lost while reconnecting");
                Ok(())
            }
            ProcessEvent::Failed { reason } => return Pumped::Failed(reason),
        };
        // Any other write error (e.g. a full disk) is not the reader going away: the
        // output is dropped, as before, and the command goes on.
        if matches!(written, Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe) {
            return Pumped::BrokenPipe;
        }
    }
    Pumped::Failed(exec_client::DISCONNECTED.into())
}

async fn write_flush(
    writer: &mut (impl AsyncWriteExt + Unpin),
    data: &[u8],
) -> std::io::Result<()> {
    writer.write_all(data).await?;
    writer.flush().await
}

/// Restores SIGPIPE's default action (Rust ignores it) and raises it, so a pipeline
/// sees `exec` die of SIGPIPE (status 141 in a shell).
pub fn die_of_sigpipe() -> ! {
    use nix::sys::signal::{raise, signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = raise(Signal::SIGPIPE);
    // Unreachable unless SIGPIPE is blocked: exit as a shell would report it.
    std::process::exit(128 + libc::SIGPIPE)
}

/// A websocket server that is still starting refuses connections: wait, up to `within`,
/// until its port accepts one (then the real connection reports any other failure).
async fn wait_until_listening(transport: &ExecServerTransport, within: Duration) {
    let ExecServerTransport::WebSocketUrl(url) = transport else {
        return;
    };
    let Some(address) = socket_address(url) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt =
            tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&address)).await;
        match attempt {
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
            }
            _ => return,
        }
    }
}

/// `host:port` of a `ws://` or `wss://` URL (the scheme's port when none is given).
fn socket_address(url: &str) -> Option<String> {
    let (rest, default_port) = match url.strip_prefix("ws://") {
        Some(rest) => (rest, 80),
        None => (url.strip_prefix("wss://")?, 443),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    Some(match has_port {
        true => authority.to_owned(),
        false => format!("{authority}:{default_port}"),
    })
}

async fn forward_stdin(client: ExecServerClient, id: String) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = client.close_stdin(&id, b"").await;
                return;
            }
            Ok(n) => match client.write(&id, &buffer[..n]).await {
                Ok(WriteStatus::Accepted) => {}
                _ => return,
            },
        }
    }
}

/// The signals `exec` handles, caught from before the remote command starts.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
    resize: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
            resize: signal(SignalKind::window_change()).ok(),
        }
    }
}

/// The next delivery of a signal; never, for one that could not be installed.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// Our terminal in raw mode for the remote PTY; restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_failures_map_to_shell_exit_codes() {
        assert_eq!(start_failure_exit_code(None), 255);
        assert_eq!(start_failure_exit_code(Some(&json!(null))), 255);
        let enoent = i64::from(libc::ENOENT);
        let eacces = i64::from(libc::EACCES);
        let enoexec = i64::from(libc::ENOEXEC);
        let program = |errno: i64| json!({"errno": errno, "subject": "program"});
        assert_eq!(start_failure_exit_code(Some(&program(enoent))), 127);
        assert_eq!(start_failure_exit_code(Some(&program(eacces))), 126);
        assert_eq!(start_failure_exit_code(Some(&program(enoexec))), 126);
        assert_eq!(start_failure_exit_code(Some(&program(1000))), 126);
        assert_eq!(
            start_failure_exit_code(Some(&json!({"errno": "ENOENT", "subject": "program"}))),
            127
        );
        assert_eq!(
            start_failure_exit_code(Some(&json!({"errno": enoent, "subject": "cwd"}))),
            255
        );
    }

    #[test]
    fn websocket_urls_name_their_socket() {
        assert_eq!(
            socket_address("ws://127.0.0.1:8765").as_deref(),
            Some("127.0.0.1:8765")
        );
        assert_eq!(
            socket_address("ws://[::1]:9/path?x").as_deref(),
            Some("[::1]:9")
        );
        assert_eq!(socket_address("ws://[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(
            socket_address("wss://box.example").as_deref(),
            Some("box.example:443")
        );
        assert_eq!(socket_address("ws://"), None);
        assert_eq!(socket_address("http://x"), None);
    }
}
