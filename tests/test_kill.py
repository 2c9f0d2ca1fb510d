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
from .test_mcp import HERE, mcp_session

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


def stubborn_process(agents) -> subprocess.Popen:
    """A process that ignores SIGTERM (ready once it has said so)."""
    proc = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    agents.procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


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
    stubborn = stubborn_process(agents)
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


def test_peers_kill_inside_an_agent_session_is_that_agent(daemon, agents, agent_bin, tmp_path):
    """With kill_enabled off, ``peers kill`` run from an agent's shell is refused although
    its hello says ``cli``: the daemon sees that its process descends from a registered
    agent. The same command from a terminal outside any agent session may kill."""
    victim = agents.spawn()
    with daemon.client("codex") as c:
        register(c, victim.pid, "codex", name="victim")
    go = tmp_path / "go"
    script = f"while [ ! -e {go} ]; do sleep 0.02; done; exec {PYTHON} -m peers_cli.app kill victim"
    session = subprocess.Popen(
        [str(agent_bin / "claude"), str(HERE / "fake_agent.py"), "--", "/bin/sh", "-c", script],
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agents.procs.append(session)  # type: ignore[arg-type]
    with daemon.client("claude-code") as c:
        register(c, session.pid, name="insider")  # the agent session is a registered peer
        go.touch()
        out, err = session.communicate(timeout=30)
    assert session.returncode == 1, (out, err)
    assert "runs inside the agent session insider" in err
    assert "kill_enabled = true" in err and "terminal" in err
    time.sleep(0.2)
    assert victim.poll() is None
    assert "victim" in active_names(daemon)
    assert audit(daemon) == []  # refused before anything was attempted

    outside = peers_cli(daemon, "kill", "victim")  # a person's terminal: no agent above it
    assert outside.returncode == 0, outside.stderr
    assert victim.wait(5) == -15


def test_a_cli_connection_attached_as_an_agent_may_not_kill(daemon, agents):
    agent, victim = agents.spawn(), agents.spawn()
    with daemon.client("claude-code") as c:
        register(c, agent.pid, name="agent")
    with daemon.client("codex") as c:
        register(c, victim.pid, "codex", name="victim")
    with daemon.client("cli") as c:
        c.request(p.Attach, pid=agent.pid)  # acts as the agent, says it is a command line
        with pytest.raises(PeersError) as info:
            c.request(p.Kill, target="victim")
        assert info.value.code == Code.DISABLED
        assert "acts as the agent session agent" in info.value.message
    assert victim.poll() is None


def test_kill_after_the_sweep_tells_peer_left_once(daemon, agents):
    agent = agents.spawn()
    with daemon.client("claude-code") as c:
        victim = register(c, agent.pid, name="victim")
    with daemon.client() as watcher:
        watcher.request(p.Subscribe, kinds=["peers"])
        agent.kill()
        agent.wait()
        assert watcher.request(p.Sweep).gone == [victim.id]
        done = peers_cli(daemon, "kill", "victim", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["outcome"] == "already_gone"
        watcher.request(p.Status)  # the kill's events, if any, are in by now
        left = []
        while (ev := watcher.next_event(0.3)) is not None:
            if isinstance(ev, p.PeerLeft):
                left.append(ev)
    assert [(e.peer_id, e.reason) for e in left] == [(victim.id, "process exited")]


def test_a_stop_during_the_grace_period_keeps_the_attempt(make_daemon, agents):
    """The attempt is recorded before the signal; a stop while waiting for the process to
    exit says so in the record, and the daemon does not wait out the grace period."""
    daemon = make_daemon(kill_grace=60)
    stubborn = stubborn_process(agents)
    with daemon.client("codex") as c:
        register(c, stubborn.pid, "codex", name="stubborn")
    killer = subprocess.Popen(
        [*PEERS, "kill", "stubborn"],
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        with daemon.client() as c:
            while not (records := c.request(p.Audit, limit=10).records):
                assert time.monotonic() < deadline, "the kill was never recorded"
                time.sleep(0.05)
        assert (
            records[0].detail
            == f"pid {stubborn.pid}: SIGTERM sent, waiting up to 60s for it to exit"
        )
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
        killer.wait(10)
    finally:
        if killer.poll() is None:
            killer.kill()
            killer.wait()
    log = daemon.log()
    assert "stopped cleanly" in log
    for bad in ("Traceback", "was destroyed but it is pending", "could not record"):
        assert bad not in log, log
    daemon.start()
    [record] = audit(daemon)
    assert (record["action"], record["target_name"]) == ("kill", "stubborn")
    assert record["detail"] == (
        f"pid {stubborn.pid}: SIGTERM sent; peersd stopped before the outcome was known"
    )
    assert stubborn.poll() is None  # never sent SIGKILL
