//! Property tests of the JSON-RPC envelope on the real binary (docs/protocol.md §3):
//! arbitrary bytes, arbitrary strings, arbitrary JSON values and near-miss JSON-RPC
//! objects, sent as websocket text and binary frames and as stdio lines, never crash the
//! server, and each one gets exactly the answer the §3 table gives (or none, for a client
//! notification or response). Every server output must be a JSON-RPC message.
//!
//! The expected answers come from an oracle written from the table, not from
//! `rpc::classify`. One server per property run; after every case a probe request on the
//! same connection must still be answered, and the number of frames received since the
//! case began must be exactly the expected errors plus the probe's answer.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use exec_server_harness::protocol::{Method, RequestId};
use exec_server_harness::{Connection, Direction, HarnessError, Response, Transport};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Number, Value};

/// `--max-message-bytes` of the stdio server, so that over-long lines are exercised.
const STDIO_LIMIT: usize = 1024;
/// A method name no server implements: the probe must get -32601.
const PROBE_METHOD: &str = "exec-kit/fuzz-probe";

// ---------------------------------------------------------------------------------
// The oracle: docs/protocol.md §3, row by row.

/// What one frame (or stdio line) must get back.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Nothing: a client notification or a response from the client.
    Ignored,
    /// An error reply with this id and code.
    Error { id: Value, code: i64 },
}

/// The answer to one frame on a connection that has not initialized. `None` for an
/// `initialize` request, whose outcome depends on its params (the generators avoid it).
fn expect_frame(text: &str) -> Option<Expect> {
    let error = |id: Value, code: i64| Some(Expect::Error { id, code });
    // Duplicate object keys and more than 262 144 values are parse errors too
    // (revision 2026-08): the server's own parser is the model of what parses.
    let Ok(value) = exec_server_harness::protocol::parse_frame(text) else {
        return error(Value::Null, -32700);
    };
    // Arrays (batches) and every other non-object.
    let Value::Object(object) = value else {
        return error(Value::Null, -32600);
    };
    let id = object.get("id").cloned();
    if let Some(id) = &id {
        let integer = matches!(id, Value::Number(n) if n.is_i64() || n.is_u64());
        if !(id.is_string() || integer) {
            return error(Value::Null, -32600);
        }
    }
    let echo = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").is_some_and(|v| v != "2.0") {
        return error(echo, -32600);
    }
    match (object.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => match Method::parse(method) {
            Some(Method::Initialize) => None,
            // Known methods before the handshake: "client must call initialize …".
            Some(_) => error(id, -32600),
            None => error(id, -32601),
        },
        // Notifications, `initialized` included (outside the handshake), are ignored.
        (Some(Value::String(_)), None) => Some(Expect::Ignored),
        (Some(_), _) => error(echo, -32600),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            Some(Expect::Ignored)
        }
        (None, _) => error(echo, -32600),
    }
}

/// The answers to the bytes of a websocket binary frame.
fn expect_binary(bytes: &[u8]) -> Option<Expect> {
    match std::str::from_utf8(bytes) {
        Ok(text) => expect_frame(text),
        Err(_) => Some(Expect::Error {
            id: Value::Null,
            code: -32700,
        }),
    }
}

/// The answers to `bytes` followed by one `\n` on stdio: one per line; blank lines
/// (ASCII whitespace only) are skipped, a line longer than the limit is refused.
fn expect_stdio(bytes: &[u8]) -> Option<Vec<Expect>> {
    let mut expected = Vec::new();
    for line in bytes.split(|&byte| byte == b'\n') {
        if line.len() > STDIO_LIMIT {
            expected.push(Expect::Error {
                id: Value::Null,
                code: -32600,
            });
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            expected.push(expect_binary(line)?);
        }
    }
    Some(expected)
}

// ---------------------------------------------------------------------------------
// Generators.

