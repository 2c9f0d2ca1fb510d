"""Who is touching what, with the real Claude Code and Codex CLIs (docs/coordination.md).

Both sessions work in one git repository. Each test holds the first session open (its
scripted model waits inside a step) while the second one runs, as two people's agents
would overlap:

1. A Codex session edits ``src/app.py`` with ``apply_patch``; a Claude Code session about
   to write the same file is told first (PreToolUse context in its next request), the
   write goes ahead, and the Codex session gets a notice.
2. A Claude Code session claims ``src/auth`` exclusively (``claim_files``); a Codex
   session's ``apply_patch`` there is denied (the reason is what its model sees) and its
   ``git commit`` under the claim is stopped by ``peers guard``; under its shared claim on
   ``src/app.py`` a patch goes ahead with a warning. Once the Claude Code session has
   ended, its claims are gone and the denied patch goes through.

Codex offers its ``apply_patch`` tool only to models whose metadata says so: the tests
give the stub model a catalog entry (``model_catalog_json``) and answer with
``custom_tool_call`` items.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from peersd import protocol as p

from .conftest import SERVER, TEST_TIMEOUT, Run, World
from .model_stub import AnthropicStub, Recorded, ResponsesStub, Turn, block_text, sse

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TEST_TIMEOUT + 120)]

MODEL = {
    "slug": "gpt-e2e-stub",
    "display_name": "stub",
    "description": "scripted stub",
    "supported_reasoning_levels": [],
    "shell_type": "unified_exec",
    "visibility": "list",
    "supported_in_api": True,
    "priority": 1,
    "availability_nux": None,
    "upgrade": None,
    "base_instructions": "You are a scripted stub.",
    "model_messages": None,
    "supports_reasoning_summaries": False,
    "default_reasoning_summary": "auto",
    "support_verbosity": False,
    "default_verbosity": None,
    "apply_patch_tool_type": "freeform",
    "web_search_tool_type": "text",
    "truncation_policy": {"mode": "bytes", "limit": 10000},
    "supports_parallel_tool_calls": False,
    "supports_image_detail_original": False,
    "context_window": 200000,
    "max_context_window": 200000,
    "effective_context_window_percent": 95,
    "experimental_supported_tools": [],
    "input_modalities": ["text"],
    "supports_search_tool": False,
}
"""Codex model metadata for the stub's model name, so Codex offers it ``apply_patch``."""
GIT_ID = {
    "GIT_AUTHOR_NAME": "E2E",
    "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
    "GIT_COMMITTER_NAME": "E2E",
    "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
}


class PatchStub(ResponsesStub):
    """The Responses stub, plus ``Turn.call("apply_patch", input=PATCH)`` as the
    freeform (custom) tool call Codex expects for ``apply_patch``."""

    def stream(self, turn: Turn, body: dict[str, Any]) -> bytes:
        if turn.tool != "apply_patch":
            return super().stream(turn, body)
        n = next(self.ids)
        item = {
            "type": "custom_tool_call",
            "id": f"ctc_stub{n:04d}",
            "call_id": f"call_stub{n:04d}",
            "name": "apply_patch",
            "input": turn.args["input"],
            "status": "completed",
        }
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 110,
        }
        resp = f"resp_stub{n:04d}"
        return sse(
            [
                ("response.created", {"type": "response.created", "response": {"id": resp}}),
                (
                    "response.output_item.added",
                    {"type": "response.output_item.added", "output_index": 0, "item": item},
                ),
                (
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": 0, "item": item},
                ),
                (
                    "response.completed",
                    {
                        "type": "response.completed",
                        "response": {
                            "id": resp,
                            "status": "completed",
                            "output": [item],
                            "usage": usage,
                        },
                    },
                ),
            ]
        )


def custom_outputs(req: Recorded) -> list[str]:
    """The outputs of ``apply_patch`` calls the model was given, oldest first."""
    return [
        str(item.get("output"))
        for item in req.inputs()
        if item.get("type") == "custom_tool_call_output"
    ]


def patch(*headers: str, add: str = "+changed\n") -> str:
    lines = ["*** Begin Patch"]
    for header in headers:
        lines.append(header)
        if header.startswith("*** Add File:"):
            lines.append(add.rstrip("\n"))
        elif header.startswith("*** Update File:"):
            lines += ["@@", "-# original", "+# changed by codex"]
    return "\n".join([*lines, "*** End Patch"]) + "\n"


def make_repo(world: World) -> Path:
    repo = world.workdir("shop")
    env = world.env(**GIT_ID)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    for key, value in (("user.name", "E2E"), ("user.email", "e2e@example.invalid")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True, env=env)
    for name in ("src/app.py", "src/auth/login.py"):
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# original\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True, env=env)
    return repo


