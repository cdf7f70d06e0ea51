//! `exec-server exec`: the command-line client, run as a real process.

mod common;

use std::os::unix::ffi::OsStrExt as _;

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
            std::process::Command::new(BIN).args(["exec", "--connect", &url, "-i", "--", "cat"]),
            Some(data),
            std::time::Duration::from_secs(30),
            "exec -i -- cat with 10 MiB on stdin",
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

/// The exit code for a program that cannot be started comes from the server's `data`
/// errno. NEEDS the server branch that adds `data: {errno, subject}` to process/start
/// failures; until then the server sends no `data` and exec exits 255.
#[tokio::test]
async fn a_missing_program_exits_127() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    tokio::task::spawn_blocking(move || {
        exec(&url)
            .args(["--", "/no/such/program"])
            .assert()
            .code(127)
            .stderr(
                predicates::str::contains("/no/such/program")
                    .and(predicates::str::contains("-32603").not()),
            );
    })
    .await
    .expect("task");
    Ok(())
}

/// See [`a_missing_program_exits_127`]: needs the server's `data`.
#[tokio::test]
async fn a_program_that_cannot_be_executed_exits_126() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    let directory = tempfile::tempdir()?;
    let script = directory.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho ran\n")?;
    let script = script.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        exec(&url)
            .args(["--", &script])
            .assert()
            .code(126)
            .stdout("")
            .stderr(predicates::str::contains("-32603").not());
    })
    .await
    .expect("task");
    Ok(())
}

/// A `--cwd` that does not exist: exit 255, the server's message once, no JSON-RPC code.
#[tokio::test]
async fn a_bad_cwd_exits_255_without_a_json_rpc_code() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    tokio::task::spawn_blocking(move || {
        let output = exec(&url)
            .args(["--cwd", "/no/such/dir-4711", "--", "true"])
            .output()
            .expect("exec");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(255), "stderr: {stderr}");
        assert!(!stderr.contains("-32603"), "stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one error, once: {stderr}");
        assert!(stderr.starts_with("exec-server exec: "), "stderr: {stderr}");
    })
    .await
    .expect("task");
    Ok(())
}

/// The directory-name half of the bad `--cwd` test. NEEDS the server branch whose
/// spawn-failure message names the directory (today it names the program).
#[tokio::test]
async fn a_bad_cwd_is_named_in_the_message() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    tokio::task::spawn_blocking(move || {
        exec(&url)
            .args(["--cwd", "/no/such/dir-4711", "--", "true"])
            .assert()
            .code(255)
            .stderr(predicates::str::contains("/no/such/dir-4711"));
    })
    .await
    .expect("task");
    Ok(())
}

/// Without `-i` the remote command's stdin is not connected (`cat` ends at once with
/// nothing, though our stdin holds data); with `-i` it is forwarded; `-it` is accepted.
#[tokio::test]
async fn stdin_is_forwarded_only_with_dash_i() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            output_within(
                std::process::Command::new(BIN)
                    .args(["exec", "--connect", &url])
                    .args(args),
                Some(b"from stdin\n".to_vec()),
                std::time::Duration::from_secs(30),
                &format!("exec {args:?}"),
            )
        };
        let output = run(&["--", "cat"]);
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(output.stdout, b"", "no -i: the remote stdin is not ours");
        let output = run(&["-i", "--", "cat"]);
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(output.stdout, b"from stdin\n");
        let output = run(&["--stdin", "--", "cat"]);
        assert_eq!(output.stdout, b"from stdin\n");
        let output = run(&["-it", "--", "sh", "-c", "test -t 0 && echo on a tty"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("on a tty"));
    })
    .await
    .expect("task");
    Ok(())
}

