"""The network directory: which peers live on the other federated machines.

Each peersd writes one key of the JetStream key-value bucket (``natsconf.BUCKET``), its
node name, holding its live peers as ``DirMachine`` (JSON: ``nats kv get`` shows it):
names, host label, client, state, summary, repository name and branch, never a session
id, a path, a pid or a secret. It rewrites the key every third of ``nats_directory_ttl``;
the bucket's max age drops a machine that stopped. Every peersd watches the bucket and
keeps the newest entry per machine here, hiding one not refreshed within the TTL (timed
by this machine's clock on arrival, so skewed clocks do not matter).
"""

from __future__ import annotations

import difflib
import os
import time

import msgspec

from . import protocol as p
from .errors import Code, PeersError
from .rules import match_peer_id


class DirPeer(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    id: str
    name: str
    client: str
    receive: str
    summary: str = ""
    repo: str | None = None
    branch: str | None = None
    pending: int = 0
    last_read: float | None = None
    status: str | None = None
    reach: str | None = None


class DirMachine(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    node: str
    host: str
    peers: list[DirPeer] = []
    updated: float = 0.0


class Target(msgspec.Struct):
    """A peer on another machine that mail can be sent to."""

    id: str
    name: str
    host: str
    node: str
    pending: int
    last_read: float | None
    offline: bool = False
    """Its machine left the directory: the mail waits in the stream until it is back."""


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(DirMachine)


def entry(node: str, host: str, peers: list[p.Peer], now: float) -> bytes:
    """This machine's directory value for its active ``peers``."""
    listed = [
        DirPeer(
            id=x.id,
            name=x.name,
            client=x.client,
            receive=x.receive,
            summary=x.summary,
            repo=os.path.basename(x.git_root.rstrip("/")) if x.git_root else None,
            branch=x.branch,
            pending=x.pending,
            last_read=x.last_read,
            status=x.status,
            reach=x.reach,
        )
        for x in peers
        if x.state == "active"
    ]
    return ENCODER.encode(DirMachine(node=node, host=host, peers=listed, updated=now))


class Directory:
    def __init__(self, own_node: str, ttl: float) -> None:
        self.own = own_node
        self.ttl = ttl
        self._machines: dict[str, tuple[float, DirMachine]] = {}

    def update(self, key: str, value: bytes | None) -> None:
        """A watched change of ``key``: a new value, or None (deleted)."""
        if key == self.own:
            return
        if not value:  # it left: kept (not listed) so its peers can still be written to
            found = self._machines.get(key)
            if found is not None:
                self._machines[key] = (float("-inf"), found[1])
            return
        try:
            machine = DECODER.decode(value)
        except msgspec.DecodeError:
            self._machines.pop(key, None)
            return
        if machine.node != key:  # only the node's own user may write its key
            return
        self._machines[key] = (time.monotonic(), machine)

    def machines(self, offline: bool = False) -> list[DirMachine]:
        """The machines in the directory now (``offline``: those seen since this daemon
        started that are not)."""
        cutoff = time.monotonic() - self.ttl
        return [m for seen, m in self._machines.values() if (seen >= cutoff) != offline]

    def peers(self) -> list[p.Peer]:
        """Every live peer on another machine, as ``list_peers`` shows it."""
        found: list[p.Peer] = []
        now, mono = time.time(), time.monotonic()
        for seen, m in self._machines.values():
            if seen < mono - self.ttl:
                continue
            for x in m.peers:
                found.append(
                    p.Peer(
                        id=x.id,
                        name=x.name,
                        client=x.client,
                        state="active",
                        machine_id=m.node,
                        host=m.host,
                        cwd=x.repo or "",
                        agent_pid=0,
                        agent_start=0.0,
                        registered_at=0.0,
                        last_seen=now - (mono - seen),
                        receive=x.receive if x.receive in ("push", "hook", "poll") else "poll",  # type: ignore[arg-type]
                        summary=x.summary,
                        branch=x.branch,
                        pending=x.pending,
                        last_read=x.last_read,
                        status=x.status if x.status in ("working", "idle", "waiting") else None,  # type: ignore[arg-type]
                        reach=f"remote:{x.reach}" if x.reach else "remote",
                    )
                )
        found.sort(key=lambda x: (x.name.lower(), x.host.lower()))
        return found

    def resolve(self, target: str) -> Target:
        """A peer on another machine by peer id, ``name@host`` or a ``name`` only one
        machine has."""
        target = target.strip()
        hits = self._hits(target, self.machines())
        if not hits:
            hits = self._hits(target, self.machines(offline=True))
            for t in hits:
                t.offline = True
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise PeersError(
                Code.UNKNOWN_PEER,
                f"{target!r} is on several machines; say which with name@host",
                candidates=sorted(f"{t.name}@{t.host}" for t in hits),
            )
        names = sorted({f"{x.name}@{m.host}" for m in self.machines() for x in m.peers})
        raise PeersError(
            Code.UNKNOWN_PEER,
            f"no peer named {target!r} here or on the network",
            candidates=difflib.get_close_matches(target, names, n=5, cutoff=0.5),
        )

    @staticmethod
    def _hits(target: str, machines: list[DirMachine]) -> list[Target]:
        name, _, host = target.partition("@")
        by_id = match_peer_id(target) is not None
        hits: list[Target] = []
        for m in machines:
            if host and host.lower() not in (m.host.lower(), m.node.lower()):
                continue
            for x in m.peers:
                if (x.id == target) if by_id else (x.name.lower() == name.lower()):
                    hits.append(Target(x.id, x.name, m.host, m.node, x.pending, x.last_read))
        return hits
