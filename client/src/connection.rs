//! The state one client shares between its calls, its reader task and its reconnect
//! task, and the request machinery on top of it: ids, pending calls, sending frames,
//! deadlines, and what a lost transport does to all of them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use exec_protocol::{
    encode_request, Call, InitializeResult, Method, ReadParams, RequestId, Revision, WriteParams,
};
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::error::{ClientError, DISCONNECTED, SENDING_FAILED};
use crate::options::ClientOptions;
use crate::tracker::Tracker;
use crate::transport::{ExecServerTransport, StdioChild};
use crate::wire::FrameWriter;

/// Whether the client can send right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    Connected,
    /// The transport was lost and a resume is under way (websocket with reconnect).
    Reconnecting,
    Closed(String),
}

/// Whether a pending call whose answer was lost in a disconnect is sent again on the
/// resumed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Never: it may have taken effect; the caller gets `ResponseLost`.
    Never,
    /// Always: the method only reads.
    Always,
    /// A `process/write` that carries a `writeId`: re-sent only while the server
    /// advertises revision 2026-08 (it de-duplicates by `writeId`), both on the
    /// connection that was lost and on the resumed one; else `ResponseLost`.
    IfDeduplicated,
}

impl Replay {
    /// How a call with these params is treated.
    fn of<P: Call + 'static>(params: &P) -> Replay {
        if P::METHOD.is_read_only() {
            return Replay::Always;
        }
        let names_its_write = (params as &dyn Any)
            .downcast_ref::<WriteParams>()
            .is_some_and(|write| write.write_id.is_some());
        match names_its_write {
            true => Replay::IfDeduplicated,
            false => Replay::Never,
        }
    }
}

pub(crate) struct PendingCall {
    pub(crate) method: Method,
    /// The encoded request, kept for calls that may be re-sent after a reconnect
    /// (`None` when `replay` is `Never`).
    pub(crate) frame: Option<String>,
    pub(crate) replay: Replay,
    pub(crate) reply: oneshot::Sender<Result<Value, ClientError>>,
}

#[derive(Default)]
pub(crate) struct State {
    next_id: u64,
    pub(crate) session_id: Option<String>,
    pub(crate) pending: HashMap<u64, PendingCall>,
    pub(crate) processes: HashMap<String, Tracker>,
    next_process: u64,
    /// `capabilities.revisions` of the current connection's `initialize` result (empty
    /// when the server advertises none). Set at connect and at every resume.
    pub(crate) revisions: Vec<String>,
    next_write: u64,
    /// The start of what the server sent instead of the protocol before the handshake
    /// succeeded, for the connect error.
    pub(crate) stray: Option<String>,
}

impl State {
    /// A fresh `client-N` process id.
    pub(crate) fn next_process_id(&mut self) -> String {
        self.next_process += 1;
        format!("client-{}", self.next_process)
    }

    /// Remembers what the server of the current connection advertised.
    pub(crate) fn set_revisions(&mut self, result: &InitializeResult) {
        self.revisions = result
            .capabilities
            .as_ref()
            .and_then(|capabilities| capabilities.revisions.clone())
            .unwrap_or_default();
    }

    /// Whether the current connection's server de-duplicates writes by `writeId`: it
    /// advertises revision 2026-08 (docs/protocol.md §0, §8).
    pub(crate) fn deduplicates_writes(&self) -> bool {
        self.revisions
            .iter()
            .any(|revision| revision == Revision::R2026_08.as_str())
    }

    /// Whether a pending call is re-sent after a reconnect, as things stand.
    fn keeps(&self, call: &PendingCall) -> bool {
        match call.replay {
            Replay::Never => false,
            Replay::Always => true,
            Replay::IfDeduplicated => self.deduplicates_writes(),
        }
    }

    /// A fresh `writeId`: the client's random prefix and a counter (see
    /// [`Inner::write_id_prefix`]).
    pub(crate) fn next_write_id(&mut self, prefix: &str) -> String {
        self.next_write += 1;
        format!("{prefix}-{}", self.next_write)
    }
}

