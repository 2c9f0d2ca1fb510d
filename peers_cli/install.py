"""Wire Claude Code and Codex to claude-peers, unwire them, and check the wiring.

``install`` registers the ``peers-mcp`` stdio server and the ``peers-hook`` hooks in the
client's own config files; ``uninstall`` removes exactly those entries; ``doctor``
checks the daemon, the files it owns and both clients' wiring. The ``peers install``,
``peers uninstall`` and ``peers doctor`` commands in ``peers_cli.app`` are thin wrappers
around :func:`install_claude`, :func:`install_codex`, :func:`uninstall_claude`,
:func:`uninstall_codex` and :func:`doctor`.

Rules every edit follows:

- Everything of the user's stays: other servers, other hooks, other settings, TOML
  comments and key order. Ours are recognised by their command: an executable named
  ``peers-mcp`` (MCP servers) or ``peers-hook`` (hooks), wherever it lives.
- Idempotent: a second run finds everything in place and writes nothing.
- Before a file's first change in a run it is copied to ``<file>.bak-YYYYmmdd-HHMMSS``.
- Writes are atomic (temporary file, then rename) and keep the file's mode; a symlinked
  file (dotfile managers) is written through the link.
- Paths are absolute: the console scripts next to the running Python, else on PATH.
- A dry run computes the same plan and writes nothing.

Claude Code reads its user-scope MCP servers from ``~/.claude.json`` (top-level
``mcpServers``) and its hooks from ``~/.claude/settings.json``; with
``CLAUDE_CONFIG_DIR`` set, both live in that directory. When a ``claude`` binary is on
PATH the server is registered through ``claude mcp add/remove --scope user`` (which is
safe while Claude Code runs and rewrites that file); otherwise the file is edited.
Whether an entry is already there is read from the file itself: ``claude mcp get``
would start the server to report its health, and its output is not meant for parsing.

Codex reads ``$CODEX_HOME/config.toml`` (``[mcp_servers.<name>]``, ``[features]``) and
``$CODEX_HOME/hooks.json``, with ``CODEX_HOME`` defaulting to ``~/.codex``. Codex starts
MCP servers with a cleared environment, so a socket, database or config file that
differs from what HOME alone gives is pinned in the entry's ``env`` table.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import InlineTable, Table

from peersd import __version__
from peersd.config import ConfigError, Settings, load

from .files import atomic_write

SERVER_NAME = "claude-peers"
"""Default name of the MCP server in the clients' configs (as ``peers-mcp`` assumes)."""
MCP_SCRIPT = "peers-mcp"
HOOK_SCRIPT = "peers-hook"
HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop")
HOOK_TIMEOUT = 10
WAKE_TIMEOUT = 3660
"""The idle wake waits up to an hour (``peers-hook --max-wait`` default); Claude Code's
default hook timeout (600 s) would end it early, so ours sits just above that hour."""
CODEX_STARTUP_TIMEOUT = 20
CODEX_TOOL_TIMEOUT = 120
MARK = "added by claude-peers"
"""Comment on ``[features] hooks = true`` so uninstall knows the line is ours."""
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CODEX_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ")
"""The variables Codex passes to an MCP server (besides its ``env`` table)."""
PINNED = {"socket": "CLAUDE_PEERS_SOCKET", "db": "CLAUDE_PEERS_DB", "config": "CLAUDE_PEERS_CONFIG"}
"""Settings pinned in a server entry's ``env`` when they differ from the HOME default."""
LABELS = {"claude": "Claude Code", "codex": "Codex"}
CHANNELS_MIN = (2, 1, 80)
VERSION_TIMEOUT = 5.0
CLAUDE_CLI_TIMEOUT = 60.0


class InstallError(Exception):
    """An install or uninstall step cannot be done; the message says why and what to do."""


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    home: Path
    claude_dir: Path
    claude_json: Path
    claude_settings: Path
    codex_home: Path

    @property
    def codex_config(self) -> Path:
        return self.codex_home / "config.toml"

    @property
    def codex_hooks(self) -> Path:
        return self.codex_home / "hooks.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or os.path.expanduser("~"))
        config_dir = env.get("CLAUDE_CONFIG_DIR")
        if config_dir:
            claude_dir = Path(config_dir).expanduser()
            claude_json = claude_dir / ".claude.json"
        else:
            claude_dir = home / ".claude"
            claude_json = home / ".claude.json"
        codex_home = Path(env["CODEX_HOME"]).expanduser() if env.get("CODEX_HOME") else None
        return cls(
            home=home,
            claude_dir=claude_dir,
            claude_json=claude_json,
            claude_settings=claude_dir / "settings.json",
            codex_home=codex_home or home / ".codex",
        )


def tilde(path: Path | str, home: Path | None = None) -> str:
    """``path`` with the home directory shown as ``~`` (for messages)."""
    text = str(path)
    home_text = str(home or Path(os.environ.get("HOME") or os.path.expanduser("~")))
    if home_text not in ("", "/") and (text == home_text or text.startswith(home_text + "/")):
        return "~" + text[len(home_text) :]
    return text


