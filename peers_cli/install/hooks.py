"""Our ``peers-hook`` hooks in a client's JSON hooks file: what they are, merge, remove.

Claude Code (``settings.json``) and Codex (``hooks.json``) share the ``hooks`` shape:
event → list of groups (optional ``matcher``) → list of handlers. Ours are the
handlers whose command runs our hook (``common.is_hook_command``: the ``python -I -S -c``
launcher installers write, or an executable named ``peers-hook``); every other group and
handler is the user's and stays as it is.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peers_mcp.edits import FILE_TOOLS, PATCH_TOOLS

from .common import PINNED, SERVER_NAME, InstallError, is_hook_command, tilde
from .edits import Change, JsonDoc, Step, json_step, read_json

HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop")
HOOK_TIMEOUT = 10
EDIT_MATCHER = "|".join((*FILE_TOOLS, *PATCH_TOOLS))
"""The tools whose PreToolUse runs peers-hook: Claude Code's edit tools, Codex's apply_patch."""
WAKE_TIMEOUT = 3660
"""The idle wake waits up to an hour (``peers-hook --max-wait`` default); Claude Code's
default hook timeout (600 s) would end it early, so ours sits just above that hour."""


def is_our_hook(handler: Any) -> bool:
    """Whether a hook handler runs our hook, wherever that lives (so stale paths count):
    ``common.hook_launcher``'s ``python -I -S -c …`` form or the ``peers-hook`` script."""
    return isinstance(handler, dict) and is_hook_command(handler.get("command"))


def hook_command(
    hook: str, name: str, pins: Mapping[str, str], wait: bool = False, client: str | None = None
) -> str:
    """The hook's command line: ``hook`` (``Wiring.hook``, the launcher, or a ``peers-hook``
    path) and only the arguments that differ from its defaults.

    ``client`` (Gemini, Cursor) goes last: doctor checks the line ends ``--client <client>``.
    """
    argv: list[str] = []
    if wait:
        argv.append("--wait")
    if name != SERVER_NAME:
        argv += ["--server-name", name]
    if PINNED["socket"] in pins:
        argv += ["--socket", pins[PINNED["socket"]]]
    if PINNED["config"] in pins:
        argv += ["--config", pins[PINNED["config"]]]
    if client is not None:
        argv += ["--client", client]
    return " ".join([hook, shlex.join(argv)]) if argv else hook


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
    # Before an edit: conflict warnings and claims (docs/coordination.md). Only the edit
    # tools start it (Codex also lets "Write|Edit" select its apply_patch).
    groups["PreToolUse"] = [{"matcher": EDIT_MATCHER, "hooks": [dict(handler)]}]
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


def hook_lists(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The ``hooks`` object of a hooks file; an error if its shape is not one we can edit."""
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise InstallError(f'{path}: "hooks" is not an object; fix it by hand first')
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise InstallError(f'{path}: "hooks.{event}" is not a list; fix it by hand first')
    return hooks


def ours_in(groups: list[Any]) -> list[tuple[Any, Any]]:
    """(matcher, handler) for each of our handlers in an event's groups, in order."""
    found = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            found += [(group.get("matcher"), h) for h in group["hooks"] if is_our_hook(h)]
    return found


def _strip_ours(groups: list[Any]) -> list[Any]:
    """An event's groups without our handlers; a group left with no handler goes too."""
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


def _merge_hooks(
    doc: JsonDoc, desired: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[Change]]:
    """``doc.data`` with our hooks in place, and what that changes."""
    data = copy.deepcopy(doc.data)
    hooks = hook_lists(data, doc.path)
    changes: list[Change] = []
    where = tilde(doc.path)
    for event, groups in desired.items():
        current = hooks.get(event, [])
        want = [(g.get("matcher"), h) for g in groups for h in g["hooks"]]
        if ours_in(current) == want:
            continue
        action = "update" if ours_in(current) else "add"
        hooks[event] = _strip_ours(current) + copy.deepcopy(groups)
        detail = groups[0]["hooks"][0]["command"]
        changes.append(Change(action, _describe_hook(event, groups), where, detail))
    if changes:
        data["hooks"] = hooks
    return data, changes


def _remove_hooks(doc: JsonDoc) -> tuple[dict[str, Any], list[Change]]:
    """``doc.data`` without any of our hooks, and what that changes."""
    data = copy.deepcopy(doc.data)
    if "hooks" not in data:
        return data, []
    hooks = hook_lists(data, doc.path)
    changes: list[Change] = []
    for event in list(hooks):
        ours = ours_in(hooks[event])
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


def merge_hooks_step(path: Path, desired: dict[str, list[dict[str, Any]]]) -> Step | None:
    """The step that puts our hooks into the hooks file at ``path``; None if they are there."""
    doc = read_json(path)
    data, changes = _merge_hooks(doc, desired)
    return json_step(doc, data, changes)


def remove_hooks_step(path: Path) -> Step | None:
    """The step that takes our hooks out of the hooks file at ``path``; None if it has none."""
    doc = read_json(path)
    data, changes = _remove_hooks(doc)
    return json_step(doc, data, changes)
