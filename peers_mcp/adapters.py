"""Other agent clients' hook inputs and outputs, mapped to ``peers-hook``'s own events.

``peers-hook --client NAME`` (written by ``peers install NAME``) hands the hook input to
:func:`adapt`, which returns it with ``hook_event_name`` turned into the Claude Code
event that plays the same part (so the one delivery path serves every client) and the
function that prints the mail in the client's own output fields. Imported only with
``--client``: the Claude Code and Codex no-mail path stays as light as it was.

Gemini CLI (google-gemini/gemini-cli docs/hooks/reference.md):

- SessionStart, BeforeAgent, AfterTool add context with
  ``{"hookSpecificOutput": {"hookEventName": E, "additionalContext": text}}``; they play
  the parts of SessionStart, UserPromptSubmit and PostToolUse.
- AfterAgent with ``{"decision": "deny", "reason": text}`` makes the reason a new prompt
  (the session keeps going instead of idling): Claude Code's Stop block. With
  ``stop_hook_active`` true nothing is claimed (the same loop guard as Stop).
- Any other event (BeforeTool, BeforeModel, Notification, SessionEnd, …): nothing.

Cursor CLI (cursor.com/docs hooks; ``~/.cursor/hooks.json``): only ``stop`` carries mail,
as ``{"followup_message": text}``, which Cursor sends as the next user message, so the
session answers before it idles (Claude Code's Stop block). Its input has no
``session_id`` (``conversation_id`` instead; the session is found by ancestry). Cursor
bounds the follow-ups with the hook's ``loop_limit`` and counts them in ``loop_count``:
at the limit a follow-up would be dropped, so nothing is claimed then
(:data:`CURSOR_LOOP_LIMIT`, which the installer writes). A turn that did not complete
(``status`` aborted or error: the user stopped it) gets nothing either.

GitHub Copilot CLI (docs.github.com cli-hooks-reference; ``~/.copilot/hooks/*.json``):
``agentStop`` with ``{"decision": "block", "reason": text}`` makes the reason the next
prompt (Claude Code's Stop block); ``postToolUse`` with ``{"additionalContext": text}``
appends the text after the tool's result ("Additional guidance from postToolUse hooks",
seen with Copilot CLI 1.0.102; the reference still says only SDK hooks may change a result,
and 1.0.24 dropped it: github/copilot-cli#2652). The camelCase inputs have ``sessionId``
but no event name: ``agentStop``'s is told by ``stopReason``, ``postToolUse``'s by
``toolResult`` (the PascalCase forms have ``hook_event_name`` and ``session_id``);
``stop_hook_active`` is the loop guard, as in Claude Code. ``sessionStart`` and
``userPromptSubmitted`` output is not read for command hooks: nothing is claimed there.

opencode (a plugin, ``~/.config/opencode/plugins/claude-peers.js``, written by ``peers
install opencode``): opencode has no command hooks, so the plugin runs ``peers-hook
--client opencode`` with ``{"hook_event_name", "session_id", "cwd"}`` on
``tool.execute.after`` (the mail is appended to the tool's result: PostToolUse) and on the
``session.idle`` event (the plugin sends the mail as a new prompt, so the session answers:
Claude Code's Stop block). It reads ``hookSpecificOutput.additionalContext``.

Antigravity CLI (``agy``; ``~/.gemini/config/hooks.json``, named hook suites of
Claude-Code-like groups): ``PreInvocation`` runs before every model call and merges the
``additionalContext`` it prints into the prompt, so mail reaches the model before its next
call (UserPromptSubmit's part). Its input is camelCase (``hookEventName``,
``conversationId``) in some versions and snake_case in others: both are read, and without a
session id the session is found by ancestry. Its ``Stop`` output is not documented well
enough to claim mail there.
"""

from .hook import Log, json_string

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc would import collections (about 3 ms on every hook run)
    from collections.abc import Callable

    Output = Callable[[str, str], str]

GEMINI_EVENTS = {
    "SessionStart": "SessionStart",
    "BeforeAgent": "UserPromptSubmit",
    "AfterTool": "PostToolUse",
    "AfterAgent": "Stop",
}
"""Gemini CLI event → the peers-hook event that plays its part."""

CURSOR_EVENTS = {"stop": "Stop"}
"""Cursor event → the peers-hook event that plays its part."""
CURSOR_LOOP_LIMIT = 5
"""The ``loop_limit`` of our stop hook (``peers install cursor`` writes it)."""

COPILOT_EVENTS = {
    "agentStop": "Stop",
    "Stop": "Stop",
    "postToolUse": "PostToolUse",
    "PostToolUse": "PostToolUse",
}
"""Copilot CLI event (camelCase or its VS Code compatible PascalCase) → peers-hook event."""
OPENCODE_EVENTS = {"tool.execute.after": "PostToolUse", "session.idle": "Stop"}
"""The opencode plugin's events → peers-hook events."""
ANTIGRAVITY_EVENTS = {"PreInvocation": "UserPromptSubmit"}
"""Antigravity CLI event → the peers-hook event that plays its part."""

