"""Wire opencode to claude-peers, unwire it, and check the wiring.

The MCP server goes into opencode's global config, ``~/.config/opencode/opencode.json``
(``$XDG_CONFIG_HOME`` moves it): ``"mcp": {"<name>": {"type": "local", "command": [...],
"environment": {...}, "enabled": true}}``. opencode has no command hooks; it loads every
``plugins/*.js`` next to that file, so ours is a small plugin, ``plugins/claude-peers.js``,
written whole by the installer (:func:`plugin_source`). It runs ``peers-hook --client
opencode`` (``peers_mcp.adapters``):

- after every tool (``tool.execute.after``), appending the mail to the tool's output,
  which the model reads next (a busy session gets it at its next tool call);
- when a session goes idle (the ``session.idle`` event), sending the mail as a new prompt,
  so the session answers before it waits for its user. Not in ``opencode run``: that
  process exits at idle and a prompt sent then would be lost; the mail waits instead.

Subagent sessions (those with a ``parentID``) get nothing: the mail is for the main
conversation. See the package docstring for the rules every edit follows.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peersd.config import Settings

from .common import (
    MCP_SCRIPT,
    PINNED,
    SERVER_NAME,
    InstallError,
    Paths,
    merged_env,
    tilde,
    wiring,
)
from .doctor import Check, _check_binary, _command_problem, _hook_problem, _not_installed
from .edits import Change, Report, Step, execute, json_step, read_json, read_text
from .hooks import hook_command

CLIENT = "opencode"
PLUGIN = "claude-peers.js"
MARK = "// claude-peers plugin: written by `peers install opencode`"
"""The plugin's first line: how install and uninstall know the file is ours."""
HOOK_TIMEOUT_MS = 10_000


def config_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/opencode``, else ``~/.config/opencode``."""
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]).expanduser() / "opencode"
    return Paths.from_env(env).home / ".config" / "opencode"


def is_our_server(entry: Any) -> bool:
    """Whether an opencode ``mcp`` entry runs ``peers-mcp`` (its command is a list)."""
    if not isinstance(entry, Mapping):
        return False
    command = entry.get("command")
    return (
        isinstance(command, list)
        and bool(command)
        and isinstance(command[0], str)
        and os.path.basename(command[0]) == MCP_SCRIPT
    )


def _servers(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    servers = data.get("mcp", {})
    if not isinstance(servers, dict):
        raise InstallError(f'{path}: "mcp" is not an object; fix it by hand first')
    return servers


def server_entry(mcp: str, args: list[str], pins: Mapping[str, str], old: Any) -> dict[str, Any]:
    """Our ``mcp`` entry; the user's own environment keys (and ``timeout``) stay."""
    old = old if isinstance(old, Mapping) else {}
    entry: dict[str, Any] = {
        "type": "local",
        "command": [mcp, *args],
        "environment": merged_env(old.get("environment"), pins),
        "enabled": True,
    }
    if "timeout" in old:
        entry["timeout"] = old["timeout"]
    return entry


def plugin_source(hook_argv: list[str]) -> str:
    """The plugin file: the ``peers-hook`` command line is baked in as a JSON array."""
    return (
        PLUGIN_TEMPLATE.replace("@MARK@", MARK)
        .replace("@HOOK@", json.dumps(hook_argv))
        .replace("@TIMEOUT@", str(HOOK_TIMEOUT_MS))
    )


