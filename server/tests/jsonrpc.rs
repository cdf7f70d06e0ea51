//! The JSON-RPC envelope, error handling, handshake and request concurrency
//! (PROTOCOL.md §3–§4), over both transports.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn code(error: &Value) -> i64 {
    error["code"].as_i64().expect("error code")
}

#[tokio::test]
async fn malformed_frames_get_parse_errors_and_the_connection_stays_open() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.connect().await;
        client.send_raw("{this is not json").await;
        let reply = client.response(&Value::Null).await;
        assert_eq!(code(&reply["error"]), -32700, "{transport:?}: {reply}");
        let shapes = [
            (r#"[{"id":1,"method":"initialize"}]"#, Value::Null),
            (r#""just a string""#, Value::Null),
            (r#"{"id":9}"#, json!(9)),
            (r#"{"id":10,"method":7}"#, json!(10)),
        ];
        for (shape, id) in shapes {
            client.send_raw(shape).await;
            let reply = client.response(&id).await;
            assert_eq!(
                code(&reply["error"]),
                -32600,
                "{transport:?} {shape}: {reply}"
            );
        }
        let session_id = client.initialize().await;
        assert!(
            !session_id.is_empty(),
            "{transport:?}: connection still usable"
        );
    }
}

#[tokio::test]
async fn binary_websocket_frames_are_accepted() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.connect().await;
    client
        .send_binary(
            json!({"id": "bin", "method": "initialize", "params": {"clientName": "b"}})
                .to_string()
                .as_bytes(),
        )
        .await;
    let reply = client.response(&json!("bin")).await;
    assert!(reply["result"]["sessionId"].is_string(), "{reply}");
    client.send_binary(b"\xff\xfe").await;
    assert_eq!(code(&client.response(&Value::Null).await["error"]), -32700);
}

#[tokio::test]
async fn oversized_stdio_line_is_refused_and_skipped() {
    let mut server = TestServer::start(Transport::Stdio, &["--max-message-bytes", "1024"]).await;
    let mut client = server.connect().await;
    let huge = json!({"id": 1, "method": "initialize", "params": {"clientName": "x".repeat(4096)}});
    client.send_raw(&huge.to_string()).await;
    let reply = client.response(&Value::Null).await;
    assert_eq!(code(&reply["error"]), -32600, "{reply}");
    client.initialize().await;
}

#[tokio::test]
async fn ids_are_echoed_and_jsonrpc_field_is_optional_inbound_but_always_sent() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.connect().await;
        client
            .send_raw(r#"{"id":"abc","method":"initialize","params":{"clientName":"x"}}"#)
            .await;
        let reply = client.response(&json!("abc")).await;
        assert_eq!(reply["jsonrpc"], "2.0");
        assert_eq!(reply["id"], "abc");
        client.send_raw(r#"{"method":"initialized"}"#).await;
        client
            .send_raw(r#"{"jsonrpc":"2.0","id":12345678901,"method":"environment/info"}"#)
            .await;
        let reply = client.response(&json!(12345678901u64)).await;
        assert!(
            reply["result"]["shell"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with('/')),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn handshake_ordering_errors() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.connect().await;
        let error = client
            .call_err(
                "process/start",
                json!({"processId": "p", "argv": ["true"], "cwd": "/", "env": {}}),
            )
            .await;
        assert_eq!(code(&error), -32600);
        assert_eq!(
            error["message"],
            "client must call initialize before using process methods"
        );
        let error = client.call_err("environment/info", json!({})).await;
        assert_eq!(
            error["message"],
            "client must call initialize before using environment methods"
        );

        // A failed initialize may be retried.
        let error = client
            .call_err("initialize", json!({"clientName": 5}))
            .await;
        assert_eq!(code(&error), -32602);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("clientName"),
            "{error}"
        );

        let result = client.call("initialize", json!({"clientName": "t"})).await;
        let session_id = result["sessionId"].as_str().expect("sessionId");
        let uuid = uuid::Uuid::parse_str(session_id).expect("sessionId is a UUID");
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(result["serverInfo"]["name"], "exec-server");
        assert_eq!(result["capabilities"]["process"]["tty"], true);

        let error = client
            .call_err("process/read", json!({"processId": "p"}))
            .await;
        assert_eq!(code(&error), -32600);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("client must send initialized"),
            "{error}"
        );

        let error = client
            .call_err("initialize", json!({"clientName": "t"}))
            .await;
        assert_eq!(
            error["message"],
            "initialize may only be sent once per connection"
        );

        client.notify("initialized", json!({})).await;
        client.call("environment/info", json!({})).await;
    }
}

#[tokio::test]
async fn unknown_methods_bad_params_and_stray_messages() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        assert_eq!(
            code(&client.call_err("process/teleport", json!({})).await),
            -32601
        );
        let error = client
            .call_err(
                "process/start",
                json!({"processId": "p", "argv": "ls", "cwd": "/", "env": {}}),
            )
            .await;
        assert_eq!(code(&error), -32602);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("argv"),
            "{error}"
        );
        let error = client
            .call_err("process/start", json!({"processId": "p", "cwd": "/"}))
            .await;
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("argv"),
            "{error}"
        );
        let error = client
            .call_err(
                "process/start",
                json!({"processId": "p", "argv": [], "cwd": "/", "env": {}}),
            )
            .await;
        assert_eq!(code(&error), -32602, "empty argv");
        let error = client
            .call_err(
                "process/signal",
                json!({"processId": "p", "signal": "bogus"}),
            )
            .await;
        assert_eq!(code(&error), -32602);
        // Stray notifications and responses are ignored without closing the connection.
        client.notify("process/whatever", json!({})).await;
        client.send_raw(r#"{"id": 77, "result": {}}"#).await;
        client.call("environment/info", json!({})).await;
    }
}

