"""``peers doctor``: check the daemon, the files it owns, and both clients' wiring.

Each check is a :class:`Check` with a status (ok, warn, fail) and, where something is
wrong, the command that fixes it. A client that does not seem to be used here gets a
warning instead of a failure for missing wiring.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peersd import __version__
from peersd.config import ConfigError, Settings, load
from peersd.private_files import ensure_own_dir

from .common import (
    LABELS,
    MCP_SCRIPT,
    SERVER_NAME,
    InstallError,
    Paths,
    argv0,
    argv_list,
    codex_view,
    features_hooks_state,
    find_script,
    hook_launch_paths,
    is_exe,
    is_our_server,
    json_servers,
    tilde,
)
from .edits import read_json, read_text
from .hooks import HOOK_EVENTS, hook_lists, ours_in

CHANNELS_MIN = (2, 1, 80)
"""The first Claude Code version with channels (instant push of mail)."""
VERSION_TIMEOUT = 5.0
"""How long ``claude --version`` / ``codex --version`` may take; doctor must not hang."""


@dataclass
class Check:
    """One line of the doctor's verdict, with the command that fixes what is wrong."""

    check: str
    status: str
    """ok, warn or fail"""
    detail: str
    fix: str = ""


def _mode(path: Path) -> str:
    """A file's permission bits as ``chmod`` takes them (``0600``)."""
    return oct(stat.S_IMODE(path.stat().st_mode))[2:].zfill(4)


def _owner_problem(path: Path) -> str | None:
    """Why ``path`` is not safe to trust as ours (another user owns it), or None."""
    st = path.lstat()
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    return None


def _check_config(overrides: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Check, Settings]:
    """Whether the settings load; the settings the other checks use either way."""
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
    """Whether peersd answers ``Status`` (without starting it) and runs this version."""
    from peersd import protocol as p
    from peersd.client import Client
    from peersd.errors import DaemonUnreachable, PeersError

    try:
        with Client(settings, kind="cli", autostart=False, timeout=5) as client:
            st = client.request(p.Status)
    except DaemonUnreachable as e:
        if settings.autostart and _not_started(settings):
            return Check(
                "daemon",
                "ok",
                "peersd is not running yet, which is normal: autostart is on, so the first "
                "client that needs it (a session's peers-mcp or hook, or a peers command) "
                "starts it",
            )
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


def _not_started(settings: Settings) -> bool:
    """Nothing listens on the socket (no file, or one a crash left) and no service owns
    it: the state a client's auto-start is for, not a fault."""
    from peersd.autostart import NOT_LISTENING, connect_unix, installed_supervisor

    if settings.url.strip():
        return False  # a hub elsewhere: nothing here starts it
    supervisor = installed_supervisor(settings)
    if supervisor is not None and supervisor.enabled:
        return False  # the service should be listening: that one is a fault
    try:
        connect_unix(settings.socket, 1.0).close()
    except OSError as e:
        return e.errno in NOT_LISTENING
    return False


def _check_socket(settings: Settings) -> list[Check]:
    """The run directory and the socket: only we may reach the daemon through them."""
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
    """The database and its WAL files: only we may read the mail in them."""
    db = settings.db_path
    if db.parent.is_dir():  # (ensure_own_dir makes nothing then, it only checks)
        try:
            ensure_own_dir(db.parent, "db")
        except ConfigError as e:
            return Check(
                "database", "fail", f"peersd will not start: {e}", "set db to a directory of yours"
            )
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
    """Why a configured command would not start (missing, not executable), or None."""
    exe = argv0(command)
    if not exe:
        return "has no command"
    if not os.path.isabs(exe):
        found = shutil.which(exe)
        if not found:
            return f"runs {exe!r}, which is not on PATH"
        exe = found
    if not is_exe(exe):
        return f"runs {exe}, which does not exist or is not executable"
    return None


def _hook_problem(command: Any) -> str | None:
    """``_command_problem``, and for the ``-I -S`` launcher: its path must hold the hook."""
    if problem := _command_problem(command):
        return problem
    paths = hook_launch_paths(command)
    if paths is not None and not any(
        os.path.isfile(os.path.join(d, "peers_mcp", "hook.py")) for d in paths
    ):
        return f"imports peers_mcp from {', '.join(paths)}, which does not hold it"
    return None


