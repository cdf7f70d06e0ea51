//! The transcript language (`fixtures/transcripts/**/*.xt`, documented in
//! `fixtures/README.md`): headers, then one step per line. Parsing checks everything
//! that can be checked before a server runs (JSON, patterns, durations, that every
//! variable a `>>` line uses is bound by then, that every `<<` answers something sent);
//! an error names `file:line:column`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::pattern::{self, Pattern, PatternError};

/// Variables every case has before its first line.
pub const PREDEFINED: [&str; 3] = ["tmp", "tmpPath", "marker"];

/// A protocol revision a case applies to (PROTOCOL.md §0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Revision {
    /// `2026-06`.
    R2026_06,
    /// `2026-08`.
    R2026_08,
}

impl Revision {
    /// Both, oldest first.
    pub const ALL: [Revision; 2] = [Revision::R2026_06, Revision::R2026_08];

    /// `2026-06` or `2026-08`.
    pub fn parse(text: &str) -> Option<Revision> {
        match text {
            "2026-06" => Some(Revision::R2026_06),
            "2026-08" => Some(Revision::R2026_08),
            _ => None,
        }
    }

    /// As written in headers and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Revision::R2026_06 => "2026-06",
            Revision::R2026_08 => "2026-08",
        }
    }
}

/// A transport a case runs on; the first segment of a trial's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransportName {
    /// `ws`.
    Ws,
    /// `stdio`.
    Stdio,
}

impl TransportName {
    /// Both.
    pub const ALL: [TransportName; 2] = [TransportName::Ws, TransportName::Stdio];

    /// As written in headers and trial names.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportName::Ws => "ws",
            TransportName::Stdio => "stdio",
        }
    }
}

/// MUST (a failure fails the run) or SHOULD (a failure is NON-STRICT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `MUST`.
    Must,
    /// `SHOULD`.
    Should,
}

/// How long a case's waits may take: `normal` (5 s each) or `long` (60 s each), × the
/// time scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `normal`.
    Normal,
    /// `long`.
    Long,
}

/// A parsed transcript.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Where it came from (as shown in errors).
    pub file: String,
    /// `title:` (default: none).
    pub title: Option<String>,
    /// `spec:`, a section of docs/protocol.md (required).
    pub spec: String,
    /// `level:` (default MUST).
    pub level: Level,
    /// `requires:` features (default none).
    pub requires: Vec<String>,
    /// `transports:` (default both).
    pub transports: Vec<TransportName>,
    /// `revisions:` (default both).
    pub revisions: Vec<Revision>,
    /// `class:` (default normal).
    pub class: Class,
    /// The body.
    pub steps: Vec<Step>,
}

/// One body line.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line number.
    pub line: usize,
    /// What it does.
    pub kind: StepKind,
}

/// What a body line does.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// `>> {json}`: `jsonrpc` added if absent; variables substituted when sent.
    Send(Value),
    /// `<< {pattern}`: the response with this id must match.
    ExpectResponse {
        /// Which response.
        to: ResponseTo,
        /// The whole-message pattern.
        pattern: Pattern,
    },
    /// `<~ {pattern}`: the first unconsumed notification matching it.
    ExpectEvent(Pattern),
    /// `!! raw TEXT`: one text frame, or one line on stdio (TEXT may be empty).
    Raw(String),
    /// `!! raw-nonl TEXT` (stdio): TEXT with no newline after it.
    RawNoNewline(String),
    /// `!! binary TEXT` / `!! binary-hex HH …` (websocket): one binary frame.
    Binary(Vec<u8>),
    /// `!! http REQUEST => PATTERN` (websocket): one plain HTTP/1.1 request to the
    /// server's listener, its answer matched as `{"status": N, "body": "text"}`.
    Http(HttpStep),
    /// `!! disconnect`.
    Disconnect,
    /// `!! reset`.
    Reset,
    /// `!! reconnect`.
    Reconnect,
    /// `!! close-stdin`.
    CloseStdin,
    /// `!! expect-exit [code]`.
    ExpectExit(Option<i32>),
    /// `!! wait DURATION`.
    Wait(Duration),
    /// `!! wait-ttl N%` (N % of the TTL) or `!! wait-ttl +N%` / `-N%` (the TTL plus or
    /// minus N %): the TTL times this factor.
    WaitTtl(f64),
    /// `!! expect-quiet DURATION`.
    ExpectQuiet(Duration),
    /// `!! no-orphans`.
    NoOrphans,
    /// `!! read-until PROCESS [STREAM] "text"`: `process/output` of PROCESS (a
    /// `$variable` or a literal id), of any stream or only of STREAM (`stdout`,
    /// `stderr`, `pty`), until the text has appeared.
    ReadUntil {
        /// `$name` or a literal process id.
        process: String,
        /// Only this stream's output, when given.
        stream: Option<String>,
        /// What the concatenated output must contain.
        text: String,
    },
}

impl StepKind {
    /// The one transport this step can run on, if it is specific to one.
    pub fn needs_transport(&self) -> Option<TransportName> {
        match self {
            StepKind::Http(_) | StepKind::Binary(_) | StepKind::Reset | StepKind::Reconnect => {
                Some(TransportName::Ws)
            }
            StepKind::CloseStdin | StepKind::RawNoNewline(_) => Some(TransportName::Stdio),
            _ => None,
        }
    }
}

