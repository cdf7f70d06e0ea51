//! [`ExecServerClient`]: connecting, and one typed method per protocol call, all
//! through the generic [`ExecServerClient::call`].

use std::sync::Arc;
use std::time::Duration;

use exec_protocol::{
    encode_notification, Base64Bytes, Call, CanonicalizeParams, CopyParams, CreateDirectoryParams,
    DirectoryEntry, EnvironmentInfo, EnvironmentInfoParams, GetMetadataParams, InitializeParams,
    Initialized, JoinParams, Metadata, Notify, ParentParams, ReadDirectoryParams, ReadFileParams,
    ReadParams, ReadResult, RemoveParams, ResizeParams, SignalName, SignalParams, StartParams,
    TerminateParams, WriteFileParams, WriteParams, WriteStatus,
};
use tokio::sync::mpsc;

use crate::connection::{self, connection_lost, send_call, send_frame, Deadline, Inner};
use crate::error::ClientError;
use crate::events::ProcessHandle;
use crate::options::ClientOptions;
use crate::reader::start_reader;
use crate::reconnect;
use crate::start::StartRequest;
use crate::tracker::Tracker;
use crate::transport::{self, ExecServerTransport, StdioChild};

/// A connected client. Cheap to clone; the connection (and a stdio child) ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct ExecServerClient {
    inner: Arc<Inner>,
}

impl ExecServerClient {
    /// Opens the transport and performs `initialize` + `initialized`.
    pub async fn connect(
        transport: ExecServerTransport,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let opened = tokio::time::timeout(
            options.connect_timeout,
            transport::open(&transport, options.bearer_token.as_ref()),
        )
        .await
        .map_err(|_| {
            ClientError::Connect(format!(
                "no connection within {:?}",
                options.connect_timeout
            ))
        })?
        .map_err(|err| ClientError::Connect(err.to_string()))?;
        let reconnect_window = options.reconnect;
        let inner = Arc::new(Inner::new(transport, options, opened.writer, opened.child));
        start_reader(&inner, opened.reader);
        let params = InitializeParams {
            client_name: inner.options.client_name.clone(),
            resume_session_id: None,
        };
        let initialize_timeout = inner.options.initialize_timeout;
        let handshake = async {
            let result =
                send_call(&inner, &params, Deadline::after(Some(initialize_timeout))).await?;
            inner.state().session_id = Some(result.session_id);
            let initialized = encode_notification(Initialized::METHOD, &Initialized {});
            connection::within(
                Deadline::after(Some(initialize_timeout)),
                InitializeParams::METHOD,
                send_frame(&inner, &initialized),
            )
            .await
        };
        if let Err(err) = handshake.await {
            if matches!(err, ClientError::Timeout { .. }) {
                connection_lost(&inner, "the handshake timed out", false);
            }
            return Err(err);
        }
        if let Some(window) = reconnect_window.filter(|_| inner.may_resume()) {
            reconnect::supervise(&inner, window);
        }
        Ok(ExecServerClient { inner })
    }

    /// The session id the server assigned.
    pub fn session_id(&self) -> Option<String> {
        self.inner.state().session_id.clone()
    }

    /// The pid of a stdio child, if this client spawned one.
    pub fn child_pid(&self) -> Option<u32> {
        self.inner
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(StdioChild::pid)
    }

