#!/usr/bin/env python3
"""A small, independent exec-server (protocol revision 2026-08), written from
docs/protocol.md alone.

    python3 server.py --listen ws://127.0.0.1:0     # prints ws://IP:PORT, then serves
    python3 server.py --listen stdio                # JSON Lines on stdin/stdout

Files: server.py (command line, transports, JSON-RPC connection and handshake),
processes.py (§6), fsops.py (§7), rpc.py (frame parsing, errors, params).
No session resume: a session lives exactly as long as its connection.
"""

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import resource
import signal
import stat
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fsops  # noqa: E402
import processes  # noqa: E402
from rpc import (INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, Params,  # noqa: E402
                 ParseError, RpcError, dumps, invalid_params, parse_frame)

log = logging.getLogger("python-exec-server")

VERSION = "0.1.0"
MAX_MESSAGE = 64 * 1024 * 1024
STDIO_GRACE = 2.0  # §2.2: requests already read at EOF get 2 s to be answered

PROCESS_METHODS = ("process/start", "process/read", "process/write", "process/signal",
                   "process/terminate", "process/resize")
ENV_METHODS = ("environment/info", "environment/status")
KNOWN_METHODS = {"initialize", *PROCESS_METHODS, *ENV_METHODS, *fsops.METHODS}


def capabilities(retention):
    """§9, trimmed to what this server really does (no resume, no fs root, no limits)."""
    return {
        "revisions": ["2026-08"],
        "transports": ["ws", "stdio"],
        "process": {"tty": True, "signal": list(processes.SIGNALS), "resize": True,
                    "closeStdin": True, "firstRetainedSeq": True, "containment": "processGroup",
                    "outputRetentionBytes": retention},
        "session": {"resume": False},
        "fs": {},
    }


class Session:
    """What a client's processes and fs handles belong to. Without resume, a session is
    created by initialize and destroyed when its connection ends."""

    def __init__(self, server, notify):
        self.server = server
        self.id = str(uuid.uuid4())
        self.notify_sink = notify
        self.processes = {}
        self.handles = {}
        self.poll_cutoff = False  # set when long-polls must return (stdio EOF grace over)
        self.destroyed = False

    def notify(self, method, params):
        if not self.destroyed:
            self.notify_sink({"method": method, "params": params})

    def evict(self, process_id):
        proc = self.processes.pop(process_id, None)
        if proc is not None:
            proc.destroy()

    def cut_polls(self):
        self.poll_cutoff = True
        for proc in self.processes.values():
            proc._wake()

    def destroy(self):
        self.destroyed = True
        for proc in self.processes.values():
            proc.destroy()
        self.processes.clear()
        for fd in self.handles.values():
            os.close(fd)
        self.handles.clear()
        self.server.sessions.discard(self)


