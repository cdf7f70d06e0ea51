//! Detachable sessions (docs/protocol.md §5) over websocket: detach on disconnect, resume,
//! TTL expiry, refusal of attached and unknown sessions, and isolation.
//!
//! TTL margins are wide and asymmetric so a loaded 2-core machine cannot flip them:
//! "within the TTL" resumes happen at 30 % of a 1 s TTL or against a 30 s TTL, and
//! "after the TTL" checks wait for the processes to be gone (the reaper ran) or for 250 %.

mod common;

use std::time::Duration;

use common::*;
use exec_server_harness::protocol::{EnvironmentInfoParams, WriteStatus};
use exec_server_harness::{
    process_alive, wait_for_process_gone, ExecServer, HarnessError, Session, Transport,
};
use serde_json::json;

const LONG_TTL: &str = "30s";

async fn ws_server(ttl: &str) -> Result<ExecServer, exec_server_harness::HarnessError> {
    start_server(Transport::WebSocket, &["--session-ttl", ttl]).await
}

#[tokio::test]
async fn resume_keeps_processes_running_and_their_output_readable() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let capabilities = &session.initialize_json()["capabilities"]["session"];
    assert_eq!(capabilities["resume"], true);
    assert_eq!(capabilities["ttlMs"], 30_000);
    let script = "echo before; sleep 1000 & echo $!; echo $$; wait";
    let pids = start_reporting_pids(&session, "tree", script, 2).await?;
    let session_id = session.id().to_owned();

    conn.disconnect().await?;
    conn.reconnect().await?;
    let resumed = conn.resume(CLIENT, &session_id).await?;
    assert_eq!(resumed.id(), session_id, "same session id");
    for pid in &pids {
        assert!(
            process_alive(*pid),
            "process {pid} kept running while detached"
        );
    }
    let read = resumed.read("tree", 0, 0).await?;
    let first = &read.chunks[0].chunk;
    assert!(
        String::from_utf8_lossy(first).starts_with("before\n"),
        "{read:?}"
    );
    assert!(
        resumed.terminate("tree").await?,
        "still running after resume"
    );
    for pid in pids {
        wait_for_process_gone(pid, server.default_wait()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn output_produced_while_detached_is_read_back_byte_exact_after_resume() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("go");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(status.success(), "mkfifo");
    // The shell prints its pid, then waits for our signal through the FIFO and only
    // then prints ~600 KB: all of it while nobody is attached.
    let script = format!("echo $$; read go < '{}'; seq 1 100000", fifo.display());
    let pid = start_reporting_pids(&session, "late", &script, 1).await?[0];
    let session_id = session.id().to_owned();

    conn.disconnect().await?;
    let writer = tokio::task::spawn_blocking(move || std::fs::write(&fifo, "go\n"));
    tokio::time::timeout(server.default_wait(), writer)
        .await
        .map_err(|_| std::io::Error::other("the FIFO was never opened for reading"))?
        .map_err(std::io::Error::other)??;
    wait_for_process_gone(pid, server.default_wait()).await?;
    // Gone is not enough: a zombie counts as gone, but the server publishes the exit
    // only when it sees it, and reaps after that. Once the pid has left /proc, the
    // exit was published while nobody was attached.
    let reaped = async {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(server.default_wait(), reaped)
        .await
        .map_err(|_| std::io::Error::other(format!("the server never reaped {pid}")))?;

    conn.reconnect().await?;
    let resumed = conn.resume(CLIENT, &session_id).await?;
    // Notifications missed while detached are not replayed; reads catch up instead.
    conn.expect_no_event(Duration::from_millis(200)).await?;
    let output = resumed.read_to_end("late").await?;
    let mut expected = format!("{pid}\n").into_bytes();
    expected.extend(
        (1..=100_000)
            .map(|n| format!("{n}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    assert!(
        output.stdout == expected,
        "no byte lost or repeated ({} bytes read)",
        output.stdout.len()
    );
    assert_eq!(output.exit_code, Some(0));
    Ok(())
}

#[tokio::test]
async fn a_session_not_resumed_within_the_ttl_is_destroyed_with_its_tree() -> TestResult {
    let server = ws_server("300ms").await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pids =
        start_reporting_pids(&session, "tree", "sleep 1000 & echo $!; echo $$; wait", 2).await?;
    let session_id = session.id().to_owned();
    conn.disconnect().await?;
    for pid in pids {
        wait_for_process_gone(pid, server.default_wait()).await?;
    }
    conn.reconnect().await?;
    let params = json!({"clientName": CLIENT, "resumeSessionId": session_id});
    let error = conn.request("initialize", params).error().await?;
    assert_eq!(error.code, -32600);
    assert_eq!(error.message, format!("unknown session id {session_id}"));
    // A failed resume may be followed by a fresh initialize.
    conn.initialize(CLIENT).await?;
    Ok(())
}

#[tokio::test]
async fn resume_well_before_the_ttl_succeeds_and_well_after_it_fails() -> TestResult {
    const TTL: Duration = Duration::from_secs(1);
    let server = ws_server("1s").await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("sleeper", ["sleep", "1000"]))
        .await?;
    let session_id = session.id().to_owned();

    conn.disconnect().await?;
    tokio::time::sleep(TTL.mul_f64(0.3)).await;
    conn.reconnect().await?;
    let resumed = conn.resume(CLIENT, &session_id).await?;
    let read = resumed.read("sleeper", 0, 0).await?;
    assert!(!read.exited, "still running at 30 % of the TTL");

    conn.disconnect().await?;
    tokio::time::sleep(TTL.mul_f64(2.5)).await;
    conn.reconnect().await?;
    let params = json!({"clientName": CLIENT, "resumeSessionId": session_id});
    let error = conn.request("initialize", params).error().await?;
    assert_eq!(error.message, format!("unknown session id {session_id}"));
    Ok(())
}

#[tokio::test]
async fn resuming_an_attached_session_is_refused() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let first = server.connect().await?;
    let session = first.initialize(CLIENT).await?;
    let second = server.connect().await?;
    let params = json!({"clientName": CLIENT, "resumeSessionId": session.id()});
    let error = second.request("initialize", params).error().await?;
    assert_eq!(error.code, -32010);
    assert_eq!(
        error.message,
        format!(
            "session {} is already attached to another connection",
            session.id()
        )
    );
    first.call(&EnvironmentInfoParams {}).await?;
    Ok(())
}

#[tokio::test]
async fn a_pending_long_poll_does_not_hold_up_the_resume() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("cat", ["cat"]).pipe_stdin(true))
        .await?;
    conn.send_request(
        "process/read",
        json!({"processId": "cat", "waitMs": 60_000}),
    )
    .await?;
    let session_id = session.id().to_owned();
    conn.reset().await?;
    let next = server.connect().await?;
    // A reset is noticed asynchronously; until then the session is still attached.
    let resumed = resume_when_detached(&next, &session_id).await?;
    assert_eq!(
        resumed.write_status("cat", b"after resume\n").await?,
        WriteStatus::Accepted
    );
    let output = next
        .expect_event(|event| event.is_output("cat"))
        .described("output notifications on the resuming connection")
        .await?;
    assert_eq!(output.chunk(), Some(b"after resume\n".to_vec()));
    Ok(())
}

