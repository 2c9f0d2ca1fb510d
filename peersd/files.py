"""Who is touching what, in the store: file activity, claims, and each peer's status.

Three things live here, beside the peers and messages of ``store``:

- ``activity``: per peer and file, the first and last edit of the current stretch (the
  hooks record every edit). A file is active for a peer until ``activity_ttl`` after
  its last edit; an edit after that starts a new stretch.
- ``claims``: per peer and pattern (a path or glob, ``peersd.globs``), shared or
  exclusive, with a reason and an expiry. They survive daemon restarts.
- the peer's status (working / idle / waiting, from the hooks) and note (``set_status``),
  in columns of ``peers``, cached here because ``list_peers`` shows them for every peer.

A peer's activity and claims end the moment it is gone (``store.mark_gone`` calls
``peer_gone``), so a crashed session never holds files. Expired rows are also deleted
now and then (``prune``); every query filters by time anyway.

Like ``Store``, the methods are synchronous and run inside a group-commit batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

MIGRATION = """
ALTER TABLE peers ADD COLUMN status TEXT;
ALTER TABLE peers ADD COLUMN status_at REAL;
ALTER TABLE peers ADD COLUMN note TEXT NOT NULL DEFAULT '';

CREATE TABLE activity(
    peer TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    repo TEXT,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (peer, path)
) WITHOUT ROWID;
CREATE INDEX activity_path ON activity(path);
CREATE INDEX activity_last ON activity(last_at);