def _pick_server(servers: Mapping[str, Any], name: str | None) -> tuple[str, Any] | None:
    """The server entry to check: the name asked for, else the default, else any of ours."""
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
    """Whether a client's server entry runs our peers-mcp and reaches this daemon's socket.

    ``cleared_env`` is the environment the client starts the server with, when that is not
    ours (Codex); the entry's ``env`` is added to it to see which socket the server finds.
    """
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
    if mine and command and os.path.abspath(command) != mine:
        return Check(
            check,
            "warn",
            f"{detail}; this peers is installed at {os.path.dirname(mine)}",
            f"peers install {client} (to use this installation)",
        )
    return Check(check, "ok", detail)


def find_script_or_none(name: str) -> str | None:
    """Our console script's path, or None: doctor reports, it does not stop."""
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
    """Whether a hooks file runs peers-hook for every event (and the idle wake if ``wake``)."""
    try:
        doc = read_json(path)
        hooks = hook_lists(doc.data, path)
    except InstallError as e:
        return Check(check, "fail", str(e), f"fix {tilde(path)}, then peers install {client}")
    present = {event: ours_in(groups) for event, groups in hooks.items()}
    present = {event: found for event, found in present.items() if found}
    if not present:
        return _not_installed(check, client, used, f"no peers-hook hooks in {tilde(path)}")
    missing = [
        e
        for e in HOOK_EVENTS
        if not any("--wait" not in argv_list(h.get("command")) for _, h in present.get(e, []))
    ]
    broken = sorted(
        {
            p
            for found in present.values()
            for _, h in found
            if (p := _hook_problem(h.get("command")))
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
    has_wake = any("--wait" in argv_list(h.get("command")) for _, h in present.get("Stop", []))
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
    """The first ``x.y.z`` in a version line, to compare with :data:`CHANNELS_MIN`."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None


def _check_binary(
    check: str, binary: str | None, registered: bool, name: str
) -> tuple[Check, str | None]:
    """Whether a client's binary runs; its version line too (the channels check uses it)."""
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
    """How mail reaches Claude Code sessions: pushed over channels, or hooks and tools only."""
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
    """(running Claude Code sessions of this user, those with our channel on); best effort."""
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
    """``config.toml`` as plain data (empty if missing), or None and why it cannot be used."""
    try:
        text = read_text(path)
    except InstallError as e:
        return None, str(e)
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
    """Every check, in the order ``peers doctor`` prints them; any "fail" makes it exit 1."""
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
        servers = json_servers(read_json(paths.claude_json).data, paths.claude_json)
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
    flag, key = features_hooks_state(data)
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
    checks.append(_check_native_wake(settings, paths.claude_settings))

    from .gemini import doctor_checks as gemini_checks  # other clients: only where used

    checks += gemini_checks(settings, server_name, env)
    from .cursor import doctor_checks as cursor_checks

    checks += cursor_checks(settings, server_name, env)
    from .copilot import doctor_checks as copilot_checks

    checks += copilot_checks(settings, server_name, env)
    from .opencode import doctor_checks as opencode_checks

    checks += opencode_checks(settings, server_name, env)
    from .antigravity import doctor_checks as antigravity_checks

    checks += antigravity_checks(settings, server_name, env)
    return checks


def _check_native_wake(settings: Settings, claude_settings: Path) -> Check:
    """The daemon's idle wakes (peersd/wake.py); what it can tell of Claude Code's
    inbound rule: a bypass-permissions session holds the daemon's nudge unless
    ``crossSessionInbound`` is ``accept`` (docs/clients.md, "Idle wakes")."""
    if not settings.native_wake:
        return Check("native wake", "ok", "off (native_wake = false): no codex queue, no inbox")
    detail = "idle Codex sessions get codex queue, idle Claude Code sessions an inbox nudge"
    try:
        data = read_json(claude_settings).data
    except InstallError:
        return Check("native wake", "ok", detail)
    permissions = data.get("permissions") if isinstance(data, dict) else None
    mode = permissions.get("defaultMode") if isinstance(permissions, dict) else None
    inbound = data.get("crossSessionInbound") if isinstance(data, dict) else None
    if mode == "bypassPermissions" and inbound != "accept":
        return Check(
            "native wake",
            "warn",
            f"{tilde(claude_settings)} starts sessions in bypass-permissions mode, which holds "
            "the daemon's inbox nudge (it is not the session's child) unless "
            "crossSessionInbound is accept; the mail still comes with the next hook",
            f'set "crossSessionInbound": "accept" in {tilde(claude_settings)}',
        )
    return Check("native wake", "ok", detail)


def _start_hint(settings: Settings) -> str:
    """How to start the daemon: through its service when one owns the socket."""
    from peersd.autostart import installed_supervisor

    supervisor = installed_supervisor(settings)
    return supervisor.start if supervisor is not None else "peers daemon start"
