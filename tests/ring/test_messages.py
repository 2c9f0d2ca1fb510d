"""Typed requests, threads, reactions, snapshots and search through the daemon's real
request handling (docs/coordination.md "Typed requests, threads, search")."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest

from peersd import kinds
from peersd import protocol as p
from peersd.errors import Code, PeersError


def refused(code: str, call, *args, **kwargs) -> PeersError:
    with pytest.raises(PeersError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    return e.value


def raw(c, body: dict) -> p.Frame:
    """A request as a client on the wire may spell it (bypassing the Structs' checks)."""
    c.next_id += 1
    body = {"id": c.next_id, **body}
    data = msgspec.msgpack.encode(body)

    async def ask() -> p.Frame:
        c.conn.data_received(p.HEADER.pack(len(data)) + data)
        return await c._next(lambda f: getattr(f, "id", None) == body["id"])

    return c.ring.run(ask())


def test_a_typed_request_travels_with_its_fields_and_comes_back_typed(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    typed = kinds.Question(expected_format="a port number")
    sent = alice.call(p.Send, to="bob", text="which port?", typed=typed, subject="ports")
    (msg,) = bob.call(p.Claim).messages
    assert msg.typed == typed
    assert msg.subject == "ports"
    assert msg.thread == sent.message_id  # a root is its own thread
    page = alice.call(p.History, limit=1)
    assert page.messages[0].typed == typed


def test_a_missing_or_foreign_field_is_refused_naming_it(ring):
    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    missing = raw(alice, {"t": "send", "to": "bob", "text": "x", "typed": {"kind": "question"}})
    assert isinstance(missing, p.Error) and missing.code == Code.BAD_REQUEST
    assert "expected_format" in missing.message and "$.typed" in missing.message
    foreign = raw(
        alice,
        {
            "t": "send",
            "to": "bob",
            "text": "x",
            "typed": {"kind": "question", "expected_format": "n", "focus": "y"},
        },
    )
    assert isinstance(foreign, p.Error) and "focus" in foreign.message
    unknown = raw(alice, {"t": "send", "to": "bob", "text": "x", "typed": {"kind": "poem"}})
    assert isinstance(unknown, p.Error) and "poem" in unknown.message
    bad_verdict = raw(
        alice,
        {
            "t": "send",
            "to": "bob",
            "text": "x",
            "typed": {"kind": "approval", "verdict": "verified", "reason": "r"},
        },
    )
    assert isinstance(bad_verdict, p.Error) and "verdict" in bad_verdict.message


def test_build_names_every_missing_and_foreign_field_at_once():
    with pytest.raises(PeersError) as e:
        kinds.build("handoff", {"done": "x", "focus": "y", "risk": None})
    assert "needs remaining, files, decisions" in e.value.message
    assert "takes no focus" in e.value.message
    with pytest.raises(PeersError) as e:
        kinds.build("questoin", {})
    assert "unknown kind 'questoin'" in e.value.message
    assert kinds.build("decision", {"rationale": "cheaper"}) == kinds.Decision(rationale="cheaper")


def test_an_answer_must_reply_to_a_request_of_its_kind_from_the_one_it_answers(ring):
    alice, bob, carol = ring.agent(name="alice"), ring.agent(name="bob"), ring.agent(name="carol")
    ask = alice.call(
        p.Send,
        to="bob",
        text="may I drop the table?",
        typed=kinds.ApprovalRequest(action="DROP TABLE users", risk="data loss"),
    )
    question = alice.call(p.Send, to="bob", text="?", typed=kinds.Question(expected_format="y/n"))
    yes = kinds.Approval(verdict="approve", reason="backed up")
    e = refused(Code.BAD_REQUEST, bob.call, p.Send, to="alice", text="ok", typed=yes)
    assert "pass reply_to" in e.message
    e = refused(
        Code.BAD_REQUEST,
        bob.call,
        p.Send,
        to="alice",
        text="ok",
        typed=yes,
        reply_to=question.message_id,
    )
    assert "is a question" in e.message
    e = refused(
        Code.BAD_REQUEST,
        bob.call,
        p.Send,
        to="carol",
        text="ok",
        typed=yes,
        reply_to=ask.message_id,
    )
    assert "to whoever asked" in e.message
    # before the answer: the request shows its kind and no answer
    (item,) = alice.call(p.MessageStatus, message_ids=[ask.message_id]).items
    assert item.kind == "approval_request" and item.answer is None
    # a plain reply is not the answer of an approval request
    bob.call(p.Send, to="alice", text="let me look", reply_to=ask.message_id)
    (item,) = alice.call(p.MessageStatus, message_ids=[ask.message_id]).items
    assert item.answer is None
    ans = bob.call(p.Send, to="alice", text="go ahead", typed=yes, reply_to=ask.message_id)
    (item,) = alice.call(p.MessageStatus, message_ids=[ask.message_id]).items
    assert item.answer is not None
    assert (item.answer.message_id, item.answer.verdict, item.answer.kind) == (
        ans.message_id,
        "approve",
        "approval",
    )
    assert item.answer.preview == "go ahead"
    # a question's answer is any reply
    bob.call(p.Send, to="alice", text="y", reply_to=question.message_id)
    (item,) = alice.call(p.MessageStatus, message_ids=[question.message_id]).items
    assert item.answer is not None and item.answer.preview == "y"
    del carol


def test_a_thread_is_the_root_of_the_reply_chain_and_history_filters_by_it(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    root = alice.call(p.Send, to="bob", text="plan?", subject="release plan")
    other = alice.call(p.Send, to="bob", text="unrelated")
    r1 = bob.call(p.Send, to="alice", text="step 1", reply_to=root.message_id)
    r2 = alice.call(p.Send, to="bob", text="and then?", reply_to=r1.message_id)
    for probe in (root.message_id, r1.message_id, r2.message_id):
        page = alice.call(p.History, thread=probe, limit=50)
        assert [m.id for m in page.messages] == [r2.message_id, r1.message_id, root.message_id]
        assert {m.thread for m in page.messages} == {root.message_id}
        # the subject passes down the chain
        assert {m.subject for m in page.messages} == {"release plan"}
    page = alice.call(p.History, thread=other.message_id, limit=50)
    assert [m.id for m in page.messages] == [other.message_id]
    refused(Code.UNKNOWN_MESSAGE, alice.call, p.History, thread="m-000000-1")


def test_a_reaction_is_a_receipt_not_mail(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    sent = alice.call(p.Send, to="bob", text="merged")
    bob.call(p.Claim)
    bob.call(p.React, message_id=sent.message_id, emoji="👍")
    bob.call(p.React, message_id=sent.message_id, emoji="👍")  # again: no change
    bob.call(p.React, message_id=sent.message_id, emoji="👩‍💻")
    assert alice.call(p.Claim).messages == []  # no mail for the sender
    (item,) = alice.call(p.MessageStatus, message_ids=[sent.message_id]).items
    assert [(r.name, r.emoji) for r in item.reactions] == [("bob", "👍"), ("bob", "👩‍💻")]
    (msg,) = alice.call(p.History, limit=1).messages
    assert [r.emoji for r in msg.reactions] == ["👍", "👩‍💻"]
    # only its recipient reacts; one glyph, no text, no hidden characters
    refused(Code.FORBIDDEN, alice.call, p.React, message_id=sent.message_id, emoji="👍")
    for bad in ("ok", "👍👍", "\u202e👍", " ", "a\u0301", "\x07"):
        refused(Code.BAD_REQUEST, bob.call, p.React, message_id=sent.message_id, emoji=bad)
    refused(Code.UNKNOWN_MESSAGE, bob.call, p.React, message_id="m-000000-1", emoji="👍")
    for glyph in "✓✔★☆♥♦":  # 8 different glyphs in all, then no more
        bob.call(p.React, message_id=sent.message_id, emoji=glyph)
    e = refused(Code.BAD_REQUEST, bob.call, p.React, message_id=sent.message_id, emoji="♣")
    assert "already put 8 different reactions" in e.message
    bob.call(p.React, message_id=sent.message_id, emoji="👍")  # one it has: no change, no error
    items = alice.call(p.MessageStatus, message_ids=[sent.message_id, sent.message_id]).items
    assert [len(i.reactions) for i in items] == [8, 8]  # an id asked twice: both items filled


def test_every_message_carries_a_bounded_snapshot_of_its_sender(ring):
    alice, bob = ring.agent(name="alice"), ring.agent(name="bob")
    alice.call(p.SetSummary, summary="fixing the login bug " + "x" * 900)
    context = kinds.Context(branch="fix-login", dirty=12, files=["a.py", "b.py"])
    alice.call(p.Send, to="bob", text="hi", context=context)
    alice.call(p.Send, to="bob", text="no context")
    first, second = bob.call(p.Claim).messages
    assert first.snapshot is not None
    assert (first.snapshot.branch, first.snapshot.dirty, first.snapshot.files) == (
        "fix-login",
        12,
        ["a.py", "b.py"],
    )
    assert first.snapshot.summary.startswith("fixing the login bug")
    assert len(first.snapshot.summary) == kinds.SNAPSHOT_SUMMARY
    assert second.snapshot is not None and second.snapshot.dirty is None  # not looked at
    bob.call(p.Send, to="alice", text="no summary, no branch, no context")
    (bare,) = alice.call(p.Claim).messages
    assert bare.snapshot is None  # nothing to say: nothing stored
    too_many = raw(
        alice,
        {"t": "send", "to": "bob", "text": "x", "context": {"files": [str(i) for i in range(6)]}},
    )
    assert isinstance(too_many, p.Error) and "$.context.files" in too_many.message


def test_search_ranks_snippets_and_sees_only_the_callers_mail(ring):
    alice, bob, carol = ring.agent(name="alice"), ring.agent(name="bob"), ring.agent(name="carol")
    alice.call(p.Send, to="bob", text="the database migration failed on the staging box")
    best = alice.call(p.Send, to="bob", text="migration migration: rerun the migration")
    alice.call(p.Send, to="bob", text="lunch?")
    secret = carol.call(p.Send, to="bob", text="carol's private migration notes")
    hits = alice.call(p.Search, query="migration").hits
    assert hits[0].message.id == best.message_id
    assert len(hits) == 2  # not carol's
    assert all(h.rank <= hits[-1].rank for h in hits)
    assert "[migration]" in hits[0].snippet
    assert secret.message_id in [h.message.id for h in bob.call(p.Search, query="migration").hits]
    # all mail (a local connection, as the human CLI is)
    everything = ring.client("cli").call(p.Search, query="migration", mine=False).hits
    assert len(everything) == 3
    only_carol = bob.call(p.Search, query="migration", peer="carol").hits
    assert [h.message.id for h in only_carol] == [secret.message_id]
    assert bob.call(p.Search, query="migration", since=4e9).hits == []
    e = refused(Code.BAD_REQUEST, alice.call, p.Search, query='"unbalanced')
    assert "bad search query" in e.message and "double quotes" in e.message
    refused(Code.BAD_REQUEST, alice.call, p.Search, query='migration AND "stag')
    # words with punctuation are words, not syntax
    assert [h.message.id for h in alice.call(p.Search, query="rerun the-migration").hits] == [
        best.message_id
    ]
    del carol


def integrity_ok(ring) -> None:
    """FTS5's own check that the index matches the messages table exactly."""
    with ring.store.transaction():
        ring.store.conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")


def test_search_finds_the_subject_and_forgets_deleted_mail(ring):
    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    sent = alice.call(p.Send, to="bob", text="see attached", subject="quarterly numbers")
    found = alice.call(p.Search, query="quarterly").hits
    assert [h.message.id for h in found] == [sent.message_id]
    alice.call(p.Send, to="bob", text="quarterly draft, not indexed yet")
    assert ring.store.mail.backlog() == 1
    with ring.store.transaction():
        ring.store.conn.execute("DELETE FROM messages")  # indexed and unindexed alike
    integrity_ok(ring)
    assert alice.call(p.Search, query="quarterly").hits == []
    integrity_ok(ring)


def test_sends_leave_indexing_to_batches_and_a_search_sees_every_message(ring):
    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    ids = [
        alice.call(p.Send, to="bob", text=f"note {i} about caching").message_id for i in range(5)
    ]
    assert ring.store.mail.backlog() == 5  # the sends indexed nothing
    with ring.store.transaction():
        assert ring.store.mail.catch_up(3) == 3  # a background chunk
    assert ring.store.mail.backlog() == 2
    hits = alice.call(p.Search, query="caching", limit=50).hits
    assert sorted(h.message.id for h in hits) == sorted(ids)  # the search caught up first
    assert ring.store.mail.backlog() == 0
    integrity_ok(ring)


def test_a_search_indexes_one_bounded_chunk_and_says_what_it_did_not_see(ring, monkeypatch):
    """A backlog (search just turned back on) is not indexed in one batch on the loop: a
    search indexes at most ``SEARCH_CHUNK`` messages first and counts the newer ones."""
    from peersd import mailops

    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    ids = [
        alice.call(p.Send, to="bob", text=f"note {i} about caching").message_id for i in range(5)
    ]
    monkeypatch.setattr(mailops, "SEARCH_CHUNK", 2)
    first = alice.call(p.Search, query="caching", limit=50)
    assert sorted(h.message.id for h in first.hits) == sorted(ids[:2])  # the oldest chunk
    assert first.unindexed == 3 and ring.store.mail.backlog() == 3
    second = alice.call(p.Search, query="caching", limit=50)
    assert (len(second.hits), second.unindexed) == (4, 1)
    third = alice.call(p.Search, query="caching", limit=50)
    assert (len(third.hits), third.unindexed) == (5, 0)  # caught up: it saw every message
    integrity_ok(ring)


def test_search_can_be_turned_off(ring):
    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    alice.call(p.Send, to="bob", text="hello")
    ring.daemon.settings = msgspec.structs.replace(ring.daemon.settings, search_index=False)
    e = refused(Code.DISABLED, alice.call, p.Search, query="hello")
    assert "search_index = false" in e.message
    ring.daemon.settings = msgspec.structs.replace(ring.daemon.settings, search_index=True)
    assert len(alice.call(p.Search, query="hello").hits) == 1  # the meantime is indexed


def test_the_background_indexer_catches_up_in_chunks(ring, monkeypatch):
    from peersd import mailops

    alice, _ = ring.agent(name="alice"), ring.agent(name="bob")
    for i in range(5):
        alice.call(p.Send, to="bob", text=f"note {i}")
    monkeypatch.setattr(mailops, "INDEX_INTERVAL", 0.01)
    monkeypatch.setattr(mailops, "INDEX_CHUNK", 2)  # 2 + 2 + 1: three batches in a row

    async def run_a_while() -> None:
        task = asyncio.ensure_future(mailops.index_loop(ring.daemon))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    ring.run(run_a_while())
    assert ring.store.mail.backlog() == 0
    integrity_ok(ring)
