"""Killing a peer's agent process, safely: only the process that registered (pid, start
time and uid must still match), SIGTERM first, SIGKILL after the grace period only when
asked, and every attempt recorded in the audit log before the first signal.

``kill_enabled`` off means agent sessions may not kill. An agent is recognised by what
the daemon sees, not by what the client says: a local caller whose process descends
from a registered agent (SO_PEERCRED pid, then its ancestry) is that agent, even when
its hello says ``cli``. What this does not stop is in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import groups, identity
from . import protocol as p
from .errors import Code, PeersError

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

log = logging.getLogger("peersd")

POLL = 0.05
"""Seconds between checks whether a signalled process has exited."""

ENABLE_HINT = (
    "the user can enable it with kill_enabled = true in the claude-peers configuration "
    "(or CLAUDE_PEERS_KILL_ENABLED=1 for peersd), or run `peers kill` from a terminal "
    "that is not inside an agent session"
)


def handle(d: Daemon, conn: Connection, r: p.Kill) -> Coroutine[Any, Any, None]:
    if conn.remote:
        # A hub token is shared by every machine: it does not make a remote client
        # the owner of this machine's processes (and "cli" is only what it says).
        raise PeersError(
            Code.FORBIDDEN,
            "peers can be killed only over the local socket, on the machine they run on",
        )
    if not (d.settings.kill_enabled or conn.client_kind == "cli"):
        raise PeersError(
            Code.DISABLED,
            f"killing peers is disabled for agent sessions; {ENABLE_HINT}",
        )
    return _kill(d, conn, r)


async def _kill(d: Daemon, conn: Connection, r: p.Kill) -> None:
    """SIGTERM the agent, SIGKILL after the grace period with ``force``; record it."""
    try:
        if not d.settings.kill_enabled:
            await _refuse_agents(d, conn)
        target, alive = await owned_target(d, conn, r.target, "kill")
        actor = _actor(d, conn)
        if target.id == conn.peer_id:
            raise PeersError(Code.BAD_REQUEST, "a session cannot kill itself")
        pid, start = target.agent_pid, target.agent_start
        seq: int | None = None
        if alive:
            # Recorded before the first signal: a stop during the grace period (or a
            # crash) still leaves the attempt in the audit log.
            grace = d.settings.kill_grace

            def attempt() -> int:
                return d.store.audit.record(
                    time.time(),
                    actor,
                    "kill",
                    target.id,
                    f"pid {pid}: SIGTERM sent, waiting up to {grace:g}s for it to exit",
                )

            seq = await d.commit.run(attempt)
            d.publish("overseer", p.AuditAdded(seq=seq))
            try:
                outcome, detail = await _terminate(d, pid, start, r.force, target.name)
            except asyncio.CancelledError:
                await _interrupted(d, seq, pid)
                raise
        else:
            outcome, detail = "already_gone", f"{target.name}'s process {pid} had already exited"
        reason = f"killed by {actor}" if outcome in ("terminated", "killed") else "exited"

        def record() -> tuple[int, p.Peer | None]:
            now = time.time()
            if seq is None:
                row = d.store.audit.record(now, actor, "kill", target.id, f"pid {pid}: {outcome}")
            else:
                row = seq
                d.store.audit.outcome(seq, f"pid {pid}: {outcome}")
            if outcome == "still_running":
                return row, None
            # None when it had already been marked gone (the sweep, an unregister) or has
            # registered again with another process: then nobody is told it left twice.
            return row, d.store.mark_gone(target.id, reason, now, expect=(pid, start))

        row, left = await d.commit.run(record)
        d.publish("overseer", p.AuditAdded(seq=row))
        log.warning("kill %s (%s, pid %d) by %s: %s", target.name, target.id, pid, actor, outcome)
        if left is not None:
            d.unbind_peer(target.id)
            d.left_effect(target.id, target.name, reason)()
        conn.send(
            p.KillResult(
                id=r.id, peer_id=target.id, name=target.name, outcome=outcome, detail=detail
            )
        )
    except PeersError as e:
        conn.send(p.Error.of(e, r.id))


async def owned_target(d: Daemon, conn: Connection, ref: str, what: str) -> tuple[p.Peer, bool]:
    """The session ``ref`` names, as the machine's owner may act on it (kill it, rename it,
    drop its claims): resolved as the caller may see it (peersd.groups), on this machine
    (a hub's other machines have their own owners), its agent process, while it runs, this
    user's. Returns it and whether that process still runs. The one check of every owner
    action (``kill`` and peersd.overseer), so none is looser than another."""
    viewer = d.store.peer(conn.peer_id) if conn.peer_id else None
    target = await d.commit.run(lambda: groups.resolve(d.store, viewer, ref, d.machine_id))
    if target.machine_id != d.machine_id:
        raise PeersError(
            Code.BAD_REQUEST,
            f"{target.name} runs on another machine ({target.host}); only that machine's "
            f"owner may {what} it",
        )
    pid = target.agent_pid
    alive, uid = await asyncio.to_thread(_inspect, pid, target.agent_start)
    if alive and uid != os.getuid():
        raise PeersError(
            Code.FORBIDDEN,
            f"{target.name}'s process {pid} belongs to another user; not touching it",
        )
    return target, alive


async def _interrupted(d: Daemon, seq: int, pid: int) -> None:
    """The daemon is stopping during the grace period: say so in the recorded attempt."""
    detail = f"pid {pid}: SIGTERM sent; peersd stopped before the outcome was known"
    try:
        await d.commit.run(lambda: d.store.audit.outcome(seq, detail))
    except PeersError as e:
        log.error("could not record the interrupted kill of pid %d: %s", pid, e)


async def _refuse_agents(d: Daemon, conn: Connection) -> None:
    """With ``kill_enabled`` off, refuse a caller that is an agent session, whatever its
    hello says: bound to an agent's peer, or a process descending from a registered agent."""
    bound = d.store.peer(conn.peer_id) if conn.peer_id else None
    if bound is not None and bound.client != "cli":
        raise PeersError(
            Code.DISABLED,
            f"this connection acts as the agent session {bound.name}; killing peers is "
            f"disabled for agent sessions; {ENABLE_HINT}",
        )
    if conn.pid is None:
        return  # no peer credentials on this system: only the hello can tell (see docs)
    agents = {
        pid: (peer_id, start)
        for pid, (peer_id, start) in d.store.active_agents(d.machine_id).items()
        if (peer := d.store.peer(peer_id)) is not None and peer.client != "cli"
    }
    found = await asyncio.to_thread(identity.registered_ancestor, conn.pid, agents)
    if found is None:
        return
    agent_pid, peer_id = found
    peer = d.store.peer(peer_id)
    name = peer.name if peer is not None else peer_id
    raise PeersError(
        Code.DISABLED,
        f"this command runs inside the agent session {name} (process {conn.pid} descends "
        f"from its agent, pid {agent_pid}), and killing peers is disabled for agent "
        f"sessions; {ENABLE_HINT}",
    )


def _inspect(pid: int, start: float) -> tuple[bool, int | None]:
    """Whether the registered process still runs, and its uid (read from /proc)."""
    if not identity.is_alive(pid, start):
        return False, None
    return True, identity.process_uid(pid)


def _actor(d: Daemon, conn: Connection) -> str:
    """Who is asking, for the audit log: the peer, else the kind of client and its pid."""
    peer = d.store.peer(conn.peer_id) if conn.peer_id else None
    if peer is not None:
        return f"{peer.name} ({peer.id})"
    where = f"pid {conn.pid}" if conn.pid else "over TCP" if conn.remote else "pid ?"
    return f"{conn.client_kind} {where}"


async def _terminate(
    d: Daemon, pid: int, start: float, force: bool, name: str
) -> tuple[p.KillOutcome, str]:
    grace = d.settings.kill_grace

    async def gone_within(seconds: float) -> bool:
        # Each /proc read in a worker thread (as the sweep's), the waiting on the loop,
        # so a stop cancels the wait at once and leaves no thread polling behind.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(identity.is_alive, pid, start):
                return True
            await asyncio.sleep(POLL)
        return not await asyncio.to_thread(identity.is_alive, pid, start)

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "terminated", f"{name}'s process {pid} exited"
    if await gone_within(grace):
        return "terminated", f"{name}'s process {pid} exited after SIGTERM"
    if not force:
        return (
            "still_running",
            f"{name}'s process {pid} is still running {grace:g}s after SIGTERM; "
            "use force to send SIGKILL",
        )
    if await asyncio.to_thread(identity.is_alive, pid, start):  # still the same process
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await gone_within(2.0)
    return "killed", f"{name}'s process {pid} did not exit on SIGTERM; sent SIGKILL"
