//! Process execution (PROTOCOL.md §6) end to end through the real binary.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn echo_output_exit_code_and_stream_separation() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        client.start("echo", &["echo", "hello world"]).await;
        let output = client.output_until_closed("echo").await;
        assert_eq!(output.stdout, b"hello world\n", "{transport:?}");
        assert_eq!(output.exit_code, Some(0));

        client
            .start("split", &["sh", "-c", "echo out; echo err >&2; exit 7"])
            .await;
        let output = client.output_until_closed("split").await;
        assert_eq!(output.stdout, b"out\n", "{transport:?}");
        assert_eq!(output.stderr, b"err\n", "{transport:?}");
        assert_eq!(output.exit_code, Some(7));
        assert_eq!(output.exit_signal, None);
    }
}

#[tokio::test]
async fn environment_is_exactly_env_and_arg0_overrides_argv0() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client
        .call("process/start", json!({"processId": "env", "argv": ["/usr/bin/env"], "cwd": "/tmp", "env": {"ONLY": "this"}}))
        .await;
    assert_eq!(
        client.output_until_closed("env").await.stdout,
        b"ONLY=this\n"
    );

    client
        .call(
            "process/start",
            json!({
                "processId": "policy", "argv": ["/usr/bin/env"], "cwd": "/", "env": {"B": "2"},
                "envPolicy": {"inherit": "none", "set": {"A": "1"}},
            }),
        )
        .await;
    assert_eq!(
        client.output_until_closed("policy").await.stdout,
        b"A=1\nB=2\n"
    );

    client
        .call("process/start", json!({"processId": "arg0", "argv": ["/bin/cat", "/proc/self/cmdline"], "arg0": "renamed", "cwd": "/", "env": {}}))
        .await;
    assert_eq!(
        client.output_until_closed("arg0").await.stdout,
        b"renamed\0/proc/self/cmdline\0"
    );

    client
        .call(
            "process/start",
            json!({"processId": "cwd", "argv": ["/bin/pwd"], "cwd": "/tmp", "env": {}}),
        )
        .await;
    assert_eq!(client.output_until_closed("cwd").await.stdout, b"/tmp\n");
}

#[tokio::test]
async fn start_errors_leave_nothing_behind() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let missing = json!({"processId": "x", "argv": ["/no/such/program"], "cwd": "/", "env": {}});
    let error = client.call_err("process/start", missing).await;
    assert_eq!(error["code"], -32603);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("No such file"),
        "{error}"
    );
    let bad_cwd =
        json!({"processId": "x", "argv": ["/bin/true"], "cwd": "/no/such/dir", "env": {}});
    assert_eq!(
        client.call_err("process/start", bad_cwd).await["code"],
        -32603
    );
    // The id was not kept by the failed starts.
    client.start("x", &["true"]).await;
    let error = client
        .call_err("process/read", json!({"processId": "nope"}))
        .await;
    assert_eq!(error["code"], -32600);
    assert_eq!(error["message"], "unknown process id nope");
}

