"""Stored mail beyond the queue: threads, typed answers, reactions and full-text search.

The columns a message gains (its kind and fields, its sender's snapshot, its thread and
subject) are written by ``Store.send`` in the same INSERT; this module holds the
queries around them. Search is SQLite FTS5 over ``text`` and ``subject`` as an
external-content table. A send does not index its message: FTS5 writes a new segment per
transaction, which made a one-message commit three times slower (docs/benchmarks.md).
Instead ``catch_up`` indexes the messages after the ``fts_seq`` watermark in one
statement, kept in ``meta`` in the same transaction: the daemon runs it in the background
in chunks (``mailops.index_loop``) and every search runs one chunk first, so a search sees
every committed message unless a backlog is larger than a chunk (search just turned back
on), and then says how many it did not see. The migration indexes what was there before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import apsw

from . import groups
from .errors import Code, PeersError
from .kinds import ANSWERED_BY, decode
from .protocol import Answer, Message, Peer, Reaction

if TYPE_CHECKING:
    from .store import Store

MIGRATION = """
ALTER TABLE messages ADD COLUMN kind TEXT;
ALTER TABLE messages ADD COLUMN fields TEXT;
ALTER TABLE messages ADD COLUMN snapshot TEXT;
ALTER TABLE messages ADD COLUMN thread INTEGER;
ALTER TABLE messages ADD COLUMN subject TEXT;
CREATE INDEX messages_thread ON messages(thread) WHERE thread IS NOT NULL;
CREATE INDEX messages_reply ON messages(reply_to) WHERE reply_to IS NOT NULL;

-- Stored reply_to ids of this database are written as the daemon writes them (no leading
-- zeros in the number: m-<tag>-07 is m-<tag>-7), so a reply is found by its parent's id.
-- An id is m-, the tag (6 hex digits), - (9 characters) and the number.
UPDATE messages SET reply_to = 'm-' || (SELECT value FROM meta WHERE key = 'tag') || '-'
    || CAST(CAST(substr(reply_to, 10) AS INTEGER) AS TEXT)
WHERE reply_to IS NOT NULL
    AND substr(reply_to, 1, 9) = 'm-' || (SELECT value FROM meta WHERE key = 'tag') || '-'
    AND substr(reply_to, 10) != CAST(CAST(substr(reply_to, 10) AS INTEGER) AS TEXT);

-- A reply's thread is the root of its reply_to chain (NULL: the message is a root), as
-- ``mailops.extra`` stores it: a reply whose sender neither sent nor received its parent
-- is a root. Existing replies get theirs. Parents always come before their replies, so
-- the links form trees: walk them down from the roots, each step an indexed lookup
-- (linear in the mail; a correlated scan per message took minutes for 16k messages).
CREATE TEMP TABLE reply_parent(seq INTEGER PRIMARY KEY, up INTEGER NOT NULL);
INSERT INTO reply_parent(seq, up)
SELECT r.seq, r.up FROM (
    SELECT seq, sender, CAST(substr(reply_to, 10) AS INTEGER) AS up FROM messages
    WHERE reply_to IS NOT NULL
        AND substr(reply_to, 1, 9) = 'm-' || (SELECT value FROM meta WHERE key = 'tag') || '-'
) r
WHERE r.up < r.seq AND EXISTS (
    SELECT 1 FROM messages q WHERE q.seq = r.up AND r.sender IN (q.sender, q.recipient)
);
CREATE INDEX temp.reply_parent_up ON reply_parent(up);
CREATE TEMP TABLE thread_roots(seq INTEGER PRIMARY KEY, root INTEGER NOT NULL);
WITH RECURSIVE chain(seq, root) AS (
    SELECT seq, up FROM reply_parent WHERE up NOT IN (SELECT seq FROM reply_parent)
    UNION ALL
    SELECT r.seq, chain.root FROM reply_parent r JOIN chain ON r.up = chain.seq
)
INSERT INTO thread_roots(seq, root) SELECT seq, root FROM chain;
UPDATE messages SET thread = (SELECT root FROM thread_roots t WHERE t.seq = messages.seq)
WHERE seq IN (SELECT seq FROM thread_roots);
DROP TABLE thread_roots;
DROP TABLE reply_parent;
-- The daily report counts the mail of a period.
CREATE INDEX messages_created ON messages(created);

CREATE TABLE reactions(
    message INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    peer_name TEXT NOT NULL,
    emoji TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (message, peer, emoji)
) WITHOUT ROWID;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, subject, content = 'messages', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Rows up to fts_seq are indexed; newer ones are indexed in batches (``catch_up``).
-- A deleted row leaves the index only if it was in it.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.seq <= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fts_seq') BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, subject)
        VALUES ('delete', old.seq, old.text, old.subject);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, subject ON messages
