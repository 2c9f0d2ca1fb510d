"""What each request does: one function per request type, and the table that maps them.

A handler checks what it can without the store (raising ``PeersError``) and returns the
operation to run in the next group-commit batch. The operation returns an ``Outcome``:
the answer, and the effects (events) to publish only once the batch is committed, so
nobody hears of a change that was rolled back. Work that has to wait (the sweep, a
kill's grace period) returns a coroutine instead, which the daemon runs as its own task.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from . import __version__, groups, identity, kill
from . import protocol as p
from .endpoint import tcp_warnings
from .errors import Code, PeersError

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

log = logging.getLogger("peersd")

Effect = Callable[[], None]


@dataclass
class Outcome:
    """What an operation answers, and what to publish once it is committed."""

    response: p.Frame
    effects: list[Effect] = field(default_factory=list)


Op = Callable[[], Outcome]
Handler = Callable[["Daemon", "Connection", Any], Op | Coroutine[Any, Any, None]]

SINGLE_STATEMENT = frozenset(
    {
        p.Send,
        p.Claim,
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
        p.SetGroup,
    }
)
"""Requests whose operation writes at most one SQL statement: no savepoint needed."""


def _me(conn: Connection) -> str:
    if conn.peer_id is None:
        raise PeersError(
            Code.NOT_REGISTERED, "this connection is not registered as a peer (register first)"
        )
    return conn.peer_id


# Each handler validates what it can without the store and returns the operation
# to run inside the next batch.


def _local_only(conn: Connection, what: str) -> None:
    if conn.remote:
        raise PeersError(Code.FORBIDDEN, f"{what} is only for the daemon's own machine")


def register(d: Daemon, conn: Connection, r: p.Register) -> Op:
    # The machine is the connection's: the daemon's own for a local client, the one a TCP
    # client proved in its hello. The request is left as decoded.
    machine = _machine(conn)
    if conn.remote and r.machine_id and r.machine_id != machine:
        raise PeersError(
            Code.FORBIDDEN,
            f"machine_id {r.machine_id!r} is not the machine this connection proved ({machine})",
        )
    # A local client is on the daemon's host; a remote one names its own, else it gets the
    # stand-in others see for its machine id (the id itself is its hub credential).
    host = (r.host or _stand_in(machine)) if conn.remote else d.host
    if not r.cwd:
        raise PeersError(Code.BAD_REQUEST, "cwd is required")

    def op() -> Outcome:
        now = time.time()
        reg = d.store.register(r, now, machine, host)
        peer = reg.peer
        # In-memory state changes only once the batch is committed (an effect).
        effects: list[Effect] = [lambda: d.bind(conn, peer.id, helper=True)]
        peer.connected = True
        peer.receive = r.receive
        if reg.joined:
            effects.append(lambda: d.publish("peers", p.PeerJoined(peer=peer)))
            log.info(
                "peer %s (%s) joined: %s pid %s",
                peer.name,
                peer.id,
                peer.client,
                peer.agent_pid,
            )
        elif reg.renamed_from is not None:
            effects.append(d.renamed_effect(peer.id, reg.renamed_from, peer.name))
        effects += d.requeued_effects(reg.inherited)
        return Outcome(p.PeerResult(id=r.id, peer=peer, inherited=len(reg.inherited)), effects)

    return op


def attach(d: Daemon, conn: Connection, r: p.Attach) -> Op:
    # Process ancestry means something only on this machine.
    pid = None if conn.remote else (r.pid if r.pid is not None else conn.pid)

    def op() -> Outcome:
        peer = _session_peer(d, conn, r.session_id, pid)
        if peer is None:
            how = f"session {r.session_id!r}" if r.session_id else f"process {pid}"
            raise PeersError(Code.UNKNOWN_PEER, f"no registered agent session for {how}")
        d.store.touch(peer.id, time.time())
        found = peer
        found.connected = True
        # A hook attaching: the session acts, so its next mail may wake it (peersd.wake).
        effects: list[Effect] = [lambda: d.bind(conn, found.id), lambda: d.waker.acted(found.id)]
        return Outcome(p.PeerResult(id=r.id, peer=found), effects)

    return op


def _caller(d: Daemon, conn: Connection) -> p.Peer | None:
    """The peer the connection is bound to, if any: whose groups limit what it sees."""
    return d.store.peer(conn.peer_id) if conn.peer_id else None


def set_group(d: Daemon, conn: Connection, r: p.SetGroup) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        before = d.store.require_peer(me)
        peer = d.store.set_group(me, r.group)
        effects = [] if before.group == peer.group else [_regrouped(d, before, peer)]
        return Outcome(p.PeerResult(id=r.id, peer=peer), effects)

    return op


def _regrouped(d: Daemon, before: p.Peer, after: p.Peer) -> Effect:
    """The "peers" events of a group change, each watcher as it sees the peer: one that
    no longer may ``ev_peer_left`` (the new group is not named), one that now may
    ``ev_peer_joined``, one that sees it in both ``ev_peer_changed`` (what "group")."""

    def run() -> None:
        for conn in tuple(d.subscribers["peers"]):
            if "peers" not in conn.kinds:
                continue
            viewer = d.store._peers.get(conn.peer_id) if conn.peer_id else None
            saw, sees = groups.visible(viewer, before), groups.visible(viewer, after)
            event: p.Frame
            if saw and sees:
                event = p.PeerChanged(what="group", peer_id=after.id)
            elif saw:
                event = p.PeerLeft(peer_id=after.id, name=after.name, reason=REGROUPED)
            elif sees:
                event = p.PeerJoined(peer=visible(conn, after))
            else:
                continue
            conn.write(p.encode(event))

    return run


REGROUPED = "moved to another group"
"""The ``ev_peer_left`` reason a watcher gets when a peer leaves its sight by ``set_group``."""


def _machine(conn: Connection) -> str:
    if conn.machine_id is None:  # pragma: no cover - requests come only after the hello
        raise PeersError(Code.HELLO_REQUIRED, "the connection has not proved its machine")
    return conn.machine_id


def visible(conn: Connection, peer: p.Peer) -> p.Peer:
    """``peer`` as ``conn`` may see it: a TCP client learns no process details of other
    machines (pids and start times identify a session; the tty says where it runs), and
    not their machine ids, only a stable stand-in (a machine id is what a hub client
    presents, so one it has never seen cannot be claimed before its machine does)."""
    if not conn.remote or peer.machine_id == conn.machine_id:
        return peer
    return msgspec.structs.replace(
        peer,
        machine_id=_stand_in(peer.machine_id),
        agent_pid=0,
        agent_start=0.0,
        helper_pid=None,
        tty=None,
        wake=None,  # its reasons name local paths and programs
    )


def _stand_in(machine_id: str) -> str:
    return "h-" + hashlib.sha256(machine_id.encode()).hexdigest()[:16]


def _session_peer(
    d: Daemon, conn: Connection, session_id: str | None, pid: int | None
) -> p.Peer | None:
    """The active peer a session acts as: by session id (only on the connection's own
    machine: a hub client never reaches another's), else by process ancestry."""
    peer = None
    if session_id:
        peer = d.store.peer_by_session(_machine(conn), session_id)
        if peer is not None and peer.state != "active":
            peer = None
    if peer is None and pid:
        peer = _peer_of_process(d, pid)
    return peer


def _peer_of_process(d: Daemon, pid: int) -> p.Peer | None:
    """The active peer whose agent is ``pid`` or one of its ancestors."""
    found = identity.registered_ancestor(pid, d.store.active_agents(d.machine_id))
    return d.store.peer(found[1]) if found is not None else None


def heartbeat(d: Daemon, conn: Connection, r: p.Heartbeat) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        d.store.touch(me, time.time())
        return Outcome(p.Ok(id=r.id))

    return op


def unregister(d: Daemon, conn: Connection, r: p.Unregister) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        peer = d.store.mark_gone(me, "unregistered", time.time())
        effects: list[Effect] = []
        if peer is not None:
            effects.append(d.left_effect(peer.id, peer.name, "unregistered"))
        effects.append(lambda: d.unbind_peer(me))
        return Outcome(p.Ok(id=r.id), effects)

    return op


def set_summary(d: Daemon, conn: Connection, r: p.SetSummary) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        peer = d.store.set_summary(me, r.summary)
        return Outcome(p.PeerResult(id=r.id, peer=peer))

    return op


def set_name(d: Daemon, conn: Connection, r: p.SetName) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        peer, old, inherited = d.store.set_name(me, r.name)
        effects: list[Effect] = []
        if old != peer.name:
            effects.append(d.renamed_effect(peer.id, old, peer.name))
        effects += d.requeued_effects(inherited)
        return Outcome(
            p.PeerResult(id=r.id, peer=peer, inherited=len(inherited)),
            effects,
        )

    return op


def whoami(d: Daemon, conn: Connection, r: p.Whoami) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        peer = d.store.require_peer(me)
        return Outcome(p.PeerResult(id=r.id, peer=peer))

    return op


def list_peers(d: Daemon, conn: Connection, r: p.ListPeers) -> Op:
    network = r.scope == "network"
    if network and d.federation is None:
        raise PeersError(
            Code.BAD_REQUEST, "scope 'network' needs federation: set nats_url (docs/federation.md)"
        )

    def op() -> Outcome:
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        scope = "machine" if network else r.scope
        peers = d.store.list_peers(caller, scope, r.include_gone, r.include_self, _machine(conn))
        if r.group is not None:
            peers = [x for x in peers if x.group == r.group]
        from . import coordination  # the feature modules import this one: at call time

        peers = coordination.decorate(d, peers)  # status, note, active files
        if conn.remote:
            peers = [visible(conn, x) for x in peers]
        if network and d.federation is not None and r.group is None:
            # other machines' peers carry no group (groups are per machine)
            peers = peers + d.federation.network_peers()
        kept = _within(peers, d.frame_budget)
        return Outcome(p.PeerList(id=r.id, peers=peers[:kept], omitted=len(peers) - kept))

    return op


def _within(peers: list[p.Peer], budget: int) -> int:
    """How many of ``peers`` (the first always) fit in ``budget`` bytes: each carries
    its own paths, summary and files, up to tens of kilobytes."""
    spent = 0
    for i, peer in enumerate(peers):
        spent += len(msgspec.msgpack.encode(peer))
        if i and spent > budget:
            return i
    return len(peers)


def _check_text(d: Daemon, text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > d.settings.max_text:
        raise PeersError(
            Code.TOO_LARGE,
            f"message is {size} bytes; the limit is {d.settings.max_text} bytes",
        )
    if not text.strip():
        raise PeersError(Code.BAD_REQUEST, "message text is empty")


def send(d: Daemon, conn: Connection, r: p.Send) -> Op:
    me = _me(conn)
    _check_text(d, r.text)
    from . import mailops  # the feature modules import this one: at call time

    mailops.check_typed(d, r.typed)
    s = d.settings

    def op() -> Outcome:
        now = time.time()
        sender = d.store.require_peer(me)
        try:
            recipient = groups.resolve(d.store, sender, r.to, d.machine_id)
        except PeersError as e:
            if e.code != Code.UNKNOWN_PEER or d.federation is None:
                raise
            if r.typed is not None or r.subject is not None:
                # Federation carries plain text and reply_to (docs/federation.md, limits).
                raise PeersError(
                    Code.BAD_REQUEST,
                    f"{r.to} is on another machine: typed requests (kind) and subjects do not "
                    "cross machines yet; send it as plain text",
                ) from None
            return d.federation.send(sender, r, now)  # a peer on another machine
        if recipient.id == sender.id:
            raise PeersError(Code.BAD_REQUEST, "you cannot send a message to yourself")
        # The one queue check (the store does not repeat it), before a rate token is taken.
        if recipient.pending >= s.queue_limit:
            raise d.store.queue_full(recipient, s.queue_limit)
        extra = mailops.extra(d, sender, recipient, r.reply_to, r.typed, r.subject, r.context)
        d.rate_limits.take(me)
        msg = d.store.send(sender, recipient, r.text, r.reply_to, now, s.message_ttl, extra)
        health = _health(d, recipient.id, msg)
        return Outcome(
            p.Sent(id=r.id, to=recipient.id, to_name=recipient.name, **health),
            d.mail_effects(msg),
        )

    return op


def _health(d: Daemon, peer_id: str, msg: p.Message) -> dict[str, Any]:
    """The delivery-health fields of a ``Sent`` / ``SentItem`` for ``msg`` to ``peer_id``."""
    peer = d.store.require_peer(peer_id)  # after the send: pending counts this message
    from . import coordination  # the feature modules import this one: at call time

    return {
        "message_id": msg.id,
        "reach": coordination.reach(d, peer),
        "pending": peer.pending,
        "last_read": peer.last_read,
        "expires_at": msg.expires_at,
    }


def broadcast(d: Daemon, conn: Connection, r: p.Broadcast) -> Op:
    me = _me(conn)
    if r.scope == "network":
        raise PeersError(
            Code.BAD_REQUEST, "broadcast stays on this machine; send to name@host instead"
        )
    _check_text(d, r.text)
    s = d.settings

    def op() -> Outcome:
        now = time.time()
        sender = d.store.require_peer(me)
        targets = d.store.list_peers(sender, r.scope)
        full = [peer for peer in targets if peer.pending >= s.queue_limit]
        targets = [peer for peer in targets if peer.pending < s.queue_limit]
        if targets:
            d.rate_limits.take(me, len(targets))
        sent: list[p.SentItem] = []
        effects: list[Effect] = []
        from . import mailops  # the feature modules import this one: at call time

        extra = mailops.extra(d, sender, sender, None, None, None, r.context)
        for peer in targets:
            msg = d.store.send(sender, peer, r.text, None, now, s.message_ttl, extra)
            health = _health(d, peer.id, msg)
            sent.append(p.SentItem(to=peer.id, to_name=peer.name, **health))
            effects += d.mail_effects(msg)
        skipped = [f"{peer.name}: queue full ({s.queue_limit} unread)" for peer in full]
        return Outcome(p.BroadcastSent(id=r.id, sent=sent, skipped=skipped), effects)

    return op


def message_status(d: Daemon, conn: Connection, r: p.MessageStatus) -> Op:
    def op() -> Outcome:
        items = [
            msgspec.structs.replace(item, wake=wake)
            if (wake := d.waker.message_wake(item.message_id)) is not None and item.found
            else item
            for item in d.store.statuses(r.message_ids, _caller(d, conn))
        ]
        from . import mailops  # the feature modules import this one: at call time

        items = mailops.statuses(d, items)
        if d.federation is not None:  # mail to other machines: outbox or stream
            items = [
                msgspec.structs.replace(item, remote=where)
                if item.found and (where := d.store.outbox.where(item.message_id))
                else item
                for item in items
            ]
        return Outcome(p.Statuses(id=r.id, items=items))

    return op


def claim(d: Daemon, conn: Connection, r: p.Claim) -> Op:
    me = _me(conn)
    lease = r.lease_seconds if r.lease_seconds is not None else d.settings.lease_seconds

    def op() -> Outcome:
        now = time.time()
        from_peer = None
        if r.from_peer:
            viewer = d.store.peer(me)
            from_peer = groups.resolve(d.store, viewer, r.from_peer, d.machine_id).id
        msgs = d.store.claim(me, r.limit, lease, now, from_peer, r.reply_to, budget=d.frame_budget)
        return Outcome(p.Claimed(id=r.id, lease_until=now + lease, messages=msgs))

    return op


def ack(d: Daemon, conn: Connection, r: p.Ack) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        now = time.time()
        fresh, already = d.store.ack(me, r.message_ids, r.via, now)
        msgs = d.store.messages_by_ids(fresh)
        effects = d.receipt_effects(msgs, "delivered", now, r.via)
        # Mail from another machine: its receipt goes back (peersd/outbox.py).
        seqs = [seq for seq in map(d.store.parse_id, fresh) if seq is not None]
        if d.store.outbox.settled(seqs, "delivered", now, r.via) and d.federation is not None:
            effects.append(d.federation.kick.set)
        return Outcome(p.Acked(id=r.id, acked=fresh, already=already), effects)

    return op


def release(d: Daemon, conn: Connection, r: p.Release) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        released = d.store.release(me, r.message_ids)
        effects = d.requeued_effects([d.store.parse_id(i) or 0 for i in released])
        return Outcome(p.Released(id=r.id, released=released), effects)

    return op


def history(d: Daemon, conn: Connection, r: p.History) -> Op:
    me = _me(conn) if r.mine else None

    def op() -> Outcome:
        viewer = _caller(d, conn)
        peer = groups.resolve(d.store, viewer, r.peer, d.machine_id).id if r.peer else None
        thread = d.store.parse_id(r.thread) if r.thread else None
        if r.thread and thread is None:
            raise PeersError(Code.UNKNOWN_MESSAGE, f"no message {r.thread} in this daemon's mail")
        if thread is not None:
            root = d.store.mail.parent(r.thread)
            if root is not None and root.thread is not None:
                thread = root.thread  # any message of a thread names it
        msgs, next_before = d.store.history(
            me,
            peer,
            r.limit,
            r.before,
            r.state,
            r.direction,
            budget=d.frame_budget,
            viewer=None if r.mine else viewer,  # one's own mail is always one's own
            thread=thread,
        )
        d.store.mail.with_reactions(msgs)
        return Outcome(p.HistoryPage(id=r.id, messages=msgs, next_before=next_before))

    return op


def subscribe(d: Daemon, conn: Connection, r: p.Subscribe) -> Op:
    if ("mail" in r.kinds or "receipts" in r.kinds) and conn.peer_id is None:
        raise PeersError(Code.NOT_REGISTERED, "mail and receipts need a registered peer")
    if "overseer" in r.kinds and conn.remote:
        # Every message whole: for the machine's owner, not for a hub's other machines.
        raise PeersError(Code.FORBIDDEN, "overseer events are for the local socket only")

    def op() -> Outcome:
        return Outcome(p.Ok(id=r.id), [lambda: d.set_kinds(conn, set(r.kinds))])

    return op


def status(d: Daemon, conn: Connection, r: p.Status) -> Op:
    def op() -> Outcome:
        active, gone, by_state = d.store.counts()
        return Outcome(
            p.DaemonStatus(
                id=r.id,
                version=__version__,
                protocol=p.PROTOCOL_VERSION,
                pid=os.getpid(),
                started_at=d.started_at,
                socket=d.socket_path,
                db=str(d.settings.db_path),
                machine_id=d.machine_id,
                host=d.host,
                supervisor=d.supervisor,
                peers_active=active,
                peers_gone=gone,
                connections=len(d.connections),
                messages=by_state,
                schema=d.store.schema_version,
                last_sweep_ms=d.housekeeper.last_sweep_ms,
                adopted_socket=d.adopted,
                warnings=tcp_warnings(d.settings),
                federation=d.federation.status() if d.federation is not None else None,
            )
        )

    return op


def shutdown(d: Daemon, conn: Connection, r: p.Shutdown) -> Op:
    _local_only(conn, "shutting the daemon down")

    def op() -> Outcome:
        log.info("shutdown requested by connection %d (pid %s)", conn.conn_id, conn.pid)
        return Outcome(p.Ok(id=r.id), [d.stop_requested.set])

    return op


def sweep(d: Daemon, conn: Connection, r: p.Sweep) -> Coroutine[Any, Any, None]:
    _local_only(conn, "running the sweep on demand")
    return _sweep_request(d, conn, r)


async def _sweep_request(d: Daemon, conn: Connection, r: p.Sweep) -> None:
    try:
        result = await d.housekeeper.sweep()
    except PeersError as e:
        conn.send(p.Error.of(e, r.id))
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


def forget_machine(d: Daemon, conn: Connection, r: p.ForgetMachine) -> Op:
    _local_only(conn, "forgetting a hub machine")

    def op() -> Outcome:
        if not d.store.machines.forget(r.machine_id):
            raise PeersError(
                Code.BAD_REQUEST, f"no machine {r.machine_id!r} is bound to a secret on this hub"
            )
        log.info("machine %s forgotten (connection %d)", r.machine_id, conn.conn_id)
        return Outcome(p.Ok(id=r.id), [lambda: d.drop_machine(r.machine_id)])

    return op


def list_machines(d: Daemon, conn: Connection, r: p.ListMachines) -> Op:
    _local_only(conn, "listing hub machines")

    def op() -> Outcome:
        rows, total = d.store.machines.recent(r.limit)
        machines = [
            p.MachineRecord(
                machine_id=m, first_seen=first, last_seen=last, host=host, active_peers=n
            )
            for m, first, last, host, n in rows
        ]
        return Outcome(p.MachineList(id=r.id, machines=machines, total=total))

    return op


def audit(d: Daemon, conn: Connection, r: p.Audit) -> Op:
    def op() -> Outcome:
        rows, next_before = d.store.audit.page(r.limit, r.before, r.action)
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


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.Register: register,
    p.Attach: attach,
    p.Heartbeat: heartbeat,
    p.Unregister: unregister,
    p.SetSummary: set_summary,
    p.SetName: set_name,
    p.Whoami: whoami,
    p.ListPeers: list_peers,
    p.Send: send,
    p.Broadcast: broadcast,
    p.MessageStatus: message_status,
    p.Claim: claim,
    p.Ack: ack,
    p.Release: release,
    p.History: history,
    p.Subscribe: subscribe,
    p.Status: status,
    p.Shutdown: shutdown,
    p.Sweep: sweep,
    p.Kill: kill.handle,
    p.Audit: audit,
    p.ForgetMachine: forget_machine,
    p.ListMachines: list_machines,
    p.SetGroup: set_group,
}
