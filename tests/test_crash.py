"""Crashes under load: ``kill -9`` and SIGTERM of the daemon in the middle of heavy traffic.

Several ``AsyncClient`` senders and receivers (each a real peer backed by a live agent
process) send, claim and acknowledge as fast as they can while the daemon is killed at
random moments, many times over, and brought back either by the test or by a client's
own auto-start. The clients reconnect by themselves. Afterwards the books must balance:

- every message id a sender was given exists exactly once and ends up delivered;
- no receiver is handed a message again once its acknowledgement was confirmed, and no
  message is confirmed as newly acknowledged twice (a handed-out message whose ack was
  lost to the crash is legitimately offered again after its lease, and counted once);
- a request the daemon refused with ``shutting_down`` was not carried out;
- every client is still the same peer after all the restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from peersd import protocol as p
from peersd.client import AsyncClient, Client, session_registration
from peersd.errors import Code, PeersError

from .conftest import PYTHON, register

CONFIG = """\
rate_per_second = 0
queue_limit = 1000000
lease_seconds = 1.0
sweep_interval = 0.25
escalate_after = 0
orphan_cleanup = false
"""
"""Shared by the daemons the test starts and the ones a client auto-starts (same file)."""
LEASE = 1.0
UNCERTAIN = {Code.UNREACHABLE, Code.TIMEOUT}
"""Outcomes that say nothing about whether the daemon carried the request out."""


def write_config(home: Path) -> None:
    cfg = home / ".claude" / "claude-peers.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(CONFIG)


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (an auto-started daemon is not our child)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X")


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.005)


@dataclass
class Books:
    """What the clients saw; checked against the daemon's final state."""

    returned: dict[str, str] = field(default_factory=dict)
    """message id -> text, for every send that returned an id"""
    uncertain: set[str] = field(default_factory=set)
    """texts of sends whose outcome the client cannot know (connection lost)"""
    refused: set[str] = field(default_factory=set)
    """texts of sends the daemon answered with shutting_down: must not be stored"""
    confirmed: dict[str, str] = field(default_factory=dict)
    """message id -> receiver name, for every ack that confirmed the message as newly acked"""
    ack_unknown: set[str] = field(default_factory=set)
    """ids whose ack was sent but whose answer was lost"""
    handed: int = 0
    redelivered: int = 0
    abandoned: set[str] = field(default_factory=set)
    """ids a receiver claimed and then dropped without acking (a crashed client)"""
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sends: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    peer_ids: dict[str, set[str]] = field(default_factory=dict)


