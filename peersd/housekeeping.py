"""The daemon's timed work: the sweep (dead agents, lapsed leases, expiry, retention),
escalation of mail left waiting, and the cleanup of orphaned helpers.

Everything here runs on the daemon's loop; process checks run in worker threads so a
slow /proc never delays requests. Tasks it starts belong to the daemon's task group:
cancelled on stop and awaited before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import identity, proposals, tasks
from . import protocol as p
from .errors import PeersError

if TYPE_CHECKING:
    from .handlers import Effect
    from .server import Daemon

log = logging.getLogger("peersd")

PURGE_INTERVAL = 600.0
"""Seconds between deletions of history past its retention (a scan, so not every sweep)."""
RECEIPT_GRACE = 3600.0
"""Seconds past its expiry that mail to another machine waits for that machine's receipt
before it is expired here as well."""
NOTIFY_TIMEOUT = 5.0
"""Seconds a desktop notifier may take before it is killed."""


@dataclass
class SweepReport:
    gone: list[str]
    requeued: int
    expired: int
    duration_ms: float


class Housekeeper:
    """Owns the sweep timer and what runs after each sweep; state it keeps between runs."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.last_sweep_ms = 0.0
        self.last_purge = 0.0
        self.last_orphan_scan = -float("inf")
        self.orphan_task: asyncio.Task[None] | None = None
        self.orphan_suspects: set[tuple[int, float]] = set()
        """(pid, start) of helpers found orphaned by the previous scan."""
        self.escalated: dict[str, int] = {}
        """Peer id -> newest message already escalated (a new batch is newer mail)."""
        self.notifier_missing = False

    async def sweep(self) -> SweepReport:
        """Mark dead agents gone, return lapsed leases, expire and purge old mail."""
        started = time.perf_counter()
        agents = self.d.store.active_agents(self.d.machine_id)
        dead = await asyncio.to_thread(_dead_agents, agents)
        s = self.d.settings

        def op() -> tuple[SweepReport, list[Effect]]:
            now = time.time()
            effects: list[Effect] = []
            gone: list[str] = []
            for peer_id, pid, start in dead:
                # Only if it is still that process: it may have registered again (a new
                # helper, a restarted agent) while the check ran in its thread.
                peer = self.d.store.mark_gone(peer_id, "process exited", now, expect=(pid, start))
                if peer is not None:
                    gone.append(peer.id)
                    effects.append(functools.partial(self.d.unbind_peer, peer.id))
                    effects.append(self.d.left_effect(peer.id, peer.name, "process exited"))
            stale = self.d.store.upkeep.stale_remote(self.d.machine_id, now - s.remote_timeout)
            for peer_id, name in stale:
                if self.d.connected(peer_id):
                    continue
                if self.d.store.mark_gone(peer_id, "stopped heartbeating", now) is not None:
                    gone.append(peer_id)
                    effects.append(self.d.left_effect(peer_id, name, "stopped heartbeating"))
            requeued = self.d.store.upkeep.expire_leases(now)
            for msg in requeued:
                effects += self.d.mail_effects(msg, fresh=False)
            if requeued:
                effects.append(self.d.queued_effect(requeued))
            # Tasks of sessions gone for task_grace with no successor: open to anyone again.
            reopened = tasks.reopen_orphans(self.d, now)
            if reopened:
                reopened.append(lambda: self.d.publish("overseer", p.WorkChanged(what="tasks")))
            effects += reopened
            expired = self.d.store.upkeep.expire_messages(now)
            if expired:
                effects += self.d.receipt_effects(expired, "expired", now, None)
                # Mail from another machine: its sender hears it expired (peersd/outbox.py).
                seqs = [seq for seq in (self.d.store.parse_id(m.id) for m in expired) if seq]
                if self.d.store.outbox.settled(seqs, "expired", now, None):
                    fed = self.d.federation
                    if fed is not None:
                        effects.append(fed.kick.set)
            # Our mail to another machine that never settled (docs/federation.md).
            unsettled = self.d.store.outbox.expire_sent(now, RECEIPT_GRACE)
            if unsettled:
                effects += self.d.receipt_effects(unsettled, "expired", now, None)
            closed = proposals.expire_due(self.d, now)  # past their deadline
            if closed:
                closed.append(lambda: self.d.publish("overseer", p.WorkChanged(what="proposals")))
            effects += closed
            if now - self.last_purge > PURGE_INTERVAL:
                machines = self.d.store.upkeep.purge(now, s.history_retention, s.gone_retention)[2]
                self.d.store.outbox.purge()  # what the purged messages no longer need
                if machines:
                    log.info("forgot %d hub machine(s) not seen for gone_retention", machines)
                self.last_purge = now
            report = SweepReport(gone, len(requeued), len(expired), 0.0)
            return report, effects

        report, effects = await self.d.commit.run(op)
        for effect in effects:
            effect()
        report.duration_ms = (time.perf_counter() - started) * 1000
        self.last_sweep_ms = report.duration_ms
        return report

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.d.settings.sweep_interval)
            try:
                report = await self.sweep()
            except PeersError as e:
                log.error("sweep failed: %s", e)
                continue
            except Exception:  # a bug: log it and keep sweeping, never end the daemon
                log.exception("sweep failed")
                continue
            if report.duration_ms > 100:
                log.warning("sweep took %.1f ms", report.duration_ms)
            await self.after_sweep()

    async def after_sweep(self) -> None:
        """After each sweep: escalate long-waiting mail; now and then, end orphans."""
        try:
            await self.escalate()
        except Exception:
            log.exception("escalation failed")
        s = self.d.settings
        due = time.monotonic() - self.last_orphan_scan >= s.orphan_interval
        if s.orphan_cleanup and due and (self.orphan_task is None or self.orphan_task.done()):
            self.last_orphan_scan = time.monotonic()
            self.orphan_task = self.d.spawn(self.clean_orphans())

    async def clean_orphans(self) -> None:
        """End our helpers whose agent is gone: SIGTERM, SIGKILL after ``kill_grace``.

        Only ``peers-mcp`` and ``peers-hook --wait`` processes of this uid that use this
        daemon's socket are looked at (the scan runs in a worker thread). A helper is
        ended only when two scans in a row find it orphaned, so one that is about to
        notice its agent is gone and exit by itself gets to do so; it is re-checked
        (pid, start time, uid, command line) before every signal.
        """
        from . import orphans  # psutil: imported when first needed, not at start-up

        try:
            peers = orphans.known_peers(
                self.d.store.list_peers(None, "machine", True, True, self.d.machine_id)
            )
            pids = {c.pid for c in self.d.connections if c.pid}
            endpoints = {self.d.settings.socket, self.d.socket_path}
            found = await asyncio.to_thread(orphans.scan, endpoints, peers, pids)
            suspects, self.orphan_suspects = (
                self.orphan_suspects,
                {(o.pid, o.started) for o in found},
            )
            for o in found:
                log.info("orphaned helper: %s pid %d (%s)", o.kind, o.pid, o.why)
            found = [o for o in found if (o.pid, o.started) in suspects]
            if not found:
                return
            # The signals and the waiting (with /proc reads) run in a worker thread too;
            # a stop during it waits for at most kill_grace + 2 s.
            actions = await asyncio.to_thread(orphans.cleanup, found, self.d.settings.kill_grace)

            def record() -> list[int]:
                now = time.time()
                return [
                    self.d.store.audit.record(
                        now,
                        "peersd",
                        "cleanup",
                        a.orphan.peer_id,
                        f"{a.orphan.kind} pid {a.orphan.pid}: {a.outcome} ({a.orphan.why})",
                    )
                    for a in actions
                ]

            for row in await self.d.commit.run(record):
                self.d.publish("overseer", p.AuditAdded(seq=row))
            for a in actions:
                o = a.orphan
                log.warning(
                    "orphan %s pid %d (%s): %s; %s",
                    o.kind,
                    o.pid,
                    o.why,
                    a.outcome,
                    a.detail,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("orphan cleanup failed")

    async def escalate(self) -> None:
        """Tell the user (desktop notification, ``ev_escalation``) about mail left waiting.

        Once per batch: a peer is escalated again only for mail newer than what it
        was last escalated for.
        """
        after = self.d.settings.escalate_after
        if after <= 0:
            return
        now = time.time()
        rows = await self.d.commit.run(lambda: self.d.store.upkeep.waiting(now - after))
        seen = {row[0] for row in rows}
        for peer_id in [x for x in self.escalated if x not in seen]:
            del self.escalated[peer_id]
        for peer_id, name, count, oldest, newest in rows:
            if newest <= self.escalated.get(peer_id, 0):
                continue
            self.escalated[peer_id] = newest
            age = now - oldest
            log.info(
                "escalating: %d message(s) for %s (%s) waiting %.0fs", count, name, peer_id, age
            )
            self.d.publish(
                "peers", p.Escalation(peer_id=peer_id, name=name, waiting=count, oldest_age=age)
            )
            text = f"{count} message(s) for {name} waiting for {_duration(age)}"
            self.d.spawn(self.notify("claude-peers: unread mail", text))

    async def notify(self, title: str, body: str) -> None:
        """Show a desktop notification; a missing or failing notifier is only logged."""
        if sys.platform == "darwin":

            def quoted(text: str) -> str:
                return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

            script = f"display notification {quoted(body)} with title {quoted(title)}"
            argv = ["osascript", "-e", script]
        else:
            argv = ["notify-send", "--app-name=claude-peers", title, body]
        exe = shutil.which(argv[0])
        if exe is None:
            level = logging.DEBUG if self.notifier_missing else logging.WARNING
            log.log(level, "no desktop notifier (%s) on PATH; not notifying: %s", argv[0], body)
            self.notifier_missing = True
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                exe,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            log.warning("could not run %s: %s", exe, e)
            return
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), NOTIFY_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log.warning("%s did not finish within %gs; killed it", argv[0], NOTIFY_TIMEOUT)
            return
        except asyncio.CancelledError:
            # The daemon is stopping; its task group awaits this, so reap the notifier.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode:
            why = stderr.decode(errors="replace").strip()[:200]
            log.warning("%s failed (exit %s): %s", argv[0], proc.returncode, why)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _dead_agents(agents: dict[int, tuple[str, float]]) -> list[tuple[str, int, float]]:
    """(peer id, pid, start) of each agent whose process has exited."""
    return [
        (peer_id, pid, start)
        for pid, (peer_id, start) in agents.items()
        if not identity.is_alive(pid, start, unknown=True)
    ]
