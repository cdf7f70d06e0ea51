//! Record mode (`exec-conformance record`, issue 17): a script of requests and `!!`
//! steps in, a transcript that replays out. This module owns the script format, the
//! recording loop (send a line, then collect what arrives until things are quiet), the
//! normalisation of what the server sent into patterns (the session id and other
//! server-allocated UUIDs as bound variables, temporary paths as `$tmp`/`$tmpPath`,
//! volatile numbers as `{"$type": …}`, output merged into one `!! read-until` per
//! process and stream), the headers, and the refusal to write a transcript that still
//! holds a UUID or a temporary path. The server is started and driven by the runner's
//! own code ([`CaseRun`]), so a recording sees what a replay will.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use exec_server_harness::{Connection, Event, Response};
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::cli::{split_args, Options};
use crate::hygiene;
use crate::manifest::Manifest;
use crate::pattern::{self, Bindings, JsonType, Pattern};
use crate::profile::{Profile, SHORT_TTL};
use crate::runner::{self, ids_in, CaseRun, Config, StepFailure, Verdict, NORMAL_WAIT, STOP_GRACE};
use crate::setup::{setup, Source};
use crate::transcript::{
    self, Class, Level, Revision, StepKind, Transcript, TransportName, FEATURES, HEADER_KEYS,
    PREDEFINED, TTL_FEATURE,
};

/// docs/protocol.md, for the sections a `spec:` header may cite. Built in, so that the
/// standalone runner checks `--spec` without a checkout.
const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// How long nothing may arrive before a step's answers count as complete (logical,
/// × time scale). Short: a replay does not depend on it, since `<~` and `<<` wait.
const QUIET: Duration = Duration::from_millis(150);

/// The script's name in error messages.
const SCRIPT: &str = "<stdin>";

/// A UUID in its hyphenated form (any version), as a server writes one.
const UUID_SOURCE: &str =
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

static UUID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(UUID_SOURCE).expect("the UUID regex is valid"));

/// A UUID in its simple form (32 hex digits, no hyphens) with RFC 9562's version and
/// variant digits, as `Uuid::simple()` writes one: never bound, always refused.
static SIMPLE_UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-fA-F]{12}[1-8][0-9a-fA-F]{3}[89abAB][0-9a-fA-F]{15}\b")
        .expect("the simple UUID regex is valid")
});

/// Fields whose strings are base64 (a file's bytes, a block): written as `{"$b64":
/// "text"}` when the bytes are text, so that paths in them can be templated.
const BASE64_KEYS: [&str; 2] = ["dataBase64", "chunk"];

const USAGE: &str = "usage: exec-conformance record --server CMD [--transport ws|stdio] [--revision 2026-06|2026-08] [--manifest FILE] [--time-scale N] [--token-file FILE] [--spec §N] [--title TEXT] < script > case.xt";

/// Options of a suite run that mean nothing to a recording.
const SUITE_ONLY: [&str; 9] = [
    "--transcripts",
    "--show",
    "--attach",
    "--expectations",
    "--level",
    "--report-dir",
    "--update-expectations",
    "--repeat",
    "--include-long",
];

