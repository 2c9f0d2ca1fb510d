"""Tasks: who does what, in states ``open → claimed → done | cancelled``.

One handler per request, in the shape of ``handlers``; ``handlers`` adds ``HANDLERS``
to its table. Every change is recorded in the task's history and announced as ordinary
mail to the peers it concerns (the creator, the assignee before and after), never to the
peer that made it: so it reaches a busy, idle or woken session like any mail, with its
lease and ack. The texts say what the recipient is expected to do and which tool does it.

Who may do what:
- anyone in the task's scope claims an unassigned open task (it becomes theirs);
- the assignee claims, finishes, gives back (``open``) or cancels it;
- the creator, and a person at the CLI (client ``cli``), may do all of that to any task
  and reassign it; the assignee may reassign it too.
A gone assignee's tasks pass to the successor of its name with its mail (``Store._inherit``)
or, after ``task_grace``, are open to anyone again (``reopen_orphans``, run by the sweep).
A task stays in its creator's isolation group: its assignee is always a peer that may see
the creator.

Every answer fits in a frame, so a change is never saved and then refused for its size:
listings cut long texts and leave out the oldest tasks, a task carries only its last
history entries, and a task keeps at most ``MAX_NOTES`` notes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from . import groups
from . import protocol as p
from .errors import Code, PeersError
from .handlers import Effect, Handler, Op, Outcome, _me
from .handlers import _machine as _conn_machine
from .workstate import LIVE, task_id, task_seq

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

FINAL = ("done", "cancelled")
MAX_LIVE_TASKS = 10000
"""Open and claimed tasks one peer may have created: a runaway loop stops here."""
TOOL = "update_task"
MAX_NOTES = 200
"""Notes one task keeps: past this, ``update_task`` with only a note is refused."""
LISTING_TEXT = 500
"""Characters of a description or result a listing shows (``task_info`` shows them whole)."""


# --------------------------------------------------------------------------- rules


def in_scope(task: p.Task, machine_id: str, peer: p.Peer, creator: p.Peer | None = None) -> bool:
    """Whether ``peer`` may take ``task`` while it is unassigned.

    The one place that decides. Isolation groups apply on top of the scope: a peer that
    may not see the task's creator (``groups.visible``) may not take it.
    """
    if peer.machine_id != machine_id:
        return False
    if creator is not None and not groups.visible(peer, creator):
        return False
    if task.scope == "directory":
        return peer.cwd == task.cwd
    if task.scope == "repo":
        return (peer.git_root or peer.cwd) == (task.repo or task.cwd)
    return True  # machine


def _where(task: p.Task) -> str:
    if task.scope == "directory":
        return f"directory {task.cwd}"
    if task.scope == "repo":
        return f"repository {task.repo}" if task.repo else f"directory {task.cwd}"
    return "machine"


def _manager(task: p.Task, peer: p.Peer) -> bool:
    """The creator, or a person at the CLI: may change any task."""
    return peer.id == task.creator or peer.client == "cli"


def _require(d: Daemon, ref: str, history: bool = False, viewer: p.Peer | None = None) -> p.Task:
    """The task, or ``unknown_task``; with ``viewer``, also when it was made in an
    isolation group the viewer may not see (and is not assigned to the viewer)."""
    task = d.store.tasks.get(task_seq(ref), history)
    if task is not None and viewer is not None and task.assignee != viewer.id:
        creator = d.store.peer(task.creator)
        if creator is not None and not groups.visible(viewer, creator):
            task = None
    if task is None:
        raise PeersError(Code.UNKNOWN_TASK, f"no task {task_id(task_seq(ref))} (see list_tasks)")
    return task


def _final(task: p.Task) -> PeersError:
    return PeersError(
        Code.TASK_STATE,
        f"task {task.id} is {task.state}; a finished task does not change (create a new task)",
    )


def _assignable(d: Daemon, ref: str, viewer: p.Peer, creator: p.Peer | None) -> p.Peer:
    """The live peer ``ref`` names, if ``viewer`` may see it and it may see the task's
    ``creator`` (a task does not leave its creator's isolation group)."""
    peer = groups.resolve(d.store, viewer, ref, d.machine_id)
    if peer.state != "active":
        seen = {x.name for x in d.store.list_peers(viewer, "all", include_self=True)}
        close = [x for x in d.store.close_names(peer.name) if x in seen]
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise PeersError(
            Code.BAD_REQUEST,
            f"{peer.name} ({peer.id}) is gone; assign the task to a live session "
            f"(list_peers shows them){hint}",
            candidates=close,
        )
    if creator is not None and not groups.visible(peer, creator):
        theirs = f"group {peer.group!r}" if peer.group else "no group"
        made = f"group {creator.group!r}" if creator.group else "no group"
        raise PeersError(
            Code.FORBIDDEN,
            f"{peer.name} is in {theirs} and may not see {creator.name}, who made the task "
            f"in {made}; assign it to a peer of that group",
        )
    return peer


def _fit(d: Daemon, answer: p.TaskResult) -> p.TaskResult:
    """``answer`` with as many of its last history entries as fit in a frame (the task
    itself always does: its texts have length limits)."""
    task = answer.task
    size = len(msgspec.msgpack.encode(answer))
    if size <= d.frame_budget:
        return answer
    kept = list(task.history)
    sizes = [len(msgspec.msgpack.encode(e)) for e in kept]
    while kept and size > d.frame_budget:
        size -= sizes.pop(0)
        kept.pop(0)
    return msgspec.structs.replace(answer, task=msgspec.structs.replace(task, history=kept))


def _short(task: p.Task) -> p.Task:
    """``task`` as a listing shows it: description and result cut to ``LISTING_TEXT``."""
    if len(task.description) <= LISTING_TEXT and len(task.result) <= LISTING_TEXT:
        return task
    return msgspec.structs.replace(
        task,
        description=_cut(task.description),
        result=_cut(task.result),
    )


def _cut(text: str) -> str:
    return text if len(text) <= LISTING_TEXT else text[: LISTING_TEXT - 1] + "…"


# --------------------------------------------------------------------------- mail


def _quote(label: str, text: str) -> str:
    return f"\n{label}:\n{text}" if text else ""


def _todo(task: p.Task) -> str:
    return (
        f'\nWhat to do: when you start, call {TOOL}(task_id="{task.id}", state="claimed"); '
        f'when it is finished, {TOOL}(task_id="{task.id}", state="done", result="what you did"). '
        f'If you cannot do it, {TOOL}(task_id="{task.id}", state="open", note="why") hands it '
        "back."
    )


def text_for(task: p.Task, actor: str, what: str, role: str, note: str = "") -> str:
    """The mail announcing ``what`` ``actor`` did to ``task``, for a recipient in ``role``:
    ``assignee`` (it is theirs now), ``previous`` (it no longer is) or ``creator``."""
    head = f"[claude-peers task {task.id}] "
    title = f'"{task.title}"'
    if role == "assignee" and what in ("created", "assigned"):
        return (
            head
            + f"{actor} assigned you task {task.id}: {title}."
            + _quote("Description", task.description)
            + _quote("Note", note)
            + _todo(task)
        )
    if role == "previous" and what == "assigned":
        to = task.assignee_name or "nobody"
        return (
            head + f"{actor} reassigned task {task.id} {title} to {to}; it is no longer yours. "
            f"Stop working on it unless you agree otherwise with {actor} (send_message)."
            + _quote("Note", note)
        )
    if what == "assigned":  # to the creator
        return (
            head
            + f"{actor} reassigned your task {task.id} {title} to "
            + (f"{task.assignee_name}." if task.assignee_name else "nobody.")
            + _quote("Note", note)
        )
    if what == "claimed" and role == "assignee":  # claimed for them by someone else
        return (
            head + f"{actor} assigned you task {task.id}: {title}, and marked it claimed: you "
            "are working on it."
            + _quote("Description", task.description)
            + _quote("Note", note)
            + f'\nWhat to do: when it is finished, {TOOL}(task_id="{task.id}", state="done", '
            f'result="what you did"). If you cannot do it, {TOOL}(task_id="{task.id}", '
            'state="open", note="why") hands it back.'
        )
    if what == "claimed":
        if task.assignee_name != actor:
            return (
                head + f"{actor} marked your task {task.id} {title} claimed by "
                f"{task.assignee_name}, who is working on it." + _quote("Note", note)
            )
        return (
            head
            + f"{actor} claimed your task {task.id} {title} and is working on it."
            + (_quote("Note", note))
        )
    if what == "released" and role == "previous":
        return (
            head + f"{actor} took task {task.id} {title} back from you: it is open to anyone in "
            "its scope again. Stop working on it unless you claim it again." + _quote("Note", note)
        )
    if what == "released":
        return (
            head + f"{actor} gave task {task.id} {title} back: it is open to anyone in its "
            "scope again." + _quote("Note", note)
        )
    if what == "done":
        return (
            head
            + f"{actor} marked task {task.id} {title} done."
            + _quote("Result", task.result or "(none given)")
            + _quote("Note", note)
            + f'\nNothing else is needed; list_tasks(task_id="{task.id}") shows its history.'
        )
    if what == "cancelled":
        stop = " Stop working on it." if role in ("assignee", "previous") else ""
        return (
            head
            + f"{actor} cancelled task {task.id} {title}.{stop}"
            + _quote("Reason", task.result or note or "(none given)")
        )
    return head + f"{actor} added a note to task {task.id} {title}:\n{note}"  # note


def _announce(
    d: Daemon, actor: p.Peer, mails: list[tuple[str | None, str]], now: float
) -> tuple[list[Effect], list[str], list[str]]:
    """Send each (recipient id, text), skipping the actor, nobody and repeats; the effects,
    the names mailed, and the ones skipped ("name: reason")."""
    effects: list[Effect] = []
    notified: list[str] = []
    skipped: list[str] = []
    seen = {actor.id}
    todo = []
    for peer_id, text in mails:
        if peer_id is None or peer_id in seen:
            continue
        seen.add(peer_id)
        peer = d.store.peer(peer_id)
        if peer is None:
            continue
        if peer.pending >= d.settings.queue_limit:
            skipped.append(f"{peer.name}: queue full ({d.settings.queue_limit} unread)")
            continue
        todo.append((peer, text))
    if todo:
        d.rate_limits.take(actor.id, len(todo))
    for peer, text in todo:
        msg = d.store.send(actor, peer, text, None, now, d.settings.message_ttl)
        effects += d.mail_effects(msg)
        notified.append(peer.name)
    return effects, notified, skipped


# --------------------------------------------------------------------------- handlers


def create_task(d: Daemon, conn: Connection, r: p.CreateTask) -> Op:
    me = _me(conn)
    if not r.title.strip():
        raise PeersError(Code.BAD_REQUEST, "title is empty")

    def op() -> Outcome:
        now = time.time()
        creator = d.store.require_peer(me)
        assignee = _assignable(d, r.assignee, creator, creator) if r.assignee else None
        if d.store.tasks.live_count(me) >= MAX_LIVE_TASKS:
            raise PeersError(
                Code.BAD_REQUEST,
                f"you have {MAX_LIVE_TASKS} open or claimed tasks; finish or cancel some first",
            )
        seq = d.store.tasks.create(creator, r.title, r.description, r.scope, assignee, now)
        task = _require(d, task_id(seq), history=True)
        mails: list[tuple[str | None, str]] = []
        if assignee is not None:
            mails.append((assignee.id, text_for(task, creator.name, "created", "assignee")))
        effects, notified, skipped = _announce(d, creator, mails, now)
        answer = p.TaskResult(id=r.id, task=task, notified=notified, skipped=skipped)
        return Outcome(_fit(d, answer), effects)

    return op


def update_task(d: Daemon, conn: Connection, r: p.UpdateTask) -> Op:
    me = _me(conn)
    if r.state is None and r.assignee is None and r.note is None:
        raise PeersError(Code.BAD_REQUEST, "nothing to change: give state, assignee or note")
    if r.result is not None and r.state not in FINAL:
        raise PeersError(
            Code.BAD_REQUEST, 'result goes with state "done" or "cancelled" (use note otherwise)'
        )

    def op() -> Outcome:
        now = time.time()
        actor = d.store.require_peer(me)
        task = _require(d, r.task, viewer=actor)
        machine = d.store.tasks.machine_of(task_seq(r.task)) or ""
        seq = task_seq(r.task)
        note = r.note or ""
        mails: list[tuple[str | None, str]] = []
        if task.state in FINAL:
            raise _final(task)
        manager = _manager(task, actor)
        mine = task.assignee == actor.id
        tasks = d.store.tasks
        changed = False
        claimer = actor  # who holds the task once claimed: the new assignee when one is given

        if r.assignee is not None:
            if not (manager or mine):
                raise PeersError(
                    Code.FORBIDDEN,
                    f"only the creator ({task.creator_name}), the assignee or a person at the "
                    f"CLI may reassign task {task.id}",
                )
            new = _assignable(d, r.assignee, actor, d.store.peer(task.creator))
            claimer = new
            if new.id != task.assignee:
                before = task.assignee
                tasks.change(seq, actor, "assigned", now, state="open", assignee=new, text=note)
                task = _require(d, r.task)
                mails.append((before, text_for(task, actor.name, "assigned", "previous", note)))
                if r.state != "claimed":  # else the claim below tells them
                    mails += [
                        (new.id, text_for(task, actor.name, "assigned", "assignee", note)),
                        (task.creator, text_for(task, actor.name, "assigned", "creator", note)),
                    ]
                mine = new.id == actor.id
                changed = True

        # An assignee declining a task it has not claimed yet also hands it back ("open").
        declined = r.state == "open" and task.assignee is not None and r.assignee is None
        if r.state is not None and (r.state != task.state or declined):
            state = r.state
            before = task.assignee
            if state == "claimed":
                if task.assignee is not None and not mine and not manager:
                    raise PeersError(
                        Code.FORBIDDEN,
                        f"task {task.id} is assigned to {task.assignee_name}; only they, its "
                        f"creator ({task.creator_name}) or a person at the CLI can claim it",
                    )
                if task.assignee is None and not in_scope(
                    task, machine, claimer, d.store.peer(task.creator)
                ):
                    who = "you are" if claimer.id == actor.id else f"{claimer.name} is"
                    raise PeersError(
                        Code.FORBIDDEN,
                        f"task {task.id} is open to peers in its {_where(task)}; {who} not there",
                    )
                tasks.change(
                    seq, actor, "claimed", now, state="claimed", assignee=claimer, text=note
                )
                task = _require(d, r.task)
                mails += [
                    (claimer.id, text_for(task, actor.name, "claimed", "assignee", note)),
                    (task.creator, text_for(task, actor.name, "claimed", "creator", note)),
                    (before, text_for(task, actor.name, "assigned", "previous", note)),
                ]
            elif state == "open":
                if not (manager or mine):
                    held = "claimed by" if task.state == "claimed" else "assigned to"
                    raise PeersError(
                        Code.FORBIDDEN,
                        f"task {task.id} is {held} {task.assignee_name}; only they, its creator "
                        f"({task.creator_name}) or a person at the CLI can give it back",
                    )
                tasks.change(seq, actor, "released", now, state="open", assignee=None, text=note)
                task = _require(d, r.task)
                mails += [
                    (task.creator, text_for(task, actor.name, "released", "creator", note)),
                    (before, text_for(task, actor.name, "released", "previous", note)),
                ]
            else:  # done or cancelled
                if state == "done" and task.state != "claimed":
                    raise PeersError(
                        Code.TASK_STATE,
                        f"task {task.id} is {task.state}, not claimed: claim it first "
                        f'({TOOL} with state="claimed"), then mark it done',
                    )
                if not (manager or mine):
                    who = task.assignee_name or "nobody"
                    raise PeersError(
                        Code.FORBIDDEN,
                        f"only task {task.id}'s assignee ({who}), its creator "
                        f"({task.creator_name}) or a person at the CLI can mark it {state}",
                    )
                tasks.change(
                    seq,
                    actor,
                    state,
                    now,
                    state=state,
                    assignee=d.store.peer(before) if before else None,
                    result=r.result or "",
                    text=note,
                )
                task = _require(d, r.task)
                mails += [
                    (task.creator, text_for(task, actor.name, state, "creator", note)),
                    (before, text_for(task, actor.name, state, "assignee", note)),
                ]
            changed = True
        elif r.state == "claimed" and task.assignee != claimer.id:
            raise PeersError(
                Code.TASK_STATE, f"task {task.id} is already claimed by {task.assignee_name}"
            )

        if note and not changed:
            if tasks.notes(seq) >= MAX_NOTES:
                raise PeersError(
                    Code.TOO_LARGE,
                    f"task {task.id} has {MAX_NOTES} notes, the most a task keeps; put what "
                    "matters in its result when it is done, or create a follow-up task",
                )
            tasks.event(seq, actor, "note", task.state, now, task.assignee_name, note)
            mails += [
                (task.creator, text_for(task, actor.name, "note", "creator", note)),
                (task.assignee, text_for(task, actor.name, "note", "assignee", note)),
            ]
        task = _require(d, r.task, history=True)
        effects, notified, skipped = _announce(d, actor, mails, now)
        answer = p.TaskResult(id=r.id, task=task, notified=notified, skipped=skipped)
        return Outcome(_fit(d, answer), effects)

    return op


def list_tasks(d: Daemon, conn: Connection, r: p.ListTasks) -> Op:
    if r.mine or r.scope in ("directory", "repo"):
        _me(conn)

    def op() -> Outcome:
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        machine = caller.machine_id if caller is not None else _conn_machine(conn)
        if r.state is not None:
            states: tuple[str, ...] = (r.state,)
        else:
            states = LIVE + FINAL if r.final else LIVE
        where, args = [], []
        if r.scope != "all":
            where.append("machine_id = ?")
            args.append(machine)
        if caller is not None and r.scope == "directory":
            where.append("cwd = ?")
            args.append(caller.cwd)
        elif caller is not None and r.scope == "repo":
            where.append("coalesce(repo, cwd) = ?")
            args.append(caller.git_root or caller.cwd)
        if r.mine and caller is not None:
            where.append("(creator = ? OR assignee = ?)")
            args += [caller.id, caller.id]
        if caller is not None:  # isolation groups: tasks made in groups the caller may see
            seen, seen_args = groups.sql_visible(caller, "creator")
            where.append(f"({seen} OR assignee = ?)")
            args += [*seen_args, caller.id]
        rows = d.store.tasks.listing(states, r.limit, " AND ".join(where), args)
        found = [_short(t) for t, _machine in rows]
        kept, spent = 0, 0
        for task in found:  # newest first: the oldest are left out
            spent += len(msgspec.msgpack.encode(task))
            if kept and spent > d.frame_budget:
                break
            kept += 1
        return Outcome(p.TaskList(id=r.id, tasks=found[:kept], omitted=len(found) - kept))

    return op


def task_info(d: Daemon, conn: Connection, r: p.TaskInfo) -> Op:
    def op() -> Outcome:
        viewer = d.store.peer(conn.peer_id) if conn.peer_id else None
        task = _require(d, r.task, history=True, viewer=viewer)
        return Outcome(_fit(d, p.TaskResult(id=r.id, task=task)))

    return op


# --------------------------------------------------------------------------- housekeeping


def reopen_orphans(d: Daemon, now: float) -> list[Effect]:
    """In the sweep's batch: tasks whose assignee has been gone for ``task_grace`` with no
    successor of its name are open to anyone again, and their creators are told."""
    effects: list[Effect] = []
    grace = d.settings.task_grace
    for task, _machine in d.store.tasks.orphaned(now - grace):
        gone = d.store.peer(task.assignee or "")
        creator = d.store.peer(task.creator)
        actor = gone or creator
        if actor is None:  # both forgotten: reopen without a word
            d.store.tasks.conn.execute(
                "UPDATE tasks SET state = 'open', assignee = NULL, assignee_name = NULL, "
                "updated = ? WHERE seq = ?",
                (now, task_seq(task.id)),
            )
            continue
        name = task.assignee_name or "its assignee"
        reason = f"{name} is gone and no session of that name came back within {grace:g}s"
        d.store.tasks.change(
            task_seq(task.id), actor, "reopened", now, state="open", assignee=None, text=reason
        )
        if creator is None or creator.pending >= d.settings.queue_limit:
            continue
        text = (
            f'[claude-peers task {task.id}] Your task {task.id} "{task.title}" is open again: '
            f"{reason}. Anyone in its {_where(task)} can claim it now; to give it to someone, "
            f'call {TOOL}(task_id="{task.id}", assignee="<name>").'
        )
        msg = d.store.send(actor, creator, text, None, now, d.settings.message_ttl)
        effects += d.mail_effects(msg)
    return effects


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.CreateTask: create_task,
    p.UpdateTask: update_task,
    p.ListTasks: list_tasks,
    p.TaskInfo: task_info,
}
SINGLE_STATEMENT: frozenset[type[p.Request[Any]]] = frozenset({p.ListTasks, p.TaskInfo})
"""Of these, the ones that write at most one SQL statement (none: they only read)."""
