"""What every ``peers`` command shares: the consoles, the settings this run uses, one-line
errors with their exit codes (1 refused or bad input, 3 daemon unreachable), JSON output,
and ``safe`` for text a peer wrote."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from peers_mcp import render
from peers_mcp.render import clean
from peersd.client import Client
from peersd.config import ConfigError, Settings, load
from peersd.errors import Code, DaemonUnreachable, PeersError

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # piped: do not fold tables to 80 columns
    out = Console(highlight=False, soft_wrap=True, width=max(160, out.width))
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


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


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False) + "\n")


def ago(ts: float | None) -> str:
    """``3m ago`` (render's wording), or ``-`` in a table cell."""
    return render.since(ts) if ts else "-"


def age(seconds: float) -> str:
    """``90s``, ``5m``, ``2.5h``, ``3.0d``: a duration in a table cell or event line."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
