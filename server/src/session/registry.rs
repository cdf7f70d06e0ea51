//! Every live session of one server (docs/protocol.md §5): creating sessions under the
//! `--max-sessions` cap, resuming detached ones, detaching a session when its
//! connection ends and destroying it once its TTL has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Attachment, Generation, Session, SessionError};
use crate::containment::Containment;
use crate::faults::{self, Fault};
use crate::limits::{LimitReached, Limits};
use crate::outbound::{Notifier, Outbound};
use crate::process::RetentionPool;
use crate::watchdog::Watchdog;

/// Settings every session of a server shares.
#[derive(Clone)]
pub struct SessionSettings {
    pub output_retention_bytes: usize,
    /// A cgroup per process, or process groups only.
    pub containment: Containment,
    pub watchdog: Option<Watchdog>,
    /// How long a detached session waits to be resumed before it is destroyed.
    pub detached_ttl: Duration,
    /// `max_sessions` and `max_processes` are enforced here.
    pub limits: Limits,
    /// Every process's retained output counts against this one budget.
    pub retention_pool: Arc<RetentionPool>,
}

/// Every live session of one server, shared by all its connections.
#[derive(Clone)]
pub struct SessionRegistry {
    pub(super) settings: SessionSettings,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

impl SessionRegistry {
    pub fn new(settings: SessionSettings) -> Self {
        Self {
            settings,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Creates a session attached to `outbound`, under a fresh UUID v4, unless the
    /// server already holds `max_sessions`.
    pub fn create(&self, outbound: Outbound) -> Result<(Arc<Session>, Generation), LimitReached> {
        let max_sessions = self.settings.limits.max_sessions;
        let mut sessions = self.sessions();
        if sessions.len() >= max_sessions {
            return Err(LimitReached::Sessions {
                value: max_sessions,
            });
        }
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().to_string(),
            settings: self.settings.clone(),
            processes: Mutex::new(HashMap::new()),
            notifier: Notifier::default(),
            attachment: Mutex::new(Attachment::Attached),
            generation: watch::Sender::new(0),
            destroyed: CancellationToken::new(),
            handles: super::HandleTable::new(self.settings.limits.max_open_handles),
        });
        let generation = session.attach(outbound);
        sessions.insert(session.id.clone(), Arc::clone(&session));
        Ok((session, generation))
    }

    /// Re-attaches a detached session to `outbound` (docs/protocol.md §5). A session whose
    /// deadline has passed is destroyed here even if the reaper has not run yet.
    pub fn resume(
        &self,
        id: &str,
        outbound: Outbound,
    ) -> Result<(Arc<Session>, Generation), SessionError> {
        let mut sessions = self.sessions();
        // Negative control: an unknown id gets a fresh session instead of an error.
        if faults::active(Fault::ResumeAnySessionId) && !sessions.contains_key(id) {
            drop(sessions);
            return Ok(self.create(outbound)?);
        }
        let unknown = || SessionError::UnknownSession(id.to_owned());
        let session = sessions.get(id).cloned().ok_or_else(unknown)?;
        let attachment = *session.attachment();
        match attachment {
            // Negative control: an attached session is taken from its connection.
            Attachment::Attached if !faults::active(Fault::AllowDoubleAttach) => {
                Err(SessionError::AlreadyAttached(id.to_owned()))
            }
            Attachment::Detached { deadline } if Instant::now() >= deadline => {
                sessions.remove(id);
                drop(sessions);
                tracing::info!(session_id = id, "session expired at resume time");
                session.destroy();
                Err(unknown())
            }
            Attachment::Detached { .. } | Attachment::Attached => {
                let generation = session.attach(outbound);
                tracing::info!(session_id = id, generation, "session resumed");
                Ok((session, generation))
            }
        }
    }

    /// The connection that attached `session` at `generation` has ended: detach the
    /// session (if that connection still owns it) and arm its expiry.
    pub fn connection_ended(&self, session: &Arc<Session>, generation: Generation) {
        let ttl = match (
            faults::active(Fault::IgnoreTtl),
            faults::active(Fault::ExpireImmediately),
        ) {
            // Negative controls: a TTL that never runs out (30 years, tokio's own "far
            // future"), or none at all.
            (true, _) => Duration::from_secs(30 * 365 * 24 * 3600),
            (_, true) => Duration::ZERO,
            _ => self.settings.detached_ttl,
        };
        let deadline = Instant::now() + ttl;
        {
            let sessions = self.sessions();
            if !session.is_current(generation) || !sessions.contains_key(session.id()) {
                return;
            }
            *session.attachment() = Attachment::Detached { deadline };
            session.notifier.detach();
        }
        tracing::info!(session_id = session.id(), ?ttl, "session detached");
        let registry = self.clone();
        let session = Arc::clone(session);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => registry.expire(&session, generation),
                _ = session.superseded(generation) => {}
                _ = session.destroyed.cancelled() => {}
            }
        });
    }

    /// Destroys `session` if it is still detached from `generation` and past its deadline.
    fn expire(&self, session: &Arc<Session>, generation: Generation) {
        let mut sessions = self.sessions();
        let due = session.is_current(generation)
            && matches!(*session.attachment(), Attachment::Detached { deadline } if Instant::now() >= deadline);
        if due && sessions.remove(session.id()).is_some() {
            drop(sessions);
            tracing::info!(session_id = session.id(), "detached session expired");
            session.destroy();
        }
    }

    /// Destroys a session now (its connection cannot be resumed, as on stdio).
    pub fn destroy(&self, session: &Session) {
        self.sessions().remove(session.id());
        session.destroy();
    }

    /// Destroys every session (server shutdown).
    pub fn destroy_all(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions().drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.destroy();
        }
    }
}

/// A registry with process groups, without a watchdog and with 1 KiB of retention per
/// process.
#[cfg(test)]
pub(crate) fn registry_for_tests(detached_ttl: Duration, limits: Limits) -> SessionRegistry {
    SessionRegistry::new(SessionSettings {
        output_retention_bytes: 1024,
        containment: Containment::ProcessGroup,
        watchdog: None,
        detached_ttl,
        limits,
        retention_pool: RetentionPool::new(limits.max_retained_bytes),
    })
}
