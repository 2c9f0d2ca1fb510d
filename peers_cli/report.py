"""``peers report`` as Markdown: one renderer per section of ``protocol.Report``.

``RENDERERS`` maps a section (a field of the answer, ``peersd.report.SECTIONS``) to the
function that writes it; a section the daemon adds is one more entry.
Peers' words (names, titles, reasons, patterns) are cleaned of control characters and
kept from breaking the Markdown: a table cell cannot end early, a line cannot start a
heading.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from peers_mcp.render import clean
from peersd import protocol as p
from peersd.paths import relative


def cell(text: object) -> str:
    """Peer text for a table cell or a line: one line, ``|`` and backticks escaped."""
    value = clean("" if text is None else str(text)).replace("\n", " ")
    for ch in ("\\", "|", "`", "*", "_", "<", "["):
        value = value.replace(ch, "\\" + ch)
    return value


def clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def peers_section(r: p.Report) -> list[str]:
    if not r.peers:
        return ["Nobody took part."]
    rows = [
        [
            cell(x.name) + (" (gone)" if x.state == "gone" else ""),
            x.client,
            cell(x.group or "-"),
            str(x.sent),
            str(x.received),
            cell(x.summary or "-"),
        ]
        for x in r.peers
    ]
    return _table(["peer", "client", "group", "sent", "received", "summary"], rows)


def pairs_section(r: p.Report) -> list[str]:
    if not r.pairs:
        return ["No messages."]
    head = [f"{r.messages} message(s) in all.", ""]
    rows = [
        [cell(x.sender_name), cell(x.recipient_name), str(x.count), str(x.delivered)]
        for x in r.pairs
    ]
    return head + _table(["from", "to", "messages", "delivered"], rows)


def proposals_section(r: p.Report) -> list[str]:
    if not r.proposals:
        return ["No proposals."]
    lines: list[str] = []
    for x in r.proposals:
        if x.state == "decided":
            result = f"**decided: {cell(x.outcome)}**"
        elif x.state == "open":
            result = f"open (needs {x.required})"
        else:
            result = x.state
        lines.append(
            f"- #{x.id} {cell(x.title)} — by {cell(x.proposer_name)}, {clock(x.created)}; "
            f"threshold {x.threshold}; {result}"
        )
        for b in x.ballots:
            vote = cell(b.vote) if b.vote else "did not vote"
            why = f": {cell(b.reason)}" if b.reason else ""
            lines.append(f"  - {cell(b.voter_name)} — {vote}{why}")
    return lines


def claims_section(r: p.Report) -> list[str]:
    if not r.claims:
        return ["No file claims."]
    rows = [
        [
            cell(x.name),
            cell(f"{x.repo.rstrip('/').rsplit('/', 1)[-1]}: {relative(x.pattern, x.repo)}"),
            "exclusive" if x.exclusive else "shared",
            clock(x.created),
            clock(x.expires_at),
            cell(x.reason or "-"),
        ]
        for x in r.claims
    ]
    return _table(["peer", "repo: pattern", "kind", "since", "until", "reason"], rows)


def kills_section(r: p.Report) -> list[str]:
    if not r.kills:
        return ["None."]
    return [
        f"- {clock(k.at)} {cell(k.action)} of {cell(k.target_name or k.target or '?')} by "
        f"{cell(k.actor)}: {cell(k.detail)}"
        for k in r.kills
    ]


def tasks_section(r: p.Report) -> list[str]:
    if not r.tasks:
        return ["No tasks made or changed."]
    done = sum(t.state == "done" for t in r.tasks)
    opened = sum(t.created >= r.since for t in r.tasks)
    rows = [
        [
            t.id,
            t.state,
            cell(t.title),
            cell(t.assignee_name or "-"),
            cell(t.creator_name),
            clock(t.updated),
            cell(t.result or "-"),
        ]
        for t in r.tasks
    ]
    head = [f"{opened} opened, {done} done in the period.", ""]
    return head + _table(
        ["task", "state", "title", "assignee", "creator", "changed", "result"], rows
    )


def decisions_section(r: p.Report) -> list[str]:
    if not r.decisions:
        return ["No decisions."]
    lines = []
    for x in r.decisions:
        what = "revoked" if x.state == "revoked" else f"= {cell(x.value)}"
        lines.append(
            f"- {clock(x.at)} {cell(x.by_name)}: `{cell(x.key)}` {what} (v{x.version}) — "
            f"{cell(x.rationale)}"
        )
    return lines


RENDERERS: dict[str, tuple[str, Callable[[p.Report], list[str]]]] = {
    "peers": ("Who took part", peers_section),
    "pairs": ("Messages", pairs_section),
    "tasks": ("Tasks", tasks_section),
    "decisions": ("Decisions", decisions_section),
    "proposals": ("Proposals and votes", proposals_section),
    "claims": ("File claims", claims_section),
    "kills": ("Kills and cleanups", kills_section),
}
"""Section -> (heading, renderer), in the order they are printed."""


def markdown(r: p.Report) -> str:
    lines = [f"# claude-peers report: {clock(r.since)} to {clock(r.until)}", ""]
    if r.cut:
        lines += ["Left out to keep the report to one answer:", ""]
        lines += [f"- {cell(section)}: {cell(what)}" for section, what in r.cut.items()]
        lines.append("")
    for heading, render in RENDERERS.values():
        lines += [f"## {heading}", "", *render(r), ""]
    return "\n".join(lines)
