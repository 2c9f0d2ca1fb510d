"""The federation's names in NATS, and the nats-server config that locks them down.

One place says which subjects and streams federation uses (``peersd.federation`` speaks
them) and what each machine's NATS user may do with them (``peers federation init``
writes them into a server config), so the two cannot drift apart.

Each machine is a node: its host label made a subject token. Mail for node B from node A
is published on ``peers.in.B.A``. A's user may publish only on ``peers.in.*.A`` (so the
subject proves who sent it), may read only through its own consumer ``in-A`` of
``peers.in.A.>``, and may write only its own directory key ``A``. Replies come to
``_INBOX_A.>``, which only A may subscribe to: another machine cannot read A's mail by
subscribing, by making a consumer, or by listening on A's reply subjects.
"""

from __future__ import annotations

import json
import os
import re

from .errors import ConfigError
from .private_files import ensure_own_dir, read_private_file, write_private_file

STREAM = "PEERS_MAIL"
"""The mail stream: every machine's inbox subject, work-queue retention."""
SUBJECTS = "peers.in.>"
BUCKET = "peers-dir"
"""The directory: a key-value bucket, one key per node."""
KV_STREAM = f"KV_{BUCKET}"
ACCOUNT = "PEERS"
_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def node_name(host: str) -> str:
    """A host label as a NATS subject token (and user name): the same rule everywhere."""
    node = _TOKEN.sub("-", host.strip())[:64].strip("-")
    if not node:
        raise ConfigError(f"host label {host!r} gives no NATS node name; set host_label")
    return node


def inbox(target: str, origin: str) -> str:
    return f"peers.in.{target}.{origin}"


def consumer(node: str) -> str:
    return f"in-{node}"


def inbox_prefix(node: str) -> str:
    return f"_INBOX_{node}"


def permissions(node: str) -> dict[str, dict[str, list[str]]]:
    """What ``node``'s NATS user may publish and subscribe to (allow lists: all else is
    denied)."""
    api = "$JS.API"
    me = consumer(node)
    return {
        "publish": {
            "allow": [
                f"peers.in.*.{node}",  # mail and receipts to any machine, as itself
                f"$KV.{BUCKET}.{node}",  # its own directory key
                f"{api}.INFO",
                f"{api}.STREAM.INFO.{STREAM}",
                f"{api}.STREAM.CREATE.{STREAM}",
                f"{api}.STREAM.INFO.{KV_STREAM}",
                f"{api}.STREAM.CREATE.{KV_STREAM}",
                f"{api}.CONSUMER.CREATE.{STREAM}.{me}.peers.in.{node}.>",
                f"{api}.CONSUMER.INFO.{STREAM}.{me}",
                f"{api}.CONSUMER.MSG.NEXT.{STREAM}.{me}",
                f"$JS.ACK.{STREAM}.{me}.>",
                # reading the directory: watchers (ordered consumers) and gets
                f"{api}.CONSUMER.CREATE.{KV_STREAM}",
                f"{api}.CONSUMER.CREATE.{KV_STREAM}.>",
                f"{api}.CONSUMER.DELETE.{KV_STREAM}.>",
                f"{api}.CONSUMER.INFO.{KV_STREAM}.>",
                f"{api}.DIRECT.GET.{KV_STREAM}.>",
                f"{api}.STREAM.MSG.GET.{KV_STREAM}",
                f"$JS.FC.{KV_STREAM}.>",
            ]
        },
        "subscribe": {"allow": [f"{inbox_prefix(node)}.>"]},
    }


def new_nkey() -> tuple[str, str]:
    """(seed, public key) of a new NATS user nkey."""
    try:
        import nacl.signing
        import nkeys
    except ImportError:
        raise ConfigError(
            "federation needs the nats client and nkeys: pip install 'claude-peers[federation]'"
        ) from None
    seed = nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key
    return seed.decode(), bytes(public).decode()


def _q(value: str) -> str:
    return json.dumps(value)  # a quoted string nats-server's config parser reads as is


