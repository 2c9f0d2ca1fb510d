"""The request handlers and event fan-out of peersd, independent of how it was started.

``Daemon`` owns the store (through ``GroupCommit``), the live connections and what
each is subscribed to. ``Connection`` is the asyncio protocol for one client: it
frames bytes, checks the peer's uid, insists on the hello and hands requests over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import math
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import __version__, identity
from . import protocol as p
from .commit import GroupCommit
from .config import Settings
from .errors import Code, PeersError
from .store import MESSAGE_ID_RE, Store

log = logging.getLogger("peersd")

Effect = Callable[[], None]
EVENT_KINDS = ("mail", "receipts", "peers", "traffic")
SINGLE_STATEMENT = frozenset(
    {
        p.Send,
        p.Claim,
        p.Ack,
        p.Release,
        p.Heartbeat,
        p.Attach,
        p.Whoami,
        p.ListPeers,
        p.Status,
        p.History,
        p.MessageStatus,
        p.Subscribe,
        p.Audit,
    }
)
"""Requests whose operation writes at most one SQL statement: no savepoint needed."""
FAIL_GRACE = 2.0
"""Seconds a refused client has to read its error and hang up."""
PURGE_INTERVAL = 600.0
"""Seconds between deletions of history past its retention (a scan, so not every sweep)."""
NOTIFY_TIMEOUT = 5.0
"""Seconds a desktop notifier may take before it is killed."""


@dataclass
class Outcome:
    """What an operation answers, and what to publish once it is committed."""

    response: p.Frame
    effects: list[Effect] = field(default_factory=list)


@dataclass
class SweepReport:
    gone: list[str]
    requeued: int
    expired: int
    duration_ms: float


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, n: int = 1) -> bool:
        """Take ``n`` tokens, all or none."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


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
            self.send(p.Error(code=Code.BAD_REQUEST, message=f"invalid request: {e}", id=req_id))
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


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        *,
        socket_path: str,
        supervisor: str = "manual",
        adopted: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.loop = loop
        self.commit = GroupCommit(store, loop)
        self.machine_id = identity.machine_id(settings.db_path.parent)
        self.host = settings.host_label or identity.host_label()
        self.socket_path = socket_path
        self.supervisor = supervisor
        self.adopted = adopted
        self.started_at = time.time()
        self.connections: set[Connection] = set()
        self.by_peer: dict[str, set[Connection]] = {}
        self.helpers: dict[str, int] = {}
        """Peer id -> how many of its connections registered (its helpers)."""
        self.buckets: dict[str, TokenBucket] = {}
        self.subscribers: dict[str, set[Connection]] = {k: set() for k in EVENT_KINDS}
        self.stopping = False
        self.stop_requested = asyncio.Event()
        self.last_sweep_ms = 0.0
        self.last_purge = 0.0
        self.frame_budget = settings.max_frame - 64 * 1024
        """Bytes of message data one answer may carry and still fit in a frame."""
        self.tasks: set[asyncio.Task[None]] = set()
        self._conn_seq = 0
        self.last_orphan_scan = -float("inf")
        self.orphan_task: asyncio.Task[None] | None = None
        self.orphan_suspects: set[tuple[int, float]] = set()
        """(pid, start) of helpers found orphaned by the previous scan."""
        self.escalated: dict[str, int] = {}
        """Peer id -> newest message already escalated (a new batch is newer mail)."""
        self.notifier_missing = False

    def next_conn_id(self) -> int:
        self._conn_seq += 1
        return self._conn_seq

    # ------------------------------------------------------------ connections

    def bind(self, conn: Connection, peer_id: str, helper: bool = False) -> None:
        """Act as ``peer_id`` on this connection; ``helper``: the session's own helper.

        Only a helper that registered (the MCP server) makes a peer "connected": a hook
        attaching to wait for mail does not make channel push available.
        """
        if conn.peer_id != peer_id:
            self.unbind(conn)
            conn.peer_id = peer_id
            self.by_peer.setdefault(peer_id, set()).add(conn)
        if helper and not conn.helper:
            conn.helper = True
            self.helpers[peer_id] = self.helpers.get(peer_id, 0) + 1
            if self.helpers[peer_id] == 1:
                self.store.set_online(peer_id, True)

    def unbind(self, conn: Connection) -> None:
        if conn.peer_id is not None:
            conns = self.by_peer.get(conn.peer_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.by_peer[conn.peer_id]
            if conn.helper:
                conn.helper = False
                self.helpers[conn.peer_id] -= 1
                if not self.helpers[conn.peer_id]:
                    del self.helpers[conn.peer_id]
                    self.store.set_online(conn.peer_id, False)
            conn.peer_id = None

    def _unbind_peer(self, peer_id: str) -> None:
        """Connections acting as a peer that has gone must register again to act."""
        for c in list(self.by_peer.get(peer_id, ())):
            self.unbind(c)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.set_kinds(conn, set())
        self.unbind(conn)

    def connected(self, peer_id: str) -> bool:
        return peer_id in self.helpers

    # ------------------------------------------------------------ events

    def publish(self, kind: str, event: p.Frame, peer_id: str | None = None) -> None:
        """Send ``event`` to subscribers of ``kind`` (only ``peer_id``'s when given)."""
        if peer_id is None:
            targets: Iterable[Connection] = self.subscribers[kind]
        else:
            targets = self.by_peer.get(peer_id, ())
        data: bytes | None = None
        for conn in tuple(targets):
            if kind in conn.kinds:
                if data is None:
                    data = p.encode(event)
                conn.write(data)

    def wanted(self, kind: str, peer_id: str | None = None) -> bool:
        """Whether anyone would receive an event, so none is built for nobody."""
        if peer_id is None:
            return bool(self.subscribers[kind])
        return any(kind in c.kinds for c in self.by_peer.get(peer_id, ()))

    def set_kinds(self, conn: Connection, kinds: set[str]) -> None:
        for kind in conn.kinds - kinds:
            self.subscribers[kind].discard(conn)
        for kind in kinds:
            self.subscribers[kind].add(conn)
        conn.kinds = kinds

    def mail_effects(self, msg: p.Message, fresh: bool = True) -> list[Effect]:
        effects: list[Effect] = [
            lambda: self.publish("mail", p.MailEvent(message=msg), msg.recipient)
        ]
        if fresh:
            effects.append(
                lambda: self.publish(
                    "traffic",
                    p.TrafficEvent(
                        what="sent",
                        message_id=msg.id,
                        sender_name=msg.sender_name,
                        recipient_name=msg.recipient_name,
                        at=msg.created,
                        preview=msg.text[:120],
                    ),
                )
            )
        return effects

    def receipt_effects(
        self, msgs: list[p.Message], state: str, at: float, via: str | None
    ) -> list[Effect]:
        def run() -> None:
            for m in msgs:
                self.publish(
                    "receipts",
                    p.ReceiptEvent(
                        message_id=m.id,
                        to=m.recipient,
                        to_name=m.recipient_name,
                        state=state,  # type: ignore[arg-type]
                        at=at,
                        via=via,
                    ),
                    m.sender,
                )
                self.publish(
                    "traffic",
                    p.TrafficEvent(
                        what="delivered" if state == "delivered" else "expired",
                        message_id=m.id,
                        sender_name=m.sender_name,
                        recipient_name=m.recipient_name,
                        at=at,
                        via=via,
                    ),
                )

        return [run]

    # ------------------------------------------------------------ dispatch

    def dispatch(self, conn: Connection, req: p.Request) -> None:
        handler = self._handlers.get(type(req))
        if handler is None:  # pragma: no cover - the decoder only yields known types
            conn.send(p.Error(id=req.id, code=Code.BAD_REQUEST, message="unknown request"))
            return
        if self.stopping and not isinstance(req, p.Status):
            conn.send(p.Error(id=req.id, code=Code.SHUTTING_DOWN, message="peersd is stopping"))
            return
        try:
            op = handler(self, conn, req)
        except PeersError as e:
            conn.send(p.Error(id=req.id, code=e.code, message=e.message, candidates=e.candidates))
            return
        if asyncio.iscoroutine(op):
            # Work that awaits (the sweep) runs as a task the daemon owns and cancels on stop.
            task = self.loop.create_task(op)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return

        def done(result: Any) -> None:
            if isinstance(result, PeersError):
                conn.send(
                    p.Error(
                        id=req.id,
                        code=result.code,
                        message=result.message,
                        candidates=result.candidates,
                    )
                )
                return
            conn.send(result.response)
            for effect in result.effects:
                effect()

        self.commit.submit(op, done, type(req) not in SINGLE_STATEMENT)

    def _me(self, conn: Connection) -> str:
        if conn.peer_id is None:
            raise PeersError(
                Code.NOT_REGISTERED, "this connection is not registered as a peer (register first)"
            )
        return conn.peer_id

    # Each handler validates what it can without the store and returns the operation
    # to run inside the next batch.

    def h_register(self, conn: Connection, r: p.Register) -> Callable[[], Outcome]:
        if r.agent_pid < 0:
            raise PeersError(Code.BAD_REQUEST, "agent_pid must not be negative")
        if not math.isfinite(r.agent_start):  # SQLite would store NaN as NULL
            raise PeersError(Code.BAD_REQUEST, "agent_start must be a finite number")
        if r.summary is not None and len(r.summary) > 1000:
            raise PeersError(Code.TOO_LARGE, "summary is longer than 1000 characters")
        if conn.remote:
            if not r.machine_id:
                raise PeersError(Code.BAD_REQUEST, "a client on another machine must send its id")
        else:
            r.machine_id = self.machine_id  # a local connection is on this machine
        if not r.host:
            r.host = self.host
        if not r.cwd:
            raise PeersError(Code.BAD_REQUEST, "cwd is required")

        def op() -> Outcome:
            now = time.time()
            reg = self.store.register(r, now)
            peer = reg.peer
            # In-memory state changes only once the batch is committed (an effect).
            effects: list[Effect] = [lambda: self.bind(conn, peer.id, helper=True)]
            peer.connected = True
            peer.receive = r.receive
            if reg.joined:
                effects.append(lambda: self.publish("peers", p.PeerJoined(peer=peer)))
                log.info(
                    "peer %s (%s) joined: %s pid %s",
                    peer.name,
                    peer.id,
                    peer.client,
                    peer.agent_pid,
                )
            elif reg.renamed_from is not None:
                effects.append(self._renamed_effect(peer.id, reg.renamed_from, peer.name))
            effects += self._requeued_effects(reg.inherited)
            return Outcome(p.PeerResult(id=r.id, peer=peer, inherited=len(reg.inherited)), effects)

        return op

    def h_attach(self, conn: Connection, r: p.Attach) -> Callable[[], Outcome]:
        # Process ancestry means something only on this machine.
        pid = None if conn.remote else (r.pid if r.pid is not None else conn.pid)

        def op() -> Outcome:
            peer = None
            if r.session_id:
                machine = None if conn.remote else self.machine_id
                peer = self.store.peer_by_session(machine, r.session_id)
                if peer is not None and peer.state != "active":
                    peer = None
            if peer is None and pid:
                peer = self._peer_of_process(pid)
            if peer is None:
                how = f"session {r.session_id!r}" if r.session_id else f"process {pid}"
                raise PeersError(Code.UNKNOWN_PEER, f"no registered agent session for {how}")
            self.store.touch(peer.id, time.time())
            found = peer
            found.connected = True
            return Outcome(p.PeerResult(id=r.id, peer=found), [lambda: self.bind(conn, found.id)])

        return op

    def _peer_of_process(self, pid: int) -> p.Peer | None:
        """The active peer whose agent is ``pid`` or one of its ancestors."""
        agents = self.store.active_agents(self.machine_id)
        for candidate in (pid, *identity.ancestors(pid)):
            entry = agents.get(candidate)
            if entry is not None:
                start = identity.process_start(candidate)
                if start is not None and identity.same_start(start, entry[1]):
                    return self.store.peer(entry[0])
        return None

    def h_heartbeat(self, conn: Connection, r: p.Heartbeat) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            self.store.touch(me, time.time())
            return Outcome(p.Ok(id=r.id))

        return op

    def h_unregister(self, conn: Connection, r: p.Unregister) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            peer = self.store.mark_gone(me, "unregistered", time.time())
            effects: list[Effect] = []
            if peer is not None:
                effects.append(self._left_effect(peer.id, peer.name, "unregistered"))
            effects.append(lambda: self._unbind_peer(me))
            return Outcome(p.Ok(id=r.id), effects)

        return op

    def _left_effect(self, peer_id: str, name: str, reason: str) -> Effect:
        def run() -> None:
            log.info("peer %s (%s) left: %s", name, peer_id, reason)
            self.publish("peers", p.PeerLeft(peer_id=peer_id, name=name, reason=reason))

        return run

    def h_set_summary(self, conn: Connection, r: p.SetSummary) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            peer = self.store.set_summary(me, r.summary)
            return Outcome(p.PeerResult(id=r.id, peer=peer))

        return op

    def h_set_name(self, conn: Connection, r: p.SetName) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            peer, old, inherited = self.store.set_name(me, r.name)
            effects: list[Effect] = []
            if old != peer.name:
                effects.append(self._renamed_effect(peer.id, old, peer.name))
            effects += self._requeued_effects(inherited)
            return Outcome(
                p.PeerResult(id=r.id, peer=peer, inherited=len(inherited)),
                effects,
            )

        return op

    def _renamed_effect(self, peer_id: str, old: str, new: str) -> Effect:
        return lambda: self.publish("peers", p.PeerRenamed(peer_id=peer_id, old=old, new=new))

    def _requeued_effects(self, seqs: list[int]) -> list[Effect]:
        """Mail events for messages that are (again) waiting to be picked up."""
        effects: list[Effect] = []
        for msg in self.store.messages_by_seqs(seqs):
            effects += self.mail_effects(msg, fresh=False)
        return effects

    def h_whoami(self, conn: Connection, r: p.Whoami) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            peer = self.store.require_peer(me)
            return Outcome(p.PeerResult(id=r.id, peer=peer))

        return op

    def h_list_peers(self, conn: Connection, r: p.ListPeers) -> Callable[[], Outcome]:
        def op() -> Outcome:
            caller = self.store.peer(conn.peer_id) if conn.peer_id else None
            peers = self.store.list_peers(
                caller, r.scope, r.include_gone, r.include_self, self.machine_id
            )
            return Outcome(p.PeerList(id=r.id, peers=peers))

        return op

    def _check_text(self, text: str) -> None:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_text:
            raise PeersError(
                Code.TOO_LARGE,
                f"message is {size} bytes; the limit is {self.settings.max_text} bytes",
            )
        if not text.strip():
            raise PeersError(Code.BAD_REQUEST, "message text is empty")

    def _rate(self, sender: str, n: int = 1) -> None:
        if self.settings.rate_per_second <= 0:
            return
        bucket = self.buckets.get(sender)
        if bucket is None:
            bucket = self.buckets[sender] = TokenBucket(
                self.settings.rate_per_second, self.settings.rate_burst
            )
        if not bucket.take(n):
            raise PeersError(
                Code.RATE_LIMITED,
                f"sending too fast: the limit is {self.settings.rate_per_second:g} "
                f"messages/s (bursts of {self.settings.rate_burst}); try again shortly",
            )

    def h_send(self, conn: Connection, r: p.Send) -> Callable[[], Outcome]:
        me = self._me(conn)
        self._check_text(r.text)
        if r.reply_to is not None and not MESSAGE_ID_RE.match(r.reply_to):
            raise PeersError(Code.BAD_REQUEST, f"reply_to {r.reply_to!r} is not a message id")
        s = self.settings

        def op() -> Outcome:
            now = time.time()
            sender = self.store.require_peer(me)
            recipient = self.store.resolve(r.to, self.machine_id)
            if recipient.id == sender.id:
                raise PeersError(Code.BAD_REQUEST, "you cannot send a message to yourself")
            if recipient.pending >= s.queue_limit:
                raise self.store.queue_full(recipient, s.queue_limit)
            self._rate(me)
            msg = self.store.send(
                sender, recipient, r.text, r.reply_to, now, s.message_ttl, s.queue_limit
            )
            return Outcome(
                p.Sent(id=r.id, message_id=msg.id, to=recipient.id, to_name=recipient.name),
                self.mail_effects(msg),
            )

        return op

    def h_broadcast(self, conn: Connection, r: p.Broadcast) -> Callable[[], Outcome]:
        me = self._me(conn)
        self._check_text(r.text)
        s = self.settings

        def op() -> Outcome:
            now = time.time()
            sender = self.store.require_peer(me)
            targets = self.store.list_peers(sender, r.scope)
            full = [peer for peer in targets if peer.pending >= s.queue_limit]
            targets = [peer for peer in targets if peer.pending < s.queue_limit]
            if targets:
                self._rate(me, len(targets))
            sent: list[p.SentItem] = []
            effects: list[Effect] = []
            for peer in targets:
                msg = self.store.send(sender, peer, r.text, None, now, s.message_ttl, s.queue_limit)
                sent.append(p.SentItem(message_id=msg.id, to=peer.id, to_name=peer.name))
                effects += self.mail_effects(msg)
            skipped = [f"{peer.name}: queue full ({s.queue_limit} unread)" for peer in full]
            return Outcome(p.BroadcastSent(id=r.id, sent=sent, skipped=skipped), effects)

        return op

    def h_message_status(self, conn: Connection, r: p.MessageStatus) -> Callable[[], Outcome]:
        if len(r.message_ids) > 1000:
            raise PeersError(Code.BAD_REQUEST, "at most 1000 message ids per request")

        def op() -> Outcome:
            return Outcome(p.Statuses(id=r.id, items=self.store.statuses(r.message_ids)))

        return op

    def h_claim(self, conn: Connection, r: p.Claim) -> Callable[[], Outcome]:
        me = self._me(conn)
        if not 1 <= r.limit <= 1000:
            raise PeersError(Code.BAD_REQUEST, "limit must be between 1 and 1000")
        lease = r.lease_seconds if r.lease_seconds is not None else self.settings.lease_seconds
        if not 0 < lease <= 3600:
            raise PeersError(Code.BAD_REQUEST, "lease_seconds must be in (0, 3600]")

        def op() -> Outcome:
            now = time.time()
            from_peer = None
            if r.from_peer:
                from_peer = self.store.resolve(r.from_peer, self.machine_id).id
            msgs = self.store.claim(
                me, r.limit, lease, now, from_peer, r.reply_to, budget=self.frame_budget
            )
            return Outcome(p.Claimed(id=r.id, lease_until=now + lease, messages=msgs))

        return op

    def h_ack(self, conn: Connection, r: p.Ack) -> Callable[[], Outcome]:
        me = self._me(conn)
        if not r.message_ids:
            raise PeersError(Code.BAD_REQUEST, "no message ids to acknowledge")
        if len(r.message_ids) > 1000:
            raise PeersError(Code.BAD_REQUEST, "at most 1000 message ids per request")

        def op() -> Outcome:
            now = time.time()
            fresh, already = self.store.ack(me, r.message_ids, r.via, now)
            msgs = self.store.messages_by_ids(fresh)
            return Outcome(
                p.Acked(id=r.id, acked=fresh, already=already),
                self.receipt_effects(msgs, "delivered", now, r.via),
            )

        return op

    def h_release(self, conn: Connection, r: p.Release) -> Callable[[], Outcome]:
        me = self._me(conn)

        def op() -> Outcome:
            released = self.store.release(me, r.message_ids)
            effects = self._requeued_effects([self.store.parse_id(i) or 0 for i in released])
            return Outcome(p.Released(id=r.id, released=released), effects)

        return op

    def h_history(self, conn: Connection, r: p.History) -> Callable[[], Outcome]:
        if not 1 <= r.limit <= 1000:
            raise PeersError(Code.BAD_REQUEST, "limit must be between 1 and 1000")
        me = self._me(conn) if r.mine else None

        def op() -> Outcome:
            peer = self.store.resolve(r.peer, self.machine_id).id if r.peer else None
            msgs, next_before = self.store.history(
                me, peer, r.limit, r.before, r.state, r.direction, budget=self.frame_budget
            )
            return Outcome(p.HistoryPage(id=r.id, messages=msgs, next_before=next_before))

        return op

    def h_subscribe(self, conn: Connection, r: p.Subscribe) -> Callable[[], Outcome]:
        if ("mail" in r.kinds or "receipts" in r.kinds) and conn.peer_id is None:
            raise PeersError(Code.NOT_REGISTERED, "mail and receipts need a registered peer")

        def op() -> Outcome:
            return Outcome(p.Ok(id=r.id), [lambda: self.set_kinds(conn, set(r.kinds))])

        return op

    def h_status(self, conn: Connection, r: p.Status) -> Callable[[], Outcome]:
        def op() -> Outcome:
            active, gone, by_state = self.store.counts()
            return Outcome(
                p.DaemonStatus(
                    id=r.id,
                    version=__version__,
                    protocol=p.PROTOCOL_VERSION,
                    pid=os.getpid(),
                    started_at=self.started_at,
                    socket=self.socket_path,
                    db=str(self.settings.db_path),
                    machine_id=self.machine_id,
                    host=self.host,
                    supervisor=self.supervisor,
                    peers_active=active,
                    peers_gone=gone,
                    connections=len(self.connections),
                    messages=by_state,
                    schema=self.store.schema_version,
                    last_sweep_ms=self.last_sweep_ms,
                    adopted_socket=self.adopted,
                )
            )

        return op

    def _local_only(self, conn: Connection, what: str) -> None:
        if conn.remote:
            raise PeersError(Code.FORBIDDEN, f"{what} is only for the daemon's own machine")

    def h_shutdown(self, conn: Connection, r: p.Shutdown) -> Callable[[], Outcome]:
        self._local_only(conn, "shutting the daemon down")

        def op() -> Outcome:
            log.info("shutdown requested by connection %d (pid %s)", conn.conn_id, conn.pid)
            return Outcome(p.Ok(id=r.id), [self.stop_requested.set])

        return op

    def h_sweep(self, conn: Connection, r: p.Sweep) -> Any:
        self._local_only(conn, "running the sweep on demand")
        return self._sweep_request(conn, r)

    async def _sweep_request(self, conn: Connection, r: p.Sweep) -> None:
        try:
            result = await self.sweep()
        except PeersError as e:
            conn.send(p.Error(id=r.id, code=e.code, message=e.message))
            return
        conn.send(
            p.SweepResult(
                id=r.id,
                gone=result.gone,
                requeued=result.requeued,
                expired=result.expired,
                duration_ms=result.duration_ms,
            )
        )

    def h_kill(self, conn: Connection, r: p.Kill) -> Any:
        if conn.remote:
            # A hub token is shared by every machine: it does not make a remote client
            # the owner of this machine's processes (and "cli" is only what it says).
            raise PeersError(
                Code.FORBIDDEN,
                "peers can be killed only over the local socket, on the machine they run on",
            )
        if not (self.settings.kill_enabled or conn.client_kind == "cli"):
            raise PeersError(
                Code.DISABLED,
                "killing peers is disabled for agent sessions; the user can enable it with "
                "kill_enabled = true in the claude-peers configuration",
            )
        return self._kill(conn, r)

    async def _kill(self, conn: Connection, r: p.Kill) -> None:
        """SIGTERM the agent, SIGKILL after the grace period with ``force``; record it."""
        try:
            target = await self.commit.run(lambda: self.store.resolve(r.target, self.machine_id))
            actor = self._actor(conn)
            if target.id == conn.peer_id:
                raise PeersError(Code.BAD_REQUEST, "a session cannot kill itself")
            if target.machine_id != self.machine_id:
                raise PeersError(Code.BAD_REQUEST, f"{target.name} runs on another machine")
            pid, start = target.agent_pid, target.agent_start
            outcome, detail = "already_gone", f"{target.name}'s process {pid} had already exited"
            if identity.is_alive(pid, start):
                if identity.process_uid(pid) != os.getuid():
                    raise PeersError(
                        Code.FORBIDDEN, f"process {pid} belongs to another user; not touching it"
                    )
                outcome, detail = await self._terminate(pid, start, r.force, target.name)
            reason = f"killed by {actor}" if outcome in ("terminated", "killed") else "exited"

            def record() -> None:
                now = time.time()
                self.store.audit(now, actor, "kill", target.id, f"pid {pid}: {outcome}")
                if outcome != "still_running":
                    self.store.mark_gone(target.id, reason, now)

            await self.commit.run(record)
            log.warning(
                "kill %s (%s, pid %d) by %s: %s", target.name, target.id, pid, actor, outcome
            )
            if outcome != "still_running":
                self._unbind_peer(target.id)
                self._left_effect(target.id, target.name, reason)()
            conn.send(
                p.KillResult(
                    id=r.id, peer_id=target.id, name=target.name, outcome=outcome, detail=detail
                )
            )
        except PeersError as e:
            conn.send(p.Error(id=r.id, code=e.code, message=e.message, candidates=e.candidates))

    def _actor(self, conn: Connection) -> str:
        """Who is asking, for the audit log: the peer, else the kind of client and its pid."""
        peer = self.store.peer(conn.peer_id) if conn.peer_id else None
        if peer is not None:
            return f"{peer.name} ({peer.id})"
        where = f"pid {conn.pid}" if conn.pid else "over TCP" if conn.remote else "pid ?"
        return f"{conn.client_kind} {where}"

    async def _terminate(self, pid: int, start: float, force: bool, name: str) -> tuple[str, str]:
        grace = self.settings.kill_grace

        async def gone_within(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if not identity.is_alive(pid, start):
                    return True
                await asyncio.sleep(0.05)
            return not identity.is_alive(pid, start)

        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return "terminated", f"{name}'s process {pid} exited"
        if await gone_within(grace):
            return "terminated", f"{name}'s process {pid} exited after SIGTERM"
        if not force:
            return (
                "still_running",
                f"{name}'s process {pid} is still running {grace:g}s after SIGTERM; "
                "use force to send SIGKILL",
            )
        if identity.is_alive(pid, start):  # still the same process: safe to kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await gone_within(2.0)
        return "killed", f"{name}'s process {pid} did not exit on SIGTERM; sent SIGKILL"

    def h_audit(self, conn: Connection, r: p.Audit) -> Callable[[], Outcome]:
        if not 1 <= r.limit <= 1000:
            raise PeersError(Code.BAD_REQUEST, "limit must be between 1 and 1000")

        def op() -> Outcome:
            rows, next_before = self.store.audit_page(r.limit, r.before, r.action)
            records = [
                p.AuditRecord(
                    seq=seq,
                    at=at,
                    actor=actor,
                    action=action,
                    detail=detail,
                    target=target,
                    target_name=name,
                )
                for seq, at, actor, action, target, name, detail in rows
            ]
            return Outcome(p.AuditPage(id=r.id, records=records, next_before=next_before))

        return op

    _handlers: dict[type, Callable[..., Callable[[], Outcome]]] = {
        p.Register: h_register,
        p.Attach: h_attach,
        p.Heartbeat: h_heartbeat,
        p.Unregister: h_unregister,
        p.SetSummary: h_set_summary,
        p.SetName: h_set_name,
        p.Whoami: h_whoami,
        p.ListPeers: h_list_peers,
        p.Send: h_send,
        p.Broadcast: h_broadcast,
        p.MessageStatus: h_message_status,
        p.Claim: h_claim,
        p.Ack: h_ack,
        p.Release: h_release,
        p.History: h_history,
        p.Subscribe: h_subscribe,
        p.Status: h_status,
        p.Shutdown: h_shutdown,
        p.Sweep: h_sweep,
        p.Kill: h_kill,
        p.Audit: h_audit,
    }

    # ------------------------------------------------------------ sweep

    async def sweep(self) -> SweepReport:
        """Mark dead agents gone, return lapsed leases, expire and purge old mail."""
        started = time.perf_counter()
        agents = self.store.active_agents(self.machine_id)
        dead = await asyncio.to_thread(_dead_agents, agents)
        s = self.settings

        def op() -> tuple[SweepReport, list[Effect]]:
            now = time.time()
            effects: list[Effect] = []
            gone: list[str] = []
            for peer_id in dead:
                peer = self.store.mark_gone(peer_id, "process exited", now)
                if peer is not None:
                    gone.append(peer.id)
                    effects.append(functools.partial(self._unbind_peer, peer.id))
                    effects.append(self._left_effect(peer.id, peer.name, "process exited"))
            stale = self.store.stale_remote(self.machine_id, now - s.remote_timeout)
            for peer_id, name in stale:
                if self.connected(peer_id):
                    continue
                if self.store.mark_gone(peer_id, "stopped heartbeating", now) is not None:
                    gone.append(peer_id)
                    effects.append(self._left_effect(peer_id, name, "stopped heartbeating"))
            requeued = self.store.expire_leases(now)
            for msg in requeued:
                effects += self.mail_effects(msg, fresh=False)
            expired = self.store.expire_messages(now)
            if expired:
                effects += self.receipt_effects(expired, "expired", now, None)
            if now - self.last_purge > PURGE_INTERVAL:
                self.store.purge(now, s.history_retention, s.gone_retention)
                self.last_purge = now
            report = SweepReport(gone, len(requeued), len(expired), 0.0)
            return report, effects

        report, effects = await self.commit.run(op)
        for effect in effects:
            effect()
        report.duration_ms = (time.perf_counter() - started) * 1000
        self.last_sweep_ms = report.duration_ms
        return report

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                report = await self.sweep()
            except PeersError as e:
                log.error("sweep failed: %s", e)
                continue
            if report.duration_ms > 100:
                log.warning("sweep took %.1f ms", report.duration_ms)
            await self.housekeeping()

    async def housekeeping(self) -> None:
        """After each sweep: escalate long-waiting mail; now and then, end orphans."""
        try:
            await self.escalate()
        except Exception:
            log.exception("escalation failed")
        s = self.settings
        due = time.monotonic() - self.last_orphan_scan >= s.orphan_interval
        if s.orphan_cleanup and due and (self.orphan_task is None or self.orphan_task.done()):
            self.last_orphan_scan = time.monotonic()
            task = self.loop.create_task(self.clean_orphans())
            self.orphan_task = task
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ orphans

    async def clean_orphans(self) -> None:
        """End our helpers whose agent is gone: SIGTERM, SIGKILL after ``kill_grace``.

        Only ``peers-mcp`` and ``peers-hook --wait`` processes of this uid that use this
        daemon's socket are looked at (the scan runs in a worker thread). A helper is
        ended only when two scans in a row find it orphaned, so one that is about to
        notice its agent is gone and exit by itself gets to do so; it is re-checked
        (pid, start time, uid, command line) before every signal.
        """
        from . import orphans

        try:
            peers = orphans.known_peers(
                self.store.list_peers(None, "machine", True, True, self.machine_id)
            )
            pids = {c.pid for c in self.connections if c.pid}
            endpoints = {self.settings.socket, self.socket_path}
            found = await asyncio.to_thread(orphans.scan, endpoints, peers, pids)
            suspects, self.orphan_suspects = (
                self.orphan_suspects,
                {(o.pid, o.started) for o in found},
            )
            for o in found:
                log.info("orphaned helper: %s pid %d (%s)", o.kind, o.pid, o.why)
            found = [o for o in found if (o.pid, o.started) in suspects]
            if not found:
                return
            actions = orphans.start(found)
            deadline = time.monotonic() + self.settings.kill_grace
            while orphans.waiting(actions) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if orphans.waiting(actions):
                orphans.force(actions)
                deadline = time.monotonic() + 2.0
                while orphans.waiting(actions) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            orphans.finish(actions)

            def record() -> None:
                now = time.time()
                for a in actions:
                    o = a.orphan
                    self.store.audit(
                        now,
                        "peersd",
                        "cleanup",
                        o.peer_id,
                        f"{o.kind} pid {o.pid}: {a.outcome} ({o.why})",
                    )

            await self.commit.run(record)
            for a in actions:
                o = a.orphan
                log.warning(
                    "orphan %s pid %d (%s): %s; %s",
                    o.kind,
                    o.pid,
                    o.why,
                    a.outcome,
                    a.detail,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("orphan cleanup failed")

    # ------------------------------------------------------------ escalation

    async def escalate(self) -> None:
        """Tell the user (desktop notification, ``ev_escalation``) about mail left waiting.

        Once per batch: a peer is escalated again only for mail newer than what it
        was last escalated for.
        """
        after = self.settings.escalate_after
        if after <= 0:
            return
        now = time.time()
        rows = await self.commit.run(lambda: self.store.waiting(now - after))
        seen = {row[0] for row in rows}
        for peer_id in [x for x in self.escalated if x not in seen]:
            del self.escalated[peer_id]
        for peer_id, name, count, oldest, newest in rows:
            if newest <= self.escalated.get(peer_id, 0):
                continue
            self.escalated[peer_id] = newest
            age = now - oldest
            log.info(
                "escalating: %d message(s) for %s (%s) waiting %.0fs", count, name, peer_id, age
            )
            self.publish(
                "peers", p.Escalation(peer_id=peer_id, name=name, waiting=count, oldest_age=age)
            )
            text = f"{count} message(s) for {name} waiting for {_duration(age)}"
            task = self.loop.create_task(self.notify("claude-peers: unread mail", text))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def notify(self, title: str, body: str) -> None:
        """Show a desktop notification; a missing or failing notifier is only logged."""
        import shutil
        import sys

        if sys.platform == "darwin":

            def quoted(text: str) -> str:
                return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

            script = f"display notification {quoted(body)} with title {quoted(title)}"
            argv = ["osascript", "-e", script]
        else:
            argv = ["notify-send", "--app-name=claude-peers", title, body]
        exe = shutil.which(argv[0])
        if exe is None:
            level = logging.DEBUG if self.notifier_missing else logging.WARNING
            log.log(level, "no desktop notifier (%s) on PATH; not notifying: %s", argv[0], body)
            self.notifier_missing = True
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                exe,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            log.warning("could not run %s: %s", exe, e)
            return
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), NOTIFY_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log.warning("%s did not finish within %gs; killed it", argv[0], NOTIFY_TIMEOUT)
            return
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode:
            why = stderr.decode(errors="replace").strip()[:200]
            log.warning("%s failed (exit %s): %s", argv[0], proc.returncode, why)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _dead_agents(agents: dict[int, tuple[str, float]]) -> list[str]:
    return [
        peer_id
        for pid, (peer_id, start) in agents.items()
        if not identity.is_alive(pid, start, unknown=True)
    ]
