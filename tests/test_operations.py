"""Every request type against a real daemon: results, errors and the events they publish."""

from __future__ import annotations

import time

import pytest

from peersd import protocol as p
from peersd.client import session_registration
from peersd.errors import Code, PeersError

from .conftest import register


def expect_error(code: str, fn, *args, **kwargs) -> PeersError:
    with pytest.raises(PeersError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value.message
    return info.value


def events_of(client, kind: type, timeout: float = 3.0) -> list:
    """Drain events until one of ``kind`` arrives (or time out); return those of that kind."""
    found = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = client.next_event(timeout=max(0.0, deadline - time.monotonic()))
        if ev is None:
            break
        if isinstance(ev, kind):
            found.append(ev)
            break
    return found


# --------------------------------------------------------------------------- register


def test_register_derives_name_from_repo_and_is_stable(daemon, agents, tmp_path):
    repo = tmp_path / "api"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/feature/x\n")
    (repo / "src").mkdir()
    agent = agents.spawn()
    with daemon.client() as c:
        first = register(c, agent.pid, cwd=str(repo / "src"), summary="fixing auth")
        assert first.name == "api"
        assert first.git_root == str(repo)
        assert first.branch == "feature/x"
        assert first.summary == "fixing auth"
    # the helper restarts: a new connection registers the same agent again
    with daemon.client() as c:
        again = register(c, agent.pid, cwd=str(repo / "src"))
        assert again.id == first.id
        assert again.name == "api"
        assert again.summary == "fixing auth"  # kept: the re-registration gave none


def test_names_are_unique_case_insensitively(daemon, agents, tmp_path):
    names = []
    for folder in ("API", "api", "Api"):
        path = tmp_path / f"{folder}-dir" / folder
        path.mkdir(parents=True)
        with daemon.client() as c:
            names.append(register(c, agents.spawn().pid, cwd=str(path)).name)
    assert [n.lower() for n in names] == ["api", "api-2", "api-3"]


def test_register_by_session_id_survives_a_new_agent_process(daemon, agents):
    with daemon.client() as c:
        first = register(c, agents.spawn().pid, session_id="sess-1", name="resumed")
    with daemon.client() as c:
        again = register(c, agents.spawn().pid, session_id="sess-1")
    assert again.id == first.id and again.name == "resumed"


def test_register_rejects_bad_input(daemon, agents):
    with daemon.client() as c:
        req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/tmp")
        req.cwd = ""
        expect_error(Code.BAD_REQUEST, c.call, req)
        req.cwd = "/tmp"
        req.summary = "x" * 1001
        expect_error(Code.TOO_LARGE, c.call, req)
        req.summary = None
        req.name = "no spaces allowed"
        expect_error(Code.INVALID_NAME, c.call, req)


def test_requests_that_need_a_peer_say_so(daemon):
    with daemon.client() as c:
        for kind, fields in [
            (p.Send, {"to": "x", "text": "hi"}),
            (p.Whoami, {}),
            (p.Claim, {}),
            (p.Ack, {"message_ids": ["m-000000-1"], "via": "cli"}),
            (p.SetName, {"name": "x"}),
            (p.Heartbeat, {}),
        ]:
            expect_error(Code.NOT_REGISTERED, c.request, kind, **fields)
        expect_error(Code.NOT_REGISTERED, c.request, p.Subscribe, kinds=["mail"])


# --------------------------------------------------------------------------- names


def test_set_name_rules(pair):
    ca, a, cb, b = pair
    assert ca.request(p.SetName, name="Alpha_1").peer.name == "Alpha_1"
    expect_error(Code.NAME_TAKEN, ca.request, p.SetName, name="BETA")
    for bad in ("", "x" * 33, "has space", "dot.dot", "p-0123abcd", "ünï"):
        expect_error(Code.INVALID_NAME, ca.request, p.SetName, name=bad)
    assert cb.request(p.Whoami).peer.name == "beta"


def test_rename_is_published_and_mail_follows(pair):
    ca, a, cb, b = pair
    cb.request(p.Subscribe, kinds=["peers"])
    sent = cb.request(p.Send, to="alpha", text="before the rename")
    ca.request(p.SetName, name="gamma")
    (ev,) = events_of(cb, p.PeerRenamed)
    assert (ev.old, ev.new, ev.peer_id) == ("alpha", "gamma", a.id)
    claimed = ca.request(p.Claim).messages
    assert [m.id for m in claimed] == [sent.message_id]
    assert claimed[0].recipient_name == "gamma"
    expect_error(Code.UNKNOWN_PEER, cb.request, p.Send, to="alpha", text="old name")


def test_a_failed_request_leaves_no_trace(pair, agents):
    """A request that fails half-way is rolled back in the database and in memory."""
    ca, a, cb, b = pair
    again = session_registration(cb.settings, b.agent_pid, "codex", cwd="/elsewhere")
    again.summary = "should not stick"
    again.name = "alpha"  # taken: fails after the peer row was already updated
    expect_error(Code.NAME_TAKEN, cb.call, again)
    me = cb.request(p.Whoami).peer
    assert (me.name, me.summary, me.cwd) == ("beta", "", "/tmp")
    listed = {x.id: x for x in ca.request(p.ListPeers).peers}
    assert (listed[b.id].name, listed[b.id].cwd) == ("beta", "/tmp")
    ca.request(p.Send, to="beta", text="still reachable by its old name")
    assert cb.request(p.Whoami).peer.pending == 1


def test_set_summary_and_whoami(pair):
    ca, a, *_ = pair
    ca.request(p.SetSummary, summary="refactoring the parser")
    me = ca.request(p.Whoami).peer
    assert me.summary == "refactoring the parser" and me.id == a.id
    expect_error(Code.TOO_LARGE, ca.request, p.SetSummary, summary="y" * 1001)


# --------------------------------------------------------------------------- list


def test_list_peers_scopes_and_fields(daemon, agents, tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "a").mkdir()
    (repo / "b").mkdir()
    other = tmp_path / "elsewhere"
    other.mkdir()
    clients = [daemon.client() for _ in range(4)]
    me = register(clients[0], agents.spawn().pid, cwd=str(repo / "a"), receive="push")
    same_dir = register(clients[1], agents.spawn().pid, cwd=str(repo / "a"))
    same_repo = register(clients[2], agents.spawn().pid, cwd=str(repo / "b"), kind="codex")
    elsewhere = register(clients[3], agents.spawn().pid, cwd=str(other))

    def ids(scope: str) -> set[str]:
        return {x.id for x in clients[0].request(p.ListPeers, scope=scope).peers}

    assert ids("machine") == {same_dir.id, same_repo.id, elsewhere.id}
    assert ids("directory") == {same_dir.id}
    assert ids("repo") == {same_dir.id, same_repo.id}
    clients[3].request(p.Send, to=same_dir.id, text="one")
    clients[3].request(p.Send, to=same_dir.id, text="two")
    listed = {x.id: x for x in clients[0].request(p.ListPeers).peers}
    assert listed[same_dir.id].pending == 2
    assert listed[same_dir.id].connected is True
    assert listed[same_repo.id].client == "codex"
    assert listed[same_repo.id].branch == "main"
    # "push" is only promised while the session's helper is connected
    clients[0].close()
    with daemon.client() as c:
        view = {x.id: x for x in c.request(p.ListPeers).peers}
    assert view[me.id].receive == "hook" and view[me.id].connected is False
    for c in clients[1:]:
        c.close()


def test_list_peers_order_is_active_first_then_by_name_ignoring_case(daemon, agents):
    clients = [daemon.client() for _ in range(4)]
    for c, name in zip(clients, ["bravo", "Alpha", "charlie", "Delta"], strict=True):
        register(c, agents.spawn().pid, name=name)
    clients[0].request(p.Unregister)  # bravo is gone now
    with daemon.client() as c:
        peers = c.request(p.ListPeers, include_gone=True).peers
        assert [(x.name, x.state) for x in peers] == [
            ("Alpha", "active"),
            ("charlie", "active"),
            ("Delta", "active"),
            ("bravo", "gone"),
        ]
        assert [x.name for x in c.request(p.ListPeers).peers] == ["Alpha", "charlie", "Delta"]
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- send


def test_send_by_id_name_and_name_at_host(pair):
    ca, a, cb, b = pair
    host = ca.connect().host
    ids = [
        ca.request(p.Send, to=b.id, text="by id").message_id,
        ca.request(p.Send, to="BETA", text="by name, any case").message_id,
        ca.request(p.Send, to=f"beta@{host}", text="by name@host").message_id,
    ]
    got = cb.request(p.Claim).messages
    assert [m.id for m in got] == ids
    assert [m.text for m in got] == ["by id", "by name, any case", "by name@host"]
    first = got[0]
    assert (first.sender, first.sender_name, first.sender_client) == (a.id, "alpha", "claude-code")
    assert first.sender_cwd == "/tmp" and first.state == "leased" and first.attempts == 1


def test_send_errors(pair):
    ca, a, cb, b = pair
    err = expect_error(Code.UNKNOWN_PEER, ca.request, p.Send, to="betta", text="hi")
    assert "beta" in err.candidates
    expect_error(Code.UNKNOWN_PEER, ca.request, p.Send, to="beta@otherhost", text="hi")
    expect_error(Code.BAD_REQUEST, ca.request, p.Send, to="alpha", text="to myself")
    expect_error(Code.BAD_REQUEST, ca.request, p.Send, to="beta", text="   ")
    expect_error(Code.BAD_REQUEST, ca.request, p.Send, to="beta", text="x", reply_to="nope")
    big = expect_error(Code.TOO_LARGE, ca.request, p.Send, to="beta", text="é" * 16385)
    assert "32768" in big.message
    # exactly at the limit is fine
    ca.request(p.Send, to="beta", text="a" * 32768)
    assert cb.request(p.Whoami).peer.pending == 1


def test_reply_to_is_kept_and_filterable(pair):
    ca, a, cb, b = pair
    question = ca.request(p.Send, to="beta", text="which port?").message_id
    cb.request(p.Ack, message_ids=[question], via="check")
    cb.request(p.Send, to="alpha", text="unrelated")
    answer = cb.request(p.Send, to="alpha", text="8080", reply_to=question).message_id
    got = ca.request(p.Claim, reply_to=question).messages
    assert [m.id for m in got] == [answer] and got[0].reply_to == question
    assert [m.text for m in ca.request(p.Claim, from_peer="beta").messages] == ["unrelated"]


def test_rate_limit(make_daemon, agents):
    d = make_daemon(rate_per_second=1, rate_burst=3)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="fast")
        register(cb, agents.spawn().pid, name="slow")
        for i in range(3):
            ca.request(p.Send, to="slow", text=f"m{i}")
        err = expect_error(Code.RATE_LIMITED, ca.request, p.Send, to="slow", text="one too many")
        assert "1 messages/s" in err.message
        # the other peer has its own bucket
        cb.request(p.Send, to="fast", text="fine")


