"""Which agent session a helper process belongs to, and whether it has channels on.

The agent is the nearest ancestor that is Claude Code or Codex, so wrappers between it
and us (``uv run``, a shell script, ``npx``) do not confuse the identity. Channels count
only when the agent's own command line turns them on for this server's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from peersd import identity

CHANNEL_FLAGS = ("--dangerously-load-development-channels", "--channels")


@dataclass(frozen=True)
class Agent:
    pid: int
    kind: str | None
    """"claude-code", "codex", or None when no agent was recognised (the parent is used)."""


def classify(pid: int) -> str | None:
    name = identity.process_name(pid)
    if name == "claude":
        return "claude-code"
    if name == "codex":
        return "codex"
    if name in ("node", "bun", "deno"):
        script = " ".join(identity.process_cmdline(pid)[1:3])
        if "claude-code" in script or script.endswith("/claude"):
            return "claude-code"
        if "@openai/codex" in script or script.endswith("/codex") or "codex.js" in script:
            return "codex"
    return None


def find_agent(start: int | None = None) -> Agent:
    """The nearest Claude Code or Codex ancestor of ``start`` (default: this process)."""
    override = os.environ.get("CLAUDE_PEERS_AGENT_PID")
    if override and override.isdigit():
        pid = int(override)
        return Agent(pid, classify(pid))
    me = os.getpid() if start is None else start
    return nearest_agent(me) or Agent(identity.parent_pid(me) or os.getppid(), None)


def nearest_agent(pid: int) -> Agent | None:
    """The nearest Claude Code or Codex process among ``pid``'s ancestors, if any."""
    for ancestor in identity.ancestors(pid):
        kind = classify(ancestor)
        if kind is not None:
            return Agent(ancestor, kind)
    return None


def channel_values(argv: list[str]) -> list[str]:
    """Every value given to a channel flag: ``--flag a b``, ``--flag=a,b``."""
    values: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if flag in CHANNEL_FLAGS:
            if eq:
                values += [v for v in inline.replace(",", " ").split() if v]
            else:
                j = i + 1
                while j < len(argv) and not argv[j].startswith("-"):
                    values += [v for v in argv[j].replace(",", " ").split() if v]
                    j += 1
                i = j - 1
        i += 1
    return values


def channels_enabled(agent_pid: int, server_name: str) -> bool:
    """True when the agent was started with channels on for ``server_name``."""
    wanted = f"server:{server_name}"
    return wanted in channel_values(identity.process_cmdline(agent_pid))