const KEYS: &[&str] = &["id", "method", "params", "jsonrpc", "result", "error"];
/// Method names that exist (except `initialize`, whose outcome depends on its params).
const KNOWN_METHODS: &[&str] = &[
    "process/start",
    "process/read",
    "process/write",
    "process/signal",
    "process/terminate",
    "process/resize",
    "fs/readFile",
    "fs/writeFile",
    "fs/createDirectory",
    "fs/getMetadata",
    "fs/readDirectory",
    "fs/remove",
    "fs/copy",
    "fs/canonicalize",
    "fs/join",
    "fs/parent",
    "environment/info",
];
const BOGUS_METHODS: &[&str] = &[
    "",
    "initialized",
    "Initialize",
    "process/",
    "process/start ",
    "PROCESS/START",
    "fs/../process/start",
    "rpc.discover",
    "\u{0}",
    "process/start\u{0}",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,24}".prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .boxed()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((json_key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

fn rpc_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<i64>().prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        4 => ".{0,16}".prop_map(Value::from),
        1 => "[a-z]{300,400}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!(1.5)),
        1 => Just(json!(7.0)),
        1 => json_value(),
    ]
}

fn rpc_method() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => proptest::sample::select(KNOWN_METHODS).prop_map(Value::from),
        2 => proptest::sample::select(BOGUS_METHODS).prop_map(Value::from),
        2 => "[a-z/]{0,20}".prop_map(Value::from),
        1 => json_leaf(),
    ]
}

fn rpc_version() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!("2.0")),
        1 => Just(json!("1.0")),
        1 => Just(json!(2.0)),
        1 => Just(json!("2.0 ")),
        1 => Just(Value::Null),
    ]
}

/// Objects that look like JSON-RPC messages, with each member present, absent or wrong.
fn rpc_shaped() -> BoxedStrategy<Value> {
    (
        proptest::option::weighted(0.8, rpc_id()),
        proptest::option::weighted(0.5, rpc_version()),
        proptest::option::weighted(0.8, rpc_method()),
        proptest::option::weighted(0.4, json_value()),
        proptest::option::weighted(0.15, json_value()),
        proptest::option::weighted(0.15, json_value()),
        proptest::collection::vec((".{0,6}", json_leaf()), 0..2),
    )
        .prop_map(|(id, version, method, params, result, error, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            let members = [
                ("id", id),
                ("jsonrpc", version),
                ("method", method),
                ("params", params),
                ("result", result),
                ("error", error),
            ];
            for (key, value) in members {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            Value::Object(object)
        })
        .boxed()
}

/// JSON text: compact or pretty-printed (with newlines), of any JSON or a near-RPC object.
fn json_text() -> BoxedStrategy<String> {
    (
        prop_oneof![json_value(), rpc_shaped(), rpc_shaped()],
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(value, pretty)| {
            if pretty {
                serde_json::to_string_pretty(&value).expect("serialise")
            } else {
                value.to_string()
            }
        })
        .boxed()
}

/// A byte-level edit of a valid text: truncation, an inserted or replaced byte, a
/// deleted range. Near-misses reach the deeper branches of the parser.
fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    (
        text,
        any::<proptest::sample::Index>(),
        any::<proptest::sample::Index>(),
        any::<u8>(),
        0u8..4,
    )
        .prop_map(|(text, at, to, byte, edit)| {
            let mut bytes = text.into_bytes();
            if bytes.is_empty() {
                return vec![byte];
            }
            let at = at.index(bytes.len());
            match edit {
                0 => bytes.truncate(at),
                1 => bytes.insert(at, byte),
                2 => bytes[at] = byte,
                _ => {
                    let to = at + to.index(bytes.len() - at);
                    bytes.drain(at..=to);
                }
            }
            bytes
        })
}

/// The bytes of one frame or line.
fn frame_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => json_text().prop_map(String::into_bytes),
        3 => mutated(json_text()),
        2 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => ".{0,64}".prop_map(String::into_bytes),
        1 => (1usize..2000, proptest::sample::select(&[b'x', b' ', b'{', b'[', b'"', b'\n'][..]))
            .prop_map(|(len, byte)| vec![byte; len]),
    ]
    .boxed()
}

