//! Writes a [`Plan`] as a conformance transcript (`.xt`, fixtures/README.md), so that a
//! failure the model found replays through the normal runner against any server. The
//! transcript says what the protocol requires of every answer (the plan's
//! expectations, never what a server happened to answer), so a correct server passes
//! it and the faulty one fails it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::plan::{Check, Init, Plan, Step, SETTLE_MS};

/// Where a failure's transcript goes: `DIR/session/model-<what it checks>.xt`, so that
/// `--transcripts DIR` adds it as the case `session/model-…`.
pub fn path_in(dir: &Path, check: Check) -> PathBuf {
    dir.join("session")
        .join(format!("model-{}.xt", check.slug()))
}

/// The case id of a transcript at [`path_in`] (`--exact ws/<id>` runs it).
pub fn case_id(check: Check) -> String {
    format!("session/model-{}", check.slug())
}

/// How the model's run went, kept as comments in the transcript.
pub struct Found<'a> {
    /// The server command line it ran against.
    pub server: &'a str,
    /// Its failure message.
    pub failure: &'a str,
}

/// Writes the transcript of `plan` (which `ops` made, and whose run failed `check`)
/// under `dir`; returns its path.
pub fn write(
    dir: &Path,
    plan: &Plan,
    ops: &str,
    check: Check,
    found: &Found,
) -> std::io::Result<PathBuf> {
    let path = path_in(dir, check);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, render(plan, ops, check, Some(found)))?;
    Ok(path)
}

/// A transcript's logical budget for a normal case is 30 s; past this much waiting,
/// the case is declared `long`.
const NORMAL_CLASS_MS: u64 = 20_000;
/// The runner's TTL with `session.ttl` (2 s), and how much of it a resume that must
/// succeed may come after without the case becoming timing-sensitive.
const RUNNER_TTL_MS: u64 = 2_000;
const SAFE_DETACH_MS: u64 = RUNNER_TTL_MS * 2 / 5;

/// Whether the transcript of `plan` could see a session expire that must not (with
/// `session.ttl` the runner's TTL is short).
pub fn timing_sensitive(plan: &Plan) -> bool {
    plan.uses_ttl && plan.longest_detach_ms > SAFE_DETACH_MS
}

/// The transcript text; what the model's run `found` is kept as comments.
pub fn render(plan: &Plan, ops: &str, check: Check, found: Option<&Found>) -> String {
    let mut requires = vec!["session.resume"];
    if plan.uses_ttl {
        requires.push("session.ttl");
    }
    if plan.uses_close_stdin {
        requires.push("process.close_stdin");
    }
    let waited: u64 = plan
        .steps
        .iter()
        .map(|step| match step {
            Step::WaitPastTtl => RUNNER_TTL_MS * 5 / 2,
            Step::Settle => SETTLE_MS,
            _ => 0,
        })
        .sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# title: {} (found by the session model, server/tests/session_model.rs)",
        check.claim()
    );
    let _ = writeln!(out, "# spec: {}", check.spec());
    out.push_str("# level: MUST\n# transports: ws\n");
    // Every write carries a writeId (revision 2026-08, §6.4).
    out.push_str("# revisions: 2026-08\n");
    let _ = writeln!(out, "# requires: {}", requires.join(", "));
    if waited > NORMAL_CLASS_MS {
        out.push_str("# class: long\n");
    }
    out.push_str(
        "#\n# Written by the session model for the ops (indices pick modulo what exists)\n",
    );
    for line in wrap(ops, 84) {
        let _ = writeln!(out, "#   {line}");
    }
    out.push_str(
        "# Each answer is what docs/protocol.md requires; every read asks for one event at\n\
         # its seq (maxBytes 0), so nothing depends on timing on a correct server.\n",
    );
    if timing_sensitive(plan) {
        let _ = writeln!(
            out,
            "# CAUTION: a session stays detached for about {} ms of the runner's {} ms TTL\n\
             # before a resume that must succeed; on a slow machine raise the time scale.",
            plan.longest_detach_ms, RUNNER_TTL_MS
        );
    }
    if let Some(found) = found {
        let _ = writeln!(
            out,
            "# The model's run against {} failed with",
            found.server
        );
        for line in without_uuids(found.failure).lines().take(12) {
            // `| ` first: a comment must not read as a `key:` header.
            let _ = writeln!(out, "# | {line}");
        }
    }
    out.push('\n');
    let mut id = 0u64;
    for step in &plan.steps {
        render_step(&mut out, step, &mut id);
    }
    out
}

fn sid(session: usize) -> String {
    format!("$sid{}", session + 1)
}

