"""Agent clients beyond Claude Code and Codex: ``peers-hook`` with their hook inputs.

The real hook command against a real daemon, with each client's hook input as its docs
give it (facts: shared/reference/clients-2026-12.md §3.1). A session is found the way
the real one is: its hooks run as children of the agent process (``HookAgent``), which
is registered as the peer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersd import agents
from peersd import protocol as p

from .conftest import PYTHON, register
from .test_hook import HookAgent, attempts, claude_input, log_lines, output, run_hook

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
