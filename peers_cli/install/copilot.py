"""Wire GitHub Copilot CLI to claude-peers, unwire it, and check the wiring.

The MCP server goes into ``~/.copilot/mcp-config.json`` (``mcpServers``, with
``"tools": ["*"]`` so every tool is offered); the hook into a file of its own,
``~/.copilot/hooks/claude-peers.json`` (``{"version": 1, "hooks": {event: [handler, …]}}``,
lowerCamelCase events, handlers ``{"type": "command", "bash": …, "timeoutSec": …}``).
``COPILOT_HOME`` moves both. Our hooks run ``peers-hook --client copilot``
(``peers_mcp.adapters``): ``postToolUse`` appends the mail after a tool's result
(``additionalContext``), ``agentStop`` blocks the stop with it (``{"decision": "block",
"reason": text}``: the reason is the next prompt). ``sessionStart`` and
``userPromptSubmitted`` output is not read for command hooks, so there is no hook there.
Copilot CLI has no idle wake. See the package docstring for the rules every edit follows.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peersd.config import Settings

from .common import (
    SERVER_NAME,
    InstallError,
    Paths,
    argv_list,
    is_hook_command,
    json_servers,
    tilde,
    wiring,
)
from .doctor import Check, _check_binary, _check_server, _hook_problem, _not_installed
from .doctor import _pick_server as pick_server
from .edits import (
    Change,
    JsonDoc,
    Report,
    Step,
    drop_json_servers,
    execute,
    json_step,
    put_json_server,
    read_json,
)
from .hooks import hook_command

CLIENT = "copilot"
EVENTS = ("postToolUse", "agentStop")
TIMEOUT_SEC = 10
HOOKS_FILE = "claude-peers.json"
ALL_TOOLS = ["*"]


def copilot_home(env: Mapping[str, str]) -> Path:
    """``$COPILOT_HOME``, else ``~/.copilot``."""
    if env.get("COPILOT_HOME"):
        return Path(env["COPILOT_HOME"]).expanduser()
    return Paths.from_env(env).home / ".copilot"


def is_our_handler(handler: Any) -> bool:
    """Whether a Copilot hook handler runs our hook (its ``bash`` command line), in the
    ``-I -S`` launcher's form or as ``peers-hook``."""
    return isinstance(handler, dict) and is_hook_command(handler.get("bash"))


def our_handler(hook: str, name: str, pins: Mapping[str, str]) -> dict[str, Any]:
    command = hook_command(hook, name, pins, client=CLIENT)
    return {"type": "command", "bash": command, "timeoutSec": TIMEOUT_SEC}


