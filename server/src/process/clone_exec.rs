//! The one unsafe spawn primitive: a vfork-style clone onto a small stack of its own,
//! the child running only async-signal-safe system calls, then `execve`. With a cgroup,
//! on x86-64, `clone3(CLONE_INTO_CGROUP)` starts the child inside it; elsewhere (or where
//! clone3 is refused) libc's `clone(CLONE_VM | CLONE_VFORK)`, and the child joins its
//! cgroup by writing `cgroup.procs`. `EXEC_SERVER_SPAWN=clone` forces the latter (a
//! diagnostic switch, and how the tests cover it).
//!
//! Why not std's `Command`: with a `pre_exec` hook std must `fork()` the whole
//! multi-threaded server (copying its page tables, then faulting copy-on-write pages in
//! both processes), which made `process/start` several times slower than a bare
//! `tokio::process::Command` (issue 18). Without a hook std takes `posix_spawn`, but
//! that cannot join a cgroup, set a controlling terminal, a parent-death signal or an
//! open-file limit. This does what glibc's `posix_spawn` does (a vfork-style clone that
//! shares the parent's memory, so nothing is copied; the calling thread sleeps until the
//! child has called `execve` or exited) with the server's own steps in the child.
//!
//! Everything the child needs (C strings, pointer arrays, descriptors) is prepared by
//! the parent before the clone: the child allocates nothing, takes no lock and touches
//! no Rust state except [`Shared::error`], through which it hands back the errno of the
//! step that failed (memory is shared, so no pipe is needed; `CLONE_VFORK` orders the
//! write before the parent's read).

use std::cell::{OnceCell, UnsafeCell};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// Size of the child's stack: it runs a few system calls in small frames (a `sigaction`
/// loop and a `PATH` walk over prepared pointers). A guard page sits below it.
const STACK_SIZE: usize = 64 * 1024;

/// What the child does between the clone and `execve`. Every pointer points into
/// memory the parent keeps alive until [`spawn`] returns.
pub struct ChildPlan {
    /// Paths to try in order (one for a name with a `/`, else one per `PATH` entry),
    /// with execvp's rules: `EACCES` is remembered, "not there" errors go on.
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Descriptors to place at 0, 1 and 2 (all the same for a PTY slave).
    pub stdio: [RawFd; 3],
    /// The child's cgroup: its directory, which `clone3` starts the child in, and its
    /// `cgroup.procs`, which the child joins first where `clone3` cannot.
    pub cgroup: Option<CgroupFds>,
    /// Start in this open directory…
    pub cwd_fd: Option<RawFd>,
    /// …or else in this path.
    pub cwd_path: Option<CString>,
    /// Make fd 0 (a PTY slave) the controlling terminal of the new session.
    pub controlling_tty: bool,
    pub open_file_limits: Option<libc::rlimit>,
}

/// A cgroup's directory and `cgroup.procs`, both open.
#[derive(Clone, Copy)]
pub struct CgroupFds {
    pub dir: RawFd,
    pub procs: RawFd,
}

/// What parent and child share: the plan as raw pointers, and the child's error.
struct Shared {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh <path> args…` for a file without a `#!` line (execvp's ENOEXEC rule);
    /// slot 1 is filled in by the child with the candidate that gave ENOEXEC.
    script_argv: UnsafeCell<Vec<*const libc::c_char>>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    /// `cgroup.procs` for the child to join, or -1 (none, or `clone3` placed it).
    cgroup_procs: RawFd,
    cwd_fd: RawFd,
    cwd_path: *const libc::c_char,
    controlling_tty: bool,
    open_file_limits: Option<libc::rlimit>,
    server_pid: libc::pid_t,
    /// 0 until the child fails; then the errno of the failing step.
    error: AtomicI32,
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

thread_local! {
    /// This thread's child stack, made at its first spawn and reused: a thread has at
    /// most one child between clone and `execve` (it sleeps meanwhile), and once the
    /// child has exec'd or exited the memory is ours alone again. Reuse saves a
    /// mmap/mprotect/munmap and the child's page faults on every spawn.
    static CHILD_STACK: OnceCell<Stack> = const { OnceCell::new() };
}

/// The top of this thread's child stack (see [`CHILD_STACK`]).
fn thread_stack_top() -> io::Result<*mut libc::c_void> {
    CHILD_STACK.with(|cell| {
        if let Some(stack) = cell.get() {
            return Ok(stack.top());
        }
        let stack = Stack::new()?;
        let top = stack.top();
        // Cannot be set meanwhile: nothing between `get` and here runs on this thread.
        let _ = cell.set(stack);
        Ok(top)
    })
}

/// A `mmap`ed stack with a `PROT_NONE` guard page at its low end, unmapped on drop.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = STACK_SIZE + page;
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the first page of the mapping we own.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down on every Linux target we build for).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, 16-byte aligned (page-aligned length).
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (the child has exec'd or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub enum Failure {
    /// The server could not prepare the clone (its stack).
    Setup(io::Error),
    /// The clone itself, or a step of the child (the `execve` included), with its errno;
    /// the child, if there was one, already reaped.
    Child(io::Error),
}

