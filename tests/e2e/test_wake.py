"""Idle wakes with the real clients.

Codex CLI: the daemon's ``codex queue`` command line is accepted and queues (offline;
whether a loaded TUI then starts a turn is not run here). A real ``codex exec`` run
creates the thread. A stand-in interactive Codex session then reports that route the way
``peers-hook`` does (``set_status`` with ``wake``), and mail to it makes the daemon run the
real ``codex queue``; the nudge must land in Codex's durable queue.

Claude Code: its terminal UI exports ``CLAUDE_CODE_MESSAGING_SOCKET`` and ``_TOKEN`` to
hooks; with the ``--wait`` hook not installed, mail for the idle session makes the daemon
post the nudge to that inbox, and Claude Code starts a turn with it.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from peersd import identity, wake
from peersd import protocol as p

from .conftest import TEST_TIMEOUT, World
from .model_stub import AnthropicStub, ResponsesStub, Turn
from .test_claude_code import PROMPT, blocks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]


def test_the_real_codex_queue_takes_the_daemons_nudge(world: World) -> None:
    seen: dict[str, list[str]] = {}

    def first(req: object) -> Turn:
        # the real exec session's agent process, as the daemon sees it: skipped as exec
        seen["cmdline"] = identity.process_cmdline(world.wait_peer("bravo", "codex").agent_pid)
        return Turn.say("Hello.")

    stub = world.stub(ResponsesStub([first], name="codex bravo"))
    world.install_codex(stub)
    world.codex(world.workdir("bravo"), "Say hello.").check()
    assert wake.codex_exec(seen["cmdline"]), seen
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
    while (woke := world.status(mid)[mid].wake) is None:
        assert time.monotonic() < deadline, "no wake recorded"
        time.sleep(0.2)
    assert (woke.via, woke.outcome) == ("codex queue", "queued"), woke.reason
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


def test_the_real_claude_code_inbox_takes_the_daemons_nudge(world: World) -> None:
    world.install_claude()
    settings = world.home / ".claude" / "settings.json"
    data = json.loads(settings.read_text())
    data["hooks"]["Stop"] = [  # no idle-wake waiter: the inbox is the way in
        group for group in data["hooks"]["Stop"] if "--wait" not in json.dumps(group)
    ]
    settings.write_text(json.dumps(data, indent=2))
    carol = world.fake_peer("carol")
    stub = world.stub(
        AnthropicStub(
            [Turn.say("Hi. Idle now."), Turn.say("Nudged: I will check my mail.")],
            name="claude alpha (interactive, inbox)",
        )
    )
    ui = world.claude_interactive(stub, world.workdir("alpha"))
    ui.wait_for(PROMPT)
    # registered first: a Stop before that is not seen (the first turn is quick)
    alpha = world.wait_peer("alpha", "claude-code")
    ui.type("Say hi")
    deadline = time.monotonic() + 30
    while not [
        x for x in world.cli.request(p.ListPeers).peers if x.id == alpha.id and x.status == "idle"
    ]:
        assert time.monotonic() < deadline, "the first turn never ended (Stop: idle)"
        time.sleep(0.1)
    assert len(stub.scripted) == 1

    mid = carol.request(p.Send, to="alpha", text="BODY: not in the nudge").message_id
    deadline = time.monotonic() + 30
    while len(stub.scripted) < 2:
        assert time.monotonic() < deadline, f"not woken: {world.status(mid)[mid].wake}"
        time.sleep(0.1)
    wake = world.status(mid)[mid].wake
    assert wake is not None and (wake.via, wake.outcome) == ("inbox", "queued"), wake
    nudge = "[claude-peers] new message from carol; call check_messages to read and reply."
    texts = [text for _, _, text in blocks(stub.scripted[1])]
    assert any(nudge in text for text in texts), texts[-3:]
    assert world.status(mid)[mid].state in ("queued", "delivered")  # hooks may show it
    ui.wait_for("Nudged: I will check my mail.")
