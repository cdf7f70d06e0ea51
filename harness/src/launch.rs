//! Starting and stopping the server under test: the in-tree server in-process, or any
//! binary or command line as a child in its own process group. Teardown is bounded.

use std::os::unix::process::CommandExt as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::error::{HarnessError, Result};
use crate::trace::Tail;
use exec_client::wire::{ByteReader, ByteWriter};

/// Which transport the server is started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `--listen ws://127.0.0.1:0`: one websocket per connection.
    WebSocket,
    /// `--listen stdio`: JSON Lines on the server's stdin and stdout (one connection).
    Stdio,
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) enum Program {
    InTree,
    Command(Vec<String>),
    /// A websocket server someone else started, at this URL.
    Attached(String),
}

/// A running server.
pub(crate) enum Running {
    InProcess {
        handle: exec_server::ServerHandle,
        task: tokio::task::JoinHandle<()>,
    },
    Child {
        child: Box<std::process::Child>,
        stderr: Arc<Tail>,
        /// Anything a websocket server printed on stdout after its start-up line.
        extra_stdout: Arc<Tail>,
        /// A websocket server's stdin, held open: EOF there is not a signal to it.
        stdin: Option<ChildStdin>,
    },
    /// Not ours: never stopped, no pid, no stderr.
    Attached,
}

/// The stdio pipes of a server started on stdio, handed to the first connection.
pub(crate) type StdioPipes = (ByteReader, ByteWriter);

pub(crate) struct Launched {
    pub running: Running,
    pub url: Option<String>,
    pub stdio: Option<StdioPipes>,
}

pub(crate) async fn launch(
    program: &Program,
    transport: Transport,
    listen: Option<&str>,
    args: &[String],
    env: &[(String, String)],
    startup_deadline: Duration,
) -> Result<Launched> {
    match program {
        Program::InTree => launch_in_process(transport, args).await,
        Program::Command(words) => {
            launch_child(words, transport, listen, args, env, startup_deadline).await
        }
        Program::Attached(url) => {
            if transport != Transport::WebSocket || !args.is_empty() || !env.is_empty() {
                return Err(HarnessError::Startup(
                    "an attached server is reached over websocket only, and takes no arguments or environment".into(),
                ));
            }
            wait_ready(url, startup_deadline)
                .await
                .map_err(HarnessError::Startup)?;
            Ok(Launched {
                running: Running::Attached,
                url: Some(url.trim_end_matches('/').to_owned()),
                stdio: None,
            })
        }
    }
}

async fn launch_in_process(transport: Transport, args: &[String]) -> Result<Launched> {
    use clap::Parser as _;
    let argv = std::iter::once("exec-server".to_owned()).chain(args.iter().cloned());
    let parsed = exec_server::cli::ServeArgs::try_parse_from(argv)
        .map_err(|err| HarnessError::Startup(format!("bad in-process server arguments: {err}")))?;
    let options = parsed
        .server_options()
        .map_err(|err| HarnessError::Startup(format!("in-process server: {err}")))?;
    let server = exec_server::Server::new(options, exec_server::Shutdown::new());
    let handle = server.handle();
    match transport {
        Transport::WebSocket => {
            let addr = match parsed.listen {
                exec_server::cli::Listen::WebSocket(addr) => addr,
                exec_server::cli::Listen::Stdio => exec_server::cli::Listen::default_addr(),
            };
            let bound = server.bind_websocket(addr).await?;
            let url = bound.url()?;
            let task = tokio::spawn(async move {
                if let Err(err) = bound.serve().await {
                    eprintln!("in-process exec-server stopped: {err}");
                }
            });
            Ok(Launched {
                running: Running::InProcess { handle, task },
                url: Some(url),
                stdio: None,
            })
        }
        Transport::Stdio => {
            let (client_side, server_side) = tokio::io::duplex(1 << 16);
            let (server_read, server_write) = tokio::io::split(server_side);
            let limit = parsed.max_message_bytes;
            let task = tokio::spawn(server.serve_stdio_streams(server_read, server_write, limit));
            let (client_read, client_write) = tokio::io::split(client_side);
            Ok(Launched {
                running: Running::InProcess { handle, task },
                url: None,
                stdio: Some((Box::new(client_read), Box::new(client_write))),
            })
        }
    }
}

