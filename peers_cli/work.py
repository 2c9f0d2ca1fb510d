"""CLI commands for shared work state: ``tasks``, ``task add|claim|done|cancel|assign|
open|note|show``, ``decisions``, ``decide`` and ``revoke-decision`` (``docs/coordination.md``).

``register(app_module)`` adds them to the ``peers`` app; they use its helpers (settings,
errors, the peer this command speaks as, output) so they behave like every other command.
Run by a person, a command acts as the shell's CLI peer, which may change any task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from peersd import protocol as p

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TaskArg = Annotated[str, typer.Argument(help="The task id (t-12, or 12).")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="A note for its history.")]
SCOPES = ("machine", "directory", "repo")


def register(cli: ModuleType) -> None:
    """Add the commands to ``cli.app`` (the ``peers_cli.app`` module, however it was run)."""
    app: typer.Typer = cli.app
    out, err, safe, errors, connect = cli.out, cli.err, cli.safe, cli.errors, cli.connect
    die: Callable[..., NoReturn] = cli.die
    task_app = typer.Typer(help="Add and change tasks (see `peers tasks`).", no_args_is_help=True)
    app.add_typer(task_app, name="task")

    def when(ts: float | None) -> str:
        return time.strftime("%m-%d %H:%M", time.localtime(ts)) if ts else "-"

    def call(kind: type[p.Request[Any]], **fields: Any) -> Any:
        with errors(), connect() as client:
            cli.become_peer(client)
            return client.request(kind, **fields)

    def show_change(reply: p.TaskResult, as_json: bool) -> None:
        if as_json:
            cli.emit_json(reply)
            return
        t = reply.task
        who = f" ({'claimed by' if t.state == 'claimed' else 'assigned to'} {t.assignee_name})"
        out.print(f"{t.id} {t.state}{safe(who) if t.assignee_name else ''}: {safe(t.title)}")
        if reply.notified:
            out.print(f"  mailed {safe(', '.join(reply.notified))}")
        for s in reply.skipped:
            out.print(f"  not mailed: {safe(s)}")

    # ---------------------------------------------------------------- tasks

    @app.command("tasks")
    def tasks(
        mine: Annotated[bool, typer.Option("--mine", help="Only tasks of this session.")] = False,
        all_: Annotated[bool, typer.Option("--all", help="Done and cancelled ones too.")] = False,
        state: Annotated[
            str | None, typer.Option(help="Only this state: open, claimed, done, cancelled.")
        ] = None,
        scope: Annotated[
            str, typer.Option(help="machine (default), directory, repo, or all.")
        ] = "machine",
        as_json: JsonOpt = False,
    ) -> None:
        """Tasks: open and claimed ones (with --all, finished ones too), newest first."""
        if state is not None and state not in ("open", "claimed", "done", "cancelled"):
            die(f"unknown state {state!r}: use open, claimed, done or cancelled")
        if scope not in (*SCOPES, "all"):
            die(f"unknown scope {scope!r}: use machine, directory, repo or all")
        reply: p.TaskList = call(p.ListTasks, mine=mine, state=state, final=all_, scope=scope)
        found = reply.tasks
        if reply.omitted:
            err.print(f"{reply.omitted} older task(s) left out to keep the answer small.")
        if as_json:
            cli.emit_json(found)
            return
        if not found:
            out.print("No tasks" + ("" if all_ or state else " open or claimed") + ".")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("ID", "STATE", "TITLE", "ASSIGNEE", "CREATOR", "UPDATED"):
            table.add_column(col, overflow="fold", no_wrap=col in ("ID", "STATE"))
        for t in found:
            table.add_row(
                t.id,
                t.state,
                safe(t.title),
                safe(t.assignee_name or f"(anyone: {t.scope})"),
                safe(t.creator_name),
                when(t.updated),
            )
        out.print(table)

    @task_app.command("add")
    def task_add(
        title: Annotated[str, typer.Argument(help="What is to be done, in one line.")],
        description: Annotated[str, typer.Option("--description", "-d", help="Details.")] = "",
        to: Annotated[
            str | None, typer.Option("--to", help="Assign it to this peer (name or id).")
        ] = None,
        scope: Annotated[
            str, typer.Option(help="Who may take it unassigned: machine, directory, repo.")
        ] = "repo",
        as_json: JsonOpt = False,
    ) -> None:
        """Create a task, for a peer (--to) or for anyone in scope to claim."""
        if scope not in SCOPES:
            die(f"unknown scope {scope!r}: use machine, directory or repo")
        reply = call(p.CreateTask, title=title, description=description, assignee=to, scope=scope)
        show_change(reply, as_json)

    def change(as_json: bool, task: str, **fields: Any) -> None:
        show_change(call(p.UpdateTask, task=task, **fields), as_json)

    @task_app.command("claim")
    def task_claim(task: TaskArg, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
        """Take a task: it is yours and in progress."""
        change(as_json, task, state="claimed", note=note)

    @task_app.command("done")
    def task_done(
        task: TaskArg,
        result: Annotated[
            str, typer.Option("--result", "-r", help="What came of it; its creator is mailed.")
        ] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Mark a claimed task done."""
        change(as_json, task, state="done", result=result)

    @task_app.command("cancel")
    def task_cancel(
        task: TaskArg,
        why: Annotated[str, typer.Option("--why", help="Why it will not be done.")] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Cancel a task (its creator and assignee are mailed)."""
        change(as_json, task, state="cancelled", result=why)

    @task_app.command("assign")
    def task_assign(
        task: TaskArg,
        to: Annotated[str, typer.Argument(help="The peer (name, name@host or id).")],
        note: NoteOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Give a task to a peer (the new and the previous assignee are mailed)."""
        change(as_json, task, assignee=to, note=note)

    @task_app.command("open")
    def task_open(task: TaskArg, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
        """Hand a task back, or decline one assigned to you: open to anyone in its scope."""
        change(as_json, task, state="open", note=note)

    @task_app.command("note")
    def task_note(
        task: TaskArg,
        text: Annotated[str, typer.Argument(help="The note.")],
        as_json: JsonOpt = False,
    ) -> None:
        """Add a note to a task's history (its creator and assignee are mailed)."""
        if not text.strip():
            die("the note is empty")
        change(as_json, task, note=text)

    @task_app.command("show")
    def task_show(task: TaskArg, as_json: JsonOpt = False) -> None:
        """One task with its whole history."""
        t: p.Task = call(p.TaskInfo, task=task).task
        if as_json:
            cli.emit_json(t)
            return
        out.print(f"[bold]{t.id}[/] {t.state}: {safe(t.title)}")
        out.print(f"  created by {safe(t.creator_name)} {when(t.created)}, scope {t.scope}")
        if t.assignee_name:
            how = "claimed by" if t.state == "claimed" else "assigned to"
            out.print(f"  {how} {safe(t.assignee_name)}")
        if t.description:
            out.print(f"  description: {safe(t.description)}")
        if t.result:
            out.print(f"  result: {safe(t.result)}")
        if t.history_total > len(t.history):
            out.print(f"  (the last {len(t.history)} of {t.history_total} history entries)")
        for e in t.history:
            to = f" → {e.assignee_name}" if e.assignee_name else ""
            text = f": {e.text}" if e.text else ""
            out.print(
                f"  {when(e.at)} {safe(e.actor_name)} {e.what}{safe(to)} ({e.state}){safe(text)}"
            )

    # ---------------------------------------------------------------- decisions

    @app.command("decisions")
    def decisions(
        key: Annotated[str | None, typer.Option(help="Exactly this key.")] = None,
        category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
        search: Annotated[
            str | None, typer.Option(help="Words in the key, value, rationale or category.")
        ] = None,
        revoked: Annotated[bool, typer.Option("--revoked", help="Revoked ones too.")] = False,
        history: Annotated[bool, typer.Option("--history", help="Earlier versions too.")] = False,
        everywhere: Annotated[
            bool, typer.Option("--everywhere", help="Every repository's, not just this one's.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Decisions in force for this repository (or directory), newest first."""
        found: list[p.Decision] = call(
            p.QueryDecisions,
            key=key,
            category=category,
            text=search,
            revoked=revoked,
            history=history,
            everywhere=everywhere,
        ).decisions
        if as_json:
            cli.emit_json(found)
            return
        if not found:
            out.print("No decisions" + (" match." if key or category or search else " yet."))
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("KEY", "VALUE", "WHY", "BY", "WHEN", "V"):
            table.add_column(col, overflow="fold", no_wrap=col in ("V", "WHEN"))
        if everywhere:
            table.add_column("WHERE", overflow="fold")
        grouped = any(x.group for x in found)  # the operator reads every group's board
        if grouped:
            table.add_column("GROUP", overflow="fold")
        for x in found:
            key_cell = x.key + (f" [{x.category}]" if x.category else "")
            value = x.value + (" (revoked)" if x.state == "revoked" else "")
            row = [safe(key_cell), safe(value), safe(x.rationale), safe(x.by_name), when(x.at)]
            row.append(str(x.version))
            if everywhere:
                row.append(safe(x.place))
            if grouped:
                row.append(safe(x.group or "-"))
            table.add_row(*row)
            for v in x.history:
                old = [f"  v{v.version}", safe(v.value), safe(v.rationale), safe(v.by_name)]
                pad = [""] * (everywhere + grouped)
                table.add_row(*old, when(v.at), v.state, *pad)
        out.print(table)

    @app.command("decide")
    def decide(
        key: Annotated[str, typer.Argument(help="The decision's key, e.g. db.engine.")],
        value: Annotated[str, typer.Argument(help="What was decided.")],
        why: Annotated[str, typer.Option("--why", help="Why (required).")] = "",
        category: Annotated[str | None, typer.Option(help="A grouping, e.g. arch.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Post a decision for this repository; its live sessions are mailed it once."""
        if not why.strip():
            die("say why with --why: a decision is kept with its rationale")
        reply = call(p.PostDecision, key=key, value=value, rationale=why, category=category)
        show_decision(reply, as_json, "decided")

    @app.command("revoke-decision")
    def revoke_decision(
        key: Annotated[str, typer.Argument(help="The decision's key.")],
        why: Annotated[str, typer.Option("--why", help="Why it no longer holds (required).")] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Withdraw a decision of this repository; its live sessions are mailed."""
        if not why.strip():
            die("say why with --why")
        show_decision(call(p.RevokeDecision, key=key, reason=why), as_json, "revoked")

    def show_decision(reply: p.DecisionResult, as_json: bool, what: str) -> None:
        if as_json:
            cli.emit_json(reply)
            return
        x = reply.decision
        out.print(f"{what} {safe(x.key)} = {safe(x.value)} (version {x.version})")
        if reply.notified:
            out.print(f"  mailed {safe(', '.join(reply.notified))}")
        for s in reply.skipped:
            out.print(f"  not mailed: {safe(s)}")
