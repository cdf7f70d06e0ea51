//! [ext] Reconnect (docs/protocol.md §8): when a websocket client's link goes
//! `Reconnecting`, resume the session on a new connection, re-send the kept reads, and
//! catch every unfinished process up from its last delivered seq.

use std::sync::{Arc, Weak};
use std::time::Duration;

use exec_protocol::code::{INVALID_REQUEST, SESSION_ALREADY_ATTACHED};
use exec_protocol::{encode_notification, InitializeParams, Initialized, Notify, ReadParams};

use crate::connection::{
    close, connection_lost, fail_unreplayable, replays, send_call, send_frame, Deadline, Inner,
    Link,
};
use crate::error::ClientError;
use crate::reader::start_reader;
use crate::transport;

/// Watches the link of `inner` for as long as the client lives, and resumes the session
/// each time it goes `Reconnecting`.
pub(crate) fn supervise(inner: &Arc<Inner>, window: Duration) {
    let weak = Arc::downgrade(inner);
    let mut link = inner.link.subscribe();
    tokio::spawn(async move {
        loop {
            let reconnecting = *link.borrow_and_update() == Link::Reconnecting;
            if reconnecting {
                reconnect(weak.clone(), window).await;
                // The link may have gone `Reconnecting` again meanwhile: look once more.
                continue;
            }
            if link.changed().await.is_err() {
                return;
            }
        }
    });
}

