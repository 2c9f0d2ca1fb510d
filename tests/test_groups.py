"""Isolation groups against a real daemon: who sees and reaches whom (peersd/groups.py).

Peers in different groups neither see nor message each other, and the refusal reads as it
would for a name that does not exist; an unbound connection (the human CLI) sees all; the
group comes from the setting (env or file), the branch (``auto_group``), or ``set_group``,
and survives a helper's reconnect. File holds cross groups (the file is shared) but hide
the holder's name and send it no notice.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from peers_cli.app import describe
from peersd import groups
from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.config import ConfigError, load
from peersd.errors import Code, PeersError

from .conftest import Agents, DaemonProc, run_peers


def join(c: Client, agents: Agents, name: str, group: str | None, **fields: object) -> p.Peer:
    """Register a new agent session named ``name`` in ``group`` on connection ``c``."""
    kind = str(fields.pop("kind", "claude-code"))
    req = session_registration(c.settings, agents.spawn().pid, kind, cwd="/tmp", name=name)
    req = msgspec.structs.replace(req, group=group, **fields)
    return c.call(req).peer


class Team:
    """red: ann, bob; blue: cid; no group: dan. Each on its own connection."""

    def __init__(self, daemon: DaemonProc, agents: Agents) -> None:
        self.c = {n: daemon.client("claude-code") for n in ("ann", "bob", "cid", "dan")}
        self.peer = {
            "ann": join(self.c["ann"], agents, "ann", "red"),
            "bob": join(self.c["bob"], agents, "bob", "red"),
            "cid": join(self.c["cid"], agents, "cid", "blue"),
            "dan": join(self.c["dan"], agents, "dan", None, kind="codex"),
        }

    def names(self, who: str, scope: str = "machine") -> list[str]:
        return [x.name for x in self.c[who].request(p.ListPeers, scope=scope).peers]

    def close(self) -> None:
        for c in self.c.values():
            c.close()


@pytest.fixture
def team(daemon: DaemonProc, agents: Agents):
    t = Team(daemon, agents)
    yield t
    t.close()


def refusal(c: Client, kind: type[p.Request], **fields: object) -> PeersError:
    with pytest.raises(PeersError) as e:
        c.request(kind, **fields)
    return e.value


def test_peers_in_other_groups_are_neither_listed_nor_reachable(daemon, team: Team) -> None:
    assert team.peer["ann"].group == "red"
    assert team.names("ann") == ["bob"]
    assert team.names("cid") == []
    assert team.names("dan") == []  # no group is a group of its own
    shown = team.c["ann"].request(p.ListPeers).peers[0]
    assert shown.group == "red"
    # Sending to a peer in another group reads exactly like a name nobody has.
    hidden = refusal(team.c["ann"], p.Send, to="cid", text="hi")
    missing = refusal(team.c["ann"], p.Send, to="nobody", text="hi")
    assert hidden.code == missing.code == Code.UNKNOWN_PEER
    assert hidden.message == missing.message.replace("'nobody'", "'cid'")
    assert "in your group 'red'" in hidden.message
    assert "other groups cannot be seen or reached" in hidden.message
    # by id too, and "did you mean" offers only names of the caller's group
    assert refusal(team.c["ann"], p.Send, to=team.peer["cid"].id, text="x").code == (
        Code.UNKNOWN_PEER
    )
    assert refusal(team.c["ann"], p.Send, to="ci", text="x").candidates == []
    assert refusal(team.c["cid"], p.Send, to="an", text="x").candidates == []
    assert refusal(team.c["bob"], p.Send, to="an", text="x").candidates == ["ann"]
    # a broadcast reaches the group only; nothing was queued for the others
    sent = team.c["ann"].request(p.Broadcast, scope="machine", text="standup").sent
    assert [s.to_name for s in sent] == ["bob"]
    everyone = {x.name: x.pending for x in team.c["ann"].request(p.ListPeers).peers}
    assert everyone == {"bob": 1}
    # a reply in the group works; waiting for mail from a hidden peer is refused
    got = team.c["bob"].request(p.Claim).messages
    team.c["bob"].request(p.Ack, message_ids=[got[0].id], via="check")
    team.c["bob"].request(p.Send, to="ann", text="ok", reply_to=got[0].id)
    assert refusal(team.c["ann"], p.Claim, from_peer="cid").code == Code.UNKNOWN_PEER
    assert refusal(team.c["ann"], p.History, peer="cid").code == Code.UNKNOWN_PEER


def test_status_and_history_of_other_groups_mail_stay_hidden(daemon, team: Team) -> None:
    red = team.c["bob"].request(p.Send, to="ann", text="red talk").message_id
    # dan (no group) and cid (blue) cannot see red mail; ann and bob can
    for who, found in (("ann", True), ("bob", True), ("cid", False), ("dan", False)):
        item = team.c[who].request(p.MessageStatus, message_ids=[red]).items[0]
        assert item.found is found, who
    assert [m.text for m in team.c["cid"].request(p.History, mine=False).messages] == []
    assert [m.text for m in team.c["ann"].request(p.History, mine=False).messages] == ["red talk"]
    # the human CLI (an unbound connection) sees all of it
    with daemon.client() as cli:
        assert cli.request(p.MessageStatus, message_ids=[red]).items[0].found
        assert [m.text for m in cli.request(p.History, mine=False).messages] == ["red talk"]


def test_the_human_cli_sees_everyone_and_filters_by_group(daemon, team: Team) -> None:
    with daemon.client() as cli:
        listed = {x.name: x.group for x in cli.request(p.ListPeers).peers}
        assert listed == {"ann": "red", "bob": "red", "cid": "blue", "dan": None}
        red = [x.name for x in cli.request(p.ListPeers, group="red").peers]
        assert red == ["ann", "bob"]
        bad = refusal(cli, p.ListPeers, group="bad group")
        assert bad.code == Code.BAD_REQUEST and "a group name" in bad.message
    r = run_peers(daemon.env, "peers", "--group", "blue", "--json")
    assert r.code == 0, r
    assert [(x["name"], x["group"]) for x in r.json()] == [("cid", "blue")]
    r = run_peers(daemon.env, "peers")
    assert r.code == 0, r
    assert "GROUP" in r.out.splitlines()[0]
    assert any(line.startswith("cid ") and " blue " in line for line in r.out.splitlines()), r
    r = run_peers(daemon.env, "peers", "--group", "no such")
    assert r.code == 1 and "a group name" in r.err, r


def test_a_cli_peer_in_no_group_reaches_everyone_and_is_answered(
    daemon, team: Team, agents: Agents
) -> None:
    with daemon.client("cli") as cli:
        me = join(cli, agents, "desk", None, kind="cli")
        assert groups.operator(me)
        sent = cli.request(p.Send, to="cid", text="from the human")
        assert sent.to_name == "cid"
        assert set(x.name for x in cli.request(p.ListPeers).peers) == {"ann", "bob", "cid", "dan"}
        # and every group sees it, so anyone can answer the person
        assert "desk" in team.names("cid") and "desk" in team.names("ann")
        team.c["cid"].request(p.Send, to="desk", text="answer", reply_to=sent.message_id)


def test_join_leave_and_scope_group(daemon, team: Team, agents: Agents) -> None:
    c = team.c["cid"]
    bad = refusal(team.c["dan"], p.ListPeers, scope="group")
    assert bad.code == Code.BAD_REQUEST and "you are in none" in bad.message
    assert refusal(c, p.SetGroup, group="-bad").code == Code.BAD_REQUEST
    peer = c.request(p.SetGroup, group="red").peer
    assert peer.group == "red"
    assert team.names("cid", "group") == ["ann", "bob"]
    assert "cid" in team.names("ann")
    sent = team.c["ann"].request(p.Broadcast, scope="group", text="welcome").sent
    assert sorted(s.to_name for s in sent) == ["bob", "cid"]
    # a helper registering again without a group keeps the joined one
    req = session_registration(c.settings, peer.agent_pid, "claude-code", cwd="/tmp")
    assert req.group is None
    with daemon.client("claude-code") as again:
        assert again.call(req).peer.group == "red"
    # leaving: no group, which sees dan and no longer the red ones
    assert c.request(p.SetGroup).peer.group is None
    assert team.names("cid") == ["dan"]
    assert refusal(c, p.Send, to="ann", text="x").code == Code.UNKNOWN_PEER


def test_the_group_comes_from_the_setting_or_the_branch(tmp_path: Path, agents: Agents) -> None:
    env = {"HOME": str(tmp_path), "CLAUDE_PEERS_GROUP": "red"}
    pid = agents.spawn().pid
    assert session_registration(load(env=env), pid, "codex", cwd="/tmp").group == "red"
    repo = tmp_path / "shop"
    subprocess.run(["git", "init", "-q", "-b", "feature/lögin,page", str(repo)], check=True)
    branchy = {"HOME": str(tmp_path), "CLAUDE_PEERS_AUTO_GROUP": "branch"}
    req = session_registration(load(env=branchy), pid, "codex", cwd=str(repo))
    assert (req.branch, req.group) == ("feature/lögin,page", "feature/l-gin-page")
    # an explicit group wins over the branch; no branch, no group
    both = {**branchy, "CLAUDE_PEERS_GROUP": "ops"}
    assert session_registration(load(env=both), pid, "codex", cwd=str(repo)).group == "ops"
    assert session_registration(load(env=branchy), pid, "codex", cwd="/").group is None
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "claude-peers.toml").write_text('group = "team a"\n')
    with pytest.raises(ConfigError, match="group must be 1-64 of letters"):
        load(env={"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="auto_group"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_AUTO_GROUP": "repo"})


def test_file_holds_cross_groups_without_naming_the_holder(
    daemon, team: Team, tmp_path: Path
) -> None:
    repo = Path(os.path.realpath(tmp_path))
    target = p.FileRef(path=str(repo / "app.py"), repo=str(repo))
    claimed = team.c["cid"].request(p.ClaimFiles, patterns=[target], exclusive=True)
    assert claimed.claims[0].name == "cid"
    check = team.c["ann"].request(p.CheckEdit, files=[target])
    assert check.decision == "deny"  # the file is the same file whatever the group
    (holder,) = check.holders
    assert (holder.name, holder.peer_id) == (groups.HIDDEN_NAME, "")
    # ... and cid was not mailed about it (bob, in ann's group, would have been)
    assert team.c["cid"].request(p.Claim).messages == []
    conflict = refusal(team.c["ann"], p.ClaimFiles, patterns=[target])
    assert conflict.code == Code.CLAIM_CONFLICT
    assert groups.HIDDEN_NAME in conflict.message and "cid" not in conflict.message
    assert conflict.candidates == []
    status = team.c["ann"].request(p.FileStatus, paths=[target.path]).items[0]
    assert [h.name for h in status.holders] == [groups.HIDDEN_NAME]
    with daemon.client() as cli:  # the human sees who
        assert [h.name for h in cli.request(p.ListFiles).holders] == ["cid"]
    team.c["bob"].request(
        p.ClaimFiles, patterns=[msgspec.structs.replace(target, path=str(repo / "b.py"))]
    )
    shown = team.c["ann"].request(
        p.CheckEdit, files=[msgspec.structs.replace(target, path=str(repo / "b.py"))]
    )
    assert [h.name for h in shown.holders] == ["bob"]
    assert len(team.c["bob"].request(p.Claim).messages) == 1  # the notice


def test_kill_does_not_reach_another_group(make_daemon, agents: Agents) -> None:
    d = make_daemon(kill_enabled="1")
    with d.client("claude-code") as a, d.client("claude-code") as b:
        join(a, agents, "ann", "red")
        join(b, agents, "cid", "blue")
        assert refusal(a, p.Kill, target="cid").code == Code.UNKNOWN_PEER


def test_the_hook_stops_an_edit_under_another_groups_claim_without_a_name(
    daemon, agents: Agents, tmp_path: Path
) -> None:
    """The real peers-hook, PreToolUse: the deny says who holds it only as "a session in
    another isolation group", and offers no send_message it could not make."""
    from .test_files import SESSION_B, World, git_init, output

    repo = git_init(tmp_path / "repo")
    world = World(daemon, agents, repo)
    try:
        world.alpha_c.request(p.SetGroup, group="blue")
        world.alpha_c.request(p.ClaimFiles, patterns=[world.ref("src/**")], exclusive=True)
        out = output(world.edit("Write", "src/a.py", session=SESSION_B, event="PreToolUse"))
        spec = out["hookSpecificOutput"]
        assert spec["permissionDecision"] == "deny"
        reason = spec["permissionDecisionReason"]
        assert "a session in another isolation group holds it" in reason, reason
        assert "alpha" not in reason and "to=" not in reason, reason
        # a warning (a shared claim) likewise names nobody to message
        world.alpha_c.request(p.ReleaseFiles, all=True)
        world.alpha_c.request(p.ClaimFiles, patterns=[world.ref("src/**")])
        out = output(world.edit("Write", "src/a.py", session=SESSION_B, event="PreToolUse"))
        text = json.dumps(out)
        assert "It is in another isolation group." in text and "alpha" not in text, text
    finally:
        world.close()


