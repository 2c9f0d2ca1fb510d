"""The sender's working tree for a message's snapshot: one ``git status``, bounded.

A client (``peers-mcp``, ``peers send``) runs it in its own directory, where the repository
is, just before a send: the daemon may be on another machine (a hub) and never runs git.
The send path must not wait on it: the answer is kept for ``FRESH`` seconds, git gets
``BUDGET`` seconds, and a directory where it failed or ran out of time is not asked again
for ``BACKOFF`` seconds (the message then carries only what the daemon knows: branch and
summary). ``GIT_OPTIONAL_LOCKS=0`` keeps git from writing the index as a side effect.
git runs with the sending session's environment (``env``; in the MCP gateway the relay's,
never the gateway's own), and answers are kept per directory and environment.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping

import anyio

from peersd.kinds import SNAPSHOT_FILES, Context

BUDGET = 0.3
"""Seconds ``git status`` may take before the send goes without it."""
FRESH = 5.0
BACKOFF = 600.0
COMMAND = [
    "git",
    "status",
    "--porcelain=v1",
    "-z",
    "--branch",
    "--untracked-files=normal",
    "--no-renames",
]

_cache: dict[tuple[str, frozenset[tuple[str, str]]], tuple[float, Context | None]] = {}
"""(directory, environment) → (when asked, the answer)."""


def parse(out: bytes) -> Context:
    """A ``Context`` from ``git status --porcelain=v1 -z --branch`` output."""
    entries = [e.decode("utf-8", "replace") for e in out.split(b"\0") if e]
    branch = None
    if entries and entries[0].startswith("## "):
        head = entries.pop(0)[3:]
        if head.startswith("No commits yet on "):
            branch = head.removeprefix("No commits yet on ")
        elif not head.startswith("HEAD (no branch)"):
            branch = head.split("...", 1)[0].split(" ", 1)[0]
    files = [e[3:] for e in entries if len(e) > 3]
    return Context(
        branch=branch[:256] if branch else None,
        dirty=len(files),
        files=[f[:512] for f in files[:SNAPSHOT_FILES]],
    )


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**(os.environ if env is None else env), "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}


def _key(cwd: str, env: dict[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
    """Per directory and environment: sessions in one gateway differ in GIT_*, PATH, HOME."""
    return cwd, frozenset(env.items())


Key = tuple[str, frozenset[tuple[str, str]]]
KEEP = 256
"""Answers kept before the expired ones are dropped (a gateway serves many sessions)."""


def _store(key: Key, now: float, found: Context | None) -> None:
    if len(_cache) >= KEEP:
        for old in [k for k, (at, _) in _cache.items() if now - at >= BACKOFF]:
            del _cache[old]
    _cache[key] = (now, found)


def _cached(key: Key, now: float) -> tuple[bool, Context | None]:
    hit = _cache.get(key)
    if hit is None:
        return False, None
    at, found = hit
    return (now - at < (FRESH if found is not None else BACKOFF)), found


def context(cwd: str, env: Mapping[str, str] | None = None) -> Context | None:
    """The tree at ``cwd`` (blocking: the CLI), or None when git is absent, slow or not
    in a repository."""
    now = time.monotonic()
    run_env = _env(env)
    key = _key(cwd, run_env)
    fresh, found = _cached(key, now)
    if fresh:
        return found
    try:
        done = subprocess.run(
            COMMAND, cwd=cwd, env=run_env, capture_output=True, timeout=BUDGET, check=False
        )
        found = parse(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        found = None
    _store(key, now, found)
    return found


async def acontext(cwd: str, env: Mapping[str, str] | None = None) -> Context | None:
    """``context`` for the async server: the process is killed if it runs out of time."""
    now = time.monotonic()
    run_env = _env(env)
    key = _key(cwd, run_env)
    fresh, found = _cached(key, now)
    if fresh:
        return found
    found = None
    with anyio.move_on_after(BUDGET):
        try:
            done = await anyio.run_process(COMMAND, cwd=cwd, env=run_env, check=False)
            if done.returncode == 0:
                found = parse(done.stdout)
        except OSError:
            pass
    _store(key, now, found)
    return found
