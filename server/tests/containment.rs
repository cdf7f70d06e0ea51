//! Containment of process trees (docs/protocol.md §6.1, §6.5, §9) through the real binary:
//! in cgroup mode a `setsid()` descendant dies with its process whatever ends it, and no
//! cgroup directory is left behind, not even by a server whose whole process group is
//! killed as soon as it has started; in both modes a pid that the kernel may have handed
//! to a stranger is never signalled, and the leader of a tree is reaped once the tree
//! is dead or empty.
//!
//! The cgroup tests need a writable cgroup v2 hierarchy, and the pid-reuse tests need to
//! steer the kernel's next pid (`/proc/sys/kernel/ns_last_pid`, root). Where either is
//! missing they print `SKIPPED <test>: <reason>` and return.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use exec_server_harness::protocol::TerminateParams;
use exec_server_harness::{
    process_alive, wait_for_process_gone, ExecServer, HarnessError, Session, Transport,
    DEFAULT_WAIT,
};
use serde_json::json;

const PROCESS_GROUP: &[&str] = &["--containment", "process-group"];
const AUTO: &[&str] = &[];

/// A descendant that left the process group with `setsid()` (it reports its pid only
/// after that) and the shell that started it.
const SETSID_SCRIPT: &str =
    "setsid sh -c 'echo $$; exec sleep 1000 </dev/null >/dev/null 2>&1' & echo $$; wait";

/// The cgroup v2 mount point, if `/proc/self/mountinfo` has one.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        filesystem
            .starts_with("cgroup2 ")
            .then(|| mount.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 directory of `pid`.
fn cgroup_dir(pid: i32) -> Option<PathBuf> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))?;
    Some(cgroup2_mount()?.join(path.trim_start_matches('/')))
}

