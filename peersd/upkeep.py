"""The store's side of housekeeping: lapsed leases, mail past its TTL, old rows purged,
peers of other machines gone quiet, and mail waiting too long.

Only peers with undelivered mail (the in-memory pending count) are looked at, each
through the inbox index, so an idle daemon runs no query. Like ``Store``, the methods
are synchronous and run inside a group-commit batch (``peersd.housekeeping`` runs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import Message
    from .store import Store


class Upkeep:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _with_mail(self) -> list[str]:
        """Peers with undelivered mail: housekeeping looks only at their queues."""
        return [x.id for x in self.store._peers.values() if x.pending > 0]

    def _overdue(self, states: str, column: str, now: float) -> list[int]:
        return [
            r[0]
            for peer_id in self._with_mail()
            for r in self.store.conn.execute(
                f"SELECT seq FROM messages WHERE recipient = ? AND state IN ({states}) "
                f"AND {column} < ?",
                (peer_id, now),
            )
        ]

    def expire_leases(self, now: float) -> list[Message]:
        """Return lapsed leases to the queue; the messages returned."""
        seqs = self._overdue("'leased'", "lease_until", now)
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        self.store.conn.execute(
            f"UPDATE messages SET state = 'queued', lease_until = NULL WHERE seq IN ({marks})",
            seqs,
        )
        return self.store.messages_by_seqs(seqs)

    def _past_ttl(self, now: float) -> list[int]:
        """Undelivered mail past its TTL, read oldest first and only up to the first live one.

        Expiry times rise with the sequence for a recipient (one TTL setting), so a long
        queue costs one row per sweep, not a scan. After a TTL change a message may be
        reported expired late; it can no longer be claimed either way (claim checks it).
        """
        found: list[int] = []
        for peer_id in self._with_mail():
            for state in ("queued", "leased"):  # one index range each: no sort, early stop
                for seq, expires_at in self.store.conn.execute(
                    "SELECT seq, expires_at FROM messages WHERE recipient = ? AND state = ? "
                    "ORDER BY seq",
                    (peer_id, state),
                ):
                    if expires_at >= now:
                        break
                    found.append(seq)
        return sorted(found)

    def expire_messages(self, now: float) -> list[Message]:
        """Mark undelivered mail past its TTL expired; the messages expired."""
        seqs = self._past_ttl(now)
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        self.store.conn.execute(
            f"UPDATE messages SET state = 'expired', lease_until = NULL WHERE seq IN ({marks})",
            seqs,
        )
        expired = self.store.messages_by_seqs(seqs)
        for msg in expired:
            self.store._add_pending(msg.recipient, -1)
        return expired

    def purge(
        self, now: float, history_retention: float, gone_retention: float
    ) -> tuple[int, int, int]:
        """Delete old delivered and expired mail, peers gone for ``gone_retention`` and the
        hub machine bindings not seen as long; (messages, peers, machines) deleted."""
        cutoff = now - history_retention
        # The newest row is never deleted: SQLite numbers new rows max(seq) + 1, so
        # keeping it means a message id is never issued twice.
        newest = self.store._val("SELECT max(seq) FROM messages") or 0
        self.store.conn.execute(
            "DELETE FROM messages WHERE delivered_at IS NOT NULL AND delivered_at < ? AND seq < ?",
            (cutoff, newest),
        )
        messages = self.store.conn.changes()
        self.store.conn.execute(
            "DELETE FROM messages WHERE state = 'expired' AND expires_at < ? AND seq < ?",
            (cutoff, newest),
        )
        messages += self.store.conn.changes()
        # Gone peers are forgotten after a while, unless mail still waits for a successor.
        old = [
            x.id
            for x in self.store._peers.values()
            if x.state == "gone" and not x.pending and (x.last_seen < now - gone_retention)
        ]
        for peer_id in old:
            self.store.conn.execute("DELETE FROM peers WHERE id = ?", (peer_id,))
            del self.store._peers[peer_id]
        if old:
            self.store.generation += 1
        return messages, len(old), self.store.machines.purge(now - gone_retention)

    def stale_remote(self, machine_id: str, cutoff: float) -> list[tuple[str, str]]:
        """Active peers of other machines not heard from since ``cutoff``."""
        return [
            (x.id, x.name)
            for x in self.store._peers.values()
            if x.state == "active" and x.machine_id != machine_id and x.last_seen < cutoff
        ]

    def waiting(self, older_than: float) -> list[tuple[str, str, int, float, int]]:
        """(peer id, name, count, oldest created, newest row) of each active peer's
        undelivered mail created before ``older_than``.

        Only peers with mail (the in-memory pending count) are queried, each through the
        inbox index, so an idle daemon runs no query at all.
        """
        found: list[tuple[str, str, int, float, int]] = []
        for peer_id in self._with_mail():
            peer = self.store._peers[peer_id]
            if peer.state != "active":
                continue  # a gone peer's mail waits for its successor
            row = self.store._one(
                "SELECT count(*), min(created), max(seq) FROM messages WHERE recipient = ? "
                "AND state IN ('queued', 'leased') AND created < ?",
                (peer_id, older_than),
            )
            if row is not None and row[0]:
                found.append((peer_id, peer.name, int(row[0]), float(row[1]), int(row[2])))
        return found
