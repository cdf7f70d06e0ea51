//! The reorder buffer in front of each process's event stream: events reach the
//! caller in `seq` order, each once, whatever order notifications and catch-up reads
//! brought them in; what retention dropped is reported as lost.

use std::collections::BTreeMap;

use exec_protocol::ReadResult;
use tokio::sync::mpsc;

use crate::events::ProcessEvent;

/// Per process: the reorder buffer in front of its event stream.
pub(crate) struct Tracker {
    /// The next seq to deliver; everything below it has been delivered or reported lost.
    pub(crate) next_seq: u64,
    pending: BTreeMap<u64, ProcessEvent>,
    sender: mpsc::UnboundedSender<ProcessEvent>,
    /// The exit event has been received (delivered or buffered).
    exit_seen: bool,
    /// `Closed` or `Failed` was sent: nothing more goes out.
    pub(crate) done: bool,
    /// `process/start` was answered. Until then a catch-up read may reach the server
    /// before the start does and find no such process; that is not a failure.
    pub(crate) started: bool,
}

impl Tracker {
    /// A process whose start is about to be sent.
    pub(crate) fn new(sender: mpsc::UnboundedSender<ProcessEvent>) -> Self {
        Self {
            next_seq: 1,
            pending: BTreeMap::new(),
            sender,
            exit_seen: false,
            done: false,
            started: false,
        }
    }

    pub(crate) fn deliver(&mut self, seq: u64, event: ProcessEvent) {
        if self.done || seq < self.next_seq {
            return;
        }
        self.exit_seen |= matches!(event, ProcessEvent::Exited { .. });
        self.pending.insert(seq, event);
        self.flush();
    }

    /// Sends every buffered event that is next in line.
    fn flush(&mut self) {
        while let Some(event) = self.pending.remove(&self.next_seq) {
            self.next_seq += 1;
            self.send(event);
            if self.done {
                return;
            }
        }
    }

    fn send(&mut self, event: ProcessEvent) {
        if matches!(event, ProcessEvent::Closed { .. }) {
            self.done = true;
            self.pending.clear();
        }
        let _ = self.sender.send(event);
    }

    /// Seqs below `seq` can no longer be read: deliver what is buffered, report the rest lost.
    fn skip_to(&mut self, seq: u64) {
        while self.next_seq < seq && !self.done {
            match self.pending.remove(&self.next_seq) {
                Some(event) => {
                    self.next_seq += 1;
                    self.send(event);
                }
                None => {
                    let next_known = self
                        .pending
                        .range(self.next_seq..seq)
                        .next()
                        .map(|(known, _)| *known);
                    let to = next_known.unwrap_or(seq) - 1;
                    let from = self.next_seq;
                    self.next_seq = to + 1;
                    self.send(ProcessEvent::Lost {
                        from_seq: from,
                        to_seq: to,
                    });
                }
            }
        }
        self.flush();
    }

    /// Applies one catch-up read: the exit and close events whose seqs the server gave
    /// (docs/protocol.md §6.3 `exitedSeq`, `closedSeq`) first, so a retention gap cannot
    /// swallow them, then the gap below `firstRetainedSeq`, then the chunks. `finished`:
    /// the read returned no chunk, so every chunk up to `nextSeq` has been read.
    pub(crate) fn catch_up(&mut self, mut read: ReadResult, finished: bool) {
        if let (Some(seq), Some(exit_code)) = (read.exited_seq, read.exit_code) {
            if read.exited && !self.exit_seen {
                self.deliver(seq, exited(seq, exit_code));
            }
        }
        if let Some(seq) = read.closed_seq.filter(|_| read.closed) {
            self.deliver(seq, ProcessEvent::Closed { seq });
        }
        if let Some(first) = read.first_retained_seq {
            if first > self.next_seq {
                self.skip_to(first);
            }
        }
        for chunk in std::mem::take(&mut read.chunks) {
            let (seq, stream, data) = (chunk.seq, chunk.stream, chunk.chunk.into_inner());
            self.deliver(seq, ProcessEvent::Output { seq, stream, data });
        }
        if finished {
            self.infer_exit_and_close(&read);
        }
    }

