//! The normalisation, the script, the refusal, and a recording replayed by the runner
//! against the in-tree server (in-process: see `record_then_replay`).

use std::path::Path;

use serde_json::json;

use super::*;
use crate::manifest;
use crate::runner::Verdict;

const ROOT: &str = "/tmp/exec-conformance-Ab12Cd";
const MARKER: &str = "exec-conformance-0123456789abcdef0123456789abcdef";
const SID: &str = "6f1c2b9e-3d4a-4f8e-9b2a-1c7d5e0f3a21";
const OTHER: &str = "0b5e0c47-2f7d-4c3e-8f61-77a0d2f4c9e1";
/// A UUID the script writes itself (a made-up session to resume).
const OWN: &str = "00000000-0000-4000-8000-000000000000";

fn normaliser(revision: Revision) -> Normaliser {
    Normaliser::new(
        &runner::initial_bindings(Path::new(ROOT), MARKER, revision),
        BTreeSet::from([OWN.to_owned()]),
    )
}

/// The pattern matches what it was made from, with the variables bound so far.
fn replays(norm: &Normaliser, pattern: &Value, actual: &Value) {
    let compiled = Pattern::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e:?}"));
    let mut bindings = norm.bindings();
    compiled
        .matches(actual, &mut bindings)
        .unwrap_or_else(|m| panic!("{pattern} does not match {actual}: {m}"));
}

#[test]
fn session_ids_and_other_uuids_become_variables() {
    let mut norm = normaliser(Revision::R2026_08);
    let first = json!({"result": {"sessionId": SID, "serverInfo": {"name": "x"}}});
    let pattern = norm.value(None, &first);
    assert_eq!(
        pattern,
        json!({"result": {"sessionId": "$sid", "serverInfo": {"name": "x"}}})
    );
    // A resume answers the same id: it is referred to, not bound again.
    assert_eq!(
        norm.value(None, &json!({"sessionId": SID})),
        json!({"sessionId": "$sid"})
    );
    // In a message, a bound one is a template.
    let refused =
        json!({"message": format!("session {SID} is already attached to another connection")});
    let pattern = norm.value(None, &refused);
    assert_eq!(
        pattern,
        json!({"message": "session ${sid} is already attached to another connection"})
    );
    replays(&norm, &pattern, &refused);
    // A second session binds $sid2; another UUID is named after its field.
    assert_eq!(norm.value(Some("sessionId"), &json!(OTHER)), json!("$sid2"));
    let third = "11111111-2222-4333-8444-555555555555";
    assert_eq!(
        norm.value(Some("requestToken"), &json!(third)),
        json!("$requestToken")
    );
    assert_eq!(norm.value(None, &json!([third])), json!(["$requestToken"]));
    let fourth = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    assert_eq!(norm.value(None, &json!(fourth)), json!("$uuid"));
    // A UUID seen first inside a message cannot be bound there: a regex matches any.
    let fifth = "99999999-8888-4777-8666-555555555555";
    let text = json!(format!("unknown session id {fifth} (expired)"));
    let pattern = norm.value(Some("message"), &text);
    let regex = pattern.as_str().unwrap();
    assert!(
        regex.starts_with("~/^unknown session id ") && !regex.contains(fifth),
        "{regex}"
    );
    replays(&norm, &pattern, &text);
    replays(
        &norm,
        &pattern,
        &json!(format!("unknown session id {OTHER} (expired)")),
    );
    // The script's own UUID is the same on every run: it stays as written.
    let unknown = json!({"code": -32600, "message": format!("unknown session id {OWN}")});
    assert_eq!(norm.value(Some("error"), &unknown), unknown);
    assert_eq!(norm.value(Some("id"), &json!(OWN)), json!(OWN));
}