def codex_setup(world: World, stub: ResponsesStub, sandbox: str = "workspace-write") -> None:
    """``peers install codex`` and the e2e config, with the stub model's catalog entry, a
    sandbox that lets the session write, and a recording PreToolUse hook."""
    world.install_codex(stub)
    catalog = world.home / "codex-models.json"
    catalog.write_text(json.dumps({"models": [MODEL]}))
    config = world.codex_home / "config.toml"
    text = config.read_text().replace('sandbox_mode = "read-only"', f'sandbox_mode = "{sandbox}"')
    config.write_text(f'model_catalog_json = "{catalog}"\n' + text)
    hooks_path = world.codex_home / "hooks.json"
    hooks = json.loads(hooks_path.read_text())
    hooks["hooks"]["PreToolUse"].append(
        {"hooks": [{"type": "command", "command": world.record_hook_command()}]}
    )
    hooks_path.write_text(json.dumps(hooks, indent=2))


def claude(world: World, stub: AnthropicStub, cwd: Path, prompt: str, tools: list[str]) -> Run:
    """``claude -p`` allowed the built-in ``tools`` and all of our MCP server's tools."""
    argv = [
        str(world.clients.claude),
        "-p",
        prompt,
        "--allowedTools",
        ",".join([*tools, f"mcp__{SERVER}"]),
        "--output-format",
        "json",
        "--debug",
    ]
    return world.start("claude", argv, cwd, world.claude_env(stub))


