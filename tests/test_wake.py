"""Idle wakes (peersd.wake), against a real daemon with the real hook command.

Codex: the hook reports the thread id and the ``codex`` on its PATH at Stop; mail for the
idle session makes the daemon run that ``codex``. Here it is a fake ``codex`` executable
(a test double of an external program) that records its argv and environment, so the
wake logic is checked exactly: one call per batch, body-free text, re-armed when the
session acts or after ``wake_rearm``, ``codex exec`` skipped, a missing or failing binary
recorded and logged while the mail stays queued. The real Codex CLI is checked in
tests/e2e/test_wake.py.

Claude Code: the hook reports ``CLAUDE_CODE_MESSAGING_SOCKET``/``_TOKEN``; the inbox here
is a real Unix socket server in the test that records what it receives, a stand-in for
Claude Code's inbox (whose documented input is an auth line, then a user message line).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from peersd import protocol as p
from peersd.errors import PeersError

from .conftest import PYTHON, Agents, clean_env, register, run_peers
from .test_hook import (
    AGENT_HOST,
    CODEX_SESSION,
    HOOK,
    SESSION,
    claude_input,
    codex_input,
    hook_env,
    run_hook,
    spawn_hook,
)

BODY = "the secret body of the message"

FAKE_CODEX = """#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    call = {{"argv": sys.argv[1:], "codex_home": os.environ.get("CODEX_HOME")}}
    f.write(json.dumps(call) + "\\n")
code = int(open(os.path.join(here, "exit_code")).read()) if os.path.exists(
    os.path.join(here, "exit_code")) else 0
if code:
    sys.stderr.write("WARNING: something\\nError: failed to queue session message: boom\\n")
else:
    print("Queued message q-1 for thread " + sys.argv[3])
