"""The real GitHub Copilot CLI (``copilot -p``) wired by ``peers install copilot``, with a
scripted model.

Copilot CLI runs offline with a model of your own (``COPILOT_OFFLINE=true``,
``COPILOT_PROVIDER_BASE_URL``, ``COPILOT_MODEL``: an OpenAI Chat Completions endpoint, here
``ChatStub``), without a GitHub sign-in. ``--allow-all-tools`` lets the MCP tools run
without a confirmation. What the model is shown is read from the requests the stub
recorded; what was delivered, and how, from the daemon; the hook inputs from a recording
hook installed beside ours.
"""

from __future__ import annotations

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World
from .model_stub import ChatStub, Recorded, Turn, block_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]

SEND = f"{SERVER}-send_message"
"""How Copilot CLI offers our tools to the model (``<server>-<tool>``)."""


def texts(req: Recorded, role: str | None = None) -> list[str]:
    """The text of each message of the conversation (of one role), oldest first."""
    return [
        block_text(m.get("content") or "")
        for m in req.body["messages"]
        if role is None or m.get("role") == role
    ]


def count(req: Recorded, text: str) -> int:
    return sum(t.count(text) for t in texts(req))


def test_copilot_gets_mail_after_tools_and_at_stop_and_answers(copilot_world: World) -> None:
    """Mail that waited reaches the model after its first tool (``postToolUse``
    ``additionalContext``), once; mail during a tool call comes after that tool; mail that
    arrives as the model finishes blocks the stop (``agentStop`` ``decision: block``) and
    becomes the next prompt; every message is in the conversation exactly once; the session
    is a ``copilot`` peer and its reply reaches the sender."""
    world = copilot_world
    world.install_copilot()
    carol = world.fake_peer("carol", client="claude-code")
    world.gone_peer("cody", "copilot")
    sent = {"question": "QUESTION: which port does the API use now?"}
    sent.update(during="DURING: I am in auth.py now", after="AFTER: can you review my branch")
    ids = {"question": carol.request(p.Send, to="cody", text=sent["question"]).message_id}
    answer = "ANSWER: 8081, since this morning"
    seen: dict[str, p.Peer] = {}

    def send(key: str) -> None:
        ids[key] = carol.request(p.Send, to="cody", text=sent[key]).message_id

    def first(req: Recorded) -> Turn:
        seen["peer"] = world.wait_peer("cody", "copilot")
        return Turn.call(f"mcp__{SERVER}__whoami")

    def second(req: Recorded) -> Turn:
        send("during")
        return Turn.call(
            f"mcp__{SERVER}__send_message", to="carol", message=answer, reply_to=ids["question"]
        )

    def third(req: Recorded) -> Turn:
        send("after")
        return Turn.say("Answered carol.")

    script = [first, second, third, Turn.say("Read carol's request; will review later.")]
    stub = world.stub(ChatStub(script, name="copilot cody"))
    run = world.copilot(stub, world.workdir("cody"), "Do your task.").check()
    assert "Read carol's request; will review later." in run.stdout

    reqs = stub.scripted
    assert len(reqs) == 4
    assert SEND in ChatStub.declared(reqs[0].body)
    # 1. The waiting mail: after the first tool's result, with a reply hint in Copilot's
    #    tool names.
    assert count(reqs[0], sent["question"]) == 0
    header = f'Message {ids["question"]} from peer "carol"'
    tools = texts(reqs[1], "tool")
    assert len(tools) == 1 and tools[0].index("cody") < tools[0].index(header)
    assert f'call the tool {SEND} with to="carol"' in tools[0]
    # 2. Mail during send_message: after its result.
    assert sent["during"] in texts(reqs[2], "tool")[-1]
    # 3. Mail as the model finished: the stop is blocked and it is the next prompt.
    assert count(reqs[2], sent["after"]) == 0
    assert sent["after"] in texts(reqs[3], "user")[-1]
    for key, text in sent.items():
        assert count(reqs[3], f'Message {ids[key]} from peer "carol"') == 1, key
        assert count(reqs[3], text) == 1, key

    status = world.status(*ids.values())
    assert {k: (status[m].state, status[m].delivered_via) for k, m in ids.items()} == {
        k: ("delivered", "hook") for k in ids
    }
    assert seen["peer"].client == "copilot"
    replies = [m for m in world.history("carol") if m.sender_name == "cody"]
    assert [(m.text, m.reply_to) for m in replies] == [(answer, ids["question"])]
    # Copilot's camelCase inputs: sessionId everywhere, no event name; the second agentStop
    # (after our block) says stop_hook_active.
    hooks = world.hook_inputs()
    assert len({h["sessionId"] for h in hooks}) == 1
    assert [h["toolName"] for h in hooks if "toolResult" in h] == [
        f"{SERVER}-whoami",
        SEND,
    ]
    stops = [h for h in hooks if "stopReason" in h]
    assert [h["stop_hook_active"] for h in stops] == [False, True]
    assert not any("hook_event_name" in h for h in hooks)
