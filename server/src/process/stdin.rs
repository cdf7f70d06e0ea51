//! The ordered queue in front of a child's stdin (docs/protocol.md §6.4): writes,
//! `closeStdin` and a PTY's interrupt character in arrival order, with a byte count so
//! that a `process/write` can wait for the child to catch up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use exec_protocol::WriteStatus;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use super::spawn::InputWriter;
use crate::faults::{self, Fault};

const PTY_INTERRUPT: u8 = 0x03;
const PTY_END_OF_FILE: u8 = 0x04;

/// Feeds queued writes to the child's stdin in order. Holds only the queue, so the
/// task ends when the queue is shut even if the child never reads.
pub(super) async fn write_stdin(
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

/// The `reorder-writes` fault: forwards `commands`, but holds the first one until the
/// second arrives (or a second has passed) and sends it after that one.
fn swap_first_two(
    mut commands: mpsc::UnboundedReceiver<StdinCommand>,
) -> mpsc::UnboundedReceiver<StdinCommand> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Some(first) = commands.recv().await else {
            return;
        };
        let hold = std::time::Duration::from_secs(1);
        if let Ok(Some(second)) = tokio::time::timeout(hold, commands.recv()).await {
            let _ = sender.send(second);
        }
        let _ = sender.send(first);
        while let Some(command) = commands.recv().await {
            if sender.send(command).is_err() {
                return;
            }
        }
    });
    receiver
}

pub(super) enum StdinCommand {
    Write(Vec<u8>),
    /// Close stdin once everything before it is written (`closeStdin`).
    Close,
}

/// The ordered queue in front of a child's stdin, with a byte count so that writers
/// can wait for the child to catch up.
pub(super) struct StdinQueue {
    sender: Mutex<Option<mpsc::UnboundedSender<StdinCommand>>>,
    pending_bytes: AtomicUsize,
    drained: Notify,
}

impl StdinQueue {
    pub(super) fn new() -> Self {
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

    pub(super) fn open(&self) -> mpsc::UnboundedReceiver<StdinCommand> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.lock() = Some(sender);
        // Negative control: the first two commands change places.
        if faults::active(Fault::ReorderWrites) {
            return swap_first_two(receiver);
        }
        receiver
    }

    pub(super) fn enqueue(&self, data: Vec<u8>, close_after: bool) -> WriteStatus {
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

    pub(super) fn enqueue_interrupt(&self) -> WriteStatus {
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
    pub(super) fn shut(&self) {
        *self.lock() = None;
        self.pending_bytes.store(0, Ordering::SeqCst);
        self.drained.notify_waiters();
    }

    pub(super) async fn drained_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            if self.pending_bytes.load(Ordering::SeqCst) <= limit {
                return;
            }
            notified.await;
        }
    }
}
