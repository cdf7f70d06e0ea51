//! The JSON-RPC envelope, error handling, handshake and request concurrency
//! (docs/protocol.md §3–§4), over both transports.

mod common;

use std::time::Duration;

use common::*;
use exec_server_harness::protocol::{
    EnvironmentInfoParams, NotificationMethod, RequestId, TerminateParams,
};
use exec_server_harness::{HarnessError, Response, Transport};
use serde_json::{json, Value};

fn code(response: &Response) -> i64 {
    response.error.as_ref().expect("an error response").code
}

#[tokio::test]
async fn malformed_frames_get_parse_errors_and_the_connection_stays_open() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        conn.send_raw("{this is not json").await?;
        let reply = conn.response_without_id().await?;
        assert_eq!(code(&reply), -32700, "{transport:?}: {reply:?}");
        let shapes = [
            (r#"[{"id":1,"method":"initialize"}]"#, None),
            (r#""just a string""#, None),
            (r#"{"id":9}"#, Some(RequestId::from(9))),
            (r#"{"id":10,"method":7}"#, Some(RequestId::from(10))),
        ];
        for (shape, id) in shapes {
            conn.send_raw(shape).await?;
            let reply = match &id {
                Some(id) => conn.response(id).await?,
                None => conn.response_without_id().await?,
            };
            assert_eq!(code(&reply), -32600, "{transport:?} {shape}: {reply:?}");
        }
        let session = conn.initialize(CLIENT).await?;
        assert!(
            !session.id().is_empty(),
            "{transport:?}: connection still usable"
        );
    }
    Ok(())
}

#[tokio::test]
async fn binary_websocket_frames_are_accepted() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    conn.send_raw_bytes(
        json!({"id": "bin", "method": "initialize", "params": {"clientName": "b"}})
            .to_string()
            .as_bytes(),
    )
    .await?;
    let reply = conn.response(&RequestId::from("bin")).await?;
    let result = reply.result.clone().unwrap_or_default();
    assert!(result["sessionId"].is_string(), "{reply:?}");
    conn.send_raw_bytes(b"\xff\xfe").await?;
    assert_eq!(code(&conn.response_without_id().await?), -32700);
    Ok(())
}

#[tokio::test]
async fn oversized_stdio_line_is_refused_and_skipped() -> TestResult {
    let server = start_server(Transport::Stdio, &["--max-message-bytes", "1024"]).await?;
    let conn = server.connect().await?;
    let huge = json!({"id": 1, "method": "initialize", "params": {"clientName": "x".repeat(4096)}});
    conn.send_raw(huge.to_string()).await?;
    let reply = conn.response_without_id().await?;
    assert_eq!(code(&reply), -32600, "{reply:?}");
    conn.initialize(CLIENT).await?;
    Ok(())
}

#[tokio::test]
async fn ids_are_echoed_and_jsonrpc_field_is_optional_inbound_but_always_sent() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        conn.send_raw(r#"{"id":"abc","method":"initialize","params":{"clientName":"x"}}"#)
            .await?;
        let reply = conn.response(&RequestId::from("abc")).await?;
        assert_eq!(reply.message()["jsonrpc"], "2.0", "{}", reply.raw);
        assert_eq!(reply.id, Some(RequestId::from("abc")));
        conn.send_raw(r#"{"method":"initialized"}"#).await?;
        conn.send_raw(r#"{"jsonrpc":"2.0","id":12345678901,"method":"environment/info"}"#)
            .await?;
        let reply = conn.response(&RequestId::from(12345678901u64)).await?;
        let result = reply.result.clone().unwrap_or_default();
        assert!(
            result["shell"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with('/')),
            "{reply:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn handshake_ordering_errors() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let error = conn
            .request(
                "process/start",
                json!({"processId": "p", "argv": ["true"], "cwd": "/", "env": {}}),
            )
            .error()
            .await?;
        assert_eq!(error.code, -32600);
        assert_eq!(
            error.message,
            "client must call initialize before using process methods"
        );
        let error = conn.request("environment/info", json!({})).error().await?;
        assert_eq!(
            error.message,
            "client must call initialize before using environment methods"
        );

        // A failed initialize may be retried.
        let error = conn
            .request("initialize", json!({"clientName": 5}))
            .error()
            .await?;
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("clientName"), "{error}");

        let result = conn
            .request("initialize", json!({"clientName": "t"}))
            .result()
            .await?;
        let session_id = result["sessionId"].as_str().expect("sessionId");
        let uuid = uuid::Uuid::parse_str(session_id).expect("sessionId is a UUID");
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(result["serverInfo"]["name"], "exec-server");
        assert_eq!(result["capabilities"]["process"]["tty"], true);

        let error = conn
            .request("process/read", json!({"processId": "p"}))
            .error()
            .await?;
        assert_eq!(error.code, -32600);
        assert!(
            error.message.starts_with("client must send initialized"),
            "{error}"
        );

        let error = conn
            .request("initialize", json!({"clientName": "t"}))
            .error()
            .await?;
        assert_eq!(
            error.message,
            "initialize may only be sent once per connection"
        );

        conn.notify("initialized", json!({})).await?;
        conn.call(&EnvironmentInfoParams {}).await?;
    }
    Ok(())
}

#[tokio::test]
async fn unknown_methods_bad_params_and_stray_messages() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        conn.initialize(CLIENT).await?;
        assert_eq!(
            conn.request("process/teleport", json!({}))
                .error()
                .await?
                .code,
            -32601
        );
        let error = conn
            .request(
                "process/start",
                json!({"processId": "p", "argv": "ls", "cwd": "/", "env": {}}),
            )
            .error()
            .await?;
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("argv"), "{error}");
        let error = conn
            .request("process/start", json!({"processId": "p", "cwd": "/"}))
            .error()
            .await?;
        assert!(error.message.contains("argv"), "{error}");
        let error = conn
            .request(
                "process/start",
                json!({"processId": "p", "argv": [], "cwd": "/", "env": {}}),
            )
            .error()
            .await?;
        assert_eq!(error.code, -32602, "empty argv");
        let error = conn
            .request(
                "process/signal",
                json!({"processId": "p", "signal": "bogus"}),
            )
            .error()
            .await?;
        assert_eq!(error.code, -32602);
        // Stray notifications and responses are ignored without closing the connection.
        conn.notify("process/whatever", json!({})).await?;
        conn.send_raw(r#"{"id": 77, "result": {}}"#).await?;
        conn.call(&EnvironmentInfoParams {}).await?;
    }
    Ok(())
}

