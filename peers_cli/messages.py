"""CLI for typed requests, threads, reactions and search (docs/coordination.md).

``typed_from`` turns ``--kind`` and ``-f name=value`` into a typed request; the ``show_*``
helpers print a message's kind, fields, snapshot and reactions for a person, with the
command that answers it; ``register(app_module)`` adds ``peers react`` and ``peers search``.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Annotated, Any

import typer

from peers_mcp import render, tools
from peers_mcp.render import detag
from peersd import kinds
from peersd import protocol as p
from peersd.errors import PeersError

from .common import JsonOpt, clock, emit_json, err, out, safe

LIST_FIELDS = {"files"}


def typed_from(kind: str | None, pairs: list[str]) -> kinds.Kind | None:
    """The typed request ``--kind`` and ``-f name=value`` (repeated) describe; a list
    field (``files``) takes one value per ``-f``."""
    given: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise PeersError("bad_request", f"-f {pair!r}: write name=value, e.g. -f risk=low")
        if name in LIST_FIELDS:
            given.setdefault(name, []).append(value)
        elif name in given:
            raise PeersError("bad_request", f"-f {name} given twice")
        else:
            given[name] = value
    if kind is None:
        if given:
            raise PeersError("bad_request", f"-f {', '.join(given)} needs --kind as well")
        return None
    return kinds.build(kind, given)


def answer_command(msg: p.Message) -> str:
    """The command that answers ``msg``, for a person reading it."""
    base = f"peers send {msg.sender_name} --reply-to {msg.id}"
    kind = kinds.kind_of(msg.typed)
    if kind == "approval_request":
        return f"{base} --kind approval -f verdict=approve|reject -f reason=… 'text'"
    if kind == "verification_request":
        return f"{base} --kind verification -f verdict=verified|failed -f evidence=… 'text'"
    return f"{base} 'text'"


def show_extras(msg: p.Message) -> None:
    """A message's kind and fields, snapshot and reactions, under its text."""
    kind = kinds.kind_of(msg.typed)
    if kind is not None:
        out.print(f"  [bold]{safe(render.KINDS.get(kind, kind))}[/] [dim]({kind})[/]")
        for name, value in render.typed_fields(msg.typed):
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            label = name.replace("_", " ")
            out.print(f"    {label}: {safe(detag(render.inline(shown)))}")
        if kind in ("approval_request", "verification_request", "question", "review_request"):
            out.print(f"  [dim]answer: {safe(answer_command(msg))}[/]")
    if msg.snapshot is not None:
        line = render.snapshot_line(msg.snapshot).removeprefix("Sender at send time: ")
        if line:
            out.print(f"  [dim]sender then: {safe(line)}[/]")
    if msg.reactions:
        shown = " ".join(f"{r.emoji} {r.name}" for r in msg.reactions)
        out.print(f"  [dim]reactions: {safe(shown)}[/]")


def status_lines(item: p.MessageStatusItem) -> list[str]:
    """A request's answer and reactions under its ``message-status`` line."""
    lines = []
    if item.answer is not None:
        a = item.answer
        verdict = f" {a.verdict}" if a.verdict else ""
        kind = f" ({a.kind}{verdict})" if a.kind else ""
        lines.append(
            f"  answered by {safe(a.sender_name)} in {a.message_id}{kind} "
            f"{clock(a.created)}: {safe(detag(render.inline(a.preview)))}"
        )
    elif item.kind in ("question", "review_request", "approval_request", "verification_request"):
        lines.append(f"  {item.kind}: not answered yet")
    if item.reactions:
        lines.append(
            "  reactions: " + " ".join(safe(f"{r.emoji} {r.name}") for r in item.reactions)
        )
    return lines


def register(cli: ModuleType) -> None:
    """Add ``react`` and ``search`` to ``cli.app`` (the ``peers_cli.app`` module)."""
    app: typer.Typer = cli.app
    errors, connect = cli.errors, cli.connect

    @app.command()
    def react(
        message_id: Annotated[str, typer.Argument(help="A message sent to this shell's peer.")],
        emoji: Annotated[str, typer.Argument(help="One emoji or symbol, e.g. 👍 ✓ 👀.")],
        as_json: JsonOpt = False,
    ) -> None:
        """Acknowledge a message with one glyph: its sender sees it, as a receipt, not mail."""
        with errors(), connect() as client:
            cli.become_peer(client)
            client.request(p.React, message_id=message_id, emoji=emoji)
        if as_json:
            emit_json({"message_id": message_id, "emoji": emoji})
        else:
            out.print(f"reacted {safe(emoji)} to {message_id}")

    @app.command()
    def search(
        query: Annotated[
            str, typer.Argument(help='FTS5 query: words, "a phrase", prefix*, AND/OR/NOT.')
        ],
        peer: Annotated[
            str | None, typer.Option("--peer", help="Only mail to or from this peer.")
        ] = None,
        since: Annotated[
            str | None, typer.Option("--since", help="30m, 4h, 2d, or an ISO date/time.")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
        mine: Annotated[
            bool, typer.Option("--mine", help="Only this shell's own mail (default: all).")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Full-text search of stored mail, best matches first, with the matching passage."""
        with errors():
            after = tools.since(since, time.time()) if since else None
        with errors(), connect() as client:
            if mine:
                cli.become_peer(client)
            found = client.request(
                p.Search, query=query, peer=peer, since=after, limit=limit, mine=mine
            )
        hits = found.hits
        if found.unindexed:
            err.print(f"[dim]{render.unindexed(found.unindexed)}[/]")
        if as_json:
            emit_json(hits)
            return
        if not hits:
            out.print("No messages match.")
            return
        for h in hits:
            m = h.message
            kind = f" [{kinds.kind_of(m.typed)}]" if m.typed else ""
            out.print(
                f"[bold]{safe(m.sender_name)}[/] → {safe(m.recipient_name)}  "
                f"[dim]{clock(m.created)}  {m.id}{safe(kind)}[/]"
            )
            out.print(f"  {safe(detag(render.inline(h.snippet)))}")
