//! Proves the failure report: deliberately failing tests, run as subprocesses, must
//! print the wire trace (with printable output chunks decoded) and the server's stderr
//! tail, both when they panic and when they return `Err`.

use std::process::Command;

use exec_server_harness::{ExecServer, HarnessError};

const PANICKING: &str = "inner_panicking_test";
const RETURNING_ERR: &str = "inner_err_returning_test";
const STDERR_MARKER: &str = "stderr-marker-from-the-fake-server";

/// Runs only as a subprocess of the test below: `initialize` times out and panics.
#[tokio::test]
#[ignore = "fixture: run as a subprocess by failing_tests_print_the_wire_trace_and_stderr_tail"]
async fn inner_panicking_test() {
    let server = builder().start().await.expect("the fake server starts");
    let conn = server.connect().await.expect("stdio connection");
    conn.initialize("inner")
        .await
        .expect("the fake server never answers");
}

/// Runs only as a subprocess of the test below: `initialize` times out and the test
/// returns the error, which libtest prints with `Debug`.
#[tokio::test]
#[ignore = "fixture: run as a subprocess by failing_tests_print_the_wire_trace_and_stderr_tail"]
async fn inner_err_returning_test() -> Result<(), HarnessError> {
    let server = builder().start().await?;
    let conn = server.connect().await?;
    conn.initialize("inner").await?;
    Ok(())
}

/// A fake stdio "server": logs to stderr, sends one `process/output` notification whose
/// chunk is base64 of "hello-from-fake\n", then never reads or answers.
fn builder() -> exec_server_harness::ExecServerBuilder {
    let script = format!(
        r#"echo {STDERR_MARKER} >&2; echo '{{"jsonrpc":"2.0","method":"process/output","params":{{"processId":"p","seq":1,"stream":"stdout","chunk":"aGVsbG8tZnJvbS1mYWtlCg=="}}}}'; exec sleep 1000"#
    );
    ExecServer::builder()
        .stdio()
        .command(["sh", "-c", &script])
        .time_scale(0.1)
}

fn run_inner(name: &str) -> String {
    let test_binary = std::env::current_exe().expect("current test binary");
    let output = Command::new(test_binary)
        .args([
            "--ignored",
            "--exact",
            name,
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
    printed
}

#[test]
fn failing_tests_print_the_wire_trace_and_stderr_tail() {
    for name in [PANICKING, RETURNING_ERR] {
        let printed = run_inner(name);
        assert!(
            printed.contains("timed out after"),
            "{name}: the timeout says what it waited for:\n{printed}"
        );
        assert!(
            printed.contains("==== exec-server harness: wire trace"),
            "{name}:\n{printed}"
        );
        assert!(
            printed.contains(r#"-> {"jsonrpc":"2.0","id":1,"method":"initialize""#),
            "{name}: the trace shows the request that went unanswered:\n{printed}"
        );
        assert!(
            printed.contains(r#""chunk(text)":"hello-from-fake\n""#),
            "{name}: the trace shows the output chunk decoded:\n{printed}"
        );
        assert!(
            printed.contains("==== exec-server stderr (tail) ===="),
            "{name}:\n{printed}"
        );
        assert!(
            printed.contains(STDERR_MARKER),
            "{name}: the stderr tail is printed:\n{printed}"
        );
    }
}
