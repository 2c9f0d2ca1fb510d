"""``peers install`` / ``uninstall`` / ``doctor``, run as real subprocesses on a temporary HOME.

PATH holds only a temporary bin directory, so no real ``claude`` or ``codex`` is ever
found; tests of the ``claude mcp`` branch put a fake ``claude`` there that records its
argv and edits ``~/.claude.json`` the way ``claude mcp add/remove --scope user`` does.
The console scripts are found next to the running Python (the venv's bin).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from peers_cli import install

from .conftest import DaemonProc, Run, clean_env, run_peers

BIN = Path(sys.executable).parent
MCP = str(BIN / "peers-mcp")
HOOK = install.common.hook_launcher()
"""The hook command's start as installers write it (``python -I -S -c …``, one test checks it)."""

CLAUDE_JSON = {
    "numStartups": 12,
    "theme": "dark",
    "mcpServers": {
        "github": {"type": "stdio", "command": "/opt/gh-mcp", "args": ["--ro"], "env": {}}
    },
    "projects": {"/src/app": {"allowedTools": [], "mcpServers": {}}},
}
SETTINGS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(ls:*)"]},
    "hooks": {
        "PostToolUse": [
            {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "prettier -w"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
}
CODEX_TOML = """\
# Codex configuration (hand-written)
model = "gpt-5"  # the default model
approval_policy = "on-request"

[mcp_servers.docs]
# a documentation server
command = "docs-mcp"
args = ["--port", "0"]

[profiles.fast]
model = "gpt-5-mini"
"""
CODEX_HOOKS = {
    "hooks": {
        "SessionStart": [
            {"matcher": "startup", "hooks": [{"type": "command", "command": "echo hello"}]}
        ]
    }
}

FAKE_CLAUDE = """\
#!{python}
import json, os, sys

args = sys.argv[1:]
home = os.environ["HOME"]
with open(os.path.join(home, "claude-argv.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
path = os.path.join(home, ".claude.json")
try:
    data = json.load(open(path))
except FileNotFoundError:
    data = {{}}
if args == ["--version"]:
    print("2.1.328 (Claude Code)")
    sys.exit(0)
servers = data.setdefault("mcpServers", {{}})
if args[:2] == ["mcp", "get"]:
    entry = servers.get(args[2])
    if entry is None:
        print(f"No MCP server found with name: {{args[2]}}", file=sys.stderr)
        sys.exit(1)
    print(f"{{args[2]}}:\\n  Scope: User config\\n  Command: {{entry['command']}}")
    sys.exit(0)
if args[:2] == ["mcp", "add"]:
    rest = args[2:]
    sep = rest.index("--")
    opts, cmd = rest[:sep], rest[sep + 1 :]
    env, name, i = {{}}, None, 0
    while i < len(opts):
        if opts[i] in ("-e", "--env"):
            key, value = opts[i + 1].split("=", 1)
            env[key] = value
            i += 2
        elif opts[i] in ("-s", "--scope", "-t", "--transport"):
            assert opts[i + 1] in ("user", "stdio"), opts
            i += 2
        else:
            name = opts[i]
            i += 1
    if name in servers:
        print(f"MCP server {{name}} already exists in user config", file=sys.stderr)
        sys.exit(1)
    servers[name] = {{"type": "stdio", "command": cmd[0], "args": cmd[1:], "env": env}}
elif args[:2] == ["mcp", "remove"]:
    assert args[2:4] == ["--scope", "user"], args
    if servers.pop(args[4], None) is None:
        print(f"No user-scoped MCP server found with name: {{args[4]}}", file=sys.stderr)
        sys.exit(1)
else:
    print("fake claude: unsupported " + " ".join(args), file=sys.stderr)
    sys.exit(2)
with open(path, "w") as f:
    json.dump(data, f, indent=2)
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def bindir(home: Path) -> Path:
    path = home / "bin"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path, bindir: Path) -> dict[str, str]:
    base = clean_env(home, PATH=str(bindir))
    for key in ("CODEX_HOME", "CLAUDE_CONFIG_DIR", "FORCE_COLOR", "COLUMNS"):
        base.pop(key, None)
    return base


def peers(env: dict[str, str], *args: str, **extra: str) -> Run:
    return run_peers({**env, **extra}, *args, timeout=60)


def ok(run: Run, code: int = 0) -> Run:
    assert run.code == code, run
    return run


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under HOME (but the fake claude's log), by path."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and p.name != "claude-argv.jsonl"
    }


def backups(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*.bak-*"))


def fake_claude(bindir: Path) -> Path:
    path = bindir / "claude"
    path.write_text(FAKE_CLAUDE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def claude_calls(home: Path) -> list[list[str]]:
    log = home / "claude-argv.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def ours(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [h for g in groups for h in g["hooks"] if install.hooks.is_our_hook(h)]


def theirs(hooks: dict[str, Any]) -> dict[str, Any]:
    """The hooks object without any of our handlers (and without emptied groups)."""
    kept: dict[str, Any] = {}
    for event, groups in hooks.items():
        left = []
        for g in groups:
            handlers = [h for h in g["hooks"] if not install.hooks.is_our_hook(h)]
            if handlers:
                left.append({**g, "hooks": handlers})
        if left:
            kept[event] = left
    return kept


def user_setup(home: Path) -> dict[str, bytes]:
    write_json(home / ".claude.json", CLAUDE_JSON)
    write_json(home / ".claude" / "settings.json", SETTINGS)
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(CODEX_TOML)
    write_json(home / ".codex" / "hooks.json", CODEX_HOOKS)
    return snapshot(home)


def checks(run: Run) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in run.json()}


# --------------------------------------------------------------------------- Claude Code


def test_install_claude_edits_files_and_keeps_the_users_config(
    home: Path, env: dict[str, str]
) -> None:
    before = user_setup(home)

    run = ok(peers(env, "install", "claude"))
    assert "Claude Code: installed" in run.out
    assert "settings.json.bak-" in run.out

    cj = json.loads((home / ".claude.json").read_text())
    assert cj["mcpServers"]["claude-peers"] == {
        "type": "stdio",
        "command": MCP,
        "args": [],
        "env": {},
    }
    # every other key, and the other server, untouched and in their order
    assert {k: v for k, v in cj.items() if k != "mcpServers"} == {
        k: v for k, v in CLAUDE_JSON.items() if k != "mcpServers"
    }
    assert list(cj) == list(CLAUDE_JSON)
    assert cj["mcpServers"]["github"] == CLAUDE_JSON["mcpServers"]["github"]

    st = json.loads((home / ".claude" / "settings.json").read_text())
    assert st["model"] == "opus" and st["permissions"] == SETTINGS["permissions"]
    assert theirs(st["hooks"]) == SETTINGS["hooks"]
    plain = {"type": "command", "command": HOOK, "timeout": 10}
    for event in ("SessionStart", "UserPromptSubmit", "PostToolUse"):
        assert ours(st["hooks"][event]) == [plain], event
    assert {"matcher": "*", "hooks": [plain]} in st["hooks"]["PostToolUse"]
    assert st["hooks"]["PostToolUse"][0] == SETTINGS["hooks"]["PostToolUse"][0]
    stop = ours(st["hooks"]["Stop"])
    assert stop[0] == plain
    assert stop[1]["command"] == f"{HOOK} --wait"
    assert stop[1]["async"] is True and stop[1]["asyncRewake"] is True
    assert len(stop) == 2

    made = backups(home)
    assert len(made) == 2, made
    assert {re.sub(r"\.bak-.*", "", b) for b in made} == {".claude.json", ".claude/settings.json"}
    assert all(re.search(r"\.bak-\d{8}-\d{6}$", b) for b in made)
    assert (home / made[0]).read_bytes() == before[".claude.json"]
    assert stat.S_IMODE((home / made[0]).stat().st_mode) == 0o600

    # second run: nothing changes, not even a byte; no new backup
    installed = snapshot(home)
    run = ok(peers(env, "install", "claude"))
    assert "already installed" in run.out
    assert snapshot(home) == installed

    # uninstall: the originals, byte for byte
    run = ok(peers(env, "uninstall", "claude"))
    assert "uninstalled" in run.out
    after = snapshot(home)
    for name in (".claude.json", ".claude/settings.json"):
        assert after[name] == before[name], name
    run = ok(peers(env, "uninstall", "claude"))
    assert "nothing of claude-peers is installed" in run.out


def test_the_hook_command_is_the_interpreter_started_bare(home: Path, env: dict[str, str]) -> None:
    """The installed hook is ``<this python> -I -S -c …`` with the package path spelled out
    (no console-script wrapper, no ``site``), it runs as written through a shell, and
    doctor fails it once its package path no longer holds the hook."""
    ok(peers(env, "install", "claude"))
    st_path = home / ".claude" / "settings.json"
    command = ours(json.loads(st_path.read_text())["hooks"]["PostToolUse"])[0]["command"]
    argv = shlex.split(command)
    assert argv[0] == os.path.abspath(sys.executable) and argv[1:4] == ["-I", "-S", "-c"]
    paths = install.common.hook_launch_paths(command)
    assert paths and any((Path(d) / "peers_mcp" / "hook.py").is_file() for d in paths)
    done = subprocess.run(
        ["/bin/sh", "-c", command + " --version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stdout.startswith("peers-hook "), done
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        input='{"hook_event_name": "PostToolUse", "session_id": "s-none"}',
        capture_output=True,
        text=True,
        env=env,
    )
    assert (done.returncode, done.stdout) == (0, ""), done  # no daemon: nothing, exit 0
    assert checks(peers(env, "doctor", "--json"))["Claude Code hooks"]["status"] != "fail"
    moved = st_path.read_text()
    gone = json.dumps(json.dumps("/gone/src"))[1:-1]
    for d in paths:  # as quoted inside the JSON string
        moved = moved.replace(json.dumps(json.dumps(d))[1:-1], gone)
    st_path.write_text(moved)
    result = checks(peers(env, "doctor", "--json"))["Claude Code hooks"]
    assert result["status"] == "fail" and "/gone/src" in result["detail"], result


def test_install_claude_on_a_fresh_home_and_back(home: Path, env: dict[str, str]) -> None:
    run = ok(peers(env, "install", "claude", "--json"))
    report = run.json()
    assert report["changed"] is True and report["backups"] == []
    assert {c["item"] for c in report["changes"]} >= {'MCP server "claude-peers" (user scope)'}
    assert stat.S_IMODE((home / ".claude.json").stat().st_mode) == 0o600
    assert ok(peers(env, "install", "claude", "--json")).json()["changed"] is False

    ok(peers(env, "uninstall", "claude"))
    # nothing of ours was left, so the files we created are gone again
    assert not (home / ".claude.json").exists()
    assert not (home / ".claude" / "settings.json").exists()


def test_install_claude_through_the_claude_binary(
    home: Path, env: dict[str, str], bindir: Path
) -> None:
    fake = fake_claude(bindir)
    # an older claude-peers under the same name (another program): replaced
    old = {"type": "stdio", "command": "bun", "args": ["x.ts"]}
    servers = {**CLAUDE_JSON["mcpServers"], "claude-peers": old}
    write_json(home / ".claude.json", {**CLAUDE_JSON, "mcpServers": servers})

    run = ok(peers(env, "install", "claude"))
    calls = claude_calls(home)
    assert calls == [
        ["mcp", "remove", "--scope", "user", "claude-peers"],
        ["mcp", "add", "--scope", "user", "--transport", "stdio", "claude-peers", "--", MCP],
    ]
    assert "ran" in run.out and str(fake) in run.out
    cj = json.loads((home / ".claude.json").read_text())
    assert cj["mcpServers"]["claude-peers"]["command"] == MCP
    assert cj["mcpServers"]["github"] == CLAUDE_JSON["mcpServers"]["github"]
    assert any(b.startswith(".claude.json.bak-") for b in backups(home))
    assert len(ours(json.loads((home / ".claude/settings.json").read_text())["hooks"]["Stop"])) == 2

    installed = snapshot(home)
    assert "already installed" in ok(peers(env, "install", "claude")).out
    assert claude_calls(home) == calls  # nothing run the second time
    assert snapshot(home) == installed

    ok(peers(env, "uninstall", "claude"))
    assert claude_calls(home)[len(calls) :] == [
        ["mcp", "remove", "--scope", "user", "claude-peers"]
    ]
    cj = json.loads((home / ".claude.json").read_text())
    assert "claude-peers" not in cj["mcpServers"]
    assert not (home / ".claude" / "settings.json").exists()


def test_custom_server_name_and_stale_paths_are_replaced(home: Path, env: dict[str, str]) -> None:
    stale = {"type": "command", "command": "/old/venv/bin/peers-hook", "timeout": 10}
    write_json(
        home / ".claude" / "settings.json",
        {"hooks": {"SessionStart": [{"hooks": [stale]}], "SessionEnd": [{"hooks": [stale]}]}},
    )
    run = ok(peers(env, "install", "claude", "--server-name", "mesh"))
    assert "updated" in run.out
    cj = json.loads((home / ".claude.json").read_text())
    assert cj["mcpServers"]["mesh"]["args"] == ["--server-name", "mesh"]
    st = json.loads((home / ".claude" / "settings.json").read_text())
    assert ours(st["hooks"]["SessionStart"]) == [
        {"type": "command", "command": f"{HOOK} --server-name mesh", "timeout": 10}
    ]
    assert ours(st["hooks"]["Stop"])[1]["command"] == f"{HOOK} --wait --server-name mesh"
    # the stale entry outside our events is not ours to update, but uninstall takes it
    assert ours(st["hooks"]["SessionEnd"]) == [stale]
    # PreToolUse is ours, for the edit tools only (docs/coordination.md)
    assert st["hooks"]["PreToolUse"] == [
        {
            "matcher": "Write|Edit|MultiEdit|NotebookEdit|apply_patch",
            "hooks": [{"type": "command", "command": f"{HOOK} --server-name mesh", "timeout": 10}],
        }
    ]

    ok(peers(env, "uninstall", "claude"))
    assert not (home / ".claude" / "settings.json").exists()
    assert not (home / ".claude.json").exists()

    bad = peers(env, "install", "claude", "--server-name", "no spaces")
    assert bad.code == 1 and "invalid server name" in bad.err
    assert peers(env, "install", "claude", "--scope", "project").code == 1


def test_a_server_name_with_a_trailing_newline_is_refused(home: Path, env: dict[str, str]) -> None:
    # a regex ending in ``$`` also matches before a final newline: the name must match whole
    for client in ("claude", "codex"):
        bad = peers(env, "install", client, "--server-name", "x\n")
        assert bad.code == 1 and "invalid server name 'x\\n'" in bad.err, bad
    assert snapshot(home) == {}


def test_dry_run_writes_nothing(home: Path, env: dict[str, str], bindir: Path) -> None:
    before = user_setup(home)
    for client in ("claude", "codex"):
        run = ok(peers(env, "install", client, "--dry-run"))
        assert "would add" in run.out and "dry run" in run.out
        report = ok(peers(env, "install", client, "--dry-run", "--json")).json()
        assert report["dry_run"] is True and report["changed"] is True
        assert report["backups"] == []
    assert snapshot(home) == before

    fake_claude(bindir)
    run = ok(peers(env, "install", "claude", "--dry-run"))
    assert "would run" in run.out and "mcp add" in run.out
    assert claude_calls(home) == []
    (bindir / "claude").unlink()

    ok(peers(env, "install", "claude"))
    ok(peers(env, "install", "codex"))
    installed = snapshot(home)
    for client in ("claude", "codex"):
        run = ok(peers(env, "uninstall", client, "--dry-run"))
        assert "would remove" in run.out
    assert snapshot(home) == installed


def test_refuses_broken_files_and_missing_scripts(
    home: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{"hooks": {,}')
    run = peers(env, "install", "claude")
    assert run.code == 1 and "is not valid JSON" in run.err, run
    assert settings.read_text() == '{"hooks": {,}'
    assert not (home / ".claude.json").exists()

    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text("model = \n")
    run = peers(env, "install", "codex")
    assert run.code == 1 and "is not valid TOML" in run.err, run

    monkeypatch.setattr(sys, "executable", str(home / "nowhere" / "python"))
    monkeypatch.setenv("PATH", str(home / "bin"))
    with pytest.raises(install.InstallError, match="cannot find the peers-mcp command"):
        install.find_script("peers-mcp")


@pytest.mark.parametrize(
    "client, target",
    [
        ("claude", ".claude/settings.json"),
        ("claude", ".claude.json"),
        ("codex", ".codex/config.toml"),
    ],
)
def test_a_read_only_file_is_refused_not_replaced(
    home: Path, env: dict[str, str], client: str, target: str
) -> None:
    """Found: ``peers install claude`` rewrote a settings.json its owner had made 0444 (the
    rename replaced it, and as root nothing even looked). Now the mode bits themselves are
    read, and the whole plan stops before any file is written, install and uninstall."""
    before = user_setup(home)
    path = home / target
    path.chmod(0o444)
    for args in (("install", client), ("install", client, "--dry-run")):
        run = peers(env, *args)
        assert run.code == 1, run
        assert f"{path} is read-only (mode 444), so nothing was changed" in run.err, run
        assert f"chmod u+w {path}" in run.err
    assert snapshot(home) == before and backups(home) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o444

    path.chmod(0o644)
    ok(peers(env, "install", client))
    installed = snapshot(home)
    path.chmod(0o444)
    run = peers(env, "uninstall", client)
    assert run.code == 1 and f"{path} is read-only" in run.err, run
    assert snapshot(home) == installed


# --------------------------------------------------------------------------- Codex


def test_install_codex_keeps_comments_order_and_other_servers(
    home: Path, env: dict[str, str]
) -> None:
    before = user_setup(home)

    run = ok(peers(env, "install", "codex"))
    assert "Codex: installed" in run.out and "/hooks" in run.out
    text = (home / ".codex" / "config.toml").read_text()
    # every original line is still there, in the same order
    lines = iter(text.splitlines())
    assert all(line in lines for line in CODEX_TOML.splitlines())
    data = tomllib.loads(text)
    assert data["mcp_servers"]["claude-peers"] == {
        "command": MCP,
        "args": [],
        "startup_timeout_sec": 20,
        "tool_timeout_sec": 120,
    }
    assert data["mcp_servers"]["docs"] == {"command": "docs-mcp", "args": ["--port", "0"]}
    assert data["features"] == {"hooks": True}
    assert data["model"] == "gpt-5" and data["profiles"] == {"fast": {"model": "gpt-5-mini"}}
    assert list(tomlkit.parse(text)) == [
        "model",
        "approval_policy",
        "mcp_servers",
        "profiles",
        "features",
    ]

    hooks = json.loads((home / ".codex" / "hooks.json").read_text())["hooks"]
    assert theirs(hooks) == CODEX_HOOKS["hooks"]
    plain = {"type": "command", "command": HOOK, "timeout": 10}
    for event in ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"):
        assert ours(hooks[event]) == [plain], event
    assert "asyncRewake" not in json.dumps(hooks)
    assert len(backups(home)) == 2

    installed = snapshot(home)
    assert "already installed" in ok(peers(env, "install", "codex")).out
    assert snapshot(home) == installed

    ok(peers(env, "uninstall", "codex"))
    after = snapshot(home)
    assert after[".codex/config.toml"] == before[".codex/config.toml"]
    assert after[".codex/hooks.json"] == before[".codex/hooks.json"]
    assert "nothing of claude-peers" in ok(peers(env, "uninstall", "codex")).out


def test_codex_home_existing_feature_flag_and_socket_pin(home: Path, env: dict[str, str]) -> None:
    codex_home = home / "elsewhere"
    codex_home.mkdir()
    original = "[features]\ncodex_hooks = true  # mine\n"
    (codex_home / "config.toml").write_text(original)
    socket = str(home / "s" / "peers.sock")
    env = {**env, "CODEX_HOME": str(codex_home), "CLAUDE_PEERS_SOCKET": socket}

    ok(peers(env, "install", "codex"))
    assert not (home / ".codex").exists()
    data = tomllib.loads((codex_home / "config.toml").read_text())
    assert data["features"] == {"codex_hooks": True}  # a hooks flag was there: left alone
    assert data["mcp_servers"]["claude-peers"]["env"] == {"CLAUDE_PEERS_SOCKET": socket}
    hooks = json.loads((codex_home / "hooks.json").read_text())["hooks"]
    assert ours(hooks["Stop"])[0]["command"] == f"{HOOK} --socket {socket}"
    assert "already installed" in ok(peers(env, "install", "codex")).out

    # the socket moved back to the default: the pin goes
    plain_env = {k: v for k, v in env.items() if k != "CLAUDE_PEERS_SOCKET"}
    run = ok(peers(plain_env, "install", "codex"))
    assert "updated" in run.out
    data = tomllib.loads((codex_home / "config.toml").read_text())
    assert "env" not in data["mcp_servers"]["claude-peers"]

    ok(peers(plain_env, "uninstall", "codex"))
    assert (codex_home / "config.toml").read_text() == original
    assert not (codex_home / "hooks.json").exists()


# --------------------------------------------------------------------------- doctor


LINE = re.compile(r"^(ok|warn|fail)  +(.+?): ", re.M)


def test_doctor_nothing_installed_daemon_down(home: Path, env: dict[str, str]) -> None:
    write_json(home / ".claude.json", {"numStartups": 1})  # Claude Code is used, Codex not
    run = peers(env, "doctor")
    assert run.code == 1, run
    found = dict((m.group(2), m.group(1)) for m in LINE.finditer(run.out))
    assert found["config"] == "ok"
    assert found["Claude Code MCP"] == "fail" and found["Claude Code hooks"] == "fail"
    assert found["Codex MCP"] == "warn"
    assert "fix: peers install claude" in run.out

    result = checks(peers(env, "doctor", "--json"))
    assert all(set(c) == {"check", "status", "detail", "fix"} for c in result.values())
    # Not started yet, with autostart on: normal, the first client starts it.
    assert result["daemon"]["status"] == "ok" and not result["daemon"]["fix"], result["daemon"]
    assert "not running yet, which is normal" in result["daemon"]["detail"]
    assert "first client" in result["daemon"]["detail"]
    # With autostart off nothing will start it: that is a failure, with the fix.
    run = peers(env, "doctor", CLAUDE_PEERS_AUTOSTART="false")
    assert re.search(r"^fail +daemon: peersd is not running .*autostart is off", run.out, re.M)
    assert "fix: peers daemon start" in run.out
    # A socket file a crash left behind is the same "not started yet".
    run_dir = home / ".claude" / "run"
    run_dir.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run_dir / "claude-peers.sock"))
    stale.close()
    assert checks(peers(env, "doctor", "--json"))["daemon"]["status"] == "ok"
    # A service that owns the socket should be answering: its silence is a fault.
    units = home / ".config" / "systemd" / "user"
    (units / "sockets.target.wants").mkdir(parents=True)
    (units / "claude-peers.socket").write_text(
        "[Socket]\nListenStream=%h/.claude/run/claude-peers.sock\n"
    )
    (units / "sockets.target.wants" / "claude-peers.socket").symlink_to(
        units / "claude-peers.socket"
    )
    daemon = checks(peers(env, "doctor", "--json"))["daemon"]
    assert daemon["status"] == "fail" and "systemctl --user start" in daemon["fix"], daemon
    shutil.rmtree(home / ".config")
    os.unlink(run_dir / "claude-peers.sock")
    assert result["claude"]["status"] == "ok"  # not on PATH, not wired: nothing to say
    assert (
        "--dangerously-load-development-channels server:claude-peers"
        in (result["channels"]["detail"])
    )
    # doctor never starts the daemon
    assert not (home / ".claude" / "run" / "claude-peers.sock").exists()

    (home / ".claude" / "claude-peers.toml").write_text("bogus = 1\n")
    result = checks(peers(env, "doctor", "--json"))
    assert result["config"]["status"] == "fail" and "bogus" in result["config"]["detail"]


def test_doctor_says_why_the_daemon_would_refuse_the_database_directory(
    home: Path, env: dict[str, str]
) -> None:
    folder = home / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    result = checks(peers(env, "doctor", "--json", CLAUDE_PEERS_DB=str(folder / "peers.db")))
    database = result["database"]
    assert database["status"] == "fail", database
    assert f"directory {folder} can be written by other users (mode 1777)" in database["detail"]
    assert os.listdir(folder) == []  # doctor only looks


def test_doctor_reports_an_unreadable_codex_config_instead_of_crashing(
    home: Path, env: dict[str, str]
) -> None:
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_bytes(b'model = "\xff\xfe"\n')  # not UTF-8
    run = peers(env, "doctor", "--json")
    assert "Traceback" not in run.err, run
    result = checks(run)
    codex = result["Codex MCP"]
    assert codex["status"] == "fail" and "cannot read" in codex["detail"], codex


def test_doctor_after_install_with_a_running_daemon(
    home: Path, env: dict[str, str], bindir: Path, daemon: DaemonProc
) -> None:
    fake_claude(bindir)
    ok(peers(env, "install", "claude"))
    ok(peers(env, "install", "codex"))
    run = peers(env, "doctor")
    assert run.code == 0, run
    result = checks(peers(env, "doctor", "--json"))
    for name in (
        "config",
        "daemon",
        "run dir",
        "socket",
        "database",
        "Claude Code MCP",
        "Claude Code hooks",
        "Codex MCP",
        "Codex hooks",
        "claude",
    ):
        assert result[name]["status"] == "ok", result[name]
    assert "2.1.328" in result["claude"]["detail"]
    assert result["codex"]["status"] == "warn"  # wired up, but no codex on PATH
    assert "idle wake" in result["Claude Code hooks"]["detail"]

    # a socket Codex's cleared environment would not find
    moved = peers(env, "doctor", "--json", CLAUDE_PEERS_SOCKET=str(home / "x" / "p.sock"))
    assert moved.code == 1
    assert checks(moved)["Codex MCP"]["status"] == "fail"
    assert "cleared environment" in checks(moved)["Codex MCP"]["detail"]

    # loose permissions on the run dir and the database
    run_dir = daemon.settings.run_dir
    os.chmod(run_dir, 0o755)
    os.chmod(daemon.settings.db, 0o644)
    try:
        run = peers(env, "doctor")
        assert run.code == 1
        result = checks(peers(env, "doctor", "--json"))
        assert result["run dir"]["status"] == "fail" and "chmod 700" in result["run dir"]["fix"]
        assert result["database"]["status"] == "fail" and "chmod 600" in result["database"]["fix"]
    finally:
        os.chmod(run_dir, 0o700)
        os.chmod(daemon.settings.db, 0o600)

    # a hook command that no longer exists
    st_path = home / ".claude" / "settings.json"
    st_path.write_text(st_path.read_text().replace(json.dumps(HOOK)[1:-1], "/gone/bin/peers-hook"))
    result = checks(peers(env, "doctor", "--json"))
    assert result["Claude Code hooks"]["status"] == "fail"
    assert result["Claude Code hooks"]["fix"] == "peers install claude"