#[tokio::test]
async fn duplicate_process_ids_are_refused_while_the_entry_exists() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client.start("dup", &["sleep", "1000"]).await;
    let params = json!({"processId": "dup", "argv": ["true"], "cwd": "/", "env": {}});
    let error = client.call_err("process/start", params.clone()).await;
    assert_eq!(error["code"], -32600);
    assert_eq!(error["message"], "process dup already exists");
    client
        .call("process/terminate", json!({"processId": "dup"}))
        .await;
    client.output_until_closed("dup").await;
    // Closed but not yet evicted: still refused.
    assert_eq!(
        client.call_err("process/start", params).await["message"],
        "process dup already exists"
    );

    // Of two racing starts with one id exactly one succeeds.
    let first = client
        .send_request(
            "process/start",
            json!({"processId": "race", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .await;
    let second = client
        .send_request(
            "process/start",
            json!({"processId": "race", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .await;
    let outcomes = [
        client.response(&first).await,
        client.response(&second).await,
    ];
    assert_eq!(
        outcomes
            .iter()
            .filter(|r| r.get("result").is_some())
            .count(),
        1,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn pty_round_trip_and_resize() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        client
            .start_with("tty", &["cat"], json!({"tty": true}))
            .await;
        let status = client
            .call(
                "process/write",
                json!({"processId": "tty", "chunk": b64(b"hello pty\n")}),
            )
            .await;
        assert_eq!(status["status"], "accepted");
        client
            .wait_events("cat's echo on the pty", |events| {
                let text: Vec<u8> = events
                    .iter()
                    .filter(|e| e["params"]["stream"] == "pty")
                    .flat_map(|e| unb64(&e["params"]["chunk"]))
                    .collect();
                // The terminal echoes the line, then cat prints it: twice in all.
                String::from_utf8_lossy(&text).matches("hello pty").count() == 2
            })
            .await;
        client
            .call(
                "process/resize",
                json!({"processId": "tty", "rows": 50, "cols": 132}),
            )
            .await;
        client
            .call(
                "process/write",
                json!({"processId": "tty", "chunk": "", "closeStdin": true}),
            )
            .await;
        let output = client.output_until_closed("tty").await;
        assert_eq!(
            output.exit_code,
            Some(0),
            "{transport:?}: EOF character ends cat"
        );
        assert!(output.stdout.is_empty() && output.stderr.is_empty());
    }
}

#[tokio::test]
async fn pty_size_is_24_by_80_and_resize_is_seen_by_the_child() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client
        .start_with("size", &["stty", "size"], json!({"tty": true}))
        .await;
    assert_eq!(client.output_until_closed("size").await.pty, b"24 80\r\n");
    client
        .start_with(
            "resized",
            &["sh", "-c", "read go; stty size"],
            json!({"tty": true}),
        )
        .await;
    client
        .call(
            "process/resize",
            json!({"processId": "resized", "rows": 40, "cols": 100}),
        )
        .await;
    client
        .call(
            "process/write",
            json!({"processId": "resized", "chunk": b64(b"go\n")}),
        )
        .await;
    let output = client.output_until_closed("resized").await;
    assert!(
        String::from_utf8_lossy(&output.pty).ends_with("40 100\r\n"),
        "{:?}",
        output
    );
    client.start("plain", &["true"]).await;
    let error = client
        .call_err(
            "process/resize",
            json!({"processId": "plain", "rows": 1, "cols": 1}),
        )
        .await;
    assert_eq!(error["code"], -32600);
}

#[tokio::test]
async fn write_statuses() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let write = |id: &str| json!({"processId": id, "chunk": b64(b"x")});
    client.start("nostdin", &["sleep", "1000"]).await;
    assert_eq!(
        client.call("process/write", write("nostdin")).await["status"],
        "stdinClosed"
    );
    assert_eq!(
        client.call("process/write", write("ghost")).await["status"],
        "unknownProcess"
    );
    let error = client
        .call_err(
            "process/write",
            json!({"processId": "nostdin", "chunk": "***"}),
        )
        .await;
    assert_eq!(error["code"], -32602);
    client
        .start_with("cat", &["cat"], json!({"pipeStdin": true}))
        .await;
    let close = json!({"processId": "cat", "chunk": b64(b"abc"), "closeStdin": true});
    assert_eq!(
        client.call("process/write", close).await["status"],
        "accepted"
    );
    assert_eq!(
        client.call("process/write", write("cat")).await["status"],
        "stdinClosed"
    );
    let output = client.output_until_closed("cat").await;
    assert_eq!(output.stdout, b"abc");
    assert_eq!(output.exit_code, Some(0), "cat saw EOF");
}

#[tokio::test]
async fn writes_to_one_process_apply_in_arrival_order() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client
        .start_with("cat", &["cat"], json!({"pipeStdin": true}))
        .await;
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for i in 0..200 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        let close = i == 199;
        ids.push(
            client
                .send_request(
                    "process/write",
                    json!({"processId": "cat", "chunk": b64(line.as_bytes()), "closeStdin": close}),
                )
                .await,
        );
    }
    for id in &ids {
        assert_eq!(client.response(id).await["result"]["status"], "accepted");
    }
    assert_eq!(client.output_until_closed("cat").await.stdout, expected);
}

#[tokio::test]
async fn terminate_kills_the_whole_tree() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        let pids = start_reporting_pids(
            &mut client,
            "tree",
            "sleep 1000 & echo $!; echo $$; wait",
            2,
        )
        .await;
        let result = client
            .call("process/terminate", json!({"processId": "tree"}))
            .await;
        assert_eq!(result["running"], true);
        let output = client.output_until_closed("tree").await;
        assert_eq!(output.exit_code, Some(137), "{transport:?}: 128 + SIGKILL");
        assert_eq!(output.exit_signal.as_deref(), Some("SIGKILL"));
        for pid in pids {
            assert_pid_gone(pid).await;
        }
        let result = client
            .call("process/terminate", json!({"processId": "tree"}))
            .await;
        assert_eq!(result["running"], false, "already exited");
        let result = client
            .call("process/terminate", json!({"processId": "never"}))
            .await;
        assert_eq!(result["running"], false, "unknown id is not an error");
    }
}

#[tokio::test]
async fn signals_reach_the_process_group() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    for (signal, number, name) in [
        ("interrupt", 2, "SIGINT"),
        ("terminate", 15, "SIGTERM"),
        ("hangup", 1, "SIGHUP"),
        ("kill", 9, "SIGKILL"),
    ] {
        client.start(signal, &["sleep", "1000"]).await;
        client
            .call(
                "process/signal",
                json!({"processId": signal, "signal": signal}),
            )
            .await;
        let output = client.output_until_closed(signal).await;
        assert_eq!(output.exit_code, Some(128 + number), "{signal}");
        assert_eq!(output.exit_signal.as_deref(), Some(name));
    }
    let error = client
        .call_err(
            "process/signal",
            json!({"processId": "ghost", "signal": "kill"}),
        )
        .await;
    assert_eq!(error["code"], -32600);
}

