"""The audit log: actions taken on peers (kills, orphan cleanups), read newest first.

Rows are written in the batch of the action they record; a slow action (a kill) is
recorded first and its outcome filled in once known. Like ``Store``, the methods are
synchronous and run inside a group-commit batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store


class Audit:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, now: float, actor: str, action: str, target: str | None, detail: str) -> int:
        """Record an action; its row, for ``outcome``."""
        conn = self.store.conn
        conn.execute(
            "INSERT INTO audit(at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now, actor, action, target, detail),
        )
        return conn.last_insert_rowid()

    def outcome(self, seq: int, detail: str) -> None:
        """Replace the detail of a recorded attempt once its outcome is known."""
        self.store.conn.execute("UPDATE audit SET detail = ? WHERE seq = ?", (detail, seq))

    def page(
        self, limit: int, before: int | None = None, action: str | None = None
    ) -> tuple[list[tuple[Any, ...]], int | None]:
        """Audit rows newest first: (seq, at, actor, action, target, target name, detail)."""
        sql = "SELECT seq, at, actor, action, target, detail FROM audit"
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if action is not None:
            where.append("action = ?")
            args.append(action)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)  # one more than asked: is there a next page at all?
        rows = []
        for seq, at, actor, act, target, detail in self.store.conn.execute(sql, args):
            peer = self.store._peers.get(target) if target else None
            rows.append((seq, at, actor, act, target, peer.name if peer else None, detail))
        more = len(rows) > limit
        del rows[limit:]
        next_before = rows[-1][0] if more else None
        return rows, next_before
