//! Ending a child that leads its own process group: SIGTERM to the group, a grace
//! period for it to exit, then SIGKILL to the group and reap. One implementation for
//! the client's stdio server and the test harness's server under test.

use std::process::Child;
use std::time::{Duration, Instant};

/// Blocks for at most `grace` plus a reap. Anything the child left in its group is
/// killed too.
pub fn terminate_group(child: &mut Child, grace: Duration) {
    let pgid = child.id() as libc::pid_t;
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to the process group `pgid` (errors such as "no such group" are moot).
pub fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: killpg only sends a signal; callers pass the group of a child they spawned.
    unsafe { libc::killpg(pgid, signal) };
}
