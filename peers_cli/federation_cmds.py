"""``peers federation``: set up NATS for federated daemons (docs/federation.md)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from peersd import natsconf
from peersd.errors import ConfigError

from .common import JsonOpt, die, emit_json, out, safe

federation_app = typer.Typer(
    help="Federate daemons on several machines over NATS JetStream.", no_args_is_help=True
)


@federation_app.command("init")
def init(
    machines: Annotated[
        list[str],
        typer.Option("--machine", "-m", help="A machine's host label; repeat for each."),
    ],
    folder: Annotated[
        str, typer.Option("--dir", help="Where to write the server config and credentials.")
    ] = "peers-federation",
    listen: Annotated[
        str, typer.Option(help="Where nats-server listens for clients.")
    ] = "0.0.0.0:4222",
    store_dir: Annotated[
        str, typer.Option(help="JetStream's data directory on the server.")
    ] = "/var/lib/nats/jetstream",
    tls_cert: Annotated[str, typer.Option(help="Server certificate (PEM) for TLS.")] = "",
    tls_key: Annotated[str, typer.Option(help="Its key (PEM).")] = "",
    tls_ca: Annotated[str, typer.Option(help="CA file for the server's TLS.")] = "",
    cluster: Annotated[
        list[str] | None,
        typer.Option(
            help="A cluster route nats://HOST:PORT, once per server: writes one config each."
        ),
    ] = None,
    sync_always: Annotated[
        bool,
        typer.Option(
            "--sync-always/--no-sync-always",
            help="fsync every write (acknowledged mail survives a power loss); off: faster.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Write a nats-server config (JetStream, one user per machine that can read only its
    own mail) and each machine's credentials (<name>.nk, mode 0600). Run it again with
    more --machine options to add machines: existing credentials are kept."""
    try:
        written = natsconf.write_init(
            os.path.abspath(folder),
            machines,
            listen=listen,
            store_dir=store_dir,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            cluster=cluster or [],
            sync_always=sync_always,
        )
    except ConfigError as e:
        die(str(e))
    except OSError as e:
        die(f"cannot write into {folder}: {e.strerror}")
    if as_json:
        emit_json({"dir": os.path.abspath(folder), "written": written})
        return
    for path in written.values():
        out.print(f"wrote {safe(path)}")
    out.print(
        'Copy each <name>.nk to its machine and set there: nats_url = "nats://SERVER:4222", '
        'nats_creds = "/path/to/<name>.nk" (docs/federation.md).'
    )
