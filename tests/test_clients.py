"""Agent clients beyond Claude Code and Codex: ``peers-hook`` with their hook inputs.

The real hook command against a real daemon, with each client's hook input as its docs
give it (facts: shared/reference/clients-2026-12.md §3.1). A session is found the way
the real one is: its hooks run as children of the agent process (``HookAgent``), which
is registered as the peer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersd import agents, identity
from peersd import protocol as p

from .conftest import PYTHON, register
from .test_hook import (
    HookAgent,
    attempts,
    claude_input,
    hook_env,
    log_lines,
    output,
    run_hook,
)

GEMINI_SESSION = "8e6f2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def gemini_input(event: str, **over: object) -> dict[str, object]:
    """Gemini CLI's hook input for ``event`` (docs/hooks/reference.md: common fields, then
    the event's own; checked against what gemini 0.61.0 passes in tests/e2e/test_gemini.py)."""
    data: dict[str, object] = {
        "session_id": GEMINI_SESSION,
        "transcript_path": f"/tmp/.gemini/tmp/x/chats/session-{GEMINI_SESSION}.json",
        "cwd": "/tmp",
        "hook_event_name": event,
        "timestamp": "2026-12-02T08:00:00.000Z",
    }
    if event == "SessionStart":
        data["source"] = "startup"
    elif event == "BeforeAgent":
        data["prompt"] = "hello"
    elif event == "AfterAgent":
        data.update(prompt="hello", prompt_response="Done.", stop_hook_active=False)
    elif event in ("BeforeTool", "AfterTool"):
        data.update(tool_name="mcp_claude-peers_whoami", tool_input={})
        data["mcp_context"] = {"server_name": "claude-peers", "tool_name": "whoami"}
        if event == "AfterTool":
            data["tool_response"] = {"llmContent": [{"text": "You are gem."}]}
    data.update(over)
    return data


def cursor_input(event: str, **over: object) -> dict[str, object]:
    """Cursor's hook input: its common fields (no ``session_id``), lowerCamelCase events;
    ``stop`` carries ``loop_count`` (cursor.com/docs/reference/third-party-hooks)."""
    data: dict[str, object] = {
        "conversation_id": "c0ffee00-0000-4000-8000-000000000001",
        "generation_id": "9e0a0000-0000-4000-8000-000000000002",
        "model": "claude-sonnet-4",
        "hook_event_name": event,
        "cursor_version": "3.17.19",
        "workspace_roots": ["/tmp"],
        "user_email": "dev@example.org",
        "transcript_path": None,
    }
    if event in ("stop", "Stop"):
        data.update(status="completed", loop_count=0)
    elif event in ("beforeSubmitPrompt", "UserPromptSubmit"):
        data.update(prompt="hello", attachments=[])
    elif event in ("postToolUse", "PostToolUse", "preToolUse", "PreToolUse"):
        data.update(tool_name="Write", tool_input={"file_path": "/tmp/a", "content": "x"})
    data.update(over)
    return data


COPILOT_SESSION = "4b1f0e2a-9c3d-4e5f-8a7b-6c5d4e3f2a1b"


def copilot_input(event: str, **over: object) -> dict[str, object]:
    """Copilot CLI's hook input (docs.github.com cli-hooks-reference): camelCase events get
    camelCase fields and no event name; the VS Code compatible PascalCase ones snake_case
    fields with ``hook_event_name`` and ``session_id``."""
    if event[0].isupper():
        data: dict[str, object] = {
            "hook_event_name": event,
            "session_id": COPILOT_SESSION,
            "timestamp": "2026-12-02T08:00:00.000Z",
            "cwd": "/tmp",
        }
        if event == "Stop":
            data.update(transcript_path="/tmp/t.jsonl", stop_reason="end_turn")
        elif event == "PostToolUse":
            data.update(tool_name="bash", tool_input={"command": "ls"})
            data["tool_result"] = {"result_type": "success", "text_result_for_llm": "a b"}
        elif event == "SessionStart":
            data.update(source="new", initial_prompt="hello")
    else:
        data = {"sessionId": COPILOT_SESSION, "timestamp": 1796198400000, "cwd": "/tmp"}
        if event == "agentStop":
            data.update(transcriptPath="/tmp/t.jsonl", stopReason="end_turn")
        elif event == "postToolUse":
            data.update(toolName="bash", toolArgs={"command": "ls"})
            data["toolResult"] = {"resultType": "success", "textResultForLlm": "a b"}
        elif event == "sessionStart":
            data.update(source="new", initialPrompt="hello")
        elif event == "userPromptSubmitted":
            data["prompt"] = "hello"
    data.update(over)
    return data