class Connection:
    """One JSON-RPC connection (§3, §4). `send` queues one outbound message."""

    def __init__(self, server, send):
        self.server = server
        self._send = send
        self.state = "new"  # -> "initialized-pending" -> "ready"
        self.session = None
        self.tasks = set()

    def send(self, message):
        message = {"jsonrpc": "2.0", **message}
        self._send(message)

    def reply(self, req_id, result):
        self.send({"id": req_id, "result": result})

    def error(self, req_id, code, message, data=None):
        self.send({"id": req_id, "error": RpcError(code, message, data).to_json()})

    # ---- inbound frames, checked in the order of §3's table

    def handle_text(self, text):
        try:
            msg = parse_frame(text)
        except ParseError as exc:
            return self.error(None, PARSE_ERROR, f"parse error: {exc}")
        if isinstance(msg, list):
            return self.error(None, INVALID_REQUEST, "batch requests are not supported")
        if not isinstance(msg, dict):
            return self.error(None, INVALID_REQUEST, "a JSON-RPC message must be an object")
        has_id = "id" in msg
        req_id = msg.get("id")
        if has_id and (isinstance(req_id, bool) or not isinstance(req_id, (str, int))):
            return self.error(None, INVALID_REQUEST, "id must be a string or an integer")
        if "jsonrpc" in msg and msg["jsonrpc"] != "2.0":
            return self.error(req_id, INVALID_REQUEST, 'jsonrpc must be "2.0"')
        if "method" not in msg:
            if has_id and ("result" in msg or "error" in msg):
                log.warning("ignoring a response sent by the client (id %r)", req_id)
                return
            return self.error(req_id, INVALID_REQUEST, "not a JSON-RPC request")
        method = msg["method"]
        if not isinstance(method, str):
            return self.error(req_id, INVALID_REQUEST, "method must be a string")
        if not has_id:
            if method == "initialized" and self.state == "initialized-pending":
                self.state = "ready"
            elif method != "initialized":
                log.warning("ignoring the client notification %s", method)
            return
        try:
            result = self.dispatch(method, msg.get("params"))
        except RpcError as exc:
            return self.send({"id": req_id, "error": exc.to_json()})
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(self._finish(req_id, result))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.reply(req_id, result)

    async def _finish(self, req_id, coro):
        try:
            result = await coro
        except RpcError as exc:
            self.send({"id": req_id, "error": exc.to_json()})
        else:
            self.reply(req_id, result)

    def dispatch(self, method, params):
        """Runs a request's synchronous part; returns its result, or a coroutine that
        finishes it (so that requests naming one process take effect in arrival order)."""
        if method not in KNOWN_METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        if params is None:
            params = {}
        if method == "initialize":
            return self.initialize(params)
        family = method.split("/")[0]
        if self.state == "new":
            raise RpcError(INVALID_REQUEST, f"client must call initialize before using {family} methods")
        if self.state != "ready":
            raise RpcError(INVALID_REQUEST, f"client must send initialized before using {family} methods")
        if not isinstance(params, dict):
            if family == "environment":
                raise RpcError(INVALID_PARAMS, "invalid params: expected an object or no params")
            raise invalid_params(None, "expected an object")
        p = Params(params)
        if method in fsops.METHODS:
            return fsops.METHODS[method](self.session, p)
        return getattr(self, "m_" + method.replace("/", "_"))(p)

    # ---- §4 handshake

    def initialize(self, params):
        if self.state != "new":
            raise RpcError(INVALID_REQUEST, "initialize may only be sent once per connection")
        if not isinstance(params, dict):
            raise invalid_params(None, "expected an object")
        p = Params(params)
        p.str("clientName", max_bytes=256)
        resume = p.str("resumeSessionId", required=False)
        if resume is not None:
            # No session is ever detached here, so no id can be resumed (§5).
            raise RpcError(INVALID_REQUEST, f"unknown session id {resume}")
        self.session = Session(self.server, self.send)
        self.server.sessions.add(self.session)
        self.state = "initialized-pending"
        return {"sessionId": self.session.id,
                "serverInfo": {"name": "python-exec-server", "version": VERSION},
                "capabilities": capabilities(self.server.retention)}

    # ---- §6 processes

    def _process(self, p):
        process_id = p.str("processId", max_bytes=256)
        proc = self.session.processes.get(process_id)
        return process_id, proc

    def _known_process(self, p):
        process_id, proc = self._process(p)
        if proc is None:
            raise RpcError(INVALID_REQUEST, f"unknown process id {process_id}")
        return proc

    def m_process_start(self, p):
        return processes.start(self.session, p, self.server.retention)

    def m_process_read(self, p):
        proc = self._known_process(p)
        after_seq = p.u64("afterSeq")
        max_bytes = p.u64("maxBytes", default=None)
        wait_ms = p.u64("waitMs")
        if wait_ms == 0 or proc._ready(after_seq):
            return proc.read_result(after_seq, max_bytes)

        async def wait():
            await proc.long_poll(after_seq, wait_ms)
            return proc.read_result(after_seq, max_bytes)
        return wait()

    def m_process_write(self, p):
        process_id = p.str("processId", max_bytes=256)
        data = p.base64("chunk")  # checked before the process is looked up (§6.4)
        close = p.bool("closeStdin")
        write_id = p.str("writeId", required=False, max_bytes=256)
        if write_id == "":
            raise invalid_params("writeId", "must not be empty")
        proc = self.session.processes.get(process_id)
        if proc is None:
            return {"status": "unknownProcess"}
        if write_id is not None and write_id in proc.write_ids:
            first = proc.write_ids[write_id]  # same id, same write: the first one's answer

            async def repeat():
                return {"status": await asyncio.shield(first)}
            return repeat()
        if proc.closed or proc.stdin is None or proc.stdin.closed:
            return {"status": "stdinClosed"}
        proc.stdin.write(data, close)  # queued now, in arrival order
        answer = asyncio.get_running_loop().create_future()
        if write_id is not None:
            proc.write_ids[write_id] = answer
            while len(proc.write_ids) > processes.WRITE_IDS_KEPT:
                proc.write_ids.popitem(last=False)

        async def drained():
            await proc.stdin.drain()
            if not answer.done():
                answer.set_result("accepted")
            return {"status": "accepted"}
        return drained()

    def m_process_signal(self, p):
        name = p.str("signal")
        if name not in processes.SIGNALS:
            raise invalid_params("signal", f"unknown variant `{name}`, expected one of "
                                 + ", ".join(f"`{s}`" for s in processes.SIGNALS))
        self._known_process(p).signal(name)
        return {}

    def m_process_terminate(self, p):
        _, proc = self._process(p)
        if proc is None:
            return {"running": False}
        running = not proc.exited
        proc.kill_tree()
        return {"running": running}

    def m_process_resize(self, p):
        proc = self._known_process(p)
        proc.resize(p.u64("rows", required=True, maximum=65535), p.u64("cols", required=True, maximum=65535))
        return {}

    # ---- §7.1 environment

    def m_environment_info(self, p):
        shell = os.environ.get("SHELL", "")
        if not shell.startswith("/"):
            shell = "/bin/sh"
        tmp = os.environ.get("TMPDIR") or "/tmp"
        uri = fsops.FsPath(None, True).spell
        return {
            "shell": {"name": os.path.basename(shell), "path": shell},
            "cwd": uri(os.getcwd()),
            "tempDir": uri(tmp),
            "temporaryDirectories": [uri(tmp)],
            "capabilities": {"networkProxyLaunch": False, "capabilityDiscoverySandbox": False,
                             "environmentConfigRead": False, "httpHeaderEnvVars": False,
                             "sandboxedFileStreaming": False, "shellSnapshotV2": False},
        }

    def m_environment_status(self, p):
        return {"status": "ready"}

    # ---- end of the connection

    def close(self):
        """A disconnect: cancel what is in flight, destroy the session (no resume)."""
        for task in list(self.tasks):
            task.cancel()
        if self.session is not None:
            self.session.destroy()