/// Which response a `<<` line waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseTo {
    /// The response to the request with this id (a string or an integer), on whichever
    /// connection sent it.
    Id(Value),
    /// The oldest response, on the current connection, whose id is `null` or none this
    /// case sent: the answer to a frame the server could not read. Written with an id
    /// of `null` or a pattern such as `{"$oneOf": [null, -1]}`.
    Unidentified,
}

/// One plain HTTP/1.1 request (`!! http`).
#[derive(Debug, Clone)]
pub struct HttpStep {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target, e.g. `/readyz`.
    pub path: String,
    /// Extra headers; a `Host` here replaces the server's own address.
    pub headers: Vec<(String, String)>,
    /// Add the headers of a valid websocket upgrade.
    pub upgrade: bool,
    /// Matched against `{"status": N, "body": "text"}`.
    pub pattern: Pattern,
}

/// A transcript that cannot be run, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

pub(crate) const HEADER_KEYS: [&str; 7] = [
    "title",
    "spec",
    "level",
    "requires",
    "transports",
    "revisions",
    "class",
];

/// The features a case may require (`requires:`); what declares each is in
/// `fixtures/README.md`.
pub const FEATURES: [&str; 9] = [
    "process.tty",
    "process.resize",
    "process.close_stdin",
    "process.first_retained_seq",
    "process.retention",
    "session.resume",
    "session.ttl",
    "fs",
    "fs.root",
];

/// The output streams of `process/output` (§6.2), as `!! read-until` names them.
const STREAMS: [&str; 3] = ["stdout", "stderr", "pty"];

/// The sections of docs/protocol.md a `spec:` header may cite: `§2.1` for a heading
/// `### 2.1 WebSocket`, `§7` for `## 7. File system`.
pub fn protocol_sections(protocol: &str) -> BTreeSet<String> {
    protocol
        .lines()
        .filter(|line| line.starts_with("## ") || line.starts_with("### "))
        .filter_map(|line| line.trim_start_matches('#').split_whitespace().next())
        .map(|number| format!("§{}", number.trim_end_matches('.')))
        .collect()
}

/// The feature a case must require to use `!! wait-ttl` (the runner then starts its
/// server with a short TTL).
pub const TTL_FEATURE: &str = "session.ttl";

struct Parser<'a> {
    file: &'a str,
    line: usize,
}

impl Parser<'_> {
    /// An error at a byte offset of the current line.
    fn error(&self, text: &str, byte: usize, message: impl Into<String>) -> ParseError {
        let byte = byte.min(text.len());
        let column = text
            .get(..byte)
            .map_or(byte, |prefix| prefix.chars().count())
            + 1;
        ParseError {
            file: self.file.to_owned(),
            line: self.line,
            column,
            message: message.into(),
        }
    }
}

