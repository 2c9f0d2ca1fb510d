"""Wire Antigravity CLI (``agy``, Gemini CLI's successor) to claude-peers, unwire it, check it.

The MCP server goes into ``~/.gemini/config/mcp_config.json`` (``mcpServers``, checked
against agy 1.0.7 and 1.0.16 per shared/reference/clients-2026-12.md §3.1). The hooks file
is a JSON object of *named hook suites*, each ``{"<Event>": [{"matcher"?, "hooks":
[{"type": "command", "command", "timeout"}]}]}`` with timeouts in seconds. The sources
disagree on the global file: Google's migration guide names
``~/.gemini/antigravity-cli/hooks.json``; agy 1.0.x reads (and its ``/hooks`` command
writes) the shared ``~/.gemini/config/hooks.json``, beside the MCP config. Ours goes into
the shared one (:data:`HOOKS_PATHS` [0]); doctor looks at both, and uninstall cleans both.

Our suite, ``claude-peers``, has one hook: ``PreInvocation`` (before every model call)
running ``peers-hook --client antigravity``, whose ``additionalContext`` agy merges into the
prompt (``peers_mcp.adapters``): a busy session gets mail before its next model call. agy's
Stop output is not documented well enough to claim mail there, and agy has no idle wake.
A parse error makes agy drop the whole file silently, so the file is only ever written
whole as JSON. See the package docstring for the rules every edit follows.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peersd.config import Settings

from .common import SERVER_NAME, InstallError, Paths, argv_list, json_servers, tilde, wiring
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
from .hooks import hook_command, ours_in

CLIENT = "antigravity"
SUITE = "claude-peers"
"""Our named hook suite in the hooks file."""
EVENTS = ("PreInvocation",)
TIMEOUT_S = 10


def gemini_dir(env: Mapping[str, str]) -> Path:
    return Paths.from_env(env).home / ".gemini"


def mcp_path(env: Mapping[str, str]) -> Path:
    return gemini_dir(env) / "config" / "mcp_config.json"


def hooks_paths(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(the file we write, the older CLI-local one agy may read as well)."""
    base = gemini_dir(env)
    return base / "config" / "hooks.json", base / "antigravity-cli" / "hooks.json"


def our_suite(hook: str, name: str, pins: Mapping[str, str]) -> dict[str, Any]:
    command = hook_command(hook, name, pins, client=CLIENT)
    handler = {"type": "command", "command": command, "timeout": TIMEOUT_S}
    return {event: [{"hooks": [dict(handler)]}] for event in EVENTS}