/// Whether this machine lets a process create and kill cgroups where it sits, the
/// condition under which the server must choose cgroup containment; `Err` says why not.
fn cgroups_writable() -> Result<(), String> {
    let own = cgroup_dir(std::process::id() as i32)
        .ok_or("no cgroup v2 hierarchy in /proc/self/mountinfo")?;
    let probe = own.join(format!("exec-server-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|err| format!("cannot create a cgroup in {}: {err}", own.display()))?;
    let has_kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    has_kill
        .then_some(())
        .ok_or_else(|| "the kernel has no cgroup.kill (before 5.14)".to_owned())
}

fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
}

/// Waits until `dir` no longer exists.
async fn wait_for_dir_gone(dir: &Path, within: Duration) {
    let gone = tokio::time::timeout(within, async {
        while dir.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{} is left behind", dir.display());
}

/// A process of this test that holds pid `pid` and leads its own process group, so a
/// `killpg(pid)` meant for an old process would kill it. Killed and reaped on drop.
struct Stranger(Child);

impl Stranger {
    /// Steers the kernel's next pid to `pid` and starts `sleep` there. `Err` (a reason to
    /// skip) when the next pid cannot be steered; panics if `pid` stays taken.
    fn at(pid: i32) -> Result<Stranger, String> {
        use std::os::unix::process::CommandExt;
        const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
        // Other tests fork concurrently and may take the pid first: try again.
        for _ in 0..200 {
            std::fs::write(LAST_PID, (pid - 1).to_string())
                .map_err(|err| format!("cannot steer the next pid through {LAST_PID}: {err}"))?;
            let mut child = Command::new("sleep")
                .arg("1000")
                .process_group(0)
                .spawn()
                .expect("spawn sleep");
            if child.id() as i32 == pid {
                return Ok(Stranger(child));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("pid {pid} is still taken (by an unreaped process?)");
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Alive, and no SIGKILL is pending: a `killpg` that already returned has either
    /// queued the signal or killed us, so this is exact right after the server replied.
    fn untouched(&self) -> bool {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let sigkill_pending = status.lines().any(|line| {
            let pending = line
                .strip_prefix("SigPnd:")
                .or_else(|| line.strip_prefix("ShdPnd:"));
            pending
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0)
        });
        process_alive(pid) && !sigkill_pending
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of `server`'s watchdog: its child that still runs the server's binary.
fn watchdog_pid(server: &ExecServer) -> i32 {
    let server_pid = server.pid().expect("server pid");
    let children =
        std::fs::read_to_string(format!("/proc/{server_pid}/task/{server_pid}/children"))
            .expect("children of the server");
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "exec-server")
        })
        .expect("the watchdog is a child of the server")
}

/// State letter of `pid` in `/proc/PID/stat` (`None` once it has been reaped).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Polls `condition` every 10 ms until it holds; fails the test after `within`.
async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let held = tokio::time::timeout(within, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "{what}: not within {within:?}");
}

/// Runs `echo $$` as `process_id` and returns its leader's pid once the process closed
/// and the leader was reaped: its group was empty, so nothing holds the pid any more.
async fn finished_leader(session: &Session, process_id: &str) -> Result<i32, HarnessError> {
    let leader = start_reporting_pids(session, process_id, "echo $$", 1).await?[0];
    session.read_to_end(process_id).await?;
    let within = session.connection().default_wait();
    wait_until("the leader of an empty group is reaped", within, || {
        state(leader).is_none()
    })
    .await;
    Ok(leader)
}

/// How a test ends the process that started a `setsid()` descendant.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Terminate,
    SessionExpiry,
    StdioEof,
    ServerSigterm,
    ServerSigkill,
}

/// Starts [`SETSID_SCRIPT`] on a server in cgroup mode, ends it by `ending`, and checks
/// that the escaped `sleep` and the shell die and that their cgroup (and, when the
/// server exits, the server's own cgroup directory) is removed.
async fn a_setsid_descendant_dies(test: &str, ending: Ending, env: &[(&str, &str)]) -> TestResult {
    if let Err(reason) = cgroups_writable() {
        skip(test, &reason);
        return Ok(());
    }
    let transport = match ending {
        Ending::StdioEof => Transport::Stdio,
        _ => Transport::WebSocket,
    };
    let server = env
        .iter()
        .fold(exec_server_bin(), |builder, (key, value)| {
            builder.env(*key, *value)
        })
        .transport(transport)
        .args(["--session-ttl", "300ms"])
        .start()
        .await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let pids = start_reporting_pids(&session, "escape", SETSID_SCRIPT, 2).await?;
    let process_cgroup = cgroup_dir(pids[0]).expect("the descendant's cgroup");
    let server_cgroup = cgroup_dir(server.pid().expect("server pid")).expect("server cgroup");
    match ending {
        Ending::Terminate => {
            let result = conn
                .call(&TerminateParams {
                    process_id: "escape".into(),
                })
                .await?;
            assert!(result.running);
        }
        Ending::SessionExpiry => conn.disconnect().await?,
        Ending::StdioEof => conn.disconnect().await?,
        Ending::ServerSigterm => server.signal(libc::SIGTERM)?,
        Ending::ServerSigkill => server.signal(libc::SIGKILL)?,
    }
    for pid in &pids {
        wait_for_process_gone(*pid, server.default_wait()).await?;
    }
    assert_ne!(
        process_cgroup, server_cgroup,
        "the process ran in a cgroup of its own"
    );
    wait_for_dir_gone(&process_cgroup, server.default_wait()).await;
    if !matches!(ending, Ending::Terminate | Ending::SessionExpiry) {
        server.wait_exit().await?;
        let base = process_cgroup
            .parent()
            .expect("the server's cgroup directory");
        wait_for_dir_gone(base, server.default_wait()).await;
    }
    Ok(())
}

/// The `exec-server-*` directories in the cgroup directory `dir`.
fn server_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("a cgroup directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| file_name(path).starts_with("exec-server-"))
        .collect()
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
}

/// A harness tears a server down by killing its whole process group, perhaps as soon as
/// the server has printed its address. The watchdog, forked at start-up, must be out of
/// that group by then, or it dies with the server and nobody removes the server's cgroup.
#[test]
fn killing_the_servers_process_group_right_after_start_up_leaves_no_cgroup_behind() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let test = "killing_the_servers_process_group_right_after_start_up_leaves_no_cgroup_behind";
    if let Err(reason) = cgroups_writable() {
        skip(test, &reason);
        return;
    }
    // The server creates its cgroup in ours. One left there by an earlier server with the
    // same pid must not be taken for it.
    let own = cgroup_dir(std::process::id() as i32).expect("our cgroup");
    let before = server_cgroups(&own);
    let mut server = Command::new(env!("CARGO_BIN_EXE_exec-server"))
        .args(["--listen", "ws://127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the server");
    let pid = server.id() as i32;
    let mut line = String::new();
    let stdout = server.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the address line");
    assert!(line.starts_with("ws://"), "{line:?}");
    // Created before the address is printed.
    let prefix = format!("exec-server-{pid}-");
    let base = server_cgroups(&own)
        .into_iter()
        .find(|path| !before.contains(path) && file_name(path).starts_with(&prefix))
        .expect("the cgroup the server made for its processes");
    // SAFETY: the server is our child, not yet reaped, and leads its own group.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGKILL) }, 0, "killpg");
    server.wait().expect("reap the server");
    // Without a harness to scale it: as long as the watchdog may take.
    let deadline = std::time::Instant::now() + DEFAULT_WAIT * 2;
    while base.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!base.exists(), "{} is left behind", base.display());
}

#[tokio::test]
async fn a_failed_start_leaves_no_cgroup_behind() -> TestResult {
    let test = "a_failed_start_leaves_no_cgroup_behind";
    if let Err(reason) = cgroups_writable() {
        skip(test, &reason);
        return Ok(());
    }
    let server = start_server(Transport::WebSocket, AUTO).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let running = start_reporting_pids(&session, "running", "echo $$; exec sleep 1000", 1).await?;
    let own = cgroup_dir(running[0]).expect("the process's cgroup");
    let server_cgroup = own.parent().expect("the server's cgroup").to_owned();
    let others = || -> Vec<PathBuf> {
        std::fs::read_dir(&server_cgroup)
            .expect("the server's cgroup")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir() && *path != own)
            .collect()
    };
    // The server keeps two fresh cgroups ready (SPARE_CGROUPS in containment.rs) and
    // hands out the oldest (lowest `pN`) first: the next start that reaches the spawn
    // gets it, and the refill never makes more than two.
    let wait = server.default_wait();
    let settled = |want: usize| {
        let others = &others;
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            let mut found = others();
            while found.len() != want && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
                found = others();
            }
            found
        }
    };
    let spares = settled(2).await;
    assert_eq!(spares.len(), 2, "two spare cgroups are made: {spares:?}");
    let number = |path: &PathBuf| -> u64 {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        name.trim_start_matches('p').parse().unwrap_or(u64::MAX)
    };
    let oldest = spares.iter().min_by_key(|path| number(path)).cloned();
    let oldest = oldest.expect("a spare");
    // The first fails in the child, which is already in its cgroup; the second is
    // refused before any cgroup is taken.
    for (id, program, cwd) in [
        ("missing", "/no/such/program", "/"),
        ("bad-cwd", "true", "/no/such/directory"),
    ] {
        let params = json!({"processId": id, "argv": [program], "cwd": cwd, "env": {}});
        let error = conn.request("process/start", params).error().await?;
        assert_eq!(error.code, -32603, "{id}");
    }
    // A left-behind cgroup would make three once the refill is done.
    let left = settled(2).await;
    assert_eq!(
        left.len(),
        2,
        "only two spares beside the running process's: {left:?}"
    );
    assert!(
        !left.contains(&oldest),
        "{} was the failed start's cgroup and is left behind",
        oldest.display()
    );
    Ok(())
}

