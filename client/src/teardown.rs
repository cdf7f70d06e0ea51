//! Signalling and ending process groups: the one `killpg` wrapper of the crate, and the
//! SIGTERM → grace → SIGKILL → reap sequence shared by the client's stdio server and the
//! test harness's server under test.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    killpg(Pid::from_raw(pgid), signal)
}

/// Ends `child`, which leads its own process group. Blocks for at most `grace` plus a
/// reap; anything the child left in its group is killed too.
pub fn terminate_group(child: &mut Child, grace: Duration) {
    let pgid = child.id() as i32;
    // A group that is already gone has nothing left to signal.
    let _ = signal_group(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = signal_group(pgid, Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}
