"""Tasks and the decisions board, black-box against a real daemon.

Every change is checked where a session would see it: the answer, the task's history, and
the mail each peer concerned finds in its mailbox (real rows, claimed and acked like any
mail). Gone assignees (successor and grace period), restarts, and every refusal with its
code and words.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from peersd import protocol as p
from peersd.client import Client
from peersd.errors import Code, PeersError

from .conftest import Agents, DaemonProc, register


def git_init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return Path(os.path.realpath(path))


class Team:
    """Peers by name, each on its own connection, in ``repo`` unless told otherwise."""

    def __init__(self, daemon: DaemonProc, agents: Agents, repo: Path) -> None:
        self.daemon = daemon
        self.agents = agents
        self.repo = repo
        self.clients: dict[str, Client] = {}
        self.peers: dict[str, p.Peer] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def add(self, name: str, kind: str = "claude-code", cwd: Path | None = None) -> Client:
        c = self.daemon.client(kind)
        proc = self.agents.spawn()
        self.peers[name] = register(c, proc.pid, kind, cwd=str(cwd or self.repo), name=name)
        self.clients[name] = c
        self.procs[name] = proc
        return c

    def __getitem__(self, name: str) -> Client:
        return self.clients[name]

    def mail(self, name: str) -> list[p.Message]:
        c = self.clients[name]
        msgs = c.request(p.Claim).messages
        if msgs:
            c.request(p.Ack, message_ids=[m.id for m in msgs], via="check")
        return msgs

    def gone(self, name: str) -> None:
        """End ``name``'s agent and let the sweep notice."""
        self.clients.pop(name).close()
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()
        with self.daemon.client() as c:
            assert self.peers[name].id in c.request(p.Sweep).gone

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_init(tmp_path / "shop")


@pytest.fixture
def team(daemon: DaemonProc, agents: Agents, repo: Path):
    t = Team(daemon, agents, repo)
    for name in ("lead", "api", "web"):
        t.add(name)
    yield t
    t.close()


def refused(code: str, call, *words: str) -> PeersError:
    with pytest.raises(PeersError) as e:
        call()
    assert e.value.code == code, e.value
    for w in words:
        assert w in e.value.message, e.value.message
    return e.value


# --------------------------------------------------------------------------- tasks


def test_assigned_task_lifecycle_mails_each_party(team: Team) -> None:
    made = team["lead"].request(
        p.CreateTask, title="Fix the login redirect", description="after OAuth", assignee="api"
    )
    task = made.task
    assert task.id.startswith("t-") and task.state == "open"
    assert (task.assignee_name, task.creator_name, task.scope) == ("api", "lead", "repo")
    assert task.repo == str(team.repo) and made.notified == ["api"]
    [assigned] = team.mail("api")
    assert assigned.sender_name == "lead"
    for words in (task.id, "Fix the login redirect", "after OAuth", "update_task", "claimed"):
        assert words in assigned.text
    assert team.mail("web") == []  # nobody else hears of it

    claimed = team["api"].request(p.UpdateTask, task=task.id, state="claimed").task
    assert claimed.state == "claimed"
    [note] = team.mail("lead")
    assert "api claimed your task" in note.text and note.sender_name == "api"

    done = team["api"].request(
        p.UpdateTask, task=task.id, state="done", result="redirect kept ?next="
    )
    assert done.task.state == "done" and done.task.result == "redirect kept ?next="
    assert done.notified == ["lead"]
    [finished] = team.mail("lead")
    assert "marked task" in finished.text and "redirect kept ?next=" in finished.text
    assert team.mail("api") == []  # the actor is never mailed its own change
    history = [(e.what, e.state, e.actor_name) for e in done.task.history]
    assert history == [
        ("created", "open", "lead"),
        ("claimed", "claimed", "api"),
        ("done", "done", "api"),
    ]
    assert done.task.history[-1].text == ""


