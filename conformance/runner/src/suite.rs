//! The suite as libtest trials: one per `transport/case-id`, run by libtest-mimic so
//! that `--list`, `--exact`, filters and `--format json` behave as with libtest. Used by
//! the `conformance` test target. Listing starts no server; the first trial of each
//! transport asks the server what it advertises (once per process).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tokio::sync::OnceCell;

use crate::cli::{resolve_program, split_args, Options};
use crate::profile::Profile;
use crate::runner::{self, Config, Outcome, Verdict};
use crate::transcript::{Revision, Transcript, TransportName};

/// What every trial of one run shares.
struct Suite {
    config: Config,
    /// What the server advertises, per transport, asked once.
    profiles: [OnceCell<Result<Profile, String>>; 2],
    /// Verdict counts and the NON-STRICT cases, printed after the run.
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    verdicts: BTreeMap<String, usize>,
    non_strict: Vec<String>,
}

impl Suite {
    /// What the server declares on `transport`, asked once per process. A failed
    /// probe is tried once more (a start-up that lost a race under load) before its
    /// error is kept for every trial of the transport.
    async fn profile(&self, transport: TransportName) -> Result<Profile, String> {
        let cell = &self.profiles[transport as usize];
        cell.get_or_init(|| async {
            match runner::probe(transport, &self.config).await {
                Ok(profile) => Ok(profile),
                Err(_) => runner::probe(transport, &self.config).await,
            }
        })
        .await
        .clone()
    }

    async fn grade(&self, case: &Transcript, transport: TransportName) -> Outcome {
        // Skips that need no server come first: they never start one.
        if let Some(reason) = runner::skip_reason(case, transport, &self.config, None) {
            return Outcome {
                verdict: Verdict::Skipped(reason),
                report: String::new(),
                duration: Default::default(),
            };
        }
        let profile = match self.profile(transport).await {
            Ok(profile) => profile,
            Err(err) => {
                return Outcome {
                    verdict: Verdict::Crash(format!(
                        "asking the server for its capabilities: {err}"
                    )),
                    report: String::new(),
                    duration: Default::default(),
                }
            }
        };
        match runner::skip_reason(case, transport, &self.config, Some(&profile)) {
            Some(reason) => Outcome {
                verdict: Verdict::Skipped(reason),
                report: String::new(),
                duration: Default::default(),
            },
            None => runner::run_case(case, transport, &self.config, &profile).await,
        }
    }

    fn trial(
        &self,
        name: &str,
        case: &Transcript,
        transport: TransportName,
    ) -> Result<Completion, Failed> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failed::from(format!("HARNESS-ERROR cannot build a runtime: {err}")))?;
        let outcome = runtime.block_on(self.grade(case, transport));
        let heading = format!(
            "{} {name} [{} {}, revision {}, {:.1}s]",
            outcome.verdict.label(),
            case.spec,
            case.file,
            self.config.revision.as_str(),
            outcome.duration.as_secs_f64()
        );
        {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            let label = match &outcome.verdict {
                Verdict::Skipped(_) => "SKIPPED".to_owned(),
                other => other.label(),
            };
            *tally.verdicts.entry(label).or_default() += 1;
            if let Verdict::NonStrict(text) = &outcome.verdict {
                tally.non_strict.push(format!("{heading}\n    {text}"));
            }
        }
        match outcome.verdict {
            Verdict::Pass | Verdict::NonStrict(_) => Ok(Completion::Completed),
            Verdict::Skipped(reason) => Ok(Completion::ignored_with(reason)),
            Verdict::Fail(text)
            | Verdict::Timeout(text)
            | Verdict::Crash(text)
            | Verdict::HarnessError(text) => {
                let title = case.title.as_deref().unwrap_or("");
                Err(Failed::from(format!(
                    "{heading}\n{title}\n{text}\n{}",
                    outcome.report
                )))
            }
        }
    }
}

