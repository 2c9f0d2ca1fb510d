"""Shared work state in the store: tasks with their history, and the decisions board.

- ``tasks``: one row per task (its state, creator, assignee, where it was made), and
  ``task_events``: every change to it (who, when, what, the state after, a note or
  result), so a task explains itself.
- ``decisions``: every version of every decision, per board and key; the current one is
  the highest version. A revocation is a version too, so nothing is ever overwritten. A
  board is a place (a repository, or a directory outside any) and an isolation group (the
  author's when it posted, ``''`` for none): each group keeps its own decisions.

A task's assignee is a peer id. When that peer is gone its open and claimed tasks wait:
a successor of its name takes them over like its mail (``pass_tasks``, called from
``Store._inherit``), or housekeeping hands them back to anyone after ``task_grace``
(``orphaned``). Like ``Store``, the methods are synchronous and run inside a
group-commit batch; ``peersd.tasks`` and ``peersd.decisions`` decide, this module keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import groups
from .protocol import Decision, DecisionVersion, Message, Peer, Task, TaskEvent

if TYPE_CHECKING:
    from .store import Store

MIGRATION = """
CREATE TABLE tasks(
    seq INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('open', 'claimed', 'done', 'cancelled')),
    scope TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    cwd TEXT NOT NULL,
    repo TEXT,
    creator TEXT NOT NULL,
    creator_name TEXT NOT NULL,
    assignee TEXT,
    assignee_name TEXT,
    result TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX tasks_live ON tasks(state, seq);
CREATE INDEX tasks_assignee ON tasks(assignee) WHERE state IN ('open', 'claimed');

CREATE TABLE task_events(
    seq INTEGER PRIMARY KEY,
    task INTEGER NOT NULL REFERENCES tasks(seq) ON DELETE CASCADE,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    what TEXT NOT NULL,
    state TEXT NOT NULL,
    assignee_name TEXT,
    text TEXT NOT NULL DEFAULT ''
);
CREATE INDEX task_events_task ON task_events(task, seq);

CREATE TABLE decisions(
    seq INTEGER PRIMARY KEY,
    machine_id TEXT NOT NULL,
    place TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT NOT NULL,
    rationale TEXT NOT NULL,
    category TEXT,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    author TEXT NOT NULL,
    author_name TEXT NOT NULL,
    at REAL NOT NULL,
    group_name TEXT NOT NULL DEFAULT '',
    UNIQUE (machine_id, place, group_name, key, version)
);
CREATE INDEX decisions_category ON decisions(category);
"""
"""Appended to ``schema.MIGRATIONS``; it depends on no other table."""

TASK_COLUMNS = """seq, title, state, scope, creator, creator_name, created, updated, cwd,
    description, repo, assignee, assignee_name, result"""
LIVE = ("open", "claimed")
HISTORY_SHOWN = 50
"""History entries a task answer carries, the newest (``Task.history_total`` counts all)."""


def task_id(seq: int) -> str:
    return f"t-{seq}"


def task_seq(ref: str) -> int:
    """The row of a task id (``rules.TaskId``: ``t-12``, ``T-12`` or ``12``)."""
    return int(ref.rsplit("-", 1)[-1])


def _task(row: tuple[Any, ...]) -> Task:
    return Task(task_id(row[0]), *row[1:])


def place_of(peer: Peer) -> str:
    """Where a peer's decisions live: its repository, else its directory."""
    return peer.git_root or peer.cwd


def passed_text(task: Task, old_name: str) -> str:
    """The mail telling a successor it took over a gone session's task."""
    return (
        f"[claude-peers task {task.id}] You took over task {task.id} "
        f'"{task.title}" from the previous {old_name} session, which is gone (state: '
        f"{task.state}).\n"
        + (f"Description:\n{task.description}\n" if task.description else "")
        + f'What to do: continue it, then call update_task(task_id="{task.id}", '
        'state="done", result="…"); if you cannot, update_task with state="open" hands it '
        f'back. list_tasks(task_id="{task.id}") shows its history.'
    )


