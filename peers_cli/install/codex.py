"""Wire Codex to claude-peers and unwire it.

The MCP server goes into ``$CODEX_HOME/config.toml`` (edited with tomlkit, so the
user's comments and key order stay), along with ``[features] hooks = true``; the hooks
go into ``$CODEX_HOME/hooks.json``. Every TOML edit is checked by parsing the result
before it is written. See the package docstring for the rules every edit follows.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import InlineTable, Item, Table

from peersd.config import Settings

from .common import (
    PINNED,
    SERVER_NAME,
    InstallError,
    Paths,
    entry_matches,
    features_hooks_state,
    is_our_server,
    plain,
    tilde,
    wiring,
)
from .edits import Change, Report, Step, execute, read_text
from .hooks import desired_hooks, merge_hooks_step, remove_hooks_step

CODEX_STARTUP_TIMEOUT = 20
"""``startup_timeout_sec`` of our server entry."""
CODEX_TOOL_TIMEOUT = 120
"""``tool_timeout_sec`` of our server entry."""
MARK = "added by claude-peers"
"""Comment on ``[features] hooks = true`` so uninstall knows the line is ours."""


def _parse_toml(path: Path) -> tuple[str, tomlkit.TOMLDocument]:
    """``config.toml``'s text (empty if missing) and its tomlkit document, which keeps layout."""
    text = read_text(path) or ""
    try:
        return text, tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as e:
        raise InstallError(
            f"{path} is not valid TOML ({e}); fix it or move it away, then run this again"
        ) from None


def _render_toml(doc: tomlkit.TOMLDocument) -> str:
    """The document as text with one final newline; empty if nothing is left (the file goes)."""
    text = tomlkit.dumps(doc)
    return text.rstrip("\n") + "\n" if text.strip() else ""


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


def install_codex(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``[mcp_servers.<name>]``, turn hooks on in ``[features]``, and add our hooks."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    paths = Paths.from_env(env)
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
    if not entry_matches(plain(entry) if entry is not None else None, mcp, args, pins):
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
            if not is_our_server(plain(entry)):
                report.notes.append(
                    f"mcp_servers.{name} ran {plain(entry).get('command')!r}; it now runs "
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

    flag, key = features_hooks_state(doc)
    if key is None:
        flag_item = tomlkit.item(True)
        flag_item.comment(MARK)
        features = doc.get("features")
        if features is None:
            features = tomlkit.table()
            features.add("hooks", flag_item)
            doc.add("features", features)
        elif isinstance(features, Table | InlineTable):
            features.add("hooks", flag_item)
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
                and features_hooks_state(new)[0] is not None
            )

        _verify_toml(path, before, after, ok)
        steps.append(Step(changes, path, after))
    if isinstance(doc.get("hooks"), Mapping):
        report.notes.append(
            f"{where} also has an inline [hooks] table; Codex merges it with hooks.json "
            "and warns at startup"
        )

    hook_step = merge_hooks_step(paths.codex_hooks, desired_hooks(hook, name, pins, wake=False))
    if hook_step:
        steps.append(hook_step)

    execute(report, steps)
    if hook_step:
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
    """Remove servers running ``peers-mcp``, the hooks flag if we added it, and our hooks."""
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
            entry = plain(servers[name])
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
        comment = item.trivia.comment if isinstance(item, Item) else ""
        if MARK in (comment or ""):
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

    step = remove_hooks_step(paths.codex_hooks)
    if step:
        steps.append(step)
    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Codex sessions to drop the server and hooks")
    return report
