"""The message-level migration on a real daemon: a schema v4 database (the release before
typed requests, threads and search) with mail in it is upgraded in place, its old mail is
searchable and threaded; new typed mail, reactions and the index survive ``kill -9``."""

from __future__ import annotations

from collections.abc import Callable

import apsw

from peersd import kinds, schema
from peersd import protocol as p

from .conftest import Agents, DaemonProc, register

V4 = 4
"""The schema of the release before this migration (main at round 3)."""


def make_v4_database(d: DaemonProc) -> str:
    """A v4 database at the daemon's path, made by the v4 migrations, with a reply chain,
    a reply to a message of another database, plain messages, a reply with leading zeros in
    its ``reply_to`` and one from a peer outside the conversation it names."""
    path = d.settings.db_path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = apsw.Connection(str(path))
    for number, script in enumerate(schema.MIGRATIONS[:V4], start=1):
        with conn:
            conn.execute(script)
            conn.pragma("user_version", number)
    (tag,) = conn.execute("SELECT value FROM meta WHERE key = 'tag'").fetchone()
    with conn:
        for pid, name in ((1, "old-a"), (2, "old-b"), (3, "old-c")):
            conn.execute(
                "INSERT INTO peers(id, name, name_key, client, state, machine_id, host, cwd, "
                "agent_pid, agent_start, registered_at, last_seen, receive) VALUES "
                "(?, ?, ?, 'codex', 'gone', 'm', 'h', '/w', ?, 1.0, 1.0, 1.0, 'poll')",
                (f"p-0000000{pid}", name, name, pid),
            )
        a, b, c = "p-00000001", "p-00000002", "p-00000003"
        rows = [
            ("the flaky scheduler test again", None, a, b),
            ("reproduced the scheduler flake", f"m-{tag}-1", b, a),
            ("fixed: the scheduler clock was mocked", f"m-{tag}-2", a, b),
            ("about another database's message", "m-ffffff-7", b, a),
            ("lunch?", None, a, b),
            ("deploy at noon?", None, b, a),
            ("yes, at noon", f"m-{tag}-006", a, b),  # leading zeros, as v4 stored them
            ("me too", f"m-{tag}-1", c, a),  # c neither sent nor received m-1
        ]
        for text, reply_to, sender, recipient in rows:
            conn.execute(
                "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, "
                "created, state, expires_at, reply_to, delivered_at, delivered_via) "
                "VALUES (?, 'x', ?, 'y', ?, 100.0, 'delivered', 200.0, ?, 150.0, 'check')",
                (sender, recipient, text, reply_to),
            )
    assert conn.pragma("user_version") == V4
    conn.close()
    return str(tag)


def test_a_v4_database_with_mail_is_upgraded_searchable_and_threaded(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon(start=False)
    tag = make_v4_database(d)
    d.start()
    with d.client() as c:
        assert c.request(p.Status).schema == len(schema.MIGRATIONS)
        hits = c.request(p.Search, query="scheduler", mine=False).hits
        assert {h.message.id for h in hits} == {f"m-{tag}-{i}" for i in (1, 2, 3)}
        assert all("[scheduler]" in h.snippet for h in hits)
        chain = c.request(p.History, thread=f"m-{tag}-3", mine=False).messages
        assert [m.id for m in chain] == [f"m-{tag}-{i}" for i in (3, 2, 1)]
        assert {m.thread for m in chain} == {f"m-{tag}-1"}
        (foreign,) = c.request(p.History, thread=f"m-{tag}-4", mine=False).messages
        assert foreign.thread == foreign.id  # its parent is not here: a root of its own
        (old,) = c.request(p.History, thread=f"m-{tag}-5", mine=False).messages
        assert (old.typed, old.snapshot, old.subject, old.reactions) == (None, None, None, [])
        # a reply_to with leading zeros is stored as the daemon writes ids: it is the answer
        (yes, _) = c.request(p.History, thread=f"m-{tag}-6", mine=False).messages
        assert (yes.id, yes.reply_to, yes.thread) == (f"m-{tag}-7", f"m-{tag}-6", f"m-{tag}-6")
        (item,) = c.request(p.MessageStatus, message_ids=[f"m-{tag}-6"]).items
        assert item.answer is not None and item.answer.message_id == f"m-{tag}-7"
        # a reply from outside the conversation starts its own thread
        (outsider,) = c.request(p.History, thread=f"m-{tag}-8", mine=False).messages
        assert outsider.thread == outsider.id


def test_typed_mail_reactions_and_the_index_survive_kill_9(
    make_daemon: Callable[..., DaemonProc], agents: Agents
) -> None:
    d = make_daemon()
    ca, cb = d.client("claude-code"), d.client("codex")
    register(ca, agents.spawn().pid, name="alpha")
    register(cb, agents.spawn().pid, name="beta")
    ask = ca.request(
        p.Send,
        to="beta",
        text="verify the backup restores",
        typed=kinds.VerificationRequest(
            claim="nightly backup restores", evidence_needed="a restore log", files=["ops/b.sh"]
        ),
        subject="backups",
    )
    cb.request(p.React, message_id=ask.message_id, emoji="👀")
    ca.close()
    cb.close()
    d.kill9()
    d.start()
    with d.client() as c:
        (hit,) = c.request(p.Search, query="backup restores", mine=False).hits
        msg = hit.message
        assert msg.id == ask.message_id and msg.subject == "backups"
        assert isinstance(msg.typed, kinds.VerificationRequest)
        assert msg.typed.files == ["ops/b.sh"]
        assert [r.emoji for r in msg.reactions] == ["👀"]
        (item,) = c.request(p.MessageStatus, message_ids=[ask.message_id]).items
        assert item.kind == "verification_request" and [r.emoji for r in item.reactions] == ["👀"]


def vm_steps_of_the_upgrade(count: int) -> int:
    """SQLite VM instructions (in thousands) the migrations after v4 take on ``count``
    messages, half of them replies into chains: a measure of work that no load changes."""
    conn = apsw.Connection(":memory:")
    for number, script in enumerate(schema.MIGRATIONS[:V4], start=1):
        with conn:
            conn.execute(script)
            conn.pragma("user_version", number)
    (tag,) = conn.execute("SELECT value FROM meta WHERE key = 'tag'").fetchone()
    with conn:
        conn.executemany(
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, created, "
            "state, expires_at, reply_to) VALUES ('a', 'a', 'b', 'b', 'x', 1, 'delivered', 2, ?)",
            [
                (f"m-{tag}-{max(1, i - 1 - i % 50)}" if i % 2 else None,)
                for i in range(1, count + 1)
            ],
        )
    steps = 0

    def tick() -> bool:
        nonlocal steps
        steps += 1
        return False  # go on

    conn.set_progress_handler(tick, 1000)
    for script in schema.MIGRATIONS[V4:]:
        with conn:
            conn.execute(script)
    assert conn.execute("SELECT count(*) FROM messages WHERE thread IS NOT NULL").fetchone()[0]
    return steps


def test_the_upgrade_threads_old_mail_in_time_linear_in_the_mail() -> None:
    """Threading existing replies walks the reply trees by index: four times the mail is
    about four times the work (a scan per message made it sixteen: 43 s for 16k messages,
    half an hour for 100k, before the daemon listened)."""
    small, large = vm_steps_of_the_upgrade(1000), vm_steps_of_the_upgrade(4000)
    assert large < 6 * small, (small, large)
