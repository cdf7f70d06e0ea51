//! The suite as libtest trials: one per `transport/case-id`, run by libtest-mimic so
//! that `--list`, `--exact`, filters and `--format json` behave as with libtest, plus
//! the run-level rules as trials of their own (`meta/…`), so they hold under nextest
//! too. Listing starts no server. Verdicts are judged against the expectations and the
//! gate's level, and recorded in the reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tokio::sync::OnceCell;

use crate::cli::{split_args, GateLevel, Options};
use crate::expectations::{Expectations, Judgement};
use crate::manifest::{self, Manifest};
use crate::profile::Profile;
use crate::report::{self, Record, RunInfo};
use crate::runner::{self, Config, Outcome, Probed, Verdict};
pub use crate::setup::Source;
use crate::setup::{resolve, setup};
use crate::transcript::{self, Transcript, TransportName};

/// A case's file as shown, and its text.
type Cases = BTreeMap<String, (String, String)>;

/// What every trial of one run shares.
struct Suite {
    config: Config,
    manifest: Option<Manifest>,
    expectations: Expectations,
    /// The expectations file, resolved (`--update-expectations` rewrites it).
    expectations_file: Option<PathBuf>,
    /// How many times each trial runs (`--repeat N`).
    repeat: u32,
    /// The manifest's file as given, or `(built in)`.
    manifest_file: String,
    level: GateLevel,
    report_dir: Option<PathBuf>,
    run: RunInfo,
    /// What the server answered, per transport, asked once per process.
    probes: [OnceCell<Result<Probed, String>>; 2],
    /// Every record of this process (the reports are written from them).
    records: Mutex<Vec<Record>>,
}

impl Suite {
    /// What the server answered on `transport`. A failed probe is tried once more (a
    /// start-up that lost a race under load) before its error is kept.
    async fn probe(&self, transport: TransportName) -> Result<Probed, String> {
        let cell = &self.probes[transport as usize];
        cell.get_or_init(|| async {
            match runner::probe(transport, &self.config).await {
                Ok(probed) => Ok(probed),
                Err(_) => runner::probe(transport, &self.config).await,
            }
        })
        .await
        .clone()
    }

    /// What the server declares on `transport`: its manifest, or what it advertises.
    async fn profile(&self, transport: TransportName) -> Result<Profile, String> {
        match &self.manifest {
            Some(manifest) => Ok(manifest.profile(transport)),
            None => self.probe(transport).await.map(|probed| probed.advertised),
        }
    }

    async fn grade(&self, case: &Transcript, transport: TransportName) -> Outcome {
        // Skips that need no server come first: they never start one.
        if let Some(reason) = runner::skip_reason(case, transport, &self.config, None) {
            return Outcome::without_run(Verdict::Skipped(reason));
        }
        let profile = match self.profile(transport).await {
            Ok(profile) => profile,
            Err(err) => {
                return Outcome::without_run(Verdict::Crash(format!(
                    "asking the server for its capabilities: {err}"
                )))
            }
        };
        match runner::skip_reason(case, transport, &self.config, Some(&profile)) {
            Some(reason) => Outcome::without_run(Verdict::Skipped(reason)),
            None => runner::run_case(case, transport, &self.config, &profile).await,
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime, Failed> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failed::from(format!("HARNESS-ERROR cannot build a runtime: {err}")))
    }

