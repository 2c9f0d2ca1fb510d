"""Wire Cursor CLI to claude-peers, unwire it, and check the wiring.

The MCP server goes into ``~/.cursor/mcp.json`` (``mcpServers``, shared by the editor and
the CLI); the hook into ``~/.cursor/hooks.json`` (``{"version": 1, "hooks": {event:
[handler, …]}}``, lowerCamelCase events, handlers without groups). Cursor's one way to
put text in front of the model is ``stop`` → ``followup_message`` (sent as the next user
message, bounded by the hook's ``loop_limit``), so ours is a ``stop`` hook running
``peers-hook --client cursor`` (``peers_mcp.adapters``). Cursor has no idle wake. See the
package docstring for the rules every edit follows.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peersd.config import Settings

from .common import (
    SERVER_NAME,
    InstallError,
    Paths,
    argv_list,
    json_servers,
    tilde,
    wiring,
)
from .doctor import Check, _check_server, _hook_problem, _not_installed
from .doctor import _pick_server as pick_server
from .edits import (
    Change,
    Report,
    Step,
    drop_json_servers,
    execute,
    json_step,
    put_json_server,
    read_json,
)
from .hooks import hook_command, is_our_hook

CLIENT = "cursor"
EVENT = "stop"
LOOP_LIMIT = 5
"""= ``peers_mcp.adapters.CURSOR_LOOP_LIMIT``: the hook stops claiming mail at this count."""


def cursor_dir(env: Mapping[str, str]) -> Path:
    return Paths.from_env(env).home / ".cursor"


def our_handler(hook: str, name: str, pins: Mapping[str, str]) -> dict[str, Any]:
    command = hook_command(hook, name, pins, client=CLIENT)
    return {"command": command, "loop_limit": LOOP_LIMIT}


def _hooks(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise InstallError(f'{path}: "hooks" is not an object; fix it by hand first')
    for event, handlers in hooks.items():
        if not isinstance(handlers, list):
            raise InstallError(f'{path}: "hooks.{event}" is not a list; fix it by hand first')
    return hooks


def install_cursor(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``mcpServers.<name>`` to ``mcp.json`` and our ``stop`` hook to ``hooks.json``."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    report = Report(CLIENT, "install", dry_run)
    steps: list[Step] = []

    doc = read_json(cursor_dir(env) / "mcp.json")
    data = copy.deepcopy(doc.data)
    server = put_json_server(report, doc, data, name, (mcp, args, pins))
    step = json_step(doc, data, [server] if server else [])
    if step:
        steps.append(step)

    doc = read_json(cursor_dir(env) / "hooks.json")
    data = copy.deepcopy(doc.data)
    hooks = _hooks(data, doc.path)
    want = our_handler(hook, name, pins)
    current_list = hooks.get(EVENT, [])
    mine = [h for h in current_list if is_our_hook(h)]
    if mine != [want]:
        hooks[EVENT] = [h for h in current_list if not is_our_hook(h)] + [want]
        data["hooks"] = hooks
        data.setdefault("version", 1)
        action = "update" if mine else "add"
        change = Change(action, f"hook {EVENT}", tilde(doc.path), want["command"])
        step = json_step(doc, data, [change])
        if step:
            steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Cursor CLI sessions to load the server and hook")
    report.notes.append(
        "Cursor gets mail when a turn ends (stop → followup_message) and through the tools; "
        "it has no idle wake (see docs/clients.md)"
    )
    return report


def uninstall_cursor(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    """Remove every server entry running ``peers-mcp`` and every ``peers-hook`` handler."""
    env = os.environ if env is None else env
    report = Report(CLIENT, "uninstall", dry_run)
    steps: list[Step] = []

    doc = read_json(cursor_dir(env) / "mcp.json")
    data = copy.deepcopy(doc.data)
    changes = drop_json_servers(doc, data)
    step = json_step(doc, data, changes)
    if step:
        steps.append(step)

    doc = read_json(cursor_dir(env) / "hooks.json")
    data = copy.deepcopy(doc.data)
    hooks = _hooks(data, doc.path)
    changes = []
    for event in list(hooks):
        for handler in [h for h in hooks[event] if is_our_hook(h)]:
            changes.append(Change("remove", f"hook {event}", tilde(doc.path), handler["command"]))
        kept = [h for h in hooks[event] if not is_our_hook(h)]
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if changes and not hooks:
        del data["hooks"]
        if data == {"version": 1}:
            data = {}  # nothing of the user's left: the file goes
    step = json_step(doc, data, changes)
    if step:
        steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Cursor CLI sessions to drop the server and hook")
    return report


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    settings: Settings, server_name: str | None, env: Mapping[str, str]
) -> list[Check]:
    """Cursor's wiring; nothing at all where Cursor is neither used nor wired."""
    base = cursor_dir(env)
    used = base.exists()
    try:
        mcp_doc = read_json(base / "mcp.json")
        found = pick_server(json_servers(mcp_doc.data, mcp_doc.path), server_name)
        hooks_doc = read_json(base / "hooks.json")
        handlers = [h for h in _hooks(hooks_doc.data, hooks_doc.path).get(EVENT, [])]
    except InstallError as e:
        return [Check("Cursor config", "fail", str(e), "fix the file by hand")]
    ours = [h for h in handlers if is_our_hook(h)]
    if not used and found is None and not ours:
        return []
    mcp_check = _check_server(
        "Cursor MCP", CLIENT, found, tilde(base / "mcp.json"), used, settings, None
    )
    return [mcp_check, _hooks_check(ours, tilde(base / "hooks.json"), used)]


def _hooks_check(ours: list[Any], where: str, used: bool) -> Check:
    check = "Cursor hooks"
    if not ours:
        return _not_installed(check, CLIENT, used, f"no peers-hook stop hook in {where}")
    for handler in ours:
        if problem := _hook_problem(handler.get("command")):
            return Check(check, "fail", f"a hook in {where} {problem}", f"peers install {CLIENT}")
        if argv_list(handler.get("command"))[-2:] != ["--client", CLIENT]:
            return Check(
                check,
                "fail",
                f"the stop hook in {where} lacks --client cursor",
                f"peers install {CLIENT}",
            )
    return Check(check, "ok", f"stop (followup_message) in {where}; no idle wake in Cursor")
