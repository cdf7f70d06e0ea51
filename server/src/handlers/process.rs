//! `process/*` methods (PROTOCOL.md §6): validate params, look the process up in the
//! session, and call into `process::Process`. Each handler waits for its `Turn` so that
//! requests naming one process take effect in arrival order.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::fs::{absolute, io_error, FileSystem};
use crate::ordering::Turn;
use crate::outbound::ReplyRoom;
use crate::process::env::child_environment;
use crate::process::{Process, SpawnRequest};
use crate::protocol::{
    ProcessIdParams, ReadParams, ResizeParams, SignalParams, StartParams, WriteStatus,
};
use crate::rpc::{decode_params, RpcError};
use crate::session::{Generation, Lookup, Session, STALE_ATTACHMENT};

/// Under `--fs-root` the working directory is opened beneath the root and handed to the
/// child as a directory handle, so it cannot be swapped for a symlink in between.
pub async fn start(
    file_system: &Arc<FileSystem>,
    session: &Arc<Session>,
    params: Value,
    mut turn: Turn,
) -> Result<Value, RpcError> {
    let params: StartParams = decode_params(params)?;
    if params.argv.is_empty() {
        return Err(RpcError::invalid_params(
            "invalid params: argv: must not be empty",
        ));
    }
    let cwd_dir = match file_system.root() {
        None => None,
        Some(_) => {
            let cwd = absolute(&params.cwd, "cwd")?;
            let opened = file_system.open_dir(&cwd).map_err(|err| match err.kind() {
                std::io::ErrorKind::PermissionDenied => io_error(err),
                _ => RpcError::internal(format!("cannot use cwd {}: {err}", params.cwd)),
            })?;
            Some(opened)
        }
    };
    // Variables whose name or value is not UTF-8 cannot travel in JSON; skip them.
    let server_env = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let env = child_environment(server_env, params.env_policy.as_ref(), &params.env);
    let request = SpawnRequest {
        argv: &params.argv,
        arg0: params.arg0.as_deref(),
        cwd: &params.cwd,
        cwd_dir,
        env: &env,
        tty: params.tty,
        pipe_stdin: params.pipe_stdin,
    };
    turn.wait().await;
    session.start_process(&params.process_id, &request)?;
    Ok(json!({"processId": params.process_id}))
}

fn running(session: &Session, process_id: &str) -> Result<Arc<Process>, RpcError> {
    match session.lookup(process_id) {
        Lookup::Running(process) => Ok(process),
        Lookup::Unknown => Err(RpcError::invalid_request(format!(
            "unknown process id {process_id}"
        ))),
        Lookup::Starting => Err(RpcError::invalid_request(format!(
            "process id {process_id} is starting"
        ))),
    }
}

/// A long-poll that outlives its connection's ownership of the session (the session
/// was resumed elsewhere) fails rather than answer a connection that no longer owns it.
///
/// The result is built only once there is room for it in the connection's outbound
/// budget, and never bigger than the room reserved.
pub async fn read(
    session: &Arc<Session>,
    generation: Generation,
    params: Value,
    mut turn: Turn,
    room: &mut ReplyRoom,
) -> Result<Value, RpcError> {
    let params: ReadParams = decode_params(params)?;
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    // A long-poll must not hold up later requests for the same process.
    turn.finish();
    let wait = Duration::from_millis(params.wait_ms);
    let (after_seq, max_bytes) = (params.after_seq, params.max_bytes);
    let size = async {
        process.wait_for_news(after_seq, wait).await;
        let size = process.read_size(after_seq, max_bytes);
        room.reserve(size).await?;
        Ok::<_, RpcError>(size)
    };
    let size = tokio::select! {
        size = size => size?,
        _ = session.superseded(generation) => {
            return Err(RpcError::invalid_request(STALE_ATTACHMENT));
        }
    };
    Ok(process.read_now(after_seq, max_bytes, size))
}

pub async fn write(
    session: &Arc<Session>,
    params: Value,
    mut turn: Turn,
) -> Result<Value, RpcError> {
    let crate::protocol::WriteParams {
        process_id,
        chunk,
        close_stdin,
    } = decode_params(params)?;
    let data = BASE64.decode(chunk.as_bytes()).map_err(|err| {
        RpcError::invalid_params(format!("invalid params: chunk: not base64: {err}"))
    })?;
    // Only the decoded bytes may stay held while the write waits for the child: the
    // connection's in-flight budget counts frames, and this keeps ¾ of one per write.
    drop(chunk);
    turn.wait().await;
    let status = match session.lookup(&process_id) {
        Lookup::Unknown => WriteStatus::UnknownProcess,
        Lookup::Starting => WriteStatus::Starting,
        Lookup::Running(process) => {
            let status = process.enqueue_stdin(data, close_stdin);
            turn.finish();
            if status == WriteStatus::Accepted {
                process.stdin_backlog_drained().await;
            }
            status
        }
    };
    Ok(json!({"status": status}))
}

