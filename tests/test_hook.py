"""``peers-hook`` against a real daemon, run as the real console script with real hook JSON.

The hook input is what Claude Code and Codex send (the key sets of integration.md §8.3).
A Claude Code session is found by its ``session_id`` (the MCP server registers with
CLAUDE_CODE_SESSION_ID); a Codex session, whose hook ``session_id`` the daemon does not
know, by ancestry: its hooks run as children of ``HookAgent``, a real process that is
registered as the agent and starts each hook as its own child.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peers_mcp import hook
from peersd import protocol as p
from peersd import wire
from peersd.config import load

from .conftest import PYTHON, register

HOOK = str(Path(sys.executable).parent / "peers-hook")
SESSION = "5f1f8a52-0d6c-4d3e-9d0e-6a1f2b3c4d5e"
CODEX_SESSION = "019a0000-0000-7000-8000-000000000001"
PAUSE = "CLAUDE_PEERS_TEST_HOOK_PAUSE_BEFORE_ACK"
CONTEXT_EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse")

# --------------------------------------------------------------------------- hook input


def claude_input(event: str, session_id: str = SESSION, **over: object) -> dict[str, object]:
    """Exactly the keys Claude Code sends for ``event`` (integration.md §8.3)."""
    common = {"cwd": "/tmp", "hook_event_name": event, "session_id": session_id}
    transcript = {"transcript_path": f"/tmp/.claude/projects/x/{session_id}.jsonl"}
    prompt_id = {"prompt_id": "7d0c2a4e-1111-4222-8333-944445555666"}
    tool = {
        "mcp_server": "",
        "permission_mode": "default",
        "tool_input": {"command": "ls"},
        "tool_name": "Bash",
        "tool_use_id": "toolu_01",
    }
    data: dict[str, object] = {**common, **transcript}
    if event == "SessionStart":
        data["source"] = "startup"
    elif event == "UserPromptSubmit":
        data.update(prompt_id, permission_mode="default", prompt="hello")
    elif event == "PreToolUse":
        data.update(prompt_id, **tool)
    elif event == "PostToolUse":
        data.update(prompt_id, **tool)
        data["duration_ms"] = 7
        data["tool_response"] = [{"type": "text", "text": "a\nb"}]
    elif event == "Stop":
        data.update(
            prompt_id,
            background_tasks=[],
            last_assistant_message="Done.",
            permission_mode="default",
            session_crons=[],
            stop_hook_active=False,
        )
    elif event == "SessionEnd":
        data.update(prompt_id, reason="exit")
    data.update(over)
    return data


def codex_input(event: str, session_id: str = CODEX_SESSION, **over: object) -> dict[str, object]:
    """Exactly the keys Codex sends for ``event`` (integration.md §8.3)."""
    data: dict[str, object] = {
        "cwd": "/tmp",
        "hook_event_name": event,
        "session_id": session_id,
        "transcript_path": None,
    }
    model = {"model": "gpt-5-codex", "permission_mode": "default"}
    turn = {"turn_id": "turn-1"}
    tool = {"tool_input": {"command": ["ls"]}, "tool_name": "Bash", "tool_use_id": "call_1"}
    if event == "SessionStart":
        data.update(model, source="startup")
    elif event == "UserPromptSubmit":
        data.update({**model, **turn}, prompt="hello")
    elif event == "PreToolUse":
        data.update({**model, **turn}, **tool)
    elif event == "PostToolUse":
        data.update({**model, **turn}, **tool)
        data["tool_response"] = {"content": [{"type": "text", "text": "a"}], "isError": False}
    elif event == "Stop":
        data.update({**model, **turn}, last_assistant_message="Done.", stop_hook_active=False)
    elif event == "SessionEnd":
        data["reason"] = "exit"
    data.update(over)
    return data


def test_input_key_sets_follow_the_reference():
    assert set(claude_input("PostToolUse")) == {
        "cwd", "duration_ms", "hook_event_name", "mcp_server", "permission_mode", "prompt_id",
        "session_id", "tool_input", "tool_name", "tool_response", "tool_use_id",
        "transcript_path",
    }  # fmt: skip
    assert set(claude_input("Stop")) == {
        "background_tasks", "cwd", "hook_event_name", "last_assistant_message",
        "permission_mode", "prompt_id", "session_crons", "session_id", "stop_hook_active",
        "transcript_path",
    }  # fmt: skip
    assert set(codex_input("Stop")) == {
        "cwd", "hook_event_name", "last_assistant_message", "model", "permission_mode",
        "session_id", "stop_hook_active", "transcript_path", "turn_id",
    }  # fmt: skip
    assert set(codex_input("SessionStart")) == {
        "cwd", "hook_event_name", "session_id", "source", "transcript_path", "model",
        "permission_mode",
    }  # fmt: skip


# --------------------------------------------------------------------------- helpers


def hook_env(daemon, **extra: str) -> dict[str, str]:
    env = dict(daemon.env)
    env.update(extra)
    return env


def run_hook(daemon, data, *args: str, env: dict[str, str] | None = None, timeout: float = 15):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return subprocess.run(
        [HOOK, *args],
        input=raw,
        capture_output=True,
        env=env or hook_env(daemon),
        timeout=timeout,
    )


def spawn_hook(daemon, data, *args: str, env: dict[str, str] | None = None):
    proc = subprocess.Popen(
        [HOOK, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or hook_env(daemon),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(data).encode())
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not flush it
    return proc


def output(done) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(b"\n")
    return json.loads(done.stdout)


def status(client, mid: str) -> tuple[str, str | None]:
    item = client.request(p.MessageStatus, message_ids=[mid]).items[0]
    return item.state, item.delivered_via


def attempts(client, mid: str) -> int:
    """How often the recipient's mail was claimed (``client`` is the recipient)."""
    page = client.request(p.History, direction="in", limit=100)
    return next(m.attempts for m in page.messages if m.id == mid)


