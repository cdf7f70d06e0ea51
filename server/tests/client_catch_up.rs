//! Regression tests of the client's reconnect, found by the soak (`scripts/soak.sh`).
//!
//! 1. A `process/start` issued while the client is reconnecting must not be failed by
//!    the reconnect's catch-up.
//!
//! The client registers a process before sending its start (notifications may beat the
//! response), and after a resume it reads every registered process to fill the gap. A
//! start still waiting for the new connection is registered too, so its catch-up read
//! can reach the server first and get "unknown process id". That process did not exist
//! yet, so nothing was missed; the client used to fail its stream anyway ("cannot catch
//! up after reconnecting"). A scripted websocket server makes the order certain: it
//! answers the read before the start.
//!
//! 2. When the connection of a resume attempt dies before `initialize` is answered, the
//!    client must retry at once. It used to wait out `initialize_timeout` (10 s), by
//!    which time a session with a short TTL (upstream's is 10 s) had expired, and the
//!    client gave up with "unknown session id".

use std::time::Duration;

use exec_server::client::{
    ClientOptions, ExecServerClient, ExecServerTransport, OutputStream, ProcessEvent, StartRequest,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next_request(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame from the client in time")
            .expect("the client keeps the connection")
            .expect("a websocket frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON from the client");
        }
    }
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send to the client");
}

/// Answers `initialize` (and swallows `initialized`).
async fn handshake(socket: &mut Socket) {
    let initialize = next_request(socket).await;
    assert_eq!(initialize["method"], "initialize", "{initialize}");
    let id = initialize["id"].clone();
    send(
        socket,
        json!({"jsonrpc": "2.0", "id": id, "result": {"sessionId": "s-1"}}),
    )
    .await;
    let initialized = next_request(socket).await;
    assert_eq!(initialized["method"], "initialized", "{initialized}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_sent_while_reconnecting_survives_the_catch_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("address"));
    let (reconnecting_tx, reconnecting) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("first connection");
        let mut first = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut first).await;
        // Cut the first connection; the client notices and reconnects.
        drop(first);
        let (tcp, _) = listener.accept().await.expect("the reconnect");
        let _ = reconnecting_tx.send(());
        // Hold the upgrade until the test has issued its start.
        go.await.expect("go");
        let mut second = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let resume = next_request(&mut second).await;
        assert_eq!(resume["params"]["resumeSessionId"], "s-1", "{resume}");
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": resume["id"], "result": {"sessionId": "s-1"}}),
        )
        .await;
        // `initialized`, the catch-up read and the start, in whatever order they come.
        let (mut read, mut start) = (None, None);
        while read.is_none() || start.is_none() {
            let request = next_request(&mut second).await;
            match request["method"].as_str() {
                Some("process/read") => read = Some(request),
                Some("process/start") => start = Some(request),
                _ => {}
            }
        }
        let (read, start) = (read.expect("read"), start.expect("start"));
        assert_eq!(read["params"]["processId"], "late", "{read}");
        // As a real server does when the read is handled before the start.
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": read["id"], "error": {"code": -32600, "message": "unknown process id late"}}),
        )
        .await;
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": start["id"], "result": {"processId": "late"}}),
        )
        .await;
        for (method, extra) in [
            (
                "process/output",
                json!({"stream": "stdout", "chunk": "aGk="}),
            ),
            ("process/exited", json!({"exitCode": 0})),
            ("process/closed", json!({})),
        ] {
            let seq = match method {
                "process/output" => 1,
                "process/exited" => 2,
                _ => 3,
            };
            let mut params = json!({"processId": "late", "seq": seq});
            params
                .as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            send(
                &mut second,
                json!({"jsonrpc": "2.0", "method": method, "params": params}),
            )
            .await;
        }
        // Keep the connection open until the client is done.
        let _ = tokio::time::timeout(WAIT, second.next()).await;
    });

    let options = ClientOptions {
        reconnect: Some(WAIT),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(ExecServerTransport::WebSocketUrl(url), options)
        .await
        .expect("connect");
    tokio::time::timeout(WAIT, reconnecting)
        .await
        .expect("the client reconnects in time")
        .expect("signal");
    // The client is reconnecting: the start registers its process, then waits.
    let request = StartRequest {
        process_id: Some("late".into()),
        ..StartRequest::new(["echo", "hi"])
    };
    let mut start = Box::pin(client.start(request));
    assert!(
        futures_util::poll!(&mut start).is_pending(),
        "the start waits for the connection"
    );
    go_tx.send(()).expect("go");
    let mut process = tokio::time::timeout(WAIT, start)
        .await
        .expect("start answered in time")
        .expect("started");
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, process.next_event())
        .await
        .expect("events in time")
    {
        events.push(event);
    }
    assert_eq!(
        events,
        [
            ProcessEvent::Output {
                seq: 1,
                stream: OutputStream::Stdout,
                data: b"hi".to_vec()
            },
            ProcessEvent::Exited {
                seq: 2,
                exit_code: 0,
                signal: None
            },
            ProcessEvent::Closed { seq: 3 },
        ]
    );
    drop(client);
    server.await.expect("the scripted server finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_whose_connection_dies_is_retried_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("address"));
    let (reconnecting_tx, reconnecting) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("first connection");
        let mut first = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut first).await;
        drop(first);
        // The resume attempt: its connection dies before the answer.
        let (tcp, _) = listener.accept().await.expect("the reconnect");
        let _ = reconnecting_tx.send(());
        let mut second = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let resume = next_request(&mut second).await;
        assert_eq!(resume["params"]["resumeSessionId"], "s-1", "{resume}");
        drop(second);
        // The next attempt must come long before the 60 s initialize timeout.
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("a new resume attempt at once, not after initialize_timeout")
            .expect("accept");
        let mut third = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let resume = next_request(&mut third).await;
        assert_eq!(resume["params"]["resumeSessionId"], "s-1", "{resume}");
        send(
            &mut third,
            json!({"jsonrpc": "2.0", "id": resume["id"], "result": {"sessionId": "s-1"}}),
        )
        .await;
        loop {
            let request = next_request(&mut third).await;
            if request["method"] == "environment/info" {
                let result = json!({"shell": {"name": "sh", "path": "/bin/sh"}});
                send(
                    &mut third,
                    json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
                )
                .await;
                break;
            }
        }
        let _ = tokio::time::timeout(WAIT, third.next()).await;
    });

    let options = ClientOptions {
        reconnect: Some(WAIT * 6),
        initialize_timeout: WAIT * 6,
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(ExecServerTransport::WebSocketUrl(url), options)
        .await
        .expect("connect");
    tokio::time::timeout(WAIT, reconnecting)
        .await
        .expect("the client reconnects in time")
        .expect("signal");
    // Sent once the client knows it is reconnecting: it waits for the resume.
    let info = tokio::time::timeout(WAIT * 2, client.environment_info())
        .await
        .expect("answered after the resume, within the deadline")
        .expect("environment/info");
    assert_eq!(info.shell.path, "/bin/sh");
    drop(client);
    server.await.expect("the scripted server finished");
}