def test_an_unassigned_task_is_taken_by_a_peer_in_scope(team: Team, tmp_path: Path) -> None:
    other = git_init(tmp_path / "elsewhere")
    team.add("far", cwd=other)
    task = team["lead"].request(p.CreateTask, title="Update the changelog").task
    assert task.assignee is None
    assert team.mail("api") == [] and team.mail("web") == []
    refused(
        Code.FORBIDDEN,
        lambda: team["far"].request(p.UpdateTask, task=task.id, state="claimed"),
        f"repository {team.repo}",
    )
    # The number alone names the task too.
    taken = team["web"].request(p.UpdateTask, task=task.id[2:], state="claimed").task
    assert (taken.state, taken.assignee_name) == ("claimed", "web")
    assert "web claimed your task" in team.mail("lead")[0].text
    refused(
        Code.TASK_STATE,
        lambda: team["api"].request(p.UpdateTask, task=task.id, state="claimed"),
        "already claimed by web",
    )
    # Claiming one's own claimed task again changes nothing and mails nobody.
    again = team["web"].request(p.UpdateTask, task=task.id, state="claimed")
    assert again.task.state == "claimed" and again.notified == []
    # A machine-wide task is open to the far one.
    wide = team["lead"].request(p.CreateTask, title="Rotate the keys", scope="machine").task
    assert team["far"].request(p.UpdateTask, task=wide.id, state="claimed").task.state == "claimed"


def test_giving_back_reassigning_and_cancelling(team: Team) -> None:
    task = team["lead"].request(p.CreateTask, title="Split app.py", assignee="api").task
    team.mail("api")
    team["api"].request(p.UpdateTask, task=task.id, state="claimed")
    team.mail("lead")
    back = team["api"].request(p.UpdateTask, task=task.id, state="open", note="no time")
    assert (back.task.state, back.task.assignee) == ("open", None)
    [released] = team.mail("lead")
    assert "gave task" in released.text and "no time" in released.text

    moved = team["lead"].request(p.UpdateTask, task=task.id, assignee="web")
    assert (moved.task.assignee_name, moved.task.state) == ("web", "open")
    assert moved.notified == ["web"]
    assert "assigned you task" in team.mail("web")[0].text
    team["web"].request(p.UpdateTask, task=task.id, state="claimed")
    team.mail("lead")
    # Reassigning mails the new assignee and the previous one.
    again = team["lead"].request(p.UpdateTask, task=task.id, assignee="api", note="web is busy")
    assert sorted(again.notified) == ["api", "web"]
    assert "no longer yours" in team.mail("web")[0].text
    assert "web is busy" in team.mail("api")[0].text

    cancelled = team["lead"].request(
        p.UpdateTask, task=task.id, state="cancelled", result="not needed after all"
    )
    assert cancelled.task.state == "cancelled" and cancelled.notified == ["api"]
    told = team.mail("api")[0].text
    assert "cancelled task" in told and "Stop working on it" in told
    assert "not needed after all" in told


def test_notes_are_history_and_mail(team: Team) -> None:
    task = team["lead"].request(p.CreateTask, title="Bump deps", assignee="api").task
    team.mail("api")
    noted = team["web"].request(p.UpdateTask, task=task.id, note="pin httpx below 1.0")
    assert sorted(noted.notified) == ["api", "lead"]
    assert noted.task.history[-1].what == "note"
    assert noted.task.history[-1].text == "pin httpx below 1.0"
    assert "pin httpx below 1.0" in team.mail("lead")[0].text
    info = team["web"].request(p.TaskInfo, task=task.id).task
    assert [e.what for e in info.history] == ["created", "note"]