/// The spawn where `clone3(CLONE_INTO_CGROUP)` is missing or refused: a plain clone
/// whose child joins its cgroup itself.
#[tokio::test]
async fn a_setsid_descendant_dies_on_terminate_with_the_clone_fallback() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_on_terminate_with_the_clone_fallback",
        Ending::Terminate,
        &[("EXEC_SERVER_SPAWN", "clone")],
    )
    .await
}

#[tokio::test]
async fn a_setsid_descendant_dies_on_terminate() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_on_terminate",
        Ending::Terminate,
        &[],
    )
    .await
}

#[tokio::test]
async fn a_setsid_descendant_dies_when_its_session_expires() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_when_its_session_expires",
        Ending::SessionExpiry,
        &[],
    )
    .await
}

#[tokio::test]
async fn a_setsid_descendant_dies_at_stdio_eof() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_at_stdio_eof",
        Ending::StdioEof,
        &[],
    )
    .await
}

#[tokio::test]
async fn a_setsid_descendant_dies_when_the_server_gets_sigterm() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_when_the_server_gets_sigterm",
        Ending::ServerSigterm,
        &[],
    )
    .await
}

#[tokio::test]
async fn a_setsid_descendant_dies_when_the_server_is_killed() -> TestResult {
    a_setsid_descendant_dies(
        "a_setsid_descendant_dies_when_the_server_is_killed",
        Ending::ServerSigkill,
        &[],
    )
    .await
}

