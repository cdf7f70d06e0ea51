//! The client library against real servers (docs/protocol.md §8): both transports, the
//! stdio child's lifetime, malformed servers, seq ordering, disconnects, reconnect.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::events::{all_events, stdout_of};
use common::proxy::{reconnecting_client, server_behind_proxy};
use common::*;
use exec_client::{
    ClientError, ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, ProcessHandle,
    StartRequest, Stream, WriteStatus,
};
use exec_server_harness::{wait_for_process_gone, ExecServer, Transport};

const WAIT: Duration = Duration::from_secs(10);

fn stdio_server() -> ExecServerTransport {
    ExecServerTransport::StdioCommand {
        program: env!("CARGO_BIN_EXE_exec-server").into(),
        args: vec!["--listen".into(), "stdio".into()],
        env: BTreeMap::new(),
        cwd: None,
    }
}

fn fake_server(script: &str) -> ExecServerTransport {
    ExecServerTransport::StdioCommand {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
    }
}

async fn first_stdout_line(process: &mut ProcessHandle) -> String {
    let mut text = Vec::new();
    while !text.contains(&b'\n') {
        match tokio::time::timeout(WAIT, process.next_event())
            .await
            .expect("output in time")
        {
            Some(ProcessEvent::Output { data, .. }) => text.extend(data),
            other => panic!("expected output, got {other:?}"),
        }
    }
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn typed_calls_work_over_websocket_and_stdio() -> TestResult {
    let ws_server = start_server(Transport::WebSocket, &[]).await?;
    let url = ws_server.url().expect("url").to_owned();
    for transport in [ExecServerTransport::WebSocketUrl(url), stdio_server()] {
        let client = ExecServerClient::connect(transport.clone(), ClientOptions::default())
            .await
            .expect("connect");
        assert!(client.session_id().is_some());
        let mut process = client
            .start(StartRequest::new(["sh", "-c", "echo hi; exit 4"]))
            .await
            .expect("start");
        let events = all_events(&mut process).await;
        assert_eq!(stdout_of(&events), b"hi\n", "{transport:?}");
        let after_closed = tokio::time::timeout(WAIT, process.next_event()).await;
        assert_eq!(
            after_closed.expect("the stream ends"),
            None,
            "nothing after Closed"
        );
        let seqs: Vec<u64> = events
            .iter()
            .map(|event| match event {
                ProcessEvent::Output { seq, .. }
                | ProcessEvent::Exited { seq, .. }
                | ProcessEvent::Closed { seq } => *seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "in seq order"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                ProcessEvent::Exited {
                    exit_code: 4,
                    signal: None,
                    ..
                }
            )),
            "{events:?}"
        );
        let read = client
            .read(process.id(), 0, None, Duration::ZERO)
            .await
            .expect("read");
        assert!(read.closed && read.exit_code == Some(4));

        let mut cat = client
            .start(StartRequest {
                pipe_stdin: true,
                ..StartRequest::new(["cat"])
            })
            .await
            .expect("start cat");
        assert_eq!(
            client.write(cat.id(), b"ping ").await.expect("write"),
            WriteStatus::Accepted
        );
        assert_eq!(
            client.close_stdin(cat.id(), b"pong").await.expect("close"),
            WriteStatus::Accepted
        );
        assert_eq!(stdout_of(&all_events(&mut cat).await), b"ping pong");

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f").to_string_lossy().into_owned();
        client
            .write_file(&file, b"\x00\xffdata")
            .await
            .expect("write file");
        assert_eq!(
            client.read_file(&file).await.expect("read file"),
            b"\x00\xffdata"
        );
        assert!(client.get_metadata(&file).await.expect("metadata").is_file);
        let entries = client
            .read_directory(&dir.path().to_string_lossy())
            .await
            .expect("list");
        assert_eq!(entries.len(), 1);
        assert_eq!(client.join("/a", "b").await.expect("join"), "/a/b");
        assert_eq!(client.parent("/").await.expect("parent"), None);
        assert!(client
            .environment_info()
            .await
            .expect("info")
            .shell
            .path
            .starts_with('/'));
        let error = client
            .read_file("/no/such/file")
            .await
            .expect_err("missing");
        assert!(
            matches!(error, ClientError::Server { code: -32004, .. }),
            "{error}"
        );
        let mut sleeper = client
            .start(StartRequest::new(["sleep", "1000"]))
            .await
            .expect("sleep");
        assert!(client.terminate(sleeper.id()).await.expect("terminate"));
        let events = all_events(&mut sleeper).await;
        assert!(events.iter().any(|e| matches!(e, ProcessEvent::Exited { exit_code: 137, signal: Some(s), .. } if s == "SIGKILL")), "{events:?}");
    }
    Ok(())
}

