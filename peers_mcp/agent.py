"""Which agent session a helper process belongs to, and whether it has channels on.

The agent is the nearest ancestor that is Claude Code or Codex, so wrappers between it
and us (``uv run``, a shell script, ``npx``) do not confuse the identity. Channels count
only when the agent's own command line turns them on for this server's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from peersd import identity
from peersd.agents import Agent, classify, nearest_agent

__all__ = ["Agent", "channels_enabled", "classify", "find_agent", "nearest_agent"]

CHANNEL_FLAGS = ("--dangerously-load-development-channels", "--channels")


def find_agent(start: int | None = None, env: Mapping[str, str] | None = None) -> Agent:
    """The nearest Claude Code or Codex ancestor of ``start`` (default: this process);
    ``env`` (default ``os.environ``) is that process's, for the test override."""
    override = (os.environ if env is None else env).get("CLAUDE_PEERS_AGENT_PID")
    if override and override.isdigit():
        pid = int(override)
        return Agent(pid, classify(pid))
    me = os.getpid() if start is None else start
    return nearest_agent(me) or Agent(identity.parent_pid(me) or os.getppid(), None)


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