    /// For a server that does not send `exitedSeq`/`closedSeq`: with every chunk read up
    /// to `read.next_seq` (the next seq the server will assign), the close is the seq
    /// just below it, and the exit is the one seq left that no chunk and no event has.
    fn infer_exit_and_close(&mut self, read: &ReadResult) {
        let closed_seq = (read.closed && read.closed_seq.is_none())
            .then(|| read.next_seq.checked_sub(1))
            .flatten()
            .filter(|seq| *seq >= self.next_seq);
        if read.exited && read.exited_seq.is_none() && !self.exit_seen {
            let exit = (self.next_seq..read.next_seq)
                .find(|seq| !self.pending.contains_key(seq) && Some(*seq) != closed_seq);
            if let (Some(seq), Some(exit_code)) = (exit, read.exit_code) {
                self.deliver(seq, exited(seq, exit_code));
            }
        }
        if let Some(seq) = closed_seq {
            self.deliver(seq, ProcessEvent::Closed { seq });
        }
    }

    pub(crate) fn fail(&mut self, reason: &str) {
        if !self.done {
            self.done = true;
            let _ = self.sender.send(ProcessEvent::Failed {
                reason: reason.to_owned(),
            });
        }
    }
}

/// An exit event rebuilt from a read result, which carries no signal name.
fn exited(seq: u64, exit_code: i32) -> ProcessEvent {
    ProcessEvent::Exited {
        seq,
        exit_code,
        signal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Tracker, mpsc::UnboundedReceiver<ProcessEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut tracker = Tracker::new(sender);
        tracker.started = true;
        (tracker, receiver)
    }

    fn output(seq: u64) -> ProcessEvent {
        ProcessEvent::Output {
            seq,
            stream: exec_protocol::Stream::Stdout,
            data: vec![seq as u8],
        }
    }

    fn drain(receiver: &mut mpsc::UnboundedReceiver<ProcessEvent>) -> Vec<ProcessEvent> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    #[test]
    fn events_are_delivered_in_seq_order_without_duplicates() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(2, output(2));
        assert!(drain(&mut events).is_empty(), "seq 1 first");
        tracker.deliver(1, output(1));
        tracker.deliver(1, output(1));
        tracker.deliver(3, ProcessEvent::Closed { seq: 3 });
        tracker.deliver(4, output(4));
        assert_eq!(
            drain(&mut events),
            [output(1), output(2), ProcessEvent::Closed { seq: 3 }]
        );
    }

    #[test]
    fn retention_gaps_are_reported_as_lost() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        tracker.deliver(6, output(6));
        tracker.skip_to(5);
        tracker.deliver(5, output(5));
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Lost {
                    from_seq: 2,
                    to_seq: 4
                },
                output(5),
                output(6)
            ]
        );
    }

    #[test]
    fn only_the_close_is_rebuilt_when_the_exit_already_arrived() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(
            1,
            ProcessEvent::Exited {
                seq: 1,
                exit_code: 0,
                signal: None,
            },
        );
        let read = ReadResult {
            chunks: vec![],
            next_seq: 3,
            exited: true,
            exit_code: Some(0),
            closed: true,
            failure: None,
            first_retained_seq: Some(1),
            exited_seq: None,
            closed_seq: None,
            sandbox_denied: None,
        };
        tracker.catch_up(read, true);
        assert_eq!(
            drain(&mut events),
            [
                ProcessEvent::Exited {
                    seq: 1,
                    exit_code: 0,
                    signal: None
                },
                ProcessEvent::Closed { seq: 2 }
            ]
        );
    }

    /// A finished read from a server that sends no `exitedSeq`/`closedSeq`.
    fn closed_without_event_seqs(next_seq: u64, exit_code: i32) -> ReadResult {
        ReadResult {
            chunks: vec![],
            next_seq,
            exited: true,
            exit_code: Some(exit_code),
            closed: true,
            failure: None,
            first_retained_seq: Some(1),
            exited_seq: None,
            closed_seq: None,
            sandbox_denied: None,
        }
    }

    #[test]
    fn a_lost_exit_between_chunks_is_rebuilt_and_later_output_follows() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        tracker.deliver(3, output(3));
        tracker.catch_up(closed_without_event_seqs(5, 7), true);
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Exited {
                    seq: 2,
                    exit_code: 7,
                    signal: None
                },
                output(3),
                ProcessEvent::Closed { seq: 4 },
            ]
        );
    }

    #[test]
    fn missing_exit_and_close_are_rebuilt_from_a_read() {
        let (mut tracker, mut events) = tracker();
        tracker.deliver(1, output(1));
        tracker.catch_up(closed_without_event_seqs(4, 3), true);
        assert_eq!(
            drain(&mut events),
            [
                output(1),
                ProcessEvent::Exited {
                    seq: 2,
                    exit_code: 3,
                    signal: None
                },
                ProcessEvent::Closed { seq: 3 }
            ]
        );
    }
}
