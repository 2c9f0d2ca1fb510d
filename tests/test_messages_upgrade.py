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
    a reply to a message of another database, and a plain message."""
    path = d.settings.db_path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = apsw.Connection(str(path))
    for number, script in enumerate(schema.MIGRATIONS[:V4], start=1):
        with conn:
            conn.execute(script)
            conn.pragma("user_version", number)
    (tag,) = conn.execute("SELECT value FROM meta WHERE key = 'tag'").fetchone()
    with conn:
        for pid, name in ((1, "old-a"), (2, "old-b")):
            conn.execute(
                "INSERT INTO peers(id, name, name_key, client, state, machine_id, host, cwd, "
                "agent_pid, agent_start, registered_at, last_seen, receive) VALUES "
                "(?, ?, ?, 'codex', 'gone', 'm', 'h', '/w', ?, 1.0, 1.0, 1.0, 'poll')",
                (f"p-0000000{pid}", name, name, pid),
            )
        rows = [
            ("the flaky scheduler test again", None),
            ("reproduced the scheduler flake", f"m-{tag}-1"),
            ("fixed: the scheduler clock was mocked", f"m-{tag}-2"),
            ("about another database's message", "m-ffffff-7"),
            ("lunch?", None),
        ]
        for i, (text, reply_to) in enumerate(rows):
            a, b = ("p-00000001", "p-00000002") if i % 2 == 0 else ("p-00000002", "p-00000001")
            conn.execute(
                "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, "
                "created, state, expires_at, reply_to, delivered_at, delivered_via) "
                "VALUES (?, 'x', ?, 'y', ?, 100.0, 'delivered', 200.0, ?, 150.0, 'check')",
                (a, b, text, reply_to),
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