    fn trial(
        &self,
        name: &str,
        case: &Transcript,
        transport: TransportName,
    ) -> Result<Completion, Failed> {
        let runtime = match Self::runtime() {
            Ok(runtime) => runtime,
            Err(failed) => {
                return self
                    .record_rule(name, &case.spec, &case.file, Instant::now(), Err(failed))
                    .map(|()| Completion::Completed)
            }
        };
        let mut runs = Vec::new();
        for _ in 0..self.repeat {
            let outcome = runtime.block_on(self.grade(case, transport));
            // A skip depends on the case and the server's declarations only.
            let skipped = matches!(outcome.verdict, Verdict::Skipped(_));
            runs.push(outcome);
            if skipped {
                break;
            }
        }
        let labels: Vec<String> = runs.iter().map(|run| label_of(&run.verdict)).collect();
        let outcome = fold_runs(runs);
        let label = label_of(&outcome.verdict);
        let heading = format!(
            "{} {name} [{} {}, revision {}, {:.1}s]",
            outcome.verdict.label(),
            case.spec,
            case.file,
            self.config.revision.as_str(),
            outcome.duration.as_secs_f64()
        );
        let detail = outcome.verdict.detail().to_owned();
        let judgement = match &outcome.verdict {
            Verdict::Flaky(_) => self.expectations.judge_flaky(name, &labels),
            _ => self.expectations.judge(name, &label, outcome.line),
        };
        let gate_failure = gate_failure(&outcome.verdict, &judgement, self.level);
        if gate_failure.is_none() && matches!(outcome.verdict, Verdict::NonStrict(_)) {
            eprintln!("{heading}\n    {detail}");
        }
        let record = Record {
            trial: name.to_owned(),
            verdict: label,
            detail: detail.clone(),
            expectation: match &judgement {
                Judgement::Unlisted => None,
                Judgement::ExpectedFailure(_) => Some("known_failing".into()),
                Judgement::AllowedFlaky(_) => Some("known_flaky".into()),
                Judgement::Contradicted(_) => Some("contradicted".into()),
            },
            reason: match &judgement {
                Judgement::ExpectedFailure(reason) | Judgement::AllowedFlaky(reason) => {
                    Some(reason.clone())
                }
                Judgement::Unlisted | Judgement::Contradicted(_) => None,
            },
            fails_gate: gate_failure.is_some(),
            duration_ms: outcome.duration.as_millis() as u64,
            spec: case.spec.clone(),
            file: case.file.clone(),
            line: outcome.line,
            report: match outcome.verdict {
                Verdict::Pass | Verdict::Skipped(_) => String::new(),
                _ => outcome.report.clone(),
            },
        };
        self.record(record)?;
        match (gate_failure, outcome.verdict) {
            (Some(why), _) => {
                let title = case.title.as_deref().unwrap_or("");
                Err(Failed::from(format!(
                    "{why}\n{heading}\n{title}\n{detail}\n{}",
                    outcome.report
                )))
            }
            (None, Verdict::Skipped(reason)) => Ok(Completion::ignored_with(reason)),
            (None, _) => Ok(Completion::Completed),
        }
    }