/// Starts the child described by `plan` in a new session (it leads its own session
/// and process group), with every signal at its default action, none blocked and none
/// pending, and returns its pid, unreaped.
pub fn spawn(plan: &ChildPlan) -> Result<libc::pid_t, Failure> {
    let argv = pointers(&plan.argv);
    let mut script_argv = vec![c"/bin/sh".as_ptr(), std::ptr::null()];
    script_argv.extend(argv.iter().skip(1));
    let mut shared = Shared {
        candidates: pointers(&plan.candidates),
        argv,
        script_argv: UnsafeCell::new(script_argv),
        envp: pointers(&plan.envp),
        stdio: plan.stdio,
        cgroup_procs: -1,
        cwd_fd: plan.cwd_fd.unwrap_or(-1),
        cwd_path: plan
            .cwd_path
            .as_deref()
            .map_or(std::ptr::null(), CStr::as_ptr),
        controlling_tty: plan.controlling_tty,
        open_file_limits: plan.open_file_limits,
        server_pid: std::process::id() as libc::pid_t,
        error: AtomicI32::new(0),
    };
    let stack_top = thread_stack_top().map_err(Failure::Setup)?;
    // Block every signal in this thread across the clone: the child shares our memory,
    // so one of the server's handlers must never run in it. It unblocks (with default
    // actions) just before `execve`.
    // SAFETY: sigset_t values filled by sigfillset; pthread_sigmask on this thread.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let cgroup_dir = plan.cgroup.map(|fds| fds.dir);
    // SAFETY (both calls): `child` gets a valid stack top (this thread's stack, which
    // nothing else uses while this thread sleeps in the clone) and a pointer to
    // `shared`, which outlives the child's use of it: with CLONE_VFORK this thread
    // sleeps until the child has called execve (which replaces its memory) or _exit.
    // The child runs only async-signal-safe calls on memory prepared here (see `child`).
    let (pid, clone_error) = match unsafe { clone3_into(cgroup_dir, stack_top, &shared) } {
        Clone3::Done(pid, errno) => (pid, errno),
        Clone3::NotTried => {
            shared.cgroup_procs = plan.cgroup.map_or(-1, |fds| fds.procs);
            unsafe { clone_vfork(stack_top, &shared) }
        }
        Clone3::Refused => {
            shared.cgroup_procs = plan.cgroup.map_or(-1, |fds| fds.procs);
            let (pid, errno) = unsafe { clone_vfork(stack_top, &shared) };
            // clone3 is the one at fault (missing, or refused by a seccomp filter) when
            // the fallback's child got as far as exec: use the fallback from now on.
            if pid != -1
                && shared.error.load(Ordering::Acquire) == 0
                && !CLONE3_UNUSABLE.swap(true, Ordering::Relaxed)
            {
                tracing::info!("clone3 with CLONE_INTO_CGROUP is refused here; children join their cgroup after the clone");
            }
            (pid, errno)
        }
    };
    let clone_error = io::Error::from_raw_os_error(clone_error);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid == -1 {
        return Err(Failure::Child(clone_error));
    }
    match shared.error.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            // The child has _exit()ed: reap it so that no zombie is left.
            loop {
                // SAFETY: waitpid on our own child, no status wanted.
                let reaped = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                if reaped != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            Err(Failure::Child(io::Error::from_raw_os_error(errno)))
        }
    }
}

