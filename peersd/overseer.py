"""What the overseer's dashboard (``peers dashboard``) asks of the daemon beyond the rest.

Two actions the machine's owner takes on *another* session — rename it, drop its claims —
allowed to whoever may ``kill`` with ``kill_enabled`` off: a person's CLI on the local
socket, not an agent session (``kill._refuse_agents``), on a target ``kill`` could take
(``kill.owned_target``). And the ``overseer`` events: which requests change what
``list_peers``/``list_files``/``message_status`` show (``PEER_CHANGES``, ``message_changed``,
published by ``Daemon.dispatch`` after commit), so a live view never has to poll.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import protocol as p
from .errors import Code, PeersError
from .kill import _refuse_agents, owned_target

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

PEER_CHANGES: dict[type[p.Request[Any]], p.PeerChange] = {
    p.SetSummary: "summary",
    p.SetStatus: "status",
    p.TouchFiles: "files",
    p.CheckEdit: "files",
    p.ClaimFiles: "claims",
    p.ReleaseFiles: "claims",
    p.ReleaseClaims: "claims",
    p.SetGroup: "group",
}
"""Requests whose success changes a peer as the dashboard shows it: a ``PeerChanged``."""

WORK_CHANGES: dict[type[p.Request[Any]], p.WorkChange] = {
    p.Register: "tasks",  # a gone session's tasks may pass to the new one (store._inherit)
    p.SetName: "tasks",
    p.CreateTask: "tasks",
    p.UpdateTask: "tasks",
    p.PostDecision: "decisions",
    p.RevokeDecision: "decisions",
    p.Propose: "proposals",
    p.Vote: "proposals",
}
"""Requests whose success changes the shared work state: a ``WorkChanged``."""


async def _owner(d: Daemon, conn: Connection, what: str, ref: str, verb: str) -> p.Peer:
    """The session ``ref`` names, when the caller is the machine's owner (local, a person's
    CLI) and may act on it as on one to kill (``kill.owned_target``)."""
    if conn.remote:
        raise PeersError(
            Code.FORBIDDEN, f"only the machine's owner may {what}, over the local socket"
        )
    if conn.client_kind != "cli":
        raise PeersError(
            Code.FORBIDDEN,
            f"only the machine's owner may {what} (a `peers` command or `peers dashboard`); "
            f"an agent session renames itself with set_name and releases its own claims",
        )
    await _refuse_agents(d, conn)
    target, _alive = await owned_target(d, conn, ref, verb)
    return target


def rename_peer(d: Daemon, conn: Connection, r: p.RenamePeer) -> Any:
    async def run() -> None:
        try:
            found = await _owner(d, conn, "rename another session", r.target, "rename")

            def op() -> tuple[p.Peer, str, list[int]]:
                target = d.store.require_peer(found.id)
                if target.state == "gone":
                    raise PeersError(
                        Code.UNKNOWN_PEER, f"{target.name} has gone; only live sessions are renamed"
                    )
                return d.store.set_name(target.id, r.name)

            peer, old, inherited = await d.commit.run(op)
            if old != peer.name:
                d.renamed_effect(peer.id, old, peer.name)()
            for effect in d.requeued_effects(inherited):
                effect()
            conn.send(p.PeerResult(id=r.id, peer=peer, inherited=len(inherited)))
        except PeersError as e:
            conn.send(p.Error.of(e, r.id))

    return run()


def release_claims(d: Daemon, conn: Connection, r: p.ReleaseClaims) -> Any:
    if r.all and r.patterns:
        raise PeersError(Code.BAD_REQUEST, "give patterns or all, not both")
    if not r.all and not r.patterns:
        raise PeersError(Code.BAD_REQUEST, "nothing to release: give patterns, or all")

    async def run() -> None:
        try:
            target = await _owner(
                d, conn, "release another session's claims", r.target, "release the claims of"
            )

            def op() -> list[str]:
                return d.store.files.release(target.id, None if r.all else r.patterns, time.time())

            released = await d.commit.run(op)
            peer_id = target.id
            not_held = [x for x in dict.fromkeys(r.patterns) if x not in released]
            d.publish("overseer", p.PeerChanged(what="claims", peer_id=peer_id))
            conn.send(p.FilesReleased(id=r.id, released=released, not_held=not_held))
        except PeersError as e:
            conn.send(p.Error.of(e, r.id))

    return run()


def message_changed(req: p.Request[Any], response: p.Frame) -> p.MessageChanged | None:
    """The ``MessageChanged`` doorbell of a request that changes messages without an event
    of its own (``Daemon.dispatch``, after commit): a reaction, a claim leasing mail. A
    release, a lapsed lease, a delivery and an expiry ring from ``Daemon``'s effects."""
    if isinstance(req, p.React) and isinstance(response, p.Ok):
        return p.MessageChanged(what="reactions", message_ids=[req.message_id])
    if isinstance(response, p.Claimed) and response.messages:
        return p.MessageChanged(what="leased", message_ids=[m.id for m in response.messages])
    return None


def audit_added(d: Daemon, seq: int) -> None:
    """Ring the ``overseer`` doorbell for audit record ``seq`` (call after its commit)."""
    d.publish("overseer", p.AuditAdded(seq=seq))


HANDLERS: dict[type[p.Request[Any]], Any] = {
    p.RenamePeer: rename_peer,
    p.ReleaseClaims: release_claims,
}
