"""Proposals put to a vote: ``propose``, ``vote``, ``list_proposals``, and the deadline.

A proposal has 2-10 options and a fixed set of voters, chosen when it is made (names or a
scope, only peers the proposer may see: ``peersd.groups``). ``threshold`` says how many votes
one option needs (``required_votes``): a count, a fraction of the voters, ``majority`` or
``all``. Votes are final, so the proposal resolves at the first of:

- one option reaches ``required`` votes: ``decided``, that option is the ``outcome``;
- no option can reach it any more (its votes plus the voters yet to vote fall short):
  ``failed``;
- the deadline passes (the housekeeping sweep calls ``expire_due``): ``expired``.

Each voter is mailed the proposal, and the proposer and every voter the result, as real
mail from the proposer (stored in the same batch, delivered and acknowledged like any
other). Handlers follow ``handlers``: check what can be checked, return the operation.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from . import groups
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Effect, Handler, Op, Outcome, _me

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

COLUMNS = (
    "id, title, proposer, proposer_name, options, threshold, required, created, state, "
    "deadline, outcome, resolved_at, group_name, operator"
)


def required_votes(threshold: str, voters: int) -> int:
    """Votes one option needs, of ``voters``: a count (at most ``voters``), ``p/q`` or
    ``P%`` of the voters rounded up (at least 1), ``majority`` (more than half) or ``all``."""
    if threshold == "all":
        return voters
    if threshold == "majority":
        return voters // 2 + 1
    if threshold.endswith("%") or "/" in threshold:
        num, den = (int(threshold[:-1]), 100) if threshold.endswith("%") else _fraction(threshold)
        return max(1, -(-voters * num // den))  # exact ceiling, no float rounding
    count = int(threshold)
    if count > voters:
        raise PeersError(
            Code.BAD_REQUEST,
            f"threshold {count} is more than the {voters} voter(s): it could never be reached",
        )
    return count


def _fraction(text: str) -> tuple[int, int]:
    num, den = (int(x) for x in text.split("/"))
    if num > den:
        raise PeersError(Code.BAD_REQUEST, f"threshold {text} is more than all the voters")
    return num, den


# --------------------------------------------------------------------------- store


def load(d: Daemon, proposal_id: int) -> p.Proposal | None:
    row = d.store._one(f"SELECT {COLUMNS} FROM proposals WHERE id = ?", (proposal_id,))
    return None if row is None else _proposal(d, row)


def _proposal(d: Daemon, row: tuple[Any, ...]) -> p.Proposal:
    options: list[str] = json.loads(row[4])
    ballots = [
        p.Ballot(voter=voter, voter_name=name, vote=vote, reason=reason, at=at)
        for voter, name, vote, reason, at in d.store.conn.execute(
            "SELECT voter, voter_name, vote, reason, at FROM votes WHERE proposal = ? "
            "ORDER BY voter_name, voter",
            (row[0],),
        )
    ]
    tally = dict.fromkeys(options, 0)
    for b in ballots:
        if b.vote is not None:
            tally[b.vote] = tally.get(b.vote, 0) + 1
    return p.Proposal(
        id=row[0],
        title=row[1],
        proposer=row[2],
        proposer_name=row[3],
        options=options,
        threshold=row[5],
        required=row[6],
        created=row[7],
        state=row[8],
        deadline=row[9],
        outcome=row[10],
        resolved_at=row[11],
        group=row[12],
        operator=bool(row[13]),
        ballots=ballots,
        tally=tally,
    )


def in_period(
    d: Daemon, viewer: p.Peer | None, since: float, until: float, limit: int
) -> list[p.Proposal]:
    """Up to ``limit`` proposals ``viewer`` may see made, or resolved, between ``since``
    and ``until`` (the report), oldest first, ballots masked for ``viewer``."""
    seen, args = _sql_seen(viewer)
    rows = d.store.conn.execute(
        f"SELECT {COLUMNS} FROM proposals WHERE ((created >= ? AND created <= ?) "
        f"OR (resolved_at >= ? AND resolved_at <= ?)) AND {seen} ORDER BY id LIMIT ?",
        (since, until, since, until, *args, limit),
    ).fetchall()
    return [shown(d, viewer, _proposal(d, row)) for row in rows]


def _sql_seen(viewer: p.Peer | None) -> tuple[str, list[Any]]:
    """``_visible`` as a SQL condition on ``proposals``."""
    if viewer is None or groups.operator(viewer):
        return "1", []
    return (
        "(proposer = ? OR id IN (SELECT proposal FROM votes WHERE voter = ?) "
        "OR (operator = 0 AND coalesce(group_name, '') = ?))",
        [viewer.id, viewer.id, viewer.group or ""],
    )


def shown(d: Daemon, viewer: p.Peer | None, x: p.Proposal) -> p.Proposal:
    """``x`` as ``viewer`` may see it: a voter in a group it may not see (an operator's
    proposal spans groups) keeps the ballot, but not its name or id."""
    if viewer is None or groups.operator(viewer):
        return x
    masked = False
    ballots = []
    for b in x.ballots:
        voter = d.store._peers.get(b.voter)
        if voter is None or not groups.visible(viewer, voter):
            b = msgspec.structs.replace(b, voter="", voter_name=groups.HIDDEN_NAME)
            masked = True
        ballots.append(b)
    return msgspec.structs.replace(x, ballots=ballots) if masked else x


# --------------------------------------------------------------------------- mail


def _mail(
    d: Daemon, x: p.Proposal, to: list[str], text: Callable[[p.Peer], str], now: float
) -> list[Effect]:
    """Mail ``text(recipient)`` from the proposer to each of ``to`` (skipping full queues:
    the proposal stays readable with list_proposals)."""
    sender = d.store.peer(x.proposer)
    if sender is None:  # pragma: no cover - a proposer is purged only long after it went
        return []
    effects: list[Effect] = []
    for peer_id in dict.fromkeys(to):
        recipient = d.store.peer(peer_id)
        if recipient is None or recipient.pending >= d.settings.queue_limit:
            continue
        msg = d.store.send(sender, recipient, text(recipient), None, now, d.settings.message_ttl)
        effects += d.mail_effects(msg)
    return effects


def _ask_text(x: p.Proposal) -> str:
    closes = f"; it closes at {_stamp(x.deadline)}" if x.deadline else ""
    return (
        f"[claude-peers proposal #{x.id}] {x.proposer_name} asks you to vote: {x.title}\n"
        f"Options: {', '.join(x.options)}. One option needs {x.required} of the "
        f"{len(x.ballots)} votes (threshold {x.threshold}){closes}.\n"
        f'Answer with the vote tool: proposal_id={x.id}, vote="<one of the options>", and a '
        "short reason if you like. A vote is final."
    )


def _result_text(x: p.Proposal) -> str:
    if x.state == "decided":
        what = f"is decided: {x.outcome} ({x.tally.get(x.outcome or '', 0)} of {x.required} "
        what += "votes needed)"
    elif x.state == "failed":
        what = f"failed: no option can reach {x.required} votes any more"
    else:
        what = f"expired: the deadline passed before an option reached {x.required} votes"
    votes = "; ".join(
        f"{b.voter_name}: {b.vote}" + (f" ({b.reason})" if b.reason else "")
        for b in x.ballots
        if b.vote is not None
    )
    missing = [b.voter_name for b in x.ballots if b.vote is None]
    return f"[claude-peers proposal #{x.id}] {x.title}\n— {what}. Votes: {votes or 'none'}." + (
        f" Did not vote: {', '.join(missing)}." if missing else ""
    )


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _resolve(d: Daemon, x: p.Proposal, state: str, outcome: str | None, now: float) -> list[Effect]:
    d.store.conn.execute(
        "UPDATE proposals SET state = ?, outcome = ?, resolved_at = ? WHERE id = ?",
        (state, outcome, now, x.id),
    )
    done = load(d, x.id)
    assert done is not None
    to = [done.proposer, *(b.voter for b in done.ballots)]
    return _mail(d, done, to, lambda peer: _result_text(shown(d, peer, done)), now)


def settle(d: Daemon, x: p.Proposal, now: float) -> list[Effect]:
    """Resolve ``x`` if an option has reached its threshold or none can any more."""
    if x.state != "open":
        return []
    for option in x.options:
        if x.tally.get(option, 0) >= x.required:
            return _resolve(d, x, "decided", option, now)
    left = sum(1 for b in x.ballots if b.vote is None)
    if all(x.tally.get(option, 0) + left < x.required for option in x.options):
        return _resolve(d, x, "failed", None, now)
    return []


def expire_due(d: Daemon, now: float) -> list[Effect]:
    """Expire open proposals whose deadline has passed (the housekeeping sweep)."""
    effects: list[Effect] = []
    due: list[int] = [
        row[0]
        for row in d.store.conn.execute(
            "SELECT id FROM proposals WHERE state = 'open' AND deadline <= ?", (now,)
        )
    ]
    for proposal_id in due:
        x = load(d, proposal_id)
        if x is not None:
            effects += _resolve(d, x, "expired", None, now)
    return effects


# --------------------------------------------------------------------------- handlers


def propose(d: Daemon, conn: Connection, r: p.Propose) -> Op:
    me = _me(conn)
    if bool(r.voters) == (r.scope is not None):
        raise PeersError(
            Code.BAD_REQUEST, "give the voters (names or ids) or a scope: one of the two"
        )
    folded = [o.casefold() for o in r.options]
    if len(set(folded)) != len(folded):
        dup = next(o for i, o in enumerate(r.options) if folded.index(o.casefold()) != i)
        raise PeersError(Code.BAD_REQUEST, f"option {dup!r} is given twice")

    def op() -> Outcome:
        now = time.time()
        caller = d.store.require_peer(me)
        if r.scope is not None:
            voters = list(d.store.list_peers(caller, r.scope))
            if not voters:
                raise PeersError(
                    Code.BAD_REQUEST, f"nobody else is in scope {r.scope!r} to vote on it"
                )
        else:
            found = [groups.resolve(d.store, caller, ref, d.machine_id) for ref in r.voters]
            if any(x.id == me for x in found):
                raise PeersError(
                    Code.BAD_REQUEST, "you cannot vote on your own proposal; leave yourself out"
                )
            voters = list({x.id: x for x in found}.values())
            gone = [x for x in voters if x.state != "active"]
            if gone:
                raise PeersError(
                    Code.BAD_REQUEST,
                    f"{gone[0].name} is gone ({gone[0].gone_reason or 'ended'}) and can never "
                    "vote; propose to active peers only (list_peers shows them)",
                )
        required = required_votes(r.threshold, len(voters))
        deadline = now + r.deadline_seconds if r.deadline_seconds is not None else None
        d.rate_limits.take(me, len(voters))
        d.store.conn.execute(
            "INSERT INTO proposals(proposer, proposer_name, title, options, threshold, required, "
            "created, deadline, state, group_name, operator) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
            (
                me,
                caller.name,
                r.title,
                json.dumps(r.options),
                r.threshold,
                required,
                now,
                deadline,
                caller.group,
                groups.operator(caller),
            ),
        )
        proposal_id = d.store.conn.last_insert_rowid()
        d.store.conn.executemany(
            "INSERT INTO votes(proposal, voter, voter_name) VALUES (?, ?, ?)",
            [(proposal_id, x.id, x.name) for x in voters],
        )
        x = load(d, proposal_id)
        assert x is not None
        ask = _ask_text(x)
        effects = _mail(d, x, [b.voter for b in x.ballots], lambda _peer: ask, now)
        return Outcome(p.ProposalResult(id=r.id, proposal=shown(d, caller, x)), effects)

    return op


def _visible(caller: p.Peer | None, x: p.Proposal) -> bool:
    """A proposal is seen by its proposer and voters, and by peers of its group; an
    operator's (``operator``: its voters may span groups) only by them and by whoever
    sees everyone."""
    if caller is None or groups.operator(caller) or caller.id == x.proposer:
        return True
    if any(b.voter == caller.id for b in x.ballots):
        return True
    return not x.operator and x.group == caller.group


def vote(d: Daemon, conn: Connection, r: p.Vote) -> Op:
    me = _me(conn)

    def op() -> Outcome:
        now = time.time()
        caller = d.store.require_peer(me)
        x = load(d, r.proposal_id)
        if x is None or not _visible(caller, x):
            raise PeersError(
                Code.UNKNOWN_PROPOSAL,
                f"no proposal #{r.proposal_id} (list_proposals shows those you can see)",
            )
        ballot = next((b for b in x.ballots if b.voter == me), None)
        if ballot is None:
            names = ", ".join(b.voter_name for b in shown(d, caller, x).ballots)
            raise PeersError(
                Code.NOT_A_VOTER,
                f"you are not a voter on proposal #{x.id}; its voters are {names}",
            )
        if x.state == "open" and x.deadline is not None and x.deadline <= now:
            # The sweep has not expired it yet: expire it now (saved), and refuse the vote.
            late = PeersError(
                Code.PROPOSAL_CLOSED,
                f"proposal #{x.id} expired at {_stamp(x.deadline)}, before your vote; "
                "votes are no longer taken",
            )
            return Outcome(p.Error.of(late, r.id), _resolve(d, x, "expired", None, now))
        if x.state != "open":
            raise PeersError(
                Code.PROPOSAL_CLOSED,
                f"proposal #{x.id} is already {x.state}"
                + (f" ({x.outcome})" if x.outcome else "")
                + "; votes are no longer taken",
            )
        if ballot.vote is not None:
            raise PeersError(
                Code.ALREADY_VOTED,
                f"you already voted {ballot.vote!r} on proposal #{x.id}; a vote is final",
            )
        option = next((o for o in x.options if o == r.vote), None)
        if option is None:
            option = next((o for o in x.options if o.casefold() == r.vote.casefold()), None)
        if option is None:
            close = difflib.get_close_matches(r.vote, x.options, n=3, cutoff=0.5)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise PeersError(
                Code.BAD_REQUEST,
                f"{r.vote!r} is not an option of proposal #{x.id}; the options are "
                f"{', '.join(x.options)}{hint}",
                candidates=x.options,
            )
        d.store.conn.execute(
            "UPDATE votes SET vote = ?, reason = ?, at = ? WHERE proposal = ? AND voter = ?",
            (option, r.reason, now, x.id, me),
        )
        x = load(d, x.id)
        assert x is not None
        effects = settle(d, x, now)
        if effects or x.state != "open":
            x = load(d, x.id) or x
        return Outcome(p.ProposalResult(id=r.id, proposal=shown(d, caller, x)), effects)

    return op


def list_proposals(d: Daemon, conn: Connection, r: p.ListProposals) -> Op:
    def op() -> Outcome:
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        where: list[str] = []
        args: list[Any] = []
        if r.state is not None:
            where.append("state = ?")
            args.append(r.state)
        mine = "(proposer = ? OR id IN (SELECT proposal FROM votes WHERE voter = ?))"
        if r.mine:
            if caller is None:
                raise PeersError(Code.NOT_REGISTERED, "mine needs a registered peer")
            where.append(mine)
            args += [caller.id, caller.id]
        else:
            seen, seen_args = _sql_seen(caller)
            where.append(seen)
            args += seen_args
        sql = f"SELECT {COLUMNS} FROM proposals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(r.limit)
        rows = d.store.conn.execute(sql, args).fetchall()
        found = [shown(d, caller, _proposal(d, row)) for row in rows]
        return Outcome(p.ProposalList(id=r.id, proposals=found))

    return op


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.Propose: propose,
    p.Vote: vote,
    p.ListProposals: list_proposals,
}
