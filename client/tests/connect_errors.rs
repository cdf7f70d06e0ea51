//! `ClientError::Connect` says what failed and what to do, for the library's users as
//! for `exec-server exec`, which prints it.

use std::collections::BTreeMap;
use std::time::Duration;

use exec_client::{ClientError, ClientOptions, ExecServerClient, ExecServerTransport};

fn sh(script: &str) -> ExecServerTransport {
    ExecServerTransport::StdioCommand {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
    }
}

async fn connect_error(transport: ExecServerTransport, options: ClientOptions) -> String {
    match ExecServerClient::connect(transport, options).await {
        Err(ClientError::Connect(message)) => message,
        Err(other) => panic!("expected Connect, got {other:?}"),
        Ok(_) => panic!("connected"),
    }
}

#[tokio::test]
async fn nothing_listening_suggests_starting_a_server() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let message = connect_error(
        ExecServerTransport::WebSocketUrl(url.clone()),
        ClientOptions::default(),
    )
    .await;
    assert_eq!(
        message,
        format!(
            "no exec-server is listening at {url} (connection refused); start one with `exec-server --listen {url}`"
        )
    );
}

#[tokio::test]
async fn a_stdio_command_that_exits_shows_its_stderr() {
    let message = connect_error(
        sh("echo 'ssh: Could not resolve hostname x.invalid' >&2; echo second >&2; exit 255"),
        ClientOptions::default(),
    )
    .await;
    assert!(
        message.contains("it exited (or closed its stdin or stdout) before the handshake; its stderr:\n    ssh: Could not resolve hostname x.invalid\n    second\n  hint: "),
        "{message}"
    );
    assert!(message.contains("exec-server --listen stdio"), "{message}");
}

#[tokio::test]
async fn a_silent_stdio_command_times_out_with_its_stderr() {
    let options = ClientOptions {
        initialize_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let message = connect_error(sh("echo waiting >&2; exec sleep 1000"), options).await;
    assert!(
        message.contains("did not answer the handshake (`initialize`) within 300ms")
            && message.contains("\n    waiting\n"),
        "{message}"
    );
}

#[tokio::test]
async fn a_long_stderr_line_is_cut() {
    let message = connect_error(
        sh("printf '%0500d\\n' 0 >&2; exit 1"),
        ClientOptions::default(),
    )
    .await;
    let line = message
        .lines()
        .find(|line| line.trim_start().starts_with("000"))
        .expect("the stderr line");
    assert_eq!(line.trim_start().chars().count(), 301, "{line}");
    assert!(line.ends_with('…'), "{line}");
}