/// `exec-conformance record …`: reads the script on stdin, prints the transcript on
/// stdout. Exit 0 with a transcript, 1 when the recording failed or was refused, 2 for
/// a bad command line.
pub(crate) fn main(args: Vec<String>, source: &Source) -> ExitCode {
    if args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "--help"))
    {
        println!("{USAGE}\n\nPlays the script (requests as JSON lines, `!!` steps) against a server of its own\nand writes a transcript that replays it; see conformance/README.md, \"Recording a case\".");
        return ExitCode::SUCCESS;
    }
    let (recording, options) = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("exec-conformance record: {err}");
            return ExitCode::from(2);
        }
    };
    let recording = match setup(&options, source, false) {
        Ok((config, manifest)) => Recording {
            config,
            manifest,
            revision_given: options.revision.is_some(),
            ..recording
        },
        Err(err) => {
            eprintln!("exec-conformance record: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut script = String::new();
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("exec-conformance record: reading the script from stdin (end it with Ctrl-D)");
    }
    if let Err(err) = stdin.lock().read_to_string(&mut script) {
        eprintln!("exec-conformance record: reading the script: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("exec-conformance record: cannot build a runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(record(&script, &recording)) {
        Ok(recorded) => {
            for warning in &recorded.warnings {
                eprintln!("exec-conformance record: warning: {warning}");
            }
            print!("{}", recorded.text);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("exec-conformance record: {err}");
            ExitCode::from(1)
        }
    }
}

/// What to record and how.
#[derive(Debug, Clone)]
pub(crate) struct Recording {
    /// The server and run settings, as a suite run gets them.
    pub config: Config,
    /// The server's manifest (its features and how to set a short TTL), if any.
    pub manifest: Option<Manifest>,
    /// The one transport recorded.
    pub transport: TransportName,
    /// `--spec` (default: from the first method after the handshake).
    pub spec: Option<String>,
    /// `--title` (default: the methods the script calls).
    pub title: Option<String>,
    /// Whether `--revision` was given: the transcript then says `revisions:`.
    pub revision_given: bool,
}

/// A recorded transcript and what the user should know about it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub text: String,
    /// Things that will make the replay fail or that were left out.
    pub warnings: Vec<String>,
}

/// The record-only options taken out, the rest parsed as a suite run's options.
fn parse_args(args: Vec<String>) -> Result<(Recording, Options), String> {
    let mut transport = TransportName::Ws;
    let (mut spec, mut title) = (None, None);
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if SUITE_ONLY.contains(&name.as_str()) {
            return Err(format!(
                "{name} is an option of a suite run, not of record\n{USAGE}"
            ));
        }
        if !matches!(name.as_str(), "--transport" | "--spec" | "--title") {
            rest.push(arg);
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name.as_str() {
            "--transport" => {
                transport = TransportName::ALL
                    .into_iter()
                    .find(|t| t.as_str() == value)
                    .ok_or_else(|| format!("--transport {value:?}: ws or stdio"))?;
            }
            "--spec" => spec = Some(value),
            _ => title = Some(value),
        }
    }
    let (options, left) = split_args(rest, |name| std::env::var(name).ok())?;
    if let Some(unknown) = left.first() {
        return Err(format!("unknown argument {unknown:?}\n{USAGE}"));
    }
    let recording = Recording {
        config: Config::default(),
        manifest: None,
        transport,
        spec,
        title,
        revision_given: false,
    };
    Ok((recording, options))
}

/// One line of the script that does something.
#[derive(Debug, Clone)]
enum Action {
    /// A `#` comment, copied into the transcript.
    Comment,
    /// A message (`jsonrpc` added), sent as a `>>` line.
    Send(Value),
    /// A `!!` step.
    Command(StepKind),
}

/// A script line: its number, its text as written (trimmed; for a message, the JSON
/// without any `>>`), and what it does.
#[derive(Debug, Clone)]
struct ScriptStep {
    line: usize,
    text: String,
    action: Action,
}

/// Reads the script: JSON objects (requests and notifications, `>>` optional), `!!`
/// steps and `#` comments. Everything that can be refused without a server is refused
/// here, naming the line.
fn parse_script(script: &str, transport: TransportName) -> Result<Vec<ScriptStep>, String> {
    let bound: BTreeSet<String> = PREDEFINED.iter().map(|name| name.to_string()).collect();
    let mut steps = Vec::new();
    for (index, raw) in script.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        let at = |message: String| format!("{SCRIPT}:{line}: {message}");
        if text.is_empty() {
            continue;
        }
        if let Some(comment) = text.strip_prefix('#') {
            if let Some((key, _)) =
                transcript::header_line(comment).filter(|(key, _)| HEADER_KEYS.contains(key))
            {
                return Err(at(format!(
                    "`# {key}:` is a header, and the recorder writes the headers (use --spec, --title, --revision)"
                )));
            }
            steps.push(ScriptStep {
                line,
                text: text.to_owned(),
                action: Action::Comment,
            });
            continue;
        }
        if text.starts_with("<<") || text.starts_with("<~") {
            return Err(at(
                "`<<` and `<~` lines are what the recorder writes; a script holds requests (JSON objects) and `!!` steps".into(),
            ));
        }
        if text.starts_with("!!") {
            // `!! http REQUEST` needs no pattern here: the recorder writes the answer.
            let command = match text.strip_prefix("!!").map(str::trim_start) {
                Some(http) if http.starts_with("http ") => {
                    let request = http.split(" => ").next().unwrap_or(http);
                    format!("!! {request} => {{}}")
                }
                _ => text.to_owned(),
            };
            let kind = transcript::parse_command_line(SCRIPT, line, &command, &bound)
                .map_err(|err| err.to_string())?;
            if let StepKind::ReadUntil { .. } = kind {
                return Err(at(
                    "`!! read-until` is what the recorder writes, from the output it sees: leave it out of the script".into(),
                ));
            }
            if let Some(needed) = kind.needs_transport().filter(|needed| *needed != transport) {
                return Err(at(format!(
                    "`{text}` runs only on {}, and this recording is on {} (--transport)",
                    needed.as_str(),
                    transport.as_str()
                )));
            }
            steps.push(ScriptStep {
                line,
                text: text.to_owned(),
                action: Action::Command(kind),
            });
            continue;
        }
        let json = text.strip_prefix(">>").map_or(text, str::trim_start);
        let value: Value = serde_json::from_str(json).map_err(|err| {
            at(format!(
                "invalid JSON: {err} (a line is a JSON object, a `!!` step or a `#` comment)"
            ))
        })?;
        let Value::Object(mut object) = value else {
            return Err(at(
                "a message is a JSON object; use `!! raw` for anything else".into(),
            ));
        };
        transcript::check_substitutable(&Value::Object(object.clone()))
            .map_err(|err| at(err.message))?;
        object
            .entry("jsonrpc")
            .or_insert_with(|| Value::String("2.0".into()));
        steps.push(ScriptStep {
            line,
            text: json.to_owned(),
            action: Action::Send(Value::Object(object)),
        });
    }
    if !steps
        .iter()
        .any(|step| !matches!(step.action, Action::Comment))
    {
        return Err(format!(
            "{SCRIPT}: the script is empty: write one request per line (JSON, as `>>` lines are written) and `!!` steps"
        ));
    }
    Ok(steps)
}

/// The method of a message, if it names one.
fn method_of(message: &Value) -> Option<&str> {
    message.get("method").and_then(Value::as_str)
}

/// The features the script needs a server to declare (`requires:`), in the order of
/// [`FEATURES`].
fn requirements(steps: &[ScriptStep], transport: TransportName) -> Vec<String> {
    let mut needed = BTreeSet::new();
    for step in steps {
        match &step.action {
            Action::Send(message) => {
                let params = message.get("params");
                let flag = |name: &str| {
                    params.and_then(|p| p.get(name)).and_then(Value::as_bool) == Some(true)
                };
                match method_of(message) {
                    Some(method) if method.starts_with("fs/") => {
                        needed.insert("fs");
                    }
                    Some("process/resize") => {
                        needed.insert("process.resize");
                    }
                    Some("process/start") if flag("tty") => {
                        needed.insert("process.tty");
                    }
                    Some("process/write") if flag("closeStdin") => {
                        needed.insert("process.close_stdin");
                    }
                    // On stdio a resume can only be refused (§5): nothing to declare.
                    Some("initialize")
                        if transport == TransportName::Ws
                            && params
                                .and_then(|p| p.get("resumeSessionId"))
                                .is_some_and(Value::is_string) =>
                    {
                        needed.insert("session.resume");
                    }
                    _ => {}
                }
            }
            Action::Command(StepKind::WaitTtl(_)) => {
                needed.insert(TTL_FEATURE);
            }
            _ => {}
        }
    }
    FEATURES
        .iter()
        .filter(|feature| needed.contains(*feature))
        .map(|feature| feature.to_string())
        .collect()
}

/// The docs/protocol.md section a method is graded under.
fn section_for(method: &str) -> &'static str {
    match method {
        "process/start" => "§6.1",
        "process/read" => "§6.3",
        "process/write" => "§6.4",
        "process/signal" | "process/terminate" | "process/resize" => "§6.5",
        m if m.starts_with("process/") => "§6",
        m if m.starts_with("environment/") => "§7.1",
        m if m.starts_with("fs/") => "§7",
        // Not a method of the protocol: the envelope's rules answer it.
        _ => "§3",
    }
}

