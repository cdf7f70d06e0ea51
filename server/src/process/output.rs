//! A process's output sequence and what a read sees of it (docs/protocol.md §6.2,
//! §6.3): one seq counter shared by chunks, exit and close; the retained chunks and
//! their per-process cap; the long-poll wait; and building the `process/read` result
//! within a size reserved beforehand.

use std::collections::VecDeque;
use std::time::Duration;

use exec_protocol::{OutputChunk, ReadResult, Stream};
use tokio::time::Instant;

use super::Process;
use crate::faults::{self, Fault};

pub(super) struct RetainedChunk {
    pub(super) seq: u64,
    pub(super) stream: Stream,
    pub(super) data: Vec<u8>,
}

#[derive(Clone, Copy)]
pub(super) struct ExitInfo {
    pub(super) code: i32,
    pub(super) seq: u64,
}

pub(super) struct OutputState {
    pub(super) next_seq: u64,
    pub(super) chunks: VecDeque<RetainedChunk>,
    pub(super) retained_bytes: usize,
    /// Every chunk with a seq at or above this is still retained.
    pub(super) first_retained_seq: u64,
    pub(super) exit: Option<ExitInfo>,
    /// The `process/exited` notification has been handed to the connection.
    pub(super) exit_announced: bool,
    pub(super) open_streams: usize,
    pub(super) closed_seq: Option<u64>,
    /// The `process/closed` notification has been handed to the connection.
    pub(super) close_announced: bool,
    /// The entry is gone (`release`): nobody can read, so nothing is retained any more.
    pub(super) released: bool,
}

impl OutputState {
    /// Drops the oldest retained chunk; returns its size (0 if none is left).
    pub(super) fn drop_oldest(&mut self) -> usize {
        let Some(evicted) = self.chunks.pop_front() else {
            return 0;
        };
        self.retained_bytes -= evicted.data.len();
        self.first_retained_seq = evicted.seq + 1;
        evicted.data.len()
    }

    pub(super) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Assigns the close event once the exit has been announced and every stream is at
    /// EOF, so `process/closed` is always the last notification a process sends.
    pub(super) fn close_if_finished(&mut self) -> Option<u64> {
        // Negative control: closed at the exit, before the output still to come.
        let streams_done = self.open_streams == 0 || faults::active(Fault::ExitBeforeOutput);
        if self.closed_seq.is_none() && self.exit_announced && streams_done {
            let seq = self.take_seq();
            self.closed_seq = Some(seq);
            return Some(seq);
        }
        None
    }
}

impl Process {
    /// The long-poll wait of a read (docs/protocol.md §6.3): returns at once if there is a
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

    /// The read result (docs/protocol.md §6.3) for chunks after `after_seq`, stopping
    /// before the chunk that would exceed `max_bytes` of data or `size_cap` bytes of
    /// encoding (a size from [`Process::read_size`]), but with at least one chunk.
    pub fn read_now(&self, after_seq: u64, max_bytes: Option<u64>, size_cap: usize) -> ReadResult {
        let state = self.lock_output();
        let chunks: Vec<OutputChunk> = readable_chunks(&state, after_seq, max_bytes, size_cap)
            .map(|chunk| OutputChunk {
                seq: chunk.seq,
                stream: chunk.stream,
                chunk: chunk.data.as_slice().into(),
            })
            .collect();
        let next_seq = chunks.last().map_or(state.next_seq, |chunk| chunk.seq + 1);
        ReadResult {
            chunks,
            next_seq,
            exited: state.exit.is_some(),
            exit_code: state.exit.map(|exit| exit.code),
            closed: state.closed_seq.is_some(),
            failure: None,
            first_retained_seq: Some(state.first_retained_seq),
            exited_seq: state.exit.map(|exit| exit.seq),
            closed_seq: state.closed_seq,
            sandbox_denied: Some(false),
        }
    }
}

/// Bytes of a read result besides its chunks (flags, seqs, the JSON-RPC envelope).
pub(super) const READ_RESULT_OVERHEAD: usize = 512;

/// Bytes of one chunk in a read result: its base64 and its `{"seq","stream","chunk"}`.
pub(super) fn encoded_chunk_size(data_bytes: usize) -> usize {
    data_bytes.div_ceil(3) * 4 + 64
}

/// The retained chunks after `after_seq` that a read returns: in order, stopping
/// before the one that would exceed `max_bytes` of data or `size_cap` bytes encoded,
/// but always at least one.
pub(super) fn readable_chunks(
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
