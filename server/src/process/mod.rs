//! One managed child process and its lifecycle: spawning it, pumping its pipes into
//! its output sequence, announcing its exit and close, signals, resizing and killing
//! its tree. What a read sees is in `output`, the stdin queue in `stdin`, the
//! server-wide output budget in `retention`.
//!
//! A process owns the tasks that pump its pipes and wait for its exit; they hold an
//! `Arc<Process>` and end on their own once the streams close and the child has exited.
//! Reaping the child is its `Tree`'s business.

mod clone_exec;
mod env;
mod leader;
mod output;
mod pty;
mod reader;
mod retention;
mod spawn;
mod stdin;
mod tree;
mod write_ids;

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use exec_protocol::{encode_notification, Notify as _, ProcessClosed, ProcessExited};
use exec_protocol::{Stream, WriteStatus};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::containment::Containment;
use crate::faults::{self, Fault};
use crate::outbound::Notifier;
use crate::watchdog::Watchdog;
use clone_exec::CgroupFds;
pub use env::child_environment;
use leader::Exit;
use output::{ExitInfo, OutputState, RetainedChunk};
use reader::OutputReader;
use retention::MemberKey;
pub use retention::RetentionPool;
pub use spawn::{raise_open_file_limit, SpawnFailure, SpawnRequest};
use stdin::{write_stdin, StdinQueue};
use tree::Tree;
pub use write_ids::{FirstWrite, RepeatedWrite};
use write_ids::{Seen, WriteIds};

/// Largest payload of one `process/output` notification.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// A `process/write` is answered once the stdin queue holds at most this much, so a
/// child that never reads stdin cannot make the server buffer without bound.
const STDIN_HIGH_WATER_BYTES: usize = 1024 * 1024;

pub struct Process {
    id: String,
    /// The child, its descendants and what contains them; shared with the wait task,
    /// which reaps the child once the tree is dead or empty.
    tree: Arc<Tree>,
    is_pty: bool,
    /// Kept for resizing while the process runs; dropped at close (the reader's own
    /// copy is closed at the tree's teardown).
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
    /// `writeId`s of recent writes, for de-duplication.
    write_ids: WriteIds,
    notifier: Notifier,
}

/// What became of a `process/write` (see [`Process::write_stdin`]).
pub enum StdinWrite {
    /// Not seen before: queued, or refused, now. Answer `status` once the backlog has
    /// drained (if accepted), then drop `first`.
    New {
        status: WriteStatus,
        first: FirstWrite,
    },
    /// Its `writeId` repeats a remembered write: nothing was queued; the answer is the
    /// first write's.
    Repeat(RepeatedWrite),
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
    ) -> Result<Arc<Process>, SpawnFailure> {
        let cgroup = containment.process_cgroup().map_err(|err| {
            SpawnFailure::Setup(std::io::Error::new(
                err.kind(),
                format!("cannot create its cgroup: {err}"),
            ))
        })?;
        let fds = cgroup.as_ref().map(|cgroup| CgroupFds {
            dir: cgroup.dir.as_raw_fd(),
            procs: cgroup.procs.as_raw_fd(),
        });
        let spawned = spawn::spawn(request, fds);
        containment.replenish();
        // The child is in its cgroup (or failed); the descriptors are done with.
        let cgroup = cgroup.map(|cgroup| cgroup.cgroup);
        let spawned = match spawned {
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
                close_announced: false,
                released: false,
            }),
            changes: watch::Sender::new(0),
            stdin: Arc::new(StdinQueue::new()),
            write_ids: WriteIds::default(),
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
            // A scheduling hint, not an ordering guarantee (the notifications are
            // already queued): let the writer, woken just now on this thread, send
            // `process/exited` before reaping's blocking cgroupfs calls run here.
            tokio::task::yield_now().await;
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

    /// A `process/write` (docs/protocol.md §6.4): queues `data` for the child's stdin
    /// (and closes it after if asked); the effect is ordered when this returns, and an
    /// accepted write awaits [`Process::stdin_backlog_drained`] before answering. A
    /// `write_id` repeating one of the process's last `REMEMBERED_WRITE_IDS` (4096)
    /// recorded ids queues nothing. An accepted write's id is recorded as its bytes are
    /// queued, in the same step.
    pub fn write_stdin(
        &self,
        data: Vec<u8>,
        close_after: bool,
        write_id: Option<&str>,
    ) -> StdinWrite {
        // Negative control: every write is taken as new.
        let write_id = write_id.filter(|_| !faults::active(Fault::IgnoreWriteId));
        match self.write_ids.look_up(write_id) {
            Seen::Repeat(repeat) => StdinWrite::Repeat(repeat),
            Seen::New(recorder) => {
                let status = self.stdin.enqueue(data, close_after);
                StdinWrite::New {
                    status,
                    first: recorder.record(status),
                }
            }
        }
    }

    pub async fn stdin_backlog_drained(&self) {
        self.stdin.drained_below(STDIN_HIGH_WATER_BYTES).await
    }

    async fn pump_output(self: Arc<Self>, stream: Stream, reader: OutputReader) {
        let mut at_eof = false;
        let mut first_chunk = true;
        while !at_eof {
            let chunk;
            (chunk, at_eof) = reader.read_chunk(MAX_CHUNK_BYTES).await;
            if chunk.is_empty() {
                continue;
            }
            // Negative controls: a lost chunk, or one published twice.
            if faults::active(Fault::DropOutputChunk) && std::mem::take(&mut first_chunk) {
                continue;
            }
            if faults::active(Fault::DuplicateOutputChunk) {
                self.publish_output(stream, chunk.clone()).await;
            }
            self.publish_output(stream, chunk).await;
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
            self.close_announced();
        }
        self.tree.close_at_teardown(reader);
    }

    async fn publish_output(&self, stream: Stream, data: Vec<u8>) {
        let notification = {
            let mut state = self.lock_output();
            let seq = state.take_seq();
            let notification =
                exec_protocol::fast::encode_output_notification(&self.id, seq, stream, &data);
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
        // Negative control: the status is lost, as if reaping had failed.
        let code = if faults::active(Fault::LoseExitCode) {
            -1
        } else {
            code
        };
        let exited = {
            let mut state = self.lock_output();
            let seq = state.take_seq();
            state.exit = Some(ExitInfo { code, seq });
            let params = ProcessExited {
                process_id: self.id.clone(),
                seq,
                exit_code: code,
                signal: signal.map(str::to_owned),
                sandbox_denied: Some(false),
            };
            encode_notification(ProcessExited::METHOD, &params)
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
            self.close_announced();
        }
    }

    fn close_announced(&self) {
        self.lock_output().close_announced = true;
        self.changes.send_modify(|version| *version += 1);
    }

    /// Resolves once a process that has already exited has handed its last notification
    /// (`process/closed`) to the connection; at once for one still running. A stdio
    /// connection ending at EOF waits for this, so that the notifications of a process
    /// that just exited are not cut off (docs/protocol.md §2.2).
    pub async fn announced_if_exited(&self) {
        let mut changes = self.changes.subscribe();
        loop {
            {
                let state = self.lock_output();
                if state.exit.is_none() || state.close_announced {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
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
        let params = ProcessClosed {
            process_id: self.id.clone(),
            seq,
        };
        encode_notification(ProcessClosed::METHOD, &params)
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
