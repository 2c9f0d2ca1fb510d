"""The real Claude Code wired by ``peers install claude``, with a scripted model.

Print mode (``claude -p``) for the hooks and tools; the terminal UI, in a private tmux
server, for the idle wake. What the model is shown is read from the requests the stub
recorded; what was delivered, and how, from the daemon.
"""

from __future__ import annotations

import time

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World
from .model_stub import AnthropicStub, Recorded, Turn, block_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]

PROMPT = "\u276f"
"""The input prompt of Claude Code's terminal UI: the session is ready for typing."""
WAKE_HOLD = 25.0
"""``claude -p`` waits about 30 s for a pending async hook before it exits; a run that
takes this long means the idle-wake hook held it."""


def rendered(msg_id: str, sender: str, text: str) -> list[str]:
    """The pieces of ``render.message`` a model must see for one message."""
    return [
        f'Message {msg_id} from peer "{sender}"',
        f"> {text}",
        f'mcp__{SERVER}__send_message with to="{sender}" and reply_to="{msg_id}"',
    ]


def blocks(req: Recorded) -> list[tuple[int, str, str]]:
    """(message index, block type, text) of every content block of the conversation."""
    found = []
    for i, msg in enumerate(req.messages()):
        content = msg.get("content")
        for block in content if isinstance(content, list) else [content]:
            kind = block.get("type") if isinstance(block, dict) else "text"
            found.append((i, str(kind), block_text(block)))
    return found


def test_mail_reaches_claude_code_at_the_first_turn_and_after_a_tool_call(world: World) -> None:
    """Mail that waited for the session is in the first request; mail that arrives while
    the session works is next to the next tool result (PostToolUse hook). Both count as
    delivered via "hook" only because the model really got them."""
    world.install_claude()
    carol = world.fake_peer("carol")
    world.gone_peer("alpha", "claude-code")
    early_text = "EARLY: the API moved to port 8081"
    early = carol.request(p.Send, to="alpha", text=early_text).message_id
    late_text = "LATE: please leave auth.py alone for now"
    sent: dict[str, str] = {}

    def first(req: Recorded) -> Turn:
        world.wait_peer("alpha", "claude-code")
        sent["late"] = carol.request(p.Send, to="alpha", text=late_text).message_id
        return Turn.call(f"mcp__{SERVER}__whoami")

    stub = world.stub(AnthropicStub([first, Turn.say("All done.")], name="claude alpha"))
    run = world.claude(stub, world.workdir("alpha"), "Say who you are.", ["whoami"]).check()
    assert run.result()["result"] == "All done."

    reqs = stub.scripted
    assert len(reqs) == 2
    # 1. The waiting mail is in the first request, as hook context before the model's
    #    first answer. (SessionStart runs before the MCP server has registered the
    #    session, so it is the UserPromptSubmit hook that delivers it.)
    contexts = [
        text
        for _, _, text in blocks(reqs[0])
        if "UserPromptSubmit hook additional context" in text
        or "SessionStart hook additional context" in text
    ]
    assert len(contexts) == 1, "no SessionStart / UserPromptSubmit context in the first request"
    for piece in rendered(early, "carol", early_text):
        assert piece in contexts[0], piece
    assert late_text not in reqs[0].text()
    # 2. The mail that came during the turn is next to the tool result, labelled as
    #    the PostToolUse hook's context, after the tool_result it belongs to.
    second = blocks(reqs[1])
    tool_at = next(i for i, kind, _ in second if kind == "tool_result")
    label = f"PostToolUse:mcp__{SERVER}__whoami hook additional context"
    hooked = [(i, text) for i, kind, text in second if label in text]
    assert hooked, f"no {label!r} in the second request"
    at, context = hooked[0]
    assert at >= tool_at
    for piece in rendered(sent["late"], "carol", late_text):
        assert piece in context, piece
    assert early_text not in context  # shown once, not again
    assert reqs[1].text().count(late_text) == 1

    # Both delivered by the hook, and only now.
    status = world.status(early, sent["late"])
    assert {s.state for s in status.values()} == {"delivered"}
    assert {s.delivered_via for s in status.values()} == {"hook"}
    assert {s.to_name for s in status.values()} == {"alpha"}

    # What Claude Code passed to the hooks: one session id, MCP tool names in full.
    inputs = world.hook_inputs()
    assert {h["session_id"] for h in inputs} == {run.result()["session_id"]}
    assert [h["tool_name"] for h in world.hook_inputs("PostToolUse")] == [f"mcp__{SERVER}__whoami"]
    assert run.duration < WAKE_HOLD, "the idle-wake hook held claude -p until it was killed"