#[test]
fn temporary_paths_become_tmp_and_tmp_path() {
    let mut norm = normaliser(Revision::R2026_08);
    let uri = format!("file://{ROOT}");
    for (actual, expected) in [
        (json!(uri.clone()), json!("$tmpPath")),
        (json!(format!("{uri}/a b.txt")), json!("$tmpPath/a b.txt")),
        (json!(ROOT), json!("$tmp")),
        (json!(format!("{ROOT}/real/sub")), json!("$tmp/real/sub")),
        (
            json!(format!(
                "cannot use cwd {ROOT}/x: No such file or directory (os error 2)"
            )),
            json!("cannot use cwd ${tmp}/x: No such file or directory (os error 2)"),
        ),
        (json!(format!("{ROOT} is gone")), json!("${tmp} is gone")),
        (
            json!(format!("{ROOT}/{MARKER}.log")),
            json!("${tmp}/${marker}.log"),
        ),
        (json!(MARKER), json!("$marker")),
    ] {
        let pattern = norm.value(Some("path"), &actual);
        assert_eq!(pattern, expected, "{actual}");
        replays(&norm, &pattern, &actual);
    }
    // At 2026-06 both spellings are the plain path: `$tmpPath` in fields, `${tmp}` in
    // output (programs print plain paths).
    let mut old = normaliser(Revision::R2026_06);
    assert_eq!(
        old.value(Some("path"), &json!(format!("{ROOT}/a"))),
        json!("$tmpPath/a")
    );
    assert_eq!(
        old.text_template(&format!("{ROOT}\n")),
        ("${tmp}\n".to_owned(), None)
    );
}

#[test]
fn times_seqs_and_pids_become_typed_wildcards() {
    let mut norm = normaliser(Revision::R2026_08);
    let metadata = json!({"isFile": true, "createdAtMs": 1_700_000_000_123u64, "modifiedAtMs": 1_700_000_000_456u64, "size": 3});
    assert_eq!(
        norm.value(Some("result"), &metadata),
        json!({"isFile": true, "createdAtMs": {"$type": "integer"}, "modifiedAtMs": {"$type": "integer"}, "size": 3})
    );
    let exited = json!({"processId": "p1", "seq": 3, "exitCode": 0, "pid": 4242, "childPid": 7});
    assert_eq!(
        norm.value(Some("params"), &exited),
        json!({"processId": "p1", "seq": {"$type": "integer"}, "exitCode": 0, "pid": {"$type": "integer"}, "childPid": {"$type": "integer"}})
    );
    let read = json!({"chunks": [{"seq": 1, "stream": "stdout", "chunk": "aGkK"}], "nextSeq": 2, "exitedSeq": null, "closed": false});
    let pattern = norm.value(Some("result"), &read);
    assert_eq!(
        pattern,
        json!({"chunks": {"$type": "array"}, "nextSeq": {"$type": "integer"}, "exitedSeq": null, "closed": false})
    );
    replays(&norm, &pattern, &read);
}

#[test]
fn literal_strings_that_look_like_patterns_are_escaped() {
    let mut norm = normaliser(Revision::R2026_08);
    for text in [
        "*", "...", "~/x/", "$HOME", "$$", "a ${b} c", "${b}", "plain",
    ] {
        let actual = json!([text, "x"]);
        let pattern = norm.value(None, &actual);
        replays(&norm, &pattern, &actual);
        let other = json!([format!("{text}!"), "x"]);
        let compiled = Pattern::compile(&pattern).unwrap();
        assert!(
            compiled.matches(&other, &mut norm.bindings()).is_err(),
            "{pattern} matches more than {text:?}"
        );
    }
    // An object with an operator's key stays what it is.
    let odd = json!({"$b64": "x"});
    let pattern = norm.value(None, &odd);
    replays(&norm, &pattern, &odd);
    // File contents that are text are written as such, templated.
    let data = base64::engine::general_purpose::STANDARD.encode(format!("in {ROOT}\n"));
    let pattern = norm.value(Some("dataBase64"), &json!(data));
    assert_eq!(pattern, json!({"$b64": "in ${tmp}\n"}));
    replays(&norm, &pattern, &json!(data));
}