async fn reconnect(weak: Weak<Inner>, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    let mut backoff = Duration::from_millis(50);
    while tokio::time::Instant::now() < deadline {
        let Some(inner) = weak.upgrade() else { return };
        match resume(&inner).await {
            Ok(()) => {
                tracing::info!("exec-server session resumed");
                tokio::spawn(catch_up(weak.clone()));
                return;
            }
            Err(ResumeError::Fatal(reason)) => {
                close(&inner, &reason);
                return;
            }
            Err(ResumeError::Retry(reason)) => tracing::debug!(%reason, "resume attempt failed"),
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    if let Some(inner) = weak.upgrade() {
        close(&inner, "could not resume the session in time");
    }
}

enum ResumeError {
    Retry(String),
    Fatal(String),
}

/// Whether a refused resume means "the session is still attached to the old
/// connection" (the server has not noticed its end yet), which is worth retrying.
///
/// Errors are matched by code (docs/protocol.md §8): `-32010`
/// ([`SESSION_ALREADY_ATTACHED`]) from a 2026-08 server. The one exception in this
/// crate: a 2026-06 server says `-32600` with the message "session <id> is already
/// attached to another connection" (docs/protocol.md §5), and that message is how it
/// is recognised.
fn already_attached(code: i64, message: &str) -> bool {
    code == SESSION_ALREADY_ATTACHED
        || (code == INVALID_REQUEST
            && message.ends_with("is already attached to another connection"))
}

async fn resume(inner: &Arc<Inner>) -> Result<(), ResumeError> {
    let session_id = inner
        .state()
        .session_id
        .clone()
        .ok_or_else(|| ResumeError::Fatal("no session".into()))?;
    let opened = tokio::time::timeout(
        inner.options.connect_timeout,
        transport::open(&inner.transport, inner.options.bearer_token.as_ref()),
    )
    .await
    .map_err(|_| ResumeError::Retry("connect timed out".into()))?
    .map_err(|err| ResumeError::Retry(err.to_string()))?;
    *inner.writer.lock().await = Some(opened.writer);
    start_reader(inner, opened.reader);
    let params = InitializeParams {
        client_name: inner.options.client_name.clone(),
        resume_session_id: Some(session_id),
    };
    let deadline = Deadline::after(Some(inner.options.initialize_timeout));
    match send_call(inner, &params, deadline).await {
        // Re-checked on every resume: a write kept for a re-send is sent again only if
        // this connection's server de-duplicates too; otherwise it is reported now.
        Ok(result) => {
            inner.state().set_revisions(&result);
            fail_unreplayable(inner);
        }
        Err(ClientError::Server { code, message, .. }) if already_attached(code, &message) => {
            return Err(ResumeError::Retry(message));
        }
        Err(ClientError::Server { message, .. }) => return Err(ResumeError::Fatal(message)),
        Err(err) => return Err(ResumeError::Retry(err.to_string())),
    }
    let initialized = encode_notification(Initialized::METHOD, &Initialized {});
    let sent = tokio::time::timeout(
        inner.options.initialize_timeout,
        send_frame(inner, &initialized),
    )
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(ResumeError::Retry(err.to_string())),
        Err(_) => return Err(ResumeError::Retry("sending initialized timed out".into())),
    }
    // Re-sent in the order they were first sent, and before the link lets new calls
    // through, so a re-sent write is never overtaken by a later one. If a send fails
    // the attempt is retried; the calls stay pending (a re-sent write that did arrive
    // is de-duplicated by its `writeId`).
    for frame in replays(inner) {
        // A send that hangs is cut off after as long as a handshake may take (a
        // websocket keeps a cut-off frame whole, so nothing is torn).
        let sent =
            tokio::time::timeout(inner.options.initialize_timeout, send_frame(inner, &frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            // Let go of this connection so the server detaches the session again.
            inner.writer.lock().await.take();
            if let Some(reader) = inner
                .reader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                reader.abort();
            }
            return Err(ResumeError::Retry("re-sending pending calls failed".into()));
        }
    }
    inner.link.send_replace(Link::Connected);
    // The new connection may already have died while the link said Reconnecting, when
    // its loss was ignored: notice it now rather than sit connected to nothing.
    let reader_gone = inner
        .reader
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(tokio::task::JoinHandle::is_finished);
    if reader_gone {
        connection_lost(inner, "the connection ended while resuming", true);
    }
    Ok(())
}

/// After a resume: read every unfinished process from its last delivered seq, so the
/// ordered streams have no gap; what retention dropped is reported as `Lost`. Processes
/// are read in id order, one after the other.
async fn catch_up(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let mut open: Vec<String> = inner.state().processes.keys().cloned().collect();
    open.sort();
    for process_id in open {
        let Some(mut cursor) = inner
            .state()
            .processes
            .get(&process_id)
            .map(|t| t.next_seq - 1)
        else {
            continue;
        };
        loop {
            // Taken before the read is sent: if the start was not answered by then, the
            // server may handle this read before the start (see below).
            let started = inner
                .state()
                .processes
                .get(&process_id)
                .is_some_and(|tracker| tracker.started);
            let params = ReadParams {
                process_id: process_id.clone(),
                after_seq: cursor,
                max_bytes: None,
                wait_ms: 0,
            };
            let read = match crate::connection::call(&inner, &params).await {
                Ok(read) => read,
                // Lost again: the next resume catches up from where the streams are.
                Err(ClientError::Disconnected | ClientError::ResponseLost { .. }) => return,
                // A start sent after the resume and not answered when the read went out:
                // the process did not exist when the read was handled ("unknown process
                // id"), so all its events come live. (Its answer may well have come in
                // since.)
                Err(ClientError::Server {
                    code: INVALID_REQUEST,
                    ..
                }) if !started => break,
                Err(err) => {
                    if let Some(mut tracker) = inner.state().processes.remove(&process_id) {
                        tracker.fail(&format!("cannot catch up after reconnecting: {err}"));
                    }
                    break;
                }
            };
            let mut state = inner.state();
            let Some(tracker) = state.processes.get_mut(&process_id) else {
                break;
            };
            // The cursor follows the reads, not the stream: a chunk after a still
            // missing exit seq must not be read again and again.
            let next_cursor = read.next_seq.saturating_sub(1);
            let finished = read.chunks.is_empty();
            // Chunks always advance the cursor; if a server's do not, stop reading it.
            let stuck = next_cursor <= cursor;
            cursor = next_cursor;
            tracker.catch_up(read, finished);
            if tracker.done {
                state.processes.remove(&process_id);
                break;
            }
            if finished || stuck {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_attached_is_the_code_or_a_2026_06_servers_message() {
        assert!(already_attached(SESSION_ALREADY_ATTACHED, "anything"));
        assert!(already_attached(
            INVALID_REQUEST,
            "session 5f0c is already attached to another connection"
        ));
        assert!(!already_attached(
            INVALID_REQUEST,
            "unknown session id 5f0c"
        ));
        assert!(!already_attached(
            exec_protocol::code::INTERNAL_ERROR,
            "session 5f0c is already attached to another connection"
        ));
    }
}