/// Nesting far past any parser's recursion limit, and other awkward fixed frames.
fn edge_frames() -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = [
        "",
        " ",
        "null",
        "[]",
        "{}",
        "\"\"",
        "{\"id\":1}",
        "{\"id\":-0,\"method\":\"x\"}",
        "{\"id\":1e2,\"method\":\"x\"}",
        "{\"id\":18446744073709551615,\"method\":\"x\"}",
        "{\"id\":18446744073709551616,\"method\":\"x\"}",
        "{\"id\":-9223372036854775808,\"method\":\"x\"}",
        "{\"id\":\"\\u0000\",\"method\":\"x\"}",
        "{\"id\":\"\\ud800\",\"method\":\"x\"}",
        "{\"id\":1,\"id\":\"two\",\"method\":\"x\"}",
        "{\"id\":1,\"method\":\"process/start\",\"params\":[1,2,3]}",
        "{\"id\":2,\"result\":null}",
        "{\"id\":3,\"error\":{}}",
        "{\"id\":null,\"result\":1}",
        "{\"method\":\"initialized\"}",
        "{\"method\":5}",
        "{\"jsonrpc\":\"2.0\"}",
        "\u{feff}{\"id\":4,\"method\":\"x\"}",
        "{\"id\":5,\"method\":\"x\"} trailing",
        "{\"id\":6,\"method\":\"x\"}{\"id\":7,\"method\":\"x\"}",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .collect();
    frames.push(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes());
    frames.push(format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes());
    frames.push(format!("{{\"id\":{}}}", "9".repeat(5000)).into_bytes());
    frames.push(b"\xff\xfe{\"id\":1,\"method\":\"x\"}".to_vec());
    frames.push(b"{\"id\":\"\xc3\x28\",\"method\":\"x\"}".to_vec());
    frames
}

// ---------------------------------------------------------------------------------
// The driver: one server, many cases on the same connection.

#[derive(Debug, Clone)]
enum WsFrame {
    Text(String),
    Binary(Vec<u8>),
}

struct Driver {
    conn: Connection,
    cases: std::cell::Cell<u64>,
}

/// The response whose id is the JSON value `id` (`null`: an error about an
/// unidentifiable frame).
async fn response_to(conn: &Connection, id: &Value) -> Result<Response, HarnessError> {
    match RequestId::from_value(id) {
        Some(id) => conn.response(&id).await,
        None => conn.response_without_id().await,
    }
}

impl Driver {
    /// The time of the last trace entry: frames received after it belong to this case.
    fn mark(&self) -> Duration {
        self.conn
            .trace()
            .last()
            .map(|entry| entry.at)
            .unwrap_or_default()
    }

    fn received_since(&self, mark: Duration) -> Vec<String> {
        self.conn
            .trace()
            .into_iter()
            .filter(|entry| entry.direction == Direction::Received && entry.at > mark)
            .map(|entry| entry.text)
            .collect()
    }

    /// Sends a probe and checks, once everything expected has arrived, that exactly the
    /// expected errors (as multisets per id) and the probe's answer came back.
    async fn settle(&self, mark: Duration, expected: &[Expect]) -> Result<(), String> {
        self.cases.set(self.cases.get() + 1);
        let probe = json!(format!("probe-{}-\u{1F50E}", self.cases.get()));
        let probe_frame = json!({"jsonrpc": "2.0", "id": probe, "method": PROBE_METHOD});
        self.conn
            .send_raw(probe_frame.to_string())
            .await
            .map_err(|err| format!("send probe: {err}"))?;
        let reply = response_to(&self.conn, &probe)
            .await
            .map_err(|err| format!("the server no longer answers: {err}"))?;
        check_error(&reply.message(), &probe, -32601)?;
        let mut by_id: BTreeMap<String, (Value, Vec<i64>)> = BTreeMap::new();
        for expect in expected {
            if let Expect::Error { id, code } = expect {
                let entry = by_id
                    .entry(id.to_string())
                    .or_insert_with(|| (id.clone(), Vec::new()));
                entry.1.push(*code);
            }
        }
        let mut errors = 0;
        for (id, mut codes) in by_id.into_values() {
            let mut got = Vec::new();
            for _ in 0..codes.len() {
                let reply = response_to(&self.conn, &id)
                    .await
                    .map_err(|err| format!("expected an error with id {id}: {err}"))?;
                got.push(check_error(&reply.message(), &id, 0)?);
            }
            codes.sort_unstable();
            got.sort_unstable();
            if codes != got {
                return Err(format!("id {id}: expected codes {codes:?}, got {got:?}"));
            }
            errors += codes.len();
        }
        let received = self.received_since(mark);
        if received.len() != errors + 1 {
            return Err(format!(
                "expected {} errors and the probe's answer, received {} frames: {received:#?}",
                errors,
                received.len()
            ));
        }
        let invalid = self.conn.invalid_frames();
        if !invalid.is_empty() {
            return Err(format!("the server sent non-JSON-RPC output: {invalid:?}"));
        }
        Ok(())
    }