def log_lines(daemon) -> list[str]:
    path = daemon.settings.run_dir / "peers-hook.log"
    return path.read_text().splitlines() if path.exists() else []


AGENT_HOST = r"""
import json, subprocess, sys
for line in sys.stdin:
    req = json.loads(line)
    done = subprocess.run(req["argv"], input=req["stdin"].encode(), capture_output=True,
                          env=req["env"])
    print(json.dumps({"rc": done.returncode, "out": done.stdout.decode(),
                      "err": done.stderr.decode()}), flush=True)
"""


class HookAgent:
    """A real process standing in for the agent: each hook runs as its child."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", AGENT_HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pid = self.proc.pid

    def run(self, daemon, data, *args: str) -> subprocess.CompletedProcess[bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"argv": [HOOK, *args], "stdin": json.dumps(data), "env": hook_env(daemon)}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(
            [HOOK, *args], answer["rc"], answer["out"].encode(), answer["err"].encode()
        )

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()


class Setup:
    """alpha: a Claude Code session registered with SESSION; beta: a Codex peer that sends."""

    def __init__(self, daemon, agents) -> None:
        self.daemon = daemon
        self.alpha_agent = agents.spawn()
        self.alpha_client = daemon.client("claude-code")
        self.alpha = register(
            self.alpha_client, self.alpha_agent.pid, "claude-code", name="alpha", session_id=SESSION
        )
        self.beta_agent = agents.spawn()
        self.beta_client = daemon.client("codex")
        self.beta = register(self.beta_client, self.beta_agent.pid, "codex", name="beta")

    def send(self, text: str, to: str = "alpha") -> str:
        return self.beta_client.request(p.Send, to=to, text=text).message_id

    def status(self, mid: str) -> tuple[str, str | None]:
        return status(self.beta_client, mid)

    def close(self) -> None:
        self.alpha_client.close()
        self.beta_client.close()


@pytest.fixture
def peers(daemon, agents):
    s = Setup(daemon, agents)
    yield s
    s.close()


@pytest.fixture
def codex_agent():
    agent = HookAgent()
    yield agent
    agent.close()


# --------------------------------------------------------------------------- the hook


def test_claude_code_context_events_show_mail_and_ack_via_hook(peers):
    for event in CONTEXT_EVENTS:
        mid = peers.send(f"question for {event}?\nsecond line")
        out = output(run_hook(peers.daemon, claude_input(event)))
        assert set(out) == {"hookSpecificOutput"}
        spec = out["hookSpecificOutput"]
        assert set(spec) == {"hookEventName", "additionalContext"}
        assert spec["hookEventName"] == event
        text = spec["additionalContext"]
        assert f'Message {mid} from peer "beta"' in text
        assert f"> question for {event}?\n> second line" in text
        assert "quoted data from the named peers" in text
        assert f'mcp__claude-peers__send_message with to="beta" and reply_to="{mid}"' in text
        assert peers.status(mid) == ("delivered", "hook")


def test_stop_blocks_with_the_mail(peers):
    first, second = peers.send("one"), peers.send("two")
    out = output(run_hook(peers.daemon, claude_input("Stop")))
    assert set(out) == {"decision", "reason"}
    assert out["decision"] == "block"
    assert out["reason"].index(first) < out["reason"].index(second)
    assert peers.status(first) == peers.status(second) == ("delivered", "hook")


def test_stop_hook_active_claims_nothing(peers):
    mid = peers.send("wait for the next event")
    done = run_hook(peers.daemon, claude_input("Stop", stop_hook_active=True))
    assert (done.returncode, done.stdout) == (0, b"")
    assert peers.status(mid) == ("queued", None)
    assert attempts(peers.alpha_client, mid) == 0
    # the next event delivers it
    out = output(run_hook(peers.daemon, claude_input("UserPromptSubmit")))
    assert mid in out["hookSpecificOutput"]["additionalContext"]


def test_other_events_and_subagents_print_and_claim_nothing(peers, codex_agent):
    mid = peers.send("not now")
    register(peers.daemon.client("codex"), codex_agent.pid, "codex", name="gamma")
    for data in (
        claude_input("PreToolUse"),
        claude_input("SessionEnd"),
        claude_input("Notification"),
        claude_input("PostToolUse", agent_id="agent-1", agent_type="Explore"),
        {"session_id": SESSION},
    ):
        done = run_hook(peers.daemon, data)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), data
    for event in ("PreToolUse", "SessionEnd"):
        done = codex_agent.run(peers.daemon, codex_input(event))
        assert (done.returncode, done.stdout) == (0, b"")
    assert peers.status(mid) == ("queued", None)
    assert attempts(peers.alpha_client, mid) == 0


def test_silent_without_mail(peers):
    for event in (*CONTEXT_EVENTS, "Stop"):
        done = run_hook(peers.daemon, claude_input(event))
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert log_lines(peers.daemon) == []


def test_codex_session_found_by_ancestry(peers, codex_agent):
    with peers.daemon.client("codex") as c:
        register(c, codex_agent.pid, "codex", name="gamma")
        for event in CONTEXT_EVENTS:
            mid = peers.send(f"for codex {event}", to="gamma")
            out = output(codex_agent.run(peers.daemon, codex_input(event)))
            spec = out["hookSpecificOutput"]
            assert spec["hookEventName"] == event
            assert f"> for codex {event}" in spec["additionalContext"]
            assert peers.status(mid) == ("delivered", "hook")
        mid = peers.send("before you stop", to="gamma")
        out = output(codex_agent.run(peers.daemon, codex_input("Stop")))
        assert out["decision"] == "block" and "> before you stop" in out["reason"]
        mid2 = peers.send("after a block", to="gamma")
        done = codex_agent.run(peers.daemon, codex_input("Stop", stop_hook_active=True))
        assert (done.returncode, done.stdout) == (0, b"")
        assert peers.status(mid) == ("delivered", "hook")
        assert peers.status(mid2) == ("queued", None)


def test_server_name_option(peers):
    peers.send("hi")
    out = output(run_hook(peers.daemon, claude_input("PostToolUse"), "--server-name", "team"))
    text = out["hookSpecificOutput"]["additionalContext"]
    assert "mcp__team__send_message" in text and "claude-peers__" not in text


def test_unknown_session_is_silent_and_logged(daemon):
    done = run_hook(daemon, claude_input("PostToolUse", session_id="nobody"))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    lines = log_lines(daemon)
    assert len(lines) == 1 and "unknown_peer" in lines[0] and "PostToolUse" in lines[0]


def test_daemon_down_exits_0_logs_and_starts_nothing(make_daemon):
    daemon = make_daemon(start=False)
    for event in ("PostToolUse", "Stop"):
        done = run_hook(daemon, claude_input(event))
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    lines = log_lines(daemon)
    assert len(lines) == 2 and all("not running" in line for line in lines)
    log_path = daemon.settings.run_dir / "peers-hook.log"
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert not daemon.settings.socket_path.exists()  # no daemon was started


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe\x00", b"null"])
def test_malformed_input_exits_0_silently(daemon, raw):
    done = run_hook(daemon, raw)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert len(log_lines(daemon)) == 1


def test_bad_arguments_never_break_the_session(daemon):
    done = run_hook(daemon, claude_input("PostToolUse"), "--bogus")
    assert (done.returncode, done.stdout) == (0, b"")
    assert "bad arguments" in log_lines(daemon)[0]


def test_ack_comes_after_the_output(peers):
    mid = peers.send("watch the order")
    proc = spawn_hook(
        peers.daemon, claude_input("PostToolUse"), env=hook_env(peers.daemon, **{PAUSE: "1"})
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the output is flushed before the pause
    assert mid in json.loads(line)["hookSpecificOutput"]["additionalContext"]
    assert peers.status(mid) == ("leased", None)
    assert proc.wait(10) == 0
    assert peers.status(mid) == ("delivered", "hook")


def test_hook_killed_before_ack_gets_the_mail_again(make_daemon, agents):
    daemon = make_daemon(lease_seconds=0.5)
    s = Setup(daemon, agents)
    try:
        mid = s.send("do not lose me")
        env = hook_env(daemon, **{PAUSE: "30"})
        proc = spawn_hook(daemon, claude_input("PostToolUse"), env=env)
        assert proc.stdout is not None
        assert mid in proc.stdout.readline().decode()
        proc.kill()
        proc.wait()
        assert s.status(mid) == ("leased", None)
        time.sleep(0.7)  # the lease runs out
        out = output(run_hook(daemon, claude_input("PostToolUse")))
        assert mid in out["hookSpecificOutput"]["additionalContext"]
        assert s.status(mid) == ("delivered", "hook")
        assert attempts(s.alpha_client, mid) == 2
    finally:
        s.close()


def test_long_message_stays_queued_and_points_to_check_messages(peers):
    long = peers.send("x" * 9500)
    short = peers.send("short one")
    out = output(run_hook(peers.daemon, claude_input("PostToolUse")))
    text = out["hookSpecificOutput"]["additionalContext"]
    assert len(text) <= 9000
    assert "> short one" in text and "x" * 100 not in text
    assert "1 more message(s) from beta" in text
    assert "call the tool mcp__claude-peers__check_messages" in text
    assert peers.status(short) == ("delivered", "hook")
    assert peers.status(long) == ("queued", None)
    # alone, it is still announced and still not acknowledged
    out = output(run_hook(peers.daemon, claude_input("Stop")))
    assert "1 more message(s) from beta" in out["reason"] and "check_messages" in out["reason"]
    assert long not in out["reason"] and "x" * 100 not in out["reason"]
    assert peers.status(long) == ("queued", None)


ROOT = Path(__file__).resolve().parent.parent
INSTALLS = ("this venv", "wheel", "plain editable")


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The interpreter of the project as installed each way users do it, pip's defaults:
    ``pip install .`` and ``pip install -e .``, each into a bare venv of its own, from a
    copy of the sources (a build must not leave ``build/`` or egg-info in the tree)."""
    base = tmp_path_factory.mktemp("installs")
    src = base / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".*cache", ".hypothesis", "build", "dist", "*.egg-info"
        ),
    )
    pythons = {"this venv": PYTHON}
    for name, flags in (("wheel", []), ("plain editable", ["-e"])):
        venv = base / name.replace(" ", "-")
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        python = str(venv / "bin" / "python")
        done = subprocess.run(
            [PYTHON, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
             "--disable-pip-version-check", *flags, str(src)],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, f"pip install {' '.join(flags)} failed:\n{done.stderr}"
        pythons[name] = python
    return pythons


@pytest.mark.parametrize("install", INSTALLS)
def test_hook_imports_stay_light(peers, installs, install, tmp_path):
    """The no-mail path must not pull in asyncio, msgspec, typing or the protocol Structs,
    however claude-peers was installed. Found: with a plain ``pip install -e .`` setuptools
    put an import-hook finder in a .pth, which every Python start ran, importing pathlib,
    re, fnmatch, contextlib, urllib… (about 25 ms of imports, more than the hook itself).
    ``package-dir`` in pyproject.toml makes that install a plain path entry instead."""
    code = (
        "import sys\nfrom peers_mcp import hook\nrc = hook.main([])\n"
        "print(hook.__file__, file=sys.stderr)\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(rc)\n"
    )
    done = subprocess.run(
        [installs[install], "-c", code],
        input=json.dumps(claude_input("PostToolUse")).encode(),
        capture_output=True,
        env=hook_env(peers.daemon),
        cwd=tmp_path,  # not the checkout: its peers_mcp would shadow the install
        timeout=15,
    )
    assert (done.returncode, done.stdout) == (0, b""), done.stderr.decode()
    where, names = done.stderr.decode().splitlines()
    if install == "wheel":
        assert "site-packages" in where, where
    elif install == "plain editable":
        assert "site-packages" not in where and not where.startswith(str(ROOT)), where
    modules = set(names.split())
    assert "peersd.wire" in modules
    heavy = {
        "asyncio", "msgspec", "typing", "peersd.protocol", "peersd.client", "peersd.server",
        "peersd.config", "peersd.identity", "peers_mcp.render", "mcp", "pydantic", "psutil",
        "typer", "rich", "argparse", "tomllib", "json", "re", "collections", "contextlib",
        "pathlib", "importlib.util",
    }  # fmt: skip
    assert modules & heavy == set()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(), inner, max_size=8),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["", " ", "\n", "\t\r\n "]), st.booleans())