def test_illegal_changes_are_clear_errors(team: Team) -> None:
    task = team["lead"].request(p.CreateTask, title="Write docs", assignee="api").task
    c = team["web"]
    refused(
        Code.FORBIDDEN,
        lambda: c.request(p.UpdateTask, task=task.id, state="claimed"),
        "assigned to api",
    )
    refused(
        Code.TASK_STATE,
        lambda: team["api"].request(p.UpdateTask, task=task.id, state="done"),
        "is open, not claimed",
        "claim it first",
    )
    refused(
        Code.FORBIDDEN,
        lambda: c.request(p.UpdateTask, task=task.id, assignee="web"),
        "only the creator (lead)",
    )
    refused(
        Code.FORBIDDEN,
        lambda: c.request(p.UpdateTask, task=task.id, state="cancelled"),
        "only task",
    )
    refused(Code.BAD_REQUEST, lambda: c.request(p.UpdateTask, task=task.id), "nothing to change")
    refused(
        Code.BAD_REQUEST,
        lambda: c.request(p.UpdateTask, task=task.id, note="x", result="y"),
        "result goes with",
    )
    refused(
        Code.UNKNOWN_TASK, lambda: c.request(p.UpdateTask, task="t-999", note="x"), "no task t-999"
    )
    refused(Code.UNKNOWN_TASK, lambda: c.request(p.TaskInfo, task="t-999"), "no task t-999")
    refused(
        Code.UNKNOWN_PEER,
        lambda: team["lead"].request(p.CreateTask, title="x", assignee="apu"),
        "no peer named 'apu'",
    )
    refused(
        Code.BAD_REQUEST, lambda: team["lead"].request(p.CreateTask, title="   "), "title is empty"
    )
    refused(Code.BAD_REQUEST, lambda: c.request(p.TaskInfo, task="task-1"), "a task id")
    refused(Code.TOO_LARGE, lambda: c.request(p.CreateTask, title="x" * 201), "title")
    team["lead"].request(p.UpdateTask, task=task.id, state="cancelled")
    refused(
        Code.TASK_STATE,
        lambda: team["lead"].request(p.UpdateTask, task=task.id, state="open"),
        "is cancelled",
        "create a new task",
    )
    refused(
        Code.TASK_STATE, lambda: c.request(p.UpdateTask, task=task.id, note="late"), "is cancelled"
    )
    with team.daemon.client() as anon:
        refused(Code.NOT_REGISTERED, lambda: anon.request(p.CreateTask, title="x"), "register")


def test_assigning_and_claiming_at_once_keeps_the_new_assignee(team: Team) -> None:
    """``update_task(assignee=X, state="claimed")``: X holds the task claimed (not the peer
    making the change), and is told it is working on it."""
    task = team["lead"].request(p.CreateTask, title="Ship the fix", assignee="web").task
    team.mail("web")
    both = team["lead"].request(p.UpdateTask, task=task.id, assignee="api", state="claimed")
    assert (both.task.state, both.task.assignee_name) == ("claimed", "api")
    assert [(e.what, e.assignee_name) for e in both.task.history[1:]] == [
        ("assigned", "api"),
        ("claimed", "api"),
    ]
    assert sorted(both.notified) == ["api", "web"]
    [told] = team.mail("api")
    assert "lead assigned you task" in told.text and "marked it claimed" in told.text
    assert 'state="done"' in told.text
    [previous] = team.mail("web")
    assert "no longer yours" in previous.text
    # A person at the CLI doing it for someone else's task: the creator hears who has it.
    desk = team.add("desk", kind="cli")
    theirs = team["web"].request(p.CreateTask, title="Third").task
    desk.request(p.UpdateTask, task=theirs.id, assignee="api", state="claimed")
    [creator] = team.mail("web")
    assert f"desk marked your task {theirs.id}" in creator.text
    assert "claimed by api" in creator.text
    # Already the assignee of an open task: claimed for it, not taken over by the actor.
    other = team["lead"].request(p.CreateTask, title="Second", assignee="web").task
    team.mail("web")
    same = team["lead"].request(p.UpdateTask, task=other.id, assignee="web", state="claimed")
    assert (same.task.state, same.task.assignee_name) == ("claimed", "web")
    # And again: no change, no error.
    again = team["lead"].request(p.UpdateTask, task=other.id, assignee="web", state="claimed")
    assert (again.task.state, again.task.assignee_name) == ("claimed", "web")