/// `environment/info` takes no params: an object (fields ignored), `null` or none are
/// fine, and anything else is invalid params like any other method's.
#[tokio::test]
async fn environment_info_refuses_params_that_are_not_an_object() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        conn.initialize(CLIENT).await?;
        for params in [json!([1]), json!([]), json!("x"), json!(5), json!(true)] {
            let error = conn
                .request("environment/info", params.clone())
                .error()
                .await?;
            assert_eq!(error.code, -32602, "{transport:?} {params}: {error}");
            assert!(error.message.contains("object"), "{error}");
        }
        for params in [Value::Null, json!({}), json!({"unknown": 1})] {
            conn.request("environment/info", params).result().await?;
        }
        conn.send_raw(r#"{"id":"bare","method":"environment/info"}"#)
            .await?;
        let reply = conn.response(&RequestId::from("bare")).await?;
        assert!(reply.result.is_some(), "without params: {reply:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_long_poll_read_does_not_block_other_requests() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        session
            .start_with(spec("cat", ["cat"]).pipe_stdin(true))
            .await?;
        let long_poll = conn
            .send_request(
                "process/read",
                json!({"processId": "cat", "waitMs": 60_000}),
            )
            .await?;
        conn.call(&EnvironmentInfoParams {}).await?;
        // A zero deadline only looks at what has arrived (and is readable) already.
        match conn.response_within(&long_poll, Duration::ZERO).await {
            Err(HarnessError::Timeout { .. }) => {}
            Ok(reply) => panic!("{transport:?}: nothing to read yet, got {reply:?}"),
            Err(other) => return Err(other),
        }
        let status = conn
            .request(
                "process/write",
                json!({"processId": "cat", "chunk": b64(b"ping\n")}),
            )
            .result()
            .await?;
        assert_eq!(status["status"], "accepted");
        // The write's output wakes the long-poll well before its 60 s wait.
        let read = conn.response(&long_poll).await?.into_result()?;
        let chunks = read["chunks"].as_array().expect("chunks");
        assert_eq!(unb64(&chunks[0]["chunk"]), b"ping\n", "{read}");
        conn.call(&TerminateParams {
            process_id: "cat".into(),
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn five_hundred_pipelined_starts_and_terminates_are_all_answered() -> TestResult {
    const COUNT: usize = 500;
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        conn.initialize(CLIENT).await?;
        // Every request is sent before any reply is read: the harness reads only
        // while a test waits.
        let mut starts = Vec::new();
        for i in 0..COUNT {
            let params = json!({"processId": format!("p{i}"), "argv": ["sleep", "1000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}});
            starts.push(conn.send_request("process/start", params).await?);
        }
        let mut terminates = Vec::new();
        for i in 0..COUNT {
            terminates.push(
                conn.send_call(&TerminateParams {
                    process_id: format!("p{i}"),
                })
                .await?,
            );
        }
        for id in &starts {
            let reply = conn.response_within(id, Duration::from_secs(60)).await?;
            let result = reply.result.clone().unwrap_or_default();
            assert!(result["processId"].is_string(), "{transport:?}: {reply:?}");
        }
        for id in &terminates {
            let reply = conn.response_within(id, Duration::from_secs(60)).await?;
            let result = reply.result.clone().unwrap_or_default();
            assert_eq!(
                result["running"], true,
                "{transport:?}: terminate after its start: {reply:?}"
            );
        }
        conn.wait_for_events_within("every process closed", Duration::from_secs(60), |events| {
            events
                .iter()
                .filter(|e| e.kind() == Some(NotificationMethod::ProcessClosed))
                .count()
                == COUNT
        })
        .await?;
    }
    Ok(())
}
