//! The whole stdio transport (`Server::serve_stdio_streams`: line framing, blank and
//! over-long lines, UTF-8, the envelope, the handshake and the handlers) on arbitrary
//! input delivered in arbitrary read sizes. Every line the server writes must be a
//! JSON-RPC 2.0 message, and it must answer no more lines than it was given.
//!
//! The server is confined: `fs/*` reaches only an empty temporary directory and
//! `--max-processes 0` refuses every `process/start`, so no input can touch the machine.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use exec_server::{FileSystem, Limits, Server, ServerOptions, Shutdown};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Lines over this many bytes are refused: small, so the fuzzer reaches that path.
const LINE_LIMIT: usize = 512;

/// Hands out the input at most `step` bytes per read, so lines straddle reads.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .step
            .min(buf.remaining())
            .min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    _root: tempfile::TempDir,
    options: ServerOptions,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir");
        let options = ServerOptions {
            max_message_bytes: LINE_LIMIT,
            file_system: Arc::new(FileSystem::confined(root.path()).expect("fs root")),
            limits: Limits {
                max_processes: 0,
                ..Limits::default()
            },
            ..ServerOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture {
            runtime,
            _root: root,
            options,
        }
    })
}

fn check_line(line: &[u8]) {
    let message: Value = serde_json::from_slice(line)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", String::from_utf8_lossy(line)));
    let object = message.as_object().expect("an object");
    assert_eq!(message["jsonrpc"], "2.0", "{message}");
    match (object.get("id"), object.get("method")) {
        (Some(id), None) => {
            assert!(
                id.is_null() || id.is_string() || id.is_i64() || id.is_u64(),
                "{message}"
            );
            assert!(
                object.contains_key("result") != object.contains_key("error"),
                "{message}"
            );
            if let Some(error) = object.get("error") {
                assert!(
                    error["code"].is_i64() && error["message"].is_string(),
                    "{message}"
                );
            }
        }
        (None, Some(method)) => assert!(method.is_string(), "{message}"),
        _ => panic!("neither a response nor a notification: {message}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let step = match first {
        0 => usize::MAX,
        n => usize::from(n % 64) + 1,
    };
    let source = Chunked {
        data: input.to_vec(),
        at: 0,
        step,
    };
    let output = Output::default();
    let server = Server::new(fixture.options.clone(), Shutdown::new());
    fixture
        .runtime
        .block_on(server.serve_stdio_streams(source, output.clone(), LINE_LIMIT));
    let written = output.0.lock().unwrap().clone();
    let lines = input.split(|&b| b == b'\n').count();
    let mut answers = 0;
    for line in written.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        check_line(line);
        answers += 1;
    }
    // No processes run, so nothing but answers (at most one per line) can be written.
    assert!(answers <= lines, "{answers} answers to {lines} lines");
});
