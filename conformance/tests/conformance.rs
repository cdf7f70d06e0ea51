//! The conformance suite as a libtest-compatible test target: one trial per
//! `transport/case-id`. Runner options (`--server`, `--revision`, `--time-scale`,
//! `--transcripts`, `--show`, `--attach`, `--include-long`) are taken out before
//! libtest-mimic parses the rest, so `--list`, `--exact`, filters and
//! `--format json` work as usual. Listing never starts a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use conformance::cli::{resolve_program, split_args};
use conformance::runner::{self, Config, Verdict};
use conformance::transcript::Revision;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() -> ExitCode {
    let (options, rest) = match split_args(std::env::args(), |name| std::env::var(name).ok()) {
        Ok(split) => split,
        Err(err) => {
            eprintln!("conformance: {err}");
            return ExitCode::from(2);
        }
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace")
        .to_path_buf();
    let transcripts = options
        .transcripts
        .clone()
        .map(|dir| resolve_dir(dir, &workspace))
        .unwrap_or_else(|| workspace.join("fixtures/transcripts"));
    if let Some(case) = &options.show {
        return show(&transcripts, case);
    }
    if options.attach.is_some() {
        eprintln!("conformance: --attach is not implemented yet");
        return ExitCode::from(2);
    }
    let server = match options.server.clone() {
        Some(words) => resolve_program(words, &workspace),
        None => vec![env!("CARGO_BIN_EXE_conformance-server").to_owned()],
    };
    let config = Arc::new(Config {
        server,
        revision: options.revision.unwrap_or(Revision::R2026_08),
        time_scale: options.time_scale.unwrap_or(1.0),
        include_long: options.include_long,
    });
    let args = Arguments::from_iter(rest);
    let mut trials = Vec::new();
    for (id, path) in runner::discover(&transcripts) {
        match runner::load(&path) {
            Ok(case) => {
                let case = Arc::new(case);
                for transport in case.transports.clone() {
                    let (case, config) = (Arc::clone(&case), Arc::clone(&config));
                    let name = format!("{}/{id}", transport.as_str());
                    trials.push(Trial::ignorable_test(name, move || {
                        run_trial(&case, transport, &config)
                    }));
                }
            }
            Err(error) => {
                // Still one trial per transport, so the error shows wherever it runs.
                for transport in conformance::transcript::TransportName::ALL {
                    let error = error.clone();
                    let name = format!("{}/{id}", transport.as_str());
                    trials.push(Trial::test(name, move || {
                        Err(Failed::from(format!("HARNESS-ERROR {error}")))
                    }));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

fn run_trial(
    case: &conformance::transcript::Transcript,
    transport: conformance::transcript::TransportName,
    config: &Config,
) -> Result<Completion, Failed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failed::from(format!("HARNESS-ERROR cannot build a runtime: {err}")))?;
    let (verdict, report) = runtime.block_on(runner::run_case(case, transport, config));
    let heading = format!(
        "{} [{} {}, revision {}]",
        verdict.label(),
        case.spec,
        case.file,
        config.revision.as_str()
    );
    match verdict {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Skipped(reason) => Ok(Completion::ignored_with(reason)),
        Verdict::NonStrict(text) => {
            // Does not fail the run; shown in the test's captured output.
            println!("{heading}\n{text}");
            Ok(Completion::Completed)
        }
        Verdict::Fail(text)
        | Verdict::Timeout(text)
        | Verdict::Crash(text)
        | Verdict::HarnessError(text) => Err(Failed::from(format!("{heading}\n{text}\n{report}"))),
    }
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
fn show(transcripts: &Path, case: &str) -> ExitCode {
    let id = case
        .strip_prefix("ws/")
        .or_else(|| case.strip_prefix("stdio/"))
        .unwrap_or(case);
    let Some((_, path)) = runner::discover(transcripts)
        .into_iter()
        .find(|(i, _)| i == id)
    else {
        eprintln!(
            "conformance: no case {id:?} under {}",
            transcripts.display()
        );
        return ExitCode::from(2);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => print!("==== {} ====\n{text}", path.display()),
        Err(err) => {
            eprintln!("conformance: {}: {err}", path.display());
            return ExitCode::from(2);
        }
    }
    match runner::load(&path) {
        Ok(case) => {
            println!(
                "==== parsed: {} steps, spec {}, level {:?}, transports {:?}, revisions {:?} ====",
                case.steps.len(),
                case.spec,
                case.level,
                case.transports,
                case.revisions
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("==== HARNESS-ERROR {err} ====");
            ExitCode::from(1)
        }
    }
}
