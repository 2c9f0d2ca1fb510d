"""``peers kill`` and the MCP ``kill_peer`` tool against a real daemon and real processes.

A kill only ever reaches a registered agent whose pid, start time and uid still match;
it is SIGTERM first, SIGKILL only with force after ``kill_grace``, and every attempt is
recorded in the audit log (``peers audit``): who, when, what.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from peersd import protocol as p
from peersd.client import session_registration
from peersd.errors import Code, PeersError

from .conftest import PYTHON, register
from .test_mcp import mcp_session

PEERS = [PYTHON, "-m", "peers_cli.app"]


def peers_cli(daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PEERS, *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def active_names(daemon) -> list[str]:
    with daemon.client() as c:
        return [x.name for x in c.request(p.ListPeers).peers]


def audit(daemon) -> list[dict]:
    done = peers_cli(daemon, "audit", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_kill_terminates_a_registered_agent_and_records_it(daemon, agents):
    agent = agents.spawn()
    with daemon.client("claude-code") as c:
        victim = register(c, agent.pid, name="victim")
    assert "victim" in active_names(daemon)
    before = time.time()
    done = peers_cli(daemon, "kill", "victim")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"terminated victim ({victim.id})")
    assert agent.wait(5) == -15  # SIGTERM
    assert "victim" not in active_names(daemon)

    [record] = audit(daemon)
    assert record["action"] == "kill"
    assert (record["target"], record["target_name"]) == (victim.id, "victim")
    assert record["detail"] == f"pid {agent.pid}: terminated"
    assert record["actor"].startswith("cli pid ")  # who: the command line, by its pid
    assert before - 1 <= record["at"] <= time.time() + 1
    table = peers_cli(daemon, "audit")
    assert "victim" in table.stdout and "kill" in table.stdout and "terminated" in table.stdout

    again = peers_cli(daemon, "kill", victim.id, "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["outcome"] == "already_gone"


def test_a_reused_pid_is_not_killed(daemon, agents):
    bystander = agents.spawn()
    with daemon.client("claude-code") as c:
        req = session_registration(c.settings, bystander.pid, "claude-code", cwd="/tmp")
        req.name = "ghost"
        req.agent_start -= 1000.0  # the registered agent started long ago: not this process
        c.call(req)
    done = peers_cli(daemon, "kill", "ghost")
    assert done.returncode == 0, done.stderr
    assert "was already gone" in done.stdout
    time.sleep(0.2)
    assert bystander.poll() is None  # untouched
    assert "ghost" not in active_names(daemon)
    assert audit(daemon)[0]["detail"] == f"pid {bystander.pid}: already_gone"


def test_force_kills_an_agent_that_ignores_sigterm(make_daemon, agents):
    daemon = make_daemon(kill_grace=0.3)
    stubborn = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    agents.procs.append(stubborn)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    with daemon.client("codex") as c:
        register(c, stubborn.pid, "codex", name="stubborn")

    soft = peers_cli(daemon, "kill", "stubborn")
    assert soft.returncode == 1
    assert "still running" in soft.stderr and "--force" in soft.stderr
    assert stubborn.poll() is None
    assert "stubborn" in active_names(daemon)  # not killed: still a peer

    hard = peers_cli(daemon, "kill", "stubborn", "--force", "--json")
    assert hard.returncode == 0, hard.stderr
    assert json.loads(hard.stdout)["outcome"] == "killed"
    assert stubborn.wait(5) == -9
    assert "stubborn" not in active_names(daemon)
    details = [r["detail"] for r in audit(daemon)]
    assert details == [f"pid {stubborn.pid}: still_running", f"pid {stubborn.pid}: killed"]


def test_unknown_peer_is_one_clear_line(daemon, agents):
    with daemon.client("claude-code") as c:
        register(c, agents.spawn().pid, name="reviewer")
    done = peers_cli(daemon, "kill", "reviewr")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0
    assert "no peer named 'reviewr'" in done.stderr and "did you mean: reviewer" in done.stderr


def test_agents_may_not_kill_unless_enabled(daemon, agents):
    with daemon.client("claude-code") as a, daemon.client("codex") as b:
        register(a, agents.spawn().pid, name="a1")
        target = agents.spawn()
        register(b, target.pid, "codex", name="b1")
        with pytest.raises(PeersError) as info:
            a.request(p.Kill, target="b1")
        assert info.value.code == Code.DISABLED
    assert target.poll() is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_kill_peer_when_enabled(make_daemon, agents, agent_bin, anyio_backend):
    daemon = make_daemon(kill_enabled=1)
    victim = agents.spawn()
    with daemon.client("codex") as c:
        register(c, victim.pid, "codex", name="target")
    async with mcp_session(daemon, agent_bin) as s:
        me = await s.whoami()
        result = await s.call("kill_peer", peer="target")
        assert not result.is_error, result.content[0].text
        assert result.structured_content["outcome"] == "terminated"
        assert victim.wait(5) == -15
        itself = await s.call("kill_peer", peer=me["name"])
        assert itself.is_error and "cannot kill itself" in itself.content[0].text
        assert (await s.whoami())["id"] == me["id"]  # still here
    [record] = audit(daemon)
    assert record["actor"] == f"{me['name']} ({me['id']})"
    assert record["target_name"] == "target"


def test_a_hub_client_cannot_kill(make_daemon, agents, tmp_path):
    """A token is shared by every machine of a hub: it does not reach local processes."""
    from .test_hub import TOKEN, free_port, remote_client

    port = free_port()
    daemon = make_daemon(tcp=f"127.0.0.1:{port}", token=TOKEN, kill_enabled=1)
    local = agents.spawn()
    with daemon.client("claude-code") as c:
        register(c, local.pid, name="local")
    client = remote_client(tmp_path / "far", f"tcp://127.0.0.1:{port}")
    client.kind = "cli"  # claims to be a command line
    with client, pytest.raises(PeersError) as info:
        client.request(p.Kill, target="local", force=True)
    assert info.value.code == Code.FORBIDDEN
    time.sleep(0.2)
    assert local.poll() is None
    assert "local" in active_names(daemon)