/// `clone(CLONE_VM | CLONE_VFORK)` through libc: (pid, 0) or (-1, errno).
///
/// # Safety
/// As for [`clone3_into`].
unsafe fn clone_vfork(stack_top: *mut libc::c_void, shared: &Shared) -> (libc::pid_t, i32) {
    // SAFETY: see the caller's contract.
    let pid = unsafe {
        libc::clone(
            child,
            stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(shared).cast_mut().cast(),
        )
    };
    let errno = match pid {
        -1 => io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL),
        _ => 0,
    };
    (pid, errno)
}

/// Set once `clone3` with `CLONE_INTO_CGROUP` turned out unusable here (before Linux 5.7,
/// or refused by a seccomp filter), so that later spawns go straight to [`clone_vfork`].
static CLONE3_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// `EXEC_SERVER_SPAWN=clone`: never try clone3 (read once).
fn clone3_disabled() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED
        .get_or_init(|| std::env::var_os("EXEC_SERVER_SPAWN").is_some_and(|value| value == "clone"))
}

/// What [`clone3_into`] did.
enum Clone3 {
    /// Not applicable (no cgroup, not x86-64, disabled or known unusable).
    NotTried,
    /// Refused for a reason the fallback may not share (missing, or a seccomp filter).
    Refused,
    /// (pid, 0), or (-1, errno) for a failure the fallback would share.
    Done(libc::pid_t, i32),
}

/// The kernel's `struct clone_args` (linux/sched.h), as far as `cgroup`.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`: the child is born in the cgroup
/// whose directory is `cgroup_dir`, so it never migrates there. Moving a running
/// process takes the write side of the cgroup core's thread-group lock (tens of
/// microseconds, and milliseconds when it must wait for an RCU grace period); a birth in
/// place only takes its read side (and `cgroup_mutex`, as a cgroup's mkdir does).
/// Where it is not tried or is refused, the caller clones with [`clone_vfork`] and the
/// child joins by itself.
///
/// # Safety
/// `stack_top` is the top of a stack nobody else uses until this returns, and `shared`
/// stays valid and unmoved until then; all signals are blocked in this thread.
unsafe fn clone3_into(
    cgroup_dir: Option<RawFd>,
    stack_top: *mut libc::c_void,
    shared: &Shared,
) -> Clone3 {
    let Some(cgroup_dir) = cgroup_dir else {
        return Clone3::NotTried;
    };
    if !cfg!(target_arch = "x86_64") || CLONE3_UNUSABLE.load(Ordering::Relaxed) || clone3_disabled()
    {
        return Clone3::NotTried;
    }
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        // The kernel takes the lowest address and the size; the stack is just below the top.
        stack: stack_top as u64 - STACK_SIZE as u64,
        stack_size: STACK_SIZE as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir as u64,
    };
    // SAFETY: see this function's contract.
    let result = unsafe { raw_clone3(&args, shared) };
    match result {
        pid if pid >= 0 => Clone3::Done(pid as libc::pid_t, 0),
        errno => match -errno as i32 {
            // Out of processes or memory: the fallback would fail alike.
            errno @ (libc::EAGAIN | libc::ENOMEM) => Clone3::Done(-1, errno),
            // ENOSYS (before 5.3), E2BIG or EINVAL (no CLONE_INTO_CGROUP, before 5.7),
            // EPERM or ENOSYS from a seccomp filter, or a cgroup error, which the
            // fallback's join then reports.
            _ => Clone3::Refused,
        },
    }
}

/// The `clone3` system call for a child that starts on its own stack: libc has no
/// wrapper, and a child that shares our memory cannot return through Rust code, so the
/// child's side is written here: call [`child`] with `shared`, then exit with what it
/// returns (it never does: it execs or `_exit`s). Returns the pid, or -errno.
///
/// # Safety
/// As for [`clone3_into`]; `args` asks for a new stack.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: &CloneArgs, shared: &Shared) -> i64 {
    let result: i64;
    // SAFETY: the parent's side is a plain system call (which clobbers rcx and r11 and
    // returns in rax); the child's side runs on its own 16-byte aligned stack, keeps
    // r12 and r13 from the parent (the kernel copies the registers), and never returns
    // into this function.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            // The outermost frame, for debuggers (as glibc's clone does).
            "xor ebp, ebp",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") std::ptr::from_ref(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child as extern "C" fn(*mut libc::c_void) -> libc::c_int,
            in("r13") std::ptr::from_ref(shared),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_args: &CloneArgs, _shared: &Shared) -> i64 {
    -(libc::ENOSYS as i64)
}

