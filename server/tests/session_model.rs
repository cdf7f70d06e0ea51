//! Model-based test of sessions (issue 17, "Model-based sessions"): random sequences of
//! connect (a new session), start, write (each with a `writeId`), a write whose answer
//! a disconnect loses, close-stdin, read, disconnect (Close frame or TCP reset), resume,
//! waiting past the TTL, and terminate, run against the real server binary with a short
//! `--session-ttl`. The model (`model/plan.rs`) says what every answer must be, and the
//! run checks:
//!
//! - no output byte is lost or duplicated while a session is resumed within its TTL:
//!   every chunk is read once, at the seq the model expects, and read back whole at
//!   the end (output stays far below `--output-retention`);
//! - a write whose answer was lost, re-sent with its `writeId` after the resume,
//!   reaches the child once (it is `cat`: a second write would be a second echo);
//! - an expired session cannot be resumed and leaves no process (each session's
//!   processes carry their own marker in their environment, looked for in `/proc`);
//! - every new session gets an id no session had before, and seqs never repeat.
//!
//! When a case fails, proptest shrinks it, and the shrunk plan is written as a
//! conformance transcript (`model/xt.rs`) under `$EXEC_MODEL_TRANSCRIPT_DIR/session/`
//! (default: a new temporary directory, printed): it replays the failure through the
//! normal runner, and a correct server passes it.
//!
//! Knobs (environment): `PROPTEST_CASES` (default 24, about 15 s; more by hand),
//! `PROPTEST_MAX_SHRINK_ITERS` (default 400), `PROPTEST_MAX_SHRINK_TIME` (ms, default
//! 120 000: a failure in CI is shrunk for at most two minutes), `EXEC_MODEL_SERVER`
//! (a command line to test instead of the in-tree binary, a relative program path
//! being the workspace's, e.g. `target/debug/broken-server --fault ignore-write-id`;
//! `--listen` and `--session-ttl` are appended), `EXEC_MODEL_TTL_MS` (default 800,
//! times `EXEC_HARNESS_TIME_SCALE` like every deadline).

mod common;
mod model;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{exec_server_bin, CLIENT};
use exec_protocol::code;
use exec_server_harness::{json, process_alive, Connection, ExecServer, HarnessError, Value};
use model::ops::{self, Op, Ticker};
use model::plan::{Call, Check, Init, Plan, Step};
use model::{pattern, xt};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use tokio::time::Instant;

/// Cases per run unless `PROPTEST_CASES` says otherwise: about 15 s in a debug build.
const DEFAULT_CASES: u32 = 24;
/// Shrink steps unless `PROPTEST_MAX_SHRINK_ITERS` says otherwise: each is a server run.
const DEFAULT_SHRINK_ITERS: u32 = 400;
/// Milliseconds of shrinking unless `PROPTEST_MAX_SHRINK_TIME` says otherwise.
const DEFAULT_SHRINK_TIME_MS: u32 = 120_000;
/// Ops per case, at most.
const MAX_OPS: usize = 24;
/// The server's `--session-ttl` (× the time scale) unless `EXEC_MODEL_TTL_MS` says
/// otherwise. Short, since every wait past it is 1.25 TTLs of real time; long enough
/// that the ops between a detach and its resume stay well inside it.
const DEFAULT_TTL_MS: u64 = 800;
/// How long a wait past the TTL is, in TTLs.
const PAST_TTL: f64 = 1.25;
/// A resume refused after at least this much of the TTL may have met a real expiry
/// (a slow machine): the case proves nothing and is rejected, not failed.
const TOO_NEAR_TTL: f64 = 0.5;
/// Between attempts of a resume that the server still sees attached.
const RETRY: Duration = Duration::from_millis(20);

/// What the run tests, from the environment.
struct ModelConfig {
    /// `EXEC_MODEL_SERVER`, split like shell words; `None`: the in-tree binary.
    server: Option<Vec<String>>,
    /// The server's TTL, scaled.
    ttl: Duration,
}

impl ModelConfig {
    fn from_env() -> ModelConfig {
        let server = std::env::var("EXEC_MODEL_SERVER")
            .ok()
            .filter(|command| !command.trim().is_empty())
            .map(|command| {
                let mut words = shlex::split(&command)
                    .filter(|words| !words.is_empty())
                    .unwrap_or_else(|| panic!("EXEC_MODEL_SERVER={command:?}: not a command line"));
                // cargo runs the test in server/: a relative path is the workspace's,
                // as the conformance runner reads one.
                let program = Path::new(&words[0]);
                if program.is_relative() && program.components().count() > 1 {
                    words[0] = workspace().join(program).to_string_lossy().into_owned();
                }
                words
            });
        let ttl_ms = std::env::var("EXEC_MODEL_TTL_MS")
            .ok()
            .map(|ms| {
                ms.parse::<u64>().unwrap_or_else(|_| {
                    panic!("EXEC_MODEL_TTL_MS={ms:?}: a number of milliseconds")
                })
            })
            .unwrap_or(DEFAULT_TTL_MS);
        ModelConfig {
            server,
            ttl: Duration::from_millis(ttl_ms).mul_f64(time_scale()),
        }
    }