    async fn ws_case(&self, frames: &[WsFrame]) -> Result<(), String> {
        let mark = self.mark();
        let mut expected = Vec::new();
        for frame in frames {
            let expect = match frame {
                WsFrame::Text(text) => expect_frame(text),
                WsFrame::Binary(bytes) => expect_binary(bytes),
            };
            // An `initialize` would change the connection's phase; never sent.
            let Some(expect) = expect else { continue };
            let sent = match frame {
                WsFrame::Text(text) => self.conn.send_raw(text).await,
                WsFrame::Binary(bytes) => self.conn.send_raw_bytes(bytes).await,
            };
            sent.map_err(|err| format!("send: {err}"))?;
            expected.push(expect);
        }
        self.settle(mark, &expected).await
    }

    /// `bytes` and a final `\n` go out as they are: the newlines inside split lines.
    async fn stdio_case(&self, bytes: &[u8]) -> Result<(), TestCaseError> {
        let Some(expected) = expect_stdio(bytes) else {
            return Err(TestCaseError::reject("contains an initialize request"));
        };
        let mark = self.mark();
        let mut line = bytes.to_vec();
        line.push(b'\n');
        self.conn
            .send_raw_bytes(&line)
            .await
            .map_err(|err| TestCaseError::fail(format!("send: {err}")))?;
        self.settle(mark, &expected)
            .await
            .map_err(TestCaseError::fail)
    }

    /// After all the cases, the connection still does real work.
    async fn still_works(&self) -> TestResult {
        let session = self.conn.initialize(CLIENT).await?;
        let pid = session
            .start_with(spec("after-fuzz", ["cat"]).pipe_stdin(true))
            .await?;
        session.write(&pid, b"still here").await?;
        session.close_stdin(&pid).await?;
        assert_eq!(session.read_to_end(&pid).await?.stdout, b"still here");
        assert!(
            !self.conn.server().stderr().contains("panicked"),
            "{}",
            self.conn.server().stderr()
        );
        Ok(())
    }
}

/// Checks that `message` is a well-formed error reply with this id (and code, unless
/// `code` is 0); returns its code.
fn check_error(message: &Value, id: &Value, code: i64) -> Result<i64, String> {
    let well_formed = message["jsonrpc"] == "2.0"
        && &message["id"] == id
        && message.get("result").is_none()
        && message["error"]["message"].is_string()
        && message.as_object().is_some_and(|object| object.len() == 3);
    let got = message["error"]["code"].as_i64();
    match got {
        Some(got) if well_formed && (code == 0 || got == code) => Ok(got),
        _ => Err(format!(
            "expected an error {code} with id {id}, got {message}"
        )),
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn report(result: Result<(), proptest::test_runner::TestError<impl std::fmt::Debug>>) {
    if let Err(err) = result {
        panic!("{err}");
    }
}

// ---------------------------------------------------------------------------------
// The properties.

#[test]
fn websocket_frames_get_the_documented_answers() {
    let runtime = runtime();
    let server = runtime
        .block_on(start_server(Transport::WebSocket, &[]))
        .expect("server");
    let driver = Driver {
        conn: runtime.block_on(server.connect()).expect("connection"),
        cases: Default::default(),
    };
    let edge: Vec<WsFrame> = edge_frames()
        .into_iter()
        .flat_map(|bytes| {
            let text = String::from_utf8(bytes.clone()).ok().map(WsFrame::Text);
            text.into_iter().chain([WsFrame::Binary(bytes)])
        })
        .collect();
    for frame in edge {
        runtime
            .block_on(driver.ws_case(std::slice::from_ref(&frame)))
            .unwrap_or_else(|err| panic!("{frame:?}: {err}"));
    }
    let frame = prop_oneof![
        frame_bytes().prop_map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => WsFrame::Text(text),
            Err(err) => WsFrame::Binary(err.into_bytes()),
        }),
        frame_bytes().prop_map(WsFrame::Binary),
    ];
    let result = runner(600).run(&proptest::collection::vec(frame, 1..8), |frames| {
        runtime
            .block_on(driver.ws_case(&frames))
            .map_err(TestCaseError::fail)
    });
    report(result);
    runtime.block_on(driver.still_works()).expect("still works");
}