async fn launch_child(
    words: &[String],
    transport: Transport,
    listen: Option<&str>,
    args: &[String],
    env: &[(String, String)],
    startup_deadline: Duration,
) -> Result<Launched> {
    let (program, leading) = words
        .split_first()
        .ok_or_else(|| HarnessError::Startup("empty server command".into()))?;
    let listen = listen.unwrap_or(match transport {
        Transport::WebSocket => "ws://127.0.0.1:0",
        Transport::Stdio => "stdio",
    });
    // A std child (pipes handed to tokio): teardown happens in Drop, which must be able
    // to wait for it without a runtime.
    let mut command = std::process::Command::new(program);
    command
        .args(leading)
        .arg("--listen")
        .arg(listen)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|err| HarnessError::Startup(format!("cannot run {program}: {err}")))?;
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr_pipe)) = pipes else {
        let mut child = child;
        exec_client::teardown::terminate_group(&mut child, Duration::ZERO);
        return Err(HarnessError::Startup(
            "the server's pipes were not created".into(),
        ));
    };
    let stdin = ChildStdin::from_std(stdin)?;
    let stdout = ChildStdout::from_std(stdout)?;
    let stderr = Arc::new(Tail::default());
    tokio::spawn(copy_into(
        Box::new(ChildStderr::from_std(stderr_pipe)?),
        Arc::clone(&stderr),
    ));
    let extra_stdout = Arc::new(Tail::default());
    let mut launched = Launched {
        running: Running::Child {
            child: Box::new(child),
            stderr: Arc::clone(&stderr),
            extra_stdout: Arc::clone(&extra_stdout),
            stdin: None,
        },
        url: None,
        stdio: None,
    };
    match transport {
        Transport::Stdio => {
            launched.stdio = Some((Box::new(stdout), Box::new(stdin)));
            Ok(launched)
        }
        Transport::WebSocket => {
            let startup = async {
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                stdout.read_line(&mut line).await?;
                Ok::<_, std::io::Error>((line, stdout))
            };
            let (line, stdout) = match tokio::time::timeout(startup_deadline, startup).await {
                Ok(Ok(read)) => read,
                Ok(Err(err)) => {
                    return Err(startup_failure(
                        &mut launched,
                        format!("reading stdout: {err}"),
                    ));
                }
                Err(_) => {
                    let message = format!("no start-up line on stdout within {startup_deadline:?}");
                    return Err(startup_failure(&mut launched, message));
                }
            };
            let url = line.trim_end().to_owned();
            if !url.starts_with("ws://") {
                let message = format!("start-up line must be ws://IP:PORT, got {line:?}");
                return Err(startup_failure(&mut launched, message));
            }
            if let Running::Child { stdin: held, .. } = &mut launched.running {
                *held = Some(stdin);
            }
            // Keep draining stdout, recording anything more it prints.
            tokio::spawn(copy_into(Box::new(stdout.into_inner()), extra_stdout));
            if let Err(err) = wait_ready(&url, startup_deadline).await {
                return Err(startup_failure(&mut launched, err));
            }
            launched.url = Some(url);
            Ok(launched)
        }
    }
}

fn startup_failure(launched: &mut Launched, message: String) -> HarnessError {
    let stderr = match &launched.running {
        Running::Child { stderr, .. } => stderr.text(),
        Running::InProcess { .. } | Running::Attached => String::new(),
    };
    stop(&mut launched.running, Duration::from_millis(500));
    HarnessError::Startup(format!("{message}\n---- server stderr ----\n{stderr}"))
}

async fn copy_into(mut pipe: ByteReader, tail: Arc<Tail>) {
    let mut buffer = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        tail.push(&buffer[..n]);
    }
    tail.close();
}

/// Polls `GET /readyz` until it answers 200.
async fn wait_ready(url: &str, deadline: Duration) -> Result<(), String> {
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let poll = async {
        loop {
            if readyz(&addr).await.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(deadline, poll)
        .await
        .map_err(|_| format!("GET {url}/readyz did not answer 200 within {deadline:?}"))
}

async fn readyz(addr: &str) -> std::io::Result<bool> {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.starts_with(b"HTTP/1.1 200"))
}

/// Stops the server: in-process at once; a child gets SIGTERM, `grace` to exit, then
/// SIGKILL to its whole process group (`exec_client::teardown`).
pub(crate) fn stop(running: &mut Running, grace: Duration) {
    match running {
        Running::InProcess { handle, task } => {
            handle.shutdown();
            task.abort();
        }
        Running::Child { child, .. } => exec_client::teardown::terminate_group(child, grace),
        Running::Attached => {}
    }
}
