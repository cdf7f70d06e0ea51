//! The one deadline convention: every wait is a logical duration (by default
//! [`DEFAULT_WAIT`]) multiplied by the time scale, from the builder's
//! [`time_scale`](crate::ExecServerBuilder::time_scale) or `EXEC_HARNESS_TIME_SCALE`.

use std::future::Future;
use std::time::Duration;

use crate::error::{HarnessError, Report, Result};

/// Default deadline of every wait, before the time scale is applied.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The environment variable that sets the time scale (e.g. `3` on a slow CI machine).
pub const TIME_SCALE_VAR: &str = "EXEC_HARNESS_TIME_SCALE";

/// The largest time scale taken from the environment: a day per default wait.
const MAX_TIME_SCALE: f64 = 17_280.0;

/// The time scale from `EXEC_HARNESS_TIME_SCALE` (1 when unset or not a positive number;
/// at most [`MAX_TIME_SCALE`], so that scaled durations stay representable).
pub fn time_scale_from_env() -> f64 {
    std::env::var(TIME_SCALE_VAR)
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|scale| scale.is_finite() && *scale > 0.0)
        .map_or(1.0, |scale| scale.min(MAX_TIME_SCALE))
}

/// How one server and its connections wait: a time scale applied to every duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Waits {
    pub scale: f64,
}

impl Waits {
    /// A logical duration on this machine.
    pub fn scaled(&self, logical: Duration) -> Duration {
        logical.mul_f64(self.scale)
    }

    /// The default deadline: [`DEFAULT_WAIT`] × scale.
    pub fn default_wait(&self) -> Duration {
        self.scaled(DEFAULT_WAIT)
    }
}

/// Runs `work` with a deadline of `within` (already scaled); on expiry, a timeout
/// naming `expected`.
pub(crate) async fn bounded<T>(
    expected: impl FnOnce() -> String,
    within: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(within, work)
        .await
        .unwrap_or_else(|_| {
            Err(HarnessError::Timeout {
                expected: expected(),
                waited: within,
                arrived: "nothing".into(),
                report: Report::default(),
            })
        })
}
