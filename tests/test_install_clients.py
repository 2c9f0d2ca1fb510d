"""``peers install`` / ``uninstall`` / ``doctor`` for the clients beyond Claude Code and
Codex, run as real subprocesses on a temporary HOME (as tests/test_install.py does).

Config formats: shared/reference/clients-2026-12.md §3.1 (Gemini CLI:
``~/.gemini/settings.json`` holds ``mcpServers`` and ``hooks``, hook timeouts in ms).
"""

from __future__ import annotations

import json
import shlex
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


# --------------------------------------------------------------------------- Copilot CLI

COPILOT_MCP = {
    "mcpServers": {
        "github": {"type": "http", "url": "https://api.example.org/mcp", "tools": ["*"]},
    }
}
COPILOT_THEIR_HOOKS = {
    "version": 1,
    "hooks": {"preToolUse": [{"type": "command", "bash": "./audit.sh", "timeoutSec": 5}]},
}
COPILOT_COMMAND = f"{HOOK} --client copilot"


def test_install_copilot_keeps_the_users_config_and_goes_back(
    home: Path, env: dict[str, str]
) -> None:
    """``~/.copilot/mcp-config.json`` gains our server (every tool offered), and our own hooks
    file ``hooks/claude-peers.json`` ``postToolUse`` and ``agentStop`` handlers (Copilot's
    ``bash`` and ``timeoutSec`` fields); the user's other hooks file is never touched;
    uninstall puts the config back exactly and removes the file it made."""
    mcp_path = home / ".copilot" / "mcp-config.json"
    hooks_path = home / ".copilot" / "hooks" / "claude-peers.json"
    theirs_path = home / ".copilot" / "hooks" / "audit.json"
    write_json(mcp_path, COPILOT_MCP)
    write_json(theirs_path, COPILOT_THEIR_HOOKS)
    before = snapshot(home)

    run = ok(peers(env, "install", "copilot", "--dry-run"))
    assert "would add" in run.out and snapshot(home) == before

    report = ok(peers(env, "install", "copilot", "--json")).json()
    assert report["client"] == "copilot" and report["changed"] is True
    assert len(report["backups"]) == 1  # mcp-config.json; the hooks file is new
    assert json.loads(mcp_path.read_text())["mcpServers"] == {
        **COPILOT_MCP["mcpServers"],
        "claude-peers": {"command": MCP, "args": [], "tools": ["*"]},
    }
    handler = {"type": "command", "bash": COPILOT_COMMAND, "timeoutSec": 10}
    assert json.loads(hooks_path.read_text()) == {
        "hooks": {"postToolUse": [handler], "agentStop": [handler]},
        "version": 1,
    }
    assert json.loads(theirs_path.read_text()) == COPILOT_THEIR_HOOKS

    installed = snapshot(home)
    again = ok(peers(env, "install", "copilot", "--json")).json()
    assert again["changed"] is False and again["backups"] == []
    assert snapshot(home) == installed

    # an entry that lost its "tools" (edited by hand) gets it back, nothing else changes
    data = json.loads(mcp_path.read_text())
    del data["mcpServers"]["claude-peers"]["tools"]
    write_json(mcp_path, data)
    report = ok(peers(env, "install", "copilot", "--json")).json()
    assert [c["action"] for c in report["changes"]] == ["update"]
    assert json.loads(mcp_path.read_text())["mcpServers"]["claude-peers"]["tools"] == ["*"]

    ok(peers(env, "uninstall", "copilot"))
    assert json.loads(mcp_path.read_text()) == COPILOT_MCP
    assert not hooks_path.exists()
    assert json.loads(theirs_path.read_text()) == COPILOT_THEIR_HOOKS
    assert ok(peers(env, "uninstall", "copilot", "--json")).json()["changed"] is False


