//! Plays one [`Transcript`] against a server of its own and grades it: starts the
//! server (or attaches to one), runs the steps in order, checks hygiene (stdout purity,
//! no surviving marked process), and returns a [`Verdict`] with a report.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exec_server_harness::protocol::{PathForm, RequestId};
use exec_server_harness::{
    Connection, Direction, ExecServer, HarnessError, HttpRequest, Transport,
};
use serde_json::{json, Value};

use crate::hygiene;
use crate::pattern::{expand, substitute, Bindings, Pattern};
use crate::profile::{Profile, SHORT_TTL};
use crate::transcript::{
    self, Class, HttpStep, Level, ResponseTo, Revision, StepKind, Transcript, TransportName,
    TTL_FEATURE,
};

/// How long each wait of a case may take (logical, × time scale), by its class.
pub(crate) const NORMAL_WAIT: Duration = Duration::from_secs(5);
const LONG_WAIT: Duration = Duration::from_secs(60);

/// The session TTL §1 gives a server by default: the one TTL cases run with, under
/// `--include-long`, against a server whose TTL cannot be set.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// How long the runner reads a connection for responses already on their way before
/// it judges what is left (logical, × time scale).
const SETTLE: Duration = Duration::from_millis(50);

/// How long a server gets to exit after SIGTERM at the end of a case, and its
/// processes to be gone after it did (logical, × time scale).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long `!! no-orphans` lets a dying process finish (logical, × time scale).
const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// How many wire-trace lines of each connection a report shows (the last ones).
const REPORT_TRACE_LINES: usize = 60;

/// What to test and how (one run: one implementation, one revision).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The server command line (program and leading words); `--listen …` is appended.
    pub server: Vec<String>,
    /// `--attach`: a websocket server already running at this URL, used instead.
    pub attach: Option<String>,
    /// The graded revision.
    pub revision: Revision,
    /// Multiplies every wait.
    pub time_scale: f64,
    /// Run cases that need a short TTL against a server whose TTL cannot be set, at
    /// the default TTL (30 s) and with long waits.
    pub include_long: bool,
    /// The bearer token sent on every websocket connection (`--token-file`).
    pub token: Option<String>,
    /// Arguments that give the server its token file (the manifest's `token_arg`).
    pub token_args: Vec<String>,
}

impl Default for Config {
    /// No server command (the in-process in-tree server, for the crate's own tests),
    /// revision 2026-08, waits unscaled, no token.
    fn default() -> Config {
        Config {
            server: Vec::new(),
            attach: None,
            revision: Revision::R2026_08,
            time_scale: 1.0,
            include_long: false,
            token: None,
            token_args: Vec::new(),
        }
    }
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
    /// Under `--repeat N`, the runs of one trial did not all end alike (the tally, then
    /// the first failing run's verdict).
    Flaky(String),
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
            Verdict::Flaky(_) => "FLAKY".into(),
        }
    }

    /// What it says beyond its name: why it was skipped, or what did not hold.
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Pass => "",
            Verdict::Skipped(text)
            | Verdict::NonStrict(text)
            | Verdict::Fail(text)
            | Verdict::Timeout(text)
            | Verdict::Crash(text)
            | Verdict::HarnessError(text)
            | Verdict::Flaky(text) => text,
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

/// A graded case: the verdict, what to show about it, and how long it took.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The grade.
    pub verdict: Verdict,
    /// The wire traces and the server's stderr tail (empty when nothing ran).
    pub report: String,
    /// Wall time of the case, server start-up and teardown included.
    pub duration: Duration,
    /// The transcript line a failing step was on.
    pub line: Option<usize>,
}

impl Outcome {
    /// The outcome of a case that never ran a step.
    pub(crate) fn without_run(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            report: String::new(),
            duration: Duration::ZERO,
            line: None,
        }
    }
}