    fn describe(&self) -> String {
        match &self.server {
            Some(words) => words.join(" "),
            None => env!("CARGO_BIN_EXE_exec-server").to_owned(),
        }
    }

    /// [`describe`](Self::describe) with the program's directory left out (for a
    /// transcript that may be committed).
    fn program_and_args(&self) -> String {
        let described = self.describe();
        let (program, args) = described.split_once(' ').unwrap_or((&described, ""));
        let name = Path::new(program)
            .file_name()
            .map_or(program.into(), |name| name.to_string_lossy());
        format!("{name} {args}").trim_end().to_owned()
    }
}

/// `EXEC_HARNESS_TIME_SCALE`, read as the harness reads it (the TTL is passed before
/// there is a server handle to ask).
fn time_scale() -> f64 {
    std::env::var(exec_server_harness::TIME_SCALE_VAR)
        .ok()
        .and_then(|scale| scale.parse::<f64>().ok())
        .filter(|scale| scale.is_finite() && *scale > 0.0)
        .unwrap_or(1.0)
}

/// A failed case: where, what it checked, and why.
#[derive(Debug, Clone)]
struct Failure {
    /// Index into the plan's steps.
    step: usize,
    /// The op that step belongs to (`None`: the start; `usize::MAX`: the end).
    op: Option<usize>,
    check: Check,
    message: String,
    /// The wire trace and the server's stderr tail.
    report: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.op {
            None => "at the start".to_owned(),
            Some(usize::MAX) => "at the end of the run".to_owned(),
            Some(op) => format!("in op {}", op + 1),
        };
        write!(
            f,
            "{} ({:?}) failed {at}, step {}: {}",
            self.check.claim(),
            self.check,
            self.step,
            self.message
        )
    }
}

enum Outcome {
    Pass,
    Fail(Failure),
    /// The case met a real expiry it did not ask for (a slow machine); proves nothing.
    Inconclusive(String),
}

enum StepError {
    Fail(Check, String),
    Inconclusive(String),
}

fn failed(check: Check) -> impl Fn(HarnessError) -> StepError {
    move |err| StepError::Fail(check, err.to_string())
}

/// One case being executed.
struct Run {
    server: ExecServer,
    conn: Connection,
    /// Earlier connections: closed, or holding a session the plan no longer uses.
    held: Vec<Connection>,
    /// Every process of the case carries `XT_MARKER=<marker>-s<session>`.
    marker: String,
    /// What `$tmpPath` stands for: the processes' working directory.
    cwd: String,
    ttl: Duration,
    /// Session ids, by the plan's session index.
    sids: Vec<String>,
    /// Every session id the server gave.
    seen: HashSet<String>,
    /// When each session was last detached.
    detached_at: HashMap<usize, Instant>,
    /// The session attached to `conn`.
    current: Option<usize>,
    /// Sessions the plan let expire.
    expired: HashSet<usize>,
}

async fn start_server(config: &ModelConfig) -> Result<ExecServer, HarnessError> {
    let builder = match &config.server {
        Some(words) => ExecServer::builder().command(words.clone()),
        None => exec_server_bin(),
    };
    builder
        .args([
            "--session-ttl".to_owned(),
            format!("{}ms", config.ttl.as_millis().max(1)),
        ])
        .start()
        .await
}

/// Runs `plan` against a fresh server.
async fn execute(plan: &Plan, config: &ModelConfig) -> Outcome {
    let setup = |message: String| {
        Outcome::Fail(Failure {
            step: 0,
            op: None,
            check: Check::Protocol,
            message,
            report: String::new(),
        })
    };
    let server = match start_server(config).await {
        Ok(server) => server,
        Err(err) => return setup(format!("the server did not start: {err}")),
    };
    let conn = match server.connect().await {
        Ok(conn) => conn,
        Err(err) => return setup(format!("cannot connect: {err}")),
    };
    let tmp = match tempfile::tempdir().and_then(|dir| Ok((dir.path().canonicalize()?, dir))) {
        Ok(tmp) => tmp,
        Err(err) => return setup(format!("temporary directory: {err}")),
    };
    let marker = format!("exec-model-{}", uuid::Uuid::new_v4().simple());
    let mut run = Run {
        server,
        conn,
        held: Vec::new(),
        marker: marker.clone(),
        cwd: tmp.0.to_string_lossy().into_owned(),
        ttl: config.ttl,
        sids: Vec::new(),
        seen: HashSet::new(),
        detached_at: HashMap::new(),
        current: None,
        expired: HashSet::new(),
    };
    let mut op = None;
    let mut outcome = Outcome::Pass;
    for (index, step) in plan.steps.iter().enumerate() {
        if let Step::Op { index, .. } = step {
            op = Some(*index);
        }
        match run.step(step).await {
            Ok(()) => {}
            Err(StepError::Fail(check, message)) => {
                outcome = Outcome::Fail(Failure {
                    step: index,
                    op,
                    check,
                    message: run.redact(&message),
                    report: run.report(),
                });
                break;
            }
            Err(StepError::Inconclusive(why)) => {
                outcome = Outcome::Inconclusive(why);
                break;
            }
        }
    }
    // Stopping the server kills every tree it holds; a faulty one may leave some.
    drop(run);
    reap(&marker).await;
    outcome
}

