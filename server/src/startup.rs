//! The binary's start-up sequence, run before any other thread exists: build the server
//! options from the command line, raise the open-file limit, choose the containment and
//! fork the orphan watchdog.

use crate::cli::{OptionsError, ServeArgs};
use crate::containment::{Containment, ContainmentMode};
use crate::options::ServerOptions;
use crate::watchdog::Watchdog;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The arguments themselves are wrong.
    #[error("{0}")]
    Usage(String),
    /// Something the arguments name, or the containment they ask for, is unavailable.
    #[error("{0}")]
    Failed(String),
}

impl StartupError {
    /// The exit status for this error: 2 for usage errors, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Usage(_) => 2,
            StartupError::Failed(_) => 1,
        }
    }
}

/// The options to serve `args` with, containment and watchdog included.
///
/// # Safety
/// The process must still be single-threaded (call it before building the tokio
/// runtime): it forks the watchdog, whose child then runs code that is only sound when
/// no other thread held a lock at the fork.
pub unsafe fn start_up(args: &ServeArgs) -> Result<ServerOptions, StartupError> {
    let mut options = args.server_options().map_err(|err| match err {
        OptionsError::Usage(_) => StartupError::Usage(err.to_string()),
        OptionsError::Io(_) => StartupError::Failed(err.to_string()),
    })?;
    if let Err(err) = crate::process::raise_open_file_limit() {
        tracing::warn!(%err, "could not raise the open-file limit");
    }
    options.containment = Containment::select(args.containment).map_err(StartupError::Failed)?;
    // SAFETY: our caller guarantees the process is single-threaded; nothing above
    // starts a thread (the containment probe forks and waits for its child).
    let watchdog = unsafe { Watchdog::start(&options.containment) };
    options.watchdog = match watchdog {
        Ok(watchdog) => Some(watchdog),
        Err(err) => {
            // Nobody would remove the server's cgroup at exit.
            if let Some(cgroup) = options.containment.server_cgroup() {
                let _ = cgroup.remove();
                if args.containment == ContainmentMode::Cgroup {
                    return Err(StartupError::Failed(format!(
                        "--containment cgroup needs the orphan watchdog, which could not start: {err}"
                    )));
                }
                options.containment = Containment::ProcessGroup;
            }
            tracing::warn!(%err, "could not start the orphan watchdog");
            None
        }
    };
    Ok(options)
}
