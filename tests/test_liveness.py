"""The sweep: agents whose process is gone leave the list, their mail waits for a successor."""

from __future__ import annotations

import time

import pytest

from peersd import identity
from peersd import protocol as p
from peersd.client import session_registration
from peersd.errors import Code, PeersError

from .conftest import register


def test_dead_agent_is_marked_gone_and_its_mail_kept(daemon, agents):
    sender_agent, worker_agent = agents.spawn(), agents.spawn()
    with daemon.client() as cs, daemon.client() as cw, daemon.client() as watcher:
        register(cs, sender_agent.pid, name="lead")
        worker = register(cw, worker_agent.pid, name="worker")
        watcher.request(p.Subscribe, kinds=["peers"])
        mid = cs.request(p.Send, to="worker", text="are you there?").message_id
        worker_agent.kill()
        worker_agent.wait()
        sweep = cs.request(p.Sweep)
        assert sweep.gone == [worker.id]
        while True:
            ev = watcher.next_event(3)
            assert ev is not None, "no peer-left event"
            if isinstance(ev, p.PeerLeft):
                assert (ev.peer_id, ev.reason) == (worker.id, "process exited")
                break
        listed = {x.id for x in cs.request(p.ListPeers).peers}
        assert worker.id not in listed
        gone = {x.id: x for x in cs.request(p.ListPeers, include_gone=True).peers}
        assert gone[worker.id].state == "gone" and gone[worker.id].pending == 1
        # mail sent to the name after it left still queues for the next "worker"
        later = cs.request(p.Send, to="worker", text="hello successor").message_id
        assert cs.request(p.MessageStatus, message_ids=[mid]).items[0].state == "queued"

    with daemon.client() as cn:
        successor = register(cn, agents.spawn().pid, name="worker")
        assert successor.id != worker.id
        got = cn.request(p.Claim).messages
        assert [m.id for m in got] == [mid, later]


def test_successor_by_derived_name_inherits(daemon, agents, tmp_path):
    repo = tmp_path / "billing"
    repo.mkdir()
    first_agent = agents.spawn()
    with daemon.client() as c:
        first = register(c, first_agent.pid, cwd=str(repo))
        assert first.name == "billing"
    with daemon.client() as c:
        register(c, agents.spawn().pid, name="boss")
        mid = c.request(p.Send, to="billing", text="deploy when ready").message_id
    first_agent.kill()
    first_agent.wait()
    with daemon.client() as c:
        c.request(p.Sweep)
    with daemon.client() as c:
        second = c.call(
            session_registration(c.settings, agents.spawn().pid, "codex", cwd=str(repo))
        )
        assert second.peer.name == "billing" and second.inherited == 1
        (m,) = c.request(p.Claim).messages
        assert m.id == mid


def test_pid_reuse_counts_as_gone(daemon, agents):
    agent = agents.spawn()
    with daemon.client() as c:
        req = session_registration(c.settings, agent.pid, "claude-code", cwd="/tmp")
        req.agent_start -= 3600  # same pid, but not the process that registered
        peer = c.call(req).peer
        assert c.request(p.Sweep).gone == [peer.id]


def test_live_agents_survive_the_sweep(daemon, agents):
    with daemon.client() as c:
        peers = [register(c, agents.spawn().pid) for _ in range(5)]
        assert c.request(p.Sweep).gone == []
        assert {x.id for x in c.request(p.ListPeers, include_self=True).peers} >= {
            x.id for x in peers
        }


def test_periodic_sweep_runs_by_itself(make_daemon, agents):
    d = make_daemon(sweep_interval=0.2)
    agent = agents.spawn()
    with d.client() as c:
        peer = register(c, agent.pid, name="short-lived")
    agent.kill()
    agent.wait()
    deadline = time.monotonic() + 10
    with d.client() as c:
        while time.monotonic() < deadline:
            if peer.id not in {x.id for x in c.request(p.ListPeers).peers}:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the timer sweep never marked the dead agent gone")
        assert c.request(p.Status).last_sweep_ms > 0


def test_reregistering_a_gone_peer_revives_it(daemon, agents):
    agent = agents.spawn()
    with daemon.client() as c:
        peer = register(c, agent.pid, name="phoenix")
        c.request(p.Unregister)
    with daemon.client() as c:
        again = register(c, agent.pid)
        assert (again.id, again.name, again.state) == (peer.id, "phoenix", "active")