    /// Keeps a trial's record; under nextest (a process per trial) writes it at once,
    /// and a report that cannot be written fails the trial.
    fn record(&self, record: Record) -> Result<(), Failed> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.push(record.clone());
        drop(records);
        match under_nextest() {
            true => self.write_reports(&[record]).map_err(Failed::from),
            false => Ok(()),
        }
    }

    /// Runs one trial's body so that it always leaves a record: under nextest a record
    /// saying it did not finish is written first (a process killed by nextest's timeout
    /// or a signal leaves that one), and a panic becomes a HARNESS-ERROR.
    fn guarded(
        &self,
        name: &str,
        spec: &str,
        file: &str,
        body: impl FnOnce() -> Result<Completion, Failed>,
    ) -> Result<Completion, Failed> {
        let started = Instant::now();
        if under_nextest() {
            let unfinished = Record {
                trial: name.to_owned(),
                verdict: "TIMEOUT".to_owned(),
                detail: "the trial did not finish: its process was killed (nextest's timeout, or a signal)".to_owned(),
                expectation: None,
                reason: None,
                fails_gate: true,
                duration_ms: 0,
                spec: spec.to_owned(),
                file: file.to_owned(),
                line: None,
                report: String::new(),
            };
            self.write_reports(&[unfinished]).map_err(Failed::from)?;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let failed = Failed::from(format!("HARNESS-ERROR the runner panicked: {message}"));
                self.record_rule(name, spec, file, started, Err(failed))
                    .map(|()| Completion::Completed)
            }
        }
    }

    /// Records a trial that grades no transcript (a `meta/…` rule, or a case that does
    /// not parse) and hands its result on to libtest.
    fn record_rule(
        &self,
        trial: &str,
        spec: &str,
        file: &str,
        started: Instant,
        result: Result<(), Failed>,
    ) -> Result<(), Failed> {
        let detail = match &result {
            Ok(()) => String::new(),
            Err(failed) => failed.message().unwrap_or_default().to_owned(),
        };
        let verdict = match (&result, trial.starts_with("meta/")) {
            (Ok(()), _) => "PASS",
            (Err(_), true) => "FAIL",
            (Err(_), false) => "HARNESS-ERROR",
        };
        self.record(Record {
            trial: trial.to_owned(),
            verdict: verdict.to_owned(),
            detail,
            expectation: None,
            reason: None,
            fails_gate: result.is_err(),
            duration_ms: started.elapsed().as_millis() as u64,
            spec: spec.to_owned(),
            file: file.to_owned(),
            line: None,
            report: String::new(),
        })?;
        result
    }

    fn write_reports(&self, records: &[Record]) -> Result<(), String> {
        let Some(dir) = &self.report_dir else {
            return Ok(());
        };
        let mut run = self.run.clone();
        for transport in TransportName::ALL {
            if let Some(Ok(probed)) = self.probes[transport as usize].get() {
                run.server_info
                    .insert(transport.as_str().to_owned(), probed.server_info.clone());
            }
        }
        report::write(dir, &run, records)
            .map_err(|err| format!("--report-dir {}: {err}", dir.display()))
    }

    /// `meta/manifest-matches-capabilities`: on each declared transport, what the
    /// manifest says and what the server advertises agree.
    fn manifest_matches(&self, manifest: &Manifest) -> Result<(), Failed> {
        let runtime = Self::runtime()?;
        let mut found = Vec::new();
        for transport in TransportName::ALL {
            if !manifest.transports.iter().any(|t| t == transport.as_str()) {
                continue;
            }
            match runtime.block_on(self.probe(transport)) {
                Ok(probed) => found.extend(
                    manifest::mismatches(
                        &manifest.profile(transport),
                        &probed.advertised,
                        probed.has_capabilities,
                    )
                    .into_iter()
                    .map(|m| format!("{}: {m}", transport.as_str())),
                ),
                Err(err) => found.push(format!("{}: {err}", transport.as_str())),
            }
        }
        match found.is_empty() {
            true => Ok(()),
            false => Err(Failed::from(format!(
                "the manifest {:?} does not match the server's capabilities:\n  {}",
                manifest.name,
                found.join("\n  ")
            ))),
        }
    }
}

fn under_nextest() -> bool {
    std::env::var_os("NEXTEST_RUN_ID").is_some()
}

/// A verdict's name in reports and expectations (a skip without its reason).
fn label_of(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Skipped(_) => "SKIPPED".to_owned(),
        other => other.label(),
    }
}

/// The runs of one trial (at least one) as one outcome: the last run's when all ended
/// alike, else FLAKY with the tally of verdicts, showing the first run that did not
/// pass. The duration is the runs' total.
fn fold_runs(mut runs: Vec<Outcome>) -> Outcome {
    let duration = runs.iter().map(|run| run.duration).sum();
    let labels: Vec<String> = runs.iter().map(|run| label_of(&run.verdict)).collect();
    if labels.iter().all(|label| *label == labels[0]) {
        let mut last = runs.pop().unwrap_or_else(|| {
            Outcome::without_run(Verdict::HarnessError("no run of this trial".into()))
        });
        last.duration = duration;
        return last;
    }
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for label in &labels {
        *tally.entry(label.as_str()).or_default() += 1;
    }
    let tally: Vec<String> = tally.iter().map(|(v, n)| format!("{v} {n}")).collect();
    let failing = runs
        .iter()
        .position(|run| !matches!(run.verdict, Verdict::Pass))
        .unwrap_or(0);
    let shown = runs.swap_remove(failing);
    let detail = shown.verdict.detail().to_owned();
    Outcome {
        verdict: Verdict::Flaky(format!(
            "verdicts over {} runs: {}; run {} was {}: {detail}",
            labels.len(),
            tally.join(", "),
            failing + 1,
            label_of(&shown.verdict)
        )),
        duration,
        ..shown
    }
}