/// Parses a transcript. `file` is only used in error messages.
pub fn parse(file: &str, source: &str) -> Result<Transcript, ParseError> {
    let mut parser = Parser { file, line: 0 };
    let mut headers: Vec<(String, String, usize, usize)> = Vec::new();
    let mut steps = Vec::new();
    let mut in_header = true;
    // Ids sent so far, variables bound so far, whether a raw frame was sent.
    let mut sent_ids: Vec<Value> = Vec::new();
    let mut bound: BTreeSet<String> = PREDEFINED.iter().map(|s| s.to_string()).collect();
    let mut raw_sent = false;
    for (index, text) in source.lines().enumerate() {
        parser.line = index + 1;
        let trimmed = text.trim_start();
        let indent = text.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some((key, value)) = header_line(comment) {
                let key_at = indent + 1 + (comment.len() - comment.trim_start().len());
                if !in_header {
                    if HEADER_KEYS.contains(&key) {
                        return Err(parser.error(
                            text,
                            key_at,
                            format!("header `{key}:` after the first step; headers go at the top"),
                        ));
                    }
                    continue;
                }
                if !HEADER_KEYS.contains(&key) {
                    return Err(parser.error(
                        text,
                        key_at,
                        format!(
                            "unknown header `{key}:` (known: {})",
                            HEADER_KEYS.join(", ")
                        ),
                    ));
                }
                if headers.iter().any(|(k, ..)| k == key) {
                    return Err(parser.error(text, key_at, format!("duplicate header `{key}:`")));
                }
                let value_at = text.len() - value.len();
                headers.push((key.to_owned(), value.to_owned(), parser.line, value_at));
            }
            continue;
        }
        in_header = false;
        // `get` rather than `split_at`: the first two bytes may split a character.
        let op = trimmed.get(..2).unwrap_or(trimmed);
        let rest = &trimmed[op.len()..];
        let rest = rest.trim();
        let rest_at = match rest.is_empty() {
            true => text.trim_end().len(),
            false => offset(text, rest),
        };
        let kind = match op {
            ">>" => {
                let value = parse_json(&parser, text, rest_at, rest)?;
                let Value::Object(mut object) = value else {
                    return Err(parser.error(
                        text,
                        rest_at,
                        ">> sends a JSON object; use `!! raw` for anything else",
                    ));
                };
                let mut used = Vec::new();
                pattern::referenced(&Value::Object(object.clone()), &mut used);
                if let Some(name) = used.iter().find(|name| !bound.contains(*name)) {
                    let at = find_token(text, &format!("${name}")).unwrap_or(rest_at);
                    return Err(parser.error(
                        text,
                        at,
                        format!(
                            "${name} is not bound here (bind it in an earlier << or <~ pattern)"
                        ),
                    ));
                }
                if let Err(err) = check_substitutable(&Value::Object(object.clone())) {
                    return Err(pattern_error(&parser, text, rest_at, err));
                }
                if let Some(id) = object.get("id") {
                    sent_ids.push(id.clone());
                }
                object
                    .entry("jsonrpc")
                    .or_insert_with(|| Value::String("2.0".into()));
                StepKind::Send(Value::Object(object))
            }
            "<<" => {
                let value = parse_json(&parser, text, rest_at, rest)?;
                let Some(id) = value.as_object().and_then(|o| o.get("id")).cloned() else {
                    return Err(parser.error(
                        text,
                        rest_at,
                        "<< needs an object pattern with the response's \"id\"",
                    ));
                };
                if let Some(literal) = id.as_str().filter(|literal| {
                    *literal == "*" || literal.contains('$') || literal.starts_with("~/")
                }) {
                    return Err(parser.error(
                        text,
                        find_token(text, "\"id\"").unwrap_or(rest_at),
                        format!("the id of << is literal; {literal:?} would be read as a pattern"),
                    ));
                }
                let to = match &id {
                    Value::String(_) | Value::Number(_) if id.is_string() || id.is_i64() || id.is_u64() => {
                        ResponseTo::Id(id.clone())
                    }
                    Value::Null | Value::Object(_) => ResponseTo::Unidentified,
                    _ => {
                        return Err(parser.error(
                            text,
                            find_token(text, "\"id\"").unwrap_or(rest_at),
                            "the id of << is a string, an integer, null, or a pattern such as {\"$oneOf\": [null, -1]}",
                        ))
                    }
                };
                if matches!(to, ResponseTo::Id(_)) && !raw_sent && !sent_ids.contains(&id) {
                    return Err(parser.error(
                        text,
                        find_token(text, "\"id\"").unwrap_or(rest_at),
                        format!("<< expects a response to id {id}, but no earlier >> sent it"),
                    ));
                }
                let pattern = compile_binding(&parser, text, rest_at, &value, &mut bound)?;
                StepKind::ExpectResponse { to, pattern }
            }
            "<~" => {
                let value = parse_json(&parser, text, rest_at, rest)?;
                if !value.is_object() {
                    return Err(parser.error(
                        text,
                        rest_at,
                        "<~ needs an object pattern (e.g. {\"method\": \"process/exited\"})",
                    ));
                }
                let pattern = compile_binding(&parser, text, rest_at, &value, &mut bound)?;
                StepKind::ExpectEvent(pattern)
            }
            "!!" => {
                let kind = parse_command(&parser, text, rest_at, rest, &bound)?;
                if matches!(
                    kind,
                    StepKind::Raw(_) | StepKind::RawNoNewline(_) | StepKind::Binary(_)
                ) {
                    raw_sent = true;
                }
                kind
            }
            _ => {
                return Err(parser.error(
                    text,
                    indent,
                    "expected a step (`>>`, `<<`, `<~`, `!!`), a `#` comment or a blank line",
                ));
            }
        };
        steps.push(Step {
            line: parser.line,
            kind,
        });
    }
    let transcript = build(file, headers, steps, &mut parser, source)?;
    Ok(transcript)
}

/// Parses one `!! …` line on its own (the recorder's scripts): `text` is the whole
/// line, `line` its number in `file`, `bound` the variables bound before it. The
/// checks that need the whole transcript (headers, transports) are the caller's.
pub(crate) fn parse_command_line(
    file: &str,
    line: usize,
    text: &str,
    bound: &BTreeSet<String>,
) -> Result<StepKind, ParseError> {
    let parser = Parser { file, line };
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix("!!") else {
        return Err(parser.error(text, 0, "expected a `!!` command"));
    };
    let rest = rest.trim();
    let rest_at = match rest.is_empty() {
        true => text.trim_end().len(),
        false => offset(text, rest),
    };
    parse_command(&parser, text, rest_at, rest, bound)
}

/// `key: value` of a `#` line, if it has that shape (key: lowercase letters and `-`).
pub(crate) fn header_line(comment: &str) -> Option<(&str, &str)> {
    let comment = comment.trim_start();
    let (key, value) = comment.split_once(':')?;
    let well_formed = !key.is_empty()
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    well_formed.then(|| (key, value.trim()))
}

/// Byte offset of `sub`, a subslice of `text`.
fn offset(text: &str, sub: &str) -> usize {
    (sub.as_ptr() as usize)
        .saturating_sub(text.as_ptr() as usize)
        .min(text.len())
}

fn find_token(text: &str, token: &str) -> Option<usize> {
    text.find(token)
}

fn pattern_error(parser: &Parser, text: &str, fallback: usize, err: PatternError) -> ParseError {
    let at = err
        .token
        .as_deref()
        .and_then(|token| find_token(text, token))
        .unwrap_or(fallback);
    parser.error(text, at, err.message)
}

pub(crate) fn check_substitutable(value: &Value) -> Result<(), PatternError> {
    // Substitution with every referenced name bound to a string finds malformed `$`s.
    let mut names = Vec::new();
    pattern::referenced(value, &mut names);
    let bindings = names
        .into_iter()
        .map(|name| (name, Value::String(String::new())))
        .collect();
    pattern::substitute(value, &bindings).map(|_| ())
}

