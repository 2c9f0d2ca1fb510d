"""``peers dashboard``: the overseer's live web view of every session, in its own process.

It is a client of peersd (``link``) subscribed to its events, serving a page with no build
step (``static/``) through Starlette and uvicorn (``web``), on loopback unless told
otherwise. docs/dashboard.md says what it shows and how it is kept safe.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import webbrowser
from typing import Annotated

import msgspec
import typer

from peersd.rules import PeerName

from ..common import die, err, settings

DEFAULT_PORT = 7475


def register(app: typer.Typer) -> None:
    app.command()(dashboard)


def dashboard(
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on; beyond loopback needs --tls-cert/--tls-key."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port (0: any free one).", min=0, max=65535)
    ] = DEFAULT_PORT,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the URL (with its token); do not open it.")
    ] = False,
    tls_cert: Annotated[str | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
    name: Annotated[
        str | None, typer.Option("--as", help="Your peer name when you write from the page.")
    ] = None,
    new_token: Annotated[
        bool,
        typer.Option(
            "--new-token",
            help="Make a new token (old URLs and cookies stop working).",
        ),
    ] = False,
) -> None:
    """Open the live web view of every session: peers, all mail, files, audit; write as you."""
    from ..app import _session_pid
    from .link import Overseer
    from .web import Server, build, is_loopback, load_token, open_page, server_config

    # Until the server's own handlers are in place, SIGTERM is a Ctrl-C: a clean exit.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if (tls_cert is None) != (tls_key is None):
        die("give both --tls-cert and --tls-key, or neither")
    tls = tls_cert is not None
    if host.strip("[]") in ("0.0.0.0", "::"):
        die(
            f"--host {host} would listen on every interface; give the one address or name "
            "your browser will use (the dashboard checks the Host header against it)"
        )
    if name is not None:
        try:
            msgspec.convert(name, PeerName)
        except msgspec.ValidationError as e:
            die(f"--as {name!r} is not a valid peer name: {e}")
    if not is_loopback(host) and not tls:
        die(
            f"--host {host} listens beyond this machine: the dashboard then needs TLS "
            "(--tls-cert and --tls-key), so its token and your mail never cross the network "
            "in clear"
        )
    conf = settings()
    try:
        token = load_token(conf, renew=new_token)
    except Exception as e:  # ConfigError: an unsafe run directory or token file
        die(f"cannot keep the dashboard's token: {e}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError as e:
        die(f"cannot listen on {host}:{port}: {e.strerror} (pick another with --port; 0: any)")
    bound = sock.getsockname()[1]
    overseer = Overseer(conf, _session_pid(), name)
    _app, guard = build(overseer, token, host, tls)
    guard.port = bound
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{bound}/?token={token}"
    print(url, flush=True)
    page = None
    if not no_open:
        err.print("[dim]opening it in your browser; Ctrl-C stops the dashboard[/]")
        try:
            # Never the URL itself: a browser's command line is readable by every user.
            page = open_page(conf, bound, url)
            webbrowser.open(page.as_uri())
        except Exception as e:  # no browser here: the URL above is enough
            err.print(f"[yellow]could not open a browser ({e}); open the URL above[/]")
    server = Server(server_config(guard, tls_cert, tls_key))
    try:
        asyncio.run(server.serve_until_signal(sock))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the server's handlers were in place
        pass
    finally:
        sock.close()
        if page is not None:
            page.unlink(missing_ok=True)
    sys.exit(0)
