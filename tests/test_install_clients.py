"""``peers install`` / ``uninstall`` / ``doctor`` for the clients beyond Claude Code and
Codex, run as real subprocesses on a temporary HOME (as tests/test_install.py does).

Config formats: shared/reference/clients-2026-12.md §3.1 (Gemini CLI:
``~/.gemini/settings.json`` holds ``mcpServers`` and ``hooks``, hook timeouts in ms).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from peers_cli import install

from .conftest import DaemonProc, clean_env
from .test_install import HOOK, MCP, backups, checks, ok, peers, snapshot, theirs, write_json

GEMINI_SETTINGS = {
    "theme": "GitHub",
    "general": {"vimMode": True},
    "mcpServers": {"github": {"command": "/opt/gh-mcp", "args": ["--ro"], "timeout": 30000}},
    "hooks": {
        "BeforeTool": [
            {"matcher": "write_file", "hooks": [{"type": "command", "command": "/opt/guard"}]}
        ],
        "AfterAgent": [{"hooks": [{"type": "command", "command": "/opt/notify", "timeout": 5}]}],
    },
}


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """HOME and a PATH with nothing on it (no real client is ever found)."""
    bindir = home / "bin"
    bindir.mkdir()
    base = clean_env(home, PATH=str(bindir))
    for key in ("CODEX_HOME", "CLAUDE_CONFIG_DIR", "FORCE_COLOR", "COLUMNS"):
        base.pop(key, None)
    return base


OUR_COMMAND = f"{HOOK} --client gemini"
EVENTS = ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent")


def ours(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [h for g in groups for h in g["hooks"] if install.hooks.is_our_hook(h)]


def test_install_gemini_keeps_the_users_settings_and_goes_back(
    home: Path, env: dict[str, str]
) -> None:
    path = home / ".gemini" / "settings.json"
    write_json(path, GEMINI_SETTINGS)
    path.chmod(0o640)
    before = path.read_bytes()

    report = ok(peers(env, "install", "gemini", "--json")).json()
    assert report["client"] == "gemini" and report["changed"] is True
    assert len(report["backups"]) == 1 and backups(home)[0].startswith(".gemini/settings.json.bak-")
    data = json.loads(path.read_text())
    assert data["mcpServers"]["claude-peers"] == {"command": MCP, "args": []}
    assert data["mcpServers"]["github"] == GEMINI_SETTINGS["mcpServers"]["github"]
    for event in EVENTS:
        assert ours(data["hooks"][event]) == [
            {"type": "command", "command": OUR_COMMAND, "timeout": 10000}
        ], event
    assert theirs(data["hooks"]) == GEMINI_SETTINGS["hooks"]
    assert {k: v for k, v in data.items() if k not in ("mcpServers", "hooks")} == {
        "theme": "GitHub",
        "general": {"vimMode": True},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    # idempotent: nothing to change, nothing written, no second backup
    installed = snapshot(home)
    again = ok(peers(env, "install", "gemini", "--json")).json()
    assert again["changed"] is False and again["backups"] == []
    assert snapshot(home) == installed

    # uninstall: dry run writes nothing, then exactly the user's settings come back
    run = ok(peers(env, "uninstall", "gemini", "--dry-run"))
    assert "would remove" in run.out and snapshot(home) == installed
    ok(peers(env, "uninstall", "gemini"))
    assert json.loads(path.read_text()) == json.loads(before)
    assert ok(peers(env, "uninstall", "gemini", "--json")).json()["changed"] is False


def test_install_gemini_fresh_dry_run_custom_name_and_refusals(
    home: Path, env: dict[str, str]
) -> None:
    path = home / ".gemini" / "settings.json"
    run = ok(peers(env, "install", "gemini", "--dry-run"))
    assert "would add" in run.out and not path.exists()

    ok(peers(env, "install", "gemini", "--server-name", "team"))
    data = json.loads(path.read_text())
    assert data["mcpServers"] == {"team": {"command": MCP, "args": ["--server-name", "team"]}}
    assert ours(data["hooks"]["AfterAgent"])[0]["command"] == (
        f"{HOOK} --server-name team --client gemini"
    )
    # a stale install (the scripts moved) is replaced, not duplicated
    path.write_text(path.read_text().replace(str(Path(MCP).parent), "/old/bin"))
    report = ok(peers(env, "install", "gemini", "--server-name", "team", "--json")).json()
    assert {c["action"] for c in report["changes"]} == {"update"}
    data = json.loads(path.read_text())
    assert data["mcpServers"]["team"]["command"] == MCP
    assert all(len(data["hooks"][e]) == 1 for e in EVENTS)
    ok(peers(env, "uninstall", "gemini"))
    assert not path.exists()  # we created it, nothing else is in it

    path.write_text('{"hooks": {,}')
    run = peers(env, "install", "gemini")
    assert run.code == 1 and "is not valid JSON" in run.err, run
    assert path.read_text() == '{"hooks": {,}'

    write_json(path, {"mcpServers": []})
    run = peers(env, "install", "gemini")
    assert run.code == 1 and '"mcpServers" is not an object' in run.err, run

    write_json(path, GEMINI_SETTINGS)
    path.chmod(0o444)
    made = backups(home)
    run = peers(env, "install", "gemini")
    assert run.code == 1 and f"{path} is read-only (mode 444)" in run.err, run
    assert json.loads(path.read_text()) == GEMINI_SETTINGS and backups(home) == made


def test_doctor_checks_gemini_only_where_it_is_used(
    home: Path, env: dict[str, str], daemon: DaemonProc
) -> None:
    names = set(checks(peers(env, "doctor", "--json")))
    assert not any(n.startswith("Gemini") or n == "gemini" for n in names)

    (home / ".gemini").mkdir()  # Gemini CLI is used here, not wired up
    result = checks(peers(env, "doctor", "--json"))
    assert result["Gemini CLI MCP"]["status"] == "fail"
    assert result["Gemini CLI hooks"]["fix"] == "peers install gemini"

    ok(peers(env, "install", "gemini"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Gemini CLI MCP"]["status"] == "ok", result["Gemini CLI MCP"]
    assert result["Gemini CLI hooks"]["status"] == "ok", result["Gemini CLI hooks"]
    assert result["gemini"]["status"] == "warn"  # wired up, but no gemini on PATH

    path = home / ".gemini" / "settings.json"
    data = json.loads(path.read_text())
    del data["hooks"]["AfterAgent"]
    write_json(path, data)
    result = checks(peers(env, "doctor", "--json"))
    assert result["Gemini CLI hooks"]["status"] == "fail"
    assert "for AfterAgent" in result["Gemini CLI hooks"]["detail"]


# --------------------------------------------------------------------------- Cursor CLI

CURSOR_MCP = {"mcpServers": {"linear": {"url": "https://mcp.example.org/sse"}}}
CURSOR_HOOKS = {
    "version": 1,
    "hooks": {
        "stop": [{"command": "./hooks/audit.sh"}],
        "afterFileEdit": [{"command": "./hooks/format.sh"}],
    },
}


def test_install_cursor_keeps_the_users_config_and_goes_back(
    home: Path, env: dict[str, str]
) -> None:
    mcp_path, hooks_path = home / ".cursor" / "mcp.json", home / ".cursor" / "hooks.json"
    write_json(mcp_path, CURSOR_MCP)
    write_json(hooks_path, CURSOR_HOOKS)

    run = ok(peers(env, "install", "cursor", "--dry-run"))
    assert "would add" in run.out
    assert json.loads(hooks_path.read_text()) == CURSOR_HOOKS

    report = ok(peers(env, "install", "cursor", "--json")).json()
    assert report["changed"] is True and len(report["backups"]) == 2
    mcp = json.loads(mcp_path.read_text())
    assert mcp["mcpServers"] == {
        **CURSOR_MCP["mcpServers"],
        "claude-peers": {"command": MCP, "args": []},
    }
    hooks = json.loads(hooks_path.read_text())
    assert hooks["version"] == 1
    assert hooks["hooks"]["stop"] == [
        {"command": "./hooks/audit.sh"},
        {"command": f"{HOOK} --client cursor", "loop_limit": 5},
    ]
    assert hooks["hooks"]["afterFileEdit"] == CURSOR_HOOKS["hooks"]["afterFileEdit"]

    installed = snapshot(home)
    assert ok(peers(env, "install", "cursor", "--json")).json()["changed"] is False
    assert snapshot(home) == installed

    ok(peers(env, "uninstall", "cursor"))
    assert json.loads(mcp_path.read_text()) == CURSOR_MCP
    assert json.loads(hooks_path.read_text()) == CURSOR_HOOKS
    assert ok(peers(env, "uninstall", "cursor", "--json")).json()["changed"] is False


def test_install_cursor_fresh_and_refusals(home: Path, env: dict[str, str]) -> None:
    ok(peers(env, "install", "cursor"))
    hooks_path = home / ".cursor" / "hooks.json"
    assert json.loads(hooks_path.read_text()) == {
        "hooks": {"stop": [{"command": f"{HOOK} --client cursor", "loop_limit": 5}]},
        "version": 1,
    }
    ok(peers(env, "uninstall", "cursor"))
    assert not hooks_path.exists() and not (home / ".cursor" / "mcp.json").exists()

    write_json(hooks_path, {"version": 1, "hooks": {"stop": {"command": "x"}}})
    run = peers(env, "install", "cursor")
    assert run.code == 1 and '"hooks.stop" is not a list' in run.err, run
    assert not (home / ".cursor" / "mcp.json").exists()  # nothing written at all

    write_json(hooks_path, CURSOR_HOOKS)
    hooks_path.chmod(0o444)
    run = peers(env, "install", "cursor")
    assert run.code == 1 and f"{hooks_path} is read-only (mode 444)" in run.err, run
    assert not (home / ".cursor" / "mcp.json").exists()


def test_doctor_checks_cursor_only_where_it_is_used(
    home: Path, env: dict[str, str], daemon: DaemonProc
) -> None:
    assert not any(n.startswith("Cursor") for n in checks(peers(env, "doctor", "--json")))
    (home / ".cursor").mkdir()
    result = checks(peers(env, "doctor", "--json"))
    assert result["Cursor MCP"]["status"] == "fail"
    assert result["Cursor hooks"]["fix"] == "peers install cursor"
    ok(peers(env, "install", "cursor"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Cursor MCP"]["status"] == "ok", result["Cursor MCP"]
    assert result["Cursor hooks"]["status"] == "ok", result["Cursor hooks"]
    hooks_path = home / ".cursor" / "hooks.json"
    hooks_path.write_text(hooks_path.read_text().replace(" --client cursor", ""))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Cursor hooks"]["status"] == "fail"
    assert "lacks --client cursor" in result["Cursor hooks"]["detail"]