CREATE TABLE claims(
    peer TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    pattern TEXT NOT NULL,
    repo TEXT NOT NULL,
    exclusive INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (peer, pattern)
) WITHOUT ROWID;
CREATE INDEX claims_expiry ON claims(expires_at);
"""
"""Appended to ``schema.MIGRATIONS``; it depends on nothing but the peers table of v1."""

PRUNE_INTERVAL = 60.0
MAX_CLAIMS_PER_PEER = 1000

Status = tuple[str | None, float | None, str]
"""(state, when it was set, note) of one peer."""


class FileStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.status: dict[str, Status] = {}
        self.notified: dict[tuple[str, str, str], float] = {}
        """(file, editor, holder) -> when the holder was last told of an edit (memory only)."""
        self.last_prune = 0.0
        self.load()

    def load(self) -> None:
        self.status = {
            peer_id: (state, at, note)
            for peer_id, state, at, note in self.store.conn.execute(
                "SELECT id, status, status_at, note FROM peers "
                "WHERE status IS NOT NULL OR note != ''"
            )
        }

    @property
    def conn(self):  # type: ignore[no-untyped-def]
        return self.store.conn

    # ---------------------------------------------------------------- peers

    def live(self, peer_id: str, machine_id: str | None):  # type: ignore[no-untyped-def]
        """The cached peer if it is active (and on ``machine_id`` when given), else None.

        The cached object itself: read it, never change it.
        """
        peer = self.store._peers.get(peer_id)
        if peer is None or peer.state != "active":
            return None
        if machine_id is not None and peer.machine_id != machine_id:
            return None
        return peer

    def peer_gone(self, peer_id: str) -> None:
        """A gone peer holds nothing: its activity and claims end now."""
        self.conn.execute("DELETE FROM activity WHERE peer = ?", (peer_id,))
        self.conn.execute("DELETE FROM claims WHERE peer = ?", (peer_id,))

    def set_status(self, peer_id: str, state: str | None, at: float | None, note: str) -> None:
        self.conn.execute(
            "UPDATE peers SET status = ?, status_at = ?, note = ? WHERE id = ?",
            (state, at, note, peer_id),
        )
        # A single statement: if it fails nothing changed; the cache follows it at once.
        if state is None and not note:
            self.status.pop(peer_id, None)
        else:
            self.status[peer_id] = (state, at, note)

    # ---------------------------------------------------------------- activity

    def touch(
        self, peer_id: str, files: Iterable[tuple[str, str | None]], now: float, ttl: float
    ) -> None:
        """Record edits of ``files`` ((path, repo) pairs) by ``peer_id`` at ``now``."""
        self.conn.executemany(
            "INSERT INTO activity(peer, path, repo, first_at, last_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(peer, path) DO UPDATE SET repo = excluded.repo, "
            "first_at = CASE WHEN activity.last_at < excluded.last_at - ? "
            "THEN excluded.first_at ELSE activity.first_at END, last_at = excluded.last_at",
            [(peer_id, path, repo, now, now, ttl) for path, repo in files],
        )

    def active_on(
        self, paths: list[str], since: float
    ) -> list[tuple[str, str, str | None, float, float]]:
        """(peer, path, repo, first, last) of edits of ``paths`` after ``since``."""
        if not paths:
            return []
        found = []
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found += self.conn.execute(
                "SELECT peer, path, repo, first_at, last_at FROM activity "
                f"WHERE path IN ({marks}) AND last_at > ?",
                [*chunk, since],
            ).fetchall()
        return found

    def all_active(
        self, since: float, peer: str | None = None
    ) -> list[tuple[str, str, str | None, float, float]]:
        """Every (peer, path, repo, first, last) edited after ``since`` (by ``peer`` only,
        when given), newest first."""
        rows: list[tuple[str, str, str | None, float, float]] = self.conn.execute(
            "SELECT peer, path, repo, first_at, last_at FROM activity WHERE last_at > ? "
            "AND coalesce(?, peer) = peer ORDER BY last_at DESC, path",
            (since, peer),
        ).fetchall()
        return rows

    # ---------------------------------------------------------------- claims

    def live_claims(self, now: float) -> list[tuple[str, str, str, bool, str, float, float]]:
        """(peer, pattern, repo, exclusive, reason, created, expires) of unexpired claims."""
        return [
            (peer, pattern, repo, bool(exclusive), reason, created, expires)
            for peer, pattern, repo, exclusive, reason, created, expires in self.conn.execute(
                "SELECT peer, pattern, repo, exclusive, reason, created, expires_at FROM claims "
                "WHERE expires_at > ? ORDER BY created, pattern",
                (now,),
            )
        ]

    def claim(
        self,
        peer_id: str,
        patterns: Iterable[tuple[str, str]],
        exclusive: bool,
        reason: str,
        now: float,
        ttl: float,
    ) -> None:
        """Make or renew ``peer_id``'s claims on ``patterns`` ((pattern, repo) pairs).

        A renewed claim keeps when it was first made and takes the new kind, reason and
        expiry.
        """
        self.conn.executemany(
            "INSERT INTO claims(peer, pattern, repo, exclusive, reason, created, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(peer, pattern) DO UPDATE SET "
            "repo = excluded.repo, exclusive = excluded.exclusive, reason = excluded.reason, "
            "created = CASE WHEN claims.expires_at <= ? THEN excluded.created "
            "ELSE claims.created END, expires_at = excluded.expires_at",
            [
                (peer_id, pattern, repo, int(exclusive), reason, now, now + ttl, now)
                for pattern, repo in patterns
            ],
        )

    def claim_count(self, peer_id: str, now: float) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM claims WHERE peer = ? AND expires_at > ?", (peer_id, now)
            ).fetchone()[0]
        )

    def release(self, peer_id: str, patterns: list[str] | None, now: float) -> list[str]:
        """Drop ``peer_id``'s claims on ``patterns`` (None: all); the live ones dropped."""
        if patterns is None:
            rows = self.conn.execute(
                "DELETE FROM claims WHERE peer = ? RETURNING pattern, expires_at", (peer_id,)
            ).fetchall()
        else:
            rows = []
            for pattern in dict.fromkeys(patterns):
                rows += self.conn.execute(
                    "DELETE FROM claims WHERE peer = ? AND pattern = ? RETURNING pattern, "
                    "expires_at",
                    (peer_id, pattern),
                ).fetchall()
        return sorted(pattern for pattern, expires in rows if expires > now)

    # ---------------------------------------------------------------- housekeeping

    def prune(self, now: float, ttl: float) -> None:
        """Delete faded activity and expired claims, at most once a minute."""
        if now - self.last_prune < PRUNE_INTERVAL:
            return
        self.last_prune = now
        self.conn.execute("DELETE FROM activity WHERE last_at <= ?", (now - ttl,))
        self.conn.execute("DELETE FROM claims WHERE expires_at <= ?", (now,))
