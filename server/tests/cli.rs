//! The binary's command line, start-up line, HTTP routes and shutdown (docs/protocol.md §1–§2).

mod common;

use std::time::Duration;

use common::*;
use exec_server_harness::protocol::RequestId;
use exec_server_harness::{
    http_head, wait_for_process_gone, ExecServer, HarnessError, HttpRequest, Transport,
};
use serde_json::json;

fn exec_server() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_exec-server"))
}

#[test]
fn help_lists_the_listen_option() {
    let output = output_within(
        exec_server().arg("--help"),
        None,
        Duration::from_secs(30),
        "exec-server --help",
    );
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--listen"), "{help}");
    assert!(help.contains("--output-retention"), "{help}");
}

#[test]
fn bad_listen_urls_exit_2_naming_the_accepted_forms() {
    for bad in ["ws://localhost:1", "http://127.0.0.1:0", "tcp://1.2.3.4:5"] {
        let output = output_within(
            exec_server().args(["--listen", bad]),
            None,
            Duration::from_secs(30),
            &format!("exec-server --listen {bad}"),
        );
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(output.stdout.is_empty(), "nothing on stdout for {bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("ws://IP:PORT") && stderr.contains("stdio"),
            "{stderr}"
        );
    }
}

/// Pings more often than once a second are no keepalive: `1ns` used to be accepted and
/// then cut every connection off at once.
#[test]
fn a_ws_keepalive_under_one_second_exits_2() {
    for bad in ["1ns", "999ms", "0s"] {
        // A server that accepts the value serves until the deadline fails the test.
        let output = output_within(
            exec_server().args(["--ws-keepalive", bad]),
            None,
            Duration::from_secs(10),
            &format!("exec-server --ws-keepalive {bad} (exit 2)"),
        );
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(output.stdout.is_empty(), "nothing on stdout for {bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--ws-keepalive") && stderr.contains("at least 1s"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn an_address_in_use_is_a_runtime_error_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", taken.local_addr().expect("addr"));
    let output = output_within(
        exec_server().args(["--listen", &url]),
        None,
        Duration::from_secs(30),
        &format!("exec-server --listen {url} (address in use)"),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(!output.stderr.is_empty());
}

/// The status line of one request with no extra headers.
async fn status_line(url: &str, method: &str, path: &str, within: Duration) -> String {
    let request = HttpRequest {
        method,
        ..HttpRequest::get(path)
    };
    let head = http_head(url, request, within)
        .await
        .expect("an HTTP response");
    head.text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn readyz_is_200_and_other_paths_404_on_the_websocket_port() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    let within = server.default_wait();
    assert_eq!(
        status_line(&url, "GET", "/readyz", within).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status_line(&url, "GET", "/nope", within).await,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        status_line(&url, "POST", "/readyz", within).await,
        "HTTP/1.1 404 Not Found"
    );
    Ok(())
}

/// Starts a shell with a background `sleep`, sends `signal` to the server process
/// alone, and checks that the server exits (with `code`, if given) and takes both along.
async fn the_tree_dies_with_the_server(
    server: &ExecServer,
    signal: i32,
    code: Option<i32>,
) -> TestResult {
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pids =
        start_reporting_pids(&session, "tree", "sleep 1000 & echo $!; echo $$; wait", 2).await?;
    server.signal(signal)?;
    let status = server.wait_exit().await?;
    if code.is_some() {
        assert_eq!(status.code(), code, "stderr: {}", server.stderr());
    }
    for pid in pids {
        wait_for_process_gone(pid, server.default_wait()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn stdout_holds_exactly_the_url_line_and_sigterm_exits_0_killing_the_tree() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    the_tree_dies_with_the_server(&server, libc::SIGTERM, Some(0)).await?;
    let rest = server.stdout_after_startup_line().await?;
    assert_eq!(rest, "", "nothing after the start-up line");
    Ok(())
}

#[tokio::test]
async fn a_killed_server_leaves_no_orphans_thanks_to_the_watchdog() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    // SIGKILL to the server process only (not its group), as a crash would.
    the_tree_dies_with_the_server(&server, libc::SIGKILL, None).await
}

#[tokio::test]
async fn a_stdio_server_exits_on_sigterm_while_its_client_is_silent() -> TestResult {
    let server = start_server(Transport::Stdio, &[]).await?;
    the_tree_dies_with_the_server(&server, libc::SIGTERM, Some(0)).await
}

#[tokio::test]
async fn stdio_eof_kills_children_and_exits_0() -> TestResult {
    let server = start_server(Transport::Stdio, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pids =
        start_reporting_pids(&session, "tree", "sleep 1000 & echo $!; echo $$; wait", 2).await?;
    conn.disconnect().await?;
    let status = server.wait_exit().await?;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    for pid in pids {
        wait_for_process_gone(pid, server.default_wait()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn stdio_stdout_carries_only_protocol_frames_even_with_logging_on() -> TestResult {
    let server = exec_server_bin()
        .stdio()
        .listen("stdio://")
        .env("RUST_LOG", "trace")
        .start()
        .await?;
    let conn = server.connect().await?;
    let script = [
        json!({"id": 1, "method": "initialize", "params": {"clientName": "t"}}),
        json!({"method": "initialized"}),
        json!({"id": 2, "method": "process/start", "params": {"processId": "p", "argv": ["/bin/echo", "hi"], "cwd": "/", "env": {}}}),
        json!({"id": 3, "method": "process/read", "params": {"processId": "p", "waitMs": 5000, "afterSeq": 1}}),
    ];
    for message in script {
        conn.send_raw(message.to_string()).await?;
    }
    for id in [1, 2, 3] {
        let reply = conn.response(&RequestId::from(id)).await?;
        assert_eq!(reply.message()["jsonrpc"], "2.0", "{}", reply.raw);
    }
    conn.disconnect().await?; // EOF on stdin: the server must exit
    server.wait_exit().await?;
    // Everything else the server wrote to stdout, up to EOF, must be protocol frames.
    let mut events = 0;
    loop {
        match conn.next_event().await {
            Ok(event) => {
                assert_eq!(event.message()["jsonrpc"], "2.0", "{}", event.raw);
                events += 1;
            }
            Err(HarnessError::Disconnected { .. }) => break,
            Err(other) => return Err(other),
        }
    }
    assert!(
        events >= 3,
        "output, exited and closed notifications: {events}"
    );
    assert!(
        conn.invalid_frames().is_empty(),
        "non-protocol stdout lines {:?}",
        conn.invalid_frames()
    );
    // stderr is drained in the background: wait, within the deadline, for the logs.
    let _ = tokio::time::timeout(server.default_wait(), async {
        while server.stderr().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!server.stderr().is_empty(), "trace logs go to stderr");
    Ok(())
}

/// Opens a TCP connection to the server and sends the start of a request head only.
async fn half_sent_request(server: &ExecServer) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let addr = server.url().expect("url").trim_start_matches("ws://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x").await?;
    Ok(stream)
}

#[tokio::test]
async fn a_request_head_must_arrive_within_ten_seconds() -> TestResult {
    use tokio::io::AsyncReadExt as _;
    let server = start_server(Transport::WebSocket, &[]).await?;
    let mut stream = half_sent_request(&server).await?;
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes a half-sent request within the deadline")?;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the 10 s allowance"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_a_half_sent_request() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let _stream = half_sent_request(&server).await?;
    // Let the server see the bytes before the signal: a readiness request on another
    // connection is answered only after the accept loop took ours.
    let head = server.http(HttpRequest::get("/readyz")).await?;
    assert_eq!(head.status, 200);
    server.signal(libc::SIGTERM)?;
    let status = server.wait_exit_within(Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    Ok(())
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_a_peer_that_does_not_read() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    // `yes` fills the socket and the outbound budget; this client never reads them.
    session.start_with(spec("flood", ["yes"])).await?;
    let second = server.connect().await?;
    second.initialize("second").await?;
    let deadline = tokio::time::Instant::now() + server.default_wait();
    while !process_has_backlog(&server) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never filled the socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(libc::SIGTERM)?;
    let status = server.wait_exit_within(Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    Ok(())
}

/// Whether the server's sockets hold unsent bytes (the `Send-Q` of /proc/net/tcp).
fn process_has_backlog(server: &ExecServer) -> bool {
    let port = server
        .url()
        .and_then(|url| url.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .expect("port");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
        let send_queue = fields
            .get(4)
            .and_then(|queues| queues.split_once(':'))
            .and_then(|(tx, _)| u64::from_str_radix(tx, 16).ok());
        local_port == Some(port) && send_queue.is_some_and(|bytes| bytes > 1 << 16)
    })
}