pub async fn signal(
    session: &Arc<Session>,
    params: Value,
    mut turn: Turn,
) -> Result<Value, RpcError> {
    let params: SignalParams = decode_params(params)?;
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    process.send_signal(params.signal.to_signal());
    Ok(json!({}))
}

pub async fn terminate(
    session: &Arc<Session>,
    params: Value,
    mut turn: Turn,
) -> Result<Value, RpcError> {
    let params: ProcessIdParams = decode_params(params)?;
    turn.wait().await;
    let running = match session.lookup(&params.process_id) {
        Lookup::Running(process) => {
            let was_running = !process.has_exited();
            process.kill_tree();
            was_running
        }
        Lookup::Unknown | Lookup::Starting => false,
    };
    Ok(json!({"running": running}))
}

pub async fn resize(
    session: &Arc<Session>,
    params: Value,
    mut turn: Turn,
) -> Result<Value, RpcError> {
    let params: ResizeParams = decode_params(params)?;
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    match process.resize(params.rows, params.cols) {
        None => Err(RpcError::invalid_request(format!(
            "process {} is not attached to a pty",
            params.process_id
        ))),
        Some(Err(err)) => Err(RpcError::internal(format!("resize failed: {err}"))),
        Some(Ok(())) => Ok(json!({})),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::limits::Limits;
    use crate::session::{registry_for_tests, SessionRegistry};

    fn registry(ttl: Duration) -> SessionRegistry {
        registry_for_tests(ttl, Limits::default())
    }

    fn sleeper() -> Value {
        json!({"processId": "p", "argv": ["sleep", "1000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}})
    }

    #[tokio::test]
    async fn a_long_poll_from_a_superseded_attachment_fails_as_stale() {
        let registry = registry(Duration::from_secs(30));
        let (old_outbound, _old_queue) = crate::outbound::channel(1 << 20);
        let mut old_room = ReplyRoom::new(old_outbound.clone(), 1);
        let (session, old_generation) = registry.create(old_outbound).expect("create");
        start(
            &Arc::new(FileSystem::Unconfined),
            &session,
            sleeper(),
            Turn::unordered(),
        )
        .await
        .expect("start");
        let stale_read = tokio::spawn({
            let session = Arc::clone(&session);
            async move {
                let params = json!({"processId": "p", "waitMs": 60_000});
                read(
                    &session,
                    old_generation,
                    params,
                    Turn::unordered(),
                    &mut old_room,
                )
                .await
            }
        });
        // The old connection has not noticed anything yet; its session moves on.
        registry.connection_ended(&session, old_generation);
        let (new_outbound, _new_queue) = crate::outbound::channel(1 << 20);
        let mut new_room = ReplyRoom::new(new_outbound.clone(), 1);
        let (resumed, new_generation) =
            registry.resume(session.id(), new_outbound).expect("resume");
        assert!(Arc::ptr_eq(&resumed, &session));
        assert_ne!(new_generation, old_generation);
        assert!(!session.is_current(old_generation));
        let outcome = tokio::time::timeout(Duration::from_secs(5), stale_read)
            .await
            .expect("the stale long-poll ends promptly")
            .expect("task");
        assert_eq!(outcome, Err(RpcError::invalid_request(STALE_ATTACHMENT)));
        let params = json!({"processId": "p", "waitMs": 0});
        assert!(read(
            &resumed,
            new_generation,
            params,
            Turn::unordered(),
            &mut new_room
        )
        .await
        .is_ok());
        registry.destroy_all();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expiry_is_authoritative_at_resume_time_even_before_the_reaper_runs() {
        let registry = registry(Duration::ZERO);
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let (session, generation) = registry.create(outbound).expect("create");
        start(
            &Arc::new(FileSystem::Unconfined),
            &session,
            sleeper(),
            Turn::unordered(),
        )
        .await
        .expect("start");
        let Lookup::Running(process) = session.lookup("p") else {
            panic!("running");
        };
        // No await between these: on this single-threaded runtime the reaper task that
        // connection_ended spawns cannot have run when resume looks at the deadline.
        registry.connection_ended(&session, generation);
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let refused = registry.resume(session.id(), outbound).map(|_| ());
        assert_eq!(
            refused,
            Err(RpcError::invalid_request(format!(
                "unknown session id {}",
                session.id()
            )))
        );
        assert!(
            matches!(session.lookup("p"), Lookup::Unknown),
            "destroyed at resume time"
        );
        tokio::time::timeout(Duration::from_secs(5), process.closed())
            .await
            .expect("its process was killed");
    }
}