pub(crate) struct Inner {
    pub(crate) transport: ExecServerTransport,
    pub(crate) options: ClientOptions,
    pub(crate) writer: tokio::sync::Mutex<Option<FrameWriter>>,
    state: Mutex<State>,
    pub(crate) link: watch::Sender<Link>,
    pub(crate) child: Mutex<Option<StdioChild>>,
    pub(crate) reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A random UUID v4 (32 hex digits), unique to this client: its `writeId`s are
    /// `<prefix>-<n>`, n counting from 1 (at most 53 bytes, within the 256-byte cap).
    pub(crate) write_id_prefix: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.get_mut().ok().and_then(Option::take) {
            reader.abort();
        }
        // Dropping the guard terminates a stdio child.
        self.child.get_mut().ok().and_then(Option::take);
    }
}

impl Inner {
    pub(crate) fn new(
        transport: ExecServerTransport,
        options: ClientOptions,
        writer: FrameWriter,
        child: Option<StdioChild>,
    ) -> Self {
        Self {
            transport,
            options,
            writer: tokio::sync::Mutex::new(Some(writer)),
            state: Mutex::new(State::default()),
            link: watch::Sender::new(Link::Connected),
            child: Mutex::new(child),
            reader: Mutex::new(None),
            write_id_prefix: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn terminate_child(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            child.terminate();
        }
    }

    /// Whether a lost transport is followed by a resume rather than the end.
    pub(crate) fn may_resume(&self) -> bool {
        matches!(self.transport, ExecServerTransport::WebSocketUrl(_))
            && self.options.reconnect.is_some()
    }
}

/// When a call gives up, and the limit that set it (for the error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now; `None` (no limit, or one too far to represent) waits as long as
    /// the connection lives.
    pub(crate) fn after(limit: Option<Duration>) -> Option<Deadline> {
        let limit = limit?;
        Some(Deadline {
            at: Instant::now().checked_add(limit)?,
            limit,
        })
    }
}

/// Runs `work` until `deadline`; past it, `Timeout` naming `method`.
pub(crate) async fn within<T>(
    deadline: Option<Deadline>,
    method: Method,
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.at, work)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                method,
                after: deadline.limit,
            })),
    }
}

/// How long a call's answer may take beyond the call timeout: a long-poll read's
/// `waitMs`.
pub(crate) fn long_poll<P: Call + 'static>(params: &P) -> Duration {
    (params as &dyn Any)
        .downcast_ref::<ReadParams>()
        .map_or(Duration::ZERO, |read| Duration::from_millis(read.wait_ms))
}

/// A call as the user makes it: waits out a reconnect, then sends, all within the
/// call timeout (plus a long-poll's wait).
pub(crate) async fn call<P: Call + 'static>(
    inner: &Arc<Inner>,
    params: &P,
) -> Result<P::Result, ClientError> {
    let limit = inner
        .options
        .call_timeout
        .map(|limit| limit.saturating_add(long_poll(params)));
    let deadline = Deadline::after(limit);
    within(deadline, P::METHOD, wait_until_connected(inner)).await?;
    send_call(inner, params, deadline).await
}