def test_stop_hook_makes_claude_code_answer_mail_once(world: World) -> None:
    """Mail waiting when the model wants to stop keeps the session going: it reads the
    mail once (the Stop hook's additionalContext) and answers. The second Stop arrives with
    stop_hook_active and does not block again, even with new mail waiting."""
    world.install_claude()
    carol = world.fake_peer("carol")
    question = "QUESTION: which port does the API listen on?"
    answer = "ANSWER: port 8081, since this morning"
    later = "LATER: one more thing when you have time"
    sent: dict[str, str] = {}

    def finish(req: Recorded) -> Turn:
        world.wait_peer("alpha", "claude-code")
        sent["question"] = carol.request(p.Send, to="alpha", text=question).message_id
        return Turn.say("Finished my task.")

    def reply(req: Recorded) -> Turn:
        return Turn.call(
            f"mcp__{SERVER}__send_message",
            to="carol",
            message=answer,
            reply_to=sent["question"],
        )

    def stop_again(req: Recorded) -> Turn:
        sent["later"] = carol.request(p.Send, to="alpha", text=later).message_id
        return Turn.say("Answered carol.")

    stub = world.stub(AnthropicStub([finish, reply, stop_again], name="claude alpha"))
    run = world.claude(stub, world.workdir("alpha"), "Do your task.", ["send_message"]).check()
    assert run.result()["result"] == "Answered carol."

    # Three model requests: the first answer, the continuation the Stop hook forced,
    # and the one after the reply. No fourth: the second Stop did not block.
    reqs = stub.scripted
    assert len(reqs) == 3
    # The mail is in the continuation request exactly once, as the Stop hook's context
    # (a blocking reason was shown twice: "Stop hook feedback:" and "Stop hook blocking
    # error from command: ...").
    header = f'Message {sent["question"]} from peer "carol"'
    shown = [text for _, _, text in blocks(reqs[1]) if header in text]
    assert sum(text.count(header) for _, _, text in blocks(reqs[1])) == 1, shown
    assert sum(text.count(question) for _, _, text in blocks(reqs[1])) == 1, shown
    assert "Stop hook additional context" in shown[0]
    assert "blocking error" not in reqs[1].text()
    for piece in rendered(sent["question"], "carol", question):
        assert piece in shown[0], piece
    assert sum(text.count(header) for _, _, text in blocks(reqs[2])) == 1
    assert not any(later in r.text() for r in reqs)

    stops = world.hook_inputs("Stop")
    assert [h["stop_hook_active"] for h in stops] == [False, True]

    status = world.status(sent["question"], sent["later"])
    assert status[sent["question"]].state == "delivered"
    assert status[sent["question"]].delivered_via == "hook"
    # The mail that came during the last turn waits for the next session: not shown,
    # so not delivered (neither the guarded Stop hook nor the idle wake took it).
    assert status[sent["later"]].state == "queued"

    replies = [m for m in world.history("carol") if m.sender_name == "alpha"]
    assert [(m.text, m.reply_to) for m in replies] == [(answer, sent["question"])]
    assert run.duration < WAKE_HOLD, "the idle-wake hook held claude -p until it was killed"