def test_hook_json_matches_the_json_module(value, space, indent):
    raw = (space + json.dumps(value, indent=2 if indent else None) + space).encode()
    assert hook.json_loads(raw) == json.loads(raw)
    if isinstance(value, str):
        assert hook.json_string(value) == json.dumps(value)


def test_hook_json_refuses_what_json_refuses():
    for raw in (b"", b"{", b'{"a": 1} x', b"[1,]", b"\xff", b'"\x01"', b"nul"):
        with pytest.raises(ValueError):
            json.loads(raw)
        with pytest.raises(ValueError):
            hook.json_loads(raw)
    assert hook.json_loads(b"\xef\xbb\xbf{}") == {}  # a BOM goes through the json module
    assert hook.json_loads('{"k": "\u00e9"}'.encode("utf-16")) == {"k": "é"}
    assert hook.json_loads(b"[NaN, Infinity, -Infinity]")[1:] == [math.inf, -math.inf]


def test_hook_output_is_what_json_dumps_would_print():
    text = 'quote " backslash \\ control \x01 é 日本 \ud800'
    for event in (*CONTEXT_EVENTS, "Stop"):
        expected = (
            {"decision": "block", "reason": text}
            if event == "Stop"
            else {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}
        )
        assert hook.hook_output(event, text) == json.dumps(expected) + "\n"