#[test]
fn stdio_lines_get_the_documented_answers() {
    let runtime = runtime();
    let limit = STDIO_LIMIT.to_string();
    let server = runtime
        .block_on(start_server(
            Transport::Stdio,
            &["--max-message-bytes", &limit],
        ))
        .expect("server");
    let driver = Driver {
        conn: runtime.block_on(server.connect()).expect("connection"),
        cases: Default::default(),
    };
    for bytes in edge_frames() {
        runtime
            .block_on(driver.stdio_case(&bytes))
            .unwrap_or_else(|err| panic!("{:?}: {err}", String::from_utf8_lossy(&bytes)));
    }
    // Several frames per case, joined by newlines or run together.
    let lines = proptest::collection::vec(
        (
            frame_bytes(),
            proptest::sample::select(vec![&b"\n"[..], b"\r\n", b"", b" "]),
        ),
        1..6,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(mut bytes, separator)| {
                bytes.extend_from_slice(separator);
                bytes
            })
            .collect::<Vec<u8>>()
    });
    let result = runner(600).run(&lines, |bytes| runtime.block_on(driver.stdio_case(&bytes)));
    report(result);
    runtime.block_on(driver.still_works()).expect("still works");
}

// ---------------------------------------------------------------------------------
// Known methods with fuzzed params, on an initialized connection: always exactly one
// well-formed answer with the request's id, whatever the params. The file system is
// confined to a temporary directory, and every path stays inside it.

/// Absolute paths inside `root`, never `root` itself, or a wrong type.
fn path_value(root: &'static str) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[a-d]{1,3}(/[a-d]{1,3}){0,2}(\\.txt)?".prop_map(move |rel| Value::from(format!("{root}/{rel}"))),
        1 => "[a-d]{1,3}".prop_map(move |rel| Value::from(format!("file://{root}/{rel}"))),
        1 => json_leaf(),
    ]
    .boxed()
}

/// Also paths that try to leave the root: only for methods that change nothing.
fn read_only_path_value(root: &'static str) -> BoxedStrategy<Value> {
    let escapes = vec![
        format!("{root}/.."),
        format!("{root}/../.."),
        format!("{root}/a/../../x"),
        root.to_owned(),
        "/".to_owned(),
        "/nonexistent".to_owned(),
        "relative".to_owned(),
        String::new(),
        "file:///".to_owned(),
        "file://host/x".to_owned(),
        format!("file://{root}/%00"),
        format!("{root}/a\u{0}b"),
    ];
    prop_oneof![
        path_value(root),
        proptest::sample::select(escapes).prop_map(Value::from),
    ]
    .boxed()
}

fn param_value(
    key: &'static str,
    method: &'static str,
    root: &'static str,
) -> BoxedStrategy<Value> {
    let read_only = matches!(
        method,
        "fs/readFile"
            | "fs/getMetadata"
            | "fs/readDirectory"
            | "fs/canonicalize"
            | "fs/join"
            | "fs/parent"
    );
    let typed: BoxedStrategy<Value> = match key {
        "processId" => prop_oneof![
            proptest::sample::select(&["p0", "p1", "p2"][..]).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "[a-z]{250,300}".prop_map(Value::from),
        ]
        .boxed(),
        "argv" => proptest::sample::select(vec![
            json!(["true"]),
            json!(["cat"]),
            json!(["sh", "-c", "echo fuzz; echo err >&2"]),
            json!(["sleep", "0.1"]),
            json!(["/nonexistent/program"]),
            json!([]),
            json!([""]),
            json!("cat"),
        ])
        .boxed(),
        "cwd" => prop_oneof![
            path_value(root),
            proptest::sample::select(vec![root, "/", "/nonexistent", "relative", ""])
                .prop_map(Value::from),
        ]
        .boxed(),
        "env" | "set" => proptest::collection::btree_map("[A-Z]{1,4}", ".{0,8}", 0..3)
            .prop_map(|env| json!(env))
            .boxed(),
        "envPolicy" => prop_oneof![
            Just(json!({"inherit": "none"})),
            Just(json!({"inherit": "core", "exclude": ["*"]})),
            Just(json!({"inherit": "bogus"})),
            Just(Value::Null),
        ]
        .boxed(),
        "tty" | "pipeStdin" | "closeStdin" | "recursive" | "force" => {
            any::<bool>().prop_map(Value::from).boxed()
        }
        "afterSeq" | "maxBytes" => prop_oneof![any::<u64>(), 0u64..10]
            .prop_map(Value::from)
            .boxed(),
        // A long-poll must end quickly: the case waits for every answer.
        "waitMs" => (0u64..50).prop_map(Value::from).boxed(),
        "chunk" | "dataBase64" => prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(|data| Value::from(b64(&data))),
            ".{0,12}".prop_map(Value::from),
        ]
        .boxed(),
        "signal" => proptest::sample::select(
            &[
                "interrupt",
                "terminate",
                "kill",
                "hangup",
                "quit",
                "SIGKILL",
                "stop",
                "",
            ][..],
        )
        .prop_map(Value::from)
        .boxed(),
        "rows" | "cols" => prop_oneof![0i64..300, any::<i64>()]
            .prop_map(Value::from)
            .boxed(),
        "path" | "sourcePath" | "destinationPath" | "basePath" if read_only => {
            read_only_path_value(root)
        }
        "path" | "sourcePath" | "destinationPath" | "basePath" => path_value(root),
        _ => json_leaf().boxed(),
    };
    prop_oneof![8 => typed, 1 => json_value()].boxed()
}

