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
import ssl
import struct
import time
from typing import TYPE_CHECKING

import msgspec

from . import __version__
from . import protocol as p
from .errors import Code, PeersError
from .rules import invalid_request

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("peersd")

FAIL_GRACE = 2.0
"""Seconds a refused client has to read its error and hang up."""
HELLO_MAX_FRAME = 16 * 1024
"""Largest first frame a TCP client may send: a hello is a few hundred bytes."""
PRE_AUTH_TIMEOUT = 10.0
"""Seconds a TCP connection has for its TLS handshake and hello when ``hello_timeout`` is 0:
that turns the limit off for local clients only. Over TCP, connections that prove nothing
must not hold the budget: 64 idle sockets would lock every hub client out."""


class _RequestId(msgspec.Struct):
    """Only the ``id`` of a frame that failed validation: the rest is skipped, not built."""

    id: int | None = None


_request_id_decoder = msgspec.msgpack.Decoder(_RequestId)
_warned: dict[str, tuple[float, int]] = {}


def _log_throttled(level: int, key: str, message: str, *args: object, every: float = 5.0) -> None:
    """A line that a flood of TCP clients would repeat: logged at most once per ``every``
    seconds per ``key``, with the count of the lines held back."""
    now = time.monotonic()
    last, held = _warned.get(key, (0.0, 0))
    if now - last < every:
        _warned[key] = (last, held + 1)
        return
    _warned[key] = (now, 0)
    suffix = f" (and {held} more like it)" if held else ""
    log.log(level, message + suffix, *args)


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

    def __init__(
        self, daemon: Daemon, remote: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        self.daemon = daemon
        self.remote = remote
        """Came in over TCP: no peer credentials, a token and a machine secret instead."""
        self.tls = tls
        """The server's TLS context: the handshake runs after accept, counted in the budget."""
        self.transport: asyncio.Transport | None = None
        self.frames = p.FrameBuffer(daemon.settings.max_frame, HELLO_MAX_FRAME if remote else None)
        self.conn_id = daemon.next_conn_id()
        self.pid: int | None = None
        self.uid: int | None = None
        self.address = ""
        """A TCP client's IP address (its per-address budget)."""
        self.unproven = False
        """A TCP connection counted in its address's budget until it is welcomed."""
        self.machine_id: str | None = None if remote else daemon.machine_id
        """The machine this connection speaks for: the daemon's own for a local client,
        the machine a TCP client proved in its hello, None until then."""
        self.greeted = False
        self.greeting = False
        """A TCP hello waits for its machine check; frames after it wait in ``stash``."""
        self.stash: list[bytes] = []
        self.handshaking = False
        self.early = bytearray()
        """TLS bytes read before the handshake took the transport over (``replay_early``)."""
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
        if self.remote:
            self.remote_made()
            return
        self.pid, self.uid = peer_credentials(transport.get_extra_info("socket"))
        if self.uid is not None and self.uid != os.getuid():
            log.warning("refused connection from uid %s (pid %s)", self.uid, self.pid)
            self.fail(Code.FORBIDDEN, f"uid {self.uid} may not use this daemon (owner only)")
            return
        if self.daemon.stopping:
            self.fail(Code.SHUTTING_DOWN, "peersd is shutting down")
            return
        d = self.daemon
        limit = d.settings.max_connections
        if len(d.connections) - len(d.remote_connections) >= limit:
            log.warning("refused connection (pid %s): %d connections open", self.pid, limit)
            self.fail(
                Code.TOO_MANY_CONNECTIONS,
                f"peersd already serves {limit} connections (max_connections); "
                "close some or raise the limit",
            )
            return
        d.connections.add(self)
        self.start_hello_timer()

    def remote_made(self) -> None:
        """A TCP client: within its own budget (never the local one), then TLS if set."""
        d = self.daemon
        s = d.settings
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        refusal = None
        if d.stopping:
            refusal = (Code.SHUTTING_DOWN, "peersd is shutting down")
        elif len(d.remote_connections) >= s.tcp_max_connections:
            refusal = (
                Code.TOO_MANY_CONNECTIONS,
                f"the hub already serves {s.tcp_max_connections} TCP connections "
                "(tcp_max_connections); try again later",
            )
        elif d.unproven_by_address.get(self.address, 0) >= s.tcp_max_per_address:
            refusal = (
                Code.TOO_MANY_CONNECTIONS,
                f"{self.address} already has {s.tcp_max_per_address} connections to the hub "
                "that have not finished their hello (tcp_max_per_address); try again shortly",
            )
        if refusal is not None:
            _log_throttled(
                logging.WARNING, "tcp-full", "refused TCP client %s: %s", self.address, refusal[1]
            )
            if self.tls is None:
                self.send(p.Error(code=refusal[0], message=refusal[1]))
                self.transport.close()
            else:
                self.transport.abort()  # before the handshake there is no way to say why
            self.closed = True
            return
        d.admit_remote(self)
        self.start_hello_timer()
        if self.tls is not None:
            self.handshaking = True
            self.transport.pause_reading()
            d.spawn(self.start_tls(self.transport, self.tls))

    async def start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """The server side of the TLS handshake, bounded in time; a failure frees the slot."""
        if self.closed or raw.is_closing():
            return  # gone before the handshake began: connection_lost has run
        timeout = self.hello_limit()
        loop = asyncio.get_running_loop()
        # start_tls installs its protocol at once and starts the handshake on the next
        # tick; this callback, registered first, runs between the two.
        loop.call_soon(self.replay_early, raw)
        try:
            tls = await loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
        except asyncio.CancelledError:
            raw.abort()
            self.connection_lost(None)
            raise
        except Exception as e:  # ssl.SSLError, OSError, TimeoutError, ConnectionError
            log.info("TLS handshake with %s failed: %s", self.address, e or type(e).__name__)
            raw.abort()
            self.connection_lost(None)
            return
        self.handshaking = False
        if tls is None or self.closed:
            raw.abort()
            self.connection_lost(None)
            return
        self.transport = tls

    def replay_early(self, raw: asyncio.Transport) -> None:
        """Hand the TLS protocol what this one read before it took over.

        uvloop starts reading as soon as ``connection_made`` returns (a pause there is
        ignored), so the client's first handshake bytes can reach this protocol before
        ``start_tls`` has installed the TLS one.
        """
        early, self.early = bytes(self.early), bytearray()
        proto = raw.get_protocol()
        if not early or proto is self or raw.is_closing():
            return
        if hasattr(proto, "buffer_updated"):  # a BufferedProtocol (both loops' SSLProtocol)
            view = memoryview(early)
            while view:
                buf = proto.get_buffer(len(view))  # type: ignore[attr-defined]
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                proto.buffer_updated(n)
                view = view[n:]
        else:  # pragma: no cover - no loop we know of
            proto.data_received(early)  # type: ignore[attr-defined]

    def hello_limit(self) -> float:
        """Seconds this connection has to say hello (0: no limit, local clients only)."""
        timeout = self.daemon.settings.hello_timeout
        return timeout if timeout > 0 or not self.remote else PRE_AUTH_TIMEOUT

    def start_hello_timer(self) -> None:
        timeout = self.hello_limit()
        if timeout > 0:
            self.hello_timer = asyncio.get_running_loop().call_later(timeout, self.hello_overdue)

    def hello_overdue(self) -> None:
        """A connection that never says hello only holds a file descriptor: end it."""
        self.hello_timer = None
        if self.handshaking and self.transport is not None:
            self.transport.abort()  # the TLS handshake has not finished: nothing to say
            return
        if not self.greeted and not self.closed and not self.failing:
            self.fail(Code.HELLO_REQUIRED, f"no hello within {self.hello_limit():g}s")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self.daemon.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.failing:
            return
        if self.handshaking:
            self.early += data
            if len(self.early) > HELLO_MAX_FRAME and self.transport is not None:
                self.transport.abort()  # no TLS client sends this much before an answer
            return
        for body in self.frames.feed(data):
            if self.closed or self.failing:
                return
            if self.greeting:
                self.stash.append(body)
                continue
            self.handle_body(body)
        self.check_frame_error()

    def check_frame_error(self) -> None:
        if self.frames.error is None or self.greeting or self.closed or self.failing:
            return
        if self.greeted:
            self.fail_after_pending(Code.FRAME_TOO_LARGE, str(self.frames.error))
        else:
            self.fail(Code.FRAME_TOO_LARGE, f"{self.frames.error} before the hello")

    def eof_received(self) -> bool | None:
        return None

    # ------------------------------------------------------------ frames

    def handle_body(self, body: bytes) -> None:
        try:
            frame = p.client_decoder.decode(body)
        except msgspec.ValidationError as e:
            if self.remote and not self.greeted:
                # Nothing proved yet: no second look at the frame, no second chance.
                self.fail(Code.BAD_REQUEST, f"invalid hello: {e}")
                return
            req_id = _request_id(body)
            self.send(p.Error.of(invalid_request(e), req_id))
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            # msgspec reports a string that is not UTF-8 as a UnicodeDecodeError.
            self.fail_after_pending(Code.BAD_FRAME, f"frame is not valid msgpack: {e}")
            return
        except RecursionError:
            self.fail_after_pending(Code.BAD_FRAME, "frame is nested too deeply to decode")
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
        if self.remote:
            self.remote_hello(frame)
            return
        self.welcome(frame.client_kind)

    def remote_hello(self, frame: p.Hello) -> None:
        """Token first (cheap, constant time), then the machine: the hub's own id never,
        another's only with its secret. The check is a store operation: frames that
        follow the hello wait for it."""
        d = self.daemon
        if d.settings.token:
            given = (frame.token or "").encode()
            if not hmac.compare_digest(given, d.settings.token.encode()):
                _log_throttled(
                    logging.WARNING,
                    "tcp-token",
                    "refused TCP client %s: missing or wrong token",
                    self.address,
                )
                what = "wrong" if frame.token else "missing"
                self.fail(Code.FORBIDDEN, f"{what} token: set CLAUDE_PEERS_TOKEN to the hub's")
                return
        machine, secret = frame.machine_id, frame.machine_secret
        if not machine or not secret:
            self.fail(
                Code.FORBIDDEN,
                "a hub client must send its machine_id and machine_secret in its hello "
                f"(claude-peers {__version__} does); upgrade claude-peers on this machine",
            )
            return
        if machine == d.machine_id:
            log.warning("refused TCP client %s: it claimed the hub's machine id", self.address)
            self.fail(
                Code.FORBIDDEN,
                f"machine id {machine} is the hub's own: on the hub's machine use the local "
                "socket (unset CLAUDE_PEERS_URL), not TCP",
            )
            return
        self.greeting = True
        if self.transport is not None:
            self.transport.pause_reading()

        def op() -> bool:
            return d.store.machines.prove(machine, secret, time.time())

        def done(result: bool | PeersError) -> None:
            self.greeting = False
            if self.closed or self.failing:
                return
            if isinstance(result, PeersError):
                self.fail(result.code, result.message)
                return
            if not result:
                log.warning(
                    "refused TCP client %s: machine id %s is bound to another secret",
                    self.address,
                    machine,
                )
                self.fail(
                    Code.FORBIDDEN,
                    f"machine id {machine} is bound on this hub to another machine secret. "
                    "If this is that machine and it lost its secret, the hub's owner can run "
                    f"`peers hub forget-machine {machine}` on the hub; or remove "
                    "claude-peers.machine-id and claude-peers-private/ beside this machine's "
                    "database to join as a new machine",
                )
                return
            self.machine_id = machine
            self.welcome(frame.client_kind)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
            stash, self.stash = self.stash, []
            for body in stash:
                if self.closed or self.failing:
                    return
                self.handle_body(body)
            self.check_frame_error()

        d.commit.submit(op, done)

    def welcome(self, client_kind: str) -> None:
        self.greeted = True
        self.daemon.proven(self)
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self.client_kind = client_kind
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
        if self.remote and not self.greeted:  # nothing proved yet: perhaps a flood
            _log_throttled(
                logging.INFO,
                "tcp-closed",
                "closing TCP connection %d from %s: %s",
                self.conn_id,
                self.address,
                message,
            )
        else:
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
    """The ``id`` of a frame that failed validation, if it has one: every other field is
    skipped without building Python objects (a second full decode of a megabyte of
    junk cost ~0.3 s of CPU)."""
    try:
        return _request_id_decoder.decode(body).id
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None
