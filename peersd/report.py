"""The period report (``peers report``): what happened between two times, section by section.

Each section is one function ``(daemon, viewer, since, until) -> value`` in ``SECTIONS``,
filling the field of ``protocol.Report`` of the same name; a new section is one more
function here and one more field there. The CLI renders the answer as Markdown
or JSON (``peers_cli/report.py``). A viewer bound to a peer in a group sees only what its
group may see (``peersd.groups``); an unbound connection (the human CLI) sees everything.

Each list is capped at ``CAP`` rows, the message count at the latest ``SCAN`` messages,
and the whole answer then halved, largest list first, until it fits in a frame; the answer
says in ``cut`` what was left out, section by section.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from . import groups, proposals, workstate
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Handler, Op, Outcome, _caller

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

CAP = 500
"""Rows per section at most."""

SCAN = 50_000
"""Messages counted at most (the latest of the period): the count runs inside a commit
batch, so a report over months of mail must not read all of it."""

TEXT = 300
"""Characters of a task's description and result the report keeps."""


@dataclass
class Period:
    """One report being made: who asks, the period, and what was left out (``Report.cut``)."""

    d: Daemon
    viewer: p.Peer | None
    since: float
    until: float
    cut: dict[str, str] = field(default_factory=dict)
    _pairs: list[tuple[Any, ...]] | None = None

    def capped(self, section: str, rows: list[Any]) -> list[Any]:
        """``rows`` (fetched with a limit of ``CAP + 1``) at most ``CAP``, noting a cut."""
        if len(rows) > CAP:
            self.cut[section] = f"only the first {CAP} rows (more happened in the period)"
        return rows[:CAP]


Section = Callable[[Period], Any]


def _sees(d: Daemon, viewer: p.Peer | None, peer_id: str) -> bool:
    if viewer is None or groups.operator(viewer):
        return True
    peer = d.store._peers.get(peer_id)
    return peer is not None and groups.visible(viewer, peer)


def _pair_rows(x: Period) -> list[tuple[Any, ...]]:
    """(sender, sender_name, recipient, recipient_name, count, delivered) over the latest
    ``SCAN`` messages of the period, noting a cut. Both steps are ``created`` ranges
    (index messages_created): the ``SCAN``-th latest message's time, then the count."""
    conn = x.d.store.conn
    since = x.since
    bound = conn.execute(
        "SELECT created FROM messages WHERE created >= ? AND created <= ? "
        "ORDER BY created DESC LIMIT 1 OFFSET ?",
        (x.since, x.until, SCAN - 1),
    ).fetchone()
    if bound is not None and bound[0] > since:
        more = conn.execute(
            "SELECT 1 FROM messages WHERE created >= ? AND created < ? LIMIT 1",
            (since, bound[0]),
        ).fetchone()
        if more is not None:
            since = bound[0]
            x.cut["messages"] = (
                f"counted only the latest {SCAN} messages of the period, sent since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since))}"
            )
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT sender, sender_name, recipient, recipient_name, count(*), "
        "sum(state = 'delivered') FROM messages WHERE created >= ? AND created <= ? "
        "GROUP BY sender, recipient ORDER BY count(*) DESC, sender_name, recipient_name",
        (since, x.until),
    ).fetchall()
    return rows


def _visible_pairs(x: Period) -> list[tuple[Any, ...]]:
    if x._pairs is None:
        x._pairs = [
            row
            for row in _pair_rows(x)
            if _sees(x.d, x.viewer, row[0]) and _sees(x.d, x.viewer, row[2])
        ]
    return x._pairs


def messages(x: Period) -> int:
    """How many messages were sent in the period (between peers the viewer may see)."""
    return sum(row[4] for row in _visible_pairs(x))


def pairs(x: Period) -> list[p.PairCount]:
    """Message counts per (sender, recipient), busiest first."""
    return [
        p.PairCount(sender=s, sender_name=sn, recipient=r, recipient_name=rn, count=n, delivered=ok)
        for s, sn, r, rn, n, ok in x.capped("pairs", _visible_pairs(x))
    ]


def peers(x: Period) -> list[p.ReportPeer]:
    """Who took part: peers registered before ``until`` and seen after ``since``, or that
    sent or received mail in the period; with their counts."""
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    for s, _sn, r, _rn, n, _ok in _visible_pairs(x):
        sent[s] = sent.get(s, 0) + n
        received[r] = received.get(r, 0) + n
    found = []
    for peer in x.d.store._peers.values():
        took_part = peer.id in sent or peer.id in received
        present = peer.registered_at <= x.until and peer.last_seen >= x.since
        if (took_part or present) and _sees(x.d, x.viewer, peer.id):
            found.append(
                p.ReportPeer(
                    peer_id=peer.id,
                    name=peer.name,
                    client=peer.client,
                    state=peer.state,
                    sent=sent.get(peer.id, 0),
                    received=received.get(peer.id, 0),
                    group=peer.group,
                    summary=peer.summary,
                )
            )
    found.sort(key=lambda r: (-(r.sent + r.received), r.name.lower()))
    return x.capped("peers", found)


