//! The transport-independent JSON-RPC connection: reads frames from any transport,
//! enforces the handshake (docs/protocol.md §4), answers independent requests concurrently
//! while keeping requests that name the same `processId` in arrival order, and bounds
//! the work in flight. Transports hand it whole frames and drain its outbound queue.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use exec_protocol::{
    classify_value, decode_params, encode_error, is_response_shaped, parse_frame, ErrorObject,
    Family, InitializeParams, Message, Method, NotificationMethod, PartialReply, RequestId,
    MAX_ID_BYTES,
};
use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::faults::{self, Fault};
use crate::handlers;
use crate::ordering::{Turn, Turns};
use crate::outbound::{Outbound, ReplyRoom};
use crate::session::{Generation, Session, STALE_ATTACHMENT};
use crate::state::ServerState;

/// Requests (and queued replies) one connection may have in flight. Reading pauses at
/// this bound instead of buffering without limit; replies never wait on the reader.
const MAX_IN_FLIGHT: usize = 4096;
/// Bytes of request frames one connection may have in flight. Handlers hold their
/// share until they answer (a `process/write` until its data reached the child), so
/// this also bounds what pipelined writes can queue in front of a child's stdin: a
/// queued write holds its decoded bytes only (¾ of its frame), never the frame itself.
const MAX_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// stdio EOF (docs/protocol.md §2.2): how long the requests already read may take to be
/// answered before the connection ends. A long-poll still waiting then returns what it has.
pub const EOF_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// After the grace, how long the long-polls it cut short get to send what they have.
const EOF_LAST_ANSWERS: std::time::Duration = std::time::Duration::from_millis(500);

/// One inbound unit from a transport.
#[derive(Debug)]
pub enum InboundFrame {
    Message(String),
    /// A message over the size limit; it was skipped and the connection goes on.
    Oversized {
        limit: usize,
    },
    /// A binary frame or line that is not UTF-8.
    NotUtf8,
}

/// The inbound half of a transport. `next_frame` returning `None` is a disconnect.
/// It must be cancel-safe: the connection races it against other events.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> impl Future<Output = Option<InboundFrame>> + Send;
}

/// What the envelope of a frame looks like, beyond what `classify` says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// See [`is_response_shaped`].
    Response,
    /// An `id` that is `null`.
    NullId,
    Other,
}

impl Shape {
    fn of(value: &Value) -> Shape {
        if is_response_shaped(value) {
            Shape::Response
        } else if value.get("id").is_some_and(Value::is_null) {
            Shape::NullId
        } else {
            Shape::Other
        }
    }
}

/// Where the connection is in the handshake; after `initialize` it holds the session
/// and the generation it attached at.
enum Phase {
    AwaitingInitialize,
    AwaitingInitialized(Arc<Session>, Generation),
    Ready(Arc<Session>, Generation),
}

struct Connection {
    state: Arc<ServerState>,
    outbound: Outbound,
    /// Whether the session may outlive this connection (websocket) or not (stdio).
    resumable: bool,
    phase: Phase,
    tasks: JoinSet<()>,
    in_flight: Arc<Semaphore>,
    in_flight_bytes: Arc<Semaphore>,
    turns: Turns,
    /// Cancelled when the connection winds down after a stdio EOF and its grace ran out:
    /// long-polls (`process/read`) then return what they have instead of waiting on.
    draining: CancellationToken,
}

/// Why the read loop of a connection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The transport reached EOF (stdin) or the peer disconnected (websocket).
    Disconnect,
    Shutdown,
    /// The transport's writer is gone: nothing we send is heard.
    WriterGone,
}