def test_answers_fit_a_frame_and_notes_are_capped(make_daemon, agents: Agents, repo) -> None:
    """Long tasks never make an answer too large: a listing cuts descriptions and leaves out
    the oldest tasks (``omitted``), a task carries its last history entries and how many
    there are, and past ``MAX_NOTES`` a note is refused before anything is saved, so a
    refused answer never follows a saved change (a retry cannot duplicate a note)."""
    from peersd import handlers as _handlers  # noqa: F401 - loads peersd.tasks as peersd does
    from peersd.tasks import LISTING_TEXT, MAX_NOTES
    from peersd.workstate import HISTORY_SHOWN

    daemon = make_daemon(max_frame="200000")  # budget: 200000 - 65536 bytes
    team = Team(daemon, agents, repo)
    try:
        c = team.add("lead")
        wide = "\U0001f600"  # four bytes in UTF-8
        for i in range(60):
            c.request(p.CreateTask, title=f"{i} " + wide * 190, description=wide * 8000)
        listed = c.request(p.ListTasks, limit=1000)
        assert listed.omitted > 0 and len(listed.tasks) + listed.omitted == 60
        assert listed.tasks[0].title.startswith("59 ")  # newest first, the oldest left out
        assert len(listed.tasks[0].description) == LISTING_TEXT
        assert listed.tasks[0].description.endswith("…")
        whole = c.request(p.TaskInfo, task=listed.tasks[0].id).task
        assert whole.description == wide * 8000

        task = c.request(p.CreateTask, title="noisy").task
        for i in range(8):  # 32 KB each: the whole history no longer fits
            answer = c.request(p.UpdateTask, task=task.id, note=f"{i}" + wide * 7999).task
            assert answer.history_total == i + 2
            assert answer.history[-1].text.startswith(f"{i}")
        assert len(answer.history) < 9
        info = c.request(p.TaskInfo, task=task.id).task
        assert info.history_total == 9 and info.history[-1].text.startswith("7")

        for i in range(MAX_NOTES - 8):
            answer = c.request(p.UpdateTask, task=task.id, note=f"n{i}").task
        assert answer.history_total == MAX_NOTES + 1
        assert len(answer.history) == HISTORY_SHOWN
        assert answer.history[-1].text == f"n{MAX_NOTES - 9}"
        refused(
            Code.TOO_LARGE,
            lambda: c.request(p.UpdateTask, task=task.id, note="one more"),
            f"{MAX_NOTES} notes",
        )
        assert c.request(p.TaskInfo, task=task.id).task.history_total == MAX_NOTES + 1
        done = c.request(p.UpdateTask, task=task.id, state="cancelled", note="enough").task
        assert done.state == "cancelled" and done.history_total == MAX_NOTES + 2
    finally:
        team.close()


def test_assigning_to_a_gone_session_is_refused(team: Team) -> None:
    team.gone("web")
    refused(
        Code.BAD_REQUEST,
        lambda: team["lead"].request(p.CreateTask, title="x", assignee="web"),
        "is gone",
    )


def test_list_tasks_filters(team: Team, tmp_path: Path) -> None:
    other = git_init(tmp_path / "other")
    team.add("far", cwd=other)
    a = team["lead"].request(p.CreateTask, title="A", assignee="api").task
    b = team["far"].request(p.CreateTask, title="B").task
    c = team["lead"].request(p.CreateTask, title="C").task
    team["lead"].request(p.UpdateTask, task=c.id, state="claimed")
    team["lead"].request(p.UpdateTask, task=c.id, state="done")

    def ids(client: Client, **kw: object) -> list[str]:
        return [t.id for t in client.request(p.ListTasks, **kw).tasks]

    assert ids(team["api"]) == [b.id, a.id]  # newest first; done ones left out
    assert ids(team["api"], final=True) == [c.id, b.id, a.id]
    assert ids(team["api"], state="done") == [c.id]
    assert ids(team["api"], mine=True) == [a.id]
    assert ids(team["api"], scope="repo") == [a.id]
    assert ids(team["far"], scope="repo") == [b.id]
    assert ids(team["api"], scope="directory", final=True) == [c.id, a.id]
    with team.daemon.client() as anon:
        assert ids(anon, scope="all") == [b.id, a.id]
        refused(Code.NOT_REGISTERED, lambda: anon.request(p.ListTasks, mine=True))


