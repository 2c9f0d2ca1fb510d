"""``peers orphans``, ``cleanup``, ``kill`` and ``audit``: finding and ending our helpers
whose session is gone, ending a peer's process, and the record of both.

``register(app)`` adds them to the ``peers`` app where app.py calls it, so that the help
lists them in their place."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from peersd import identity
from peersd import protocol as p
from peersd.client import Client
from peersd.errors import DaemonUnreachable

from .common import (
    EXIT_FAILED,
    JsonOpt,
    age,
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


def register(app: typer.Typer) -> None:
    """Add the commands to the ``peers`` app, in this order."""
    app.command("orphans")(list_orphans)
    app.command()(cleanup)
    app.command()(kill)
    app.command()(audit)
