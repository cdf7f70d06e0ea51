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
    /// flaky entry allows known verdicts, no trial is named by two entries.
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
        let cases: Vec<&str> = expectations
            .known_failing
            .iter()
            .map(|e| e.case.as_str())
            .chain(expectations.known_flaky.iter().map(|e| e.case.as_str()))
            .collect();
        for (i, a) in cases.iter().enumerate() {
            if let Some(b) = cases[i + 1..].iter().find(|b| overlap(a, b)) {
                return Err(format!(
                    "{a} and {b} name the same trial: keep one entry per trial"
                ));
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
    /// A skipped trial says nothing about its entry, and a case that cannot be run
    /// (HARNESS-ERROR) never meets one: both are `Unlisted`.
    pub fn judge(&self, trial: &str, label: &str, line: Option<usize>) -> Judgement {
        if matches!(label, "SKIPPED" | "HARNESS-ERROR") {
            return Judgement::Unlisted;
        }
        let failed = label != "PASS";
        if let Some(entry) = self
            .known_failing
            .iter()
            .find(|entry| names(&entry.case, trial))
        {
            let at = line_of(&entry.case);
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
            // A SHOULD case's failure is graded NON-STRICT: an entry allowing a failing
            // verdict allows that too.
            let allowed = |verdict: &String| {
                verdict == label
                    || (label == "NON-STRICT" && VERDICTS[2..].contains(&verdict.as_str()))
            };
            return match entry.allowed.iter().any(allowed) {
                true => Judgement::AllowedFlaky(entry.reason.clone()),
                false => Judgement::Contradicted(format!(
                    "{trial} is known_flaky with {:?}, but was {label}",
                    entry.allowed
                )),
            };
        }
        Judgement::Unlisted
    }

    /// What the entries say about a trial whose runs (`--repeat N`) ended in
    /// different verdicts, `labels`: a flaky entry must allow every one of them; a
    /// known_failing entry is contradicted (the case does not always fail).
    pub fn judge_flaky(&self, trial: &str, labels: &[String]) -> Judgement {
        if let Some(entry) = self
            .known_flaky
            .iter()
            .find(|entry| names(&entry.case, trial))
        {
            let outside: Vec<&str> = labels
                .iter()
                .filter(|label| !entry.allowed.contains(label))
                .map(String::as_str)
                .collect();
            return match outside.is_empty() {
                true => Judgement::AllowedFlaky(entry.reason.clone()),
                false => Judgement::Contradicted(format!(
                    "{trial} is known_flaky with {:?}, but was also {}",
                    entry.allowed,
                    outside.join(", ")
                )),
            };
        }
        if self
            .known_failing
            .iter()
            .any(|entry| names(&entry.case, trial))
        {
            return Judgement::Contradicted(format!(
                "{trial} is listed as known_failing, but its runs ended in {}: list it under known_flaky with those verdicts instead",
                labels.join(", ")
            ));
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

    /// The file rewritten from a run's results (`trial`, verdict name, failing line)
    /// over every trial the suite has (`trials`). Per trial: one that failed gets a
    /// known_failing entry (an old entry's reason kept, its `:LINE` moved to the line it
    /// failed at now; a new one gets a reason still to be written); one that passed gets
    /// none; one not graded this time (filtered out, skipped, HARNESS-ERROR, FLAKY) keeps the
    /// entry it had. Entries that name no trial are dropped; flaky entries are kept.
    pub fn updated(
        &self,
        results: &[(String, String, Option<usize>)],
        trials: &[String],
    ) -> Expectations {
        let mut next = Expectations {
            known_failing: Vec::new(),
            known_flaky: self.known_flaky.clone(),
        };
        for trial in trials {
            if self.known_flaky.iter().any(|e| names(&e.case, trial)) {
                continue;
            }
            let old = self.known_failing.iter().find(|e| names(&e.case, trial));
            let graded = results.iter().find(|(t, label, _)| {
                t == trial && !matches!(label.as_str(), "SKIPPED" | "HARNESS-ERROR" | "FLAKY")
            });
            // Per trial from now on: an entry for both transports may hold for one only.
            let entry = match (graded, old) {
                (None, None) => None,
                (None, Some(old)) => Some(KnownFailing {
                    case: at_line(trial, line_of(&old.case)),
                    reason: old.reason.clone(),
                }),
                (Some((_, label, _)), _) if !VERDICTS[1..].contains(&label.as_str()) => None,
                (Some((_, _, line)), Some(old)) => Some(KnownFailing {
                    case: at_line(trial, line_of(&old.case).and(*line)),
                    reason: old.reason.clone(),
                }),
                (Some((_, label, _)), None) => Some(KnownFailing {
                    case: trial.clone(),
                    reason: format!("TODO: say why ({label} in the last run)"),
                }),
            };
            next.known_failing.extend(entry);
        }
        next
    }

    /// As TOML.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|err| format!("writing expectations: {err}"))
    }
}

/// The transcript line an entry names (`case:LINE`), if any.
fn line_of(case: &str) -> Option<usize> {
    case.rsplit_once(':')
        .and_then(|(_, line)| line.parse().ok())
}

/// An entry's `case` for `trial`, with `:LINE` if there is one.
fn at_line(trial: &str, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{trial}:{line}"),
        None => trial.to_owned(),
    }
}

/// Whether entries `a` and `b` name a trial in common.
fn overlap(a: &str, b: &str) -> bool {
    let strip = |case: &str| match case.rsplit_once(':') {
        Some((name, line)) if line.parse::<usize>().is_ok() => name.to_owned(),
        _ => case.to_owned(),
    };
    let (a, b) = (strip(a), strip(b));
    a == b || names(&a, &b) || names(&b, &a)
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
            e.judge("stdio/concurrency/pipelined", "NON-STRICT", None),
            AllowedFlaky(_)
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
        let mut trials: Vec<String> = results.iter().map(|(t, _, _)| t.clone()).collect();
        trials.sort();
        let next = e.updated(&results, &trials);
        let cases: Vec<&str> = next.known_failing.iter().map(|e| e.case.as_str()).collect();
        assert_eq!(
            cases,
            ["stdio/process/arg0", "ws/fs/walk:12", "ws/process/echo"]
        );
        assert!(next.known_failing[2].reason.starts_with("TODO"));
        assert_eq!(next.known_flaky, e.known_flaky);
        let reread = Expectations::parse(&next.to_toml().unwrap()).unwrap();
        assert_eq!(reread, next);
        for (trial, label, line) in &results {
            let judged = reread.judge(trial, label, *line);
            assert!(
                !matches!(judged, Judgement::Contradicted(_)),
                "{trial}: {judged:?}"
            );
        }
    }

    #[test]
    fn flaky_runs() {
        let e = Expectations::parse(FILE).unwrap();
        let labels = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            e.judge_flaky("stdio/concurrency/pipelined", &labels(&["PASS", "TIMEOUT"])),
            Judgement::AllowedFlaky(_)
        ));
        let Judgement::Contradicted(text) =
            e.judge_flaky("stdio/concurrency/pipelined", &labels(&["PASS", "CRASH"]))
        else {
            panic!()
        };
        assert!(text.contains("CRASH") && !text.contains("PASS,"), "{text}");
        let Judgement::Contradicted(text) =
            e.judge_flaky("ws/process/arg0", &labels(&["PASS", "FAIL"]))
        else {
            panic!()
        };
        assert!(text.contains("known_flaky"), "{text}");
        assert_eq!(
            e.judge_flaky("ws/process/echo", &labels(&["PASS", "FAIL"])),
            Judgement::Unlisted
        );
    }

    #[test]
    fn skipped_and_broken_trials_meet_no_entry() {
        let e = Expectations::parse(FILE).unwrap();
        assert_eq!(
            e.judge("ws/process/arg0", "SKIPPED", None),
            Judgement::Unlisted
        );
        assert_eq!(
            e.judge("ws/process/arg0", "HARNESS-ERROR", Some(2)),
            Judgement::Unlisted
        );
    }

    #[test]
    fn entries_naming_one_trial_twice_are_refused() {
        for (a, b) in [
            ("process/arg0", "ws/process/arg0:4"),
            ("ws/process/arg0", "ws/process/arg0:4"),
        ] {
            let text = format!(
                "[[known_failing]]\ncase = \"{a}\"\nreason = \"r\"\n\
                 [[known_flaky]]\ncase = \"{b}\"\nallowed = [\"FAIL\"]\nreason = \"r\"\n"
            );
            let err = Expectations::parse(&text).unwrap_err();
            assert!(err.contains("same trial"), "{err}");
        }
        let apart = "[[known_failing]]\ncase = \"ws/process/arg0\"\nreason = \"r\"\n\
                     [[known_failing]]\ncase = \"stdio/process/arg0\"\nreason = \"r\"\n";
        assert!(Expectations::parse(apart).is_ok());
    }

    #[test]
    fn update_keeps_what_was_not_graded_and_moves_lines() {
        let e = Expectations::parse(FILE).unwrap();
        let trials: Vec<String> = [
            "stdio/fs/walk",
            "stdio/process/arg0",
            "ws/fs/walk",
            "ws/process/arg0",
        ]
        .map(String::from)
        .to_vec();
        // Only ws/fs/walk graded (a filtered run), failing at another line now;
        // stdio/process/arg0 skipped, ws/process/arg0 FLAKY under --repeat.
        let results = vec![
            ("ws/fs/walk".to_owned(), "FAIL".to_owned(), Some(14)),
            ("stdio/process/arg0".to_owned(), "SKIPPED".to_owned(), None),
            ("ws/process/arg0".to_owned(), "FLAKY".to_owned(), None),
        ];
        let next = e.updated(&results, &trials);
        let cases: Vec<(&str, &str)> = next
            .known_failing
            .iter()
            .map(|e| (e.case.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            cases,
            [
                ("stdio/process/arg0", "§6.1 arg0 is not supported"),
                ("ws/fs/walk:14", "§7 walk order"),
                ("ws/process/arg0", "§6.1 arg0 is not supported"),
            ]
        );
        // The stale flaky entry stays (flaky entries are the adopter's to remove).
        assert_eq!(next.known_flaky, e.known_flaky);
    }
}