#[tokio::test]
async fn a_tcp_reset_detaches_like_a_close() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pid = start_reporting_pids(&session, "sleeper", "echo $$; exec sleep 1000", 1).await?[0];
    let session_id = session.id().to_owned();
    conn.reset().await?;
    conn.reconnect().await?;
    let resumed = resume_when_detached(&conn, &session_id).await?;
    assert!(process_alive(pid), "a reset detaches instead of killing");
    assert!(resumed.terminate("sleeper").await?);
    wait_for_process_gone(pid, server.default_wait()).await?;
    Ok(())
}

#[tokio::test]
async fn two_sessions_on_one_server_are_isolated() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let a = server.connect().await?;
    let b = server.connect().await?;
    let session_a = a.initialize("a").await?;
    let session_b = b.initialize("b").await?;
    assert_ne!(session_a.id(), session_b.id());
    session_a.start_with(spec("p", ["sleep", "1000"])).await?;
    let error = b
        .request("process/read", json!({"processId": "p"}))
        .error()
        .await?;
    assert_eq!(error.message, "unknown process id p");
    assert!(
        !session_b.terminate("p").await?,
        "b cannot reach a's process"
    );
    session_b.start_with(spec("p", ["true"])).await?;
    assert_eq!(session_b.read_to_end("p").await?.exit_code, Some(0));
    let read = session_a.read("p", 0, 0).await?;
    assert!(!read.exited, "a's p is untouched");
    Ok(())
}

