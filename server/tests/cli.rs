//! The binary's command line, start-up line, HTTP routes and shutdown (PROTOCOL.md §1–§2).

mod common;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn exec_server() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_exec-server"))
}

#[test]
fn help_lists_the_listen_option() {
    let output = exec_server().arg("--help").output().expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--listen"), "{help}");
    assert!(help.contains("--output-retention"), "{help}");
}

#[test]
fn bad_listen_urls_exit_2_naming_the_accepted_forms() {
    for bad in ["ws://localhost:1", "http://127.0.0.1:0", "tcp://1.2.3.4:5"] {
        let output = exec_server().args(["--listen", bad]).output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(output.stdout.is_empty(), "nothing on stdout for {bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("ws://IP:PORT") && stderr.contains("stdio"),
            "{stderr}"
        );
    }
}

#[test]
fn an_address_in_use_is_a_runtime_error_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", taken.local_addr().expect("addr"));
    let output = exec_server()
        .args(["--listen", &url])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(!output.stderr.is_empty());
}

async fn http_get(url: &str, path: &str) -> String {
    http_request(url, "GET", path).await
}

/// Sends one HTTP/1.1 request and returns the status line.
async fn http_request(url: &str, method: &str, path: &str) -> String {
    let addr = url.trim_start_matches("ws://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .expect("response within deadline")
        .expect("read");
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn readyz_is_200_and_other_paths_404_on_the_websocket_port() {
    let server = TestServer::start(Transport::Ws, &[]).await;
    let url = server.url.clone().expect("url");
    assert_eq!(http_get(&url, "/readyz").await, "HTTP/1.1 200 OK");
    assert_eq!(http_get(&url, "/nope").await, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http_request(&url, "POST", "/readyz").await,
        "HTTP/1.1 404 Not Found"
    );
}

#[tokio::test]
async fn stdout_holds_exactly_the_url_line_and_sigterm_exits_0_killing_the_tree() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "tree",
        "sleep 1000 & echo $!; echo $$; wait",
        2,
    )
    .await;
    // SAFETY: signalling the server we started.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    for pid in pids {
        assert_pid_gone(pid).await;
    }
    assert_eq!(
        server.rest_of_stdout().await,
        "",
        "nothing after the start-up line"
    );
}

#[tokio::test]
async fn a_killed_server_leaves_no_orphans_thanks_to_the_watchdog() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "tree",
        "sleep 1000 & echo $!; echo $$; wait",
        2,
    )
    .await;
    // SAFETY: SIGKILL to the server process only (not its group), as a crash would.
    unsafe { libc::kill(server.pid(), libc::SIGKILL) };
    server.wait_exit().await;
    for pid in pids {
        assert_pid_gone(pid).await;
    }
}

#[tokio::test]
async fn a_stdio_server_exits_on_sigterm_while_its_client_is_silent() {
    let mut server = TestServer::start(Transport::Stdio, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "tree",
        "sleep 1000 & echo $!; echo $$; wait",
        2,
    )
    .await;
    // SAFETY: signalling the server we started.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    for pid in pids {
        assert_pid_gone(pid).await;
    }
}

#[tokio::test]
async fn stdio_eof_kills_children_and_exits_0() {
    let mut server = TestServer::start(Transport::Stdio, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "tree",
        "sleep 1000 & echo $!; echo $$; wait",
        2,
    )
    .await;
    client.close().await;
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    for pid in pids {
        assert_pid_gone(pid).await;
    }
}

#[tokio::test]
async fn stdio_stdout_carries_only_protocol_frames_even_with_logging_on() {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_exec-server"));
    command
        .args(["--listen", "stdio://"])
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn");
    let mut stdin = Some(child.stdin.take().expect("stdin"));
    let script = [
        json!({"id": 1, "method": "initialize", "params": {"clientName": "t"}}),
        json!({"method": "initialized"}),
        json!({"id": 2, "method": "process/start", "params": {"processId": "p", "argv": ["/bin/echo", "hi"], "cwd": "/", "env": {}}}),
        json!({"id": 3, "method": "process/read", "params": {"processId": "p", "waitMs": 5000, "afterSeq": 1}}),
    ];
    for message in script {
        let pipe = stdin.as_mut().expect("stdin open");
        pipe.write_all(format!("{message}\n").as_bytes())
            .await
            .expect("write");
    }
    let output = tokio::time::timeout(DEADLINE, async {
        // Wait for the read's reply before closing stdin, then collect everything.
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
                .await
                .expect("read")
                == 0
            {
                break;
            }
            let done = line.contains("\"id\":3");
            lines.push(line);
            if done {
                stdin.take(); // EOF: the server must exit
            }
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await
            .expect("stderr");
        (lines, stderr)
    })
    .await
    .expect("server finishes within deadline");
    let (lines, stderr) = output;
    assert!(lines.len() >= 4, "{lines:?}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("non-protocol stdout line {line:?}"));
        assert_eq!(value["jsonrpc"], "2.0", "{line}");
    }
    assert!(!stderr.is_empty(), "trace logs go to stderr");
}