class Tasks:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def conn(self):  # type: ignore[no-untyped-def]
        return self.store.conn

    def get(self, seq: int, history: bool = False) -> Task | None:
        """The task; with ``history``, its last ``HISTORY_SHOWN`` entries (oldest first)
        and in ``history_total`` how many it has in all."""
        row = self.conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE seq = ?", (seq,)
        ).fetchone()
        if row is None:
            return None
        task = _task(row)
        if history:
            task.history = [
                TaskEvent(*r)
                for r in self.conn.execute(
                    "SELECT at, actor, actor_name, what, state, assignee_name, text "
                    "FROM task_events WHERE task = ? ORDER BY seq DESC LIMIT ?",
                    (seq, HISTORY_SHOWN),
                )
            ][::-1]
            task.history_total = int(
                self.conn.execute(
                    "SELECT count(*) FROM task_events WHERE task = ?", (seq,)
                ).fetchone()[0]
            )
        return task

    def notes(self, seq: int) -> int:
        """How many notes (history entries ``note``) the task has."""
        return int(
            self.conn.execute(
                "SELECT count(*) FROM task_events WHERE task = ? AND what = 'note'", (seq,)
            ).fetchone()[0]
        )

    def create(
        self,
        creator: Peer,
        title: str,
        description: str,
        scope: str,
        assignee: Peer | None,
        now: float,
    ) -> int:
        self.conn.execute(
            "INSERT INTO tasks(title, description, state, scope, machine_id, cwd, repo, creator, "
            "creator_name, assignee, assignee_name, created, updated) "
            "VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                title,
                description,
                scope,
                creator.machine_id,
                creator.cwd,
                creator.git_root,
                creator.id,
                creator.name,
                assignee.id if assignee else None,
                assignee.name if assignee else None,
                now,
                now,
            ),
        )
        seq: int = self.conn.last_insert_rowid()
        self.event(seq, creator, "created", "open", now, assignee.name if assignee else None)
        return seq

    def live_count(self, creator: str) -> int:
        """Open and claimed tasks ``creator`` made."""
        return int(
            self.conn.execute(
                "SELECT count(*) FROM tasks WHERE creator = ? AND state IN ('open', 'claimed')",
                (creator,),
            ).fetchone()[0]
        )

    def machine_of(self, seq: int) -> str | None:
        found = self.conn.execute("SELECT machine_id FROM tasks WHERE seq = ?", (seq,)).fetchone()
        return None if found is None else str(found[0])

    def change(
        self,
        seq: int,
        actor: Peer,
        what: str,
        now: float,
        *,
        state: str,
        assignee: Peer | None,
        result: str | None = None,
        text: str = "",
    ) -> None:
        """Set the state and assignee (None: nobody) and record ``what`` in the history."""
        self.conn.execute(
            "UPDATE tasks SET state = ?, assignee = ?, assignee_name = ?, "
            "result = coalesce(?, result), updated = ? WHERE seq = ?",
            (
                state,
                assignee.id if assignee else None,
                assignee.name if assignee else None,
                result,
                now,
                seq,
            ),
        )
        self.event(seq, actor, what, state, now, assignee.name if assignee else None, text)

    def event(
        self,
        seq: int,
        actor: Peer,
        what: str,
        state: str,
        now: float,
        assignee_name: str | None = None,
        text: str = "",
    ) -> None:
        self.conn.execute(
            "INSERT INTO task_events(task, at, actor, actor_name, what, state, assignee_name, "
            "text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, now, actor.id, actor.name, what, state, assignee_name, text),
        )
        self.conn.execute("UPDATE tasks SET updated = ? WHERE seq = ?", (now, seq))

    def listing(
        self, states: Iterable[str], limit: int, where: str = "", args: Iterable[object] = ()
    ) -> list[tuple[Task, str]]:
        """(task, machine id) of tasks in ``states`` (newest first), filtered by ``where``."""
        wanted = list(states)
        marks = ",".join("?" * len(wanted))
        sql = f"SELECT {TASK_COLUMNS}, machine_id FROM tasks WHERE state IN ({marks})"
        if where:
            sql += f" AND {where}"
        sql += " ORDER BY seq DESC LIMIT ?"
        return [
            (_task(row[:-1]), str(row[-1]))
            for row in self.conn.execute(sql, [*wanted, *args, limit])
        ]

    # ---------------------------------------------------------------- gone assignees

    def pass_tasks(self, old: str, new: Peer, now: float) -> list[Message]:
        """Give ``new`` the open and claimed tasks of the gone peer ``old`` (a successor of
        its name), each with a mail telling it so; the mails sent. A task whose creator
        ``new`` may not see (another isolation group) stays for ``orphaned`` to reopen."""
        seqs = [
            r[0]
            for r in self.conn.execute(
                "SELECT seq FROM tasks WHERE assignee = ? AND state IN ('open', 'claimed') "
                "ORDER BY seq",
                (old,),
            )
        ]
        gone = self.store.peer(old)
        sent = []
        for seq in seqs:
            task = self.get(seq)
            assert task is not None
            creator = self.store.peer(task.creator)
            if creator is not None and not groups.visible(new, creator):
                continue
            if gone is not None and not groups.visible(new, gone):
                continue  # not even a mail across groups
            self.change(seq, new, "passed", now, state=task.state, assignee=new)
            if gone is not None:
                text = passed_text(task, gone.name)
                sent.append(self.store.send(gone, new, text, None, now, self.store.message_ttl))
        return sent

    def orphaned(self, gone_before: float) -> list[tuple[Task, str]]:
        """(task, machine) of open or claimed tasks whose assignee is gone (or forgotten)
        since before ``gone_before``."""
        rows = self.conn.execute(
            f"SELECT {', '.join('t.' + c.strip() for c in TASK_COLUMNS.split(','))}, "
            "t.machine_id FROM tasks t LEFT JOIN peers p ON p.id = t.assignee "
            "WHERE t.state IN ('open', 'claimed') AND t.assignee IS NOT NULL "
            "AND (p.id IS NULL OR (p.state = 'gone' AND p.gone_at <= ?)) ORDER BY t.seq",
            (gone_before,),
        )
        return [(_task(row[:-1]), str(row[-1])) for row in rows]


