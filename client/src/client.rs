//! [`ExecServerClient`]: connecting, and one typed method per protocol call, all
//! through the generic [`ExecServerClient::call`].

use std::sync::Arc;
use std::time::Duration;

use exec_protocol::{
    encode_notification, Base64Bytes, Call, CanonicalizeParams, CloseParams, CopyParams,
    CreateDirectoryParams, DirectoryEntry, EnvironmentInfo, EnvironmentInfoParams,
    EnvironmentStatus, EnvironmentStatusParams, GetMetadataParams, InitializeParams, Initialized,
    JoinParams, Metadata, Method, Notify, OpenParams, ParentParams, ReadBlockParams,
    ReadBlockResult, ReadDirectoryParams, ReadFileParams, ReadParams, ReadResult, RemoveParams,
    ResizeParams, SignalName, SignalParams, StartParams, TerminateParams, WalkEntry, WalkError,
    WalkOptions, WalkParams, WalkResult, WirePath, WriteFileParams, WriteParams, WriteStatus,
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

/// How long a failed connect waits for a stdio child's stderr to end, so its last
/// lines make it into the error.
const STDERR_WAIT: Duration = Duration::from_millis(500);

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
                "{}: no connection within {:?}",
                transport::describe(&transport),
                options.connect_timeout
            ))
        })?
        .map_err(|err| ClientError::Connect(err.to_string()))?;
        let stderr = opened.stderr;
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
            {
                let mut state = inner.state();
                state.set_revisions(&result);
                state.session_id = Some(result.session_id);
            }
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
            return Err(match (&inner.transport, stderr) {
                (ExecServerTransport::StdioCommand { program, args, .. }, Some(stderr)) => {
                    // Connected but not speaking the protocol: say what the command did
                    // and what it said on stderr (it has been terminated by now).
                    let reason = connection::closed_reason(&inner);
                    let stray = inner.state().stray.clone();
                    let held = stderr.take_held(STDERR_WAIT).await;
                    ClientError::Connect(transport::describe_stdio_failure(
                        &transport::command_line(program, args),
                        reason.as_deref(),
                        stray.as_deref(),
                        &err,
                        held,
                    ))
                }
                _ => err,
            });
        }
        if let Some(stderr) = stderr {
            stderr.release();
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

    /// The protocol revisions the server of the current connection advertised in
    /// `capabilities.revisions` (e.g. `["2026-06", "2026-08"]`; empty if it advertised
    /// none). Re-read at every resume. A `process/write` whose answer was lost is
    /// re-sent only while this contains `"2026-08"`.
    pub fn server_revisions(&self) -> Vec<String> {
        self.inner.state().revisions.clone()
    }

    /// Why the connection ended, once it has (the transport's error, an EOF, a
    /// malformed message); `None` while it is up or reconnecting.
    pub fn disconnect_reason(&self) -> Option<String> {
        crate::connection::closed_reason(&self.inner)
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
    /// method only reads are re-sent after a reconnect, and so is a `process/write` that
    /// carries a `writeId` when the server advertises revision 2026-08 (it
    /// de-duplicates); others whose answer was lost fail with
    /// [`ClientError::ResponseLost`]. The params go out exactly as given: paths are not
    /// rewritten to [`ClientOptions::path_form`] and no `writeId` is added (the typed
    /// methods do both).
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
        let cwd = self.wire_path(&request.cwd);
        let outcome = self.call(&request.into_params(id.clone(), cwd)).await;
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
    /// answer back), within the call timeout. Every write carries a fresh `writeId`;
    /// if the connection drops before the answer, the write is re-sent on the resumed
    /// connection when the server advertises revision 2026-08 (which writes it once),
    /// and fails with [`ClientError::ResponseLost`] otherwise.
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
            write_id: Some(
                self.inner
                    .state()
                    .next_write_id(&self.inner.write_id_prefix),
            ),
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

    /// `path` as this client sends paths ([`ClientOptions::path_form`]): an absolute
    /// path in that form; anything else as given.
    fn wire_path(&self, path: &str) -> WirePath {
        match path.starts_with('/') {
            true => self.inner.options.path_form.render(path.as_bytes()),
            false => WirePath::from(path),
        }
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.read_file_with(path, &FsOptions::default()).await
    }

    /// [`read_file`](Self::read_file) with options (`followSymlinks`, revision 2026-08).
    pub async fn read_file_with(
        &self,
        path: &str,
        options: &FsOptions,
    ) -> Result<Vec<u8>, ClientError> {
        let params = ReadFileParams {
            path: self.wire_path(path),
            follow_symlinks: options.follow_symlinks,
            sandbox: None,
        };
        Ok(self.call(&params).await?.data_base64.into_inner())
    }

    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), ClientError> {
        self.write_file_with(path, data, &FsOptions::default())
            .await
    }

    /// [`write_file`](Self::write_file) with options (`followSymlinks`, revision 2026-08).
    pub async fn write_file_with(
        &self,
        path: &str,
        data: &[u8],
        options: &FsOptions,
    ) -> Result<(), ClientError> {
        let params = WriteFileParams {
            path: self.wire_path(path),
            data_base64: Base64Bytes::from(data),
            follow_symlinks: options.follow_symlinks,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn create_directory(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        self.create_directory_with(path, recursive, &FsOptions::default())
            .await
    }

    /// [`create_directory`](Self::create_directory) with options (`followSymlinks`,
    /// revision 2026-08).
    pub async fn create_directory_with(
        &self,
        path: &str,
        recursive: bool,
        options: &FsOptions,
    ) -> Result<(), ClientError> {
        let params = CreateDirectoryParams {
            path: self.wire_path(path),
            recursive,
            follow_symlinks: options.follow_symlinks,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    pub async fn get_metadata(&self, path: &str) -> Result<Metadata, ClientError> {
        self.get_metadata_with(path, &FsOptions::default()).await
    }

    /// [`get_metadata`](Self::get_metadata) with options (`followSymlinks`, revision
    /// 2026-08).
    pub async fn get_metadata_with(
        &self,
        path: &str,
        options: &FsOptions,
    ) -> Result<Metadata, ClientError> {
        let params = GetMetadataParams {
            path: self.wire_path(path),
            follow_symlinks: options.follow_symlinks,
            sandbox: None,
        };
        self.call(&params).await
    }

    pub async fn read_directory(&self, path: &str) -> Result<Vec<DirectoryEntry>, ClientError> {
        let params = ReadDirectoryParams {
            path: self.wire_path(path),
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
        self.remove_with(path, recursive, force, &FsOptions::default())
            .await
    }

    /// [`remove`](Self::remove) with options (`followSymlinks`, revision 2026-08:
    /// `false` with `recursive` is refused by the server).
    pub async fn remove_with(
        &self,
        path: &str,
        recursive: bool,
        force: bool,
        options: &FsOptions,
    ) -> Result<(), ClientError> {
        let params = RemoveParams {
            path: self.wire_path(path),
            recursive,
            force,
            follow_symlinks: options.follow_symlinks,
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
            source_path: self.wire_path(source),
            destination_path: self.wire_path(destination),
            recursive,
            sandbox: None,
        };
        self.call(&params).await.map(drop)
    }

    /// The canonical path, as a plain path whatever [`ClientOptions::path_form`] is.
    pub async fn canonicalize(&self, path: &str) -> Result<String, ClientError> {
        let params = CanonicalizeParams {
            path: self.wire_path(path),
            sandbox: None,
        };
        plain_path(Method::FsCanonicalize, self.call(&params).await?.path)
    }

    /// [ext] `base` joined with `path`, normalised lexically; a plain path. (`path` may
    /// be relative and is then sent as given.)
    pub async fn join(&self, base: &str, path: &str) -> Result<String, ClientError> {
        let params = JoinParams {
            base_path: self.wire_path(base),
            path: self.wire_path(path),
            sandbox: None,
        };
        plain_path(Method::FsJoin, self.call(&params).await?.path)
    }

    /// [ext] The parent of `path` as a plain path; `None` for the root.
    pub async fn parent(&self, path: &str) -> Result<Option<String>, ClientError> {
        let params = ParentParams {
            path: self.wire_path(path),
            sandbox: None,
        };
        self.call(&params)
            .await?
            .path
            .map(|path| plain_path(Method::FsParent, path))
            .transpose()
    }

    /// Revision 2026-08: opens `path` for [`fs_read_block`](Self::fs_read_block) under
    /// `handle_id` (chosen by the caller, at most 32 bytes, unique in the session);
    /// returns the handle id the server confirmed. Not re-sent after a reconnect (a
    /// second open of one id is refused): a lost answer is
    /// [`ClientError::ResponseLost`]. Handles belong to the session and survive a resume.
    pub async fn fs_open(&self, handle_id: &str, path: &str) -> Result<String, ClientError> {
        let params = OpenParams {
            handle_id: handle_id.to_owned(),
            path: self.wire_path(path),
            sandbox: None,
        };
        Ok(self.call(&params).await?.handle_id)
    }

    /// Revision 2026-08: up to `len` bytes (1..=1 MiB) from `offset` of an open file;
    /// `chunk` is empty and `eof` true at or past the end. Only reads: re-sent after a
    /// reconnect.
    pub async fn fs_read_block(
        &self,
        handle_id: &str,
        offset: u64,
        len: u64,
    ) -> Result<ReadBlockResult, ClientError> {
        let params = ReadBlockParams {
            handle_id: handle_id.to_owned(),
            offset,
            len,
        };
        self.call(&params).await
    }

    /// Revision 2026-08: closes a handle (an unknown one is not an error).
    pub async fn fs_close(&self, handle_id: &str) -> Result<(), ClientError> {
        let params = CloseParams {
            handle_id: handle_id.to_owned(),
        };
        self.call(&params).await.map(drop)
    }

    /// Revision 2026-08: a bounded, breadth-first listing of the tree under `path`.
    /// Entry and error paths are returned as plain paths whatever
    /// [`ClientOptions::path_form`] is.
    pub async fn fs_walk(
        &self,
        path: &str,
        options: WalkOptions,
    ) -> Result<WalkResult, ClientError> {
        let params = WalkParams {
            path: self.wire_path(path),
            options,
            sandbox: None,
        };
        let walk = self.call(&params).await?;
        let plain = |path: WirePath| plain_path(Method::FsWalk, path).map(WirePath::from);
        Ok(WalkResult {
            entries: walk
                .entries
                .into_iter()
                .map(|entry| {
                    Ok(WalkEntry {
                        path: plain(entry.path)?,
                        kind: entry.kind,
                    })
                })
                .collect::<Result<_, ClientError>>()?,
            errors: walk
                .errors
                .into_iter()
                .map(|error| {
                    Ok(WalkError {
                        path: plain(error.path)?,
                        message: error.message,
                    })
                })
                .collect::<Result<_, ClientError>>()?,
            truncated: walk.truncated,
        })
    }

    /// Revision 2026-08: `environment/status` (`"ready"` from a server that can serve).
    pub async fn environment_status(&self) -> Result<EnvironmentStatus, ClientError> {
        self.call(&EnvironmentStatusParams {}).await
    }

    pub async fn environment_info(&self) -> Result<EnvironmentInfo, ClientError> {
        self.call(&EnvironmentInfoParams {}).await
    }
}

/// Options of the `fs/*` calls beyond their required arguments: the `…_with` methods of
/// [`ExecServerClient`]. `Default` sends none of them (today's behaviour).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsOptions {
    /// Revision 2026-08 `followSymlinks`: `Some(false)` makes the server refuse a path
    /// that contains a symbolic link anywhere (`-32600`); `None` leaves it out.
    pub follow_symlinks: Option<bool>,
}

impl FsOptions {
    /// Options with `followSymlinks` set.
    pub fn follow_symlinks(follow: bool) -> Self {
        Self {
            follow_symlinks: Some(follow),
        }
    }
}

/// A path the server sent back, as a plain path: a `file:` URI decoded (bytes that are
/// not UTF-8 become U+FFFD), a plain absolute path unchanged. Anything else is a
/// protocol error naming `method`.
fn plain_path(method: Method, path: WirePath) -> Result<String, ClientError> {
    let resolved = path.resolve().map_err(|err| {
        ClientError::Protocol(format!("{method}: unusable path in the result: {err}"))
    })?;
    Ok(String::from_utf8_lossy(&resolved.bytes).into_owned())
}