# --------------------------------------------------------------------------- --wait


def wait_for_lock(daemon, peer_id: str, proc, timeout: float = 10.0) -> None:
    """Until the waiter holds its lock (it has attached), then a moment to subscribe."""
    path = daemon.settings.run_dir / f"peers-hook-wait.{peer_id}.lock"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the waiter never took its lock"
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None


def finish(proc, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_wait_wakes_with_mail_on_stderr_and_acks_via_wake(peers):
    proc = spawn_hook(peers.daemon, claude_input("Stop"), "--wait")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, proc)
        started = time.monotonic()
        mid = peers.send("wake up, please")
        rc, out, err = finish(proc)
        assert time.monotonic() - started < 10  # woken by the mail, not by --max-wait
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (rc, out) == (2, b"")
    text = err.decode()
    assert f'Message {mid} from peer "beta"' in text and "> wake up, please" in text
    assert "mcp__claude-peers__send_message" in text
    assert peers.status(mid) == ("delivered", "wake")


def test_wait_delivers_queued_mail_at_once(peers):
    mid = peers.send("already waiting")
    done = run_hook(peers.daemon, claude_input("Stop", stop_hook_active=True), "--wait")
    assert done.returncode == 2 and done.stdout == b""
    assert "> already waiting" in done.stderr.decode()
    assert peers.status(mid) == ("delivered", "wake")


