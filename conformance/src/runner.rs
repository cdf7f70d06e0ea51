//! Plays a [`Transcript`] against a freshly started server and grades it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use exec_server_harness::{Connection, ExecServer, HarnessError, Transport};
use serde_json::Value;

use crate::pattern::{substitute, Bindings};
use crate::transcript::{self, Class, Level, Revision, StepKind, Transcript, TransportName};

/// The environment variable every server of a case carries (its value: the marker).
pub const MARKER_VAR: &str = "EXEC_CONFORMANCE_MARKER";

/// What to test and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server command line (program and leading words); `--listen …` is appended.
    pub server: Vec<String>,
    /// The graded revision.
    pub revision: Revision,
    /// Multiplies every wait.
    pub time_scale: f64,
    /// Run `class: long` cases.
    pub include_long: bool,
}

/// A case's grade.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every line held.
    Pass,
    /// A SHOULD case failed (does not fail the run).
    NonStrict(String),
    /// A MUST case failed.
    Fail(String),
    /// Something expected never arrived in time.
    Timeout(String),
    /// The server process died when it should not have.
    Crash(String),
    /// Not applicable here.
    Skipped(String),
    /// The suite itself is wrong (e.g. a bad transcript).
    HarnessError(String),
}

impl Verdict {
    /// The verdict's name as printed.
    pub fn label(&self) -> String {
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::NonStrict(_) => "NON-STRICT".into(),
            Verdict::Fail(_) => "FAIL".into(),
            Verdict::Timeout(_) => "TIMEOUT".into(),
            Verdict::Crash(_) => "CRASH".into(),
            Verdict::Skipped(reason) => format!("SKIPPED({reason})"),
            Verdict::HarnessError(_) => "HARNESS-ERROR".into(),
        }
    }

    /// Whether this verdict fails the run.
    pub fn fails_run(&self) -> bool {
        !matches!(
            self,
            Verdict::Pass | Verdict::NonStrict(_) | Verdict::Skipped(_)
        )
    }
}

/// Every `*.xt` file under `dir`, sorted, with its case id (the relative path without
/// `.xt`).
pub fn discover(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, found);
        } else if path.extension().is_some_and(|ext| ext == "xt") {
            let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
            let id = relative.to_string_lossy().replace('\\', "/");
            found.push((id, path));
        }
    }
}

/// Why a step failed, before it becomes a verdict.
enum StepFailure {
    Mismatch(String),
    Timeout(String),
    Harness(String),
}

fn from_harness(err: HarnessError) -> StepFailure {
    match err {
        HarnessError::Timeout { .. } => StepFailure::Timeout(err.to_string()),
        other => StepFailure::Mismatch(other.to_string()),
    }
}

