//! EOF on stdin (docs/protocol.md §2.2): the requests already read are answered (within
//! a grace of 2 s; a long-poll still waiting then returns what it has), notifications
//! already produced are flushed, then the processes are killed and the server exits 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use exec_server_harness::{process_alive, wait_for_process_gone};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_exec-server");

/// The stdio session "by hand" from README.md, exactly as printed there.
fn readme_stdio_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once("A session over stdio, by hand:")
        .expect("README.md has the stdio example");
    let (_, block) = after.split_once("```sh\n").expect("a sh block follows");
    let (block, _) = block.split_once("```").expect("the block ends");
    assert!(block.contains("| exec-server --listen stdio"), "{block}");
    block.to_owned()
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn reply(messages: &[Value], id: i64) -> &Value {
    messages
        .iter()
        .find(|message| message["id"] == id)
        .unwrap_or_else(|| panic!("no reply to request {id} in {messages:#?}"))
}

#[test]
fn the_readme_stdio_example_answers_every_request_with_the_output() {
    let script = readme_stdio_example();
    let bin_dir = std::path::Path::new(BIN)
        .parent()
        .expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    const RUNS: usize = 20;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for run in 1..=RUNS {
        let run_started = Instant::now();
        let output = output_within(
            Command::new("sh").args(["-c", &script]).env("PATH", &path),
            None,
            Duration::from_secs(20),
            &format!("the README stdio example, run {run}"),
        );
        slowest = slowest.max(run_started.elapsed());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "run {run}: {}: {stderr}",
            output.status
        );
        let messages = lines(&output.stdout);
        assert!(
            reply(&messages, 1)["result"]["sessionId"].is_string(),
            "run {run}"
        );
        assert_eq!(
            reply(&messages, 2)["result"]["processId"],
            "p1",
            "run {run}: {messages:#?}"
        );
        let read = &reply(&messages, 3)["result"];
        let chunks = read["chunks"].as_array().expect("chunks");
        assert!(
            chunks.iter().any(|chunk| unb64(&chunk["chunk"]) == b"hi\n"),
            "run {run}: the output is in the read's result: {read}"
        );
    }
    eprintln!(
        "{RUNS} runs of the README example took {:?} (slowest {slowest:?})",
        started.elapsed()
    );
}

/// Runs the binary on stdio with `input` and EOF; returns its stdout lines, its exit
/// status, and how long it took.
fn run_stdio(input: &[Value]) -> (Vec<Value>, std::process::ExitStatus, Duration) {
    let mut text = String::new();
    for message in input {
        text.push_str(&message.to_string());
        text.push('\n');
    }
    let started = Instant::now();
    let output = output_within(
        Command::new(BIN).args(["--listen", "stdio"]),
        Some(text.into_bytes()),
        Duration::from_secs(20),
        "exec-server --listen stdio",
    );
    (lines(&output.stdout), output.status, started.elapsed())
}

fn handshake() -> [Value; 2] {
    [
        json!({"id": 1, "method": "initialize", "params": {"clientName": CLIENT}}),
        json!({"method": "initialized"}),
    ]
}

#[tokio::test]
async fn eof_answers_pipelined_requests_and_a_long_poll_returns_what_it_has_at_the_grace() {
    let mut input = handshake().to_vec();
    input.extend([
        // Prints its pid (which leads its group), then stays.
        json!({"id": 2, "method": "process/start", "params": {"processId": "p", "argv": ["sh", "-c", "echo $$; exec sleep 60"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}}}),
        json!({"id": 3, "method": "environment/info", "params": {}}),
        // Returns once the pid is there.
        json!({"id": 4, "method": "process/read", "params": {"processId": "p", "waitMs": 10000}}),
        // Nothing comes after the pid: cut by the grace.
        json!({"id": 5, "method": "process/read", "params": {"processId": "p", "afterSeq": 1, "waitMs": 10000}}),
        json!({"id": 6, "method": "fs/getMetadata", "params": {"path": "/"}}),
    ]);
    let (messages, status, took) = run_stdio(&input);
    assert_eq!(status.code(), Some(0), "{messages:#?}");
    for id in 1..=6 {
        assert!(
            reply(&messages, id).get("result").is_some(),
            "request {id} was answered with a result: {messages:#?}"
        );
    }
    let first = &reply(&messages, 4)["result"]["chunks"][0];
    let pid: i32 = String::from_utf8(unb64(&first["chunk"]))
        .expect("utf-8")
        .trim()
        .parse()
        .expect("a pid");
    let cut = &reply(&messages, 5)["result"];
    assert_eq!(cut["chunks"], json!([]), "{cut}");
    assert_eq!(cut["exited"], false, "{cut}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "the long-poll ends with the 2 s grace, not before and not at its 10 s: {took:?}"
    );
    // The output notification produced before EOF arrived.
    assert!(
        messages
            .iter()
            .any(|message| message["method"] == "process/output" && message["params"]["seq"] == 1),
        "{messages:#?}"
    );
    wait_for_process_gone(pid, Duration::from_secs(5))
        .await
        .expect("the child is killed at exit");
}

/// Notifications produced before EOF are flushed, even when no request waits for them.
#[test]
fn notifications_produced_before_eof_arrive() {
    let mut input = handshake().to_vec();
    input.push(json!({"id": 2, "method": "process/start", "params": {"processId": "p", "argv": ["sh", "-c", "seq 1 2000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}}}));
    // Long enough for all of the output to have been produced.
    input.push(json!({"id": 3, "method": "process/read", "params": {"processId": "p", "afterSeq": 1000000, "waitMs": 1500}}));
    let (messages, status, _) = run_stdio(&input);
    assert_eq!(status.code(), Some(0));
    let read = &reply(&messages, 3)["result"];
    assert_eq!(
        read["closed"], true,
        "the process ended within the wait: {read}"
    );
    let mut output = Vec::new();
    let mut closed = false;
    for message in &messages {
        match message["method"].as_str() {
            Some("process/output") => output.extend(unb64(&message["params"]["chunk"])),
            Some("process/closed") => closed = true,
            _ => {}
        }
    }
    let expected: String = (1..=2000).map(|n| format!("{n}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&output), expected);
    assert!(closed, "process/closed arrived");
}

#[tokio::test]
async fn sigterm_during_the_grace_ends_the_server_promptly() {
    let mut child = Command::new(BIN)
        .args(["--listen", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut input = handshake().to_vec();
    input.push(json!({"id": 2, "method": "process/start", "params": {"processId": "p", "argv": ["sh", "-c", "echo $$; exec sleep 60"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}}}));
    input.push(
        json!({"id": 3, "method": "process/read", "params": {"processId": "p", "waitMs": 10000}}),
    );
    input.push(json!({"id": 4, "method": "process/read", "params": {"processId": "p", "afterSeq": 1, "waitMs": 10000}}));
    for message in &input {
        writeln!(stdin, "{message}").expect("write");
    }
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Once the pid is read, request 4 is a long-poll in flight.
    let pid = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "stdout ended early"
        );
        let message: Value = serde_json::from_str(&line).expect("JSON");
        if message["id"] == 3 {
            let chunk = unb64(&message["result"]["chunks"][0]["chunk"]);
            break String::from_utf8(chunk)
                .expect("utf-8")
                .trim()
                .parse::<i32>()
                .expect("pid");
        }
    };
    drop(stdin); // EOF: the grace starts
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "SIGTERM cuts the grace short: {took:?} ({status})"
    );
    assert!(status.success(), "{status}");
    wait_for_process_gone(pid, Duration::from_secs(5))
        .await
        .expect("the child is killed");
    assert!(!process_alive(pid));
}
