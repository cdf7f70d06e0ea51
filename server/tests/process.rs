//! Process execution (docs/protocol.md §6) end to end through the real binary.

mod common;

use std::time::Duration;

use common::procfs::{open_fds, proc_field};
use common::*;
use exec_server_harness::protocol::{
    EnvironmentInfoParams, NotificationMethod, SignalName, Stream, TerminateParams,
};
use exec_server_harness::{process_alive, wait_for_process_gone, Transport};
use serde_json::{json, Value};

#[tokio::test]
async fn echo_output_exit_code_and_stream_separation() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        session
            .start_with(spec("echo", ["echo", "hello world"]))
            .await?;
        let output = conn.notified_output("echo").await?;
        assert_eq!(output.stdout, b"hello world\n", "{transport:?}");
        assert_eq!(output.exit_code, Some(0));

        session
            .start_with(spec(
                "split",
                ["sh", "-c", "echo out; echo err >&2; exit 7"],
            ))
            .await?;
        let output = conn.notified_output("split").await?;
        assert_eq!(output.stdout, b"out\n", "{transport:?}");
        assert_eq!(output.stderr, b"err\n", "{transport:?}");
        assert_eq!(output.exit_code, Some(7));
        assert_eq!(output.signal, None);
    }
    Ok(())
}

#[tokio::test]
async fn environment_is_exactly_env_and_arg0_overrides_argv0() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    conn
        .request("process/start", json!({"processId": "env", "argv": ["/usr/bin/env"], "cwd": "/tmp", "env": {"ONLY": "this"}})).result()
        .await?;
    assert_eq!(session.read_to_end("env").await?.stdout, b"ONLY=this\n");

    conn.request(
        "process/start",
        json!({
            "processId": "policy", "argv": ["/usr/bin/env"], "cwd": "/", "env": {"B": "2"},
            "envPolicy": {"inherit": "none", "set": {"A": "1"}},
        }),
    )
    .result()
    .await?;
    assert_eq!(session.read_to_end("policy").await?.stdout, b"A=1\nB=2\n");

    conn
        .request("process/start", json!({"processId": "arg0", "argv": ["/bin/cat", "/proc/self/cmdline"], "arg0": "renamed", "cwd": "/", "env": {}})).result()
        .await?;
    assert_eq!(
        session.read_to_end("arg0").await?.stdout,
        b"renamed\0/proc/self/cmdline\0"
    );

    conn.request(
        "process/start",
        json!({"processId": "cwd", "argv": ["/bin/pwd"], "cwd": "/tmp", "env": {}}),
    )
    .result()
    .await?;
    assert_eq!(session.read_to_end("cwd").await?.stdout, b"/tmp\n");
    Ok(())
}

#[tokio::test]
async fn start_errors_leave_nothing_behind() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let missing = json!({"processId": "x", "argv": ["/no/such/program"], "cwd": "/", "env": {}});
    let error = conn.request("process/start", missing).error().await?;
    assert_eq!(error.code, -32603);
    assert!(error.message.contains("No such file"), "{error}");
    let bad_cwd =
        json!({"processId": "x", "argv": ["/bin/true"], "cwd": "/no/such/dir", "env": {}});
    assert_eq!(
        conn.request("process/start", bad_cwd).error().await?.code,
        -32603
    );
    // The id was not kept by the failed starts.
    session.start_with(spec("x", ["true"])).await?;
    let error = conn
        .request("process/read", json!({"processId": "nope"}))
        .error()
        .await?;
    assert_eq!(error.code, -32600);
    assert_eq!(error.message, "unknown process id nope");
    Ok(())
}

