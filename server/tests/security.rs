//! Who may connect and how much one client may take (docs/protocol.md §1, §2 "Security",
//! §3 caps and `-32005`, §9), on the real binary: the bearer token, the `Origin` and
//! `Host` rules, the refusal to serve the network without a token, and each limit
//! reached while another client keeps working.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::*;
use exec_client::BearerToken;
use exec_client::{ClientError, ClientOptions, ExecServerClient, ExecServerTransport};
use exec_server_harness::{http_head, Connection, ExecServer, HttpRequest};
use serde_json::{json, Value};

const TOKEN: &str = "tok-5b7f0c0e9d2a41f1";
/// Deadline of the waits this file does itself (the harness has its own).
const WAIT: Duration = Duration::from_secs(10);

/// The binary, killed if it runs past the deadline (a refusal that regressed into
/// serving must fail the test, not hang it).
fn exec_server() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_exec-server"));
    command.timeout(WAIT);
    command
}

fn token_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("token file");
    file.write_all(content.as_bytes()).expect("write token");
    file
}

/// `ws://IP:PORT` → `IP:PORT`.
fn authority(server: &ExecServer) -> String {
    server
        .url()
        .expect("a websocket server")
        .trim_start_matches("ws://")
        .to_owned()
}

const UPGRADE: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The status of a websocket upgrade to `server` with `Host` set to its own address.
async fn upgrade_status(server: &ExecServer, extra: &[(&str, &str)]) -> u16 {
    let addr = authority(server);
    upgrade_status_as(server, &addr, extra).await
}

async fn upgrade_status_as(server: &ExecServer, host: &str, extra: &[(&str, &str)]) -> u16 {
    let headers: Vec<(&str, &str)> = UPGRADE
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    let request = HttpRequest {
        method: "GET",
        target: "/",
        host: Some(host),
        headers: &headers,
    };
    http_head(url(server), request, WAIT)
        .await
        .expect("an HTTP response")
        .status
}

async fn readyz_status(server: &ExecServer, host: &str) -> u16 {
    let request = HttpRequest {
        host: Some(host),
        ..HttpRequest::get("/readyz")
    };
    http_head(url(server), request, WAIT)
        .await
        .expect("an HTTP response")
        .status
}

fn url(server: &ExecServer) -> &str {
    server.url().expect("a websocket server")
}

/// Starts `echo hi` in a fresh session on `server` and checks its output.
async fn runs_a_command(conn: &Connection, client_name: &str) -> TestResult {
    let session = conn.initialize(client_name).await?;
    let id = session.start_with(spec("echo", ["echo", "hi"])).await?;
    let output = session.read_to_end(&id).await?;
    assert_eq!(output.stdout_text(), "hi\n");
    Ok(())
}

#[tokio::test]
async fn every_upgrade_must_carry_the_token() -> TestResult {
    let server = exec_server_bin().auth_token(TOKEN).start().await?;
    let conn = server.connect().await?;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(upgrade_status(&server, &[]).await, 401, "no token");
    let wrong = format!("Bearer {TOKEN}x");
    assert_eq!(
        upgrade_status(&server, &[("Authorization", &wrong)]).await,
        401,
        "wrong token"
    );
    assert_eq!(
        upgrade_status(&server, &[("Authorization", &format!("Basic {TOKEN}"))]).await,
        401,
        "not a bearer credential"
    );
    assert_eq!(
        upgrade_status(&server, &[("Authorization", &bearer)]).await,
        101,
        "right token"
    );
    let upgrade = HttpRequest {
        headers: &UPGRADE,
        ..HttpRequest::get("/")
    };
    let head = http_head(url(&server), upgrade, WAIT).await?;
    assert_eq!(head.status, 401);
    assert!(
        head.text
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        head.text
    );
    assert_eq!(
        readyz_status(&server, &authority(&server)).await,
        200,
        "/readyz needs no token"
    );
    // The harness connected with the token; the session says a token is required.
    let session = conn.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["auth"]["token"],
        true
    );
    runs_a_command(&server.connect().await?, "second").await
}

