//! [`Session`]: a handshaken session on a [`Connection`] (`initialize` + `initialized`,
//! or a resume), with typed process calls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use exec_protocol::{
    Base64Bytes, CanonicalizeParams, InitializeParams, InitializeResult, Method,
    NotificationMethod, PathForm, ReadFileParams, ReadParams, ReadResult, Revision, SignalName,
    SignalParams, TerminateParams, WriteFileParams, WriteParams, WriteStatus, code,
};
use serde_json::{Value, json};

use crate::connection::Connection;
use crate::error::{HarnessError, Result};
use crate::process::{ProcessId, ProcessOutput, ProcessSpec};

impl Connection {
    /// `initialize` + `initialized`: returns the new session.
    pub async fn initialize(&self, client_name: &str) -> Result<Session> {
        self.handshake(client_name, None).await
    }

    /// Resumes a detached session by id (`initialize {resumeSessionId}` + `initialized`).
    pub async fn resume(&self, client_name: &str, session_id: &str) -> Result<Session> {
        self.handshake(client_name, Some(session_id)).await
    }

    /// Resumes `session_id`, retrying while the server still reports it attached (the
    /// end of the previous connection — a reset, a silent peer — is noticed
    /// asynchronously). Fails after the default deadline. "Attached" is code -32010,
    /// or -32600 with "already attached" in the message (2026-06 servers).
    pub async fn resume_when_detached(
        &self,
        client_name: &str,
        session_id: &str,
    ) -> Result<Session> {
        let deadline = tokio::time::Instant::now() + self.default_wait();
        loop {
            match self.resume(client_name, session_id).await {
                Err(HarnessError::Rpc { failure, .. })
                    if (failure.code == code::SESSION_ALREADY_ATTACHED
                        || failure.message.contains("already attached"))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    async fn handshake(&self, client_name: &str, resume: Option<&str>) -> Result<Session> {
        let params = InitializeParams {
            client_name: client_name.to_owned(),
            resume_session_id: resume.map(str::to_owned),
        };
        let id = self.send_call(&params).await?;
        let raw = self.response(&id).await?.into_result()?;
        let result: InitializeResult =
            serde_json::from_value(raw.clone()).map_err(|err| HarnessError::Protocol {
                message: format!(
                    "{} result does not decode: {err}: {raw}",
                    Method::Initialize
                ),
                report: self.report(),
            })?;
        self.notify(NotificationMethod::Initialized, json!({}))
            .await?;
        Ok(Session {
            connection: self.clone(),
            result,
            raw,
        })
    }
}

/// A session on a [`Connection`], after `initialize` and `initialized`.
#[derive(Clone)]
pub struct Session {
    connection: Connection,
    result: InitializeResult,
    raw: Value,
}

impl Session {
    /// The server-assigned session id.
    pub fn id(&self) -> &str {
        &self.result.session_id
    }

    /// The `initialize` result, typed (`serverInfo`, `capabilities`).
    pub fn initialize_result(&self) -> &InitializeResult {
        &self.result
    }

    /// The `initialize` result as received (to probe members the types do not know).
    pub fn initialize_json(&self) -> &Value {
        &self.raw
    }

    /// The connection this session is attached through.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Starts `argv` with the [`ProcessSpec`] defaults.
    pub async fn start<I, S>(&self, argv: I) -> Result<ProcessId>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.start_with(ProcessSpec::new(argv)).await
    }

    /// Starts a process described by `spec`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use exec_server_harness::{exec_server, ProcessSpec};
    /// let server = exec_server().await?;
    /// let session = server.connect().await?.initialize("doc").await?;
    /// let pid = session.start_with(ProcessSpec::new(["cat"]).pipe_stdin(true)).await?;
    /// session.write(&pid, b"ping").await?;
    /// session.close_stdin(&pid).await?;
    /// assert_eq!(session.read_to_end(&pid).await?.stdout, b"ping");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with(&self, spec: ProcessSpec) -> Result<ProcessId> {
        let id = spec.chosen_id().map(str::to_owned).unwrap_or_else(|| {
            let n = self
                .connection
                .inner
                .next_process
                .fetch_add(1, Ordering::Relaxed);
            format!("proc-{n}")
        });
        let mut params = spec.into_params(id.clone());
        // At 2026-08 a plain cwd goes out as a `file:` URI (one given as a URI stays).
        if self.connection.path_form() == PathForm::FileUri {
            params.cwd = self.connection.wire_path(params.cwd.as_str());
        }
        self.connection.call(&params).await?;
        Ok(ProcessId(id))
    }

    /// Writes to stdin; fails unless the server answers `accepted`. At revision
    /// 2026-08 ([`Connection::set_revision`]) it carries a fresh `writeId`.
    pub async fn write(&self, process_id: impl AsRef<str>, data: &[u8]) -> Result<()> {
        let process_id = process_id.as_ref();
        let status = self.write_status(process_id, data).await?;
        self.accepted(process_id, status)
    }

    /// Writes to stdin and returns the status as the server sent it (with a fresh
    /// `writeId` at revision 2026-08).
    pub async fn write_status(
        &self,
        process_id: impl AsRef<str>,
        data: &[u8],
    ) -> Result<WriteStatus> {
        self.write_params(process_id.as_ref(), data, false).await
    }

    /// Closes stdin (the child sees EOF); fails unless the server answers `accepted`.
    /// Carries a fresh `writeId` at revision 2026-08.
    pub async fn close_stdin(&self, process_id: impl AsRef<str>) -> Result<()> {
        let process_id = process_id.as_ref();
        let status = self.write_params(process_id, b"", true).await?;
        self.accepted(process_id, status)
    }

    fn accepted(&self, process_id: &str, status: WriteStatus) -> Result<()> {
        match status {
            WriteStatus::Accepted => Ok(()),
            other => Err(HarnessError::Protocol {
                message: format!(
                    "{} to {process_id} was not accepted: {other:?}",
                    Method::ProcessWrite
                ),
                report: self.connection.report(),
            }),
        }
    }

    /// Writes to stdin with this `writeId` whatever the revision, and returns the
    /// status as the server sent it: send one id twice to see a de-duplicating server
    /// answer the repeat with the first write's status without writing it again.
    pub async fn write_with_id(
        &self,
        process_id: impl AsRef<str>,
        data: &[u8],
        write_id: &str,
    ) -> Result<WriteStatus> {
        self.send_write(process_id.as_ref(), data, false, Some(write_id.to_owned()))
            .await
    }

    async fn write_params(
        &self,
        process_id: &str,
        data: &[u8],
        close: bool,
    ) -> Result<WriteStatus> {
        let write_id = (self.connection.revision() >= Revision::R2026_08)
            .then(|| self.connection.next_write_id());
        self.send_write(process_id, data, close, write_id).await
    }

    async fn send_write(
        &self,
        process_id: &str,
        data: &[u8],
        close: bool,
        write_id: Option<String>,
    ) -> Result<WriteStatus> {
        let params = WriteParams {
            process_id: process_id.to_owned(),
            chunk: Base64Bytes(data.to_vec()),
            close_stdin: close,
            write_id,
        };
        Ok(self.connection.call(&params).await?.status)
    }

    /// `fs/writeFile` of `path` (a `file:` URI at revision 2026-08).
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let params = WriteFileParams {
            path: self.connection.wire_path(path),
            data_base64: Base64Bytes(data.to_vec()),
            follow_symlinks: None,
            sandbox: None,
        };
        self.connection.call(&params).await.map(drop)
    }