def proposal_list(x: Period) -> list[p.Proposal]:
    """Proposals made or resolved in the period, with their votes."""
    found = proposals.in_period(x.d, x.viewer, x.since, x.until, CAP + 1)
    return x.capped("proposals", found)


def claims(x: Period) -> list[p.ReportClaim]:
    """File claims live at some time in the period. Claims end (and are deleted) when their
    peer goes or they expire, so a claim released before now is not in the store."""
    found = []
    for peer_id, pattern, repo, exclusive, reason, created, expires in x.d.store.conn.execute(
        "SELECT peer, pattern, repo, exclusive, reason, created, expires_at FROM claims "
        "WHERE created <= ? AND expires_at >= ? ORDER BY created",
        (x.until, x.since),
    ):
        peer = x.d.store._peers.get(peer_id)
        if peer is not None and _sees(x.d, x.viewer, peer_id):
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
            if len(found) > CAP:
                break
    return x.capped("claims", found)


def kills(x: Period) -> list[p.AuditRecord]:
    """Kills (``peers kill``, ``kill_peer``) and orphan cleanups from the audit log."""
    found = []
    for seq, at, actor, action, target, detail in x.d.store.conn.execute(
        "SELECT seq, at, actor, action, target, detail FROM audit WHERE at >= ? AND at <= ? "
        "AND action IN ('kill', 'cleanup') ORDER BY seq",
        (x.since, x.until),
    ):
        if target and not _sees(x.d, x.viewer, target):
            continue
        peer = x.d.store._peers.get(target) if target else None
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
        if len(found) > CAP:
            break
    return x.capped("kills", found)


def tasks(x: Period) -> list[p.Task]:
    """Tasks made or changed in the period (their state now), latest change first; long
    descriptions and results shortened to ``TEXT`` characters."""
    where = "created <= ? AND updated >= ?"
    args: list[object] = [x.until, x.since]
    if x.viewer is not None:
        seen, seen_args = groups.sql_visible(x.viewer, "creator")
        where += f" AND ({seen} OR assignee = ?)"
        args += [*seen_args, x.viewer.id]
    rows = x.d.store.conn.execute(
        f"SELECT {workstate.TASK_COLUMNS} FROM tasks WHERE {where} "
        "ORDER BY updated DESC, seq DESC LIMIT ?",
        [*args, CAP + 1],
    )
    found = []
    shortened = False
    for row in rows:
        task = workstate._task(row)
        if len(task.description) > TEXT or len(task.result) > TEXT:
            task = msgspec.structs.replace(
                task, description=_short(task.description), result=_short(task.result)
            )
            shortened = True
        found.append(task)
    found = x.capped("tasks", found)
    if shortened:
        note = f"descriptions and results shortened to {TEXT} characters (task_info has them)"
        x.cut["tasks"] = "; ".join(filter(None, (x.cut.get("tasks"), note)))
    return found


def _short(text: str) -> str:
    return text if len(text) <= TEXT else text[: TEXT - 1] + "…"


def decision_list(x: Period) -> list[p.Decision]:
    """Every decision version posted or revoked in the period, oldest first."""
    board, args = "1", []  # the person at a terminal reads every board
    if x.viewer is not None and not groups.operator(x.viewer):
        board, args = "group_name = ?", [workstate.board_of(x.viewer)]
    rows = x.d.store.conn.execute(
        f"SELECT {workstate.DECISION_COLUMNS} FROM decisions WHERE at >= ? AND at <= ? "
        f"AND {board} ORDER BY seq LIMIT ?",
        (x.since, x.until, *args, CAP + 1),
    )
    return x.capped("decisions", [p.Decision(*row) for row in rows])


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
        x = Period(d, _caller(d, conn), r.since, end)
        fields = {name: section(x) for name, section in SECTIONS.items()}
        report = p.Report(id=r.id, since=r.since, until=end, **fields)
        return Outcome(fit(report, d.frame_budget, x.cut))

    return op


def fit(report: p.Report, budget: int, cut: dict[str, str]) -> p.Report:
    """``report`` with ``cut`` noted, its largest lists halved until it fits in ``budget``
    bytes (each halving noted in ``cut``)."""
    lists = [name for name in SECTIONS if isinstance(getattr(report, name), list)]
    first = dict(cut)
    report = msgspec.structs.replace(report, cut=cut)
    while len(p.encode(report)) > budget:
        sizes = {name: len(msgspec.msgpack.encode(getattr(report, name))) for name in lists}
        name = max(sizes, key=lambda n: sizes[n])
        rows = getattr(report, name)
        if not rows:  # pragma: no cover - a report of empty lists is far below any budget
            break
        kept = rows[: len(rows) // 2]
        note = f"{len(kept)} rows kept to fit the answer in a frame"
        cut[name] = "; ".join(filter(None, (first.get(name), note)))
        report = msgspec.structs.replace(report, **{name: kept}, cut=cut)
    return report


HANDLERS: dict[type[p.Request[Any]], Handler] = {p.MakeReport: make_report}