    /// Sends any request of the protocol and waits for its typed result, within
    /// [`ClientOptions::call_timeout`] (plus `waitMs` for a `process/read`). Calls whose
    /// method only reads are re-sent after a reconnect; others whose answer was lost
    /// fail with [`ClientError::ResponseLost`].
    pub async fn call<P: Call + 'static>(&self, params: &P) -> Result<P::Result, ClientError> {
        connection::call(&self.inner, params).await
    }

    /// Starts a process; its events arrive on the returned handle in `seq` order. A
    /// process id already in use is refused by the server (`-32600`), and the process
    /// that has it keeps its events.
    pub async fn start(&self, request: StartRequest) -> Result<ProcessHandle, ClientError> {
        let (sender, events) = mpsc::unbounded_channel();
        let (id, ours) = {
            let mut state = self.inner.state();
            let id = match &request.process_id {
                Some(id) => id.clone(),
                None => state.next_process_id(),
            };
            // Registered before sending: notifications may beat the response. An id this
            // client already follows keeps its tracker; the server refuses the start.
            let ours = !state.processes.contains_key(&id);
            if ours {
                state.processes.insert(id.clone(), Tracker::new(sender));
            }
            (id, ours)
        };
        let outcome = self.call(&request.into_params(id.clone())).await;
        let mut state = self.inner.state();
        match outcome {
            Err(err) => {
                if ours {
                    state.processes.remove(&id);
                }
                Err(err)
            }
            // The server started a second process under an id it already had: what
            // belongs to which is lost, so the client cannot follow it.
            Ok(_) if !ours => Err(ClientError::Protocol(format!(
                "{}: the server accepted a second process {id}",
                StartParams::METHOD
            ))),
            Ok(_) => {
                if let Some(tracker) = state.processes.get_mut(&id) {
                    tracker.started = true;
                }
                Ok(ProcessHandle::new(id, events))
            }
        }
    }

    /// Reads retained output after `after_seq`, waiting up to `wait` for some.
    pub async fn read(
        &self,
        process_id: &str,
        after_seq: u64,
        max_bytes: Option<u64>,
        wait: Duration,
    ) -> Result<ReadResult, ClientError> {
        self.call(&ReadParams {
            process_id: process_id.to_owned(),
            after_seq,
            max_bytes,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        })
        .await
    }

    /// Writes to stdin. Waits while the child's stdin is full (the server holds the
    /// answer back), within the call timeout.
    pub async fn write(&self, process_id: &str, data: &[u8]) -> Result<WriteStatus, ClientError> {
        self.write_params(process_id, data, false).await
    }

    /// Writes `data` then closes stdin (the child sees EOF).
    pub async fn close_stdin(
        &self,
        process_id: &str,
        data: &[u8],
    ) -> Result<WriteStatus, ClientError> {
        self.write_params(process_id, data, true).await
    }

    async fn write_params(
        &self,
        process_id: &str,
        data: &[u8],
        close_stdin: bool,
    ) -> Result<WriteStatus, ClientError> {
        let params = WriteParams {
            process_id: process_id.to_owned(),
            chunk: Base64Bytes::from(data),
            close_stdin,
            write_id: None,
        };
        Ok(self.call(&params).await?.status)
    }

    pub async fn signal(&self, process_id: &str, signal: SignalName) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: process_id.to_owned(),
            signal,
        };
        self.call(&params).await.map(drop)
    }

    /// Kills the process tree; returns whether it was still running.
    pub async fn terminate(&self, process_id: &str) -> Result<bool, ClientError> {
        let params = TerminateParams {
            process_id: process_id.to_owned(),
        };
        Ok(self.call(&params).await?.running)
    }

    pub async fn resize(&self, process_id: &str, rows: u16, cols: u16) -> Result<(), ClientError> {
        let params = ResizeParams {
            process_id: process_id.to_owned(),
            rows,
            cols,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let params = ReadFileParams {
            path: path.into(),
            follow_symlinks: None,
            sandbox: None,
        };
        Ok(self.call(&params).await?.data_base64.into_inner())
    }

    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), ClientError> {
        let params = WriteFileParams {
            path: path.into(),
            data_base64: Base64Bytes::from(data),
            follow_symlinks: None,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn create_directory(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let params = CreateDirectoryParams {
            path: path.into(),
            recursive,
            follow_symlinks: None,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn get_metadata(&self, path: &str) -> Result<Metadata, ClientError> {
        let params = GetMetadataParams {
            path: path.into(),
            follow_symlinks: None,
            sandbox: None,
        };
        self.call(&params).await
    }

    pub async fn read_directory(&self, path: &str) -> Result<Vec<DirectoryEntry>, ClientError> {
        let params = ReadDirectoryParams {
            path: path.into(),
            sandbox: None,
        };
        Ok(self.call(&params).await?.entries)
    }

    pub async fn remove(
        &self,
        path: &str,
        recursive: bool,
        force: bool,
    ) -> Result<(), ClientError> {
        let params = RemoveParams {
            path: path.into(),
            recursive,
            force,
            follow_symlinks: None,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn copy(
        &self,
        source: &str,
        destination: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        let params = CopyParams {
            source_path: source.into(),
            destination_path: destination.into(),
            recursive,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn canonicalize(&self, path: &str) -> Result<String, ClientError> {
        let params = CanonicalizeParams {
            path: path.into(),
            sandbox: None,
        };
        Ok(self.call(&params).await?.path.into_string())
    }

    /// [ext] `base` joined with `path`, normalised lexically.
    pub async fn join(&self, base: &str, path: &str) -> Result<String, ClientError> {
        let params = JoinParams {
            base_path: base.into(),
            path: path.into(),
            sandbox: None,
        };
        Ok(self.call(&params).await?.path.into_string())
    }

    /// [ext] The parent of `path`; `None` for the root.
    pub async fn parent(&self, path: &str) -> Result<Option<String>, ClientError> {
        let params = ParentParams {
            path: path.into(),
            sandbox: None,
        };
        Ok(self
            .call(&params)
            .await?
            .path
            .map(|path| path.into_string()))
    }

    pub async fn environment_info(&self) -> Result<EnvironmentInfo, ClientError> {
        self.call(&EnvironmentInfoParams {}).await
    }
}