/// The `spec:` header: `--spec` (`6.1` or `§6.1`), or the section of the first
/// method after the handshake (a script that only shakes hands: §4, or §5 when it
/// resumes). It must be a heading of docs/protocol.md.
fn spec_of(given: Option<&str>, steps: &[ScriptStep]) -> Result<String, String> {
    let messages = || {
        steps.iter().filter_map(|step| match &step.action {
            Action::Send(message) => Some(message),
            _ => None,
        })
    };
    let spec = match given {
        Some(spec) if spec.starts_with('§') => spec.to_owned(),
        Some(spec) => format!("§{spec}"),
        None => {
            let first = messages()
                .filter_map(method_of)
                .find(|method| !matches!(*method, "initialize" | "initialized"));
            let resumes = messages().any(|message| {
                message
                    .pointer("/params/resumeSessionId")
                    .is_some_and(Value::is_string)
            });
            match (first, resumes) {
                (Some(method), _) => section_for(method).to_owned(),
                (None, true) => "§5".to_owned(),
                (None, false) => "§4".to_owned(),
            }
        }
    };
    let sections = transcript::protocol_sections(PROTOCOL);
    match sections.contains(&spec) {
        true => Ok(spec),
        false => Err(format!(
            "--spec {spec}: no such section in docs/protocol.md (known: {})",
            sections.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `recorded: TEXT`, or `recorded: ` and the methods the script calls.
fn title_of(given: Option<&str>, steps: &[ScriptStep]) -> String {
    if let Some(title) = given {
        return format!("recorded: {title}");
    }
    let mut methods: Vec<&str> = Vec::new();
    for step in steps {
        if let Action::Send(message) = &step.action {
            if let Some(method) = method_of(message).filter(|m| *m != "initialized") {
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
        }
    }
    match methods.is_empty() {
        true => "recorded: a script".to_owned(),
        false => format!("recorded: {}", methods.join(", ")),
    }
}

/// Records the script against a server of its own and returns the transcript.
pub(crate) async fn record(script: &str, recording: &Recording) -> Result<Recorded, String> {
    let transport = recording.transport;
    let config = &recording.config;
    let steps = parse_script(script, transport)?;
    let requires = requirements(&steps, transport);
    let spec = spec_of(recording.spec.as_deref(), &steps)?;
    let title = title_of(recording.title.as_deref(), &steps);
    let needs_ttl = requires.iter().any(|f| f == TTL_FEATURE);
    let mut warnings = Vec::new();
    // What the server declares matters for the arguments it is started with (a short
    // TTL for `!! wait-ttl`) and for what the transcript will require.
    let profile = match (&recording.manifest, needs_ttl) {
        (Some(manifest), _) => manifest.profile(transport),
        (None, true) => runner::probe(transport, config).await?.advertised,
        (None, false) => Profile::default(),
    };
    if needs_ttl && profile.args.ttl.is_none() {
        return Err(
            "the script waits for the session TTL (`!! wait-ttl`), but this server's TTL cannot be set (no `ttl_arg` in its manifest, no `session.ttlMs` advertised)".into(),
        );
    }
    if recording.manifest.is_some() {
        let missing: Vec<&str> = requires
            .iter()
            .filter(|f| !profile.features.contains(*f))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "the transcript requires {}, which the manifest does not declare on {}: a run will skip it",
                missing.join(", "),
                transport.as_str()
            ));
        }
    }
    let shape = Transcript {
        file: "recorded.xt".into(),
        title: Some(title),
        spec,
        level: Level::Must,
        requires,
        transports: vec![transport],
        revisions: match recording.revision_given {
            true => vec![config.revision],
            false => Revision::ALL.to_vec(),
        },
        class: Class::Normal,
        steps: Vec::new(),
    };
    let ttl = SHORT_TTL.mul_f64(config.time_scale);
    let (tmp, root) = runner::case_dir()?;
    let marker = runner::new_marker();
    let args = profile.server_args(&shape, ttl, &root);
    let server = runner::start(transport, config, &args)
        .await
        .map_err(|err| format!("the server did not start: {err}"))?;
    let bindings = runner::initial_bindings(&root, &marker, config.revision);
    // A UUID the script writes itself (a made-up session id to resume) is the same on
    // every run: it stays as written, in the answers too.
    let own: BTreeSet<String> = steps
        .iter()
        .filter(|step| !matches!(step.action, Action::Comment))
        .flat_map(|step| UUID.find_iter(&step.text).map(|m| m.as_str().to_owned()))
        .collect();
    let mut recorder = Recorder {
        norm: Normaliser::new(&bindings, own.clone()),
        run: CaseRun::new(server, bindings.clone(), ttl, NORMAL_WAIT, marker),
        out: Vec::new(),
        seen: Vec::new(),
        output: OutputBuffer::default(),
        bound_at: ["tmp", "tmpPath", "marker"]
            .into_iter()
            .map(|name| (name.to_owned(), 0))
            .collect(),
        sent_ids: BTreeSet::new(),
        methods: BTreeMap::new(),
        warnings,
    };
    // Every wait inside is bounded; this bounds the whole, whatever the script holds.
    let budget = steps
        .iter()
        .map(|step| match &step.action {
            Action::Command(StepKind::Wait(wait)) => *wait + NORMAL_WAIT,
            Action::Command(StepKind::WaitTtl(factor)) => ttl.mul_f64(*factor) + NORMAL_WAIT,
            _ => NORMAL_WAIT * 2,
        })
        .sum::<Duration>()
        .mul_f64(config.time_scale)
        + Duration::from_secs(30);
    let played = tokio::time::timeout(budget, recorder.play(&steps)).await;
    let (body, warnings) = recorder.finish(config.time_scale).await;
    drop(tmp);
    match played {
        Err(_) => return Err(format!("the recording did not finish within {budget:?}")),
        Ok(Err(err)) => return Err(err),
        Ok(Ok(())) => {}
    }
    let text = render_transcript(&shape, recording.revision_given, &body);
    let plain = bindings
        .get("tmp")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wire = bindings
        .get("tmpPath")
        .and_then(Value::as_str)
        .unwrap_or_default();
    refuse_unredacted(&text, &[plain, wire], &own)?;
    transcript::parse("recorded.xt", &text).map_err(|err| {
        format!("the recorded transcript does not parse (a bug of the recorder): {err}\n{text}")
    })?;
    Ok(Recorded { text, warnings })
}

/// The headers, a blank line, the body.
fn render_transcript(shape: &Transcript, revision_given: bool, body: &[String]) -> String {
    let mut text = String::new();
    if let Some(title) = &shape.title {
        text.push_str(&format!("# title: {title}\n"));
    }
    text.push_str(&format!("# spec: {}\n# level: MUST\n", shape.spec));
    let transports: Vec<&str> = shape.transports.iter().map(|t| t.as_str()).collect();
    text.push_str(&format!("# transports: {}\n", transports.join(", ")));
    if revision_given {
        let revisions: Vec<&str> = shape.revisions.iter().map(|r| r.as_str()).collect();
        text.push_str(&format!("# revisions: {}\n", revisions.join(", ")));
    }
    if !shape.requires.is_empty() {
        text.push_str(&format!("# requires: {}\n", shape.requires.join(", ")));
    }
    text.push('\n');
    for line in body {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// What a sent frame is answered with: one response with this id, any one response
/// (a frame whose id the server cannot use), or nothing (a notification).
#[derive(Debug, Clone, PartialEq)]
enum Awaited {
    Nothing,
    Id(String),
    AnyResponse,
}

fn awaited_by(message: &Value) -> Awaited {
    match message.get("id") {
        Some(id) if id.is_string() || id.is_i64() || id.is_u64() => Awaited::Id(id.to_string()),
        Some(_) => Awaited::AnyResponse,
        None if method_of(message).is_some() => Awaited::Nothing,
        None => Awaited::AnyResponse,
    }
}

/// What a raw frame is answered with.
fn awaited_by_raw(frame: &[u8]) -> Awaited {
    match serde_json::from_slice::<Value>(frame) {
        Ok(message @ Value::Object(_)) => awaited_by(&message),
        _ => Awaited::AnyResponse,
    }
}

/// How much of each connection's buffered messages is already written.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    responses: usize,
    events: usize,
    invalid: usize,
}

/// The recording in progress.
struct Recorder {
    run: CaseRun,
    norm: Normaliser,
    /// The transcript's body so far.
    out: Vec<String>,
    /// Per connection (by index), what of its buffers is written.
    seen: Vec<Seen>,
    output: OutputBuffer,
    /// Where in the body each variable is bound by (the predefined ones: 0).
    bound_at: BTreeMap<String, usize>,
    /// Ids sent by `>>` lines and raw frames (JSON text): a `<<` names these literally.
    sent_ids: BTreeSet<String>,
    /// The method of each request a `>>` line sent, by id (JSON text).
    methods: BTreeMap<String, String>,
    warnings: Vec<String>,
}

impl Recorder {
    fn current(&self) -> usize {
        self.run.connections.len().saturating_sub(1)
    }

    async fn play(&mut self, steps: &[ScriptStep]) -> Result<(), String> {
        self.run
            .open_first()
            .await
            .map_err(|failure| failure.text().to_owned())?;
        for step in steps {
            self.step(step)
                .await
                .map_err(|err| format!("{SCRIPT}:{}: {err}", step.line))?;
        }
        self.flush_output(|_| true);
        Ok(())
    }

    async fn step(&mut self, step: &ScriptStep) -> Result<(), String> {
        let failed = |failure: StepFailure| failure.text().to_owned();
        match &step.action {
            Action::Comment => self.out.push(step.text.clone()),
            Action::Send(message) => {
                self.check_bound(message)?;
                self.out.push(format!(">> {}", step.text));
                if let Some(id) = message.get("id").map(Value::to_string) {
                    if let Some(method) = method_of(message) {
                        self.methods.insert(id.clone(), method.to_owned());
                    }
                    self.sent_ids.insert(id);
                }
                self.run
                    .step(&StepKind::Send(message.clone()))
                    .await
                    .map_err(failed)?;
                self.collect(awaited_by(message)).await;
            }
            Action::Command(kind) => self.command(kind, &step.text).await?,
        }
        Ok(())
    }

    /// Every variable a message uses must be bound by now (a clearer error than the
    /// substitution's).
    fn check_bound(&self, message: &Value) -> Result<(), String> {
        let mut used = Vec::new();
        pattern::referenced(message, &mut used);
        match used.iter().find(|name| !self.run.bindings.contains_key(*name)) {
            None => Ok(()),
            Some(name) => Err(format!(
                "${name} is not bound yet: the recorder predefines $tmp, $tmpPath and $marker, binds $sid at the first sessionId an answer carries ($sid2 at a second session), and any other UUID after its field's name"
            )),
        }
    }

    async fn command(&mut self, kind: &StepKind, text: &str) -> Result<(), String> {
        let failed = |failure: StepFailure| failure.text().to_owned();
        match kind {
            StepKind::Disconnect | StepKind::Reset | StepKind::CloseStdin => {
                self.out.push(text.to_owned());
                self.run.step(kind).await.map_err(failed)?;
                self.collect(Awaited::Nothing).await;
            }
            StepKind::Reconnect => {
                // `!! read-until` reads the current connection: what the old one
                // carried is written before it stops being current.
                let current = self.current();
                self.flush_output(|key| key.connection == current);
                self.out.push(text.to_owned());
                self.run.step(kind).await.map_err(failed)?;
                self.collect(Awaited::Nothing).await;
            }
            StepKind::Wait(_) | StepKind::WaitTtl(_) => {
                self.out.push(text.to_owned());
                self.run.step(kind).await.map_err(failed)?;
                self.collect(Awaited::Nothing).await;
            }
            StepKind::NoOrphans => {
                self.run
                    .step(kind)
                    .await
                    .map_err(|f| format!("`!! no-orphans` does not hold: {}", f.text()))?;
                self.out.push(text.to_owned());
            }
            StepKind::ExpectQuiet(window) => self.expect_quiet(*window, text).await?,
            StepKind::ExpectExit(_) => {
                // The exit code seen is written: the script need not know it.
                let status = self.run.wait_exit().await.map_err(failed)?;
                self.out.push(match status.code() {
                    Some(code) => format!("!! expect-exit {code}"),
                    None => "!! expect-exit".to_owned(),
                });
                self.collect(Awaited::Nothing).await;
            }
            StepKind::Raw(frame) | StepKind::RawNoNewline(frame) => {
                self.out.push(text.to_owned());
                self.sent_ids.extend(ids_in(frame.as_bytes()));
                self.run.step(kind).await.map_err(failed)?;
                self.collect(awaited_by_raw(frame.as_bytes())).await;
            }
            StepKind::Binary(bytes) => {
                self.out.push(text.to_owned());
                self.sent_ids.extend(ids_in(bytes));
                self.run.step(kind).await.map_err(failed)?;
                self.collect(awaited_by_raw(bytes)).await;
            }
            StepKind::Http(http) => {
                let (answer, _) = self.run.http_answer(http).await.map_err(failed)?;
                let pattern = self.norm.value(None, &answer);
                self.sync_bindings();
                let request = text
                    .trim_start_matches("!!")
                    .trim_start()
                    .trim_start_matches("http")
                    .split(" => ")
                    .next()
                    .unwrap_or_default()
                    .trim();
                self.out
                    .push(format!("!! http {request} => {}", render_value(&pattern)));
            }
            StepKind::ReadUntil { .. }
            | StepKind::Send(_)
            | StepKind::ExpectResponse { .. }
            | StepKind::ExpectEvent(_) => {
                return Err(format!("`{text}` cannot be recorded"));
            }
        }
        Ok(())
    }

    /// `!! expect-quiet`: the window must pass without a message, as in a replay.
    async fn expect_quiet(&mut self, window: Duration, text: &str) -> Result<(), String> {
        let before = self.arrived();
        if let Some(current) = self.run.connections.last().cloned() {
            current.drain(window).await;
        }
        let arrived = self.arrived() - before;
        if arrived > 0 {
            self.take_new();
            return Err(format!(
                "`{text}`: the server sent {arrived} message(s) in the window (they are the lines before this one in the transcript so far)"
            ));
        }
        self.out.push(text.to_owned());
        Ok(())
    }

    /// Everything buffered on every connection, counted.
    fn arrived(&self) -> usize {
        self.run
            .connections
            .iter()
            .map(|c| {
                c.buffered_responses().len() + c.buffered_events().len() + c.invalid_frames().len()
            })
            .sum()
    }

    /// Whether what the step awaits has arrived on the current connection.
    fn answered(&self, awaited: &Awaited) -> bool {
        let index = self.current();
        let Some(connection) = self.run.connections.get(index) else {
            return false;
        };
        let written = self.seen.get(index).map_or(0, |seen| seen.responses);
        let new: Vec<Response> = connection
            .buffered_responses()
            .into_iter()
            .skip(written)
            .collect();
        match awaited {
            Awaited::Nothing => true,
            Awaited::AnyResponse => !new.is_empty(),
            Awaited::Id(id) => new.iter().any(|response| id_text(response) == *id),
        }
    }

    /// Reads every open connection until the awaited answer is in and nothing more
    /// has arrived for [`QUIET`], or one step's deadline passes; then writes what
    /// arrived.
    async fn collect(&mut self, awaited: Awaited) {
        let deadline = Instant::now() + self.run.server.scaled(self.run.wait);
        loop {
            let before = self.arrived();
            let mut open = false;
            for connection in self.run.connections.clone() {
                if connection.is_open() {
                    open = true;
                    connection.drain(QUIET).await;
                }
            }
            let answered = self.answered(&awaited);
            // With every connection closed, nothing more can come.
            if (answered && self.arrived() == before) || !open {
                if !answered {
                    self.warn_unanswered(&awaited);
                }
                break;
            }
            if Instant::now() >= deadline {
                if !answered {
                    self.warn_unanswered(&awaited);
                }
                break;
            }
        }
        self.take_new();
    }

    fn warn_unanswered(&mut self, awaited: &Awaited) {
        let what = match awaited {
            Awaited::Id(id) => format!("id {id}"),
            _ => "a frame".to_owned(),
        };
        self.warnings.push(format!(
            "no answer to {what} came (the transcript has no `<<` for it)"
        ));
    }

    /// Writes the responses and notifications that arrived since the last time.
    fn take_new(&mut self) {
        let current = self.current();
        let mut elsewhere = 0;
        // A connection opened since (a reconnect) has nothing written yet.
        self.seen
            .resize(self.run.connections.len(), Seen::default());
        for index in 0..self.run.connections.len() {
            let connection: Connection = self.run.connections[index].clone();
            let seen = self.seen[index];
            let responses = connection.buffered_responses();
            for response in responses.iter().skip(seen.responses) {
                self.write_response(index == current, response);
            }
            let invalid = connection.invalid_frames();
            for frame in invalid.iter().skip(seen.invalid) {
                self.warnings.push(format!(
                    "the server sent something that is not a protocol message ({:.80}): a replay will FAIL",
                    frame
                ));
            }
            let events = connection.buffered_events();
            let new: Vec<Event> = events.iter().skip(seen.events).cloned().collect();
            match index == current {
                true => self.write_events(index, &new),
                false => elsewhere += new.len(),
            }
            self.seen[index] = Seen {
                responses: responses.len(),
                events: events.len(),
                invalid: invalid.len(),
            };
        }
        if elsewhere > 0 {
            self.out.push(format!(
                "# ({elsewhere} notification(s) on an earlier connection not recorded: `<~` reads the current one)"
            ));
        }
        self.sync_bindings();
        self.output.settle(self.out.len());
    }

    fn write_response(&mut self, on_current: bool, response: &Response) {
        let Value::Object(mut message) = response.message() else {
            self.warnings
                .push("a response that is not a JSON object was left out".into());
            return;
        };
        if message.get("jsonrpc") == Some(&json!("2.0")) {
            message.remove("jsonrpc");
        }
        let id = message.remove("id").unwrap_or(Value::Null);
        // An initialize result's `capabilities` and `serverInfo` describe the build and
        // the host (containment, limits, version), not what the script does, and
        // `meta/manifest-matches-capabilities` grades them: only the session id is kept.
        if self.methods.get(&id.to_string()).map(String::as_str) == Some("initialize") {
            if let Some(Value::Object(result)) = message.get_mut("result") {
                result.retain(|key, _| key == "sessionId");
            }
        }
        // `<<` names an id sent literally; a response to anything else is the oldest
        // one with an unknown id, and only on the current connection.
        let id_pattern = match &id {
            Value::String(text) if text == "*" || text.contains('$') || text.starts_with("~/") => {
                None
            }
            id if self.sent_ids.contains(&id.to_string()) => Some(id.clone()),
            _ if !on_current => None,
            Value::Null => Some(Value::Null),
            other => Some(json!({ "$eq": other })),
        };
        let Some(id_pattern) = id_pattern else {
            self.out.push(
                "# (a response `<<` cannot name here was not recorded: its id is not literal, or it came on an earlier connection)".into(),
            );
            return;
        };
        let mut line = Map::new();
        line.insert("id".into(), id_pattern);
        line.extend(self.message_pattern(message));
        self.out.push(format!("<< {}", render_line(&line)));
    }

    /// The pattern of a whole message: each member normalised. A member whose name
    /// starts with `$` would read as an operator: it is left out (a pattern checks
    /// only the members it lists), with a warning.
    fn message_pattern(&mut self, message: Map<String, Value>) -> Map<String, Value> {
        let mut pattern = Map::new();
        for (key, value) in message {
            if key.starts_with('$') {
                self.warnings.push(format!(
                    "a message member named {key:?} is left out (it would read as a pattern operator)"
                ));
                continue;
            }
            let normalised = self.norm.value(Some(&key), &value);
            pattern.insert(key, normalised);
        }
        pattern
    }

    /// Notifications of the current connection: output is merged per process and
    /// stream (written as `!! read-until` when the process closes, the connection
    /// stops being current, or the script ends); every other one becomes a `<~` line.
    fn write_events(&mut self, connection: usize, events: &[Event]) {
        let mut group = Vec::new();
        for event in events {
            if event.method == "process/output" {
                let stream = event.params.get("stream").and_then(Value::as_str);
                if let (Some(process), Some(stream), Some(bytes)) =
                    (event.process_id(), stream, event.chunk())
                {
                    self.output.append(
                        OutputKey {
                            connection,
                            process: process.to_owned(),
                            stream: stream.to_owned(),
                        },
                        &bytes,
                    );
                    continue;
                }
            }
            let message = event.message();
            let Value::Object(mut members) = message.clone() else {
                self.warnings
                    .push("a notification that is not a JSON object was left out".into());
                continue;
            };
            if members.get("jsonrpc") == Some(&json!("2.0")) {
                members.remove("jsonrpc");
            }
            let pattern = Value::Object(self.message_pattern(members));
            let closes = (event.method == "process/closed")
                .then(|| event.process_id().map(str::to_owned))
                .flatten();
            group.push((pattern, message, closes));
        }
        let pairs: Vec<(Value, Value)> = group
            .iter()
            .map(|(pattern, message, _)| (pattern.clone(), message.clone()))
            .collect();
        let bindings = self.norm.bindings();
        for index in order_events(&pairs, &bindings) {
            let (pattern, _, closes) = &group[index];
            if let Some(process) = closes {
                // Closed is a process's last notification: its output is all here.
                self.flush_output(|key| key.connection == connection && key.process == *process);
            }
            self.out.push(format!("<~ {}", render_value(pattern)));
        }
    }

    /// Writes the merged output of the keys `which` selects, each where its last
    /// chunk had arrived: a replay then reads it before the steps that came after it
    /// (a prompt before the input it asks for), in one `!! read-until` however the
    /// chunks fall. Not before a variable it names is bound.
    fn flush_output(&mut self, which: impl Fn(&OutputKey) -> bool) {
        let mut placed: Vec<(usize, usize, Vec<String>)> = Vec::new();
        for (order, pending) in self.output.take(which).into_iter().enumerate() {
            let mut lines = Vec::new();
            if pending.more {
                lines.push(format!(
                    "# (only the first {MAX_OUTPUT_BYTES} bytes of this output are read)"
                ));
            }
            lines.extend(read_until_lines(&self.norm, &pending.key, &pending.bytes));
            let mut used = Vec::new();
            for line in &lines {
                pattern::referenced(&Value::String(format!("_{line}")), &mut used);
                if let Some(process) = line.strip_prefix("!! read-until $") {
                    used.extend(process.split_whitespace().next().map(str::to_owned));
                }
            }
            let bound = used
                .iter()
                .filter_map(|name| self.bound_at.get(name))
                .max()
                .copied()
                .unwrap_or(0);
            let at = pending.at.unwrap_or(self.out.len()).max(bound);
            placed.push((at, order, lines));
        }
        // From the end, so that each place is still where it was (ties in order).
        placed.sort_by_key(|(at, order, _)| std::cmp::Reverse((*at, *order)));
        for (at, _, lines) in placed {
            self.insert_lines(at, lines);
        }
    }

    /// Inserts lines into the body; every place kept for later moves with them.
    fn insert_lines(&mut self, at: usize, lines: Vec<String>) {
        let at = at.min(self.out.len());
        let count = lines.len();
        self.out.splice(at..at, lines);
        for pending in &mut self.output.pending {
            if let Some(place) = pending.at.as_mut().filter(|place| **place >= at) {
                *place += count;
            }
        }
        for place in self.bound_at.values_mut().filter(|place| **place >= at) {
            *place += count;
        }
    }

    /// Variables the normaliser bound become usable by later `>>` lines (and by
    /// output written from here on).
    fn sync_bindings(&mut self) {
        let here = self.out.len();
        for (name, value) in self.norm.bindings() {
            self.bound_at.entry(name.clone()).or_insert(here);
            self.run.bindings.entry(name).or_insert(value);
        }
    }

    /// Stops the server and checks hygiene as the runner does; returns the body and
    /// the warnings.
    async fn finish(mut self, time_scale: f64) -> (Vec<String>, Vec<String>) {
        if self.run.died_unasked() {
            self.warnings
                .push("the server process died during the recording".into());
        }
        let exited = self.run.stop().await;
        if let Verdict::Fail(text) = self.run.stdout_verdict() {
            self.warnings.push(format!("{text}: a replay will FAIL"));
        }
        let grace = STOP_GRACE.mul_f64(time_scale);
        let mut survivors = match exited {
            true => hygiene::reap_marked(&self.run.marker, grace).await,
            false => Vec::new(),
        };
        let Recorder {
            run,
            out,
            mut warnings,
            ..
        } = self;
        let marker = run.marker.clone();
        drop(run);
        survivors.extend(hygiene::reap_marked(&marker, grace).await);
        if !survivors.is_empty() {
            warnings.push(format!(
                "processes the script started outlived the server (now killed): {survivors:?}; a replay will FAIL (end the script with nothing running, then `!! no-orphans`)"
            ));
        }
        (out, warnings)
    }
}

/// A response's id as JSON text (`null` for none).
fn id_text(response: &Response) -> String {
    response
        .id
        .as_ref()
        .and_then(|id| serde_json::to_value(id).ok())
        .unwrap_or(Value::Null)
        .to_string()
}

/// One line of JSON, the envelope's members first (`id`, `method`, `result`, `error`,
/// `params`) and a `processId` first in its object, as the shipped transcripts write
/// them; other keys in order.
fn render_line(map: &Map<String, Value>) -> String {
    const FIRST: [&str; 7] = [
        "id",
        "method",
        "processId",
        "status",
        "result",
        "error",
        "params",
    ];
    let keyed = |key: &str, value: &Value| {
        format!("{}:{}", Value::String(key.to_owned()), render_value(value))
    };
    let first = FIRST
        .iter()
        .filter_map(|key| map.get(*key).map(|value| keyed(key, value)));
    let rest = map
        .iter()
        .filter(|(key, _)| !FIRST.contains(&key.as_str()))
        .map(|(key, value)| keyed(key, value));
    format!("{{{}}}", first.chain(rest).collect::<Vec<_>>().join(","))
}

fn render_value(value: &Value) -> String {
    match value {
        Value::Object(map) => render_line(map),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render_value).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The order to write one collection's `<~` lines in, given each line's pattern and
/// the notification it was made from. `<~` takes the first unconsumed notification that
/// matches, so the lines may come in any order, unless a pattern also matches another
/// notification of the group: then a replay whose notifications arrive in another
/// order would hand it the wrong one. So lines whose pattern matches only their own
/// notification go first (in arrival order), and a pattern that matches several is
/// written once the others are consumed (or when all it matches are written alike).
fn order_events(group: &[(Value, Value)], bindings: &Bindings) -> Vec<usize> {
    let patterns: Vec<Option<Pattern>> = group
        .iter()
        .map(|(pattern, _)| Pattern::compile(pattern).ok())
        .collect();
    let matches = |i: usize, j: usize| {
        patterns[i]
            .as_ref()
            .is_some_and(|p| p.matches(&group[j].1, &mut bindings.clone()).is_ok())
    };
    let mut left: Vec<usize> = (0..group.len()).collect();
    let mut order = Vec::new();
    while !left.is_empty() {
        let only_its_own = left
            .iter()
            .position(|&i| left.iter().all(|&j| j == i || !matches(i, j)));
        let alike = || {
            left.iter().position(|&i| {
                left.iter()
                    .filter(|&&j| matches(i, j))
                    .all(|&j| group[j].0 == group[i].0)
            })
        };
        let pick = only_its_own.or_else(alike).unwrap_or(0);
        order.push(left.remove(pick));
    }
    order
}

/// Which output a `!! read-until` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutputKey {
    connection: usize,
    process: String,
    stream: String,
}

/// The most output of one process and stream a `!! read-until` text holds: a replay
/// reads until the text is there, so its beginning is enough, and a flood of output
/// does not become a transcript of megabytes.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// One process's output on one stream, not yet written.
#[derive(Debug)]
struct Pending {
    key: OutputKey,
    /// The first [`MAX_OUTPUT_BYTES`].
    bytes: Vec<u8>,
    /// Whether there was more.
    more: bool,
    /// Where in the body its last chunk had arrived (its `!! read-until` goes there);
    /// `None` while a collection is still filing chunks.
    at: Option<usize>,
}

/// Output not yet written, per connection, process and stream, in the order each
/// first appeared.
#[derive(Debug, Default)]
struct OutputBuffer {
    pending: Vec<Pending>,
}

impl OutputBuffer {
    fn append(&mut self, key: OutputKey, bytes: &[u8]) {
        let index = match self.pending.iter().position(|p| p.key == key) {
            Some(index) => index,
            None => {
                self.pending.push(Pending {
                    key,
                    bytes: Vec::new(),
                    more: false,
                    at: None,
                });
                self.pending.len() - 1
            }
        };
        let pending = &mut self.pending[index];
        let room = MAX_OUTPUT_BYTES.saturating_sub(pending.bytes.len());
        pending
            .bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        pending.more |= bytes.len() > room;
        pending.at = None;
    }

    /// A collection is written: what arrived in it ends at `at`.
    fn settle(&mut self, at: usize) {
        for pending in &mut self.pending {
            pending.at.get_or_insert(at);
        }
    }

    fn take(&mut self, which: impl Fn(&OutputKey) -> bool) -> Vec<Pending> {
        let (taken, kept) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| which(&p.key));
        self.pending = kept;
        taken
    }
}

/// The `!! read-until` line for one process's output on one stream (and a comment
/// when only a part of it can be written). Chunk boundaries differ from run to run, so
/// the whole output is one text: the replay reads chunks until it is there.
fn read_until_lines(norm: &Normaliser, key: &OutputKey, bytes: &[u8]) -> Vec<String> {
    let shown = format!("output of a process on {}", key.stream);
    if bytes.is_empty() {
        return Vec::new();
    }
    let process = match norm.name_of(&key.process) {
        Some(name) => format!("${name}"),
        // `!! read-until` takes the id as one word, and a `$` starts a variable.
        None if !key.process.is_empty()
            && !key.process.starts_with(['$', '"'])
            && !key.process.contains(char::is_whitespace) =>
        {
            key.process.clone()
        }
        None => {
            return vec![format!(
                "# ({shown} not recorded: its id cannot be written in `!! read-until`)"
            )]
        }
    };
    let (text, mut why_cut) = match std::str::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(err) => (
            std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default(),
            Some("bytes that are not UTF-8"),
        ),
    };
    let (template, cut) = norm.text_template(text);
    why_cut = cut.or(why_cut);
    let mut lines = Vec::new();
    if let Some(why) = why_cut {
        lines.push(match template.is_empty() {
            true => format!("# ({shown} not recorded: it starts with {why})"),
            false => format!("# ({shown} recorded up to {why}, which `!! read-until` cannot hold)"),
        });
    }
    if !template.is_empty() {
        lines.push(format!(
            "!! read-until {process} {} {}",
            key.stream,
            Value::String(template)
        ));
    }
    lines
}

/// Where a string is: a JSON field (a path there is `$tmpPath` when both spellings
/// agree) or output text (a path there is `$tmp`: programs print plain paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Json,
    Text,
}