PLUGIN_TEMPLATE = """\
@MARK@; `peers uninstall opencode` removes it.
// It hands claude-peers mail to this opencode: after each tool (appended to the tool's
// output) and when a session goes idle (sent as a new prompt), by running peers-hook
// (docs/clients.md). Edit nothing here: `peers install opencode` rewrites the file.
import { spawn } from "node:child_process"

const HOOK = @HOOK@
const TIMEOUT_MS = @TIMEOUT@
// `opencode run` exits when its session goes idle: a prompt sent then would be lost.
const ONE_SHOT = process.argv.slice(1, 4).includes("run")

function peersHook(event, sessionID, cwd) {
  return new Promise((resolve) => {
    let out = ""
    let child
    try {
      child = spawn(HOOK[0], HOOK.slice(1), { stdio: ["pipe", "pipe", "ignore"] })
    } catch {
      resolve(null)
      return
    }
    const timer = setTimeout(() => child.kill(), TIMEOUT_MS)
    child.stdout.on("data", (chunk) => {
      out += chunk
    })
    child.on("error", () => {
      clearTimeout(timer)
      resolve(null)
    })
    child.on("close", () => {
      clearTimeout(timer)
      try {
        const text = JSON.parse(out).hookSpecificOutput.additionalContext
        resolve(typeof text === "string" && text ? text : null)
      } catch {
        resolve(null)
      }
    })
    child.stdin.on("error", () => {})
    child.stdin.end(JSON.stringify({ hook_event_name: event, session_id: sessionID, cwd }))
  })
}

export const ClaudePeers = async ({ client, directory }) => {
  const subagent = new Map()
  async function isSubagent(id) {
    if (!subagent.has(id)) {
      try {
        const found = await client.session.get({ path: { id } })
        subagent.set(id, Boolean(found?.data?.parentID))
      } catch {
        return true // unknown: leave the mail for a session we can tell
      }
    }
    return subagent.get(id)
  }
  return {
    "tool.execute.after": async (input, output) => {
      // Built-in tools give {title, output, metadata}; MCP tools their result, {content}.
      // Mail is only taken where it can be shown (else it would be marked read unseen).
      const mcp = Array.isArray(output?.content)
      if (!mcp && typeof output?.output !== "string") return
      if (!input?.sessionID || (await isSubagent(input.sessionID))) return
      const text = await peersHook("tool.execute.after", input.sessionID, directory)
      if (!text) return
      if (mcp) output.content.push({ type: "text", text })
      else output.output += "\\n\\n" + text
    },
    event: async ({ event }) => {
      if (ONE_SHOT || event?.type !== "session.idle") return
      const id = event.properties?.sessionID
      if (!id || (await isSubagent(id))) return
      const text = await peersHook("session.idle", id, directory)
      if (!text) return
      await client.session.prompt({ path: { id }, body: { parts: [{ type: "text", text }] } })
    },
  }
}
"""


