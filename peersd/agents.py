"""Which processes are agent sessions: Claude Code, Codex, Gemini CLI, Cursor CLI, by name.

The daemon (orphan cleanup) and the helpers (whose agent am I) both need this, so it
lives at the bottom layer beside ``identity``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import identity


@dataclass(frozen=True)
class Agent:
    pid: int
    kind: str | None
    """"claude-code", "codex", "gemini", "cursor", or None when no agent was recognised (then the
    parent is used)."""


def classify(pid: int) -> str | None:
    name = identity.process_name(pid)
    if name == "claude":
        return "claude-code"
    if name == "codex":
        return "codex"
    if name == "gemini":
        return "gemini"
    if name == "cursor-agent":
        return "cursor"
    if name in ("node", "bun", "deno"):
        script = " ".join(identity.process_cmdline(pid)[1:3])
        if "claude-code" in script or script.endswith("/claude"):
            return "claude-code"
        if "@openai/codex" in script or script.endswith("/codex") or "codex.js" in script:
            return "codex"
        if "@google/gemini-cli" in script or script.endswith("/gemini"):
            return "gemini"
        if "cursor-agent" in script:
            return "cursor"
    return None


def nearest_agent(pid: int) -> Agent | None:
    """The nearest Claude Code or Codex process among ``pid``'s ancestors, if any."""
    for ancestor in identity.ancestors(pid):
        kind = classify(ancestor)
        if kind is not None:
            return Agent(ancestor, kind)
    return None
