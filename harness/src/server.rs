//! [`ExecServer`]: the server under test as a process (or in-process task): its URL,
//! pid, stderr, stray stdout, signals and exit. Talking to it goes through a
//! [`Connection`](crate::Connection), opened with [`ExecServer::connect`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{HarnessError, Result};
use crate::launch::{self, Running, StdioPipes, Transport};
use crate::trace::Tail;
use crate::wait::Waits;

/// How long a child server gets to exit after SIGTERM at teardown.
pub(crate) const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// The server itself, shared by the [`ExecServer`] handles and every connection to it;
/// dropping the last one stops it.
pub(crate) struct ServerProcess {
    pub running: Mutex<Running>,
    pub transport: Transport,
    pub url: Option<String>,
    pub waits: Waits,
    /// Sent on every websocket connection, if the server requires one.
    pub token: Option<exec_client::BearerToken>,
    /// A stdio server's stdout and stdin: its one connection, until it is opened.
    pub stdio: Mutex<Option<StdioPipes>>,
    /// The revision new connections' typed helpers speak (the builder's `revision`).
    pub revision: exec_protocol::Revision,
}

impl ServerProcess {
    pub fn running(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A child server's stderr tail (`None` in-process).
    pub fn stderr_tail(&self) -> Option<Arc<Tail>> {
        match &*self.running() {
            Running::Child { stderr, .. } => Some(Arc::clone(stderr)),
            Running::InProcess { .. } | Running::Attached => None,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        launch::stop(&mut self.running(), TEARDOWN_GRACE);
    }
}

/// A running server under test. Cheap to clone; the server stops (bounded: SIGTERM, up
/// to 2 s, then SIGKILL of its process group) when the last clone and the last
/// [`Connection`](crate::Connection) to it are dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
/// let server = exec_server_harness::exec_server().await?;
/// assert!(server.url().unwrap().starts_with("ws://127.0.0.1:"));
/// let conn = server.connect().await?;
/// conn.initialize("doc").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ExecServer {
    pub(crate) process: Arc<ServerProcess>,
}

impl ExecServer {
    /// `ws://IP:PORT` for a websocket server (`None` on stdio).
    pub fn url(&self) -> Option<&str> {
        self.process.url.as_deref()
    }

    /// The revision new connections' typed helpers speak
    /// ([`ExecServerBuilder::revision`](crate::ExecServerBuilder::revision)).
    pub fn revision(&self) -> exec_protocol::Revision {
        self.process.revision
    }

    /// The transport the server was started on.
    pub fn transport(&self) -> Transport {
        self.process.transport
    }

    /// The time scale every deadline is multiplied by.
    pub fn time_scale(&self) -> f64 {
        self.process.waits.scale
    }

    /// A logical duration multiplied by the time scale.
    pub fn scaled(&self, logical: Duration) -> Duration {
        self.process.waits.scaled(logical)
    }

    /// The default deadline of every wait: [`DEFAULT_WAIT`](crate::DEFAULT_WAIT) × the
    /// time scale (already scaled: do not pass it to a `*_within` method, which scales
    /// again).
    pub fn default_wait(&self) -> Duration {
        self.process.waits.default_wait()
    }

    /// The pid of a child server (`None` in-process); it leads its own process group.
    pub fn pid(&self) -> Option<i32> {
        match &*self.process.running() {
            Running::Child { child, .. } => Some(child.id() as i32),
            Running::InProcess { .. } | Running::Attached => None,
        }
    }

    /// The tail of a child server's stderr (empty in-process).
    pub fn stderr(&self) -> String {
        self.process
            .stderr_tail()
            .map(|tail| tail.text())
            .unwrap_or_default()
    }

    /// What a websocket child server printed on stdout after its start-up line (the
    /// protocol allows nothing).
    pub fn extra_stdout(&self) -> String {
        match &*self.process.running() {
            Running::Child { extra_stdout, .. } => extra_stdout.text(),
            Running::InProcess { .. } | Running::Attached => String::new(),
        }
    }

    /// Waits (default deadline) until a websocket child server's stdout reaches EOF (it
    /// exited), then returns everything it printed after the start-up line.
    pub async fn stdout_after_startup_line(&self) -> Result<String> {
        let tail = match &*self.process.running() {
            Running::Child { extra_stdout, .. } => Arc::clone(extra_stdout),
            Running::InProcess { .. } | Running::Attached => return Ok(String::new()),
        };
        let within = self.default_wait();
        tokio::time::timeout(within, tail.closed())
            .await
            .map_err(|_| HarnessError::Timeout {
                expected: "EOF on the server's stdout".into(),
                waited: within,
                arrived: format!("so far: {:?}", tail.text()),
                report: Default::default(),
            })?;
        Ok(tail.text())
    }

    /// Sends the OS signal `signal` (e.g. `libc::SIGTERM`) to a child server process
    /// (not its group). For `process/signal` see [`Session::signal`](crate::Session::signal).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().ok_or_else(|| {
            HarnessError::Unsupported("an in-process server has no pid to signal".into())
        })?;
        // SAFETY: signalling the server process we started.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Waits (default deadline) for a child server to exit and returns its status.
    pub async fn wait_exit(&self) -> Result<std::process::ExitStatus> {
        self.wait_exit_for(self.default_wait()).await
    }

    /// Like [`wait_exit`](Self::wait_exit) with a logical deadline (× the time scale).
    pub async fn wait_exit_within(&self, within: Duration) -> Result<std::process::ExitStatus> {
        self.wait_exit_for(self.scaled(within)).await
    }

    async fn wait_exit_for(&self, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            {
                let mut running = self.process.running();
                match &mut *running {
                    Running::Child { child, .. } => {
                        if let Some(status) = child.try_wait()? {
                            return Ok(status);
                        }
                    }
                    Running::InProcess { .. } | Running::Attached => {
                        return Err(HarnessError::Unsupported(
                            "only a server the harness started as a child process can be waited for".into(),
                        ));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    expected: "the server process to exit".into(),
                    waited: within,
                    arrived: "it is still running".into(),
                    report: Default::default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
