"""Processes of a session (§6): spawning, output and exit events, read, write, signals.

Every child leads its own session and process group (start_new_session=True), so
killing "the tree" is killpg(pid, SIGKILL). The child's exit is watched through a
pidfd on the event loop; output pipes (or the PTY master) through add_reader.
"""

import asyncio
import collections
import fcntl
import logging
import os
import re
import signal
import stat
import struct
import subprocess
import termios

import fsops
from rpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError, b64, invalid_params

log = logging.getLogger("python-exec-server")

CHUNK = 64 * 1024                 # §6.2: one chunk carries up to 64 KiB
STDIN_HIGH_WATER = 1024 * 1024    # §6.4: hold the answer while more than 1 MiB waits
WRITE_IDS_KEPT = 4096             # §6.4: writeIds remembered per process
EVICT_AFTER = 30.0                # §6.3: a closed process stays readable for 30 s
CORE_ENV = ("PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE",
            "LOGNAME", "USER")
SIGNALS = {"interrupt": signal.SIGINT, "terminate": signal.SIGTERM, "kill": signal.SIGKILL,
           "hangup": signal.SIGHUP, "quit": signal.SIGQUIT}
CODEX_FIELDS = ("shellSnapshot", "managedNetwork", "enforceManagedNetwork", "networkProxy")


