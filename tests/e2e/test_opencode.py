"""The real opencode (``opencode run``) wired by ``peers install opencode``, with a scripted model.

The stub speaks the OpenAI Chat Completions API; opencode reaches it as an
OpenAI-compatible provider (``provider.stub.options.baseURL`` in ``opencode.json``,
``World.install_opencode``). Our MCP tools run without a confirmation (opencode allows
them by default). What the model is shown is read from the requests the stub recorded;
what was delivered, and how, from the daemon.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World
from .model_stub import ChatStub, Recorded, Turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]

WHOAMI = f"{SERVER}_whoami"
SEND = f"{SERVER}_send_message"
"""How opencode offers our tools to the model (``<server>_<tool>``)."""


def tool_outputs(req: Recorded) -> list[str]:
    """The text of every tool result in the conversation, oldest first."""
    return [str(m.get("content")) for m in req.body["messages"] if m.get("role") == "tool"]


def count(req: Recorded, text: str) -> int:
    """How often ``text`` occurs in what the model reads of the conversation."""
    return sum(str(m.get("content") or "").count(text) for m in req.body["messages"])


def test_opencode_gets_mail_after_its_tools_and_answers_with_send_message(
    opencode_world: World,
) -> None:
    """Mail that waited for the session reaches the model with the result of its first tool
    (the plugin's ``tool.execute.after``), once; the session is an ``opencode`` peer; the
    model answers with our MCP send_message and the sender gets the reply. Mail that
    arrives during that call comes with its result. Mail that arrives as the model
    finishes stays queued: ``opencode run`` exits at idle, so the plugin does not prompt
    (the mail would be lost), and the next session takes it."""
    world = opencode_world
    stub = world.stub(ChatStub([], name="opencode oscar"))
    world.install_opencode(stub)
    carol = world.fake_peer("carol", client="claude-code")
    world.gone_peer("oscar", "opencode")
    sent = {"question": "QUESTION: which port does the API use now?"}
    sent.update(during="DURING: I am in auth.py now", after="AFTER: can you review my branch")
    ids = {"question": carol.request(p.Send, to="oscar", text=sent["question"]).message_id}
    answer = "ANSWER: 8081, since this morning"
    seen: dict[str, p.Peer] = {}

    def send(key: str) -> None:
        ids[key] = carol.request(p.Send, to="oscar", text=sent[key]).message_id

    def first(req: Recorded) -> Turn:
        seen["peer"] = world.wait_peer("oscar", "opencode")
        return Turn.call(f"mcp__{SERVER}__whoami")

    def second(req: Recorded) -> Turn:
        send("during")
        return Turn.call(
            f"mcp__{SERVER}__send_message", to="carol", message=answer, reply_to=ids["question"]
        )

    def third(req: Recorded) -> Turn:
        send("after")
        return Turn.say("Answered carol.")

    stub.script = [first, second, third]
    run = world.opencode(world.workdir("oscar"), "Do your task.").check()
    assert "Answered carol." in run.stdout

    reqs = stub.scripted
    assert len(reqs) == 3
    assert {WHOAMI, SEND} <= set(ChatStub.declared(reqs[0].body))
    # 1. The waiting mail: not in the first request (no prompt-time hook in `run`), then
    #    with the whoami result, after what the tool said, with a reply hint in opencode's
    #    tool names.
    assert count(reqs[0], sent["question"]) == 0
    outputs = tool_outputs(reqs[1])
    assert len(outputs) == 1
    header = f'Message {ids["question"]} from peer "carol"'
    assert outputs[0].index("oscar") < outputs[0].index(header)
    assert f'call the tool {SEND} with to="carol"' in outputs[0]
    # 2. Mail during send_message: in its result.
    outputs = tool_outputs(reqs[2])
    assert len(outputs) == 2 and sent["during"] in outputs[1]
    for key in ("question", "during"):
        assert count(reqs[2], f'Message {ids[key]} from peer "carol"') == 1, key
        assert count(reqs[2], sent[key]) == 1, key

    status = world.status(*ids.values())
    assert (status[ids["question"]].state, status[ids["question"]].delivered_via) == (
        "delivered",
        "hook",
    )
    assert (status[ids["during"]].state, status[ids["during"]].delivered_via) == (
        "delivered",
        "hook",
    )
    # 3. Mail as the model finished: `opencode run` ends at idle; nothing is claimed.
    assert status[ids["after"]].state == "queued"
    assert seen["peer"].client == "opencode"
    replies = [m for m in world.history("carol") if m.sender_name == "oscar"]
    assert [(m.text, m.reply_to) for m in replies] == [(answer, ids["question"])]


def post(url: str, body: dict[str, object], timeout: float = 60.0) -> object:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


def test_opencode_going_idle_gets_the_mail_as_a_new_prompt(opencode_world: World) -> None:
    """A long-lived opencode (``opencode serve``, as behind its TUI): mail that arrives
    during a turn that uses no tool reaches the model when the session goes idle: the
    plugin's ``session.idle`` handler sends it as a new prompt, once, and the session
    answers it with send_message."""
    world = opencode_world
    stub = world.stub(ChatStub([], name="opencode olga"))
    world.install_opencode(stub)
    carol = world.fake_peer("carol", client="claude-code")
    late = "LATE: is the release branch frozen?"
    ids: dict[str, str] = {}

    def first(req: Recorded) -> Turn:
        world.wait_peer("olga", "opencode")
        ids["late"] = carol.request(p.Send, to="olga", text=late).message_id
        return Turn.say("Done with the task.")

    def second(req: Recorded) -> Turn:
        return Turn.call(
            f"mcp__{SERVER}__send_message", to="carol", message="Yes, frozen.", reply_to=ids["late"]
        )

    stub.script = [first, second, Turn.say("Replied to carol.")]
    serve, url = world.opencode_serve(world.workdir("olga"))
    session = post(f"{url}/session", {})
    assert isinstance(session, dict)
    post(f"{url}/session/{session['id']}/message", {"parts": [{"type": "text", "text": "Go."}]})
    deadline = time.monotonic() + 60
    while len(stub.scripted) < 3 or world.status(ids["late"])[ids["late"]].state != "delivered":
        assert time.monotonic() < deadline, "the idle prompt did not come"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while not [m for m in world.history("carol") if m.sender_name == "olga"]:
        assert time.monotonic() < deadline, "no reply"
        time.sleep(0.2)
    serve.kill()
    serve.proc.wait()

    reqs = stub.scripted
    assert count(reqs[0], late) == 0
    users = [m for m in reqs[1].body["messages"] if m.get("role") == "user"]
    assert late in str(users[-1]["content"])  # the prompt the plugin sent
    assert count(reqs[1], f'Message {ids["late"]} from peer "carol"') == 1
    assert count(reqs[2], late) == 1
    status = world.status(ids["late"])[ids["late"]]
    assert (status.state, status.delivered_via) == ("delivered", "hook")
    replies = [m for m in world.history("carol") if m.sender_name == "olga"]
    assert [(m.text, m.reply_to) for m in replies] == [("Yes, frozen.", ids["late"])]
