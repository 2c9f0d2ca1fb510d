"""Requests through the daemon's real connection, dispatch, group commit and events,
in this process: each test runs in milliseconds."""

from __future__ import annotations

import pytest

from peersd import protocol as p
from peersd.errors import Code, PeersError


def refused(code: str, call, *args, **kwargs) -> PeersError:
    with pytest.raises(PeersError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    return e.value


def test_a_request_before_register_is_not_registered(ring):
    c = ring.client()
    refused(Code.NOT_REGISTERED, c.call, p.Send, to="x", text="hi")


def test_send_claim_ack_and_the_events_that_follow(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    alice.call(p.Subscribe, kinds=["receipts"])
    bob.call(p.Subscribe, kinds=["mail"])
    sent = alice.call(p.Send, to="bob", text="which port?")
    (mail,) = bob.events()
    assert isinstance(mail, p.MailEvent)
    claimed = bob.call(p.Claim)
    assert [m.id for m in claimed.messages] == [sent.message_id]
    assert claimed.messages[0].sender_name == "alice"
    bob.call(p.Ack, message_ids=[sent.message_id], via="check")
    (receipt,) = alice.events()
    assert isinstance(receipt, p.ReceiptEvent)
    assert (receipt.message_id, receipt.state, receipt.via) == (
        sent.message_id,
        "delivered",
        "check",
    )


def test_a_failed_request_spoils_nothing_else_in_its_batch(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    # Three requests in one tick share one transaction; the middle one fails alone.
    answers = alice.pipeline(
        p.Send(id=101, to="bob", text="one"),
        p.Send(id=102, to="nobody-here", text="lost?"),
        p.Send(id=103, to="bob", text="three"),
    )
    assert isinstance(answers[101], p.Sent) and isinstance(answers[103], p.Sent)
    assert isinstance(answers[102], p.Error) and answers[102].code == Code.UNKNOWN_PEER
    texts = [m.text for m in bob.call(p.Claim).messages]
    assert texts == ["one", "three"]


def test_unknown_peer_says_did_you_mean(ring):
    alice = ring.agent(name="alice")
    ring.agent(name="frontend")
    e = refused(Code.UNKNOWN_PEER, alice.call, p.Send, to="frontnd", text="hi")
    assert "frontend" in e.candidates


def test_sending_to_yourself_is_refused(ring):
    alice = ring.agent(name="alice")
    refused(Code.BAD_REQUEST, alice.call, p.Send, to="alice", text="me?")


def test_blank_text_is_refused_and_nothing_is_stored(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    refused(Code.BAD_REQUEST, alice.call, p.Send, to="bob", text="  \n ")
    assert bob.call(p.Claim).messages == []


def test_rename_is_announced_to_watchers(ring):
    alice = ring.agent(name="alice")
    watcher = ring.client("cli")
    watcher.call(p.Subscribe, kinds=["peers"])
    alice.call(p.SetName, name="alicia")
    (event,) = watcher.events()
    assert isinstance(event, p.PeerRenamed) and (event.old, event.new) == ("alice", "alicia")


def test_broadcast_reaches_everyone_in_scope_but_the_sender(ring):
    alice = ring.agent(name="alice")
    others = [ring.agent(name=n) for n in ("bob", "carol")]
    reply = alice.call(p.Broadcast, scope="machine", text="rebasing main")
    assert sorted(s.to_name for s in reply.sent) == ["bob", "carol"]
    for c in others:
        assert [m.text for m in c.call(p.Claim).messages] == ["rebasing main"]


def test_release_puts_mail_back_at_once(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    sent = alice.call(p.Send, to="bob", text="later")
    bob.call(p.Claim)
    assert bob.call(p.Claim).messages == []
    assert bob.call(p.Release, message_ids=[sent.message_id]).released == [sent.message_id]
    assert [m.id for m in bob.call(p.Claim).messages] == [sent.message_id]


def test_unregister_leaves_mail_for_a_successor(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    sent = alice.call(p.Send, to="bob", text="still there?")
    bob.call(p.Unregister)
    refused(Code.NOT_REGISTERED, bob.call, p.Claim)
    successor = ring.agent(name="bob")
    assert [m.id for m in successor.call(p.Claim).messages] == [sent.message_id]


def test_status_counts_mail_by_state(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    alice.call(p.Send, to="bob", text="1")
    alice.call(p.Send, to="bob", text="2")
    bob.call(p.Claim, limit=1)
    st = ring.client("cli").call(p.Status)
    assert (st.messages["queued"], st.messages["leased"], st.peers_active) == (1, 1, 2)
