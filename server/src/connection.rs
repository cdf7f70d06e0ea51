//! The transport-independent JSON-RPC connection: reads frames from any transport,
//! enforces the handshake (PROTOCOL.md §4), answers independent requests concurrently
//! while keeping requests that name the same `processId` in arrival order, and bounds
//! the work in flight. Transports hand it whole frames and drain its outbound queue.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::handlers::{self, Method};
use crate::limits::MAX_ID_BYTES;
use crate::ordering::{Turn, Turns};
use crate::outbound::{Outbound, ReplyRoom};
use crate::rpc::{self, Inbound, Reply, Request, RequestId, RpcError};
use crate::server::ServerState;
use crate::session::{Generation, Session, STALE_ATTACHMENT};

/// Requests (and queued replies) one connection may have in flight. Reading pauses at
/// this bound instead of buffering without limit; replies never wait on the reader.
const MAX_IN_FLIGHT: usize = 4096;
/// Bytes of request frames one connection may have in flight. Handlers hold their
/// share until they answer (a `process/write` until its data reached the child), so
/// this also bounds what pipelined writes can queue in front of a child's stdin: a
/// queued write holds its decoded bytes only (¾ of its frame), never the frame itself.
const MAX_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;

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
}

/// Serves one connection until the transport disconnects or the server shuts down.
/// In-flight requests are cancelled when it returns.
///
/// `resumable` says whether the session may outlive this connection (websocket): then
/// it detaches when the connection ends; otherwise (stdio) it is destroyed.
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
    };
    loop {
        // While a request waits for room for its reply, read nothing more: replies the
        // peer does not read must not pile up behind requests it keeps sending.
        let replies_wait = connection.outbound.has_waiting_replies();
        tokio::select! {
            frame = source.next_frame(), if !replies_wait => match frame {
                Some(frame) => connection.on_frame(frame).await,
                None => break,
            },
            _ = connection.outbound.no_waiting_replies(), if replies_wait => {}
            Some(_) = connection.tasks.join_next(), if !connection.tasks.is_empty() => {}
            _ = shutdown.triggered() => break,
            // The transport's writer is gone (socket or stdout failed): nobody hears us.
            _ = connection.outbound.closed() => break,
        }
    }
    // Cancel in-flight requests first, so a resume is never held up by them.
    connection.tasks.abort_all();
    if let Phase::AwaitingInitialized(session, generation) | Phase::Ready(session, generation) =
        &connection.phase
    {
        let registry = &connection.state.registry;
        // At shutdown nothing will be resumed, and no reaper would get to run.
        if resumable && !connection.state.shutdown.is_triggered() {
            registry.connection_ended(session, *generation);
        } else {
            registry.destroy(session);
        }
    }
}

impl Connection {
    async fn on_frame(&mut self, frame: InboundFrame) {
        let text = match frame {
            InboundFrame::Message(text) => text,
            InboundFrame::Oversized { limit } => {
                let error = RpcError::invalid_request(format!("message exceeds {limit} bytes"));
                return self.reply(Value::Null, Err(error)).await;
            }
            InboundFrame::NotUtf8 => {
                let error = RpcError::parse("parse error: message is not UTF-8");
                return self.reply(Value::Null, Err(error)).await;
            }
        };
        // The frame is not needed once classified; drop it before waiting for room.
        let cost = text.len();
        let inbound = rpc::classify(&text);
        drop(text);
        match inbound {
            Inbound::Invalid { id, error } => {
                tracing::debug!(%error, "invalid frame");
                self.reply(id, Err(error)).await
            }
            Inbound::Response { id } => {
                tracing::warn!(%id, "ignoring a response from the client; the server sends no requests");
            }
            Inbound::Notification(notification) => self.on_notification(&notification.method),
            Inbound::Request(request) => self.on_request(request, cost).await,
        }
    }

    fn on_notification(&mut self, method: &str) {
        if method != "initialized" {
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
    async fn on_request(&mut self, request: Request, cost: usize) {
        let Request { id, method, params } = request;
        let Some(method) = Method::parse(&method) else {
            return self
                .reply(id, Err(RpcError::method_not_found(&method)))
                .await;
        };
        let session = match (&self.phase, method) {
            (Phase::AwaitingInitialize, Method::Initialize) => {
                let result = self.initialize(params);
                return self.reply(id, result).await;
            }
            (_, Method::Initialize) => {
                let error =
                    RpcError::invalid_request("initialize may only be sent once per connection");
                return self.reply(id, Err(error)).await;
            }
            (Phase::AwaitingInitialize, method) => {
                let error = RpcError::invalid_request(format!(
                    "client must call initialize before using {} methods",
                    method.family()
                ));
                return self.reply(id, Err(error)).await;
            }
            (Phase::AwaitingInitialized(..), method) => {
                let error = RpcError::invalid_request(format!(
                    "client must send initialized before using {} methods",
                    method.family()
                ));
                return self.reply(id, Err(error)).await;
            }
            (Phase::Ready(session, generation), _) => {
                if !session.is_current(*generation) {
                    let error = RpcError::invalid_request(STALE_ATTACHMENT);
                    return self.reply(id, Err(error)).await;
                }
                (Arc::clone(session), *generation)
            }
        };
        let (session, generation) = session;
        let turn = self.take_turn(method, &params);
        let state = Arc::clone(&self.state);
        let outbound = self.outbound.clone();
        self.spawn(cost, async move {
            let mut room = ReplyRoom::new(outbound, id.to_string().len());
            let handler = handlers::dispatch(
                &state, &session, generation, method, params, turn, &mut room,
            );
            let result = AssertUnwindSafe(handler)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(?method, "handler panicked");
                    Err(RpcError::internal(
                        "internal error while handling the request",
                    ))
                });
            send_reply(room, &id, result).await;
        })
        .await;
    }

    fn initialize(&mut self, params: Value) -> Result<Value, RpcError> {
        let params: crate::protocol::InitializeParams = rpc::decode_params(params)?;
        let registry = &self.state.registry;
        let (session, generation) = match &params.resume_session_id {
            Some(id) => registry.resume(id, self.outbound.clone())?,
            None => registry.create(self.outbound.clone())?,
        };
        tracing::info!(client = %params.client_name, session_id = session.id(), "initialize");
        let result = handlers::initialize::result(&self.state, session.id(), self.resumable);
        self.phase = Phase::AwaitingInitialized(session, generation);
        Ok(result)
    }

    fn take_turn(&mut self, method: Method, params: &Value) -> Turn {
        let Some(process_id) = method
            .is_process_scoped()
            .then(|| params.get("processId").and_then(Value::as_str))
            .flatten()
            // An id over the cap is refused when its params are decoded; not worth a key.
            .filter(|process_id| process_id.len() <= MAX_ID_BYTES)
        else {
            return Turn::unordered();
        };
        self.turns.take(process_id)
    }

    async fn reply(&mut self, id: RequestId, result: Result<Value, RpcError>) {
        let result = result.map(Reply::from);
        let room = ReplyRoom::new(self.outbound.clone(), id.to_string().len());
        self.spawn(1, async move { send_reply(room, &id, result).await })
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
        self.tasks.spawn(async move {
            work.await;
            drop(permits);
        });
    }
}

async fn send_reply(room: ReplyRoom, id: &RequestId, result: Result<Reply, RpcError>) {
    let message = match result {
        Ok(reply) => rpc::encode_reply(id, reply),
        Err(error) => rpc::encode_error(id, &error),
    };
    // A closed queue means the transport is gone; there is nobody left to answer.
    let _ = room.send(message).await;
}