#[tokio::test]
async fn exited_comes_while_a_grandchild_holds_stdout_then_late_output_then_closed() {
    for transport in BOTH {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        // The background job keeps stdout open and prints only after we write to it.
        let script = "exec 3<&0; (read line <&3; echo \"late $line\") & exit 3";
        client
            .start_with("bg", &["sh", "-c", script], json!({"pipeStdin": true}))
            .await;
        let is_exited =
            |e: &Value| e["method"] == "process/exited" && e["params"]["processId"] == "bg";
        client
            .wait_events("exited", |events| events.iter().any(is_exited))
            .await;
        let exited = client
            .events
            .iter()
            .find(|e| is_exited(e))
            .cloned()
            .expect("exited");
        assert_eq!(exited["params"]["exitCode"], 3);
        let read = client
            .call("process/read", json!({"processId": "bg"}))
            .await;
        assert_eq!(read["exited"], true, "{read}");
        assert_eq!(
            read["closed"], false,
            "the grandchild still holds stdout: {read}"
        );
        client
            .call(
                "process/write",
                json!({"processId": "bg", "chunk": b64(b"now\n"), "closeStdin": true}),
            )
            .await;
        let output = client.output_until_closed("bg").await;
        assert_eq!(output.stdout, b"late now\n", "{transport:?}");
        let exit_seq = exited["params"]["seq"].as_u64().expect("seq");
        let read = client
            .call("process/read", json!({"processId": "bg"}))
            .await;
        let late_seq = read["chunks"][0]["seq"].as_u64().expect("late chunk");
        assert!(late_seq > exit_seq, "output after exited has a later seq");
        assert_eq!(read["closed"], true);
        assert_eq!(read["nextSeq"], late_seq + 1);
    }
}

#[tokio::test]
async fn read_long_poll_max_bytes_and_next_seq() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client
        .start(
            "three",
            &[
                "sh",
                "-c",
                "printf aaaa; sleep 0.05; printf bbbb; sleep 0.05; printf cccc",
            ],
        )
        .await;
    client.output_until_closed("three").await;
    let all = client
        .call("process/read", json!({"processId": "three"}))
        .await;
    let chunks = all["chunks"].as_array().expect("chunks");
    assert!(
        chunks.len() >= 2,
        "separate writes give separate chunks here: {all}"
    );
    let first_len = unb64(&chunks[0]["chunk"]).len() as u64;
    let limited = client
        .call(
            "process/read",
            json!({"processId": "three", "maxBytes": first_len}),
        )
        .await;
    assert_eq!(limited["chunks"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        limited["nextSeq"],
        chunks[0]["seq"].as_u64().expect("seq") + 1
    );
    let tiny = client
        .call("process/read", json!({"processId": "three", "maxBytes": 1}))
        .await;
    assert_eq!(
        tiny["chunks"].as_array().map(Vec::len),
        Some(1),
        "at least one chunk"
    );
    let after_all = client
        .call(
            "process/read",
            json!({"processId": "three", "afterSeq": 1000, "waitMs": 5000}),
        )
        .await;
    assert_eq!(after_all["chunks"], json!([]), "closed returns at once");
    assert_eq!(after_all["closed"], true);
    assert_eq!(after_all["failure"], Value::Null);
    let total_seqs = chunks.len() as u64 + 2;
    assert_eq!(
        after_all["nextSeq"],
        total_seqs + 1,
        "the next unassigned seq counts exit and close"
    );

    client.start("quiet", &["sleep", "1000"]).await;
    let waited = client
        .call("process/read", json!({"processId": "quiet", "waitMs": 50}))
        .await;
    assert_eq!(
        waited["chunks"],
        json!([]),
        "an empty result once waitMs passes"
    );
    assert_eq!(waited["exited"], false);
    assert_eq!(waited["nextSeq"], 1);
}

