//! README.md's shell examples, run as printed: each ```sh block is found by its content
//! (so a changed README runs its new text) and run with `bash -c`, the binary under test
//! first on `PATH`, a temporary `HOME` for `~`, stdin from `/dev/null`, and only the
//! port 8765 replaced by a free one (and, for the token example, `build-box` by
//! `127.0.0.1`). The block runs in its own process group, which is killed when it ends
//! (or on its deadline), taking the servers it started in the background with it.
//!
//! Not here: the ssh example (needs a host), the `exec-server --help`-style listing, and
//! the stdio session by hand (server/tests/stdio_eof.rs runs it).

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_exec-server");

/// How long one block may take; each finishes in well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

/// The one ```sh block of README.md that contains `needle`, as printed.
fn readme_block(needle: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some((_, after)) = rest.split_once("```sh\n") {
        let (block, after) = after.split_once("```").expect("a ```sh block ends");
        blocks.push(block.to_owned());
        rest = after;
    }
    let mut matching: Vec<String> = blocks
        .into_iter()
        .filter(|block| block.contains(needle))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "README.md should have exactly one sh block containing {needle:?}: {matching:#?}"
    );
    matching.remove(0)
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// `block` with the README's port 8765 replaced by a free one, and that port.
fn with_free_port(block: &str) -> (String, u16) {
    assert!(block.contains("8765"), "the block uses port 8765: {block}");
    let port = free_port();
    (block.replace("8765", &port.to_string()), port)
}

/// `stdout` without the one line that is `url` (the server the block started in the
/// background prints its URL on stdout, as the README says, and it shares the
/// terminal with the rest).
fn without_server_url<'a>(stdout: &'a str, url: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|line| **line == url).count(),
        1,
        "the server prints {url} once on stdout:\n{stdout}"
    );
    lines.into_iter().filter(|line| *line != url).collect()
}

/// Kills a process group when dropped (also when a test panics).
struct GroupGuard(i32);

impl GroupGuard {
    fn signal(&self, signal: i32) {
        // SAFETY: killpg has no memory-safety preconditions; the group is the one this
        // test created (a stale id at worst gets ESRCH).
        unsafe { libc::killpg(self.0, signal) };
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `script` with `bash -c` in its own process group (see the module comment) and
/// returns its status and output once it and everything it left behind are gone.
fn run_block(script: &str, home: &std::path::Path) -> Run {
    let bin_dir = std::path::Path::new(BIN)
        .parent()
        .expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("HOME", home)
        .env_remove("EXEC_SERVER_URL")
        .env_remove("EXEC_SERVER_TOKEN")
        .env_remove("EXEC_SERVER_ENVIRONMENTS")
        .env_remove("XDG_CONFIG_HOME")
        .current_dir(home)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bash");
    let group = GroupGuard(child.id() as i32);
    let (sender, receiver) = std::sync::mpsc::channel();
    let pipes: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.stdout.take().expect("piped stdout"))),
        (1, Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    for (index, mut pipe) in pipes {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((index, bytes));
        });
    }
    let deadline = started + DEADLINE;
    let status = loop {
        match child.try_wait().expect("wait for bash") {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                drop(group);
                let _ = child.wait();
                panic!("still running after {DEADLINE:?} (killed):\n{script}");
            }
        }
    };
    let took = started.elapsed();
    // What the block left running in the background (the servers): ended as a reader
    // would end them, with SIGTERM; the guard's SIGKILL follows in any case.
    group.signal(libc::SIGTERM);
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let (index, bytes) = receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!("bash exited ({status}) but its stdout or stderr stayed open:\n{script}")
            });
        streams[index] = bytes;
    }
    drop(group);
    let [stdout, stderr] = streams.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Run {
        status,
        stdout,
        stderr,
        took,
    }
}

#[test]
fn the_readme_exec_example_prints_hi_and_data() {
    let block = readme_block("exec-server exec --connect ws://127.0.0.1:8765");
    let (script, port) = with_free_port(&block);
    let home = tempfile::tempdir().expect("tempdir");
    let run = run_block(&script, home.path());
    eprintln!("exec example took {:?}", run.took);
    assert!(
        run.status.success(),
        "{script}\nexited {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(
        without_server_url(&run.stdout, &format!("ws://127.0.0.1:{port}")),
        ["hi", "data"],
        "{script}\nstderr:\n{}",
        run.stderr
    );
}

#[test]
fn the_readme_token_example_runs_uname_on_the_server() {
    let block = readme_block("--auth-token-file ~/.exec-server.token");
    assert!(block.contains("build-box"), "{block}");
    let (script, port) = with_free_port(&block);
    let script = script.replace("build-box", "127.0.0.1");
    // The README runs the server in the foreground (a reader would go on in another
    // terminal); here it goes to the background, the only change to its lines.
    let script: String = script
        .lines()
        .map(|line| {
            if line.starts_with("exec-server --listen") && !line.trim_end().ends_with('&') {
                format!("{line} &\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(
        script.contains("--auth-token-file ~/.exec-server.token &\n"),
        "{script}"
    );
    let home = tempfile::tempdir().expect("tempdir");
    let run = run_block(&script, home.path());
    eprintln!("token example took {:?}", run.took);
    assert!(
        run.status.success(),
        "{script}\nexited {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let lines = without_server_url(&run.stdout, &format!("ws://0.0.0.0:{port}"));
    assert!(
        lines.len() == 1 && lines[0].starts_with("Linux"),
        "uname -a should print one line starting with Linux:\n{script}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let token = home.path().join(".exec-server.token");
    assert!(token.is_file(), "the block writes ~/.exec-server.token");
}
