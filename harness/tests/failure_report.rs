//! Proves the failure report: a deliberately failing test, run as a subprocess, must
//! print the wire trace and the server's stderr tail.

use std::process::Command;

use exec_server_harness::ExecServer;

const INNER_TEST: &str = "inner_deliberately_failing_test";
const STDERR_MARKER: &str = "stderr-marker-from-the-fake-server";

/// Runs only as the subprocess of the test below (`--ignored --exact`). The "server"
/// logs to stderr, then never reads or answers, so `initialize` times out and panics.
#[tokio::test]
#[ignore = "fixture: run as a subprocess by a_failing_test_prints_the_wire_trace_and_stderr_tail"]
async fn inner_deliberately_failing_test() {
    let script = format!("echo {STDERR_MARKER} >&2; exec sleep 1000");
    let server = ExecServer::builder()
        .stdio()
        .command(["sh", "-c", &script])
        .time_scale(0.1)
        .start()
        .await
        .expect("the fake server starts");
    server
        .initialize("inner")
        .await
        .expect("the fake server never answers");
}

#[test]
fn a_failing_test_prints_the_wire_trace_and_stderr_tail() {
    let test_binary = std::env::current_exe().expect("current test binary");
    let output = Command::new(test_binary)
        .args([
            "--ignored",
            "--exact",
            INNER_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the inner test");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "the inner test must fail:\n{printed}"
    );
    assert!(
        printed.contains("timed out after"),
        "the timeout says what it waited for:\n{printed}"
    );
    assert!(
        printed.contains("==== exec-server harness: wire trace"),
        "{printed}"
    );
    assert!(
        printed.contains(r#"-> {"id":1,"jsonrpc":"2.0","method":"initialize""#),
        "the trace shows the request that went unanswered:\n{printed}"
    );
    assert!(
        printed.contains("==== exec-server stderr (tail) ===="),
        "{printed}"
    );
    assert!(
        printed.contains(STDERR_MARKER),
        "the stderr tail is printed:\n{printed}"
    );
}
