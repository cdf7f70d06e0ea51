//! Reports of a run (`--report-dir DIR`): `report.json` (its shape is
//! `conformance/report.schema.json`), `junit.xml` and `summary.md`. Each trial's record
//! is also kept as `DIR/trials/NAME.json`, tagged with the run's id, and the three
//! files are rebuilt from every record of that run under a lock: under nextest, where
//! each trial is a process of its own, the last trial to finish leaves the whole
//! run's report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One trial's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `ws/session/resume-after-disconnect`.
    pub trial: String,
    /// The verdict's name: PASS, NON-STRICT, FAIL, TIMEOUT, CRASH, SKIPPED, HARNESS-ERROR,
    /// FLAKY (`--repeat`: the runs did not all end alike).
    pub verdict: String,
    /// Why it was skipped, or what failed (the mismatch).
    pub detail: String,
    /// What the expectations said: `known_failing`, `known_flaky`, `contradicted`.
    pub expectation: Option<String>,
    /// The reason of the expectations entry the trial matched.
    pub reason: Option<String>,
    /// Whether it fails the gate (after expectations and `--level`).
    pub fails_gate: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The docs/protocol.md section the case grades.
    pub spec: String,
    /// The transcript.
    pub file: String,
    /// The transcript line a failure happened at.
    pub line: Option<usize>,
    /// Wire trace and server stderr tail (on failure).
    pub report: String,
}

/// What a report says about the run as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Tags every trial record of one run.
    pub run_id: String,
    /// The suite's version.
    pub suite_version: String,
    /// The graded revision.
    pub revision: String,
    /// `must` or `should`.
    pub level: String,
    /// The manifest in effect (as JSON), if any.
    pub manifest: Option<Value>,
    /// The server's `serverInfo`, by transport, as it answered the probe.
    pub server_info: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct TrialFile {
    run: RunInfo,
    record: Record,
}

/// Saves these records and rebuilds the three reports from every record of the run.
pub fn write(dir: &Path, run: &RunInfo, records: &[Record]) -> io::Result<()> {
    let trials = dir.join("trials");
    std::fs::create_dir_all(&trials)?;
    let lock = File::create(dir.join(".lock"))?;
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == -1 {
        return Err(io::Error::last_os_error());
    }
    for record in records {
        let name = record.trial.replace('/', "__");
        let file = TrialFile {
            run: run.clone(),
            record: record.clone(),
        };
        std::fs::write(
            trials.join(format!("{name}.json")),
            serde_json::to_vec(&file)?,
        )?;
    }
    let mut all: Vec<Record> = Vec::new();
    let mut info = run.clone();
    for entry in std::fs::read_dir(&trials)?.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        match serde_json::from_slice::<TrialFile>(&bytes) {
            Ok(file) if file.run.run_id == run.run_id => {
                info.server_info.extend(file.run.server_info);
                all.push(file.record);
            }
            // Another run's record: not part of this report.
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    all.sort_by(|a, b| a.trial.cmp(&b.trial));
    replace(&dir.join("report.json"), &report_json(&info, &all))?;
    replace(&dir.join("junit.xml"), &junit(&info, &all))?;
    replace(&dir.join("summary.md"), &summary(&info, &all))?;
    drop(lock);
    Ok(())
}

fn replace(path: &Path, text: &str) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(temporary, path)
}

fn totals(records: &[Record]) -> BTreeMap<String, usize> {
    let mut totals = BTreeMap::new();
    for record in records {
        *totals.entry(record.verdict.clone()).or_default() += 1;
    }
    totals
}

fn report_json(run: &RunInfo, records: &[Record]) -> String {
    let report = serde_json::json!({
        "suite": {"name": "exec-conformance", "version": run.suite_version},
        "run_id": run.run_id,
        "revision": run.revision,
        "level": run.level,
        "manifest": run.manifest,
        "server_info": run.server_info,
        "totals": totals(records),
        "gate": if records.iter().any(|r| r.fails_gate) { "fail" } else { "pass" },
        "cases": records,
    });
    serde_json::to_string_pretty(&report).unwrap_or_default()
}