def opencode_input(event: str, **over: object) -> dict[str, object]:
    """What our opencode plugin (``peers install opencode``) hands peers-hook."""
    data: dict[str, object] = {
        "hook_event_name": event,
        "session_id": "ses_dc9bcdf2bffeA88c32PkouUDns",
        "cwd": "/tmp",
    }
    data.update(over)
    return data


def agy_input(event: str, snake: bool = False, **over: object) -> dict[str, object]:
    """Antigravity CLI's hook input: camelCase (the migration guide: ``toolCall.name``), or
    with ``hook_event_name``/``conversation_id`` as some versions send it."""
    if snake:
        data: dict[str, object] = {
            "hook_event_name": event,
            "conversation_id": "8d3c7a52-0000-4000-8000-00000000a9a9",
        }
    else:
        data = {"hookEventName": event, "conversationId": "8d3c7a52-0000-4000-8000-00000000a9a9"}
    if event in ("PreToolUse", "PostToolUse"):
        data["toolCall"] = {"name": "run_command", "args": {"CommandLine": "ls"}}
    data.update(over)
    return data


@pytest.fixture
def host():
    agent = HookAgent()
    yield agent
    agent.close()


class Sender:
    def __init__(self, daemon, agents_) -> None:
        self.client = daemon.client("codex")
        register(self.client, agents_.spawn().pid, "codex", name="beta")

    def send(self, to: str, text: str) -> str:
        return self.client.request(p.Send, to=to, text=text).message_id

    def status(self, mid: str) -> tuple[str, str | None]:
        item = self.client.request(p.MessageStatus, message_ids=[mid]).items[0]
        return item.state, item.delivered_via


@pytest.fixture
def sender(daemon, agents):
    s = Sender(daemon, agents)
    yield s
    s.client.close()


# --------------------------------------------------------------------------- foreign input


CURSOR_PAYLOADS = [
    cursor_input(event)
    for event in (
        "sessionStart", "beforeSubmitPrompt", "preToolUse", "postToolUse", "stop",
        # Cursor running the hooks of ~/.claude/settings.json: Claude Code's event names
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop",
    )
] + [
    # the other clients' own shapes, should one of them run a hook written for Claude Code
    *(copilot_input(e) for e in ("agentStop", "postToolUse", "userPromptSubmitted")),
    *(copilot_input(e) for e in ("Stop", "PostToolUse", "SessionStart")),
    *(agy_input(e) for e in ("PreInvocation", "PostToolUse", "Stop")),
    *(agy_input(e, snake=True) for e in ("PreInvocation", "Stop")),
    *(opencode_input(e) for e in ("tool.execute.after", "session.idle")),
]  # fmt: skip


def test_unrecognised_payloads_are_ignored_before_any_connection(daemon, sender, host, tmp_path):
    """Cursor can run Claude Code's hooks with its own input. The agent it runs under is a
    registered peer with mail (the worst case: ancestry would find it), yet nothing is
    claimed, printed or logged, and no connection is even tried."""
    with daemon.client("claude-code") as c:
        register(c, host.pid, "claude-code", name="gamma")
        mid = sender.send("gamma", "not for cursor")
        for data in CURSOR_PAYLOADS:
            done = host.run(daemon, data)
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
    assert log_lines(daemon) == []
    # With a socket that does not exist, a connection attempt would log a line next to it.
    nowhere = tmp_path / "nowhere.sock"
    for data in CURSOR_PAYLOADS:
        done = run_hook(daemon, data, "--socket", str(nowhere))
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
    assert not (tmp_path / "peers-hook.log").exists()
    # the same hook with Claude Code's own input does connect (and logs that it cannot)
    run_hook(daemon, claude_input("Stop"), "--socket", str(nowhere))
    assert (tmp_path / "peers-hook.log").exists()


