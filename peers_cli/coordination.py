"""CLI commands for working on the same repository: ``files``, ``claim``, ``release``,
``note`` and ``guard`` (``docs/coordination.md``).

``register(app_module)`` adds them to the ``peers`` app; they use its helpers (settings,
errors, the peer this command speaks as, output) so they behave like every other command.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.table import Table

from peersd import globs
from peersd import protocol as p
from peersd.errors import Code, PeersError
from peersd.paths import PathError, repo_of, text

from . import guard

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
RepoOpt = Annotated[
    Path | None, typer.Option("--repo", help="The repository (default: this directory's).")
]
MAX_TTL = 24 * 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 60.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_ttl(value: str) -> float:
    """``90`` (minutes), ``45m``, ``2h``, ``30s`` → seconds; more than 0, at most 24 h."""
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"--ttl {value!r}: give minutes (90) or a duration (45m, 2h, 30s)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= MAX_TTL:
        raise ValueError(f"--ttl {value!r}: a claim lasts more than 0 and at most 24h")
    return seconds


def register(cli: ModuleType) -> None:
    """Add the commands to ``cli.app`` (the ``peers_cli.app`` module, however it was run)."""
    app: typer.Typer = cli.app
    out, safe, errors, connect = cli.out, cli.safe, cli.errors, cli.connect
    die: Callable[..., NoReturn] = cli.die

    def when(ts: float | None) -> str:
        return time.strftime("%H:%M", time.localtime(ts)) if ts else "-"

    def patterns_of(paths: list[str]) -> tuple[list[p.FileRef], list[str]]:
        cwd = os.getcwd()
        refs, unmatched = [], []
        for raw in paths:
            try:
                c = globs.claim_pattern(raw, cwd)
            except PathError as e:
                die(str(e))
            refs.append(p.FileRef(path=c.pattern, repo=c.repo))
            if not c.matches_now:
                unmatched.append(raw)
        return refs, unmatched

    def too_many(paths: list[str]) -> None:
        if len(paths) > p.MAX_FILES:
            die(
                f"{len(paths)} paths in one call; at most {p.MAX_FILES}. Claim their folder or "
                "a glob (src/** , '*.py') instead"
            )

    def holder_row(h: p.FileHolder, top: str | None) -> list[str]:
        from peers_mcp.conflicts import rel

        if h.kind == "claim":
            what = "claim exclusive" if h.exclusive else "claim shared"
            until = f"until {when(h.until)}"
        else:
            what = "active"
            until = f"last {cli.ago(h.last)}"
        name = h.name + (f" ({h.status})" if h.status else "")
        where = rel(h.path, h.repo)
        if top is None and h.repo:
            where = f"{Path(h.repo).name}:{where}"
        return [safe(where), safe(name), what, when(h.since), until, safe(h.reason or "")]

    @app.command("files")
    def files(
        repo: Annotated[
            bool, typer.Option("--repo", help="Only the repository of this directory.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Who is editing which files, and who holds claims (path → peer)."""
        top = None
        if repo:
            found = repo_of(os.path.realpath(os.getcwd()))
            if found is None:
                die(f"{os.getcwd()} is not inside a git repository")
            top = text(found)
        with errors(), connect() as client:
            holders: list[p.FileHolder] = client.request(p.ListFiles, repo=top).holders
        if as_json:
            cli.emit_json(holders)
            return
        if not holders:
            out.print("Nobody is editing files or holds a claim" + (" here." if top else "."))
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("PATH", "PEER", "WHAT", "SINCE", "UNTIL", "REASON"):
            table.add_column(col, overflow="fold", no_wrap=col in ("WHAT", "SINCE"))
        for h in holders:
            table.add_row(*holder_row(h, top))
        out.print(table)

    @app.command("claim")
    def claim(
        paths: Annotated[
            list[str], typer.Argument(help="Files, folders or globs (quote globs: 'src/**').")
        ],
        exclusive: Annotated[
            bool,
            typer.Option(
                "--exclusive", help="Refuse other sessions' edits and commits of these files."
            ),
        ] = False,
        ttl: Annotated[
            str, typer.Option(help="How long: minutes (90) or 45m, 2h, 30s; at most 24h.")
        ] = "60m",
        reason: Annotated[str, typer.Option(help="Why, in a few words; others see it.")] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Claim files for this session (the agent around this shell, or this shell)."""
        try:
            seconds = parse_ttl(ttl)
        except ValueError as e:
            die(str(e))
        if len(reason) > 500:
            die(f"--reason is {len(reason)} characters; at most 500")
        too_many(paths)
        refs, unmatched = patterns_of(paths)
        with errors(), connect() as client:
            cli.become_peer(client)
            try:
                reply = client.request(
                    p.ClaimFiles,
                    patterns=refs,
                    exclusive=exclusive,
                    ttl_seconds=seconds,
                    reason=reason,
                )
            except PeersError as e:
                if e.code == Code.CLAIM_CONFLICT and e.candidates:
                    die(f'{e.message} (peers send {e.candidates[0]} "…")')
                raise
        if as_json:
            cli.emit_json({"claims": reply.claims, "unmatched": unmatched, "others": reply.holders})
            return
        from peers_mcp.filetools import describe_claims

        out.print(safe(describe_claims(reply.claims, unmatched, reply.holders)))

    @app.command("release")
    def release(
        paths: Annotated[
            list[str] | None, typer.Argument(help="The paths or globs as claimed.")
        ] = None,
        all_: Annotated[
            bool, typer.Option("--all", help="Release every claim of this session.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Release claims made with `peers claim` (or the agent's claim_files)."""
        paths = paths or []
        if all_ == bool(paths):
            die("give the paths you claimed, or --all")
        too_many(paths)
        cwd = os.getcwd()
        patterns = []
        for raw in paths:
            try:
                patterns.append(globs.claim_pattern(raw, cwd).pattern)
            except PathError:
                try:
                    patterns.append(globs.target(raw, cwd))
                except PathError as e:
                    die(str(e))
        with errors(), connect() as client:
            cli.become_peer(client)
            reply = client.request(p.ReleaseFiles, patterns=patterns, all=all_)
        if as_json:
            cli.emit_json(reply)
            return
        out.print(f"released {len(reply.released)} claim(s)")
        for pattern in reply.not_held:
            out.print(f"[yellow]not held by you:[/] {safe(pattern)}")
        if reply.not_held and not reply.released:
            raise typer.Exit(cli.EXIT_FAILED)

    @app.command("note")
    def note(
        message: Annotated[
            str, typer.Argument(help='A short note ("away until 3pm"); "" clears it.')
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """Set this session's status note, shown beside its name in `peers peers`."""
        if len(message) > 200:
            die(f"the note is {len(message)} characters; at most 200")
        with errors(), connect() as client:
            cli.become_peer(client)
            peer = client.request(p.SetStatus, note=message).peer
        if as_json:
            cli.emit_json(peer)
            return
        out.print(
            f"{safe(peer.name)}: note " + (f'"{safe(peer.note)}"' if peer.note else "cleared")
        )

    guard_app = typer.Typer(
        help="A git pre-commit hook that stops commits touching another session's exclusive claim.",
        no_args_is_help=True,
    )
    app.add_typer(guard_app, name="guard")

    @guard_app.command("install")
    def guard_install(repo: RepoOpt = None, as_json: JsonOpt = False) -> None:
        """Install the guard (an existing pre-commit hook is kept and still runs)."""
        overrides = cli.State.overrides
        argv = guard.check_command(overrides.get("socket"), overrides.get("config"))
        try:
            report = guard.install(repo or Path.cwd(), argv)
        except (guard.GuardError, OSError) as e:
            die(str(e))
        show(report, as_json)

    @guard_app.command("uninstall")
    def guard_uninstall(repo: RepoOpt = None, as_json: JsonOpt = False) -> None:
        """Remove the guard and put back the hook that was there before."""
        try:
            report = guard.uninstall(repo or Path.cwd())
        except (guard.GuardError, OSError) as e:
            die(str(e))
        show(report, as_json)

    @guard_app.command("check", hidden=True)
    def guard_check() -> None:
        """What the installed hook runs (exit 1 stops the commit)."""
        overrides = cli.State.overrides
        argv: list[str] = []
        for key in ("socket", "config"):
            if overrides.get(key):
                argv += [f"--{key}", str(overrides[key])]
        raise typer.Exit(guard.check(argv))

    def show(report: guard.Report, as_json: bool) -> None:
        if as_json:
            data: dict[str, Any] = msgspec.to_builtins(
                {
                    "hook": str(report.hook),
                    "action": report.action,
                    "chained": str(report.chained) if report.chained else None,
                }
            )
            sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
            return
        said = {
            "installed": "installed the guard in",
            "updated": "updated the guard in",
            "unchanged": "the guard is already installed in",
            "removed": "removed the guard from",
            "not_installed": "no guard installed in",
        }[report.action]
        out.print(f"{said} {safe(str(report.hook))}")
        if report.chained is not None and report.action in ("installed", "updated", "unchanged"):
            out.print(f"the earlier hook is kept as {safe(str(report.chained))} and runs after it")
        elif report.chained is not None:
            out.print(f"put back the earlier hook at {safe(str(report.chained))}")