/// `text` as XML 1.0 character data: markup escaped, characters XML cannot hold
/// (most controls, surrogates, U+FFFE and U+FFFF) dropped.
fn escape(text: &str) -> String {
    text.chars()
        .filter(|c| {
            matches!(c, '\t' | '\n' | '\r')
                || matches!(*c as u32, 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..)
        })
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(run: &RunInfo, records: &[Record]) -> String {
    let failures = records.iter().filter(|r| r.fails_gate).count();
    let skipped = records
        .iter()
        .filter(|r| r.verdict == "SKIPPED" && !r.fails_gate)
        .count();
    let seconds: f64 = records.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"exec-conformance\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{seconds:.3}\">",
        records.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"exec-conformance revision {}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{seconds:.3}\">",
        escape(&run.revision),
        records.len()
    );
    for record in records {
        let (transport, case) = record.trial.split_once('/').unwrap_or(("", &record.trial));
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(transport),
            escape(case),
            record.duration_ms as f64 / 1000.0
        );
        if record.fails_gate {
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{} [{}]\" type=\"{}\">{}\n{}</failure>\n    </testcase>",
                escape(&record.verdict),
                escape(&record.spec),
                escape(&record.verdict),
                escape(&record.detail),
                escape(&record.report)
            );
        } else if record.verdict == "SKIPPED" {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(&record.detail)
            );
        } else {
            let _ = writeln!(out, "/>");
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn summary(run: &RunInfo, records: &[Record]) -> String {
    let gate_failures: Vec<&Record> = records.iter().filter(|r| r.fails_gate).collect();
    let name = run
        .manifest
        .as_ref()
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("the server");
    let mut out = format!(
        "## exec-conformance: {name}, revision {} — {}\n\n",
        run.revision,
        if gate_failures.is_empty() {
            "gate passed"
        } else {
            "gate FAILED"
        }
    );
    out.push_str("| verdict | trials |\n|---|---|\n");
    for (verdict, count) in totals(records) {
        let _ = writeln!(out, "| {verdict} | {count} |");
    }
    let expected = records
        .iter()
        .filter(|r| {
            matches!(
                r.expectation.as_deref(),
                Some("known_failing" | "known_flaky")
            )
        })
        .count();
    let _ = writeln!(out, "\n{expected} trials matched their expectations entry.");
    let known: Vec<&Record> = records.iter().filter(|r| r.reason.is_some()).collect();
    if !known.is_empty() {
        out.push_str("\n### Known failures and flaky trials\n\n| trial | verdict | reason |\n|---|---|---|\n");
        for record in known {
            let reason = record.reason.as_deref().unwrap_or("").replace('|', "\\|");
            let _ = writeln!(
                out,
                "| `{}` | {} | {reason} |",
                record.trial, record.verdict
            );
        }
    }
    let flaky: Vec<&Record> = records.iter().filter(|r| r.verdict == "FLAKY").collect();
    if !flaky.is_empty() {
        out.push_str(
            "\n### Flaky (the verdict changed between runs)\n\n| trial | runs |\n|---|---|\n",
        );
        for record in flaky {
            let first = record.detail.split(';').next().unwrap_or("");
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                record.trial,
                first.replace('|', "\\|")
            );
        }
    }
    if !gate_failures.is_empty() {
        out.push_str(
            "\n### Failing the gate\n\n| trial | verdict | spec | what |\n|---|---|---|---|\n",
        );
        for record in gate_failures {
            let first = record
                .detail
                .lines()
                .next()
                .unwrap_or("")
                .replace('|', "\\|");
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                record.trial, record.verdict, record.spec, first
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the trials of a `report.json`.
    fn read_records(dir: &Path) -> Result<Vec<Record>, String> {
        let path = dir.join("report.json");
        let text =
            std::fs::read_to_string(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let report: Value =
            serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        serde_json::from_value(report["cases"].clone())
            .map_err(|err| format!("{}: {err}", path.display()))
    }

    fn record(trial: &str, verdict: &str, fails_gate: bool) -> Record {
        Record {
            trial: trial.into(),
            verdict: verdict.into(),
            detail: format!("{trial}: what <happened> & why"),
            expectation: None,
            reason: None,
            fails_gate,
            duration_ms: 12,
            spec: "§5".into(),
            file: "x.xt".into(),
            line: Some(3),
            report: "trace\u{1}\u{FFFF}\u{85}\r".into(),
        }
    }

    fn run(id: &str) -> RunInfo {
        RunInfo {
            run_id: id.into(),
            suite_version: "0.1.0".into(),
            revision: "2026-08".into(),
            level: "must".into(),
            manifest: None,
            server_info: BTreeMap::new(),
        }
    }

    #[test]
    fn records_of_one_run_merge_and_others_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &run("old"), &[record("ws/a", "PASS", false)]).unwrap();
        write(dir.path(), &run("new"), &[record("ws/b", "FAIL", true)]).unwrap();
        write(
            dir.path(),
            &run("new"),
            &[record("stdio/c", "SKIPPED", false)],
        )
        .unwrap();
        let records = read_records(dir.path()).unwrap();
        let trials: Vec<&str> = records.iter().map(|r| r.trial.as_str()).collect();
        assert_eq!(trials, ["stdio/c", "ws/b"]);
        let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
        assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
        assert!(junit.contains("&lt;happened&gt; &amp; why"), "{junit}");
        assert!(!junit.contains(['\u{1}', '\u{FFFF}']));
        assert!(junit.contains("trace\u{85}\r"), "{junit}");
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.contains("gate FAILED") && summary.contains("`ws/b`"),
            "{summary}"
        );
    }
}