def test_one_waiter_per_session(peers):
    first = spawn_hook(peers.daemon, claude_input("Stop"), "--wait")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, first)
        started = time.monotonic()
        second = run_hook(peers.daemon, claude_input("Stop"), "--wait")
        assert (second.returncode, second.stdout, second.stderr) == (0, b"", b"")
        assert time.monotonic() - started < 10  # the second waiter gives up at once
        assert first.poll() is None
        mid = peers.send("only one wakes")
        rc, out, err = finish(first)
        assert rc == 2 and mid in err.decode()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_wait_ends_when_the_agent_dies(peers):
    proc = spawn_hook(peers.daemon, claude_input("Stop"), "--wait", "--check-interval", "0.2")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, proc)
        peers.alpha_agent.kill()
        peers.alpha_agent.wait()
        assert finish(proc, 5) == (0, b"", b"")
        lock = peers.daemon.settings.run_dir / f"peers-hook-wait.{peers.alpha.id}.lock"
        assert not lock.exists()  # the session is over: its lock file is gone too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wait_ends_after_max_wait_and_when_the_daemon_goes(peers):
    started = time.monotonic()
    done = run_hook(peers.daemon, claude_input("Stop"), "--wait", "--max-wait", "0.5")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert 0.4 < time.monotonic() - started < 5
    proc = spawn_hook(peers.daemon, claude_input("Stop"), "--wait", "--reconnect-window", "0.5")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, proc)
        peers.daemon.stop()
        assert finish(proc, 10) == (0, b"", b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "went away" in log_lines(peers.daemon)[-1]


def test_wait_rides_out_a_daemon_restart(peers):
    proc = spawn_hook(peers.daemon, claude_input("Stop"), "--wait")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, proc)
        peers.close()
        peers.daemon.stop()
        peers.daemon.start()
        with peers.daemon.client() as c:
            assert register(c, peers.beta_agent.pid, "codex").id == peers.beta.id
            mid = c.request(p.Send, to="alpha", text="after the restart").message_id
        rc, out, err = finish(proc)
        assert rc == 2 and "> after the restart" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with peers.daemon.client() as c:
        assert status(c, mid) == ("delivered", "wake")