def test_a_joined_group_survives_kill_9(make_daemon, agents: Agents) -> None:
    d = make_daemon()
    with d.client("claude-code") as a, d.client("claude-code") as b:
        ann = join(a, agents, "ann", None)
        join(b, agents, "bob", "red")
        a.request(p.SetGroup, group="red")
    d.kill9()
    d.start()
    with d.client() as cli:
        assert {x.name: x.group for x in cli.request(p.ListPeers).peers} == {
            "ann": "red",
            "bob": "red",
        }
    with d.client("claude-code") as again:
        again.call(p.Attach(id=0, pid=ann.agent_pid))
        assert [x.name for x in again.request(p.ListPeers, scope="group").peers] == ["bob"]


def test_peer_events_reach_only_the_group(daemon, agents: Agents) -> None:
    with (
        daemon.client("claude-code") as a,
        daemon.client("claude-code") as b,
        daemon.client("claude-code") as c,
        daemon.client() as watcher,
    ):
        join(a, agents, "ann", "red")
        a.request(p.Subscribe, kinds=["peers", "traffic"])
        watcher.request(p.Subscribe, kinds=["peers"])
        join(b, agents, "cid", "blue")
        join(c, agents, "bob", "red")
        event = a.next_event(5)
        assert isinstance(event, p.PeerJoined) and event.peer.name == "bob"
        assert a.next_event(0.3) is None  # nothing about cid
        seen = [watcher.next_event(5), watcher.next_event(5)]
        assert [e.peer.name for e in seen if isinstance(e, p.PeerJoined)] == ["cid", "bob"]