/// `terminate` of an exited process, the expiry of its session and the watchdog after a
/// `kill -9` of the server must not signal its old pid once the kernel may reuse it: a
/// stranger placed on that pid (leading its own group) survives all three.
async fn a_freed_pid_is_never_signalled(test: &str, mode: &[&str]) -> TestResult {
    let args = [mode, &["--session-ttl", "300ms"]].concat();
    let server = start_server(Transport::WebSocket, &args).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let leader = finished_leader(&session, "first").await?;
    let stranger = match Stranger::at(leader) {
        Ok(stranger) => stranger,
        Err(reason) => {
            skip(test, &reason);
            return Ok(());
        }
    };
    let result = conn
        .call(&TerminateParams {
            process_id: "first".into(),
        })
        .await?;
    assert!(!result.running);
    assert!(
        stranger.untouched(),
        "terminate of an exited process signalled pid {leader}, now a stranger's"
    );
    drop(stranger);

    let leader = finished_leader(&session, "second").await?;
    let stranger = Stranger::at(leader).expect("the next pid was steered before");
    let witness =
        start_reporting_pids(&session, "witness", "echo $$; exec sleep 1000", 1).await?[0];
    conn.disconnect().await?;
    // The witness dies when the expired session releases its processes, "second" too.
    wait_for_process_gone(witness, server.default_wait()).await?;
    assert!(
        stranger.untouched(),
        "the expiry of a session signalled pid {leader}, now a stranger's"
    );
    drop(stranger);

    let server = start_server(Transport::WebSocket, mode).await?;

    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let leader = finished_leader(&session, "third").await?;
    let stranger = Stranger::at(leader).expect("the next pid was steered before");
    let watchdog = watchdog_pid(&server);
    server.signal(libc::SIGKILL)?;
    wait_for_process_gone(watchdog, server.default_wait()).await?;
    assert!(
        stranger.untouched(),
        "the watchdog signalled pid {leader}, now a stranger's"
    );
    Ok(())
}

#[tokio::test]
async fn a_freed_pid_is_never_signalled_with_cgroups() -> TestResult {
    a_freed_pid_is_never_signalled("a_freed_pid_is_never_signalled_with_cgroups", AUTO).await
}

#[tokio::test]
async fn a_freed_pid_is_never_signalled_with_process_groups() -> TestResult {
    a_freed_pid_is_never_signalled(
        "a_freed_pid_is_never_signalled_with_process_groups",
        PROCESS_GROUP,
    )
    .await
}

