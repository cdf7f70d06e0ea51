//! SIGCHLD disposition: the server reaps its children itself (`process`, and the
//! cgroup probe in `containment`), so the kernel must not reap them first.

use std::sync::Once;

/// Makes sure the kernel leaves our children for us to reap. An ignored SIGCHLD is
/// inherited through `exec` (a launcher may have set it), and with it the kernel reaps
/// children the moment they exit: their exit status is lost and their pid, the group id,
/// is freed while the group may still need killing. A handler someone installed is kept.
pub fn keep_children_for_us_to_reap() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction(2) with valid pointers; a zeroed sigaction is a valid value.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut current) != 0 {
                return;
            }
            if current.sa_sigaction == libc::SIG_IGN {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut());
            }
        }
    });
}