impl Run {
    /// `text` with this run's session ids, marker and directory as the transcript names
    /// them (`$sidN`, `$marker`, `$tmp`): a failure message goes into a committed
    /// transcript, which must hold nothing of one run.
    fn redact(&self, text: &str) -> String {
        let mut text = text
            .replace(&self.cwd, "$tmp")
            .replace(&self.marker, "$marker");
        for (index, sid) in self.sids.iter().enumerate() {
            text = text.replace(sid.as_str(), &format!("$sid{}", index + 1));
        }
        text
    }

    /// The wire trace of every connection, oldest first, and the server's stderr tail.
    fn report(&self) -> String {
        let connections = self.held.iter().chain([&self.conn]);
        connections
            .enumerate()
            .map(|(index, conn)| format!("connection {}:\n{}", index + 1, conn.failure_report()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn marker_of(&self, session: usize) -> String {
        format!("{}-s{session}", self.marker)
    }

    async fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            // The executor retries a resume the server still sees attached instead.
            Step::Op { .. } | Step::Settle => Ok(()),
            Step::Initialize {
                session,
                init,
                check,
            } => self.initialize(*session, *init, *check).await,
            Step::Disconnect => {
                self.conn
                    .disconnect()
                    .await
                    .map_err(failed(Check::Protocol))?;
                self.detached();
                Ok(())
            }
            Step::Reset => {
                self.conn.reset().await.map_err(failed(Check::Protocol))?;
                self.detached();
                Ok(())
            }
            Step::Reconnect => {
                // As a transcript's `!! reconnect`: the old connection stays as it is.
                let new = self
                    .server
                    .connect()
                    .await
                    .map_err(failed(Check::Protocol))?;
                let old = std::mem::replace(&mut self.conn, new);
                self.held.push(old);
                self.current = None;
                Ok(())
            }
            Step::Call(call) => self.call(call).await,
            Step::WaitPastTtl => {
                // Waiting for the TTL is the point; what expiry did is then polled for.
                tokio::time::sleep(self.ttl.mul_f64(PAST_TTL)).await;
                Ok(())
            }
            Step::Gone { sessions, .. } => {
                self.expired.extend(sessions.iter().copied());
                let markers: HashSet<String> =
                    sessions.iter().map(|&s| self.marker_of(s)).collect();
                let alive = self
                    .wait_until_gone(|marker| markers.contains(marker))
                    .await;
                match alive.is_empty() {
                    true => Ok(()),
                    false => Err(StepError::Fail(
                        Check::ExpiryKills,
                        format!(
                            "{:?} expired {:?} ago and still {} alive: {alive:?}",
                            sessions.iter().map(|&s| self.sid(s)).collect::<Vec<_>>(),
                            self.ttl.mul_f64(PAST_TTL - 1.0),
                            if alive.len() == 1 {
                                "has a process"
                            } else {
                                "have processes"
                            }
                        ),
                    )),
                }
            }
            Step::NoOrphans => {
                let prefix = format!("{}-s", self.marker);
                let alive = self
                    .wait_until_gone(|marker| marker.starts_with(&prefix))
                    .await;
                if alive.is_empty() {
                    return Ok(());
                }
                let of_expired = alive.iter().any(|(_, marker, _)| {
                    self.expired.iter().any(|&s| *marker == self.marker_of(s))
                });
                // Every process of a live session was terminated (or closed with nothing
                // in the background) before this step.
                let check = match of_expired {
                    true => Check::ExpiryKills,
                    false => Check::TreeKilled,
                };
                Err(StepError::Fail(
                    check,
                    format!("processes outlived the run: {alive:?}"),
                ))
            }
        }
    }

    fn sid(&self, session: usize) -> String {
        self.sids
            .get(session)
            .cloned()
            .unwrap_or_else(|| format!("session {session}"))
    }

    fn detached(&mut self) {
        if let Some(session) = self.current.take() {
            self.detached_at.insert(session, Instant::now());
        }
    }

    /// Sends a request and returns the whole answer.
    async fn request(&self, method: &str, params: Value, check: Check) -> Result<Value, StepError> {
        let response = self
            .conn
            .request(method, params)
            .await
            .map_err(failed(check))?;
        Ok(response.message())
    }

    async fn initialized(&self, check: Check) -> Result<(), StepError> {
        self.conn
            .notify("initialized", json!({}))
            .await
            .map_err(failed(check))
    }

    async fn initialize(
        &mut self,
        session: usize,
        init: Init,
        check: Check,
    ) -> Result<(), StepError> {
        match init {
            Init::Fresh => {
                let answer = self
                    .request("initialize", json!({"clientName": CLIENT}), check)
                    .await?;
                let Some(id) = answer["result"]["sessionId"].as_str() else {
                    return Err(StepError::Fail(
                        check,
                        format!("initialize gave no session id: {answer}"),
                    ));
                };
                if !self.seen.insert(id.to_owned()) {
                    return Err(StepError::Fail(
                        Check::SessionIdsDistinct,
                        format!("a new session got the id {id}, which an earlier session had"),
                    ));
                }
                self.sids.push(id.to_owned());
                self.initialized(check).await?;
                self.current = Some(session);
                Ok(())
            }
            Init::Resume => self.resume(session, check).await,
            Init::Expired | Init::Attached => {
                let sid = self.sid(session);
                let answer = self.request_resume(&sid, check).await?;
                let (code, why) = match init {
                    Init::Expired => (code::INVALID_REQUEST, "expired, was not refused as unknown"),
                    _ => (
                        code::SESSION_ALREADY_ATTACHED,
                        "attached to another connection, was not refused as such",
                    ),
                };
                pattern::matches(&json!({"error": {"code": code}}), &answer).map_err(|mismatch| {
                    StepError::Fail(
                        check,
                        format!("the resume of {sid}, {why} ({mismatch}): {answer}"),
                    )
                })
            }
        }
    }

    /// `initialize` with `resumeSessionId`: the answer, whatever it is.
    async fn request_resume(&self, sid: &str, check: Check) -> Result<Value, StepError> {
        self.request(
            "initialize",
            json!({"clientName": CLIENT, "resumeSessionId": sid}),
            check,
        )
        .await
    }

    async fn resume(&mut self, session: usize, check: Check) -> Result<(), StepError> {
        let sid = self.sid(session);
        let deadline = Instant::now() + self.conn.default_wait();
        loop {
            let answer = self.request_resume(&sid, check).await?;
            if let Some(result) = answer.get("result") {
                if result["sessionId"] != json!(sid) {
                    return Err(StepError::Fail(
                        check,
                        format!("the resume of {sid} answered another session: {answer}"),
                    ));
                }
                self.initialized(check).await?;
                self.detached_at.remove(&session);
                self.current = Some(session);
                return Ok(());
            }
            let code = answer["error"]["code"].as_i64();
            // The server notices a drop asynchronously (a reset, above all). The model
            // speaks revision 2026-08, where this refusal has its own code.
            let attached = code == Some(code::SESSION_ALREADY_ATTACHED);
            if attached && Instant::now() < deadline {
                tokio::time::sleep(RETRY).await;
                continue;
            }
            let detached_for = self
                .detached_at
                .get(&session)
                .map_or(Duration::ZERO, Instant::elapsed);
            if !attached && detached_for >= self.ttl.mul_f64(TOO_NEAR_TTL) {
                return Err(StepError::Inconclusive(format!(
                    "the resume of {sid} came {detached_for:?} after its detach, too near the {:?} TTL to judge",
                    self.ttl
                )));
            }
            return Err(StepError::Fail(
                check,
                format!(
                    "the resume of {sid}, detached {detached_for:?} ago (TTL {:?}), was refused: {answer}",
                    self.ttl
                ),
            ));
        }
    }

    /// `$marker` and `$tmpPath` in `value`, replaced with this run's.
    fn substitute(&self, value: &Value, session: usize) -> Value {
        match value {
            Value::String(text) if text == "$marker" => Value::String(self.marker_of(session)),
            Value::String(text) if text == "$tmpPath" => Value::String(self.cwd.clone()),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.substitute(item, session))
                    .collect(),
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| (key.clone(), self.substitute(item, session)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    async fn call(&mut self, call: &Call) -> Result<(), StepError> {
        let params = self.substitute(&call.params, call.session);
        let Some(expect) = &call.expect else {
            // Its answer is "lost": sent, and never read.
            return self
                .conn
                .send_request(call.method, params)
                .await
                .map(drop)
                .map_err(failed(call.check));
        };
        let answer = self
            .request(call.method, params.clone(), call.check)
            .await?;
        pattern::matches(expect, &answer).map_err(|why| {
            StepError::Fail(
                call.check,
                format!(
                    "{} {params}\n  expected: {expect}\n  answered: {answer}\n  ({why})",
                    call.method
                ),
            )
        })
    }

    /// Polls `/proc` until no process whose marker satisfies `wanted` is alive, or the
    /// default deadline passes; returns the survivors.
    async fn wait_until_gone(&self, wanted: impl Fn(&str) -> bool) -> Vec<(i32, String, String)> {
        let deadline = Instant::now() + self.conn.default_wait();
        loop {
            let alive = marked(&wanted);
            if alive.is_empty() || Instant::now() >= deadline {
                return alive;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Live processes whose `XT_MARKER` satisfies `wanted`: pid, marker, command line.
fn marked(wanted: &impl Fn(&str) -> bool) -> Vec<(i32, String, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Unreadable (gone, or not ours): not one of the case's.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let marker = environ
            .split(|&b| b == 0)
            .filter_map(|entry| entry.strip_prefix(b"XT_MARKER="))
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .find(|value| wanted(value));
        if let Some(marker) = marker.filter(|_| process_alive(pid)) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, marker, cmdline.trim().to_owned()));
        }
    }
    found
}

/// After a case: whatever of it outlived its server gets 2 s, then SIGKILL, so no
/// `sleep 600` is left behind (a faulty server may not kill its trees).
async fn reap(marker: &str) {
    let prefix = format!("{marker}-s");
    let wanted = |value: &str| value.starts_with(&prefix);
    let deadline = Instant::now() + Duration::from_secs(2).mul_f64(time_scale());
    while !marked(&wanted).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(RETRY).await;
    }
    for (pid, _, _) in marked(&wanted) {
        // The pid was seen alive and carrying the marker just now.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Where transcripts of failures go: `EXEC_MODEL_TRANSCRIPT_DIR`, else a new
/// temporary directory that is kept (its path is in the failure message).
fn transcript_dir() -> PathBuf {
    match std::env::var_os("EXEC_MODEL_TRANSCRIPT_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("exec-model-")
            .tempdir()
            .expect("a temporary directory for the transcript")
            .keep(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn sessions_keep_output_write_ids_and_expiry_as_the_model_says() {
    let config = ModelConfig::from_env();
    let mut proptest = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        proptest.cases = DEFAULT_CASES;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        proptest.max_shrink_iters = DEFAULT_SHRINK_ITERS;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        proptest.max_shrink_time = DEFAULT_SHRINK_TIME_MS;
    }
    let cases = proptest.cases;
    let runs = AtomicUsize::new(0);
    // Each failure's details, by its ops: the runner hands back only the minimal ops.
    let failures: Mutex<HashMap<String, Failure>> = Mutex::default();
    let inconclusive = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(proptest);
    // Set at the first failure: from then on proptest is shrinking it.
    let shrinking = AtomicBool::new(false);
    let result = runner.run(&ops::ops(MAX_OPS), |ops| {
        runs.fetch_add(1, Ordering::Relaxed);
        let plan = Plan::of(&ops);
        let mut outcome = runtime().block_on(execute(&plan, &config));
        if matches!(outcome, Outcome::Pass) && shrinking.load(Ordering::Relaxed) {
            // A simpler case that passed is dropped for good: a failure that depends
            // on timing gets a second chance before its simplification is.
            outcome = runtime().block_on(execute(&plan, &config));
        }
        match outcome {
            Outcome::Pass => Ok(()),
            Outcome::Inconclusive(why) => {
                inconclusive.fetch_add(1, Ordering::Relaxed);
                Err(TestCaseError::reject(why))
            }
            Outcome::Fail(failure) => {
                shrinking.store(true, Ordering::Relaxed);
                let text = format!("{failure}\n{}", failure.report);
                failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(format!("{ops:?}"), failure);
                Err(TestCaseError::fail(text))
            }
        }
    });
    eprintln!(
        "session model: {} case runs ({cases} cases wanted; a failure ends the search and its shrinking adds runs) against {} (TTL {:?}) in {:.1?}, {} inconclusive (rejected)",
        runs.load(Ordering::Relaxed),
        config.describe(),
        config.ttl,
        started.elapsed(),
        inconclusive.load(Ordering::Relaxed)
    );
    match result {
        Ok(()) => {}
        Err(TestError::Abort(why)) => panic!("the session model gave up: {why}"),
        Err(TestError::Fail(why, ops)) => {
            let failure = failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&format!("{ops:?}"));
            let (ops, failure) = simplify_more(ops, failure, &config);
            let ops_text = format!("{ops:?}");
            let (check, message) = match &failure {
                Some(failure) => (failure.check, failure.to_string()),
                None => (Check::Protocol, why.to_string()),
            };
            let plan = Plan::of(&ops);
            let dir = transcript_dir();
            let found = xt::Found {
                server: &config.program_and_args(),
                failure: &message,
            };
            let written = xt::write(&dir, &plan, &ops_text, check, &found);
            let replay = match &written {
                Ok(path) => format!(
                    "The transcript {} replays it:\n  cargo build -p conformance --bins &&\n  \
                     $CARGO_TARGET_DIR/debug/exec-conformance --server '{}' \
                     --manifest conformance/exec-server.manifest.toml --transcripts {} --exact ws/{}",
                    path.display(),
                    config.describe(),
                    dir.display(),
                    xt::case_id(check)
                ),
                Err(err) => format!("The transcript could not be written under {}: {err}", dir.display()),
            };
            panic!("the session model failed; minimal ops: {ops_text}\n{why}\n\n{replay}");
        }
    }
}

/// Runs the executor may spend after proptest's shrinking.
const EXTRA_SHRINK_RUNS: usize = 60;

/// Simpler variants of `ops`, the likelier to replay first: each lost write made one
/// whose echo is seen (its outcome then does not depend on when the drop came), then
/// each op deleted.
fn simpler(ops: &[Op]) -> Vec<Vec<Op>> {
    let mut variants = Vec::new();
    for index in 0..ops.len() {
        if let Op::WriteLost {
            echo_unseen: true, ..
        } = ops[index]
        {
            let mut variant = ops.to_vec();
            if let Op::WriteLost { echo_unseen, .. } = &mut variant[index] {
                *echo_unseen = false;
            }
            variants.push(variant);
        }
    }
    for index in 0..ops.len() {
        let mut variant = ops.to_vec();
        variant.remove(index);
        variants.push(variant);
    }
    variants
}

/// Simplifies a failing case further, for as long as it still fails at the same check.
/// proptest tries deleting each op once, in order; but ops pick sessions and processes
/// by index, so a deletion renumbers what later ops pick, and an op that could not go
/// early may go once later ones were simplified. A failure that depends on timing may
/// also have kept a lost write whose echo is not awaited.
fn simplify_more(
    mut ops: Vec<Op>,
    mut failure: Option<Failure>,
    config: &ModelConfig,
) -> (Vec<Op>, Option<Failure>) {
    let Some(check) = failure.as_ref().map(|failure| failure.check) else {
        return (ops, failure);
    };
    let mut runs = 0;
    'again: while runs < EXTRA_SHRINK_RUNS {
        for variant in simpler(&ops) {
            if runs >= EXTRA_SHRINK_RUNS {
                break 'again;
            }
            runs += 1;
            if let Outcome::Fail(found) = runtime().block_on(execute(&Plan::of(&variant), config)) {
                if found.check == check {
                    ops = variant;
                    failure = Some(found);
                    continue 'again;
                }
            }
        }
        break;
    }
    (ops, failure)
}

/// Every kind of op, in two sessions, with no wait past the TTL (quick to replay).
fn sample_ops() -> Vec<Op> {
    vec![
        Op::Start {
            session: 0,
            ticker: None,
            background: true,
        },
        Op::Start {
            session: 0,
            ticker: Some(Ticker {
                delay_ms: 30,
                lines: 3,
            }),
            background: false,
        },
        Op::Write {
            session: 0,
            process: 0,
            data: "hello".into(),
        },
        Op::WriteLost {
            session: 0,
            process: 0,
            data: "lost1".into(),
            echo_unseen: false,
            reset: false,
        },
        Op::NewSession,
        Op::Start {
            session: 1,
            ticker: None,
            background: true,
        },
        Op::WriteLost {
            session: 1,
            process: 0,
            data: "lost2".into(),
            echo_unseen: true,
            reset: true,
        },
        Op::Read {
            session: 0,
            process: 1,
        },
        Op::Write {
            session: 0,
            process: 0,
            data: "again".into(),
        },
        Op::Resume { session: 1 },
        Op::CloseStdin {
            session: 1,
            process: 0,
        },
        Op::Write {
            session: 1,
            process: 0,
            data: "late".into(),
        },
        Op::Terminate {
            session: 0,
            process: 1,
        },
        Op::Disconnect { reset: true },
    ]
}

/// The workspace root.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ is in the workspace")
}

/// Replays the transcript of `check` under `dir` through the conformance runner (the
/// suite's own entry point, as `exec-conformance` runs it) against the in-tree binary,
/// and returns its verdict.
fn replay(dir: &Path, check: Check) -> String {
    let reports = tempfile::tempdir().expect("a report directory");
    let trial = format!("ws/{}", xt::case_id(check));
    let args = [
        "exec-conformance",
        "--server",
        env!("CARGO_BIN_EXE_exec-server"),
        "--manifest",
        &workspace()
            .join("conformance/exec-server.manifest.toml")
            .to_string_lossy(),
        "--transcripts",
        &dir.to_string_lossy(),
        "--report-dir",
        &reports.path().to_string_lossy(),
        "--test-threads",
        "1",
        // The runner prints straight to stdout, past the test's capture; and a FAIL
        // that is the point of the test must not read as one in the test's output.
        "--logfile",
        &reports.path().join("log.txt").to_string_lossy(),
        "--exact",
        &trial,
    ]
    .map(str::to_owned);
    conformance_runner::suite::main(
        args,
        conformance_runner::suite::Source {
            workspace: Some(workspace()),
            embedded: &[],
            in_tree: None,
        },
    );
    // report.json is the runner's documented output (conformance/report.schema.json).
    let path = reports.path().join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("the runner's report {}: {err}", path.display()));
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("the runner's report {}: {err}", path.display()));
    let record = report["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|case| case["trial"] == trial.as_str()))
        .unwrap_or_else(|| panic!("no {trial} in the report: {text}"));
    format!(
        "{} {}",
        record["verdict"].as_str().unwrap_or("?"),
        record["detail"].as_str().unwrap_or("")
    )
}

#[test]
fn the_writer_writes_a_case_the_runner_parses() {
    let mut ops = sample_ops();
    ops.extend([
        Op::WaitPastTtl,
        Op::Resume { session: 0 },
        Op::Write {
            session: 1,
            process: 0,
            data: "x".into(),
        },
    ]);
    let plan = Plan::of(&ops);
    assert!(plan.uses_ttl && plan.uses_close_stdin);
    let text = xt::render(
        &plan,
        &format!("{ops:?}"),
        Check::WriteIdOnce,
        Some(&xt::Found {
            server: "exec-server --fault x",
            failure: "a failure\nspec: a line that looks like a header",
        }),
    );
    let case = conformance_runner::transcript::parse("model.xt", &text)
        .unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(case.spec, "§6.4");
    assert_eq!(
        case.requires,
        ["session.resume", "session.ttl", "process.close_stdin"]
    );
    assert_eq!(
        case.transports,
        [conformance_runner::transcript::TransportName::Ws]
    );
    assert_eq!(
        case.revisions,
        [conformance_runner::transcript::Revision::R2026_08]
    );
    assert!(text.contains("!! wait-ttl 250%"), "{text}");
    // Each check's section is a heading of docs/protocol.md, as a case's must be.
    let protocol = std::fs::read_to_string(workspace().join("docs/protocol.md")).expect("docs");
    let sections = conformance_runner::transcript::protocol_sections(&protocol);
    for check in Check::ALL {
        assert!(
            sections.contains(check.spec()),
            "{check:?} cites {}",
            check.spec()
        );
    }
    assert!(text.contains("\"resumeSessionId\":\"$sid1\""), "{text}");
    // A second session's id is bound and must differ from the first's.
    assert!(
        text.contains(r#"{"$allOf":["$sid2",{"$not":{"$oneOf":["$sid1"]}}]}"#),
        "{text}"
    );
    assert!(!xt::timing_sensitive(&plan), "{text}");
}

/// The writer's transcript is a conformance case: it passes against the honest server,
/// as the model's own run does; and when the model disagrees with the server (here a
/// model that wrongly expects a chunk twice), both the run and the replayed transcript
/// fail, at the same check.
#[test]
fn a_written_case_replays_and_a_model_server_disagreement_fails_it() {
    let ops = sample_ops();
    let config = ModelConfig {
        server: None,
        ttl: Duration::from_secs(30),
    };
    let honest = Plan::of(&ops);
    match runtime().block_on(execute(&honest, &config)) {
        Outcome::Pass => {}
        Outcome::Fail(failure) => panic!("{failure}\n{}", failure.report),
        Outcome::Inconclusive(why) => panic!("inconclusive with a 30 s TTL: {why}"),
    }
    let dir = tempfile::tempdir().expect("a transcript directory");
    let found = xt::Found {
        server: "(none: a test of the writer)",
        failure: "(none)",
    };
    xt::write(
        dir.path(),
        &honest,
        &format!("{ops:?}"),
        Check::OutputOnce,
        &found,
    )
    .expect("write the transcript");
    let verdict = replay(dir.path(), Check::OutputOnce);
    assert!(verdict.starts_with("PASS"), "{verdict}");

    // The disagreement: the model expects the first chunk of the last process read back
    // whole that printed anything to come twice.
    let mut wrong = honest.clone();
    let doubled = wrong.steps.iter_mut().rev().find_map(|step| match step {
        Step::Call(call) if call.method == "process/read" && call.params["afterSeq"] == 0 => {
            let chunks = call.expect.as_mut()?["result"]["chunks"].as_array_mut()?;
            let first = chunks.first()?.clone();
            chunks.push(first);
            Some(())
        }
        _ => None,
    });
    assert!(doubled.is_some(), "the plan reads something back whole");
    match runtime().block_on(execute(&wrong, &config)) {
        Outcome::Fail(failure) => assert_eq!(failure.check, Check::OutputOnce, "{failure}"),
        Outcome::Pass => panic!("a model expecting a chunk twice passed"),
        Outcome::Inconclusive(why) => panic!("inconclusive with a 30 s TTL: {why}"),
    }
    xt::write(
        dir.path(),
        &wrong,
        &format!("{ops:?}"),
        Check::OutputOnce,
        &found,
    )
    .expect("write the transcript");
    let verdict = replay(dir.path(), Check::OutputOnce);
    assert!(verdict.starts_with("FAIL"), "{verdict}");
}

/// What kind of step this is, for the coverage test.
fn kind(step: &Step) -> &'static str {
    match step {
        Step::Op { .. } => "op",
        Step::Initialize {
            init: Init::Fresh, ..
        } => "new session",
        Step::Initialize {
            init: Init::Resume, ..
        } => "resume",
        Step::Initialize {
            init: Init::Expired,
            ..
        } => "refused resume",
        Step::Initialize {
            init: Init::Attached,
            ..
        } => "resume of an attached session",
        Step::Disconnect => "disconnect",
        Step::Reset => "reset",
        Step::Reconnect => "reconnect",
        Step::Settle => "settle",
        Step::WaitPastTtl => "wait past ttl",
        Step::Gone {
            in_transcript: true,
            ..
        } => "gone (no-orphans)",
        Step::Gone { .. } => "gone (model only)",
        Step::NoOrphans => "no orphans",
        Step::Call(call) => {
            let expect = call.expect.as_ref().map(|e| &e["result"]);
            match (call.method, call.check, expect) {
                ("process/write", _, None) => "lost write",
                ("process/write", Check::WriteIdOnce, Some(_)) => "re-sent write",
                ("process/write", _, Some(r)) if r["status"] == "stdinClosed" => "refused write",
                ("process/write", _, _) if call.params["closeStdin"] == true => "close stdin",
                ("process/write", _, _) => "write",
                ("process/read", Check::WriteIdOnce, Some(_)) => "read after re-send",
                ("process/read", _, Some(r))
                    if r["exited"] == true && call.params["afterSeq"] == 0 =>
                {
                    "read back whole"
                }
                ("process/read", _, Some(r)) if r["exited"] == true => "read exit",
                ("process/read", _, Some(r)) if r["closed"] == true => "read close",
                ("process/read", _, Some(r)) if r["chunks"] == json!([]) => "read nothing",
                ("process/read", _, _) => "read chunk",
                ("process/terminate", _, Some(r)) if r["running"] == true => "terminate running",
                ("process/terminate", _, _) => "terminate exited",
                ("process/start", _, _) => "start",
                _ => "other",
            }
        }
    }
}

/// The plans of random runs take every kind of step, and each is written as a
/// transcript the runner parses (no run against a server: this checks the model and
/// the writer, quickly).
#[test]
fn random_plans_cover_every_step_and_write_valid_transcripts() {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = TestRunner::deterministic();
    let strategy = ops::ops(MAX_OPS);
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let mut sensitive = 0;
    let plans = 500;
    for _ in 0..plans {
        let ops = strategy.new_tree(&mut runner).expect("a value").current();
        let plan = Plan::of(&ops);
        for step in &plan.steps {
            *seen.entry(kind(step)).or_default() += 1;
        }
        sensitive += usize::from(xt::timing_sensitive(&plan));
        let text = xt::render(&plan, &format!("{ops:?}"), Check::Protocol, None);
        conformance_runner::transcript::parse("random.xt", &text)
            .unwrap_or_else(|err| panic!("{err}\n{text}"));
    }
    let mut missing: Vec<&str> = [
        "new session",
        "resume",
        "refused resume",
        "resume of an attached session",
        "disconnect",
        "reset",
        "reconnect",
        "settle",
        "wait past ttl",
        "gone (no-orphans)",
        "gone (model only)",
        "no orphans",
        "lost write",
        "re-sent write",
        "refused write",
        "close stdin",
        "write",
        "read after re-send",
        "read back whole",
        "read exit",
        "read close",
        "read nothing",
        "read chunk",
        "terminate running",
        "terminate exited",
        "start",
    ]
    .into_iter()
    .filter(|kind| !seen.contains_key(kind))
    .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "never taken: {missing:?}; taken: {seen:?}"
    );
    assert!(
        sensitive * 20 < plans,
        "{sensitive} of {plans} transcripts depend on timing"
    );
    eprintln!("steps taken by {plans} random plans: {seen:?}; {sensitive} timing-sensitive");
}
