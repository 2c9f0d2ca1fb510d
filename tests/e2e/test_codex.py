"""The real Codex CLI (``codex exec``) wired by ``peers install codex``, with a scripted model.

Codex runs the hooks from ``$CODEX_HOME/hooks.json`` only once they are trusted; the
tests pass ``--dangerously-bypass-hook-trust``. MCP tool calls need
``default_tools_approval_mode = "approve"`` with ``approval_policy = "never"``.
"""

from __future__ import annotations

import html

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, World
from .model_stub import Recorded, ResponsesStub, Turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT)]


def rendered(msg_id: str, sender: str, text: str) -> list[str]:
    return [
        f'Message {msg_id} from peer "{sender}"',
        f"> {text}",
        f'send_message with to="{sender}" and reply_to="{msg_id}"',
    ]


def developer_after(req: Recorded, start: int) -> list[tuple[int, str]]:
    """(input index, text) of the developer messages from input item ``start`` on."""
    found = []
    for i, item in enumerate(req.inputs()):
        if i >= start and item.get("type") == "message" and item.get("role") == "developer":
            found.append((i, "\n".join(c.get("text", "") for c in item.get("content") or [])))
    return found


def index_of(req: Recorded, kind: str, **match: str) -> int:
    for i, item in enumerate(req.inputs()):
        if item.get("type") == kind and all(item.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {kind} {match} in the request")


def test_codex_gets_mail_through_its_hooks_and_check_messages(world: World) -> None:
    """Every path into a Codex session: mail that waited for it (first turn's hook
    context), mail during the turn (PostToolUse, a developer message before the tool
    output), check_messages (the tool output), and the Stop hook (a hook prompt that
    makes the session go on once)."""
    sent: dict[str, str] = {}
    texts = {
        "early": "EARLY: the build is broken on main",
        "hooked": "HOOKED: I am in auth.py right now",
        "checked": "CHECKED: the API moved to port 8081",
        "stopped": "STOPPED: can you review my branch",
    }

    def send(key: str) -> None:
        sent[key] = carol.request(p.Send, to="bravo", text=texts[key]).message_id

    def first(req: Recorded) -> Turn:
        world.wait_peer("bravo", "codex")
        send("hooked")
        return Turn.call(f"mcp__{SERVER}__whoami")

    def second(req: Recorded) -> Turn:
        send("checked")
        return Turn.call(f"mcp__{SERVER}__check_messages", history=0)

    def third(req: Recorded) -> Turn:
        send("stopped")
        return Turn.say("Done with my task.")

    script = [first, second, third, Turn.say("Read carol's request; will review later.")]
    stub = world.stub(ResponsesStub(script, name="codex bravo"))
    world.install_codex(stub)
    carol = world.fake_peer("carol", client="claude-code")
    world.gone_peer("bravo", "codex")
    send("early")

    run = world.codex(world.workdir("bravo"), "Do your task.").check()
    messages = [
        e["item"]["text"]
        for e in run.events()
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages[-1] == "Read carol's request; will review later."

    reqs = stub.scripted
    assert len(reqs) == 4
    # 1. Mail that waited for the session: hook context (a developer message) in the
    #    first request. (Codex has its MCP server up before SessionStart, so that hook
    #    already finds the session.)
    early = [text for _, text in developer_after(reqs[0], 1) if texts["early"] in text]
    assert len(early) == 1, "the waiting mail is not in the first request"
    for piece in rendered(sent["early"], "carol", texts["early"]):
        assert piece in early[0], piece
    # 2. PostToolUse: a developer message between the call and its output.
    call_at = index_of(reqs[1], "function_call", name="whoami")
    output_at = index_of(
        reqs[1], "function_call_output", call_id=reqs[1].inputs()[call_at]["call_id"]
    )
    hooked = [(i, t) for i, t in developer_after(reqs[1], call_at) if texts["hooked"] in t]
    assert hooked and call_at < hooked[0][0] < output_at
    for piece in rendered(sent["hooked"], "carol", texts["hooked"]):
        assert piece in hooked[0][1], piece
    # 3. check_messages: the mail is in the tool's output.
    call_at = index_of(reqs[2], "function_call", name="check_messages")
    assert reqs[2].inputs()[call_at].get("namespace") == "mcp__claude_peers"
    outputs = reqs[2].function_outputs()
    assert texts["checked"] in outputs[-1]
    assert sent["checked"] in outputs[-1]
    # 4. Stop: the blocked stop becomes a user message <hook_prompt …> with the mail;
    #    Codex escapes it as HTML ("> " arrives as "&gt; ").
    prompts = [t for t in reqs[3].role_texts("user") if t.startswith("<hook_prompt")]
    assert len(prompts) == 1
    # ... and only there: the mail reaches the model once.
    header = html.escape(f'Message {sent["stopped"]} from peer "carol"', quote=False)
    everything = reqs[3].role_texts("user") + reqs[3].role_texts("developer")
    assert sum(t.count(header) for t in everything) == 1
    assert reqs[3].text().count(texts["stopped"]) == 1
    for piece in rendered(sent["stopped"], "carol", texts["stopped"]):
        assert html.escape(piece, quote=False) in prompts[0], piece
    stops = world.hook_inputs("Stop")
    assert [h["stop_hook_active"] for h in stops] == [False, True]

    status = world.status(*sent.values())
    via = {key: (status[mid].state, status[mid].delivered_via) for key, mid in sent.items()}
    assert via == {
        "early": ("delivered", "hook"),
        "hooked": ("delivered", "hook"),
        "checked": ("delivered", "check"),
        "stopped": ("delivered", "hook"),
    }
    # Codex names MCP tools mcp__<server>__<tool> in hook input, with the server name
    # sanitized as in its tool namespace ("claude-peers" becomes "claude_peers").
    assert [h["tool_name"] for h in world.hook_inputs("PostToolUse")] == [
        "mcp__claude_peers__whoami",
        "mcp__claude_peers__check_messages",
    ]
