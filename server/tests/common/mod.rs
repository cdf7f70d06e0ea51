//! Shared pieces of the server's integration tests. The wire client is
//! `exec-server-harness`; this module only points it at the real binary and adds what
//! is specific to this repository's tests (the binary, the client name, the process
//! environment the tests expect, base64 shorthands). The submodules hold what only some
//! tests need: `/proc` readings, the client library's process events, a cuttable proxy.

#![allow(dead_code)]

pub mod events;
pub mod procfs;
pub mod proxy;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use exec_server_harness::{
    Connection, ExecServer, ExecServerBuilder, HarnessError, ProcessSpec, RpcFailure, Session,
    Transport,
};
use serde_json::Value;

pub type TestResult = Result<(), HarnessError>;

pub const BOTH: [Transport; 2] = [Transport::WebSocket, Transport::Stdio];

// Error codes as docs/protocol.md gives them, written out rather than taken from the
// protocol crate, so that a wrong constant there fails the tests.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const NOT_FOUND: i64 = -32004;
pub const LIMIT_REACHED: i64 = -32005;

/// The client name the tests send in `initialize`.
pub const CLIENT: &str = "server-tests";

/// A harness builder that runs the binary under test (`--listen …` is added by the
/// harness).
pub fn exec_server_bin() -> ExecServerBuilder {
    ExecServer::builder().binary(env!("CARGO_BIN_EXE_exec-server"))
}

/// Starts the real binary on `transport` with extra arguments.
pub async fn start_server(transport: Transport, args: &[&str]) -> Result<ExecServer, HarnessError> {
    exec_server_bin()
        .transport(transport)
        .args(args.iter().copied())
        .start()
        .await
}

/// The real binary (websocket) started by `shell` with `signals` ignored (`trap ''
/// SIGNALS`), as a shell's background job or `nohup` would start it: an ignored signal
/// survives `exec`.
pub async fn start_server_ignoring(shell: &str, signals: &str) -> Result<ExecServer, HarnessError> {
    ExecServer::builder()
        .command([
            shell.to_owned(),
            "-c".to_owned(),
            format!("trap '' {signals}; exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_exec-server").to_owned(),
        ])
        .start()
        .await
}

/// A connection to a fresh server on `transport` with `args`, initialized as
/// [`CLIENT`]; it keeps the server alive.
pub async fn ready(transport: Transport, args: &[&str]) -> Result<Connection, HarnessError> {
    Ok(ready_with_server(transport, args).await?.1)
}

/// [`ready`], and the server too (for its pid).
pub async fn ready_with_server(
    transport: Transport,
    args: &[&str],
) -> Result<(ExecServer, Connection), HarnessError> {
    let server = start_server(transport, args).await?;
    let conn = server.connect().await?;
    conn.initialize(CLIENT).await?;
    Ok((server, conn))
}

/// `path` as the string a request carries.
pub fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The error answer to `method` with `params`.
pub async fn failure(
    conn: &Connection,
    method: &str,
    params: Value,
) -> Result<RpcFailure, HarnessError> {
    conn.request(method, params).error().await
}

/// A process `id` running `argv` in `/` with exactly `PATH=/usr/local/bin:/usr/bin:/bin`
/// as its environment (no `envPolicy`), as the tests expect.
pub fn spec<I, S>(id: &str, argv: I) -> ProcessSpec
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    ProcessSpec::new(argv)
        .id(id)
        .cwd("/")
        .env_policy(None)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
}

pub fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

pub fn unb64(value: &Value) -> Vec<u8> {
    BASE64
        .decode(value.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// Starts `sh -c script` (see [`spec`]) and returns the pids it prints, one a line,
/// once `count` of them have arrived in its `process/output` notifications.
pub async fn start_reporting_pids(
    session: &Session,
    process_id: &str,
    script: &str,
    count: usize,
) -> Result<Vec<i32>, HarnessError> {
    session
        .start_with(spec(process_id, ["sh", "-c", script]))
        .await?;
    let pids = |text: &str| -> Vec<i32> {
        text.lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    let text = session
        .connection()
        .wait_for_output(process_id, |text| pids(text).len() >= count)
        .await?;
    Ok(pids(&text))
}

/// Resumes `session_id` on `connection` as [`CLIENT`] once the server has noticed the
/// previous connection ended.
pub async fn resume_when_detached(
    connection: &Connection,
    session_id: &str,
) -> Result<Session, HarnessError> {
    connection.resume_when_detached(CLIENT, session_id).await
}

/// Runs `command` to its end, with `stdin` as its input (`None`: `/dev/null`), and
/// returns its status and output. Fails the test, naming `what`, if it is still running
/// after `within` (it is killed then) or its stdout or stderr stays open for `within`
/// after it exited. Unlike `Command::output`, nothing here waits without a bound.
pub fn output_within(
    command: &mut std::process::Command,
    stdin: Option<Vec<u8>>,
    within: Duration,
    what: &str,
) -> std::process::Output {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::Instant;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: cannot start {command:?}: {err}"));
    let deadline = Instant::now() + within;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On its own thread: a child that stops reading must not hold up the deadline.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    let pipes: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.stdout.take().expect("piped stdout"))),
        (1, Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    for (index, mut pipe) in pipes {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let read = pipe.read_to_end(&mut bytes).map(|_| bytes);
            let _ = sender.send((index, read));
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: still running after {within:?} (killed)");
            }
            Err(err) => panic!("{what}: cannot wait for it: {err}"),
        }
    };
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let (index, read) = receiver.recv_timeout(within).unwrap_or_else(|_| {
            panic!("{what}: exited ({status}) but its stdout or stderr stayed open for {within:?}")
        });
        streams[index] = read.unwrap_or_else(|err| panic!("{what}: cannot read its output: {err}"));
    }
    let [stdout, stderr] = streams;
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}
