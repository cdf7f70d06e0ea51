//! `exec-server exec` as people who use ssh, docker exec and kubectl exec expect it:
//! errors that say what to do, `EXEC_SERVER_URL` and the environments file, plain logs
//! off a terminal, `--version` everywhere, shell completions, sizes with units. Every
//! case runs the real binary.

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::*;
use exec_server_harness::Transport;

const BIN: &str = env!("CARGO_BIN_EXE_exec-server");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The binary with a clean environment for `exec`: no URL, token or environments file
/// from the developer's shell, and config looked up under an empty directory.
fn bin(config_home: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("EXEC_SERVER_URL")
        .env_remove("EXEC_SERVER_TOKEN")
        .env_remove("EXEC_SERVER_ENVIRONMENTS")
        .env_remove("RUST_LOG")
        .env("XDG_CONFIG_HOME", config_home)
        .timeout(TIMEOUT);
    command
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Run {
    let output = command.output().expect("run exec-server");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `exec --connect CONNECT -- true`, in a blocking task.
async fn exec_true(connect: String) -> Run {
    let config = tempfile::tempdir().expect("tempdir");
    tokio::task::spawn_blocking(move || {
        run(bin(config.path()).args(["exec", "--connect", &connect, "--", "true"]))
    })
    .await
    .expect("task")
}

/// The error is printed once, as one `exec-server exec:` message, and exec fails.
fn assert_one_error(run: &Run) {
    assert_eq!(run.code, Some(255), "stderr: {}", run.stderr);
    assert_eq!(
        run.stderr.matches("exec-server exec:").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("transport disconnected"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}

#[tokio::test]
async fn connection_refused_names_the_url_and_how_to_start_a_server() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let run = exec_true(url.clone()).await;
    assert_one_error(&run);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("exec-server --listen ws://127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_url_with_a_path_is_explained() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").trim_end_matches('/').to_owned();
    let run = exec_true(format!("{url}/foo")).await;
    assert_one_error(&run);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    assert!(
        run.stderr.contains("serves its websocket at / only")
            && run.stderr.contains("drop the path /foo")
            && run.stderr.contains(&format!("--connect {url}")),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn wss_to_a_plain_server_suggests_ws() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").trim_end_matches('/').to_owned();
    let secure = url.replacen("ws://", "wss://", 1);
    let run = exec_true(secure).await;
    assert_one_error(&run);
    assert!(run.stderr.contains("TLS handshake"), "{}", run.stderr);
    assert!(
        run.stderr.contains("may speak plain ws://")
            && run.stderr.contains(&format!("--connect {url}")),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn stdio_cat_is_no_exec_server() {
    let run = exec_true("stdio:cat".into()).await;
    assert_one_error(&run);
    assert!(
        run.stderr
            .contains("`cat`: it sent a request instead of answering"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--listen stdio"), "{}", run.stderr);
}

#[tokio::test]
async fn stdio_output_that_is_not_the_protocol_is_quoted() {
    let run = exec_true("stdio:sh -c 'echo hello; sleep 5'".into()).await;
    assert_one_error(&run);
    assert!(
        run.stderr
            .contains("it wrote \"hello\" on its stdout instead of the protocol"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--listen stdio"), "{}", run.stderr);
}

#[tokio::test]
async fn an_unresolvable_ssh_host_shows_the_childs_stderr_once() {
    let line = "ssh: Could not resolve hostname nosuchhost.invalid: Name or service not known";
    let run = exec_true(format!("stdio:sh -c 'echo \"{line}\" >&2; exit 255'")).await;
    assert_one_error(&run);
    // Once as a line of its own (the simulated command line quotes it too).
    let shown = run.stderr.lines().filter(|shown| shown.trim() == line);
    assert_eq!(shown.count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("exited (or closed its stdin or stdout) before the handshake"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--listen stdio"), "{}", run.stderr);
}

#[tokio::test]
async fn a_command_that_exits_at_once_is_reported() {
    let run = exec_true("stdio:false".into()).await;
    assert_one_error(&run);
    assert!(
        run.stderr.contains("`false`: it exited")
            && run.stderr.contains("it wrote nothing on stderr"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn only_the_first_stderr_lines_are_shown() {
    let run =
        exec_true("stdio:sh -c 'for i in $(seq 1 50); do echo line$i >&2; done; exit 1'".into())
            .await;
    assert_one_error(&run);
    assert!(
        run.stderr.contains("line1\n") && run.stderr.contains("line10\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("line11"), "{}", run.stderr);
    assert!(
        run.stderr.contains("(40 more lines not shown)"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_url_variable_takes_stdio_commands() {
    let config = tempfile::tempdir().expect("tempdir");
    let run = run(bin(config.path())
        .env("EXEC_SERVER_URL", format!("stdio:{BIN} --listen stdio"))
        .args(["exec", "--", "echo", "via-variable"]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "via-variable\n");
}

/// An environments file under `$XDG_CONFIG_HOME/exec-server/` whose default is a stdio
/// server (with `--output-retention` in units).
fn xdg_config_with_default() -> tempfile::TempDir {
    let config = tempfile::tempdir().expect("tempdir");
    let directory = config.path().join("exec-server");
    std::fs::create_dir(&directory).expect("mkdir");
    std::fs::write(
        directory.join("environments.toml"),
        format!(
            "default = \"here\"\n\n[[environments]]\nid = \"here\"\nprogram = \"{BIN}\"\nargs = [\"--listen\", \"stdio\", \"--output-retention\", \"1MiB\"]\n\n[[environments]]\nid = \"other\"\nurl = \"ws://127.0.0.1:1\"\n"
        ),
    )
    .expect("write");
    config
}

#[test]
fn an_empty_url_variable_is_unset_and_the_file_is_found_under_xdg_config_home() {
    let config = xdg_config_with_default();
    let run = run(bin(config.path()).env("EXEC_SERVER_URL", "").args([
        "exec",
        "--",
        "echo",
        "via-default",
    ]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "via-default\n");
}

#[test]
fn an_unknown_environment_lists_the_known_ids() {
    let config = xdg_config_with_default();
    let run = run(bin(config.path()).args(["exec", "--environment", "nope", "--", "true"]));
    assert_eq!(run.code, Some(255));
    let path = config.path().join("exec-server/environments.toml");
    assert!(
        run.stderr.contains(&format!(
            "no environment \"nope\" in {}; it defines \"here\", \"other\"",
            path.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_environment_without_a_file_says_where_it_looked() {
    let config = tempfile::tempdir().expect("tempdir");
    let run = run(bin(config.path()).args(["exec", "--environment", "nope", "--", "true"]));
    assert_eq!(run.code, Some(255));
    assert!(
        run.stderr.contains("there is no environments file at")
            && run
                .stderr
                .contains(&config.path().join("exec-server").display().to_string()),
        "{}",
        run.stderr
    );
}

#[test]
fn environments_file_errors_point_at_the_bad_field() {
    let config = tempfile::tempdir().expect("tempdir");
    let file = config.path().join("envs.toml");
    std::fs::write(
        &file,
        "[[environments]]\nid = \"a\"\n\nurl = \"http://127.0.0.1:1\"\n",
    )
    .expect("write");
    let run = run(bin(config.path()).args([
        "exec",
        "--environments-file",
        file.to_str().expect("utf-8"),
        "--environment",
        "a",
        "--",
        "true",
    ]));
    assert_eq!(run.code, Some(255));
    assert!(
        run.stderr
            .contains(&format!("{}:4: environments.url:", file.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn exec_logs_are_plain_when_stderr_is_not_a_terminal() {
    let config = tempfile::tempdir().expect("tempdir");
    // The stdio server's stderr line is logged by exec (target exec_client::stderr).
    let connect = format!("stdio:sh -c 'echo server-note >&2; exec {BIN} --listen stdio'");
    let run = run(bin(config.path()).env_remove("NO_COLOR").args([
        "exec",
        "--connect",
        &connect,
        "--",
        "sleep",
        "0.5",
    ]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|line| line.contains("server-note"))
        .unwrap_or_else(|| panic!("no log line in {:?}", run.stderr));
    assert!(!run.stderr.contains('\x1b'), "colour: {:?}", run.stderr);
    assert!(
        line.trim_start().starts_with("INFO"),
        "timestamp or other prefix: {line:?}"
    );
}

#[test]
fn every_command_takes_version() {
    let config = tempfile::tempdir().expect("tempdir");
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        &["--version"][..],
        &["exec", "--version"],
        &["completions", "--version"],
    ] {
        let run = run(bin(config.path()).args(args));
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(run.stdout.contains(version), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_go_to_stdout() {
    let config = tempfile::tempdir().expect("tempdir");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef exec-server"),
        ("fish", "complete -c exec-server"),
    ] {
        let run = run(bin(config.path()).args(["completions", shell]));
        assert_eq!(run.code, Some(0), "{shell}: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        assert!(
            run.stdout.contains("exec") && run.stdout.contains("connect"),
            "{shell}"
        );
    }
    let run = run(bin(config.path()).args(["completions", "tcsh"]));
    assert_eq!(run.code, Some(2));
}

#[test]
fn byte_sizes_take_units() {
    let config = tempfile::tempdir().expect("tempdir");
    let connect =
        format!("stdio:{BIN} --listen stdio --output-retention 1MiB --max-message-bytes 16MiB");
    let run1 = run(bin(config.path()).args(["exec", "--connect", &connect, "--", "echo", "ok"]));
    assert_eq!(run1.code, Some(0), "{}", run1.stderr);
    assert_eq!(run1.stdout, "ok\n");
    let bad = run(bin(config.path()).args(["--listen", "stdio", "--output-retention", "lots"]));
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("1MiB"), "{}", bad.stderr);
}

/// A server that dies mid-run: one line says so, with the transport's reason, and no
/// library warning repeats it.
#[tokio::test]
async fn a_connection_lost_mid_run_is_reported_once_with_its_reason() {
    let server = start_server(Transport::WebSocket, &[])
        .await
        .expect("server");
    let url = server.url().expect("url").to_owned();
    let mut exec = std::process::Command::new(env!("CARGO_BIN_EXE_exec-server"))
        .args([
            "exec",
            "--connect",
            &url,
            "--",
            "sh",
            "-c",
            "echo started; sleep 100",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("exec");
    let mut stdout = std::io::BufReader::new(exec.stdout.take().expect("piped"));
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the remote command started");
    assert_eq!(line, "started\n");
    server.signal(libc::SIGKILL).expect("kill the server");
    let output = wait_with_deadline(exec, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(255), "stderr: {stderr}");
    assert_eq!(stderr.matches("exec-server exec:").count(), 1, "{stderr}");
    assert!(stderr.contains("transport disconnected"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// Waits for `child` to exit, killing it (and failing) after `within`.
fn wait_with_deadline(mut child: std::process::Child, within: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + within;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("exec did not end within {within:?} after its server died");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
