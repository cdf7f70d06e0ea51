//! The expectations an implementation keeps beside its manifest (`--expectations
//! FILE`, TOML): cases known to fail (each must fail, or the run says "remove this
//! entry") and cases known to be flaky (the verdicts allowed), each with its reason.
//! An entry names a trial (`ws/process/arg0`), a case on both transports
//! (`process/arg0`), or either with `:LINE`, the transcript line it fails at.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// An expectations file as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Cases that must fail.
    #[serde(default)]
    pub known_failing: Vec<KnownFailing>,
    /// Cases whose verdict may vary among the allowed ones.
    #[serde(default)]
    pub known_flaky: Vec<KnownFlaky>,
}

/// A case that must fail.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownFailing {
    /// `transport/case-id`, `case-id`, optionally `:LINE`.
    pub case: String,
    /// Why (mandatory): cite the protocol line the implementation does not meet.
    pub reason: String,
}

/// A case that may end in any of `allowed`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownFlaky {
    /// `transport/case-id` or `case-id`.
    pub case: String,
    /// Verdict names: PASS, NON-STRICT, FAIL, TIMEOUT, CRASH.
    pub allowed: Vec<String>,
    /// Why (mandatory).
    pub reason: String,
}

/// What the expectations say about one trial's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// No entry: the verdict stands.
    Unlisted,
    /// It failed as an entry says it must (the gate passes).
    ExpectedFailure(String),
    /// It passed, or failed elsewhere than the entry's line: the gate fails.
    Contradicted(String),
    /// A flaky case ended in an allowed verdict (the gate passes).
    AllowedFlaky(String),
}

/// Verdict names an entry may allow.
pub const VERDICTS: [&str; 5] = ["PASS", "NON-STRICT", "FAIL", "TIMEOUT", "CRASH"];

impl Expectations {
    /// Reads and checks an expectations file.
    pub fn load(path: &Path) -> Result<Expectations, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        Expectations::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// Parses and checks an expectations file's text: every entry has a reason, a
    /// flaky entry allows known verdicts, no case is listed twice.
    pub fn parse(text: &str) -> Result<Expectations, String> {
        let expectations: Expectations = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        let entries = expectations
            .known_failing
            .iter()
            .map(|e| (&e.case, &e.reason))
            .chain(
                expectations
                    .known_flaky
                    .iter()
                    .map(|e| (&e.case, &e.reason)),
            );
        for (case, reason) in entries {
            if reason.trim().is_empty() {
                return Err(format!("{case}: every entry needs a `reason`"));
            }
            if !seen.insert(case.clone()) {
                return Err(format!("{case} is listed twice"));
            }
        }
        for entry in &expectations.known_flaky {
            if let Some(bad) = entry
                .allowed
                .iter()
                .find(|v| !VERDICTS.contains(&v.as_str()))
            {
                return Err(format!(
                    "{}: unknown verdict {bad:?} (allowed: {})",
                    entry.case,
                    VERDICTS.join(", ")
                ));
            }
        }
        Ok(expectations)
    }

    /// What the entries say about trial `trial` (`ws/process/arg0`) ending in `label`
    /// (a verdict's name), failing at transcript `line` if it failed at one.
    pub fn judge(&self, trial: &str, label: &str, line: Option<usize>) -> Judgement {
        let failed = !matches!(label, "PASS") && !label.starts_with("SKIPPED");
        if let Some(entry) = self
            .known_failing
            .iter()
            .find(|entry| names(&entry.case, trial))
        {
            let at = entry
                .case
                .rsplit_once(':')
                .and_then(|(_, l)| l.parse::<usize>().ok());
            return match (failed, at) {
                (false, _) => Judgement::Contradicted(format!(
                    "{trial} is listed as known_failing ({}) but was {label}: remove this entry",
                    entry.reason
                )),
                (true, Some(at)) if line != Some(at) => Judgement::Contradicted(format!(
                    "{trial} is known to fail at line {at}, but failed {}",
                    line.map_or("elsewhere".to_owned(), |l| format!("at line {l}"))
                )),
                (true, _) => Judgement::ExpectedFailure(entry.reason.clone()),
            };
        }
        if let Some(entry) = self
            .known_flaky
            .iter()
            .find(|entry| names(&entry.case, trial))
        {
            return match entry.allowed.iter().any(|allowed| allowed == label) {
                true => Judgement::AllowedFlaky(entry.reason.clone()),
                false => Judgement::Contradicted(format!(
                    "{trial} is known_flaky with {:?}, but was {label}",
                    entry.allowed
                )),
            };
        }
        Judgement::Unlisted
    }

