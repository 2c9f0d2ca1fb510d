"""Requests about messages beyond sending them: typed answers, threads, reactions, search.

``send`` (in ``handlers``) asks ``extra`` for what a message carries beside its text:
its thread and subject (from the message it replies to, if the sender sent or received
that one), its kind's fields (an answer kind must reply to a request of the matching kind
that its asker sent to the one answering), and the sender's snapshot. ``react`` and
``search`` are requests of their own, and ``statuses`` adds each request's answer and
reactions to ``message_status``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from . import groups, kinds
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Handler, Op, Outcome, _caller, _local_only, _me
from .mailstore import SEARCH_TEXT
from .store import Extra

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

log = logging.getLogger("peersd")

MAX_REACTIONS = 8
"""Different glyphs one peer may put on one message."""
INDEX_INTERVAL = 1.0
"""Seconds between background indexing rounds (``index_loop``)."""
INDEX_CHUNK = 2000
"""Messages indexed per batch: a few milliseconds of the loop (docs/benchmarks.md)."""
SEARCH_CHUNK = INDEX_CHUNK
"""Messages a search indexes first at most; the newer ones it does not see (it says how
many) until the background has indexed them."""


def check_typed(d: Daemon, typed: kinds.Kind | None) -> None:
    """A typed request's fields count against the same size limit as a text."""
    if typed is None:
        return
    size = len(kinds.encode(typed).encode())
    if size > d.settings.max_text:
        raise PeersError(
            Code.TOO_LARGE,
            f"the fields of this {kinds.kind_of(typed)} are {size} bytes; the limit is "
            f"{d.settings.max_text} bytes",
        )


def extra(
    d: Daemon,
    sender: p.Peer,
    recipient: p.Peer,
    reply_to: str | None,
    typed: kinds.Kind | None,
    subject: str | None,
    context: kinds.Context | None,
) -> Extra:
    """What a message from ``sender`` to ``recipient`` carries beside its text."""
    parent = d.store.mail.parent(reply_to)
    # A reply belongs to its parent's conversation only if its sender was in it: one that
    # names a message it neither sent nor received starts its own thread, inheriting
    # neither thread nor subject (which another group's subject would leak).
    party = parent is not None and sender.id in (parent.sender, parent.recipient)
    kind = kinds.kind_of(typed)
    if kind in kinds.ANSWERS:
        wanted = kinds.ANSWERS[kind]
        if parent is None:
            raise PeersError(
                Code.BAD_REQUEST,
                f"an {kind} answers an {wanted}: pass reply_to with the id of the "
                f"{wanted} you answer" + (f" ({reply_to} names no message)" if reply_to else ""),
            )
        if parent.recipient != sender.id:
            raise PeersError(
                Code.BAD_REQUEST,
                f"{reply_to} was not sent to you: only the peer an {wanted} was sent to "
                f"answers it with an {kind}",
            )
        if parent.kind != wanted:
            raise PeersError(
                Code.BAD_REQUEST,
                f"an {kind} answers an {wanted}, but {reply_to} is "
                + (f"a {parent.kind}" if parent.kind else "a plain message"),
            )
        if parent.sender != recipient.id:
            raise PeersError(
                Code.BAD_REQUEST,
                f"{reply_to} was sent by another peer than {recipient.name}: send the {kind} "
                "to whoever asked",
            )
    thread = None
    inherited = None
    if parent is not None and party:
        thread = parent.thread if parent.thread is not None else parent.seq
        inherited = parent.subject or None
    snap = kinds.snapshot(context, sender.branch, sender.summary)
    return Extra(typed=typed, snapshot=snap, thread=thread, subject=subject or inherited)


def statuses(d: Daemon, items: list[p.MessageStatusItem]) -> list[p.MessageStatusItem]:
    """``message_status`` items with each message's kind, answer and reactions."""
    found = [
        (seq, item) for item in items if item.found and (seq := d.store.parse_id(item.message_id))
    ]
    if not found:
        return items
    seqs = list(dict.fromkeys(seq for seq, _ in found))
    heads = d.store.mail.heads(seqs)
    answers = d.store.mail.answers(heads)
    reactions = d.store.mail.reactions(seqs)
    for seq, item in found:
        head = heads.get(seq)
        item.kind = head.kind if head is not None else None  # type: ignore[assignment]
        item.answer = answers.get(seq)
        item.reactions = reactions.get(seq, [])
    return items


def react(d: Daemon, conn: Connection, r: p.React) -> Op:
    me = _me(conn)
    emoji = kinds.check_glyph(r.emoji)

    def op() -> Outcome:
        peer = d.store.require_peer(me)
        d.store.mail.react(me, peer.name, r.message_id, emoji, time.time(), MAX_REACTIONS)
        return Outcome(p.Ok(id=r.id))

    return op


def search(d: Daemon, conn: Connection, r: p.Search) -> Op:
    me = _me(conn) if r.mine else None
    if not r.mine:
        _local_only(conn, "searching every peer's mail")
    if not d.settings.search_index:
        raise PeersError(
            Code.DISABLED, "message search is off on this daemon (search_index = false)"
        )

    def op() -> Outcome:
        viewer = _caller(d, conn)
        peer = groups.resolve(d.store, viewer, r.peer, d.machine_id).id if r.peer else None
        # What the background has not indexed yet, a bounded chunk of it: a backlog (search
        # turned back on) is the background's, a chunk at a time, not one long batch here.
        unindexed = 0
        if d.store.mail.catch_up(SEARCH_CHUNK) == SEARCH_CHUNK:
            unindexed = d.store.mail.backlog()
        found = d.store.mail.search(
            r.query, me, peer, r.since, r.limit, viewer=None if r.mine else viewer
        )
        msgs = {
            d.store.parse_id(m.id): m
            for m in d.store.mail.with_reactions(d.store.messages_by_seqs([s for s, _, _ in found]))
        }
        hits: list[p.SearchHit] = []
        spent = 0
        for seq, snippet, rank in found:
            msg = msgs.get(seq)
            if msg is None:  # pragma: no cover - the same transaction found it
                continue
            if len(msg.text) > SEARCH_TEXT:
                msg = msgspec.structs.replace(msg, text=msg.text[:SEARCH_TEXT])
            hit = p.SearchHit(message=msg, snippet=snippet, rank=rank)
            spent += len(msgspec.msgpack.encode(hit))
            if hits and spent > d.frame_budget:
                break
            hits.append(hit)
        return Outcome(p.SearchResults(id=r.id, hits=hits, unindexed=unindexed))

    return op


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.React: react,
    p.Search: search,
}
SINGLE_STATEMENT: frozenset[type[p.Request[Any]]] = frozenset({p.React})
"""React writes one INSERT (after reads). Search indexes first: two statements."""


async def index_loop(d: Daemon) -> None:
    """Index new mail in the background, a chunk per batch, while there is any."""
    while True:
        await asyncio.sleep(INDEX_INTERVAL)
        if not d.settings.search_index:
            continue
        try:
            while await d.commit.run(lambda: d.store.mail.catch_up(INDEX_CHUNK)) == INDEX_CHUNK:
                await asyncio.sleep(0)  # a full chunk: more may wait, after other requests
        except PeersError as e:
            log.error("indexing mail for search failed: %s", e)