/// Whether a trial fails the gate, and the first line to say why: a contradicted
/// expectations entry always does; an entry it matches never does; otherwise FAIL,
/// TIMEOUT, CRASH and HARNESS-ERROR do, and NON-STRICT does at `--level should`.
fn gate_failure(verdict: &Verdict, judgement: &Judgement, level: GateLevel) -> Option<String> {
    if let Verdict::HarnessError(_) = verdict {
        return Some(
            "the case cannot be run (HARNESS-ERROR): no expectations entry covers that".into(),
        );
    }
    match judgement {
        Judgement::Contradicted(text) => Some(text.clone()),
        Judgement::ExpectedFailure(_) | Judgement::AllowedFlaky(_) => None,
        Judgement::Unlisted => match verdict {
            Verdict::Pass | Verdict::Skipped(_) => None,
            Verdict::NonStrict(_) if level == GateLevel::Must => None,
            Verdict::NonStrict(_) => {
                Some("a SHOULD case failed, and --level should gates on it".into())
            }
            _ => Some(String::new()),
        },
    }
}

/// Runs the suite with these command-line arguments (the runner's options are taken
/// out, libtest-mimic parses the rest).
pub fn main(args: impl IntoIterator<Item = String>, source: Source) -> ExitCode {
    match run(args, source) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("exec-conformance: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: impl IntoIterator<Item = String>, source: Source) -> Result<ExitCode, String> {
    let args: Vec<String> = args.into_iter().collect();
    // `exec-conformance record …` (and `cargo test -p conformance -- record …`).
    if args.get(1).map(String::as_str) == Some("record") {
        return Ok(crate::record::main(args[2..].to_vec(), &source));
    }
    let (options, rest) = split_args(args, |name| std::env::var(name).ok())?;
    let cases = cases(&options, &source)?;
    if let Some(case) = &options.show {
        return Ok(show(&cases, case));
    }
    let mut args = Arguments::from_iter(rest);
    let suite = Arc::new(suite(options.clone(), &source, args.list)?);
    // Trials mostly wait on their servers: more of them than cores keeps the run short.
    if args.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        args.test_threads = Some(cores * 4);
    }
    let trials = trials(&suite, &cases);
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    if listing {
        return Ok(conclusion.exit_code());
    }
    let records = suite
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    print_tally(&suite, &records);
    if !under_nextest() {
        suite.write_reports(&records)?;
    }
    if options.update_expectations {
        let trials: Vec<String> = trials_of(&cases).collect();
        update_expectations(&suite, &records, &trials)?;
    }
    Ok(conclusion.exit_code())
}

fn suite(options: Options, source: &Source, listing: bool) -> Result<Suite, String> {
    let (config, manifest) = setup(&options, source, listing)?;
    let manifest_file = match &options.manifest {
        Some(path) => path.display().to_string(),
        None => "(built in)".to_owned(),
    };
    let expectations_file = options
        .expectations
        .clone()
        .map(|path| resolve(source, path));
    let expectations = match &expectations_file {
        // `--update-expectations` may start the file.
        Some(path) if options.update_expectations && !path.exists() => Expectations::default(),
        Some(path) => Expectations::load(path)?,
        None => Expectations::default(),
    };
    let level = options.level.unwrap_or_default();
    let run = RunInfo {
        run_id: std::env::var("NEXTEST_RUN_ID")
            .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string()),
        suite_version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: config.revision.as_str().to_owned(),
        level: match level {
            GateLevel::Must => "must".into(),
            GateLevel::Should => "should".into(),
        },
        manifest: manifest.as_ref().and_then(|m| serde_json::to_value(m).ok()),
        server_info: BTreeMap::new(),
    };
    Ok(Suite {
        config,
        manifest,
        expectations,
        expectations_file,
        repeat: options.repeat.unwrap_or(1),
        manifest_file,
        level,
        report_dir: options.report_dir.clone().map(|path| resolve(source, path)),
        run,
        probes: Default::default(),
        records: Mutex::default(),
    })
}

