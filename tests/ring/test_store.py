"""The store on its own: names, mail states, leases, expiry, retention, inheritance."""

from __future__ import annotations

import pytest

from peersd import protocol as p
from peersd.errors import Code, PeersError
from peersd.store import Store

MACHINE = "m-1"
DAY = 24 * 3600.0


def register(store: Store, pid: int, name: str | None = None, cwd: str = "/src/api", **kw):
    r = p.Register(id=1, agent_pid=pid, agent_start=1.0, cwd=cwd, name=name, **kw)
    with store.transaction():
        return store.register(r, 1000.0, MACHINE, "host")


def send(store: Store, a: p.Peer, b: p.Peer, text: str = "hi", now: float = 1000.0, ttl=DAY):
    with store.transaction():
        return store.send(a, b, text, None, now, ttl)


def test_names_come_from_the_directory_and_stay_unique_ignoring_case(store):
    first = register(store, 1).peer
    second = register(store, 2).peer
    third = register(store, 3, name="API-x").peer
    assert (first.name, second.name) == ("api", "api-2")
    with pytest.raises(PeersError) as e, store.transaction():
        store.set_name(second.id, "Api")
    assert e.value.code == Code.NAME_TAKEN
    assert third.name == "API-x"


def test_register_again_is_the_same_peer(store):
    once = register(store, 7, session_id="s-1").peer
    again = register(store, 7, session_id="s-1")
    assert again.peer.id == once.id and not again.joined


def test_mail_goes_queued_leased_delivered(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    msg = send(store, a, b)
    assert msg.state == "queued" and store.peer(b.id).pending == 1
    with store.transaction():
        claimed = store.claim(b.id, 10, 30.0, 1001.0)
    assert [m.id for m in claimed] == [msg.id] and claimed[0].state == "leased"
    with store.transaction():
        fresh, already = store.ack(b.id, [msg.id], "check", 1002.0)
    assert (fresh, already) == ([msg.id], [])
    assert store.peer(b.id).pending == 0
    (status,) = store.statuses([msg.id])
    assert (status.state, status.delivered_via) == ("delivered", "check")
    with store.transaction():
        assert store.ack(b.id, [msg.id], "check", 1003.0) == ([], [msg.id])


def test_only_the_recipient_can_ack(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    msg = send(store, a, b)
    with pytest.raises(PeersError) as e, store.transaction():
        store.ack(a.id, [msg.id], "check", 1001.0)
    assert e.value.code == Code.UNKNOWN_MESSAGE


def test_a_lapsed_lease_is_offered_again(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    msg = send(store, a, b)
    with store.transaction():
        store.claim(b.id, 10, 30.0, 1001.0)
        assert store.claim(b.id, 10, 30.0, 1002.0) == []  # leased: not offered twice
        assert [m.id for m in store.upkeep.expire_leases(1040.0)] == [msg.id]
        again = store.claim(b.id, 10, 30.0, 1041.0)
    assert [m.attempts for m in again] == [2]


def test_mail_past_its_ttl_expires_and_is_not_claimable(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    msg = send(store, a, b, ttl=10.0)
    with store.transaction():
        assert store.claim(b.id, 10, 30.0, 1011.0) == []
        assert [m.id for m in store.upkeep.expire_messages(1011.0)] == [msg.id]
    assert store.peer(b.id).pending == 0


def test_purge_keeps_the_newest_row_so_ids_are_never_reused(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    ids = [send(store, a, b, str(i)).id for i in range(3)]
    with store.transaction():
        store.claim(b.id, 10, 30.0, 1001.0)
        store.ack(b.id, ids, "check", 1001.0)
        store.upkeep.purge(1001.0 + 40 * DAY, 30 * DAY, 30 * DAY)
    found = [s.found for s in store.statuses(ids)]
    assert found == [False, False, True]
    assert send(store, a, b).id not in ids


def test_purge_forgets_hub_machines_not_seen_for_gone_retention(store):
    """Every machine id a hub client ever presented kept a row, forever: a token holder
    minting random ids grew the table without end."""
    with store.transaction():
        for machine in ("old-quiet", "old-with-a-peer", "recent"):
            assert store.machines.prove(machine, "a" * 64, 1000.0)
        assert store.machines.prove("recent", "a" * 64, 1000.0 + 35 * DAY)  # a later hello
        r = p.Register(id=1, agent_pid=7, agent_start=1.0, cwd="/w")
        store.register(r, 1000.0, "old-with-a-peer", "box")
    with store.transaction():
        assert store.upkeep.purge(1000.0 + 31 * DAY, 30 * DAY, 30 * DAY)[2] == 1
    listed, total = store.machines.recent(10)
    assert [m[0] for m in listed] == ["recent", "old-with-a-peer"] and total == 2
    assert listed[1][3:] == ("box", 1)  # its peer's host, one active peer
    # the forgotten id is free: the next secret presented binds it
    with store.transaction():
        assert store.machines.prove("old-quiet", "b" * 64, 1000.0 + 32 * DAY)
        assert not store.machines.prove("old-with-a-peer", "b" * 64, 1000.0 + 32 * DAY)


def test_mail_of_a_gone_peer_waits_for_the_next_holder_of_its_name(store):
    a, b = register(store, 1).peer, register(store, 2, name="bob").peer
    msg = send(store, a, b)
    with store.transaction():
        store.mark_gone(b.id, "process exited", 1001.0)
    successor = register(store, 3, name="bob")
    assert successor.peer.id != b.id
    assert len(successor.inherited) == 1
    with store.transaction():
        assert [m.id for m in store.claim(successor.peer.id, 10, 30.0, 1002.0)] == [msg.id]


def test_history_pages_cover_everything_once(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    ids = [send(store, a, b, str(i)).id for i in range(5)]
    seen: list[str] = []
    before = None
    for _ in range(10):
        page, before = store.history(a.id, None, 2, before, None, "any")
        seen += [m.id for m in page]
        if before is None:
            break
    assert seen == list(reversed(ids))


def test_a_page_that_ends_exactly_at_the_last_row_has_no_cursor(store):
    a, b = register(store, 1).peer, register(store, 2).peer
    for i in range(4):
        send(store, a, b, str(i))
    first, before = store.history(a.id, None, 2, None, None, "any")
    second, after = store.history(a.id, None, 2, before, None, "any")
    assert (len(first), len(second), after) == (2, 2, None)


def test_resolve_suggests_close_names(store):
    register(store, 1, name="frontend")
    with pytest.raises(PeersError) as e:
        store.resolve("frontnd", MACHINE)
    assert e.value.code == Code.UNKNOWN_PEER and "frontend" in e.value.candidates