class Server:
    def __init__(self, retention):
        self.retention = retention
        self.sessions = set()

    def destroy_all(self):
        for session in list(self.sessions):
            session.destroy()


# ---------------------------------------------------------------- stdio (§2.2)


async def run_stdio(server, stop):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE)
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        # `< file` or `< /dev/null`: nothing epoll can watch; read it to EOF at once.
        reader.feed_data(sys.stdin.buffer.read())
        reader.feed_eof()
    else:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = processes.PipeWriter(os.dup(sys.stdout.fileno()))
    conn = Connection(server, lambda msg: out.write((dumps(msg) + "\n").encode()))

    async def read_lines():
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the limit: discarded
                conn.error(None, INVALID_REQUEST, f"message exceeds {MAX_MESSAGE} bytes")
                continue
            if not line:
                return  # EOF
            if not line.strip():
                continue  # blank lines are skipped
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                conn.error(None, PARSE_ERROR, "parse error: message is not UTF-8")
                continue
            conn.handle_text(text)

    reading = asyncio.ensure_future(read_lines())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()

    # EOF: answer what was read (§2.2 steps 1-4), within the grace, unless stopped by a signal.
    session = conn.session
    deadline = loop.time() + STDIO_GRACE

    def pending():
        waiting = session is not None and any(pr.exited and not pr.closed for pr in session.processes.values())
        return conn.tasks or waiting
    while pending() and loop.time() < deadline and not stop.is_set():
        await asyncio.sleep(0.02)
    if session is not None:
        session.cut_polls()  # long-polls still waiting return what they have
    late = loop.time() + 0.5
    while conn.tasks and loop.time() < late:
        await asyncio.sleep(0.02)
    conn.close()
    server.destroy_all()
    # Step 5: write out what is queued, for at most 1 s more.
    flush_until = loop.time() + 1.0
    while out.buf and out.fd_open and loop.time() < flush_until:
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- websocket (§2.1, §2.3)


async def run_ws(server, host, port, stop):
    from wstransport import MAX_HEAD, WebSocketListener

    listener = WebSocketListener(server, lambda send: Connection(server, send), MAX_MESSAGE)
    # asyncio sets TCP_NODELAY on every accepted socket.
    # The stream limit bounds the request head (readuntil); frames are read by size.
    tcp = await asyncio.start_server(listener.handle, host, port, limit=MAX_HEAD)
    sock_host, sock_port = tcp.sockets[0].getsockname()[:2]
    shown = f"[{sock_host}]" if ":" in sock_host else sock_host
    listener.bound(shown, sock_port, ipaddress.ip_address(sock_host).is_loopback)
    sys.stdout.write(f"ws://{shown}:{sock_port}\n")  # the one line of stdout (§1)
    sys.stdout.flush()
    await stop.wait()
    tcp.close()
    server.destroy_all()


# ---------------------------------------------------------------- command line (§1)


def parse_bytes(text):
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 64KiB, 1MiB)")
    unit = (m.group(2) or "").upper()[:1]
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def parse_listen(text):
    if text in ("stdio", "stdio://"):
        return None
    m = re.fullmatch(r"ws://(\[[^\]]+\]|[0-9.]+):(\d+)/?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--listen takes ws://IP:PORT or stdio, got {text!r}")
    host = m.group(1).strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen needs an IP literal, got {host!r}") from None
    return host, int(m.group(2))


def prepare_signals():
    """Children start with every signal at its default action (§6.1): ignored signals
    would be inherited across exec, handled ones are not, so replace ignores by a no-op
    handler, and unblock everything."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, lambda *_: None)
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


async def main_async(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(args.output_retention)
    try:
        if args.listen is None:
            await run_stdio(server, stop)
        else:
            await run_ws(server, *args.listen, stop)
    finally:
        server.destroy_all()


def main():
    parser = argparse.ArgumentParser(prog="server.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0),
                        help="ws://IP:PORT (port 0 = any free port), stdio or stdio://")
    parser.add_argument("--output-retention", type=parse_bytes, default=1 << 20, metavar="BYTES",
                        help="newest output bytes each process keeps for process/read (default 1MiB)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # each process holds three descriptors, each connection one
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prepare_signals()
    try:
        asyncio.run(main_async(args))
    except OSError as exc:
        print(f"python-exec-server: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