/// Runs the suite with these command-line arguments (the runner's options are taken
/// out, libtest-mimic parses the rest). `workspace` resolves relative paths as printed
/// from the workspace root; `in_tree` is the server tested when no `--server` is given.
pub fn main(args: impl IntoIterator<Item = String>, workspace: &Path, in_tree: &str) -> ExitCode {
    let (options, rest) = match split_args(args, |name| std::env::var(name).ok()) {
        Ok(split) => split,
        Err(err) => {
            eprintln!("exec-conformance: {err}");
            return ExitCode::from(2);
        }
    };
    let mut transcripts = vec![workspace.join("fixtures/transcripts")];
    if let Some(dir) = options.transcripts.clone() {
        let dir = resolve_dir(dir, workspace);
        if runner::discover(&dir).is_empty() {
            eprintln!(
                "exec-conformance: --transcripts {}: no .xt files there",
                dir.display()
            );
            return ExitCode::from(2);
        }
        transcripts.push(dir);
    }
    let cases = cases(&transcripts);
    if let Some(case) = &options.show {
        return show(&cases, case);
    }
    let suite = Arc::new(Suite {
        config: config(options, workspace, in_tree),
        profiles: Default::default(),
        tally: Mutex::default(),
    });
    let mut args = Arguments::from_iter(rest);
    // Trials mostly wait on their servers: more of them than cores keeps the run short.
    if args.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        args.test_threads = Some(cores * 4);
    }
    let trials = trials(&suite, cases);
    let conclusion = libtest_mimic::run(&args, trials);
    print_tally(&suite);
    conclusion.exit_code()
}

fn config(options: Options, workspace: &Path, in_tree: &str) -> Config {
    let server = match options.server {
        Some(words) => {
            // Relative, cargo reads it from where it was run: the workspace root, here.
            let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(|dir| workspace.join(dir));
            resolve_program(words, workspace, target_dir.as_deref())
        }
        None => vec![in_tree.to_owned()],
    };
    Config {
        server,
        attach: options.attach,
        revision: options.revision.unwrap_or(Revision::R2026_08),
        time_scale: options.time_scale.unwrap_or(1.0),
        include_long: options.include_long,
    }
}

/// The cases under each directory by id; a later directory's case replaces an earlier
/// one with the same id (`--transcripts` adds cases or replaces shipped ones).
fn cases(directories: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    directories
        .iter()
        .flat_map(|dir| runner::discover(dir))
        .collect()
}

fn trials(suite: &Arc<Suite>, cases: BTreeMap<String, PathBuf>) -> Vec<Trial> {
    let mut trials = Vec::new();
    for (id, path) in cases {
        match runner::load(&path) {
            Ok(case) => {
                let case = Arc::new(case);
                for transport in case.transports.clone() {
                    let (case, suite) = (Arc::clone(&case), Arc::clone(suite));
                    let name = format!("{}/{id}", transport.as_str());
                    let shown = name.clone();
                    trials.push(Trial::ignorable_test(name, move || {
                        suite.trial(&shown, &case, transport)
                    }));
                }
            }
            Err(error) => {
                // One trial per transport still, so the error shows whichever runs.
                for transport in TransportName::ALL {
                    let error = error.clone();
                    let name = format!("{}/{id}", transport.as_str());
                    trials.push(Trial::test(name, move || {
                        Err(Failed::from(format!("HARNESS-ERROR {error}")))
                    }));
                }
            }
        }
    }
    trials
}

fn print_tally(suite: &Suite) {
    let tally = suite.tally.lock().unwrap_or_else(|p| p.into_inner());
    if tally.verdicts.is_empty() {
        return;
    }
    // On stderr: stdout belongs to libtest's output (`--format json` included).
    for line in &tally.non_strict {
        eprintln!("{line}");
    }
    let counts: Vec<String> = tally
        .verdicts
        .iter()
        .map(|(label, count)| format!("{label} {count}"))
        .collect();
    eprintln!(
        "exec-conformance: revision {}: {}",
        suite.config.revision.as_str(),
        counts.join(", ")
    );
}

fn resolve_dir(dir: PathBuf, workspace: &Path) -> PathBuf {
    if dir.is_relative() && !dir.exists() {
        workspace.join(dir)
    } else {
        dir
    }
}

/// `--show CASE`: the case file (by id, with or without the transport prefix) and how
/// it parses.
fn show(cases: &BTreeMap<String, PathBuf>, case: &str) -> ExitCode {
    let id = case
        .strip_prefix("ws/")
        .or_else(|| case.strip_prefix("stdio/"))
        .unwrap_or(case);
    let Some(path) = cases.get(id) else {
        eprintln!("exec-conformance: no case {id:?} (see --list)");
        return ExitCode::from(2);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => print!("==== {} ====\n{text}", path.display()),
        Err(err) => {
            eprintln!("exec-conformance: {}: {err}", path.display());
            return ExitCode::from(2);
        }
    }
    match runner::load(path) {
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
