//! One session (docs/protocol.md §5): its table of processes, the `Notifier` pointing
//! at the connection it is attached to, and its attachment. When that connection ends
//! the session detaches: processes keep running and output keeps being retained until
//! a new connection resumes it, or its TTL passes and it is destroyed (see `registry`).
//!
//! Each attachment has a generation number; a connection holds the generation it
//! attached at, and anything it does after the session moved on is refused as stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod error;
mod handles;
mod registry;

pub use error::{SessionError, SpawnError};
pub use handles::{HandleError, HandleTable};
#[cfg(test)]
pub(crate) use registry::registry_for_tests;
pub use registry::{SessionRegistry, SessionSettings};

use crate::limits::LimitReached;
use crate::outbound::{Notifier, Outbound};
use crate::process::{Process, SpawnFailure, SpawnRequest};

/// How long a closed process stays readable before its entry (and id) is released.
pub const CLOSED_PROCESS_RETENTION: Duration = Duration::from_secs(30);

/// The attachment a connection holds; see [`Session::is_current`].
pub type Generation = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attachment {
    Attached,
    Detached { deadline: Instant },
}

pub const STALE_ATTACHMENT: &str = "session has been resumed by another connection";

enum Slot {
    /// Reserved by a `process/start` that has not finished spawning.
    Starting,
    Running(Arc<Process>),
}

pub enum Lookup {
    Unknown,
    Starting,
    Running(Arc<Process>),
}

pub struct Session {
    id: String,
    settings: SessionSettings,
    processes: Mutex<HashMap<String, Slot>>,
    notifier: Notifier,
    attachment: Mutex<Attachment>,
    /// The current generation; bumped on every attach, watched by stale long-polls.
    generation: watch::Sender<Generation>,
    /// Cancelled when the session is destroyed; stops eviction timers.
    destroyed: CancellationToken,
    /// Files opened by `fs/open`; closed when the session is destroyed.
    handles: HandleTable,
}

impl Session {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's `fs/open` handles.
    pub fn handles(&self) -> &HandleTable {
        &self.handles
    }

    /// Whether a connection that attached at `generation` is still the session's owner.
    pub fn is_current(&self, generation: Generation) -> bool {
        *self.generation.borrow() == generation
    }

    /// Resolves once the session has been attached by a newer connection.
    pub async fn superseded(&self, generation: Generation) {
        let mut changes = self.generation.subscribe();
        // An error means the session is gone; then nothing will supersede it.
        let _ = changes.wait_for(|current| *current != generation).await;
        if *changes.borrow() == generation {
            std::future::pending::<()>().await;
        }
    }

