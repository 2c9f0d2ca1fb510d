"""Idle wakes on the client side (``peersd.wake``, ``docs/clients.md`` "Idle wakes"):
what ``peers-hook`` tells the daemon at Stop so it can wake the idle session for mail,
and the words list_peers, message_status and ``peers peers`` use for a wake's outcome.

- Codex (its hook input has ``turn_id``): the thread id (the hook's ``session_id``), the
  ``codex`` on the PATH the hooks run with, and ``CODEX_HOME`` when set.
- Claude Code: ``CLAUDE_CODE_MESSAGING_SOCKET`` and ``CLAUDE_CODE_MESSAGING_TOKEN``, which
  Claude Code exports to its hooks (2.1.224 and 2.1.228 on).

Only absolute paths are reported (the daemon's types refuse others). ``route`` runs at
Stop only, so tool calls pay nothing for it.
"""

import os

SOCKET_ENV = "CLAUDE_CODE_MESSAGING_SOCKET"
TOKEN_ENV = "CLAUDE_CODE_MESSAGING_TOKEN"


def route(data: dict) -> dict:
    """The ``wake`` field of ``set_status`` for this hook input ({} when there is none)."""
    found: dict = {}
    session = data.get("session_id")
    if "turn_id" in data:  # Codex
        if isinstance(session, str) and session:
            found["thread"] = session
        binary = which("codex")
        if binary:
            found["codex_bin"] = binary
        home = os.environ.get("CODEX_HOME", "")
        if os.path.isabs(home):
            found["codex_home"] = home
        return found
    inbox = os.environ.get(SOCKET_ENV, "")
    if os.path.isabs(inbox):
        found["inbox"] = inbox
        token = os.environ.get(TOKEN_ENV, "")
        if token:
            found["inbox_token"] = token
    return found


def which(name: str) -> str | None:
    """``shutil.which`` without importing shutil: the first executable ``name`` on PATH."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isabs(folder):
            continue  # a relative entry means nothing to the daemon
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def short(wake: object) -> str:
    """A few words for a table cell: "woken via inbox", "wake failed", "not woken"
    (``describe`` gives the reason)."""
    outcome = getattr(wake, "outcome", "?")
    if outcome == "queued":
        return f"woken via {getattr(wake, 'via', '?')}"
    return "wake failed" if outcome == "failed" else "not woken"


def describe(wake: object) -> str:
    """One phrase for a ``peersd.protocol.Wake``: "woken via codex queue", "wake via
    inbox failed: …", "not woken via inbox: …"."""
    via = getattr(wake, "via", "?")
    outcome = getattr(wake, "outcome", "?")
    reason = getattr(wake, "reason", "")
    if outcome == "queued":
        return f"woken via {via}"
    if outcome == "failed":
        return f"wake via {via} failed: {reason}"
    return f"not woken via {via}: {reason}"