def test_a_gone_assignees_task_passes_to_its_successor(team: Team) -> None:
    task = team["lead"].request(p.CreateTask, title="Migrate the db", assignee="api").task
    team["api"].request(p.UpdateTask, task=task.id, state="claimed")
    team.gone("api")
    assert team["lead"].request(p.TaskInfo, task=task.id).task.assignee_name == "api"
    heir = team.add("api")  # a new session takes the name: the mail and the task follow
    mine = heir.request(p.ListTasks, mine=True).tasks
    assert [(t.id, t.state, t.assignee) for t in mine] == [
        (task.id, "claimed", team.peers["api"].id)
    ]
    texts = [m.text for m in team.mail("api")]
    assert any("assigned you task" in t for t in texts)  # the unread original
    assert any("You took over task" in t and "Migrate the db" in t for t in texts)
    history = heir.request(p.TaskInfo, task=task.id).task.history
    assert history[-1].what == "passed"


def test_a_session_renamed_to_the_gone_name_takes_its_tasks(team: Team) -> None:
    task = team["lead"].request(p.CreateTask, title="Tune the cache", assignee="api").task
    team.gone("api")
    renamed = team["web"].request(p.SetName, name="api")
    assert renamed.inherited == 2  # the unread assignment and the "took over" notice
    mine = team["web"].request(p.ListTasks, mine=True).tasks
    assert [(t.id, t.state, t.assignee) for t in mine] == [(task.id, "open", team.peers["web"].id)]
    assert any("You took over task" in m.text for m in team.mail("web"))


def test_a_gone_assignees_task_reopens_after_the_grace(make_daemon, agents: Agents, repo) -> None:
    daemon = make_daemon(task_grace="0.5", sweep_interval="3600")
    team = Team(daemon, agents, repo)
    try:
        team.add("lead")
        team.add("api")
        task = team["lead"].request(p.CreateTask, title="Cache warmup", assignee="api").task
        team["api"].request(p.UpdateTask, task=task.id, state="claimed")
        team.mail("lead")
        team.gone("api")
        assert team["lead"].request(p.TaskInfo, task=task.id).task.state == "claimed"
        time.sleep(0.6)
        with daemon.client() as c:
            c.request(p.Sweep)
        back = team["lead"].request(p.TaskInfo, task=task.id).task
        assert (back.state, back.assignee) == ("open", None)
        assert back.history[-1].what == "reopened"
        [notice] = team.mail("lead")
        assert "is open again" in notice.text and "api is gone" in notice.text
        assert notice.sender_name == "api"
        # A later sweep does nothing more.
        with daemon.client() as c:
            c.request(p.Sweep)
        assert team.mail("lead") == []
    finally:
        team.close()


def test_tasks_survive_a_restart(make_daemon, agents: Agents, repo) -> None:
    daemon = make_daemon()
    team = Team(daemon, agents, repo)
    team.add("lead")
    team.add("api")
    task = team["lead"].request(p.CreateTask, title="Keep me", assignee="api").task
    team["lead"].request(p.UpdateTask, task=task.id, note="first note")
    team.close()
    daemon.stop()
    daemon.start()
    with daemon.client() as c:
        kept = c.request(p.TaskInfo, task=task.id).task
    assert (kept.title, kept.assignee_name) == ("Keep me", "api")
    assert [e.what for e in kept.history] == ["created", "note"]


# --------------------------------------------------------------------------- decisions


def test_post_decision_versions_and_announces_once(team: Team, tmp_path: Path) -> None:
    team.add("far", cwd=git_init(tmp_path / "far"))
    first = team["lead"].request(
        p.PostDecision,
        key="db.engine",
        value="postgres",
        rationale="we need jsonb",
        category="arch",
    )
    d1 = first.decision
    assert (d1.version, d1.state, d1.by_name, d1.place) == (1, "active", "lead", str(team.repo))
    assert sorted(first.notified) == ["api", "web"]  # the repository's peers, not far's
    [told] = team.mail("api")
    assert "db.engine = postgres" in told.text and "we need jsonb" in told.text
    assert team.mail("far") == [] and team.mail("lead") == []
    assert len(team.mail("web")) == 1

    second = (
        team["api"]
        .request(p.PostDecision, key="db.engine", value="sqlite", rationale="one file is enough")
        .decision
    )
    assert (second.version, second.value, second.category) == (2, "sqlite", "arch")
    assert "replaces version 1: postgres" in team.mail("web")[0].text
    assert len(team.mail("web")) == 0  # announced once

    found = team["web"].request(p.QueryDecisions, key="db.engine", history=True).decisions
    assert [(x.value, x.version) for x in found] == [("sqlite", 2)]
    assert [(v.version, v.value, v.by_name, v.rationale) for v in found[0].history] == [
        (1, "postgres", "lead", "we need jsonb")
    ]
    # Another repository has a board of its own.
    assert team["far"].request(p.QueryDecisions).decisions == []
    assert len(team["far"].request(p.QueryDecisions, everywhere=True).decisions) == 1


