//! The wire trace (direction, time since the connection opened, message) and the
//! server's stderr tail: what a failure report prints. Output chunks are shown decoded
//! when they are printable text.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

/// Messages longer than this are shortened in the trace (output chunks can be MiBs).
const MAX_TRACED_MESSAGE_CHARS: usize = 600;
const MAX_TRACE_ENTRIES: usize = 5_000;
/// Frames up to this size get their base64 chunks decoded for the trace.
const MAX_DECODED_FRAME_BYTES: usize = 64 * 1024;
/// How much of the server's stderr is kept.
pub const STDERR_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Which way a trace entry went.
pub enum Direction {
    /// From the harness to the server.
    Sent,
    /// From the server to the harness.
    Received,
    /// Not a message: a connect, disconnect or reset.
    Note,
}

#[derive(Debug, Clone)]
/// One line of the wire trace.
pub struct TraceEntry {
    /// Time since the connection was opened.
    pub at: Duration,
    /// Which way it went.
    pub direction: Direction,
    /// The message, shortened if very long, with printable output chunks decoded
    /// (`"chunk":"aGkK"` is shown as `"chunk(text)":"hi\n"`).
    pub text: String,
}

/// The wire trace of one connection.
pub(crate) struct Trace {
    started: Instant,
    entries: Mutex<VecDeque<TraceEntry>>,
}

impl Trace {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, direction: Direction, text: &str) {
        let shown = match direction {
            Direction::Note => abbreviate(text, MAX_TRACED_MESSAGE_CHARS),
            _ => abbreviate(&with_decoded_chunks(text), MAX_TRACED_MESSAGE_CHARS),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == MAX_TRACE_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(TraceEntry {
            at: self.started.elapsed(),
            direction,
            text: shown,
        });
    }

    pub fn entries(&self) -> Vec<TraceEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for entry in self.entries() {
            let arrow = match entry.direction {
                Direction::Sent => "->",
                Direction::Received => "<-",
                Direction::Note => "==",
            };
            let _ = writeln!(
                out,
                "{:>9.3}s {arrow} {}",
                entry.at.as_secs_f64(),
                entry.text
            );
        }
        out
    }
}

/// The frame with every printable base64 `chunk` (of `process/output`, `process/write`
/// and `process/read` results) replaced by its text under the key `chunk(text)`.
fn with_decoded_chunks(text: &str) -> String {
    if text.len() > MAX_DECODED_FRAME_BYTES || !text.contains("\"chunk") {
        return text.to_owned();
    }
    let Ok(mut message) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    let mut changed = false;
    if let Some(params) = message.get_mut("params") {
        changed |= decode_chunk(params);
    }
    if let Some(Value::Array(chunks)) = message
        .get_mut("result")
        .and_then(|result| result.get_mut("chunks"))
    {
        for chunk in chunks {
            changed |= decode_chunk(chunk);
        }
    }
    if changed {
        message.to_string()
    } else {
        text.to_owned()
    }
}

fn decode_chunk(object: &mut Value) -> bool {
    let Some(object) = object.as_object_mut() else {
        return false;
    };
    let Some(text) = object
        .get("chunk")
        .and_then(Value::as_str)
        .and_then(|b64| BASE64.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|text| {
            text.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        })
    else {
        return false;
    };
    object.remove("chunk");
    object.insert("chunk(text)".into(), Value::String(text));
    true
}

/// A bounded tail of a byte stream (the server's stderr), and whether it has ended.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: Mutex<VecDeque<u8>>,
    closed: tokio::sync::Notify,
    is_closed: std::sync::atomic::AtomicBool,
}

impl Tail {
    pub fn close(&self) {
        self.is_closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    /// Resolves once the stream has reached EOF.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.is_closed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub fn push(&self, data: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        bytes.extend(data);
        let excess = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        bytes.drain(..excess);
    }

    pub fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes.iter().copied().collect::<Vec<_>>()).into_owned()
    }
}

pub(crate) fn abbreviate(text: &str, max_chars: usize) -> String {
    if text.len() <= max_chars {
        return text.to_owned();
    }
    let cut = (0..=max_chars)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_chunks_are_decoded_and_binary_ones_kept() {
        let text = r#"{"method":"process/output","params":{"chunk":"aGkK","seq":1}}"#;
        assert!(with_decoded_chunks(text).contains(r#""chunk(text)":"hi\n""#));
        let binary = r#"{"method":"process/output","params":{"chunk":"AAEC"}}"#;
        assert_eq!(with_decoded_chunks(binary), binary);
        let read = r#"{"id":1,"result":{"chunks":[{"chunk":"b2s="}]}}"#;
        assert!(with_decoded_chunks(read).contains(r#""chunk(text)":"ok""#));
    }
}
