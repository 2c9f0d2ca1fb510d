"""The daemon's core, independent of how it was started: the live connections, which
peer each acts as, event fan-out, and dispatch of requests into group-commit batches.

What each request does is in ``handlers``; a connection's framing and hello in
``connection``; the sweep, escalation and orphan cleanup in ``housekeeping``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing
from collections.abc import Coroutine, Iterable
from typing import Any

from . import groups, identity
from . import protocol as p
from .commit import GroupCommit
from .config import Settings
from .connection import Connection
from .errors import Code, PeersError
from .federation import Federation
from .handlers import Effect, visible
from .housekeeping import Housekeeper
from .overseer import PEER_CHANGES, WORK_CHANGES, message_changed
from .ratelimit import SenderLimits
from .routes import HANDLERS, SINGLE_STATEMENT
from .store import Store
from .wake import Waker

log = logging.getLogger("peersd")

EVENT_KINDS: tuple[str, ...] = typing.get_args(p.EventKind)


class Daemon:
    """One running daemon: its store (through group commit), its connections and who
    each acts as, event subscriptions, and the tasks it owns."""

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
        store.message_ttl = settings.message_ttl
        self.machine_id = identity.machine_id(settings.db_path.parent)
        self.host = settings.host_label or identity.host_label()
        self.socket_path = socket_path
        self.supervisor = supervisor
        self.adopted = adopted
        self.started_at = time.time()
        self.connections: set[Connection] = set()
        """Every open connection, local and TCP (TLS ones from before their handshake)."""
        self.remote_connections: set[Connection] = set()
        """The TCP ones: their own budget (``tcp_max_connections``), never the local one."""
        self.unproven_by_address: dict[str, int] = {}
        """TCP connections per IP address not yet welcomed (TLS handshake, hello, machine
        check): ``tcp_max_per_address`` bounds these only, the flood it defends against.
        Welcomed ones count in ``tcp_max_connections`` alone: machines behind one NAT, or
        one machine with many sessions, each hold several."""
        self.by_peer: dict[str, set[Connection]] = {}
        self.helpers: dict[str, int] = {}
        """Peer id -> how many of its connections registered (its helpers)."""
        self.rate_limits = SenderLimits(settings.rate_per_second, settings.rate_burst)
        self.subscribers: dict[str, set[Connection]] = {k: set() for k in EVENT_KINDS}
        self.stopping = False
        self.stop_requested = asyncio.Event()
        self.frame_budget = settings.max_frame - 64 * 1024
        """Bytes of message data one answer may carry and still fit in a frame."""
        self.task_group: asyncio.TaskGroup | None = None
        """Owns every task the daemon starts; ``serve`` holds it open for the daemon's life."""
        self.tasks: set[asyncio.Task[None]] = set()
        """The group's tasks still running, to cancel on stop."""
        self._conn_seq = 0
        self.housekeeper = Housekeeper(self)
        self.waker = Waker(self)
        self.federation: Federation | None = Federation(self) if settings.nats_url else None
        """The link to other machines over NATS (peersd.federation), when ``nats_url`` is set."""

    def next_conn_id(self) -> int:
        self._conn_seq += 1
        return self._conn_seq

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``coro`` in the daemon's task group: cancelled on stop and awaited before
        the store closes. An error in it is logged and ends only that task. Once the
        daemon is stopping nothing new starts (None)."""
        if self.stopping:
            coro.close()
            return None
        if self.task_group is None:
            coro.close()
            raise RuntimeError("the daemon's task group is not running")
        task = self.task_group.create_task(_logged(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()

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

    def unbind_peer(self, peer_id: str) -> None:
        """Connections acting as a peer that has gone must register again to act."""
        for c in list(self.by_peer.get(peer_id, ())):
            self.unbind(c)

    def admit_remote(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.remote_connections.add(conn)
        self.unproven_by_address[conn.address] = self.unproven_by_address.get(conn.address, 0) + 1
        conn.unproven = True

    def proven(self, conn: Connection) -> None:
        """A TCP connection was welcomed (or has gone): no longer in its address's budget."""
        if not conn.unproven:
            return
        conn.unproven = False
        left = self.unproven_by_address.get(conn.address, 1) - 1
        if left:
            self.unproven_by_address[conn.address] = left
        else:
            self.unproven_by_address.pop(conn.address, None)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn in self.remote_connections:
            self.remote_connections.remove(conn)
            self.proven(conn)
        self.set_kinds(conn, set())
        self.unbind(conn)

    def connected(self, peer_id: str) -> bool:
        return peer_id in self.helpers

    def drop_machine(self, machine_id: str) -> None:
        """Hang up on TCP clients of a machine whose secret binding was just forgotten."""
        for conn in list(self.remote_connections):
            if conn.machine_id == machine_id and not conn.closed:
                conn.fail(Code.FORBIDDEN, f"machine {machine_id} was forgotten by the hub's owner")

    # ------------------------------------------------------------ events

    def publish(self, kind: str, event: p.Frame, peer_id: str | None = None) -> None:
        """Send ``event`` to subscribers of ``kind`` (only ``peer_id``'s when given)."""
        if peer_id is None:
            targets: Iterable[Connection] = self.subscribers[kind]
        else:
            targets = self.by_peer.get(peer_id, ())
        data: bytes | None = None
        screen = kind in ("peers", "traffic") and self.store.grouped
        for conn in tuple(targets):
            if kind in conn.kinds:
                if screen and conn.peer_id is not None and not self._sees(conn.peer_id, event):
                    continue
                if isinstance(event, p.PeerJoined) and conn.remote:
                    # Another machine's process details stay off TCP (handlers.visible).
                    shown = visible(conn, event.peer)
                    if shown is not event.peer:
                        conn.write(p.encode(p.PeerJoined(peer=shown)))
                        continue
                if data is None:
                    data = p.encode(event)
                conn.write(data)

    def _sees(self, viewer_id: str, event: p.Frame) -> bool:
        """Whether a connection bound to ``viewer_id`` may see ``event`` (peersd.groups):
        peer events about peers it may see; traffic (it names peers, not ids) only when it
        sees everyone."""
        viewer = self.store._peers.get(viewer_id)
        if viewer is None or groups.operator(viewer):
            return True
        if isinstance(event, p.TrafficEvent):
            return False
        subject = (
            event.peer.id if isinstance(event, p.PeerJoined) else getattr(event, "peer_id", "")
        )
        other = self.store._peers.get(subject)
        return other is None or groups.visible(viewer, other)

    def set_kinds(self, conn: Connection, kinds: set[str]) -> None:
        for kind in conn.kinds - kinds:
            self.subscribers[kind].discard(conn)
        for kind in kinds:
            self.subscribers[kind].add(conn)
        conn.kinds = kinds

    def mail_effects(self, msg: p.Message, fresh: bool = True) -> list[Effect]:
        effects: list[Effect] = [
            lambda: self.publish(
                "mail", p.MailEvent(peer_id=msg.recipient, message_id=msg.id), msg.recipient
            ),
            lambda: self.waker.mail(msg),  # an idle session: wake it (peersd.wake)
        ]
        if fresh:
            # The overseer's dashboard: the whole message, as stored.
            effects.append(lambda: self.publish("overseer", p.MessagePosted(message=msg)))
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
            if msgs:
                what: p.MessageChange = "delivered" if state == "delivered" else "expired"
                ids = [m.id for m in msgs]
                self.publish("overseer", p.MessageChanged(what=what, message_ids=ids))
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

    def left_effect(self, peer_id: str, name: str, reason: str) -> Effect:
        def run() -> None:
            log.info("peer %s (%s) left: %s", name, peer_id, reason)
            self.publish("peers", p.PeerLeft(peer_id=peer_id, name=name, reason=reason))

        return run

    def renamed_effect(self, peer_id: str, old: str, new: str) -> Effect:
        return lambda: self.publish("peers", p.PeerRenamed(peer_id=peer_id, old=old, new=new))

    def requeued_effects(self, seqs: list[int]) -> list[Effect]:
        """Mail events for messages that are (again) waiting to be picked up."""
        effects: list[Effect] = []
        msgs = self.store.messages_by_seqs(seqs)
        for msg in msgs:
            effects += self.mail_effects(msg, fresh=False)
        if msgs:
            effects.append(self.queued_effect(msgs))
        return effects

    def queued_effect(self, msgs: list[p.Message]) -> Effect:
        """The overseer's doorbell for mail waiting again (released, lease lapsed, inherited)."""
        again = p.MessageChanged(what="queued", message_ids=[m.id for m in msgs])
        return lambda: self.publish("overseer", again)

    # ------------------------------------------------------------ dispatch

    def dispatch(self, conn: Connection, req: p.Request[Any]) -> None:
        handler = HANDLERS.get(type(req))
        if handler is None:  # pragma: no cover - the decoder only yields known types
            conn.send(p.Error(id=req.id, code=Code.BAD_REQUEST, message="unknown request"))
            return
        if self.stopping and not isinstance(req, p.Status):
            conn.send(p.Error(id=req.id, code=Code.SHUTTING_DOWN, message="peersd is stopping"))
            return
        try:
            op = handler(self, conn, req)
        except PeersError as e:
            conn.send(p.Error.of(e, req.id))
            return
        if asyncio.iscoroutine(op):
            # Work that awaits (the sweep) runs as a task the daemon owns and cancels on stop.
            self.spawn(op)
            return

        def done(result: Any) -> None:
            if isinstance(result, PeersError):
                conn.send(p.Error.of(result, req.id))
                return
            conn.send(result.response)
            for effect in result.effects:
                effect()
            change = PEER_CHANGES.get(type(req))
            if change is not None and self.subscribers["overseer"]:
                self.publish("overseer", p.PeerChanged(what=change, peer_id=conn.peer_id))
            work = WORK_CHANGES.get(type(req))
            if work is not None and self.subscribers["overseer"]:
                self.publish("overseer", p.WorkChanged(what=work))
            changed = (
                message_changed(req, result.response) if self.subscribers["overseer"] else None
            )
            if changed is not None:
                self.publish("overseer", changed)

        self.commit.submit(op, done, type(req) not in SINGLE_STATEMENT)


async def _logged(coro: Coroutine[Any, Any, None]) -> None:
    """A task's own error stays in it: logged, never cancelling its siblings or the daemon."""
    try:
        await coro
    except Exception:
        log.exception("a daemon task failed")