def glob_matches(pattern, name):
    """`*` and `?` globs, ignoring case (§6.1 envPolicy)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.IGNORECASE | re.DOTALL) is not None


def build_env(env, policy):
    """The child's environment (§6.1): `env` alone, or envPolicy's six steps."""
    if policy is None:
        return dict(env)
    inherit = policy.str("inherit", required=False, default="core")
    if inherit not in ("core", "all", "none"):
        raise invalid_params("envPolicy.inherit",
                             f"unknown variant `{inherit}`, expected one of `core`, `all`, `none`")
    if inherit == "all":
        result = dict(os.environ)
    elif inherit == "core":
        result = {k: v for k, v in os.environ.items() if k in CORE_ENV}
    else:
        result = {}
    if not policy.bool("ignoreDefaultExcludes"):
        result = {k: v for k, v in result.items()
                  if not any(glob_matches(g, k) for g in ("*KEY*", "*SECRET*", "*TOKEN*"))}
    excludes = policy.str_list("exclude", required=False, default=[])
    result = {k: v for k, v in result.items() if not any(glob_matches(g, k) for g in excludes)}
    result.update(policy.str_map("set", default={}))
    include_only = policy.str_list("includeOnly", required=False, default=[])
    if include_only:
        result = {k: v for k, v in result.items() if any(glob_matches(g, k) for g in include_only)}
    result.update(env)
    return result


class PipeWriter:
    """A non-blocking writer for a pipe or PTY: writes are queued synchronously (so
    they keep arrival order) and flushed by the event loop."""

    def __init__(self, fd, on_close_bytes=None):
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self.fd = fd
        self.buf = bytearray()
        self.closed = False          # no more writes are accepted
        self.fd_open = True
        self.close_when_flushed = False
        self.eof_bytes = on_close_bytes  # on a PTY, closing stdin sends ^D instead
        self.watching = False
        self.waiters = []

    def write(self, data, close=False):
        self.buf += data
        if close:
            self.closed = True
            if self.eof_bytes is not None:
                self.buf += self.eof_bytes
            else:
                self.close_when_flushed = True
        self._flush()

    def _flush(self):
        while self.buf and self.fd_open:
            try:
                n = os.write(self.fd, self.buf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the child closed its stdin; the write failed
                self.shut()
                return
            del self.buf[:n]
        if self.buf and not self.watching and self.fd_open:
            self.loop.add_writer(self.fd, self._flush)
            self.watching = True
        elif not self.buf and self.watching:
            self.loop.remove_writer(self.fd)
            self.watching = False
        if not self.buf and self.close_when_flushed:
            self.shut()
        self._wake()

    def _wake(self):
        if len(self.buf) <= STDIN_HIGH_WATER or not self.fd_open:
            for fut in self.waiters:
                if not fut.done():
                    fut.set_result(None)
            self.waiters.clear()

    async def drain(self):
        """Waits while more than 1 MiB is still queued (§6.4)."""
        while len(self.buf) > STDIN_HIGH_WATER and self.fd_open:
            fut = self.loop.create_future()
            self.waiters.append(fut)
            await fut

    def shut(self):
        self.closed = True
        if self.fd_open:
            if self.watching:
                self.loop.remove_writer(self.fd)
                self.watching = False
            os.close(self.fd)
            self.fd_open = False
        self.buf.clear()
        self._wake()


class Process:
    def __init__(self, session, process_id, retention):
        self.session = session
        self.id = process_id
        self.loop = asyncio.get_running_loop()
        self.retention = retention
        self.next_seq = 1
        self.chunks = collections.deque()  # (seq, stream, bytes), oldest first
        self.retained = 0
        self.first_retained_seq = 1
        self.exited = False
        self.exit_code = None
        self.exited_seq = None
        self.closed = False
        self.closed_seq = None
        self.open_streams = 0
        self.waiters = []
        self.stdin = None
        self.pty_master = None
        self.out_fds = set()
        self.write_ids = collections.OrderedDict()
        self.popen = None
        self.pidfd = None
        self.evict_handle = None
        self.gone = False  # evicted or destroyed

    # ---- spawning

    def spawn(self, argv, arg0, cwd, env, tty, pipe_stdin):
        stdin_r = stdin_w = slave = None
        out_r, out_w = os.pipe2(os.O_CLOEXEC) if not tty else (None, None)
        err_r, err_w = os.pipe2(os.O_CLOEXEC) if not tty else (None, None)
        preexec = None
        if tty:
            master, slave = os.openpty()
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            stdin, stdout, stderr = slave, slave, slave
            # setsid() runs before preexec_fn; make the PTY the controlling terminal.
            preexec = lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # noqa: E731
        else:
            if pipe_stdin:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                stdin = stdin_r
            else:
                stdin = subprocess.DEVNULL
            stdout, stderr = out_w, err_w
        try:
            self.popen = subprocess.Popen(
                [arg0 if arg0 is not None else argv[0]] + argv[1:], executable=argv[0],
                stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
                start_new_session=True, close_fds=True, preexec_fn=preexec)
        except OSError as exc:
            for fd in (stdin_r, stdin_w, out_r, out_w, err_r, err_w, slave):
                if fd is not None:
                    os.close(fd)
            if tty:
                os.close(master)
            subject = "cwd" if exc.filename == cwd and exc.filename is not None else "program"
            what = f"cannot use cwd {cwd}" if subject == "cwd" else f"failed to start {argv[0]}"
            raise RpcError(INTERNAL_ERROR, f"{what}: {os.strerror(exc.errno)} (os error {exc.errno})",
                           {"errno": exc.errno, "subject": subject}) from None
        # The parent keeps only its ends.
        for fd in (stdin_r, out_w, err_w, slave):
            if fd is not None:
                os.close(fd)
        if tty:
            self.pty_master = master
            self._watch(master, "pty")
            self.stdin = PipeWriter(os.dup(master), on_close_bytes=b"\x04")
        else:
            self._watch(out_r, "stdout")
            self._watch(err_r, "stderr")
            if stdin_w is not None:
                self.stdin = PipeWriter(stdin_w)
        self.pidfd = os.pidfd_open(self.popen.pid)
        self.loop.add_reader(self.pidfd, self._on_exit)

    def _watch(self, fd, stream):
        os.set_blocking(fd, False)
        self.out_fds.add(fd)
        self.open_streams += 1
        self.loop.add_reader(fd, self._on_output, fd, stream)

    def _close_stream(self, fd):
        self.out_fds.discard(fd)
        self.loop.remove_reader(fd)
        os.close(fd)
        if fd == self.pty_master:
            self.pty_master = None
            if self.stdin is not None:
                self.stdin.shut()
        self.open_streams -= 1

    # ---- events (§6.2)

    def _take_seq(self):
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def _on_output(self, fd, stream):
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO from a PTY master once the terminal is gone: EOF
            data = b""
        if not data:
            self._close_stream(fd)
            self._maybe_close()
            return
        seq = self._take_seq()
        self.chunks.append((seq, stream, data))
        self.retained += len(data)
        # Retention (§6.3): keep the newest bytes, always at least the newest chunk.
        while self.retained > self.retention and len(self.chunks) > 1:
            old_seq, _, old = self.chunks.popleft()
            self.retained -= len(old)
            self.first_retained_seq = old_seq + 1
        self.session.notify("process/output", {"processId": self.id, "seq": seq, "stream": stream,
                                               "chunk": b64(data)})
        self._wake()

    def _on_exit(self):
        # WNOWAIT: the leader stays an unreaped zombie until destroy(). While it exists
        # its pid, and so its process group id, cannot be handed out again, so
        # kill_tree() never signals a stranger's group.
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is None:
            return
        if self.gone:  # destroyed while it ran: only reap it
            self._reap()
            return
        self.loop.remove_reader(self.pidfd)
        self.exited = True
        params = {"processId": self.id}
        if info.si_code == os.CLD_EXITED:
            self.exit_code = info.si_status
        else:  # killed by signal N: 128 + N (§6.2)
            self.exit_code = 128 + info.si_status
            try:
                params["signal"] = signal.Signals(info.si_status).name
            except ValueError:
                pass
        self.exited_seq = self._take_seq()
        params.update({"seq": self.exited_seq, "exitCode": self.exit_code, "sandboxDenied": False})
        self.session.notify("process/exited", params)
        self._wake()
        self._maybe_close()

    def _maybe_close(self):
        if self.closed or not self.exited or self.open_streams:
            return
        self.closed = True
        self.closed_seq = self._take_seq()
        if self.stdin is not None:
            self.stdin.shut()
        self.session.notify("process/closed", {"processId": self.id, "seq": self.closed_seq})
        self._wake()
        self.evict_handle = self.loop.call_later(EVICT_AFTER, self.session.evict, self.id)

    def _wake(self):
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters.clear()

    # ---- requests

    def _ready(self, after_seq):
        return (any(seq > after_seq for seq, _, _ in reversed(self.chunks))
                or self.closed or (self.exited_seq is not None and self.exited_seq > after_seq))

    def read_result(self, after_seq, max_bytes):
        chunks, total = [], 0
        for seq, stream, data in self.chunks:
            if seq <= after_seq:
                continue
            if chunks and max_bytes is not None and total + len(data) > max_bytes:
                break
            if not chunks and max_bytes is not None and len(data) > max_bytes:
                chunks.append({"seq": seq, "stream": stream, "chunk": b64(data)})
                break  # always at least one chunk, even when maxBytes is 0
            chunks.append({"seq": seq, "stream": stream, "chunk": b64(data)})
            total += len(data)
        return {
            "chunks": chunks,
            "nextSeq": chunks[-1]["seq"] + 1 if chunks else self.next_seq,
            "exited": self.exited,
            "exitCode": self.exit_code,
            "closed": self.closed,
            "failure": None,
            "firstRetainedSeq": self.first_retained_seq,
            "exitedSeq": self.exited_seq,
            "closedSeq": self.closed_seq,
            "sandboxDenied": False,
        }

    async def long_poll(self, after_seq, wait_ms):
        """Waits up to wait_ms for something newer than after_seq (§6.3)."""
        deadline = self.loop.time() + wait_ms / 1000
        while not self._ready(after_seq) and not self.session.poll_cutoff and not self.gone:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            fut = self.loop.create_future()
            self.waiters.append(fut)
            timer = self.loop.call_later(remaining, lambda f=fut: f.done() or f.set_result(None))
            try:
                await fut
            finally:
                timer.cancel()

    def signal(self, name):
        if self.pty_master is not None and name == "interrupt" and self.stdin and not self.stdin.closed:
            self.stdin.write(b"\x03")  # on a PTY, interrupt is the ^C character (§6.5)
            return
        if not self.exited:  # once the child is reaped, nothing is signalled
            try:
                os.killpg(self.popen.pid, SIGNALS[name])
            except ProcessLookupError:
                pass

    def kill_tree(self):
        """SIGKILL the process group. After the leader is reaped, the group id cannot be
        handed out again while any member of the group lives."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self):
        if self.pidfd is None:
            return
        self.loop.remove_reader(self.pidfd)
        self.popen.wait()  # it has exited: this does not block
        os.close(self.pidfd)
        self.pidfd = None

    def resize(self, rows, cols):
        if self.pty_master is None:
            raise RpcError(INVALID_REQUEST, f"process {self.id} is not attached to a pty")
        try:
            fcntl.ioctl(self.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except OSError as exc:
            raise RpcError(INTERNAL_ERROR, f"resize failed: {exc}") from None

    def destroy(self):
        """Evicted or session gone: kill the tree and release every descriptor."""
        self.gone = True
        self.kill_tree()
        if self.evict_handle:
            self.evict_handle.cancel()
        # An exited leader is a zombie: reap it now. One still running was just killed:
        # its pidfd reader reaps it when it dies, without blocking the loop here.
        if self.exited:
            self._reap()
        for fd in list(self.out_fds):
            self._close_stream(fd)
        if self.stdin is not None:
            self.stdin.shut()
        self._wake()


def start(session, p, retention):
    """process/start (§6.1): validated, then spawned synchronously, so that later
    requests naming the process always find it."""
    process_id = p.str("processId", max_bytes=256)
    argv = p.str_list("argv")
    if not argv:
        raise invalid_params("argv", "must not be empty")
    cwd = fsops.parse_path("cwd", p.str("cwd")).path
    env = p.str_map("env", default={})
    tty = p.bool("tty")
    pipe_stdin = p.bool("pipeStdin")
    arg0 = p.str("arg0", required=False)
    policy = p.obj("envPolicy")
    fsops.check_sandbox(p)
    for name in CODEX_FIELDS:
        if p.p.get(name) is not None:
            raise invalid_params(name, "not supported by this server; only null is accepted")
    child_env = build_env(env, policy)
    if process_id in session.processes:
        raise RpcError(INVALID_REQUEST, f"process {process_id} already exists")
    # Check the cwd before spawning, so its errors are never blamed on the program.
    try:
        st = os.stat(cwd)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, os.strerror(20))
        if not os.access(cwd, os.X_OK):
            raise PermissionError(13, os.strerror(13))
    except OSError as exc:
        raise RpcError(INTERNAL_ERROR, f"cannot use cwd {cwd}: {os.strerror(exc.errno)} (os error {exc.errno})",
                       {"errno": exc.errno, "subject": "cwd"}) from None
    proc = Process(session, process_id, retention)
    proc.spawn(argv, arg0, cwd, child_env, tty, pipe_stdin)
    session.processes[process_id] = proc
    return {"processId": process_id, "sandboxType": "none"}