def test_wait_announces_long_mail_once(peers):
    long = peers.send("y" * 9500)
    done = run_hook(peers.daemon, claude_input("Stop"), "--wait")
    assert done.returncode == 2
    assert "call the tool mcp__claude-peers__check_messages" in done.stderr.decode()
    assert peers.status(long) == ("queued", None)
    # the next waiter does not wake the session for the same long message again
    proc = spawn_hook(peers.daemon, claude_input("Stop"), "--wait")
    try:
        wait_for_lock(peers.daemon, peers.alpha.id, proc)
        time.sleep(0.5)
        assert proc.poll() is None
        mid = peers.send("but this one wakes it")
        rc, out, err = finish(proc)
        assert rc == 2 and "> but this one wakes it" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert peers.status(mid) == ("delivered", "wake")
    assert peers.status(long) == ("queued", None)


# --------------------------------------------------------------------------- wire


def test_wire_constants_match_the_protocol():
    assert wire.PROTOCOL_VERSION == p.PROTOCOL_VERSION
    defaults = {
        f.name: f.default
        for f in msgspec.structs.fields(p.Message)
        if f.default is not msgspec.NODEFAULT
    }
    assert defaults == wire.MESSAGE_DEFAULTS


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(), inner, max_size=20),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_wire_codec_agrees_with_msgspec(value):
    assert wire.unpackb(msgspec.msgpack.encode(value)) == value
    assert msgspec.msgpack.decode(wire.packb(value)) == value