/// Serves one connection until the transport disconnects or the server shuts down.
/// In-flight requests are cancelled when it returns.
///
/// `resumable` says whether the session may outlive this connection (websocket): then
/// it detaches when the connection ends, and a disconnect cancels in-flight requests at
/// once. Otherwise (stdio) the session is destroyed, and at a disconnect (EOF on stdin)
/// the requests already read are first given [`EOF_GRACE`] to be answered (§2.2).
pub async fn serve(
    state: Arc<ServerState>,
    mut source: impl FrameSource,
    outbound: Outbound,
    resumable: bool,
) {
    let shutdown = state.shutdown.clone();
    let mut connection = Connection {
        state,
        outbound,
        resumable,
        phase: Phase::AwaitingInitialize,
        tasks: JoinSet::new(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        in_flight_bytes: Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES)),
        turns: Turns::default(),
        draining: CancellationToken::new(),
    };
    let ending = loop {
        // While a request waits for room for its reply, read nothing more: replies the
        // peer does not read must not pile up behind requests it keeps sending.
        let replies_wait = connection.outbound.has_waiting_replies();
        tokio::select! {
            frame = source.next_frame(), if !replies_wait => match frame {
                // Negative control: a frame that is not JSON ends the connection unanswered.
                Some(InboundFrame::Message(text))
                    if faults::active(Fault::CloseOnMalformed) && parse_frame(&text).is_err() =>
                {
                    break Ending::Disconnect
                }
                Some(frame) => connection.on_frame(frame).await,
                None => break Ending::Disconnect,
            },
            _ = connection.outbound.no_waiting_replies(), if replies_wait => {}
            Some(_) = connection.tasks.join_next(), if !connection.tasks.is_empty() => {}
            _ = shutdown.triggered() => break Ending::Shutdown,
            // The transport's writer is gone (socket or stdout failed): nobody hears us.
            _ = connection.outbound.closed() => break Ending::WriterGone,
        }
    };
    if ending == Ending::Disconnect && !resumable {
        let grace_ends = tokio::time::Instant::now() + EOF_GRACE;
        // Negative control: no grace, what was read is cancelled below.
        if !faults::active(Fault::CancelAtEof) {
            connection.answer_what_was_read(grace_ends).await;
        }
        connection.settle(grace_ends).await;
    }
    // Cancel in-flight requests first, so a resume is never held up by them, and wait
    // for them to end: a task being polled on another worker thread finishes that poll,
    // and nothing of this connection (a write, say) may take effect after the session
    // is free to be resumed elsewhere.
    connection.tasks.shutdown().await;
    if let Phase::AwaitingInitialized(session, generation) | Phase::Ready(session, generation) =
        &connection.phase
    {
        let registry = &connection.state.registry;
        // At shutdown nothing will be resumed, and no reaper would get to run. (Negative
        // control: a disconnect ends the session as on stdio.)
        let detach = resumable && !faults::active(Fault::KillOnDisconnect);
        if detach && !connection.state.shutdown.is_triggered() {
            registry.connection_ended(session, *generation);
        } else {
            registry.destroy(session);
        }
    }
}

impl Connection {
    /// After EOF on stdin (§2.2): reads nothing more and lets the requests already read
    /// finish within [`EOF_GRACE`]. When it runs out, long-polls return what they have
    /// (they get [`EOF_LAST_ANSWERS`] to do so); whatever is still unfinished after that
    /// is cancelled by the caller, unanswered. Shutdown, or a writer that is gone, ends
    /// the wait at once.
    async fn answer_what_was_read(&mut self, grace_ends: tokio::time::Instant) {
        if !self.finish_tasks_until(grace_ends).await {
            return;
        }
        self.draining.cancel();
        let deadline = tokio::time::Instant::now() + EOF_LAST_ANSWERS;
        if self.finish_tasks_until(deadline).await {
            tracing::warn!(
                unanswered = self.tasks.len(),
                "requests still unfinished after the EOF grace are cancelled"
            );
        }
    }

    /// After EOF on stdin, once the requests are answered: processes that have exited
    /// get what is left of the grace to announce their close, so that their last
    /// notifications are not cut off by the session's end.
    async fn settle(&self, grace_ends: tokio::time::Instant) {
        let Phase::Ready(session, _) = &self.phase else {
            return;
        };
        tokio::select! {
            _ = session.settle_exited(grace_ends) => {}
            _ = self.state.shutdown.triggered() => {}
            _ = self.outbound.closed() => {}
        }
    }