/// The shipped cases (from the workspace, or built in), then `--transcripts DIR`'s:
/// a case there replaces a shipped one with the same id.
fn cases(options: &Options, source: &Source) -> Result<Cases, String> {
    let mut cases = Cases::new();
    match source.workspace {
        Some(root) => read_dir_cases(&root.join("fixtures/transcripts"), &mut cases),
        None => {
            for (id, text) in source.embedded {
                let file = format!("fixtures/transcripts/{id}.xt");
                cases.insert((*id).to_owned(), (file, (*text).to_owned()));
            }
        }
    }
    if let Some(dir) = &options.transcripts {
        let dir = match source.workspace {
            Some(root) if dir.is_relative() && !dir.exists() => root.join(dir),
            _ => dir.clone(),
        };
        let mut added = Cases::new();
        read_dir_cases(&dir, &mut added);
        if added.is_empty() {
            return Err(format!(
                "--transcripts {}: no .xt files there",
                dir.display()
            ));
        }
        cases.extend(added);
    }
    Ok(cases)
}

fn read_dir_cases(dir: &Path, cases: &mut Cases) {
    for (id, path) in runner::discover(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        cases.insert(id, (path.display().to_string(), text));
    }
}

/// Every trial name the cases make: `transport/case-id` for each transport a case
/// declares (both for a case that does not parse).
fn trials_of(cases: &Cases) -> impl Iterator<Item = String> + '_ {
    cases.iter().flat_map(|(id, (file, text))| {
        let transports = match transcript::parse(file, text) {
            Ok(case) => case.transports,
            Err(_) => TransportName::ALL.to_vec(),
        };
        transports
            .into_iter()
            .map(move |transport| format!("{}/{id}", transport.as_str()))
    })
}

fn trials(suite: &Arc<Suite>, cases: &Cases) -> Vec<Trial> {
    let mut trials = Vec::new();
    for (id, (file, text)) in cases {
        match transcript::parse(file, text) {
            Ok(case) => {
                let case = Arc::new(case);
                for transport in case.transports.clone() {
                    let (case, suite) = (Arc::clone(&case), Arc::clone(suite));
                    let name = format!("{}/{id}", transport.as_str());
                    let shown = name.clone();
                    trials.push(Trial::ignorable_test(name, move || {
                        suite.guarded(&shown, &case.spec, &case.file, || {
                            suite.trial(&shown, &case, transport)
                        })
                    }));
                }
            }
            Err(error) => {
                // One trial per transport still, so the error shows whichever runs.
                for transport in TransportName::ALL {
                    let (suite, file) = (Arc::clone(suite), file.clone());
                    let error = format!("HARNESS-ERROR {error}");
                    let name = format!("{}/{id}", transport.as_str());
                    let shown = name.clone();
                    trials.push(Trial::test(name, move || {
                        let started = Instant::now();
                        suite.record_rule(&shown, "", &file, started, Err(Failed::from(error)))
                    }));
                }
            }
        }
    }
    if let Some(manifest) = suite.manifest.clone() {
        let suite = Arc::clone(suite);
        let name = "meta/manifest-matches-capabilities";
        trials.push(Trial::test(name, move || {
            suite
                .guarded(name, "§9", &suite.manifest_file, || {
                    let started = Instant::now();
                    let result = suite.manifest_matches(&manifest);
                    suite
                        .record_rule(name, "§9", &suite.manifest_file, started, result)
                        .map(|()| Completion::Completed)
                })
                .map(|_| ())
        }));
    }
    if !suite.expectations.known_failing.is_empty() || !suite.expectations.known_flaky.is_empty() {
        let suite = Arc::clone(suite);
        let names: Vec<String> = trials_of(cases).collect();
        let name = "meta/expectations-consistent";
        trials.push(Trial::test(name, move || {
            let started = Instant::now();
            let stale = suite.expectations.stale(&names);
            let result = match stale.is_empty() {
                true => Ok(()),
                false => Err(Failed::from(format!(
                    "expectations entries that name no case (remove them): {}",
                    stale.join(", ")
                ))),
            };
            let file = suite
                .expectations_file
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default();
            suite.record_rule(name, "", &file, started, result)
        }));
    }
    trials
}

