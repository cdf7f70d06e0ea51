//! The runner's own command-line options, taken out of the arguments before
//! libtest-mimic parses the rest.

use std::path::{Path, PathBuf};

use crate::transcript::Revision;

/// Options of the runner (the rest of the command line goes to libtest-mimic).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--server CMD` / `EXEC_CONFORMANCE_SERVER`, split like shell words.
    pub server: Option<Vec<String>>,
    /// `--revision` / `EXEC_CONFORMANCE_REVISION` (default 2026-08).
    pub revision: Option<Revision>,
    /// `--time-scale` / `EXEC_CONFORMANCE_TIME_SCALE`.
    pub time_scale: Option<f64>,
    /// `--transcripts DIR`.
    pub transcripts: Option<PathBuf>,
    /// `--show CASE`.
    pub show: Option<String>,
    /// `--attach ws://…`.
    pub attach: Option<String>,
    /// `--include-long`.
    pub include_long: bool,
    /// `--manifest FILE` / `EXEC_CONFORMANCE_MANIFEST`.
    pub manifest: Option<PathBuf>,
    /// `--expectations FILE` / `EXEC_CONFORMANCE_EXPECTATIONS`.
    pub expectations: Option<PathBuf>,
    /// `--token-file FILE` / `EXEC_CONFORMANCE_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--level must|should` / `EXEC_CONFORMANCE_LEVEL`: what fails the gate.
    pub level: Option<GateLevel>,
    /// `--report-dir DIR` / `EXEC_CONFORMANCE_REPORT_DIR`.
    pub report_dir: Option<PathBuf>,
    /// `--update-expectations`.
    pub update_expectations: bool,
    /// `--repeat N` / `EXEC_CONFORMANCE_REPEAT`: runs of each trial.
    pub repeat: Option<u32>,
}

/// What fails the gate: MUST failures only, or SHOULD failures (NON-STRICT) too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GateLevel {
    /// `must` (the default).
    #[default]
    Must,
    /// `should`.
    Should,
}

/// The runner's options and what is left for libtest-mimic. Each option takes its
/// value as the next argument or after `=`; the environment fills what the command
/// line leaves unset.
pub fn split_args(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Options, Vec<String>), String> {
    let mut options = Options::default();
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    let mut server = None;
    let mut revision = None;
    let mut time_scale = None;
    let mut manifest = None;
    let mut expectations = None;
    let mut token_file = None;
    let mut level = None;
    let mut report_dir = None;
    let mut repeat = None;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let known = [
            "--server",
            "--revision",
            "--time-scale",
            "--transcripts",
            "--show",
            "--attach",
            "--manifest",
            "--expectations",
            "--token-file",
            "--level",
            "--report-dir",
            "--repeat",
        ];
        if name == "--include-long" && inline.is_none() {
            options.include_long = true;
            continue;
        }
        if name == "--update-expectations" && inline.is_none() {
            options.update_expectations = true;
            continue;
        }
        if !known.contains(&name.as_str()) {
            rest.push(arg);
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name.as_str() {
            "--server" => server = Some(value),
            "--revision" => revision = Some(value),
            "--time-scale" => time_scale = Some(value),
            "--transcripts" => options.transcripts = Some(PathBuf::from(value)),
            "--show" => options.show = Some(value),
            "--manifest" => manifest = Some(value),
            "--expectations" => expectations = Some(value),
            "--token-file" => token_file = Some(value),
            "--level" => level = Some(value),
            "--report-dir" => report_dir = Some(value),
            "--repeat" => repeat = Some(value),
            "--attach" => {
                if !value.starts_with("ws://") {
                    return Err(format!("--attach {value:?}: a websocket URL, ws://IP:PORT"));
                }
                options.attach = Some(value)
            }
            _ => unreachable!(),
        }
    }
    let server = server.or_else(|| env("EXEC_CONFORMANCE_SERVER").filter(|s| !s.is_empty()));
    if let Some(server) = server {
        let words = shlex::split(&server)
            .filter(|words| !words.is_empty())
            .ok_or_else(|| format!("--server {server:?}: not a shell word list"))?;
        options.server = Some(words);
    }
    let revision = revision.or_else(|| env("EXEC_CONFORMANCE_REVISION").filter(|s| !s.is_empty()));
    if let Some(revision) = revision {
        options.revision = Some(
            Revision::parse(&revision)
                .ok_or_else(|| format!("--revision {revision:?}: 2026-06 or 2026-08"))?,
        );
    }
    let time_scale =
        time_scale.or_else(|| env("EXEC_CONFORMANCE_TIME_SCALE").filter(|s| !s.is_empty()));
    if let Some(scale) = time_scale {
        let parsed = scale
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1000.0)
            .ok_or_else(|| format!("--time-scale {scale:?}: a positive number up to 1000"))?;
        options.time_scale = Some(parsed);
    }
    let repeat = repeat.or_else(|| env("EXEC_CONFORMANCE_REPEAT").filter(|s| !s.is_empty()));
    if let Some(repeat) = repeat {
        let parsed = repeat
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("--repeat {repeat:?}: a number of runs from 1 to 1000"))?;
        options.repeat = Some(parsed);
    }
    let from_env = |value: Option<String>, var: &str| {
        value
            .or_else(|| env(var).filter(|s| !s.is_empty()))
            .map(PathBuf::from)
    };
    options.manifest = from_env(manifest, "EXEC_CONFORMANCE_MANIFEST");
    options.expectations = from_env(expectations, "EXEC_CONFORMANCE_EXPECTATIONS");
    options.token_file = from_env(token_file, "EXEC_CONFORMANCE_TOKEN_FILE");
    options.report_dir = from_env(report_dir, "EXEC_CONFORMANCE_REPORT_DIR");
    let level = level.or_else(|| env("EXEC_CONFORMANCE_LEVEL").filter(|s| !s.is_empty()));
    options.level = match level.as_deref() {
        None => None,
        Some("must") => Some(GateLevel::Must),
        Some("should") => Some(GateLevel::Should),
        Some(other) => return Err(format!("--level {other:?}: must or should")),
    };
    if options.update_expectations && options.expectations.is_none() {
        return Err(
            "--update-expectations rewrites --expectations FILE from this run: give the file"
                .into(),
        );
    }
    if options.update_expectations && env("NEXTEST_RUN_ID").is_some() {
        return Err("--update-expectations needs the whole run in one process: use cargo test or exec-conformance, not nextest".into());
    }
    Ok((options, rest))
}

