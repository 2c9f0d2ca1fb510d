"""``peers-hook``'s part in who is touching what (``docs/coordination.md``).

``hook.run_hook`` calls in at two points:

- ``alone``, before anything else, for the events that need no mail:
  ``PreToolUse`` of an edit tool (``edits.edited_paths``) asks the daemon about the files
  in one round trip (``check_edit`` with ``attach``: it finds the session itself, counts
  the files as the session's unless denied, and tells the holders). Another live peer
  active on one, or holding a shared claim: the model is told in ``additionalContext``
  and the edit goes on. An exclusive claim: ``permissionDecision: "deny"`` with the same
  text as the reason (Claude Code and Codex read the same output). A subagent's
  ``PostToolUse`` of an edit tool (the mail path ignores subagents) records the files.
- ``after_attach``, on the mail path's connection once it has found the session:
  ``PostToolUse`` of an edit tool records the files (``touch_files``);
  ``UserPromptSubmit`` sets the status ``working``, ``Stop`` ``idle`` (with the route by
  which the daemon can wake the idle session: ``wakes``).

Everything fails open: the daemon down, the session unknown or any error leaves one line
in the hook log and the session untouched. ``conflicts`` (the text) is imported only when
there is something to say.
"""

import os
import sys

from peersd import wire

from . import edits
from .hook import _describe, attach, attach_request, connect, json_string, write_all

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the hook keeps typing out of its imports
    from .hook import Log, Options

STATUS_OF = {"UserPromptSubmit": "working", "Stop": "idle"}
CHUNK = 500
"""Files per request (the daemon takes at most 1000)."""


def alone(opts: "Options", log: "Log", data: dict) -> int:
    """PreToolUse, and a subagent's PostToolUse: the hook's whole work; its exit code."""
    raws = edits.edited_paths(data)
    if not raws:
        return 0
    from peersd import paths

    refs = paths.file_refs(raws, _cwd(data))
    if data.get("hook_event_name") == "PreToolUse":
        return before_edit(opts, log, data, refs)
    try:
        conn, _ = attach(opts, log, data.get("session_id"))
    except Exception as e:
        log(_describe(e))
        return 0
    with conn:
        try:
            _touch(conn, refs)
        except Exception as e:
            log(_describe(e))
    return 0


def after_attach(conn: wire.Wire, log: "Log", data: dict) -> None:
    """On the mail path's connection: record an edit, or the session's status."""
    event = data.get("hook_event_name")
    try:
        if event == "PostToolUse":
            raws = edits.edited_paths(data)
            if raws:
                from peersd import paths

                _touch(conn, paths.file_refs(raws, _cwd(data)))
        elif event in STATUS_OF:
            req: dict = {"t": "set_status", "state": STATUS_OF[str(event)]}
            if event == "Stop" and not conn.remote:
                from . import wakes  # how the daemon can wake the idle session

                route = wakes.route(data)
                if route:
                    req["wake"] = route
            conn.call(req)
    except Exception as e:
        log(_describe(e))


def _cwd(data: dict) -> str:
    cwd = data.get("cwd")
    return cwd if isinstance(cwd, str) and cwd else os.getcwd()


def _touch(conn: wire.Wire, refs: "list[dict]") -> None:
    for start in range(0, len(refs), CHUNK):
        conn.call({"t": "touch_files", "files": refs[start : start + CHUNK]})


def before_edit(opts: "Options", log: "Log", data: dict, refs: "list[dict]") -> int:
    decision, holders = check(opts, log, data, refs)
    if decision == "allow":
        return 0
    try:
        from . import conflicts

        client = "codex" if "turn_id" in data else "claude-code"  # their hook inputs differ
        text = conflicts.edit_text(holders, decision, opts.server_name, client)
        write_all(sys.stdout, pre_tool_use_output(decision, text))
    except Exception as e:
        log(f"could not tell the model about {len(holders)} hold(s): {_describe(e)}")
    return 0


def check(opts: "Options", log: "Log", data: dict, refs: "list[dict]") -> "tuple[str, list]":
    """(decision, holders) for an edit of ``refs`` by this session; allow on any failure.

    The daemon finds the session itself (``attach``); one it does not know (its MCP
    server has not registered yet) is checked as nobody: still warned and stopped.
    """
    decision, holders = "allow", []
    try:
        with connect(opts, log) as conn:
            # check_edit with attach: it finds the session as attach would, in one trip
            as_me = attach_request(data.get("session_id"))
            for start in range(0, len(refs), CHUNK):
                req: dict = {**as_me, "t": "check_edit", "files": refs[start : start + CHUNK]}
                req["attach"] = True
                answer = conn.call(req)
                found = answer.get("holders")
                holders += found if isinstance(found, list) else []
                got = answer.get("decision")
                if got == "deny" or (got == "warn" and decision == "allow"):
                    decision = str(got)
    except Exception as e:
        log(_describe(e))
        return "allow", []
    return decision, holders


def pre_tool_use_output(decision: str, text: str) -> str:
    """The PreToolUse JSON: a denial with its reason, or context next to the tool call."""
    if decision == "deny":
        return (
            '{"hookSpecificOutput": {"hookEventName": "PreToolUse", '
            '"permissionDecision": "deny", "permissionDecisionReason": '
            + json_string(text)
            + "}}\n"
        )
    return (
        '{"hookSpecificOutput": {"hookEventName": "PreToolUse", "additionalContext": '
        + json_string(text)
        + "}}\n"
    )