def test_the_idle_wake_ignores_foreign_payloads_too(daemon, sender, host):
    """Claude Code's settings.json also has the async Stop hook ``peers-hook --wait``;
    Cursor running it (Cursor has no asyncRewake) must not block on, nor take, the mail
    of the peer its ancestry reaches."""
    with daemon.client("claude-code") as c:
        register(c, host.pid, "claude-code", name="gamma")
        mid = sender.send("gamma", "not for cursor")
        for event in ("stop", "Stop"):
            start = time.monotonic()
            done = host.run(daemon, cursor_input(event), "--wait", "--max-wait", "5")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
            assert time.monotonic() - start < 4
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
    assert log_lines(daemon) == []


# --------------------------------------------------------------------------- Gemini CLI


def test_gemini_events_carry_mail_in_geminis_output_fields(daemon, sender, host):
    with daemon.client("other") as c:
        peer = register(c, host.pid, "gemini", name="gem", receive="hook")  # as peers-mcp does
        assert (peer.client, peer.receive) == ("gemini", "hook")
        listed = sender.client.request(p.ListPeers, scope="machine").peers
        assert [x.client for x in listed if x.name == "gem"] == ["gemini"]
        for event in ("SessionStart", "BeforeAgent", "AfterTool"):
            mid = sender.send("gem", f"for gemini {event}")
            out = output(host.run(daemon, gemini_input(event), "--client", "gemini"))
            assert out == {"hookSpecificOutput": out["hookSpecificOutput"]}
            spec = out["hookSpecificOutput"]
            assert set(spec) == {"hookEventName", "additionalContext"}
            assert spec["hookEventName"] == event
            assert f"> for gemini {event}" in spec["additionalContext"]
            # the reply hint names the tool as Gemini CLI declares it to the model
            hint = 'call the tool mcp_claude-peers_send_message with to="beta"'
            assert hint in spec["additionalContext"]
            assert sender.status(mid) == ("delivered", "hook")
        # AfterAgent: deny, so the reason becomes the next prompt instead of idling
        mid = sender.send("gem", "before you stop")
        out = output(host.run(daemon, gemini_input("AfterAgent"), "--client", "gemini"))
        assert set(out) == {"decision", "reason"} and out["decision"] == "deny"
        assert "> before you stop" in out["reason"]
        assert sender.status(mid) == ("delivered", "hook")
        # loop guard, events we do not serve, another client's input: nothing claimed
        mid = sender.send("gem", "wait for the next event")
        for data in (
            gemini_input("AfterAgent", stop_hook_active=True),
            gemini_input("BeforeTool"),
            gemini_input("BeforeModel"),
            gemini_input("Notification"),
            gemini_input("SessionEnd"),
            gemini_input("AfterTool", session_id=None),
            claude_input("Stop"),
        ):
            done = host.run(daemon, data, "--client", "gemini")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
        out = output(host.run(daemon, gemini_input("BeforeAgent"), "--client", "gemini"))
        assert mid in out["hookSpecificOutput"]["additionalContext"]
    assert log_lines(daemon) == []


def test_gemini_without_mail_is_silent_and_an_unknown_client_is_logged(daemon, host):
    with daemon.client("other") as c:
        register(c, host.pid, "gemini", name="gem")
        for event in ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent"):
            done = host.run(daemon, gemini_input(event), "--client", "gemini")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
        assert log_lines(daemon) == []
        done = host.run(daemon, gemini_input("BeforeAgent"), "--client", "nope")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    lines = log_lines(daemon)
    assert len(lines) == 1 and "unknown --client 'nope'" in lines[0]


