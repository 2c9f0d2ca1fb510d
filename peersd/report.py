"""The period report (``peers report``): what happened between two times, section by section.

Each section is one function ``(daemon, viewer, since, until) -> value`` in ``SECTIONS``,
filling the field of ``protocol.Report`` of the same name; a new section is one more
function here and one more field there. The CLI renders the answer as Markdown
or JSON (``peers_cli/report.py``). A viewer bound to a peer in a group sees only what its
group may see (``peersd.groups``); an unbound connection (the human CLI) sees everything.

Each list is capped at ``CAP`` rows so the answer stays inside a frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import groups, proposals, workstate
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Handler, Op, Outcome, _caller

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

CAP = 500
"""Rows per section at most."""

Section = Callable[["Daemon", "p.Peer | None", float, float], Any]


def _sees(d: Daemon, viewer: p.Peer | None, peer_id: str) -> bool:
    if viewer is None or groups.operator(viewer):
        return True
    peer = d.store._peers.get(peer_id)
    return peer is not None and groups.visible(viewer, peer)


def _pair_rows(d: Daemon, since: float, until: float) -> list[tuple[Any, ...]]:
    return d.store.conn.execute(
        "SELECT sender, sender_name, recipient, recipient_name, count(*), "
        "sum(state = 'delivered') FROM messages WHERE created >= ? AND created <= ? "
        "GROUP BY sender, recipient ORDER BY count(*) DESC, sender_name, recipient_name",
        (since, until),
    ).fetchall()


def messages(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> int:
    """How many messages were sent in the period (between peers the viewer may see)."""
    return sum(row[4] for row in _visible_pairs(d, viewer, since, until))


def _visible_pairs(
    d: Daemon, viewer: p.Peer | None, since: float, until: float
) -> list[tuple[Any, ...]]:
    return [
        row
        for row in _pair_rows(d, since, until)
        if _sees(d, viewer, row[0]) and _sees(d, viewer, row[2])
    ]


def pairs(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.PairCount]:
    """Message counts per (sender, recipient), busiest first."""
    return [
        p.PairCount(sender=s, sender_name=sn, recipient=r, recipient_name=rn, count=n, delivered=ok)
        for s, sn, r, rn, n, ok in _visible_pairs(d, viewer, since, until)[:CAP]
    ]


def peers(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.ReportPeer]:
    """Who took part: peers registered before ``until`` and seen after ``since``, or that
    sent or received mail in the period; with their counts."""
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    for s, _sn, r, _rn, n, _ok in _visible_pairs(d, viewer, since, until):
        sent[s] = sent.get(s, 0) + n
        received[r] = received.get(r, 0) + n
    found = []
    for x in d.store._peers.values():
        took_part = x.id in sent or x.id in received
        present = x.registered_at <= until and x.last_seen >= since
        if (took_part or present) and _sees(d, viewer, x.id):
            found.append(
                p.ReportPeer(
                    peer_id=x.id,
                    name=x.name,
                    client=x.client,
                    state=x.state,
                    sent=sent.get(x.id, 0),
                    received=received.get(x.id, 0),
                    group=x.group,
                    summary=x.summary,
                )
            )
    found.sort(key=lambda x: (-(x.sent + x.received), x.name.lower()))
    return found[:CAP]


def proposal_list(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.Proposal]:
    """Proposals made or resolved in the period, with their votes."""
    return [
        x
        for x in proposals.in_period(d, since, until)
        if viewer is None or groups.operator(viewer) or proposals._visible(viewer, x)
    ][:CAP]


def claims(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.ReportClaim]:
    """File claims live at some time in the period. Claims end (and are deleted) when their
    peer goes or they expire, so a claim released before now is not in the store."""
    found = []
    for peer_id, pattern, repo, exclusive, reason, created, expires in d.store.conn.execute(
        "SELECT peer, pattern, repo, exclusive, reason, created, expires_at FROM claims "
        "WHERE created <= ? AND expires_at >= ? ORDER BY created",
        (until, since),
    ):
        peer = d.store._peers.get(peer_id)
        if peer is not None and _sees(d, viewer, peer_id):
            found.append(
                p.ReportClaim(
                    peer_id=peer_id,
                    name=peer.name,
                    pattern=pattern,
                    repo=repo,
                    exclusive=bool(exclusive),
                    created=created,
                    expires_at=expires,
                    reason=reason,
                )
            )
    return found[:CAP]


def kills(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.AuditRecord]:
    """Kills (``peers kill``, ``kill_peer``) and orphan cleanups from the audit log."""
    found = []
    for seq, at, actor, action, target, detail in d.store.conn.execute(
        "SELECT seq, at, actor, action, target, detail FROM audit WHERE at >= ? AND at <= ? "
        "AND action IN ('kill', 'cleanup') ORDER BY seq",
        (since, until),
    ):
        if target and not _sees(d, viewer, target):
            continue
        peer = d.store._peers.get(target) if target else None
        found.append(
            p.AuditRecord(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                detail=detail,
                target=target,
                target_name=peer.name if peer else None,
            )
        )
    return found[:CAP]


def tasks(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.Task]:
    """Tasks made or changed in the period (their state now), newest change first."""
    where = "created <= ? AND updated >= ?"
    args: list[object] = [until, since]
    if viewer is not None:
        seen, seen_args = groups.sql_visible(viewer, "creator")
        where += f" AND ({seen} OR assignee = ?)"
        args += [*seen_args, viewer.id]
    states = (*workstate.LIVE, "done", "cancelled")
    found = [task for task, _machine in d.store.tasks.listing(states, CAP, where, args)]
    return sorted(found, key=lambda t: -t.updated)


def decision_list(d: Daemon, viewer: p.Peer | None, since: float, until: float) -> list[p.Decision]:
    """Every decision version posted or revoked in the period, oldest first."""
    seen, seen_args = groups.sql_visible(viewer, "author")
    rows = d.store.conn.execute(
        f"SELECT {workstate.DECISION_COLUMNS} FROM decisions WHERE at >= ? AND at <= ? "
        f"AND {seen} ORDER BY seq LIMIT ?",
        (since, until, *seen_args, CAP),
    )
    return [p.Decision(*row) for row in rows]


SECTIONS: dict[str, Section] = {
    "messages": messages,
    "peers": peers,
    "pairs": pairs,
    "tasks": tasks,
    "decisions": decision_list,
    "proposals": proposal_list,
    "claims": claims,
    "kills": kills,
}
"""Field of ``protocol.Report`` -> the function that fills it."""


def make_report(d: Daemon, conn: Connection, r: p.MakeReport) -> Op:
    until = r.until if r.until is not None else None
    if until is not None and until < r.since:
        raise PeersError(Code.BAD_REQUEST, "until is before since: the period is empty")

    def op() -> Outcome:
        end = until if until is not None else time.time()
        viewer = _caller(d, conn)
        fields = {name: section(d, viewer, r.since, end) for name, section in SECTIONS.items()}
        return Outcome(p.Report(id=r.id, since=r.since, until=end, **fields))

    return op


HANDLERS: dict[type[p.Request[Any]], Handler] = {p.MakeReport: make_report}
