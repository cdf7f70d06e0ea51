//! A connection's outbound queue, bounded in bytes (docs/protocol.md §3): every message
//! holds `Room` in the connection's budget from before it is built until the transport
//! has written it out. Requests reserve room for their reply *before* building it, so
//! cheap requests with big replies (pipelined `process/read`, `fs/readFile`) wait
//! instead of piling up replies in memory; the connection stops reading while any
//! request waits. A message larger than the whole budget waits until nothing else is
//! queued and then goes out alone.
//!
//! A session's processes reach the attached connection's queue through a `Notifier`.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Bytes of outbound messages one connection may have queued or being built.
pub const OUTBOUND_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// The connection is gone; nothing can be sent any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection has closed")]
pub struct Closed;

/// One message on its way to the transport, with the room it holds in the budget.
pub struct Queued {
    pub text: String,
    /// Released when the transport drops the message, after writing it.
    _room: Room,
}

/// The transport's end: messages in the order they were queued.
pub type OutboundQueue = mpsc::UnboundedReceiver<Queued>;

/// Creates a connection's queue with a budget of `budget_bytes`.
pub fn channel(budget_bytes: usize) -> (Outbound, OutboundQueue) {
    let (sender, queue) = mpsc::unbounded_channel();
    let capacity = budget_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let budget = Arc::new(Budget {
        room: Arc::new(Semaphore::new(capacity)),
        capacity,
        waiting_replies: watch::Sender::new(0),
    });
    (Outbound { sender, budget }, queue)
}

struct Budget {
    room: Arc<Semaphore>,
    capacity: usize,
    /// Requests waiting for room for their reply; the reader pauses while any do.
    waiting_replies: watch::Sender<usize>,
}

/// The sending end, shared by the connection's request tasks and its session's
/// processes (notifications).
#[derive(Clone)]
pub struct Outbound {
    sender: mpsc::UnboundedSender<Queued>,
    budget: Arc<Budget>,
}

/// Room for one message in the budget.
pub struct Room {
    _permit: OwnedSemaphorePermit,
    sender: mpsc::UnboundedSender<Queued>,
}

impl Room {
    /// Queues `text` in this room. A message a little larger than its estimate still
    /// goes out: estimates bound what is built, they are not a wire limit.
    pub fn send(self, text: String) -> Result<(), Closed> {
        let sender = self.sender.clone();
        sender
            .send(Queued { text, _room: self })
            .map_err(|_| Closed)
    }
}

/// Counts a reply reservation as waiting until it is dropped (granted or cancelled).
struct WaitingReply<'a>(&'a watch::Sender<usize>);

impl<'a> WaitingReply<'a> {
    fn new(waiting: &'a watch::Sender<usize>) -> Self {
        waiting.send_modify(|count| *count += 1);
        Self(waiting)
    }
}

impl Drop for WaitingReply<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

impl Outbound {
    async fn reserve(&self, bytes: usize) -> Result<Room, Closed> {
        let permit = tokio::select! {
            permit = Arc::clone(&self.budget.room).acquire_many_owned(self.permits(bytes)) => {
                permit.map_err(|_| Closed)?
            }
            _ = self.sender.closed() => return Err(Closed),
        };
        Ok(self.room(permit))
    }

    /// The permits a message of `bytes` takes. Bigger than the whole budget: all of it,
    /// i.e. it waits until nothing else is queued, and goes out alone.
    fn permits(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.budget.capacity) as u32
    }

    fn room(&self, permit: OwnedSemaphorePermit) -> Room {
        Room {
            _permit: permit,
            sender: self.sender.clone(),
        }
    }

    /// Room for a reply of about `bytes`, reserved before the reply is built. While
    /// this waits, the connection reads no further requests.
    pub async fn reserve_reply(&self, bytes: usize) -> Result<Room, Closed> {
        let _waiting = WaitingReply::new(&self.budget.waiting_replies);
        self.reserve(bytes).await
    }

    /// Queues a reply that is already built (small ones, and errors).
    pub async fn send_reply(&self, text: String) -> Result<(), Closed> {
        self.reserve_reply(text.len()).await?.send(text)
    }

    /// Queues a reply that is already built if its room is free now, without waiting:
    /// the connection's reader answers this way, as it must never wait on the queue.
    /// Gives the reply back if there is no room; `Err(None)`: the queue is closed.
    pub fn try_send_reply(&self, text: String) -> Result<(), Option<String>> {
        let permits = self.permits(text.len());
        let Ok(permit) = Arc::clone(&self.budget.room).try_acquire_many_owned(permits) else {
            return Err(Some(text));
        };
        self.room(permit).send(text).map_err(|Closed| None)
    }

    /// Queues a notification, waiting for room: a process whose output is not read
    /// fast enough waits here, and so stops reading its child's pipe (backpressure).
    pub async fn send_notification(&self, text: String) -> Result<(), Closed> {
        self.reserve(text.len()).await?.send(text)
    }

    /// Whether some request waits for room for its reply.
    pub fn has_waiting_replies(&self) -> bool {
        *self.budget.waiting_replies.borrow() > 0
    }

    /// Resolves once no request waits for room.
    pub async fn no_waiting_replies(&self) {
        let mut waiting = self.budget.waiting_replies.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = waiting.wait_for(|count| *count == 0).await;
    }

    /// Resolves once the transport dropped its end of the queue.
    pub async fn closed(&self) {
        self.sender.closed().await
    }

    /// Bytes of the budget currently held by queued or reserved messages.
    #[cfg(test)]
    pub fn used_bytes(&self) -> usize {
        self.budget.capacity - self.budget.room.available_permits()
    }
}

