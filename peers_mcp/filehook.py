"""``peers-hook``'s part in who is touching what (``docs/coordination.md``).

Called from ``hook.run_hook`` for every event before the mail is looked at:

- ``PreToolUse`` of an edit tool (``edits.edited_paths``): ask the daemon about the
  files (``check_edit``, which also counts them as this session's unless denied and
  tells the holders). Another live peer active on one, or holding a shared claim: the
  model is told in ``additionalContext`` and the edit goes on. An exclusive claim:
  ``permissionDecision: "deny"`` with the same text as the reason (Claude Code and
  Codex read the same output). Nothing else is printed for PreToolUse.
- ``PostToolUse`` of an edit tool, also from a subagent: record the files
  (``touch_files``).
- ``UserPromptSubmit``: status ``working``; ``Stop``: ``idle``.

Each step is its own short connection, and fails open: the daemon down, the session
unknown or any error leaves one line in the hook log and the session untouched.
The edit path imports ``peersd.paths`` and this module; ``conflicts`` (the text) only
when there is something to say.
"""

import os
import sys

from peersd import paths, wire

from . import edits
from .hook import _describe, attach, json_string, write_all

STATUS_OF = {"UserPromptSubmit": "working", "Stop": "idle"}
CHUNK = 500
"""Files per request (the daemon takes at most 1000)."""


def handle(opts: "object", log: "object", data: dict) -> "int | None":
    """Do this event's part; an exit code when the hook is done, None to go on to the mail."""
    event = data.get("hook_event_name")
    if event == "PreToolUse":
        return before_edit(opts, log, data)
    if event == "PostToolUse":
        raws = edits.edited_paths(data)
        if raws:
            _with_peer(opts, log, data, lambda conn, peer: _touch(conn, raws, data))
    elif event in STATUS_OF and not data.get("agent_id"):
        state = STATUS_OF[str(event)]
        _with_peer(
            opts, log, data, lambda conn, peer: conn.call({"t": "set_status", "state": state})
        )
    return None


def _cwd(data: dict) -> str:
    cwd = data.get("cwd")
    return cwd if isinstance(cwd, str) and cwd else os.getcwd()


def _with_peer(opts, log, data, step) -> None:  # type: ignore[no-untyped-def]
    """Run ``step`` as this session's peer. Not reaching it is not logged here: these
    events go on to the mail, which attaches the same way and logs the failure once."""
    try:
        conn, peer = attach(opts, log, data.get("session_id"))
    except Exception:
        return
    with conn:
        try:
            step(conn, peer)
        except Exception as e:
            log(_describe(e))


def _touch(conn: wire.Wire, raws: "list[str]", data: dict) -> None:
    refs = paths.file_refs(raws, _cwd(data))
    for start in range(0, len(refs), CHUNK):
        conn.call({"t": "touch_files", "files": refs[start : start + CHUNK]})


def before_edit(opts: "object", log: "object", data: dict) -> int:
    raws = edits.edited_paths(data)
    if not raws:
        return 0
    refs = paths.file_refs(raws, _cwd(data))
    if not refs:
        return 0
    decision, holders, client = check(opts, log, data, refs)
    if decision == "allow":
        return 0
    try:
        from . import conflicts

        text = conflicts.edit_text(holders, decision, opts.server_name, client)  # type: ignore[attr-defined]
        write_all(sys.stdout, pre_tool_use_output(decision, text))
    except Exception as e:
        log(f"could not tell the model about {len(holders)} hold(s): {_describe(e)}")
    return 0


def check(
    opts: "object", log: "object", data: dict, refs: "list[dict]"
) -> "tuple[str, list, str | None]":
    """(decision, holders, the session's client) for an edit of ``refs``; allow on failure."""
    registered = True
    try:
        conn, peer = attach(opts, log, data.get("session_id"))
    except wire.WireError as e:
        if e.code != "unknown_peer":
            log(_describe(e))
            return "allow", [], None
        # The session's MCP server has not registered (yet): check as nobody in particular.
        registered = False
        try:
            conn = _connect(opts)
        except Exception as e2:
            log(_describe(e2))
            return "allow", [], None
        peer = {"client": "codex" if "turn_id" in data else "claude-code"}
    except Exception as e:
        log(_describe(e))
        return "allow", [], None
    decision, holders = "allow", []
    with conn:
        try:
            for start in range(0, len(refs), CHUNK):
                req: dict = {"t": "check_edit", "files": refs[start : start + CHUNK]}
                if not registered:
                    req["record"] = req["notify"] = False
                answer = conn.call(req)
                found = answer.get("holders") or []
                holders += found if isinstance(found, list) else []
                got = answer.get("decision")
                if got == "deny" or (got == "warn" and decision == "allow"):
                    decision = str(got)
        except Exception as e:
            log(_describe(e))
            return "allow", [], None
    client = peer.get("client") if isinstance(peer, dict) else None
    return decision, holders, client if isinstance(client, str) else None


def _connect(opts: "object") -> wire.Wire:
    from .hook import REQUEST_TIMEOUT

    if opts.socket:  # type: ignore[attr-defined]
        path, token, cafile = os.path.abspath(opts.socket), None, None  # type: ignore[attr-defined]
    else:
        path, token, cafile = wire.locate(config=opts.config)  # type: ignore[attr-defined]
    return wire.Wire(path, REQUEST_TIMEOUT, kind="hook", token=token, cafile=cafile)


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
