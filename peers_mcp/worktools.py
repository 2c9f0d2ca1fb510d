"""The MCP tools for shared work state: tasks (``create_task``, ``update_task``,
``list_tasks``) and the decisions board (``post_decision``, ``revoke_decision``,
``query_decisions``); ``docs/coordination.md``.

A mixin of ``server.PeersMCP``: its ``t_<tool>`` methods are found by name like the
others. Titles, descriptions, notes and values are other sessions' words: shown as quoted
fields (``render.field``) so none of them can pass for structure. The data goes in
``_meta`` (see ``filetools._ok``): with structured content the clients would show the
model the JSON instead of the text that says what to do next.
"""

from __future__ import annotations

import time
from typing import Any

import mcp_types as types
import msgspec

from peersd import protocol as p

from . import render, tools

WORK_META = "claude-peers/work"


def _ok(text: str, data: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(  # `meta` is the field's name; `_meta` its wire alias
        content=[types.TextContent(type="text", text=text)],
        meta={WORK_META: data},  # type: ignore[call-arg]
    )


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def task_line(t: p.Task) -> str:
    """One task in a listing: id, state, who, title."""
    who = f"assigned to {t.assignee_name}" if t.assignee_name else f"open to its {t.scope}"
    if t.state == "claimed":
        who = f"claimed by {t.assignee_name}"
    return (
        f"- {t.id} [{t.state}] {render.field(t.title)} — {who}; created by {t.creator_name} "
        f"{_clock(t.created)}"
    )


def task_text(t: p.Task) -> str:
    """One task in full, with its history."""
    lines = [task_line(t)[2:]]
    if t.description:
        lines.append(f"Description: {render.field(t.description, 2000)}")
    if t.result:
        lines.append(f"Result: {render.field(t.result, 2000)}")
    if t.history:
        shown = len(t.history)
        more = f" (the last {shown} of {t.history_total})" if t.history_total > shown else ""
        lines.append(f"History{more}:")
        for e in t.history:
            to = (
                f" → {e.assignee_name}"
                if e.assignee_name and e.what in ("created", "assigned", "passed")
                else ""
            )
            note = f": {render.field(e.text, 500)}" if e.text else ""
            lines.append(f"  {_clock(e.at)} {e.actor_name} {e.what}{to} ({e.state}){note}")
    return "\n".join(lines)


def told(notified: list[str], skipped: list[str]) -> str:
    text = f" Mailed: {', '.join(notified)}." if notified else ""
    if skipped:
        text += " Not mailed: " + "; ".join(skipped) + "."
    return text


def decision_text(x: p.Decision) -> str:
    category = f" [{x.category}]" if x.category else ""
    state = " (REVOKED)" if x.state == "revoked" else ""
    why = "revoked because" if x.state == "revoked" else "why"
    lines = [
        f"- {x.key}{category} = {render.field(x.value, 500)}{state} — {why} "
        f"{render.field(x.rationale, 500)}; v{x.version} by {x.by_name} {_clock(x.at)}"
    ]
    for v in x.history:
        lines.append(
            f"    v{v.version} {v.state}: {render.field(v.value, 300)} by {v.by_name} "
            f"{_clock(v.at)} ({render.field(v.rationale, 300)})"
        )
    return "\n".join(lines)


class WorkTools:
    """Mixed into ``PeersMCP``; uses its ``_call``."""

    async def _call(self, kind: type[p.Request], **fields: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    async def t_create_task(self, a: tools.CreateTaskArgs) -> types.CallToolResult:
        reply = await self._call(
            p.CreateTask,
            title=a.title,
            description=a.description,
            assignee=a.assignee,
            scope=a.scope,
        )
        t: p.Task = reply.task
        if t.assignee_name:
            text = f"Created task {t.id}, assigned to {t.assignee_name}."
        else:
            text = f"Created task {t.id}, open to anyone in your {t.scope} (they claim it)."
        text += told(reply.notified, reply.skipped)
        text += " You are mailed when it is claimed, done or cancelled."
        return _ok(text, {"task": msgspec.to_builtins(t), "notified": reply.notified})

    async def t_update_task(self, a: tools.UpdateTaskArgs) -> types.CallToolResult:
        reply = await self._call(
            p.UpdateTask,
            task=a.task_id,
            state=a.state,
            note=a.note,
            result=a.result,
            assignee=a.assignee,
        )
        t: p.Task = reply.task
        text = f"Task {t.id} is now {t.state}" + (
            f" ({'claimed by' if t.state == 'claimed' else 'assigned to'} {t.assignee_name})"
            if t.assignee_name
            else ""
        )
        text += "." + told(reply.notified, reply.skipped)
        return _ok(text, {"task": msgspec.to_builtins(t), "notified": reply.notified})

    async def t_list_tasks(self, a: tools.ListTasksArgs) -> types.CallToolResult:
        if a.task_id is not None:
            t = (await self._call(p.TaskInfo, task=a.task_id)).task
            return _ok(task_text(t), {"task": msgspec.to_builtins(t)})
        state = None if a.state in (None, "all") else a.state
        reply = await self._call(
            p.ListTasks, mine=a.mine, state=state, final=a.state == "all", scope=a.scope
        )
        found: list[p.Task] = reply.tasks
        if not found:
            text = f"No {a.state or 'open or claimed'} tasks in scope '{a.scope}'."
        else:
            text = f"{len(found)} task(s):\n" + "\n".join(task_line(t) for t in found)
            text += '\nlist_tasks(task_id="…") shows one with its history.'
        if reply.omitted:
            text += (
                f"\n{reply.omitted} older task(s) left out to keep the answer small: narrow "
                "with state, mine or scope."
            )
        return _ok(text, {"tasks": [msgspec.to_builtins(t) for t in found]})

    async def t_post_decision(self, a: tools.PostDecisionArgs) -> types.CallToolResult:
        reply = await self._call(
            p.PostDecision, key=a.key, value=a.value, rationale=a.rationale, category=a.category
        )
        x: p.Decision = reply.decision
        text = f"Decision {x.key} is version {x.version} now." + told(reply.notified, reply.skipped)
        return _ok(text, {"decision": msgspec.to_builtins(x), "notified": reply.notified})

    async def t_revoke_decision(self, a: tools.RevokeDecisionArgs) -> types.CallToolResult:
        reply = await self._call(p.RevokeDecision, key=a.key, reason=a.reason)
        x: p.Decision = reply.decision
        text = f"Decision {x.key} is revoked (version {x.version})." + told(
            reply.notified, reply.skipped
        )
        return _ok(text, {"decision": msgspec.to_builtins(x), "notified": reply.notified})

    async def t_query_decisions(self, a: tools.QueryDecisionsArgs) -> types.CallToolResult:
        reply = await self._call(
            p.QueryDecisions,
            key=a.key,
            category=a.category,
            text=a.text,
            revoked=a.include_revoked,
            history=a.history,
            everywhere=a.everywhere,
        )
        found: list[p.Decision] = reply.decisions
        if not found:
            text = (
                "No decision matches." if (a.key or a.category or a.text) else "No decisions yet."
            )
        else:
            text = f"{len(found)} decision(s):\n" + "\n".join(decision_text(x) for x in found)
        return _ok(text, {"decisions": [msgspec.to_builtins(x) for x in found]})
