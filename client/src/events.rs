//! What a started process delivers: [`ProcessEvent`]s, in `seq` order, on its
//! [`ProcessHandle`].

use exec_protocol::Stream;
use tokio::sync::mpsc;

/// One event of a process, delivered in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Output {
        seq: u64,
        stream: Stream,
        data: Vec<u8>,
    },
    Exited {
        seq: u64,
        exit_code: i32,
        /// The killing signal's name (`"SIGKILL"`), when the server sent it; `None` in
        /// an exit rebuilt from a read after a reconnect.
        signal: Option<String>,
    },
    /// The last event: the process exited and all its output has been delivered.
    Closed { seq: u64 },
    /// After a reconnect, these seqs were no longer retained by the server.
    Lost { from_seq: u64, to_seq: u64 },
    /// The transport failed; no further events will come.
    Failed { reason: String },
}

/// A started process: its id and its ordered event stream.
pub struct ProcessHandle {
    id: String,
    events: mpsc::UnboundedReceiver<ProcessEvent>,
}

impl ProcessHandle {
    pub(crate) fn new(id: String, events: mpsc::UnboundedReceiver<ProcessEvent>) -> Self {
        Self { id, events }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event in `seq` order; `None` after `Closed` or `Failed`. Waits as long
    /// as the process runs: wrap it in a timeout to bound it.
    pub async fn next_event(&mut self) -> Option<ProcessEvent> {
        self.events.recv().await
    }
}