/// Room for one request's reply. A handler that builds a big reply reserves room for
/// it first ([`ReplyRoom::reserve`]); any other reply reserves its size once built.
pub struct ReplyRoom {
    outbound: Outbound,
    /// Bytes of the reply besides its result: the request's id, which the peer chose
    /// and may have made long, and the envelope around it.
    envelope_bytes: usize,
    room: Option<Room>,
}

/// The envelope of a reply besides its id and result (`jsonrpc`, `id` and `result` keys).
const ENVELOPE_BYTES: usize = 64;

impl ReplyRoom {
    /// Room for the reply to a request whose id takes `id_bytes` bytes.
    pub fn new(outbound: Outbound, id_bytes: usize) -> Self {
        Self {
            outbound,
            envelope_bytes: id_bytes.saturating_add(ENVELOPE_BYTES),
            room: None,
        }
    }

    /// Waits for room for a reply whose result takes about `result_bytes`.
    pub async fn reserve(&mut self, result_bytes: usize) -> Result<(), Closed> {
        let bytes = result_bytes.saturating_add(self.envelope_bytes);
        self.room = Some(self.outbound.reserve_reply(bytes).await?);
        Ok(())
    }

    /// Queues the reply, in the room reserved for it if any.
    pub async fn send(self, text: String) -> Result<(), Closed> {
        match self.room {
            Some(room) => room.send(text),
            None => self.outbound.send_reply(text).await,
        }
    }
}

/// Where a session's notifications go: the attached connection, or nowhere.
#[derive(Clone, Default)]
pub struct Notifier {
    target: Arc<Mutex<Option<Outbound>>>,
}

impl Notifier {
    fn lock(&self) -> MutexGuard<'_, Option<Outbound>> {
        self.target
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn attach(&self, outbound: Outbound) {
        *self.lock() = Some(outbound);
    }

    pub fn detach(&self) {
        *self.lock() = None;
    }

    /// Delivers one notification, waiting while the connection's budget is full.
    pub async fn send(&self, message: String) {
        let target = self.lock().clone();
        if let Some(outbound) = target {
            // A closed queue means the connection is going away; the output is retained.
            let _ = outbound.send_notification(message).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn room_is_held_until_the_transport_drops_the_message() {
        let (outbound, mut queue) = channel(100);
        outbound.send_reply("x".repeat(60)).await.expect("send");
        assert_eq!(outbound.used_bytes(), 60);
        let blocked = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send_reply("y".repeat(60)).await }
        });
        tokio::time::timeout(WAIT, async {
            while !outbound.has_waiting_replies() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second reply waits for room");
        let first = queue.recv().await.expect("first");
        assert_eq!(first.text.len(), 60);
        assert!(
            !blocked.is_finished(),
            "room is still held by the unwritten message"
        );
        drop(first);
        tokio::time::timeout(WAIT, blocked)
            .await
            .expect("room freed")
            .expect("task")
            .expect("sent");
        assert!(!outbound.has_waiting_replies());
        assert_eq!(queue.recv().await.expect("second").text.len(), 60);
    }

    #[tokio::test]
    async fn a_message_bigger_than_the_budget_goes_out_alone() {
        let (outbound, mut queue) = channel(100);
        outbound
            .send_notification("a".repeat(10))
            .await
            .expect("send");
        let big = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send_reply("b".repeat(1000)).await }
        });
        let small = queue.recv().await.expect("small");
        tokio::time::timeout(WAIT, async {
            while !outbound.has_waiting_replies() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the big reply waits while anything else is queued");
        drop(small);
        tokio::time::timeout(WAIT, big)
            .await
            .expect("sent once alone")
            .expect("task")
            .expect("sent");
        assert_eq!(outbound.used_bytes(), 100, "it holds the whole budget");
        assert_eq!(queue.recv().await.expect("big").text.len(), 1000);
        assert_eq!(outbound.used_bytes(), 0);
    }

    #[tokio::test]
    async fn waiting_ends_with_an_error_when_the_transport_goes() {
        let (outbound, queue) = channel(10);
        let _held = outbound.reserve_reply(10).await.expect("room");
        let waiting = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send_reply("z".repeat(5)).await }
        });
        drop(queue);
        let outcome = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(outcome, Err(Closed));
    }
}
