"""Proposals and votes against a real daemon (peersd/proposals.py): mail out and back, the
threshold, every refusal, the deadline (the sweep owns it), kill -9, and an upgrade from a
v4 database made as the previous release made it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import apsw
import pytest

from peersd import groups, identity, schema
from peersd import handlers as _handlers  # noqa: F401 - loads peersd.proposals as peersd does
from peersd import protocol as p
from peersd.client import Client
from peersd.errors import Code, PeersError
from peersd.proposals import required_votes

from .conftest import Agents, DaemonProc, run_peers
from .test_groups import join, refusal


class Crew:
    """pia proposes; vic, val, vera vote (all in no group); each on its own connection."""

    def __init__(self, daemon: DaemonProc, agents: Agents) -> None:
        self.daemon = daemon
        self.c: dict[str, Client] = {}
        self.peer: dict[str, p.Peer] = {}
        for name in ("pia", "vic", "val", "vera"):
            self.add(name, agents)

    def add(self, name: str, agents: Agents, group: str | None = None) -> None:
        self.c[name] = self.daemon.client("claude-code")
        self.peer[name] = join(self.c[name], agents, name, group)

    def inbox(self, name: str) -> list[str]:
        """Read (claim and ack) the mail waiting for ``name``; the texts."""
        msgs = self.c[name].request(p.Claim).messages
        if msgs:
            self.c[name].request(p.Ack, message_ids=[m.id for m in msgs], via="check")
        return [m.text for m in msgs]

    def close(self) -> None:
        for c in self.c.values():
            c.close()


@pytest.fixture
def crew(daemon: DaemonProc, agents: Agents):
    c = Crew(daemon, agents)
    yield c
    c.close()


def test_threshold_in_votes() -> None:
    assert required_votes("majority", 4) == 3
    assert required_votes("majority", 3) == 2
    assert required_votes("all", 3) == 3
    assert required_votes("2/3", 3) == 2
    assert required_votes("2/3", 4) == 3  # 8/3 rounded up
    assert required_votes("60%", 5) == 3
    assert required_votes("1%", 3) == 1  # at least one vote
    assert required_votes("2", 3) == 2
    for bad, why in (("4", "more than the 3 voter"), ("4/3", "more than all the voters")):
        with pytest.raises(PeersError, match=why):
            required_votes(bad, 3)


def test_voters_get_it_by_mail_and_the_threshold_decides(crew: Crew) -> None:
    x = (
        crew.c["pia"]
        .request(
            p.Propose,
            title="Ship v2 on Friday?",
            voters=["vic", "val", "vera"],
            threshold="2",
            deadline_seconds=3600,
        )
        .proposal
    )
    assert (x.state, x.required, x.options) == ("open", 2, ["approve", "reject"])
    assert [b.voter_name for b in x.ballots] == ["val", "vera", "vic"]
    assert x.deadline is not None and x.deadline > time.time() + 3500
    for name in ("vic", "val", "vera"):
        (mail,) = crew.inbox(name)
        assert mail.startswith(f"[claude-peers proposal #{x.id}] pia asks you to vote: Ship v2")
        assert "One option needs 2 of the 3 votes (threshold 2)" in mail
        assert f"proposal_id={x.id}" in mail
    after = crew.c["vic"].request(p.Vote, proposal_id=x.id, vote="approve", reason="tests green")
    assert (after.proposal.state, after.proposal.tally) == ("open", {"approve": 1, "reject": 0})
    assert crew.inbox("pia") == []  # nothing until it resolves
    # the option is matched ignoring case and stored as the proposer spelled it
    done = crew.c["val"].request(p.Vote, proposal_id=x.id, vote="APPROVE").proposal
    assert (done.state, done.outcome) == ("decided", "approve")
    assert done.resolved_at is not None
    for name in ("pia", "vic", "val", "vera"):
        (result,) = crew.inbox(name)
        assert "— is decided: approve (2 of 2 votes needed)" in result, name
        assert "Votes: val: approve; vic: approve (tests green)." in result
        assert "Did not vote: vera." in result
    # after the result: a vote is refused, and so is any vote that breaks a rule
    late = refusal(crew.c["vera"], p.Vote, proposal_id=x.id, vote="reject")
    assert late.code == Code.PROPOSAL_CLOSED and "already decided (approve)" in late.message


def test_every_bad_vote_is_a_clear_error(crew: Crew, agents: Agents) -> None:
    x = (
        crew.c["pia"]
        .request(p.Propose, title="Rename api?", options=["yes", "no", "later"], voters=["vic"])
        .proposal
    )
    c = crew.c
    err = refusal(c["val"], p.Vote, proposal_id=x.id, vote="yes")
    assert err.code == Code.NOT_A_VOTER and "its voters are vic" in err.message
    err = refusal(c["pia"], p.Vote, proposal_id=x.id, vote="yes")
    assert err.code == Code.NOT_A_VOTER  # the proposer does not vote
    err = refusal(c["vic"], p.Vote, proposal_id=x.id, vote="lator")
    assert err.code == Code.BAD_REQUEST
    assert "the options are yes, no, later (did you mean: later?)" in err.message
    assert err.candidates == ["yes", "no", "later"]
    err = refusal(c["vic"], p.Vote, proposal_id=999, vote="yes")
    assert err.code == Code.UNKNOWN_PROPOSAL and "no proposal #999" in err.message
    err = refusal(c["vic"], p.Vote, proposal_id=0, vote="yes")
    assert err.code == Code.BAD_REQUEST and "proposal_id" in err.message
    c["vic"].request(p.Vote, proposal_id=x.id, vote="later")  # 1 of 1: decided
    err = refusal(c["vic"], p.Vote, proposal_id=x.id, vote="yes")
    assert err.code == Code.PROPOSAL_CLOSED
    # twice, before it resolves (three voters, all needed)
    y = c["pia"].request(p.Propose, title="t", voters=["vic", "val"], threshold="all").proposal
    c["vic"].request(p.Vote, proposal_id=y.id, vote="approve")
    err = refusal(c["vic"], p.Vote, proposal_id=y.id, vote="reject")
    assert err.code == Code.ALREADY_VOTED and "you already voted 'approve'" in err.message
    # bad proposals
    for fields, code, why in (
        ({}, Code.BAD_REQUEST, "give the voters"),
        ({"voters": ["vic"], "scope": "machine"}, Code.BAD_REQUEST, "give the voters"),
        ({"voters": ["vic"], "threshold": "2"}, Code.BAD_REQUEST, "more than the 1 voter"),
        ({"voters": ["vic"], "threshold": "most"}, Code.BAD_REQUEST, "a threshold: a count"),
        ({"voters": ["pia"]}, Code.BAD_REQUEST, "your own proposal"),
        ({"voters": ["vix"]}, Code.UNKNOWN_PEER, "no peer named 'vix'"),
        ({"voters": ["vic"], "options": ["Go", "go"]}, Code.BAD_REQUEST, "'go' is given twice"),
        ({"voters": ["vic"], "options": ["one"]}, Code.BAD_REQUEST, "length >= 2"),
        ({"voters": ["vic"], "options": ["a", "\nb"]}, Code.BAD_REQUEST, "an option: 1-40"),
        ({"voters": ["vic"], "deadline_seconds": 0}, Code.BAD_REQUEST, "deadline_seconds"),
    ):
        err = refusal(c["pia"], p.Propose, title="t", **fields)
        assert err.code == code and why in err.message, (fields, err.code, err.message)
    # a voter in another group is as unknown as a name nobody has
    crew.add("gus", agents, group="green")
    err = refusal(c["pia"], p.Propose, title="t", voters=["gus"])
    assert err.code == Code.UNKNOWN_PEER


def test_it_fails_as_soon_as_no_option_can_reach_the_threshold(crew: Crew) -> None:
    x = (
        crew.c["pia"]
        .request(p.Propose, title="Unanimous?", scope="machine", threshold="all")
        .proposal
    )
    assert sorted(b.voter_name for b in x.ballots) == ["val", "vera", "vic"]
    crew.c["vic"].request(p.Vote, proposal_id=x.id, vote="approve")
    done = crew.c["val"].request(p.Vote, proposal_id=x.id, vote="reject").proposal
    assert (done.state, done.outcome) == ("failed", None)
    assert any("failed: no option can reach 3 votes" in t for t in crew.inbox("pia"))
    listed = crew.c["vera"].request(p.ListProposals, state="failed").proposals
    assert [y.id for y in listed] == [x.id]
    assert crew.c["vera"].request(p.ListProposals, state="open").proposals == []


def test_the_deadline_expires_it_on_the_sweep(crew: Crew) -> None:
    x = (
        crew.c["pia"]
        .request(p.Propose, title="Quick?", voters=["vic", "val"], deadline_seconds=0.3)
        .proposal
    )
    crew.c["vic"].request(p.Vote, proposal_id=x.id, vote="approve")
    time.sleep(0.4)
    with crew.daemon.client() as cli:
        cli.request(p.Sweep)
        (done,) = cli.request(p.ListProposals).proposals
    assert (done.state, done.tally["approve"]) == ("expired", 1)
    assert any("expired: the deadline passed" in t for t in crew.inbox("pia"))
    err = refusal(crew.c["val"], p.Vote, proposal_id=x.id, vote="approve")
    assert err.code == Code.PROPOSAL_CLOSED and "already expired" in err.message


def test_groups_limit_who_votes_and_who_sees_a_proposal(crew: Crew, agents: Agents) -> None:
    crew.add("gil", agents, group="green")
    crew.add("gus", agents, group="green")
    x = crew.c["gil"].request(p.Propose, title="green plan", scope="group").proposal
    assert [b.voter_name for b in x.ballots] == ["gus"]
    assert crew.c["pia"].request(p.ListProposals).proposals == []
    err = refusal(crew.c["vic"], p.Vote, proposal_id=x.id, vote="approve")
    assert err.code == Code.UNKNOWN_PROPOSAL
    assert [y.title for y in crew.c["gus"].request(p.ListProposals, mine=True).proposals] == [
        "green plan"
    ]
    with crew.daemon.client() as cli:  # the human sees all
        assert [y.title for y in cli.request(p.ListProposals).proposals] == ["green plan"]


def test_proposals_and_votes_survive_kill_9(make_daemon, agents: Agents) -> None:
    d = make_daemon()
    crew = Crew(d, agents)
    x = crew.c["pia"].request(p.Propose, title="t", voters=["vic", "val"], threshold="all")
    crew.c["vic"].request(p.Vote, proposal_id=x.proposal.id, vote="approve", reason="yes")
    d.kill9()
    d.start()
    crew.close()
    with d.client("claude-code") as val:
        val.call(p.Attach(id=0, pid=crew.peer["val"].agent_pid))
        (y,) = val.request(p.ListProposals).proposals
        assert (y.state, y.tally["approve"], y.ballots[1].reason) == ("open", 1, "yes")
        done = val.request(p.Vote, proposal_id=y.id, vote="approve").proposal
        assert done.state == "decided"


def _v4_database(path: Path, agent_pid: int) -> None:
    """A database as the previous release (schema v4) left it, with peers, mail and a claim."""
    conn = schema.open_database(path, "normal")
    for number, script in enumerate(schema.MIGRATIONS[:4], start=1):
        with conn:
            conn.execute(script)
            conn.pragma("user_version", number)
    start = identity.process_start(agent_pid)
    machine = identity.machine_id(path.parent)
    with conn:
        for pid, start_, name, peer_id, state in (
            (agent_pid, start, "old", "p-0000000a", "active"),
            (1, 1.0, "gone", "p-0000000b", "gone"),
        ):
            conn.execute(
                "INSERT INTO peers(id, name, name_key, client, state, machine_id, host, cwd, "
                "agent_pid, agent_start, registered_at, last_seen, receive, last_read) "
                "VALUES (?, ?, ?, 'codex', ?, ?, 'h', '/tmp', ?, ?, ?, ?, 'hook', NULL)",
                (peer_id, name, name, state, machine, pid, start_, time.time(), time.time()),
            )
        conn.execute(
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, created,"
            " state, expires_at) VALUES ('p-0000000b', 'gone', 'p-0000000a', 'old', 'kept', ?, "
            "'queued', ?)",
            (time.time(), time.time() + 3600),
        )
        conn.execute(
            "INSERT INTO claims VALUES ('p-0000000a', '/r/a.py', '/r', 1, 'mine', ?, ?)",
            (time.time(), time.time() + 3600),
        )
    conn.close()


def test_upgrade_from_a_v4_database_keeps_everything(make_daemon, agents: Agents, home) -> None:
    db = home / ".claude" / "claude-peers.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    agent = agents.spawn()
    _v4_database(db, agent.pid)
    d = make_daemon()
    with d.client() as cli:
        st = cli.request(p.Status)
        assert st.schema == len(schema.MIGRATIONS)
        listed = {x.name: x.group for x in cli.request(p.ListPeers, include_gone=True).peers}
        assert listed == {"old": None, "gone": None}
        assert [m.text for m in cli.request(p.History, mine=False).messages] == ["kept"]
        assert [h.reason for h in cli.request(p.ListFiles).holders] == ["mine"]
    with d.client("codex") as old:
        peer = old.call(p.Attach(id=0, pid=agent.pid)).peer
        assert peer.name == "old"
        assert [m.text for m in old.request(p.Claim).messages] == ["kept"]
        with d.client("cli") as desk:  # the upgraded proposals table takes the operator's
            join(desk, agents, "desk", None, kind="cli")
            x = desk.request(p.Propose, title="after the upgrade", voters=["old"]).proposal
        assert x.operator
        done = old.request(p.Vote, proposal_id=x.id, vote="approve").proposal
        assert (done.state, done.operator) == ("decided", True)
        assert old.request(p.SetGroup, group="red").peer.group == "red"
    d.stop()
    conn = apsw.Connection(str(db))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"proposals", "votes"} <= tables
    conn.close()


def test_a_voter_whose_session_ended_is_refused(crew: Crew) -> None:
    """A gone peer can never vote: with ``threshold="all"`` the proposal could never be
    decided, so naming one is refused and nothing is stored (review 10, finding 6)."""
    crew.c["vera"].request(p.Unregister)
    err = refusal(crew.c["pia"], p.Propose, title="q", voters=["vic", "vera"], threshold="all")
    assert err.code == Code.BAD_REQUEST, err
    assert "vera is gone" in err.message and "active peers only" in err.message, err
    assert crew.c["pia"].request(p.ListProposals).proposals == []
    assert crew.inbox("vic") == []
    x = crew.c["pia"].request(p.Propose, title="q", voters=["vic"], threshold="all").proposal
    assert [b.voter_name for b in x.ballots] == ["vic"]


def test_a_vote_after_the_deadline_expires_it_instead_of_counting(crew: Crew) -> None:
    """Between the deadline and the next sweep a vote is not counted: it expires the
    proposal (saved, result mailed) and is refused (review 10, finding 7)."""
    ask = {"voters": ["vic", "val"], "threshold": "1", "deadline_seconds": 0.3}
    x = crew.c["pia"].request(p.Propose, title="Late?", **ask).proposal
    time.sleep(0.4)
    err = refusal(crew.c["vic"], p.Vote, proposal_id=x.id, vote="approve")
    assert err.code == Code.PROPOSAL_CLOSED and "expired" in err.message, err
    (y,) = crew.c["pia"].request(p.ListProposals).proposals
    assert (y.state, y.outcome, y.tally["approve"]) == ("expired", None, 0)
    assert [b.vote for b in y.ballots] == [None, None]
    assert any("expired: the deadline passed" in t for t in crew.inbox("pia"))
    err = refusal(crew.c["val"], p.Vote, proposal_id=x.id, vote="approve")
    assert err.code == Code.PROPOSAL_CLOSED and "already expired" in err.message


def test_an_operators_proposal_is_seen_by_its_voters_with_names_masked(
    crew: Crew, agents: Agents
) -> None:
    """The terminal's peer may ask voters of several groups: a session in no group that is
    not a voter does not see it (no group is not the operator's "group"), and each voter
    sees the others' ballots, and the result mail, only by names it may see (finding 9)."""
    crew.add("ria", agents, group="red")
    crew.add("bea", agents, group="blue")
    with crew.daemon.client("cli") as desk:
        join(desk, agents, "desk", None, kind="cli")
        x = desk.request(p.Propose, title="cross", voters=["ria", "bea"], threshold="all")
        x = x.proposal
        assert [b.voter_name for b in x.ballots] == ["bea", "ria"]
        assert [y.id for y in desk.request(p.ListProposals).proposals] == [x.id]
    assert crew.c["pia"].request(p.ListProposals).proposals == []
    assert x.operator
    err = refusal(crew.c["pia"], p.Vote, proposal_id=x.id, vote="approve")
    assert err.code == Code.UNKNOWN_PROPOSAL
    with crew.daemon.client() as cli:
        r = cli.request(p.MakeReport, since=time.time() - 60)
        assert [y.id for y in r.proposals] == [x.id]
    assert crew.c["pia"].request(p.MakeReport, since=time.time() - 60).proposals == []
    (seen,) = crew.c["ria"].request(p.ListProposals).proposals
    assert {(b.voter, b.voter_name) for b in seen.ballots} == {
        ("", groups.HIDDEN_NAME),
        (crew.peer["ria"].id, "ria"),
    }
    crew.c["ria"].request(p.Vote, proposal_id=x.id, vote="approve", reason="fine")
    done = crew.c["bea"].request(p.Vote, proposal_id=x.id, vote="approve").proposal
    assert done.state == "decided"
    assert sorted(b.voter_name for b in done.ballots) == [groups.HIDDEN_NAME, "bea"]
    (result,) = [t for t in crew.inbox("bea") if "is decided" in t]
    assert "ria" not in result and groups.HIDDEN_NAME in result, result
    (result,) = [t for t in crew.inbox("ria") if "is decided" in t]
    assert "bea" not in result and "ria: approve (fine)" in result, result


# --------------------------------------------------------------------------- CLI


def test_cli_propose_vote_and_list(crew: Crew) -> None:
    env = crew.daemon.env
    r = run_peers(
        env,
        "propose",
        "Use uv?",
        "--voter",
        "vic",
        "--option",
        "uv",
        "--option",
        "pip",
        "--threshold",
        "1",
        "--deadline",
        "2h",
        "--json",
    )
    assert r.code == 0, r
    x = r.json()
    assert (x["title"], x["options"], x["required"]) == ("Use uv?", ["uv", "pip"], 1)
    assert x["proposer_name"] != "pia"  # the CLI's own peer (the shell)
    r = run_peers(env, "proposals")
    assert r.code == 0 and f"#{x['id']} Use uv?" in r.out and "vic: -" in r.out, r
    r = run_peers(env, "vote", str(x["id"]), "uv")
    assert r.code == 1 and "not a voter" in r.err, r
    crew.c["vic"].request(p.Vote, proposal_id=x["id"], vote="uv")
    r = run_peers(env, "proposals", "--state", "decided", "--json")
    assert r.code == 0 and [y["outcome"] for y in r.json()] == ["uv"], r
    for args, why in (
        (["propose", "t"], "give --voter"),
        (["propose", "t", "--voter", "vic", "--deadline", "soon"], "--deadline 'soon'"),
        (["propose", "t", "--scope", "galaxy"], "unknown scope 'galaxy'"),
        (["proposals", "--state", "done"], "unknown state 'done'"),
        (["vote", "0", "uv"], "proposal ids start at 1"),
        (["vote", "77", "uv"], "no proposal #77"),
    ):
        r = run_peers(env, *args)
        assert r.code == 1 and why in r.err and len(r.err.splitlines()) == 1, (args, r)


def test_cli_vote_speaks_as_the_shell_peer(crew: Crew) -> None:
    env = crew.daemon.env
    r = run_peers(env, "whoami", "--json")
    me = r.json()["name"]
    x = crew.c["pia"].request(p.Propose, title="Deploy?", voters=[me]).proposal
    r = run_peers(env, "vote", str(x.id), "approve", "--reason", "fine by me", "--json")
    assert r.code == 0, r
    assert (r.json()["state"], r.json()["outcome"]) == ("decided", "approve")
    assert os.environ.get("CLAUDE_PEERS_GROUP") is None