#[test]
fn output_merges_into_one_read_until_per_process_and_stream() {
    let norm = normaliser(Revision::R2026_08);
    let mut buffer = OutputBuffer::default();
    let key = |process: &str, stream: &str| OutputKey {
        connection: 0,
        process: process.into(),
        stream: stream.into(),
    };
    buffer.append(key("p1", "stdout"), b"hel");
    buffer.append(key("p1", "stderr"), b"oops\n");
    buffer.append(key("p2", "stdout"), b"other\n");
    buffer.append(key("p1", "stdout"), format!("lo\n{ROOT}\n").as_bytes());
    let taken = buffer.take(|k| k.process == "p1");
    assert_eq!(buffer.pending.len(), 1, "p2's output stays");
    let lines: Vec<String> = taken
        .iter()
        .flat_map(|p| read_until_lines(&norm, &p.key, &p.bytes))
        .collect();
    assert_eq!(
        lines,
        [
            r#"!! read-until p1 stdout "hello\n${tmp}\n""#,
            r#"!! read-until p1 stderr "oops\n""#
        ]
    );
    // A flood is kept up to a bound: the replay reads until its beginning is there.
    buffer.append(key("p5", "stdout"), &vec![b'y'; MAX_OUTPUT_BYTES - 1]);
    buffer.append(key("p5", "stdout"), b"yyy");
    let flood = buffer.take(|k| k.process == "p5");
    assert_eq!(flood[0].bytes.len(), MAX_OUTPUT_BYTES);
    assert!(flood[0].more, "it says there was more");
    // What a read-until text cannot hold ends it, with a comment saying why.
    let lines = read_until_lines(&norm, &key("p3", "stdout"), b"cost: ${price}\n");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("# (output of a process on stdout recorded up to a literal `${`"));
    assert_eq!(lines[1], r#"!! read-until p3 stdout "cost: ""#);
    let lines = read_until_lines(&norm, &key("p3", "pty"), b"ok\xff\xfe");
    assert_eq!(lines[1], r#"!! read-until p3 pty "ok""#);
    let lines = read_until_lines(&norm, &key("p 4", "stdout"), b"x");
    assert!(lines[0].contains("its id cannot be written"), "{lines:?}");
    // Each line parses, and the process id may be a variable.
    let mut bound = norm.clone();
    let name = bound.bind("uuid", OTHER);
    let lines = read_until_lines(
        &bound,
        &key(OTHER, "stdout"),
        format!("{MARKER}\n").as_bytes(),
    );
    assert_eq!(
        lines,
        [format!(r#"!! read-until ${name} stdout "${{marker}}\n""#)]
    );
}

#[test]
fn notifications_are_ordered_so_that_no_pattern_takes_another_ones_message() {
    let exited =
        |p: &str| json!({"method": "process/exited", "params": {"processId": p, "exitCode": 0}});
    // Distinct patterns: arrival order stays.
    let group = vec![(exited("p2"), exited("p2")), (exited("p1"), exited("p1"))];
    assert_eq!(order_events(&group, &Bindings::new()), [0, 1]);
    // A pattern that also matches a later message goes after that message's line.
    let wide = json!({"method": "m", "params": {"a": 1}});
    let narrow = json!({"method": "m", "params": {"a": 1, "b": 2}});
    let group = vec![
        (wide.clone(), wide.clone()),
        (narrow.clone(), narrow.clone()),
    ];
    assert_eq!(order_events(&group, &Bindings::new()), [1, 0]);
    // Identical patterns: either order replays.
    let group = vec![(wide.clone(), wide.clone()), (wide.clone(), wide)];
    assert_eq!(order_events(&group, &Bindings::new()), [0, 1]);
}

#[test]
fn the_refusal_names_the_line_and_the_value() {
    let clean = "# spec: §4\n>> {\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"$tmp\"}}\n<< {\"id\":1,\"result\":{\"sessionId\":\"$sid\",\"path\":\"$tmpPath/a\"}}\n";
    let own = BTreeSet::from([OWN.to_owned()]);
    assert!(refuse_unredacted(clean, &[ROOT], &own).is_ok());
    let resume = format!(
        ">> {{\"id\":1,\"method\":\"initialize\",\"params\":{{\"resumeSessionId\":\"{OWN}\"}}}}\n"
    );
    assert!(refuse_unredacted(&resume, &[ROOT], &own).is_ok());
    assert!(refuse_unredacted(&resume, &[ROOT], &BTreeSet::new()).is_err());
    let leaky = format!("# spec: §4\n>> {{\"id\":1}}\n<< {{\"id\":1,\"result\":{{\"sessionId\":\"{SID}\"}}}}\n!! read-until p1 stdout \"{ROOT}/x\\n\"\n");
    let err = refuse_unredacted(&leaky, &[ROOT], &own).unwrap_err();
    assert!(err.contains(&format!("line 3: a UUID, {SID}")), "{err}");
    assert!(
        err.contains(&format!("line 4: a temporary path, {ROOT}")),
        "{err}"
    );
    let system = std::env::temp_dir();
    let elsewhere = format!(
        "<< {{\"id\":1,\"result\":{{\"path\":\"{}/other/x\"}}}}\n",
        system.display()
    );
    let err = refuse_unredacted(&elsewhere, &[ROOT], &own).unwrap_err();
    assert!(err.contains("line 1: a temporary path"), "{err}");
    // The temporary directory itself (environment/info's tempDir) is not a case's.
    let bare = format!(
        "<< {{\"id\":1,\"result\":{{\"tempDir\":\"file://{}\"}}}}\n",
        system.display()
    );
    assert!(refuse_unredacted(&bare, &[ROOT], &own).is_ok());
    // A UUID without its hyphens is one too; other long hex (a digest) is not.
    let simple = "!! read-until p1 stdout \"7a226961dda64f3e9c1b0d2e3f405162\"\n";
    let err = refuse_unredacted(simple, &[ROOT], &own).unwrap_err();
    assert!(err.contains("line 1: a UUID (simple form), 7a22"), "{err}");
    let digest = "!! read-until p1 stdout \"d41d8cd98f00b204e9800998ecf8427e\"\n";
    assert!(refuse_unredacted(digest, &[ROOT], &own).is_ok());
}

#[test]
fn the_script_is_checked_before_any_server_runs() {
    let ok = "# a comment\n{\"id\": 1, \"method\": \"initialize\", \"params\": {\"clientName\": \"c\"}}\n>> {\"method\": \"initialized\"}\n\n!! wait 10ms\n!! http {\"method\":\"GET\",\"path\":\"/readyz\"} => {\"status\":999}\n";
    let steps = parse_script(ok, TransportName::Ws).unwrap();
    assert_eq!(steps.len(), 5);
    assert!(matches!(steps[0].action, Action::Comment));
    assert!(
        matches!(&steps[2].action, Action::Send(m) if m["jsonrpc"] == "2.0" && steps[2].text == "{\"method\": \"initialized\"}")
    );
    assert_eq!(steps[3].line, 5);
    assert!(matches!(
        steps[4].action,
        Action::Command(StepKind::Http(_))
    ));
    let cases = [
        (
            "{\"id\": 1,}\n",
            TransportName::Ws,
            "<stdin>:1: invalid JSON",
        ),
        (
            "!! wait 1s\n[1]\n",
            TransportName::Ws,
            "<stdin>:2: a message is a JSON object",
        ),
        (
            "<< {\"id\": 1}\n",
            TransportName::Ws,
            "<stdin>:1: `<<` and `<~` lines are what the recorder writes",
        ),
        (
            "!! read-until p1 \"x\"\n",
            TransportName::Ws,
            "<stdin>:1: `!! read-until` is what the recorder writes",
        ),
        (
            "!! close-stdin\n",
            TransportName::Ws,
            "<stdin>:1: `!! close-stdin` runs only on stdio",
        ),
        (
            "\n!! reconnect\n",
            TransportName::Stdio,
            "<stdin>:2: `!! reconnect` runs only on ws",
        ),
        (
            "# spec: §4\n",
            TransportName::Ws,
            "<stdin>:1: `# spec:` is a header",
        ),
        (
            "!! explode\n",
            TransportName::Ws,
            "<stdin>:1:4: unknown command",
        ),
        (
            "{\"id\": 1, \"params\": \"$\"}\n",
            TransportName::Ws,
            "<stdin>:1: \"$\" is not a variable",
        ),
        (
            "# nothing\n",
            TransportName::Ws,
            "<stdin>: the script is empty",
        ),
    ];
    for (script, transport, expected) in cases {
        let err = parse_script(script, transport).unwrap_err();
        assert!(err.starts_with(expected), "{script:?}: {err}");
    }
}

#[test]
fn headers_follow_from_the_script() {
    let script = "{\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"c\"}}\n{\"method\":\"initialized\"}\n{\"id\":2,\"method\":\"fs/readFile\",\"params\":{\"path\":\"$tmpPath/a\"}}\n{\"id\":3,\"method\":\"process/start\",\"params\":{\"processId\":\"p\",\"argv\":[\"true\"],\"cwd\":\"/\",\"tty\":true}}\n{\"id\":4,\"method\":\"initialize\",\"params\":{\"clientName\":\"c\",\"resumeSessionId\":\"$sid\"}}\n";
    let steps = parse_script(script, TransportName::Ws).unwrap();
    assert_eq!(
        requirements(&steps, TransportName::Ws),
        ["process.tty", "session.resume", "fs"]
    );
    assert_eq!(
        requirements(&steps, TransportName::Stdio),
        ["process.tty", "fs"]
    );
    assert_eq!(spec_of(None, &steps).unwrap(), "§7");
    assert_eq!(spec_of(Some("6.1"), &steps).unwrap(), "§6.1");
    assert!(spec_of(Some("§42"), &steps)
        .unwrap_err()
        .contains("no such section"));
    assert_eq!(
        title_of(None, &steps),
        "recorded: initialize, fs/readFile, process/start"
    );
    assert_eq!(title_of(Some("a read"), &steps), "recorded: a read");
    let handshake = parse_script(
        "{\"id\":1,\"method\":\"initialize\",\"params\":{}}\n",
        TransportName::Ws,
    )
    .unwrap();
    assert_eq!(spec_of(None, &handshake).unwrap(), "§4");
}

#[test]
fn the_command_line() {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (recording, options) = parse_args(args(&[
        "--server",
        "./srv -v",
        "--transport=stdio",
        "--spec",
        "§6.1",
        "--revision",
        "2026-06",
    ]))
    .unwrap();
    assert_eq!(recording.transport, TransportName::Stdio);
    assert_eq!(recording.spec.as_deref(), Some("§6.1"));
    assert_eq!(
        options.server,
        Some(vec!["./srv".to_owned(), "-v".to_owned()])
    );
    assert_eq!(options.revision, Some(Revision::R2026_06));
    assert!(parse_args(args(&["--transport", "tcp"]))
        .unwrap_err()
        .contains("ws or stdio"));
    assert!(parse_args(args(&["--report-dir", "x"]))
        .unwrap_err()
        .contains("not of record"));
    assert!(parse_args(args(&["--exact", "x"]))
        .unwrap_err()
        .contains("unknown argument"));
}

/// A recording of the in-tree server on `transport`, and its replay by the runner.
///
/// The server runs in-process, as the harness runs it for its own tests (an empty
/// command in [`Config`]): this crate cannot name a binary of another package with
/// `CARGO_BIN_EXE_…`, and building or finding one under the target directory would make
/// the test depend on what was built before. The path through a real binary is the
/// runner's own (`exec-conformance record --server …`, checked by hand and in CI).
async fn record_then_replay(script: &str, transport: TransportName) -> String {
    let config = Config::default();
    let manifest = Manifest::parse(manifest::IN_TREE).unwrap();
    let recording = Recording {
        config: config.clone(),
        manifest: Some(manifest.clone()),
        transport,
        spec: None,
        title: None,
        revision_given: false,
    };
    let recorded = record(script, &recording).await.unwrap();
    assert!(
        recorded.warnings.is_empty(),
        "{:?}\n{}",
        recorded.warnings,
        recorded.text
    );
    let case = transcript::parse("recorded.xt", &recorded.text).unwrap();
    let outcome = runner::run_case(&case, transport, &config, &manifest.profile(transport)).await;
    assert_eq!(
        outcome.verdict,
        Verdict::Pass,
        "{}\n{}",
        recorded.text,
        outcome.report
    );
    recorded.text
}

const WS_SCRIPT: &str = r#"# a program with output on both streams, fs calls, then a resume
{"id":1,"method":"initialize","params":{"clientName":"recorder"}}
{"method":"initialized"}
{"id":2,"method":"process/start","params":{"processId":"p1","argv":["/bin/sh","-c","echo hello; pwd; echo oops >&2; exit 3","$marker"],"cwd":"$tmpPath","env":{"PATH":"/usr/bin:/bin","XT_MARKER":"$marker"}}}
{"id":3,"method":"fs/writeFile","params":{"path":"$tmpPath/a.txt","dataBase64":"aGkK"}}
{"id":4,"method":"fs/readFile","params":{"path":"$tmpPath/a.txt"}}
{"id":5,"method":"fs/getMetadata","params":{"path":"$tmpPath/a.txt"}}
{"id":6,"method":"fs/canonicalize","params":{"path":"$tmpPath/./a.txt"}}
{"id":7,"method":"process/start","params":{"processId":"p2","argv":["/bin/sh","-c","read x; echo got $x","$marker"],"cwd":"$tmpPath","env":{"PATH":"/usr/bin:/bin","XT_MARKER":"$marker"},"pipeStdin":true}}
!! disconnect
!! wait 200ms
!! reconnect
{"id":8,"method":"initialize","params":{"clientName":"recorder","resumeSessionId":"$sid"}}
{"method":"initialized"}
{"id":9,"method":"process/write","params":{"processId":"p2","chunk":"aGkK","closeStdin":true}}
{"id":10,"method":"process/start","params":{"processId":"p3","argv":["/bin/true"],"cwd":"$tmp/missing","env":{}}}
!! no-orphans
"#;

#[tokio::test(flavor = "current_thread")]
async fn a_recording_on_ws_replays() {
    let started = Instant::now();
    let text = record_then_replay(WS_SCRIPT, TransportName::Ws).await;
    eprintln!("{text}recorded and replayed in {:?}", started.elapsed());
    for wanted in [
        "# spec: §6.1\n",
        "# transports: ws\n",
        "# requires: process.close_stdin, session.resume, fs\n",
        r#"<< {"id":1,"result":{"sessionId":"$sid"}}"#,
        r#"<< {"id":8,"result":{"sessionId":"$sid"}}"#,
        r#"<~ {"method":"process/exited","params":{"processId":"p1","exitCode":3,"sandboxDenied":false,"seq":{"$type":"integer"}}}"#,
        r#"!! read-until p1 stdout "hello\n${tmp}\n""#,
        r#"!! read-until p1 stderr "oops\n""#,
        r#"<< {"id":4,"result":{"dataBase64":{"$b64":"hi\n"}}}"#,
        r#""createdAtMs":{"$type":"integer"}"#,
        r#"<< {"id":6,"result":{"path":"$tmpPath/a.txt"}}"#,
        "!! disconnect\n!! wait 200ms\n!! reconnect\n",
        r#"!! read-until p2 stdout "got hi\n""#,
        r#"cannot use cwd ${tmp}/missing: "#,
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_recording_on_stdio_replays() {
    let script = r#"{"id":1,"method":"initialize","params":{"clientName":"recorder"}}
{"method":"initialized"}
{"id":2,"method":"process/start","params":{"processId":"p1","argv":["/bin/sh","-c","printf 'a\\nb\\n'; echo $0; sleep 0.3; echo late; sleep 600","$marker"],"cwd":"$tmpPath","env":{"PATH":"/usr/bin:/bin","XT_MARKER":"$marker"}}}
!! wait 600ms
{"id":3,"method":"environment/status"}
{"id":4,"method":"process/terminate","params":{"processId":"p1"}}
!! no-orphans
"#;
    let text = record_then_replay(script, TransportName::Stdio).await;
    assert!(text.contains("# transports: stdio\n"), "{text}");
    // The output is one read-until, where its last chunk had arrived: before the
    // requests that came after it, not where the process closed.
    assert!(
        text.contains(concat!(
            "!! wait 600ms\n",
            r#"!! read-until p1 stdout "a\nb\n${marker}\nlate\n""#,
            "\n>> {\"id\":3,"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            r#"<~ {"method":"process/exited","params":{"processId":"p1","exitCode":137,"#
        ),
        "{text}"
    );
}
