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
//!
//! 3. The same race the other way round: the server handles the catch-up read before
//!    the start (so "unknown process id"), but the client sees the start answered before
//!    it looks at the read's error. Whether the process can have been missed depends on
//!    whether its start was answered when the read was *sent*, not when its error came
//!    back; the client looked at the latter and failed the stream.
//!
//! 4. Exit and close events missed at a disconnect are rebuilt from the catch-up read.
//!    A server without `exitedSeq`/`closedSeq` leaves the client to infer their seqs
//!    from the gaps; it took the last gap for the close even when the close had already
//!    arrived live on the new connection, so it ended the stream at the exit's seq and
//!    dropped the output after it (the soak saw "got 2712 bytes, expected 5424").
//!
//! 5. With `exitedSeq`/`closedSeq` in the read result the client uses them: an exit
//!    whose seq lies in a range retention dropped is still delivered, not reported lost.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use exec_client::{
    ClientOptions, ExecServerClient, ExecServerTransport, ProcessEvent, ProcessHandle,
    StartRequest, Stream,
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
    let mut process = start_late_while_reconnecting(&client, go_tx).await;
    assert_eq!(
        all_events(&mut process).await,
        [
            stdout(1, "hi"),
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

/// Every event of `process` until its stream ends, within `WAIT`.
/// Starts `late` (`echo hi`) while the client reconnects: the start waits for the
/// connection, which the scripted server grants once `go` is sent.
async fn start_late_while_reconnecting(
    client: &ExecServerClient,
    go: tokio::sync::oneshot::Sender<()>,
) -> ProcessHandle {
    let request = StartRequest {
        process_id: Some("late".into()),
        ..StartRequest::new(["echo", "hi"])
    };
    let mut start = Box::pin(client.start(request));
    assert!(
        futures_util::poll!(&mut start).is_pending(),
        "the start waits for the connection"
    );
    go.send(()).expect("go");
    tokio::time::timeout(WAIT, start)
        .await
        .expect("start answered in time")
        .expect("started")
}

async fn all_events(process: &mut ProcessHandle) -> Vec<ProcessEvent> {
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, process.next_event())
        .await
        .expect("events in time")
    {
        events.push(event);
    }
    events
}

fn stdout(seq: u64, data: &str) -> ProcessEvent {
    ProcessEvent::Output {
        seq,
        stream: Stream::Stdout,
        data: data.as_bytes().to_vec(),
    }
}

fn notification(method: &str, process_id: &str, seq: u64) -> Value {
    let mut params = json!({"processId": process_id, "seq": seq});
    match method {
        "process/exited" => params["exitCode"] = json!(0),
        "process/closed" => {}
        _ => unreachable!("only exit and close are sent bare"),
    }
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

fn output(process_id: &str, seq: u64, data: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "process/output", "params": {
        "processId": process_id, "seq": seq, "stream": "stdout", "chunk": BASE64.encode(data),
    }})
}

/// What a scripted server holds for one process; it answers `process/read` from this
/// as a real server does (docs/protocol.md §6.3).
struct Retained {
    /// The chunks still retained, in seq order.
    chunks: Vec<(u64, &'static str)>,
    first_retained_seq: u64,
    exit: (u64, i32),
    closed_seq: u64,
    /// Whether results carry `exitedSeq` and `closedSeq` (older servers do not).
    event_seqs: bool,
}

impl Retained {
    fn read_result(&self, after_seq: u64) -> Value {
        let chunks: Vec<Value> = self
            .chunks
            .iter()
            .filter(|(seq, _)| *seq > after_seq)
            .map(
                |(seq, data)| json!({"seq": seq, "stream": "stdout", "chunk": BASE64.encode(data)}),
            )
            .collect();
        let next_seq = chunks.last().map_or(self.closed_seq + 1, |chunk| {
            chunk["seq"].as_u64().expect("seq") + 1
        });
        let mut result = json!({
            "chunks": chunks, "nextSeq": next_seq, "exited": true, "exitCode": self.exit.1,
            "closed": true, "failure": null, "firstRetainedSeq": self.first_retained_seq,
        });
        if self.event_seqs {
            result["exitedSeq"] = json!(self.exit.0);
            result["closedSeq"] = json!(self.closed_seq);
        }
        result
    }
}

/// Answers every `process/read` of `process_id` from `retained` until the client closes
/// the connection.
async fn serve_reads(socket: &mut Socket, process_id: &str, retained: &Retained) {
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, socket.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        let request: Value = serde_json::from_str(text.as_str()).expect("JSON from the client");
        if request["method"] != "process/read" {
            continue;
        }
        assert_eq!(request["params"]["processId"], process_id, "{request}");
        let after_seq = request["params"]["afterSeq"].as_u64().expect("afterSeq");
        let result = retained.read_result(after_seq);
        send(
            socket,
            json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
        )
        .await;
    }
}