sys.exit(code)
"""


class FakeCodex:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "codex"
        self.path.write_text(FAKE_CODEX.format(python=PYTHON))
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[dict]:
        log = self.folder / "calls.jsonl"
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    def fail_with(self, code: int) -> None:
        (self.folder / "exit_code").write_text(str(code))


class CodexSession:
    """A process standing in for a Codex session (its hooks run as its children, so the
    daemon finds the session by ancestry, as with Codex), with ``args`` on its command line."""

    def __init__(self, daemon, *args: str, env: dict[str, str], name: str = "cx") -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", AGENT_HOST, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.daemon = daemon
        self.env = env
        self.client = daemon.client("codex")
        self.peer = register(self.client, self.proc.pid, "codex", name=name)

    def hook(self, event: str) -> subprocess.CompletedProcess[bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"argv": [HOOK], "stdin": json.dumps(codex_input(event)), "env": self.env}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["rc"] == 0, answer
        return subprocess.CompletedProcess([HOOK], 0, answer["out"].encode(), b"")

    def close(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def fake_codex(tmp_path: Path) -> FakeCodex:
    return FakeCodex(tmp_path / "bin")


@pytest.fixture
def sender(daemon, agents: Agents):
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="sender")
    yield c
    c.close()


def codex_env(daemon, fake: FakeCodex | None, tmp_path: Path) -> dict[str, str]:
    path = "/usr/bin:/bin" if fake is None else f"{fake.folder}:/usr/bin:/bin"
    return hook_env(daemon, PATH=path, CODEX_HOME=str(tmp_path / "codex-home"))


def send(client, to: str = "cx", text: str = BODY) -> str:
    return client.request(p.Send, to=to, text=text).message_id


def wake_of(client, mid: str) -> p.Wake | None:
    item = client.request(p.MessageStatus, message_ids=[mid]).items[0]
    assert item.state == "queued", item  # a wake never takes the mail
    return item.wake


def peer_status(client, name: str) -> str | None:
    return next(x.status for x in client.request(p.ListPeers).peers if x.name == name)


def wait_for(what, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def settle() -> None:
    """Longer than the batch window and a fake codex run: nothing more should happen."""
    time.sleep(1.0)


# --------------------------------------------------------------------------- Codex


def test_an_idle_codex_session_is_woken_once_per_batch_and_again_once_it_acted(
    daemon, sender, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    cx = CodexSession(daemon, env=codex_env(daemon, fake_codex, tmp_path))
    try:
        cx.hook("UserPromptSubmit")
        busy = send(sender)
        settle()
        assert fake_codex.calls() == [] and wake_of(sender, busy) is None  # working: no wake
        assert BODY in cx.hook("Stop").stdout.decode()  # Stop shows it (block): read
        assert peer_status(sender, "cx") == "working"  # the mail goes on as a turn: not idle
        cx.hook("Stop")  # that turn ends with nothing more to show: now it is idle
        # idle: a batch of two messages is one wake
        first, second = send(sender), send(sender, text="another")
        calls = wait_for(fake_codex.calls)
        settle()
        calls = fake_codex.calls()
        assert len(calls) == 1
        argv = calls[0]["argv"]
        assert argv[:4] == ["queue", "--thread", CODEX_SESSION, "--message"]
        assert argv[4] == (
            "[claude-peers] new messages from sender; call check_messages to read and reply."
        )
        assert BODY not in json.dumps(calls)
        assert calls[0]["codex_home"] == str(tmp_path / "codex-home")
        wake = wake_of(sender, first)
        assert wake is not None and (wake.via, wake.outcome) == ("codex queue", "queued")
        assert wake_of(sender, second) == wake
        peers = {x.name: x for x in sender.request(p.ListPeers).peers}
        assert peers["cx"].wake == wake and peers["cx"].pending == 2
        table = run_peers(daemon.env, "peers")
        assert "woken via codex queue" in table.out, table
        # more mail before the session acts: coalesced into the wake already done
        third = send(sender)
        settle()
        assert len(fake_codex.calls()) == 1 and wake_of(sender, third) == wake
        # the woken turn: a prompt (mail shown), then Stop; new mail wakes it again
        assert BODY in cx.hook("UserPromptSubmit").stdout.decode()
        cx.hook("Stop")
        send(sender)
        wait_for(lambda: len(fake_codex.calls()) == 2)
    finally:
        cx.close()


def test_the_wake_is_rearmed_after_wake_rearm_seconds(
    make_daemon, agents, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    daemon = make_daemon(wake_rearm="1.5")
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="sender")
    cx = CodexSession(daemon, env=codex_env(daemon, fake_codex, tmp_path))
    try:
        cx.hook("Stop")
        send(c)
        wait_for(fake_codex.calls)
        send(c)
        settle()
        assert len(fake_codex.calls()) == 1
        time.sleep(0.6)
        send(c)
        wait_for(lambda: len(fake_codex.calls()) == 2)
    finally:
        cx.close()
        c.close()


def test_codex_exec_sessions_are_skipped(
    daemon, sender, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    cx = CodexSession(daemon, "exec", "--json", env=codex_env(daemon, fake_codex, tmp_path))
    try:
        cx.hook("Stop")
        mid = send(sender)
        wake = wait_for(lambda: wake_of(sender, mid))
        assert (wake.via, wake.outcome) == ("codex queue", "skipped")
        assert "codex exec" in wake.reason
        assert fake_codex.calls() == []
    finally:
        cx.close()


def test_a_missing_or_failing_codex_is_recorded_and_the_mail_stays(
    daemon, sender, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    cx = CodexSession(daemon, env=codex_env(daemon, None, tmp_path))  # no codex on PATH
    try:
        cx.hook("Stop")
        mid = send(sender)
        wake = wait_for(lambda: wake_of(sender, mid))
        assert (wake.via, wake.outcome) == ("codex queue", "failed")
        assert wake.reason.startswith("no codex binary")
        assert "no codex binary" in daemon.log() and "WARNING" in daemon.log()
        # the session acts (a prompt shows the mail), idles with a codex that fails
        cx.env = codex_env(daemon, fake_codex, tmp_path)
        assert BODY in cx.hook("UserPromptSubmit").stdout.decode()
        cx.hook("Stop")
        fake_codex.fail_with(1)
        mid = send(sender)
        wake = wait_for(lambda: (w := wake_of(sender, mid)) and w.outcome == "failed" and w)
        assert wake.reason == "codex queue exited 1: Error: failed to queue session message: boom"
        assert len(fake_codex.calls()) == 1
        sender.request(p.Status)  # the daemon carries on
        sender.request(p.ListPeers)
    finally:
        cx.close()


def test_the_codex_bin_setting_and_native_wake_off(
    make_daemon, agents, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    daemon = make_daemon(codex_bin=str(fake_codex.path))
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="sender")
    cx = CodexSession(daemon, env=codex_env(daemon, None, tmp_path))  # none on the hooks' PATH
    try:
        cx.hook("Stop")
        send(c)
        wait_for(fake_codex.calls)
    finally:
        cx.close()
        c.close()
    daemon.stop()
    daemon = make_daemon(native_wake="false")  # the same database: other names
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="sender2")
    cx = CodexSession(daemon, env=codex_env(daemon, fake_codex, tmp_path), name="cx2")
    try:
        cx.hook("Stop")
        mid = send(c, "cx2")
        wake = wait_for(lambda: wake_of(c, mid))
        assert (wake.outcome, wake.reason) == ("skipped", "native_wake is off")
        assert len(fake_codex.calls()) == 1  # only the first daemon's
    finally:
        cx.close()
        c.close()


def test_a_wake_route_is_checked(daemon, sender) -> None:
    with pytest.raises(PeersError, match=r"absolute path.*\$\.wake\.codex_bin") as e:
        sender.request(p.SetStatus, wake=p.WakeRoute(codex_bin="codex"))
    assert e.value.code == "bad_request"
    with pytest.raises(PeersError, match=r"\$\.wake\.inbox_token"):
        sender.request(p.SetStatus, wake=p.WakeRoute(inbox_token="t" * 1025))


# --------------------------------------------------------------------------- Claude Code


class Inbox:
    """A real Unix socket server standing in for Claude Code's inbox: records each
    connection's bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.received.append(data)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@pytest.fixture
