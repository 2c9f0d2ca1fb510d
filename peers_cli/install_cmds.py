"""``peers install ...``, ``peers uninstall ...`` and ``peers doctor``: wiring the agent
clients and the service (the work is in ``install/`` and ``service.py``; this is the CLI).

``register(app)`` adds ``doctor`` to the ``peers`` app where app.py calls it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from .common import (
    EXIT_FAILED,
    JsonOpt,
    State,
    die,
    emit_json,
    errors,
    out,
    safe,
    settings,
)

install_app = typer.Typer(
    help="Wire an agent client (Claude Code, Codex, Gemini CLI, Cursor, Copilot CLI, "
    "opencode, Antigravity CLI) to claude-peers (MCP server and hooks), or run "
    "peersd as a service (systemd --user, launchd).",
    no_args_is_help=True,
)
uninstall_app = typer.Typer(
    help="Remove what `peers install` added (the rest of your config stays).",
    no_args_is_help=True,
)

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


@install_app.command("copilot")
def install_copilot(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp to ~/.copilot/mcp-config.json and an agentStop hook (GitHub Copilot CLI)."""
    from . import install

    with install_errors():
        report = install.install_copilot(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("opencode")
def install_opencode(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp to ~/.config/opencode/opencode.json and the claude-peers plugin."""
    from . import install

    with install_errors():
        report = install.install_opencode(settings(), server_name, dry_run)
    show_report(report, as_json)


@install_app.command("antigravity")
def install_antigravity(
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server_name: ServerNameOpt = "claude-peers",
) -> None:
    """Add peers-mcp and a PreInvocation hook to ~/.gemini/config (Antigravity CLI, agy)."""
    from . import install

    with install_errors():
        report = install.install_antigravity(settings(), server_name, dry_run)
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


@uninstall_app.command("copilot")
def uninstall_copilot(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and hook from ~/.copilot."""
    from . import install

    with install_errors():
        report = install.uninstall_copilot(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("opencode")
def uninstall_opencode(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and plugin from opencode's config."""
    from . import install

    with install_errors():
        report = install.uninstall_opencode(settings(), dry_run)
    show_report(report, as_json)


@uninstall_app.command("antigravity")
def uninstall_antigravity(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the claude-peers MCP server and hooks from ~/.gemini/config (and the older path)."""
    from . import install

    with install_errors():
        report = install.uninstall_antigravity(settings(), dry_run)
    show_report(report, as_json)


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


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the ``peers`` app."""
    app.command()(doctor)
