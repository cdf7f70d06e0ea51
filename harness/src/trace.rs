//! The wire trace (direction, time since start, message) and the server's stderr tail,
//! kept for the failure report a test prints when it panics.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages longer than this are shortened in the trace (output chunks can be MiBs).
const MAX_TRACED_MESSAGE_CHARS: usize = 600;
const MAX_TRACE_ENTRIES: usize = 5_000;
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
    /// Time since the server was started.
    pub at: Duration,
    /// Which way it went.
    pub direction: Direction,
    /// The message, shortened if very long.
    pub text: String,
}

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
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == MAX_TRACE_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(TraceEntry {
            at: self.started.elapsed(),
            direction,
            text: abbreviate(text, MAX_TRACED_MESSAGE_CHARS),
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
