//! A minimal wire client for the server's integration tests: starts the real binary on
//! either transport, sends frames, and reads replies and notifications lazily (only
//! when a test waits), so tests can pipeline requests without anything draining the
//! socket behind their back. Every wait has a deadline.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Stdio,
}

pub const BOTH: [Transport; 2] = [Transport::Ws, Transport::Stdio];

pub struct TestServer {
    pub child: Child,
    pub url: Option<String>,
    stdio: Option<(ChildStdin, ChildStdout)>,
    /// On websocket, the server's stdin (kept open) and the rest of its stdout.
    ws_pipes: Option<(ChildStdin, ChildStdout)>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl TestServer {
    pub async fn start(transport: Transport, extra_args: &[&str]) -> TestServer {
        let listen = match transport {
            Transport::Ws => "ws://127.0.0.1:0",
            Transport::Stdio => "stdio",
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_exec-server"))
            .arg("--listen")
            .arg(listen)
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn exec-server");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (url, stdio, ws_pipes) = match transport {
            Transport::Ws => {
                let mut line = Vec::new();
                let read_line = async {
                    let mut byte = [0u8; 1];
                    while stdout.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                        line.push(byte[0]);
                    }
                };
                timeout(DEADLINE, read_line)
                    .await
                    .expect("start-up line within deadline");
                let url = String::from_utf8(line).expect("utf-8 start-up line");
                assert!(
                    url.starts_with("ws://127.0.0.1:"),
                    "start-up line was {url:?}"
                );
                (Some(url), None, Some((stdin, stdout)))
            }
            Transport::Stdio => (None, Some((stdin, stdout)), None),
        };
        TestServer {
            child,
            url,
            stdio,
            ws_pipes,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("server pid") as i32
    }

    /// Everything a websocket server printed to stdout after its start-up line, up to EOF.
    pub async fn rest_of_stdout(&mut self) -> String {
        let (_, mut stdout) = self.ws_pipes.take().expect("websocket server pipes");
        let mut rest = String::new();
        timeout(DEADLINE, stdout.read_to_string(&mut rest))
            .await
            .expect("stdout EOF within deadline")
            .expect("read stdout");
        rest
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// A new connection: a websocket, or (once) the server's stdio.
    pub async fn connect(&mut self) -> Client {
        if let Some((stdin, stdout)) = self.stdio.take() {
            return Client::new(Wire::Stdio {
                stdin,
                stdout: BufReader::new(stdout).lines(),
            });
        }
        let url = self
            .url
            .clone()
            .expect("websocket server (stdio already taken)");
        let (socket, _) = timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("connect within deadline")
            .expect("websocket connect");
        Client::new(Wire::Ws(Box::new(socket)))
    }

    /// Connects and completes the handshake.
    pub async fn session(&mut self) -> Client {
        let mut client = self.connect().await;
        client.initialize().await;
        client
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("server exits within deadline")
            .expect("wait for server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- exec-server stderr ----\n{}", self.stderr());
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        }
    }
}

pub enum Wire {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Stdio {
        stdin: ChildStdin,
        stdout: Lines<BufReader<ChildStdout>>,
    },
}

pub struct Client {
    wire: Wire,
    next_id: u64,
    responses: HashMap<String, Value>,
    pub events: VecDeque<Value>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<String>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

pub fn unb64(value: &Value) -> Vec<u8> {
    BASE64
        .decode(value.as_str().expect("base64 string"))
        .expect("valid base64")
}

impl Client {
    fn new(wire: Wire) -> Client {
        Client {
            wire,
            next_id: 1,
            responses: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        match &mut self.wire {
            Wire::Ws(socket) => socket.send(Message::text(text)).await.expect("ws send"),
            Wire::Stdio { stdin, .. } => {
                stdin.write_all(text.as_bytes()).await.expect("stdin write");
                stdin.write_all(b"\n").await.expect("stdin write");
                stdin.flush().await.expect("stdin flush");
            }
        }
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        match &mut self.wire {
            Wire::Ws(socket) => socket
                .send(Message::binary(data.to_vec()))
                .await
                .expect("ws send"),
            Wire::Stdio { .. } => panic!("binary frames exist only on websocket"),
        }
    }

    /// Reads one frame from the wire, or `None` at end of stream.
    async fn read_frame(&mut self) -> Option<Value> {
        let text = match &mut self.wire {
            Wire::Ws(socket) => match socket.next().await? {
                Ok(Message::Text(text)) => text.to_string(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(other) => panic!("the server sends only text frames, got {other:?}"),
            },
            Wire::Stdio { stdout, .. } => stdout.next_line().await.expect("read stdout")?,
        };
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("server sent non-JSON {text:?}: {err}")),
        )
    }

    /// Reads frames until `done` says stop, filing responses and notifications.
    async fn pump_until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) {
        let work = async {
            while !done(self) {
                let Some(frame) = self.read_frame().await else {
                    panic!("connection closed while waiting for {what}");
                };
                if frame.get("method").is_some() {
                    self.events.push_back(frame);
                } else {
                    self.responses.insert(frame["id"].to_string(), frame);
                }
            }
        };
        if timeout(within, work).await.is_err() {
            panic!(
                "timed out after {within:?} waiting for {what}; unconsumed events: {:?}",
                self.events.iter().take(20).collect::<Vec<_>>()
            );
        }
    }

    pub async fn send_request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(&message.to_string()).await;
        id
    }

    pub async fn response(&mut self, id: &Value) -> Value {
        self.response_within(id, DEADLINE).await
    }