fn numbers(count: u32) -> Vec<u8> {
    (1..=count)
        .map(|n| format!("{n}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test]
async fn five_mib_byte_exact_through_notifications_and_read() {
    let expected = numbers(800_000);
    assert!(expected.len() > 5 * 1024 * 1024);
    for transport in BOTH {
        let mut server = TestServer::start(transport, &["--output-retention", "16777216"]).await;
        let mut client = server.session().await;
        client.start("seq", &["seq", "1", "800000"]).await;
        let output = client
            .output_until_closed_within("seq", Duration::from_secs(60))
            .await;
        assert!(
            output.stdout == expected,
            "{transport:?}: notifications differ"
        );
        let mut via_read = Vec::new();
        let mut after_seq = 0;
        loop {
            let read = client
                .call(
                    "process/read",
                    json!({"processId": "seq", "afterSeq": after_seq, "maxBytes": 1_000_000}),
                )
                .await;
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
        let whole = client
            .call("process/read", json!({"processId": "seq"}))
            .await;
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
        client.call("environment/info", json!({})).await;
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_bytes_and_reports_what_was_lost() {
    let mut server = TestServer::start(Transport::Ws, &["--output-retention", "1000"]).await;
    let mut client = server.session().await;
    client
        .start(
            "many",
            &[
                "sh",
                "-c",
                "for i in $(seq 1 50); do echo line-$i-padding-padding-padding; sleep 0.001; done",
            ],
        )
        .await;
    let output = client.output_until_closed("many").await;
    let read = client
        .call("process/read", json!({"processId": "many"}))
        .await;
    let first_retained = read["firstRetainedSeq"].as_u64().expect("firstRetainedSeq");
    assert!(first_retained > 1, "older chunks were dropped: {read}");
    let chunks = read["chunks"].as_array().expect("chunks");
    assert_eq!(chunks[0]["seq"], first_retained);
    let retained: Vec<u8> = chunks.iter().flat_map(|c| unb64(&c["chunk"])).collect();
    assert!(retained.len() <= 1000 + 64 * 1024);
    assert!(
        output.stdout.ends_with(&retained),
        "what is retained is the newest output"
    );
}

#[tokio::test]
async fn a_websocket_disconnect_kills_the_sessions_processes() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "tree",
        "sleep 1000 & echo $!; echo $$; wait",
        2,
    )
    .await;
    client.close().await;
    for pid in pids {
        assert_pid_gone(pid).await;
    }
    let mut other = server.session().await;
    other.call("environment/info", json!({})).await;
}

#[tokio::test]
async fn output_is_coalesced_into_chunks_of_at_most_64_kib() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client
        .start("zeros", &["head", "-c", "4194304", "/dev/zero"])
        .await;
    client
        .wait_events("closed", |events| {
            events.iter().any(|e| e["method"] == "process/closed")
        })
        .await;
    let sizes: Vec<usize> = client
        .events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .map(|e| unb64(&e["params"]["chunk"]).len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 4 * 1024 * 1024);
    assert!(sizes.iter().all(|&size| size <= 64 * 1024), "{sizes:?}");
    assert!(
        sizes.len() <= 4 * 1024 * 1024 / 4096,
        "reads are coalesced: {} chunks",
        sizes.len()
    );
}

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_stops_reading_backpressures_the_child_not_server_memory() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let pids = start_reporting_pids(
        &mut client,
        "flood",
        "echo $$; exec yes flood-flood-flood-flood",
        1,
    )
    .await;
    let child = pids[0];
    // Stop reading. The child must end up blocked: its write count stops growing.
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
    let rss_kib = proc_field(server.pid(), "status", "VmRSS:");
    assert!(
        rss_kib < 200 * 1024,
        "server RSS {rss_kib} KiB with {stalled} bytes produced"
    );
    assert!(
        stalled < 512 * 1024 * 1024,
        "the child was stopped early, at {stalled} bytes"
    );
    client
        .call("process/terminate", json!({"processId": "flood"}))
        .await;
}

#[tokio::test]
async fn a_background_job_that_closed_its_output_dies_with_terminate_and_with_the_session() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    let daemon = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!";
    let first = start_reporting_pids(&mut client, "first", daemon, 1).await[0];
    client.output_until_closed("first").await;
    assert!(pid_alive(first), "outlives its parent's close");
    client
        .call("process/terminate", json!({"processId": "first"}))
        .await;
    assert_pid_gone(first).await;

    let second = start_reporting_pids(&mut client, "second", daemon, 1).await[0];
    client.output_until_closed("second").await;
    client.close().await;
    assert_pid_gone(second).await;
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn finished_processes_release_their_pipes_and_ptys() {
    let mut server = TestServer::start(Transport::Ws, &[]).await;
    let mut client = server.session().await;
    client.start("warm-up", &["true"]).await;
    client.output_until_closed("warm-up").await;
    let baseline = open_fds(server.pid());
    for i in 0..20 {
        let tty = i % 2 == 0;
        let id = format!("p{i}");
        client
            .start_with(
                &id,
                &["sh", "-c", "exit 0"],
                json!({"pipeStdin": true, "tty": tty}),
            )
            .await;
        client.output_until_closed(&id).await;
    }
    let released = tokio::time::timeout(DEADLINE, async {
        while open_fds(server.pid()) > baseline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "server holds {} fds, {baseline} before the processes ran",
        open_fds(server.pid())
    );
}