/// A part of a string, for normalisation.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// A bound variable's value.
    Var(String),
    /// A UUID no variable holds.
    Uuid,
}

/// Turns what the server sent into patterns that match it again on a replay: values
/// that change from run to run become variables (bound at their first appearance, as
/// `"$name"` binds) or typed wildcards.
#[derive(Debug, Clone)]
pub(crate) struct Normaliser {
    /// Variables and their values, in the order they were bound: the predefined
    /// `$tmpPath`, `$tmp`, `$marker`, then what the recording bound.
    vars: Vec<(String, String)>,
    /// UUIDs the script itself writes: literal wherever they appear.
    own: BTreeSet<String>,
}

impl Normaliser {
    pub(crate) fn new(bindings: &Bindings, own: BTreeSet<String>) -> Normaliser {
        let vars = ["tmpPath", "tmp", "marker"]
            .into_iter()
            .filter_map(|name| {
                let value = bindings.get(name)?.as_str()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect();
        Normaliser { vars, own }
    }

    /// Every variable, as the runner's bindings.
    pub(crate) fn bindings(&self) -> Bindings {
        self.vars
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect()
    }

    fn value_of(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The variable holding exactly `value`, if one does.
    fn name_of(&self, value: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(_, v)| v == value)
            .map(|(name, _)| name.as_str())
    }

    /// Binds `value` to `base`, or `base2`, `base3`, … when taken; returns the name.
    fn bind(&mut self, base: &str, value: &str) -> String {
        let taken = |name: &str| {
            PREDEFINED.contains(&name) || self.vars.iter().any(|(bound, _)| bound == name)
        };
        let mut name = base.to_owned();
        let mut n = 2;
        while taken(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        self.vars.push((name.clone(), value.to_owned()));
        name
    }

    /// The pattern for a value the server sent, found under `key`.
    pub(crate) fn value(&mut self, key: Option<&str>, value: &Value) -> Value {
        match value {
            // An operator key would turn the object into a pattern: keep it verbatim.
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
                json!({ "$eq": value })
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.value(Some(k), v)))
                    .collect(),
            ),
            // A read's chunks split the output as this run happened to (see `chunks`
            // in §6.3): their number and boundaries differ on a replay.
            Value::Array(_) if key == Some("chunks") => type_of(value),
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.value(key, item)).collect())
            }
            Value::Number(_) if key.is_some_and(volatile_number) => type_of(value),
            Value::String(text) if key.is_some_and(|k| BASE64_KEYS.contains(&k)) => {
                self.base64(text)
            }
            Value::String(text) => self.string(key, text),
            other => other.clone(),
        }
    }

    /// `{"$b64": "text"}` for base64 of text that a template can hold, else the string.
    fn base64(&mut self, encoded: &str) -> Value {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(text) = decoded {
            if let (template, None) = self.text_template(&text) {
                return json!({ "$b64": template });
            }
        }
        self.string(None, encoded)
    }

    /// The pattern for a string under `key`.
    fn string(&mut self, key: Option<&str>, text: &str) -> Value {
        let whole_uuid = UUID
            .find(text)
            .is_some_and(|found| found.start() == 0 && found.end() == text.len())
            && !self.own.contains(text);
        // The session id is `$sid` whatever its shape; any other UUID the server
        // allocates is named after its field.
        let fresh = self.name_of(text).is_none() && !text.is_empty();
        if fresh && key == Some("sessionId") {
            return Value::String(format!("${}", self.bind("sid", text)));
        }
        if fresh && whole_uuid {
            let base = key
                .filter(|k| is_identifier(k) && *k != "sessionId")
                .unwrap_or("uuid");
            return Value::String(format!("${}", self.bind(base, text)));
        }
        let pieces = self.pieces(text, Context::Json);
        render_pieces(text, &pieces)
    }

    /// The text with bound values as `${name}` (for `!! read-until` and `$b64`), up to
    /// what such a text cannot hold (a literal `${`, a UUID no variable holds), and
    /// why it stops there.
    fn text_template(&self, text: &str) -> (String, Option<&'static str>) {
        let mut out = String::new();
        for piece in self.pieces(text, Context::Text) {
            match piece {
                Piece::Text(part) => match part.find("${") {
                    Some(at) => {
                        out.push_str(&part[..at]);
                        return (out, Some("a literal `${`"));
                    }
                    None => out.push_str(part),
                },
                Piece::Var(name) => out.push_str(&format!("${{{name}}}")),
                Piece::Uuid => return (out, Some("a UUID no variable holds")),
            }
        }
        (out, None)
    }

    /// Splits `text` at bound values (the longest one where several start) and at
    /// UUIDs no variable holds.
    fn pieces<'t>(&self, text: &'t str, context: Context) -> Vec<Piece<'t>> {
        let same_tmp =
            self.value_of("tmp").is_some() && self.value_of("tmp") == self.value_of("tmpPath");
        // When both spellings are one path, which name it gets depends on where it is.
        let other_spelling = match context {
            Context::Json => "tmp",
            Context::Text => "tmpPath",
        };
        let candidates: Vec<&(String, String)> = self
            .vars
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .filter(|(name, _)| !same_tmp || name != other_spelling)
            .collect();
        let uuids: Vec<(usize, usize)> = UUID
            .find_iter(text)
            .filter(|found| !self.own.contains(found.as_str()))
            .map(|found| (found.start(), found.end()))
            .collect();
        let mut pieces = Vec::new();
        let (mut start, mut at) = (0, 0);
        while at < text.len() {
            let rest = &text[at..];
            let var = candidates
                .iter()
                .filter(|(_, value)| rest.starts_with(value.as_str()))
                .max_by_key(|(_, value)| value.len());
            let (piece, length) = match (var, uuids.iter().find(|(s, _)| *s == at)) {
                (Some((name, value)), _) => (Piece::Var(name.clone()), value.len()),
                (None, Some((s, e))) => (Piece::Uuid, e - s),
                (None, None) => {
                    at += rest.chars().next().map_or(1, char::len_utf8);
                    continue;
                }
            };
            if start < at {
                pieces.push(Piece::Text(&text[start..at]));
            }
            pieces.push(piece);
            at += length;
            start = at;
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }
}

