"""Which processes are agent sessions (Claude Code, Codex, Gemini CLI, Cursor CLI, Copilot CLI,
opencode, Antigravity CLI), by name, script or executable path.

The daemon (orphan cleanup) and the helpers (whose agent am I) both need this, so it
lives at the bottom layer beside ``identity``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import identity

NAMES = {
    "claude": "claude-code",
    "codex": "codex",
    "gemini": "gemini",
    "cursor-agent": "cursor",
    "copilot": "copilot",
    "opencode": "opencode",
    "agy": "antigravity",
}
"""Executable name (``comm``) → client kind, for the CLIs that run as their own binary."""
CURSOR_MARK = "cursor-agent"
"""Cursor CLI installs under ``~/.local/share/cursor-agent/versions/<v>/`` and links
``~/.local/bin/agent`` and ``cursor-agent`` there: an ``agent`` process is Cursor's only
when this is in its executable's path or the path it was started by (any hop of the link)."""


COPILOT_MARK = "/@github/copilot"
"""In the path of Copilot CLI's loader (``@github/copilot/npm-loader.js``, which npm links
as ``.bin/copilot``) and of its native binary (``@github/copilot-linux-x64/copilot``)."""


@dataclass(frozen=True)
class Agent:
    pid: int
    kind: str | None
    """"claude-code", "codex", "gemini", "cursor", "copilot", "opencode", "antigravity", or None
    when no agent was recognised (then the parent is used)."""


def classify(pid: int) -> str | None:
    name = identity.process_name(pid)
    kind = NAMES.get(name)
    if kind is not None:
        return kind
    if name == "agent":
        return "cursor" if _cursor_agent(pid) else None
    if name == "MainThread" or name.startswith("copilot-"):
        # Copilot CLI's native binary (@github/copilot-<platform>/copilot) names its main
        # thread, so its comm says nothing; its executable's path does (seen with 1.0.102).
        return "copilot" if COPILOT_MARK in _exe(pid) else None
    if name in ("node", "bun", "deno"):
        script = " ".join(identity.process_cmdline(pid)[1:3])
        if "claude-code" in script or script.endswith("/claude"):
            return "claude-code"
        if "@openai/codex" in script or script.endswith("/codex") or "codex.js" in script:
            return "codex"
        if "@google/gemini-cli" in script or script.endswith("/gemini"):
            return "gemini"
        if CURSOR_MARK in script:
            return "cursor"
        if COPILOT_MARK in script or _copilot_loader(identity.process_cmdline(pid)[1:2]):
            return "copilot"
        if "opencode-ai" in script or script.endswith("/opencode"):
            return "opencode"
    return None


def _cursor_agent(pid: int) -> bool:
    """Whether a process named ``agent`` is Cursor CLI (a generic name: many tools use it)."""
    argv = identity.process_cmdline(pid)
    paths = [_exe(pid)]
    if argv and "/" in argv[0]:
        paths += _link_chain(argv[0])
    return any(CURSOR_MARK in p for p in paths if p)


def _copilot_loader(script: list[str]) -> bool:
    """Whether node's script (``.bin/copilot``, a link) leads to Copilot CLI's loader."""
    return (
        bool(script) and "/" in script[0] and any(COPILOT_MARK in p for p in _link_chain(script[0]))
    )


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass
    try:
        import psutil

        return str(psutil.Process(pid).exe())
    except Exception:
        return ""


def _link_chain(path: str, hops: int = 8) -> list[str]:
    """``path`` and every path its symbolic links lead to (a few hops at most)."""
    chain = [path]
    for _ in range(hops):
        try:
            target = os.readlink(path)
        except OSError:
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
        chain.append(path)
    return chain


def nearest_agent(pid: int) -> Agent | None:
    """The nearest agent process among ``pid``'s ancestors, if any."""
    for ancestor in identity.ancestors(pid):
        kind = classify(ancestor)
        if kind is not None:
            return Agent(ancestor, kind)
    return None