def test_identity_helpers_match_psutil():
    import os

    import psutil

    me = os.getpid()
    assert identity.same_start(identity.process_start(me), psutil.Process(me).create_time())
    assert identity.is_alive(me, psutil.Process(me).create_time())
    assert not identity.is_alive(me, psutil.Process(me).create_time() - 100)
    assert identity.process_start(2**22 + 12345) is None
    assert next(iter(identity.ancestors(me))) == os.getppid()


def test_a_peer_registered_again_during_the_sweep_stays_active(daemon, agents):
    """The sweep reads the agents, checks them in a worker thread, then marks the dead ones
    gone. A peer that registered again meanwhile (its agent restarted: same session, a new
    live process) must not be marked gone for its old, dead process."""
    old_agent, new_agent = agents.spawn(), agents.spawn()
    with daemon.client("claude-code") as c:
        first = register(c, old_agent.pid, session_id="sess-race", name="phoenix")
    old_agent.kill()
    old_agent.wait()
    again = session_registration(
        daemon.settings, new_agent.pid, "claude-code", cwd="/tmp", session_id="sess-race"
    )
    again.id = 2
    with daemon.client("claude-code") as c:
        c.connect()
        assert c.sock is not None
        # One write, so the daemon reads both frames at once: the sweep takes its list of
        # agents first, and the registration is committed while the check runs in its thread.
        c.sock.sendall(p.encode(p.Sweep(id=1)) + p.encode(again))
        answers: dict[int, p.Frame] = {}
        while len(answers) < 2:
            frame = c._read(time.monotonic() + 10)
            assert frame is not None, "no answer"
            assert not isinstance(frame, p.Error), frame
            answers[frame.id] = frame
        reg, sweep = answers[2], answers[1]
        assert isinstance(reg, p.PeerResult) and isinstance(sweep, p.SweepResult)
        assert (reg.peer.id, reg.peer.agent_pid) == (first.id, new_agent.pid)
        assert sweep.gone == []
        me = c.request(p.Whoami).peer
        assert (me.id, me.state) == (first.id, "active")
        assert first.id in {x.id for x in c.request(p.ListPeers, include_self=True).peers}
    # the old process stays dead; the peer is gone only when its new one exits too
    with daemon.client() as c:
        assert c.request(p.Sweep).gone == []
        new_agent.kill()
        new_agent.wait()
        assert c.request(p.Sweep).gone == [first.id]


def test_clients_bind_again_when_their_peer_was_marked_gone(daemon, agents):
    """A peer marked gone while its client lives (a sweep race, a kill, an unregister from
    another connection) is answered not_registered; the blocking and the asyncio client
    both register again by themselves and the request succeeds."""
    import asyncio

    from peersd.client import AsyncClient

    def forget(pid: int) -> None:
        with daemon.client() as other:
            other.request(p.Attach, pid=pid)
            other.request(p.Unregister)

    agent = agents.spawn()
    with daemon.client("claude-code") as c:
        req = session_registration(c.settings, agent.pid, "claude-code", cwd="/tmp")
        req.name = "steady"
        peer = c.bind(req)
        forget(agent.pid)
        me = c.request(p.Whoami).peer
        assert (me.id, me.name, me.state) == (peer.id, "steady", "active")
        c.request(p.Unregister)  # leaving on purpose is not undone
        with pytest.raises(PeersError) as info:
            c.request(p.Whoami)
        assert info.value.code == Code.NOT_REGISTERED

    async def scenario() -> None:
        async with AsyncClient(daemon.settings, kind="codex", autostart=False, timeout=10) as ac:
            bound = await ac.bind(
                session_registration(ac.settings, agents.spawn().pid, "codex", cwd="/tmp")
            )
            await ac.subscribe(["mail"])
            assert ac.peer is not None
            await asyncio.to_thread(forget, ac.peer.agent_pid)
            # many requests in flight see not_registered at once: all succeed
            answers = await asyncio.gather(*(ac.request(p.Whoami) for _ in range(20)))
            assert {(a.peer.id, a.peer.state) for a in answers} == {(bound.id, "active")}
            assert ac.peer.id == bound.id
            # and mail events reach it again
            with daemon.client() as other:
                register(other, agents.spawn().pid, name="pinger")
                mid = other.request(p.Send, to=bound.id, text="ping").message_id
            while True:
                ev = await ac.next_event(5)
                assert ev is not None, "no mail event after binding again"
                if isinstance(ev, p.MailEvent):
                    assert ev.message_id == mid
                    break

    asyncio.run(scenario())
