//! The harness's error type. Every failure says what was expected and what happened;
//! its `Debug` output (what a `#[tokio::test]` returning `Err` prints) also carries the
//! wire trace of the connection and the server's stderr tail.

use std::sync::Arc;
use std::time::Duration;

use exec_protocol::ErrorObject;
use serde_json::Value;

use crate::trace::{Tail, Trace};

/// The JSON-RPC error object a server answered with (`code`, `message`, `data`).
pub type RpcFailure = ErrorObject;

/// What a failure report shows: the wire trace of one connection and the server's
/// stderr tail, rendered when the error is printed with `{:?}` (so it shows what
/// happened up to the moment the test reports the failure).
#[derive(Clone, Default)]
pub struct Report(Option<Arc<ReportParts>>);

struct ReportParts {
    trace: Option<Arc<Trace>>,
    stderr: Option<Arc<Tail>>,
    label: String,
}

impl Report {
    /// A report of this trace (none before a connection exists) and stderr tail (none
    /// in-process), labelled with the transport.
    pub(crate) fn new(trace: Option<Arc<Trace>>, stderr: Option<Arc<Tail>>, label: String) -> Self {
        Report(Some(Arc::new(ReportParts {
            trace,
            stderr,
            label,
        })))
    }

    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The report as printed: wire trace, then the stderr tail.
    pub fn render(&self) -> String {
        let Some(parts) = &self.0 else {
            return String::new();
        };
        let trace = parts
            .trace
            .as_ref()
            .map_or_else(|| "(no connection)\n".to_owned(), |trace| trace.render());
        let stderr = parts.stderr.as_ref().map_or_else(
            || "(in-process server: its logs go to this test's own output)\n".to_owned(),
            |tail| tail.text(),
        );
        format!(
            "==== exec-server harness: wire trace ({}) ====\n{trace}==== exec-server stderr (tail) ====\n{stderr}==== end ====",
            parts.label
        )
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("Report(empty)")
        } else {
            f.write_str(&self.render())
        }
    }
}

/// Every harness failure. `Display` is one sentence; `Debug` is that sentence followed
/// by the [`Report`] (wire trace and stderr tail) when the error came from a connection,
/// so a test that fails through `?` shows both.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// A wait ran past its deadline.
    #[error("timed out after {waited:?} waiting for {expected}; arrived instead: {arrived}")]
    Timeout {
        /// What the wait was for.
        expected: String,
        /// How long it waited.
        waited: Duration,
        /// What was received and not consumed, summarised.
        arrived: String,
        /// Wire trace and stderr tail.
        report: Report,
    },
    /// The connection closed while something was still expected.
    #[error("connection closed while waiting for {expected}")]
    Disconnected {
        /// What the wait was for.
        expected: String,
        /// Wire trace and stderr tail.
        report: Report,
    },
    /// The server answered a request with an error.
    #[error("{method} failed: {failure}")]
    Rpc {
        /// The method that failed.
        method: String,
        /// The server's error.
        failure: ErrorObject,
        /// Wire trace and stderr tail.
        report: Report,
    },
    /// A request that was expected to fail succeeded.
    #[error("{method} was expected to fail but returned {result}")]
    UnexpectedSuccess {
        /// The method that succeeded.
        method: String,
        /// Its result.
        result: Value,
        /// Wire trace and stderr tail.
        report: Report,
    },
    /// The server sent something that is not valid protocol, or not what was expected.
    #[error("protocol violation: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
        /// Wire trace and stderr tail.
        report: Report,
    },
    /// The server could not be started or did not come up (the message carries its
    /// stderr).
    #[error("server start-up failed: {0}")]
    Startup(String),
    /// The operation does not apply to this server (e.g. a second connection to a
    /// stdio server, or a pid of an in-process server).
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    /// An I/O error talking to the server.
    Io(#[from] std::io::Error),
}

impl HarnessError {
    /// A [`HarnessError::Protocol`] without a report (one is attached when it passes
    /// through a connection).
    pub fn protocol(message: impl Into<String>) -> Self {
        HarnessError::Protocol {
            message: message.into(),
            report: Report::default(),
        }
    }

    /// The report this error carries, if any.
    pub fn report(&self) -> Option<&Report> {
        match self {
            HarnessError::Timeout { report, .. }
            | HarnessError::Disconnected { report, .. }
            | HarnessError::Rpc { report, .. }
            | HarnessError::UnexpectedSuccess { report, .. }
            | HarnessError::Protocol { report, .. } => Some(report).filter(|r| !r.is_empty()),
            _ => None,
        }
    }

    /// Attaches `with` unless the error already carries a report.
    pub(crate) fn with_report(mut self, with: impl FnOnce() -> Report) -> Self {
        if let HarnessError::Timeout { report, .. }
        | HarnessError::Disconnected { report, .. }
        | HarnessError::Rpc { report, .. }
        | HarnessError::UnexpectedSuccess { report, .. }
        | HarnessError::Protocol { report, .. } = &mut self
            && report.is_empty()
        {
            *report = with();
        }
        self
    }
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)?;
        if let Some(report) = self.report() {
            write!(f, "\n{}", report.render())?;
        }
        Ok(())
    }
}

/// `Result` with [`HarnessError`] as the default error.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