class Nested:
    """The second session, run from inside a model step of the first one: that step (and
    so the first session) stays open until the second session is done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, body: Any) -> None:
        try:
            body()
        except BaseException as e:  # re-raised in the test thread
            self.error = e
        finally:
            self.done.set()

    def check(self) -> None:
        assert self.done.wait(240), "the second session did not finish"
        if self.error is not None:
            raise self.error


def test_a_session_is_told_before_editing_a_file_another_one_just_edited(world: World) -> None:
    repo = make_repo(world)
    app = repo / "src" / "app.py"
    second = Nested()
    seen: dict[str, Any] = {}

    # The Claude Code session "shop-2": read the file, then write it.
    def writes(req: Recorded) -> Turn:
        return Turn.call("Write", file_path=str(app), content="# rewritten by claude\n")

    def after_write(req: Recorded) -> Turn:
        seen["claude request"] = req
        return Turn.say("Wrote it.")

    claude_stub = world.stub(
        AnthropicStub(
            [Turn.call("Read", file_path=str(app)), writes, after_write], name="claude shop-2"
        )
    )

    def claude_session() -> None:
        run = claude(world, claude_stub, repo, "Rewrite src/app.py.", ["Read", "Write"])
        seen["claude run"] = run
        run.check()

    # The Codex session "shop": patch the file, then wait (open) while Claude works.
    def codex_waits(req: Recorded) -> Turn:
        seen["codex patched"] = custom_outputs(req)
        # Only once the Codex session is registered do both sessions have their names.
        world.wait_peer("shop", "codex")
        second.run(claude_session)
        return Turn.say("Patched src/app.py.")

    def codex_reads_notice(req: Recorded) -> Turn:
        seen["codex notice"] = req.text()
        return Turn.say("Noted: shop-2 is on src/app.py too.")

    codex_stub = world.stub(
        PatchStub(
            [
                Turn.call("apply_patch", input=patch("*** Update File: src/app.py")),
                codex_waits,
                # the notice arrives as mail; the Stop hook shows it and the session goes on
                codex_reads_notice,
            ],
            name="codex shop",
        )
    )
    world.install_claude()
    codex_setup(world, codex_stub)
    codex = world.codex(repo, "Change src/app.py.")
    codex.check()
    second.check()

    assert "Success" in seen["codex patched"][0]
    # Claude Code's model was told before its write, in the request after the Write call
    text = seen["claude request"].text()
    assert "another session is working on src/app.py; your edit goes ahead" in text
    assert "shop (codex, working) has been editing src/app.py since" in text
    assert f'call mcp__{SERVER}__send_message with to=\\"shop\\"' in text
    # ...and the write went ahead
    assert app.read_text() == "# rewritten by claude\n"
    # The Codex session heard of it, as a notice from the Claude Code session
    notes = [m for m in world.history("shop") if m.text.startswith("[claude-peers notice]")]
    assert [(m.sender_name, m.recipient_name) for m in notes] == [("shop-2", "shop")]
    assert "shop-2 was about to edit src/app.py, which you are editing." in notes[0].text
    assert "shop-2 was about to edit src/app.py, which you are editing." in seen["codex notice"]
    # What the hooks saw: Codex's patch in tool_input.command, Claude Code's file_path
    pre = world.hook_inputs("PreToolUse")
    assert [h["tool_name"] for h in pre] == ["apply_patch"]
    assert "*** Update File: src/app.py" in pre[0]["tool_input"]["command"]


def test_an_exclusive_claim_stops_another_sessions_write_and_commit(world: World) -> None:
    repo = make_repo(world)
    login = repo / "src" / "auth" / "login.py"
    world.peers_cli("guard", "install", "--repo", str(repo))
    first = Nested()
    seen: dict[str, Any] = {}
    env = world.env(**GIT_ID)

    # The Codex session "shop-2": patch src/auth/login.py, then try to commit a change
    # there made through the shell (which the hooks do not see; the guard does).
    commit = (
        "echo '# via the shell' >> src/auth/login.py && git add src/auth/login.py && "
        "git commit -m 'touch login'"
    )

    def after_patch(req: Recorded) -> Turn:
        seen["patch output"] = custom_outputs(req)[-1]
        return Turn.call("exec_command", cmd=commit)

    def after_commit(req: Recorded) -> Turn:
        seen["commit output"] = req.function_outputs()[-1]
        return Turn.call("apply_patch", input=patch("*** Update File: src/app.py"))

    def after_shared(req: Recorded) -> Turn:
        seen["shared request"] = req
        return Turn.say("Blocked on auth; changed the app.")

    codex_stub = world.stub(
        PatchStub(
            [
                Turn.call("apply_patch", input=patch("*** Update File: src/auth/login.py")),
                after_patch,
                after_commit,
                after_shared,
                # the third run, after the claim has gone
                Turn.call("apply_patch", input=patch("*** Update File: src/auth/login.py")),
                lambda req: Turn.say("Patched: " + custom_outputs(req)[-1][:200]),
            ],
            name="codex shop-2",
        )
    )

    def codex_session() -> None:
        run = world.codex(repo, "Fix the login form and commit it.")
        seen["codex run"] = run
        run.check()

    # The Claude Code session "shop": claim src/auth, then wait (open) while Codex works.
    def claude_waits(req: Recorded) -> Turn:
        seen["claim result"] = [block_text(r) for r in req.tool_results()]
        world.wait_peer("shop", "claude-code")
        first.run(codex_session)
        return Turn.say("Claimed and done.")

    claude_stub = world.stub(
        AnthropicStub(
            [
                Turn.call(
                    f"mcp__{SERVER}__claim_files",
                    paths=["src/auth"],
                    exclusive=True,
                    reason="rewriting the login flow",
                ),
                Turn.call(f"mcp__{SERVER}__claim_files", paths=["src/app.py"], reason="tidy up"),
                claude_waits,
                Turn.say("Claimed and done."),
            ],
            name="claude shop",
        )
    )
    world.install_claude()
    codex_setup(world, codex_stub, sandbox="danger-full-access")
    run = claude(world, claude_stub, repo, "Claim the auth code.", [])
    run.check()
    first.check()

    exclusive, shared = seen["claim result"]
    assert exclusive.startswith("Claimed src/auth/** (exclusive, until ")
    assert shared.startswith("Claimed src/app.py (shared, until ")
    # The patch was denied, and the Codex model was told why and whom to ask
    denied = seen["patch output"]
    assert "claude-peers stopped this edit of src/auth/login.py" in denied
    assert "shop (claude-code, working) holds an exclusive claim on src/auth/**" in denied
    assert 'reason: "rewriting the login flow"' in denied
    assert 'mcp__claude_peers__send_message with to="shop"' in denied
    # The commit was stopped by the guard, naming holder, reason and overrides
    stopped = seen["commit output"]
    assert "peers guard: this commit is stopped" in stopped
    assert 'reason: "rewriting the login flow"' in stopped and "--no-verify" in stopped
    # Under a shared claim the patch goes ahead, and the model is told (a developer
    # message from the PreToolUse hook)
    warned = seen["shared request"]
    assert "Success" in custom_outputs(warned)[-1]
    told = [t for t in warned.role_texts("developer") if "src/app.py" in t]
    assert any("another session is working on src/app.py; your edit goes ahead" in t for t in told)
    assert any("shop (claude-code, working) holds a shared claim on src/app.py" in t for t in told)
    assert '"tidy up"' in told[-1]
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=repo, env=env, capture_output=True, text=True
    ).stdout.split()
    assert log == ["init"]
    assert "# changed by codex" not in login.read_text()

    # The Claude Code session has ended: once the sweep has seen it, its claim is gone.
    world.cli.request(p.Sweep)
    assert [h for h in world.cli.request(p.ListFiles).holders if h.kind == "claim"] == []
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, env=env, check=True)
    subprocess.run(["git", "reset", "-q"], cwd=repo, env=env, check=True)
    third = world.codex(repo, "Fix the login form.")
    third.check()
    assert "# changed by codex" in login.read_text()
