"""One client connection: framing, the peer's credentials, the hello, and writes that a
client which stops reading cannot turn into unbounded memory.

``Connection`` is the asyncio protocol; it hands each decoded request to
``Daemon.dispatch`` and knows nothing of what requests mean.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING

import msgspec

from . import __version__
from . import protocol as p
from .errors import Code
from .rules import invalid_request

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("peersd")

FAIL_GRACE = 2.0
"""Seconds a refused client has to read its error and hang up."""


def peer_credentials(sock: socket.socket | None) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end of a local socket, where the OS says."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None, None
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        return pid, uid
    try:  # macOS / BSD
        uid, _gid = os.getpeereid(sock.fileno())  # type: ignore[attr-defined]
        return None, uid
    except (AttributeError, OSError):
        return None, None


class Connection(asyncio.Protocol):
    """One client, local (Unix socket) or remote (TCP, with a token)."""

    def __init__(self, daemon: Daemon, remote: bool = False) -> None:
        self.daemon = daemon
        self.remote = remote
        """Came in over TCP: no peer credentials, a token instead, its own machine id."""
        self.transport: asyncio.Transport | None = None
        self.frames = p.FrameBuffer(daemon.settings.max_frame)
        self.conn_id = daemon.next_conn_id()
        self.pid: int | None = None
        self.uid: int | None = None
        self.greeted = False
        self.client_kind = "?"
        self.peer_id: str | None = None
        self.kinds: set[str] = set()
        self.closed = False
        self.failing = False
        self.helper = False
        self.hello_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.remote:
            self.pid, self.uid = peer_credentials(transport.get_extra_info("socket"))
        if self.uid is not None and self.uid != os.getuid():
            log.warning("refused connection from uid %s (pid %s)", self.uid, self.pid)
            self.fail(Code.FORBIDDEN, f"uid {self.uid} may not use this daemon (owner only)")
            return
        if self.daemon.stopping:
            self.fail(Code.SHUTTING_DOWN, "peersd is shutting down")
            return
        limit = self.daemon.settings.max_connections
        if len(self.daemon.connections) >= limit:
            log.warning("refused connection (pid %s): %d connections open", self.pid, limit)
            self.fail(
                Code.TOO_MANY_CONNECTIONS,
                f"peersd already serves {limit} connections (max_connections); "
                "close some or raise the limit",
            )
            return
        self.daemon.connections.add(self)
        timeout = self.daemon.settings.hello_timeout
        if timeout > 0:
            self.hello_timer = asyncio.get_running_loop().call_later(timeout, self.hello_overdue)

    def hello_overdue(self) -> None:
        """A connection that never says hello only holds a file descriptor: end it."""
        self.hello_timer = None
        if not self.greeted and not self.closed and not self.failing:
            timeout = self.daemon.settings.hello_timeout
            self.fail(Code.HELLO_REQUIRED, f"no hello within {timeout:g}s")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self.daemon.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.failing:
            return
        for body in self.frames.feed(data):
            if self.closed or self.failing:
                return
            self.handle_body(body)
        if self.frames.error is not None:
            self.fail_after_pending(Code.FRAME_TOO_LARGE, str(self.frames.error))

    def eof_received(self) -> bool | None:
        return None

    # ------------------------------------------------------------ frames

    def handle_body(self, body: bytes) -> None:
        try:
            frame = p.client_decoder.decode(body)
        except msgspec.ValidationError as e:
            req_id = _request_id(body)
            self.send(p.Error.of(invalid_request(e), req_id))
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            # msgspec reports a string that is not UTF-8 as a UnicodeDecodeError.
            self.fail_after_pending(Code.BAD_FRAME, f"frame is not valid msgpack: {e}")
            return
        if not self.greeted:
            if not isinstance(frame, p.Hello):
                self.fail(Code.HELLO_REQUIRED, "the first frame must be a hello")
                return
            self.hello(frame)
            return
        if isinstance(frame, p.Hello):
            self.send(p.Error(code=Code.BAD_REQUEST, message="hello was already received"))
            return
        self.daemon.dispatch(self, frame)

    def hello(self, frame: p.Hello) -> None:
        if frame.protocol != p.PROTOCOL_VERSION:
            self.fail(
                Code.UNSUPPORTED_VERSION,
                f"protocol {frame.protocol} is not supported by peersd {__version__} "
                f"(speaks protocol {p.PROTOCOL_VERSION}); upgrade the older side",
            )
            return
        if self.remote and self.daemon.settings.token:
            given = (frame.token or "").encode()
            if not hmac.compare_digest(given, self.daemon.settings.token.encode()):
                peer = self.transport.get_extra_info("peername") if self.transport else None
                log.warning("refused TCP client %s: missing or wrong token", peer)
                what = "wrong" if frame.token else "missing"
                self.fail(Code.FORBIDDEN, f"{what} token: set CLAUDE_PEERS_TOKEN to the hub's")
                return
        self.greeted = True
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self.client_kind = frame.client_kind
        d = self.daemon
        self.send(
            p.Welcome(
                protocol=p.PROTOCOL_VERSION,
                daemon_version=__version__,
                daemon_pid=os.getpid(),
                machine_id=d.machine_id,
                host=d.host,
                conn_id=self.conn_id,
            )
        )

    def send(self, frame: p.Frame) -> None:
        data = p.encode(frame)
        if len(data) - 4 > self.daemon.settings.max_frame:
            log.error("answer of %d bytes exceeds max_frame; sent an error instead", len(data))
            data = p.encode(
                p.Error(
                    id=getattr(frame, "id", None),
                    code=Code.TOO_LARGE,
                    message=f"the answer ({len(data)} bytes) would exceed the frame limit; "
                    "ask for fewer items",
                )
            )
        self.write(data)

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closed or t.is_closing():
            return
        t.write(data)
        if t.get_write_buffer_size() > self.daemon.settings.write_buffer_limit:
            log.warning(
                "disconnecting connection %d (pid %s): it does not read its events "
                "(%d bytes buffered)",
                self.conn_id,
                self.pid,
                t.get_write_buffer_size(),
            )
            self.closed = True
            t.abort()

    def fail_after_pending(self, code: str, message: str) -> None:
        """Hang up once the requests that came before have been answered; read no more."""
        if self.failing or self.closed:
            return
        self.failing = True
        self.daemon.commit.submit(_nothing, lambda _: self.fail(code, message))

    def fail(self, code: str, message: str) -> None:
        """Answer with an error and hang up: the stream can no longer be trusted.

        The write side is shut first and later input is discarded, so the error reaches
        the client instead of being lost to a reset; a client that never hangs up is
        cut off after a grace period.
        """
        log.info("closing connection %d (pid %s): %s", self.conn_id, self.pid, message)
        self.send(p.Error(code=code, message=message))
        self.closed = True
        t = self.transport
        if t is None:
            return
        if t.can_write_eof():
            t.write_eof()
            asyncio.get_running_loop().call_later(FAIL_GRACE, t.abort)
        else:
            t.close()


def _nothing() -> None:
    return None


def _request_id(body: bytes) -> int | None:
    try:
        raw = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(raw, dict):
        value = raw.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
