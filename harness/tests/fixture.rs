//! The fixture's own behaviour: in-process server on both transports, raw access,
//! event waits with deadlines, disconnect/reconnect, and teardown.

use std::time::Duration;

use exec_server_harness::{ExecServer, HarnessError, ProcessSpec, Transport, exec_server};
use serde_json::json;

type TestResult = Result<(), HarnessError>;

#[tokio::test]
async fn the_issue_example_works_on_both_transports() -> TestResult {
    for transport in [Transport::WebSocket, Transport::Stdio] {
        let server = ExecServer::builder().transport(transport).start().await?;
        let session = server.initialize("my-test").await?;
        let pid = session
            .start(["sh", "-c", "echo hi; echo oops >&2; exit 4"])
            .await?;
        let out = session.read_to_end(&pid).await?;
        assert_eq!(out.stdout, b"hi\n", "{transport:?}");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.exit_code, Some(4));
        let exited = server
            .expect_event(|e| e.is_exited(&pid))
            .within(Duration::from_secs(2))
            .await?;
        assert_eq!(exited.exit_code(), Some(4));
    }
    Ok(())
}

#[tokio::test]
async fn a_timeout_names_what_was_expected_and_what_arrived() -> TestResult {
    let server = exec_server().await?;
    let session = server.initialize("t").await?;
    let pid = session.start(["echo", "x"]).await?;
    server.expect_event(|e| e.is_closed(&pid)).await?;
    let error = server
        .expect_event(|e| e.method == "no/such/event")
        .described("an event that never comes")
        .within(Duration::from_millis(100))
        .await
        .expect_err("nothing matches");
    let text = error.to_string();
    assert!(text.contains("an event that never comes"), "{text}");
    assert!(
        text.contains("process/output") || text.contains("process/exited"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn skip_until_discards_and_expect_event_keeps_earlier_events() -> TestResult {
    let server = exec_server().await?;
    let session = server.initialize("t").await?;
    let pid = session.start(["echo", "x"]).await?;
    server.expect_event(|e| e.is_closed(&pid)).await?;
    let before = server.buffered_events();
    let exited_at = before
        .iter()
        .position(|e| e.is_exited(&pid))
        .expect("exited still buffered");
    let output = server.expect_event(|e| e.is_output(&pid)).await?;
    assert_eq!(output.chunk(), Some(b"x\n".to_vec()));
    let remaining: Vec<_> = before.into_iter().filter(|e| *e != output).collect();
    let exited_at = remaining
        .iter()
        .position(|e| e.is_exited(&pid))
        .unwrap_or(exited_at);
    server.skip_until(|e| e.is_exited(&pid)).await?;
    assert_eq!(
        server.buffered_events(),
        remaining[exited_at + 1..].to_vec()
    );
    Ok(())
}

#[tokio::test]
async fn expect_no_event_fails_when_something_arrives() -> TestResult {
    let server = exec_server().await?;
    let session = server.initialize("t").await?;
    session.start(["echo", "x"]).await?;
    let result = server.expect_no_event(Duration::from_secs(2)).await;
    assert!(result.is_err(), "output arrives within the window");
    Ok(())
}

#[tokio::test]
async fn raw_frames_pipelining_and_errors() -> TestResult {
    let server = exec_server().await?;
    server.send_raw("{oops").await?;
    let parse_error = server.response(&serde_json::Value::Null).await?;
    assert_eq!(parse_error.error.map(|e| e.code), Some(-32700));
    let failure = server
        .call_expecting_error("process/start", json!({}))
        .await?;
    assert_eq!(failure.code, -32600);
    server.initialize("t").await?;
    let first = server.send_request("environment/info", json!({})).await?;
    let second = server.send_request("environment/info", json!({})).await?;
    assert!(server.response(&second).await?.result.is_some());
    assert!(server.response(&first).await?.result.is_some());
    let err = server
        .call("nope", json!({}))
        .await
        .expect_err("unknown method");
    assert!(
        matches!(err, HarnessError::Rpc { ref failure, .. } if failure.code == -32601),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn disconnect_makes_waits_fail_fast_and_reconnect_opens_a_new_connection() -> TestResult {
    let server = exec_server().await?;
    server.initialize("t").await?;
    server.disconnect().await?;
    let err = server.next_event().await.expect_err("disconnected");
    assert!(matches!(err, HarnessError::Disconnected { .. }), "{err}");
    server.reconnect().await?;
    server.initialize("again").await?;
    server.reset().await?;
    server.reconnect().await?;
    server.initialize("after reset").await?;
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_kills_its_processes() -> TestResult {
    let server = exec_server().await?;
    let session = server.initialize("t").await?;
    let pid = session
        .start_with(ProcessSpec::new(["sh", "-c", "sleep 1000 & echo $!; wait"]).id("tree"))
        .await?;
    let event = server.expect_event(|e| e.is_output(&pid)).await?;
    let grandchild: i32 = String::from_utf8_lossy(&event.chunk().unwrap_or_default())
        .trim()
        .parse()
        .map_err(|_| HarnessError::Protocol("pid line".into()))?;
    assert!(exec_server_harness::process_alive(grandchild));
    drop(session);
    drop(server);
    exec_server_harness::wait_for_process_gone(grandchild, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_command_that_is_not_a_server_fails_start_up_with_its_stderr() {
    let result = ExecServer::builder()
        .command([
            "sh",
            "-c",
            "echo not-a-url; echo broken-server-diagnostic >&2; sleep 1000",
        ])
        .time_scale(0.2)
        .start()
        .await;
    let Err(err) = result else {
        panic!("start-up must fail");
    };
    let text = err.to_string();
    assert!(text.contains("not-a-url"), "{text}");
}
