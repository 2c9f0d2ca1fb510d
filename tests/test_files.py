"""Who is touching what, against a real daemon with the real hook command.

File activity recorded from Claude Code and Codex hook input; the PreToolUse warning and
denial in the exact output both clients read; the holder's notice; activity fading after
``activity_ttl``; claims (overlap, exclusivity, restart, release); a gone peer's files
freed by the sweep; peer status from the hooks; and bad input, each a clear error or a
defined behaviour. Each Claude Code session is found by its ``session_id``, each Codex
session by ancestry (its hooks run as children of a ``HookAgent``), as in test_hook.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from peersd import protocol as p
from peersd.client import Client
from peersd.errors import PeersError

from .conftest import PEERS, Agents, register, run_peers
from .test_hook import (
    SESSION,
    HookAgent,
    claude_input,
    codex_input,
    log_lines,
    run_hook,
    spawn_hook,
)

SESSION_B = "6a2b9c63-1e4d-4f5e-8a1b-7b2c3d4e5f60"


def git_init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return Path(os.path.realpath(path))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = git_init(tmp_path / "repo")
    (root / "src" / "auth").mkdir(parents=True)
    for name in ("src/auth/login.py", "src/auth/token.py", "src/app.py", "README.md"):
        (root / name).write_text(f"# {name}\n")
    return root


class World:
    """alpha (Claude Code, by session id) and beta (Claude Code, by session id), both in repo;
    codex sessions by ancestry on demand."""

    def __init__(self, daemon, agents: Agents, repo: Path) -> None:
        self.daemon = daemon
        self.agents = agents
        self.repo = repo
        self.clients: list[Client] = []
        self.alpha_c, self.alpha = self.peer("alpha", session_id=SESSION)
        self.beta_c, self.beta = self.peer("beta", session_id=SESSION_B)
        self.codex_agents: list[HookAgent] = []

    def peer(self, name: str, kind: str = "claude-code", pid: int | None = None, **fields):
        c = self.daemon.client(kind)
        self.clients.append(c)
        peer = register(
            c, pid or self.agents.spawn().pid, kind, cwd=str(self.repo), name=name, **fields
        )
        return c, peer

    def codex(self, name: str) -> HookAgent:
        agent = HookAgent()
        self.codex_agents.append(agent)
        self.peer(name, "codex", pid=agent.pid)
        return agent

    def hook(self, data: dict, session: str = SESSION):
        data = {**data, "cwd": str(self.repo), "session_id": session}
        return run_hook(self.daemon, data)

    def edit(self, tool: str, path: str, session: str = SESSION, event: str = "PostToolUse"):
        key = "notebook_path" if tool == "NotebookEdit" else "file_path"
        return self.hook(claude_input(event, tool_name=tool, tool_input={key: path}), session)

    def peers(self) -> dict[str, p.Peer]:
        reply = self.alpha_c.request(p.ListPeers, include_self=True)
        return {x.name: x for x in reply.peers}

    def files(self) -> list[p.FileHolder]:
        return self.alpha_c.request(p.ListFiles).holders

    def ref(self, rel: str) -> p.FileRef:
        return p.FileRef(path=str(self.repo / rel), repo=str(self.repo))

    def mail(self, client: Client) -> list[p.Message]:
        msgs = client.request(p.Claim).messages
        if msgs:
            client.request(p.Ack, message_ids=[m.id for m in msgs], via="cli")
        return msgs

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for a in self.codex_agents:
            a.close()


@pytest.fixture
def world(daemon, agents, repo):
    w = World(daemon, agents, repo)
    yield w
    w.close()


def output(done) -> dict:
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    return json.loads(done.stdout)


def silent(done) -> None:
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def apply_patch(*headers: str) -> str:
    body = []
    for h in headers:
        body += [h, "+x"] if h.startswith("*** Add File:") else [h]
    return "\n".join(["*** Begin Patch", *body, "*** End Patch"]) + "\n"


# --------------------------------------------------------------------------- activity


def test_claude_code_edit_tools_are_recorded(world: World) -> None:
    repo = world.repo
    for tool, path in [
        ("Write", str(repo / "src/app.py")),
        ("Edit", "src/auth/login.py"),  # relative to the hook's cwd
        ("MultiEdit", str(repo / "src/../README.md")),  # '..' resolved
        ("NotebookEdit", "nb.ipynb"),  # a file that does not exist yet
        ("Bash", "src/auth/token.py"),  # not an edit tool: nothing
    ]:
        silent(world.edit(tool, path))
    alpha = world.peers()["alpha"]
    assert alpha.files == 4
    assert alpha.recent_files == ["nb.ipynb", "README.md", "src/auth/login.py"]
    active = {h.path for h in world.files() if h.name == "alpha"}
    assert active == {
        str(repo / x) for x in ("src/app.py", "src/auth/login.py", "README.md", "nb.ipynb")
    }
    assert log_lines(world.daemon) == []


def test_codex_apply_patch_headers_are_recorded(world: World) -> None:
    codex = world.codex("gamma")
    patch = apply_patch(
        "*** Add File: src/new.py",
        "*** Update File: src/app.py",
        "*** Move to: src/main.py",
        "*** Delete File: README.md",
    )
    data = codex_input(
        "PostToolUse", cwd=str(world.repo), tool_name="apply_patch", tool_input={"command": patch}
    )
    done = codex.run(world.daemon, data)
    assert (done.returncode, done.stdout) == (0, b"")
    gamma = {h.path for h in world.files() if h.name == "gamma"}
    assert gamma == {
        str(world.repo / x) for x in ("src/new.py", "src/app.py", "src/main.py", "README.md")
    }
    # the same patch through the shell counts as well
    shell = codex_input(
        "PostToolUse",
        cwd=str(world.repo),
        tool_name="Bash",
        tool_input={
            "command": [
                "bash",
                "-lc",
                "apply_patch <<'EOF'\n" + apply_patch("*** Update File: src/auth/token.py") + "EOF",
            ]
        },
    )
    assert codex.run(world.daemon, shell).returncode == 0
    assert str(world.repo / "src/auth/token.py") in {h.path for h in world.files()}


def test_a_file_name_that_is_not_utf8_is_recorded_escaped(world: World) -> None:
    """JSON can carry a lone surrogate (a name whose bytes are not UTF-8); the wire takes
    only UTF-8: the hook sends it as \\xNN text, as every client does."""
    raw = b'{"hook_event_name": "PostToolUse", "tool_name": "Write", "tool_input": '
    raw += b'{"file_path": "caf\\udce9.txt"}, "session_id": "' + SESSION.encode()
    raw += b'", "cwd": "' + str(world.repo).encode() + b'"}'
    silent(run_hook(world.daemon, raw))
    assert world.peers()["alpha"].recent_files == ["caf\\xe9.txt"]
    assert log_lines(world.daemon) == []


def test_activity_from_a_subagent_counts_for_its_session(world: World) -> None:
    data = claude_input(
        "PostToolUse", tool_name="Write", tool_input={"file_path": "src/app.py"}, agent_id="agent-1"
    )
    silent(world.hook(data))
    assert world.peers()["alpha"].recent_files == ["src/app.py"]


# --------------------------------------------------------------------------- warnings


def test_pre_tool_use_warns_before_editing_a_file_another_session_edited(world: World) -> None:
    silent(world.edit("Edit", "src/auth/login.py"))  # alpha edits
    # alpha is never warned about its own file
    silent(world.edit("Edit", "src/auth/login.py", event="PreToolUse"))
    out = output(world.edit("Edit", "src/auth/login.py", session=SESSION_B, event="PreToolUse"))
    assert set(out) == {"hookSpecificOutput"}
    spec = out["hookSpecificOutput"]
    assert set(spec) == {"hookEventName", "additionalContext"}
    assert spec["hookEventName"] == "PreToolUse"
    text = spec["additionalContext"]
    assert "another session is working on src/auth/login.py; your edit goes ahead" in text
    assert "alpha (claude-code) has been editing src/auth/login.py since " in text
    assert "last edit" in text and "UTC" in text
    assert 'call mcp__claude-peers__send_message with to="alpha"' in text
    # the edit goes on, and counts as beta's from now
    assert world.peers()["beta"].recent_files == ["src/auth/login.py"]
    # alpha hears of it, once per file and pair in 10 minutes
    notes = world.mail(world.alpha_c)
    assert [m.sender_name for m in notes] == ["beta"]
    assert notes[0].text.startswith(
        "[claude-peers notice] beta was about to edit src/auth/login.py, which you are editing."
    )
    output(world.edit("Edit", "src/auth/login.py", session=SESSION_B, event="PreToolUse"))
    assert world.mail(world.alpha_c) == []


def test_the_pre_tool_use_path_stays_light(world: World) -> None:
    """No asyncio, msgspec, typing, re or protocol Structs on the way to an edit, as for
    the no-mail path (test_hook.test_hook_imports_stay_light)."""
    code = (
        "import sys\nfrom peers_mcp import hook\nrc = hook.main([])\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(rc)\n"
    )
    data = claude_input(
        "PreToolUse",
        cwd=str(world.repo),
        session_id=SESSION_B,
        tool_name="Edit",
        tool_input={"file_path": "src/app.py"},
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(data).encode(),
        capture_output=True,
        env=world.daemon.env,
        timeout=15,
    )
    assert (done.returncode, done.stdout) == (0, b"")
    modules = set(done.stderr.decode().split())
    assert {"peersd.wire", "peersd.paths", "peers_mcp.filehook"} <= modules
    heavy = {
        "asyncio", "msgspec", "typing", "peersd.protocol", "peersd.globs", "peersd.config",
        "peers_mcp.render", "peers_mcp.conflicts", "re", "json", "pathlib", "collections",
    }  # fmt: skip
    assert modules & heavy == set()


def test_other_files_and_other_tools_cost_nothing(world: World) -> None:
    silent(world.edit("Edit", "src/auth/login.py"))
    silent(world.edit("Edit", "src/app.py", session=SESSION_B, event="PreToolUse"))
    bash = claude_input("PreToolUse", tool_input={"command": "cat src/auth/login.py"})
    silent(world.hook(bash, SESSION_B))
    assert world.mail(world.alpha_c) == []


def test_pre_tool_use_denies_under_an_exclusive_claim(world: World) -> None:
    reply = world.alpha_c.request(
        p.ClaimFiles,
        patterns=[world.ref("src/auth/**")],
        exclusive=True,
        reason="rewriting the session handling",
    )
    assert [c.path for c in reply.claims] == [str(world.repo / "src/auth/**")]
    out = output(world.edit("Write", "src/auth/token.py", session=SESSION_B, event="PreToolUse"))
    assert set(out) == {"hookSpecificOutput"}
    spec = out["hookSpecificOutput"]
    assert set(spec) == {"hookEventName", "permissionDecision", "permissionDecisionReason"}
    assert (spec["hookEventName"], spec["permissionDecision"]) == ("PreToolUse", "deny")
    reason = spec["permissionDecisionReason"]
    assert "claude-peers stopped this edit of src/auth/token.py" in reason
    assert "alpha (claude-code) holds an exclusive claim on src/auth/** since" in reason
    assert 'reason: "rewriting the session handling"' in reason
    assert 'call mcp__claude-peers__send_message with to="alpha"' in reason
    # a denied edit is not beta's activity
    assert world.peers()["beta"].files == 0
    notes = world.mail(world.alpha_c)
    assert "under your exclusive claim on src/auth/** (the edit was refused)" in notes[0].text
    # the holder itself edits freely
    silent(world.edit("Write", "src/auth/token.py", event="PreToolUse"))
    # files outside the claim are free
    silent(world.edit("Write", "src/app.py", session=SESSION_B, event="PreToolUse"))


def test_codex_gets_the_same_denial_with_its_tool_name(world: World) -> None:
    codex = world.codex("gamma")
    world.alpha_c.request(p.ClaimFiles, patterns=[world.ref("src/app.py")], exclusive=True)
    data = codex_input(
        "PreToolUse",
        cwd=str(world.repo),
        tool_name="apply_patch",
        tool_input={"command": apply_patch("*** Update File: src/app.py")},
    )
    done = codex.run(world.daemon, data)
    spec = json.loads(done.stdout)["hookSpecificOutput"]
    assert (spec["hookEventName"], spec["permissionDecision"]) == ("PreToolUse", "deny")
    assert 'mcp__claude_peers__send_message with to="alpha"' in spec["permissionDecisionReason"]
    # found by its ancestry in the same round trip: never warned about its own file, and
    # what it is about to edit counts as its own at once
    login = apply_patch("*** Update File: src/auth/login.py")
    pre = {**data, "tool_input": {"command": login}}
    assert codex.run(world.daemon, pre).stdout == b""
    assert codex.run(world.daemon, pre).stdout == b""
    assert world.peers()["gamma"].recent_files == ["src/auth/login.py"]
    warned = output(world.edit("Edit", "src/auth/login.py", session=SESSION_B, event="PreToolUse"))
    assert "gamma (codex) has been editing" in warned["hookSpecificOutput"]["additionalContext"]


def test_claims_warn_setting_turns_denial_into_a_warning(make_daemon, agents, repo) -> None:
    w = World(make_daemon(claims="warn"), agents, repo)
    try:
        w.alpha_c.request(
            p.ClaimFiles, patterns=[w.ref("src/app.py")], exclusive=True, reason="mine"
        )
        spec = output(w.edit("Edit", "src/app.py", session=SESSION_B, event="PreToolUse"))[
            "hookSpecificOutput"
        ]
        assert set(spec) == {"hookEventName", "additionalContext"}
        assert "holds an exclusive claim on src/app.py" in spec["additionalContext"]
        assert "the edit went ahead" in w.mail(w.alpha_c)[0].text
    finally:
        w.close()


def test_a_session_not_registered_yet_is_still_stopped(world: World) -> None:
    world.alpha_c.request(p.ClaimFiles, patterns=[world.ref("src/app.py")], exclusive=True)
    out = output(world.edit("Edit", "src/app.py", session="not-registered", event="PreToolUse"))
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert log_lines(world.daemon) == []


def test_the_hook_fails_open(make_daemon, agents, repo) -> None:
    daemon = make_daemon(start=False)
    data = claude_input(
        "PreToolUse", cwd=str(repo), tool_name="Edit", tool_input={"file_path": "src/app.py"}
    )
    silent(run_hook(daemon, data))
    assert any("not running" in line for line in log_lines(daemon))


# --------------------------------------------------------------------------- expiry and gone


def test_activity_fades_after_activity_ttl(make_daemon, agents, repo) -> None:
    w = World(make_daemon(activity_ttl=1), agents, repo)
    try:
        silent(w.edit("Edit", "src/app.py"))
        check = w.beta_c.request(
            p.CheckEdit, files=[w.ref("src/app.py")], record=False, notify=False
        )
        assert check.decision == "warn"
        first = check.holders[0].since
        time.sleep(1.3)
        check = w.beta_c.request(
            p.CheckEdit, files=[w.ref("src/app.py")], record=False, notify=False
        )
        assert (check.decision, check.holders) == ("allow", [])
        assert w.peers()["alpha"].files == 0
        # a new edit starts a new stretch: "since" is the new edit, not the old one
        silent(w.edit("Edit", "src/app.py"))
        check = w.beta_c.request(
            p.CheckEdit, files=[w.ref("src/app.py")], record=False, notify=False
        )
        assert check.holders[0].since > first + 1
    finally:
        w.close()


def test_a_gone_peers_files_are_free(world: World, agents: Agents) -> None:
    proc = agents.spawn()
    gc, gone = world.peer("doomed", pid=proc.pid)
    gc.request(p.TouchFiles, files=[world.ref("src/app.py")])
    gc.request(p.ClaimFiles, patterns=[world.ref("src/**")], exclusive=True)
    ask = world.beta_c.request(
        p.CheckEdit, files=[world.ref("src/app.py")], record=False, notify=False
    )
    assert ask.decision == "deny"
    proc.kill()
    proc.wait()
    assert gone.id in world.alpha_c.request(p.Sweep).gone
    ask = world.beta_c.request(
        p.CheckEdit, files=[world.ref("src/app.py")], record=False, notify=False
    )
    assert (ask.decision, ask.holders) == ("allow", [])
    assert [h for h in world.files() if h.name == "doomed"] == []
    world.beta_c.request(p.ClaimFiles, patterns=[world.ref("src/app.py")], exclusive=True)


# --------------------------------------------------------------------------- claims


def claim(client: Client, *refs: p.FileRef, exclusive: bool = False, reason: str = ""):
    return client.request(p.ClaimFiles, patterns=list(refs), exclusive=exclusive, reason=reason)


def test_claim_overlaps(world: World) -> None:
    a, b = world.alpha_c, world.beta_c
    ref = world.ref
    claim(a, ref("src/**/*.py"), exclusive=True, reason="types everywhere")
    # overlapping an exclusive claim: refused, naming the holder and the way to ask
    with pytest.raises(PeersError) as e:
        claim(b, ref("src/auth/*"))
    assert e.value.code == "claim_conflict"
    assert e.value.candidates == ["alpha"]
    assert e.value.message.startswith(
        'src/auth/* overlaps an exclusive claim of alpha on src/**/*.py ("types everywhere"), '
        "held since "
    )
    assert e.value.message.endswith("Ask alpha to release it: send_message to alpha.")
    # globs that cannot meet do not conflict
    claim(b, ref("src/**/*.md"), exclusive=True)
    claim(b, ref("README.md"))
    # an exclusive claim over another's shared claim is refused too; shared + shared is fine
    with pytest.raises(PeersError, match=r"overlaps a claim of beta on README\.md"):
        claim(a, ref("*.md"), exclusive=True)
    claim(a, ref("README.md"))
    # renewing one's own claim changes it in place
    again = claim(a, ref("src/**/*.py"), reason="still at it")
    assert [(c.exclusive, c.reason) for c in again.claims] == [(False, "still at it")]
    assert len([h for h in world.files() if h.name == "alpha" and h.kind == "claim"]) == 2


def test_claim_reports_others_active_on_the_files(world: World) -> None:
    silent(world.edit("Edit", "src/auth/login.py", session=SESSION_B))
    reply = claim(world.alpha_c, world.ref("src/auth/**"), exclusive=True)
    assert [(h.name, h.kind, h.path) for h in reply.holders] == [
        ("beta", "active", str(world.repo / "src/auth/login.py"))
    ]


def test_release(world: World) -> None:
    a = world.alpha_c
    claim(a, world.ref("src/app.py"), world.ref("src/auth/**"))
    released = a.request(p.ReleaseFiles, patterns=[str(world.repo / "src/app.py"), "/nope"])
    assert (released.released, released.not_held) == ([str(world.repo / "src/app.py")], ["/nope"])
    assert a.request(p.ReleaseFiles, all=True).released == [str(world.repo / "src/auth/**")]
    with pytest.raises(PeersError, match="nothing to release"):
        a.request(p.ReleaseFiles)
    with pytest.raises(PeersError, match="not both"):
        a.request(p.ReleaseFiles, patterns=["/x"], all=True)


def test_claims_survive_a_daemon_restart(make_daemon, agents, repo) -> None:
    daemon = make_daemon()
    w = World(daemon, agents, repo)
    claim(w.alpha_c, w.ref("src/auth/**"), exclusive=True, reason="before the restart")
    w.close()
    daemon.kill9()  # answered means committed: nothing of it may be lost
    daemon.start()
    with daemon.client("claude-code") as c:
        holders = c.request(p.ListFiles).holders
        assert [(h.name, h.path, h.exclusive, h.reason) for h in holders] == [
            ("alpha", str(repo / "src/auth/**"), True, "before the restart")
        ]
        ask = c.request(
            p.CheckEdit,
            files=[p.FileRef(path=str(repo / "src/auth/login.py"))],
            record=False,
            notify=False,
        )
        assert ask.decision == "deny"


def test_file_status(world: World) -> None:
    silent(world.edit("Edit", "src/auth/login.py"))
    claim(world.beta_c, world.ref("src/auth/**"), reason="tests")
    items = world.beta_c.request(
        p.FileStatus,
        paths=[
            str(world.repo / "src/auth/login.py"),
            str(world.repo / "src/*.py"),
            str(world.repo / "src/**"),
        ],
    ).items
    assert [(h.name, h.kind) for h in items[0].holders] == [("beta", "claim"), ("alpha", "active")]
    assert items[1].holders == []  # src/*.py covers neither src/auth/login.py nor src/auth/**
    # a glob asked beside the file itself: the same hold counts for both
    assert [(h.name, h.kind, h.path) for h in items[2].holders] == [
        ("beta", "claim", str(world.repo / "src/auth/**")),
        ("alpha", "active", str(world.repo / "src/auth/login.py")),
    ]


# --------------------------------------------------------------------------- status


def test_status_comes_from_the_hooks(world: World) -> None:
    assert world.peers()["alpha"].status is None
    silent(world.hook(claude_input("UserPromptSubmit")))
    assert world.peers()["alpha"].status == "working"
    silent(world.hook(claude_input("Stop")))
    assert world.peers()["alpha"].status == "idle"
    proc = spawn_hook(world.daemon, claude_input("Stop", cwd=str(world.repo)), "--wait")
    try:
        deadline = time.monotonic() + 10
        while world.peers()["alpha"].status != "waiting":
            assert time.monotonic() < deadline, "the armed wake was not seen"
            time.sleep(0.05)
        # a prompt while the wake is armed: working wins
        silent(world.hook(claude_input("UserPromptSubmit")))
        assert world.peers()["alpha"].status == "working"
        silent(world.hook(claude_input("Stop")))
        assert world.peers()["alpha"].status == "waiting"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while world.peers()["alpha"].status != "idle":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    peer = world.alpha_c.request(p.SetStatus, note="away until 3pm").peer
    assert (peer.note, peer.status) == ("away until 3pm", "idle")
    assert world.peers()["alpha"].note == "away until 3pm"
    with pytest.raises(PeersError, match="invalid request"):
        world.alpha_c.request(p.SetStatus, note="x" * 201)


# --------------------------------------------------------------------------- bad input


def test_bad_requests_get_clear_errors(world: World) -> None:
    a = world.alpha_c
    repo = str(world.repo)
    cases = [
        (p.TouchFiles, {"files": [p.FileRef(path="src/app.py")]}, "is not absolute"),
        (p.TouchFiles, {"files": [p.FileRef(path=repo + "/src/../x")]}, "is not normalised"),
        (p.ClaimFiles, {"patterns": [world.ref("x")], "ttl_seconds": 0}, "ttl_seconds"),
        (p.ClaimFiles, {"patterns": [world.ref("x")], "ttl_seconds": 86401}, "ttl_seconds"),
        (p.ClaimFiles, {"patterns": [p.FileRef(path="/etc/hosts")]}, "has no repository"),
        (
            p.ClaimFiles,
            {"patterns": [p.FileRef(path="/etc/hosts", repo=repo)]},
            "is not inside its repository",
        ),
        (p.ClaimFiles, {"patterns": []}, "patterns"),
        (p.CheckEdit, {"files": [world.ref(f"f{i}") for i in range(1001)]}, "files"),
    ]
    for kind, fields, why in cases:
        with pytest.raises(PeersError, match=why) as e:
            a.request(kind, **fields)
        assert e.value.code == "bad_request", (kind, fields)
    # an unregistered connection may only look
    with world.daemon.client("cli") as anon:
        with pytest.raises(PeersError) as e:
            anon.request(p.CheckEdit, files=[world.ref("src/app.py")])
        assert e.value.code == "not_registered"
        anon.request(p.CheckEdit, files=[world.ref("src/app.py")], record=False, notify=False)
    # nothing was stored by any of it
    assert world.files() == []


def test_a_thousand_files_in_one_edit(world: World) -> None:
    names = [f"src/gen/f{i}.py" for i in range(1500)]
    patch = apply_patch(*[f"*** Add File: {n}" for n in names])
    codex = world.codex("gamma")
    data = codex_input(
        "PostToolUse", cwd=str(world.repo), tool_name="apply_patch", tool_input={"command": patch}
    )
    assert codex.run(world.daemon, data).returncode == 0
    assert world.peers()["gamma"].files == 1500


def test_protocol_values_round_trip() -> None:
    h = p.FileHolder(peer_id="p-1", name="x", kind="claim", path="/r/a", since=1.0, until=2.0)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(h), type=p.FileHolder) == h


# --------------------------------------------------------------------------- the CLI


def test_cli_claim_files_release(world: World, repo: Path) -> None:
    env = world.daemon.env
    done = run_peers(
        env, "claim", "src/auth", "--exclusive", "--ttl", "2h", "--reason", "auth", cwd=repo
    )
    assert done.code == 0, done
    assert "Claimed src/auth/** (exclusive, until" in done.out and 'reason "auth"' in done.out
    listed = run_peers(env, "files", "--json", cwd=repo)
    rows = listed.json()
    assert [(r["path"], r["kind"], r["exclusive"], r["reason"]) for r in rows] == [
        (str(repo / "src/auth/**"), "claim", True, "auth")
    ]
    table = run_peers(env, "files", "--repo", cwd=repo)
    assert "src/auth/**" in table.out and "claim exclusive" in table.out
    # the agent sessions are refused, and told whom to ask
    with pytest.raises(PeersError, match=r"overlaps an exclusive claim of repo on src/auth/\*\*"):
        claim(world.alpha_c, world.ref("src/auth/login.py"))
    for args, why in [
        (("claim", "x", "--ttl", "0"), "more than 0 and at most 24h"),
        (("claim", "x", "--ttl", "25h"), "more than 0 and at most 24h"),
        (("claim", "x", "--ttl", "soon"), "give minutes"),
        (("claim", "/etc/hosts"), "not inside a git repository"),
        (("claim", *[f"f{i}" for i in range(1001)]), "at most 1000"),
        (("claim", "src/*/../x"), "'..' after a wildcard"),
        (("release",), "or --all"),
    ]:
        bad = run_peers(env, *args, cwd=repo)
        assert bad.code == 1 and why in bad.err, (args, bad)
    nothing = run_peers(env, "claim", "src/new/*.rs", cwd=repo)
    assert nothing.code == 0 and "No file matches src/new/*.rs yet" in nothing.out
    done = run_peers(env, "release", "src/auth", cwd=repo)
    assert done.code == 0 and "released 1 claim(s)" in done.out
    assert run_peers(env, "release", "--all", cwd=repo).code == 0
    assert run_peers(env, "files", "--json", cwd=repo).json() == []


def test_cli_non_utf8_file_name(world: World, repo: Path) -> None:
    name = b"caf\xe9.txt"  # Latin-1: not UTF-8
    with open(os.path.join(os.fsencode(repo), name), "wb") as f:
        f.write(b"x")
    done = subprocess.run(
        [*PEERS, "claim", name, "--exclusive"],
        cwd=repo,
        env=world.daemon.env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done
    stored = str(repo) + "/caf\\xe9.txt"
    assert [h.path for h in world.files()] == [stored]
    ask = world.alpha_c.request(
        p.CheckEdit, files=[p.FileRef(path=stored)], record=False, notify=False
    )
    assert ask.decision == "deny"


def test_peers_table_shows_status_note_and_files(world: World) -> None:
    silent(world.edit("Edit", "src/app.py"))
    silent(world.hook(claude_input("UserPromptSubmit")))
    world.alpha_c.request(p.SetStatus, note="on it")
    out = run_peers(world.daemon.env, "peers").out
    line = next(x for x in out.splitlines() if x.startswith("alpha"))
    assert "working" in line and "1: src/app.py" in line and "[on it]" in line
