"""The ``peers-mcp`` relay and the gateway behind it, with a real daemon and real processes.

What tests/test_mcp.py checks of the tools holds through the relay (it runs the same
``peers-mcp``); here: one gateway serves every session, the relay stays small, and the
failure modes: the gateway killed mid-call, a stuck call, garbage from the client, many
sessions at once, a gateway of other code, a gateway that cannot start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from peers_mcp import relay
from peersd import protocol as p

from .test_mcp import HERE, PEERS_MCP, mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def gateway_sock(daemon: Any) -> str:
    return str(daemon.settings.run_dir / relay.GATEWAY_NAME)


def gateways(path: str) -> list[int]:
    """Pids of the gateway processes listening on ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"peers_mcp.gateway" in argv and path.encode() in argv
        if ours and "State:\tZ" not in Path(f"/proc/{entry}/status").read_text():
            found.append(int(entry))
    return found


INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "claude-code", "version": "test"},
    },
}


class Raw:
    """A ``peers-mcp`` driven line by line (what a client writes, exactly)."""

    def __init__(self, daemon: Any, agent_pid: int, **env: str) -> None:
        self.proc = subprocess.Popen(
            [PEERS_MCP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**daemon.env, "CLAUDE_PEERS_AGENT_PID": str(agent_pid), **env},
            cwd="/tmp",
        )

    def write(self, data: bytes) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, obj: dict[str, Any]) -> None:
        self.write((json.dumps(obj) + "\n").encode())

    def answer(self, rid: object) -> dict[str, Any]:
        assert self.proc.stdout
        while True:
            line = self.proc.stdout.readline()
            assert line, f"peers-mcp closed stdout: {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
            msg = json.loads(line)
            if msg.get("id") == rid:
                return msg

    def close(self) -> int:
        assert self.proc.stdin
        self.proc.stdin.close()
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


async def test_sessions_share_one_gateway_and_register_their_relay(daemon, agent_bin):
    async with mcp_session(daemon, agent_bin) as a, mcp_session(daemon, agent_bin) as b:
        me_a, me_b = await a.whoami(), await b.whoami()
        assert me_a["id"] != me_b["id"]
        pids = gateways(gateway_sock(daemon))
        assert len(pids) == 1, pids
        with daemon.client() as c:
            peers = {x.id: x for x in c.request(p.ListPeers).peers}
        for me in (me_a, me_b):
            helper = peers[me["id"]].helper_pid
            assert helper not in pids  # the relay is the session's helper, not the gateway
            cmdline = Path(f"/proc/{helper}/cmdline").read_text()
            assert "peers-mcp" in cmdline, cmdline
            status = Path(f"/proc/{helper}/status").read_text()
            rss_kib = int(status.split("VmRSS:")[1].split()[0])
            maps = Path(f"/proc/{helper}/maps").read_text()
            # The relay never loads the SDK: no pydantic, a few MiB.
            assert "pydantic" not in maps and rss_kib < 20 * 1024, rss_kib


async def test_a_gateway_killed_mid_call_errors_that_call_and_the_session_goes_on(
    daemon, agent_bin
):
    async with mcp_session(daemon, agent_bin) as s:
        before = await s.whoami()
        [old] = gateways(gateway_sock(daemon))
        failed: list[str] = []

        async def waiting() -> None:
            try:
                await s.call("wait_for_message", timeout_seconds=30)
            except MCPError as e:
                failed.append(str(e))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting)
            await anyio.sleep(0.5)
            os.kill(old, signal.SIGKILL)
        assert time.monotonic() - started < 10
        assert failed and "whether it was done is not known" in failed[0], failed
        # The next call finds a new gateway, with the session rebuilt: same peer.
        after = await s.whoami()
        assert after["id"] == before["id"] and after["name"] == before["name"]
        assert gateways(gateway_sock(daemon)) not in ([], [old])


async def test_a_stuck_call_does_not_hold_up_the_session(daemon, agent_bin):
    async with mcp_session(daemon, agent_bin) as s:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: s.call("wait_for_message", timeout_seconds=60))
            await anyio.sleep(0.3)
            with anyio.fail_after(5):
                assert (await s.whoami())["id"]  # answered while the wait goes on
            tg.cancel_scope.cancel()  # the client gives up on it: the session goes on
        assert (await s.whoami())["id"]


