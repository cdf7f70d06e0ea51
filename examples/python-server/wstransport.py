"""The websocket transport (§2.1, §2.3): a small HTTP/1.1 front on asyncio streams,
and websockets' sans-I/O ServerProtocol for the upgrade and the frames.

Why not websockets' asyncio server with a `process_request` hook: its request parser
closes the socket without any answer on a request that is not GET, or that carries a
`Content-Length` header (even `Content-Length: 0`), before the hook runs, and §2.1 wants
`404` for `POST /readyz`. Reading the request head ourselves keeps every route here.
"""

import asyncio
import logging

from websockets.frames import Opcode
from websockets.datastructures import Headers
from websockets.protocol import State
from websockets.server import ServerProtocol

from rpc import PARSE_ERROR, dumps

log = logging.getLogger("python-exec-server")

HEAD_TIMEOUT = 10.0      # §2.1: a whole request head within 10 s
MAX_HEAD = 16 * 1024


def http_response(status, reason, body=b"", extra=()):
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    if body:
        lines.append("Content-Type: text/plain; charset=utf-8")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class WebSocketListener:
    def __init__(self, server, make_connection, max_size):
        self.server = server
        self.make_connection = make_connection  # send -> Connection
        self.max_size = max_size
        self.allowed_hosts = set()
        self.loopback = True

    def bound(self, host_text, port, loopback):
        self.loopback = loopback
        self.allowed_hosts = {f"{host_text}:{port}", f"localhost:{port}", f"127.0.0.1:{port}",
                              f"[::1]:{port}"}

    async def handle(self, reader, writer):
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:  # the reader's limit is MAX_HEAD
                writer.write(http_response(431, "Request Header Fields Too Large",
                                           b"the request head is over 16 KiB\n"))
                return
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return
            await self.route(head, reader, writer)
        except (ConnectionError, OSError) as exc:
            log.info("connection ended: %s", exc)
        except asyncio.CancelledError:
            pass  # the server is shutting down
        finally:
            writer.close()

    async def route(self, head, reader, writer):
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            writer.write(http_response(400, "Bad Request", b"malformed request line\n"))
            return
        method, target, _ = parts
        headers = Headers()
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                writer.write(http_response(400, "Bad Request", b"malformed header\n"))
                return
            headers[name.strip()] = value.strip()
        path = target.split("?", 1)[0]
        if path == "/readyz" and method == "GET":
            writer.write(http_response(200, "OK"))
            return
        if path != "/":
            writer.write(http_response(404, "Not Found", b"not found; this server serves / and /readyz\n"))
            return
        # §2.3 checks, then §2.1's upgrade checks.
        origin = headers.get("Origin")
        if origin is not None:
            writer.write(http_response(403, "Forbidden", f"websocket upgrades from web pages are refused "
                                       f"(Origin: {origin})\n".encode()))
            return
        host = headers.get("Host")
        if self.loopback and (host is None or host.lower() not in self.allowed_hosts):
            writer.write(http_response(403, "Forbidden",
                                       f"Host {host} does not name this loopback server\n".encode()))
            return
        if method != "GET" or "websocket" not in headers.get("Upgrade", "").lower():
            writer.write(http_response(400, "Bad Request", b"this URL serves websocket upgrades only\n"))
            return
        await self.websocket(target, headers, reader, writer)

    async def websocket(self, target, headers, reader, writer):
        protocol = ServerProtocol(max_size=self.max_size)
        # The protocol parses the request head itself; give it the head without the
        # Content-Length it would refuse.
        head = f"GET {target} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.raw_items()
            if name.lower() != "content-length") + "\r\n"
        protocol.receive_data(head.encode("latin-1"))
        events = protocol.events_received()
        if not events:
            writer.write(http_response(400, "Bad Request", b"malformed upgrade request\n"))
            return
        response = protocol.accept(events[0])  # 400 / 426 for a bad key or version
        protocol.send_response(response)

        def flush():
            for data in protocol.data_to_send():
                if data:
                    writer.write(data)
                elif writer.can_write_eof():
                    writer.write_eof()

        flush()
        if response.status_code != 101:
            return

        def send(message):
            if protocol.state is State.OPEN:
                protocol.send_text(dumps(message).encode())
                flush()

        conn = self.make_connection(send)
        fragments, opcode = [], None
        try:
            while protocol.state is not State.CLOSED:
                data = await reader.read(1 << 16)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for frame in protocol.events_received():
                    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                        fragments, opcode = [frame.data], frame.opcode
                    elif frame.opcode is Opcode.CONT:
                        fragments.append(frame.data)
                    else:
                        continue  # ping (answered by the protocol), pong, close
                    if frame.fin:
                        self.deliver(conn, opcode, b"".join(fragments))
                        fragments = []
                flush()
                await writer.drain()
                if not data:
                    break
        finally:
            conn.close()  # a disconnect: cancel what is in flight, end the session

    @staticmethod
    def deliver(conn, opcode, payload):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:  # only a binary frame can get here
            conn.error(None, PARSE_ERROR, "parse error: message is not UTF-8")
            return
        conn.handle_text(text)
