//! Processes on a connection: [`ProcessSpec`] (typed `process/start` params with test
//! defaults), [`ProcessId`], and [`ProcessOutput`] collected either by pulling with
//! `process/read` or from the buffered notifications.

use std::time::Duration;

use exec_protocol::{EnvPolicy, Inherit, NotificationMethod, ReadParams, StartParams, Stream};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::{HarnessError, Result};
use crate::event::Event;

/// A process id chosen by the harness (or by you, with [`ProcessSpec::id`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessId(pub String);

impl AsRef<str> for ProcessId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a process wrote, by stream, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Bytes of the `stdout` stream.
    pub stdout: Vec<u8>,
    /// Bytes of the `stderr` stream.
    pub stderr: Vec<u8>,
    /// Bytes of the `pty` stream (processes started with `tty`).
    pub pty: Vec<u8>,
    /// The exit code (128 + N for a signal), once known.
    pub exit_code: Option<i32>,
    /// The killing signal's name (`"SIGKILL"`), from `process/exited` (notifications only).
    pub signal: Option<String>,
}

impl ProcessOutput {
    /// `stdout` as (lossy) UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// `stderr` as (lossy) UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn push(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
            Stream::Pty => self.pty.extend_from_slice(data),
        }
    }
}

/// How to start a process: argv plus options, as typed `process/start` params.
/// Defaults: a harness-chosen id, the test's current directory,
/// `envPolicy {inherit: "core"}` (PATH, HOME, … from the server), no tty, no stdin.
///
/// ```
/// use exec_server_harness::ProcessSpec;
/// let spec = ProcessSpec::new(["cat"]).id("cat-1").pipe_stdin(true).env("LANG", "C");
/// # let _ = spec;
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    id: Option<String>,
    params: StartParams,
}

impl ProcessSpec {
    /// A spec for `argv` with the defaults above.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cwd = std::env::current_dir()
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".to_owned());
        let mut params = StartParams::new("", argv, cwd);
        params.env_policy = Some(EnvPolicy {
            inherit: Inherit::Core,
            ..EnvPolicy::default()
        });
        Self { id: None, params }
    }

    /// Uses this `processId` instead of a generated one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The working directory (absolute).
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.params.cwd = cwd.into().into();
        self
    }

    /// One variable of `env` (overlaid last on the policy's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.env.insert(key.into(), value.into());
        self
    }

    /// Replaces `envPolicy`; `None` makes the child's environment exactly `env`.
    pub fn env_policy(mut self, policy: Option<EnvPolicy>) -> Self {
        self.params.env_policy = policy;
        self
    }

    /// Runs the process on a PTY (24×80); output arrives on the `pty` stream.
    pub fn tty(mut self, tty: bool) -> Self {
        self.params.tty = tty;
        self
    }

    /// Gives the process a writable stdin pipe.
    pub fn pipe_stdin(mut self, pipe_stdin: bool) -> Self {
        self.params.pipe_stdin = pipe_stdin;
        self
    }

    /// Overrides `argv[0]` as the process sees it.
    pub fn arg0(mut self, arg0: impl Into<String>) -> Self {
        self.params.arg0 = Some(arg0.into());
        self
    }

    /// The `process/start` params, with `process_id` as the id.
    pub fn into_params(self, process_id: impl Into<String>) -> StartParams {
        StartParams {
            process_id: process_id.into(),
            ..self.params
        }
    }

    pub(crate) fn chosen_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

impl Connection {
    /// Reads a process's output with `process/read` until it is closed, within the
    /// default deadline. Fails if retention dropped output the reader had not seen,
    /// since the result would not be the whole output.
    pub async fn read_process_to_end(&self, process_id: impl AsRef<str>) -> Result<ProcessOutput> {
        self.read_to_end_for(process_id.as_ref(), self.default_wait())
            .await
    }

    /// Like [`read_process_to_end`](Self::read_process_to_end) with a logical deadline
    /// (× the time scale).
    pub async fn read_process_to_end_within(
        &self,
        process_id: impl AsRef<str>,
        within: Duration,
    ) -> Result<ProcessOutput> {
        self.read_to_end_for(process_id.as_ref(), self.scaled(within))
            .await
    }