WHEN old.seq <= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fts_seq') BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, subject)
        VALUES ('delete', old.seq, old.text, old.subject);
    INSERT INTO messages_fts(rowid, text, subject) VALUES (new.seq, new.text, new.subject);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
INSERT INTO meta(key, value) VALUES ('fts_seq', (SELECT coalesce(max(seq), 0) FROM messages));
"""

PREVIEW = 200
"""Characters of an answer's text ``message_status`` shows."""
SEARCH_TEXT = 2000
"""Characters of a found message's text a search answer carries (the snippet shows the
match; ``message_history`` or ``check_messages`` the rest)."""


class Parent(NamedTuple):
    """The message a reply names."""

    seq: int
    thread: int | None
    kind: str | None
    sender: str
    recipient: str
    subject: str


class Head(NamedTuple):
    kind: str | None
    sender: str
    recipient: str


class MailStore:
    """Threads, answers, reactions and search over ``Store``'s connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    # ------------------------------------------------------------ threads and answers

    def parent(self, reply_to: str | None) -> Parent | None:
        """The message ``reply_to`` names, if it is in this database."""
        seq = self.store.parse_id(reply_to) if reply_to else None
        if seq is None:
            return None
        row = self.conn.execute(
            "SELECT seq, thread, kind, sender, recipient, coalesce(subject, '') FROM messages "
            "WHERE seq = ?",
            (seq,),
        ).fetchone()
        return None if row is None else Parent(*row)

    def heads(self, seqs: list[int]) -> dict[int, Head]:
        """seq -> (kind, sender, recipient) of the messages that exist."""
        if not seqs:
            return {}
        marks = ",".join("?" * len(seqs))
        return {
            seq: Head(kind, sender, recipient)
            for seq, kind, sender, recipient in self.conn.execute(
                f"SELECT seq, kind, sender, recipient FROM messages WHERE seq IN ({marks})", seqs
            )
        }

    def answers(self, heads: dict[int, Head]) -> dict[int, Answer]:
        """The answer to each message: the latest reply its recipient sent back to its
        sender (a reply from anyone else is no answer); for a request kind with an answer
        kind, the latest reply of that kind."""
        found: dict[int, Answer] = {}
        for seq, head in heads.items():
            sql = (
                "SELECT seq, sender_name, created, kind, fields, substr(text, 1, ?) "
                "FROM messages WHERE reply_to = ? AND sender = ? AND recipient = ?"
            )
            args: list[object] = [PREVIEW, self.store.message_id(seq), head.recipient, head.sender]
            if head.kind in ANSWERED_BY:
                sql += " AND kind = ?"
                args.append(ANSWERED_BY[head.kind])
            row = self.conn.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
            if row is None:
                continue
            verdict = None
            if row[4] is not None:
                verdict = getattr(decode(row[4]), "verdict", None)
            found[seq] = Answer(
                message_id=self.store.message_id(row[0]),
                sender_name=row[1],
                created=row[2],
                kind=row[3],
                verdict=verdict,
                preview=row[5],
            )
        return found

    # ------------------------------------------------------------ reactions

    def react(
        self, peer_id: str, peer_name: str, msg_id: str, emoji: str, now: float, most: int
    ) -> bool:
        """Record a reaction of the recipient of ``msg_id`` (at most ``most`` different ones
        per peer); False if it was already there."""
        seq = self.store.parse_id(msg_id)
        row = None
        if seq is not None:
            row = self.conn.execute(
                "SELECT recipient FROM messages WHERE seq = ?", (seq,)
            ).fetchone()
        if row is None:
            raise PeersError(Code.UNKNOWN_MESSAGE, f"no message {msg_id}")
        if row[0] != peer_id:
            raise PeersError(
                Code.FORBIDDEN,
                f"{msg_id} was not sent to you: only its recipient can react to a message",
            )
        others = self.conn.execute(
            "SELECT count(*) FROM reactions WHERE message = ? AND peer = ? AND emoji != ?",
            (seq, peer_id, emoji),
        ).fetchone()
        if others is not None and others[0] >= most:
            raise PeersError(
                Code.BAD_REQUEST, f"you already put {most} different reactions on {msg_id}"
            )
        self.conn.execute(
            "INSERT OR IGNORE INTO reactions(message, peer, peer_name, emoji, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (seq, peer_id, peer_name, emoji, now),
        )
        return self.conn.changes() > 0

    def reactions(self, seqs: list[int]) -> dict[int, list[Reaction]]:
        if not seqs:
            return {}
        marks = ",".join("?" * len(seqs))
        found: dict[int, list[Reaction]] = {}
        for seq, peer, name, emoji, at in self.conn.execute(
            f"SELECT message, peer, peer_name, emoji, at FROM reactions WHERE message IN ({marks}) "
            "ORDER BY at",
            seqs,
        ):
            found.setdefault(seq, []).append(Reaction(peer=peer, name=name, emoji=emoji, at=at))
        return found

    def with_reactions(self, msgs: list[Message]) -> list[Message]:
        """``msgs`` with their reactions filled in (in place)."""
        by_seq = {self.store.parse_id(m.id): m for m in msgs}
        for seq, found in self.reactions([s for s in by_seq if s is not None]).items():
            by_seq[seq].reactions = found
        return msgs

    # ------------------------------------------------------------ search

    def backlog(self) -> int:
        """Messages not indexed yet (rows after the watermark; ids are never reused)."""
        row = self.conn.execute(
            "SELECT coalesce(max(seq), 0) - (SELECT CAST(value AS INTEGER) FROM meta "
            "WHERE key = 'fts_seq') FROM messages"
        ).fetchone()
        return max(0, int(row[0] or 0)) if row else 0

    def catch_up(self, limit: int = -1) -> int:
        """Index up to ``limit`` messages after the watermark (-1: all); how many."""
        rows = self.conn.execute(
            "SELECT max(seq), count(*) FROM (SELECT seq FROM messages WHERE seq > "
            "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fts_seq') "
            "ORDER BY seq LIMIT ?)",
            (limit,),
        ).fetchone()
        if rows is None or not rows[1]:
            return 0
        top, count = int(rows[0]), int(rows[1])
        self.conn.execute(
            "INSERT INTO messages_fts(rowid, text, subject) SELECT seq, text, subject "
            "FROM messages WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta "
            "WHERE key = 'fts_seq') AND seq <= ?",
            (top,),
        )
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'fts_seq'", (str(top),))
        return count

    def search(
        self,
        query: str,
        me: str | None,
        peer: str | None,
        since: float | None,
        limit: int,
        viewer: Peer | None = None,
    ) -> list[tuple[int, str, float]]:
        """(seq, snippet, rank) of the best matches, best first; ``me`` limits the search
        to mail it sent or received, ``viewer`` to mail between peers it may both see
        (``groups.sql_visible``, as ``Store.history``)."""
        where = ["messages_fts MATCH ?"]
        args: list[object] = [query]
        if viewer is not None and not groups.operator(viewer):
            for column in ("m.sender", "m.recipient"):
                cond, extra = groups.sql_visible(viewer, column)
                where.append(cond)
                args += extra
        if me is not None:
            where.append("(m.sender = ? OR m.recipient = ?)")
            args += [me, me]
        if peer is not None:
            where.append("(m.sender = ? OR m.recipient = ?)")
            args += [peer, peer]
        if since is not None:
            where.append("m.created >= ?")
            args.append(since)
        sql = (
            "SELECT m.seq, snippet(messages_fts, -1, '[', ']', '…', 16), bm25(messages_fts) "
            "FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid WHERE "
            + " AND ".join(where)
            + " ORDER BY bm25(messages_fts) LIMIT ?"
        )
        args.append(limit)
        try:
            rows: list[Any] = list(self.conn.execute(sql, args))
        except apsw.SQLError as e:
            # Words with punctuation ("min-heap", "peersd.wake") are not FTS5 syntax:
            # a query without quotes is taken word by word, each word as a phrase.
            if '"' in query:
                raise PeersError(Code.BAD_REQUEST, bad_query(query, str(e))) from None
            args[0] = literal(query)
            try:
                rows = list(self.conn.execute(sql, args))
            except apsw.SQLError:
                raise PeersError(Code.BAD_REQUEST, bad_query(query, str(e))) from None
        return [(r[0], r[1], r[2]) for r in rows]


def literal(query: str) -> str:
    """``query`` as plain words: each one a quoted phrase (so ``-``, ``:``, ``*`` are text)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in query.split())


def bad_query(query: str, why: str) -> str:
    why = why.removeprefix("SQLError: ")
    return (
        f"bad search query {query!r} ({why}). The query is SQLite FTS5 syntax: words, "
        '"exact phrases", prefix*, AND / OR / NOT, NEAR(a b); put a word with punctuation '
        'in double quotes, e.g. "foo-bar"'
    )