def test_a_group_change_tells_each_watcher_as_it_sees_the_peer(daemon, team: Team) -> None:
    """set_group publishes on "peers" (review 10, finding 14): the old group sees the peer
    leave (without learning where to), the new one sees it join, a watcher that sees both
    learns the group changed, and a group that sees it in neither hears nothing."""
    for name in ("ann", "cid", "dan"):
        team.c[name].request(p.Subscribe, kinds=["peers"])
    with daemon.client() as watcher:
        watcher.request(p.Subscribe, kinds=["peers"])
        bob = team.peer["bob"]
        team.c["bob"].request(p.SetGroup, group="blue")
        left = team.c["ann"].next_event(5)
        assert isinstance(left, p.PeerLeft), left
        assert (left.peer_id, left.name, left.reason) == (bob.id, "bob", "moved to another group")
        joined = team.c["cid"].next_event(5)
        assert isinstance(joined, p.PeerJoined), joined
        assert (joined.peer.name, joined.peer.group) == ("bob", "blue")
        changed = watcher.next_event(5)
        assert isinstance(changed, p.PeerChanged), changed
        assert (changed.what, changed.peer_id) == ("group", bob.id)
        assert describe(changed) == f"changed   group of {bob.id}"  # peers watch
        assert describe(left) == f"left      bob ({bob.id}): moved to another group"
        assert team.c["dan"].next_event(0.3) is None  # no group: saw bob in neither
        team.c["bob"].request(p.SetGroup, group="blue")  # no change, no event
        assert watcher.next_event(0.3) is None