    async fn read_to_end_for(&self, process_id: &str, within: Duration) -> Result<ProcessOutput> {
        let deadline = Instant::now() + within;
        let mut output = ProcessOutput::default();
        let mut after_seq = 0u64;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(HarnessError::Timeout {
                    expected: format!("process {process_id} to close"),
                    waited: within,
                    arrived: format!(
                        "{} stdout, {} stderr, {} pty bytes; exit code {:?}",
                        output.stdout.len(),
                        output.stderr.len(),
                        output.pty.len(),
                        output.exit_code
                    ),
                    report: self.report(),
                });
            }
            let params = ReadParams {
                process_id: process_id.to_owned(),
                after_seq,
                max_bytes: None,
                wait_ms: remaining.as_millis().min(1_000) as u64,
            };
            let result = self.call(&params).await?;
            if let Some(first_retained) = result.first_retained_seq
                && after_seq + 1 < first_retained
            {
                return Err(HarnessError::Protocol {
                    message: format!(
                        "output of {process_id} was lost: seqs {}..{first_retained} are no longer retained",
                        after_seq + 1
                    ),
                    report: self.report(),
                });
            }
            for chunk in &result.chunks {
                output.push(chunk.stream, &chunk.chunk);
            }
            if result.exit_code.is_some() {
                output.exit_code = result.exit_code;
            }
            after_seq = result.next_seq.saturating_sub(1);
            if result.chunks.is_empty() && result.closed {
                return Ok(output);
            }
        }
    }

    /// Waits (default deadline) for `process/closed` of `process_id` and returns what
    /// the process's notifications carried, with the `signal` of its `process/exited`.
    /// Fails unless its notifications use one gap-free seq space ending with
    /// `process/closed`. Nothing is consumed: the events stay buffered.
    pub async fn notified_output(&self, process_id: impl AsRef<str>) -> Result<ProcessOutput> {
        self.notified_output_within_for(process_id.as_ref(), self.default_wait())
            .await
    }

    /// Like [`notified_output`](Self::notified_output) with a logical deadline (× the
    /// time scale).
    pub async fn notified_output_within(
        &self,
        process_id: impl AsRef<str>,
        within: Duration,
    ) -> Result<ProcessOutput> {
        self.notified_output_within_for(process_id.as_ref(), self.scaled(within))
            .await
    }

    async fn notified_output_within_for(
        &self,
        process_id: &str,
        within: Duration,
    ) -> Result<ProcessOutput> {
        let events = self
            .wait_for(
                &format!("{} of {process_id}", NotificationMethod::ProcessClosed),
                within,
                |inbox| {
                    inbox
                        .events
                        .iter()
                        .any(|event| event.is_closed(process_id))
                        .then(|| inbox.events.iter().cloned().collect::<Vec<_>>())
                },
            )
            .await?;
        let mut mine: Vec<Event> = events
            .into_iter()
            .filter(|event| event.process_id() == Some(process_id))
            .collect();
        mine.sort_by_key(Event::seq);
        let seqs: Vec<u64> = mine.iter().filter_map(Event::seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        let violation = |message: String| HarnessError::Protocol {
            message,
            report: self.report(),
        };
        if seqs != expected || seqs.len() != mine.len() {
            return Err(violation(format!(
                "{process_id}: one gap-free seq space per process expected, got seqs {seqs:?}"
            )));
        }
        if mine.last().and_then(Event::kind) != Some(NotificationMethod::ProcessClosed) {
            return Err(violation(format!(
                "{process_id}: {} must come last",
                NotificationMethod::ProcessClosed
            )));
        }
        let mut output = ProcessOutput::default();
        for event in &mine {
            match event.kind() {
                Some(NotificationMethod::ProcessOutput) => {
                    let (Some(stream), Some(data)) = (event.stream(), event.chunk()) else {
                        return Err(violation(format!(
                            "bad {}: {event}",
                            NotificationMethod::ProcessOutput
                        )));
                    };
                    output.push(stream, &data);
                }
                Some(NotificationMethod::ProcessExited) => {
                    output.exit_code = event.exit_code();
                    output.signal = event.signal().map(str::to_owned);
                }
                _ => {}
            }
        }
        Ok(output)
    }

    /// Waits (default deadline) until the output a process has sent in notifications so
    /// far (every stream, in seq order, decoded lossily) satisfies `done`, and returns
    /// that text. Nothing is consumed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// let conn = exec_server_harness::exec_server().await?.connect().await?;
    /// let session = conn.initialize("doc").await?;
    /// let pid = session.start(["sh", "-c", "echo ready; exec sleep 10"]).await?;
    /// conn.wait_for_output(&pid, |text| text.contains("ready\n")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_output(
        &self,
        process_id: impl AsRef<str>,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let process_id = process_id.as_ref();
        let text_of = |events: &mut dyn Iterator<Item = &Event>| -> String {
            let mut output: Vec<&Event> = events.filter(|e| e.is_output(process_id)).collect();
            output.sort_by_key(|e| e.seq());
            let bytes: Vec<u8> = output
                .iter()
                .flat_map(|e| e.chunk().unwrap_or_default())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let events = self
            .wait_for_events(&format!("output of {process_id}"), |events| {
                done(&text_of(&mut events.iter()))
            })
            .await?;
        Ok(text_of(&mut events.iter()))
    }
}