def test_install_copilot_honours_copilot_home_and_refuses_broken_files(
    home: Path, env: dict[str, str]
) -> None:
    elsewhere = home / "cfg" / "copilot"
    ok(peers({**env, "COPILOT_HOME": str(elsewhere)}, "install", "copilot"))
    assert (elsewhere / "mcp-config.json").exists()
    assert (elsewhere / "hooks" / "claude-peers.json").exists()
    assert not (home / ".copilot").exists()

    hooks_path = home / ".copilot" / "hooks" / "claude-peers.json"
    write_json(hooks_path, {"version": 1, "hooks": {"agentStop": {"bash": "x"}}})
    run = peers(env, "install", "copilot")
    assert run.code == 1 and '"hooks.agentStop" is not a list' in run.err, run
    assert not (home / ".copilot" / "mcp-config.json").exists()  # nothing written at all


def test_doctor_checks_copilot_only_where_it_is_used(
    home: Path, env: dict[str, str], daemon: DaemonProc
) -> None:
    assert not any(n.startswith("Copilot") for n in checks(peers(env, "doctor", "--json")))
    (home / ".copilot").mkdir()
    result = checks(peers(env, "doctor", "--json"))
    assert result["Copilot CLI MCP"]["status"] == "fail"
    assert result["Copilot CLI hooks"]["fix"] == "peers install copilot"
    ok(peers(env, "install", "copilot"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Copilot CLI MCP"]["status"] == "ok", result["Copilot CLI MCP"]
    assert result["Copilot CLI hooks"]["status"] == "ok", result["Copilot CLI hooks"]
    assert result["copilot"]["status"] == "warn"  # wired up, but no copilot on PATH
    hooks_path = home / ".copilot" / "hooks" / "claude-peers.json"
    data = json.loads(hooks_path.read_text())
    data["hooks"]["agentStop"][0]["bash"] = HOOK
    write_json(hooks_path, data)
    mcp_path = home / ".copilot" / "mcp-config.json"
    mcp_path.write_text(mcp_path.read_text().replace('"*"', '"whoami"'))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Copilot CLI hooks"]["status"] == "fail"
    detail = result["Copilot CLI hooks"]["detail"]
    assert "lacks peers-hook --client copilot for agentStop" in detail
    assert result["Copilot CLI MCP"]["status"] == "warn"
    assert '"tools": ["*"]' in result["Copilot CLI MCP"]["detail"]


# --------------------------------------------------------------------------- opencode

OPENCODE_CONFIG = {
    "$schema": "https://opencode.ai/config.json",
    "theme": "tokyonight",
    "mcp": {"jira": {"type": "remote", "url": "https://jira.example.org/mcp", "enabled": True}},
    "provider": {"local": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "x"}}},
}


def test_install_opencode_keeps_the_users_config_and_goes_back(
    home: Path, env: dict[str, str]
) -> None:
    """``opencode.json`` gains ``mcp.claude-peers`` (opencode's ``local`` entry: the command is
    a list); ``plugins/claude-peers.js`` is written whole with the peers-hook command in it;
    idempotent; uninstall puts the config back and removes the plugin; a plugin file of the
    same name that is not ours is refused, not replaced."""
    base = home / ".config" / "opencode"
    path, plugin = base / "opencode.json", base / "plugins" / "claude-peers.js"
    write_json(path, OPENCODE_CONFIG)

    run = ok(peers(env, "install", "opencode", "--dry-run"))
    assert "would add" in run.out and not plugin.exists()

    report = ok(peers(env, "install", "opencode", "--json")).json()
    assert report["changed"] is True and len(report["backups"]) == 1
    data = json.loads(path.read_text())
    assert data["mcp"] == {
        **OPENCODE_CONFIG["mcp"],
        "claude-peers": {"type": "local", "command": [MCP], "environment": {}, "enabled": True},
    }
    assert {k: v for k, v in data.items() if k != "mcp"} == {
        k: v for k, v in OPENCODE_CONFIG.items() if k != "mcp"
    }
    source = plugin.read_text()
    assert source.startswith("// claude-peers plugin: written by `peers install opencode`")
    argv = [*shlex.split(HOOK), "--client", "opencode"]  # spawned without a shell
    assert f"const HOOK = {json.dumps(argv)}\n" in source
    for hook in ('"tool.execute.after"', '"session.idle"', "client.session.prompt"):
        assert hook in source

    installed = snapshot(home)
    assert ok(peers(env, "install", "opencode", "--json")).json()["changed"] is False
    assert snapshot(home) == installed

    # a custom name: a second entry, and the plugin's hook names it
    ok(peers(env, "install", "opencode", "--server-name", "team"))
    data = json.loads(path.read_text())
    assert data["mcp"]["team"]["command"] == [MCP, "--server-name", "team"]
    assert '"--server-name", "team"' in plugin.read_text()

    ok(peers(env, "uninstall", "opencode"))
    assert json.loads(path.read_text()) == OPENCODE_CONFIG
    assert not plugin.exists()
    assert ok(peers(env, "uninstall", "opencode", "--json")).json()["changed"] is False

    plugin.write_text("export const Mine = async () => ({})\n")
    run = peers(env, "install", "opencode")
    assert run.code == 1 and "was not written by peers install" in run.err, run
    assert plugin.read_text() == "export const Mine = async () => ({})\n"
    assert json.loads(path.read_text()) == OPENCODE_CONFIG
    ok(peers(env, "uninstall", "opencode"))
    assert plugin.exists()  # not ours: left alone