    /// The entries that name none of `trials`: stale.
    pub fn stale<'a>(&'a self, trials: &[String]) -> Vec<&'a str> {
        self.known_failing
            .iter()
            .map(|e| e.case.as_str())
            .chain(self.known_flaky.iter().map(|e| e.case.as_str()))
            .filter(|case| !trials.iter().any(|trial| names(case, trial)))
            .collect()
    }

    /// The file rewritten from a run's results (`trial`, verdict name, failing line):
    /// one known_failing entry per failing trial (keeping an old entry's reason and
    /// line), none for trials that pass, a reason still to be written for new failures;
    /// flaky entries are kept.
    pub fn updated(&self, results: &[(String, String, Option<usize>)]) -> Expectations {
        let mut next = Expectations {
            known_failing: Vec::new(),
            known_flaky: self.known_flaky.clone(),
        };
        for (trial, label, _) in results {
            let failed = VERDICTS[1..].contains(&label.as_str());
            let flaky = self.known_flaky.iter().any(|e| names(&e.case, trial));
            if !failed || flaky {
                continue;
            }
            // Per trial from now on: an entry for both transports may hold for one only.
            let kept = self.known_failing.iter().find(|e| names(&e.case, trial));
            let entry = match kept {
                Some(entry) => KnownFailing {
                    case: match entry.case.rsplit_once(':') {
                        Some((_, line)) if line.parse::<usize>().is_ok() => {
                            format!("{trial}:{line}")
                        }
                        _ => trial.clone(),
                    },
                    reason: entry.reason.clone(),
                },
                None => KnownFailing {
                    case: trial.clone(),
                    reason: format!("TODO: say why ({label} in the last run)"),
                },
            };
            if !next.known_failing.contains(&entry) {
                next.known_failing.push(entry);
            }
        }
        next
    }

    /// As TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Whether entry `case` names `trial`: the trial itself, or its case id (the trial
/// without its transport), with or without `:LINE`.
fn names(case: &str, trial: &str) -> bool {
    let case = match case.rsplit_once(':') {
        Some((name, line)) if line.parse::<usize>().is_ok() => name,
        _ => case,
    };
    let id = trial.split_once('/').map_or(trial, |(_, id)| id);
    case == trial || case == id
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[known_failing]]
case = "process/arg0"
reason = "§6.1 arg0 is not supported"

[[known_failing]]
case = "ws/fs/walk:12"
reason = "§7 walk order"

[[known_flaky]]
case = "stdio/concurrency/pipelined"
allowed = ["PASS", "TIMEOUT"]
reason = "slow spawns"
"#;

    #[test]
    fn judgements() {
        let e = Expectations::parse(FILE).unwrap();
        use Judgement::*;
        assert!(matches!(
            e.judge("ws/process/arg0", "FAIL", Some(9)),
            ExpectedFailure(_)
        ));
        assert!(matches!(
            e.judge("stdio/process/arg0", "TIMEOUT", None),
            ExpectedFailure(_)
        ));
        let Contradicted(text) = e.judge("ws/process/arg0", "PASS", None) else {
            panic!()
        };
        assert!(text.contains("remove this entry"), "{text}");
        assert!(matches!(
            e.judge("ws/fs/walk", "FAIL", Some(12)),
            ExpectedFailure(_)
        ));
        assert!(matches!(
            e.judge("ws/fs/walk", "FAIL", Some(13)),
            Contradicted(_)
        ));
        assert!(matches!(
            e.judge("stdio/fs/walk", "FAIL", Some(12)),
            Unlisted
        ));
        assert!(matches!(
            e.judge("stdio/concurrency/pipelined", "TIMEOUT", None),
            AllowedFlaky(_)
        ));
        assert!(matches!(
            e.judge("stdio/concurrency/pipelined", "CRASH", None),
            Contradicted(_)
        ));
        assert!(matches!(
            e.judge("ws/process/echo", "FAIL", Some(3)),
            Unlisted
        ));
    }

    #[test]
    fn stale_entries_and_bad_files() {
        let e = Expectations::parse(FILE).unwrap();
        let trials = vec!["ws/process/arg0".to_owned(), "ws/fs/walk".to_owned()];
        assert_eq!(e.stale(&trials), ["stdio/concurrency/pipelined"]);
        assert!(
            Expectations::parse("[[known_failing]]\ncase = \"a\"\nreason = \" \"\n")
                .unwrap_err()
                .contains("needs a `reason`")
        );
        assert!(Expectations::parse("[[known_failing]]\ncase = \"a\"\n")
            .unwrap_err()
            .contains("reason"));
        assert!(Expectations::parse(
            "[[known_flaky]]\ncase = \"a\"\nallowed = [\"MAYBE\"]\nreason = \"r\"\n"
        )
        .unwrap_err()
        .contains("unknown verdict"));
        assert!(Expectations::parse(
            "[[known_failing]]\ncase = \"a\"\nreason = \"r\"\n[[known_failing]]\ncase = \"a\"\nreason = \"r\"\n"
        )
        .unwrap_err()
        .contains("twice"));
    }

    #[test]
    fn update_round_trip() {
        let e = Expectations::parse(FILE).unwrap();
        let results = vec![
            ("ws/process/arg0".to_owned(), "PASS".to_owned(), None),
            ("stdio/process/arg0".to_owned(), "FAIL".to_owned(), Some(9)),
            ("ws/fs/walk".to_owned(), "FAIL".to_owned(), Some(12)),
            ("ws/process/echo".to_owned(), "TIMEOUT".to_owned(), Some(4)),
            (
                "stdio/concurrency/pipelined".to_owned(),
                "TIMEOUT".to_owned(),
                None,
            ),
        ];
        let next = e.updated(&results);
        let cases: Vec<&str> = next.known_failing.iter().map(|e| e.case.as_str()).collect();
        assert_eq!(
            cases,
            ["stdio/process/arg0", "ws/fs/walk:12", "ws/process/echo"]
        );
        assert!(next.known_failing[2].reason.starts_with("TODO"));
        assert_eq!(next.known_flaky, e.known_flaky);
        let reread = Expectations::parse(&next.to_toml()).unwrap();
        assert_eq!(reread, next);
        for (trial, label, line) in &results {
            let judged = reread.judge(trial, label, *line);
            assert!(
                !matches!(judged, Judgement::Contradicted(_)),
                "{trial}: {judged:?}"
            );
        }
    }
}
