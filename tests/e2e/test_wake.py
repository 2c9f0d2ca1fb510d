"""Idle wakes with the real Codex CLI: the daemon's ``codex queue`` command line is
accepted and queues (offline; whether a loaded TUI then starts a turn is not run here).

A real ``codex exec`` run creates the thread (and its real Stop hook reports the wake
route). A stand-in interactive Codex session then reports that route the way
``peers-hook`` does (``set_status`` with ``wake``), and mail to it makes the daemon run the
real ``codex queue``; the nudge must land in Codex's durable queue.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from peersd import protocol as p

from .conftest import TEST_TIMEOUT, World
from .model_stub import ResponsesStub, Turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]


def test_the_real_codex_queue_takes_the_daemons_nudge(world: World) -> None:
    stub = world.stub(ResponsesStub([Turn.say("Hello.")], name="codex bravo"))
    world.install_codex(stub)
    world.codex(world.workdir("bravo"), "Say hello.").check()
    stops = world.hook_inputs("Stop")
    assert stops, "no Stop hook ran"
    thread = stops[-1]["session_id"]

    cx = world.fake_peer("cx", client="codex")
    route = p.WakeRoute(
        thread=thread, codex_bin=str(world.clients.codex), codex_home=str(world.codex_home)
    )
    cx.request(p.SetStatus, state="idle", wake=route)
    carol = world.fake_peer("carol", client="claude-code")
    mid = carol.request(p.Send, to="cx", text="BODY: never in the queue").message_id

    deadline = time.monotonic() + 60
    while (wake := world.status(mid)[mid].wake) is None:
        assert time.monotonic() < deadline, "no wake recorded"
        time.sleep(0.2)
    assert (wake.via, wake.outcome) == ("codex queue", "queued"), wake.reason
    assert world.status(mid)[mid].state == "queued"

    nudge = "[claude-peers] new message from carol; call check_messages to read and reply."
    queue = world.codex_home / "queue_1.sqlite"
    db = sqlite3.connect(f"file:{queue}?mode=ro", uri=True)
    try:
        found = []
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                text = " ".join(str(v) for v in row)
                if nudge in text:
                    found.append((table, text))
                assert "BODY" not in text
    finally:
        db.close()
    assert len(found) == 1, (tables, found)
    assert thread in found[0][1]
