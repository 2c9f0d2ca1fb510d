"""`peers tasks`, `peers task …`, `peers decisions`, `peers decide`, `peers revoke-decision`:
each command against a real daemon, run as a person would (the shell's CLI peer), with the
mail the agent sessions concerned receive, `--json` for scripts, and every refusal as one
line on stderr with exit status 1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peersd import protocol as p
from peersd.client import Client

from .conftest import Agents, DaemonProc, register
from .test_cli import Peers


@pytest.fixture
def desk(home: Path) -> Path:
    path = home / "desk"
    path.mkdir()
    return path


@pytest.fixture
def peers(daemon: DaemonProc, desk: Path) -> Peers:
    return Peers(daemon.env, desk)


@pytest.fixture
def agent(daemon: DaemonProc, agents: Agents) -> Iterator[Callable[..., tuple[Client, p.Peer]]]:
    """Register an agent session (a real process) on its own connection."""
    clients: list[Client] = []

    def make(name: str, cwd: str) -> tuple[Client, p.Peer]:
        client = daemon.client("claude-code")
        clients.append(client)
        return client, register(client, agents.spawn().pid, "claude-code", cwd=cwd, name=name)

    yield make
    for client in clients:
        client.close()


def inbox(client) -> list[p.Message]:
    msgs = client.request(p.Claim).messages
    if msgs:
        client.request(p.Ack, message_ids=[m.id for m in msgs], via="check")
    return msgs


def test_task_commands(peers: Peers, agent, desk: Path) -> None:
    api_c, _ = agent("api", cwd=str(desk))
    web_c, _ = agent("web", cwd=str(desk))
    r = peers.ok("task", "add", "Fix the login", "--to", "api", "-d", "keep ?next=")
    assert r.out.splitlines() == ["t-1 open (assigned to api): Fix the login", "  mailed api"]
    [mail] = inbox(api_c)
    assert "assigned you task t-1" in mail.text and "keep ?next=" in mail.text
    api_c.request(p.UpdateTask, task="t-1", state="claimed")

    r = peers.ok("tasks")
    assert r.out.split("\n")[0].split() == [
        "ID",
        "STATE",
        "TITLE",
        "ASSIGNEE",
        "CREATOR",
        "UPDATED",
    ]
    assert "t-1" in r.out and "claimed" in r.out and "Fix the login" in r.out
    [listed] = peers.ok("tasks", "--json").json()
    assert (listed["id"], listed["state"], listed["assignee_name"]) == ("t-1", "claimed", "api")

    # A person may finish a task another session claimed; that session is mailed.
    r = peers.ok("task", "done", "1", "--result", "merged in #12")
    assert r.out.startswith("t-1 done (assigned to api): Fix the login")
    assert "merged in #12" in inbox(api_c)[0].text
    assert peers.ok("tasks").out.strip() == "No tasks open or claimed."
    assert [t["id"] for t in peers.ok("tasks", "--all", "--json").json()] == ["t-1"]
    assert [t["id"] for t in peers.ok("tasks", "--state", "done", "--json").json()] == ["t-1"]

    peers.ok("task", "add", "Write the docs", "--scope", "directory")
    r = peers.ok("task", "assign", "t-2", "web", "--note", "you know the API")
    assert "mailed web" in r.out and "you know the API" in inbox(web_c)[0].text
    peers.ok("task", "claim", "t-2")  # a person may take it over; web is told
    assert "claimed by desk" in peers.ok("task", "show", "t-2").out
    assert "it is no longer yours" in inbox(web_c)[0].text
    peers.ok("task", "open", "t-2", "--note", "back to the pool")
    r = peers.ok("task", "note", "t-2", "check the README too")
    shown = peers.ok("task", "show", "t-2", "--json").json()
    assert [e["what"] for e in shown["history"]] == [
        "created",
        "assigned",
        "claimed",
        "released",
        "note",
    ]
    assert shown["history"][-1]["text"] == "check the README too"
    r = peers.ok("task", "cancel", "t-2", "--why", "docs moved to the wiki")
    assert r.out.startswith("t-2 cancelled")
    assert peers.ok("tasks", "--mine", "--all", "--json").json()[0]["id"] == "t-2"
    text = peers.ok("task", "show", "t-2").out
    assert "released" in text and "docs moved to the wiki" in text


def test_task_command_errors(peers: Peers, agent, desk: Path) -> None:
    agent("api", cwd=str(desk))
    assert "no task t-99" in peers.fails(1, "task", "done", "t-99")
    assert "a task id" in peers.fails(1, "task", "show", "t99x")
    assert "unknown state 'bogus'" in peers.fails(1, "tasks", "--state", "bogus")
    assert "unknown scope 'galaxy'" in peers.fails(1, "tasks", "--scope", "galaxy")
    assert "unknown scope 'galaxy'" in peers.fails(1, "task", "add", "x", "--scope", "galaxy")
    assert "did you mean: api?" in peers.fails(1, "task", "add", "x", "--to", "apu")
    peers.ok("task", "add", "x")
    assert "is open, not claimed" in peers.fails(1, "task", "done", "t-1")
    assert "the note is empty" in peers.fails(1, "task", "note", "t-1", " ")
    peers.ok("task", "cancel", "t-1")
    assert "is cancelled; a finished task" in peers.fails(1, "task", "claim", "t-1")


def test_decision_commands(peers: Peers, agent, desk: Path) -> None:
    api_c, _ = agent("api", cwd=str(desk))
    r = peers.ok("decide", "db.engine", "postgres", "--why", "we need jsonb", "--category", "arch")
    assert r.out.splitlines() == ["decided db.engine = postgres (version 1)", "  mailed api"]
    assert "db.engine = postgres" in inbox(api_c)[0].text
    peers.ok("decide", "db.engine", "sqlite", "--why", "one file")
    r = peers.ok("decisions")
    assert "db.engine [arch]" in r.out and "sqlite" in r.out and "postgres" not in r.out
    r = peers.ok("decisions", "--history")
    assert "v1" in r.out and "postgres" in r.out
    [found] = peers.ok("decisions", "--json", "--search", "ONE FILE").json()
    assert (found["key"], found["version"]) == ("db.engine", 2)
    assert peers.ok("decisions", "--category", "nope").out.strip() == "No decisions match."
    assert len(peers.ok("decisions", "--everywhere", "--json").json()) == 1
    r = peers.ok("revoke-decision", "db.engine", "--why", "undecided again")
    assert r.out.startswith("revoked db.engine")
    assert peers.ok("decisions", "--json").json() == []
    [gone] = peers.ok("decisions", "--revoked", "--json").json()
    assert gone["state"] == "revoked" and gone["rationale"] == "undecided again"


def test_decision_command_errors(peers: Peers) -> None:
    assert "say why with --why" in peers.fails(1, "decide", "k", "v")
    assert "a decision key" in peers.fails(1, "decide", "bad key", "v", "--why", "x")
    assert "say why with --why" in peers.fails(1, "revoke-decision", "k")
    assert "no decision 'k'" in peers.fails(1, "revoke-decision", "k", "--why", "x")
    assert "a category" in peers.fails(1, "decisions", "--category", "a b")


def test_group_boards_and_long_histories(peers: Peers, daemon: DaemonProc, agents, desk) -> None:
    """The person at the terminal sees each decision's group (a GROUP column), and a task
    with a long history says how much of it is shown."""
    import msgspec

    from peersd.client import session_registration

    with daemon.client("claude-code") as red:
        req = session_registration(red.settings, agents.spawn().pid, "claude-code", cwd=str(desk))
        red.call(msgspec.structs.replace(req, name="api", group="red"))
        red.request(p.PostDecision, key="db.engine", value="postgres", rationale="red plan")
        r = peers.ok("decisions")
        assert r.out.split("\n")[0].split()[-1] == "GROUP"
        assert "postgres" in r.out and r.out.split("\n")[1].split()[-1] == "red"
        [found] = peers.ok("decisions", "--json").json()
        assert found["group"] == "red"
        task = red.request(p.CreateTask, title="long one").task
        for i in range(55):
            red.request(p.UpdateTask, task=task.id, note=f"step {i}")
        r = peers.ok("task", "show", task.id)
        assert "(the last 50 of 56 history entries)" in r.out
        assert "): step 5\n" in r.out and "): step 4\n" not in r.out  # entries 7 to 56
        shown = peers.ok("task", "show", task.id, "--json").json()
        assert (len(shown["history"]), shown["history_total"]) == (50, 56)