#[tokio::test]
async fn dropping_a_stdio_client_kills_the_server_and_its_processes() -> TestResult {
    let client = ExecServerClient::connect(stdio_server(), ClientOptions::default())
        .await
        .expect("connect");
    let server_pid = client.child_pid().expect("a stdio client has a child") as i32;
    let mut process = client
        .start(StartRequest::new(["sh", "-c", "echo $$; exec sleep 1000"]))
        .await
        .expect("start");
    let sleeper: i32 = first_stdout_line(&mut process).await.parse().expect("pid");
    assert!(exec_server_harness::process_alive(sleeper));
    drop(process);
    drop(client);
    wait_for_process_gone(server_pid, WAIT).await?;
    wait_for_process_gone(sleeper, WAIT).await?;
    Ok(())
}

/// Runs a fake stdio "server" that records its pid, then says `line` and waits:
/// connect must fail and the fake must be terminated.
async fn a_fake_that_says(line: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo $$ > '{}'; echo '{line}'; exec sleep 1000",
        pid_file.display()
    );
    let outcome = ExecServerClient::connect(fake_server(&script), ClientOptions::default()).await;
    // The error says what the command did instead of speaking the protocol.
    assert!(
        matches!(&outcome, Err(ClientError::Connect(message)) if message.contains("instead of") && message.contains("--listen stdio")),
        "connect must fail: {:?}",
        outcome.err()
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)?
        .trim()
        .parse()
        .expect("pid");
    wait_for_process_gone(pid, WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn a_server_that_prints_garbage_fails_connect_and_is_terminated() -> TestResult {
    a_fake_that_says("not-json").await
}

#[tokio::test]
async fn a_server_that_sends_a_request_is_terminated() -> TestResult {
    a_fake_that_says(r#"{"jsonrpc":"2.0","id":"x","method":"client/doSomething"}"#).await
}

#[tokio::test]
async fn notifications_out_of_order_are_delivered_in_seq_order() {
    let note = |seq: u64, method: &str, extra: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"processId":"p","seq":{seq}{extra}}}}}"#
        )
    };
    let lines = [
        note(2, "process/output", r#","stream":"stdout","chunk":"Yg==""#),
        note(3, "process/exited", r#","exitCode":0"#),
        note(1, "process/output", r#","stream":"stdout","chunk":"YQ==""#),
        r#"{"jsonrpc":"2.0","id":2,"result":{"processId":"p"}}"#.to_owned(),
        note(4, "process/closed", ""),
    ];
    let echoes: String = lines
        .iter()
        .map(|line| format!("echo '{line}'; "))
        .collect();
    let script = format!(
        r#"read a; echo '{{"jsonrpc":"2.0","id":1,"result":{{"sessionId":"s"}}}}'; read b; read c; {echoes} exec sleep 1000"#
    );
    let client = ExecServerClient::connect(fake_server(&script), ClientOptions::default())
        .await
        .expect("connect");
    let mut process = client
        .start(StartRequest {
            process_id: Some("p".into()),
            ..StartRequest::new(["x"])
        })
        .await
        .expect("start");
    let events = all_events(&mut process).await;
    assert_eq!(
        events,
        [
            ProcessEvent::Output {
                seq: 1,
                stream: Stream::Stdout,
                data: b"a".to_vec()
            },
            ProcessEvent::Output {
                seq: 2,
                stream: Stream::Stdout,
                data: b"b".to_vec()
            },
            ProcessEvent::Exited {
                seq: 3,
                exit_code: 0,
                signal: None
            },
            ProcessEvent::Closed { seq: 4 },
        ]
    );
}

#[tokio::test]
async fn a_killed_server_fails_pending_and_later_calls_promptly() -> TestResult {
    for transport in [Transport::WebSocket, Transport::Stdio] {
        let (client, server): (ExecServerClient, Option<ExecServer>) = match transport {
            Transport::WebSocket => {
                let server = start_server(Transport::WebSocket, &[]).await?;
                let url = server.url().expect("url").to_owned();
                (
                    ExecServerClient::connect(
                        ExecServerTransport::WebSocketUrl(url),
                        ClientOptions::default(),
                    )
                    .await
                    .expect("connect"),
                    Some(server),
                )
            }
            Transport::Stdio => (
                ExecServerClient::connect(stdio_server(), ClientOptions::default())
                    .await
                    .expect("connect"),
                None,
            ),
        };
        let mut process = client
            .start(StartRequest::new(["sleep", "1000"]))
            .await
            .expect("start");
        let pending = tokio::spawn({
            let client = client.clone();
            let id = process.id().to_owned();
            async move { client.read(&id, 0, None, Duration::from_secs(60)).await }
        });
        let server_pid = match &server {
            Some(server) => server.pid().expect("pid"),
            None => client.child_pid().expect("child") as i32,
        };
        // SAFETY: SIGKILL to the server process we started.
        unsafe { libc::kill(server_pid, libc::SIGKILL) };
        let outcome = tokio::time::timeout(WAIT, pending)
            .await
            .expect("the pending call ends promptly")
            .expect("task");
        assert!(
            matches!(outcome, Err(ClientError::Disconnected)),
            "{transport:?}: {outcome:?}"
        );
        assert_eq!(
            outcome.err().map(|err| err.to_string()).as_deref(),
            Some("exec-server transport disconnected")
        );
        let later = client.environment_info().await;
        assert!(matches!(later, Err(ClientError::Disconnected)), "{later:?}");
        let events = all_events(&mut process).await;
        assert_eq!(
            events,
            [ProcessEvent::Failed {
                reason: "exec-server transport disconnected".into()
            }]
        );
    }
    Ok(())
}

#[tokio::test]
async fn reconnect_after_a_dropped_websocket_loses_no_output() -> TestResult {
    let (_server, proxy) = server_behind_proxy(&["--session-ttl", "30s"]).await?;
    let client = reconnecting_client(&proxy, WAIT).await;
    let script = "for i in $(seq 1 400); do echo line-$i; sleep 0.002; done";
    let mut process = client
        .start(StartRequest::new(["sh", "-c", script]))
        .await
        .expect("start");
    let mut events = Vec::new();
    // Cut the connection once some output has arrived, while more is still coming.
    while events.len() < 20 {
        let event = tokio::time::timeout(WAIT, process.next_event())
            .await
            .expect("output")
            .expect("event");
        events.push(event);
    }
    proxy.cut();
    events.extend(all_events(&mut process).await);
    let expected: String = (1..=400).map(|i| format!("line-{i}\n")).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ProcessEvent::Lost { .. } | ProcessEvent::Failed { .. })),
        "{:?}",
        events
            .iter()
            .filter(|e| !matches!(e, ProcessEvent::Output { .. }))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        String::from_utf8_lossy(&stdout_of(&events)),
        expected,
        "every byte exactly once"
    );
    assert!(matches!(events.last(), Some(ProcessEvent::Closed { .. })));
    assert!(
        client.environment_info().await.is_ok(),
        "the client works after the reconnect"
    );
    Ok(())
}

