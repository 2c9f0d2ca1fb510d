"""The MCP tools about groups and proposals: ``join_group``, ``leave_group``, ``propose``,
``vote``, ``list_proposals`` (``docs/coordination.md``).

A mixin of ``server.PeersMCP``: its ``t_<tool>`` methods are found by name like the others.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import msgspec

from peersd import protocol as p

from . import render, tools

PROPOSALS_META = "claude-peers/proposals"


def _ok(text: str, data: dict[str, Any]) -> types.CallToolResult:
    """The text for the model, the data in ``_meta`` (titles and reasons are peers' words:
    shown quoted in the text, never as structured content the model would read bare)."""
    return types.CallToolResult(  # `meta` is the field's name; `_meta` its wire alias
        content=[types.TextContent(type="text", text=text)],
        meta={PROPOSALS_META: data},  # type: ignore[call-arg]
    )


def describe(x: p.Proposal) -> str:
    """One proposal in a few lines: title, options, state, votes."""
    title = render.field(x.title, 500)
    options = ", ".join(render.field(o, 40) for o in x.options)
    if x.state == "open":
        state = f"open, needs {x.required} vote(s) for one option"
        if x.deadline:
            state += f", closes {render.stamp(x.deadline)}"
    elif x.state == "decided":
        state = f"decided: {render.field(x.outcome or '', 40)}"
    elif x.state == "failed":
        state = "failed: no option can reach the threshold any more"
    else:
        state = "expired: the deadline passed before an option reached the threshold"
    lines = [
        f"#{x.id} {title} by {x.proposer_name} — options {options}; threshold {x.threshold}; "
        f"{state}"
    ]
    for b in x.ballots:
        if b.vote is None:
            lines.append(f"  - {b.voter_name}: not voted")
        else:
            why = f" ({render.field(b.reason, 500)})" if b.reason else ""
            lines.append(f"  - {b.voter_name}: {render.field(b.vote, 40)}{why}")
    return "\n".join(lines)


class GroupTools:
    """Mixed into ``PeersMCP``; uses its ``_call``."""

    async def _call(self, kind: type[p.Request], **fields: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    async def t_join_group(self, a: tools.JoinGroupArgs) -> types.CallToolResult:
        peer = (await self._call(p.SetGroup, group=a.name)).peer
        return _ok(
            f"You are now in group {peer.group}: you see and message only sessions in it "
            "(list_peers shows them).",
            {"group": peer.group},
        )

    async def t_leave_group(self, a: tools.LeaveGroupArgs) -> types.CallToolResult:
        await self._call(p.SetGroup, group=None)
        return _ok("You are in no group now: you see the sessions in no group.", {"group": None})

    async def t_propose(self, a: tools.ProposeArgs) -> types.CallToolResult:
        reply = await self._call(
            p.Propose,
            title=a.title,
            options=a.options,
            voters=a.voters,
            scope=a.scope,
            threshold=a.threshold,
            deadline_seconds=a.deadline_minutes * 60 if a.deadline_minutes else None,
        )
        x: p.Proposal = reply.proposal
        text = (
            f"Proposal #{x.id} was sent to {len(x.ballots)} voter(s), who answer with vote. "
            "You will get the result as a message.\n" + describe(x)
        )
        return _ok(text, {"proposal": msgspec.to_builtins(x)})

    async def t_vote(self, a: tools.VoteArgs) -> types.CallToolResult:
        reply = await self._call(p.Vote, proposal_id=a.proposal_id, vote=a.vote, reason=a.reason)
        x: p.Proposal = reply.proposal
        return _ok(f"Your vote counts.\n{describe(x)}", {"proposal": msgspec.to_builtins(x)})

    async def t_list_proposals(self, a: tools.ListProposalsArgs) -> types.CallToolResult:
        reply = await self._call(p.ListProposals, state=a.state, mine=a.mine)
        found: list[p.Proposal] = reply.proposals
        text = "\n".join(describe(x) for x in found) if found else "No proposals."
        return _ok(text, {"proposals": [msgspec.to_builtins(x) for x in found]})