#[tokio::test]
async fn duplicate_process_ids_are_refused_while_the_entry_exists() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session.start_with(spec("dup", ["sleep", "1000"])).await?;
    let params = json!({"processId": "dup", "argv": ["true"], "cwd": "/", "env": {}});
    let error = conn
        .request("process/start", params.clone())
        .error()
        .await?;
    assert_eq!(error.code, -32600);
    assert_eq!(error.message, "process dup already exists");
    conn.call(&TerminateParams {
        process_id: "dup".into(),
    })
    .await?;
    session.read_to_end("dup").await?;
    // Closed but not yet evicted: still refused.
    assert_eq!(
        conn.request("process/start", params).error().await?.message,
        "process dup already exists"
    );

    // Of two racing starts with one id exactly one succeeds.
    let first = conn
        .send_request(
            "process/start",
            json!({"processId": "race", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .await?;
    let second = conn
        .send_request(
            "process/start",
            json!({"processId": "race", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .await?;
    let outcomes = [conn.response(&first).await?, conn.response(&second).await?];
    assert_eq!(
        outcomes.iter().filter(|r| r.result.is_some()).count(),
        1,
        "{outcomes:?}"
    );
    Ok(())
}

#[tokio::test]
async fn pty_round_trip_and_resize() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        session.start_with(spec("tty", ["cat"]).tty(true)).await?;
        let status = conn
            .request(
                "process/write",
                json!({"processId": "tty", "chunk": b64(b"hello pty\n")}),
            )
            .result()
            .await?;
        assert_eq!(status["status"], "accepted");
        conn.wait_for_events("cat's echo on the pty", |events| {
            let text: Vec<u8> = events
                .iter()
                .filter(|e| e.stream() == Some(Stream::Pty))
                .flat_map(|e| e.chunk().expect("base64 chunk"))
                .collect();
            // The terminal echoes the line, then cat prints it: twice in all.
            String::from_utf8_lossy(&text).matches("hello pty").count() == 2
        })
        .await?;
        conn.request(
            "process/resize",
            json!({"processId": "tty", "rows": 50, "cols": 132}),
        )
        .result()
        .await?;
        conn.request(
            "process/write",
            json!({"processId": "tty", "chunk": "", "closeStdin": true}),
        )
        .result()
        .await?;
        let output = session.read_to_end("tty").await?;
        assert_eq!(
            output.exit_code,
            Some(0),
            "{transport:?}: EOF character ends cat"
        );
        assert!(output.stdout.is_empty() && output.stderr.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn pty_size_is_24_by_80_and_resize_is_seen_by_the_child() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("size", ["stty", "size"]).tty(true))
        .await?;
    assert_eq!(session.read_to_end("size").await?.pty, b"24 80\r\n");
    session
        .start_with(spec("resized", ["sh", "-c", "read go; stty size"]).tty(true))
        .await?;
    conn.request(
        "process/resize",
        json!({"processId": "resized", "rows": 40, "cols": 100}),
    )
    .result()
    .await?;
    conn.request(
        "process/write",
        json!({"processId": "resized", "chunk": b64(b"go\n")}),
    )
    .result()
    .await?;
    let output = session.read_to_end("resized").await?;
    assert!(
        String::from_utf8_lossy(&output.pty).ends_with("40 100\r\n"),
        "{:?}",
        output
    );
    session.start_with(spec("plain", ["true"])).await?;
    let error = conn
        .request(
            "process/resize",
            json!({"processId": "plain", "rows": 1, "cols": 1}),
        )
        .error()
        .await?;
    assert_eq!(error.code, -32600);
    Ok(())
}

#[tokio::test]
async fn write_statuses() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let write = |id: &str| json!({"processId": id, "chunk": b64(b"x")});
    session
        .start_with(spec("nostdin", ["sleep", "1000"]))
        .await?;
    assert_eq!(
        conn.request("process/write", write("nostdin"))
            .result()
            .await?["status"],
        "stdinClosed"
    );
    assert_eq!(
        conn.request("process/write", write("ghost"))
            .result()
            .await?["status"],
        "unknownProcess"
    );
    let error = conn
        .request(
            "process/write",
            json!({"processId": "nostdin", "chunk": "***"}),
        )
        .error()
        .await?;
    assert_eq!(error.code, -32602);
    session
        .start_with(spec("cat", ["cat"]).pipe_stdin(true))
        .await?;
    let close = json!({"processId": "cat", "chunk": b64(b"abc"), "closeStdin": true});
    assert_eq!(
        conn.request("process/write", close).result().await?["status"],
        "accepted"
    );
    assert_eq!(
        conn.request("process/write", write("cat")).result().await?["status"],
        "stdinClosed"
    );
    let output = session.read_to_end("cat").await?;
    assert_eq!(output.stdout, b"abc");
    assert_eq!(output.exit_code, Some(0), "cat saw EOF");
    Ok(())
}

#[tokio::test]
async fn writes_to_one_process_apply_in_arrival_order() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("cat", ["cat"]).pipe_stdin(true))
        .await?;
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for i in 0..200 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        let close = i == 199;
        ids.push(
            conn.send_request(
                "process/write",
                json!({"processId": "cat", "chunk": b64(line.as_bytes()), "closeStdin": close}),
            )
            .await?,
        );
    }
    for id in &ids {
        let result = conn.response(id).await?.into_result()?;
        assert_eq!(result["status"], "accepted");
    }
    assert_eq!(session.read_to_end("cat").await?.stdout, expected);
    Ok(())
}

