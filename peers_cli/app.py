"""``peers``: the command line for humans and scripts.

Tables for people, ``--json`` for scripts. Every failure is one line on stderr and a
non-zero exit: 1 for a refused request or bad input, 2 for usage errors, 3 when the
daemon cannot be reached.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from peers_mcp import delivery, gitstate, render, wakes
from peers_mcp.render import detag
from peersd import __version__, identity
from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.errors import Code, DaemonUnreachable, PeersError

from . import admin, dashboard, federation_cmds, install_cmds, messages
from .common import (
    EXIT_FAILED,
    JsonOpt,
    State,
    age,
    ago,
    clock,
    connect,
    die,
    emit_json,
    err,
    errors,
    out,
    safe,
    settings,
)
from .daemon_cmds import daemon_app, daemon_status, hub_app
from .install_cmds import install_app, uninstall_app

app = typer.Typer(
    name="peers",
    help="Talk to the claude-peers daemon: see the agent sessions on this machine and "
    "exchange messages with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(daemon_app, name="daemon")
app.add_typer(install_app, name="install")
app.add_typer(uninstall_app, name="uninstall")
app.add_typer(hub_app, name="hub")
app.add_typer(federation_cmds.federation_app, name="federation")

WRAPPERS = {"uv", "uvx", "pipx", "env", "nice", "timeout", "time", "nohup", "stdbuf", "peers"}
"""Processes between a shell and ``peers`` that are not the session the user means."""


def _session_pid() -> int:
    """The process this command speaks for: the shell (or agent) that ran it."""
    first = os.getppid()
    pid = first
    for pid in itertools.chain([first], identity.ancestors(first, limit=7)):
        name = identity.process_name(pid)
        if not (name in WRAPPERS or name.startswith("python")):
            return pid
    return pid  # only wrappers up to the top: the outermost one


def become_peer(client: Client) -> p.Peer:
    """Act as the agent session this command runs inside, else as a CLI peer for the shell.

    Run from an agent's shell tool the CLI speaks as that agent; run by a person it is a
    peer of its own (client ``cli``) whose mail waits for that terminal.
    """
    try:
        return client.bind(p.Attach(id=0, session_id=os.environ.get("CLAUDE_CODE_SESSION_ID")))
    except PeersError as e:
        if e.code != Code.UNKNOWN_PEER:
            raise
    return client.bind(session_registration(settings(), _session_pid(), "cli", receive="poll"))


def read_text(text: str) -> str:
    if text == "-":
        if sys.stdin is None or sys.stdin.closed:
            die("no standard input to read the message from")
        text = sys.stdin.read()
    if not text.strip():
        die("the message is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings().max_text:
        die(f"message is {size} bytes; the limit is {settings().max_text} bytes")
    return text


# --------------------------------------------------------------------------- root


def _version(value: bool) -> None:
    if value:
        out.print(f"claude-peers {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    socket: Annotated[
        str | None, typer.Option(help="Daemon socket (env CLAUDE_PEERS_SOCKET).")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Config file (env CLAUDE_PEERS_CONFIG).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    State.overrides = {"socket": socket, "config": config}
    State.settings = None


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Is the daemon running? Its version, pid, peers and mail counts."""
    daemon_status(as_json)


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """The peer this command speaks as (the agent session around it, or this shell)."""
    with errors(), connect() as client:
        peer = become_peer(client)
    if as_json:
        emit_json(peer)
        return
    show_peer(peer)


def show_peer(peer: p.Peer) -> None:
    rows = [
        ("name", peer.name),
        ("id", peer.id),
        ("client", peer.client),
        ("state", peer.state),
        ("agent pid", str(peer.agent_pid)),
        ("host", peer.host),
        ("cwd", peer.cwd),
        ("repo", peer.git_root or "-"),
        ("branch", peer.branch or "-"),
        ("group", peer.group or "-"),
        ("receives by", peer.receive),
        ("pending mail", str(peer.pending)),
        ("summary", peer.summary or "-"),
    ]
    for key, value in rows:
        out.print(f"[bold]{key:>13}[/]  {safe(value)}")