def test_tasks_stay_inside_their_group(team: Team) -> None:
    """Tasks follow the same rule (peersd/tasks.py): a task cannot be assigned across
    groups, a task made in one group is neither listed, shown nor claimable in another,
    and its assignee may always see it."""
    ann, cid = team.c["ann"], team.c["cid"]
    across = refusal(ann, p.CreateTask, title="fix it", assignee="cid")
    assert across.code == Code.UNKNOWN_PEER
    task = ann.request(p.CreateTask, title="open work", scope="machine").task
    mine = ann.request(p.CreateTask, title="for bob", assignee="bob", scope="machine").task
    assert [t.id for t in team.c["bob"].request(p.ListTasks).tasks] == [mine.id, task.id]
    assert team.c["cid"].request(p.ListTasks).tasks == []
    for kind, fields in (
        (p.TaskInfo, {}),
        (p.UpdateTask, {"state": "claimed"}),
        (p.UpdateTask, {"note": "hello"}),
    ):
        refused = refusal(cid, kind, task=task.id, **fields)
        assert refused.code == Code.UNKNOWN_TASK, (kind, refused)
    # Inside the group it works as before.
    claimed = team.c["bob"].request(p.UpdateTask, task=task.id, state="claimed").task
    assert claimed.state == "claimed" and claimed.assignee == team.peer["bob"].id