#[tokio::test]
async fn terminate_kills_the_whole_tree() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        let pids = start_reporting_pids(&session, "tree", "sleep 1000 & echo $!; echo $$; wait", 2)
            .await?;
        let result = conn
            .call(&TerminateParams {
                process_id: "tree".into(),
            })
            .await?;
        assert!(result.running);
        let output = conn.notified_output("tree").await?;
        assert_eq!(output.exit_code, Some(137), "{transport:?}: 128 + SIGKILL");
        assert_eq!(output.signal.as_deref(), Some("SIGKILL"));
        for pid in pids {
            wait_for_process_gone(pid, server.default_wait()).await?;
        }
        let result = conn
            .call(&TerminateParams {
                process_id: "tree".into(),
            })
            .await?;
        assert!(!result.running, "already exited");
        let result = conn
            .call(&TerminateParams {
                process_id: "never".into(),
            })
            .await?;
        assert!(!result.running, "unknown id is not an error");
    }
    Ok(())
}

#[tokio::test]
async fn signals_reach_the_process_group() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    for (signal, number, name) in [
        (SignalName::Interrupt, 2, "SIGINT"),
        (SignalName::Terminate, 15, "SIGTERM"),
        (SignalName::Hangup, 1, "SIGHUP"),
        (SignalName::Kill, 9, "SIGKILL"),
    ] {
        let id = signal.as_str();
        session.start_with(spec(id, ["sleep", "1000"])).await?;
        session.signal(id, signal).await?;
        let output = conn.notified_output(id).await?;
        assert_eq!(output.exit_code, Some(128 + number), "{signal}");
        assert_eq!(output.signal.as_deref(), Some(name));
    }
    let error = conn
        .request(
            "process/signal",
            json!({"processId": "ghost", "signal": "kill"}),
        )
        .error()
        .await?;
    assert_eq!(error.code, -32600);
    Ok(())
}

#[tokio::test]
async fn signals_the_server_ignores_still_reach_its_children() -> TestResult {
    // As under `nohup`, or from a background job of a shell (SIGQUIT). SIGINT is left
    // out: the server catches it itself, and `exec` resets caught signals anyway.
    let server = start_server_ignoring("/bin/sh", "QUIT HUP").await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    for (signal, name) in [
        (SignalName::Quit, "SIGQUIT"),
        (SignalName::Hangup, "SIGHUP"),
    ] {
        let id = signal.as_str();
        session.start_with(spec(id, ["sleep", "1000"])).await?;
        session.signal(id, signal).await?;
        let output = conn.notified_output(id).await?;
        assert_eq!(output.signal.as_deref(), Some(name), "{signal}");
    }
    Ok(())
}

