"""Tasks and decisions through the in-process daemon: every state change against every
role, atomic refusals, full queues and rate limits, in milliseconds."""

from __future__ import annotations

import time

import pytest

from peersd import protocol as p
from peersd import tasks
from peersd.errors import Code, PeersError

STATES = ("open", "claimed", "done", "cancelled")


def refused(code: str, call, *args, **kwargs) -> PeersError:
    with pytest.raises(PeersError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    return e.value


def drain(*clients) -> None:
    for c in clients:
        msgs = c.call(p.Claim).messages
        if msgs:
            c.call(p.Ack, message_ids=[m.id for m in msgs], via="check")


def make(ring, state: str):
    """lead's task for dev, brought to ``state``; (lead, dev, other, person, task id)."""
    lead, dev = ring.agent(name="lead"), ring.agent(name="dev")
    other, person = ring.agent(name="other"), ring.client("cli")
    person.register(name="person", client="cli", agent_pid=99_999, agent_start=1.0)
    task = lead.call(p.CreateTask, title="t", assignee="dev").task.id
    if state != "open":
        dev.call(p.UpdateTask, task=task, state="claimed")
    if state in ("done", "cancelled"):
        dev.call(p.UpdateTask, task=task, state=state)
    drain(lead, dev, other, person)
    return lead, dev, other, person, task


# (state now, state asked, who asks) -> the outcome: a state, or the error code
EXPECTED = {
    ("open", "claimed", "dev"): "claimed",
    ("open", "claimed", "lead"): "claimed",
    ("open", "claimed", "person"): "claimed",
    ("open", "claimed", "other"): Code.FORBIDDEN,
    ("open", "done", "dev"): Code.TASK_STATE,
    ("open", "done", "lead"): Code.TASK_STATE,
    ("open", "cancelled", "dev"): "cancelled",
    ("open", "cancelled", "lead"): "cancelled",
    ("open", "cancelled", "person"): "cancelled",
    ("open", "cancelled", "other"): Code.FORBIDDEN,
    ("open", "open", "dev"): "open",  # declined: unassigned again
    ("open", "open", "lead"): "open",
    ("open", "open", "other"): Code.FORBIDDEN,
    ("claimed", "open", "dev"): "open",
    ("claimed", "open", "lead"): "open",
    ("claimed", "open", "other"): Code.FORBIDDEN,
    ("claimed", "claimed", "dev"): "claimed",  # no change
    ("claimed", "claimed", "other"): Code.TASK_STATE,
    ("claimed", "done", "dev"): "done",
    ("claimed", "done", "lead"): "done",
    ("claimed", "done", "person"): "done",
    ("claimed", "done", "other"): Code.FORBIDDEN,
    ("claimed", "cancelled", "dev"): "cancelled",
    ("claimed", "cancelled", "other"): Code.FORBIDDEN,
    **{
        (final, asked, who): Code.TASK_STATE
        for final in ("done", "cancelled")
        for asked in STATES
        for who in ("dev", "lead", "person", "other")
        if asked != final
    },
    ("done", "done", "dev"): Code.TASK_STATE,
    ("cancelled", "cancelled", "lead"): Code.TASK_STATE,
}


@pytest.mark.parametrize(("now", "asked", "who"), sorted(EXPECTED))
def test_every_transition(ring, now: str, asked: str, who: str) -> None:
    lead, dev, other, person, task = make(ring, now)
    actor = {"lead": lead, "dev": dev, "other": other, "person": person}[who]
    before = lead.call(p.TaskInfo, task=task).task
    outcome = EXPECTED[(now, asked, who)]
    if outcome in STATES:
        after = actor.call(p.UpdateTask, task=task, state=asked).task
        assert after.state == outcome
        if now == asked == "claimed":
            assert after.history == before.history  # nothing recorded
        if asked == "open":
            assert after.assignee is None and after.history[-1].what == "released"
    else:
        e = refused(outcome, actor.call, p.UpdateTask, task=task, state=asked)
        if outcome == Code.TASK_STATE and now in ("done", "cancelled"):
            assert f"is {now}" in e.message
        assert lead.call(p.TaskInfo, task=task).task == before  # nothing changed


def test_a_refused_part_undoes_the_whole_request(ring) -> None:
    lead, dev, other, person, task = make(ring, "claimed")
    before = lead.call(p.TaskInfo, task=task).task
    # Reassigning to other is allowed for lead; claiming it for lead then is not (other's).
    refused(Code.FORBIDDEN, other.call, p.UpdateTask, task=task, assignee="other", state="done")
    # lead reassigns to other and asks done: done needs claimed, refused: no reassignment.
    refused(Code.TASK_STATE, lead.call, p.UpdateTask, task=task, assignee="other", state="done")
    assert lead.call(p.TaskInfo, task=task).task == before
    assert other.call(p.Claim).messages == []  # no mail from the undone reassignment


def test_a_failed_update_spoils_nothing_else_in_its_batch(ring) -> None:
    lead, dev = ring.agent(name="lead"), ring.agent(name="dev")
    answers = lead.pipeline(
        p.CreateTask(id=11, title="one", assignee="dev"),
        p.UpdateTask(id=12, task="t-1", state="done"),
        p.CreateTask(id=13, title="two", assignee="dev"),
    )
    assert isinstance(answers[11], p.TaskResult) and isinstance(answers[13], p.TaskResult)
    assert isinstance(answers[12], p.Error) and answers[12].code == Code.TASK_STATE
    assert len(dev.call(p.Claim).messages) == 2


def test_a_full_queue_is_skipped_and_named(ring) -> None:
    lead = ring.agent(name="lead")
    ring.agent(name="dev")
    ring.daemon.settings.queue_limit = 1
    lead.call(p.Send, to="dev", text="fills the queue")
    made = lead.call(p.CreateTask, title="t", assignee="dev")
    assert made.notified == [] and made.skipped == ["dev: queue full (1 unread)"]
    assert made.task.assignee_name == "dev"  # the task stands; list_tasks shows it
    posted = lead.call(p.PostDecision, key="k", value="v", rationale="r")
    assert posted.skipped == ["dev: queue full (1 unread)"]


def test_the_rate_limit_refuses_the_whole_change(ring) -> None:
    lead = ring.agent(name="lead")
    ring.agent(name="dev")
    ring.daemon.rate_limits.rate = 0.001
    ring.daemon.rate_limits.burst = 1
    lead.call(p.Send, to="dev", text="the one token")
    refused(Code.RATE_LIMITED, lead.call, p.CreateTask, title="t", assignee="dev")
    assert lead.call(p.ListTasks, final=True).tasks == []
    refused(Code.RATE_LIMITED, lead.call, p.PostDecision, key="k", value="v", rationale="r")
    assert lead.call(p.QueryDecisions, revoked=True).decisions == []


def test_a_creator_may_have_only_so_many_live_tasks(ring, monkeypatch) -> None:
    monkeypatch.setattr(tasks, "MAX_LIVE_TASKS", 2)
    lead = ring.agent(name="lead")
    for n in range(2):
        lead.call(p.CreateTask, title=f"t{n}")
    refused(Code.BAD_REQUEST, lead.call, p.CreateTask, title="one too many")
    lead.call(p.UpdateTask, task="t-1", state="cancelled")
    lead.call(p.CreateTask, title="room again")


def test_only_tasks_of_gone_assignees_reopen(ring) -> None:
    lead, dev, quitter = ring.agent(name="lead"), ring.agent(name="dev"), ring.agent(name="q")
    alive = lead.call(p.CreateTask, title="alive", assignee="dev").task.id
    dev.call(p.UpdateTask, task=alive, state="claimed")
    left = lead.call(p.CreateTask, title="left", assignee="q").task.id
    quitter.call(p.UpdateTask, task=left, state="claimed")
    finished = lead.call(p.CreateTask, title="finished", assignee="q").task.id
    quitter.call(p.UpdateTask, task=finished, state="claimed")
    quitter.call(p.UpdateTask, task=finished, state="done")
    drain(lead)
    quitter.call(p.Unregister)
    soon = time.time() + 1  # within task_grace: nothing yet
    later = time.time() + ring.daemon.settings.task_grace + 1
    with ring.store.transaction():
        assert tasks.reopen_orphans(ring.daemon, soon) == []
        effects = tasks.reopen_orphans(ring.daemon, later)
    assert len(effects) == 4  # one mail to lead: its ev_mail, wake, overseer, ev_traffic
    states = {t: lead.call(p.TaskInfo, task=t).task.state for t in (alive, left, finished)}
    assert states == {alive: "claimed", left: "open", finished: "done"}
    assert "is open again" in lead.call(p.Claim).messages[0].text
    with ring.store.transaction():
        assert tasks.reopen_orphans(ring.daemon, later) == []  # once


def test_each_party_is_told_in_its_own_words(ring) -> None:
    lead, dev = ring.agent(name="lead"), ring.agent(name="dev")
    task = lead.call(p.CreateTask, title="t", assignee="dev").task.id
    dev.call(p.UpdateTask, task=task, state="claimed")
    drain(lead, dev)
    lead.call(p.UpdateTask, task=task, state="open", note="I will do it myself")
    [told] = dev.call(p.Claim).messages
    assert 'took task t-1 "t" back from you' in told.text
    assert "Stop working on it" in told.text and "I will do it myself" in told.text
    dev.call(p.UpdateTask, task=task, state="claimed")
    drain(lead, dev)
    dev.call(p.UpdateTask, task=task, state="open")
    [told] = lead.call(p.Claim).messages
    assert 'dev gave task t-1 "t" back: it is open to anyone' in told.text