#[tokio::test]
async fn a_long_poll_read_does_not_block_other_requests() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        client
            .start_with("cat", &["cat"], json!({"pipeStdin": true}))
            .await;
        let long_poll = client
            .send_request(
                "process/read",
                json!({"processId": "cat", "waitMs": 60_000}),
            )
            .await;
        client.call("environment/info", json!({})).await;
        assert!(
            !client.has_response(&long_poll),
            "{transport:?}: nothing to read yet"
        );
        let status = client
            .call(
                "process/write",
                json!({"processId": "cat", "chunk": b64(b"ping\n")}),
            )
            .await;
        assert_eq!(status["status"], "accepted");
        // The write's output wakes the long-poll well before its 60 s wait.
        let read = client.response(&long_poll).await;
        let chunks = read["result"]["chunks"].as_array().expect("chunks");
        assert_eq!(unb64(&chunks[0]["chunk"]), b"ping\n", "{read}");
        client
            .call("process/terminate", json!({"processId": "cat"}))
            .await;
    }
}

#[tokio::test]
async fn five_hundred_pipelined_starts_and_terminates_are_all_answered() {
    const COUNT: usize = 500;
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        let mut starts = Vec::new();
        for i in 0..COUNT {
            let params = json!({"processId": format!("p{i}"), "argv": ["sleep", "1000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}});
            starts.push(client.send_request("process/start", params).await);
        }
        let mut terminates = Vec::new();
        for i in 0..COUNT {
            terminates.push(
                client
                    .send_request("process/terminate", json!({"processId": format!("p{i}")}))
                    .await,
            );
        }
        for id in &starts {
            let reply = client.response_within(id, Duration::from_secs(60)).await;
            assert!(
                reply["result"]["processId"].is_string(),
                "{transport:?}: {reply}"
            );
        }
        for id in &terminates {
            let reply = client.response_within(id, Duration::from_secs(60)).await;
            assert_eq!(
                reply["result"]["running"], true,
                "{transport:?}: terminate after its start: {reply}"
            );
        }
        client
            .wait_events("every process closed", |events| {
                events
                    .iter()
                    .filter(|e| e["method"] == "process/closed")
                    .count()
                    == COUNT
            })
            .await;
    }
}