    fn attachment(&self) -> MutexGuard<'_, Attachment> {
        self.attachment
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Attaches `outbound` under a new generation.
    fn attach(&self, outbound: Outbound) -> Generation {
        *self.attachment() = Attachment::Attached;
        self.notifier.attach(outbound);
        let mut generation = 0;
        self.generation.send_modify(|current| {
            *current += 1;
            generation = *current;
        });
        generation
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.processes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn lookup(&self, process_id: &str) -> Lookup {
        match self.table().get(process_id) {
            None => Lookup::Unknown,
            Some(Slot::Starting) => Lookup::Starting,
            Some(Slot::Running(process)) => Lookup::Running(Arc::clone(process)),
        }
    }

    /// Starts a process under `process_id`. Of two racing starts with one id exactly one
    /// succeeds; a failed start leaves nothing behind.
    pub fn start_process(
        self: &Arc<Self>,
        process_id: &str,
        request: &SpawnRequest<'_>,
    ) -> Result<(), SessionError> {
        {
            let mut table = self.table();
            if table.contains_key(process_id) {
                return Err(SessionError::ProcessExists(process_id.to_owned()));
            }
            let max_processes = self.settings.limits.max_processes;
            if table.len() >= max_processes {
                return Err(LimitReached::Processes {
                    value: max_processes,
                }
                .into());
            }
            table.insert(process_id.to_owned(), Slot::Starting);
        }
        let spawned = Process::spawn(
            process_id.to_owned(),
            request,
            self.settings.output_retention_bytes,
            Arc::clone(&self.settings.retention_pool),
            self.notifier.clone(),
            &self.settings.containment,
            self.settings.watchdog.clone(),
        );
        let mut table = self.table();
        let process = match spawned {
            Ok(process) => process,
            Err(failure) => {
                table.remove(process_id);
                let program = request.argv.first().cloned().unwrap_or_default();
                return Err(match failure {
                    SpawnFailure::Program(source) => SpawnError::Program { program, source },
                    SpawnFailure::Setup(source) => SpawnError::Setup { program, source },
                }
                .into());
            }
        };
        if self.destroyed.is_cancelled() {
            process.release();
            table.remove(process_id);
            return Err(SessionError::Destroyed);
        }
        table.insert(process_id.to_owned(), Slot::Running(Arc::clone(&process)));
        drop(table);
        tokio::spawn(Arc::clone(self).evict_after_close(process));
        Ok(())
    }

    /// Evicts a closed process after the retention period, counted while the session is
    /// attached: a detached session keeps everything until it is resumed or expires.
    async fn evict_after_close(self: Arc<Self>, process: Arc<Process>) {
        tokio::select! {
            _ = async {
                process.closed().await;
                loop {
                    tokio::time::sleep(CLOSED_PROCESS_RETENTION).await;
                    let generation = *self.generation.borrow();
                    if *self.attachment() == Attachment::Attached {
                        break;
                    }
                    self.superseded(generation).await;
                }
            } => {
                let mut table = self.table();
                if matches!(table.get(process.id()), Some(Slot::Running(current)) if Arc::ptr_eq(current, &process)) {
                    table.remove(process.id());
                }
                drop(table);
                // Whatever is left in the group closed its output and would otherwise leak.
                process.release();
            }
            _ = self.destroyed.cancelled() => {}
        }
    }

    /// Before a stdio session is destroyed at EOF (docs/protocol.md §2.2): waits until
    /// every process that has already exited has announced its close, or until
    /// `deadline` (its output may be held open by a descendant that lives on).
    pub async fn settle_exited(&self, deadline: tokio::time::Instant) {
        let processes: Vec<Arc<Process>> = self
            .table()
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(process) => Some(Arc::clone(process)),
                Slot::Starting => None,
            })
            .collect();
        let all = futures_util::future::join_all(
            processes
                .iter()
                .map(|process| process.announced_if_exited()),
        );
        let _ = tokio::time::timeout_at(deadline, all).await;
    }

    /// Kills every process tree this session owns and stops delivering notifications.
    pub fn destroy(&self) {
        self.destroyed.cancel();
        self.notifier.detach();
        self.handles.close_all();
        let processes: Vec<Arc<Process>> = self
            .table()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Running(process) => Some(process),
                Slot::Starting => None,
            })
            .collect();
        for process in processes {
            process.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::limits::Limits;

    fn registry(detached_ttl: Duration) -> SessionRegistry {
        registry_for_tests(detached_ttl, Limits::default())
    }

    /// Starts `/bin/true` as `process_id` and returns it.
    fn start_true(session: &Arc<Session>, process_id: &str) -> Result<Arc<Process>, SessionError> {
        start(session, process_id, &["/bin/true"])
    }

    fn start(
        session: &Arc<Session>,
        process_id: &str,
        argv: &[&str],
    ) -> Result<Arc<Process>, SessionError> {
        let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
        let env = BTreeMap::new();
        let request = SpawnRequest {
            argv: &argv,
            arg0: None,
            cwd: std::path::Path::new("/"),
            cwd_dir: None,
            env: &env,
            tty: false,
            pipe_stdin: false,
        };
        session.start_process(process_id, &request)?;
        match session.lookup(process_id) {
            Lookup::Running(process) => Ok(process),
            _ => panic!("not running after start"),
        }
    }

    #[tokio::test]
    async fn the_retention_pool_counts_until_release_and_trims_the_largest_retainer() {
        let limits = Limits {
            max_retained_bytes: 16,
            ..Limits::default()
        };
        let registry = registry_for_tests(Duration::from_secs(30), limits);
        let pool = Arc::clone(&registry.settings.retention_pool);
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let (session, _) = registry.create(outbound).expect("create");
        let deadline = Duration::from_secs(5);
        let first = start(&session, "first", &["/usr/bin/printf", "123456789012"]).expect("start");
        tokio::time::timeout(deadline, first.closed())
            .await
            .expect("first closes");
        assert_eq!(pool.retained_bytes(), 12);
        let second = start(&session, "second", &["/usr/bin/printf", "1234567890"]).expect("start");
        tokio::time::timeout(deadline, second.closed())
            .await
            .expect("second closes");
        // 22 bytes over a budget of 16: the largest retainer, `first`, loses its output.
        assert_eq!((first.retained_bytes(), second.retained_bytes()), (0, 10));
        assert_eq!(pool.retained_bytes(), 10);
        registry.destroy_all();
        assert_eq!(pool.retained_bytes(), 0, "released processes stop counting");
    }

    #[tokio::test]
    async fn the_default_limits_hold_ten_thousand_idle_sessions() {
        let registry = registry(Duration::from_secs(3600));
        let mut queues = Vec::new();
        for _ in 0..10_000 {
            let (outbound, queue) = crate::outbound::channel(1 << 20);
            let (session, generation) = registry.create(outbound).expect("under the limit");
            registry.connection_ended(&session, generation);
            queues.push(queue);
        }
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        registry.create(outbound).expect("and more");
        registry.destroy_all();
    }

    #[tokio::test(start_paused = true)]
    async fn closed_processes_are_evicted_after_the_retention_period() {
        let registry = registry(Duration::from_secs(30));
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let (session, _) = registry.create(outbound).expect("create");
        let process = start_true(&session, "p").expect("start");
        process.closed().await;
        let closed_at = Instant::now();
        assert!(
            matches!(session.lookup("p"), Lookup::Running(_)),
            "kept after close"
        );
        for _ in 0..600 {
            if matches!(session.lookup("p"), Lookup::Unknown) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(session.lookup("p"), Lookup::Unknown), "evicted");
        assert!(closed_at.elapsed() >= CLOSED_PROCESS_RETENTION - Duration::from_millis(200));
        start_true(&session, "p").expect("the id is free again");
        registry.destroy_all();
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_session_keeps_closed_processes_until_it_is_resumed() {
        let registry = registry(Duration::from_secs(3600));
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        let (session, generation) = registry.create(outbound).expect("create");
        let process = start_true(&session, "p").expect("start");
        // Wait for the close while no timer is pending: paused time jumps to the next
        // timer whenever the runtime only waits for I/O, and the TTL reaper is one.
        process.closed().await;
        registry.connection_ended(&session, generation);
        tokio::time::sleep(CLOSED_PROCESS_RETENTION * 4).await;
        assert!(
            matches!(session.lookup("p"), Lookup::Running(_)),
            "kept while detached"
        );
        let (outbound, _queue) = crate::outbound::channel(1 << 20);
        registry.resume(session.id(), outbound).expect("resume");
        for _ in 0..600 {
            if matches!(session.lookup("p"), Lookup::Unknown) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            matches!(session.lookup("p"), Lookup::Unknown),
            "evicted once attached again"
        );
        registry.destroy_all();
    }
}