def test_query_by_category_and_text(team: Team) -> None:
    c = team["lead"]
    c.request(p.PostDecision, key="api.port", value="8080", rationale="ops asked", category="ops")
    c.request(p.PostDecision, key="style.quotes", value="double", rationale="ruff default")
    c.request(p.PostDecision, key="api.auth", value="JWT", rationale="stateless 100%_sure")

    def keys(**kw: object) -> list[str]:
        return [x.key for x in c.request(p.QueryDecisions, **kw).decisions]

    assert keys() == ["api.auth", "style.quotes", "api.port"]
    assert keys(category="OPS") == ["api.port"]
    assert keys(text="RUFF") == ["style.quotes"]
    assert keys(text="api.") == ["api.auth", "api.port"]
    assert keys(text="100%_") == ["api.auth"]  # LIKE wildcards are taken literally
    assert keys(text="0%x") == []


def test_revoke_decision(team: Team) -> None:
    c = team["lead"]
    c.request(p.PostDecision, key="cache", value="redis", rationale="speed")
    team.mail("api")
    revoked = team["api"].request(p.RevokeDecision, key="cache", reason="no redis in prod")
    assert (revoked.decision.state, revoked.decision.version) == ("revoked", 2)
    assert sorted(revoked.notified) == ["lead", "web"]
    assert "revoked the decision cache" in team.mail("lead")[0].text
    assert c.request(p.QueryDecisions).decisions == []
    [shown] = c.request(p.QueryDecisions, revoked=True, history=True).decisions
    assert shown.rationale == "no redis in prod" and shown.history[0].value == "redis"
    refused(
        Code.UNKNOWN_DECISION,
        lambda: c.request(p.RevokeDecision, key="cache", reason="x"),
        "already revoked",
    )
    refused(
        Code.UNKNOWN_DECISION,
        lambda: c.request(p.RevokeDecision, key="cachee", reason="x"),
        "did you mean: cache",
    )
    # Posting it again brings it back as version 3.
    again = c.request(p.PostDecision, key="cache", value="memcached", rationale="ops has it")
    assert again.decision.version == 3 and again.decision.state == "active"


def test_decision_bad_input(team: Team) -> None:
    c = team["lead"]
    refused(
        Code.BAD_REQUEST,
        lambda: c.request(p.PostDecision, key="bad key", value="v", rationale="r"),
        "a decision key",
    )
    refused(
        Code.TOO_LARGE,
        lambda: c.request(p.PostDecision, key="k", value="v" * 2001, rationale="r"),
        "value",
    )
    refused(
        Code.BAD_REQUEST,
        lambda: c.request(p.PostDecision, key="k", value="v", rationale=""),
        "rationale",
    )
    refused(
        Code.BAD_REQUEST,
        lambda: c.request(p.PostDecision, key="k", value="v", rationale="  "),
        "blank",
    )
    refused(
        Code.BAD_REQUEST,
        lambda: c.request(p.PostDecision, key="k", value="v", rationale="r", category="a b"),
        "a category",
    )
    refused(Code.BAD_REQUEST, lambda: c.request(p.RevokeDecision, key="k", reason=" "), "blank")
    with team.daemon.client() as anon:
        refused(Code.NOT_REGISTERED, lambda: anon.request(p.QueryDecisions), "register")


# --------------------------------------------------------------------------- upgrade