    pub async fn response_within(&mut self, id: &Value, within: Duration) -> Value {
        let key = id.to_string();
        self.pump_until(&format!("response to id {key}"), within, |client| {
            client.responses.contains_key(&key)
        })
        .await;
        self.responses.remove(&key).expect("response present")
    }

    pub fn has_response(&self, id: &Value) -> bool {
        self.responses.contains_key(&id.to_string())
    }

    /// Sends a request and returns the whole response object.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params).await;
        self.response(&id).await
    }

    /// Sends a request and returns its result; panics on an error response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        match response.get("result") {
            Some(result) => result.clone(),
            None => panic!("{method} failed: {response}"),
        }
    }

    /// Sends a request that must fail; returns the error object.
    pub async fn call_err(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        match response.get("error") {
            Some(error) => error.clone(),
            None => panic!("{method} unexpectedly succeeded: {response}"),
        }
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send_raw(&message.to_string()).await;
    }

    /// `initialize` + `initialized`; returns the session id.
    pub async fn initialize(&mut self) -> String {
        let result = self
            .call("initialize", json!({"clientName": "server-tests"}))
            .await;
        self.notify("initialized", json!({})).await;
        result["sessionId"].as_str().expect("sessionId").to_owned()
    }

    /// Reads until the buffered notifications satisfy `done` (nothing is consumed).
    pub async fn wait_events(&mut self, what: &str, done: impl Fn(&VecDeque<Value>) -> bool) {
        self.pump_until(what, DEADLINE, |client| done(&client.events))
            .await;
    }

    /// The first unconsumed notification matching `predicate`, removed from the buffer.
    pub async fn expect_event(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        self.pump_until(what, DEADLINE, |client| {
            client.events.iter().any(&predicate)
        })
        .await;
        let index = self
            .events
            .iter()
            .position(&predicate)
            .expect("event present");
        self.events.remove(index).expect("event present")
    }

    /// Starts `argv` with an exact, minimal environment; returns after the reply.
    pub async fn start(&mut self, process_id: &str, argv: &[&str]) {
        self.start_with(process_id, argv, json!({})).await;
    }

    /// Starts a process; `extra` is merged into the params (tty, pipeStdin, env, ...).
    pub async fn start_with(&mut self, process_id: &str, argv: &[&str], extra: Value) {
        let mut params = json!({
            "processId": process_id,
            "argv": argv,
            "cwd": "/",
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        });
        if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
            params.extend(extra.clone());
        }
        self.call("process/start", params).await;
    }

    /// Collects a process's output from its notifications until `process/closed`.
    pub async fn output_until_closed(&mut self, process_id: &str) -> Output {
        self.output_until_closed_within(process_id, DEADLINE).await
    }

    pub async fn output_until_closed_within(
        &mut self,
        process_id: &str,
        within: Duration,
    ) -> Output {
        let is_closed = |event: &Value| {
            event["method"] == "process/closed" && event["params"]["processId"] == process_id
        };
        self.pump_until(
            &format!("process/closed for {process_id}"),
            within,
            |client| client.events.iter().any(is_closed),
        )
        .await;
        let mut mine: Vec<Value> = Vec::new();
        self.events.retain(|event| {
            let ours = event["params"]["processId"] == process_id;
            if ours {
                mine.push(event.clone());
            }
            !ours
        });
        mine.sort_by_key(|event| event["params"]["seq"].as_u64());
        let seqs: Vec<u64> = mine
            .iter()
            .filter_map(|e| e["params"]["seq"].as_u64())
            .collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "one gap-free seq space per process");
        assert_eq!(
            mine.last().map(|e| e["method"].clone()),
            Some(json!("process/closed"))
        );
        let mut output = Output::default();
        for event in &mine {
            let params = &event["params"];
            match event["method"].as_str() {
                Some("process/output") => {
                    let data = unb64(&params["chunk"]);
                    match params["stream"].as_str() {
                        Some("stdout") => output.stdout.extend(data),
                        Some("stderr") => output.stderr.extend(data),
                        Some("pty") => output.pty.extend(data),
                        other => panic!("unknown stream {other:?}"),
                    }
                }
                Some("process/exited") => {
                    output.exit_code = params["exitCode"].as_i64();
                    output.exit_signal = params["signal"].as_str().map(str::to_owned);
                }
                _ => {}
            }
        }
        output
    }

    /// Closes the connection (websocket close frame, or EOF on the server's stdin).
    pub async fn close(self) {
        match self.wire {
            Wire::Ws(mut socket) => {
                let _ = WebSocketStream::close(&mut *socket, None).await;
            }
            Wire::Stdio { stdin, .. } => drop(stdin),
        }
    }
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

/// Polls until `pid` is gone, failing after the deadline.
pub async fn assert_pid_gone(pid: i32) {
    let gone = timeout(DEADLINE, async {
        while pid_alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "process {pid} still alive after {DEADLINE:?}");
}

/// Starts `sh -c 'echo $$; <script>'` and returns the shell's pid, read from its output.
pub async fn start_reporting_pids(
    client: &mut Client,
    process_id: &str,
    script: &str,
    count: usize,
) -> Vec<i32> {
    client.start(process_id, &["sh", "-c", script]).await;
    let pids_in = |events: &VecDeque<Value>| -> Vec<i32> {
        let mut output: Vec<&Value> = events
            .iter()
            .filter(|e| e["method"] == "process/output" && e["params"]["processId"] == process_id)
            .collect();
        output.sort_by_key(|e| e["params"]["seq"].as_u64());
        let text: Vec<u8> = output
            .iter()
            .flat_map(|e| unb64(&e["params"]["chunk"]))
            .collect();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    client
        .wait_events("pid lines on stdout", |events| {
            pids_in(events).len() >= count
        })
        .await;
    pids_in(&client.events)
}