/// The child, between clone and execve.
///
/// SAFETY (for the whole function): it runs on its own stack in the parent's memory,
/// with the parent's thread pointer (so `errno` is the sleeping parent thread's), and
/// all signals blocked. It only reads `Shared` (filled before the clone) and makes
/// async-signal-safe system calls through libc's thin wrappers: no allocation, no lock,
/// no panic (no indexing that could fail, no formatting), no unwinding out of it.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&Shared` the parent passed, alive until we exec or exit.
    let shared = unsafe { &*(arg as *const Shared) };
    let fail = |errno: libc::c_int| -> ! {
        shared.error.store(errno.max(1), Ordering::Release);
        // SAFETY: _exit(2) ends this process without running atexit handlers or
        // touching the parent's stdio buffers.
        unsafe { libc::_exit(127) }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY: each call below is a system call on descriptors and buffers the parent
    // prepared; all are async-signal-safe.
    unsafe {
        // First, so that everything the child does (and forks) is inside its cgroup.
        if shared.cgroup_procs >= 0
            && libc::write(shared.cgroup_procs, b"0".as_ptr().cast(), 1) != 1
        {
            fail(errno());
        }
        // Before the dup2s, which could overwrite the directory's descriptor if it were
        // 0, 1 or 2 (only in a host that closed those).
        if shared.cwd_fd >= 0 {
            if libc::fchdir(shared.cwd_fd) == -1 {
                fail(errno());
            }
        } else if !shared.cwd_path.is_null() && libc::chdir(shared.cwd_path) == -1 {
            fail(errno());
        }
        for (target, &source) in shared.stdio.iter().enumerate() {
            let target = target as RawFd;
            if source == target {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                let flags = libc::fcntl(source, libc::F_GETFD);
                if flags == -1
                    || libc::fcntl(source, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1
                {
                    fail(errno());
                }
            } else if libc::dup2(source, target) == -1 {
                fail(errno());
            }
        }
        if libc::setsid() == -1 {
            fail(errno());
        }
        if shared.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
            fail(errno());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            fail(errno());
        }
        // The server may have died before the prctl; then nobody would signal us.
        if libc::getppid() != shared.server_pid {
            fail(libc::ESRCH);
        }
        if let Some(limits) = &shared.open_file_limits {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limits) == -1 {
                fail(errno());
            }
        }
        // Every signal to its default action, as a login session gets them (exec keeps
        // ignored ones; a server started under nohup or as a background job would hand
        // them on). Numbers sigaction refuses (SIGKILL, SIGSTOP, libc's own) are skipped.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=64 {
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
        // A signal sent to the server's process group before our `setsid` is pending
        // here (all were blocked across the clone). The server's handler, or its
        // ignoring it, is gone: delivered now it would kill the child for a signal that
        // was never meant for it. Discard it, as the server would have.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let no_wait = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&all, std::ptr::null_mut(), &no_wait) > 0 {}
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == -1 {
            fail(errno());
        }
        // execvp's rules over the prepared candidates.
        let mut saw_eacces = false;
        let mut last = libc::ENOENT;
        let mut candidate = shared.candidates.as_ptr();
        while !(*candidate).is_null() {
            libc::execve(*candidate, shared.argv.as_ptr(), shared.envp.as_ptr());
            last = errno();
            if last == libc::ENOEXEC {
                // The parent does not touch `script_argv` while we run.
                let script_argv = (*shared.script_argv.get()).as_mut_ptr();
                *script_argv.add(1) = *candidate;
                libc::execve(*script_argv, script_argv.cast_const(), shared.envp.as_ptr());
                // As glibc does, the shell's failure goes through the same rules.
                last = errno();
            }
            match last {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => fail(last),
            }
            candidate = candidate.add(1);
        }
        fail(if saw_eacces { libc::EACCES } else { last })
    }
}