def test_a_database_of_the_previous_schema_with_data_upgrades(
    make_daemon, agents: Agents, repo: Path
) -> None:
    """A database at the schema before this migration (what the last release wrote), with
    peers, mail, a claim and an audit row in it, opens in this daemon: nothing is lost, the
    old mail still passes to a successor, and tasks and decisions work on top of it."""
    from peersd import identity, schema, workstate

    daemon = make_daemon(start=False)
    path = daemon.settings.db_path
    before = schema.MIGRATIONS.index(workstate.MIGRATION)
    machine = identity.machine_id(path.parent)
    web_agent = agents.spawn()
    db = schema.open_database(path, "normal")
    for number, script in enumerate(schema.MIGRATIONS[:before], start=1):
        with db:
            db.execute(script)
            db.pragma("user_version", number)
    start = identity.process_start(web_agent.pid)
    with db:
        for peer_id, name, state, pid, agent_start in (
            ("p-0000000a", "api", "gone", 1, 1.0),
            ("p-0000000b", "web", "active", web_agent.pid, start),
        ):
            db.execute(
                "INSERT INTO peers(id, name, name_key, client, state, machine_id, host, cwd, "
                "agent_pid, agent_start, registered_at, last_seen, receive, git_root, gone_at, "
                "note, last_read) VALUES (?, ?, ?, 'claude-code', ?, ?, 'h', ?, ?, ?, 1, 1, "
                "'hook', ?, ?, 'old note', NULL)",
                (
                    peer_id,
                    name,
                    name,
                    state,
                    machine,
                    str(repo),
                    pid,
                    agent_start,
                    str(repo),
                    1.0 if state == "gone" else None,
                ),
            )
        db.execute(
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, created, "
            "state, expires_at) VALUES ('p-0000000b', 'web', 'p-0000000a', 'api', 'from v4', "
            "?, 'queued', ?)",
            (time.time(), time.time() + 3600),
        )
        db.execute(
            "INSERT INTO claims VALUES ('p-0000000b', ?, ?, 1, 'kept', ?, ?)",
            (str(repo / "src"), str(repo), time.time(), time.time() + 3600),
        )
        db.execute("INSERT INTO audit(at, actor, action, detail) VALUES (1, 'x', 'kill', 'd')")
    db.close()

    daemon.start()
    team = Team(daemon, agents, repo)
    try:
        with daemon.client() as c:
            assert c.request(p.Status).schema == len(schema.MIGRATIONS)
            assert [r.action for r in c.request(p.Audit).records] == ["kill"]
            holders = c.request(p.ListFiles).holders
            assert [(h.name, h.reason) for h in holders] == [("web", "kept")]
        heir = team.add("api")  # the old api's mail passes to its successor, as before
        assert [m.text for m in team.mail("api")] == ["from v4"]
        task = heir.request(p.CreateTask, title="after the upgrade", assignee="web").task
        assert task.id == "t-1" and task.assignee == "p-0000000b"
        posted = heir.request(p.PostDecision, key="k", value="v", rationale="r")
        assert posted.decision.version == 1 and posted.notified == ["web"]
        assert posted.decision.group is None  # the no-group board of the new column
    finally:
        team.close()


def test_a_busy_session_gets_its_task_from_the_hook(daemon: DaemonProc, agents: Agents, repo):
    """Task mail is mail: a working Claude Code session gets it after its next tool call
    (PostToolUse), with the tool call that claims it, and it is then delivered."""
    import json

    from .test_hook import SESSION, claude_input, run_hook

    team = Team(daemon, agents, repo)
    try:
        team.add("lead")
        c = daemon.client("claude-code")
        team.clients["api"] = c
        register(
            c, agents.spawn().pid, "claude-code", cwd=str(repo), name="api", session_id=SESSION
        )
        task = team["lead"].request(p.CreateTask, title="Fix CI", assignee="api").task
        done = run_hook(daemon, claude_input("PostToolUse"))
        assert done.returncode == 0, done.stderr
        context = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
        assert f"assigned you task {task.id}" in context and "Fix CI" in context
        assert f'update_task(task_id="{task.id}", state="claimed")' in context
        assert team.mail("api") == []  # delivered by the hook: nothing waits any more
    finally:
        team.close()