#[tokio::test]
async fn an_unknown_session_id_is_refused() -> TestResult {
    let server = ws_server(LONG_TTL).await?;
    let conn = server.connect().await?;
    let id = "00000000-0000-4000-8000-000000000000";
    let params = json!({"clientName": CLIENT, "resumeSessionId": id});
    let error = conn.request("initialize", params).error().await?;
    assert_eq!(error.code, -32600);
    assert_eq!(error.message, format!("unknown session id {id}"));
    Ok(())
}

/// A websocket server with the shortest keepalive (1 s, so the silence and stall limits
/// are 3 s; the harness's waits, `resume_when_detached`'s included, get twice their
/// usual 5 s), a session, and the pid of a `sleep` running in it.
async fn keepalive_server_with_a_sleeper() -> Result<(ExecServer, Session, i32), HarnessError> {
    let server = exec_server_bin()
        .transport(Transport::WebSocket)
        .args(["--ws-keepalive", "1s", "--session-ttl", LONG_TTL])
        .time_scale(2.0)
        .start()
        .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pid = start_reporting_pids(&session, "sleeper", "echo $$; exec sleep 1000", 1).await?[0];
    Ok((server, session, pid))
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_detached_by_the_keepalive() -> TestResult {
    let (server, session, pid) = keepalive_server_with_a_sleeper().await?;
    // From here on the first connection reads nothing, so it never answers a ping.
    let other = server.connect().await?;
    resume_when_detached(&other, session.id()).await?;
    assert!(process_alive(pid), "detached, not killed");
    Ok(())
}

#[tokio::test]
async fn a_peer_that_stops_reading_while_replies_wait_for_room_is_detached() -> TestResult {
    // Two replies bigger than the outbound budget: the first fills the socket, the
    // second waits for room, so the server reads nothing more from this peer (not
    // even pongs). It must still notice the peer takes nothing and detach it.
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("sparse");
    std::fs::File::create(&path)?.set_len(70 * 1024 * 1024)?;
    let (server, session, pid) = keepalive_server_with_a_sleeper().await?;
    for id in [1, 2] {
        let request = json!({"id": id, "method": "fs/readFile", "params": {"path": path}});
        session.connection().send_raw(request.to_string()).await?;
    }
    let other = server.connect().await?;
    resume_when_detached(&other, session.id()).await?;
    assert!(process_alive(pid), "detached, not killed");
    Ok(())
}

#[tokio::test]
async fn an_oversized_message_ends_the_connection_and_detaches() -> TestResult {
    let server = start_server(
        Transport::WebSocket,
        &["--max-message-bytes", "1024", "--session-ttl", LONG_TTL],
    )
    .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("sleeper", ["sleep", "1000"]))
        .await?;
    let huge = json!({"id": 99, "method": "environment/info", "params": {"pad": "x".repeat(4096)}});
    conn.send_raw(huge.to_string()).await?;
    let other = server.connect().await?;
    resume_when_detached(&other, session.id()).await?;
    let read = other
        .request("process/read", json!({"processId": "sleeper"}))
        .result()
        .await?;
    assert_eq!(read["exited"], false);
    Ok(())
}

#[tokio::test]
async fn stdio_sessions_do_not_advertise_resume() -> TestResult {
    let server = start_server(Transport::Stdio, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["session"]["resume"],
        false
    );
    Ok(())
}