#[tokio::test]
async fn the_client_library_sends_the_token_and_explains_a_refusal() -> TestResult {
    let server = exec_server_bin().auth_token(TOKEN).start().await?;
    let transport = ExecServerTransport::WebSocketUrl(server.url().expect("url").to_owned());
    let refused = ExecServerClient::connect(transport.clone(), ClientOptions::default()).await;
    match refused {
        Err(ClientError::Connect(message)) => {
            assert!(
                message.contains("401") && message.contains("--auth-token-file"),
                "{message}"
            )
        }
        other => panic!("expected a refused connection, got {:?}", other.map(|_| ())),
    }
    let options = ClientOptions {
        bearer_token: Some(BearerToken::new(TOKEN).expect("token")),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(transport, options)
        .await
        .expect("connect with the token");
    let info = client.environment_info().await.expect("environment/info");
    assert!(!info.shell.path.is_empty(), "{info:?}");
    Ok(())
}

#[tokio::test]
async fn the_token_never_reaches_the_logs() -> TestResult {
    let server = exec_server_bin()
        .auth_token(TOKEN)
        .env("RUST_LOG", "trace")
        .start()
        .await?;
    let conn = server.connect().await?;
    let wrong = format!("Bearer {TOKEN}-but-longer");
    assert_eq!(
        upgrade_status(&server, &[("Authorization", &wrong)]).await,
        401
    );
    runs_a_command(&conn, CLIENT).await?;
    once_refusal_is_logged(&server, |stderr| {
        assert!(
            stderr.contains("TRACE") || stderr.contains("DEBUG"),
            "trace logging is on: {stderr}"
        );
        assert!(!stderr.contains(TOKEN), "the token leaked into the log");
    })
    .await
}

/// Waits (within the deadline) until the server's stderr holds the refusal log, then
/// hands it to `check`.
async fn once_refusal_is_logged(server: &ExecServer, check: impl FnOnce(&str)) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.stderr().contains("upgrade refused") {
        if tokio::time::Instant::now() > deadline {
            panic!("no refusal in the log: {}", server.stderr());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check(&server.stderr());
    Ok(())
}

#[test]
fn the_token_stays_out_of_help_and_errors() {
    let file = token_file(TOKEN);
    let help = exec_server()
        .arg("--help")
        .env("EXEC_SERVER_AUTH_TOKEN_FILE", file.path())
        .output()
        .expect("--help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--auth-token-file"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    // `exec` reads the token itself from the environment: clap must not show it.
    let help = exec_server()
        .args(["exec", "--help"])
        .env("EXEC_SERVER_TOKEN", TOKEN)
        .output()
        .expect("exec --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--token-file") && text.contains("EXEC_SERVER_TOKEN"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    // A token that cannot be sent is refused without quoting it.
    let unsendable = token_file(&format!("{TOKEN} with spaces\n"));
    let output = exec_server()
        .arg("--auth-token-file")
        .arg(unsendable.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--auth-token-file") && !stderr.contains(TOKEN),
        "{stderr}"
    );
}

#[test]
fn an_empty_or_missing_token_file_refuses_to_start() {
    for content in ["", "\n"] {
        let file = token_file(content);
        let output = exec_server()
            .arg("--auth-token-file")
            .arg(file.path())
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{content:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--auth-token-file") && stderr.contains("empty"),
            "{stderr}"
        );
    }
    let output = exec_server()
        .args(["--auth-token-file", "/nonexistent/token"])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a file that cannot be read is a runtime failure"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
}

#[test]
fn a_network_address_without_a_token_is_refused() {
    for listen in ["ws://0.0.0.0:0", "ws://[::]:0"] {
        let output = exec_server()
            .args(["--listen", listen])
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{listen}");
        assert!(output.stdout.is_empty(), "no URL is printed for {listen}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--auth-token-file") && stderr.contains("--insecure-no-auth"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_network_address_is_served_with_a_token_or_when_insecure_is_explicit() -> TestResult {
    let with_token = exec_server_bin()
        .listen("ws://0.0.0.0:0")
        .auth_token(TOKEN)
        .start()
        .await?;
    assert_eq!(upgrade_status(&with_token, &[]).await, 401);
    runs_a_command(&with_token.connect().await?, CLIENT).await?;
    let insecure = exec_server_bin()
        .listen("ws://0.0.0.0:0")
        .arg("--insecure-no-auth")
        .start()
        .await?;
    // Not a loopback bind: any Host is fine; Origin still is not.
    assert_eq!(
        upgrade_status_as(&insecure, "exec.example:1", &[]).await,
        101
    );
    assert_eq!(
        upgrade_status(&insecure, &[("Origin", "https://evil.example")]).await,
        403
    );
    runs_a_command(&insecure.connect().await?, CLIENT).await
}

#[tokio::test]
async fn web_pages_are_refused_unless_their_origin_is_listed() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--allow-origin", "https://ide.example"],
    )
    .await?;
    let conn = server.connect().await?;
    assert_eq!(
        upgrade_status(&server, &[("Origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(upgrade_status(&server, &[("Origin", "null")]).await, 403);
    assert_eq!(
        upgrade_status(&server, &[("Origin", "https://ide.example")]).await,
        101
    );
    assert_eq!(
        upgrade_status(&server, &[]).await,
        101,
        "native clients send no Origin"
    );
    runs_a_command(&conn, CLIENT).await
}

#[tokio::test]
async fn a_loopback_server_refuses_foreign_host_names() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--allow-host", "dev.internal"],
    )
    .await?;
    let conn = server.connect().await?;
    let port = authority(&server)
        .rsplit_once(':')
        .expect("port")
        .1
        .to_owned();
    assert_eq!(
        upgrade_status_as(&server, &format!("evil.example:{port}"), &[]).await,
        403,
        "DNS rebinding"
    );
    assert_eq!(
        upgrade_status_as(&server, &format!("localhost:{port}"), &[]).await,
        101
    );
    assert_eq!(
        upgrade_status_as(&server, &format!("[::1]:{port}"), &[]).await,
        101
    );
    assert_eq!(
        upgrade_status_as(&server, &format!("dev.internal:{port}"), &[]).await,
        101
    );
    assert_eq!(upgrade_status_as(&server, "dev.internal", &[]).await, 101);
    assert_eq!(
        readyz_status(&server, "evil.example").await,
        200,
        "/readyz has no Host rule"
    );
    runs_a_command(&conn, CLIENT).await
}

#[tokio::test]
async fn a_connection_over_the_limit_gets_503_and_the_others_keep_working() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--max-connections", "2"],
    )
    .await?;
    let conn = server.connect().await?;
    let second = server.connect().await?;
    assert_eq!(upgrade_status(&server, &[]).await, 503);
    runs_a_command(&conn, CLIENT).await?;
    runs_a_command(&second, "second").await?;
    // A closed connection frees its place (noticed asynchronously: poll, with a deadline).
    second.disconnect().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while upgrade_status(&server, &[]).await != 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn assert_limit(failure: &exec_server_harness::RpcFailure, limit: &str, value: u64) {
    assert_eq!(failure.code, -32005, "{failure}");
    assert_eq!(
        failure.data,
        Some(json!({"limit": limit, "value": value})),
        "{failure}"
    );
    let flag = match limit {
        "maxSessions" => "--max-sessions",
        _ => "--max-processes",
    };
    assert!(
        failure.message.contains(flag),
        "the message names the flag: {failure}"
    );
}

#[tokio::test]
async fn sessions_over_the_limit_are_refused_and_the_others_keep_working() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--max-sessions", "2"],
    )
    .await?;
    let conn = server.connect().await?;
    let first = conn.initialize("first").await?;
    let second = server.connect().await?;
    second.initialize("second").await?;
    let third = server.connect().await?;
    let refused = third
        .request("initialize", json!({"clientName": "third"}))
        .error()
        .await?;
    assert_limit(&refused, "maxSessions", 2);
    let id = first.start_with(spec("echo", ["echo", "hi"])).await?;
    assert_eq!(first.read_to_end(&id).await?.stdout_text(), "hi\n");
    Ok(())
}

#[tokio::test]
async fn processes_over_the_limit_are_refused_in_that_session_only() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--max-processes", "2"],
    )
    .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["limits"]["maxProcesses"],
        2
    );
    for id in ["a", "b"] {
        session.start_with(spec(id, ["sleep", "30"])).await?;
    }
    let refused = conn
        .request(
            "process/start",
            json!({"processId": "c", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .error()
        .await?;
    assert_limit(&refused, "maxProcesses", 2);
    runs_a_command(&server.connect().await?, "other-session").await?;
    for id in ["a", "b"] {
        session.terminate(id).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_retention_budget_drops_the_largest_retainers_oldest_output() -> TestResult {
    let server = start_server(
        exec_server_harness::Transport::WebSocket,
        &["--max-retained-bytes", "256KiB"],
    )
    .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["limits"]["maxRetainedBytes"],
        256 * 1024
    );
    let small = session.start_with(spec("small", ["echo", "small"])).await?;
    conn.notified_output_within("small", WAIT).await?;
    let big = session
        .start_with(spec("big", ["head", "-c", "1048576", "/dev/zero"]))
        .await?;
    conn.notified_output_within("big", WAIT).await?;
    let read = |id: String| {
        let conn = conn.clone();
        async move {
            conn.request("process/read", json!({"processId": id, "afterSeq": 0}))
                .result()
                .await
        }
    };
    let small_read = read(small.to_string()).await?;
    assert_eq!(
        small_read["firstRetainedSeq"], 1,
        "the small retainer keeps everything"
    );
    assert_eq!(unb64(&small_read["chunks"][0]["chunk"]), b"small\n");
    let big_read = read(big.to_string()).await?;
    let retained: usize = retained_bytes(&big_read);
    assert!(
        retained <= 256 * 1024,
        "{retained} bytes retained over a 256 KiB budget"
    );
    assert!(retained > 0, "the newest output is kept");
    let first_retained = big_read["firstRetainedSeq"]
        .as_u64()
        .expect("firstRetainedSeq");
    assert!(first_retained > 1, "the loss is reported: {first_retained}");
    assert_eq!(big_read["chunks"][0]["seq"].as_u64(), Some(first_retained));
    Ok(())
}

fn retained_bytes(read: &Value) -> usize {
    read["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|chunk| unb64(&chunk["chunk"]).len())
        .sum()
}

#[tokio::test]
async fn ids_and_client_names_over_256_bytes_are_invalid_params() -> TestResult {
    let server = start_server(exec_server_harness::Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let long = "n".repeat(257);
    let refused = conn
        .request("initialize", json!({"clientName": long}))
        .error()
        .await?;
    assert_eq!(refused.code, -32602, "{refused}");
    assert!(refused.message.contains("clientName"), "{refused}");
    let session = conn.initialize(&"n".repeat(256)).await?;
    let refused = conn
        .request(
            "process/start",
            json!({"processId": long, "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .error()
        .await?;
    assert_eq!(refused.code, -32602, "{refused}");
    assert!(refused.message.contains("processId"), "{refused}");
    let refused = conn
        .request("process/read", json!({"processId": long}))
        .error()
        .await?;
    assert_eq!(refused.code, -32602, "{refused}");
    let id = session.start_with(spec(&"p".repeat(256), ["true"])).await?;
    session.read_to_end(&id).await?;
    Ok(())
}

#[tokio::test]
async fn the_defaults_let_a_thousand_processes_run_in_one_session() -> TestResult {
    const PROCESSES: usize = 1000;
    // Started under the common soft limit of 1024 descriptors, which 1000 processes'
    // pipes exceed: the server must raise it to the hard limit itself.
    let server = ExecServer::builder()
        .command([
            "sh",
            "-c",
            r#"ulimit -Sn 1024 && exec "$0" "$@""#,
            env!("CARGO_BIN_EXE_exec-server"),
        ])
        .start()
        .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let limits = &session.initialize_json()["capabilities"]["limits"];
    assert_eq!(
        *limits,
        json!({"maxConnections": 1024, "maxSessions": 16384, "maxProcesses": 4096, "maxRetainedBytes": 1073741824u64, "maxOpenHandles": 256})
    );
    let mut requests = Vec::with_capacity(PROCESSES);
    for n in 0..PROCESSES {
        let params =
            json!({"processId": format!("p{n}"), "argv": ["sleep", "60"], "cwd": "/", "env": {}});
        requests.push(conn.send_request("process/start", params).await?);
    }
    for id in &requests {
        let response = conn.response_within(id, WAIT * 6).await?;
        response.into_result()?;
    }
    // The server raised its own limit; its children get the one it was started with.
    let limit = session
        .start_with(spec("limit", ["sh", "-c", "ulimit -Sn"]))
        .await?;
    assert_eq!(session.read_to_end(&limit).await?.stdout_text(), "1024\n");
    let mut terminations = Vec::with_capacity(PROCESSES);
    for n in 0..PROCESSES {
        terminations.push(
            conn.send_request("process/terminate", json!({"processId": format!("p{n}")}))
                .await?,
        );
    }
    for id in &terminations {
        let running = conn.response_within(id, WAIT * 6).await?.into_result()?;
        assert_eq!(running["running"], true);
    }
    Ok(())
}
