"""The visibility rule of peersd/groups.py on the store alone: every pair of kinds of peer,
the SQL form agreeing with the Python one, and resolve hiding what it must."""

from __future__ import annotations

import itertools

import pytest

from peersd import groups
from peersd import protocol as p
from peersd.errors import Code, PeersError
from peersd.store import Store

MACHINE = "m-1"


def peer(store: Store, pid: int, name: str, group: str | None, client: str = "codex") -> p.Peer:
    r = p.Register(
        id=1, agent_pid=pid, agent_start=1.0, cwd="/w", name=name, group=group, client=client
    )
    with store.transaction():
        return store.register(r, 1000.0, MACHINE, "host").peer


@pytest.fixture
def cast(store: Store) -> dict[str, p.Peer]:
    return {
        "red1": peer(store, 1, "red1", "red"),
        "red2": peer(store, 2, "red2", "red"),
        "blue": peer(store, 3, "blue", "blue"),
        "none": peer(store, 4, "none", None),
        "human": peer(store, 5, "human", None, client="cli"),
        "cli_red": peer(store, 6, "cli_red", "red", client="cli"),
    }


EXPECTED = {
    # who sees whom (symmetric); everyone sees itself and the human
    frozenset({"red1", "red2"}),
    frozenset({"red1", "cli_red"}),
    frozenset({"red2", "cli_red"}),
}


def test_visible_is_symmetric_and_exactly_the_rule(cast: dict[str, p.Peer]) -> None:
    for a, b in itertools.product(cast, repeat=2):
        want = a == b or "human" in (a, b) or frozenset({a, b}) in EXPECTED
        assert groups.visible(cast[a], cast[b]) is want, (a, b)
        assert groups.visible(None, cast[b])


def test_the_sql_form_agrees_with_visible(store: Store, cast: dict[str, p.Peer]) -> None:
    for viewer in cast.values():
        cond, args = groups.sql_visible(viewer, "id")
        seen = {r[0] for r in store.conn.execute(f"SELECT id FROM peers WHERE {cond}", args)}
        assert seen == {x.id for x in cast.values() if groups.visible(viewer, x)}, viewer.name


def test_list_peers_and_resolve_follow_it(store: Store, cast: dict[str, p.Peer]) -> None:
    names = [x.name for x in store.list_peers(cast["red1"], "machine")]
    assert names == ["cli_red", "human", "red2"]
    assert [x.name for x in store.list_peers(cast["red1"], "group")] == ["cli_red", "red2"]
    assert len(store.list_peers(None, "machine")) == 6
    with pytest.raises(PeersError) as e:
        groups.resolve(store, cast["red1"], "blue", MACHINE)
    assert e.value.code == Code.UNKNOWN_PEER and "in your group 'red'" in e.value.message
    with pytest.raises(PeersError) as e:
        groups.resolve(store, cast["none"], "red1", MACHINE)
    assert e.value.message == "no peer named 'red1'"  # in no group: the plain wording
    assert groups.resolve(store, cast["human"], "blue", MACHINE).name == "blue"
    with pytest.raises(PeersError) as e:
        store.list_peers(cast["none"], "group")
    assert "you are in none" in e.value.message
