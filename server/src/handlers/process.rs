//! `process/*` methods (docs/protocol.md §6): validate params, look the process up in
//! the session, and call into `process::Process`. Each handler waits for its `Turn` so
//! that requests naming one process take effect in arrival order.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use exec_protocol::{
    Empty, ErrorObject, ReadParams, ReadResult, ResizeParams, SignalName, SignalParams,
    StartParams, StartResult, TerminateParams, TerminateResult, WriteParams, WriteResult,
    WriteStatus,
};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use super::errors::io_error;
use super::fs::refuse_sandbox_profiles;
use super::paths::{resolve, PathRules};
use crate::fs::FileSystem;
use crate::ordering::Turn;
use crate::outbound::ReplyRoom;
use crate::process::{child_environment, Process, SpawnRequest, StdinWrite};
use crate::session::{Generation, Lookup, Session, SpawnError, STALE_ATTACHMENT};

/// `sandboxType` of every start (docs/protocol.md §0): we run no sandbox profiles.
const NO_SANDBOX: &str = "none";

/// The signal a `process/signal` name sends.
fn to_signal(name: SignalName) -> Signal {
    match name {
        SignalName::Interrupt => Signal::SIGINT,
        SignalName::Terminate => Signal::SIGTERM,
        SignalName::Kill => Signal::SIGKILL,
        SignalName::Hangup => Signal::SIGHUP,
        SignalName::Quit => Signal::SIGQUIT,
    }
}

/// Under `--fs-root` the working directory is opened beneath the root and handed to the
/// child as a directory handle, so it cannot be swapped for a symlink in between.
///
/// `cwd` is a plain absolute path or a `file:` URI. `sandbox` follows the fs rule
/// (docs/protocol.md §7); upstream's codex-specific fields are refused unless null.
pub async fn start(
    file_system: &Arc<FileSystem>,
    rules: PathRules,
    session: &Arc<Session>,
    params: StartParams,
    mut turn: Turn,
) -> Result<StartResult, ErrorObject> {
    if params.argv.is_empty() {
        return Err(ErrorObject::invalid_params(
            "invalid params: argv: must not be empty",
        ));
    }
    refuse_sandbox_profiles(&params.sandbox)?;
    for (field, value) in [
        ("shellSnapshot", &params.shell_snapshot),
        ("managedNetwork", &params.managed_network),
        ("enforceManagedNetwork", &params.enforce_managed_network),
        ("networkProxy", &params.network_proxy),
    ] {
        if value.as_ref().is_some_and(|value| !value.is_null()) {
            return Err(ErrorObject::invalid_params(format!(
                "invalid params: {field}: not supported by this server"
            )));
        }
    }
    let (cwd, _) = resolve(&params.cwd, "cwd", rules)?;
    let cwd_failed = |source| SpawnError::Cwd {
        cwd: cwd.clone(),
        source,
    };
    let cwd_dir = match file_system.root() {
        None => open_cwd(&cwd).map_err(cwd_failed)?,
        Some(_) => file_system.open_dir(&cwd).map_err(|err| match err.kind() {
            // Outside the root, or led out of it (§7).
            std::io::ErrorKind::PermissionDenied => io_error(err),
            _ => cwd_failed(err).into(),
        })?,
    };
    searchable(&cwd_dir).map_err(cwd_failed)?;
    // Variables whose name or value is not UTF-8 cannot travel in JSON; skip them.
    // Read only for a policy (without one the child gets exactly `env`): `vars_os`
    // copies the whole environment under a lock.
    let server_env = params
        .env_policy
        .is_some()
        .then(std::env::vars_os)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let env = child_environment(server_env, params.env_policy.as_ref(), &params.env);
    let request = SpawnRequest {
        argv: &params.argv,
        arg0: params.arg0.as_deref(),
        cwd: &cwd,
        cwd_dir: Some(cwd_dir),
        env: &env,
        tty: params.tty,
        pipe_stdin: params.pipe_stdin,
    };
    turn.wait().await;
    session.start_process(&params.process_id, &request)?;
    Ok(StartResult {
        process_id: params.process_id,
        sandbox_type: Some(NO_SANDBOX.to_owned()),
    })
}

