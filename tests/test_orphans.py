"""Orphaned helpers: found by ``peers orphans``, ended by ``peers cleanup`` and the daemon.

Real helpers run under a real stand-in agent (``claude`` → shell → helper, as in
test_mcp). A helper that notices its agent's death exits by itself, so the lingering
orphans here are the ones that cannot notice: a ``peers-hook --wait`` waiter with a
long ``--check-interval`` (a documented option), and a ``peers-mcp`` that is stopped
(SIGSTOP: a hung helper). Helpers with a live agent, look-alike processes and the
helpers of another daemon must never be listed or touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from peersd import protocol as p
from peersd.orphans import helper_kind

from .conftest import PEERS, PYTHON, DaemonProc, register

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PEERS_MCP = str(BIN / "peers-mcp")
PEERS_HOOK = str(BIN / "peers-hook")


# --------------------------------------------------------------------------- helpers


class Started:
    """Processes a test started, ended by pid (and start time) at teardown."""

    def __init__(self) -> None:
        self.procs: list[psutil.Process] = []
        self.popens: list[subprocess.Popen[bytes]] = []

    def track(self, pid: int) -> int:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.procs.append(psutil.Process(pid))
        return pid

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running():  # same pid *and* start time
                    proc.kill()
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
            popen.wait()


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    yield s
    s.close()


def child_of(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            kids = psutil.Process(pid).children()
            if kids:
                return kids[0].pid
        time.sleep(0.02)
    raise AssertionError(f"process {pid} started nothing")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def peers_cli(daemon: DaemonProc, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PEERS, *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def orphans_json(daemon: DaemonProc) -> list[dict]:
    done = peers_cli(daemon, "orphans", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Waiter:
    """A registered stand-in agent with a ``peers-hook --wait`` waiter under it."""

    def __init__(self, daemon: DaemonProc, agent_bin: Path, started: Started, name: str) -> None:
        session = f"session-{name}"
        self.agent = subprocess.Popen(
            [
                str(agent_bin / "claude"),
                str(HERE / "fake_agent.py"),
                "--",
                PEERS_HOOK,
                "--wait",
                "--check-interval",
                "3600",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**daemon.env, "CLAUDE_PEERS_AUTOSTART": "0"},
        )
        started.popens.append(self.agent)
        with daemon.client("claude-code") as c:
            self.peer = register(c, self.agent.pid, name=name, session_id=session)
        assert self.agent.stdin is not None
        hook_input = {"hook_event_name": "Stop", "session_id": session, "cwd": "/tmp"}
        self.agent.stdin.write(json.dumps(hook_input).encode())
        self.agent.stdin.close()
        self.shell = started.track(child_of(self.agent.pid))
        self.pid = started.track(child_of(self.shell))
        lock = daemon.settings.run_dir / f"peers-hook-wait.{self.peer.id}.lock"
        deadline = time.monotonic() + 10
        while not self._holds(lock):
            assert alive(self.pid), "the waiter exited"
            assert time.monotonic() < deadline, "the waiter never took its lock"
            time.sleep(0.02)

    def _holds(self, lock: Path) -> bool:
        with contextlib.suppress(psutil.Error):
            return any(f.path == str(lock) for f in psutil.Process(self.pid).open_files())
        return False

    def orphan(self) -> None:
        """The agent dies, and the shell between it and the waiter too."""
        os.kill(self.agent.pid, signal.SIGKILL)
        self.agent.wait()
        os.kill(self.shell, signal.SIGKILL)
        assert gone_within(self.shell, 5)
        deadline = time.monotonic() + 5
        while psutil.Process(self.pid).ppid() == self.shell:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def decoy(started: Started) -> int:
    """An unrelated, re-parented process whose arguments merely mention our helpers."""
    code = "import time; time.sleep(120)"
    launcher = subprocess.run(
        [
            PYTHON,
            "-c",
            "import subprocess, sys; "
            "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)",
            PYTHON,
            "-c",
            code,
            "peers-mcp",
            "peers-hook",
            "--wait",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return started.track(int(launcher.stdout))


# --------------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["/venv/bin/peers-mcp"], "peers-mcp"),
        (["/venv/bin/python3.11", "/venv/bin/peers-mcp", "--server-name", "x"], "peers-mcp"),
        (["/venv/bin/python", "/venv/bin/peers-hook", "--wait"], "peers-hook --wait"),
        (["python3", "-m", "peers_mcp.server"], "peers-mcp"),
        (["python3", "-X", "utf8", "-m", "peers_mcp.hook", "--wait"], "peers-hook --wait"),
        (
            ["python", "-c", "from peers_mcp.hook import main; main()", "--wait"],
            "peers-hook --wait",
        ),
        (  # the waiter as the installers write it (common.hook_launcher)
            [
                "/venv/bin/python",
                "-I",
                "-S",
                "-c",
                'import sys; sys.path[:0] = ["/venv/lib"]; from peers_mcp.hook import main; main()',
                "--wait",
            ],
            "peers-hook --wait",
        ),
        (["/venv/bin/python", "/venv/bin/peers-mcp", "--direct"], "peers-mcp"),
        (["python3", "-m", "peers_mcp.gateway", "--listen", "/r/s"], None),  # shared, no agent
        (["/venv/bin/python", "/venv/bin/peers-hook"], None),  # a hook that ends by itself
        (["python", "-c", "import time; time.sleep(9)", "peers-mcp"], None),
        (["sleep", "peers-mcp"], None),
        (["vim", "peers-hook", "--wait"], None),
        (["python", "/tmp/peers-mcp.py"], None),
        (["bash", "-c", "peers-mcp"], None),
        ([], None),
    ],
)
def test_only_our_helpers_are_recognised(argv, kind):
    found = helper_kind(argv)
    assert (found[0] if found else None) == kind


# --------------------------------------------------------------------------- CLI


def test_orphaned_waiter_is_listed_and_cleaned_up(make_daemon, agent_bin, started):
    daemon = make_daemon(orphan_cleanup=0)
    lost = Waiter(daemon, agent_bin, started, "lost")
    live = Waiter(daemon, agent_bin, started, "live")
    other = decoy(started)
    assert orphans_json(daemon) == []  # every helper has its agent
    lost.orphan()

    found = orphans_json(daemon)
    assert [o["pid"] for o in found] == [lost.pid]
    entry = found[0]
    assert entry["kind"] == "peers-hook --wait"
    assert (entry["peer_id"], entry["peer_name"]) == (lost.peer.id, "lost")
    assert f"its agent (pid {lost.agent.pid}) has exited" in entry["why"]
    if psutil.Process(lost.pid).ppid() == 1:
        assert "re-parented to pid 1" in entry["why"]
    assert entry["age"] >= 0

    table = peers_cli(daemon, "orphans")
    assert table.returncode == 0
    assert str(lost.pid) in table.stdout and "lost" in table.stdout
    assert "has exited" in table.stdout

    dry = peers_cli(daemon, "cleanup", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [(o["pid"], o["outcome"]) for o in json.loads(dry.stdout)] == [
        (lost.pid, "would_terminate")
    ]
    assert alive(lost.pid)

    done = peers_cli(daemon, "cleanup", "--json", "--grace", "3")
    assert done.returncode == 0, done.stderr
    actions = json.loads(done.stdout)
    assert [(a["pid"], a["outcome"]) for a in actions] == [(lost.pid, "terminated")]
    assert actions[0]["signals"][0] == "SIGTERM"
    assert not alive(lost.pid)
    assert alive(live.pid) and alive(other)
    assert orphans_json(daemon) == []
    again = peers_cli(daemon, "cleanup")
    assert again.returncode == 0 and "No orphaned helpers" in again.stdout


def _mcp(daemon: DaemonProc, agent_bin: Path, started: Started) -> tuple:
    """A peers-mcp under a stand-in agent, through the handshake and registered."""
    agent = subprocess.Popen(
        [str(agent_bin / "claude"), str(HERE / "fake_agent.py"), "--", PEERS_MCP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**daemon.env, "CLAUDE_PEERS_AUTOSTART": "0"},
    )
    started.popens.append(agent)
    shell = started.track(child_of(agent.pid))
    helper = started.track(child_of(shell))
    assert agent.stdin and agent.stdout
    for msg in (
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "claude-code", "version": "test"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ):
        agent.stdin.write((json.dumps(msg) + "\n").encode())
        agent.stdin.flush()
        if "id" in msg:
            assert "result" in json.loads(agent.stdout.readline())
    deadline = time.monotonic() + 10
    while True:
        with daemon.client() as c:
            peers = c.request(p.ListPeers, include_self=True).peers
        mine = [x for x in peers if x.helper_pid == helper]
        if mine:
            return agent, shell, helper, mine[0]
        assert time.monotonic() < deadline, "peers-mcp never registered"
        time.sleep(0.05)


def test_hung_mcp_server_whose_agent_died_is_cleaned_up(make_daemon, agent_bin, started):
    daemon = make_daemon(orphan_cleanup=0)
    agent, shell, helper, peer = _mcp(daemon, agent_bin, started)
    _, _, live_helper, _ = _mcp(daemon, agent_bin, started)
    os.kill(helper, signal.SIGSTOP)  # hung: it cannot notice that its agent is gone
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()

    found = orphans_json(daemon)
    assert [o["pid"] for o in found] == [helper]
    assert found[0]["kind"] == "peers-mcp"
    assert found[0]["peer_id"] == peer.id
    assert found[0]["why"] == f"its agent (pid {agent.pid}) has exited"  # the shell is alive

    done = peers_cli(daemon, "cleanup", "--json", "--grace", "5")
    assert done.returncode == 0, done.stderr
    [action] = json.loads(done.stdout)
    assert action["pid"] == helper
    assert action["outcome"] == "terminated"  # SIGCONT let the stopped helper act on SIGTERM
    assert action["signals"] == ["SIGTERM", "SIGCONT"]
    assert not alive(helper)
    assert alive(live_helper)


def test_daemon_ends_only_its_own_orphans(make_daemon, agent_bin, started):
    daemon = make_daemon(orphan_interval=0.3, sweep_interval=0.1, kill_grace=0.5)
    # A second daemon of the same user (another HOME): its helpers are not ours.
    other_home = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    other = DaemonProc(other_home, {"CLAUDE_PEERS_ORPHAN_CLEANUP": "0"})
    try:
        other.start()
        foreign = Waiter(other, agent_bin, started, "foreign")
        lost = Waiter(daemon, agent_bin, started, "lost")
        live = Waiter(daemon, agent_bin, started, "live")
        look_alike = decoy(started)
        foreign.orphan()
        lost.orphan()
        assert gone_within(lost.pid, 15), daemon.log()
        time.sleep(1.0)  # a few more scans
        assert alive(foreign.pid) and alive(live.pid) and alive(look_alike)

        records = json.loads(peers_cli(daemon, "audit", "--json").stdout)
        cleanups = [r for r in records if r["action"] == "cleanup"]
        assert len(cleanups) == 1
        assert cleanups[0]["actor"] == "peersd"
        assert cleanups[0]["target"] == lost.peer.id
        assert f"peers-hook --wait pid {lost.pid}: terminated" in cleanups[0]["detail"]
        assert f"orphan peers-hook --wait pid {lost.pid}" in daemon.log()
        # the other daemon's orphan is still listed there
        assert [o["pid"] for o in orphans_json(other)] == [foreign.pid]
    finally:
        if other.running:
            other.stop()
        shutil.rmtree(other_home, ignore_errors=True)
