"""Mail left waiting too long: one desktop notification and one event per batch.

The daemon runs with a small ``escalate_after`` and a fake ``notify-send`` (and
``osascript``) on its PATH that records its arguments, so what would reach the desktop
can be read back. Without a notifier the daemon says so in its log and goes on.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from peersd import protocol as p

from .conftest import PYTHON, register

FAKE = """#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg"; done >> "{log}"
echo "---" >> "{log}"
"""


@pytest.fixture
def notifier(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "notifier-bin"
    folder.mkdir()
    log = tmp_path / "notifications.log"
    for name in ("notify-send", "osascript"):
        script = folder / name
        script.write_text(FAKE.format(log=log))
        script.chmod(0o755)
    return folder, log


def start(make_daemon, path: str, **settings: object):
    daemon = make_daemon(start=False, sweep_interval=0.1, **settings)
    daemon.env["PATH"] = path
    return daemon.start()


def notifications(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [n.strip() for n in log.read_text().split("---\n") if n.strip()]


def escalations(client, seconds: float) -> list[p.Escalation]:
    found = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ev = client.next_event(left)
        if isinstance(ev, p.Escalation):
            found.append(ev)
    return found


def wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_waiting_mail_escalates_once_per_batch(make_daemon, agents, notifier):
    folder, log = notifier
    daemon = start(make_daemon, f"{folder}:{os.environ['PATH']}", escalate_after=0.3)
    with (
        daemon.client("claude-code") as ca,
        daemon.client("codex") as cb,
        daemon.client() as watcher,
    ):
        register(ca, agents.spawn().pid, name="alpha")
        beta = register(cb, agents.spawn().pid, "codex", name="beta")
        watcher.request(p.Subscribe, kinds=["peers"])
        sent_at = time.time()
        ca.request(p.Send, to="beta", text="first")
        ca.request(p.Send, to="beta", text="second")

        [ev] = escalations(watcher, 1.5)  # once, though many sweeps run meanwhile
        assert (ev.peer_id, ev.name, ev.waiting) == (beta.id, "beta", 2)
        assert 0.3 <= ev.oldest_age <= time.time() - sent_at + 0.1
        wait_for(lambda: len(notifications(log)) == 1)
        [note] = notifications(log)
        assert "2 message(s) for beta" in note and "claude-peers" in note

        ca.request(p.Send, to="beta", text="third")  # a new batch
        [ev] = escalations(watcher, 1.5)
        assert (ev.name, ev.waiting) == ("beta", 3)
        wait_for(lambda: len(notifications(log)) == 2)
        assert "3 message(s) for beta" in notifications(log)[1]

        msgs = cb.request(p.Claim, limit=10).messages
        cb.request(p.Ack, message_ids=[m.id for m in msgs], via="check")
        assert escalations(watcher, 0.6) == []  # read: nothing more to say
    assert len(notifications(log)) == 2
    assert "escalating: 2 message(s) for beta" in daemon.log()


def test_no_notifier_is_logged_not_fatal(make_daemon, agents, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    daemon = start(make_daemon, str(empty), escalate_after=0.2)
    with daemon.client("claude-code") as ca, daemon.client() as watcher:
        register(ca, agents.spawn().pid, name="alpha")
        with daemon.client("codex") as cb:
            register(cb, agents.spawn().pid, "codex", name="beta")
        watcher.request(p.Subscribe, kinds=["peers"])
        ca.request(p.Send, to="beta", text="anyone?")
        [ev] = escalations(watcher, 1.5)
        assert ev.name == "beta"
        wait_for(lambda: "no desktop notifier" in daemon.log())
        assert watcher.request(p.Status).pid == daemon.proc.pid  # still serving
    assert daemon.running


def test_zero_disables_escalation(make_daemon, agents, notifier):
    folder, log = notifier
    daemon = start(make_daemon, f"{folder}:{os.environ['PATH']}", escalate_after=0)
    with daemon.client("claude-code") as ca, daemon.client() as watcher:
        register(ca, agents.spawn().pid, name="alpha")
        with daemon.client("codex") as cb:
            register(cb, agents.spawn().pid, "codex", name="beta")
        watcher.request(p.Subscribe, kinds=["peers"])
        ca.request(p.Send, to="beta", text="no hurry")
        assert escalations(watcher, 0.8) == []
    assert notifications(log) == []


def test_peers_watch_shows_escalations(make_daemon, agents, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    daemon = start(make_daemon, str(empty), escalate_after=0.3)
    env = {k: v for k, v in daemon.env.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["PATH"] = os.environ["PATH"]
    watch = subprocess.Popen(
        [PYTHON, "-m", "peers_cli.app", "watch"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watch.stderr is not None and watch.stdout is not None
        ready, _, _ = select.select([watch.stderr], [], [], 10)
        assert ready and b"watching" in watch.stderr.readline()
        with daemon.client("claude-code") as ca, daemon.client("codex") as cb:
            register(ca, agents.spawn().pid, name="alpha")
            register(cb, agents.spawn().pid, "codex", name="beta")
            ca.request(p.Send, to="beta", text="look up")
            lines: list[str] = []
            deadline = time.monotonic() + 5
            while not any("waiting" in line for line in lines):
                left = deadline - time.monotonic()
                assert left > 0, lines
                ready, _, _ = select.select([watch.stdout], [], [], left)
                if ready:
                    lines.append(watch.stdout.readline().decode())
        line = next(line for line in lines if "waiting" in line)
        assert "1 message(s) for beta" in line and "unread for" in line
    finally:
        watch.terminate()
        watch.wait(5)


def test_waiting_queries_only_peers_with_mail(tmp_path):
    """``Store.upkeep.waiting`` looks at the peers with pending mail only, active ones only."""
    from peersd.store import Store

    store = Store(tmp_path / "db.sqlite")
    with store.transaction():
        now = time.time()
        peers = []
        for i in range(3):
            req = p.Register(id=0, agent_pid=100 + i, agent_start=1.0, cwd="/tmp", name=f"n{i}")
            peers.append(store.register(req, now, "m", "h").peer)
        store.send(peers[0], peers[1], "x", None, now - 100, 3600)
        store.send(peers[0], peers[1], "y", None, now, 3600)
        store.send(peers[0], peers[2], "z", None, now - 100, 3600)
        store.mark_gone(peers[2].id, "test", now)
        rows = store.upkeep.waiting(now - 50)
    assert [(r[0], r[1], r[2]) for r in rows] == [(peers[1].id, "n1", 1)]
    store.close()