/// `--update-expectations`: the expectations file rewritten from the report just
/// written.
fn update_expectations(suite: &Suite, records: &[Record], trials: &[String]) -> Result<(), String> {
    let Some(path) = &suite.expectations_file else {
        return Ok(());
    };
    let results: Vec<(String, String, Option<usize>)> = records
        .iter()
        .map(|r| (r.trial.clone(), r.verdict.clone(), r.line))
        .collect();
    let next = suite.expectations.updated(&results, trials);
    std::fs::write(path, next.to_toml()?).map_err(|err| format!("{}: {err}", path.display()))?;
    eprintln!(
        "exec-conformance: rewrote {} ({} known_failing, {} known_flaky)",
        path.display(),
        next.known_failing.len(),
        next.known_flaky.len()
    );
    Ok(())
}

fn print_tally(suite: &Suite, records: &[Record]) {
    if records.is_empty() {
        return;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for record in records {
        *counts.entry(record.verdict.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    let matched = |what: &str| {
        records
            .iter()
            .filter(|r| r.expectation.as_deref() == Some(what))
            .count()
    };
    let expected = matched("known_failing") + matched("known_flaky");
    let contradicted = matched("contradicted");
    // On stderr: stdout belongs to libtest's output (`--format json` included).
    eprintln!(
        "exec-conformance: revision {}: {} ({expected} matched an expectations entry, {contradicted} contradicted one)",
        suite.config.revision.as_str(),
        counts.join(", ")
    );
    // Separately: a flaky trial is a different problem from a failing one.
    for record in records.iter().filter(|r| r.verdict == "FLAKY") {
        let runs = record.detail.split(';').next().unwrap_or("");
        eprintln!("exec-conformance: FLAKY {}: {runs}", record.trial);
    }
}

/// `--show CASE`: the case file (by id, with or without the transport prefix) and how
/// it parses.
fn show(cases: &Cases, case: &str) -> ExitCode {
    let id = case
        .strip_prefix("ws/")
        .or_else(|| case.strip_prefix("stdio/"))
        .unwrap_or(case);
    let Some((file, text)) = cases.get(id) else {
        eprintln!("exec-conformance: no case {id:?} (see --list)");
        return ExitCode::from(2);
    };
    print!("==== {file} ====\n{text}");
    match transcript::parse(file, text) {
        Ok(case) => {
            println!(
                "==== parsed: {} steps, spec {}, level {:?}, transports {:?}, revisions {:?}, requires {:?} ====",
                case.steps.len(),
                case.spec,
                case.level,
                case.transports,
                case.revisions,
                case.requires
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("==== HARNESS-ERROR {err} ====");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fails_the_gate() {
        let fail = Verdict::Fail("x".into());
        let non_strict = Verdict::NonStrict("x".into());
        let unlisted = Judgement::Unlisted;
        let must = GateLevel::Must;
        let should = GateLevel::Should;
        assert!(gate_failure(&Verdict::Pass, &unlisted, should).is_none());
        assert!(gate_failure(&Verdict::Skipped("r".into()), &unlisted, should).is_none());
        assert!(gate_failure(&fail, &unlisted, must).is_some());
        assert!(gate_failure(&non_strict, &unlisted, must).is_none());
        assert!(gate_failure(&non_strict, &unlisted, should).is_some());
        let expected = Judgement::ExpectedFailure("why".into());
        assert!(gate_failure(&fail, &expected, should).is_none());
        let contradicted = Judgement::Contradicted("remove this entry".into());
        assert_eq!(
            gate_failure(&Verdict::Pass, &contradicted, must).as_deref(),
            Some("remove this entry")
        );
        assert!(
            gate_failure(&Verdict::HarnessError("h".into()), &expected, must).is_some(),
            "a case that cannot run never counts as its known failure"
        );
        assert!(gate_failure(
            &Verdict::Timeout("t".into()),
            &Judgement::AllowedFlaky("f".into()),
            must
        )
        .is_none());
    }
}