/// The server's program resolved as printed from the workspace root: cargo runs test
/// binaries in the package directory, so a relative program path that does not exist
/// there is taken relative to `workspace`; and `target/…` is looked for in
/// `target_dir` (`CARGO_TARGET_DIR`) when the build went there.
pub fn resolve_program(
    mut words: Vec<String>,
    workspace: &Path,
    target_dir: Option<&Path>,
) -> Vec<String> {
    if let Some(program) = words.first_mut() {
        let path = Path::new(program.as_str());
        if path.is_relative() && program.contains('/') && !path.exists() {
            let in_target = path
                .strip_prefix("./")
                .unwrap_or(path)
                .strip_prefix("target")
                .ok()
                .zip(target_dir)
                .map(|(rest, target)| target.join(rest));
            let found = std::iter::once(workspace.join(path))
                .chain(in_target)
                .find(|candidate| candidate.exists());
            if let Some(found) = found {
                *program = found.to_string_lossy().into_owned();
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runner_options_are_taken_out() {
        let (options, rest) = split_args(
            strings(&[
                "prog",
                "--server",
                "./x --flag 'a b'",
                "--exact",
                "ws/a",
                "--revision=2026-06",
                "--include-long",
                "--format",
                "json",
            ]),
            |_| None,
        )
        .unwrap();
        assert_eq!(options.server.unwrap(), ["./x", "--flag", "a b"]);
        assert_eq!(options.revision, Some(Revision::R2026_06));
        assert!(options.include_long);
        assert_eq!(rest, ["prog", "--exact", "ws/a", "--format", "json"]);
    }

    #[test]
    fn environment_fills_in() {
        let (options, _) = split_args(strings(&["prog"]), |name| match name {
            "EXEC_CONFORMANCE_SERVER" => Some("srv --x".into()),
            "EXEC_CONFORMANCE_REVISION" => Some("2026-08".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(options.server.unwrap(), ["srv", "--x"]);
        assert_eq!(options.revision, Some(Revision::R2026_08));
        assert!(split_args(strings(&["p", "--revision", "2027-01"]), |_| None).is_err());
        assert!(split_args(strings(&["p", "--server"]), |_| None).is_err());
        assert!(split_args(strings(&["p", "--server", "'open"]), |_| None).is_err());
        let (options, _) = split_args(strings(&["p", "--repeat=20"]), |_| None).unwrap();
        assert_eq!(options.repeat, Some(20));
        assert!(split_args(strings(&["p", "--repeat", "0"]), |_| None).is_err());
    }

    #[test]
    fn relative_program_from_the_workspace_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/srv"), "").unwrap();
        let words = resolve_program(strings(&["./bin/srv", "--a"]), root.path(), None);
        assert_eq!(words[0], root.path().join("./bin/srv").to_string_lossy());
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(elsewhere.path().join("release")).unwrap();
        std::fs::write(elsewhere.path().join("release/srv"), "").unwrap();
        let words = resolve_program(
            strings(&["./target/release/srv"]),
            root.path(),
            Some(elsewhere.path()),
        );
        assert_eq!(
            words[0],
            elsewhere.path().join("release/srv").to_string_lossy()
        );
        let words = resolve_program(strings(&["srv"]), root.path(), None);
        assert_eq!(words[0], "srv", "a bare name is looked up in PATH");
    }
}
