//! The fixture's own behaviour: in-process server on both transports, raw access,
//! event waits with deadlines, disconnect/reconnect, and teardown.

use std::time::Duration;

use exec_server_harness::protocol::{EnvironmentInfoParams, StartParams, code};
use exec_server_harness::{ExecServer, HarnessError, ProcessSpec, Transport, exec_server, json};

type TestResult = Result<(), HarnessError>;

#[tokio::test]
async fn the_issue_example_works_on_both_transports() -> TestResult {
    for transport in [Transport::WebSocket, Transport::Stdio] {
        let server = ExecServer::builder().transport(transport).start().await?;
        let conn = server.connect().await?;
        let session = conn.initialize("my-test").await?;
        let pid = session
            .start(["sh", "-c", "echo hi; echo oops >&2; exit 4"])
            .await?;
        let out = session.read_to_end(&pid).await?;
        assert_eq!(out.stdout, b"hi\n", "{transport:?}");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.exit_code, Some(4));
        let exited = conn
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
    let conn = server.connect().await?;
    let session = conn.initialize("t").await?;
    let pid = session.start(["echo", "x"]).await?;
    conn.expect_event(|e| e.is_closed(&pid)).await?;
    let error = conn
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
    let conn = server.connect().await?;
    let session = conn.initialize("t").await?;
    let pid = session.start(["echo", "x"]).await?;
    conn.expect_event(|e| e.is_closed(&pid)).await?;
    let before = conn.buffered_events();
    let exited_at = before
        .iter()
        .position(|e| e.is_exited(&pid))
        .expect("exited still buffered");
    let output = conn.expect_event(|e| e.is_output(&pid)).await?;
    assert_eq!(output.chunk(), Some(b"x\n".to_vec()));
    let remaining: Vec<_> = before.into_iter().filter(|e| *e != output).collect();
    let exited_at = remaining
        .iter()
        .position(|e| e.is_exited(&pid))
        .unwrap_or(exited_at);
    conn.skip_until(|e| e.is_exited(&pid)).await?;
    assert_eq!(conn.buffered_events(), remaining[exited_at + 1..].to_vec());
    Ok(())
}

#[tokio::test]
async fn expect_no_event_fails_when_something_arrives() -> TestResult {
    let server = exec_server().await?;
    let conn = server.connect().await?;
    let session = conn.initialize("t").await?;
    session.start(["echo", "x"]).await?;
    let result = conn.expect_no_event(Duration::from_secs(2)).await;
    assert!(result.is_err(), "output arrives within the window");
    Ok(())
}

#[tokio::test]
async fn raw_frames_pipelining_and_errors() -> TestResult {
    let server = exec_server().await?;
    let conn = server.connect().await?;
    conn.send_raw("{oops").await?;
    let parse_error = conn.response_without_id().await?;
    assert_eq!(parse_error.error.map(|e| e.code), Some(code::PARSE_ERROR));
    let failure = conn
        .call_expecting_error(&StartParams::new("p", ["true"], "/"))
        .await?;
    assert_eq!(failure.code, code::INVALID_REQUEST);
    conn.initialize("t").await?;
    let first = conn.send_call(&EnvironmentInfoParams {}).await?;
    let second = conn.send_request("environment/info", json!({})).await?;
    assert!(conn.response(&second).await?.result.is_some());
    assert!(conn.response(&first).await?.result.is_some());
    let err = conn
        .request("nope", json!({}))
        .result()
        .await
        .expect_err("unknown method");
    assert!(
        matches!(err, HarnessError::Rpc { ref failure, .. } if failure.code == code::METHOD_NOT_FOUND),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn pipelined_responses_can_be_awaited_in_any_order() -> TestResult {
    let server = exec_server().await?;
    let conn = server.connect().await?;
    conn.initialize("t").await?;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(conn.send_call(&EnvironmentInfoParams {}).await?);
    }
    for id in ids.iter().rev() {
        assert_eq!(conn.response(id).await?.id.as_ref(), Some(id));
    }
    Ok(())
}

#[tokio::test]
async fn a_stdio_server_has_exactly_one_connection() -> TestResult {
    let server = ExecServer::builder().stdio().start().await?;
    let conn = server.connect().await?;
    let second = server
        .connect()
        .await
        .err()
        .expect("a second connection fails");
    assert!(matches!(second, HarnessError::Unsupported(_)), "{second}");
    assert!(matches!(
        conn.reconnect().await,
        Err(HarnessError::Unsupported(_))
    ));
    conn.initialize("t").await?;
    Ok(())
}

#[tokio::test]
async fn disconnect_makes_waits_fail_fast_and_reconnect_opens_a_new_connection() -> TestResult {
    let server = exec_server().await?;
    let conn = server.connect().await?;
    conn.initialize("t").await?;
    conn.disconnect().await?;
    let err = conn.next_event().await.expect_err("disconnected");
    assert!(matches!(err, HarnessError::Disconnected { .. }), "{err}");
    conn.reconnect().await?;
    conn.initialize("again").await?;
    conn.reset().await?;
    conn.reconnect().await?;
    conn.initialize("after reset").await?;
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_kills_its_processes() -> TestResult {
    let server = exec_server().await?;
    let conn = server.connect().await?;
    let session = conn.initialize("t").await?;
    let pid = session
        .start_with(ProcessSpec::new(["sh", "-c", "sleep 1000 & echo $!; wait"]).id("tree"))
        .await?;
    let event = conn.expect_event(|e| e.is_output(&pid)).await?;
    let grandchild: i32 = String::from_utf8_lossy(&event.chunk().unwrap_or_default())
        .trim()
        .parse()
        .map_err(|_| HarnessError::protocol("pid line"))?;
    assert!(exec_server_harness::process_alive(grandchild));
    drop(session);
    drop(conn);
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