/// Runs one case on one transport: starts its own server, plays the steps, checks
/// hygiene, stops the server. Returns the verdict and the report printed on failure.
pub async fn run_case(
    case: &Transcript,
    transport: TransportName,
    config: &Config,
) -> (Verdict, String) {
    if !case.revisions.contains(&config.revision) {
        let reason = format!("revision {}", config.revision.as_str());
        return (Verdict::Skipped(reason), String::new());
    }
    if case.class == Class::Long && !config.include_long {
        return (
            Verdict::Skipped("long; --include-long".into()),
            String::new(),
        );
    }
    let tmp = match tempfile::Builder::new()
        .prefix("exec-conformance-")
        .tempdir()
    {
        Ok(tmp) => tmp,
        Err(err) => {
            return (
                Verdict::HarnessError(format!("temporary directory: {err}")),
                String::new(),
            )
        }
    };
    let marker = format!("exec-conformance-{}", uuid::Uuid::new_v4().simple());
    let tmp_path = tmp.path().to_string_lossy().into_owned();
    let mut bindings = Bindings::new();
    bindings.insert("tmp".into(), Value::String(tmp_path.clone()));
    let wire_tmp = match config.revision {
        Revision::R2026_06 => tmp_path.clone(),
        Revision::R2026_08 => exec_server_harness::protocol::PathForm::FileUri
            .render(tmp_path.as_bytes())
            .to_string(),
    };
    bindings.insert("tmpPath".into(), Value::String(wire_tmp));
    bindings.insert("marker".into(), Value::String(marker.clone()));

    let mut builder = ExecServer::builder()
        .transport(match transport {
            TransportName::Ws => Transport::WebSocket,
            TransportName::Stdio => Transport::Stdio,
        })
        .command(config.server.clone())
        .env(MARKER_VAR, marker.clone())
        .time_scale(config.time_scale);
    let ttl = case.ttl.map(|ttl| ttl.mul_f64(config.time_scale));
    if let Some(ttl) = ttl {
        builder = builder.args(["--session-ttl".to_owned(), format!("{}ms", ttl.as_millis())]);
    }
    let server = match builder.start().await {
        Ok(server) => server,
        Err(err) => {
            return (
                Verdict::Crash(format!("the server did not start: {err}")),
                String::new(),
            )
        }
    };
    let server_pid = server.pid();
    let conn = match server.connect().await {
        Ok(conn) => conn,
        Err(err) => {
            return (
                Verdict::Fail(format!("cannot connect: {err}")),
                String::new(),
            )
        }
    };
    let budget = match case.class {
        Class::Normal => Duration::from_secs(30),
        Class::Long => Duration::from_secs(180),
    }
    .mul_f64(config.time_scale);
    let mut exit_expected = false;
    let played = tokio::time::timeout(
        budget,
        play(
            case,
            &server,
            &conn,
            &mut bindings,
            ttl,
            &marker,
            &config.server[0],
            &mut exit_expected,
        ),
    )
    .await;
    let mut verdict = match played {
        Err(_) => Verdict::Timeout(format!("the case did not finish within {budget:?}")),
        Ok(Ok(())) => Verdict::Pass,
        Ok(Err((line, failure))) => {
            let at = format!("{}:{line}", case.file);
            let crashed = !exit_expected
                && server_pid.is_some_and(|pid| !exec_server_harness::process_alive(pid));
            match failure {
                _ if crashed => Verdict::Crash(format!("{at}: the server process died")),
                StepFailure::Mismatch(text) => Verdict::Fail(format!("{at}: {text}")),
                StepFailure::Timeout(text) => Verdict::Timeout(format!("{at}: {text}")),
                StepFailure::Harness(text) => Verdict::HarnessError(format!("{at}: {text}")),
            }
        }
    };
    // Hygiene: nothing but protocol frames on the wire (stdio stdout, ws stdout).
    if verdict == Verdict::Pass {
        let invalid = conn.invalid_frames();
        let extra = server.extra_stdout();
        if !invalid.is_empty() {
            verdict = Verdict::Fail(format!("non-protocol output from the server: {invalid:?}"));
        } else if !extra.is_empty() {
            verdict = Verdict::Fail(format!(
                "the server printed on stdout after its start-up line: {extra:?}"
            ));
        }
    }
    let report = conn.failure_report();
    drop(conn);
    drop(server);
    // Hygiene: after the server is gone, no process of this case may survive.
    let survivors = reap_marked(&marker, Duration::from_secs(2).mul_f64(config.time_scale)).await;
    if !survivors.is_empty() && !verdict.fails_run() {
        verdict = Verdict::Fail(format!(
            "processes survived the server (killed now): {survivors:?}"
        ));
    }
    if case.level == Level::Should {
        if let Verdict::Fail(text) | Verdict::Timeout(text) | Verdict::Crash(text) = &verdict {
            verdict = Verdict::NonStrict(text.clone());
        }
    }
    drop(tmp);
    (verdict, report)
}