/// What a server answered when asked: its advertised profile, whether it advertised
/// capabilities at all, and its `serverInfo`.
#[derive(Debug, Clone)]
pub(crate) struct Probed {
    pub advertised: Profile,
    pub has_capabilities: bool,
    pub server_info: Value,
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
        // Symbolic links are not followed (a link cycle would never end).
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(root, &path, found);
        } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "xt") {
            let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
            let id = relative.to_string_lossy().replace('\\', "/");
            found.push((id, path));
        }
    }
}

/// Parses a case file (for trials): a bad transcript is a HARNESS-ERROR verdict.
pub fn load(path: &Path) -> Result<Transcript, String> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|err| format!("{shown}: {err}"))?;
    transcript::parse(&shown, &source).map_err(|err| err.to_string())
}

/// Why a case cannot run here: the SKIPPED reason. Without a `profile` (before the
/// server was asked what it declares), only the reasons that need no server.
pub(crate) fn skip_reason(
    case: &Transcript,
    transport: TransportName,
    config: &Config,
    profile: Option<&Profile>,
) -> Option<String> {
    if !case.revisions.contains(&config.revision) {
        return Some(format!(
            "not a case of revision {}",
            config.revision.as_str()
        ));
    }
    if config.attach.is_some() {
        if transport != TransportName::Ws {
            return Some("--attach: websocket cases only".into());
        }
        if case
            .steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::ExpectExit(_)))
            || case
                .requires
                .iter()
                .any(|f| matches!(f.as_str(), "session.ttl" | "process.retention" | "fs.root"))
        {
            return Some(
                "--attach: the case starts its server with options or watches it exit".into(),
            );
        }
    }
    let mut declared = profile?.clone();
    if config.include_long && config.attach.is_none() {
        declared.features.insert(TTL_FEATURE.to_owned());
    }
    declared.unmet(case, transport, config.revision)
}

/// Asks the server what it advertises: starts it on `transport`, initializes, reads
/// `capabilities`, stops it.
pub(crate) async fn probe(transport: TransportName, config: &Config) -> Result<Probed, String> {
    let server = start(transport, config, &[])
        .await
        .map_err(|err| format!("the server did not start on {}: {err}", transport.as_str()))?;
    let conn = server
        .connect()
        .await
        .map_err(|err| format!("cannot connect: {err}"))?;
    let response = conn
        .request(
            "initialize",
            json!({"clientName": "exec-conformance-probe"}),
        )
        .await
        .map_err(|err| format!("initialize: {err}"))?;
    let result = response
        .result
        .ok_or_else(|| format!("initialize failed: {}", response.raw))?;
    let capabilities = result.get("capabilities").filter(|caps| caps.is_object());
    Ok(Probed {
        advertised: Profile::from_capabilities(capabilities),
        has_capabilities: capabilities.is_some(),
        server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
    })
}

/// Starts (or attaches to) a server. It does not get the case's marker: the server and
/// its helpers are not the case's processes; the case marks what it starts. An empty
/// command (and no `--attach`) is the in-tree server in-process, as the harness runs
/// it: the crate's own tests record and replay against it without a binary to build.
pub(crate) async fn start(
    transport: TransportName,
    config: &Config,
    args: &[String],
) -> Result<ExecServer, HarnessError> {
    let mut builder = ExecServer::builder().time_scale(config.time_scale);
    if let Some(token) = &config.token {
        builder = builder.bearer_token(token.clone());
    }
    builder = match &config.attach {
        Some(url) => builder.attach(url.clone()),
        None if config.server.is_empty() => builder
            .transport(match transport {
                TransportName::Ws => Transport::WebSocket,
                TransportName::Stdio => Transport::Stdio,
            })
            .args(config.token_args.iter().chain(args).cloned()),
        None => builder
            .transport(match transport {
                TransportName::Ws => Transport::WebSocket,
                TransportName::Stdio => Transport::Stdio,
            })
            .command(config.server.clone())
            .args(config.token_args.iter().chain(args).cloned()),
    };
    builder.start().await
}