@app.command("peers")
def list_peers(
    scope: Annotated[
        str,
        typer.Option(help="machine, directory, repo, group, or all (every machine in hub mode)."),
    ] = "machine",
    include_gone: Annotated[
        bool, typer.Option("--gone", help="Also list sessions that have ended.")
    ] = False,
    group: Annotated[
        str | None, typer.Option("--group", help="Only sessions in this isolation group.")
    ] = None,
    network: Annotated[
        bool,
        typer.Option("--network", help="Also the live peers of every federated machine (NATS)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The agent sessions the daemon knows, and how each can receive mail."""
    if network:
        scope = "network"
    elif scope not in ("machine", "directory", "repo", "all", "group"):
        die(f"unknown scope {scope!r}: use machine, directory, repo, group or all")
    with errors(), connect() as client:
        if scope in ("directory", "repo", "group"):
            become_peer(client)
        reply = client.request(
            p.ListPeers, scope=scope, include_gone=include_gone, include_self=True, group=group
        )
    peers: list[p.Peer] = reply.peers
    more = (
        f"{reply.omitted} more not shown: the list would not fit in one answer "
        "(a narrower --scope shows fewer)."
        if reply.omitted
        else ""
    )
    if as_json:
        emit_json(peers)
        if more:
            err.print(more)  # stdout stays the list it always was
        return
    if not peers:
        out.print("No peers yet. Sessions appear here once their MCP server or CLI registers.")
        return
    hosts = {peer.host for peer in peers}
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns: tuple[str, ...] = ("NAME", "ID", "CLIENT", "STATE", "RECEIVES", "REACH", "MAIL")
    columns += ("READ", "SEEN", "WHERE", "BRANCH")
    grouped = any(peer.group for peer in peers)  # the column only once groups are in use
    if grouped:
        columns += ("GROUP",)
    for col in (*columns, "FILES", "SUMMARY"):
        table.add_column(col, no_wrap=col not in ("WHERE", "FILES", "SUMMARY"), overflow="fold")
    for peer in peers:
        name = peer.name if len(hosts) == 1 and not network else f"{peer.name}@{peer.host}"
        name = f"[dim]{safe(name)} (gone)[/]" if peer.state == "gone" else safe(name)
        where = peer.git_root or peer.cwd
        files = ", ".join(peer.recent_files) + (
            ", …" if peer.files > len(peer.recent_files) else ""
        )
        note = f"[{peer.note}] " if peer.note else ""
        cells = [
            name,
            peer.id,
            peer.client,
            ("gone" if peer.state == "gone" else peer.status or "-")
            + (f" ({wakes.short(peer.wake)} {ago(peer.wake.at)})" if peer.wake else ""),
            peer.receive,
            (peer.reach or "-").replace("_", " "),
            str(peer.pending) if peer.pending else "-",
            ago(peer.last_read),
            ago(peer.last_seen),
            safe(where),
            safe(peer.branch or "-"),
            *([safe(peer.group or "-")] if grouped else []),
            f"{peer.files}: {safe(files)}" if peer.files else "-",
            safe(note + (peer.summary or "")),
        ]
        table.add_row(*cells)
    out.print(table)
    if more:
        out.print(more)


@app.command()
def send(
    to: Annotated[str, typer.Argument(help="Peer name, name@host, or id.")],
    text: Annotated[str, typer.Argument(help="The message; '-' reads standard input.")],
    reply_to: Annotated[
        str | None, typer.Option("--reply-to", help="Id of the message this answers.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="A typed request: question, review_request, handoff, context_share, decision, "
            "approval_request, approval, verification_request, verification.",
        ),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "-f",
            "--field",
            help="A field of the kind, name=value (repeat; files once per file).",
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="A subject for a new thread.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message. It is stored before the id is printed and waits until read."""
    body = read_text(text)
    with errors():
        typed = messages.typed_from(kind, field or [])
    context = gitstate.context(os.getcwd())
    with errors(), connect() as client:
        me = become_peer(client)
        sent = client.request(
            p.Send,
            to=to,
            text=body,
            reply_to=reply_to,
            typed=typed,
            subject=subject,
            context=context,
        )
    if as_json:
        emit_json(
            {
                "message_id": sent.message_id,
                "to": sent.to,
                "to_name": sent.to_name,
                "from": me.id,
                "from_name": me.name,
                "reach": sent.reach,
                "pending": sent.pending,
                "last_read": sent.last_read,
                "expires_at": sent.expires_at,
            }
        )
        return
    out.print(f"sent {sent.message_id} to {safe(sent.to_name)} ({sent.to})")
    health = render.health(sent.reach, sent.pending, sent.last_read, sent.expires_at)
    out.print(f"  delivery to {safe(sent.to_name)}: {safe(health)}")


@app.command()
def broadcast(
    scope: Annotated[str, typer.Argument(help="machine, directory, repo or group.")],
    text: Annotated[str, typer.Argument(help="The message; '-' reads standard input.")],
    as_json: JsonOpt = False,
) -> None:
    """Send one message to every other peer in a scope."""
    if scope not in ("machine", "directory", "repo", "group"):
        die(f"unknown scope {scope!r}: use machine, directory, repo or group")
    body = read_text(text)
    context = gitstate.context(os.getcwd())
    with errors(), connect() as client:
        become_peer(client)
        reply = client.request(p.Broadcast, scope=scope, text=body, context=context)
    if as_json:
        emit_json(reply.sent)
        return
    if not reply.sent:
        out.print(f"nobody else in scope {scope}; nothing sent")
        return
    for item in reply.sent:
        out.print(f"sent {item.message_id} to {safe(item.to_name)} ({item.to})")
        health = render.health(item.reach, item.pending, item.last_read, item.expires_at)
        out.print(f"  delivery to {safe(item.to_name)}: {safe(health)}")


def show_message(msg: p.Message, unread: bool = False) -> None:
    reply = f" reply to {msg.reply_to}" if msg.reply_to else ""
    if msg.thread and msg.thread not in (msg.id, msg.reply_to):
        reply += f" (thread {msg.thread})"
    if msg.subject:
        reply += f" re: {detag(render.inline(msg.subject))}"
    mark = "[bold yellow]new[/] " if unread else ""
    # An unread message being shown is read by this very printing: no state to report.
    state = "" if unread else f"  {msg.state}"
    out.print(
        f"{mark}[bold]{safe(msg.sender_name)}[/] → {safe(msg.recipient_name)}  "
        f"[dim]{clock(msg.created)}  {msg.id}{reply}{state}"
        + (f" via {msg.delivered_via}" if msg.delivered_via else "")
        + "[/]"
    )
    for line in msg.text.split("\n"):
        # detag: an agent may run this in its shell, and the output reaches its model
        out.print(f"  {safe(detag(line))}")
    messages.show_extras(msg)


@app.command()
def inbox(
    peek: Annotated[
        bool, typer.Option("--peek", help="Show waiting mail without marking it read.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Read the mail waiting for this shell's peer (marks it delivered once printed).

    A person at a terminal gets everything claimed, whole. Run by an agent (in its
    shell) or into a pipe, the output may be cut short by whoever reads it (Claude Code
    keeps about 30,000 characters of a command's output), and what is printed is marked
    read: there it shows what fits ``render.SHELL_BUDGET``, cuts a message too long for
    it, and leaves the rest waiting.
    """
    with errors(), connect() as client:
        me = become_peer(client)
        if peek:
            # History pages newest first; show the oldest, which is what a read claims.
            page = client.request(p.History, limit=1000, state="queued", direction="in")
            msgs = list(reversed(page.messages))[:limit]
            show_messages(msgs, as_json)
            return
        bounded = me.client != "cli" or not sys.stdout.isatty()

        def show(plan: delivery.Plan) -> None:
            if not bounded:
                show_messages(plan.shown, as_json)
            elif as_json:
                emit_json([_shown_view(m, plan) for m in plan.shown])
                if plan.rest:
                    err.print(_waiting(plan))
            elif me.client != "cli":
                # An agent's shell: the mail as its model sees it everywhere else (quoted,
                # with the calls that answer it and that read on).
                sys.stdout.write(plan.text + "\n")
            else:
                for msg in plan.shown:
                    end = plan.cut.get(msg.id)
                    if end is None:
                        show_message(msg, unread=True)
                        continue
                    show_message(msgspec.structs.replace(msg, text=msg.text[:end]), unread=True)
                    out.print(
                        f"  [cut: {len(msg.text) - end:,} more characters not shown; "
                        "`peers history --mine --json` has the whole text]",
                        markup=False,
                    )
                if plan.rest:
                    out.print(_waiting(plan), markup=False)
            sys.stdout.flush()

        how: dict[str, Any] = {"budget": None, "rendered": False}
        if bounded:
            how = {"budget": render.SHELL_BUDGET, "client": me.client}
        try:
            plan = delivery.deliver(InboxMailbox(client), show, "cli", limit, **how)
        except delivery.Unsettled as e:
            if not e.acked:  # printed, but maybe not marked read: it may come again
                die(
                    f"could not mark the {len(e.plan.shown)} message(s) above read "
                    f"({e.cause}); they may be shown again"
                )
            plan = e.plan  # only the rest is not released: its leases run out
        if plan is None:
            show_messages([], as_json)


def _shown_view(msg: p.Message, plan: delivery.Plan) -> dict[str, Any]:
    """A message as ``--json`` prints it; one shown cut holds the text shown, and ``cut``
    says how much of how much."""
    view: dict[str, Any] = msgspec.to_builtins(msg)
    end = plan.cut.get(msg.id)
    if end is not None:
        view["text"] = msg.text[:end]
        view["cut"] = {"shown": end, "length": len(msg.text)}
    return view


def _waiting(plan: delivery.Plan) -> str:
    return (
        f"{len(plan.rest)} more message(s) are waiting: they did not fit here. "
        "Run `peers inbox` again to read them."
    )


class InboxMailbox:
    """This shell's mail through the blocking client, for ``delivery.deliver``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def claim(self, limit: int, filters: dict[str, Any]) -> list[p.Message]:
        return self.client.request(p.Claim, limit=limit, **filters).messages

    def ack(self, ids: list[str], via: str) -> None:
        self.client.request(p.Ack, message_ids=ids, via=via)

    def release(self, ids: list[str]) -> None:
        self.client.request(p.Release, message_ids=ids)


def show_messages(msgs: list[p.Message], as_json: bool) -> None:
    if as_json:
        emit_json(msgs)
    elif not msgs:
        out.print("No new mail.")
    else:
        for msg in msgs:
            show_message(msg, unread=True)
    sys.stdout.flush()


@app.command()
def history(
    peer: Annotated[
        str | None, typer.Option("--peer", help="Only mail to or from this peer.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    mine: Annotated[
        bool, typer.Option("--mine", help="Only this shell's own mail (default: all peers).")
    ] = False,
    thread: Annotated[
        str | None,
        typer.Option("--thread", help="Only this thread: the id of any message in it."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent messages, newest last: who wrote to whom, and whether it was delivered."""
    with errors(), connect() as client:
        if mine:
            become_peer(client)
        page = client.request(p.History, peer=peer, limit=limit, mine=mine, thread=thread)
    msgs = list(reversed(page.messages))
    if as_json:
        emit_json(msgs)
        return
    if not msgs:
        out.print("No messages.")
        return
    for msg in msgs:
        show_message(msg)


@app.command("message-status")
def message_status(
    message_ids: Annotated[list[str], typer.Argument(help="Message ids, as `send` printed.")],
    as_json: JsonOpt = False,
) -> None:
    """Whether messages are still queued, delivered (when, how) or expired."""
    with errors(), connect() as client:
        items = client.request(p.MessageStatus, message_ids=message_ids).items
    if as_json:
        emit_json(items)
    else:
        for item in items:
            if not item.found:
                out.print(f"{item.message_id}: unknown")
            elif item.state == "delivered":
                out.print(
                    f"{item.message_id}: delivered to {safe(item.to_name or '?')} "
                    f"{ago(item.delivered_at)} via {item.delivered_via}"
                )
            else:
                woken = f"; {safe(wakes.describe(item.wake))}" if item.wake else ""
                out.print(f"{item.message_id}: {item.state} for {safe(item.to_name or '?')}{woken}")
            if item.found:
                for line in messages.status_lines(item):
                    out.print(line)
    if any(not item.found for item in items):
        raise typer.Exit(EXIT_FAILED)


def describe(event: p.Frame) -> str:
    if isinstance(event, p.TrafficEvent):
        via = f" via {event.via}" if event.via else ""
        preview = f": {event.preview}" if event.preview else ""
        return (
            f"{event.what:<9} {event.message_id} {event.sender_name} → "
            f"{event.recipient_name}{via}{preview}"
        )
    if isinstance(event, p.PeerJoined):
        peer = event.peer
        return f"joined    {peer.name} ({peer.id}, {peer.client}) in {peer.git_root or peer.cwd}"
    if isinstance(event, p.PeerLeft):
        return f"left      {event.name} ({event.peer_id}): {event.reason}"
    if isinstance(event, p.PeerRenamed):
        return f"renamed   {event.old} → {event.new} ({event.peer_id})"
    if isinstance(event, p.PeerChanged):
        return f"changed   {event.what} of {event.peer_id or '?'}"
    if isinstance(event, p.Escalation):
        return (
            f"waiting   {event.waiting} message(s) for {event.name} ({event.peer_id}) "
            f"unread for {age(event.oldest_age)}"
        )
    return type(event).__name__


@app.command()
def watch(as_json: JsonOpt = False) -> None:
    """Stream what happens live (peers joining and leaving, mail sent, delivered, or left
    waiting too long)."""
    with errors():
        client = connect()
    if not as_json:
        err.print("[dim]watching peersd; Ctrl-C to stop[/]")
    try:
        while True:
            try:
                with errors():
                    client.request(p.Subscribe, kinds=["peers", "traffic"])
                _stream(client, as_json)
            except DaemonUnreachable as e:
                # A live view outlasts daemon restarts: say so, wait, pick up again.
                client.close()
                err.print(f"[yellow]peersd went away ({safe(str(e))}); waiting for it…[/]")
                client = _reconnect()
                err.print("[green]reconnected[/]")
    except KeyboardInterrupt:
        client.close()
        return


def _stream(client: Client, as_json: bool) -> None:
    while True:
        event = client.next_event(None)
        if event is None:
            continue
        if as_json:
            record = msgspec.to_builtins(event)
            record["type"] = type(event).__name__
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            out.print(f"[dim]{datetime.now():%H:%M:%S}[/] {safe(describe(event))}")


def _reconnect() -> Client:
    """Wait (without starting a daemon) until peersd answers again."""
    delay = 0.2
    while True:
        time.sleep(delay)
        client = Client(settings(), kind="cli", autostart=False)
        try:
            client.connect()
            return client
        except DaemonUnreachable:
            delay = min(delay * 2, 5.0)


# Orphans, cleanup, kill, audit (peers_cli/admin.py).
admin.register(app)

# The overseer's live web view (peers_cli/dashboard).
dashboard.register(app)


@app.command()
def demo() -> None:
    """Start the daemon if needed and watch two demo peers ask and answer."""
    from .demo import run_demo

    with errors():
        run_demo(settings(), out)


# doctor (peers_cli/install_cmds.py; install and uninstall are sub-apps above).
install_cmds.register(app)


# Working on the same repository: files, claim, release, note, guard (peers_cli/coordination.py).
from . import coordination as _coordination  # noqa: E402

_coordination.register(sys.modules[__name__])
messages.register(sys.modules[__name__])

# Shared work state: tasks, task, decisions, decide, revoke-decision (peers_cli/work.py).
from . import work as _work  # noqa: E402

_work.register(sys.modules[__name__])
# Proposals and the period report: proposals, propose, vote, report (peers_cli/proposals.py).
from . import proposals as _proposals  # noqa: E402

_proposals.register(sys.modules[__name__])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
