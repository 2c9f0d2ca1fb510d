"""How another peer's hold on a file is told: before an edit, in a tool result, at a commit.

The holders come from the daemon (``FileHolder`` records, as dicts from ``peersd.wire``
or as Structs); names and reasons are the peers' own words, shown inline and quoted.
The text is one short paragraph: which peer, which file, since when, its stated reason,
and the exact call that reaches it. Standard library only (``peers-hook`` uses it).
"""

import time

from . import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_SHOWN = 6
"""Holds spelled out in one text; the rest are counted."""


def rel(path: str, repo: "str | None") -> str:
    if repo:
        base = repo.rstrip("/")
        if path.startswith(base + "/"):
            return path[len(base) + 1 :]
    return path


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def clock(ts: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ts))


def describe(h: "Any", now: float, who: "str | None" = None) -> str:
    """One hold in words: ``bob (codex, working) has been editing src/a.py since …``."""
    you = who is not None and who.startswith("you")
    if who is None:
        who = render.inline(str(render.field_of(h, "name")))
        client, status = render.field_of(h, "client"), render.field_of(h, "status")
        extra = ", ".join(x for x in (client, status) if x)
        if extra:
            who += f" ({extra})"
    repo = render.field_of(h, "repo")
    path = render.inline(rel(str(render.field_of(h, "path")), repo))
    since = float(render.field_of(h, "since") or 0)
    if render.field_of(h, "kind") == "active":
        last = float(render.field_of(h, "last") or since)
        return (
            f"{who} {'have' if you else 'has'} been editing {path} since {clock(since)} "
            f"(last edit {ago(now - last)})"
        )
    kind = "an exclusive claim" if render.field_of(h, "exclusive") else "a shared claim"
    reason = render.field_of(h, "reason")
    why = f', reason: "{render.inline(reason)}"' if reason else ", no reason given"
    until = float(render.field_of(h, "until") or 0)
    return (
        f"{who} {'hold' if you else 'holds'} {kind} on {path} since {clock(since)} "
        f"({ago(now - since)}; until {clock(until)}{why})"
    )


def edit_text(
    holders: "list[Any]",
    decision: str,
    server: str = render.SERVER_NAME,
    client: "str | None" = None,
    now: "float | None" = None,
) -> str:
    """The paragraph a model gets before an edit: warned (``warn``) or stopped (``deny``)."""
    now = time.time() if now is None else now
    send = render.tool("send_message", server, client)
    targets: list[str] = []
    for h in holders:
        target = rel(
            str(render.field_of(h, "target") or render.field_of(h, "path")),
            render.field_of(h, "repo"),
        )
        if target not in targets:
            targets.append(render.inline(target))
    files = ", ".join(targets[:3]) + (f" and {len(targets) - 3} more" if len(targets) > 3 else "")
    names: list[str] = []
    for h in holders:
        if not render.field_of(h, "peer_id"):
            continue  # a session in another group: shown, but it cannot be messaged
        name = render.inline(str(render.field_of(h, "name")))
        if name not in names:
            names.append(name)
    shown = "; ".join(describe(h, now) for h in holders[:MAX_SHOWN])
    if len(holders) > MAX_SHOWN:
        shown += f"; and {len(holders) - MAX_SHOWN} more"
    ask = " or ".join(f'{send} with to="{n}"' for n in names[:3])
    if decision == "deny":
        blockers = [
            h
            for h in holders
            if render.field_of(h, "kind") == "claim" and render.field_of(h, "exclusive")
        ]
        held = blockers[0] if blockers else holders[0]
        if not render.field_of(held, "peer_id"):
            return (
                f"claude-peers stopped this edit of {files}: a session in another isolation "
                f"group holds it. {shown}. It cannot be messaged from your group; the claim "
                "ends when that session releases it, when it expires, or when the session "
                "ends. Do not try to get around the claim (another tool, a copy): work on "
                "something else until it is free, or tell the user."
            )
        owner = render.inline(str(render.field_of(held, "name")))
        return (
            f"claude-peers stopped this edit of {files}: another session holds it. {shown}. "
            f'To ask for it, call {send} with to="{owner}". The claim ends when {owner} '
            "releases it (release_files), when it expires, or when that session ends. "
            "Do not try to get around the claim (another tool, a copy): work on something "
            "else until it is free."
        )
    how = f"To coordinate, call {ask}." if names else "It is in another isolation group."
    return (
        f"claude-peers: another session is working on {files}; your edit goes ahead. {shown}. {how}"
    )


def status_text(
    path: str, holders: "list[Any]", me: "str | None", now: "float | None" = None
) -> str:
    """``file_status`` for one path: who is active on it or holds a claim, and why."""
    now = time.time() if now is None else now
    mine = [h for h in holders if render.field_of(h, "peer_id") == me]
    others = [h for h in holders if render.field_of(h, "peer_id") != me]
    if not holders:
        return f"{path}: nobody is editing it or holds a claim on it."
    parts = [describe(h, now) for h in others]
    parts += [describe(h, now, who="you (this session)") for h in mine]
    return f"{path}: " + "; ".join(parts) + "."
