"""A hub's machine bindings: the first secret presented for a machine id binds it.

A hub client proves its machine id with a secret (``peersd.machine_secret``); only the
hash is kept. Peers live in ``store``; this part only reads them to list machines.
Like ``Store``, the methods are synchronous and run inside a group-commit batch.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store


class Machines:
    def __init__(self, store: Store) -> None:
        self.store = store

    def prove(self, machine_id: str, secret: str, now: float) -> bool:
        """True if ``secret`` is ``machine_id``'s (the first secret seen binds the id)."""
        conn = self.store.conn
        digest = hashlib.sha256(secret.encode()).hexdigest()
        row = conn.execute(
            "SELECT secret_hash FROM machines WHERE machine_id = ?", (machine_id,)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO machines(machine_id, secret_hash, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?)",
                (machine_id, digest, now, now),
            )
            return True
        if not hmac.compare_digest(str(row[0]), digest):
            return False
        conn.execute("UPDATE machines SET last_seen = ? WHERE machine_id = ?", (now, machine_id))
        return True

    def recent(self, limit: int) -> tuple[list[tuple[str, float, float, str, int]], int]:
        """(machine id, first seen, last seen, host of its latest peer, active peers) of
        the ``limit`` machines seen most recently, and how many are bound in all."""
        conn = self.store.conn
        rows: list[tuple[str, float, float]] = list(
            conn.execute(
                "SELECT machine_id, first_seen, last_seen FROM machines "
                "ORDER BY last_seen DESC, machine_id LIMIT ?",
                (limit,),
            )
        )
        row = conn.execute("SELECT count(*) FROM machines").fetchone()
        total = int(row[0]) if row is not None else 0
        hosts: dict[str, tuple[float, str]] = {}
        active: dict[str, int] = {}
        for x in self.store._peers.values():
            if x.last_seen >= hosts.get(x.machine_id, (-1.0, ""))[0]:
                hosts[x.machine_id] = (x.last_seen, x.host)
            if x.state == "active":
                active[x.machine_id] = active.get(x.machine_id, 0) + 1
        found = [
            (m, first, last, hosts.get(m, (0.0, ""))[1], active.get(m, 0))
            for m, first, last in rows
        ]
        return found, total

    def forget(self, machine_id: str) -> bool:
        """Unbind ``machine_id`` from its secret; False if it was not bound."""
        conn = self.store.conn
        conn.execute("DELETE FROM machines WHERE machine_id = ?", (machine_id,))
        return conn.changes() > 0

    def purge(self, cutoff: float) -> int:
        """Delete the bindings not seen since ``cutoff``; how many.

        One row per machine id ever presented, its last_seen written by each hello. Kept
        while any peer of the machine is (its mail must not go to whoever presents the id
        next); ``Store.purge`` forgets gone peers in time.
        """
        conn = self.store.conn
        conn.execute(
            "DELETE FROM machines WHERE last_seen < ? "
            "AND machine_id NOT IN (SELECT machine_id FROM peers)",
            (cutoff,),
        )
        return conn.changes()