def claude(daemon, agents, tmp_path: Path):
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="alpha", session_id=SESSION)
    inbox = Inbox(Path(daemon.home) / "inbox.sock")
    env = hook_env(
        daemon,
        CLAUDE_CODE_MESSAGING_SOCKET=str(inbox.path),
        CLAUDE_CODE_MESSAGING_TOKEN="tok-123",
    )
    yield c, inbox, env
    c.close()
    inbox.close()


def test_an_idle_claude_session_gets_one_nudge_in_its_inbox(daemon, sender, claude) -> None:
    c, inbox, env = claude
    assert run_hook(daemon, claude_input("Stop"), env=env).returncode == 0
    first, second = send(sender, "alpha"), send(sender, "alpha")
    wait_for(lambda: inbox.received)
    settle()
    assert len(inbox.received) == 1
    lines = inbox.received[0].split(b"\n")
    assert json.loads(lines[0]) == {"type": "auth", "token": "tok-123"}
    assert json.loads(lines[1]) == {
        "type": "user",
        "message": {
            "role": "user",
            "content": "[claude-peers] new messages from sender; "
            "call check_messages to read and reply.",
        },
    }
    assert lines[2:] == [b""]
    wake = wake_of(sender, first)
    assert wake is not None and (wake.via, wake.outcome) == ("inbox", "queued")
    assert wake_of(sender, second) == wake
    # coalesced until the session acts
    send(sender, "alpha")
    settle()
    assert len(inbox.received) == 1


def test_no_nudge_while_the_wait_hook_is_armed_and_a_dead_inbox_is_a_failure(
    daemon, sender, claude
) -> None:
    c, inbox, env = claude
    assert run_hook(daemon, claude_input("Stop"), env=env).returncode == 0
    waiter = spawn_hook(daemon, claude_input("Stop"), "--wait", env=env)
    try:
        wait_for(lambda: {x.name: x for x in sender.request(p.ListPeers).peers}["alpha"].status
                 == "waiting")  # fmt: skip
        mid = send(sender, "alpha")
        _out, err = waiter.communicate(timeout=15)
        assert waiter.returncode == 2 and BODY.encode() in err  # the waiter delivered it
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    settle()
    assert inbox.received == [] and wake_of_any(sender, mid) is None
    # the session is idle again, with no waiter, and its inbox has gone away
    assert run_hook(daemon, claude_input("Stop"), env=env).returncode == 0
    inbox.close()
    mid = send(sender, "alpha")
    wake = wait_for(lambda: wake_of(sender, mid))
    assert (wake.via, wake.outcome) == ("inbox", "failed")
    assert wake.reason.startswith(f"cannot connect to the inbox {inbox.path}")


def wake_of_any(client, mid: str) -> p.Wake | None:
    return client.request(p.MessageStatus, message_ids=[mid]).items[0].wake