def test_search_cannot_name_a_peer_of_another_group(team: Team) -> None:
    """``search(peer=…)`` resolves the peer as ``send`` does: another group's peer reads
    like a name nobody has."""
    team.c["ann"].request(p.Send, to="bob", text="the migration plan")
    hits = team.c["ann"].request(p.Search, query="migration", peer="bob").hits
    assert [h.message.text for h in hits] == ["the migration plan"]
    hidden = refusal(team.c["ann"], p.Search, query="migration", peer="cid")
    missing = refusal(team.c["ann"], p.Search, query="migration", peer="nobody")
    assert hidden.code == missing.code == Code.UNKNOWN_PEER


def test_searching_all_mail_leaves_out_other_groups_mail(
    daemon, team: Team, agents: Agents
) -> None:
    """``search(mine=false)`` shows what ``history(mine=false)`` shows: mail between peers
    the caller may both see; the human CLI (unbound) still searches everything."""
    team.c["bob"].request(p.Send, to="ann", text="the red launch code is swordfish")
    with daemon.client("claude-code") as c2:
        join(c2, agents, "eve", "blue")
        c2.request(p.Send, to="cid", text="blue swordfish sighting")

    def found(c: Client, **fields: object) -> list[str]:
        hits = c.request(p.Search, query="swordfish", **fields).hits
        return sorted(h.message.text for h in hits)

    red, blue = ["the red launch code is swordfish"], ["blue swordfish sighting"]
    assert found(team.c["ann"], mine=False) == red
    assert found(team.c["cid"], mine=False) == blue
    assert found(team.c["dan"], mine=False) == []  # no group is a group of its own
    assert found(team.c["cid"]) == blue  # its own mail, as before
    with daemon.client() as cli:
        assert found(cli, mine=False) == sorted(red + blue)