fn parse_json(parser: &Parser, text: &str, at: usize, json: &str) -> Result<Value, ParseError> {
    if json.is_empty() {
        return Err(parser.error(text, at, "expected JSON after the marker"));
    }
    serde_json::from_str(json).map_err(|err| {
        // The JSON is one line: its column counts characters from `at`.
        let byte_in_json = json
            .char_indices()
            .nth(err.column().saturating_sub(1))
            .map_or(json.len(), |(i, _)| i);
        parser.error(text, at + byte_in_json, format!("invalid JSON: {err}"))
    })
}

/// `200ms`, `2s`, `1.5s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 0.001),
        None => (text.strip_suffix('s')?, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * unit)
        .ok()
        .filter(|duration| *duration <= MAX_DURATION)
}

/// The longest wait a transcript may write (scaled waits stay far from overflowing).
const MAX_DURATION: Duration = Duration::from_secs(3600);

fn parse_command(
    parser: &Parser,
    text: &str,
    at: usize,
    rest: &str,
    bound: &BTreeSet<String>,
) -> Result<StepKind, ParseError> {
    let (word, argument) = match rest.split_once(char::is_whitespace) {
        Some((word, argument)) => (word, argument.trim()),
        None => (rest, ""),
    };
    let arg_at = match argument.is_empty() {
        true => text.trim_end().len(),
        false => offset(text, argument),
    };
    let no_argument = |kind: StepKind| match argument.is_empty() {
        true => Ok(kind),
        false => Err(parser.error(text, arg_at, format!("`!! {word}` takes no argument"))),
    };
    let duration = || {
        parse_duration(argument).ok_or_else(|| {
            parser.error(
                text,
                arg_at,
                format!("`!! {word}` needs a duration such as 200ms or 2s, got {argument:?}"),
            )
        })
    };
    match word {
        "raw" | "raw-nonl" | "binary" => {
            // Verbatim: everything after the word and one space (only the line's end is
            // trimmed), so `!! raw ` sends an empty line.
            let after_word = &text[offset(text, rest) + word.len()..];
            let verbatim = after_word.trim_end_matches(['\r', '\n']);
            let verbatim = verbatim.strip_prefix(' ').unwrap_or(verbatim).to_owned();
            Ok(match word {
                "raw" => StepKind::Raw(verbatim),
                "raw-nonl" => StepKind::RawNoNewline(verbatim),
                _ => StepKind::Binary(verbatim.into_bytes()),
            })
        }
        "binary-hex" => {
            let mut bytes = Vec::new();
            for pair in argument.split_whitespace() {
                match u8::from_str_radix(pair, 16) {
                    Ok(byte) if pair.len() == 2 => bytes.push(byte),
                    _ => {
                        return Err(parser.error(
                            text,
                            find_token(text, pair).unwrap_or(arg_at),
                            format!("`!! binary-hex` takes bytes as two hex digits each, got {pair:?}"),
                        ))
                    }
                }
            }
            if bytes.is_empty() {
                return Err(parser.error(text, arg_at, "`!! binary-hex` needs at least one byte"));
            }
            Ok(StepKind::Binary(bytes))
        }
        "http" => parse_http(parser, text, arg_at, argument, bound).map(StepKind::Http),
        "disconnect" => no_argument(StepKind::Disconnect),
        "reset" => no_argument(StepKind::Reset),
        "reconnect" => no_argument(StepKind::Reconnect),
        "close-stdin" => no_argument(StepKind::CloseStdin),
        "no-orphans" => no_argument(StepKind::NoOrphans),
        "expect-exit" => match argument {
            "" => Ok(StepKind::ExpectExit(None)),
            code => code.parse().map(|c| StepKind::ExpectExit(Some(c))).map_err(|_| {
                parser.error(text, arg_at, format!("exit code must be an integer, got {code:?}"))
            }),
        },
        "wait" => Ok(StepKind::Wait(duration()?)),
        "expect-quiet" => Ok(StepKind::ExpectQuiet(duration()?)),
        "wait-ttl" => {
            let factor = argument
                .strip_suffix('%')
                .and_then(|number| {
                    let relative = number.starts_with(['+', '-']);
                    let value = number.parse::<f64>().ok()?;
                    Some(match relative {
                        true => 1.0 + value / 100.0,
                        false => value / 100.0,
                    })
                })
                .filter(|factor| factor.is_finite() && *factor > 0.0 && *factor <= 100.0);
            factor.map(StepKind::WaitTtl).ok_or_else(|| {
                parser.error(
                    text,
                    arg_at,
                    format!(
                        "`!! wait-ttl` takes N% of the TTL (30%, 250%) or the TTL +N% / -N%, got {argument:?}"
                    ),
                )
            })
        }
        "read-until" => {
            let Some((process, rest)) = argument.split_once(char::is_whitespace) else {
                return Err(parser.error(
                    text,
                    arg_at,
                    "`!! read-until` takes a process ($name or id), optionally a stream, and a JSON string",
                ));
            };
            // An optional stream between the process and the text (which is quoted).
            let rest = rest.trim_start();
            let (stream, quoted_text) = match rest.starts_with('"') {
                true => (None, rest),
                false => {
                    let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                    if !STREAMS.contains(&word) {
                        return Err(parser.error(
                            text,
                            offset(text, rest),
                            format!(
                                "`!! read-until` takes a stream ({}) or the quoted text after the process, got {word:?}",
                                STREAMS.join(", ")
                            ),
                        ));
                    }
                    (Some(word.to_owned()), after)
                }
            };
            if let Some(name) = process.strip_prefix('$') {
                if !bound.contains(name) {
                    return Err(parser.error(
                        text,
                        arg_at,
                        format!("${name} is not bound here (bind it in an earlier << or <~ pattern)"),
                    ));
                }
            }
            let text_at = text.len() - quoted_text.trim_start().len();
            match serde_json::from_str::<Value>(quoted_text.trim()) {
                Ok(Value::String(wanted)) if !wanted.is_empty() => {
                    let template = Pattern::compile(&Value::String(wanted.clone()))
                        .map_err(|err| pattern_error(parser, text, text_at, err))?;
                    check_references(parser, text, text_at, &template, bound)?;
                    Ok(StepKind::ReadUntil {
                        process: process.to_owned(),
                        stream,
                        text: wanted,
                    })
                }
                _ => Err(parser.error(
                    text,
                    text_at,
                    "`!! read-until` needs a non-empty JSON string, e.g. \"ready\\n\"",
                )),
            }
        }
        other => Err(parser.error(
            text,
            at,
            format!(
                "unknown command `!! {other}` (known: raw, raw-nonl, binary, binary-hex, http, disconnect, reset, reconnect, close-stdin, expect-exit, wait, wait-ttl, expect-quiet, no-orphans, read-until)"
            ),
        )),
    }
}

