"""The real Gemini CLI (``gemini -p``) wired by ``peers install gemini``, with a scripted model.

The stub speaks the Gemini API; the CLI reaches it through ``GOOGLE_GEMINI_BASE_URL``
with the API-key auth selected in ``~/.gemini/settings.json`` (``World.install_gemini``)
and ``GEMINI_CLI_TRUST_WORKSPACE``. ``--yolo`` lets the MCP tools run without a
confirmation, which a headless run cannot give. What the model is shown is read from the
requests the stub recorded; what was delivered, and how, from the daemon.
"""

from __future__ import annotations

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World
from .model_stub import GeminiStub, Recorded, Turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]

SEND = f"mcp_{SERVER}_send_message"
"""How Gemini CLI declares our send_message tool to the model (and names it to hooks)."""


def parts(req: Recorded) -> list[tuple[int, dict[str, object]]]:
    """(content index, part) of every part of the conversation, in order."""
    return [
        (i, part)
        for i, content in enumerate((req.body or {}).get("contents") or [])
        for part in content.get("parts") or []
    ]


def shown(part: dict[str, object]) -> str:
    """What the model reads of a part: its text, or a function response's output (where
    Gemini CLI appends AfterTool's additional context)."""
    response = part.get("functionResponse")
    if isinstance(response, dict):
        return str((response.get("response") or {}).get("output", ""))
    return str(part.get("text", ""))


def count(req: Recorded, text: str) -> int:
    """How often ``text`` occurs in what the model reads of the conversation."""
    return sum(shown(part).count(text) for _, part in parts(req))


def test_gemini_gets_mail_by_hook_and_answers_with_send_message(gemini_world: World) -> None:
    """Mail that waited for the session reaches the model once, by hook (BeforeAgent), in
    the first request; the session is a ``gemini`` peer; the model answers with our MCP
    send_message (a ``functionCall``) and the sender gets the reply. Mail that arrives
    during the tool call comes with its result (AfterTool); mail that arrives as the
    model finishes keeps the session going once (AfterAgent ``deny``), and each message
    is in the conversation exactly once."""
    world = gemini_world
    world.install_gemini()
    carol = world.fake_peer("carol", client="claude-code")
    world.gone_peer("golf", "gemini")
    sent = {"question": "QUESTION: which port does the API use now?"}
    sent.update(during="DURING: I am in auth.py now", after="AFTER: can you review my branch")
    ids = {"question": carol.request(p.Send, to="golf", text=sent["question"]).message_id}
    answer = "ANSWER: 8081, since this morning"
    seen: dict[str, p.Peer] = {}

    def send(key: str) -> None:
        ids[key] = carol.request(p.Send, to="golf", text=sent[key]).message_id

    def first(req: Recorded) -> Turn:
        seen["peer"] = world.wait_peer("golf", "gemini")
        send("during")
        tool = f"mcp__{SERVER}__send_message"  # the stub turns it into Gemini's name
        return Turn.call(tool, to="carol", message=answer, reply_to=ids["question"])

    def second(req: Recorded) -> Turn:
        send("after")
        return Turn.say("Answered carol.")

    script = [first, second, Turn.say("Read carol's request; will review later.")]
    stub = world.stub(GeminiStub(script, name="gemini golf"))
    run = world.gemini(stub, world.workdir("golf"), "Do your task.").check()
    assert "Read carol's request; will review later." in run.stdout

    reqs = stub.scripted
    assert len(reqs) == 3
    # Our tools are offered as mcp_<server>_<tool>, and the model's call ran.
    assert SEND in GeminiStub.declared(reqs[0].body)
    calls = [part["functionCall"] for _, part in parts(reqs[1]) if "functionCall" in part]
    assert [c["name"] for c in calls] == [SEND]  # type: ignore[index]
    # 1. The waiting mail: in the first request, once, with a reply hint in Gemini's
    #    spelling; Gemini CLI escapes the hook context ("> " arrives as "&gt; ").
    header = f'Message {ids["question"]} from peer "carol"'
    assert count(reqs[0], header) == 1
    assert count(reqs[0], f"&gt; {sent['question']}") == 1
    assert count(reqs[0], f'call the tool {SEND} with to="carol"') == 1
    # 2. Mail during the tool call: in the function's response (AfterTool context),
    #    after what the tool itself said.
    assert count(reqs[0], sent["during"]) == 0
    responses = [shown(part) for _, part in parts(reqs[1]) if "functionResponse" in part]
    assert len(responses) == 1
    assert responses[0].index("Sent ") < responses[0].index(f"&gt; {sent['during']}")
    # 3. Mail as the model finished: AfterAgent "deny" makes it the next prompt.
    assert count(reqs[1], sent["after"]) == 0
    # ... and every message reaches the model exactly once, in every later request too.
    last = reqs[-1]
    for key, text in sent.items():
        assert count(last, f'Message {ids[key]} from peer "carol"') == 1, key
        assert count(last, text) == 1, key
    assert last.text().count(sent["after"]) == 1

    status = world.status(*ids.values())
    assert {k: (status[m].state, status[m].delivered_via) for k, m in ids.items()} == {
        k: ("delivered", "hook") for k in ids
    }
    assert seen["peer"].client == "gemini"
    replies = [m for m in world.history("carol") if m.sender_name == "golf"]
    assert [(m.text, m.reply_to) for m in replies] == [(answer, ids["question"])]
    # Gemini's hook inputs: session_id on every event, the MCP tool named as declared,
    # and stop_hook_active on the AfterAgent that the deny caused.
    hooks = world.hook_inputs()
    assert [h["hook_event_name"] for h in hooks] == [
        "SessionStart",
        "BeforeAgent",
        "AfterTool",
        "AfterAgent",
        "BeforeAgent",
        "AfterAgent",
    ]
    assert len({h["session_id"] for h in hooks}) == 1 and hooks[0]["session_id"]
    assert world.hook_inputs("AfterTool")[0]["tool_name"] == SEND
    assert [h["stop_hook_active"] for h in world.hook_inputs("AfterAgent")] == [False, True]
