"""Delivery health: how each recipient gets mail sent now (``coordination.reach``), its
pending count and when it last read mail, in send / broadcast answers and list_peers."""

from __future__ import annotations

import time

from peersd import protocol as p


def reach_of(ring, name: str) -> str | None:
    viewer = ring.clients[0]
    peers = viewer.call(p.ListPeers, include_gone=True, include_self=True).peers
    return next(x.reach for x in peers if x.name == name)


def test_send_says_how_the_recipient_gets_it_now(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    before = time.time()
    # No hook has reported for bob: only check_messages or the CLI reads it.
    sent = alice.call(p.Send, to="bob", text="one")
    assert (sent.reach, sent.pending, sent.last_read) == ("when_checked", 1, None)
    assert sent.expires_at >= before + ring.settings.message_ttl - 1
    # Its hooks said it works: the next tool call (or its Stop) shows it.
    bob.call(p.SetStatus, state="working")
    sent = alice.call(p.Send, to="bob", text="two")
    assert (sent.reach, sent.pending) == ("next_tool_call", 2)
    # Idle with no wake armed: only its next prompt.
    bob.call(p.SetStatus, state="idle")
    assert alice.call(p.Send, to="bob", text="three").reach == "next_prompt"
    assert reach_of(ring, "bob") == "next_prompt"


def test_an_armed_idle_wake_and_a_connected_channel(ring):
    alice = ring.agent(name="alice")
    bob = ring.client()
    bob.register(name="bob", agent_pid=4242, agent_start=1.0, session_id="s-bob")
    bob.call(p.SetStatus, state="idle")
    waiter = ring.client("hook")
    waiter.call(p.Attach, session_id="s-bob")
    waiter.call(p.Subscribe, kinds=["mail"])  # what peers-hook --wait does
    assert alice.call(p.Send, to="bob", text="wake up").reach == "idle_wake"
    assert reach_of(ring, "bob") == "idle_wake"
    waiter.close()
    assert alice.call(p.Send, to="bob", text="no wake now").reach == "next_prompt"

    carol = ring.client()
    carol.register(name="carol", agent_pid=4343, agent_start=1.0, receive="push")
    assert alice.call(p.Send, to="carol", text="pushed").reach == "push"
    carol.close()  # its helper left: no push until it is back
    assert alice.call(p.Send, to="carol", text="waits").reach == "when_checked"


def test_gone_and_broadcast(ring):
    alice, bob, carol = ring.agent(name="alice"), ring.agent(name="bob"), ring.agent(name="carol")
    carol.call(p.SetStatus, state="working")
    reply = alice.call(p.Broadcast, scope="machine", text="hello all")
    got = {s.to_name: (s.reach, s.pending) for s in reply.sent}
    assert got == {"bob": ("when_checked", 1), "carol": ("next_tool_call", 1)}
    assert all(s.expires_at > time.time() for s in reply.sent)
    bob.call(p.Unregister)
    sent = alice.call(p.Send, to="bob", text="for your successor")
    assert (sent.reach, sent.pending) == ("gone", 2)
    assert reach_of(ring, "bob") == "gone"


def test_last_read_is_the_last_ack_and_survives_a_restart(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    first = alice.call(p.Send, to="bob", text="read me").message_id
    assert next(x for x in alice.call(p.ListPeers).peers if x.name == "bob").last_read is None
    bob.call(p.Claim)
    before = time.time()
    bob.call(p.Ack, message_ids=[first], via="check")
    sent = alice.call(p.Send, to="bob", text="and me")
    assert sent.pending == 1
    assert sent.last_read is not None and before <= sent.last_read <= time.time()
    listed = next(x for x in alice.call(p.ListPeers).peers if x.name == "bob")
    assert listed.last_read == sent.last_read
    # An ack of what was already delivered is not a new read.
    bob.call(p.Ack, message_ids=[first], via="check")
    assert alice.call(p.Whoami).peer.last_read is None  # alice read nothing
    assert next(x for x in alice.call(p.ListPeers).peers if x.name == "bob").last_read == (
        sent.last_read
    )
    # Stored, not only cached: the cache rebuilt from the database has it.
    ring.run(ring.daemon.commit.drained())
    ring.store.reload()
    assert ring.store.peer(bob.call(p.Whoami).peer.id).last_read == sent.last_read


def test_an_idle_session_the_daemon_can_wake(ring):
    """Idle with a wake route reported (its Stop hook did) and native_wake on: the sender is
    told the daemon wakes it, by the client's own way; without a route, its next prompt."""
    alice = ring.agent(name="alice")
    codex = ring.client("codex")
    codex.register(name="cx", client="codex", agent_pid=5151, agent_start=1.0)
    codex.call(p.SetStatus, state="idle")
    assert alice.call(p.Send, to="cx", text="1").reach == "next_prompt"
    codex.call(p.SetStatus, state="idle", wake=p.WakeRoute(thread="t-1", codex_bin="/bin/true"))
    assert alice.call(p.Send, to="cx", text="2").reach == "codex_queue"
    claude = ring.client()
    claude.register(name="cc", agent_pid=5252, agent_start=1.0)
    claude.call(p.SetStatus, state="idle", wake=p.WakeRoute(inbox="/tmp/inbox.sock"))
    assert reach_of(ring, "cc") == "inbox"
    ring.settings.native_wake = False
    assert reach_of(ring, "cc") == "next_prompt"