    /// Waits for every task to finish, or until `deadline`: then returns true. Returns
    /// false if all tasks finished, or shutdown was triggered, or the writer is gone.
    async fn finish_tasks_until(&mut self, deadline: tokio::time::Instant) -> bool {
        let shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => if joined.is_none() {
                    return false;
                },
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = shutdown.triggered() => return false,
                _ = self.outbound.closed() => return false,
            }
        }
    }

    async fn on_frame(&mut self, frame: InboundFrame) {
        let text = match frame {
            InboundFrame::Message(text) => text,
            InboundFrame::Oversized { limit } => {
                let error = ErrorObject::invalid_request(format!("message exceeds {limit} bytes"));
                return self.send(encode_error(None, &error)).await;
            }
            InboundFrame::NotUtf8 => {
                let error = ErrorObject::parse("parse error: message is not UTF-8");
                return self.send(encode_error(None, &error)).await;
            }
        };
        // The frame is not needed once classified; drop it before waiting for room.
        let cost = text.len();
        // One parse, checked as `classify` checks it: duplicate keys and more than
        // `MAX_JSON_VALUES` values are parse errors (revision 2026-08).
        let (message, shape) = match parse_frame(&text) {
            Ok(value) => {
                let shape = Shape::of(&value);
                (classify_value(value), shape)
            }
            Err(error) => (Message::Invalid { id: None, error }, Shape::Other),
        };
        drop(text);
        match message {
            // Anything with a usable id, no method, and a result or an error is a
            // response, however malformed its error object: ignored (docs/protocol.md §3).
            _ if shape == Shape::Response => {
                tracing::warn!("ignoring a response from the client; the server sends no requests");
            }
            Message::Invalid { id, error } => {
                tracing::debug!(%error, "invalid frame");
                self.send(encode_error(id.as_ref(), &error)).await
            }
            Message::Response { id, .. } => {
                tracing::warn!(%id, "ignoring a response from the client; the server sends no requests");
            }
            // An error response without a usable id is not a response to anything we
            // sent: it is answered as an invalid request, as revision 2026-06 does.
            Message::Error { .. } => {
                let error = ErrorObject::invalid_request(match shape {
                    Shape::NullId => "id must be a string or an integer",
                    _ => "not a JSON-RPC request",
                });
                self.send(encode_error(None, &error)).await
            }
            Message::Notification { method, .. } => self.on_notification(&method),
            Message::Request { id, method, params } => {
                self.on_request(id, method, params, cost).await
            }
        }
    }

    fn on_notification(&mut self, method: &str) {
        if NotificationMethod::parse(method) != Some(NotificationMethod::Initialized) {
            tracing::warn!(method, "ignoring an unknown client notification");
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::AwaitingInitialize) {
            Phase::AwaitingInitialized(session, generation) => {
                self.phase = Phase::Ready(session, generation)
            }
            other => {
                tracing::warn!("ignoring `initialized` outside the handshake");
                self.phase = other;
            }
        }
    }

    /// `cost`: the request frame's size, held against the in-flight byte budget.
    async fn on_request(&mut self, id: RequestId, method: String, params: Value, cost: usize) {
        let Some(method) = Method::parse(&method) else {
            let error = ErrorObject::method_not_found(&method);
            return self.send(encode_error(Some(&id), &error)).await;
        };
        let session = match (&self.phase, method) {
            (Phase::AwaitingInitialize, Method::Initialize) => {
                let result = self.initialize(params);
                let result = result.map(|result| PartialReply::new(&result));
                return self.send(encode(&id, result)).await;
            }
            (_, Method::Initialize) => {
                let error =
                    ErrorObject::invalid_request("initialize may only be sent once per connection");
                return self.send(encode_error(Some(&id), &error)).await;
            }
            (Phase::AwaitingInitialize, method) => {
                let error = ErrorObject::invalid_request(format!(
                    "client must call initialize before using {} methods",
                    method.family().as_str()
                ));
                return self.send(encode_error(Some(&id), &error)).await;
            }
            (Phase::AwaitingInitialized(..), method) => {
                let error = ErrorObject::invalid_request(format!(
                    "client must send initialized before using {} methods",
                    method.family().as_str()
                ));
                return self.send(encode_error(Some(&id), &error)).await;
            }
            (Phase::Ready(session, generation), _) => {
                if !session.is_current(*generation) {
                    let error = ErrorObject::invalid_request(STALE_ATTACHMENT);
                    return self.send(encode_error(Some(&id), &error)).await;
                }
                (Arc::clone(session), *generation)
            }
        };
        let (session, generation) = session;
        // Methods that cannot wait on anything are answered here, on the reader, when
        // their reply's room is free at once: no task, no hand-off. Otherwise (no room)
        // the built reply waits for room in a task like any other.
        if handlers::is_immediate(method) {
            let state = &self.state;
            // `None` (not an immediate method) cannot come back after `is_immediate`.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                handlers::immediate(state, method, params)
            }))
            .ok()
            .flatten()
            .unwrap_or_else(|| Err(handler_panicked(method)));
            drop(session);
            return self.send_now(encode(&id, result)).await;
        }
        let turn = self.take_turn(method, &params);
        let state = Arc::clone(&self.state);
        let outbound = self.outbound.clone();
        let draining = self.draining.clone();
        self.spawn(cost, async move {
            let mut room = ReplyRoom::new(outbound, id.encoded_len());
            let handler = handlers::dispatch(
                &state, &session, generation, method, params, turn, &draining, &mut room,
            );
            let result = AssertUnwindSafe(handler)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(handler_panicked(method)));
            // A closed queue means the transport is gone; there is nobody left to answer.
            let _ = room.send(encode(&id, result)).await;
        })
        .await;
    }

    fn initialize(
        &mut self,
        params: Value,
    ) -> Result<exec_protocol::InitializeResult, ErrorObject> {
        let params: InitializeParams = decode_params(params)?;
        let registry = &self.state.registry;
        let (session, generation) = match &params.resume_session_id {
            Some(id) => registry.resume(id, self.outbound.clone())?,
            None => registry.create(self.outbound.clone())?,
        };
        tracing::info!(client = %params.client_name, session_id = session.id(), "handshake");
        // Negative control: a log line where only protocol frames may go.
        if faults::active(Fault::StdoutLogLine) {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "handshake: session {}", session.id());
        }
        let result = handlers::initialize::result(&self.state, session.id(), self.resumable);
        self.phase = Phase::AwaitingInitialized(session, generation);
        Ok(result)
    }

    fn take_turn(&mut self, method: Method, params: &Value) -> Turn {
        // Requests of these methods that name one `processId` are applied in arrival order.
        let Some(process_id) = (method.family() == Family::Process)
            .then(|| params.get("processId").and_then(Value::as_str))
            .flatten()
            // An id over the cap is refused when its params are decoded; not worth a key.
            .filter(|process_id| process_id.len() <= MAX_ID_BYTES)
        else {
            return Turn::unordered();
        };
        self.turns.take(process_id)
    }

    /// Sends an answer that is already built: queued at once if its room is free,
    /// else from a task that waits for room (the reader never waits on the queue).
    async fn send_now(&mut self, message: String) {
        if faults::active(Fault::SerialRequests) {
            return self.send(message).await;
        }
        match self.outbound.try_send_reply(message) {
            // Closed: the transport is gone, there is nobody left to answer.
            Ok(()) | Err(None) => {}
            Err(Some(message)) => self.send(message).await,
        }
    }

    /// Sends an answer that is already built (errors, and the `initialize` result).
    async fn send(&mut self, message: String) {
        let outbound = self.outbound.clone();
        self.spawn(1, async move {
            // A closed queue means the transport is gone; there is nobody left to answer.
            let _ = outbound.send_reply(message).await;
        })
        .await;
    }

    /// Runs `work` as a connection task once an in-flight slot and `cost` bytes of the
    /// budget are free. Replies are sent from tasks so the reader never blocks on a
    /// full outbound queue.
    async fn spawn(&mut self, cost: usize, work: impl Future<Output = ()> + Send + 'static) {
        let cost = cost.clamp(1, MAX_IN_FLIGHT_BYTES) as u32;
        let permits = async {
            let slot = Arc::clone(&self.in_flight).acquire_owned().await?;
            let bytes = Arc::clone(&self.in_flight_bytes)
                .acquire_many_owned(cost)
                .await?;
            Ok::<_, tokio::sync::AcquireError>((slot, bytes))
        };
        let permits = tokio::select! {
            permits = permits => permits,
            // Dropping the work here is fine: the connection is ending anyway.
            _ = self.state.shutdown.triggered() => return,
            _ = self.outbound.closed() => return,
        };
        let Ok(permits) = permits else {
            return;
        };
        // Negative control: the reader waits for each request to be done.
        if faults::active(Fault::SerialRequests) {
            return work.await;
        }
        self.tasks.spawn(async move {
            work.await;
            drop(permits);
        });
    }
}

/// The response to request `id`.
/// The answer to a request whose handler panicked (logged: it is a server bug).
fn handler_panicked(method: Method) -> ErrorObject {
    tracing::error!(?method, "handler panicked");
    ErrorObject::internal("internal error while handling the request")
}

fn encode(id: &RequestId, result: Result<PartialReply, ErrorObject>) -> String {
    match result {
        Ok(reply) => reply.with_id(id),
        Err(error) => encode_error(Some(id), &error),
    }
}
