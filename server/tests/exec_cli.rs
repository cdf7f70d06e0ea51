//! `exec-server exec`: the command-line client, run as a real process.

mod common;

use assert_cmd::Command;
use common::*;
use exec_server_harness::Transport;
use predicates::prelude::PredicateBooleanExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_exec-server");

fn exec(connect: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["exec", "--connect", connect])
        .timeout(std::time::Duration::from_secs(30));
    command
}

#[tokio::test]
async fn streams_stdout_and_stderr_and_exits_with_the_remote_code() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        exec(&url)
            .args(["--", "sh", "-c", "echo out; echo err >&2; exit 3"])
            .output()
    })
    .await
    .expect("task")?;
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    Ok(())
}

#[tokio::test]
async fn ten_mib_through_cat_is_byte_exact() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = data.clone();
    // Not assert_cmd's `write_stdin`: it finishes writing stdin before its timeout
    // starts, so an `exec` that stopped reading would hang the test.
    let output = tokio::task::spawn_blocking(move || {
        output_within(
            std::process::Command::new(BIN).args(["exec", "--connect", &url, "--", "cat"]),
            Some(data),
            std::time::Duration::from_secs(30),
            "exec -- cat with 10 MiB on stdin",
        )
    })
    .await
    .expect("task");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == expected,
        "{} bytes back, {} sent",
        output.stdout.len(),
        expected.len()
    );
    Ok(())
}

#[test]
fn a_stdio_server_command_env_cwd_and_signal_exit_codes() {
    let connect = format!("stdio:{BIN} --listen stdio");
    exec(&connect)
        .args([
            "--cwd",
            "/tmp",
            "-e",
            "GREETING=hello",
            "--",
            "sh",
            "-c",
            "echo $GREETING from $(pwd)",
        ])
        .assert()
        .success()
        .stdout("hello from /tmp\n");
    exec(&connect)
        .args(["--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(137);
    exec(&connect)
        .args(["--", "/no/such/program"])
        .assert()
        .code(255)
        .stderr(predicates::str::contains("failed to start"));
}

#[test]
fn environments_file_and_url_variable_select_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("environments.toml");
    let program = BIN.replace('\\', "\\\\");
    std::fs::write(
        &file,
        format!("default = \"local\"\n\n[[environments]]\nid = \"local\"\nprogram = \"{program}\"\nargs = [\"--listen\", \"stdio\"]\n"),
    )
    .expect("write");
    let run = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .arg("exec")
            .args(args)
            .env("EXEC_SERVER_ENVIRONMENTS", &file)
            .env_remove("EXEC_SERVER_URL")
            .timeout(std::time::Duration::from_secs(30));
        command
    };
    run(&["--", "echo", "default"])
        .assert()
        .success()
        .stdout("default\n");
    run(&["--environment", "local", "--", "echo", "named"])
        .assert()
        .success()
        .stdout("named\n");
    run(&["--environment", "nope", "--", "true"])
        .assert()
        .code(255)
        .stderr(predicates::str::contains("nope"));
    let mut overridden = run(&["--", "true"]);
    overridden.env("EXEC_SERVER_URL", "none");
    overridden
        .assert()
        .code(255)
        .stderr(predicates::str::contains("no exec-server given"));
    std::fs::write(&file, "[[environments]]\nid = \"x\"\n").expect("write");
    run(&["--", "true"])
        .assert()
        .code(255)
        .stderr(predicates::str::contains("environments.toml:1:"));
}

#[test]
fn ctrl_c_interrupts_the_remote_command() {
    use std::io::BufRead;
    let connect = format!("stdio:{BIN} --listen stdio");
    let mut child = std::process::Command::new(BIN)
        .args([
            "exec",
            "--connect",
            &connect,
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 1000",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let read = std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .map(|_| first);
        let _ = sender.send(read);
    });
    let first = match receiver.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(read) => read.expect("line"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec printed no first line (\"started\") within 30 s");
        }
    };
    assert_eq!(first, "started\n");
    // SAFETY: signalling the exec client we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec did not finish within 10 s after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(
        status.code(),
        Some(130),
        "128 + SIGINT from the remote side"
    );
}

/// `exec` reaches a server that requires a token through each source of it, and fails
/// with the server's explanation and exit code 255 without one. The token is never a
/// command-line value.
#[tokio::test]
async fn the_token_comes_from_a_file_the_environment_or_an_environments_entry() -> TestResult {
    const TOKEN: &str = "exec-token-3f9a";
    let server = exec_server_bin().auth_token(TOKEN).start().await?;
    let url = server.url().expect("url").to_owned();
    let directory = tempfile::tempdir()?;
    std::fs::write(directory.path().join("server.token"), format!("{TOKEN}\n"))?;
    let environments = directory.path().join("environments.toml");
    std::fs::write(
        &environments,
        format!("default = \"box\"\n\n[[environments]]\nid = \"box\"\nurl = \"{url}\"\ntoken_file = \"server.token\"\n"),
    )?;
    let token_file = directory.path().join("server.token");
    tokio::task::spawn_blocking(move || {
        let echo = ["--", "echo", "in"];
        exec(&url)
            .env_remove("EXEC_SERVER_TOKEN")
            .args(echo)
            .assert()
            .code(255)
            .stderr(
                predicates::str::contains("401")
                    .and(predicates::str::contains("--auth-token-file")),
            );
        exec(&url)
            .env_remove("EXEC_SERVER_TOKEN")
            .arg("--token-file")
            .arg(&token_file)
            .args(echo)
            .assert()
            .success()
            .stdout("in\n");
        exec(&url)
            .env("EXEC_SERVER_TOKEN", TOKEN)
            .args(echo)
            .assert()
            .success()
            .stdout("in\n");
        // The environments file's default entry, with its token file beside it.
        Command::new(BIN)
            .env_remove("EXEC_SERVER_TOKEN")
            .env_remove("EXEC_SERVER_URL")
            .args(["exec", "--environments-file"])
            .arg(&environments)
            .args(echo)
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .success()
            .stdout("in\n");
        Command::new(BIN)
            .args(["exec", "--token", TOKEN, "--connect", &url])
            .args(echo)
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .code(2);
    })
    .await
    .expect("task");
    Ok(())
}