// The case's state travels as arguments for now; a `CaseRun` struct is the next step.
#[allow(clippy::too_many_arguments)]
async fn play(
    case: &Transcript,
    server: &ExecServer,
    conn: &Connection,
    bindings: &mut Bindings,
    ttl: Option<Duration>,
    marker: &str,
    program: &str,
    exit_expected: &mut bool,
) -> Result<(), (usize, StepFailure)> {
    for step in &case.steps {
        let at = |failure| (step.line, failure);
        match &step.kind {
            StepKind::Send(message) => {
                let message = substitute(message, bindings)
                    .map_err(|err| at(StepFailure::Harness(err.message)))?;
                conn.send_raw(message.to_string())
                    .await
                    .map_err(|e| at(from_harness(e)))?;
            }
            StepKind::Raw(text) => {
                conn.send_raw(text).await.map_err(|e| at(from_harness(e)))?;
            }
            StepKind::ExpectResponse { id, pattern } => {
                let response = match id {
                    Value::Null => conn.response_without_id().await,
                    id => {
                        let id: exec_server_harness::protocol::RequestId =
                            serde_json::from_value(id.clone())
                                .map_err(|err| at(StepFailure::Harness(err.to_string())))?;
                        conn.response(&id).await
                    }
                }
                .map_err(|e| at(from_harness(e)))?;
                let message = response.message();
                pattern.matches(&message, bindings).map_err(|mismatch| {
                    at(StepFailure::Mismatch(format!(
                        "response does not match\n  expected: {}\n  actual:   {message}\n  {mismatch}",
                        pattern.render()
                    )))
                })?;
            }
            StepKind::ExpectEvent(pattern) => {
                let snapshot = bindings.clone();
                let matcher = pattern.clone();
                let event = conn
                    .expect_event(move |event| {
                        matcher
                            .matches(&event.message(), &mut snapshot.clone())
                            .is_ok()
                    })
                    .described(format!("a notification matching {}", pattern.render()))
                    .await
                    .map_err(|e| at(from_harness(e)))?;
                pattern
                    .matches(&event.message(), bindings)
                    .map_err(|m| at(StepFailure::Harness(m.to_string())))?;
            }
            StepKind::Disconnect => conn.disconnect().await.map_err(|e| at(from_harness(e)))?,
            StepKind::Reset => conn.reset().await.map_err(|e| at(from_harness(e)))?,
            StepKind::Reconnect => conn.reconnect().await.map_err(|e| at(from_harness(e)))?,
            StepKind::CloseStdin => {
                if server.transport() != Transport::Stdio {
                    return Err(at(StepFailure::Harness(
                        "close-stdin needs stdio (add `# transports: stdio`)".into(),
                    )));
                }
                *exit_expected = true;
                conn.disconnect().await.map_err(|e| at(from_harness(e)))?;
            }
            StepKind::ExpectExit(code) => {
                *exit_expected = true;
                let status = server.wait_exit().await.map_err(|e| at(from_harness(e)))?;
                if let Some(code) = code {
                    if status.code() != Some(*code) {
                        return Err(at(StepFailure::Mismatch(format!(
                            "the server exited with {status}, expected exit code {code}"
                        ))));
                    }
                }
            }
            StepKind::Wait(logical) => tokio::time::sleep(conn.scaled(*logical)).await,
            StepKind::WaitTtl(factor) => {
                let Some(ttl) = ttl else {
                    return Err(at(StepFailure::Harness("wait-ttl without a ttl".into())));
                };
                tokio::time::sleep(ttl.mul_f64(*factor)).await;
            }
            StepKind::ExpectQuiet(logical) => conn
                .expect_no_event(*logical)
                .await
                .map_err(|e| at(StepFailure::Mismatch(e.to_string())))?,
            StepKind::NoOrphans => {
                let alive: Vec<_> = marked_processes(marker, server.pid())
                    .into_iter()
                    .filter(|(_, cmdline)| !is_server(cmdline, program))
                    .collect();
                if !alive.is_empty() {
                    return Err(at(StepFailure::Mismatch(format!(
                        "processes carrying the case's marker are alive: {alive:?}"
                    ))));
                }
            }
            StepKind::ReadUntil { process, text } => {
                let process = match process.strip_prefix('$') {
                    Some(name) => match bindings.get(name) {
                        Some(Value::String(id)) => id.clone(),
                        other => {
                            return Err(at(StepFailure::Harness(format!(
                                "${name} is {other:?}, not a process id"
                            ))));
                        }
                    },
                    None => process.clone(),
                };
                let mut seen = Vec::new();
                let wanted = text.as_bytes();
                while !seen.windows(wanted.len()).any(|w| w == wanted) {
                    let event = conn
                        .expect_event(|e| e.is_output(&process))
                        .described(format!(
                            "output of {process} containing {text:?} (so far {:?})",
                            String::from_utf8_lossy(&seen)
                        ))
                        .await
                        .map_err(|e| at(from_harness(e)))?;
                    seen.extend(event.chunk().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

/// Processes whose environment or argv carries `marker`, except those in the process
/// group `except` (the server's own group: it leads one).
pub fn marked_processes(marker: &str, except: Option<i32>) -> Vec<(i32, String)> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own
            || except.is_some_and(|group| process_group(pid) == Some(group))
            || !exec_server_harness::process_alive(pid)
        {
            continue;
        }
        let carries = |file: &str| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
        };
        if carries("environ") || carries("cmdline") {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// Whether a command line is the server under test itself (its pid may differ from
/// the one started when it re-executes or moves group during start-up).
fn is_server(cmdline: &str, program: &str) -> bool {
    cmdline.starts_with(program) && cmdline.contains("--listen")
}

/// The process group of `pid`, from `/proc/PID/stat`.
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(2)?.parse().ok()
}

/// Waits up to `within` for the case's processes to be gone, then records and
/// SIGKILLs any survivor.
async fn reap_marked(marker: &str, within: Duration) -> Vec<(i32, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let alive = marked_processes(marker, None);
        if alive.is_empty() {
            return alive;
        }
        if tokio::time::Instant::now() >= deadline {
            for (pid, _) in &alive {
                // SAFETY: killing a process that carries this case's unique marker.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses a case file (for trials): a bad transcript is a HARNESS-ERROR verdict.
pub fn load(path: &Path) -> Result<Transcript, String> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|err| format!("{shown}: {err}"))?;
    transcript::parse(&shown, &source).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_transcript_is_a_harness_error_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.xt");
        std::fs::write(&path, "# spec: §4\n>> {\"id\": 1,}\n").unwrap();
        let found = discover(dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "bad");
        let error = load(&path).unwrap_err();
        let expected = format!("{}:2:13: invalid JSON", path.display());
        assert!(error.starts_with(&expected), "{error}");
    }
}