def _named(tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    """A real process whose executable is called ``name`` (a copy of the interpreter)."""
    exe = tmp_path / name
    if not exe.exists():
        os.symlink(os.path.realpath(sys.executable), exe)
    return subprocess.Popen([str(exe), *args])


def test_gemini_processes_are_classified(tmp_path):
    script = tmp_path / "lib" / "node_modules" / "@google" / "gemini-cli" / "dist" / "index.js"
    script.parent.mkdir(parents=True)
    script.write_text("import time\ntime.sleep(30)\n")
    # What gemini 0.61.0 really runs: it relaunches itself as a child with a bigger heap,
    # "node --max-old-space-size=N <prefix>/bin/gemini -p ...", and that child is the
    # session (the MCP server's and the hooks' nearest agent; tests/e2e/test_gemini.py).
    relaunched = tmp_path / "bin" / "gemini"
    relaunched.parent.mkdir()
    relaunched.write_text("import time\ntime.sleep(30)\n")
    procs = [
        _named(tmp_path, "gemini", "-c", "import time; time.sleep(30)"),
        _named(tmp_path, "node", str(script)),
        _named(tmp_path, "node", "-Xutf8", str(relaunched), "-p", "hi"),
    ]
    try:
        for proc in procs:
            deadline = 50
            while agents.classify(proc.pid) != "gemini" and deadline:
                deadline -= 1
                subprocess.run([PYTHON, "-c", "pass"], check=True)  # let it exec
            assert agents.classify(proc.pid) == "gemini"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- Cursor CLI


def test_cursor_stop_carries_mail_as_a_followup_within_the_loop_limit(daemon, sender, host):
    with daemon.client("other") as c:
        peer = register(c, host.pid, "cursor", name="cur", receive="hook")
        assert (peer.client, peer.receive) == ("cursor", "hook")
        mid = sender.send("cur", "before you stop")
        out = output(host.run(daemon, cursor_input("stop"), "--client", "cursor"))
        assert set(out) == {"followup_message"}
        assert "> before you stop" in out["followup_message"]
        assert sender.status(mid) == ("delivered", "hook")
        # at the loop limit a follow-up would be dropped; a stopped turn wants none;
        # other events carry nothing; Claude-shaped input is not Cursor's
        mid = sender.send("cur", "later")
        for data in (
            cursor_input("stop", loop_count=5),
            cursor_input("stop", status="aborted"),
            cursor_input("stop", status="error"),
            cursor_input("beforeSubmitPrompt"),
            cursor_input("postToolUse"),
            cursor_input("stop", conversation_id=None),
            claude_input("Stop"),
        ):
            done = host.run(daemon, data, "--client", "cursor")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
        out = output(host.run(daemon, cursor_input("stop", loop_count=4), "--client", "cursor"))
        assert mid in out["followup_message"]
    assert log_lines(daemon) == []


def test_cursor_processes_are_classified(tmp_path):
    script = tmp_path / ".local" / "share" / "cursor-agent" / "versions" / "1" / "index.js"
    script.parent.mkdir(parents=True)
    script.write_text("import time\ntime.sleep(30)\n")
    procs = [
        _named(tmp_path, "cursor-agent", "-c", "import time; time.sleep(30)"),
        _named(tmp_path, "node", str(script)),
    ]
    try:
        for proc in procs:
            for _ in range(50):
                if agents.classify(proc.pid) == "cursor":
                    break
                subprocess.run([PYTHON, "-c", "pass"], check=True)  # let it exec
            assert agents.classify(proc.pid) == "cursor"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- Copilot CLI


def test_copilot_agentstop_blocks_and_posttooluse_adds_the_mail(daemon, sender, host):
    """``agentStop`` (camelCase, no event name) and its PascalCase ``Stop`` form carry the
    mail as ``{"decision": "block", "reason"}``, ``postToolUse`` / ``PostToolUse`` as
    ``{"additionalContext"}`` (shapes as Copilot CLI 1.0.102 sends them,
    tests/e2e/test_copilot.py); the loop guard, the events whose output Copilot CLI does not
    read for command hooks, and Claude Code's shapes claim nothing."""
    with daemon.client("other") as c:
        peer = register(c, host.pid, "copilot", name="cop", receive="hook")
        assert (peer.client, peer.receive) == ("copilot", "hook")
        for data in (copilot_input("agentStop"), copilot_input("Stop")):
            mid = sender.send("cop", "before you stop")
            out = output(host.run(daemon, data, "--client", "copilot"))
            assert set(out) == {"decision", "reason"} and out["decision"] == "block"
            assert "> before you stop" in out["reason"]
            assert sender.status(mid) == ("delivered", "hook")
        for data in (copilot_input("postToolUse"), copilot_input("PostToolUse")):
            mid = sender.send("cop", "after a tool")
            out = output(host.run(daemon, data, "--client", "copilot"))
            assert set(out) == {"additionalContext"}
            assert "> after a tool" in out["additionalContext"]
            hint = 'call the tool claude-peers-send_message with to="beta"'
            assert hint in out["additionalContext"]
            assert sender.status(mid) == ("delivered", "hook")
        mid = sender.send("cop", "later")
        for data in (
            copilot_input("agentStop", stop_hook_active=True),
            copilot_input("agentStop", stopHookActive=True),
            copilot_input("sessionStart"),
            copilot_input("userPromptSubmitted"),
            copilot_input("SessionStart"),
            copilot_input("preToolUse"),
            claude_input("PostToolUse"),
            copilot_input("agentStop", sessionId=None),
            cursor_input("stop"),
            claude_input("Stop"),
        ):
            done = host.run(daemon, data, "--client", "copilot")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
    assert log_lines(daemon) == []


# --------------------------------------------------------------------------- opencode


def test_opencode_plugin_events_carry_mail_as_context(daemon, sender, host):
    """The plugin's two events: the mail comes back as ``additionalContext`` (which the
    plugin appends to the tool's output, or sends as a prompt at idle)."""
    with daemon.client("other") as c:
        register(c, host.pid, "opencode", name="oc", receive="hook")
        for event in ("tool.execute.after", "session.idle"):
            mid = sender.send("oc", f"for opencode {event}")
            out = output(host.run(daemon, opencode_input(event), "--client", "opencode"))
            spec = out["hookSpecificOutput"]
            assert spec["hookEventName"] == event
            assert f"> for opencode {event}" in spec["additionalContext"]
            hint = 'call the tool claude-peers_send_message with to="beta"'
            assert hint in spec["additionalContext"]
            assert sender.status(mid) == ("delivered", "hook")
        mid = sender.send("oc", "later")
        for data in (
            opencode_input("tool.execute.before"),
            opencode_input("session.created"),
            opencode_input("session.idle", session_id=""),
            claude_input("PostToolUse"),
        ):
            done = host.run(daemon, data, "--client", "opencode")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
    assert log_lines(daemon) == []


# --------------------------------------------------------------------------- Antigravity CLI


def test_antigravity_preinvocation_adds_the_mail_before_the_model_call(daemon, sender, host):
    """``PreInvocation`` in either spelling (and without any session id: found by
    ancestry) prints ``{"additionalContext"}``; other events claim nothing."""
    with daemon.client("other") as c:
        register(c, host.pid, "antigravity", name="agy", receive="hook")
        for data in (
            agy_input("PreInvocation"),
            agy_input("PreInvocation", snake=True),
            {"hookEventName": "PreInvocation"},
        ):
            mid = sender.send("agy", "for agy")
            out = output(host.run(daemon, data, "--client", "antigravity"))
            assert set(out) == {"additionalContext"}, data
            assert mid in out["additionalContext"] and "> for agy" in out["additionalContext"]
            assert sender.status(mid) == ("delivered", "hook")
        mid = sender.send("agy", "later")
        for data in (
            agy_input("PreToolUse"),
            agy_input("PostToolUse"),
            agy_input("Stop", terminationReason="completed"),
            agy_input("PostInvocation", snake=True),
            agy_input("PreInvocation", conversationId=7),
            gemini_input("BeforeAgent"),
        ):
            done = host.run(daemon, data, "--client", "antigravity")
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
        assert sender.status(mid) == ("queued", None)
        assert attempts(c, mid) == 0
    assert log_lines(daemon) == []


# --------------------------------------------------------------------------- discovery


def _wait_kind(proc: subprocess.Popen[bytes], kind: str | None) -> str | None:
    for _ in range(50):
        found = agents.classify(proc.pid)
        if found == kind:
            break
        subprocess.run([PYTHON, "-c", "pass"], check=True)  # let it exec
    return found


def test_copilot_opencode_and_agy_processes_are_classified(tmp_path):
    modules = tmp_path / "lib" / "node_modules"
    copilot_js = modules / "@github" / "copilot" / "npm-loader.js"
    opencode_js = modules / "opencode-ai" / "bin" / "opencode"
    for script in (copilot_js, opencode_js):
        script.parent.mkdir(parents=True)
        script.write_text("import time\ntime.sleep(30)\n")
    (modules / ".bin").mkdir()
    os.symlink("../@github/copilot/npm-loader.js", modules / ".bin" / "copilot")
    # Copilot CLI 1.0.102's native binary names its main thread: its comm is "MainThread"
    native = modules / "@github" / "copilot-linux-x64" / "copilot"
    native.parent.mkdir(parents=True)
    shutil.copy(os.path.realpath(sys.executable), native)
    stranger = tmp_path / "bin" / "python-tool"
    stranger.parent.mkdir(parents=True)
    shutil.copy(os.path.realpath(sys.executable), stranger)
    rename = "import ctypes; ctypes.CDLL(None).prctl(15, b'MainThread', 0, 0, 0)"
    thread = [f"{rename}; import time; time.sleep(30)"]
    sleep = ("-c", "import time; time.sleep(30)")
    cases = [
        (_named(tmp_path, "copilot", *sleep), "copilot"),
        (_named(tmp_path, "node", str(copilot_js)), "copilot"),
        (_named(tmp_path, "node", str(modules / ".bin" / "copilot"), "-p", "hi"), "copilot"),
        (subprocess.Popen([str(native), "-c", *thread]), "copilot"),
        (unrelated := subprocess.Popen([str(stranger), "-c", *thread]), None),
        (_named(tmp_path, "opencode", *sleep), "opencode"),
        (_named(tmp_path, "node", str(opencode_js)), "opencode"),
        (_named(tmp_path, "agy", *sleep), "antigravity"),
    ]
    try:
        for proc, kind in cases:
            assert _wait_kind(proc, kind) == kind, proc.args
        for _ in range(50):  # the stranger: recognised by nothing once it is "MainThread"
            if identity.process_name(unrelated.pid) == "MainThread":
                break
            subprocess.run([PYTHON, "-c", "pass"], check=True)
        assert identity.process_name(unrelated.pid) == "MainThread"
        assert agents.classify(unrelated.pid) is None
    finally:
        for proc, _ in cases:
            proc.kill()
            proc.wait()


def test_cursor_agent_is_told_from_other_processes_called_agent(tmp_path):
    """Cursor CLI's binary is ``agent`` now, a name other tools use too: it counts as Cursor
    only when its path, or a link on the way to it, is under Cursor's ``cursor-agent``
    install (``~/.local/bin/agent`` → ``~/.local/share/cursor-agent/versions/<v>/...``)."""
    versions = tmp_path / ".local" / "share" / "cursor-agent" / "versions" / "2026.11.20"
    versions.mkdir(parents=True)
    os.symlink(os.path.realpath(sys.executable), versions / "cursor-agent")
    bindir = tmp_path / ".local" / "bin"
    bindir.mkdir(parents=True)
    os.symlink(versions / "cursor-agent", bindir / "agent")  # what Cursor's installer links
    other = tmp_path / "opt" / "ci" / "agent"  # a CI runner's agent, say
    other.parent.mkdir(parents=True)
    os.symlink(os.path.realpath(sys.executable), other)
    sleep = ["-c", "import time; time.sleep(30)"]
    cursor = subprocess.Popen([str(bindir / "agent"), *sleep])
    direct = subprocess.Popen([str(versions / "cursor-agent"), *sleep])
    unrelated = subprocess.Popen([str(other), *sleep])
    try:
        assert _wait_kind(cursor, "cursor") == "cursor"
        assert _wait_kind(direct, "cursor") == "cursor"
        for _ in range(50):  # until it runs as "agent", then it must stay unrecognised
            if identity.process_name(unrelated.pid) == "agent":
                break
            subprocess.run([PYTHON, "-c", "pass"], check=True)
        assert identity.process_name(unrelated.pid) == "agent"
        assert agents.classify(unrelated.pid) is None
    finally:
        for proc in (cursor, direct, unrelated):
            proc.kill()
            proc.wait()


def test_the_adapter_path_imports_stay_light(daemon):
    """``--client`` loads ``adapters`` on every hook run of the other clients: it must not
    pull in what the plain path avoids. Found: its ``collections.abc`` import loaded
    ``collections`` (about 3 ms a run, bench/bench_hook.py)."""
    code = (
        "import sys\nfrom peers_mcp import hook\nrc = hook.main(['--client', 'opencode'])\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(rc)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code],
        input=json.dumps(opencode_input("tool.execute.after")).encode(),
        capture_output=True,
        env=hook_env(daemon),
        timeout=15,
    )
    assert (done.returncode, done.stdout) == (0, b""), done.stderr.decode()
    modules = set(done.stderr.decode().split())
    assert {"peers_mcp.adapters", "peersd.wire"} <= modules
    heavy = {
        "asyncio", "msgspec", "typing", "peersd.protocol", "peers_mcp.render", "json", "re",
        "collections", "contextlib", "pathlib",
    }  # fmt: skip
    assert modules & heavy == set()
