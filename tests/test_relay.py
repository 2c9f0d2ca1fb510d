"""The ``peers-mcp`` relay and the gateway behind it, with a real daemon and real processes.

What tests/test_mcp.py checks of the tools holds through the relay (it runs the same
``peers-mcp``); here: one gateway serves every session, the relay stays small, and the
failure modes: the gateway killed mid-call, a stuck call, garbage from the client, many
sessions at once, a gateway of other code, a gateway that cannot start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from peers_mcp import gateway as relay_gateway
from peers_mcp import relay
from peersd import protocol as p
from peersd.config import isolated_env

from .test_mcp import HERE, PEERS_MCP, mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def gateway_sock(daemon: Any) -> str:
    return str(daemon.settings.run_dir / relay.gateway_name(relay.fingerprint()))


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


def _starts(daemon: Any) -> int:
    """Gateways started so far under this daemon's run directory (their shared log)."""
    log = daemon.settings.run_dir / relay.LOG_NAME
    return log.read_text().count("listening on") if log.exists() else 0


OLD_RELAY = (
    "import sys; from peers_mcp import relay; relay.__version__ = '0.0.0-old'; "
    "sys.exit(relay.main())"
)
"""A relay started before an upgrade: its version is the old one, the files on disk new."""


def test_relays_of_other_code_never_make_gateways_retire(daemon, agents):
    """An old relay once saw its fingerprint (version fixed at start, file times read at
    each hello) never match, and every gateway it reached retired: a spawn loop. Now the
    fingerprint is read once and names the socket: other code gets a gateway of its own,
    and a hello of other code is served, never a reason to go."""
    new = Raw(daemon, agents.spawn().pid)
    old = subprocess.Popen(
        [sys.executable, "-c", OLD_RELAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**daemon.env, "CLAUDE_PEERS_AGENT_PID": str(agents.spawn().pid)},
        cwd="/tmp",
    )
    old_raw = Raw.__new__(Raw)
    old_raw.proc = old
    try:
        new.send(INIT)
        assert "result" in new.answer(0)
        [current] = gateways(gateway_sock(daemon))
        old_raw.send(INIT)
        assert "result" in old_raw.answer(0)
        # A hello of other code on the current gateway's socket: served, not retired.
        other = socket.socket(socket.AF_UNIX)
        other.connect(gateway_sock(daemon))
        hello = {"relay": 1, "fingerprint": "other code", "env": dict(daemon.env)}
        other.sendall(json.dumps(hello).encode() + b"\n")
        assert json.loads(other.makefile().readline())["gateway"] == 1
        other.close()
        time.sleep(3 * relay_gateway.WATCH_INTERVAL)
        for raw in (new, old_raw):
            raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            raw.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert raw.answer(1)["result"]["tools"]
        assert _starts(daemon) == 2  # one per code, started once each
        assert gateways(gateway_sock(daemon)) == [current]
        assert os.path.exists(gateway_sock(daemon))
    finally:
        assert new.close() == 0
        assert old_raw.close() == 0


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


# --------------------------------------------------------------------------- whose environment


def _procs(word: bytes, marker: bytes) -> list[int]:
    """Live pids whose command line has ``word`` and ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            if (
                word in argv
                and marker in argv
                and "State:\tZ" not in Path(f"/proc/{entry}/status").read_text()
            ):
                found.append(int(entry))
        except OSError:
            continue
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().partition("=")[::2] for e in raw if e)


def test_one_sessions_env_reaches_neither_the_gateway_nor_a_daemon_started_for_another(
    make_daemon, agents
):
    """Session A starts the gateway with a setting and a secret in its environment; the
    daemon later autostarted for session B runs with B's environment, not A's."""
    d = make_daemon(start=False)
    a = Raw(
        d,
        agents.spawn().pid,
        CLAUDE_PEERS_AUTOSTART="0",  # A starts no daemon: B's session will
        CLAUDE_PEERS_KILL_ENABLED="1",
        MARKER_A="session-a-secret",
    )
    b: Raw | None = None
    daemons: list[int] = []
    try:
        a.send(INIT)
        assert "result" in a.answer(0)
        [gw] = gateways(gateway_sock(d))
        gw_env = _environ(gw)
        assert set(gw_env) <= set(relay.GATEWAY_ENV), gw_env
        assert "MARKER_A" not in gw_env
        b = Raw(d, agents.spawn().pid, XDG_MARKER_B="session-b")
        b.send(INIT)
        assert "result" in b.answer(0)
        b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        b.send(call(1, "whoami"))
        assert "error" not in b.answer(1)
        daemons = _procs(b"peersd", d.settings.socket.encode())
        assert len(daemons) == 1, daemons
        env = _environ(daemons[0])
        assert env.get("XDG_MARKER_B") == "session-b", env
        assert "MARKER_A" not in env and "CLAUDE_PEERS_KILL_ENABLED" not in env, env
        assert gateways(gateway_sock(d)) == [gw]  # one gateway served both
    finally:
        assert a.close() == 0
        if b is not None:
            assert b.close() == 0
        for pid in daemons:
            os.kill(pid, signal.SIGTERM)


def call(rid: int, tool: str, **args: Any) -> dict[str, Any]:
    params = {"name": tool, "arguments": args}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


async def test_git_for_the_snapshot_runs_with_the_senders_env(daemon, agent_bin, tmp_path):
    """The session that started the gateway has the real git on its PATH; the sender's
    PATH finds a git of its own, which is the one its snapshot comes from."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    git = fake / "git"
    git.write_text("#!/bin/sh\nprintf '## from-session-b\\000 M only-b-sees-this.py\\000'\n")
    git.chmod(0o755)
    path = f"{fake}:{daemon.env['PATH']}"
    async with (
        mcp_session(daemon, agent_bin, cwd="/tmp") as a,  # starts the gateway
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", env={"PATH": path}) as b,
    ):
        me = (await a.whoami())["name"]
        await b.data("send_message", to=me, message="see my tree")
        got = await a.text("check_messages")
        assert "only-b-sees-this.py" in got and "from-session-b" in got, got