/// `{"method":"GET","path":"/readyz","headers":{…},"upgrade":true} => {"status":200}`.
fn parse_http(
    parser: &Parser,
    text: &str,
    at: usize,
    argument: &str,
    bound: &BTreeSet<String>,
) -> Result<HttpStep, ParseError> {
    let Some((request, pattern)) = argument.split_once(" => ") else {
        return Err(parser.error(
            text,
            at,
            "`!! http` takes a request and a pattern: {\"method\":\"GET\",\"path\":\"/readyz\"} => {\"status\":200}",
        ));
    };
    let pattern_at = offset(text, pattern.trim_start());
    let request_value = parse_json(parser, text, at, request.trim())?;
    let bad = |message: &str| Err(parser.error(text, at, message.to_owned()));
    let Value::Object(fields) = request_value else {
        return bad("the request of `!! http` is an object");
    };
    if let Some(unknown) = fields
        .keys()
        .find(|key| !["method", "path", "headers", "upgrade"].contains(&key.as_str()))
    {
        return Err(parser.error(
            text,
            find_token(text, &format!("\"{unknown}\"")).unwrap_or(at),
            format!("unknown request field {unknown:?} (method, path, headers, upgrade)"),
        ));
    }
    let (Some(Value::String(method)), Some(Value::String(path))) =
        (fields.get("method"), fields.get("path"))
    else {
        return bad("the request of `!! http` needs string fields \"method\" and \"path\"");
    };
    let mut headers = Vec::new();
    match fields.get("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let Value::String(value) = value else {
                    return bad("header values are strings");
                };
                headers.push((name.clone(), value.clone()));
            }
        }
        Some(_) => return bad("\"headers\" is an object of strings"),
    }
    let upgrade = match fields.get("upgrade") {
        None => false,
        Some(Value::Bool(upgrade)) => *upgrade,
        Some(_) => return bad("\"upgrade\" is true or false"),
    };
    let pattern_value = parse_json(parser, text, pattern_at, pattern.trim())?;
    if !pattern_value.is_object() {
        return Err(parser.error(text, pattern_at, "the pattern of `!! http` is an object"));
    }
    let pattern = Pattern::compile(&pattern_value)
        .map_err(|err| pattern_error(parser, text, pattern_at, err))?;
    check_references(parser, text, pattern_at, &pattern, bound)?;
    Ok(HttpStep {
        method: method.clone(),
        path: path.clone(),
        headers,
        upgrade,
        pattern,
    })
}

/// Compiles a `<<` or `<~` pattern: the names it uses must be bound already, and the
/// names it binds are bound from here on.
fn compile_binding(
    parser: &Parser,
    text: &str,
    at: usize,
    value: &Value,
    bound: &mut BTreeSet<String>,
) -> Result<Pattern, ParseError> {
    let pattern = Pattern::compile(value).map_err(|err| pattern_error(parser, text, at, err))?;
    check_references(parser, text, at, &pattern, bound)?;
    let mut names = Vec::new();
    pattern.variables(&mut names);
    bound.extend(names);
    Ok(pattern)
}

/// Every `${name}` a pattern uses must be bound by an earlier line.
fn check_references(
    parser: &Parser,
    text: &str,
    at: usize,
    pattern: &Pattern,
    bound: &BTreeSet<String>,
) -> Result<(), ParseError> {
    let mut used = Vec::new();
    pattern.references(&mut used);
    match used.iter().find(|name| !bound.contains(*name)) {
        None => Ok(()),
        Some(name) => Err(parser.error(
            text,
            find_token(text, &format!("${{{name}}}")).unwrap_or(at),
            format!("${{{name}}} is not bound here (bind it in an earlier << or <~ pattern)"),
        )),
    }
}