def server_config(
    users: dict[str, str],
    *,
    listen: str,
    store_dir: str,
    server_name: str = "peers-1",
    tls_cert: str = "",
    tls_key: str = "",
    tls_ca: str = "",
    cluster_listen: str = "",
    routes: list[str] | None = None,
    sync_always: bool = True,
) -> str:
    """A nats-server config: JetStream, one account with a user per node (its nkey
    public key and ``permissions``), TLS and a cluster when asked."""
    lines = [
        "# Written by `peers federation init` (docs/federation.md). One user per machine:",
        "# each may publish mail as itself and read only its own inbox.",
        f"server_name: {_q(server_name)}",
        f"listen: {_q(listen)}",
        "jetstream {",
        f"  store_dir: {_q(store_dir)}",
        "  # Acknowledged means on disk (fsync): a crash of the server or its machine loses",
        "  # no acknowledged mail. Off, the server syncs every 2 minutes (about 5x faster).",
        "  sync_interval: always" if sync_always else "  # sync_interval: always",
        "}",
    ]
    if tls_cert:
        lines += ["tls {", f"  cert_file: {_q(tls_cert)}", f"  key_file: {_q(tls_key)}"]
        if tls_ca:
            lines.append(f"  ca_file: {_q(tls_ca)}")
        lines.append("}")
    if cluster_listen:
        lines += [
            "cluster {",
            '  name: "peers"',
            f"  listen: {_q(cluster_listen)}",
            "  routes: [" + ", ".join(_q(r) for r in routes or []) + "]",
            "}",
        ]
    lines += ["accounts {", f"  {ACCOUNT}: {{", "    jetstream: enabled", "    users: ["]
    for node, public in sorted(users.items()):
        perms = json.dumps(permissions(node))
        lines.append(f"      # {node}")
        lines.append(f"      {{ nkey: {_q(public)}, permissions: {perms} }}")
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def write_init(
    out_dir: str,
    machines: list[str],
    *,
    listen: str,
    store_dir: str,
    tls_cert: str = "",
    tls_key: str = "",
    tls_ca: str = "",
    cluster: list[str] | None = None,
    sync_always: bool = True,
) -> dict[str, str]:
    """Write ``nats-server.conf`` (one per cluster node when ``cluster`` names routes)
    and ``<node>.nk`` credentials for each machine into ``out_dir`` (made 0700; files
    0600). Existing credentials are kept, so running it again with one more machine
    adds that machine only. Returns what was written: name -> path."""
    nodes = [node_name(m) for m in machines]
    dupes = sorted({n for n in nodes if nodes.count(n) > 1})
    if dupes:
        raise ConfigError(f"two machines give the same node name: {', '.join(dupes)}")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    ensure_own_dir(out_dir, "federation directory")
    written: dict[str, str] = {}
    users: dict[str, str] = {}
    for node in nodes:
        path = os.path.join(out_dir, f"{node}.nk")
        raw = read_private_file(path, "nkey seed file", secret=True)
        if raw is None:
            seed, public = new_nkey()
            write_private_file(path, (seed + "\n").encode())
            written[f"{node}.nk"] = path
        else:
            import nkeys

            public = bytes(nkeys.from_seed(bytearray(raw.strip())).public_key).decode()
        users[node] = public
    routes = cluster or []
    configs = (
        [(f"nats-server-{i + 1}.conf", f"peers-{i + 1}", r) for i, r in enumerate(routes)]
        if routes
        else [("nats-server.conf", "peers-1", "")]
    )
    for name, server, own_route in configs:
        text = server_config(
            users,
            listen=listen,
            store_dir=os.path.join(store_dir, server) if routes else store_dir,
            server_name=server,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            cluster_listen=own_route.split("://")[-1] if own_route else "",
            routes=[r for r in routes if r != own_route],
            sync_always=sync_always,
        )
        path = os.path.join(out_dir, name)
        write_private_file(path, text.encode(), replace=True)
        written[name] = path
    return written