/// Whether `name` can be a variable's name (`$name`).
fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Numbers that change from run to run, by their field: times (`…Ms`), seqs (`seq`,
/// `…Seq`: output chunks take seqs, and chunk boundaries vary) and process ids.
fn volatile_number(key: &str) -> bool {
    key.ends_with("Ms")
        || key == "seq"
        || key.ends_with("Seq")
        || key == "pid"
        || key.ends_with("Pid")
}

/// `{"$type": …}` of a value.
fn type_of(value: &Value) -> Value {
    json!({ "$type": JsonType::of(value).as_str() })
}

/// A string as a pattern matching exactly it.
fn literal(text: &str) -> Value {
    let special = text == "*" || text == "..." || text.starts_with("~/");
    if special || (text.contains("${") && !text.starts_with('$')) {
        json!({ "$eq": text })
    } else if text.starts_with('$') {
        // `$$…` is the literal `$…`.
        Value::String(format!("${text}"))
    } else {
        Value::String(text.to_owned())
    }
}

/// The pattern for a string split into pieces: a literal, `"$name"`, `"$name/rest"`,
/// a `${name}` template, or, around a UUID no variable holds, a regex.
fn render_pieces(text: &str, pieces: &[Piece]) -> Value {
    let volatile = pieces.iter().any(|p| !matches!(p, Piece::Text(_)));
    if !volatile {
        return literal(text);
    }
    match pieces {
        [Piece::Var(name)] => return Value::String(format!("${name}")),
        // `$name/rest`: the rest is literal, whatever it holds.
        [Piece::Var(name), Piece::Text(rest)] if rest.starts_with('/') => {
            return Value::String(format!("${name}{rest}"))
        }
        _ => {}
    }
    let templatable = !pieces.iter().any(|p| matches!(p, Piece::Uuid))
        && pieces.iter().all(|p| match p {
            Piece::Text(part) => !part.contains("${"),
            _ => true,
        })
        // A leading `$` that is not `${` would be read as a variable.
        && !matches!(pieces.first(), Some(Piece::Text(first)) if first.starts_with('$'));
    if templatable {
        let template: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(part) => (*part).to_owned(),
                Piece::Var(name) => format!("${{{name}}}"),
                Piece::Uuid => String::new(),
            })
            .collect();
        return Value::String(template);
    }
    let body: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(part) => regex::escape(part),
            // A regex cannot name a variable: any text stands for it.
            Piece::Var(_) => ".+".to_owned(),
            Piece::Uuid => UUID_SOURCE.to_owned(),
        })
        .collect();
    Value::String(format!("~/^{body}$/"))
}