# --------------------------------------------------------------------------- what is trusted


def _fake_gateway(path: str, answer: bytes) -> tuple[socket.socket, list[bytes]]:
    """A listener at the gateway's place that records what a relay sends it."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(answer)

    import threading

    threading.Thread(target=serve, daemon=True).start()
    return listener, got


def test_the_hello_carries_only_the_variables_the_gateway_needs(daemon, agents):
    listener, got = _fake_gateway(gateway_sock(daemon), b'{"error": "test gateway"}\n')
    raw = Raw(
        daemon,
        agents.spawn().pid,
        SSH_AUTH_SOCK="/tmp/agent.sock",
        AWS_SECRET_ACCESS_KEY="very-secret",
        GIT_DIR="/src/x/.git",
        CLAUDE_PROJECT_DIR="/src/x",
    )
    try:
        raw.send(INIT)
        assert raw.proc.wait(15) == 2  # the gateway's error is the relay's
        env = json.loads(got[0])["env"]
        assert "SSH_AUTH_SOCK" not in env and "AWS_SECRET_ACCESS_KEY" not in env, env
        assert env["GIT_DIR"] == "/src/x/.git" and env["CLAUDE_PROJECT_DIR"] == "/src/x"
        assert env["HOME"] == daemon.env["HOME"] and env["PATH"] == daemon.env["PATH"]
        assert env["CLAUDE_PEERS_AGENT_PID"]
        assert env == relay.session_env(env)
    finally:
        listener.close()
        raw.close()


LISTEN_AS_NOBODY = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
s.listen(1)  # the credentials a client sees are the ones at listen()
print("ready", flush=True)
conn, _ = s.accept()
conn.settimeout(5)
try:
    data = conn.recv(65536)
except OSError:
    data = b""
print(repr(data), flush=True)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="listening as another uid needs root")
def test_a_listener_of_another_user_is_not_told_anything(daemon, agents):
    path = gateway_sock(daemon)
    spy = subprocess.Popen(
        [sys.executable, "-c", LISTEN_AS_NOBODY, path], stdout=subprocess.PIPE, text=True
    )
    assert spy.stdout and spy.stdout.readline() == "ready\n"
    raw = Raw(daemon, agents.spawn().pid)
    try:
        raw.send(INIT)
        error = raw.answer(0)["error"]
        assert "runs as uid 65534, not as you" in error["message"], error
        assert spy.stdout.readline() == "b''\n"  # it heard nothing: no hello, no env
    finally:
        assert raw.close() == 0
        spy.wait(10)


def test_a_run_directory_others_may_write_is_refused(agents, home):
    shared = Path(tempfile.mkdtemp(prefix="cp-shared-", dir="/tmp"))
    try:
        shared.chmod(0o777)
        env = {
            **isolated_env(home),
            "CLAUDE_PEERS_SOCKET": str(shared / "peersd.sock"),
            "CLAUDE_PEERS_AUTOSTART": "0",
            "CLAUDE_PEERS_AGENT_PID": str(agents.spawn().pid),
        }
        proc = subprocess.Popen(
            [PEERS_MCP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/tmp"
        )
        raw = Raw.__new__(Raw)
        raw.proc = proc
        raw.send(INIT)
        error = raw.answer(0)["error"]
        assert "can be written by other users" in error["message"], error
        assert raw.close() == 0
        assert os.listdir(shared) == []  # no lock, no log, no gateway there
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_the_gateway_log_is_never_written_through_a_link(daemon, agents, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (daemon.settings.run_dir / relay.LOG_NAME).symlink_to(target)
    raw = Raw(daemon, agents.spawn().pid)
    try:
        raw.send(INIT)
        error = raw.answer(0)["error"]
        assert "cannot open the gateway's log" in error["message"], error
        assert "a symbolic link: remove it" in error["message"], error
        assert target.read_text() == ""
        assert gateways(gateway_sock(daemon)) == []
    finally:
        assert raw.close() == 0


def test_a_gateway_that_ends_leaves_no_socket_behind(daemon, agents):
    """Each code's gateway has a socket name of its own: one that ends removes its own."""
    raw = Raw(daemon, agents.spawn().pid)
    raw.send(INIT)
    assert "result" in raw.answer(0)
    assert raw.close() == 0
    path = gateway_sock(daemon)
    [pid] = gateways(path)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid in gateways(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in gateways(path) and not os.path.exists(path)