class Chaos:
    """Traffic from several async clients while a killer task crashes the daemon."""

    def __init__(self, daemon, agents, senders: int = 4, receivers: int = 2) -> None:
        self.daemon = daemon
        self.settings = daemon.settings
        self.books = Books()
        self.n_senders = senders
        self.n_receivers = receivers
        self.agents = {
            name: agents.spawn().pid
            for name in [f"s{i}" for i in range(senders)] + [f"r{i}" for i in range(receivers)]
        }
        self.stop_sending = asyncio.Event()
        self.stop_receiving = asyncio.Event()
        self.autostarted: list[int] = []
        self.clients: dict[str, AsyncClient] = {}
        self.exit_codes: list[int] = []
        self.rng = random.Random(int(os.environ.get("CRASH_SEED", "0")) or None)

    # ------------------------------------------------------------ clients

    async def client(self, name: str) -> AsyncClient:
        b = self.books
        b.reconnects[name] = 0

        async def on_reconnect() -> None:
            b.reconnects[name] += 1
            assert c.peer is not None
            b.peer_ids[name].add(c.peer.id)

        c = AsyncClient(
            self.settings,
            kind="claude-code",
            autostart=False,
            timeout=10,
            on_reconnect=on_reconnect,
        )
        await c.__aenter__()
        req = session_registration(self.settings, self.agents[name], "claude-code", cwd="/tmp")
        req.name = name
        peer = await c.bind(req)
        b.peer_ids[name] = {peer.id}
        return c

    async def sender(self, c: AsyncClient, name: str, lane: int) -> None:
        b = self.books
        receivers = [f"r{i}" for i in range(self.n_receivers)]
        i = 0
        while not self.stop_sending.is_set():
            text = f"{name}/{lane}/{i}"
            i += 1
            to = receivers[i % len(receivers)]
            try:
                sent = await c.call(p.Send(id=0, to=to, text=text), wait_connected=15)
            except PeersError as e:
                if e.code in UNCERTAIN:
                    b.uncertain.add(text)
                elif e.code == Code.SHUTTING_DOWN:
                    b.refused.add(text)
                else:
                    b.errors.append(f"send {text}: {e.code}: {e.message}")
                    b.uncertain.add(text)
                await asyncio.sleep(0.005)
                continue
            b.sends += 1
            if sent.message_id in b.returned:
                b.violations.append(f"message id {sent.message_id} returned twice")
            b.returned[sent.message_id] = text

    async def receiver(self, c: AsyncClient, name: str) -> None:
        b = self.books
        while not self.stop_receiving.is_set():
            try:
                claimed = await c.call(
                    p.Claim(id=0, limit=100, lease_seconds=LEASE), wait_connected=15
                )
            except PeersError as e:
                if e.code not in UNCERTAIN | {Code.SHUTTING_DOWN}:
                    b.errors.append(f"claim by {name}: {e.code}: {e.message}")
                await asyncio.sleep(0.005)
                continue
            if not claimed.messages:
                await asyncio.sleep(0.01)
                continue
            ids = [m.id for m in claimed.messages]
            for m in claimed.messages:
                b.handed += 1
                if m.id in b.confirmed:
                    b.violations.append(
                        f"{m.id} handed to {name} again after its ack was confirmed "
                        f"(attempts {m.attempts})"
                    )
                if m.attempts > 1:
                    b.redelivered += 1
                if m.recipient_name != name:
                    b.violations.append(f"{m.id} for {m.recipient_name} handed to {name}")
                b.ack_unknown.discard(m.id)  # offered again: that ack did not happen
                b.abandoned.discard(m.id)
            if self.rng.random() < 0.05:
                b.abandoned.update(ids)  # crash between claim and ack: no ack, no release
                continue
            try:
                acked = await c.call(p.Ack(id=0, message_ids=ids, via="cli"), wait_connected=15)
            except PeersError as e:
                if e.code in UNCERTAIN:
                    b.ack_unknown.update(ids)
                elif e.code != Code.SHUTTING_DOWN:
                    b.errors.append(f"ack by {name}: {e.code}: {e.message}")
                    b.ack_unknown.update(ids)
                continue
            if acked.already:
                b.violations.append(f"ack by {name} found already delivered: {acked.already}")
            if sorted(acked.acked) != sorted(ids):
                b.violations.append(f"ack by {name} acked {acked.acked}, asked for {ids}")
            for mid in acked.acked:
                if mid in b.confirmed:
                    b.violations.append(f"{mid} acked as new twice ({b.confirmed[mid]}, {name})")
                b.confirmed[mid] = name

    # ------------------------------------------------------------ the killer

    def kill_current(self, sig: int) -> None:
        """Signal whichever daemon runs now (started by the test or auto-started)."""
        if self.daemon.running:
            if sig == signal.SIGKILL:
                self.daemon.kill9()
            else:
                self.exit_codes.append(self.daemon.stop(sig))
        else:
            pid = self.autostarted[-1]
            os.kill(pid, sig)
            wait_gone(pid)

    def restart(self, autostart: bool) -> None:
        if not autostart:
            self.daemon.start()
            return
        # A client's auto-start brings it back: same settings, same config file.
        with Client(self.settings, kind="cli", autostart=True, timeout=10) as c:
            self.autostarted.append(c.request(p.Status).pid)

    async def all_connected(self, timeout: float = 15.0) -> None:
        """Every client is back (so each kill hits all of them, under full traffic)."""
        deadline = time.monotonic() + timeout
        while not all(c.connected for c in self.clients.values()):
            assert time.monotonic() < deadline, "a client did not reconnect by itself"
            await asyncio.sleep(0.01)

    async def killer(self, rounds: int, sig: int, autostart_every: int) -> None:
        for n in range(rounds):
            await self.all_connected()
            await asyncio.sleep(self.rng.uniform(0.25, 0.9))
            await asyncio.to_thread(self.kill_current, sig)
            auto = autostart_every > 0 and n % autostart_every == autostart_every - 1
            auto = auto and n != rounds - 1  # end on a daemon the test can stop and wait for
            await asyncio.to_thread(self.restart, auto)

    def cleanup(self) -> None:
        for pid in self.autostarted:
            if not process_gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid)

    # ------------------------------------------------------------ the run

    async def run(self, rounds: int, sig: int, autostart_every: int = 0) -> None:
        self.clients = clients = {name: await self.client(name) for name in self.agents}
        senders = [
            asyncio.create_task(self.sender(clients[f"s{i}"], f"s{i}", lane))
            for i in range(self.n_senders)
            for lane in range(4)
        ]
        receivers = [
            asyncio.create_task(self.receiver(clients[f"r{i}"], f"r{i}"))
            for i in range(self.n_receivers)
        ]
        try:
            await self.killer(rounds, sig, autostart_every)
            await self.all_connected()
            await asyncio.sleep(0.3)  # traffic on the final daemon too
            self.stop_sending.set()
            await asyncio.wait_for(asyncio.gather(*senders), 30)
            await self.drain()
            self.stop_receiving.set()
            await asyncio.wait_for(asyncio.gather(*receivers), 30)
            for name, c in clients.items():
                me = await c.request(p.Whoami)
                self.books.peer_ids[name].add(me.peer.id)
        finally:
            self.stop_sending.set()
            self.stop_receiving.set()
            for task in senders + receivers:
                task.cancel()
            await asyncio.gather(*senders, *receivers, return_exceptions=True)
            for c in clients.values():
                await c.aclose()

    async def drain(self, timeout: float = 15.0) -> None:
        """Let the receivers finish: abandoned leases lapse and are claimed again."""
        deadline = time.monotonic() + timeout
        while True:
            st = await asyncio.to_thread(self.status)
            if st.messages["queued"] == 0 and st.messages["leased"] == 0:
                return
            assert time.monotonic() < deadline, (
                f"mail still undelivered: {st.messages}; " + "\n".join(self.books.violations[:5])
            )
            await asyncio.sleep(0.1)

    def status(self) -> p.DaemonStatus:
        with self.daemon.client() as c:
            return c.request(p.Status)

    # ------------------------------------------------------------ the books

    def verify(self, rounds: int) -> dict[str, int]:
        b = self.books
        assert not b.violations, "\n".join(b.violations[:20])
        assert not b.errors, "\n".join(b.errors[:20])
        assert b.sends > 20 * rounds, f"only {b.sends} sends: the test proves nothing"
        for name, ids in b.peer_ids.items():
            assert len(ids) == 1, f"{name} changed identity across restarts: {ids}"
            assert b.reconnects[name] >= rounds, f"{name} reconnected {b.reconnects[name]} times"
        # Every id a sender was given exists and was delivered.
        ids = list(b.returned)
        with self.daemon.client() as c:
            for i in range(0, len(ids), 1000):
                items = c.request(p.MessageStatus, message_ids=ids[i : i + 1000]).items
                lost = [x.message_id for x in items if not x.found]
                assert not lost, f"{len(lost)} acknowledged messages were lost: {lost[:5]}"
                undelivered = [(x.message_id, x.state) for x in items if x.state != "delivered"]
                assert not undelivered, f"not delivered: {undelivered[:5]}"
        # ... and was handed to its receiver, who acked it (confirmed or answer lost).
        unaccounted = [mid for mid in ids if mid not in b.confirmed and mid not in b.ack_unknown]
        assert not unaccounted, f"delivered but never acked by a receiver: {unaccounted[:5]}"
        # The daemon's own rows, read directly once it has stopped.
        code = self.daemon.stop(signal.SIGTERM)
        assert code == 0, self.daemon.log()[-3000:]
        db = apsw.Connection(str(self.settings.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = {
                text: (seq, state, n)
                for text, seq, state, n in db.execute(
                    "SELECT text, max(seq), max(state), count(*) FROM messages GROUP BY text"
                )
            }
            tag = db.execute("SELECT value FROM meta WHERE key = 'tag'").fetchone()[0]
        finally:
            db.close()
        twice = [text for text, (_, _, n) in rows.items() if n > 1]
        assert not twice, f"stored more than once: {twice[:5]}"
        for mid, text in b.returned.items():
            seq, state, _ = rows[text]
            assert mid == f"m-{tag}-{seq}", f"{mid} holds {text!r}, stored as seq {seq}"
        stored_refused = sorted(b.refused & rows.keys())
        assert not stored_refused, f"refused with shutting_down yet stored: {stored_refused[:5]}"
        # Mail whose send outcome was unknown is stored at most once and delivered too.
        for text in b.uncertain & rows.keys():
            assert rows[text][1] == "delivered", (text, rows[text])
        return {
            "sends": b.sends,
            "handed": b.handed,
            "redelivered": b.redelivered,
            "ack_unknown": len(b.ack_unknown),
            "uncertain": len(b.uncertain),
            "stored_uncertain": len(b.uncertain & rows.keys()),
        }


def run_chaos(make_daemon, agents, home, rounds: int, sig: int, autostart_every: int = 0):
    write_config(home)
    daemon = make_daemon()
    chaos = Chaos(daemon, agents)
    try:
        asyncio.run(chaos.run(rounds, sig, autostart_every))
        figures = chaos.verify(rounds)
    finally:
        chaos.cleanup()
    print(f"\n{rounds} rounds of signal {sig}: {figures}")
    return chaos, figures


def test_kill9_at_random_moments_under_traffic(make_daemon, agents, home):
    chaos, figures = run_chaos(
        make_daemon, agents, home, rounds=16, sig=signal.SIGKILL, autostart_every=3
    )
    assert len(chaos.autostarted) == 5, "the clients' auto-start brought the daemon back too"
    auto_log = chaos.settings.daemon_log_path.read_text()
    assert auto_log.count("auto-started") >= 3, auto_log[-2000:]
    assert "removing stale socket" in chaos.daemon.log() + auto_log


def test_sigterm_under_traffic_loses_nothing_and_exits_zero(make_daemon, agents, home):
    chaos, figures = run_chaos(make_daemon, agents, home, rounds=5, sig=signal.SIGTERM)
    assert chaos.exit_codes == [0] * 5
    assert chaos.daemon.log().count("stopped cleanly") == 6  # five rounds and the final stop


CLAIMER = """
import sys, time
from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.config import load
settings = load()
with Client(settings, kind="claude-code", autostart=False) as c:
    c.call(session_registration(settings, int(sys.argv[1]), "claude-code", cwd="/tmp"))
    got = c.request(p.Claim, lease_seconds=float(sys.argv[2])).messages
    print(" ".join(m.id for m in got), flush=True)
    time.sleep(60)  # killed here: between claim and ack
"""


def test_client_killed_between_claim_and_ack_gets_the_mail_once_more(make_daemon, agents, home):
    daemon = make_daemon(sweep_interval=0.2)
    sender_agent, receiver_agent = agents.spawn(), agents.spawn()
    with daemon.client() as cs, daemon.client() as cr:
        register(cs, sender_agent.pid, name="sender")
        rx = register(cr, receiver_agent.pid, name="receiver")
        cr.request(p.Subscribe, kinds=["mail"])
        sent = [cs.request(p.Send, to="receiver", text=f"job {i}").message_id for i in range(5)]
        proc = subprocess.Popen(
            [PYTHON, "-c", CLAIMER, str(receiver_agent.pid), "1.0"],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().split()
        finally:
            proc.kill()
            proc.wait()
        assert line == sent, "the helper claimed the mail, then was killed before acking"
        killed_at = time.monotonic()
        statuses = cr.request(p.MessageStatus, message_ids=sent).items
        assert {x.state for x in statuses} == {"leased"}
        assert cr.request(p.Claim).messages == [], "leased to the dead helper until it lapses"
        # The lease lapses: the sweep offers the mail again with an ev_mail per message.
        cr.events.clear()
        offered = []
        while len(offered) < len(sent):
            ev = cr.next_event(5)
            assert ev is not None, f"no mail event after the lease; got {offered}"
            if isinstance(ev, p.MailEvent):
                offered.append(ev.message_id)
        assert time.monotonic() - killed_at >= 0.9, "offered again before the lease ran out"
        assert sorted(offered) == sorted(sent)
        again = cr.request(p.Claim).messages
        assert [m.id for m in again] == sent
        assert {m.attempts for m in again} == {2}
        assert {m.recipient for m in again} == {rx.id}
        acked = cr.request(p.Ack, message_ids=sent, via="cli")
        assert acked.acked == sent and acked.already == []
        time.sleep(1.2)  # past another lease: nothing comes back
        assert cr.request(p.Claim).messages == []
        assert cr.next_event(0.3) is None
        statuses = cr.request(p.MessageStatus, message_ids=sent).items
        assert {(x.state, x.delivered_via) for x in statuses} == {("delivered", "cli")}


WORK_ROUNDS = 5


def test_kill9_keeps_tasks_decisions_and_their_mail_whole(make_daemon, agents, tmp_path):
    """Tasks and decisions written as fast as one client can while the daemon is killed
    with SIGKILL, five times: every change the client was told of survives, and each is
    whole (a task never lacks its history or its mail, a decision version never lacks its
    announcement, versions have no gaps), because each is one group-commit operation."""
    daemon = make_daemon(rate_per_second="0", queue_limit="1000000")
    room = tmp_path / "room"
    room.mkdir()
    boss_agent, worker_agent = agents.spawn(), agents.spawn()
    tasks: dict[str, str] = {}  # task id -> title, for every create that was answered
    versions: dict[str, dict[int, str]] = {}  # key -> version -> value, as answered
    n = 0
    for round_ in range(WORK_ROUNDS):
        if round_:
            daemon.start()
        with daemon.client() as cb, daemon.client() as cw:
            register(cb, boss_agent.pid, cwd=str(room), name="boss")
            register(cw, worker_agent.pid, cwd=str(room), name="worker")
            stop = time.monotonic() + random.uniform(0.3, 0.8)
            killed = False
            while True:
                if not killed and time.monotonic() > stop:
                    daemon.kill9()  # mid-stream: the next request finds the daemon dead
                    killed = True
                n += 1
                try:
                    if n % 2:
                        title = f"task {n}"
                        got = cb.request(p.CreateTask, title=title, assignee="worker").task
                        tasks[got.id] = title
                    else:
                        key, value = f"k{n % 3}", f"v{n}"
                        d = cb.request(p.PostDecision, key=key, value=value, rationale="r").decision
                        versions.setdefault(key, {})[d.version] = value
                except PeersError as e:
                    assert killed and e.code in UNCERTAIN, e
                    break
    daemon.start()
    daemon.stop(signal.SIGTERM)
    assert len(tasks) > 20 and sum(map(len, versions.values())) > 20, "proves nothing"
    db = apsw.Connection(str(daemon.settings.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        stored = {f"t-{seq}": title for seq, title in db.execute("SELECT seq, title FROM tasks")}
        for task_id, title in tasks.items():
            assert stored.get(task_id) == title, f"{task_id} lost or changed"
        created = Counter(
            seq for (seq,) in db.execute("SELECT task FROM task_events WHERE what = 'created'")
        )
        mailed = Counter(
            int(m.group(1))
            for (text,) in db.execute("SELECT text FROM messages WHERE recipient_name = 'worker'")
            if (m := re.search(r"assigned you task t-(\d+): ", text))
        )
        for seq, title in db.execute("SELECT seq, title FROM tasks"):
            got = (created[seq], mailed[seq])
            assert got == (1, 1), f"t-{seq} {title!r}: {got[0]} events, {got[1]} mails"
        stored_versions: dict[str, dict[int, str]] = {}
        for key, version, value in db.execute("SELECT key, version, value FROM decisions"):
            stored_versions.setdefault(key, {})[version] = value
        for key, seen in versions.items():
            for version, value in seen.items():
                assert stored_versions[key][version] == value, (key, version)
        for key, kept in stored_versions.items():
            assert sorted(kept) == list(range(1, len(kept) + 1)), f"gaps in {key}: {sorted(kept)}"
        announced = db.execute(
            "SELECT count(*) FROM messages WHERE text LIKE '[claude-peers decision %'"
        ).fetchone()[0]
        assert announced == sum(map(len, stored_versions.values()))
    finally:
        db.close()
