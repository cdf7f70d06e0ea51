//! The bare floors each row is divided by: the least code that does the same job
//! without a server — spawning with tokio, a bare websocket echo, a hand-written
//! pipe → base64 → frame loop (over a websocket, or as JSON Lines from a helper
//! subprocess for stdio), a raw PTY read loop, kill + reap.

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use exec_protocol::fast::encode_output_notification;
use exec_protocol::{encode_notification, Notify as _, ProcessClosed, Stream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Conn;

/// Size of each read from a child's output pipe.
pub const READ_CHUNK: usize = 64 * 1024;

/// The hidden first argument that runs the bench binary as a stdio floor helper.
pub const HELPER_ARG: &str = "__floor-helper";

/// A bare websocket server (tokio-tungstenite, the library the server's own
/// websocket layer sits on) on its own thread and single-threaded runtime: `/` echoes
/// each frame; `/zeros/N` streams `head -c N /dev/zero` as `process/output` frames,
/// then a `process/closed`.
pub struct WsFloor {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type FloorSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

impl WsFloor {
    pub fn start() -> Result<WsFloor> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("ws://{}", listener.local_addr()?);
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream));
                            }
                        }
                    }
                }
            });
        });
        Ok(WsFloor {
            url,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for WsFloor {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One floor connection: the request path picks echo or zeros.
async fn serve(stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let path = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = path.clone();
    // The signature (and its large error type) is tungstenite's handshake callback's.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, response: Response| {
        if let Ok(mut seen) = seen.lock() {
            *seen = request.uri().path().to_owned();
        }
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let path = path.lock().map(|p| p.clone()).unwrap_or_default();
    match path.strip_prefix("/zeros/").and_then(|n| n.parse().ok()) {
        Some(n) => zeros(socket, n).await,
        None => echo(socket).await,
    }
}

async fn echo(mut socket: FloorSocket) {
    while let Some(Ok(message)) = socket.next().await {
        if message.is_close() || socket.send(message).await.is_err() {
            return;
        }
    }
}

async fn zeros(mut socket: FloorSocket, n: u64) {
    let result: Result<()> = async {
        let mut child = tokio::process::Command::new("head")
            .args(["-c", &n.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut seq = 0;
        loop {
            let read = stdout.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            seq += 1;
            let frame = encode_output_notification("z", seq, Stream::Stdout, &buffer[..read]);
            socket.send(Message::text(frame)).await?;
        }
        child.wait().await?;
        socket.send(Message::text(closed_frame(seq + 2))).await?;
        Ok(())
    }
    .await;
    let _ = result;
}

fn closed_frame(seq: u64) -> String {
    encode_notification(
        ProcessClosed::METHOD.as_str(),
        &ProcessClosed {
            process_id: "z".into(),
            seq,
        },
    )
}

/// A floor helper subprocess (the bench binary itself) speaking JSON Lines.
pub struct StdioFloor {
    child: tokio::process::Child,
    pub conn: Option<Conn>,
}

impl StdioFloor {
    /// `echo`: every line back; `zeros N`: the zeros stream as lines.
    pub fn start(args: &[&str]) -> Result<StdioFloor> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .arg(HELPER_ARG)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the floor helper")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let conn = Conn::lines(stdin.into_owned_fd()?, stdout.into_owned_fd()?)?;
        Ok(StdioFloor {
            child,
            conn: Some(conn),
        })
    }

    /// Closes the pipes and reaps the helper within 5 s.
    pub async fn stop(mut self) {
        self.conn = None;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The helper's main: `echo` or `zeros N` on stdin/stdout (blocking, one thread).
pub fn helper_main(args: &[String]) -> Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    match args {
        [mode] if mode == "echo" => {
            for line in stdin.lines() {
                let line = line?;
                stdout.write_all(line.as_bytes())?;
                stdout.write_all(b"\n")?;
                stdout.flush()?;
            }
            Ok(())
        }
        [mode, n] if mode == "zeros" => {
            let mut child = std::process::Command::new("head")
                .args(["-c", n, "/dev/zero"])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut pipe = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            let mut buffer = vec![0u8; READ_CHUNK];
            let mut seq = 0;
            loop {
                let read = pipe.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                seq += 1;
                let frame = encode_output_notification("z", seq, Stream::Stdout, &buffer[..read]);
                stdout.write_all(frame.as_bytes())?;
                stdout.write_all(b"\n")?;
                stdout.flush()?;
            }
            child.wait()?;
            stdout.write_all(closed_frame(seq + 2).as_bytes())?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
            // Wait for EOF so the reader sees everything before the pipe closes.
            for line in stdin.lines() {
                line?;
            }
            Ok(())
        }
        _ => bail!("unknown floor helper mode {args:?}"),
    }
}

/// `tokio::process::Command::spawn` of `argv` (stdout and stderr piped, as a server
/// does), timed to its return; the child is then awaited outside the timing.
pub async fn spawn_returns(argv: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let mut child = command(argv).spawn()?;
    let took = started.elapsed();
    child.wait().await?;
    Ok(took)
}

/// Spawn + wait for exit.
pub async fn spawn_and_wait(argv: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let mut child = command(argv).spawn()?;
    child.wait().await?;
    Ok(started.elapsed())
}

fn command(argv: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// `n` sequential spawns of `sleep 600` (timed), then kill + reap of all (timed).
pub async fn sleeps(n: usize) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(command(&["sleep", "600"]).spawn()?);
    }
    let spawned = started.elapsed();
    let started = Instant::now();
    for child in &mut children {
        child.start_kill()?;
    }
    for child in &mut children {
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .map_err(|_| anyhow!("a killed sleep was not reaped within 10 s"))??;
    }
    Ok((spawned, started.elapsed()))
}

/// A raw PTY read loop: `head -c n /dev/zero` on a fresh PTY, its master read in
/// 64 KiB reads until EIO. Returns the time and the bytes read.
pub fn pty_zeros(n: u64) -> Result<(Duration, u64)> {
    let pty = nix::pty::openpty(None, None)?;
    let started = Instant::now();
    let slave = pty.slave.as_fd().try_clone_to_owned()?;
    let mut child = std::process::Command::new("head")
        .args(["-c", &n.to_string(), "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::null())
        .spawn()?;
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        match master.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => total += read as u64,
            Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
            Err(error) => return Err(error.into()),
        }
    }
    child.wait()?;
    Ok((started.elapsed(), total))
}