/// Sends one request now, whatever the link says, and decodes its answer; gives up at
/// `deadline`. Calls whose method only reads are kept for a replay after a reconnect,
/// and so are writes with a `writeId` while the server de-duplicates them ([`Replay`]);
/// any other pending call fails with `ResponseLost` when the transport goes.
pub(crate) async fn send_call<P: Call + 'static>(
    inner: &Arc<Inner>,
    params: &P,
    deadline: Option<Deadline>,
) -> Result<P::Result, ClientError> {
    let method = P::METHOD;
    let (reply, answer) = oneshot::channel();
    let (id, frame) = {
        let mut state = inner.state();
        state.next_id += 1;
        let id = state.next_id;
        let frame = encode_request(&RequestId::from(id), method, params);
        let replay = Replay::of(params);
        state.pending.insert(
            id,
            PendingCall {
                method,
                frame: (replay != Replay::Never).then(|| frame.clone()),
                replay,
                reply,
            },
        );
        (id, frame)
    };
    // `close` marks the link before it takes the pending calls: a call added after that
    // take would wait out its whole deadline (a stdio child that exits at once closes
    // the link before `initialize` is even sent).
    if closed_reason(inner).is_some() && inner.state().pending.remove(&id).is_some() {
        return Err(ClientError::Disconnected);
    }
    let exchange = async {
        if send_frame(inner, &frame).await.is_err() {
            connection_lost(inner, SENDING_FAILED, true);
        }
        answer.await.unwrap_or(Err(ClientError::Disconnected))
    };
    let outcome = within(deadline, method, exchange).await;
    if matches!(outcome, Err(ClientError::Timeout { .. })) {
        inner.state().pending.remove(&id);
    }
    serde_json::from_value(outcome?)
        .map_err(|err| ClientError::Protocol(format!("{method}: unexpected result: {err}")))
}

pub(crate) async fn wait_until_connected(inner: &Inner) -> Result<(), ClientError> {
    let mut link = inner.link.subscribe();
    loop {
        match &*link.borrow_and_update() {
            Link::Connected => return Ok(()),
            Link::Closed(_) => return Err(ClientError::Disconnected),
            Link::Reconnecting => {}
        }
        if link.changed().await.is_err() {
            return Err(ClientError::Disconnected);
        }
    }
}

/// Sends one frame. A send cut off half-way (its caller's deadline passed, or its
/// future was dropped) on a byte stream may have left part of a line on the wire: the
/// connection is dropped as lost. (A websocket keeps a cut-off frame whole in its
/// buffer and sends it with the next one.)
pub(crate) async fn send_frame(inner: &Arc<Inner>, message: &str) -> Result<(), ClientError> {
    let writer = inner.writer.lock().await;
    let mut sending = Sending {
        inner,
        writer,
        done: false,
    };
    let Some(frames) = sending.writer.as_mut() else {
        sending.done = true;
        return Err(ClientError::Disconnected);
    };
    // Only a byte stream can be torn by a cut-off send.
    sending.done = matches!(frames, FrameWriter::WebSocket(_));
    let result = frames.send_text(message).await;
    sending.done = true;
    result.map_err(|_| ClientError::Disconnected)
}

/// The writer while a line goes out; dropped before `done`, it tears the connection down.
struct Sending<'a> {
    inner: &'a Arc<Inner>,
    writer: tokio::sync::MutexGuard<'a, Option<FrameWriter>>,
    done: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.writer.take();
            connection_lost(
                self.inner,
                "a frame was cut off half-way by a timeout",
                true,
            );
        }
    }
}

/// The transport is gone. With reconnect enabled on a websocket (and a session to
/// resume), the link goes `Reconnecting` and the reconnect task takes over; otherwise
/// everything fails.
pub(crate) fn connection_lost(inner: &Arc<Inner>, reason: &str, may_reconnect: bool) {
    let reconnect = may_reconnect && inner.may_resume() && inner.state().session_id.is_some();
    // Decide and switch in one step, so a failing send and the reader cannot both act.
    let switched = inner.link.send_if_modified(|link| {
        if *link != Link::Connected {
            return false;
        }
        *link = match reconnect {
            true => Link::Reconnecting,
            false => Link::Closed(reason.to_owned()),
        };
        true
    });
    if !switched {
        // The connection of a resume attempt died before the resume finished: fail the
        // attempt's `initialize` now, so it is retried at once instead of waiting out
        // `initialize_timeout`, which can outlast the session's TTL.
        if *inner.link.borrow() == Link::Reconnecting {
            fail_unreplayable(inner);
        }
        return;
    }
    // Lost during the handshake, the connect error tells why; say it once.
    if inner.state().session_id.is_some() {
        tracing::warn!(reason, "exec-server connection lost");
    } else {
        tracing::debug!(reason, "exec-server connection lost during the handshake");
    }
    match reconnect {
        true => fail_unreplayable(inner),
        false => close(inner, reason),
    }
}

