//! One managed child process: its output sequence (chunks, exit, close), retention,
//! long-poll reads, the ordered stdin queue, signals and killing its tree.
//!
//! A process owns the tasks that pump its pipes and wait for its exit; they hold an
//! `Arc<Process>` and end on their own once the streams close and the child has exited.
//! Reaping the child is its `Tree`'s business.

pub mod env;
mod leader;
mod pty;
pub mod retention;
mod spawn;
mod tree;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::FutureExt as _;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::containment::Containment;
use crate::protocol::{Stream, WriteStatus};
use crate::session::Notifier;
use crate::watchdog::Watchdog;
pub(crate) use leader::keep_children_for_us_to_reap;
use leader::Exit;
use retention::{MemberKey, RetentionPool};
pub use spawn::{raise_open_file_limit, SpawnRequest};
use spawn::{InputWriter, OutputReader};
use tree::Tree;

/// Largest payload of one `process/output` notification.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// A `process/write` is answered once the stdin queue holds at most this much, so a
/// child that never reads stdin cannot make the server buffer without bound.
const STDIN_HIGH_WATER_BYTES: usize = 1024 * 1024;
const PTY_INTERRUPT: u8 = 0x03;
const PTY_END_OF_FILE: u8 = 0x04;

pub struct Process {
    id: String,
    /// The child, its descendants and what contains them; shared with the wait task,
    /// which reaps the child once the tree is dead or empty.
    tree: Arc<Tree>,
    is_pty: bool,
    /// Kept for resizing while the process runs; dropped at close to free the fd.
    pty: Mutex<Option<pty::PtyMaster>>,
    retention_bytes: usize,
    /// The server-wide budget this process's retained output counts against.
    pool: Arc<RetentionPool>,
    pool_key: MemberKey,
    output: Mutex<OutputState>,
    /// Bumped on every change of `output`; long-polls wait on it.
    changes: watch::Sender<u64>,
    /// Shared with the stdin writer task, which must not keep the whole process alive.
    stdin: Arc<StdinQueue>,
    notifier: Notifier,
}

struct RetainedChunk {
    seq: u64,
    stream: Stream,
    data: Vec<u8>,
}

#[derive(Clone, Copy)]
struct ExitInfo {
    code: i32,
    seq: u64,
}

struct OutputState {
    next_seq: u64,
    chunks: VecDeque<RetainedChunk>,
    retained_bytes: usize,
    /// Every chunk with a seq at or above this is still retained.
    first_retained_seq: u64,
    exit: Option<ExitInfo>,
    /// The `process/exited` notification has been handed to the connection.
    exit_announced: bool,
    open_streams: usize,
    closed_seq: Option<u64>,
    /// The entry is gone (`release`): nobody can read, so nothing is retained any more.
    released: bool,
}