def _suites_with_ours(data: Mapping[str, Any], path: Path) -> dict[str, list[tuple[str, Any]]]:
    """Suite name → (event, handler) of each of our handlers in it."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for suite, events in data.items():
        if not isinstance(events, dict):
            continue  # not a suite (agy tolerates other keys); not ours either
        for event, groups in events.items():
            if isinstance(groups, list):
                for _, handler in ours_in(groups):
                    found.setdefault(suite, []).append((event, handler))
    return found


def _remove_ours(doc: JsonDoc) -> tuple[dict[str, Any], list[Change]]:
    data = copy.deepcopy(doc.data)
    changes = []
    for suite, handlers in _suites_with_ours(data, doc.path).items():
        for event, handler in handlers:
            changes.append(
                Change("remove", f"hook {suite}.{event}", tilde(doc.path), handler["command"])
            )
        if suite == SUITE:
            del data[suite]
            continue
        # our handler in a suite of the user's: take out just ours
        for event, groups in list(data[suite].items()):
            if not isinstance(groups, list):
                continue
            kept = []
            for group in groups:
                if isinstance(group, dict) and isinstance(group.get("hooks"), list):
                    hs = [h for h in group["hooks"] if not _ours(h)]
                    if not hs:
                        continue
                    group = {**group, "hooks": hs}
                kept.append(group)
            if kept:
                data[suite][event] = kept
            else:
                del data[suite][event]
        if not data[suite]:
            del data[suite]  # nothing but ours was in it
    return data, changes


def _ours(handler: Any) -> bool:
    return bool(ours_in([{"hooks": [handler]}]))


def install_antigravity(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``mcpServers.<name>`` to ``mcp_config.json`` and our suite to ``hooks.json``."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    report = Report(CLIENT, "install", dry_run)
    steps: list[Step] = []

    doc = read_json(mcp_path(env))
    data = copy.deepcopy(doc.data)
    change = put_json_server(report, doc, data, name, (mcp, args, pins))
    if step := json_step(doc, data, [change] if change else []):
        steps.append(step)

    doc = read_json(hooks_paths(env)[0])
    want = our_suite(hook, name, pins)
    if doc.data.get(SUITE) != want or len(_suites_with_ours(doc.data, doc.path)) > 1:
        data, _ = _remove_ours(doc)  # stale or stray handlers of ours go first
        data[SUITE] = want
        action = "update" if SUITE in doc.data else "add"
        detail = want[EVENTS[0]][0]["hooks"][0]["command"]
        changes = [Change(action, f"hook {SUITE}.{e}", tilde(doc.path), detail) for e in EVENTS]
        if step := json_step(doc, data, changes):
            steps.append(step)

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running agy sessions to load the server and hooks")
    report.notes.append(
        "Antigravity CLI gets mail before each model call (PreInvocation) and through the "
        "tools; it has no idle wake (see docs/clients.md)"
    )
    return report


def uninstall_antigravity(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    """Remove every server entry running ``peers-mcp`` and our hooks from both hooks files."""
    env = os.environ if env is None else env
    report = Report(CLIENT, "uninstall", dry_run)
    steps: list[Step] = []
    doc = read_json(mcp_path(env))
    data = copy.deepcopy(doc.data)
    if step := json_step(doc, data, drop_json_servers(doc, data)):
        steps.append(step)
    for path in hooks_paths(env):
        doc = read_json(path)
        data, changes = _remove_ours(doc)
        if step := json_step(doc, data, changes):
            steps.append(step)
    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running agy sessions to drop the server and hooks")
    return report


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    settings: Settings, server_name: str | None, env: Mapping[str, str]
) -> list[Check]:
    """agy's wiring (both hooks files reported); nothing where agy is neither used nor wired."""
    binary = shutil.which("agy", path=env.get("PATH"))
    shared, local = hooks_paths(env)
    used = binary is not None or shared.parent.exists() or local.parent.exists()
    try:
        doc = read_json(mcp_path(env))
        found = pick_server(json_servers(doc.data, doc.path), server_name)
        present = {p: _suites_with_ours(read_json(p).data, p) for p in (shared, local)}
    except InstallError as e:
        return [Check("Antigravity CLI config", "fail", str(e), "fix the file by hand")]
    if not used and found is None and not any(present.values()):
        return []
    checks = [
        _check_server("Antigravity CLI MCP", CLIENT, found, tilde(doc.path), used, settings, None),
        _hooks_check(present, shared, local, used),
        _check_binary("agy", binary, found is not None, "Antigravity CLI")[0],
    ]
    return checks


def _hooks_check(
    present: Mapping[Path, Mapping[str, list[tuple[str, Any]]]],
    shared: Path,
    local: Path,
    used: bool,
) -> Check:
    check = "Antigravity CLI hooks"
    both = f"{tilde(shared)} (read by agy 1.0.x) and {tilde(local)} (older path)"
    handlers = [(p, e, h) for p, suites in present.items() for hs in suites.values() for e, h in hs]
    if not handlers:
        return _not_installed(check, CLIENT, used, f"no peers-hook hook in {both}")
    for path, event, handler in handlers:
        if problem := _hook_problem(handler.get("command")):
            return Check(
                check, "fail", f"a hook in {tilde(path)} {problem}", f"peers install {CLIENT}"
            )
        if argv_list(handler.get("command"))[-2:] != ["--client", CLIENT]:
            return Check(
                check,
                "fail",
                f"the {event} hook in {tilde(path)} lacks --client {CLIENT}",
                f"peers install {CLIENT}",
            )
    events = sorted({e for _, e, _ in handlers})
    if not present.get(shared):
        return Check(
            check,
            "warn",
            f"{', '.join(events)} only in {tilde(local)}, which newer agy versions do not read",
            f"peers install {CLIENT} (writes {tilde(shared)})",
        )
    extra = f"; also in {tilde(local)}" if present.get(local) else f"; none in {tilde(local)}"
    return Check(check, "ok", f"{', '.join(events)} in {tilde(shared)}{extra}; no idle wake")
