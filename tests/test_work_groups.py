"""Tasks and decisions inside isolation groups, against a real daemon.

A decision lives on its group's board: another group neither reads, revokes nor hears of
it, and it stays on that board when its author changes group; the operator reads every
board. A task never leaves its creator's group: not by assignment (even the operator's),
not to a successor of its assignee's name in another group, and a refusal's "did you
mean" names only peers the caller may see.
"""

from __future__ import annotations

import msgspec
import pytest

from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.errors import Code, PeersError

from .conftest import Agents, DaemonProc


def join(
    c: Client, agents: Agents, name: str, group: str | None, kind: str = "claude-code"
) -> p.Peer:
    req = session_registration(c.settings, agents.spawn().pid, kind, cwd="/tmp", name=name)
    return c.call(msgspec.structs.replace(req, group=group)).peer


def refusal(c: Client, kind: type[p.Request], **fields: object) -> PeersError:
    with pytest.raises(PeersError) as e:
        c.request(kind, **fields)
    return e.value


class Team:
    """red: ann, bob; blue: cid; no group: dan; the operator: desk (a CLI in no group)."""

    def __init__(self, daemon: DaemonProc, agents: Agents) -> None:
        self.daemon, self.agents = daemon, agents
        self.c: dict[str, Client] = {}
        self.peer: dict[str, p.Peer] = {}
        for name, group, kind in (
            ("ann", "red", "claude-code"),
            ("bob", "red", "claude-code"),
            ("cid", "blue", "claude-code"),
            ("dan", None, "codex"),
            ("desk", None, "cli"),
        ):
            self.add(name, group, kind)

    def add(self, name: str, group: str | None, kind: str = "claude-code") -> Client:
        self.c[name] = self.daemon.client(kind)
        self.peer[name] = join(self.c[name], self.agents, name, group, kind)
        return self.c[name]

    def mail(self, name: str) -> list[str]:
        c = self.c[name]
        msgs = c.request(p.Claim).messages
        if msgs:
            c.request(p.Ack, message_ids=[m.id for m in msgs], via="check")
        return [m.text for m in msgs]

    def close(self) -> None:
        for c in self.c.values():
            c.close()


@pytest.fixture
def team(daemon: DaemonProc, agents: Agents):
    t = Team(daemon, agents)
    yield t
    t.close()


def boards(c: Client, **fields: object) -> list[tuple[str, str, str | None]]:
    found = c.request(p.QueryDecisions, revoked=True, **fields).decisions
    return sorted((x.key, x.value, x.group) for x in found)


def test_decisions_stay_on_their_groups_board(team: Team) -> None:
    ann, cid = team.c["ann"], team.c["cid"]
    posted = ann.request(p.PostDecision, key="db.engine", value="postgres", rationale="red plan")
    assert posted.decision.group == "red"
    assert sorted(posted.notified) == ["bob", "desk"]  # not cid (blue) nor dan (no group)
    assert team.mail("cid") == [] and team.mail("dan") == []
    assert boards(cid) == [] and boards(cid, everywhere=True) == []
    assert boards(team.c["dan"], everywhere=True) == []
    gone = refusal(cid, p.RevokeDecision, key="db.engine", reason="blue says no")
    assert gone.code == Code.UNKNOWN_DECISION and "for group 'blue'" in gone.message
    near = refusal(cid, p.RevokeDecision, key="db.engin", reason="x")
    assert near.candidates == [] and "did you mean" not in near.message
    # Blue keeps its own decision under the same key: a first version, not red's second.
    own = cid.request(p.PostDecision, key="db.engine", value="sqlite", rationale="blue plan")
    assert (own.decision.version, own.decision.group, own.notified) == (1, "blue", ["desk"])
    assert boards(team.c["bob"]) == [("db.engine", "postgres", "red")]
    assert boards(cid) == [("db.engine", "sqlite", "blue")]
    # The operator reads every board; so does an unbound connection.
    both = [("db.engine", "postgres", "red"), ("db.engine", "sqlite", "blue")]
    assert boards(team.c["desk"]) == sorted(both)
    with team.daemon.client() as anon:
        assert boards(anon, everywhere=True) == sorted(both)
    # The operator's own decisions are on the no-group board, told to who reads it.
    mine = team.c["desk"].request(p.PostDecision, key="style", value="ruff", rationale="r")
    assert (mine.decision.group, mine.notified) == (None, ["dan"])
    assert boards(team.c["dan"]) == [("style", "ruff", None)]
    assert ("style", "ruff", None) not in boards(ann)
    # A decision stays on the board it was posted on when its author changes group.
    ann.request(p.SetGroup, group="blue")
    assert boards(team.c["bob"]) == [("db.engine", "postgres", "red")]
    assert boards(cid) == [("db.engine", "sqlite", "blue")]
    revoked = team.c["bob"].request(p.RevokeDecision, key="db.engine", reason="dropped")
    assert (revoked.decision.version, revoked.decision.group) == (2, "red")
    assert boards(cid) == [("db.engine", "sqlite", "blue")]


def test_a_task_never_leaves_its_creators_group(team: Team, agents: Agents) -> None:
    ann, desk = team.c["ann"], team.c["desk"]
    task = ann.request(p.CreateTask, title="red work", scope="machine").task
    across = refusal(desk, p.UpdateTask, task=task.id, assignee="cid")
    assert across.code == Code.FORBIDDEN and "group 'blue'" in across.message
    assert "made the task in group 'red'" in across.message
    assert ann.request(p.TaskInfo, task=task.id).task.assignee is None
    # The operator's own tasks may go to any group (every group may see the operator).
    theirs = desk.request(p.CreateTask, title="for blue", assignee="cid").task
    assert theirs.assignee_name == "cid"
    # A successor of the assignee's name in another group does not take the task over.
    held = ann.request(p.CreateTask, title="bob's", assignee="bob").task
    team.c["bob"].request(p.UpdateTask, task=held.id, state="claimed")
    with team.c.pop("bob") as old:
        old.request(p.Unregister)
    heir = team.add("bob", "blue")
    assert team.peer["bob"].id != held.assignee
    kept = ann.request(p.TaskInfo, task=held.id).task
    assert kept.assignee == held.assignee and [e.what for e in kept.history][-1] == "claimed"
    assert team.mail("bob") == []  # neither the task nor the old bob's mail crossed over
    assert refusal(heir, p.TaskInfo, task=held.id).code == Code.UNKNOWN_TASK


def test_did_you_mean_names_only_peers_the_caller_may_see(team: Team) -> None:
    """Assigning to a gone peer of one's group suggests live names, but only visible ones."""
    team.add("cida", "red")
    with team.c.pop("cida") as old:
        old.request(p.Unregister)
    refused = refusal(team.c["ann"], p.CreateTask, title="x", assignee="cida")
    assert refused.code == Code.BAD_REQUEST and "is gone" in refused.message
    assert refused.candidates == [] and "did you mean" not in refused.message
    with team.daemon.client("cli") as c:  # the operator sees cid: it is suggested there
        join(c, team.agents, "desk2", None, "cli")
        seen = refusal(c, p.CreateTask, title="x", assignee="cida")
        assert "cid" in seen.candidates