/// Fails every pending call that is not re-sent after a reconnect: its answer is lost.
/// Writes with a `writeId` are kept while the current connection's server
/// de-duplicates them; run again once a resume has told what the new one does.
pub(crate) fn fail_unreplayable(inner: &Inner) {
    let lost: Vec<PendingCall> = {
        let mut state = inner.state();
        let ids: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, call)| !state.keeps(call))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| state.pending.remove(&id))
            .collect()
    };
    for call in lost {
        let method = call.method;
        let _ = call.reply.send(Err(ClientError::ResponseLost { method }));
    }
}

/// The frames of the pending calls to re-send on a resumed connection, in the order
/// they were first sent (writes to one process must not reorder).
pub(crate) fn replays(inner: &Inner) -> Vec<String> {
    let state = inner.state();
    let mut kept: Vec<(u64, String)> = state
        .pending
        .iter()
        .filter(|(_, call)| state.keeps(call))
        .filter_map(|(id, call)| Some((*id, call.frame.clone()?)))
        .collect();
    kept.sort_by_key(|(id, _)| *id);
    kept.into_iter().map(|(_, frame)| frame).collect()
}

/// Why the connection ended, once it has.
pub(crate) fn closed_reason(inner: &Inner) -> Option<String> {
    match &*inner.link.borrow() {
        Link::Closed(reason) => Some(reason.clone()),
        _ => None,
    }
}

/// The end: every pending call fails, every unfinished event stream ends with `Failed`,
/// a stdio child is terminated.
pub(crate) fn close(inner: &Inner, reason: &str) {
    inner.link.send_replace(Link::Closed(reason.to_owned()));
    inner.terminate_child();
    let (pending, mut processes) = {
        let mut state = inner.state();
        (
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.processes),
        )
    };
    for (_, call) in pending {
        let _ = call.reply.send(Err(ClientError::Disconnected));
    }
    for tracker in processes.values_mut() {
        tracker.fail(DISCONNECTED);
    }
}

#[cfg(test)]
mod tests {
    use exec_protocol::TerminateParams;

    use super::*;

    /// The link closes (a stdio child that exits at once) before a call is added to
    /// the pending ones: the call fails at once instead of waiting out its deadline.
    #[tokio::test]
    async fn a_call_after_the_link_closed_fails_at_once() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (writer, _reader) = crate::wire::lines(Box::new(tokio::io::empty()), Box::new(ours));
        let transport = ExecServerTransport::StdioCommand {
            program: "exec-server".into(),
            args: Vec::new(),
            env: Default::default(),
            cwd: None,
        };
        let inner = Arc::new(Inner::new(transport, Default::default(), writer, None));
        close(&inner, crate::error::SERVER_CLOSED);
        let call = send_call(&inner, &exec_protocol::EnvironmentInfoParams {}, None);
        let outcome = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call waited although the link had closed");
        assert!(
            matches!(outcome, Err(ClientError::Disconnected)),
            "{outcome:?}"
        );
        assert!(inner.state().pending.is_empty());
        drop(theirs);
    }

    #[test]
    fn only_reads_add_their_wait_to_the_deadline() {
        let read = ReadParams {
            process_id: "p".into(),
            after_seq: 0,
            max_bytes: None,
            wait_ms: 1500,
        };
        assert_eq!(long_poll(&read), Duration::from_millis(1500));
        let terminate = TerminateParams {
            process_id: "p".into(),
        };
        assert_eq!(long_poll(&terminate), Duration::ZERO);
    }
}
