"""The decisions board: what was decided, by whom, when and why, per repository.

One handler per request, in the shape of ``handlers``; ``handlers`` adds ``HANDLERS`` to
its table. A decision lives on a board, a place (the poster's repository, else its
directory) and the poster's isolation group, under a key; posting the key again makes a new
version and revoking it makes one too, so every earlier version stays readable
(``workstate.Decisions``). A peer reads, posts and revokes on its own group's board (no
group: the board of every ungrouped peer and the operator); the operator and an unbound
connection read every board. Each post or revocation is announced once, as ordinary mail,
to the live peers ``audience`` picks.
"""

from __future__ import annotations

import difflib
import time
from typing import TYPE_CHECKING, Any

from . import groups
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Effect, Handler, Op, Outcome, _me
from .workstate import board_of, place_of

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon


def audience(d: Daemon, poster: p.Peer) -> list[p.Peer]:
    """Who hears of a decision: the other live peers of the poster's repository (its
    directory when it is not in one) that read its board: the poster's group and the
    operator (``list_peers`` already keeps only the peers the poster may see; the operator
    sees every group but posts on the no-group board)."""
    board = board_of(poster)
    return [
        x for x in d.store.list_peers(poster, "repo") if board_of(x) == board or groups.operator(x)
    ]


def _board(viewer: p.Peer | None) -> str | None:
    """The board group ``viewer`` reads (None: every board, for the operator and an
    unbound connection)."""
    return None if viewer is None or groups.operator(viewer) else board_of(viewer)


def _announce(
    d: Daemon, poster: p.Peer, text: str, now: float
) -> tuple[list[Effect], list[str], list[str]]:
    effects: list[Effect] = []
    limit = d.settings.queue_limit
    peers = audience(d, poster)
    targets = [x for x in peers if x.pending < limit]
    skipped = [f"{x.name}: queue full ({limit} unread)" for x in peers if x.pending >= limit]
    if targets:
        d.rate_limits.take(poster.id, len(targets))
    for peer in targets:
        msg = d.store.send(poster, peer, text, None, now, d.settings.message_ttl)
        effects += d.mail_effects(msg)
    return effects, [x.name for x in targets], skipped


def _text(decision: p.Decision, poster: str, before: p.Decision | None) -> str:
    head = f"[claude-peers decision {decision.key}] "
    if decision.state == "revoked":
        return (
            head + f"{poster} revoked the decision {decision.key} (was: {decision.value})."
            f"\nReason:\n{decision.rationale}\nIt no longer applies; query_decisions shows "
            "what stands."
        )
    change = (
        f" (it replaces version {before.version}: {before.value})"
        if before is not None and before.state == "active"
        else ""
    )
    category = f" [{decision.category}]" if decision.category else ""
    return (
        head + f"{poster} decided{category}: {decision.key} = {decision.value}{change}"
        f"\nWhy:\n{decision.rationale}\nWork by it; if you disagree, answer {poster} with "
        f'send_message. query_decisions(key="{decision.key}") shows it and its history.'
    )


def post_decision(d: Daemon, conn: Connection, r: p.PostDecision) -> Op:
    me = _me(conn)
    if not r.value.strip() or not r.rationale.strip():
        raise PeersError(Code.BAD_REQUEST, "value and rationale must not be blank")

    def op() -> Outcome:
        now = time.time()
        poster = d.store.require_peer(me)
        board = d.store.decisions
        place = place_of(poster)
        before = board.current(poster.machine_id, place, board_of(poster), r.key)
        category = r.category
        if category is None and before is not None:
            category = before.category
        decision = board.add(
            poster.machine_id,
            place,
            r.key,
            r.value,
            r.rationale,
            category,
            "active",
            poster,
            now,
        )
        effects, notified, skipped = _announce(d, poster, _text(decision, poster.name, before), now)
        return Outcome(
            p.DecisionResult(id=r.id, decision=decision, notified=notified, skipped=skipped),
            effects,
        )

    return op


def revoke_decision(d: Daemon, conn: Connection, r: p.RevokeDecision) -> Op:
    me = _me(conn)
    if not r.reason.strip():
        raise PeersError(Code.BAD_REQUEST, "reason must not be blank")

    def op() -> Outcome:
        now = time.time()
        poster = d.store.require_peer(me)
        board = d.store.decisions
        place = place_of(poster)
        group = board_of(poster)
        before = board.current(poster.machine_id, place, group, r.key)
        if before is None:
            keys = [
                x.key
                for x in board.query(
                    poster.machine_id, place, None, None, None, True, False, 1000, group
                )
            ]
            close = difflib.get_close_matches(r.key, keys, n=3, cutoff=0.5)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            mine = f" for group {poster.group!r}" if poster.group else ""
            raise PeersError(
                Code.UNKNOWN_DECISION,
                f"no decision {r.key!r} in {place}{mine}{hint}",
                candidates=close,
            )
        if before.state == "revoked":
            raise PeersError(
                Code.UNKNOWN_DECISION,
                f"decision {r.key!r} was already revoked by {before.by_name}",
            )
        decision = board.add(
            poster.machine_id,
            place,
            r.key,
            before.value,
            r.reason,
            before.category,
            "revoked",
            poster,
            now,
        )
        effects, notified, skipped = _announce(d, poster, _text(decision, poster.name, before), now)
        return Outcome(
            p.DecisionResult(id=r.id, decision=decision, notified=notified, skipped=skipped),
            effects,
        )

    return op


def query_decisions(d: Daemon, conn: Connection, r: p.QueryDecisions) -> Op:
    if not r.everywhere:
        _me(conn)

    def op() -> Outcome:
        machine = place = None
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        if not r.everywhere:
            caller = d.store.require_peer(_me(conn))
            machine, place = caller.machine_id, place_of(caller)
        found = d.store.decisions.query(
            machine, place, r.key, r.category, r.text, r.revoked, r.history, r.limit, _board(caller)
        )
        return Outcome(p.DecisionList(id=r.id, decisions=found))

    return op


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.PostDecision: post_decision,
    p.RevokeDecision: revoke_decision,
    p.QueryDecisions: query_decisions,
}
SINGLE_STATEMENT: frozenset[type[p.Request[Any]]] = frozenset({p.QueryDecisions})
"""Of these, the ones that write at most one SQL statement (it only reads)."""
