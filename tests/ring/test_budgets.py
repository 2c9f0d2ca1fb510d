"""Answers that carry many peer-controlled bytes stay inside one frame.

A message carries its sender's current cwd, branch and host beside its text, and a peer
listing every peer's paths, summary and files: each field may hold thousands of
multi-byte characters (``peersd.rules``). An answer the daemon cannot send is swapped
for ``too_large`` after the request committed (a claim's leases stand): every answer
here must fit, whatever the peers wrote about themselves.
"""

from __future__ import annotations

from peersd import kinds
from peersd import protocol as p
from peersd.mailops import MAX_REACTIONS
from peersd.store import MESSAGE_OVERHEAD, Store

WIDE = "\U0001f600"  # four bytes in UTF-8: the most a character costs
MAX_CWD = WIDE * 4096
MAX_BRANCH = WIDE * 256
MAX_HOST = WIDE * 255


def fits(ring, answer: p.Frame) -> int:
    size = len(p.encode(answer)) - 4
    assert size <= ring.settings.max_frame, f"{type(answer).__name__} of {size} bytes"
    return size


def test_a_sender_with_maximal_fields_cannot_make_a_claim_too_large(ring):
    # Each message: 32 KiB of text + 16 KiB of cwd + 1 KiB of branch. Counted as text +
    # MESSAGE_OVERHEAD, 29 of them fit the budget: 1.4 MiB, refused after the leases.
    sender = ring.client()
    sender.register(name="wide", agent_pid=100_001, agent_start=1.0, cwd=MAX_CWD, branch=MAX_BRANCH)
    reader = ring.agent(name="reader")
    text = "x" * ring.settings.max_text
    ids = [sender.call(p.Send, to="reader", text=text).message_id for _ in range(30)]
    claimed = reader.call(p.Claim, limit=50)
    fits(ring, claimed)
    assert claimed.messages and claimed.messages[0].sender_cwd == MAX_CWD
    got = [m.id for m in claimed.messages]
    assert got == ids[: len(got)]  # the oldest, in order; the rest waits unleased
    page = reader.call(p.History, limit=50)
    fits(ring, page)
    assert page.next_before is not None  # cut by the budget: the rest is on the next page
    again = reader.call(p.Claim, limit=50)  # the rest is still claimable
    assert [m.id for m in again.messages] == ids[len(got) : len(got) + len(again.messages)]


def test_message_overhead_bounds_everything_but_the_counted_fields():
    empty = p.Message(
        id="m-abcdef-" + "9" * 18,
        sender="p-00000000",
        sender_name="",
        recipient="p-00000000",
        recipient_name="",
        text="",
        created=1e11,
        state="delivered",
        expires_at=1e11,
        reply_to="m-abcdef-" + "9" * 18,
        delivered_at=1e11,
        delivered_via="channel",
        attempts=2**62,
        sender_client="claude-code",
        sender_cwd="",
        sender_branch="",
        sender_host="",
        thread="m-abcdef-" + "9" * 18,
        reactions=[
            p.Reaction(peer="p-00000000", name="n" * 32, emoji=WIDE * 16, at=1e11)
            for _ in range(MAX_REACTIONS)
        ],
    )
    assert len(p.encode(empty)) <= MESSAGE_OVERHEAD


def test_typed_fields_snapshots_and_subjects_count_against_the_budget(ring):
    """Fields at their largest (typed fields up to ``max_text`` as JSON, a snapshot with a
    wide branch and files, a subject) still keep claim and history answers in a frame."""
    sender = ring.client()
    sender.register(name="wide", agent_pid=100_001, agent_start=1.0, branch=MAX_BRANCH)
    reader = ring.agent(name="reader")
    wide = WIDE * 700  # 2,800 bytes in UTF-8, within the 2,000-character field rule
    typed = kinds.Handoff(done=wide, remaining=wide, files=[WIDE * 200] * 3, decisions=wide)
    context = kinds.Context(branch=WIDE * 256, dirty=5, files=[WIDE * 512] * 5)
    text = "x" * (ring.settings.max_text - 1)
    for _ in range(40):
        sender.call(
            p.Send, to="reader", text=text, typed=typed, context=context, subject=WIDE * 200
        )
    claimed = reader.call(p.Claim, limit=50)
    fits(ring, claimed)
    assert 0 < len(claimed.messages) < 40  # cut by the budget, not by the limit
    assert claimed.messages[0].typed == typed
    fits(ring, reader.call(p.History, limit=50))
    fits(ring, reader.call(p.Search, query="xx*", limit=50))


def test_the_store_counts_the_host_of_a_remote_sender(tmp_path):
    store = Store(tmp_path / "peers.db")
    try:
        with store.transaction():
            reg = p.Register(id=1, agent_pid=1, agent_start=1.0, cwd=MAX_CWD, branch=MAX_BRANCH)
            sender = store.register(reg, 1000.0, "m-remote", MAX_HOST).peer
            reg = p.Register(id=1, agent_pid=2, agent_start=1.0, cwd="/r", name="reader")
            reader = store.register(reg, 1000.0, "m-1", "here").peer
            for _ in range(40):
                store.send(sender, reader, "x" * 32768, None, 1000.0, 3600.0)
        budget = 1_000_000
        with store.transaction():
            msgs = store.claim(reader.id, 1000, 30.0, 1001.0, budget=budget)
        assert len(msgs) > 1 and msgs[0].sender_host == MAX_HOST
        assert sum(len(p.encode(m)) for m in msgs) <= budget
        page, _ = store.history(reader.id, None, 1000, None, None, "any", budget=budget)
        assert len(page) > 1 and sum(len(p.encode(m)) for m in page) <= budget
    finally:
        store.close()


def test_list_peers_is_cut_to_the_frame_and_says_how_many_were_left_out(ring):
    # 55 peers each with 16 KiB paths twice, a 4 KiB summary, a 1 KiB branch: 2 MiB.
    for i in range(55):
        c = ring.client()
        c.register(
            name=f"p{i}",
            agent_pid=200_000 + i,
            agent_start=1.0,
            cwd=MAX_CWD,
            git_root=MAX_CWD,
            branch=MAX_BRANCH,
            summary=WIDE * 1000,
        )
    listing = ring.client().call(p.ListPeers, scope="all")
    fits(ring, listing)
    assert listing.peers and listing.omitted > 0
    assert len(listing.peers) + listing.omitted == 55
    assert [x.name for x in listing.peers] == [f"p{i}" for i in sorted(range(55), key=str)][
        : len(listing.peers)
    ]


def test_a_short_listing_omits_nothing(ring):
    ring.agent(name="one")
    ring.agent(name="two")
    listing = ring.client().call(p.ListPeers)
    assert [x.name for x in listing.peers] == ["one", "two"] and listing.omitted == 0