/// Refuses a transcript that still holds a UUID (hyphenated, other than the script's
/// own, `own`; or in the simple form) or a temporary path (this recording's `$tmp` in either spelling, or
/// anything under the system's temporary directory): it would not replay, or would
/// leak the machine's state. Names every line and value.
fn refuse_unredacted(text: &str, temporary: &[&str], own: &BTreeSet<String>) -> Result<(), String> {
    let system = std::env::temp_dir();
    let system = system.to_string_lossy();
    let system = system.trim_end_matches('/');
    let under_system = Regex::new(&format!(
        r#"(?:file://)?{}/[^\s"'\\,}}\]]+"#,
        regex::escape(system)
    ))
    .ok();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        for uuid in UUID
            .find_iter(line)
            .filter(|uuid| !own.contains(uuid.as_str()))
        {
            found.push(format!("line {number}: a UUID, {}", uuid.as_str()));
        }
        for uuid in SIMPLE_UUID.find_iter(line) {
            found.push(format!(
                "line {number}: a UUID (simple form), {}",
                uuid.as_str()
            ));
        }
        let mut paths: Vec<&str> = temporary
            .iter()
            .copied()
            .filter(|path| !path.is_empty() && line.contains(path))
            .collect();
        if let Some(regex) = &under_system {
            paths.extend(regex.find_iter(line).map(|m| m.as_str()));
        }
        if let Some(path) = paths.first() {
            found.push(format!("line {number}: a temporary path, {path}"));
        }
    }
    match found.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "refusing to write a transcript that still holds UUIDs or temporary paths (use $tmp, $tmpPath and variables in the script, or leave out what prints them):\n  {}",
            found.join("\n  ")
        )),
    }
}

#[cfg(test)]
mod tests;
