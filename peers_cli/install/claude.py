"""Wire Claude Code to claude-peers and unwire it.

The MCP server goes into ``~/.claude.json`` (user scope), through ``claude mcp
add/remove`` when a ``claude`` binary is on PATH, else by editing the file; the hooks go
into ``~/.claude/settings.json``. See the package docstring for the rules every edit
follows.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
from collections.abc import Mapping

from peersd.config import Settings

from .common import (
    SERVER_NAME,
    Paths,
    entry_matches,
    is_our_server,
    json_servers,
    merged_env,
    tilde,
    wiring,
)
from .edits import Change, Report, Step, drop_json_servers, execute, json_step, read_json
from .hooks import desired_hooks, merge_hooks_step, remove_hooks_step


def claude_binary() -> str | None:
    """The ``claude`` on PATH: when there is one, it registers the server itself."""
    return shutil.which("claude")


def install_claude(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Register ``peers-mcp`` at user scope and add our hooks, with the wake on ``Stop``."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    paths = Paths.from_env(env)
    report = Report("claude", "install", dry_run)
    steps: list[Step] = []

    # (a) the MCP server, at user scope
    cj = read_json(paths.claude_json)
    current = json_servers(cj.data, cj.path).get(name)
    if not entry_matches(current, mcp, args, pins):
        new_env = merged_env(current.get("env") if isinstance(current, Mapping) else None, pins)
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
    step = merge_hooks_step(paths.claude_settings, desired_hooks(hook, name, pins, wake=True))
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
    """Remove every server entry running ``peers-mcp`` and all our hooks, whatever the name."""
    env = os.environ if env is None else env
    paths = Paths.from_env(env)
    report = Report("claude", "uninstall", dry_run)
    steps: list[Step] = []

    cj = read_json(paths.claude_json)
    servers = json_servers(cj.data, cj.path)
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
            step = json_step(cj, data, drop_json_servers(cj, data))
            if step:
                steps.append(step)

    step = remove_hooks_step(paths.claude_settings)
    if step:
        steps.append(step)
    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running Claude Code sessions to drop the server and hooks")
    return report