/// A leader whose group outlives it (a background job) stays a zombie, so its pid (the
/// group id) cannot be reused while the entry may still kill the group; once the tree
/// is killed the leader is reaped, so zombies do not pile up.
async fn the_leader_stays_unreaped_until_its_tree_is_killed(session: &Session) -> TestResult {
    let conn = session.connection();
    let daemon = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; echo $$";
    let pids = start_reporting_pids(session, "daemon", daemon, 2).await?;
    let (job, leader) = (pids[0], pids[1]);
    session.read_to_end("daemon").await?;
    assert!(process_alive(job), "the background job outlives the close");
    assert_eq!(state(leader), Some('Z'), "the leader stays unreaped");
    let result = conn
        .call(&TerminateParams {
            process_id: "daemon".into(),
        })
        .await?;
    assert!(!result.running);
    wait_for_process_gone(job, conn.default_wait()).await?;
    wait_until(
        "the leader is reaped once its tree is killed",
        conn.default_wait(),
        || state(leader).is_none(),
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn the_leader_stays_unreaped_until_its_tree_is_killed_with_cgroups() -> TestResult {
    let server = start_server(Transport::WebSocket, AUTO).await?;
    let conn = server.connect().await?;
    the_leader_stays_unreaped_until_its_tree_is_killed(&conn.initialize(CLIENT).await?).await
}

#[tokio::test]
async fn the_leader_stays_unreaped_until_its_tree_is_killed_with_process_groups() -> TestResult {
    let server = start_server(Transport::WebSocket, PROCESS_GROUP).await?;
    let conn = server.connect().await?;
    the_leader_stays_unreaped_until_its_tree_is_killed(&conn.initialize(CLIENT).await?).await
}

/// An ignored SIGCHLD survives `exec`, and with it the kernel reaps children at once:
/// the server must undo it, or it could neither read exit codes nor hold leaders.
#[tokio::test]
async fn a_server_started_with_sigchld_ignored_still_reads_exits_and_holds_leaders() -> TestResult {
    // bash, not dash, passes an ignored SIGCHLD on through `exec`.
    let server = start_server_ignoring("bash", "CHLD").await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    if cgroups_writable().is_ok() {
        let containment = &session.initialize_json()["capabilities"]["process"]["containment"];
        assert_eq!(
            containment, "cgroup",
            "the start-up probe reaps its child too"
        );
    }
    session
        .start_with(spec("three", ["sh", "-c", "exit 3"]))
        .await?;
    let output = conn.notified_output("three").await?;
    assert_eq!(output.exit_code, Some(3));
    the_leader_stays_unreaped_until_its_tree_is_killed(&session).await
}

/// The `capabilities.process.containment` of a server started with `args`.
async fn containment_of(args: &[&str]) -> Result<(String, Session), HarnessError> {
    let server = start_server(Transport::WebSocket, args).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let mode = session.initialize_json()["capabilities"]["process"]["containment"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((mode, session))
}

#[tokio::test]
async fn capabilities_report_the_containment_mode_the_flag_selects() -> TestResult {
    let (mode, session) = containment_of(PROCESS_GROUP).await?;
    assert_eq!(mode, "processGroup");
    if cgroup2_mount().is_some() {
        let child =
            start_reporting_pids(&session, "plain", "echo $$; exec sleep 1000", 1).await?[0];
        let server_pid = session.connection().server().pid().expect("server pid");
        assert_eq!(
            cgroup_dir(child),
            cgroup_dir(server_pid),
            "with process groups, children stay in the server's cgroup"
        );
    }
    match cgroups_writable() {
        Ok(()) => {
            let (mode, _) = containment_of(AUTO).await?;
            assert_eq!(mode, "cgroup", "auto picks cgroups where they are writable");
            let (mode, _) = containment_of(&["--containment", "cgroup"]).await?;
            assert_eq!(mode, "cgroup");
        }
        Err(reason) => {
            let (mode, _) = containment_of(AUTO).await?;
            assert_eq!(mode, "processGroup", "auto falls back: {reason}");
            let output = Command::new(env!("CARGO_BIN_EXE_exec-server"))
                .args(["--containment", "cgroup"])
                .output()
                .expect("run");
            assert_eq!(output.status.code(), Some(1), "cgroups demanded: {reason}");
        }
    }
    Ok(())
}
