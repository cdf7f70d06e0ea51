//! Shared pieces of the server's integration tests. The wire client is
//! `exec-server-harness`; this module only points it at the real binary and adds the
//! few test-only helpers the harness does not have.

#![allow(dead_code)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use exec_server_harness::{
    Event, ExecServer, ExecServerBuilder, HarnessError, ProcessOutput, ProcessSpec, Session,
    Transport,
};
use serde_json::Value;

pub type TestResult = Result<(), HarnessError>;

pub const BOTH: [Transport; 2] = [Transport::WebSocket, Transport::Stdio];

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

/// Waits (within `within`) for `process/closed` of `process_id` and returns what the
/// process's notifications carried, plus the `signal` of its `process/exited`. Checks
/// that its notifications use one gap-free seq space ending with `process/closed`.
/// Nothing is consumed: the events stay buffered.
pub async fn notified_output(
    server: &ExecServer,
    process_id: &str,
    within: Duration,
) -> Result<(ProcessOutput, Option<String>), HarnessError> {
    let events = server
        .wait_for_events(
            &format!("process/closed of {process_id}"),
            within,
            |events| events.iter().any(|event| event.is_closed(process_id)),
        )
        .await?;
    let mut mine: Vec<Event> = events
        .into_iter()
        .filter(|event| event.process_id() == Some(process_id))
        .collect();
    mine.sort_by_key(Event::seq);
    let seqs: Vec<u64> = mine.iter().filter_map(Event::seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "{process_id}: one gap-free seq space per process"
    );
    assert_eq!(
        mine.last().map(|event| event.method.as_str()),
        Some("process/closed"),
        "{process_id}: process/closed comes last"
    );
    let mut output = ProcessOutput::default();
    let mut signal = None;
    for event in &mine {
        match event.method.as_str() {
            "process/output" => {
                let data = event.chunk().expect("base64 chunk");
                match event.stream() {
                    Some("stdout") => output.stdout.extend(data),
                    Some("stderr") => output.stderr.extend(data),
                    Some("pty") => output.pty.extend(data),
                    other => panic!("unknown stream {other:?}"),
                }
            }
            "process/exited" => {
                output.exit_code = event.exit_code().and_then(|code| i32::try_from(code).ok());
                signal = event.params["signal"].as_str().map(str::to_owned);
            }
            _ => {}
        }
    }
    Ok((output, signal))
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
    let pids_in = |events: &mut dyn Iterator<Item = &Event>| -> Vec<i32> {
        let mut output: Vec<&Event> = events.filter(|e| e.is_output(process_id)).collect();
        output.sort_by_key(|e| e.seq());
        let text: Vec<u8> = output
            .iter()
            .flat_map(|e| e.chunk().expect("base64 chunk"))
            .collect();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    let server = session.server();
    let events = server
        .wait_for_events("pid lines on stdout", server.default_wait(), |events| {
            pids_in(&mut events.iter()).len() >= count
        })
        .await?;
    Ok(pids_in(&mut events.iter()))
}

/// Resumes `session_id` on `connection`, retrying while the server still reports it
/// attached: the end of the previous connection (a reset, a silent peer) is noticed
/// asynchronously. Fails after the default deadline.
pub async fn resume_when_detached(
    connection: &ExecServer,
    session_id: &str,
) -> Result<Session, HarnessError> {
    let deadline = tokio::time::Instant::now() + connection.default_wait();
    loop {
        match connection.resume(CLIENT, session_id).await {
            Err(HarnessError::Rpc { failure, .. })
                if failure.message.contains("already attached")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Sends one HTTP/1.1 request to the server at `url` (`ws://IP:PORT`) and returns the
/// response head (status line and headers), read within `within`. `Host` defaults to the
/// server's own address; `headers` are added as given.
pub async fn http_head(
    url: &str,
    method: &str,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    within: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://");
    let host = host.unwrap_or(addr);
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        // Byte by byte up to the blank line: an accepted upgrade keeps the socket open.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await? == 1 {
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head).into_owned())
    };
    tokio::time::timeout(within, exchange)
        .await
        .expect("an HTTP response within the deadline")
        .expect("HTTP exchange")
}

/// The status code of a response head.
pub fn http_status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
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