def _hooks(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise InstallError(f'{path}: "hooks" is not an object; fix it by hand first')
    for event, handlers in hooks.items():
        if not isinstance(handlers, list):
            raise InstallError(f'{path}: "hooks.{event}" is not a list; fix it by hand first')
    return hooks


def _server_step(
    report: Report, doc: JsonDoc, wired: tuple[str, str, list[str], Any]
) -> Step | None:
    name, mcp, args, pins = wired
    data = copy.deepcopy(doc.data)
    change = put_json_server(report, doc, data, name, (mcp, args, pins))
    entry = data["mcpServers"][name]
    if entry.get("tools") != ALL_TOOLS:
        entry["tools"] = list(ALL_TOOLS)
        if change is None:
            change = Change("update", f'MCP server "{name}"', tilde(doc.path), "tools: *")
    return json_step(doc, data, [change] if change else [])


def install_copilot(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``mcpServers.<name>`` to ``mcp-config.json`` and our ``agentStop`` hook file."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    report = Report(CLIENT, "install", dry_run)
    home = copilot_home(env)
    steps: list[Step] = []
    if step := _server_step(report, read_json(home / "mcp-config.json"), (name, mcp, args, pins)):
        steps.append(step)

    doc = read_json(home / "hooks" / HOOKS_FILE)
    data = copy.deepcopy(doc.data)
    hooks = _hooks(data, doc.path)
    want = our_handler(hook, name, pins)
    changes = []
    for event in EVENTS:
        current = hooks.get(event, [])
        mine = [h for h in current if is_our_handler(h)]
        if mine != [want]:
            hooks[event] = [h for h in current if not is_our_handler(h)] + [want]
            action = "update" if mine else "add"
            changes.append(Change(action, f"hook {event}", tilde(doc.path), want["bash"]))
    if changes:
        data["hooks"] = hooks
        data.setdefault("version", 1)
    if step := json_step(doc, data, changes):
        steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Copilot CLI sessions to load the server and hook")
    report.notes.append(
        "Copilot CLI gets mail after each tool (postToolUse) and when a turn ends (agentStop "
        "block); it has no idle wake (see docs/clients.md)"
    )
    return report


def uninstall_copilot(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    """Remove every server entry running ``peers-mcp`` and every ``peers-hook`` handler."""
    env = os.environ if env is None else env
    report = Report(CLIENT, "uninstall", dry_run)
    home = copilot_home(env)
    steps: list[Step] = []

    doc = read_json(home / "mcp-config.json")
    data = copy.deepcopy(doc.data)
    if step := json_step(doc, data, drop_json_servers(doc, data)):
        steps.append(step)

    doc = read_json(home / "hooks" / HOOKS_FILE)
    data = copy.deepcopy(doc.data)
    hooks = _hooks(data, doc.path)
    changes = []
    for event in list(hooks):
        for handler in [h for h in hooks[event] if is_our_handler(h)]:
            changes.append(Change("remove", f"hook {event}", tilde(doc.path), handler["bash"]))
        kept = [h for h in hooks[event] if not is_our_handler(h)]
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if changes and not hooks:
        del data["hooks"]
        if data == {"version": 1}:
            data = {}  # nothing of the user's left: the file goes
    if step := json_step(doc, data, changes):
        steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Copilot CLI sessions to drop the server and hook")
    return report


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    settings: Settings, server_name: str | None, env: Mapping[str, str]
) -> list[Check]:
    """Copilot CLI's wiring; nothing at all where Copilot CLI is neither used nor wired."""
    home = copilot_home(env)
    binary = shutil.which("copilot", path=env.get("PATH"))
    used = binary is not None or home.exists()
    try:
        mcp_doc = read_json(home / "mcp-config.json")
        found = pick_server(json_servers(mcp_doc.data, mcp_doc.path), server_name)
        hooks_doc = read_json(home / "hooks" / HOOKS_FILE)
        hooks = _hooks(hooks_doc.data, hooks_doc.path)
    except InstallError as e:
        return [Check("Copilot CLI config", "fail", str(e), "fix the file by hand")]
    ours = {e: [h for h in hooks.get(e, []) if is_our_handler(h)] for e in EVENTS}
    if not used and found is None and not any(ours.values()):
        return []
    where = tilde(home / "mcp-config.json")
    checks = [
        _check_server("Copilot CLI MCP", CLIENT, found, where, used, settings, None),
        _hooks_check(ours, tilde(hooks_doc.path), used),
        _check_binary("copilot", binary, found is not None, "Copilot CLI")[0],
    ]
    name, entry = found if found is not None else ("", None)
    if isinstance(entry, Mapping) and checks[0].status == "ok" and entry.get("tools") != ALL_TOOLS:
        checks[0] = Check(
            "Copilot CLI MCP",
            "warn",
            f'"{name}" in {where} does not offer every tool ("tools": ["*"])',
            f"peers install {CLIENT}",
        )
    return checks


def _hooks_check(ours: Mapping[str, list[Any]], where: str, used: bool) -> Check:
    check = "Copilot CLI hooks"
    if not any(ours.values()):
        return _not_installed(check, CLIENT, used, f"no peers-hook hooks in {where}")
    for handler in [h for handlers in ours.values() for h in handlers]:
        if problem := _hook_problem(handler.get("bash")):
            return Check(check, "fail", f"a hook in {where} {problem}", f"peers install {CLIENT}")
    missing = [
        event
        for event in EVENTS
        if not any(argv_list(h.get("bash"))[-2:] == ["--client", CLIENT] for h in ours[event])
    ]
    if missing:
        return Check(
            check,
            "fail",
            f"{where} lacks peers-hook --client copilot for {', '.join(missing)}",
            f"peers install {CLIENT}",
        )
    return Check(check, "ok", f"{', '.join(EVENTS)} in {where}; no idle wake")
