"""Two real sessions, Claude Code and Codex, exchange a question and an answer.

Nobody relays anything: the Codex session waits for mail with ``wait_for_message``, the
Claude Code session asks with ``send_message`` and waits for the reply to its message;
the Codex session answers with ``send_message`` and ``reply_to``. Both scripted models
read the ids and names they use from what their client showed them.
"""

from __future__ import annotations

import re

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World, message_ids
from .model_stub import AnthropicStub, Recorded, ResponsesStub, Turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]

SENDER = re.compile(r'"sender_name":\s*"([^"]+)"|from peer "([^"]+)"')


def sender_of(text: str) -> str:
    found = SENDER.search(text)
    assert found, f"no sender in {text!r}"
    return found.group(1) or found.group(2)


def test_claude_code_and_codex_exchange_a_question_and_an_answer(world: World) -> None:
    question = "QUESTION: which port does the API listen on?"
    answer = "ANSWER: port 8081, since this morning"
    seen: dict[str, str] = {}

    # The Codex session "bravo": wait for mail, then answer whoever asked.
    def bravo_answers(req: Recorded) -> Turn:
        got = req.function_outputs()[-1]
        seen["bravo got"] = got
        return Turn.call(
            f"mcp__{SERVER}__send_message",
            to=sender_of(got),
            message=answer,
            reply_to=message_ids(got)[0],
        )

    bravo_stub = world.stub(
        ResponsesStub(
            [
                Turn.call(f"mcp__{SERVER}__wait_for_message", timeout_seconds=60),
                bravo_answers,
                Turn.say("Answered alpha."),
            ],
            name="codex bravo",
        )
    )

    # The Claude Code session "alpha": ask bravo, then wait for the reply to that message
    # (unless it already came with the tool result, through the PostToolUse hook).
    def alpha_waits(req: Recorded) -> Turn:
        seen["question"] = message_ids(req.last_tool_result_text())[0]
        if answer in req.text():
            return Turn.say("bravo says: port 8081.")
        return Turn.call(
            f"mcp__{SERVER}__wait_for_message", reply_to=seen["question"], timeout_seconds=60
        )

    alpha_stub = world.stub(
        AnthropicStub(
            [
                Turn.call(f"mcp__{SERVER}__send_message", to="bravo", message=question),
                alpha_waits,
                Turn.say("bravo says: port 8081."),
            ],
            name="claude alpha",
        )
    )

    world.install_claude()
    world.install_codex(bravo_stub)
    bravo = world.codex(world.workdir("bravo"), "Wait for a question from a peer and answer it.")
    world.wait_peer("bravo", "codex", run=bravo)
    alpha = world.claude(
        alpha_stub,
        world.workdir("alpha"),
        "Ask bravo which port the API uses.",
        ["send_message", "wait_for_message"],
    )
    alpha.check()
    bravo.check()
    assert alpha.result()["result"] == "bravo says: port 8081."

    # bravo's model saw the question, from alpha, as the result of wait_for_message.
    assert question in seen["bravo got"]
    assert sender_of(seen["bravo got"]) == "alpha"
    assert seen["question"] in seen["bravo got"]
    # alpha's model saw the answer in its last request.
    last = alpha_stub.scripted[-1]
    assert answer in last.text()

    # The daemon agrees: both delivered to the model that was meant to read them.
    history = world.history("alpha")
    reply = [m for m in history if m.sender_name == "bravo"]
    assert len(reply) == 1
    assert (reply[0].text, reply[0].reply_to) == (answer, seen["question"])
    status = world.status(seen["question"], reply[0].id)
    q, r = status[seen["question"]], status[reply[0].id]
    assert (q.state, q.to_name, q.delivered_via) == ("delivered", "bravo", "wait")
    assert (r.state, r.to_name) == ("delivered", "alpha")
    assert r.delivered_via in ("wait", "hook")
    assert bravo_stub.left() == 0
    # Nothing else was sent, and nothing waits.
    pending = world.cli.request(p.ListPeers, scope="machine", include_gone=True).peers
    assert {x.name: x.pending for x in pending} == {"alpha": 0, "bravo": 0}