/// Opens the working directory the child will `fchdir` into. Checked here, before the
/// spawn, so that a bad `cwd` is blamed on the directory and never on the program (the
/// child's errors come back as a bare errno). `O_PATH`: like `chdir`, it needs no read
/// permission on the directory itself.
fn open_cwd(cwd: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(cwd)?;
    Ok(dir.into())
}

/// Whether the child may `fchdir` into `dir`: search (execute) permission, checked with
/// the server's effective ids, as the child has them.
fn searchable(dir: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: `dir` is an open descriptor and the path is a NUL-terminated literal.
    let status =
        unsafe { libc::faccessat(dir.as_raw_fd(), c".".as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if status == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn running(session: &Session, process_id: &str) -> Result<Arc<Process>, ErrorObject> {
    match session.lookup(process_id) {
        Lookup::Running(process) => Ok(process),
        Lookup::Unknown => Err(ErrorObject::invalid_request(format!(
            "unknown process id {process_id}"
        ))),
        Lookup::Starting => Err(ErrorObject::invalid_request(format!(
            "process id {process_id} is starting"
        ))),
    }
}

/// A long-poll that outlives its connection's ownership of the session (the session
/// was resumed elsewhere) fails rather than answer a connection that no longer owns it.
/// One still waiting when its connection drains (stdio EOF, once the grace is over)
/// returns what it has.
///
/// The result is built only once there is room for it in the connection's outbound
/// budget, and never bigger than the room reserved.
pub async fn read(
    session: &Arc<Session>,
    generation: Generation,
    params: ReadParams,
    mut turn: Turn,
    draining: &CancellationToken,
    room: &mut ReplyRoom,
) -> Result<ReadResult, ErrorObject> {
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    // A long-poll must not hold up later requests for the same process.
    turn.finish();
    let wait = Duration::from_millis(params.wait_ms);
    let (after_seq, max_bytes) = (params.after_seq, params.max_bytes);
    let size = async {
        tokio::select! {
            _ = process.wait_for_news(after_seq, wait) => {}
            _ = draining.cancelled() => {}
        }
        let size = process.read_size(after_seq, max_bytes);
        room.reserve(size).await?;
        Ok::<_, ErrorObject>(size)
    };
    let size = tokio::select! {
        size = size => size?,
        _ = session.superseded(generation) => {
            return Err(ErrorObject::invalid_request(STALE_ATTACHMENT));
        }
    };
    Ok(process.read_now(after_seq, max_bytes, size))
}

pub async fn write(
    session: &Arc<Session>,
    params: WriteParams,
    mut turn: Turn,
) -> Result<WriteResult, ErrorObject> {
    let WriteParams {
        process_id,
        chunk,
        close_stdin,
        write_id,
    } = params;
    // Only the decoded bytes stay held while the write waits for the child: the
    // connection's in-flight budget counts frames, and this keeps ¾ of one per write.
    let data = chunk.into_inner();
    turn.wait().await;
    let status = match session.lookup(&process_id) {
        // Nothing is queued, so nothing is recorded for a `writeId` here.
        Lookup::Unknown => WriteStatus::UnknownProcess,
        Lookup::Starting => WriteStatus::Starting,
        Lookup::Running(process) => {
            match process.write_stdin(data, close_stdin, write_id.as_deref()) {
                StdinWrite::New { status, first } => {
                    turn.finish();
                    if status == WriteStatus::Accepted {
                        process.stdin_backlog_drained().await;
                    }
                    // Repeats of this write are answered from here on.
                    drop(first);
                    status
                }
                // A re-sent write: answered as the first was, once it was.
                StdinWrite::Repeat(repeat) => {
                    turn.finish();
                    repeat.status().await
                }
            }
        }
    };
    Ok(WriteResult { status })
}

pub async fn signal(
    session: &Arc<Session>,
    params: SignalParams,
    mut turn: Turn,
) -> Result<Empty, ErrorObject> {
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    process.send_signal(to_signal(params.signal));
    Ok(Empty {})
}

pub async fn terminate(
    session: &Arc<Session>,
    params: TerminateParams,
    mut turn: Turn,
) -> Result<TerminateResult, ErrorObject> {
    turn.wait().await;
    let running = match session.lookup(&params.process_id) {
        Lookup::Running(process) => {
            let was_running = !process.has_exited();
            process.kill_tree();
            was_running
        }
        Lookup::Unknown | Lookup::Starting => false,
    };
    Ok(TerminateResult { running })
}

pub async fn resize(
    session: &Arc<Session>,
    params: ResizeParams,
    mut turn: Turn,
) -> Result<Empty, ErrorObject> {
    turn.wait().await;
    let process = running(session, &params.process_id)?;
    match process.resize(params.rows, params.cols) {
        None => Err(ErrorObject::invalid_request(format!(
            "process {} is not attached to a pty",
            params.process_id
        ))),
        Some(Err(err)) => Err(ErrorObject::internal(format!("resize failed: {err}"))),
        Some(Ok(())) => Ok(Empty {}),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use exec_protocol::decode_params;
    use serde_json::json;

    use super::*;
    use crate::limits::Limits;
    use crate::session::{registry_for_tests, SessionError, SessionRegistry};

    fn registry(ttl: Duration) -> SessionRegistry {
        registry_for_tests(ttl, Limits::default())
    }

    fn sleeper() -> StartParams {
        decode_params(json!({"processId": "p", "argv": ["sleep", "1000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}}))
            .expect("params")
    }

    /// Starts [`sleeper`] as process `p` of `session`.
    async fn start_sleeper(session: &Arc<Session>) {
        start(
            &Arc::new(FileSystem::Unconfined),
            PathRules::default(),
            session,
            sleeper(),
            Turn::unordered(),
        )
        .await
        .expect("start");
    }

    fn read_params(wait_ms: u64) -> ReadParams {
        decode_params(json!({"processId": "p", "waitMs": wait_ms})).expect("params")
    }

    #[tokio::test]
    async fn a_long_poll_returns_what_it_has_once_its_connection_drains() {
        let registry = registry(Duration::from_secs(30));
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let mut room = ReplyRoom::new(outbound.clone(), 1);
        let (session, generation) = registry.create(outbound).expect("create");
        start_sleeper(&session).await;
        let draining = CancellationToken::new();
        let long_poll = tokio::spawn({
            let (session, draining) = (Arc::clone(&session), draining.clone());
            async move {
                let params = read_params(60_000);
                read(
                    &session,
                    generation,
                    params,
                    Turn::unordered(),
                    &draining,
                    &mut room,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!long_poll.is_finished(), "nothing to return yet");
        draining.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), long_poll)
            .await
            .expect("the long-poll ends once draining")
            .expect("task")
            .expect("a result, not an error");
        assert!(result.chunks.is_empty());
        assert!(!result.exited);
        registry.destroy_all();
    }

    #[tokio::test]
    async fn a_long_poll_from_a_superseded_attachment_fails_as_stale() {
        let registry = registry(Duration::from_secs(30));
        let (old_outbound, _old_queue) = crate::outbound::channel(1 << 20);
        let mut old_room = ReplyRoom::new(old_outbound.clone(), 1);
        let (session, old_generation) = registry.create(old_outbound).expect("create");
        start_sleeper(&session).await;
        let stale_read = tokio::spawn({
            let session = Arc::clone(&session);
            async move {
                let params = read_params(60_000);
                read(
                    &session,
                    old_generation,
                    params,
                    Turn::unordered(),
                    &CancellationToken::new(),
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
        assert_eq!(
            outcome.map(|_| ()),
            Err(ErrorObject::invalid_request(STALE_ATTACHMENT))
        );
        let params = read_params(0);
        assert!(read(
            &resumed,
            new_generation,
            params,
            Turn::unordered(),
            &CancellationToken::new(),
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
        start_sleeper(&session).await;
        let Lookup::Running(process) = session.lookup("p") else {
            panic!("running");
        };
        // No await between these: on this single-threaded runtime the reaper task that
        // connection_ended spawns cannot have run when resume looks at the deadline.
        registry.connection_ended(&session, generation);
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let refused = registry.resume(session.id(), outbound).map(|_| ());
        assert!(
            matches!(&refused, Err(SessionError::UnknownSession(id)) if id == session.id()),
            "{refused:?}"
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