impl OutputState {
    /// Drops the oldest retained chunk; returns its size (0 if none is left).
    fn drop_oldest(&mut self) -> usize {
        let Some(evicted) = self.chunks.pop_front() else {
            return 0;
        };
        self.retained_bytes -= evicted.data.len();
        self.first_retained_seq = evicted.seq + 1;
        evicted.data.len()
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Assigns the close event once the exit has been announced and every stream is at
    /// EOF, so `process/closed` is always the last notification a process sends.
    fn close_if_finished(&mut self) -> Option<u64> {
        if self.closed_seq.is_none() && self.exit_announced && self.open_streams == 0 {
            let seq = self.take_seq();
            self.closed_seq = Some(seq);
            return Some(seq);
        }
        None
    }
}

impl Process {
    /// Spawns the child described by `request`, in a cgroup of its own if `containment`
    /// has them, and starts its pump, stdin and wait tasks. `watchdog` guards its process
    /// group when it has no cgroup.
    pub fn spawn(
        id: String,
        request: &SpawnRequest<'_>,
        retention_bytes: usize,
        pool: Arc<RetentionPool>,
        notifier: Notifier,
        containment: &Containment,
        watchdog: Option<Watchdog>,
    ) -> std::io::Result<Arc<Process>> {
        let cgroup = containment.process_cgroup().map_err(|err| {
            std::io::Error::new(err.kind(), format!("cannot create its cgroup: {err}"))
        })?;
        let spawned = match spawn::spawn(request, cgroup.as_ref()) {
            Ok(spawned) => spawned,
            Err(err) => {
                // The child that may have joined it was reaped by the failed spawn.
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(err);
            }
        };
        let tree = Arc::new(Tree::new(spawned.pid, cgroup, watchdog));
        let leader = spawned.leader;
        let process = Arc::new(Process {
            id,
            tree: Arc::clone(&tree),
            is_pty: spawned.pty.is_some(),
            pty: Mutex::new(spawned.pty),
            retention_bytes,
            pool_key: pool.next_key(),
            pool,
            output: Mutex::new(OutputState {
                next_seq: 1,
                chunks: VecDeque::new(),
                retained_bytes: 0,
                first_retained_seq: 1,
                exit: None,
                exit_announced: false,
                open_streams: spawned.outputs.len(),
                closed_seq: None,
                released: false,
            }),
            changes: watch::Sender::new(0),
            stdin: Arc::new(StdinQueue::new()),
            notifier,
        });
        process.pool.join(process.pool_key, &process);
        for (stream, reader) in spawned.outputs {
            tokio::spawn(Arc::clone(&process).pump_output(stream, reader));
        }
        if let Some(writer) = spawned.stdin {
            let commands = process.stdin.open();
            tokio::spawn(write_stdin(
                Arc::clone(&process.stdin),
                writer,
                commands,
                process.is_pty,
            ));
        }
        let waiter = Arc::clone(&process);
        tokio::spawn(async move {
            let exit = leader.exited().await;
            waiter.publish_exit(exit).await;
            drop(waiter);
            tree.reap_when_done(leader).await;
        });
        Ok(process)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn lock_output(&self) -> MutexGuard<'_, OutputState> {
        // A poisoned lock means a panic mid-update elsewhere; the state is still usable.
        self.output
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Bytes of output this process retains for `process/read`.
    pub fn retained_bytes(&self) -> usize {
        self.lock_output().retained_bytes
    }

    /// Drops this process's oldest retained chunks until at least `wanted` bytes are
    /// freed or nothing is left (the server-wide budget is exceeded); returns the bytes freed.
    fn drop_oldest_output(&self, wanted: usize) -> usize {
        let mut state = self.lock_output();
        let mut freed = 0;
        while freed < wanted && !state.chunks.is_empty() {
            freed += state.drop_oldest();
        }
        drop(state);
        self.pool.release(freed);
        freed
    }

    pub fn has_exited(&self) -> bool {
        self.lock_output().exit.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.lock_output().closed_seq.is_some()
    }

    /// Resolves once the process has exited and every output stream reached EOF.
    pub async fn closed(&self) {
        let mut changes = self.changes.subscribe();
        while !self.is_closed() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// SIGKILLs the whole tree, including members that closed their output and so
    /// outlived `closed`, and (with a cgroup) descendants that left the process group.
    /// Never signals a pid the kernel may have reused (see `tree`).
    pub fn kill_tree(&self) {
        self.tree.kill();
    }

    /// Kills what is left of the tree: the entry is going away.
    pub fn release(&self) {
        self.kill_tree();
        self.stdin.shut();
        // A descendant that escaped the kill may still write to the pipe; what it writes
        // must not keep counting against the server-wide retention budget.
        let mut state = self.lock_output();
        state.released = true;
        let retained = state.retained_bytes;
        state.chunks.clear();
        state.retained_bytes = 0;
        drop(state);
        self.pool.release(retained);
    }

    /// Sends `signal` to the process group. On a PTY an interrupt is the terminal's
    /// interrupt character, queued behind earlier stdin writes, so that whatever holds
    /// the terminal's foreground sees it in order.
    pub fn send_signal(&self, signal: Signal) {
        if signal == Signal::SIGINT
            && self.is_pty
            && self.stdin.enqueue_interrupt() == WriteStatus::Accepted
        {
            return;
        }
        if let Err(err) = self.tree.signal_group(signal) {
            if err != nix::errno::Errno::ESRCH {
                tracing::warn!(process_id = %self.id, %err, "killpg failed");
            }
        }
    }

    /// Resizes the PTY; `None` if the process has no PTY. After close it is a no-op.
    pub fn resize(&self, rows: u16, cols: u16) -> Option<std::io::Result<()>> {
        if !self.is_pty {
            return None;
        }
        let pty = self.pty.lock().unwrap_or_else(|poison| poison.into_inner());
        Some(pty.as_ref().map_or(Ok(()), |pty| pty.resize(rows, cols)))
    }

    /// Queues `data` for the child's stdin (and closes it after if asked). The effect
    /// is ordered when this returns; await [`Process::stdin_backlog_drained`] before answering.
    pub fn enqueue_stdin(&self, data: Vec<u8>, close_after: bool) -> WriteStatus {
        self.stdin.enqueue(data, close_after)
    }

    pub async fn stdin_backlog_drained(&self) {
        self.stdin.drained_below(STDIN_HIGH_WATER_BYTES).await
    }

    /// The long-poll wait of a read (PROTOCOL.md §6.3): returns at once if there is a
    /// chunk or an exit event newer than `after_seq`, or the process is closed;
    /// otherwise when one of these happens, or after `wait`.
    pub async fn wait_for_news(&self, after_seq: u64, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut changes = self.changes.subscribe();
        loop {
            {
                let state = self.lock_output();
                let ready = state.closed_seq.is_some()
                    || state.exit.is_some_and(|exit| exit.seq > after_seq)
                    || state
                        .chunks
                        .back()
                        .is_some_and(|chunk| chunk.seq > after_seq);
                if ready || Instant::now() >= deadline {
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return;
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// An upper bound of the encoded size of what [`Process::read_now`] would return
    /// now, so a caller can reserve room for it before building it.
    pub fn read_size(&self, after_seq: u64, max_bytes: Option<u64>) -> usize {
        let state = self.lock_output();
        READ_RESULT_OVERHEAD
            + readable_chunks(&state, after_seq, max_bytes, usize::MAX)
                .map(|chunk| encoded_chunk_size(chunk.data.len()))
                .sum::<usize>()
    }

    /// The read result (PROTOCOL.md §6.3) for chunks after `after_seq`, stopping
    /// before the chunk that would exceed `max_bytes` of data or `size_cap` bytes of
    /// encoding (a size from [`Process::read_size`]), but with at least one chunk.
    pub fn read_now(&self, after_seq: u64, max_bytes: Option<u64>, size_cap: usize) -> Value {
        let state = self.lock_output();
        let mut chunks = Vec::new();
        let mut last_seq = None;
        for chunk in readable_chunks(&state, after_seq, max_bytes, size_cap) {
            last_seq = Some(chunk.seq);
            chunks.push(json!({
                "seq": chunk.seq,
                "stream": chunk.stream,
                "chunk": BASE64.encode(&chunk.data),
            }));
        }
        let next_seq = last_seq.map_or(state.next_seq, |seq| seq + 1);
        json!({
            "chunks": chunks,
            "nextSeq": next_seq,
            "exited": state.exit.is_some(),
            "exitCode": state.exit.map(|exit| exit.code),
            "closed": state.closed_seq.is_some(),
            "failure": Value::Null,
            "firstRetainedSeq": state.first_retained_seq,
            "exitedSeq": state.exit.map(|exit| exit.seq),
            "closedSeq": state.closed_seq,
        })
    }

    async fn pump_output(self: Arc<Self>, stream: Stream, mut reader: OutputReader) {
        let mut buffer = vec![0u8; MAX_CHUNK_BYTES];
        let mut at_eof = false;
        while !at_eof {
            let mut filled = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Coalesce whatever else is already readable, without waiting for more.
            while filled < buffer.len() {
                match reader.read(&mut buffer[filled..]).now_or_never() {
                    Some(Ok(0)) | Some(Err(_)) => {
                        at_eof = true;
                        break;
                    }
                    Some(Ok(n)) => filled += n,
                    None => break,
                }
            }
            self.publish_output(stream, buffer[..filled].to_vec()).await;
        }
        let notification = {
            let mut state = self.lock_output();
            state.open_streams -= 1;
            state
                .close_if_finished()
                .map(|seq| self.closed_notification(seq))
        };
        self.changes.send_modify(|version| *version += 1);
        if let Some(notification) = notification {
            self.on_closed();
            self.notifier.send(notification).await;
        }
    }

    async fn publish_output(&self, stream: Stream, data: Vec<u8>) {
        let notification = {
            let mut state = self.lock_output();
            let seq = state.take_seq();
            let notification = output_notification(&self.id, seq, stream, &data);
            if !state.released {
                state.retained_bytes += data.len();
                self.pool.reserve(data.len());
                state.chunks.push_back(RetainedChunk { seq, stream, data });
            }
            while state.retained_bytes > self.retention_bytes && state.chunks.len() > 1 {
                let freed = state.drop_oldest();
                self.pool.release(freed);
            }
            notification
        };
        self.pool.trim();
        self.changes.send_modify(|version| *version += 1);
        // Awaiting a slow connection here stops us reading the pipe: backpressure.
        self.notifier.send(notification).await;
    }

    async fn publish_exit(&self, exit: std::io::Result<Exit>) {
        let (code, signal) = match exit {
            Ok(Exit::Code(code)) => (code, None),
            // 128 + N, as shells report it.
            Ok(Exit::Signal(number)) => (
                128 + number,
                Signal::try_from(number).ok().map(Signal::as_str),
            ),
            Err(err) => {
                tracing::error!(process_id = %self.id, %err, "waiting for child failed");
                (-1, None)
            }
        };
        let exited = {
            let mut state = self.lock_output();
            let seq = state.take_seq();
            state.exit = Some(ExitInfo { code, seq });
            let mut params = json!({"processId": self.id, "seq": seq, "exitCode": code});
            if let Some(signal) = signal {
                params["signal"] = json!(signal);
            }
            crate::rpc::encode_notification("process/exited", params)
        };
        self.changes.send_modify(|version| *version += 1);
        self.notifier.send(exited).await;
        let closed = {
            let mut state = self.lock_output();
            state.exit_announced = true;
            state
                .close_if_finished()
                .map(|seq| self.closed_notification(seq))
        };
        if let Some(closed) = closed {
            self.changes.send_modify(|version| *version += 1);
            self.on_closed();
            self.notifier.send(closed).await;
        }
    }

    /// Nothing can read the child's stdin any more once every stream is closed and
    /// the child is reaped; ending the queue ends the writer task and closes the pipe.
    fn on_closed(&self) {
        self.stdin.shut();
        self.pty
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
    }

    fn closed_notification(&self, seq: u64) -> String {
        crate::rpc::encode_notification("process/closed", json!({"processId": self.id, "seq": seq}))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let retained = self.output.get_mut().map_or_else(
            |poison| poison.into_inner().retained_bytes,
            |state| state.retained_bytes,
        );
        self.pool.leave(self.pool_key, retained);
    }
}

/// Bytes of a read result besides its chunks (flags, seqs, the JSON-RPC envelope).
const READ_RESULT_OVERHEAD: usize = 512;

/// Bytes of one chunk in a read result: its base64 and its `{"seq","stream","chunk"}`.
fn encoded_chunk_size(data_bytes: usize) -> usize {
    data_bytes.div_ceil(3) * 4 + 64
}

/// The retained chunks after `after_seq` that a read returns: in order, stopping
/// before the one that would exceed `max_bytes` of data or `size_cap` bytes encoded,
/// but always at least one.
fn readable_chunks(
    state: &OutputState,
    after_seq: u64,
    max_bytes: Option<u64>,
    size_cap: usize,
) -> impl Iterator<Item = &RetainedChunk> {
    let max_bytes = max_bytes.unwrap_or(u64::MAX);
    let mut data_bytes = 0u64;
    let mut encoded_bytes = READ_RESULT_OVERHEAD;
    let mut first = true;
    state
        .chunks
        .iter()
        .filter(move |chunk| chunk.seq > after_seq)
        .take_while(move |chunk| {
            data_bytes = data_bytes.saturating_add(chunk.data.len() as u64);
            encoded_bytes = encoded_bytes.saturating_add(encoded_chunk_size(chunk.data.len()));
            let fits = data_bytes <= max_bytes && encoded_bytes <= size_cap;
            std::mem::take(&mut first) || fits
        })
}

/// Feeds queued writes to the child's stdin in order. Holds only the queue, so the
/// task ends when the queue is shut even if the child never reads.
async fn write_stdin(
    queue: Arc<StdinQueue>,
    mut writer: InputWriter,
    mut commands: mpsc::UnboundedReceiver<StdinCommand>,
    is_pty: bool,
) {
    while let Some(command) = commands.recv().await {
        let data = match command {
            StdinCommand::Write(data) => data,
            // A PTY has no separate stdin to close: EOF is the terminal's EOF character.
            StdinCommand::Close if is_pty => vec![PTY_END_OF_FILE],
            StdinCommand::Close => break,
        };
        let result = match writer.write_all(&data).await {
            Ok(()) => writer.flush().await,
            Err(err) => Err(err),
        };
        queue.written(data.len());
        if result.is_err() {
            break;
        }
    }
    drop(commands);
    queue.shut();
}

fn output_notification(process_id: &str, seq: u64, stream: Stream, data: &[u8]) -> String {
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Pty => "pty",
    };
    let mut message = String::with_capacity(data.len() * 4 / 3 + 160);
    message.push_str(r#"{"jsonrpc":"2.0","method":"process/output","params":{"processId":"#);
    message.push_str(&Value::String(process_id.to_owned()).to_string());
    message.push_str(&format!(r#","seq":{seq},"stream":"{stream}","chunk":""#));
    BASE64.encode_string(data, &mut message);
    message.push_str("\"}}");
    message
}

enum StdinCommand {
    Write(Vec<u8>),
    /// Close stdin once everything before it is written (`closeStdin`).
    Close,
}

/// The ordered queue in front of a child's stdin, with a byte count so that writers
/// can wait for the child to catch up.
struct StdinQueue {
    sender: Mutex<Option<mpsc::UnboundedSender<StdinCommand>>>,
    pending_bytes: AtomicUsize,
    drained: Notify,
}

impl StdinQueue {
    fn new() -> Self {
        Self {
            sender: Mutex::new(None),
            pending_bytes: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<mpsc::UnboundedSender<StdinCommand>>> {
        self.sender
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn open(&self) -> mpsc::UnboundedReceiver<StdinCommand> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.lock() = Some(sender);
        receiver
    }

    fn enqueue(&self, data: Vec<u8>, close_after: bool) -> WriteStatus {
        let mut sender = self.lock();
        let Some(queue) = sender.as_ref() else {
            return WriteStatus::StdinClosed;
        };
        let size = data.len();
        if size > 0 {
            self.pending_bytes.fetch_add(size, Ordering::SeqCst);
            if queue.send(StdinCommand::Write(data)).is_err() {
                self.written(size);
                *sender = None;
                return WriteStatus::StdinClosed;
            }
        }
        if close_after {
            let _ = queue.send(StdinCommand::Close);
            *sender = None;
        }
        WriteStatus::Accepted
    }

    fn enqueue_interrupt(&self) -> WriteStatus {
        self.enqueue(vec![PTY_INTERRUPT], false)
    }

    fn written(&self, size: usize) {
        // Saturating: `shut` may have zeroed the count while a write was in progress.
        let _ = self
            .pending_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
                Some(pending.saturating_sub(size))
            });
        self.drained.notify_waiters();
    }

    /// Nothing more will be written: refuse new writes and release anyone waiting.
    fn shut(&self) {
        *self.lock() = None;
        self.pending_bytes.store(0, Ordering::SeqCst);
        self.drained.notify_waiters();
    }

    async fn drained_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            if self.pending_bytes.load(Ordering::SeqCst) <= limit {
                return;
            }
            notified.await;
        }
    }
}