/// Runs one case on one transport against a server of its own, given what the server
/// declares. Call [`skip_reason`] first.
pub(crate) async fn run_case(
    case: &Transcript,
    transport: TransportName,
    config: &Config,
    profile: &Profile,
) -> Outcome {
    let started = Instant::now();
    let mut outcome = run_case_inner(case, transport, config, profile).await;
    outcome.duration = started.elapsed();
    outcome
}

/// A case's `$tmp`: a fresh directory (removed when the handle drops) and its
/// canonical path. `$tmp` is compared with `pwd -P` and `fs/canonicalize`: no symlink
/// in it.
pub(crate) fn case_dir() -> Result<(tempfile::TempDir, PathBuf), String> {
    let tmp = tempfile::Builder::new()
        .prefix("exec-conformance-")
        .tempdir()
        .map_err(|err| format!("temporary directory: {err}"))?;
    let root = tmp
        .path()
        .canonicalize()
        .map_err(|err| format!("temporary directory: {err}"))?;
    Ok((tmp, root))
}

/// A case's `$marker`: unique, so that hygiene finds this case's processes only.
pub(crate) fn new_marker() -> String {
    format!("exec-conformance-{}", uuid::Uuid::new_v4().simple())
}

async fn run_case_inner(
    case: &Transcript,
    transport: TransportName,
    config: &Config,
    profile: &Profile,
) -> Outcome {
    let (tmp, root) = match case_dir() {
        Ok(dir) => dir,
        Err(err) => return Outcome::without_run(Verdict::HarnessError(err)),
    };
    let marker = new_marker();
    let needs_ttl = case.requires.iter().any(|f| f == TTL_FEATURE);
    let settable_ttl = profile.features.contains(TTL_FEATURE);
    // A TTL that cannot be set is waited out at its default: a long case.
    let (ttl, long) = match settable_ttl {
        true => (
            SHORT_TTL.mul_f64(config.time_scale),
            case.class == Class::Long,
        ),
        false => (DEFAULT_TTL, case.class == Class::Long || needs_ttl),
    };
    let args = profile.server_args(case, ttl, &root);
    let server = match start(transport, config, &args).await {
        Ok(server) => server,
        Err(err) => {
            return Outcome::without_run(Verdict::Crash(format!("the server did not start: {err}")))
        }
    };
    let bindings = initial_bindings(&root, &marker, config.revision);
    let wait = if long { LONG_WAIT } else { NORMAL_WAIT };
    let mut run = CaseRun::new(server, bindings, ttl, wait, marker);
    let budget = match long {
        false => Duration::from_secs(30),
        true => Duration::from_secs(180) + ttl * 3,
    }
    .mul_f64(config.time_scale);
    let played = tokio::time::timeout(budget, run.play(case)).await;
    // Line 0 is no step: the first connection failed.
    let line = match &played {
        Ok(Err((line, _))) if *line > 0 => Some(*line),
        _ => None,
    };
    let mut verdict = match played {
        Err(_) => Verdict::Timeout(format!("the case did not finish within {budget:?}")),
        Ok(Ok(())) if run.died_unasked() => {
            Verdict::Crash("the server process died during the case".into())
        }
        Ok(Ok(())) => match run.unexpected_responses().await {
            Some(text) => Verdict::Fail(text),
            None => Verdict::Pass,
        },
        Ok(Err((line, _))) if run.died_unasked() => {
            Verdict::Crash(format!("{}:{line}: the server process died", case.file))
        }
        Ok(Err((line, failure))) => failure.verdict(format!("{}:{line}", case.file)),
    };
    // Hygiene: stop the server ourselves, so that whatever of the case outlives it is
    // seen before the harness kills the server's whole process group.
    let exited = run.stop().await;
    let grace = STOP_GRACE.mul_f64(config.time_scale);
    if verdict == Verdict::Pass {
        verdict = run.stdout_verdict();
    }
    let mut survivors = match exited {
        true => hygiene::reap_marked(&run.marker, grace).await,
        false => Vec::new(),
    };
    let report = run.report();
    let marker = run.marker.clone();
    drop(run);
    survivors.extend(hygiene::reap_marked(&marker, grace).await);
    if !survivors.is_empty() && !verdict.fails_run() {
        verdict = Verdict::Fail(format!(
            "processes of this case outlived the server (now killed): {survivors:?}"
        ));
    }
    if case.level == Level::Should {
        if let Verdict::Fail(text) | Verdict::Timeout(text) | Verdict::Crash(text) = &verdict {
            verdict = Verdict::NonStrict(text.clone());
        }
    }
    drop(tmp);
    Outcome {
        verdict,
        report,
        duration: Duration::ZERO,
        line,
    }
}