def test_a_claude_session_without_an_inbox_is_skipped(daemon, sender, agents) -> None:
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="beta", session_id=SESSION)
    try:
        assert run_hook(daemon, claude_input("Stop")).returncode == 0
        mid = send(sender, "beta")
        wake = wait_for(lambda: wake_of(sender, mid))
        assert (wake.via, wake.outcome) == ("inbox", "skipped")
        assert wake.reason.startswith("no inbox socket reported")
        out = run_peers(daemon.env, "message-status", mid).out
        assert "not woken via inbox: no inbox socket reported" in out
    finally:
        c.close()


# --------------------------------------------------------------------------- peers doctor


def test_doctor_tells_of_a_bypass_session_that_would_hold_the_nudge(home: Path) -> None:
    env = {**clean_env(home), "PATH": "/usr/bin:/bin"}

    def check() -> dict:
        return {c["check"]: c for c in run_peers(env, "doctor", "--json").json()}["native wake"]

    assert check()["status"] == "ok"
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"permissions": {"defaultMode": "bypassPermissions"}}))
    found = check()
    assert found["status"] == "warn" and "crossSessionInbound" in found["fix"], found
    settings.write_text(
        json.dumps(
            {"permissions": {"defaultMode": "bypassPermissions"}, "crossSessionInbound": "accept"}
        )
    )
    assert check()["status"] == "ok"
    off = {
        c["check"]: c
        for c in run_peers({**env, "CLAUDE_PEERS_NATIVE_WAKE": "false"}, "doctor", "--json").json()
    }
    assert "off" in off["native wake"]["detail"]


def test_a_hub_client_cannot_give_a_wake_route_and_is_not_woken(
    make_daemon, agents, tmp_path: Path
) -> None:
    from .test_hub import hub, register_remote, remote_client

    d, port = hub(make_daemon)
    local = d.client("claude-code")
    register(local, agents.spawn().pid, "claude-code", name="sender")
    with remote_client(tmp_path / "m1", f"tcp://127.0.0.1:{port}") as far:
        register_remote(far, agents, "faraway", "far-box")
        route = p.WakeRoute(thread=CODEX_SESSION, codex_bin="/bin/true")
        with pytest.raises(PeersError, match="only for the daemon's own machine") as e:
            far.request(p.SetStatus, state="idle", wake=route)
        assert e.value.code == "forbidden"
        far.request(p.SetStatus, state="idle")  # without a route: fine
        mid = local.request(p.Send, to="faraway@far-box", text=BODY).message_id
        wake = wait_for(lambda: wake_of(local, mid))
        assert (wake.outcome, wake.reason) == ("skipped", "the session is on another machine")
    local.close()


def test_a_codex_others_can_change_is_not_run_unless_named_in_codex_bin(
    make_daemon, agents, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    """Any process of the user can report a wake route: the daemon runs the reported codex
    only when only root can change it, else it asks for codex_bin (a sandboxed agent could
    otherwise have the daemon run a program of its own, outside its sandbox)."""
    os.chown(fake_codex.path, 65534, 65534)  # not root's: a user could have written it
    daemon = make_daemon()
    c = daemon.client("claude-code")
    register(c, agents.spawn().pid, "claude-code", name="sender")
    cx = CodexSession(daemon, env=codex_env(daemon, fake_codex, tmp_path))
    try:
        cx.hook("Stop")
        mid = send(c)
        wake = wait_for(lambda: wake_of(c, mid))
        assert (wake.via, wake.outcome) == ("codex queue", "failed")
        assert f'set codex_bin = "{fake_codex.path}"' in wake.reason
        settle()
        assert fake_codex.calls() == []  # never run
        # reach no longer promises a wake that failed with this route
        peers = {x.name: x for x in c.request(p.ListPeers).peers}
        assert peers["cx"].reach == "next_prompt"
    finally:
        cx.close()
        c.close()


def test_an_inbox_that_is_not_a_socket_is_never_written(daemon, sender, claude) -> None:
    c, inbox, env = claude
    inbox.close()
    victim = inbox.path
    victim.write_text("a file of the user's\n")  # a path that is not Claude Code's socket
    assert run_hook(daemon, claude_input("Stop"), env=env).returncode == 0
    mid = send(sender, "alpha")
    wake = wait_for(lambda: wake_of(sender, mid))
    assert (wake.via, wake.outcome, wake.reason) == (
        "inbox",
        "failed",
        f"{victim} is not a socket of yours",
    )
    assert victim.read_text() == "a file of the user's\n"