    /// `fs/readFile` of `path` (a `file:` URI at revision 2026-08): the bytes.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let params = ReadFileParams {
            path: self.connection.wire_path(path),
            follow_symlinks: None,
            sandbox: None,
        };
        Ok(self.connection.call(&params).await?.data_base64.0)
    }

    /// `fs/canonicalize` of `path` (a `file:` URI at revision 2026-08): the path exactly
    /// as the server sent it (in the request's form, so a URI at 2026-08).
    pub async fn canonicalize(&self, path: &str) -> Result<String> {
        let params = CanonicalizeParams {
            path: self.connection.wire_path(path),
            sandbox: None,
        };
        Ok(self.connection.call(&params).await?.path.into_string())
    }

    /// `process/terminate`; returns whether it was still running.
    pub async fn terminate(&self, process_id: impl AsRef<str>) -> Result<bool> {
        let params = TerminateParams {
            process_id: process_id.as_ref().to_owned(),
        };
        Ok(self.connection.call(&params).await?.running)
    }

    /// `process/signal`.
    pub async fn signal(&self, process_id: impl AsRef<str>, signal: SignalName) -> Result<()> {
        let params = SignalParams {
            process_id: process_id.as_ref().to_owned(),
            signal,
        };
        self.connection.call(&params).await.map(drop)
    }

    /// One `process/read` call.
    pub async fn read(
        &self,
        process_id: impl AsRef<str>,
        after_seq: u64,
        wait_ms: u64,
    ) -> Result<ReadResult> {
        let params = ReadParams {
            process_id: process_id.as_ref().to_owned(),
            after_seq,
            max_bytes: None,
            wait_ms,
        };
        self.connection.call(&params).await
    }

    /// Reads with `process/read` until the process is closed, within the default deadline.
    pub async fn read_to_end(&self, process_id: impl AsRef<str>) -> Result<ProcessOutput> {
        self.connection.read_process_to_end(process_id).await
    }

    /// Like [`read_to_end`](Self::read_to_end) with a logical deadline (× the time scale).
    pub async fn read_to_end_within(
        &self,
        process_id: impl AsRef<str>,
        within: Duration,
    ) -> Result<ProcessOutput> {
        self.connection
            .read_process_to_end_within(process_id, within)
            .await
    }
}
