//! `exec-server exec`: run one command on an exec-server like `kubectl exec` — stream
//! its stdout and stderr to ours, forward our stdin (and EOF), forward Ctrl-C as an
//! interrupt (or, with `--tty`, put our terminal in raw mode and follow its size), and
//! exit with the remote exit code.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use exec_client::{
    ClientError, ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, SignalName,
    StartRequest, Stream, WriteStatus,
};

/// What `exec` runs, and where.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub transport: ExecServerTransport,
    pub bearer_token: Option<exec_client::BearerToken>,
    pub tty: bool,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub argv: Vec<String>,
}

/// Exit code when the connection to the server failed mid-run.
pub const CONNECTION_FAILED: i32 = 255;

/// Runs the command and returns the exit code to exit with.
pub async fn run(options: ExecOptions) -> Result<i32, ClientError> {
    let client_options = ClientOptions {
        client_name: "exec-server exec".into(),
        bearer_token: options.bearer_token.clone(),
        // Interactive: a write waits for as long as the command leaves its stdin full,
        // which is backpressure, not a fault. A lost server still ends every call.
        call_timeout: None,
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(options.transport.clone(), client_options).await?;
    let raw_terminal = if options.tty {
        RawTerminal::enable()
    } else {
        None
    };
    let mut request = StartRequest::new(options.argv.clone());
    request.cwd = options.cwd.clone();
    request.env = options.env.clone();
    request.tty = options.tty;
    request.pipe_stdin = true;
    // Install the handlers before anything runs remotely: a Ctrl-C in between would
    // otherwise kill us with the default action instead of interrupting the command.
    let signals = Signals::install();
    let mut process = client.start(request).await?;
    let id = process.id().to_owned();
    if options.tty {
        if let Some((rows, cols)) = terminal_size() {
            let _ = client.resize(&id, rows, cols).await;
        }
    }
    let stdin_task = tokio::spawn(forward_stdin(client.clone(), id.clone()));
    let signal_task = tokio::spawn(forward_signals(
        signals,
        client.clone(),
        id.clone(),
        options.tty,
    ));
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut exit_code = CONNECTION_FAILED;
    while let Some(event) = process.next_event().await {
        match event {
            ProcessEvent::Output {
                stream: Stream::Stderr,
                data,
                ..
            } => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ProcessEvent::Output { data, .. } => {
                let _ = stdout.write_all(&data).await;
                let _ = stdout.flush().await;
            }
            ProcessEvent::Exited {
                exit_code: code, ..
            } => exit_code = code,
            ProcessEvent::Closed { .. } => break,
            ProcessEvent::Lost { from_seq, to_seq } => {
                tracing::warn!(from_seq, to_seq, "output lost while reconnecting");
            }
            ProcessEvent::Failed { reason } => {
                eprintln!("exec-server exec: {reason}");
                exit_code = CONNECTION_FAILED;
                break;
            }
        }
    }
    // Let the helper tasks' client clones go before returning, so dropping the client
    // here (and with it a spawned stdio server) happens now, not at process exit.
    stdin_task.abort();
    signal_task.abort();
    let _ = stdin_task.await;
    let _ = signal_task.await;
    drop(raw_terminal);
    drop(process);
    drop(client);
    Ok(exit_code)
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

/// SIGINT and SIGWINCH, caught from before the remote command starts.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    resize: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            resize: signal(SignalKind::window_change()).ok(),
        }
    }
}

/// Ctrl-C becomes an interrupt of the remote process (on a raw terminal it travels as
/// a byte instead); the terminal's size follows ours.
async fn forward_signals(signals: Signals, client: ExecServerClient, id: String, tty: bool) {
    let (Some(mut interrupt), Some(mut resize)) = (signals.interrupt, signals.resize) else {
        return;
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => {
                let _ = client.signal(&id, SignalName::Interrupt).await;
            }
            _ = resize.recv(), if tty => {
                if let Some((rows, cols)) = terminal_size() {
                    let _ = client.resize(&id, rows, cols).await;
                }
            }
        }
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
