//! `writeId` de-duplication (docs/protocol.md §0, §6.4): the last
//! [`REMEMBERED_WRITE_IDS`] ids of one process's accepted writes, each with its status
//! and whether the first write has been answered yet.
//!
//! Only writes whose bytes were queued are recorded (status `accepted`, including an
//! accepted `closeStdin`): `unknownProcess` and `starting` have no process to record
//! them in, and a `stdinClosed` write queued nothing — a re-send of it is answered
//! `stdinClosed` again anyway, since a closed stdin never reopens. A re-send of an
//! accepted write that closed stdin is answered `accepted`, as the first was.
//!
//! Memory: at most [`REMEMBERED_WRITE_IDS`] ids of at most 256 bytes (the protocol's
//! cap, enforced when params are decoded) per process; the oldest is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use exec_protocol::WriteStatus;
use tokio::sync::watch;

/// How many of a process's most recent write ids are remembered.
pub const REMEMBERED_WRITE_IDS: usize = 4096;

#[derive(Default)]
pub(super) struct WriteIds {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    /// Oldest first.
    order: VecDeque<Arc<str>>,
    by_id: HashMap<Arc<str>, Arc<Recorded>>,
}

/// The first write of an id: its status, and whether it has been answered.
struct Recorded {
    status: WriteStatus,
    answered: watch::Sender<bool>,
}

/// A write whose id repeats a remembered one.
pub struct RepeatedWrite(Arc<Recorded>);

impl RepeatedWrite {
    /// The first write's status, once the first write has been answered.
    pub async fn status(self) -> WriteStatus {
        let mut answered = self.0.answered.subscribe();
        // The sender lives in `self`, so this only returns once it is true.
        let _ = answered.wait_for(|answered| *answered).await;
        self.0.status
    }
}

/// Held by the first write of an id until it is answered (or abandoned): dropping it
/// releases repeats waiting for that answer.
pub struct FirstWrite(Option<Arc<Recorded>>);

impl Drop for FirstWrite {
    fn drop(&mut self) {
        if let Some(recorded) = self.0.take() {
            recorded.answered.send_replace(true);
        }
    }
}

pub(super) enum Seen<'a> {
    Repeat(RepeatedWrite),
    New(Recorder<'a>),
}

/// Holds the table locked between looking an id up and recording it, so that the
/// write's bytes are queued, and its id recorded, as one step.
pub(super) struct Recorder<'a> {
    table: Option<MutexGuard<'a, Remembered>>,
    id: Option<&'a str>,
}

impl WriteIds {
    pub(super) fn look_up<'a>(&'a self, id: Option<&'a str>) -> Seen<'a> {
        let Some(id) = id else {
            return Seen::New(Recorder {
                table: None,
                id: None,
            });
        };
        let table = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(recorded) = table.by_id.get(id) {
            return Seen::Repeat(RepeatedWrite(Arc::clone(recorded)));
        }
        Seen::New(Recorder {
            table: Some(table),
            id: Some(id),
        })
    }
}

impl Recorder<'_> {
    /// Records the write's id if its bytes were queued (`accepted`).
    pub(super) fn record(self, status: WriteStatus) -> FirstWrite {
        let (Some(mut table), Some(id)) = (self.table, self.id) else {
            return FirstWrite(None);
        };
        if status != WriteStatus::Accepted {
            return FirstWrite(None);
        }
        let recorded = Arc::new(Recorded {
            status,
            answered: watch::Sender::new(false),
        });
        let id: Arc<str> = Arc::from(id);
        table.order.push_back(Arc::clone(&id));
        table.by_id.insert(id, Arc::clone(&recorded));
        while table.order.len() > REMEMBERED_WRITE_IDS {
            if let Some(oldest) = table.order.pop_front() {
                table.by_id.remove(&oldest);
            }
        }
        FirstWrite(Some(recorded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(ids: &WriteIds, id: &str, status: WriteStatus) -> Option<FirstWrite> {
        match ids.look_up(Some(id)) {
            Seen::New(recorder) => Some(recorder.record(status)),
            Seen::Repeat(_) => None,
        }
    }

    #[tokio::test]
    async fn a_repeat_waits_for_the_first_answer_and_gets_its_status() {
        let ids = WriteIds::default();
        let first = write(&ids, "a", WriteStatus::Accepted).expect("new");
        let Seen::Repeat(repeat) = ids.look_up(Some("a")) else {
            panic!("a repeat");
        };
        let waiting = tokio::spawn(repeat.status());
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "waits while the first is unanswered"
        );
        drop(first);
        assert_eq!(waiting.await.expect("task"), WriteStatus::Accepted);
    }

    #[test]
    fn only_accepted_writes_are_recorded_and_the_oldest_is_forgotten() {
        let ids = WriteIds::default();
        assert!(write(&ids, "closed", WriteStatus::StdinClosed).is_some());
        assert!(write(&ids, "closed", WriteStatus::Accepted).is_some());
        assert!(write(&ids, "closed", WriteStatus::Accepted).is_none());
        for n in 0..REMEMBERED_WRITE_IDS {
            write(&ids, &n.to_string(), WriteStatus::Accepted);
        }
        assert!(
            write(&ids, "closed", WriteStatus::Accepted).is_some(),
            "forgotten"
        );
        assert!(
            write(&ids, "1", WriteStatus::Accepted).is_none(),
            "remembered"
        );
        assert!(matches!(ids.look_up(None), Seen::New(_)));
        let table = ids.inner.lock().unwrap();
        assert_eq!(table.order.len(), REMEMBERED_WRITE_IDS);
        assert_eq!(table.by_id.len(), REMEMBERED_WRITE_IDS);
    }
}