def install_opencode(
    settings: Settings,
    server_name: str = SERVER_NAME,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Add ``mcp.<name>`` to ``opencode.json`` and write ``plugins/claude-peers.js``."""
    env = os.environ if env is None else env
    name, mcp, hook, pins, args = wiring(settings, server_name, env)
    report = Report(CLIENT, "install", dry_run)
    base = config_dir(env)
    steps: list[Step] = []

    doc = read_json(base / "opencode.json")
    data = copy.deepcopy(doc.data)
    servers = _servers(data, doc.path)
    current = servers.get(name)
    want = server_entry(mcp, args, pins, current)
    if current != want:
        if current is not None and not is_our_server(current):
            was = current.get("command") if isinstance(current, Mapping) else current
            report.notes.append(
                f'"{name}" ran {was!r}; it now runs peers-mcp (the old entry is in the backup)'
            )
        servers[name] = want
        data["mcp"] = servers
        action = "update" if current is not None else "add"
        change = Change(
            action, f'MCP server "{name}"', tilde(doc.path), shlex.join(want["command"])
        )
        if step := json_step(doc, data, [change]):
            steps.append(step)

    path = base / "plugins" / PLUGIN
    text = plugin_source(shlex.split(hook_command(hook, name, pins, client=CLIENT)))
    old = read_text(path)
    if old is not None and not old.startswith(MARK):
        raise InstallError(
            f"{path} exists and was not written by peers install; move it away, then run this again"
        )
    if old != text:
        action = "update" if old is not None else "add"
        steps.append(Step([Change(action, "plugin", tilde(path), hook)], path=path, text=text))

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running opencode sessions to load the server and plugin")
    report.notes.append(
        "opencode gets mail after each tool and when a session goes idle (not in "
        "`opencode run`); an idle session gets nothing until it acts (see docs/clients.md)"
    )
    return report


def uninstall_opencode(
    settings: Settings, dry_run: bool = False, env: Mapping[str, str] | None = None
) -> Report:
    """Remove every ``mcp`` entry running ``peers-mcp`` and our plugin file."""
    env = os.environ if env is None else env
    report = Report(CLIENT, "uninstall", dry_run)
    base = config_dir(env)
    steps: list[Step] = []

    doc = read_json(base / "opencode.json")
    data = copy.deepcopy(doc.data)
    if "mcp" in data:
        servers = _servers(data, doc.path)
        changes = []
        for key in [k for k, entry in servers.items() if is_our_server(entry)]:
            command = shlex.join(servers[key]["command"])
            changes.append(Change("remove", f'MCP server "{key}"', tilde(doc.path), command))
            del servers[key]
        if changes and not servers:
            del data["mcp"]
        if step := json_step(doc, data, changes):
            steps.append(step)

    path = base / "plugins" / PLUGIN
    old = read_text(path)
    if old is not None and old.startswith(MARK):
        steps.append(Step([Change("remove", "plugin", tilde(path))], path=path, text=None))

    execute(report, steps)
    if report.changed and not dry_run:
        report.notes.append("restart running opencode sessions to drop the server and plugin")
    return report


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    settings: Settings, server_name: str | None, env: Mapping[str, str]
) -> list[Check]:
    """opencode's wiring; nothing at all where opencode is neither used nor wired."""
    base = config_dir(env)
    binary = shutil.which("opencode", path=env.get("PATH"))
    used = binary is not None or base.exists()
    try:
        doc = read_json(base / "opencode.json")
        servers = _servers(doc.data, doc.path)
        plugin = read_text(base / "plugins" / PLUGIN)
    except InstallError as e:
        return [Check("opencode config", "fail", str(e), "fix the file by hand")]
    if server_name is not None:
        found = (server_name, servers[server_name]) if server_name in servers else None
    else:
        found = next(((k, v) for k, v in servers.items() if is_our_server(v)), None)
    ours = plugin is not None and plugin.startswith(MARK)
    if not used and found is None and not ours:
        return []
    where = tilde(doc.path)
    if found is None:
        mcp_check = _not_installed(
            "opencode MCP", CLIENT, used, f"no claude-peers MCP server in {where}"
        )
    elif not is_our_server(found[1]):
        mcp_check = Check(
            "opencode MCP",
            "fail",
            f'"{found[0]}" in {where} does not run peers-mcp',
            f"peers install {CLIENT} (replaces it; the old entry is backed up)",
        )
    elif problem := _command_problem(shlex.join(found[1]["command"])):
        mcp_check = Check(
            "opencode MCP", "fail", f'"{found[0]}" {problem}', f"peers install {CLIENT}"
        )
    elif found[1].get("enabled") is False:
        mcp_check = Check(
            "opencode MCP",
            "fail",
            f'"{found[0]}" is disabled in {where}',
            f"peers install {CLIENT}",
        )
    else:
        env_pins = found[1].get("environment") or {}
        stale = [v for v in PINNED.values() if isinstance(env_pins, Mapping) and v in env_pins]
        detail = f'"{found[0]}" → {found[1]["command"][0]} ({where})'
        mcp_check = Check(
            "opencode MCP", "ok", detail + (f"; pins {', '.join(stale)}" if stale else "")
        )
    plugin_path = tilde(base / "plugins" / PLUGIN)
    if not ours:
        plugin_check = _not_installed(
            "opencode plugin", CLIENT, used, f"no claude-peers plugin at {plugin_path}"
        )
    else:
        hook = _plugin_hook(plugin or "")
        problem = _hook_problem(shlex.join(hook)) if hook else "has no peers-hook command"
        if problem:
            plugin_check = Check(
                "opencode plugin", "fail", f"{plugin_path} {problem}", f"peers install {CLIENT}"
            )
        else:
            plugin_check = Check(
                "opencode plugin",
                "ok",
                f"{plugin_path}: after each tool and at session.idle; no idle wake",
            )
    binary_check = _check_binary("opencode", binary, found is not None, "opencode")[0]
    return [mcp_check, plugin_check, binary_check]


def _plugin_hook(source: str) -> list[str]:
    """The ``peers-hook`` command line baked into our plugin (empty if unreadable)."""
    for line in source.splitlines():
        if line.startswith("const HOOK = "):
            try:
                value = json.loads(line[len("const HOOK = ") :])
            except ValueError:
                return []
            return [str(v) for v in value] if isinstance(value, list) else []
    return []
