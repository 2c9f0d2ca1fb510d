"""Who a reply belongs to, against a real daemon (peersd/mailops.py ``extra``,
peersd/mailstore.py ``answers``).

A message's answer is a reply its recipient sent back to its sender: anyone else naming it
in ``reply_to`` neither becomes the answer nor joins its thread or takes its subject (a
subject from another group would leak), and an answer kind comes only from the peer the
request was sent to. A ``reply_to`` spelled with leading zeros names the same message.
"""

from __future__ import annotations

import msgspec
import pytest

from peersd import kinds
from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.errors import Code, PeersError

from .conftest import Agents, DaemonProc


def join(c: Client, agents: Agents, name: str, group: str) -> p.Peer:
    req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/tmp", name=name)
    return c.call(msgspec.structs.replace(req, group=group)).peer


@pytest.fixture
def crew(daemon: DaemonProc, agents: Agents):
    """red: ann, bob, fay; blue: cid, eve. Each on its own connection."""
    groups = {"ann": "red", "bob": "red", "fay": "red", "cid": "blue", "eve": "blue"}
    c = {name: daemon.client("claude-code") for name in groups}
    for name, group in groups.items():
        join(c[name], agents, name, group)
    yield c
    for x in c.values():
        x.close()


def refusal(c: Client, **fields: object) -> PeersError:
    with pytest.raises(PeersError) as e:
        c.request(p.Send, **fields)
    assert e.value.code == Code.BAD_REQUEST, e.value
    return e.value


def own(c: Client, msg_id: str) -> p.Message:
    (msg,) = [m for m in c.request(p.History).messages if m.id == msg_id]
    return msg


def answer_of(c: Client, msg_id: str) -> p.Answer | None:
    return c.request(p.MessageStatus, message_ids=[msg_id]).items[0].answer


def test_only_the_asked_peer_answers_an_approval_request(crew) -> None:
    ask = (
        crew["ann"]
        .request(
            p.Send,
            to="bob",
            text="may I drop the cache table?",
            typed=kinds.ApprovalRequest(action="drop cache", risk="a cold start"),
        )
        .message_id
    )
    approve = kinds.Approval(verdict="approve", reason="fine")
    # fay (same group, not asked) and ann (the asker) cannot answer it
    e = refusal(crew["fay"], to="ann", text="yes", reply_to=ask, typed=approve)
    assert f"{ask} was not sent to you" in e.message
    refusal(crew["ann"], to="bob", text="yes", reply_to=ask, typed=approve)
    assert answer_of(crew["ann"], ask) is None
    crew["bob"].request(
        p.Send,
        to="ann",
        text="go",
        reply_to=ask,
        typed=kinds.Approval(verdict="reject", reason="no"),
    )
    answer = answer_of(crew["ann"], ask)
    assert answer is not None and (answer.sender_name, answer.verdict) == ("bob", "reject")


def test_a_reply_from_outside_the_conversation_is_no_answer_and_joins_no_thread(crew) -> None:
    question = crew["ann"].request(p.Send, to="bob", text="which port?", subject="ports").message_id
    # fay was not in it: her reply is delivered, but is no answer, and starts a thread
    fay = crew["fay"].request(p.Send, to="ann", text="try 8080", reply_to=question).message_id
    assert answer_of(crew["ann"], question) is None
    mine = own(crew["fay"], fay)
    assert (mine.thread, mine.subject, mine.reply_to) == (fay, None, question)
    # the asker's follow-up is in the thread but is no answer either
    nudge = crew["ann"].request(p.Send, to="bob", text="?", reply_to=question).message_id
    assert (own(crew["ann"], nudge).thread, own(crew["ann"], nudge).subject) == (question, "ports")
    assert answer_of(crew["ann"], question) is None
    # bob's reply is the answer, in the thread, with the subject
    bob = crew["bob"].request(p.Send, to="ann", text="9000", reply_to=question).message_id
    answer = answer_of(crew["ann"], question)
    assert answer is not None and answer.message_id == bob
    assert (own(crew["bob"], bob).thread, own(crew["bob"], bob).subject) == (question, "ports")


def test_another_groups_subject_does_not_leak_through_reply_to(crew) -> None:
    secret = (
        crew["ann"]
        .request(p.Send, to="bob", text="the plan", subject="red launch at noon")
        .message_id
    )
    sent = crew["cid"].request(p.Send, to="eve", text="chatter", reply_to=secret).message_id
    msg = own(crew["cid"], sent)
    assert (msg.subject, msg.thread) == (None, sent)
    (got,) = crew["eve"].request(p.Claim).messages
    assert got.subject is None and got.thread == sent
    assert answer_of(crew["ann"], secret) is None


def test_a_reply_to_with_leading_zeros_names_the_same_message(crew) -> None:
    question = crew["ann"].request(p.Send, to="bob", text="which port?").message_id
    prefix, number = question.rsplit("-", 1)
    padded = f"{prefix}-00{number}"
    reply = crew["bob"].request(p.Send, to="ann", text="9000", reply_to=padded).message_id
    answer = answer_of(crew["ann"], question)
    assert answer is not None and answer.message_id == reply
    assert own(crew["bob"], reply).reply_to == question  # stored as the daemon writes ids
    (got,) = crew["ann"].request(p.Claim, reply_to=f"{prefix}-0{number}").messages
    assert got.id == reply and got.thread == question