/// Requests sent and answers taken, per connection (by index) and id (as JSON text).
#[derive(Default)]
struct Ledger {
    sent: HashMap<(usize, String), usize>,
    answered: HashMap<(usize, String), usize>,
    /// The connection that last sent each id: where a `<<` for it waits.
    last_sender: HashMap<String, usize>,
}

/// The ids a frame carries (its own, or a batch's members'), as JSON text; a frame that
/// is not JSON carries none.
pub(crate) fn ids_in(frame: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Value>(frame) {
        Ok(Value::Object(message)) => message
            .get("id")
            .map(Value::to_string)
            .into_iter()
            .collect(),
        Ok(Value::Array(batch)) => batch
            .iter()
            .filter_map(|member| member.get("id").map(Value::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl Ledger {
    /// Records the requests in a frame sent on `connection`: its `id`, or the ids of a
    /// batch's members. A frame that is not JSON carries none.
    fn record(&mut self, connection: usize, frame: &[u8]) {
        for id in ids_in(frame) {
            *self.sent.entry((connection, id.clone())).or_default() += 1;
            self.last_sender.insert(id, connection);
        }
    }

    fn ids_sent_on(&self, connection: usize) -> HashSet<String> {
        self.sent
            .keys()
            .filter(|(index, _)| *index == connection)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// An id as the ledger keys it: its JSON text.
fn id_key(id: &RequestId) -> String {
    serde_json::to_value(id)
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// `$tmp`, `$tmpPath` (by revision: a plain path, or a `file:` URI) and `$marker`.
pub(crate) fn initial_bindings(root: &Path, marker: &str, revision: Revision) -> Bindings {
    let plain = root.to_string_lossy().into_owned();
    let wire = match revision {
        Revision::R2026_06 => plain.clone(),
        Revision::R2026_08 => PathForm::FileUri
            .render(root.as_os_str().as_encoded_bytes())
            .to_string(),
    };
    Bindings::from([
        ("tmp".to_owned(), Value::String(plain)),
        ("tmpPath".to_owned(), Value::String(wire)),
        ("marker".to_owned(), Value::String(marker.to_owned())),
    ])
}

/// Why a step failed, before it becomes a verdict.
pub(crate) enum StepFailure {
    Mismatch(String),
    Timeout(String),
    Harness(String),
}

impl StepFailure {
    /// What went wrong, without the verdict.
    pub(crate) fn text(&self) -> &str {
        match self {
            StepFailure::Mismatch(text)
            | StepFailure::Timeout(text)
            | StepFailure::Harness(text) => text,
        }
    }

    fn verdict(self, at: String) -> Verdict {
        match self {
            StepFailure::Mismatch(text) => Verdict::Fail(format!("{at}: {text}")),
            StepFailure::Timeout(text) => Verdict::Timeout(format!("{at}: {text}")),
            StepFailure::Harness(text) => Verdict::HarnessError(format!("{at}: {text}")),
        }
    }
}

impl From<HarnessError> for StepFailure {
    fn from(err: HarnessError) -> Self {
        match err {
            HarnessError::Timeout { .. } => StepFailure::Timeout(err.to_string()),
            other => StepFailure::Mismatch(other.to_string()),
        }
    }
}

/// One case being played: its server, its connections (the last one is current), and
/// what it has bound. The recorder drives one too, step by step.
pub(crate) struct CaseRun {
    pub(crate) server: ExecServer,
    pub(crate) connections: Vec<Connection>,
    /// The requests sent and the answers taken, per connection.
    requests: Ledger,
    /// Connections the case itself closed.
    closed: HashSet<usize>,
    pub(crate) bindings: Bindings,
    ttl: Duration,
    /// The deadline of each wait (logical).
    pub(crate) wait: Duration,
    pub(crate) marker: String,
    /// Set once the case closes stdin or expects the server to exit.
    exit_expected: bool,
}

impl CaseRun {
    pub(crate) fn new(
        server: ExecServer,
        bindings: Bindings,
        ttl: Duration,
        wait: Duration,
        marker: String,
    ) -> CaseRun {
        CaseRun {
            server,
            connections: Vec::new(),
            requests: Ledger::default(),
            closed: HashSet::new(),
            bindings,
            ttl,
            wait,
            marker,
            exit_expected: false,
        }
    }

    /// Opens the case's first connection.
    pub(crate) async fn open_first(&mut self) -> Result<(), StepFailure> {
        let connection = self
            .server
            .connect()
            .await
            .map_err(|err| StepFailure::Mismatch(format!("cannot connect: {err}")))?;
        self.connections.push(connection);
        Ok(())
    }

    async fn play(&mut self, case: &Transcript) -> Result<(), (usize, StepFailure)> {
        self.open_first().await.map_err(|failure| (0, failure))?;
        for step in &case.steps {
            self.step(&step.kind)
                .await
                .map_err(|failure| (step.line, failure))?;
        }
        Ok(())
    }

    fn current(&self) -> &Connection {
        self.connections
            .last()
            .expect("play opens the first connection")
    }

    pub(crate) async fn step(&mut self, kind: &StepKind) -> Result<(), StepFailure> {
        match kind {
            StepKind::Send(message) => {
                let message = substitute(message, &self.bindings)
                    .map_err(|err| StepFailure::Harness(err.message))?;
                let text = message.to_string();
                self.requests
                    .record(self.connections.len() - 1, text.as_bytes());
                self.current().send_raw(text).await?;
            }
            StepKind::Raw(text) => {
                self.requests
                    .record(self.connections.len() - 1, text.as_bytes());
                self.current().send_raw(text).await?
            }
            StepKind::RawNoNewline(text) => {
                self.requests
                    .record(self.connections.len() - 1, text.as_bytes());
                self.current().send_raw_bytes(text.as_bytes()).await?
            }
            StepKind::Binary(bytes) => {
                self.requests.record(self.connections.len() - 1, bytes);
                self.current().send_raw_bytes(bytes).await?
            }
            StepKind::Http(http) => self.http(http).await?,
            StepKind::ExpectResponse { to, pattern } => self.expect_response(to, pattern).await?,
            StepKind::ExpectEvent(pattern) => {
                let snapshot = self.bindings.clone();
                let matcher = pattern.clone();
                let event = self
                    .current()
                    .expect_event(move |event| {
                        matcher
                            .matches(&event.message(), &mut snapshot.clone())
                            .is_ok()
                    })
                    .described(format!("a notification matching {}", pattern.render()))
                    .within(self.wait)
                    .await?;
                pattern
                    .matches(&event.message(), &mut self.bindings)
                    .map_err(|m| StepFailure::Harness(m.to_string()))?;
            }
            StepKind::Disconnect => {
                self.closed.insert(self.connections.len() - 1);
                self.current().disconnect().await?
            }
            StepKind::Reset => {
                self.closed.insert(self.connections.len() - 1);
                self.current().reset().await?
            }
            StepKind::Reconnect => {
                let connection = self.server.connect().await?;
                self.connections.push(connection);
            }
            StepKind::CloseStdin => {
                self.exit_expected = true;
                self.closed.insert(self.connections.len() - 1);
                self.current().disconnect().await?;
            }
            StepKind::ExpectExit(code) => {
                let status = self.wait_exit().await?;
                if let Some(code) = code {
                    if status.code() != Some(*code) {
                        return Err(StepFailure::Mismatch(format!(
                            "the server exited with {status}, expected exit code {code}"
                        )));
                    }
                }
            }
            StepKind::Wait(logical) => tokio::time::sleep(self.server.scaled(*logical)).await,
            StepKind::WaitTtl(factor) => tokio::time::sleep(self.ttl.mul_f64(*factor)).await,
            StepKind::ExpectQuiet(logical) => {
                self.current()
                    .expect_no_event(*logical)
                    .await
                    .map_err(|err| StepFailure::Mismatch(err.to_string()))?;
                if let Some(text) = self.unexpected_responses().await {
                    return Err(StepFailure::Mismatch(text));
                }
                let current = self.connections.len() - 1;
                if !self.current().is_open() && !self.closed.contains(&current) {
                    return Err(StepFailure::Mismatch(
                        "the server closed the connection while it was to stay quiet".into(),
                    ));
                }
            }
            StepKind::NoOrphans => {
                // A process killed a moment ago may still be on its way out (its pipes
                // closed, its exit not yet done): give stragglers a short grace.
                let deadline = Instant::now() + self.server.scaled(ORPHAN_GRACE);
                loop {
                    let alive = hygiene::marked_processes(&self.marker);
                    if alive.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(StepFailure::Mismatch(format!(
                            "processes carrying the case's marker are alive: {alive:?}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            StepKind::ReadUntil {
                process,
                stream,
                text,
            } => self.read_until(process, stream.as_deref(), text).await?,
        }
        Ok(())
    }

    /// Waits (one step's deadline) for the server process to exit, which is then not
    /// a crash.
    pub(crate) async fn wait_exit(&mut self) -> Result<std::process::ExitStatus, StepFailure> {
        self.exit_expected = true;
        Ok(self.server.wait_exit_within(self.wait).await?)
    }

    async fn expect_response(
        &mut self,
        to: &ResponseTo,
        pattern: &Pattern,
    ) -> Result<(), StepFailure> {
        let response = match to {
            ResponseTo::Id(id) => {
                let key = id.to_string();
                let index = self
                    .requests
                    .last_sender
                    .get(&key)
                    .copied()
                    .unwrap_or(self.connections.len() - 1);
                let request: RequestId = serde_json::from_value(id.clone())
                    .map_err(|err| StepFailure::Harness(format!("id {id}: {err}")))?;
                let response = self.connections[index]
                    .response_within(&request, self.wait)
                    .await?;
                *self.requests.answered.entry((index, key)).or_default() += 1;
                response
            }
            ResponseTo::Unidentified => {
                let index = self.connections.len() - 1;
                let sent = self.requests.ids_sent_on(index);
                self.current()
                    .response_where(
                        "a response with id null or an id this case never sent",
                        self.wait,
                        move |id| id.is_none_or(|id| !sent.contains(&id_key(id))),
                    )
                    .await?
            }
        };
        let message = response.message();
        pattern
            .matches(&message, &mut self.bindings)
            .map_err(|mismatch| {
                StepFailure::Mismatch(format!(
                    "response does not match\n  expected: {}\n  actual:   {message}\n  {mismatch}",
                    pattern.render()
                ))
            })
    }

    async fn http(&mut self, http: &HttpStep) -> Result<(), StepFailure> {
        let (actual, text) = self.http_answer(http).await?;
        http.pattern
            .matches(&actual, &mut self.bindings)
            .map_err(|mismatch| {
                StepFailure::Mismatch(format!(
                    "HTTP answer does not match\n  expected: {}\n  actual:   {}\n  {mismatch}",
                    http.pattern.render(),
                    text.trim_end()
                ))
            })
    }

    /// Makes the request of `!! http` and returns its answer as the pattern sees it,
    /// `{"status": N, "body": "text"}`, and as text.
    pub(crate) async fn http_answer(
        &self,
        http: &HttpStep,
    ) -> Result<(Value, String), StepFailure> {
        let url = self
            .server
            .url()
            .ok_or_else(|| StepFailure::Harness("`!! http` needs a websocket server".into()))?;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if http.upgrade {
            headers.extend([
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ]);
        }
        let mut host = None;
        for (name, value) in &http.headers {
            match name.eq_ignore_ascii_case("host") {
                true => host = Some(value.as_str()),
                false => headers.push((name, value)),
            }
        }
        let request = HttpRequest {
            method: &http.method,
            target: &http.path,
            host,
            headers: &headers,
        };
        let answer =
            exec_server_harness::http_head(url, request, self.server.default_wait()).await?;
        let actual = json!({"status": answer.status, "body": answer.body});
        Ok((actual, answer.text))
    }

    async fn read_until(
        &mut self,
        process: &str,
        stream: Option<&str>,
        text: &str,
    ) -> Result<(), StepFailure> {
        let process = match process.strip_prefix('$') {
            Some(name) => match self.bindings.get(name) {
                Some(Value::String(id)) => id.clone(),
                other => {
                    return Err(StepFailure::Harness(format!(
                        "${name} is {other:?}, not a process id"
                    )))
                }
            },
            None => process.to_owned(),
        };
        let wanted =
            expand(text, &self.bindings).map_err(|err| StepFailure::Harness(err.message))?;
        let mut seen = Vec::new();
        let shown_stream = stream.map(|s| format!(" on {s}")).unwrap_or_default();
        while !seen.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
            let event = self
                .current()
                .expect_event(|e| {
                    e.is_output(&process)
                        && stream.is_none_or(|s| e.params.get("stream") == Some(&json!(s)))
                })
                .described(format!(
                    "output of {process}{shown_stream} containing {wanted:?} (so far {:?})",
                    String::from_utf8_lossy(&seen)
                ))
                .within(self.wait)
                .await?;
            seen.extend(event.chunk().unwrap_or_default());
        }
        Ok(())
    }

    /// Whether the server process died without the case closing its stdin or
    /// expecting it to exit.
    pub(crate) fn died_unasked(&self) -> bool {
        !self.exit_expected
            && self
                .server
                .pid()
                .is_some_and(|pid| !exec_server_harness::process_alive(pid))
    }

    /// A response no server may send, among those no `<<` took: one with a null id,
    /// one to an id never sent on its connection (an answer to nothing), or more
    /// answers to an id than requests with it. Answers to requests the case sent and
    /// did not wait for are fine. Reads each open connection briefly first, so what is
    /// already on its way is seen.
    pub(crate) async fn unexpected_responses(&self) -> Option<String> {
        for connection in &self.connections {
            if connection.is_open() {
                connection.drain(SETTLE).await;
            }
        }
        let mut strange = Vec::new();
        for (index, connection) in self.connections.iter().enumerate() {
            let mut left: HashMap<String, usize> = HashMap::new();
            for response in connection.buffered_responses() {
                let Some(id) = response.id.as_ref().map(id_key) else {
                    strange.push(format!("with a null id: {}", response.raw));
                    continue;
                };
                let key = (index, id);
                let sent = self.requests.sent.get(&key).copied().unwrap_or(0);
                let taken = self.requests.answered.get(&key).copied().unwrap_or(0);
                let seen = left.entry(key.1.clone()).or_default();
                *seen += 1;
                if sent == 0 {
                    strange.push(format!(
                        "to an id never sent on its connection: {}",
                        response.raw
                    ));
                } else if taken + *seen > sent {
                    strange.push(format!(
                        "more answers than requests with its id: {}",
                        response.raw
                    ));
                }
            }
        }
        (!strange.is_empty()).then(|| format!("unexpected responses: {}", strange.join("; ")))
    }

    /// Stops a child server that is still running, as a service manager would: SIGTERM
    /// to its process group (a server started through a wrapper is in it too), then up
    /// to [`STOP_GRACE`] for the group to be gone. On stdio, then reads what it wrote
    /// up to its exit. True when it is known to have exited.
    pub(crate) async fn stop(&self) -> bool {
        let Some(pid) = self.server.pid() else {
            return false;
        };
        // One that exited already is reaped: its number may be someone else's now.
        let mut exited = self.server.wait_exit_within(Duration::ZERO).await.is_ok();
        if !exited {
            // SAFETY: kill(2) has no memory effects; `pid` leads the group of the
            // server this case started, which is not reaped (it has not exited).
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            exited = self.server.wait_exit_within(STOP_GRACE).await.is_ok();
            if exited {
                let deadline = Instant::now() + self.server.scaled(STOP_GRACE);
                // SAFETY: as above; signal 0 only asks whether the group has members.
                while unsafe { libc::kill(-pid, 0) } == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if exited && self.server.transport() == Transport::Stdio {
            if let Some(connection) = self.connections.first() {
                // To EOF: stray stdout becomes an invalid frame.
                connection.drain(STOP_GRACE).await;
            }
        }
        exited
    }

    /// Stdout purity: nothing but protocol frames on any connection, and nothing after
    /// a websocket server's start-up line.
    pub(crate) fn stdout_verdict(&self) -> Verdict {
        let invalid: Vec<String> = self
            .connections
            .iter()
            .flat_map(Connection::invalid_frames)
            .collect();
        let extra = self.server.extra_stdout();
        if !invalid.is_empty() {
            Verdict::Fail(format!("non-protocol output from the server: {invalid:?}"))
        } else if !extra.is_empty() {
            Verdict::Fail(format!(
                "the server printed on stdout after its start-up line: {extra:?}"
            ))
        } else {
            Verdict::Pass
        }
    }

    /// The last lines of every connection's wire trace and the server's stderr tail.
    pub(crate) fn report(&self) -> String {
        let mut out = String::new();
        for (index, connection) in self.connections.iter().enumerate() {
            let trace = connection.trace();
            let skipped = trace.len().saturating_sub(REPORT_TRACE_LINES);
            out.push_str(&format!("==== wire trace, connection {} ====\n", index + 1));
            if skipped > 0 {
                out.push_str(&format!("    … {skipped} earlier lines\n"));
            }
            for entry in &trace[skipped..] {
                let arrow = match entry.direction {
                    Direction::Sent => "->",
                    Direction::Received => "<-",
                    Direction::Note => "==",
                };
                let at = entry.at.as_secs_f64();
                out.push_str(&format!("{at:>9.3}s {arrow} {}\n", entry.text));
            }
        }
        out.push_str("==== server stderr (tail) ====\n");
        out.push_str(&self.server.stderr());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(include_long: bool, attach: Option<&str>) -> Config {
        Config {
            server: vec!["server".into()],
            attach: attach.map(str::to_owned),
            revision: Revision::R2026_08,
            time_scale: 1.0,
            include_long,
            token: None,
            token_args: Vec::new(),
        }
    }

    #[test]
    fn ttl_cases_need_a_settable_ttl_or_include_long() {
        let case = transcript::parse(
            "t.xt",
            "# spec: §5\n# transports: ws\n# requires: session.ttl\n!! wait-ttl 30%\n",
        )
        .unwrap();
        let fixed = Profile::default();
        let ws = TransportName::Ws;
        assert_eq!(
            skip_reason(&case, ws, &config(false, None), Some(&fixed)).as_deref(),
            Some("undeclared: session.ttl")
        );
        assert_eq!(
            skip_reason(&case, ws, &config(true, None), Some(&fixed)),
            None
        );
        assert!(skip_reason(&case, ws, &config(true, Some("ws://127.0.0.1:1")), None).is_some());
        let settable = Profile {
            features: [TTL_FEATURE.to_owned()].into(),
            ..Profile::default()
        };
        assert_eq!(
            skip_reason(&case, ws, &config(false, None), Some(&settable)),
            None
        );
        let old =
            transcript::parse("o.xt", "# spec: §5\n# revisions: 2026-06\n!! wait 1ms\n").unwrap();
        assert_eq!(
            skip_reason(&old, ws, &config(false, None), None).as_deref(),
            Some("not a case of revision 2026-08")
        );
    }

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
