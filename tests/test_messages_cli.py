"""``peers send --kind``, ``history --thread``, ``react``, ``search`` and ``message-status``
against a real daemon, and the git snapshot a send carries (docs/coordination.md)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peersd import kinds
from peersd import protocol as p
from peersd.client import Client

from .conftest import Agents, DaemonProc, register
from .test_cli import Peers

Agent = Callable[..., tuple[Client, p.Peer]]


@pytest.fixture
def desk(home: Path) -> Path:
    path = home / "desk"
    path.mkdir()
    return path


@pytest.fixture
def peers(daemon: DaemonProc, desk: Path) -> Peers:
    return Peers(daemon.env, desk)


@pytest.fixture
def agent(daemon: DaemonProc, agents: Agents) -> Iterator[Agent]:
    """Register an agent session (a real process) on its own connection."""
    clients: list[Client] = []

    def make(name: str, kind: str = "claude-code") -> tuple[Client, p.Peer]:
        client = daemon.client(kind)
        clients.append(client)
        return client, register(client, agents.spawn().pid, kind, name=name)

    yield make
    for client in clients:
        client.close()


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_send_a_typed_request_and_see_its_answer_in_message_status(
    peers: Peers, agent: Agent
) -> None:
    ca, _ = agent("alpha")
    sent = peers.ok(
        "send",
        "alpha",
        "may I force-push main?",
        "--kind",
        "approval_request",
        "-f",
        "action=git push --force origin main",
        "-f",
        "risk=others lose commits",
        "--subject",
        "release",
        "--json",
    ).json()
    (msg,) = ca.request(p.Claim).messages
    assert msg.typed == kinds.ApprovalRequest(
        action="git push --force origin main", risk="others lose commits"
    )
    assert msg.subject == "release"
    status = peers.ok("message-status", sent["message_id"])
    assert "approval_request: not answered yet" in status.out
    me = peers.ok("whoami", "--json").json()["name"]
    answer = ca.request(
        p.Send,
        to=me,
        text="no",
        reply_to=msg.id,
        typed=kinds.Approval(verdict="reject", reason="main is protected"),
    )
    status = peers.ok("message-status", sent["message_id"])
    assert f"answered by alpha in {answer.message_id} (approval reject)" in status.out, status
    data = peers.ok("message-status", sent["message_id"], "--json").json()[0]
    assert data["answer"]["verdict"] == "reject" and data["kind"] == "approval_request"

    # the person reading it sees the kind, its fields and how to answer
    shown = peers.ok("history", "--thread", sent["message_id"]).out
    assert "a request for your approval (approval_request)" in shown
    assert "action: git push --force origin main" in shown
    assert "an answer to an approval request (approval)" in shown
    assert "re: release" in shown  # the answer inherited the subject


def test_send_names_a_missing_or_foreign_field(peers: Peers, agent: Agent) -> None:
    agent("alpha")
    line = peers.fails(1, "send", "alpha", "x", "--kind", "question")
    assert "kind 'question' needs expected_format" in line
    line = peers.fails(
        1, "send", "alpha", "x", "--kind", "question", "-f", "expected_format=n", "-f", "risk=y"
    )
    assert "takes no risk" in line
    line = peers.fails(1, "send", "alpha", "x", "-f", "risk=y")
    assert "needs --kind" in line
    line = peers.fails(1, "send", "alpha", "x", "--kind", "poem")
    assert "unknown kind 'poem'" in line


def test_an_answer_to_the_wrong_request_is_refused(peers: Peers, agent: Agent) -> None:
    ca, _ = agent("alpha")
    me = peers.ok("whoami", "--json").json()["name"]
    question = ca.request(p.Send, to=me, text="?", typed=kinds.Question(expected_format="y/n"))
    line = peers.fails(
        1,
        "send",
        "alpha",
        "yes",
        "--reply-to",
        question.message_id,
        "--kind",
        "approval",
        "-f",
        "verdict=approve",
        "-f",
        "reason=fine",
    )
    assert "an approval answers an approval_request" in line and "is a question" in line


def test_react_and_see_it_in_the_senders_status(peers: Peers, agent: Agent) -> None:
    ca, _ = agent("alpha")
    me = peers.ok("whoami", "--json").json()["name"]
    sent = ca.request(p.Send, to=me, text="deployed")
    assert "reacted 👍" in peers.ok("react", sent.message_id, "👍").out
    line = peers.fails(1, "react", sent.message_id, "ok")
    assert "one emoji or symbol" in line and "text" in line
    (item,) = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert [(r.emoji, r.name) for r in item.reactions] == [("👍", me)]
    assert f"reactions: 👍 {me}" in peers.ok("message-status", sent.message_id).out


def test_search_finds_mail_with_snippets_and_refuses_bad_syntax(peers: Peers, agent: Agent) -> None:
    ca, _ = agent("alpha")
    cb, _ = agent("beta")
    ca.request(p.Send, to="beta", text="the flaky test is test_wake_under_load")
    ca.request(p.Send, to="beta", text="lunch at noon")
    r = peers.ok("search", "flaky")
    assert "alpha → beta" in r.out and "[flaky]" in r.out and "lunch" not in r.out
    hits = peers.ok("search", "flaky OR lunch", "--json").json()
    assert len(hits) == 2 and {"message", "snippet", "rank"} <= set(hits[0])
    assert peers.ok("search", "lunch", "--peer", "beta", "--json").json()[0]["message"]["text"]
    assert peers.ok("search", "lunch", "--since", "2099-01-01", "--json").json() == []
    line = peers.fails(1, "search", '"flaky')
    assert "bad search query" in line
    line = peers.fails(1, "search", "x", "--since", "yesterday")
    assert "neither an age" in line
    # this shell's own mail only: it has none
    assert "No messages match." in peers.ok("search", "flaky", "--mine").out
    del cb


def test_a_send_from_a_repository_carries_its_branch_and_uncommitted_files(
    peers: Peers, agent: Agent, desk: Path
) -> None:
    ca, _ = agent("alpha")
    git(desk, "init", "-q", "-b", "feature-x")
    (desk / "tracked.py").write_text("x\n")
    git(desk, "add", "tracked.py")
    git(desk, "commit", "-qm", "one")
    (desk / "tracked.py").write_text("y\n")
    (desk / "new.txt").write_text("n\n")
    peers.ok("send", "alpha", "look")
    (msg,) = ca.request(p.Claim).messages
    assert msg.snapshot is not None
    assert msg.snapshot.branch == "feature-x"
    assert msg.snapshot.dirty == 2
    assert sorted(msg.snapshot.files) == ["new.txt", "tracked.py"]
    shown = peers.ok("history").out
    assert 'sender then: branch "feature-x"; 2 uncommitted files' in shown
