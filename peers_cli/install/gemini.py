"""Wire Gemini CLI to claude-peers, unwire it, and check the wiring.

Both the MCP server (``mcpServers.<name>``) and the hooks (``hooks.<Event>``, groups of
handlers as in Claude Code, timeouts in milliseconds) live in ``~/.gemini/settings.json``
(google-gemini/gemini-cli docs/hooks/reference.md). One read, one atomic write: the two
edits are a single step on the one file. Our hooks run ``peers-hook --client gemini``,
which maps Gemini's events (``peers_mcp.adapters``): SessionStart, BeforeAgent and
AfterTool add the mail as ``additionalContext``; AfterAgent ``decision: "deny"`` makes
it the next prompt instead of idling. Gemini has no idle wake (no asyncRewake): an idle
Gemini session gets its mail at its next prompt or tool. See the package docstring for
the rules every edit follows.
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
    json_servers,
    tilde,
    wiring,
)
from .doctor import Check, _check_binary, _check_server, _hook_problem, _not_installed
from .doctor import _pick_server as pick_server
from .edits import (
    JsonDoc,
    Report,
    drop_json_servers,
    execute,
    json_step,
    put_json_server,
    read_json,
)
from .hooks import _merge_hooks, _remove_hooks, hook_command, hook_lists, ours_in

CLIENT = "gemini"
EVENTS = ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent")
"""The Gemini CLI events our hook serves (``peers_mcp.adapters.GEMINI_EVENTS``)."""
TIMEOUT_MS = 10_000
"""A hook's ``timeout``: Gemini counts milliseconds (default 60000)."""


def settings_path(env: Mapping[str, str]) -> Path:
    """``~/.gemini/settings.json``: the user settings, with ``mcpServers`` and ``hooks``."""
    return Paths.from_env(env).home / ".gemini" / "settings.json"


def gemini_hooks(hook: str, name: str, pins: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Our hook groups per Gemini event (no matcher: every tool, every prompt)."""
    command = hook_command(hook, name, pins, client=CLIENT)
    handler = {"type": "command", "command": command, "timeout": TIMEOUT_MS}
    return {event: [{"hooks": [dict(handler)]}] for event in EVENTS}


def install_gemini(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``mcpServers.<name>`` and our hooks to ``~/.gemini/settings.json``."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    report = Report(CLIENT, "install", dry_run)
    doc = read_json(settings_path(env))
    data = copy.deepcopy(doc.data)
    server = put_json_server(report, doc, data, name, (mcp, args, pins))
    changes = [server] if server else []
    staged = JsonDoc(doc.path, doc.raw, data, doc.indent)
    data, hook_changes = _merge_hooks(staged, gemini_hooks(hook, name, pins))
    step = json_step(doc, data, changes + hook_changes)
    execute(report, [step] if step else [])
    if report.changed and not dry_run:
        report.notes.append("restart running Gemini CLI sessions to load the server and hooks")
    report.notes.append(
        "Gemini CLI has no idle wake: an idle session gets mail at its next prompt or tool "
        "(see docs/clients.md)"
    )
    return report


def uninstall_gemini(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    """Remove every server entry running ``peers-mcp`` and all our hooks, whatever the name."""
    env = os.environ if env is None else env
    report = Report(CLIENT, "uninstall", dry_run)
    doc = read_json(settings_path(env))
    data = copy.deepcopy(doc.data)
    changes = drop_json_servers(doc, data)
    data, hook_changes = _remove_hooks(JsonDoc(doc.path, doc.raw, data, doc.indent))
    step = json_step(doc, data, changes + hook_changes)
    execute(report, [step] if step else [])
    if report.changed and not dry_run:
        report.notes.append("restart running Gemini CLI sessions to drop the server and hooks")
    return report


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    settings: Settings, server_name: str | None, env: Mapping[str, str]
) -> list[Check]:
    """Gemini CLI's wiring; nothing at all where Gemini CLI is neither used nor wired."""
    path = settings_path(env)
    where = tilde(path)
    binary = shutil.which("gemini", path=env.get("PATH"))
    used = binary is not None or path.parent.exists()
    try:
        doc = read_json(path)
        found = pick_server(json_servers(doc.data, path), server_name)
        hooks = hook_lists(doc.data, path)
    except InstallError as e:
        return [Check("Gemini CLI config", "fail", str(e), "fix the file by hand")]
    present = {event: ours_in(groups) for event, groups in hooks.items()}
    present = {event: found_ for event, found_ in present.items() if found_}
    if not used and found is None and not present:
        return []
    checks = [
        _check_server("Gemini CLI MCP", CLIENT, found, where, used, settings, None),
        _hooks_check(present, where, used),
    ]
    checks.append(_check_binary("gemini", binary, found is not None, "Gemini CLI")[0])
    return checks


def _hooks_check(present: Mapping[str, list[tuple[Any, Any]]], where: str, used: bool) -> Check:
    check = "Gemini CLI hooks"
    if not present:
        return _not_installed(check, CLIENT, used, f"no peers-hook hooks in {where}")
    broken = sorted(
        {
            p
            for found in present.values()
            for _, h in found
            if (p := _hook_problem(h.get("command")))
        }
    )
    if broken:
        return Check(check, "fail", f"a hook in {where} {broken[0]}", f"peers install {CLIENT}")
    missing = [
        event
        for event in EVENTS
        if not any(
            argv_list(h.get("command"))[-2:] == ["--client", CLIENT]
            for _, h in present.get(event, [])
        )
    ]
    if missing:
        return Check(
            check,
            "fail",
            f"{where} lacks peers-hook --client gemini for {', '.join(missing)}",
            f"peers install {CLIENT}",
        )
    return Check(check, "ok", f"{', '.join(EVENTS)} in {where} (no idle wake in Gemini CLI)")