CLIENTS = {
    "gemini": GEMINI_EVENTS,
    "cursor": CURSOR_EVENTS,
    "copilot": COPILOT_EVENTS,
    "opencode": OPENCODE_EVENTS,
    "antigravity": ANTIGRAVITY_EVENTS,
}
"""``--client`` values and their event maps."""
SESSION_KEYS = {
    "gemini": ("session_id",),
    "cursor": ("conversation_id",),
    "copilot": ("sessionId", "session_id"),
    "opencode": ("session_id",),
    "antigravity": ("conversationId", "conversation_id", "sessionId", "session_id"),
}
"""The input fields that name the session, per client (the first one present counts)."""
EVENT_KEYS = ("hook_event_name", "hookEventName")
COPILOT_SHAPES = {
    "Stop": ("stopReason", "stop_reason"),
    "PostToolUse": ("toolResult", "tool_result"),
}
"""A key Copilot CLI's input of each event always has (Claude Code's never does)."""
NEED_SESSION = frozenset(("gemini", "cursor", "copilot", "opencode"))
"""Clients whose input always names the session: one without it is not theirs."""


def _context_output(client_event: str) -> "Output":
    def output(event: str, text: str) -> str:
        return (
            '{"hookSpecificOutput": {"hookEventName": '
            + json_string(client_event)
            + ', "additionalContext": '
            + json_string(text)
            + "}}\n"
        )

    return output


def _deny_output(event: str, text: str) -> str:
    return '{"decision": "deny", "reason": ' + json_string(text) + "}\n"


def _followup_output(event: str, text: str) -> str:
    return '{"followup_message": ' + json_string(text) + "}\n"


def _block_output(event: str, text: str) -> str:
    return '{"decision": "block", "reason": ' + json_string(text) + "}\n"


def _plain_context_output(event: str, text: str) -> str:
    return '{"additionalContext": ' + json_string(text) + "}\n"


def _event_name(client: str, data: dict[str, object]) -> object:
    """The client's event: its event-name field, or for Copilot's camelCase input (which has
    none) the shape of ``agentStop``'s (``stopReason``)."""
    for key in EVENT_KEYS:
        if key in data:
            return data[key]
    if client == "copilot" and "stopReason" in data:
        return "agentStop"
    if client == "copilot" and "toolResult" in data:
        return "postToolUse"
    return None


def _session(client: str, data: dict[str, object]) -> object:
    for key in SESSION_KEYS[client]:
        if key in data:
            return data[key]
    return None


def _cursor_stop_blocked(data: dict[str, object]) -> bool:
    """Whether a follow-up now would be dropped (loop limit) or unwanted (turn stopped)."""
    count = data.get("loop_count", 0)
    if not isinstance(count, int) or count >= CURSOR_LOOP_LIMIT:
        return True
    return data.get("status", "completed") != "completed"


def adapt(
    client: str, data: dict[str, object], log: Log
) -> "tuple[dict[str, object], Output] | None":
    """(the input as peers-hook's own event, its output) or None when there is nothing to do."""
    events = CLIENTS.get(client)
    if events is None:
        log.context = "hook"
        log(f"unknown --client {client!r} (known: {', '.join(sorted(CLIENTS))})")
        return None
    client_event = _event_name(client, data)
    ours = events.get(client_event) if isinstance(client_event, str) else None
    session_id = _session(client, data)
    if ours is None:
        return None  # an event we do not serve, or not this client's input
    if not isinstance(session_id, str) or not session_id:
        if client in NEED_SESSION or session_id is not None:
            return None  # not this client's input
        session_id = None  # Antigravity without an id: found by ancestry
    if ours == "Stop" and (data.get("stop_hook_active") or data.get("stopHookActive")):
        return None  # already continuing because of this hook: the next event takes the mail
    if client == "cursor" and _cursor_stop_blocked(data):
        return None
    if client == "copilot" and not any(k in data for k in COPILOT_SHAPES[ours]):
        return None  # Copilot's stop says why (end_turn), its postToolUse has the result
    assert isinstance(client_event, str)
    roots = data.get("workspace_roots")
    cwd = data.get("cwd") or (roots[0] if isinstance(roots, list) and roots else None)
    adapted: dict[str, object] = {"hook_event_name": ours, "session_id": session_id, "cwd": cwd}
    if client == "cursor":
        return adapted, _followup_output
    if client == "copilot":
        return adapted, _block_output if ours == "Stop" else _plain_context_output
    if client == "antigravity":
        return adapted, _plain_context_output
    if client == "gemini" and ours == "Stop":
        return adapted, _deny_output
    return adapted, _context_output(client_event)