def board_of(peer: Peer) -> str:
    """The decisions board group of a peer: its isolation group, ``''`` for none."""
    return peer.group or ""


class Decisions:
    """Decisions per board: a place and a group (``board_of`` the author)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def conn(self):  # type: ignore[no-untyped-def]
        return self.store.conn

    def current(self, machine_id: str, place: str, group: str, key: str) -> Decision | None:
        row = self.conn.execute(
            f"SELECT {DECISION_COLUMNS} FROM decisions WHERE machine_id = ? AND place = ? "
            "AND group_name = ? AND key = ? ORDER BY version DESC LIMIT 1",
            (machine_id, place, group, key),
        ).fetchone()
        return None if row is None else _decision(row)

    def add(
        self,
        machine_id: str,
        place: str,
        key: str,
        value: str,
        rationale: str,
        category: str | None,
        state: str,
        author: Peer,
        now: float,
    ) -> Decision:
        """Store the next version of ``key`` on the author's board (the first is 1)."""
        group = board_of(author)
        before = self.current(machine_id, place, group, key)
        version = 1 if before is None else before.version + 1
        self.conn.execute(
            "INSERT INTO decisions(machine_id, place, key, version, value, rationale, category, "
            "state, author, author_name, at, group_name) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                machine_id,
                place,
                key,
                version,
                value,
                rationale,
                category,
                state,
                author.id,
                author.name,
                now,
                group,
            ),
        )
        found = self.current(machine_id, place, group, key)
        assert found is not None
        return found

    def query(
        self,
        machine_id: str | None,
        place: str | None,
        key: str | None,
        category: str | None,
        text: str | None,
        revoked: bool,
        history: bool,
        limit: int,
        group: str | None = None,
    ) -> list[Decision]:
        """Current versions matching every filter given, newest first; ``group`` (a board
        group, ``''`` for none) keeps one group's board, None every board."""
        where = [
            "version = (SELECT max(version) FROM decisions x WHERE x.machine_id = d.machine_id "
            "AND x.place = d.place AND x.group_name = d.group_name AND x.key = d.key)"
        ]
        args: list[object] = []
        if machine_id is not None:
            where.append("machine_id = ?")
            args.append(machine_id)
        if place is not None:
            where.append("place = ?")
            args.append(place)
        if group is not None:
            where.append("group_name = ?")
            args.append(group)
        if key is not None:
            where.append("key = ?")
            args.append(key)
        if category is not None:
            where.append("lower(category) = lower(?)")
            args.append(category)
        if text is not None:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(key LIKE ? ESCAPE '\\' OR value LIKE ? ESCAPE '\\' OR rationale LIKE ? "
                "ESCAPE '\\' OR coalesce(category, '') LIKE ? ESCAPE '\\')"
            )
            args += [like] * 4
        if not revoked:
            where.append("state = 'active'")
        sql = (
            f"SELECT {DECISION_COLUMNS}, machine_id FROM decisions d WHERE "
            + " AND ".join(where)
            + " ORDER BY at DESC, seq DESC LIMIT ?"
        )
        found = []
        for row in self.conn.execute(sql, [*args, limit]):
            decision = _decision(row[:-1])
            if history:
                decision.history = self.versions(
                    str(row[-1]), decision.place, decision.group or "", decision.key
                )[1:]
            found.append(decision)
        return found

    def versions(self, machine_id: str, place: str, group: str, key: str) -> list[DecisionVersion]:
        """Every version of ``key`` on the board (``place``, ``group``), newest first."""
        return [
            DecisionVersion(*row)
            for row in self.conn.execute(
                "SELECT version, value, rationale, state, author, author_name, at, category "
                "FROM decisions WHERE machine_id = ? AND place = ? AND group_name = ? AND key = ? "
                "ORDER BY version DESC",
                (machine_id, place, group, key),
            )
        ]


DECISION_COLUMNS = (
    "key, value, rationale, state, version, author, author_name, at, place, category, "
    "nullif(group_name, '')"
)


def _decision(row: tuple[Any, ...]) -> Decision:
    return Decision(*row)