def test_wire_codec_decodes_real_frames_and_lengths():
    msg = p.Message(
        id="m-abcdef-1",
        sender="p-00000001",
        sender_name="beta",
        recipient="p-00000002",
        recipient_name="alpha",
        text="é" * 70000,
        created=1.5,
        state="leased",
        expires_at=math.pi,
    )
    frame = p.Claimed(id=7, lease_until=2.0, messages=[msg] * 20)
    decoded = wire.unpackb(msgspec.msgpack.encode(frame))
    assert decoded["t"] == "claimed" and decoded["id"] == 7
    assert wire.message(decoded["messages"][0]) == {
        **wire.MESSAGE_DEFAULTS,
        **msgspec.to_builtins(msg),
    }
    request = {"t": "ack", "id": 3, "message_ids": ["m-abcdef-1"] * 70000, "via": "hook"}
    assert p.client_decoder.decode(wire.packb(request)) == p.Ack(
        id=3, message_ids=["m-abcdef-1"] * 70000, via="hook"
    )
    for bad in (b"\xc1", b"\xd9\x05ab", b"\x92\x01", b"\x01\x02"):
        with pytest.raises(wire.CodecError):
            wire.unpackb(bad)


def test_socket_path_resolves_like_config(tmp_path):
    home = tmp_path / "h"
    (home / ".claude").mkdir(parents=True)
    cases = [
        {"HOME": str(home)},
        {"HOME": str(home) + "/"},
        {"HOME": str(home), "CLAUDE_PEERS_SOCKET": "~/s/peers.sock"},
        {"HOME": str(home), "CLAUDE_PEERS_SOCKET": "rel/peers.sock"},
        {"HOME": str(home), "CLAUDE_PEERS_SOCKET": ""},
    ]
    for env in cases:
        assert wire.socket_path(env) == load(env=env).socket, env
    (home / ".claude" / "claude-peers.toml").write_text('socket = "~/from-file.sock"\n')
    env = {"HOME": str(home)}
    assert wire.socket_path(env) == load(env=env).socket == str(home / "from-file.sock")
    other = tmp_path / "other.toml"
    other.write_text('socket = "/tmp/other.sock"\n')
    env = {"HOME": str(home), "CLAUDE_PEERS_CONFIG": str(other)}
    assert wire.socket_path(env) == "/tmp/other.sock"
    # a unix:// URL names a socket, as peersd.endpoint reads it
    env = {"HOME": str(tmp_path), "CLAUDE_PEERS_URL": "unix:///tmp/u.sock"}
    assert wire.locate(env) == ("/tmp/u.sock", None, None)


def test_odd_field_types_exit_0_without_traceback(peers):
    for data in (
        claude_input("PostToolUse", session_id=12),
        claude_input("Stop", stop_hook_active="yes"),
        {"hook_event_name": ["PostToolUse"]},
    ):
        done = run_hook(peers.daemon, data)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
