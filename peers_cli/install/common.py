"""What install, uninstall and doctor share: names, paths, and how our entries look.

The constants that say what is ours (script names, the default server name, the
``CLAUDE_PEERS_*`` pins), where each client keeps its config (:class:`Paths`), how our
console scripts are found, and the few readers of the clients' configs that both an
installer and ``doctor`` need.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from peersd.config import ConfigError, Settings, load
from peersd.errors import ClaudePeersError

SERVER_NAME = "claude-peers"
"""Default name of the MCP server in the clients' configs (as ``peers-mcp`` assumes)."""
MCP_SCRIPT = "peers-mcp"
HOOK_SCRIPT = "peers-hook"
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A valid server name, matched whole (``fullmatch``: ``$`` would let a trailing newline in)."""
CODEX_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ")
"""The variables Codex passes to an MCP server (besides its ``env`` table)."""
PINNED = {"socket": "CLAUDE_PEERS_SOCKET", "db": "CLAUDE_PEERS_DB", "config": "CLAUDE_PEERS_CONFIG"}
"""Settings pinned in a server entry's ``env`` when they differ from the HOME default."""
LABELS = {
    "claude": "Claude Code",
    "codex": "Codex",
    "gemini": "Gemini CLI",
    "cursor": "Cursor CLI",
    "copilot": "Copilot CLI",
    "opencode": "opencode",
    "antigravity": "Antigravity CLI",
}


class InstallError(ClaudePeersError):
    """An install or uninstall step cannot be done; the message says why and what to do."""


# --------------------------------------------------------------------------- paths and names


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


def is_exe(path: Path | str) -> bool:
    """Whether ``path`` is a file we could run."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_script(name: str) -> str:
    """The absolute path of one of our console scripts, or an error saying what to do."""
    # Not resolved: a venv's python is a symlink, and its scripts sit next to the link.
    candidate = Path(os.path.abspath(sys.executable)).parent / name
    if is_exe(candidate):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise InstallError(
        f"cannot find the {name} command (looked next to {sys.executable} and on PATH); "
        "reinstall claude-peers (e.g. `pipx install claude-peers` or `pip install -e .`) "
        "so that its console scripts exist, then run this again"
    )


def argv_list(command: Any) -> list[str]:
    """A command line's words; split on white space where shlex cannot (a user's typo)."""
    if not isinstance(command, str):
        return []
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def argv0(command: Any) -> str:
    """The program a command line runs (empty if none): how our entries are recognised."""
    if not isinstance(command, str) or not command.strip():
        return ""
    argv = argv_list(command)
    return argv[0] if argv else ""


def is_our_server(entry: Any) -> bool:
    """Whether an MCP server entry runs ``peers-mcp``, wherever that lives."""
    if not isinstance(entry, Mapping):
        return False
    command = entry.get("command")
    return isinstance(command, str) and os.path.basename(command) == MCP_SCRIPT


def check_name(name: str) -> str:
    """``name`` if it is a valid server name (it becomes a TOML key and a command argument)."""
    if not NAME_RE.fullmatch(name):
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
    """``peers-mcp`` arguments for a server name (none for the default, which it assumes)."""
    return [] if name == SERVER_NAME else ["--server-name", name]


class Wiring(NamedTuple):
    """What every installer writes, resolved once: server name, scripts, pins, arguments."""

    name: str
    mcp: str
    hook: str
    """The start of the hook's command line (``hook_launcher``); ``hooks.hook_command`` adds
    the arguments."""
    pins: dict[str, str]
    args: list[str]


def wiring(settings: Settings, server_name: str, env: Mapping[str, str]) -> Wiring:
    """The checked name, the ``peers-mcp`` path, the hook launcher and the pins for ``env``."""
    name = check_name(server_name)
    mcp = find_script(MCP_SCRIPT)
    return Wiring(name, mcp, hook_launcher(), env_pins(settings, env), mcp_args(name))


# --------------------------------------------------------------------------- the hook's command

HOOK_ENTRY = "from peers_mcp.hook import main; main()"
"""What the hook command runs, after putting the package's directories on ``sys.path``."""


def hook_paths() -> list[str]:
    """The directories the hook imports from under ``-I -S``: ours, then msgspec's (the
    same site-packages in a normal install; the checkout and the venv's in an editable one).
    Only ``peersd.config`` (with a config file) needs a third-party module on the hook's path."""
    import msgspec

    import peers_mcp

    paths: list[str] = []
    for module in (peers_mcp, msgspec):
        root = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if root not in paths:
            paths.append(root)
    return paths


def hook_launcher(python: str | None = None, paths: list[str] | None = None) -> str:
    """The hook command without its arguments: this interpreter started ``-I -S`` (no
    ``site``, no ``.pth`` files, no environment) with the package path given explicitly.

    The console script ``peers-hook`` costs ~10 ms more per run: its wrapper imports ``re``
    and ``site`` reads the venv's ``.pth`` files (docs/benchmarks.md). The interpreter is
    the venv's link, not resolved: the link is what the venv's users expect to see.
    """
    python = python or os.path.abspath(sys.executable)
    code = f"import sys; sys.path[:0] = {json.dumps(paths or hook_paths())}; {HOOK_ENTRY}"
    return shlex.join([python, "-I", "-S", "-c", code])


def hook_launch_paths(command: Any) -> list[str] | None:
    """The ``sys.path`` directories of a hook command in ``hook_launcher``'s form, or None
    when it is not in that form (the ``peers-hook`` script, or not ours)."""
    argv = argv_list(command)
    if len(argv) < 5 or argv[1:4] != ["-I", "-S", "-c"] or HOOK_ENTRY not in argv[4]:
        return None
    head, sep, _ = argv[4].partition("; " + HOOK_ENTRY)
    prefix = "import sys; sys.path[:0] = "
    if not sep or not head.startswith(prefix):
        return None
    try:
        paths = json.loads(head[len(prefix) :])
    except ValueError:
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return None
    return paths


def is_hook_command(command: Any) -> bool:
    """Whether a command line runs our hook: ``hook_launcher``'s form or ``peers-hook``."""
    if os.path.basename(argv0(command)) == HOOK_SCRIPT:
        return True
    return hook_launch_paths(command) is not None


# --------------------------------------------------------------------------- the clients' configs


def json_servers(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A JSON config's ``mcpServers`` (Claude, Gemini, Cursor); an error if not an object."""
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f'{path}: "mcpServers" is not an object; fix it by hand first')
    return servers


def merged_env(old: Any, pins: Mapping[str, str]) -> dict[str, str]:
    """A server entry's ``env`` with our pins as they should be now; the user's keys stay."""
    env = dict(old) if isinstance(old, Mapping) else {}
    for var in PINNED.values():
        env.pop(var, None)
    env.update(pins)
    return env


def entry_matches(entry: Any, command: str, args: list[str], pins: Mapping[str, str]) -> bool:
    """Whether a server entry is already exactly what install would write (then it is left)."""
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


def plain(value: Any) -> Any:
    """A tomlkit item as plain Python values (anything else as it is)."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def features_hooks_state(doc: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    """(value, key) of the hooks feature flag in ``[features]``, if set."""
    features = doc.get("features")
    if isinstance(features, Mapping):
        for key in ("hooks", "codex_hooks"):
            if key in features:
                return bool(plain(features[key])), key
    return None, None