def test_garbage_from_the_client_leaves_the_session_working(daemon, agents):
    raw = Raw(daemon, agents.spawn().pid)
    try:
        raw.write(b"this is not json\n\n{]\n")
        raw.send(INIT)
        assert "result" in raw.answer(0)
        raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        raw.write(b'{"jsonrpc": "2.0", "id": 7, "method": \n')  # half a message
        raw.write(b"\xff\xfe binary \x00\n")
        raw.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert len(raw.answer(1)["result"]["tools"]) >= 15
    finally:
        assert raw.close() == 0


def test_fifty_sessions_starting_at_once_get_one_gateway(daemon, agents):
    """A cold start: 50 relays within a second, no gateway yet; one is started, all serve."""
    path = gateway_sock(daemon)
    assert gateways(path) == []
    raws = [Raw(daemon, agents.spawn().pid) for _ in range(50)]
    try:
        for raw in raws:
            raw.send(INIT)
        for raw in raws:
            assert "result" in raw.answer(0)
            raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            raw.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        for raw in raws:
            assert raw.answer(1)["result"]["tools"]
        assert len(gateways(path)) == 1
        deadline = time.monotonic() + 60
        while True:
            with daemon.client() as c:
                count = len(c.request(p.ListPeers).peers)
            if count == 50 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert count == 50
    finally:
        for raw in raws:
            raw.close()


def test_a_gateway_of_other_code_gives_way_and_ends_with_its_sessions(daemon, agents):
    raw = Raw(daemon, agents.spawn().pid)
    try:
        raw.send(INIT)
        assert "result" in raw.answer(0)
        path = gateway_sock(daemon)
        [old] = gateways(path)
        # A relay of other code (an upgrade) says hello: the gateway gives its place up.
        other = socket.socket(socket.AF_UNIX)
        other.connect(path)
        other.sendall(json.dumps({"relay": 1, "fingerprint": "other code"}).encode() + b"\n")
        assert json.loads(other.makefile().readline())["stale"] is True
        other.close()
        assert not os.path.exists(path)
        fresh = Raw(daemon, agents.spawn().pid)
        fresh.send(INIT)
        assert "result" in fresh.answer(0)
        assert len(gateways(path)) == 2  # the old one still serves its session
        raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        raw.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert raw.answer(1)["result"]["tools"]
        assert raw.close() == 0
        deadline = time.monotonic() + 15
        while old in gateways(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gateways(path) not in ([], [old]) and old not in gateways(path)
        assert fresh.close() == 0
    finally:
        raw.close()


def test_a_gateway_that_cannot_start_is_a_clear_error(daemon, agents, tmp_path):
    """Without the MCP SDK (a broken install) the client is told so at once."""
    fake = tmp_path / "site" / "mcp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mcp (test)')\n")
    raw = Raw(daemon, agents.spawn().pid, PYTHONPATH=str(fake.parent))
    try:
        started = time.monotonic()
        raw.send(INIT)
        error = raw.answer(0)["error"]
        assert time.monotonic() - started < 8
        assert "gateway exited with status 1" in error["message"], error
        assert "No module named mcp (test)" in error["message"], error
    finally:
        assert raw.close() == 0


def test_the_direct_switch_runs_the_server_in_process(daemon, agents):
    raw = Raw(daemon, agents.spawn().pid, CLAUDE_PEERS_MCP_DIRECT="1")
    try:
        raw.send(INIT)
        assert "result" in raw.answer(0)
        assert gateways(gateway_sock(daemon)) == []
        maps = Path(f"/proc/{raw.proc.pid}/maps").read_text()
        assert "pydantic" in maps  # the SDK in this very process
    finally:
        assert raw.close() == 0


def test_the_relay_imports_nothing_heavy() -> None:
    code = "import sys; import peers_mcp.relay; print(sorted(sys.modules))"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(HERE.parent)!r}]; {code}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(eval(done.stdout))
    for heavy in ("mcp", "anyio", "msgspec", "re", "json", "socket", "asyncio", "subprocess"):
        assert heavy not in loaded, heavy


def test_the_gateway_ends_when_its_socket_is_removed(daemon, agents):
    """A gateway never outlives its run directory (a test's HOME, a reset run dir)."""
    raw = Raw(daemon, agents.spawn().pid)
    raw.send(INIT)
    assert "result" in raw.answer(0)
    assert raw.close() == 0
    path = gateway_sock(daemon)
    [pid] = gateways(path)
    os.unlink(path)
    deadline = time.monotonic() + 15
    while pid in gateways(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in gateways(path)