#[tokio::test]
async fn wss_urls_go_through_rustls_and_fail_cleanly_against_a_plain_server() -> TestResult {
    // A plain HTTP listener: the TLS handshake must fail with an error, not a panic
    // about a missing crypto provider.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("wss://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let outcome = ExecServerClient::connect(
        ExecServerTransport::WebSocketUrl(url),
        ClientOptions::default(),
    )
    .await;
    assert!(
        matches!(outcome, Err(ClientError::Connect(_))),
        "{:?}",
        outcome.err()
    );
    Ok(())
}

#[tokio::test]
async fn a_duplicate_process_id_is_refused_without_disturbing_the_first() {
    let client = ExecServerClient::connect(stdio_server(), ClientOptions::default())
        .await
        .expect("connect");
    let spec = || StartRequest {
        process_id: Some("p".into()),
        ..StartRequest::new(["sleep", "1000"])
    };
    let mut first = client.start(spec()).await.expect("first start");
    // The client sends the second start: the refusal is the server's (§6.1).
    let second = client.start(spec()).await;
    assert!(
        matches!(&second, Err(ClientError::Server { code: -32600, message, .. }) if message == "process p already exists"),
        "{:?}",
        second.err()
    );
    assert!(client.terminate("p").await.expect("terminate"));
    let events = all_events(&mut first).await;
    assert!(
        matches!(events.last(), Some(ProcessEvent::Closed { .. })),
        "the first still gets its events: {events:?}"
    );
}