#[tokio::test]
async fn exited_comes_while_a_grandchild_holds_stdout_then_late_output_then_closed() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        // The background job keeps stdout open and prints only after we write to it.
        let script = "exec 3<&0; (read line <&3; echo \"late $line\") & exit 3";
        session
            .start_with(spec("bg", ["sh", "-c", script]).pipe_stdin(true))
            .await?;
        let events = conn
            .wait_for_events("exited", |events| events.iter().any(|e| e.is_exited("bg")))
            .await?;
        let exited = events
            .into_iter()
            .find(|e| e.is_exited("bg"))
            .expect("exited");
        assert_eq!(exited.params["exitCode"], 3);
        let read = conn
            .request("process/read", json!({"processId": "bg"}))
            .result()
            .await?;
        assert_eq!(read["exited"], true, "{read}");
        assert_eq!(
            read["closed"], false,
            "the grandchild still holds stdout: {read}"
        );
        // [ext] The seqs of the exit and close events (§6.3), null until known.
        assert_eq!(read["exitedSeq"], json!(exited.seq()), "{read}");
        assert_eq!(read["closedSeq"], Value::Null, "{read}");
        conn.request(
            "process/write",
            json!({"processId": "bg", "chunk": b64(b"now\n"), "closeStdin": true}),
        )
        .result()
        .await?;
        let output = conn.notified_output("bg").await?;
        assert_eq!(output.stdout, b"late now\n", "{transport:?}");
        let exit_seq = exited.seq().expect("seq");
        let read = conn
            .request("process/read", json!({"processId": "bg"}))
            .result()
            .await?;
        let late_seq = read["chunks"][0]["seq"].as_u64().expect("late chunk");
        assert!(late_seq > exit_seq, "output after exited has a later seq");
        assert_eq!(read["closed"], true);
        assert_eq!(read["nextSeq"], late_seq + 1);
        let events = conn
            .wait_for_events("closed", |events| events.iter().any(|e| e.is_closed("bg")))
            .await?;
        let closed = events
            .into_iter()
            .find(|e| e.is_closed("bg"))
            .expect("closed");
        assert_eq!(read["exitedSeq"], exit_seq, "{read}");
        assert_eq!(read["closedSeq"], json!(closed.seq()), "{read}");
        assert!(closed.seq() > Some(late_seq), "{read}");
    }
    Ok(())
}