/// `-e NAME` passes our value (nothing when unset); `--env-file` reads NAME=VALUE lines,
/// `-e` wins over it, and a bad line is reported as FILE:LINE.
#[tokio::test]
async fn env_from_our_environment_and_from_files() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    let directory = tempfile::tempdir()?;
    let good = directory.path().join("good.env");
    std::fs::write(&good, "# a comment\n\nFROM_FILE=one two\nOVERRIDDEN=file\n")?;
    let bad = directory.path().join("bad.env");
    std::fs::write(&bad, "OK=1\n# fine\nnot an assignment\n")?;
    tokio::task::spawn_blocking(move || {
        exec(&url)
            .env("EXEC_TEST_LOCAL", "local value")
            .env_remove("EXEC_TEST_UNSET")
            .args([
                "-e",
                "EXEC_TEST_LOCAL",
                "-e",
                "EXEC_TEST_UNSET",
                "--env-file",
            ])
            .arg(&good)
            .args(["-e", "OVERRIDDEN=flag", "--", "sh", "-c"])
            .arg("echo \"$EXEC_TEST_LOCAL|${EXEC_TEST_UNSET-unset}|$FROM_FILE|$OVERRIDDEN\"")
            .assert()
            .success()
            .stdout("local value|unset|one two|flag\n");
        exec(&url)
            .arg("--env-file")
            .arg(&bad)
            .args(["--", "true"])
            .assert()
            .code(255)
            .stderr(predicates::str::contains(format!("{}:3:", bad.display())));
        // A local value that is not UTF-8 is refused, never silently dropped.
        exec(&url)
            .env("EXEC_TEST_BINARY", std::ffi::OsStr::from_bytes(b"a\xffb"))
            .args(["-e", "EXEC_TEST_BINARY", "--", "true"])
            .assert()
            .code(255)
            .stderr(predicates::str::contains(
                "-e EXEC_TEST_BINARY: its value here is not UTF-8",
            ));
    })
    .await
    .expect("task");
    Ok(())
}

/// Under `--tty` the remote command gets our TERM, unless `-e TERM=…` gives another.
/// exec runs on a PTY of its own.
#[tokio::test]
async fn tty_passes_our_term() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    tokio::task::spawn_blocking(move || {
        let output = on_a_pty(&url, &["--tty", "--", "printenv", "TERM"]);
        assert!(output.contains("xterm-exec-test"), "output: {output:?}");
        let output = on_a_pty(&url, &["-t", "-e", "TERM=dumb", "--", "printenv", "TERM"]);
        assert!(
            output.contains("dumb") && !output.contains("xterm-exec-test"),
            "output: {output:?}"
        );
    })
    .await
    .expect("task");
    Ok(())
}

/// Runs `exec --connect url args…` with TERM=xterm-exec-test and a new PTY as its
/// stdin, stdout and stderr; returns what it wrote there. Bounded: 30 s.
fn on_a_pty(url: &str, args: &[&str]) -> String {
    use std::io::Read;
    use std::process::Stdio;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = std::process::Command::new(BIN)
        .args(["exec", "--connect", url])
        .args(args)
        .env("TERM", "xterm-exec-test")
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn exec");
    let mut master = std::fs::File::from(pty.master);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        // Ends with EIO once exec (the last holder of the slave) has exited.
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..n]);
        }
        let _ = sender.send(bytes);
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec {args:?} on a pty still running after 30 s (killed)");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let bytes = receiver
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the pty's output within 10 s of exec's exit");
    let output = String::from_utf8_lossy(&bytes).into_owned();
    assert_eq!(status.code(), Some(0), "exec {args:?}: {output:?}");
    output
}

/// Started before its server: exec retries a refused connection (up to
/// --connect-timeout, 5 s by default) and runs the command once the server listens.
#[tokio::test]
async fn exec_waits_for_a_server_that_is_starting() -> TestResult {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let exec_url = url.clone();
    let exec = tokio::task::spawn_blocking(move || {
        output_within(
            std::process::Command::new(BIN).args([
                "exec",
                "--connect",
                &exec_url,
                "--",
                "echo",
                "reached",
            ]),
            None,
            std::time::Duration::from_secs(30),
            "exec started before its server",
        )
    });
    // The server comes up about a second after exec started.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let _server = exec_server_bin()
        .transport(Transport::WebSocket)
        .listen(url)
        .start()
        .await?;
    let output = exec.await.expect("task");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"reached\n");
    Ok(())
}

/// Without a server, exec gives up after --connect-timeout with 255.
#[test]
fn exec_gives_up_on_a_refused_connection_after_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let started = std::time::Instant::now();
    let output = output_within(
        std::process::Command::new(BIN).args([
            "exec",
            "--connect",
            &format!("ws://127.0.0.1:{port}"),
            "--connect-timeout",
            "300ms",
            "--",
            "true",
        ]),
        None,
        std::time::Duration::from_secs(30),
        "exec without a server",
    );
    assert_eq!(output.status.code(), Some(255));
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one error: {stderr}");
}

/// The exit codes are documented in `exec --help`.
#[test]
fn help_documents_the_exit_codes() {
    Command::new(BIN)
        .args(["exec", "--help"])
        .assert()
        .success()
        .stdout(
            predicates::str::contains("Exit codes:")
                .and(predicates::str::contains("127"))
                .and(predicates::str::contains("126"))
                .and(predicates::str::contains("255"))
                .and(predicates::str::contains("143")),
        );
}
