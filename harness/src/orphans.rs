//! Checks that processes are really gone, for tests that assert "nothing leaks".

use std::time::Duration;

use crate::error::{HarnessError, Report, Result};

/// True while `pid` exists and is not a zombie (a zombie has already died).
///
/// ```
/// assert!(exec_server_harness::process_alive(std::process::id() as i32));
/// ```
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is gone, or fails after the logical `within` × the time scale of
/// `EXEC_HARNESS_TIME_SCALE` (a free function knows no builder).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
/// use std::time::Duration;
/// let mut child = std::process::Command::new("true").spawn()?;
/// let pid = child.id() as i32;
/// child.wait()?;
/// exec_server_harness::wait_for_process_gone(pid, Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
pub async fn wait_for_process_gone(pid: i32, within: Duration) -> Result<()> {
    let within = within.mul_f64(crate::wait::time_scale_from_env());
    let poll = async {
        while process_alive(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(within, poll)
        .await
        .map_err(|_| HarnessError::Timeout {
            expected: format!("process {pid} to be gone"),
            waited: within,
            arrived: "it is still running".into(),
            report: Report::default(),
        })
}