#[tokio::test]
async fn read_long_poll_max_bytes_and_next_seq() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    // Each part is printed only after the previous one was seen, so each is its own chunk.
    let script = "printf aaaa; read x; printf bbbb; read y; printf cccc";
    session
        .start_with(spec("three", ["sh", "-c", script]).pipe_stdin(true))
        .await?;
    for (part, gate) in [(b"aaaa", b"\n" as &[u8]), (b"bbbb", b"\n")] {
        let event = conn.expect_event(|e| e.is_output("three")).await?;
        assert_eq!(event.chunk().as_deref(), Some(&part[..]));
        session.write("three", gate).await?;
    }
    session.read_to_end("three").await?;
    let all = conn
        .request("process/read", json!({"processId": "three"}))
        .result()
        .await?;
    let chunks = all["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 3, "one chunk per gated write: {all}");
    let first_len = unb64(&chunks[0]["chunk"]).len() as u64;
    let limited = conn
        .request(
            "process/read",
            json!({"processId": "three", "maxBytes": first_len}),
        )
        .result()
        .await?;
    assert_eq!(limited["chunks"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        limited["nextSeq"],
        chunks[0]["seq"].as_u64().expect("seq") + 1
    );
    let tiny = conn
        .request("process/read", json!({"processId": "three", "maxBytes": 1}))
        .result()
        .await?;
    assert_eq!(
        tiny["chunks"].as_array().map(Vec::len),
        Some(1),
        "at least one chunk"
    );
    let after_all = conn
        .request(
            "process/read",
            json!({"processId": "three", "afterSeq": 1000, "waitMs": 5000}),
        )
        .result()
        .await?;
    assert_eq!(after_all["chunks"], json!([]), "closed returns at once");
    assert_eq!(after_all["closed"], true);
    assert_eq!(after_all["failure"], Value::Null);
    let total_seqs = chunks.len() as u64 + 2;
    assert_eq!(
        after_all["nextSeq"],
        total_seqs + 1,
        "the next unassigned seq counts exit and close"
    );

    session.start_with(spec("quiet", ["sleep", "1000"])).await?;
    let waited = conn
        .request("process/read", json!({"processId": "quiet", "waitMs": 50}))
        .result()
        .await?;
    assert_eq!(
        waited["chunks"],
        json!([]),
        "an empty result once waitMs passes"
    );
    assert_eq!(waited["exited"], false);
    assert_eq!(waited["nextSeq"], 1);
    Ok(())
}

fn numbers(count: u32) -> Vec<u8> {
    (1..=count)
        .map(|n| format!("{n}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test]
async fn five_mib_byte_exact_through_notifications_and_read() -> TestResult {
    let expected = numbers(800_000);
    assert!(expected.len() > 5 * 1024 * 1024);
    for transport in BOTH {
        let server = start_server(transport, &["--output-retention", "16777216"]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        session
            .start_with(spec("seq", ["seq", "1", "800000"]))
            .await?;
        let output = conn
            .notified_output_within("seq", Duration::from_secs(60))
            .await?;
        assert!(
            output.stdout == expected,
            "{transport:?}: notifications differ"
        );
        let mut via_read = Vec::new();
        let mut after_seq = 0;
        // Each call has the harness's deadline; this bounds the whole loop.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{transport:?}: process/read did not reach closed within 60 s \
                 ({} bytes read, afterSeq {after_seq})",
                via_read.len()
            );
            let read = conn
                .request(
                    "process/read",
                    json!({"processId": "seq", "afterSeq": after_seq, "maxBytes": 1_000_000}),
                )
                .result()
                .await?;
            for chunk in read["chunks"].as_array().expect("chunks") {
                assert!(
                    unb64(&chunk["chunk"]).len() <= 64 * 1024,
                    "chunks are at most 64 KiB"
                );
                via_read.extend(unb64(&chunk["chunk"]));
            }
            if read["chunks"].as_array().is_some_and(Vec::is_empty) && read["closed"] == true {
                break;
            }
            after_seq = read["nextSeq"].as_u64().expect("nextSeq") - 1;
        }
        assert!(via_read == expected, "{transport:?}: process/read differs");
        // One read without maxBytes returns everything retained in a single message
        // of ~7 MiB: outbound messages are not size-limited.
        let whole = conn
            .request("process/read", json!({"processId": "seq"}))
            .result()
            .await?;
        let whole: Vec<u8> = whole["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .flat_map(|chunk| unb64(&chunk["chunk"]))
            .collect();
        assert!(
            whole == expected,
            "{transport:?}: single large read differs"
        );
        conn.call(&EnvironmentInfoParams {}).await?;
    }
    Ok(())
}

#[tokio::test]
async fn retention_keeps_the_newest_bytes_and_reports_what_was_lost() -> TestResult {
    let server = start_server(Transport::WebSocket, &["--output-retention", "1000"]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    // Over 64 KiB, so several chunks whatever the timing; each is larger than the
    // retention, so only the newest survives.
    session
        .start_with(spec("many", ["seq", "1", "60000"]))
        .await?;
    // Through notifications: process/read no longer has the whole output.
    let output = conn.notified_output("many").await?;
    let read = conn
        .request("process/read", json!({"processId": "many"}))
        .result()
        .await?;
    let first_retained = read["firstRetainedSeq"].as_u64().expect("firstRetainedSeq");
    assert!(first_retained > 1, "older chunks were dropped: {read}");
    let chunks = read["chunks"].as_array().expect("chunks");
    // firstRetainedSeq may name the exit event (output can follow the exit), so compare
    // with the first *output* seq at or after it, as the notifications numbered them.
    let first_output_kept = conn
        .buffered_events()
        .iter()
        .filter(|e| e.is_output("many"))
        .filter_map(|e| e.seq())
        .filter(|seq| *seq >= first_retained)
        .min();
    assert_eq!(
        chunks[0]["seq"].as_u64(),
        first_output_kept,
        "every chunk from firstRetainedSeq on is kept"
    );
    let retained: Vec<u8> = chunks.iter().flat_map(|c| unb64(&c["chunk"])).collect();
    assert!(retained.len() <= 1000 + 64 * 1024);
    assert!(
        output.stdout.ends_with(&retained),
        "what is retained is the newest output"
    );
    Ok(())
}

#[tokio::test]
async fn output_is_coalesced_into_chunks_of_at_most_64_kib() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("zeros", ["head", "-c", "4194304", "/dev/zero"]))
        .await?;
    let events = conn
        .wait_for_events("closed", |events| {
            events
                .iter()
                .any(|e| e.kind() == Some(NotificationMethod::ProcessClosed))
        })
        .await?;
    let sizes: Vec<usize> = events
        .iter()
        .filter(|e| e.kind() == Some(NotificationMethod::ProcessOutput))
        .map(|e| e.chunk().expect("base64 chunk").len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 4 * 1024 * 1024);
    assert!(sizes.iter().all(|&size| size <= 64 * 1024), "{sizes:?}");
    assert!(
        sizes.len() <= 4 * 1024 * 1024 / 4096,
        "reads are coalesced: {} chunks",
        sizes.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_backpressures_the_child_not_server_memory() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pids = start_reporting_pids(
        &session,
        "flood",
        "echo $$; exec yes flood-flood-flood-flood",
        1,
    )
    .await?;
    let child = pids[0];
    // Stop reading (the harness reads only while a test waits on it). The child must
    // end up blocked: its write count stops growing.
    let stalled = tokio::time::timeout(Duration::from_secs(30), async {
        let mut last = proc_field(child, "io", "wchar:");
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = proc_field(child, "io", "wchar:");
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the child blocks once the client stops reading");
    let server_pid = server.pid().expect("server pid");
    let rss_kib = proc_field(server_pid, "status", "VmRSS:");
    assert!(
        rss_kib < 200 * 1024,
        "server RSS {rss_kib} KiB with {stalled} bytes produced"
    );
    assert!(
        stalled < 512 * 1024 * 1024,
        "the child was stopped early, at {stalled} bytes"
    );
    conn.call(&TerminateParams {
        process_id: "flood".into(),
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_background_job_that_closed_its_output_dies_with_terminate_and_with_the_session(
) -> TestResult {
    let server = start_server(Transport::WebSocket, &["--session-ttl", "300ms"]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let daemon = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!";
    let first = start_reporting_pids(&session, "first", daemon, 1).await?[0];
    session.read_to_end("first").await?;
    assert!(process_alive(first), "outlives its parent's close");
    conn.call(&TerminateParams {
        process_id: "first".into(),
    })
    .await?;
    wait_for_process_gone(first, server.default_wait()).await?;

    let second = start_reporting_pids(&session, "second", daemon, 1).await?[0];
    session.read_to_end("second").await?;
    // Not resumed: the detached session expires after its TTL and takes the job along.
    conn.disconnect().await?;
    wait_for_process_gone(second, server.default_wait()).await?;
    Ok(())
}

#[tokio::test]
async fn finished_processes_release_their_pipes_and_ptys() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let server_pid = server.pid().expect("server pid");
    session.start_with(spec("warm-up", ["true"])).await?;
    session.read_to_end("warm-up").await?;
    let baseline = open_fds(server_pid);
    for i in 0..20 {
        let tty = i % 2 == 0;
        let id = format!("p{i}");
        session
            .start_with(spec(&id, ["sh", "-c", "exit 0"]).pipe_stdin(true).tty(tty))
            .await?;
        session.read_to_end(&id).await?;
    }
    let released = tokio::time::timeout(server.default_wait(), async {
        while open_fds(server_pid) > baseline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "server holds {} fds, {baseline} before the processes ran",
        open_fds(server_pid)
    );
    Ok(())
}