const PARAM_KEYS: &[&str] = &[
    "processId",
    "argv",
    "cwd",
    "env",
    "tty",
    "pipeStdin",
    "arg0",
    "envPolicy",
    "afterSeq",
    "maxBytes",
    "waitMs",
    "chunk",
    "closeStdin",
    "signal",
    "rows",
    "cols",
    "path",
    "dataBase64",
    "recursive",
    "force",
    "sourcePath",
    "destinationPath",
    "basePath",
    "sandbox",
];

fn fuzzed_request(root: &'static str) -> impl Strategy<Value = (&'static str, Value)> {
    proptest::sample::select(KNOWN_METHODS).prop_flat_map(move |method| {
        let params = proptest::sample::subsequence(PARAM_KEYS, 0..8).prop_flat_map(move |keys| {
            keys.into_iter()
                .map(|key| param_value(key, method, root).prop_map(move |value| (key, value)))
                .collect::<Vec<_>>()
                .prop_map(|pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(key, value)| (key.to_owned(), value))
                            .collect(),
                    )
                })
        });
        let params = prop_oneof![
            6 => params,
            1 => json_value(),
            1 => Just(Value::Null),
        ];
        (Just(method), params)
    })
}

/// Error codes a request on a ready connection may get (§3, §7).
const HANDLER_CODES: &[i64] = &[-32600, -32602, -32603, -32004, -32005];