def test_install_opencode_honours_xdg_and_refuses_a_broken_mcp_table(
    home: Path, env: dict[str, str]
) -> None:
    xdg = home / "xdg"
    ok(peers({**env, "XDG_CONFIG_HOME": str(xdg)}, "install", "opencode"))
    assert (xdg / "opencode" / "opencode.json").exists()
    assert (xdg / "opencode" / "plugins" / "claude-peers.js").exists()
    path = home / ".config" / "opencode" / "opencode.json"
    write_json(path, {"mcp": []})
    run = peers(env, "install", "opencode")
    assert run.code == 1 and '"mcp" is not an object' in run.err, run
    assert not (path.parent / "plugins").exists()


def test_doctor_checks_opencode_only_where_it_is_used(
    home: Path, env: dict[str, str], daemon: DaemonProc
) -> None:
    assert not any(n.startswith("opencode") for n in checks(peers(env, "doctor", "--json")))
    (home / ".config" / "opencode").mkdir(parents=True)
    result = checks(peers(env, "doctor", "--json"))
    assert result["opencode MCP"]["status"] == "fail"
    assert result["opencode plugin"]["fix"] == "peers install opencode"
    ok(peers(env, "install", "opencode"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["opencode MCP"]["status"] == "ok", result["opencode MCP"]
    assert result["opencode plugin"]["status"] == "ok", result["opencode plugin"]
    plugin = home / ".config" / "opencode" / "plugins" / "claude-peers.js"
    # the launcher's package path moved away: doctor says the hook cannot start
    paths = install.common.hook_paths()
    moved = plugin.read_text()
    for d in paths:
        moved = moved.replace(
            json.dumps(json.dumps(d))[1:-1], json.dumps(json.dumps("/gone/src"))[1:-1]
        )
    plugin.write_text(moved)
    result = checks(peers(env, "doctor", "--json"))
    assert result["opencode plugin"]["status"] == "fail", result["opencode plugin"]
    assert "/gone/src" in result["opencode plugin"]["detail"]


# --------------------------------------------------------------------------- Antigravity CLI

AGY_MCP = {"mcpServers": {"docs": {"serverUrl": "https://docs.example.org/mcp"}}}
AGY_HOOKS = {
    "my-suite": {
        "PreToolUse": [
            {"matcher": "run_command", "hooks": [{"type": "command", "command": "/opt/guard"}]}
        ]
    }
}
AGY_COMMAND = f"{HOOK} --client antigravity"


def test_install_antigravity_keeps_the_users_config_and_goes_back(
    home: Path, env: dict[str, str]
) -> None:
    """``~/.gemini/config/mcp_config.json`` gains our server, ``~/.gemini/config/hooks.json``
    a ``claude-peers`` suite with a PreInvocation hook (timeout in seconds); the user's
    suites stay; a handler of ours left in the older CLI-local file (or in a suite of the
    user's) is taken out by uninstall as well."""
    config = home / ".gemini" / "config"
    mcp_path, hooks_path = config / "mcp_config.json", config / "hooks.json"
    old_path = home / ".gemini" / "antigravity-cli" / "hooks.json"
    write_json(mcp_path, AGY_MCP)
    write_json(hooks_path, AGY_HOOKS)
    gemini_settings = home / ".gemini" / "settings.json"
    write_json(gemini_settings, GEMINI_SETTINGS)  # Gemini CLI's file: never touched

    ok(peers(env, "install", "antigravity"))
    assert json.loads(mcp_path.read_text())["mcpServers"] == {
        **AGY_MCP["mcpServers"],
        "claude-peers": {"command": MCP, "args": []},
    }
    hooks = json.loads(hooks_path.read_text())
    assert hooks == {
        **AGY_HOOKS,
        "claude-peers": {
            "PreInvocation": [
                {"hooks": [{"type": "command", "command": AGY_COMMAND, "timeout": 10}]}
            ]
        },
    }
    installed = snapshot(home)
    assert ok(peers(env, "install", "antigravity", "--json")).json()["changed"] is False
    assert snapshot(home) == installed

    # stray handlers of ours: in the user's suite, and in the older file
    hooks["my-suite"]["Stop"] = [{"hooks": [{"type": "command", "command": AGY_COMMAND}]}]
    write_json(hooks_path, hooks)
    write_json(old_path, {"peers": {"PreInvocation": hooks["claude-peers"]["PreInvocation"]}})
    report = ok(peers(env, "install", "antigravity", "--json")).json()
    assert report["changed"] is True
    assert json.loads(hooks_path.read_text())["my-suite"] == AGY_HOOKS["my-suite"]

    report = ok(peers(env, "uninstall", "antigravity", "--json")).json()
    assert {c["where"] for c in report["changes"]} == {
        "~/.gemini/config/mcp_config.json",
        "~/.gemini/config/hooks.json",
        "~/.gemini/antigravity-cli/hooks.json",
    }
    assert json.loads(mcp_path.read_text()) == AGY_MCP
    assert json.loads(hooks_path.read_text()) == AGY_HOOKS
    assert not old_path.exists()
    assert json.loads(gemini_settings.read_text()) == GEMINI_SETTINGS


def test_doctor_reports_both_antigravity_hooks_files(
    home: Path, env: dict[str, str], daemon: DaemonProc
) -> None:
    names = checks(peers(env, "doctor", "--json"))
    assert not any(n.startswith("Antigravity") for n in names)
    (home / ".gemini" / "antigravity-cli").mkdir(parents=True)  # agy is used here
    result = checks(peers(env, "doctor", "--json"))
    hooks = result["Antigravity CLI hooks"]
    assert hooks["status"] == "fail"
    assert "~/.gemini/config/hooks.json" in hooks["detail"]
    assert "~/.gemini/antigravity-cli/hooks.json" in hooks["detail"]
    ok(peers(env, "install", "antigravity"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Antigravity CLI MCP"]["status"] == "ok", result["Antigravity CLI MCP"]
    hooks = result["Antigravity CLI hooks"]
    assert hooks["status"] == "ok", hooks
    assert "none in ~/.gemini/antigravity-cli/hooks.json" in hooks["detail"]
    # ours only in the older file: a warning that names the file agy 1.0.x reads
    shared = home / ".gemini" / "config" / "hooks.json"
    old = home / ".gemini" / "antigravity-cli" / "hooks.json"
    shared.rename(old)
    hooks = checks(peers(env, "doctor", "--json"))["Antigravity CLI hooks"]
    assert hooks["status"] == "warn", hooks
    assert "only in ~/.gemini/antigravity-cli/hooks.json" in hooks["detail"]