def test_queue_limit(make_daemon, agents):
    d = make_daemon(queue_limit=2)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="chatty")
        register(cb, agents.spawn().pid, name="busy")
        ca.request(p.Send, to="busy", text="1")
        ca.request(p.Send, to="busy", text="2")
        expect_error(Code.QUEUE_FULL, ca.request, p.Send, to="busy", text="3")
        (m, _) = cb.request(p.Claim).messages
        cb.request(p.Ack, message_ids=[m.id], via="cli")
        ca.request(p.Send, to="busy", text="3 after one was read")


def test_broadcast_sends_one_message_per_peer_in_scope(daemon, agents, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    clients = [daemon.client() for _ in range(3)]
    peers = [register(c, agents.spawn().pid, cwd=str(work)) for c in clients]
    with daemon.client() as outsider:
        register(outsider, agents.spawn().pid, cwd="/")
        result = clients[0].request(p.Broadcast, scope="directory", text="standup in 5")
        assert sorted(item.to for item in result.sent) == sorted(x.id for x in peers[1:])
        assert len({item.message_id for item in result.sent}) == 2
        assert outsider.request(p.Claim).messages == []
        # Found in review: a broadcast counted each message twice in the unread count.
        listed = {x.id: x.pending for x in outsider.request(p.ListPeers).peers}
        assert [listed[x.id] for x in peers[1:]] == [1, 1]
        assert [c.request(p.Whoami).peer.pending for c in clients[1:]] == [1, 1]
    for c in clients[1:]:
        (m,) = c.request(p.Claim).messages
        assert m.text == "standup in 5"
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- delivery


def test_claim_lease_ack_state_machine(make_daemon, agents):
    d = make_daemon(lease_seconds=0.4)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        mid = ca.request(p.Send, to="b", text="lease me").message_id

        def state() -> str:
            return ca.request(p.MessageStatus, message_ids=[mid]).items[0].state

        assert state() == "queued"
        (m,) = cb.request(p.Claim).messages
        assert state() == "leased"
        assert cb.request(p.Claim).messages == []  # leased mail is not offered twice
        time.sleep(0.5)
        (again,) = cb.request(p.Claim).messages  # the lease ran out: offered again
        assert again.id == mid and again.attempts == 2
        acked = cb.request(p.Ack, message_ids=[mid], via="hook")
        assert acked.acked == [mid] and acked.already == []
        assert state() == "delivered"
        assert cb.request(p.Ack, message_ids=[mid], via="hook").already == [mid]
        status = ca.request(p.MessageStatus, message_ids=[mid]).items[0]
        assert status.delivered_via == "hook" and status.delivered_at is not None


def test_ack_is_exact_and_only_for_own_mail(daemon, agents):
    with daemon.client() as ca, daemon.client() as cb, daemon.client() as cc:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        register(cc, agents.spawn().pid, name="c")
        to_b = [ca.request(p.Send, to="b", text=f"{i}").message_id for i in range(3)]
        to_c = ca.request(p.Send, to="c", text="for c").message_id
        cb.request(p.Claim)
        # c may not acknowledge b's mail, and a mixed request acknowledges nothing
        expect_error(Code.UNKNOWN_MESSAGE, cc.request, p.Ack, message_ids=[to_b[0]], via="cli")
        expect_error(
            Code.UNKNOWN_MESSAGE, cb.request, p.Ack, message_ids=[to_b[0], to_c], via="cli"
        )
        expect_error(Code.UNKNOWN_MESSAGE, cb.request, p.Ack, message_ids=["m-zz-1"], via="cli")
        states = {
            i.message_id: i.state for i in ca.request(p.MessageStatus, message_ids=to_b).items
        }
        assert set(states.values()) == {"leased"}
        assert cb.request(p.Ack, message_ids=[to_b[1]], via="check").acked == [to_b[1]]
        states = {
            i.message_id: i.state for i in ca.request(p.MessageStatus, message_ids=to_b).items
        }
        assert states == {to_b[0]: "leased", to_b[1]: "delivered", to_b[2]: "leased"}


def test_release_returns_mail_to_the_queue(pair):
    ca, a, cb, b = pair
    mid = ca.request(p.Send, to="beta", text="not now").message_id
    cb.request(p.Claim)
    assert cb.request(p.Release, message_ids=[mid]).released == [mid]
    (m,) = cb.request(p.Claim).messages
    assert m.id == mid and m.attempts == 2


def test_claim_and_history_answers_fit_in_a_frame(make_daemon, agents):
    d = make_daemon(max_frame=200_000, rate_per_second=0)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        ids = [ca.request(p.Send, to="b", text=f"{i}" + "x" * 32000).message_id for i in range(12)]
        got: list[str] = []
        rounds = 0
        while True:
            batch = cb.request(p.Claim, limit=50).messages
            if not batch:
                break
            rounds += 1
            assert len(batch) < 12
            got += [m.id for m in batch]
        assert got == ids and rounds > 1
        pages, before = 0, None
        seen: list[str] = []
        while True:
            page = ca.request(p.History, limit=50, before=before)
            pages += 1
            seen += [m.id for m in page.messages]
            if page.next_before is None:
                break
            before = page.next_before
        assert seen == list(reversed(ids)) and pages > 1


def test_expired_mail_cannot_be_claimed_before_the_sweep(make_daemon, agents):
    d = make_daemon(message_ttl=0.2, sweep_interval=3600)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        ca.request(p.Send, to="b", text="stale soon")
        time.sleep(0.3)
        assert cb.request(p.Claim).messages == []


def test_inherited_and_released_mail_is_pushed(daemon, agents):
    with daemon.client() as ca:
        register(ca, agents.spawn().pid, name="a")
        with daemon.client() as old:
            register(old, agents.spawn().pid, name="heir")
            old.request(p.Unregister)
        mid = ca.request(p.Send, to="heir", text="for the successor").message_id
        with daemon.client() as new:
            heir = register(new, agents.spawn().pid, name="temp")
            new.request(p.Subscribe, kinds=["mail"])
            assert new.request(p.SetName, name="heir").inherited == 1
            (ev,) = events_of(new, p.MailEvent)
            assert (ev.message_id, ev.peer_id) == (mid, heir.id)
            new.request(p.Claim)
            new.request(p.Release, message_ids=[mid])
            (again,) = events_of(new, p.MailEvent)
            assert again.message_id == mid


def test_rename_through_register_is_published(daemon, agents):
    agent = agents.spawn()
    with daemon.client() as watcher, daemon.client() as c:
        watcher.request(p.Subscribe, kinds=["peers"])
        register(c, agent.pid, name="before")
        register(c, agent.pid, name="after")
        (ev,) = events_of(watcher, p.PeerRenamed)
        assert (ev.old, ev.new) == ("before", "after")


def test_broadcast_skips_full_queues_and_a_failed_send_costs_no_rate(make_daemon, agents, tmp_path):
    d = make_daemon(queue_limit=1, rate_per_second=0.001, rate_burst=3)
    work = tmp_path / "team"
    work.mkdir()
    with d.client() as ca, d.client() as cb, d.client() as cc:
        register(ca, agents.spawn().pid, cwd=str(work), name="lead")
        register(cb, agents.spawn().pid, cwd=str(work), name="full")
        register(cc, agents.spawn().pid, cwd=str(work), name="free")
        ca.request(p.Send, to="full", text="fills the queue")  # token 1
        for _ in range(5):  # refused before any token is taken
            expect_error(Code.UNKNOWN_PEER, ca.request, p.Send, to="nobody", text="x")
        expect_error(Code.QUEUE_FULL, ca.request, p.Send, to="full", text="x")
        result = ca.request(p.Broadcast, scope="directory", text="all hands")  # token 2
        assert [s.to_name for s in result.sent] == ["free"]
        assert result.skipped and result.skipped[0].startswith("full:")


def test_message_status_unknown_ids(pair):
    ca, *_ = pair
    items = ca.request(p.MessageStatus, message_ids=["m-abcdef-99", "garbage"]).items
    assert [i.found for i in items] == [False, False]


def test_ttl_expiry_tells_the_sender(make_daemon, agents):
    d = make_daemon(message_ttl=0.3)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        ca.request(p.Subscribe, kinds=["receipts"])
        mid = ca.request(p.Send, to="b", text="too late").message_id
        time.sleep(0.4)
        sweep = ca.request(p.Sweep)
        assert sweep.expired == 1
        (ev,) = events_of(ca, p.ReceiptEvent)
        assert (ev.message_id, ev.state) == (mid, "expired")
        assert cb.request(p.Claim).messages == []
        assert ca.request(p.MessageStatus, message_ids=[mid]).items[0].state == "expired"


def test_sweep_returns_lapsed_leases_and_pushes_them_again(make_daemon, agents):
    d = make_daemon(lease_seconds=0.2)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        mid = ca.request(p.Send, to="b", text="x").message_id
        cb.request(p.Claim)
        cb.request(p.Subscribe, kinds=["mail"])
        time.sleep(0.3)
        assert ca.request(p.Sweep).requeued == 1
        (ev,) = events_of(cb, p.MailEvent)
        assert ev.message_id == mid
        assert ca.request(p.MessageStatus, message_ids=[mid]).items[0].state == "queued"


# --------------------------------------------------------------------------- events


def test_events_mail_receipts_peers_traffic(daemon, agents):
    with daemon.client() as watcher, daemon.client() as ca, daemon.client() as cb:
        watcher.request(p.Subscribe, kinds=["peers", "traffic"])
        register(ca, agents.spawn().pid, name="a")
        b = register(cb, agents.spawn().pid, name="b")
        (joined,) = events_of(watcher, p.PeerJoined)
        assert joined.peer.name == "a"
        ca.request(p.Subscribe, kinds=["receipts"])
        cb.request(p.Subscribe, kinds=["mail"])
        mid = ca.request(p.Send, to="b", text="ping").message_id
        (mail,) = events_of(cb, p.MailEvent)
        assert (mail.peer_id, mail.message_id) == (b.id, mid)  # a doorbell: no text
        assert not hasattr(mail, "message")
        cb.request(p.Ack, message_ids=[mid], via="wait")
        (receipt,) = events_of(ca, p.ReceiptEvent)
        assert (receipt.message_id, receipt.state, receipt.via, receipt.to) == (
            mid,
            "delivered",
            "wait",
            b.id,
        )
        seen = []
        while len(seen) < 2:
            ev = watcher.next_event(3)
            assert ev is not None, f"traffic events missing, got {seen}"
            if isinstance(ev, p.TrafficEvent):
                seen.append(ev.what)
        assert seen == ["sent", "delivered"]
        cb.request(p.Unregister)
        (left,) = events_of(watcher, p.PeerLeft)
        assert (left.peer_id, left.reason) == (b.id, "unregistered")


def test_unregister_keeps_mail_for_the_successor(daemon, agents):
    with daemon.client() as ca:
        register(ca, agents.spawn().pid, name="sender")
        with daemon.client() as cb:
            old = register(cb, agents.spawn().pid, name="worker")
            cb.request(p.Unregister)
        mid = ca.request(p.Send, to="worker", text="for whoever is worker next").message_id
        assert ca.request(p.MessageStatus, message_ids=[mid]).items[0].to == old.id
        with daemon.client() as cn:
            new = register(cn, agents.spawn().pid, name="worker")
            assert new.id != old.id
            (m,) = cn.request(p.Claim).messages
            assert m.id == mid and m.recipient == new.id


# --------------------------------------------------------------------------- history


def test_history_pages_and_filters(daemon, agents):
    with daemon.client() as ca, daemon.client() as cb, daemon.client() as cc:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        register(cc, agents.spawn().pid, name="c")
        ab = [ca.request(p.Send, to="b", text=f"ab{i}").message_id for i in range(5)]
        ac = ca.request(p.Send, to="c", text="ac").message_id
        cb.request(p.Send, to="c", text="bc")
        page1 = ca.request(p.History, limit=4)
        assert [m.id for m in page1.messages] == [ac, ab[4], ab[3], ab[2]]
        page2 = ca.request(p.History, limit=4, before=page1.next_before)
        assert [m.id for m in page2.messages] == [ab[1], ab[0]]
        assert page2.next_before is None
        only_c = ca.request(p.History, peer="c")
        assert [m.id for m in only_c.messages] == [ac]
        everyone = ca.request(p.History, mine=False, limit=100)
        assert len(everyone.messages) == 7
        inbound = cc.request(p.History, direction="in")
        assert [m.text for m in inbound.messages] == ["bc", "ac"]
        queued = cb.request(p.History, state="queued", direction="in")
        assert len(queued.messages) == 5
        expect_error(Code.BAD_REQUEST, ca.request, p.History, limit=0)


def test_history_never_ends_with_an_empty_page(daemon, agents):
    """When exactly ``limit`` messages are left there is no next page to point to."""
    with daemon.client() as ca, daemon.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        ids = [ca.request(p.Send, to="b", text=f"m{i}").message_id for i in range(4)]
        whole = ca.request(p.History, limit=4)
        assert [m.id for m in whole.messages] == list(reversed(ids))
        assert whole.next_before is None
        first = ca.request(p.History, limit=2)
        assert [m.id for m in first.messages] == [ids[3], ids[2]]
        last = ca.request(p.History, limit=2, before=first.next_before)
        assert [m.id for m in last.messages] == [ids[1], ids[0]]
        assert last.next_before is None


def test_audit_never_ends_with_an_empty_page(daemon, agents):
    """Audit pages as history does: no cursor to an empty page."""
    with daemon.client("cli") as c:
        for n in range(3):
            # a start time that is not the live process's: the kill finds it already gone
            req = session_registration(c.settings, agents.spawn().pid, "codex", cwd="/tmp")
            req.agent_start -= 1000.0
            req.name = f"ghost{n}"
            with daemon.client("codex") as owner:
                owner.call(req)
            assert c.request(p.Kill, target=f"ghost{n}").outcome == "already_gone"
        whole = c.request(p.Audit, limit=3)
        assert [r.target_name for r in whole.records] == ["ghost2", "ghost1", "ghost0"]
        assert whole.next_before is None
        first = c.request(p.Audit, limit=2)
        last = c.request(p.Audit, limit=2, before=first.next_before)
        assert [r.target_name for r in last.records] == ["ghost0"]
        assert last.next_before is None
        kills = c.request(p.Audit, limit=3, action="kill")
        assert len(kills.records) == 3 and kills.next_before is None


def test_status_counts(pair):
    ca, a, cb, b = pair
    ca.request(p.Send, to="beta", text="x")
    st = ca.request(p.Status)
    assert st.peers_active == 2 and st.messages["queued"] == 1
    assert st.connections >= 2 and st.protocol == p.PROTOCOL_VERSION
    assert st.supervisor == "manual"