/// A new session's id: bound to `$sidN`, and unlike every earlier session's (sessions
/// are numbered as they are created).
fn fresh_sid(session: usize) -> Value {
    match session {
        0 => json!(sid(0)),
        _ => {
            let earlier: Vec<String> = (0..session).map(sid).collect();
            json!({"$allOf": [sid(session), {"$not": {"$oneOf": earlier}}]})
        }
    }
}

fn render_step(out: &mut String, step: &Step, id: &mut u64) {
    let mut next_id = || {
        *id += 1;
        *id
    };
    match step {
        Step::Op { index, text } => match *index {
            usize::MAX => {
                let _ = writeln!(out, "# The end: {text}");
            }
            index => {
                let _ = writeln!(out, "# Op {} - {text}", index + 1);
            }
        },
        Step::Initialize { session, init, .. } => {
            let k = next_id();
            let params = match init {
                Init::Fresh => json!({"clientName": "model"}),
                Init::Resume | Init::Expired | Init::Attached => {
                    json!({"clientName": "model", "resumeSessionId": sid(*session)})
                }
            };
            send(out, k, "initialize", &params);
            let answer = match init {
                Init::Fresh => json!({"result": {"sessionId": fresh_sid(*session)}}),
                Init::Resume => json!({"result": {"sessionId": sid(*session)}}),
                Init::Expired => json!({"error": {"code": -32600}}),
                Init::Attached => json!({"error": {"code": -32010}}),
            };
            expect(out, k, &answer);
            if matches!(init, Init::Fresh | Init::Resume) {
                out.push_str(">> {\"method\":\"initialized\"}\n");
            }
        }
        Step::Disconnect => out.push_str("!! disconnect\n"),
        Step::Reset => out.push_str("!! reset\n"),
        Step::Reconnect => out.push_str("!! reconnect\n"),
        Step::Settle => {
            let _ = writeln!(out, "!! wait {SETTLE_MS}ms");
        }
        Step::Call(call) => {
            let k = next_id();
            send(out, k, call.method, &call.params);
            match &call.expect {
                Some(answer) => expect(out, k, answer),
                None => out.push_str("# (its answer is lost: never read)\n"),
            }
        }
        Step::WaitPastTtl => out.push_str("!! wait-ttl 250%\n"),
        Step::Gone {
            sessions,
            in_transcript,
        } => {
            let names: Vec<String> = sessions.iter().map(|s| sid(*s)).collect();
            match in_transcript {
                true => out.push_str("!! no-orphans\n"),
                // `no-orphans` sees every process of the case, and others still run.
                false => {
                    let _ = writeln!(
                        out,
                        "# (the processes of {} are gone now; other sessions' still run, so the final no-orphans checks)",
                        names.join(", ")
                    );
                }
            }
        }
        Step::NoOrphans => out.push_str("!! no-orphans\n"),
    }
}

fn send(out: &mut String, id: u64, method: &str, params: &Value) {
    let _ = writeln!(
        out,
        ">> {{\"id\":{id},\"method\":{},\"params\":{params}}}",
        json!(method)
    );
}

fn expect(out: &mut String, id: u64, answer: &Value) {
    let mut line = format!("<< {{\"id\":{id}");
    if let Value::Object(fields) = answer {
        for (key, value) in fields {
            let _ = write!(line, ",{}:{value}", json!(key));
        }
    }
    line.push('}');
    out.push_str(&line);
    out.push('\n');
}

/// `text` cut at spaces into lines of at most about `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let last = lines.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + word.len() + 1 > width {
            lines.push(word.to_owned());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// `text` with every hyphenated UUID left in it (a session id the model did not bind,
/// say) as `<uuid>`.
fn without_uuids(text: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let is_uuid = |candidate: &[u8]| {
        candidate.len() == LEN
            && candidate
                .split(|&byte| byte == b'-')
                .map(|group| {
                    group
                        .iter()
                        .all(u8::is_ascii_hexdigit)
                        .then_some(group.len())
                })
                .eq(GROUPS.map(Some))
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < bytes.len() {
        if at + LEN <= bytes.len()
            && text.is_char_boundary(at + LEN)
            && is_uuid(&bytes[at..at + LEN])
        {
            out.push_str("<uuid>");
            at += LEN;
        } else {
            let next = text[at..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[at..at + next]);
            at += next;
        }
    }
    out
}

#[test]
fn failure_text_keeps_no_uuid() {
    assert_eq!(
        without_uuids("the resume of 1a361e4d-d41c-4892-8f6e-0123456789ab (é) failed"),
        "the resume of <uuid> (é) failed"
    );
    let not_one = "1a361e4d-d41c-4892-8f6e-0123456789a";
    assert_eq!(without_uuids(not_one), not_one);
}
