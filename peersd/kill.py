"""Killing a peer's agent process, safely: only the process that registered (pid, start
time and uid must still match), SIGTERM first, SIGKILL after the grace period only when
asked, and every kill recorded in the audit log.
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

from . import identity
from . import protocol as p
from .errors import Code, PeersError

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

log = logging.getLogger("peersd")


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
            "killing peers is disabled for agent sessions; the user can enable it with "
            "kill_enabled = true in the claude-peers configuration",
        )
    return _kill(d, conn, r)


async def _kill(d: Daemon, conn: Connection, r: p.Kill) -> None:
    """SIGTERM the agent, SIGKILL after the grace period with ``force``; record it."""
    try:
        target = await d.commit.run(lambda: d.store.resolve(r.target, d.machine_id))
        actor = _actor(d, conn)
        if target.id == conn.peer_id:
            raise PeersError(Code.BAD_REQUEST, "a session cannot kill itself")
        if target.machine_id != d.machine_id:
            raise PeersError(Code.BAD_REQUEST, f"{target.name} runs on another machine")
        pid, start = target.agent_pid, target.agent_start
        outcome, detail = "already_gone", f"{target.name}'s process {pid} had already exited"
        if identity.is_alive(pid, start):
            if identity.process_uid(pid) != os.getuid():
                raise PeersError(
                    Code.FORBIDDEN, f"process {pid} belongs to another user; not touching it"
                )
            outcome, detail = await _terminate(d, pid, start, r.force, target.name)
        reason = f"killed by {actor}" if outcome in ("terminated", "killed") else "exited"

        def record() -> None:
            now = time.time()
            d.store.audit(now, actor, "kill", target.id, f"pid {pid}: {outcome}")
            if outcome != "still_running":
                d.store.mark_gone(target.id, reason, now)

        await d.commit.run(record)
        log.warning("kill %s (%s, pid %d) by %s: %s", target.name, target.id, pid, actor, outcome)
        if outcome != "still_running":
            d.unbind_peer(target.id)
            d.left_effect(target.id, target.name, reason)()
        conn.send(
            p.KillResult(
                id=r.id, peer_id=target.id, name=target.name, outcome=outcome, detail=detail
            )
        )
    except PeersError as e:
        conn.send(p.Error.of(e, r.id))


def _actor(d: Daemon, conn: Connection) -> str:
    """Who is asking, for the audit log: the peer, else the kind of client and its pid."""
    peer = d.store.peer(conn.peer_id) if conn.peer_id else None
    if peer is not None:
        return f"{peer.name} ({peer.id})"
    where = f"pid {conn.pid}" if conn.pid else "over TCP" if conn.remote else "pid ?"
    return f"{conn.client_kind} {where}"


async def _terminate(d: Daemon, pid: int, start: float, force: bool, name: str) -> tuple[str, str]:
    grace = d.settings.kill_grace

    async def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not identity.is_alive(pid, start):
                return True
            await asyncio.sleep(0.05)
        return not identity.is_alive(pid, start)

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
    if identity.is_alive(pid, start):  # still the same process: safe to kill
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await gone_within(2.0)
    return "killed", f"{name}'s process {pid} did not exit on SIGTERM; sent SIGKILL"