def test_idle_wake_brings_mail_to_an_idle_interactive_session(world: World) -> None:
    """Claude Code's terminal UI, idle after its first turn: mail that arrives then wakes
    it (the async Stop hook ``peers-hook --wait`` exits 2, ``asyncRewake``), and the model
    gets the mail at once. Counts as delivered via "wake"."""
    world.install_claude()
    carol = world.fake_peer("carol")
    wake_text = "WAKE: are you still on the auth refactor?"
    stub = world.stub(
        AnthropicStub(
            [Turn.say("Hi. Idle now."), Turn.say("Woke up for carol's mail.")],
            name="claude alpha (interactive)",
        )
    )
    cwd = world.workdir("alpha")
    ui = world.claude_interactive(stub, cwd)
    ui.wait_for(PROMPT)
    ui.type("Say hi")
    # The first turn ends; the Stop hooks run and the idle-wake hook starts waiting.
    deadline = time.monotonic() + 30
    while not world.hook_inputs("Stop"):
        assert time.monotonic() < deadline, "the first turn never stopped"
        time.sleep(0.1)
    alpha = world.wait_peer("alpha", "claude-code")
    lock = world.daemon.settings.run_dir / f"peers-hook-wait.{alpha.id}.lock"
    while not lock.exists():
        assert time.monotonic() < deadline, "the idle-wake hook never started waiting"
        time.sleep(0.1)
    time.sleep(0.5)
    assert len(stub.scripted) == 1

    mid = carol.request(p.Send, to="alpha", text=wake_text).message_id
    deadline = time.monotonic() + 30
    while len(stub.scripted) < 2:
        assert time.monotonic() < deadline, "the idle session was not woken"
        time.sleep(0.1)
    woken = stub.scripted[1]
    # Shown once (asyncRewake shows the waiter's stderr as one "Stop hook blocking
    # error" reminder): the header and the text each appear once in the whole request.
    wake = [text for _, _, text in blocks(woken) if wake_text in text]
    assert len(wake) == 1
    header = f'Message {mid} from peer "carol"'
    assert sum(text.count(header) for _, _, text in blocks(woken)) == 1
    assert sum(text.count(wake_text) for _, _, text in blocks(woken)) == 1
    for piece in rendered(mid, "carol", wake_text):
        assert piece in wake[0], piece
    status = world.status(mid)[mid]
    assert (status.state, status.delivered_via) == ("delivered", "wake")
    ui.wait_for("Woke up for carol's mail.")


def test_check_messages_result_shows_the_mail_as_rendered(world: World) -> None:
    """check_messages: the mail is delivered via "check" and its text is in the tool
    result. The result should also carry the rendering (quoted data from a named peer,
    the reply instruction); while the server attaches structured content, Claude Code
    shows the model that JSON instead, and this test reports it as an expected failure."""
    world.install_claude()
    carol = world.fake_peer("carol")
    text = "CHECK: the staging database is read-only until noon"
    sent: dict[str, str] = {}

    def first(req: Recorded) -> Turn:
        world.wait_peer("alpha", "claude-code")
        sent["mail"] = carol.request(p.Send, to="alpha", text=text).message_id
        return Turn.call(f"mcp__{SERVER}__check_messages", history=0)

    stub = world.stub(AnthropicStub([first, Turn.say("Noted.")], name="claude alpha"))
    world.claude(stub, world.workdir("alpha"), "Check your mail.", ["check_messages"]).check()
    reqs = stub.scripted
    assert len(reqs) == 2
    result = reqs[1].last_tool_result_text()
    assert text in result and sent["mail"] in result
    status = world.status(sent["mail"])[sent["mail"]]
    assert (status.state, status.delivered_via) == ("delivered", "check")
    missing = [piece for piece in rendered(sent["mail"], "carol", text) if piece not in result]
    if missing:
        pytest.xfail(
            "the model got check_messages' structured content (JSON), not the rendered "
            f"text: missing {missing} (peers_mcp/server.py returns structured_content)"
        )
