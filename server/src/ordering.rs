//! Arrival order for requests that name the same process (docs/protocol.md §3, "Ordering"):
//! requests run concurrently, but each one that names a `processId` waits for the
//! previous request naming it to finish its ordered part (`Turn::finish`) before it
//! acts. A connection keeps one entry per process id only while a request naming it
//! is unfinished, so the table never outgrows the requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The latest request naming each process id, on one connection.
#[derive(Default)]
pub struct Turns {
    latest: Arc<Mutex<HashMap<String, Latest>>>,
    next_ticket: u64,
}

struct Latest {
    ticket: u64,
    /// Resolves (with an error) when that request's turn is finished.
    finished: oneshot::Receiver<()>,
}

fn lock(latest: &Mutex<HashMap<String, Latest>>) -> MutexGuard<'_, HashMap<String, Latest>> {
    latest.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Turns {
    /// The turn of a new request naming `process_id`, after every earlier one.
    pub fn take(&mut self, process_id: &str) -> Turn {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (finished, receiver) = oneshot::channel();
        let previous = lock(&self.latest).insert(
            process_id.to_owned(),
            Latest {
                ticket,
                finished: receiver,
            },
        );
        Turn {
            previous: previous.map(|latest| latest.finished),
            finished: Some(Finish {
                _signal: finished,
                latest: Arc::clone(&self.latest),
                process_id: process_id.to_owned(),
                ticket,
            }),
        }
    }

    /// Process ids with an unfinished request.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.latest).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request's place in its process's order.
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    finished: Option<Finish>,
}

struct Finish {
    /// Dropping it wakes the next request.
    _signal: oneshot::Sender<()>,
    latest: Arc<Mutex<HashMap<String, Latest>>>,
    process_id: String,
    ticket: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let mut latest = lock(&self.latest);
        // Forget the id unless a later request took the entry over.
        if latest
            .get(&self.process_id)
            .is_some_and(|entry| entry.ticket == self.ticket)
        {
            latest.remove(&self.process_id);
        }
    }
}

impl Turn {
    /// A turn that waits for nothing (requests that name no process).
    pub fn unordered() -> Self {
        Turn {
            previous: None,
            finished: None,
        }
    }

    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the predecessor finished (or was cancelled).
            let _ = previous.await;
        }
    }

    /// Lets the next request for this process proceed (also happens on drop).
    pub fn finish(&mut self) {
        self.finished.take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn requests_for_one_process_run_in_arrival_order() {
        let mut turns = Turns::default();
        let mut first = turns.take("p");
        let mut second = turns.take("p");
        let mut other = turns.take("q");
        tokio::time::timeout(Duration::from_secs(5), other.wait())
            .await
            .expect("another process does not wait");
        first.wait().await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.wait()).await;
        assert!(
            waiting.is_err(),
            "the second waits while the first is unfinished"
        );
        first.finish();
        tokio::time::timeout(Duration::from_secs(5), second.wait())
            .await
            .expect("the second goes once the first finished");
    }

    #[tokio::test]
    async fn an_id_is_forgotten_when_its_last_request_finishes() {
        let mut turns = Turns::default();
        let first = turns.take("p");
        let second = turns.take("p");
        assert_eq!(turns.len(), 1);
        drop(first);
        assert_eq!(turns.len(), 1, "the second request is still unfinished");
        drop(second);
        assert!(turns.is_empty());
        for n in 0..1000 {
            let mut turn = turns.take(&format!("id-{n}"));
            turn.finish();
        }
        assert!(turns.is_empty(), "answered requests leave nothing behind");
    }
}