fn build(
    file: &str,
    headers: Vec<(String, String, usize, usize)>,
    steps: Vec<Step>,
    parser: &mut Parser,
    source: &str,
) -> Result<Transcript, ParseError> {
    let lines: Vec<&str> = source.lines().collect();
    let mut transcript = Transcript {
        file: file.to_owned(),
        title: None,
        spec: String::new(),
        level: Level::Must,
        requires: Vec::new(),
        transports: TransportName::ALL.to_vec(),
        revisions: Revision::ALL.to_vec(),
        class: Class::Normal,
        steps,
    };
    for (key, value, line, at) in &headers {
        parser.line = *line;
        let text = lines[line - 1];
        let bad = |message: String| Err(parser.error(text, *at, message));
        let items: Vec<&str> = value
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let is_list = matches!(key.as_str(), "requires" | "transports" | "revisions");
        if let Some(repeated) = items
            .iter()
            .enumerate()
            .find_map(|(index, item)| items[..index].contains(item).then_some(item))
            .filter(|_| is_list)
        {
            return bad(format!("{repeated:?} is listed twice"));
        }
        let list = || items.clone();
        match key.as_str() {
            "title" => transcript.title = Some(value.clone()),
            "spec" => {
                let section = value.strip_prefix('§').unwrap_or("");
                let numbered = !section.is_empty()
                    && section
                        .split('.')
                        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !numbered {
                    return bad(format!(
                        "spec is a docs/protocol.md section number such as §6.2, got {value:?}"
                    ));
                }
                transcript.spec = value.clone()
            }
            "level" => {
                transcript.level = match value.as_str() {
                    "MUST" => Level::Must,
                    "SHOULD" => Level::Should,
                    other => return bad(format!("level is MUST or SHOULD, got {other:?}")),
                }
            }
            "class" => {
                transcript.class = match value.as_str() {
                    "normal" => Class::Normal,
                    "long" => Class::Long,
                    other => return bad(format!("class is normal or long, got {other:?}")),
                }
            }
            "requires" => {
                let features = list();
                if let Some(unknown) = features.iter().find(|f| !FEATURES.contains(f)) {
                    return bad(format!(
                        "unknown feature {unknown:?} (known: {})",
                        FEATURES.join(", ")
                    ));
                }
                transcript.requires = features.into_iter().map(str::to_owned).collect();
            }
            "transports" => {
                let mut chosen = Vec::new();
                for name in list() {
                    match TransportName::ALL.into_iter().find(|t| t.as_str() == name) {
                        Some(t) => chosen.push(t),
                        None => return bad(format!("unknown transport {name:?} (ws, stdio)")),
                    }
                }
                if chosen.is_empty() {
                    return bad("transports lists none".into());
                }
                transcript.transports = chosen;
            }
            "revisions" => {
                let mut chosen = Vec::new();
                for name in list() {
                    match Revision::parse(name) {
                        Some(r) => chosen.push(r),
                        None => {
                            return bad(format!("unknown revision {name:?} (2026-06, 2026-08)"))
                        }
                    }
                }
                if chosen.is_empty() {
                    return bad("revisions lists none".into());
                }
                transcript.revisions = chosen;
            }
            _ => unreachable!("header keys are checked while reading"),
        }
    }
    let whole_file = |message: &str| ParseError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message: message.to_owned(),
    };
    if transcript.spec.is_empty() {
        return Err(whole_file(
            "missing header `# spec: §N` (the docs/protocol.md section this case grades)",
        ));
    }
    if transcript.steps.is_empty() {
        return Err(whole_file("no steps: a transcript must do something"));
    }
    for step in &transcript.steps {
        let misplaced = match step.kind.needs_transport() {
            Some(needed) => transcript.transports.iter().any(|t| *t != needed),
            None => false,
        };
        let needs_ttl = matches!(step.kind, StepKind::WaitTtl(_))
            && !transcript.requires.iter().any(|f| f == TTL_FEATURE);
        if !misplaced && !needs_ttl {
            continue;
        }
        parser.line = step.line;
        let text = lines[step.line - 1];
        let at = text.len() - text.trim_start().len();
        let message = match step.kind.needs_transport() {
            Some(needed) if misplaced => format!(
                "this step runs only on {0}: add `# transports: {0}`",
                needed.as_str()
            ),
            _ => format!("`!! wait-ttl` needs `# requires: {TTL_FEATURE}` (the runner then sets a short TTL)"),
        };
        return Err(parser.error(text, at, message));
    }
    Ok(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(source: &str) -> String {
        parse("case.xt", source).unwrap_err().to_string()
    }

    const HEAD: &str = "# spec: §4\n";

    #[test]
    fn a_good_transcript() {
        let t = parse(
            "ok.xt",
            "# title: handshake\n# spec: §4\n# level: SHOULD\n# transports: ws\n# revisions: 2026-08\n# requires: session.resume, fs, session.ttl\n\n>> {\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"x\"}}\n<< {\"id\":1,\"result\":{\"sessionId\":\"$sid\"}}\n# a comment\n>> {\"method\":\"initialized\",\"params\":{\"s\":\"$sid\"}}\n!! wait 10ms\n!! wait-ttl +50%\n!! expect-quiet 1.5s\n!! raw {not json\n<~ {\"method\":\"process/exited\"}\n!! read-until $sid \"hi\\n\"\n!! expect-exit 0\n",
        )
        .unwrap();
        assert_eq!(t.title.as_deref(), Some("handshake"));
        assert_eq!(t.level, Level::Should);
        assert_eq!(t.transports, [TransportName::Ws]);
        assert_eq!(t.revisions, [Revision::R2026_08]);
        assert_eq!(t.requires, ["session.resume", "fs", "session.ttl"]);
        assert_eq!(t.steps.len(), 10);
        let StepKind::Send(first) = &t.steps[0].kind else {
            panic!()
        };
        assert_eq!(first["jsonrpc"], "2.0");
        assert_eq!(t.steps[0].line, 8);
        assert!(matches!(&t.steps[6].kind, StepKind::Raw(raw) if raw == "{not json"));
        assert!(matches!(t.steps[4].kind, StepKind::WaitTtl(f) if (f - 1.5).abs() < 1e-9));
        assert!(matches!(t.steps[9].kind, StepKind::ExpectExit(Some(0))));
    }

    #[test]
    fn transport_specific_steps() {
        let t = parse(
            "ws.xt",
            "# spec: §2\n# transports: ws\n!! raw \n!! binary {\"a\": 1}\n!! binary-hex ff fe 7b\n!! http {\"method\":\"GET\",\"path\":\"/\",\"upgrade\":true,\"headers\":{\"Origin\":\"null\"}} => {\"status\":403}\n",
        )
        .unwrap();
        assert!(matches!(&t.steps[0].kind, StepKind::Raw(raw) if raw.is_empty()));
        assert!(matches!(&t.steps[1].kind, StepKind::Binary(b) if b == b"{\"a\": 1}"));
        assert!(matches!(&t.steps[2].kind, StepKind::Binary(b) if b == &[0xff, 0xfe, 0x7b]));
        let StepKind::Http(http) = &t.steps[3].kind else {
            panic!("{:?}", t.steps[3])
        };
        assert_eq!((http.method.as_str(), http.path.as_str()), ("GET", "/"));
        assert!(http.upgrade);
        assert_eq!(http.headers, [("Origin".to_owned(), "null".to_owned())]);
        let t = parse("s.xt", "# spec: §2\n# transports: stdio\n!! raw-nonl {}\n").unwrap();
        assert!(matches!(&t.steps[0].kind, StepKind::RawNoNewline(raw) if raw == "{}"));
        let t = parse(
            "t.xt",
            "# spec: §5\n# requires: session.ttl\n!! wait-ttl 30%\n!! wait-ttl -10%\n",
        )
        .unwrap();
        assert!(matches!(t.steps[0].kind, StepKind::WaitTtl(f) if (f - 0.3).abs() < 1e-9));
        assert!(matches!(t.steps[1].kind, StepKind::WaitTtl(f) if (f - 0.9).abs() < 1e-9));
    }

    #[test]
    fn read_until_with_a_stream() {
        let t = parse(
            "r.xt",
            "# spec: §6.2\n!! read-until p1 \"a\"\n!! read-until p1 stderr \"b ${tmp}\"\n",
        )
        .unwrap();
        assert!(
            matches!(&t.steps[0].kind, StepKind::ReadUntil { process, stream: None, text } if process == "p1" && text == "a")
        );
        assert!(
            matches!(&t.steps[1].kind, StepKind::ReadUntil { stream: Some(s), text, .. } if s == "stderr" && text == "b ${tmp}")
        );
        let e = error(&format!("{HEAD}!! read-until p1 stdin \"x\"\n"));
        assert!(
            e.starts_with("case.xt:2:18: `!! read-until` takes a stream (stdout, stderr, pty)"),
            "{e}"
        );
        let e = error(&format!("{HEAD}!! read-until p1 stdout\n"));
        assert!(e.contains("needs a non-empty JSON string"), "{e}");
    }

    #[test]
    fn one_command_line_on_its_own() {
        let bound: BTreeSet<String> = PREDEFINED.iter().map(|s| s.to_string()).collect();
        let kind = parse_command_line("script", 3, "!! wait 20ms", &bound).unwrap();
        assert!(matches!(kind, StepKind::Wait(d) if d == Duration::from_millis(20)));
        let e = parse_command_line("script", 7, "!! explode", &bound).unwrap_err();
        assert!(
            e.to_string().starts_with("script:7:4: unknown command"),
            "{e}"
        );
        let e = parse_command_line("script", 2, "!! read-until $p \"x\"", &bound).unwrap_err();
        assert!(e.to_string().contains("$p is not bound"), "{e}");
    }

    #[test]
    fn sections_of_the_protocol() {
        let sections = protocol_sections("# t\n## 4. Handshake\n### 6.1 process/start\ntext\n");
        assert_eq!(sections.into_iter().collect::<Vec<_>>(), ["§4", "§6.1"]);
    }

    #[test]
    fn invalid_json_points_at_the_column() {
        let e = error(&format!("{HEAD}>> {{\"id\":1,\"method\":}}\n"));
        assert!(e.starts_with("case.xt:2:21: invalid JSON"), "{e}");
    }

    #[test]
    fn bad_regex_points_at_its_token() {
        let e = error(&format!(
            "{HEAD}>> {{\"id\":1,\"method\":\"m\"}}\n<< {{\"id\":1,\"error\":{{\"message\":\"~/(/\"}}}}\n"
        ));
        assert!(e.starts_with("case.xt:3:31: bad regex"), "{e}");
    }

    #[test]
    fn unbound_variable_in_a_send() {
        let e = error(&format!(
            "{HEAD}>> {{\"id\":1,\"method\":\"m\",\"params\":\"$sid\"}}\n"
        ));
        assert!(e.starts_with("case.xt:2:35: $sid is not bound"), "{e}");
    }

    #[test]
    fn response_to_nothing_sent() {
        let e = error(&format!(
            "{HEAD}>> {{\"id\":1,\"method\":\"m\"}}\n<< {{\"id\":2}}\n"
        ));
        assert!(
            e.starts_with("case.xt:3:5: << expects a response to id 2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_things() {
        // (transcript, the error it gives: a prefix, or `~` and a part of it)
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{HEAD}!! explode\n"),
                "case.xt:2:4: unknown command",
            ),
            (
                "# spce: §4\n!! wait 1s\n".to_owned(),
                "case.xt:1:3: unknown header `spce:`",
            ),
            (format!("{HEAD}?? hi\n"), "case.xt:2:1: expected a step"),
            (
                format!("{HEAD}  !! wait 10\n"),
                "case.xt:2:11: `!! wait` needs a duration",
            ),
            (
                format!("{HEAD}!! disconnect now\n"),
                "case.xt:2:15: `!! disconnect` takes no argument",
            ),
            (
                "# spec: §4\n# level: MAY\n!! wait 1s\n".to_owned(),
                "case.xt:2:10: level is MUST or SHOULD",
            ),
            (
                "# spec: §4\n# transports: tcp\n!! wait 1s\n".to_owned(),
                "case.xt:2:15: unknown transport",
            ),
            (
                "# spec: §4\n# revisions: 2026-07\n!! wait 1s\n".to_owned(),
                "case.xt:2:14: unknown revision",
            ),
            (
                "# spec: §4\n# spec: §5\n!! wait 1s\n".to_owned(),
                "case.xt:2:3: duplicate header",
            ),
            (
                "# spec: §4\n!! wait 1s\n# level: MUST\n".to_owned(),
                "case.xt:3:3: header `level:` after",
            ),
            (
                "!! wait 1s\n".to_owned(),
                "case.xt:1:1: missing header `# spec:",
            ),
            (
                "# spec: §7.1 (environment)\n!! wait 1s\n".to_owned(),
                "case.xt:1:9: spec is a docs/protocol.md section number",
            ),
            (
                "# spec: §7.\n!! wait 1s\n".to_owned(),
                "case.xt:1:9: spec is a docs/protocol.md section number",
            ),
            (HEAD.to_owned(), "case.xt:1:1: no steps"),
            (
                "# spec: §4\n# transports: ws, ws\n!! wait 1s\n".to_owned(),
                "case.xt:2:15: \"ws\" is listed twice",
            ),
            (
                format!("{HEAD}!! raw x\n<< {{\"id\":\"*\"}}\n"),
                "case.xt:3:5: the id of << is literal",
            ),
            (
                format!("{HEAD}!! wait 1e30s\n"),
                "case.xt:2:9: `!! wait` needs a duration",
            ),
            (
                format!("{HEAD}!! wait-ttl +50%\n"),
                "case.xt:2:1: `!! wait-ttl` needs `# requires: session.ttl`",
            ),
            (
                format!("{HEAD}# requires: session.ttl\n!! wait-ttl 0%\n"),
                "~`!! wait-ttl` takes N%",
            ),
            (
                format!(
                    "{HEAD}!! http {{\"method\":\"GET\",\"path\":\"/\"}} => {{\"status\":200}}\n"
                ),
                "case.xt:2:1: this step runs only on ws: add `# transports: ws`",
            ),
            (
                format!("{HEAD}# transports: stdio\n!! reconnect\n"),
                "case.xt:3:1: this step runs only on ws",
            ),
            (
                format!("{HEAD}# transports: ws\n!! close-stdin\n"),
                "case.xt:3:1: this step runs only on stdio",
            ),
            (
                format!("{HEAD}# transports: ws\n!! binary-hex ff 0\n"),
                "case.xt:3:18: `!! binary-hex` takes bytes",
            ),
            (
                format!("{HEAD}# transports: ws\n!! http {{\"method\":\"GET\"}} => {{}}\n"),
                "~needs string fields",
            ),
            (
                format!("{HEAD}<~ {{\"params\":\"a${{nope}}\"}}\n"),
                "case.xt:2:16: ${nope} is not bound",
            ),
            (
                format!("{HEAD}>> [1]\n"),
                "case.xt:2:4: >> sends a JSON object",
            ),
            (
                format!("{HEAD}!! read-until $p \"x\"\n"),
                "case.xt:2:15: $p is not bound",
            ),
        ];
        for (source, expected) in cases {
            let got = error(&source);
            let holds = match expected.strip_prefix('~') {
                Some(part) => got.contains(part),
                None => got.starts_with(expected),
            };
            assert!(holds, "{source:?}: got {got:?}, expected {expected:?}");
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = error("# spec: §4\n# title: é\n>> {\"a\": é}\n");
        assert!(e.starts_with("case.xt:3:10: invalid JSON"), "{e}");
    }

    #[test]
    fn a_multibyte_start_is_an_error_not_a_panic() {
        assert!(error("# spec: §4\naé\n").starts_with("case.xt:2:1: expected a step"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("inf s"), None);
        assert_eq!(parse_duration("1e30s"), None, "no panic, no overflow");
        assert_eq!(parse_duration("3601s"), None);
    }
}
