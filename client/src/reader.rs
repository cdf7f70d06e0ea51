//! The reader task of a connection: classifies every frame the server sends, files
//! responses with their pending calls and notifications with their process's tracker,
//! and reports the transport's end.

use std::sync::Arc;

use exec_protocol::{
    classify, Message, Method, NotificationMethod, ProcessClosed, ProcessExited, ProcessOutput,
    RequestId,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::connection::{connection_lost, Inner};
use crate::error::{ClientError, SERVER_CLOSED, UNEXPECTED_REQUEST};
use crate::events::ProcessEvent;
use crate::wire::{Frame, FrameReader};

const MALFORMED: &str = "malformed message from the server";
/// How much of a stray message is kept for the connect error.
const MAX_STRAY_CHARS: usize = 200;

/// Before the handshake has succeeded, a stray message is kept for the connect error
/// (which says it once) instead of logged; afterwards it is logged.
fn during_handshake(inner: &Inner, text: &str) -> bool {
    let mut state = inner.state();
    if state.session_id.is_some() {
        return false;
    }
    if state.stray.is_none() {
        let mut kept: String = text.chars().take(MAX_STRAY_CHARS).collect();
        if kept.len() < text.len() {
            kept.push('…');
        }
        state.stray = Some(kept);
    }
    true
}

/// Starts reading `reader` for `inner`, replacing (and stopping) any earlier reader.
pub(crate) fn start_reader(inner: &Arc<Inner>, mut reader: FrameReader) {
    let weak = Arc::downgrade(inner);
    let task = tokio::spawn(async move {
        let reason = loop {
            let Some(frame) = reader.next_frame().await else {
                break SERVER_CLOSED;
            };
            let Some(inner) = weak.upgrade() else { return };
            if let Err(reason) = on_frame(&inner, frame) {
                inner.terminate_child();
                break reason;
            }
        };
        if let Some(inner) = weak.upgrade() {
            connection_lost(&inner, reason, true);
        }
    });
    if let Some(old) = inner
        .reader
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(task)
    {
        old.abort();
    }
}

/// Files one frame. An error ends the connection (and terminates a stdio child).
fn on_frame(inner: &Inner, frame: Frame) -> Result<(), &'static str> {
    let text = match frame {
        Frame::Text(text) => text,
        Frame::Other(description) => {
            during_handshake(inner, &description);
            return Err(MALFORMED);
        }
    };
    match classify(&text) {
        Message::Request { method, .. } => {
            if !during_handshake(inner, &text) {
                tracing::warn!(
                    method,
                    "exec-server sent a request; clients do not serve requests"
                );
            }
            Err(UNEXPECTED_REQUEST)
        }
        Message::Notification { method, params } => on_notification(inner, &method, params),
        Message::Response { id, result } => answer(inner, id, |_| Ok(result)),
        Message::Error {
            id: Some(id),
            error,
        } => answer(inner, id, |method| Err(ClientError::server(method, error))),
        Message::Error { id: None, error } => {
            tracing::warn!(%error, "exec-server sent an error for no request");
            Err("response with an id this client never sent")
        }
        // A response that is no JSON-RPC shape still fails only its own call.
        Message::Invalid {
            id: Some(id),
            error,
        } if pending_id(&id).is_some() => answer(inner, id, |method| {
            Err(ClientError::Protocol(format!(
                "{method}: malformed response: {}",
                error.message
            )))
        }),
        Message::Invalid { error, .. } => {
            if !during_handshake(inner, &text) {
                tracing::warn!(message = %text, %error, "malformed message from exec-server");
            }
            Err(MALFORMED)
        }
    }
}

/// The pending-call key of a response id: this client only sends integer ids.
fn pending_id(id: &RequestId) -> Option<u64> {
    match id {
        RequestId::Integer(n) => u64::try_from(*n).ok(),
        RequestId::Unsigned(n) => Some(*n),
        RequestId::String(_) => None,
    }
}

/// Hands the outcome of response `id` to its pending call.
fn answer(
    inner: &Inner,
    id: RequestId,
    outcome: impl FnOnce(Method) -> Result<Value, ClientError>,
) -> Result<(), &'static str> {
    let Some(id) = pending_id(&id) else {
        return Err("response with an id this client never sent");
    };
    let Some(call) = inner.state().pending.remove(&id) else {
        tracing::debug!(id, "response to no pending call");
        return Ok(());
    };
    let _ = call.reply.send(outcome(call.method));
    Ok(())
}

/// Hands a process notification to its tracker. Unknown notifications are ignored; a
/// process notification that does not decode ends the connection (its seq would be a
/// hole in the stream forever).
fn on_notification(inner: &Inner, method: &str, params: Value) -> Result<(), &'static str> {
    let Some(method) = NotificationMethod::parse(method) else {
        tracing::debug!(method, "unknown notification");
        return Ok(());
    };
    let (process_id, seq, event) = match method {
        NotificationMethod::ProcessOutput => {
            let output: ProcessOutput = decode(method, params)?;
            let (seq, stream) = (output.seq, output.stream);
            let data = output.chunk.into_inner();
            (
                output.process_id,
                seq,
                ProcessEvent::Output { seq, stream, data },
            )
        }
        NotificationMethod::ProcessExited => {
            let exited: ProcessExited = decode(method, params)?;
            let seq = exited.seq;
            let event = ProcessEvent::Exited {
                seq,
                exit_code: exited.exit_code,
                signal: exited.signal,
            };
            (exited.process_id, seq, event)
        }
        NotificationMethod::ProcessClosed => {
            let closed: ProcessClosed = decode(method, params)?;
            (
                closed.process_id,
                closed.seq,
                ProcessEvent::Closed { seq: closed.seq },
            )
        }
        NotificationMethod::Initialized => {
            tracing::debug!(%method, "notification meant for servers");
            return Ok(());
        }
    };
    let mut state = inner.state();
    if let Some(tracker) = state.processes.get_mut(&process_id) {
        tracker.deliver(seq, event);
        if tracker.done {
            // Dropping the sender ends the stream after `Closed`.
            state.processes.remove(&process_id);
        }
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(
    method: NotificationMethod,
    params: Value,
) -> Result<T, &'static str> {
    serde_json::from_value(params).map_err(|err| {
        tracing::warn!(%method, %err, "undecodable notification from exec-server");
        MALFORMED
    })
}