def _is_exe(path: Path | str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_script(name: str) -> str:
    """The absolute path of one of our console scripts, or an error saying what to do."""
    # Not resolved: a venv's python is a symlink, and its scripts sit next to the link.
    candidate = Path(os.path.abspath(sys.executable)).parent / name
    if _is_exe(candidate):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise InstallError(
        f"cannot find the {name} command (looked next to {sys.executable} and on PATH); "
        "reinstall claude-peers (e.g. `pipx install claude-peers` or `pip install -e .`) "
        "so that its console scripts exist, then run this again"
    )


def _argv0(command: Any) -> str:
    if not isinstance(command, str) or not command.strip():
        return ""
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = command.split()
    return argv[0] if argv else ""


def is_our_hook(handler: Any) -> bool:
    return isinstance(handler, dict) and os.path.basename(_argv0(handler.get("command"))) == (
        HOOK_SCRIPT
    )


def is_our_server(entry: Any) -> bool:
    if not isinstance(entry, Mapping):
        return False
    command = entry.get("command")
    return isinstance(command, str) and os.path.basename(command) == MCP_SCRIPT


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InstallError(f"invalid server name {name!r}: use 1 to 64 letters, digits, '-' or '_'")
    return name


# --------------------------------------------------------------------------- settings pins


def codex_view(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` a Codex-started MCP server gets."""
    return {k: env[k] for k in CODEX_ENV if k in env}


def env_pins(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``CLAUDE_PEERS_*`` values a server started with a cleared environment would miss.

    Empty when socket, database and config file are what HOME alone gives (the usual
    case); otherwise the resolved values that differ, by environment variable name.
    """
    env = os.environ if env is None else env
    try:
        bare: Settings | None = load(env=codex_view(env))
    except ConfigError:
        bare = None
    pins: dict[str, str] = {}
    for key, var in PINNED.items():
        mine = getattr(settings, key)
        if bare is None or getattr(bare, key) != mine:
            pins[var] = mine
    return pins


def mcp_args(name: str) -> list[str]:
    return [] if name == SERVER_NAME else ["--server-name", name]


def hook_command(hook: str, name: str, pins: Mapping[str, str], wait: bool = False) -> str:
    argv = [hook]
    if wait:
        argv.append("--wait")
    if name != SERVER_NAME:
        argv += ["--server-name", name]
    if PINNED["socket"] in pins:
        argv += ["--socket", pins[PINNED["socket"]]]
    if PINNED["config"] in pins:
        argv += ["--config", pins[PINNED["config"]]]
    return shlex.join(argv)


def desired_hooks(
    hook: str, name: str, pins: Mapping[str, str], wake: bool
) -> dict[str, list[dict[str, Any]]]:
    """Our hook groups per event, in the client's ``hooks`` shape."""
    handler = {
        "type": "command",
        "command": hook_command(hook, name, pins),
        "timeout": HOOK_TIMEOUT,
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    for event in HOOK_EVENTS:
        group: dict[str, Any] = {"hooks": [dict(handler)]}
        if event == "PostToolUse":
            group = {"matcher": "*", **group}
        groups[event] = [group]
    if wake:
        groups["Stop"].append(
            {
                "hooks": [
                    {
                        "type": "command",
                        "command": hook_command(hook, name, pins, wait=True),
                        "async": True,
                        "asyncRewake": True,
                        "timeout": WAKE_TIMEOUT,
                    }
                ]
            }
        )
    return groups


# --------------------------------------------------------------------------- reports


@dataclass
class Change:
    action: str
    """add, update or remove"""
    item: str
    where: str
    detail: str = ""


@dataclass
class Report:
    client: str
    """claude or codex"""
    operation: str
    """install or uninstall"""
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def label(self) -> str:
        return LABELS[self.client]

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "operation": self.operation,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "changes": [asdict(c) for c in self.changes],
            "commands": self.commands,
            "backups": self.backups,
            "notes": self.notes,
        }

    def summary(self) -> str:
        if not self.changes:
            if self.operation == "install":
                return f"{self.label}: already installed, nothing to change"
            return f"{self.label}: nothing of claude-peers is installed, nothing to remove"
        if self.dry_run:
            return (
                f"{self.label}: would make {len(self.changes)} change(s) (dry run: nothing written)"
            )
        done = "installed" if self.operation == "install" else "uninstalled"
        return f"{self.label}: {done} ({len(self.changes)} change(s))"

    def lines(self) -> list[str]:
        """The report for people, one line each (plain text)."""
        out = [self.summary()]
        verbs = {"add": "added", "update": "updated", "remove": "removed"}
        for c in self.changes:
            verb = f"would {c.action}" if self.dry_run else verbs.get(c.action, c.action)
            detail = f" → {c.detail}" if c.detail else ""
            out.append(f"  {verb:<14} {c.item}{detail}  [{c.where}]")
        for argv in self.commands:
            prefix = "would run" if self.dry_run else "ran"
            out.append(f"  {prefix:<14} {shlex.join(argv)}")
        for path in self.backups:
            out.append(f"  {'backup':<14} {path}")
        out += [f"  note: {n}" for n in self.notes]
        return out


# --------------------------------------------------------------------------- files


@dataclass
class JsonDoc:
    path: Path
    raw: str | None
    data: dict[str, Any]
    indent: int | str

    @property
    def exists(self) -> bool:
        return self.raw is not None

    def render(self, data: Mapping[str, Any]) -> str:
        text = json.dumps(data, indent=self.indent, ensure_ascii=False)
        if self.raw is None or self.raw.endswith("\n"):
            text += "\n"
        return text


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(f"cannot read {path}: {e}") from None


def _indent_of(raw: str) -> int | str:
    for line in raw.splitlines()[1:]:
        body = line.lstrip(" \t")
        if body and len(body) < len(line):
            space = line[: len(line) - len(body)]
            return "\t" if space.startswith("\t") else len(space)
    return 2


def read_json(path: Path) -> JsonDoc:
    raw = _read_text(path)
    if raw is None:
        return JsonDoc(path, None, {}, 2)
    if not raw.strip():
        return JsonDoc(path, raw, {}, 2)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InstallError(
            f"{path} is not valid JSON ({e}); fix it or move it away, then run this again"
        ) from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} does not hold a JSON object; fix it or move it away")
    return JsonDoc(path, raw, data, _indent_of(raw))


def _backup_path(path: Path, stamp: str) -> Path:
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


class Writer:
    """Applies a plan's file writes and commands; backs up each file once first."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.backed_up: set[Path] = set()

    def backup(self, path: Path) -> None:
        if path in self.backed_up:
            return
        self.backed_up.add(path)
        if not path.exists():
            return
        target = _backup_path(path, self.stamp)
        try:
            shutil.copy2(path, target)
            os.chmod(target, 0o600)
        except OSError as e:
            raise InstallError(f"cannot back up {path} to {target}: {e}") from None
        self.report.backups.append(str(target))

    def write(self, path: Path, text: str) -> None:
        self.backup(path)
        real = path.resolve() if path.is_symlink() else path
        try:
            mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else 0o600
            atomic_write(real, text, mode)
        except OSError as e:
            raise InstallError(f"cannot write {path}: {e}") from None

    def delete(self, path: Path) -> None:
        self.backup(path)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise InstallError(f"cannot remove {path}: {e}") from None

    def run(self, argv: list[str]) -> None:
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=CLAUDE_CLI_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InstallError(f"`{shlex.join(argv)}` failed: {e}") from None
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise InstallError(
                f"`{shlex.join(argv)}` exited {done.returncode}"
                + (f": {message[-1]}" if message else "")
            )


@dataclass
class Step:
    """One file to write (``text``) or remove (``text`` None), or one command to run."""

    changes: list[Change]
    path: Path | None = None
    text: str | None = None
    argv: list[str] | None = None
    backup: Path | None = None
    """For a command: the file it will change (backed up first)."""


def execute(report: Report, steps: list[Step]) -> Report:
    writer = Writer(report)
    for step in steps:
        report.changes += step.changes
        if step.argv is not None:
            report.commands.append(step.argv)
    if report.dry_run:
        return report
    try:
        for step in steps:
            if step.argv is not None:
                if step.backup is not None:
                    writer.backup(step.backup)
                writer.run(step.argv)
            elif step.path is not None and step.text is not None:
                writer.write(step.path, step.text)
            elif step.path is not None:
                writer.delete(step.path)
    except InstallError as e:
        if report.backups:
            raise InstallError(f"{e} (backups made so far: {', '.join(report.backups)})") from None
        raise
    return report


# --------------------------------------------------------------------------- hooks (JSON)


def _hook_lists(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise InstallError(f'{path}: "hooks" is not an object; fix it by hand first')
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise InstallError(f'{path}: "hooks.{event}" is not a list; fix it by hand first')
    return hooks


def _ours_in(groups: list[Any]) -> list[tuple[Any, Any]]:
    """(matcher, handler) for each of our handlers in an event's groups, in order."""
    found = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            found += [(group.get("matcher"), h) for h in group["hooks"] if is_our_hook(h)]
    return found


def _strip_ours(groups: list[Any]) -> list[Any]:
    kept = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            handlers = [h for h in group["hooks"] if not is_our_hook(h)]
            if len(handlers) != len(group["hooks"]):
                if not handlers:
                    continue
                group = {**group, "hooks": handlers}
        kept.append(group)
    return kept


def _describe_hook(event: str, groups: list[dict[str, Any]]) -> str:
    names = [event] * len(groups)
    if event == "Stop" and len(groups) > 1:
        names = ["Stop", "Stop (idle wake, async)"]
    return ", ".join(f"hook {n}" for n in names)


def merge_hooks(
    doc: JsonDoc, desired: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[Change]]:
    """``doc.data`` with our hooks in place, and what that changes."""
    data = copy.deepcopy(doc.data)
    hooks = _hook_lists(data, doc.path)
    changes: list[Change] = []
    where = tilde(doc.path)
    for event, groups in desired.items():
        current = hooks.get(event, [])
        want = [(g.get("matcher"), h) for g in groups for h in g["hooks"]]
        if _ours_in(current) == want:
            continue
        action = "update" if _ours_in(current) else "add"
        hooks[event] = _strip_ours(current) + copy.deepcopy(groups)
        detail = groups[0]["hooks"][0]["command"]
        changes.append(Change(action, _describe_hook(event, groups), where, detail))
    if changes:
        data["hooks"] = hooks
    return data, changes


def remove_hooks(doc: JsonDoc) -> tuple[dict[str, Any], list[Change]]:
    data = copy.deepcopy(doc.data)
    if "hooks" not in data:
        return data, []
    hooks = _hook_lists(data, doc.path)
    changes: list[Change] = []
    for event in list(hooks):
        ours = _ours_in(hooks[event])
        if not ours:
            continue
        kept = _strip_ours(hooks[event])
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
        for _, handler in ours:
            label = f"hook {event}" + (" (idle wake)" if "--wait" in handler["command"] else "")
            changes.append(Change("remove", label, tilde(doc.path), handler["command"]))
    if changes and not hooks:
        del data["hooks"]
    return data, changes


def _json_step(doc: JsonDoc, data: dict[str, Any], changes: list[Change]) -> Step | None:
    if not changes:
        return None
    if doc.exists and not data:
        return Step(changes, path=doc.path, text=None)  # nothing left: remove the file
    return Step(changes, path=doc.path, text=doc.render(data))


# --------------------------------------------------------------------------- Claude Code


def claude_binary() -> str | None:
    return shutil.which("claude")


def _servers(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f'{path}: "mcpServers" is not an object; fix it by hand first')
    return servers


def _entry_matches(entry: Any, command: str, args: list[str], pins: Mapping[str, str]) -> bool:
    if not isinstance(entry, Mapping):
        return False
    env = entry.get("env") or {}
    if not isinstance(env, Mapping):
        return False
    return (
        entry.get("command") == command
        and list(entry.get("args") or []) == args
        and entry.get("type", "stdio") == "stdio"
        and all(env.get(var) == pins.get(var) for var in PINNED.values())
    )


def _merged_env(old: Any, pins: Mapping[str, str]) -> dict[str, str]:
    env = dict(old) if isinstance(old, Mapping) else {}
    for var in PINNED.values():
        env.pop(var, None)
    env.update(pins)
    return env


def install_claude(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    env = os.environ if env is None else env
    name = check_name(server_name)
    mcp, hook = find_script(MCP_SCRIPT), find_script(HOOK_SCRIPT)
    paths = Paths.from_env(env)
    pins = env_pins(settings, env)
    report = Report("claude", "install", dry_run)
    steps: list[Step] = []

    # (a) the MCP server, at user scope
    args = mcp_args(name)
    cj = read_json(paths.claude_json)
    current = _servers(cj.data, cj.path).get(name)
    if not _entry_matches(current, mcp, args, pins):
        new_env = _merged_env(current.get("env") if isinstance(current, Mapping) else None, pins)
        action = "add" if current is None else "update"
        item = f'MCP server "{name}" (user scope)'
        detail = shlex.join([mcp, *args])
        binary = claude_binary()
        if binary:
            where = "claude mcp"
            if current is not None:
                steps.append(
                    Step(
                        [], argv=[binary, "mcp", "remove", "--scope", "user", name], backup=cj.path
                    )
                )
            add = [binary, "mcp", "add"]
            for key, value in new_env.items():
                add += ["-e", f"{key}={value}"]
            add += ["--scope", "user", "--transport", "stdio", name, "--", mcp, *args]
            steps.append(Step([Change(action, item, where, detail)], argv=add, backup=cj.path))
        else:
            data = copy.deepcopy(cj.data)
            servers = data.setdefault("mcpServers", {})
            servers[name] = {"type": "stdio", "command": mcp, "args": args, "env": new_env}
            steps.append(
                Step([Change(action, item, tilde(cj.path), detail)], cj.path, cj.render(data))
            )
        if current is not None and not is_our_server(current):
            report.notes.append(
                f'"{name}" was registered to {current.get("command")!r}; it now runs peers-mcp '
                "(the old entry is in the backup)"
            )

    # (b) the hooks
    sj = read_json(paths.claude_settings)
    data, changes = merge_hooks(sj, desired_hooks(hook, name, pins, wake=True))
    step = _json_step(sj, data, changes)
    if step:
        steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Claude Code sessions to load the server and the hooks")
    report.notes.append(
        "for instant delivery start Claude Code as "
        f"`claude --dangerously-load-development-channels server:{name}` (see docs/clients.md)"
    )
    return report


def uninstall_claude(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    env = os.environ if env is None else env
    paths = Paths.from_env(env)
    report = Report("claude", "uninstall", dry_run)
    steps: list[Step] = []

    cj = read_json(paths.claude_json)
    servers = _servers(cj.data, cj.path)
    ours = [n for n, entry in servers.items() if is_our_server(entry)]
    if ours:
        binary = claude_binary()
        if binary:
            for name in ours:
                steps.append(
                    Step(
                        [
                            Change(
                                "remove",
                                f'MCP server "{name}"',
                                "claude mcp",
                                servers[name]["command"],
                            )
                        ],
                        argv=[binary, "mcp", "remove", "--scope", "user", name],
                        backup=cj.path,
                    )
                )
        else:
            data = copy.deepcopy(cj.data)
            for name in ours:
                del data["mcpServers"][name]
            if not data["mcpServers"]:
                del data["mcpServers"]
            changes = [
                Change("remove", f'MCP server "{n}"', tilde(cj.path), servers[n]["command"])
                for n in ours
            ]
            step = _json_step(cj, data, changes)
            if step:
                steps.append(step)

    sj = read_json(paths.claude_settings)
    data, changes = remove_hooks(sj)
    step = _json_step(sj, data, changes)
    if step:
        steps.append(step)
    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Claude Code sessions to drop the server and hooks")
    return report


# --------------------------------------------------------------------------- Codex


def _parse_toml(path: Path) -> tuple[str, tomlkit.TOMLDocument]:
    text = _read_text(path) or ""
    try:
        return text, tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as e:
        raise InstallError(
            f"{path} is not valid TOML ({e}); fix it or move it away, then run this again"
        ) from None


def _render_toml(doc: tomlkit.TOMLDocument) -> str:
    text = tomlkit.dumps(doc)
    return text.rstrip("\n") + "\n" if text.strip() else ""


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _verify_toml(
    path: Path, before: str, after: str, expect: Callable[[dict[str, Any], dict[str, Any]], bool]
) -> None:
    """Refuse an edit whose result does not parse or does not say what was meant."""
    try:
        old, new = tomllib.loads(before), tomllib.loads(after)
    except tomllib.TOMLDecodeError as e:
        raise InstallError(f"editing {path} produced invalid TOML ({e}); edit it by hand") from None
    if not expect(old, new):
        raise InstallError(
            f"could not edit {path} safely (unusual layout); edit it by hand, see docs/clients.md"
        )


def _features_hooks_state(doc: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    """(value, key) of the hooks feature flag in ``[features]``, if set."""
    features = doc.get("features")
    if isinstance(features, Mapping):
        for key in ("hooks", "codex_hooks"):
            if key in features:
                return bool(_plain(features[key])), key
    return None, None


def install_codex(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    env = os.environ if env is None else env
    name = check_name(server_name)
    mcp, hook = find_script(MCP_SCRIPT), find_script(HOOK_SCRIPT)
    paths = Paths.from_env(env)
    pins = env_pins(settings, env)
    args = mcp_args(name)
    report = Report("codex", "install", dry_run)
    steps: list[Step] = []

    path = paths.codex_config
    before, doc = _parse_toml(path)
    where = tilde(path)
    changes: list[Change] = []
    servers = doc.get("mcp_servers")
    if servers is not None and not isinstance(servers, Table):
        raise InstallError(
            f"{path}: mcp_servers is not a table ([mcp_servers.<name>] sections); "
            "add the server by hand, see docs/clients.md"
        )
    entry = servers.get(name) if servers is not None else None
    if entry is not None and not isinstance(entry, Table | InlineTable):
        raise InstallError(f"{path}: mcp_servers.{name} is not a table; fix it by hand first")
    if not _entry_matches(_plain(entry) if entry is not None else None, mcp, args, pins):
        detail = shlex.join([mcp, *args])
        if entry is None:
            table = tomlkit.table()
            table.add("command", mcp)
            table.add("args", args)
            if pins:
                env_table = tomlkit.inline_table()
                env_table.update(pins)
                table.add("env", env_table)
            table.add("startup_timeout_sec", CODEX_STARTUP_TIMEOUT)
            table.add("tool_timeout_sec", CODEX_TOOL_TIMEOUT)
            table.add(tomlkit.nl())
            if servers is None:
                servers = tomlkit.table(is_super_table=True)
                servers.add(name, table)
                doc.add("mcp_servers", servers)
            else:
                servers.add(name, table)
            changes.append(Change("add", f"[mcp_servers.{name}]", where, detail))
        else:
            if not is_our_server(_plain(entry)):
                report.notes.append(
                    f"mcp_servers.{name} ran {_plain(entry).get('command')!r}; it now runs "
                    "peers-mcp (the old entry is in the backup)"
                )
            entry["command"] = mcp
            entry["args"] = args
            old_env = entry.get("env")
            if isinstance(old_env, Table | InlineTable):
                for var in PINNED.values():
                    if var in old_env and var not in pins:
                        del old_env[var]
                for var, value in pins.items():
                    old_env[var] = value
                if not old_env:
                    del entry["env"]
            elif pins:
                env_table = tomlkit.inline_table()
                env_table.update(pins)
                entry["env"] = env_table
            changes.append(Change("update", f"[mcp_servers.{name}]", where, detail))

    flag, key = _features_hooks_state(doc)
    if key is None:
        value = tomlkit.item(True)
        value.comment(MARK)
        features = doc.get("features")
        if features is None:
            features = tomlkit.table()
            features.add("hooks", value)
            doc.add("features", features)
        elif isinstance(features, Table | InlineTable):
            features.add("hooks", value)
        else:
            raise InstallError(f"{path}: features is not a table; fix it by hand first")
        changes.append(Change("add", "[features] hooks = true", where))
    elif not flag:
        report.notes.append(
            f"hooks are turned off in {where} ([features] {key} = false): Codex sessions get "
            "mail only through the tools. Set it to true to get mail in hook context."
        )

    if changes:
        after = _render_toml(doc)

        def ok(old: dict[str, Any], new: dict[str, Any]) -> bool:
            got = new.get("mcp_servers", {}).get(name, {})
            rest_old = {k: v for k, v in old.items() if k not in ("mcp_servers", "features")}
            rest_new = {k: v for k, v in new.items() if k not in ("mcp_servers", "features")}
            others_old = {k: v for k, v in old.get("mcp_servers", {}).items() if k != name}
            others_new = {k: v for k, v in new.get("mcp_servers", {}).items() if k != name}
            return (
                got.get("command") == mcp
                and rest_old == rest_new
                and others_old == others_new
                and _features_hooks_state(new)[0] is not None
            )

        _verify_toml(path, before, after, ok)
        steps.append(Step(changes, path, after))
    if isinstance(doc.get("hooks"), Mapping):
        report.notes.append(
            f"{where} also has an inline [hooks] table; Codex merges it with hooks.json "
            "and warns at startup"
        )

    hj = read_json(paths.codex_hooks)
    data, hook_changes = merge_hooks(hj, desired_hooks(hook, name, pins, wake=False))
    step = _json_step(hj, data, hook_changes)
    if step:
        steps.append(step)

    execute(report, steps)
    if hook_changes:
        report.notes.append(
            "Codex runs new or changed hooks only once you trust them: open Codex and "
            "review them with /hooks"
        )
    if report.changed and not dry_run:
        report.notes.append("restart running Codex sessions to load the server and the hooks")
    return report


def uninstall_codex(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    env = os.environ if env is None else env
    paths = Paths.from_env(env)
    report = Report("codex", "uninstall", dry_run)
    steps: list[Step] = []

    path = paths.codex_config
    before, doc = _parse_toml(path)
    where = tilde(path)
    changes: list[Change] = []
    servers = doc.get("mcp_servers")
    removed: list[str] = []
    if isinstance(servers, Table | InlineTable):
        for name in list(servers):
            entry = _plain(servers[name])
            if is_our_server(entry):
                changes.append(Change("remove", f"[mcp_servers.{name}]", where, entry["command"]))
                del servers[name]
                removed.append(name)
        if removed and not servers:
            del doc["mcp_servers"]
    features = doc.get("features")
    removed_flag = False
    if isinstance(features, Table | InlineTable) and "hooks" in features:
        item = features.item("hooks")
        if MARK in (item.trivia.comment or ""):
            del features["hooks"]
            removed_flag = True
            changes.append(Change("remove", "[features] hooks = true", where))
            if not features:
                del doc["features"]
    if changes:
        after = _render_toml(doc)

        def ok(old: dict[str, Any], new: dict[str, Any]) -> bool:
            for name in removed:
                old.get("mcp_servers", {}).pop(name, None)
            if not old.get("mcp_servers", True):
                old.pop("mcp_servers")
            if removed_flag:
                old.get("features", {}).pop("hooks", None)
                if not old.get("features", True):
                    old.pop("features")
            return old == new

        _verify_toml(path, before, after, ok)
        steps.append(Step(changes, path, after or None))  # nothing left: remove the file

    hj = read_json(paths.codex_hooks)
    data, hook_changes = remove_hooks(hj)
    step = _json_step(hj, data, hook_changes)
    if step:
        steps.append(step)
    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Codex sessions to drop the server and hooks")
    return report


# --------------------------------------------------------------------------- doctor


@dataclass
class Check:
    check: str
    status: str
    """ok, warn or fail"""
    detail: str
    fix: str = ""


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:].zfill(4)


def _owner_problem(path: Path) -> str | None:
    st = path.lstat()
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    return None


def _check_config(overrides: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Check, Settings]:
    try:
        settings = load(overrides, env=env)
    except ConfigError as e:
        # /dev/null: an empty config file, so the checks below can use the defaults
        fallback = load({"config": os.devnull}, env=codex_view(env))
        return (
            Check(
                "config",
                "fail",
                str(e),
                "fix the setting or the file (see docs/configuration.md); checks below use "
                "the defaults",
            ),
            fallback,
        )
    path = Path(settings.config)
    if path.exists():
        detail = f"{tilde(path)} parses"
    else:
        detail = f"no config file at {tilde(path)}; using defaults and environment"
    return Check("config", "ok", detail), settings


def _check_daemon(settings: Settings) -> Check:
    from peersd import protocol as p
    from peersd.client import Client
    from peersd.errors import DaemonUnreachable, PeersError

    try:
        with Client(settings, kind="cli", autostart=False, timeout=5) as client:
            st = client.request(p.Status)
    except DaemonUnreachable as e:
        how = (
            "autostart is on: clients start it when they need it"
            if settings.autostart
            else "autostart is off"
        )
        return Check("daemon", "fail", f"{e} ({how})", _start_hint(settings))
    except (PeersError, ConfigError, OSError) as e:
        return Check("daemon", "fail", f"peersd did not answer Status: {e}", "peers daemon restart")
    detail = f"peersd {st.version} running, pid {st.pid}, supervised by {st.supervisor}"
    if st.version != __version__:
        return Check(
            "daemon",
            "warn",
            f"{detail}; this peers is {__version__}",
            "peers daemon restart (so the daemon runs the installed version)",
        )
    return Check("daemon", "ok", detail)


def _check_socket(settings: Settings) -> list[Check]:
    checks = []
    run_dir = settings.run_dir
    if not run_dir.exists():
        checks.append(Check("run dir", "ok", f"{tilde(run_dir)} not created yet (made 0700)"))
    elif not run_dir.is_dir():
        checks.append(
            Check("run dir", "fail", f"{tilde(run_dir)} is not a directory", f"rm {run_dir}")
        )
    elif problem := _owner_problem(run_dir):
        checks.append(
            Check(
                "run dir",
                "fail",
                f"{tilde(run_dir)} is {problem}",
                "remove it or set socket to a directory you own",
            )
        )
    elif stat.S_IMODE(run_dir.stat().st_mode) & 0o077:
        checks.append(
            Check(
                "run dir",
                "fail",
                f"{tilde(run_dir)} is mode {_mode(run_dir)}, not 0700",
                f"chmod 700 {shlex.quote(str(run_dir))}",
            )
        )
    else:
        checks.append(Check("run dir", "ok", f"{tilde(run_dir)} (0700, yours)"))

    sock = settings.socket_path
    if not os.path.lexists(sock):
        checks.append(Check("socket", "ok", f"{tilde(sock)} not present (peersd creates it, 0600)"))
    elif not stat.S_ISSOCK(sock.lstat().st_mode):
        checks.append(
            Check(
                "socket",
                "fail",
                f"{tilde(sock)} exists but is not a socket",
                f"peers daemon stop; rm {shlex.quote(str(sock))}",
            )
        )
    elif problem := _owner_problem(sock):
        checks.append(
            Check(
                "socket",
                "fail",
                f"{tilde(sock)} is {problem}",
                "stop that daemon, or set socket to a path you own",
            )
        )
    elif stat.S_IMODE(sock.lstat().st_mode) & 0o177:
        checks.append(
            Check(
                "socket",
                "fail",
                f"{tilde(sock)} is mode {_mode(sock)}, not 0600",
                f"chmod 600 {shlex.quote(str(sock))} (peers daemon restart recreates it)",
            )
        )
    else:
        checks.append(Check("socket", "ok", f"{tilde(sock)} (0600, yours)"))
    return checks


def _check_database(settings: Settings) -> Check:
    db = settings.db_path
    if not db.exists():
        return Check("database", "ok", f"{tilde(db)} not created yet (made 0600)")
    loose = [
        f"{tilde(path)} is mode {_mode(path)}"
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    if problem := _owner_problem(db):
        return Check("database", "fail", f"{tilde(db)} is {problem}", "set db to a file you own")
    if loose:
        return Check(
            "database",
            "fail",
            "; ".join(loose) + ", not 0600",
            f"chmod 600 {shlex.quote(str(db))}*",
        )
    return Check("database", "ok", f"{tilde(db)} (0600, yours)")


def _not_installed(check: str, client: str, used: bool, what: str) -> Check:
    """Missing wiring: a failure where the client is in use, a warning where it is not."""
    return Check(
        check,
        "fail" if used else "warn",
        what + ("" if used else f" ({LABELS[client]} does not seem to be used here)"),
        f"peers install {client}",
    )


def _command_problem(command: Any) -> str | None:
    exe = _argv0(command)
    if not exe:
        return "has no command"
    if not os.path.isabs(exe):
        found = shutil.which(exe)
        if not found:
            return f"runs {exe!r}, which is not on PATH"
        exe = found
    if not _is_exe(exe):
        return f"runs {exe}, which does not exist or is not executable"
    return None


def _pick_server(servers: Mapping[str, Any], name: str | None) -> tuple[str, Any] | None:
    if name is not None:
        return (name, servers[name]) if name in servers else None
    if SERVER_NAME in servers:
        return SERVER_NAME, servers[SERVER_NAME]
    for key, entry in servers.items():
        if is_our_server(entry):
            return key, entry
    return None


def _check_server(
    check: str,
    client: str,
    found: tuple[str, Any] | None,
    where: str,
    used: bool,
    settings: Settings,
    cleared_env: Mapping[str, str] | None,
) -> Check:
    if found is None:
        return _not_installed(check, client, used, f"no claude-peers MCP server in {where}")
    name, entry = found
    if not isinstance(entry, Mapping):
        return Check(
            check, "fail", f'"{name}" in {where} is not a table', f"peers install {client}"
        )
    command = entry.get("command")
    if not is_our_server(entry):
        return Check(
            check,
            "fail",
            f'"{name}" in {where} runs {command!r}, not peers-mcp',
            f"peers install {client} (replaces it; the old entry is backed up)",
        )
    if problem := _command_problem(command):
        return Check(check, "fail", f'"{name}" {problem}', f"peers install {client}")
    detail = f'"{name}" → {command} ({where})'
    if cleared_env is not None:
        server_env = dict(cleared_env)
        extra = entry.get("env") or {}
        if isinstance(extra, Mapping):
            server_env.update({k: str(v) for k, v in extra.items()})
        try:
            seen = load(env=server_env).socket
        except ConfigError as e:
            return Check(
                check, "fail", f"{detail}; its settings do not load: {e}", f"peers install {client}"
            )
        if seen != settings.socket:
            return Check(
                check,
                "fail",
                f"{detail}; with Codex's cleared environment it would use socket "
                f"{tilde(seen)}, not {tilde(settings.socket)}",
                f"peers install {client} (pins the socket in the server's env)",
            )
    mine = find_script_or_none(MCP_SCRIPT)
    if mine and os.path.abspath(command) != mine:
        return Check(
            check,
            "warn",
            f"{detail}; this peers is installed at {os.path.dirname(mine)}",
            f"peers install {client} (to use this installation)",
        )
    return Check(check, "ok", detail)


def find_script_or_none(name: str) -> str | None:
    try:
        return find_script(name)
    except InstallError:
        return None


def _check_hooks(
    check: str,
    client: str,
    path: Path,
    used: bool,
    wake: bool,
    extra_fail: str | None = None,
) -> Check:
    try:
        doc = read_json(path)
        hooks = _hook_lists(doc.data, path)
    except InstallError as e:
        return Check(check, "fail", str(e), f"fix {tilde(path)}, then peers install {client}")
    present = {event: _ours_in(groups) for event, groups in hooks.items()}
    present = {event: found for event, found in present.items() if found}
    if not present:
        return _not_installed(check, client, used, f"no peers-hook hooks in {tilde(path)}")
    missing = [
        e
        for e in HOOK_EVENTS
        if not any("--wait" not in _argv_list(h.get("command")) for _, h in present.get(e, []))
    ]
    broken = sorted(
        {
            p
            for found in present.values()
            for _, h in found
            if (p := _command_problem(h.get("command")))
        }
    )
    if broken:
        return Check(
            check, "fail", f"a hook in {tilde(path)} {broken[0]}", f"peers install {client}"
        )
    if missing:
        return Check(
            check,
            "fail",
            f"{tilde(path)} lacks peers-hook for {', '.join(missing)}",
            f"peers install {client}",
        )
    if extra_fail:
        return Check(check, "fail", extra_fail, "set it to true (or remove the line)")
    has_wake = any("--wait" in _argv_list(h.get("command")) for _, h in present.get("Stop", []))
    detail = f"{', '.join(HOOK_EVENTS)} in {tilde(path)}"
    if wake and not has_wake:
        return Check(
            check,
            "warn",
            f"{detail}; no idle wake (async Stop hook with --wait)",
            f"peers install {client}",
        )
    if wake:
        detail += " + idle wake"
    return Check(check, "ok", detail)


def _argv_list(command: Any) -> list[str]:
    if not isinstance(command, str):
        return []
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def binary_version(binary: str) -> tuple[str | None, str | None]:
    """(first line of ``binary --version``, error)."""
    try:
        done = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"`{binary} --version` did not answer within {VERSION_TIMEOUT:.0f}s"
    except OSError as e:
        return None, f"cannot run {binary}: {e}"
    text = (done.stdout or done.stderr).strip()
    if done.returncode != 0:
        return None, f"`{binary} --version` exited {done.returncode}: {text[:200]}"
    return (text.splitlines()[0] if text else "?"), None


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None


def _check_binary(
    check: str, binary: str | None, registered: bool, name: str
) -> tuple[Check, str | None]:
    if binary is None:
        if registered:
            return Check(
                check,
                "warn",
                f"{name} is wired up but not found on PATH",
                f"install {name} or put it on PATH",
            ), None
        return Check(check, "ok", f"{name} not found on PATH"), None
    version, error = binary_version(binary)
    if error:
        return Check(check, "warn", error, f"check that {binary} works"), None
    return Check(check, "ok", f"{binary}: {version}"), version


def _check_channels(settings: Settings, name: str, claude_version: str | None) -> Check:
    flag = f"claude --dangerously-load-development-channels server:{name}"
    if settings.channels == "off":
        return Check(
            "channels",
            "ok",
            "off in the config (channels = off): mail reaches Claude Code through hooks and "
            "tools only",
        )
    if settings.channels == "on":
        return Check(
            "channels",
            "warn",
            "channels = on: mail is pushed and counted delivered even to sessions that were "
            "not started with the channels flag, where Claude Code drops it",
            'set channels = "auto" in the config',
        )
    sessions, with_flag = _claude_sessions(name)
    running = f"; {sessions} Claude Code session(s) running, {with_flag} with channels on"
    detail = (
        f"instant push only in sessions started as `{flag}` (Claude Code >= 2.1.80, an "
        "account with channels allowed); other sessions get mail through hooks and tools"
        + (running if sessions else "")
    )
    version = _version_tuple(claude_version)
    if version is not None and version < CHANNELS_MIN:
        return Check(
            "channels",
            "warn",
            f"{detail}; installed Claude Code is older",
            "update Claude Code to use channels",
        )
    return Check("channels", "ok", detail)


def _claude_sessions(name: str) -> tuple[int, int]:
    try:
        import psutil

        from peers_mcp.agent import channel_values

        total = on = 0
        for proc in psutil.process_iter(["name", "cmdline", "uids"]):
            info = proc.info
            if info.get("name") != "claude" or not info.get("uids"):
                continue
            if info["uids"].real != os.getuid():
                continue
            total += 1
            if f"server:{name}" in channel_values(info.get("cmdline") or []):
                on += 1
        return total, on
    except Exception:
        return 0, 0


def _codex_config_data(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    text = _read_text(path)
    if text is None:
        return {}, None
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as e:
        return None, f"{tilde(path)} is not valid TOML: {e}"


def doctor(
    overrides: Mapping[str, Any] | None = None,
    server_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Check]:
    env = os.environ if env is None else env
    checks: list[Check] = []
    config_check, settings = _check_config(overrides or {}, env)
    checks.append(config_check)
    checks.append(_check_daemon(settings))
    checks += _check_socket(settings)
    checks.append(_check_database(settings))

    paths = Paths.from_env(env)
    claude, codex = shutil.which("claude"), shutil.which("codex")
    # ~/.claude itself is no sign of Claude Code: peersd keeps its socket and database there
    claude_used = claude is not None or paths.claude_json.exists()
    codex_used = codex is not None or paths.codex_home.exists()

    # Claude Code
    try:
        servers = _servers(read_json(paths.claude_json).data, paths.claude_json)
        found = _pick_server(servers, server_name)
        checks.append(
            _check_server(
                "Claude Code MCP",
                "claude",
                found,
                tilde(paths.claude_json),
                claude_used,
                settings,
                None,
            )
        )
    except InstallError as e:
        found = None
        checks.append(Check("Claude Code MCP", "fail", str(e), "fix the file by hand"))
    claude_name = found[0] if found else (server_name or SERVER_NAME)
    checks.append(
        _check_hooks(
            "Claude Code hooks",
            "claude",
            paths.claude_settings,
            claude_used,
            wake=True,
        )
    )

    # Codex
    data, error = _codex_config_data(paths.codex_config)
    codex_found = None
    if data is None:
        checks.append(Check("Codex MCP", "fail", error or "", "fix the file by hand"))
        data = {}
    else:
        servers = data.get("mcp_servers", {})
        codex_found = _pick_server(servers if isinstance(servers, dict) else {}, server_name)
        checks.append(
            _check_server(
                "Codex MCP",
                "codex",
                codex_found,
                tilde(paths.codex_config),
                codex_used,
                settings,
                codex_view(env),
            )
        )
    flag, key = _features_hooks_state(data)
    disabled = (
        f"hooks are turned off in {tilde(paths.codex_config)} ([features] {key} = false)"
        if flag is False
        else None
    )
    hooks_check = _check_hooks(
        "Codex hooks",
        "codex",
        paths.codex_hooks,
        codex_used,
        wake=False,
        extra_fail=disabled,
    )
    if hooks_check.status == "ok":
        hooks_check.detail += "; Codex runs them once trusted (review with /hooks in Codex)"
    checks.append(hooks_check)

    claude_check, claude_version = _check_binary("claude", claude, found is not None, "Claude Code")
    checks.append(claude_check)
    checks.append(_check_binary("codex", codex, codex_found is not None, "Codex")[0])
    checks.append(_check_channels(settings, claude_name, claude_version))
    return checks


def _start_hint(settings: Settings) -> str:
    """How to start the daemon: through its service when one owns the socket."""
    from peersd.autostart import installed_supervisor

    supervisor = installed_supervisor(settings)
    return supervisor.start if supervisor is not None else "peers daemon start"