async fn ready_case(
    conn: &Connection,
    case: u64,
    requests: &[(&'static str, Value)],
) -> Result<(), String> {
    let mut ids = Vec::new();
    for (index, (method, params)) in requests.iter().enumerate() {
        let id = json!(format!("fuzz-{case}-{index}"));
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        conn.send_raw(frame.to_string())
            .await
            .map_err(|err| format!("send: {err}"))?;
        ids.push(id);
    }
    for (id, (method, params)) in ids.iter().zip(requests) {
        let reply = conn
            .response(&RequestId::from_value(id).expect("a string id"))
            .await
            .map_err(|err| format!("{method} {params}: no answer: {err}"))?;
        let message = &reply.message();
        let shape_ok = message["jsonrpc"] == "2.0"
            && &message["id"] == id
            && message.as_object().is_some_and(|object| object.len() == 3);
        let outcome_ok = match (&reply.result, &reply.error) {
            (Some(_), None) => true,
            (None, Some(failure)) => HANDLER_CODES.contains(&failure.code),
            _ => false,
        };
        if !(shape_ok && outcome_ok) {
            return Err(format!("{method} {params}: unexpected answer {message}"));
        }
    }
    let invalid = conn.invalid_frames();
    if !invalid.is_empty() {
        return Err(format!("the server sent non-JSON-RPC output: {invalid:?}"));
    }
    Ok(())
}

async fn ready_server(
    transport: Transport,
    root: &std::path::Path,
) -> Result<Connection, HarnessError> {
    let root = root.to_string_lossy().into_owned();
    let server = start_server(transport, &["--fs-root", &root]).await?;
    let conn = server.connect().await?;
    conn.initialize(CLIENT).await?;
    Ok(conn)
}

#[test]
fn known_methods_with_fuzzed_params_always_get_one_answer() {
    let runtime = runtime();
    for transport in BOTH {
        let root = tempfile::tempdir().expect("tempdir");
        // Canonical, as the server resolves it; leaked for the 'static strategies.
        let root_path = root.path().canonicalize().expect("canonical root");
        let root_str: &'static str =
            Box::leak(root_path.to_string_lossy().into_owned().into_boxed_str());
        let conn = runtime
            .block_on(ready_server(transport, root.path()))
            .expect("server");
        let case = std::cell::Cell::new(0);
        let result = runner(300).run(
            &proptest::collection::vec(fuzzed_request(root_str), 1..6),
            |requests| {
                case.set(case.get() + 1);
                runtime
                    .block_on(ready_case(&conn, case.get(), &requests))
                    .map_err(TestCaseError::fail)
            },
        );
        if let Err(err) = result {
            panic!("{transport:?}: {err}");
        }
        // The connection still does real work.
        let after = runtime.block_on(async {
            let info = conn.request("environment/info", json!({})).result().await?;
            let written = conn
                .request(
                    "fs/writeFile",
                    json!({"path": format!("{root_str}/after.txt"), "dataBase64": b64(b"ok")}),
                )
                .result()
                .await?;
            Ok::<_, HarnessError>((info, written))
        });
        let (info, _) = after.unwrap_or_else(|err| panic!("{transport:?}: {err}"));
        assert!(info["shell"]["path"].is_string(), "{transport:?}: {info}");
        assert_eq!(
            std::fs::read(root.path().join("after.txt")).expect("after.txt"),
            b"ok"
        );
        assert!(
            !conn.server().stderr().contains("panicked"),
            "{}",
            conn.server().stderr()
        );
    }
}

#[test]
fn the_oracle_follows_the_table() {
    let cases = [
        (
            "{x",
            Some(Expect::Error {
                id: Value::Null,
                code: -32700,
            }),
        ),
        (
            "[]",
            Some(Expect::Error {
                id: Value::Null,
                code: -32600,
            }),
        ),
        (
            "3",
            Some(Expect::Error {
                id: Value::Null,
                code: -32600,
            }),
        ),
        (
            r#"{"id":1.5,"method":"m"}"#,
            Some(Expect::Error {
                id: Value::Null,
                code: -32600,
            }),
        ),
        (
            r#"{"id":2,"jsonrpc":"1.0","method":"m"}"#,
            Some(Expect::Error {
                id: json!(2),
                code: -32600,
            }),
        ),
        (
            r#"{"id":"a","method":7}"#,
            Some(Expect::Error {
                id: json!("a"),
                code: -32600,
            }),
        ),
        (r#"{"id":3,"result":1}"#, Some(Expect::Ignored)),
        (
            r#"{"id":4}"#,
            Some(Expect::Error {
                id: json!(4),
                code: -32600,
            }),
        ),
        (r#"{"method":"whatever"}"#, Some(Expect::Ignored)),
        (
            r#"{"id":5,"method":"whatever"}"#,
            Some(Expect::Error {
                id: json!(5),
                code: -32601,
            }),
        ),
        (
            r#"{"id":6,"method":"process/read"}"#,
            Some(Expect::Error {
                id: json!(6),
                code: -32600,
            }),
        ),
        (r#"{"id":7,"method":"initialize"}"#, None),
    ];
    for (frame, expected) in cases {
        assert_eq!(expect_frame(frame), expected, "{frame}");
    }
    assert_eq!(
        expect_stdio(b"\n  \n{x\n\xff"),
        Some(vec![
            Expect::Error {
                id: Value::Null,
                code: -32700
            },
            Expect::Error {
                id: Value::Null,
                code: -32700
            },
        ])
    );
    assert_eq!(
        expect_stdio(&vec![b' '; STDIO_LIMIT + 1]),
        Some(vec![Expect::Error {
            id: Value::Null,
            code: -32600
        }])
    );
}