/// Starts `p` on a scripted server, which sends `first` (output seq 1) and cuts the
/// connection; on the resume, `on_resume` runs once `initialized` arrived, then reads are
/// answered from `retained`. Returns every event of `p`.
async fn catch_up_after_a_cut<F>(on_resume: F, retained: Retained) -> Vec<ProcessEvent>
where
    F: for<'a> FnOnce(&'a mut Socket) -> futures_util::future::BoxFuture<'a, ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("first connection");
        let mut first = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut first).await;
        let start = next_request(&mut first).await;
        assert_eq!(start["method"], "process/start", "{start}");
        send(
            &mut first,
            json!({"jsonrpc": "2.0", "id": start["id"], "result": {"processId": "p"}}),
        )
        .await;
        send(&mut first, output("p", 1, "a")).await;
        drop(first);
        let (tcp, _) = listener.accept().await.expect("the reconnect");
        let mut second = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut second).await;
        on_resume(&mut second).await;
        serve_reads(&mut second, "p", &retained).await;
    });
    let options = ClientOptions {
        reconnect: Some(WAIT),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(ExecServerTransport::WebSocketUrl(url), options)
        .await
        .expect("connect");
    let request = StartRequest {
        process_id: Some("p".into()),
        ..StartRequest::new(["scripted"])
    };
    let mut process = client.start(request).await.expect("started");
    let events = all_events(&mut process).await;
    drop(client);
    server.await.expect("the scripted server finished");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_answered_before_the_catch_up_sees_its_read_fail_survives() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("address"));
    let (reconnecting_tx, reconnecting) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("first connection");
        let mut first = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut first).await;
        let start = next_request(&mut first).await;
        assert_eq!(start["params"]["processId"], "other", "{start}");
        send(
            &mut first,
            json!({"jsonrpc": "2.0", "id": start["id"], "result": {"processId": "other"}}),
        )
        .await;
        drop(first);
        let (tcp, _) = listener.accept().await.expect("the reconnect");
        let _ = reconnecting_tx.send(());
        go.await.expect("go");
        let mut second = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        handshake(&mut second).await;
        // The catch-up reads in process id order: "late" before "other".
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
        // The read was handled first (the process did not exist yet); the answers go
        // out in the other order, and the client takes in the start's before the read's.
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": start["id"], "result": {"processId": "late"}}),
        )
        .await;
        started.await.expect("the start returned");
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": read["id"], "error": {"code": -32600, "message": "unknown process id late"}}),
        )
        .await;
        // Reading "other" means the catch-up is done with "late": only now does the
        // process produce its events.
        let read = next_request(&mut second).await;
        assert_eq!(read["params"]["processId"], "other", "{read}");
        let running = json!({"chunks": [], "nextSeq": 1, "exited": false, "exitCode": null,
            "closed": false, "failure": null, "firstRetainedSeq": 1});
        send(
            &mut second,
            json!({"jsonrpc": "2.0", "id": read["id"], "result": running}),
        )
        .await;
        send(&mut second, output("late", 1, "hi")).await;
        send(&mut second, notification("process/exited", "late", 2)).await;
        send(&mut second, notification("process/closed", "late", 3)).await;
        let _ = tokio::time::timeout(WAIT, second.next()).await;
    });

    let options = ClientOptions {
        reconnect: Some(WAIT),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(ExecServerTransport::WebSocketUrl(url), options)
        .await
        .expect("connect");
    let other = StartRequest {
        process_id: Some("other".into()),
        ..StartRequest::new(["sleep", "1000"])
    };
    let _other = client.start(other).await.expect("other started");
    tokio::time::timeout(WAIT, reconnecting)
        .await
        .expect("the client reconnects in time")
        .expect("signal");
    let mut process = start_late_while_reconnecting(&client, go_tx).await;
    started_tx.send(()).expect("started");
    assert_eq!(
        all_events(&mut process).await,
        [
            stdout(1, "hi"),
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
async fn a_close_that_arrived_live_is_not_rebuilt_at_the_lost_exits_seq() {
    // Seq 2, the exit, was lost in the cut; output 3 (from a grandchild) and the close
    // arrive live on the new connection before the catch-up read's answer.
    let events = catch_up_after_a_cut(
        |socket| {
            Box::pin(async move {
                send(socket, output("p", 3, "c")).await;
                send(socket, notification("process/closed", "p", 4)).await;
            })
        },
        Retained {
            chunks: vec![(1, "a"), (3, "c")],
            first_retained_seq: 1,
            exit: (2, 0),
            closed_seq: 4,
            event_seqs: false,
        },
    )
    .await;
    assert_eq!(
        events,
        [
            stdout(1, "a"),
            ProcessEvent::Exited {
                seq: 2,
                exit_code: 0,
                signal: None
            },
            stdout(3, "c"),
            ProcessEvent::Closed { seq: 4 },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_and_close_seqs_of_the_read_result_are_used() {
    // Everything after seq 1 was missed; retention then dropped output 3, so the exit
    // (seq 2) lies below firstRetainedSeq: only `exitedSeq` can tell it was the exit.
    let events = catch_up_after_a_cut(
        |_| Box::pin(async {}),
        Retained {
            chunks: vec![(4, "d")],
            first_retained_seq: 4,
            exit: (2, 3),
            closed_seq: 5,
            event_seqs: true,
        },
    )
    .await;
    assert_eq!(
        events,
        [
            stdout(1, "a"),
            ProcessEvent::Exited {
                seq: 2,
                exit_code: 3,
                signal: None
            },
            ProcessEvent::Lost {
                from_seq: 3,
                to_seq: 3
            },
            stdout(4, "d"),
            ProcessEvent::Closed { seq: 5 },
        ]
    );
}
