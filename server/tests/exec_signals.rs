//! `exec-server exec` ending early never leaves the remote command behind: a broken pipe
//! on its stdout, SIGTERM, SIGHUP and a second Ctrl-C all terminate the remote process
//! tree before `exec` ends. The server runs on a websocket, so nothing but
//! `process/terminate` ends the remote command (a stdio server dies with its client).
//! Remote processes are found in /proc by a marker in their argv.

mod common;

use std::io::BufRead;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use exec_server_harness::Transport;

const BIN: &str = env!("CARGO_BIN_EXE_exec-server");

/// A string unique to one test run, to put in a remote command's argv.
fn marker() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pids of live processes whose command line contains `marker` (zombies have none).
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    cmdline
                        .windows(marker.len())
                        .any(|window| window == marker.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Fails the test unless no process carries `marker` within `within`.
fn assert_gone_within(marker: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: remote processes {left:?} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit within `within`; kills it and fails the test otherwise.
fn wait_within(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: exec still running after {within:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `exec --connect url -- sh -c script` with its stdout piped and returns once
/// the script's first line, which must be `started`, has arrived.
fn exec_until_started(url: &str, script: &str) -> Child {
    let mut child = std::process::Command::new(BIN)
        .args(["exec", "--connect", url, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        let read = reader.read_line(&mut first).map(|_| first);
        let _ = sender.send(read);
        // Keep reading so the pipe stays open until exec ends.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match receiver.recv_timeout(Duration::from_secs(30)) {
        Ok(read) => assert_eq!(read.expect("line"), "started\n"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec printed no first line (\"started\") within 30 s");
        }
    }
    child
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling the exec client we started (and have not reaped).
    unsafe { libc::kill(child.id() as i32, signal) };
}

async fn websocket_url(
) -> Result<(exec_server_harness::ExecServer, String), exec_server_harness::HarnessError> {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let url = server.url().expect("url").to_owned();
    Ok((server, url))
}

/// `exec -- yes | head -2` ends: exec dies of SIGPIPE (the shell's 141) as soon as
/// `head` is gone, and the remote `yes` is terminated.
#[tokio::test]
async fn a_broken_pipe_terminates_the_remote_command_and_dies_of_sigpipe() -> TestResult {
    let (_server, url) = websocket_url().await?;
    let marker = format!("exec-yes-{}", marker());
    let script = format!(
        "{BIN} exec --connect {url} -- yes {marker} | head -2; echo \"${{PIPESTATUS[0]}}\" >&2"
    );
    let expected = format!("{marker}\n{marker}\n");
    tokio::task::spawn_blocking(move || {
        let output = output_within(
            std::process::Command::new("bash").args(["-c", &script]),
            None,
            Duration::from_secs(30),
            "exec -- yes | head -2",
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "141\n",
            "exec's status in the pipeline (128 + SIGPIPE), and nothing else on stderr"
        );
        assert_gone_within(&marker, Duration::from_secs(5), "yes after the broken pipe");
    })
    .await
    .expect("task");
    Ok(())
}

/// exec with its stdout a pipe we close: it is killed by SIGPIPE.
#[tokio::test]
async fn exec_is_killed_by_sigpipe_when_its_stdout_closes() -> TestResult {
    use std::os::unix::process::ExitStatusExt;
    let (_server, url) = websocket_url().await?;
    let marker = format!("exec-yes-{}", marker());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(BIN)
            .args(["exec", "--connect", &url, "--", "yes", &marker])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn exec");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = sender.send(stdout.read_line(&mut line).map(|_| line));
            // `stdout` is dropped here: the pipe's read end closes.
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("a first line within 30 s")
            .expect("read");
        assert_eq!(line, format!("{marker}\n"));
        let status = wait_within(
            &mut child,
            Duration::from_secs(10),
            "exec after its stdout closed",
        );
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
        assert_gone_within(&marker, Duration::from_secs(5), "yes after the broken pipe");
    })
    .await
    .expect("task");
    Ok(())
}

/// SIGTERM (143) and SIGHUP (129) end exec and the remote command with it.
#[tokio::test]
async fn sigterm_and_sighup_terminate_the_remote_command() -> TestResult {
    let (_server, url) = websocket_url().await?;
    tokio::task::spawn_blocking(move || {
        for (signal_number, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
            let duration = format!("171.{}", marker());
            let mut child =
                exec_until_started(&url, &format!("echo started; exec sleep {duration}"));
            signal(&child, signal_number);
            let status = wait_within(&mut child, Duration::from_secs(10), "exec after the signal");
            assert_eq!(
                status.code(),
                Some(code),
                "signal {signal_number}: {status:?}"
            );
            assert_gone_within(&duration, Duration::from_secs(5), "the remote sleep");
        }
    })
    .await
    .expect("task");
    Ok(())
}

/// A command that ignores SIGINT: the first Ctrl-C is forwarded (and ignored), a second
/// within 2 s terminates it and exec exits 130.
#[tokio::test]
async fn a_second_ctrl_c_terminates_a_command_that_ignores_the_first() -> TestResult {
    let (_server, url) = websocket_url().await?;
    tokio::task::spawn_blocking(move || {
        let duration = format!("171.{}", marker());
        let mut child = exec_until_started(
            &url,
            &format!("trap '' INT; echo started; sleep {duration}; echo not interrupted"),
        );
        // Signals sent at once may be delivered as one: send one every 200 ms (any two
        // are within 2 s of each other) until exec ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("exec still running 10 s after the first Ctrl-C (killed)");
            }
            signal(&child, libc::SIGINT);
            let _ = wait_for_exit(&mut child, Duration::from_millis(200));
        };
        assert_eq!(status.code(), Some(130), "{status:?}");
        assert_gone_within(&duration, Duration::from_secs(5), "the remote sleep");
    })
    .await
    .expect("task");
    Ok(())
}

/// Polls `child` for up to `within`; its status if it exited.
fn wait_for_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
