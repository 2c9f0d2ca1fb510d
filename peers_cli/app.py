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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peers_mcp import delivery, render, wakes
from peers_mcp.render import clean, detag
from peersd import __version__, identity
from peersd import protocol as p
from peersd.client import Client, running_status, session_registration, shutdown_and_wait
from peersd.config import ConfigError, Settings, load
from peersd.errors import Code, DaemonUnreachable, PeersError

app = typer.Typer(
    name="peers",
    help="Talk to the claude-peers daemon: see the agent sessions on this machine and "
    "exchange messages with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
daemon_app = typer.Typer(
    help="Run, start, stop or inspect the peersd daemon.", no_args_is_help=True
)
app.add_typer(daemon_app, name="daemon")
install_app = typer.Typer(
    help="Wire Claude Code or Codex to claude-peers (MCP server and hooks), or run "
    "peersd as a service (systemd --user, launchd).",
    no_args_is_help=True,
)
app.add_typer(install_app, name="install")
uninstall_app = typer.Typer(
    help="Remove what `peers install` added (the rest of your config stays).",
    no_args_is_help=True,
)
app.add_typer(uninstall_app, name="uninstall")
hub_app = typer.Typer(help="Manage a hub (peersd with a TCP listener).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # piped: do not fold tables to 80 columns
    out = Console(highlight=False, soft_wrap=True, width=max(160, out.width))
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
WRAPPERS = {"uv", "uvx", "pipx", "env", "nice", "timeout", "time", "nohup", "stdbuf", "peers"}
"""Processes between a shell and ``peers`` that are not the session the user means."""


def safe(text: str) -> str:
    """Text a peer may have written, for the terminal: control characters (escape
    sequences, carriage returns, bidi overrides) shown rather than obeyed, markup escaped.
    Rich passes ESC through as it is, so a message could otherwise restyle or clear the
    user's terminal."""
    return escape(clean(text))


class State:
    overrides: dict[str, Any] = {}
    settings: Settings | None = None


def settings() -> Settings:
    if State.settings is None:
        try:
            State.settings = load(State.overrides)
        except ConfigError as e:
            die(str(e))
    return State.settings


def die(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]peers:[/] {safe(message)}")
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn library errors into one clear line and an exit code."""
    try:
        yield
    except DaemonUnreachable as e:
        die(str(e), EXIT_UNREACHABLE)
    except PeersError as e:
        message = e.message
        if e.code == Code.UNKNOWN_PEER and e.candidates:
            message += f" (did you mean: {', '.join(e.candidates)}?)"
        elif e.code == Code.UNKNOWN_PEER:
            message += " (see `peers peers`)"
        die(message)
    except ConfigError as e:
        die(str(e))
    except UnicodeEncodeError as e:  # undecodable bytes in argv, stdin or cwd
        bad = e.object[max(0, e.start - 20) : e.end + 20]
        die(f"peersd only takes UTF-8 text; this is not: {bad!r}")


def connect(autostart: bool | None = None) -> Client:
    client = Client(settings(), kind="cli", autostart=autostart)
    client.connect()
    return client


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


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False) + "\n")


def ago(ts: float | None) -> str:
    """``3m ago`` (render's wording), or ``-`` in a table cell."""
    return render.since(ts) if ts else "-"


def clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


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


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


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
        ("receives by", peer.receive),
        ("pending mail", str(peer.pending)),
        ("summary", peer.summary or "-"),
    ]
    for key, value in rows:
        out.print(f"[bold]{key:>13}[/]  {safe(value)}")


@app.command("peers")
def list_peers(
    scope: Annotated[
        str, typer.Option(help="machine, directory, repo, or all (every machine in hub mode).")
    ] = "machine",
    include_gone: Annotated[
        bool, typer.Option("--gone", help="Also list sessions that have ended.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The agent sessions the daemon knows, and how each can receive mail."""
    if scope not in ("machine", "directory", "repo", "all"):
        die(f"unknown scope {scope!r}: use machine, directory, repo or all")
    with errors(), connect() as client:
        if scope in ("directory", "repo"):
            become_peer(client)
        reply = client.request(
            p.ListPeers, scope=scope, include_gone=include_gone, include_self=True
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
    for col in (*columns, "FILES", "SUMMARY"):
        table.add_column(col, no_wrap=col not in ("WHERE", "FILES", "SUMMARY"), overflow="fold")
    for peer in peers:
        name = peer.name if len(hosts) == 1 else f"{peer.name}@{peer.host}"
        name = f"[dim]{safe(name)} (gone)[/]" if peer.state == "gone" else safe(name)
        where = peer.git_root or peer.cwd
        files = ", ".join(peer.recent_files) + (
            ", …" if peer.files > len(peer.recent_files) else ""
        )
        note = f"[{peer.note}] " if peer.note else ""
        table.add_row(
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
            f"{peer.files}: {safe(files)}" if peer.files else "-",
            safe(note + (peer.summary or "")),
        )
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
    as_json: JsonOpt = False,
) -> None:
    """Send a message. It is stored before the id is printed and waits until read."""
    body = read_text(text)
    with errors(), connect() as client:
        me = become_peer(client)
        sent = client.request(p.Send, to=to, text=body, reply_to=reply_to)
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
    out.print(f"  reaches {safe(sent.to_name)} by {safe(health)}")


@app.command()
def broadcast(
    scope: Annotated[str, typer.Argument(help="machine, directory or repo.")],
    text: Annotated[str, typer.Argument(help="The message; '-' reads standard input.")],
    as_json: JsonOpt = False,
) -> None:
    """Send one message to every other peer in a scope."""
    if scope not in ("machine", "directory", "repo"):
        die(f"unknown scope {scope!r}: use machine, directory or repo")
    body = read_text(text)
    with errors(), connect() as client:
        become_peer(client)
        reply = client.request(p.Broadcast, scope=scope, text=body)
    if as_json:
        emit_json(reply.sent)
        return
    if not reply.sent:
        out.print(f"nobody else in scope {scope}; nothing sent")
        return
    for item in reply.sent:
        out.print(f"sent {item.message_id} to {safe(item.to_name)} ({item.to})")
        health = render.health(item.reach, item.pending, item.last_read, item.expires_at)
        out.print(f"  reaches {safe(item.to_name)} by {safe(health)}")


def show_message(msg: p.Message, unread: bool = False) -> None:
    reply = f" reply to {msg.reply_to}" if msg.reply_to else ""
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
    as_json: JsonOpt = False,
) -> None:
    """Recent messages, newest last: who wrote to whom, and whether it was delivered."""
    with errors(), connect() as client:
        if mine:
            become_peer(client)
        page = client.request(p.History, peer=peer, limit=limit, mine=mine)
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


# --------------------------------------------------------------------------- orphans, kill


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def find_orphans() -> tuple[list[Any], str | None]:
    """Our orphaned helpers, judged with what the daemon knows of their peers if it runs."""
    from peersd import orphans
    from peersd.endpoint import client_endpoint

    s = settings()
    peers: list[p.Peer] = []
    note = None
    with errors():
        remote = client_endpoint(s).remote
        try:
            with Client(s, kind="cli", autostart=False, timeout=10) as client:
                # A hub lists every machine's peers: keep this machine's.
                reply = client.request(
                    p.ListPeers,
                    scope="all" if remote else "machine",
                    include_gone=True,
                    include_self=True,
                )
            here = identity.machine_id(s.db_path.parent) if remote else None
            peers = [x for x in reply.peers if here is None or x.machine_id == here]
        except DaemonUnreachable:
            note = "peersd is not running: helpers are judged by their parent process only"
    return orphans.scan(s, orphans.known_peers(peers)), note


def _orphan_peer(o: Any) -> str:
    if o.peer_name:
        return f"{o.peer_name} ({o.peer_id})"
    return o.peer_id or "-"


@app.command("orphans")
def list_orphans(as_json: JsonOpt = False) -> None:
    """Our helpers (peers-mcp, peers-hook --wait) whose agent session is gone."""
    found, note = find_orphans()
    if as_json:
        emit_json([o.to_json() for o in found])
        return
    if note:
        err.print(f"[dim]{safe(note)}[/]")
    if not found:
        out.print("No orphaned helpers.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("PID", "KIND", "AGE", "PEER", "WHY"):
        table.add_column(col, no_wrap=col != "WHY", overflow="fold")
    for o in found:
        table.add_row(str(o.pid), o.kind, age(o.age), safe(_orphan_peer(o)), safe(o.why))
    out.print(table)
    out.print("[dim]`peers cleanup` ends them (SIGTERM, then SIGKILL after a grace period).[/]")


@app.command()
def cleanup(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be terminated.")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace", min=0.0, help="Seconds between SIGTERM and SIGKILL (default: kill_grace)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Terminate orphaned helpers: SIGTERM, then SIGKILL if they outlive the grace period."""
    from peersd import orphans

    found, note = find_orphans()
    if note and not as_json:
        err.print(f"[dim]{safe(note)}[/]")
    if dry_run:
        if as_json:
            emit_json([{**o.to_json(), "outcome": "would_terminate"} for o in found])
        elif not found:
            out.print("No orphaned helpers.")
        for o in [] if as_json else found:
            out.print(
                f"would terminate pid {o.pid} {o.kind} (peer {safe(_orphan_peer(o))}): "
                f"{safe(o.why)}"
            )
        return
    actions = orphans.cleanup(found, settings().kill_grace if grace is None else grace)
    if as_json:
        emit_json([a.to_json() for a in actions])
    elif not actions:
        out.print("No orphaned helpers.")
    for a in [] if as_json else actions:
        o = a.orphan
        out.print(
            f"pid {o.pid} {o.kind} (peer {safe(_orphan_peer(o))}): "
            f"{a.outcome.replace('_', ' ')}: {safe(a.detail)}"
        )
    if any(a.outcome in ("still_running", "failed") for a in actions):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def kill(
    peer: Annotated[str, typer.Argument(help="Peer name, name@host, or id.")],
    force: Annotated[
        bool, typer.Option("--force", help="SIGKILL if SIGTERM is ignored for kill_grace.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Terminate a peer's agent process (only if its pid and start time still match)."""
    s = settings()
    with errors(), Client(s, kind="cli", timeout=max(30.0, s.kill_grace + 15)) as client:
        r: p.KillResult = client.request(p.Kill, target=peer, force=force)
    code = EXIT_FAILED if r.outcome == "still_running" else 0
    if as_json:
        record = msgspec.to_builtins(r)
        record.pop("id", None)
        emit_json(record)
        raise typer.Exit(code)
    who = f"{safe(r.name)} ({r.peer_id})"
    if r.outcome == "terminated":
        out.print(f"terminated {who}: {safe(r.detail)}")
    elif r.outcome == "killed":
        out.print(f"killed {who}: {safe(r.detail)}")
    elif r.outcome == "already_gone":
        out.print(f"{who} was already gone: {safe(r.detail)}")
    else:
        die(f"{r.detail} (peers kill {r.name} --force)")
    raise typer.Exit(code)


@app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent kills and orphan cleanups: who did what to which process, and when."""
    with errors(), connect() as client:
        page = client.request(p.Audit, limit=limit)
    records = list(reversed(page.records))
    if as_json:
        emit_json(records)
        return
    if not records:
        out.print("Nothing recorded yet.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("WHEN", "WHO", "WHAT", "TARGET", "DETAIL"):
        table.add_column(col, no_wrap=col not in ("WHO", "DETAIL"), overflow="fold")
    for rec in records:
        target = rec.target or "-"
        if rec.target_name:
            target = f"{rec.target_name} ({rec.target})"
        table.add_row(clock(rec.at), safe(rec.actor), rec.action, safe(target), safe(rec.detail))
    out.print(table)


# --------------------------------------------------------------------------- daemon


def _status_or_none() -> p.DaemonStatus | None:
    return running_status(settings())


def daemon_status(as_json: bool) -> None:
    with errors():
        st = _status_or_none()
    s = settings()
    from . import service

    notes = [] if as_json else service.status_notes(s, st)  # --json has the service record
    if st is None:
        if as_json:
            record: dict[str, Any] = {"running": False, "socket": s.socket, "db": s.db}
            if svc := service.installed_json(s):
                record["service"] = svc
            emit_json(record)
        else:
            out.print(f"peersd is not running (socket {s.socket})")
            for note in notes:
                out.print(f"  {safe(note)}")
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        record = msgspec.to_builtins(st)
        record.pop("id", None)
        record["running"] = True
        record["uptime"] = time.time() - st.started_at
        record["supervised_by"] = service.supervisor_label(st)
        if svc := service.installed_json(s):
            record["service"] = svc
        emit_json(record)
        return
    queued = st.messages.get("queued", 0) + st.messages.get("leased", 0)
    out.print(f"peersd {st.version} running, pid {st.pid}, up {ago(st.started_at)[:-4]}")
    out.print(f"  supervised by  {safe(service.supervisor_label(st))}")
    for note in notes:
        out.print(f"  note: {safe(note)}")
    for warning in st.warnings:
        out.print(f"  [bold yellow]warning:[/] {safe(warning)}")
    out.print(f"  socket         {st.socket}")
    out.print(f"  database       {st.db} (schema v{st.schema})")
    out.print(f"  host           {st.host} ({st.machine_id})")
    out.print(f"  peers          {st.peers_active} active, {st.peers_gone} gone")
    out.print(f"  connections    {st.connections}")
    out.print(
        f"  messages       {queued} waiting, {st.messages.get('delivered', 0)} delivered, "
        f"{st.messages.get('expired', 0)} expired"
    )


@hub_app.command("forget-machine")
def hub_forget_machine(
    machine_id: Annotated[str, typer.Argument(help="The machine id the hub refused.")],
) -> None:
    """Unbind a remote machine id from its secret, so that the next client to use it binds
    its own (for a machine that lost its secret). Run on the hub, over its local socket."""
    with errors(), connect(autostart=False) as client:
        client.request(p.ForgetMachine, machine_id=machine_id)
    out.print(f"forgot machine {safe(machine_id)}: the next client to use it binds its secret")


@hub_app.command("machines")
def hub_machines(as_json: JsonOpt = False) -> None:
    """The remote machine ids bound to a secret on this hub, with when each was first and
    last seen: check them, and forget the ones you do not recognise. Run on the hub."""
    with errors(), connect(autostart=False) as client:
        page = client.request(p.ListMachines)
    if as_json:
        emit_json({"machines": page.machines, "total": page.total})
        return
    if not page.machines:
        out.print("No remote machine is bound to this hub.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("MACHINE", "HOST", "PEERS", "FIRST SEEN", "LAST SEEN"):
        table.add_column(col, no_wrap=True, overflow="fold")
    for m in page.machines:
        table.add_row(
            safe(m.machine_id),
            safe(m.host or "-"),
            str(m.active_peers),
            clock(m.first_seen),
            ago(m.last_seen),
        )
    out.print(table)
    if page.total > len(page.machines):
        out.print(f"{page.total - len(page.machines)} more not shown (least recently seen)")


@daemon_app.command("status")
def daemon_status_cmd(as_json: JsonOpt = False) -> None:
    """Who runs the daemon, its pid, uptime and version."""
    daemon_status(as_json)


@daemon_app.command("run")
def daemon_run() -> None:
    """Run peersd in the foreground (as a supervisor would)."""
    from peersd.lifecycle import run

    raise typer.Exit(run(settings()))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@daemon_app.command("start")
def daemon_start() -> None:
    """Start peersd in the background unless it is already running."""
    with errors():
        st = _status_or_none()
        if st is not None:
            out.print(f"peersd is already running (pid {st.pid})")
            return
        from peersd.autostart import installed_supervisor

        supervisor = installed_supervisor(settings())
        if supervisor is not None:
            # A service owns the socket: start it there, never a competing daemon.
            _run_start(supervisor.start)
            if not _wait(lambda: _status_or_none() is not None, 10):
                die(f"started the {supervisor.kind} service but peersd does not answer")
            st = _status_or_none()
            assert st is not None
            out.print(f"peersd {st.version} started by {supervisor.kind} (pid {st.pid})")
            return
        with Client(settings(), kind="cli", autostart=True) as client:
            st = client.request(p.Status)
    out.print(f"peersd {st.version} started (pid {st.pid}); log: {settings().daemon_log_path}")


def _run_start(command: str) -> None:
    import shlex
    import subprocess

    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        die(f"could not run `{command}`: {e}")
    if done.returncode != 0:
        die(f"`{command}` failed: {(done.stderr or done.stdout).strip()}")


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the running peersd cleanly (mail in flight is finished first)."""
    with errors():
        st = _status_or_none()
        if st is None:
            out.print("peersd is not running")
            return
        if not shutdown_and_wait(settings(), st, 10):
            die(f"peersd (pid {st.pid}) did not stop within 10s")
    out.print(f"peersd stopped (was pid {st.pid})")
    if st.supervisor == "systemd":
        out.print(
            "note: systemd starts it again on the next connection; "
            "use `systemctl --user stop claude-peers.socket` to keep it down"
        )


@daemon_app.command("restart")
def daemon_restart() -> None:
    """Stop peersd if it runs, then start it again."""
    daemon_stop()
    daemon_start()


@app.command()
def demo() -> None:
    """Start the daemon if needed and watch two demo peers ask and answer."""
    from .demo import run_demo

    with errors():
        run_demo(settings(), out)


# --------------------------------------------------------------------------- install


DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
]
ServerNameOpt = Annotated[
    str, typer.Option("--server-name", help="Name of the MCP server in the client's config.")
]


@contextmanager
def install_errors() -> Iterator[None]:
    """Errors of the installers (client configs, service units): one line, exit 1."""
    from .install import InstallError
    from .service import ServiceError

    with errors():
        try:
            yield
        except (InstallError, ServiceError) as e:
            die(str(e))


def show_report(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    for line in report.lines():
        out.print(safe(line))


@install_app.command("claude")
def install_claude(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
    scope: Annotated[str, typer.Option(help="Where to register the MCP server.")] = "user",
) -> None:
    """Register peers-mcp at user scope and add the peers-hook hooks for Claude Code."""
    from . import install

    if scope != "user":
        die(f"only --scope user is supported, not {scope!r}")
    with install_errors():
        report = install.install_claude(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("codex")
def install_codex(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp to ~/.codex/config.toml and the peers-hook hooks to hooks.json."""
    from . import install

    with install_errors():
        report = install.install_codex(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("gemini")
def install_gemini(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp and the peers-hook hooks to ~/.gemini/settings.json (Gemini CLI)."""
    from . import install

    with install_errors():
        report = install.install_gemini(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("cursor")
def install_cursor(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp to ~/.cursor/mcp.json and a peers-hook stop hook to hooks.json."""
    from . import install

    with install_errors():
        report = install.install_cursor(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("service")
def install_service(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Run peersd under systemd --user (socket activation) or launchd (macOS)."""
    from . import service

    with install_errors():
        report = service.install_service(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("service")
def uninstall_service(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Stop and remove the systemd user units or the launchd agent of peersd."""
    from . import service

    with install_errors():
        report = service.uninstall_service(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("claude")
def uninstall_claude(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and hooks from Claude Code's config."""
    from . import install

    with install_errors():
        report = install.uninstall_claude(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("codex")
def uninstall_codex(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server, hooks and hooks flag from Codex's config."""
    from . import install

    with install_errors():
        report = install.uninstall_codex(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("gemini")
def uninstall_gemini(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and hooks from ~/.gemini/settings.json."""
    from . import install

    with install_errors():
        report = install.uninstall_gemini(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("cursor")
def uninstall_cursor(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and hook from ~/.cursor."""
    from . import install

    with install_errors():
        report = install.uninstall_cursor(settings(), dry_run)
    show_report(report, as_json)


@app.command()
def doctor(
    server_name: Annotated[
        str | None,
        typer.Option("--server-name", help="MCP server name to look for (default: any ours)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the daemon, its files, and how Claude Code and Codex are wired to it."""
    from dataclasses import asdict

    from . import install

    checks = install.doctor(State.overrides, server_name)
    if as_json:
        emit_json([asdict(c) for c in checks])
    else:
        colors = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        for c in checks:
            out.print(
                f"[{colors[c.status]}]{c.status:<4}[/]  [bold]{safe(c.check)}[/]: {safe(c.detail)}"
            )
            if c.fix and c.status != "ok":
                out.print(f"      fix: {safe(c.fix)}")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(EXIT_FAILED)


# Working on the same repository: files, claim, release, note, guard (peers_cli/coordination.py).
from . import coordination as _coordination  # noqa: E402

_coordination.register(sys.modules[__name__])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
