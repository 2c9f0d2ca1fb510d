"""The MCP tools: their argument types (the schemas models see) and descriptions.

Names and descriptions are the contract with the models. Descriptions say what comes
back, what the scopes mean, and that replies go through this server's send_message
(models otherwise reach for a built-in messaging tool and the reply is lost). Names, ids
and lengths are the protocol's own types (``peersd.rules``), so a schema never admits
what the daemon refuses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from peersd import rules


def _rule(t: Any) -> str:
    """The rule a protocol type states in words, capitalised for a schema."""
    text = rules.meta(t).description or ""
    return text[0].upper() + text[1:]


PeerRef = rules.PeerRef
Scope = Annotated[
    Literal["machine", "directory", "repo"],
    Meta(
        description="machine: every session on this machine; directory: sessions in the same "
        "working directory as you; repo: sessions in the same git repository as you."
    ),
]
ListScope = Annotated[
    Literal["machine", "directory", "repo", "network"],
    Meta(
        description="machine: every session on this machine; directory: sessions in the same "
        "working directory as you; repo: sessions in the same git repository as you; network: "
        "this machine's sessions and those of every federated machine (address them as "
        "name@host)."
    ),
]
Text = Annotated[str, Meta(min_length=1, description="The message text (up to 32 KiB).")]
MessageId = Annotated[rules.MessageId, Meta(description=_rule(rules.MessageId) + ".")]


class Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every tool's arguments: unknown arguments are an error, not ignored."""


class ListPeersArgs(Args):
    scope: ListScope = "machine"


class SendMessageArgs(Args):
    to: PeerRef
    message: Text
    reply_to: Annotated[
        MessageId | None,
        Meta(description="Id of the message you are answering (as shown with the message)."),
    ] = None


class BroadcastArgs(Args):
    scope: Scope
    message: Text


class MessageStatusArgs(Args):
    message_ids: Annotated[list[MessageId], Meta(min_length=1, max_length=100)]


class CheckMessagesArgs(Args):
    history: Annotated[
        int, Meta(ge=0, le=50, description="How many recent already-read messages to include.")
    ] = 5
    message_id: Annotated[
        MessageId | None,
        Meta(
            description="Read only this message (one addressed to you, read or not), from "
            "`offset` on: how a message shown cut is read to its end."
        ),
    ] = None
    offset: Annotated[
        int,
        Meta(
            ge=0,
            description="With message_id: the character of its text to start from, as the "
            "cut message says.",
        ),
    ] = 0


class WaitForMessageArgs(Args):
    timeout_seconds: Annotated[
        float,
        Meta(gt=0, le=600, description="Give up after this many seconds (default 45)."),
    ] = 45.0
    from_peer: Annotated[
        PeerRef | None, Meta(description="Only a message from this peer (name or id).")
    ] = None
    reply_to: Annotated[MessageId | None, Meta(description="Only a reply to this message id.")] = (
        None
    )


class MessageHistoryArgs(Args):
    peer: Annotated[PeerRef | None, Meta(description="Only messages to or from this peer.")] = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 20


class SetSummaryArgs(Args):
    summary: Annotated[
        rules.Summary,
        Meta(description="One or two sentences on what you are working on, shown to peers."),
    ]


class SetNameArgs(Args):
    name: Annotated[
        rules.PeerName, Meta(description=f"{_rule(rules.PeerName)}; unique on this machine.")
    ]


class WhoamiArgs(Args):
    pass


class KillPeerArgs(Args):
    peer: PeerRef
    force: Annotated[
        bool, Meta(description="SIGKILL if it has not exited after SIGTERM and a grace period.")
    ] = False


def description(server: str) -> dict[str, str]:
    send = f"this server's send_message tool ({server})"
    return {
        "list_peers": (
            "List the other AI agent sessions (Claude Code, Codex, CLI) you can message. "
            "Shows each peer's name, id, client, working directory, git branch, summary, how it "
            "receives mail (push: instantly; hook: at its next prompt or tool call; poll: when "
            "it checks) and how many of its messages are still unread."
        ),
        "send_message": (
            "Send a message to another agent session (a peer) by name, name@host or id. The "
            "message is stored before this returns its id and is delivered however the peer "
            "can receive it; it is never lost. Use this tool for every reply to a peer "
            "message, passing reply_to with the id of the message you answer: built-in "
            "messaging tools do not reach peers. Returns the message id; check it later with "
            "message_status."
        ),
        "broadcast": (
            "Send the same message to every other peer in a scope (machine, directory or "
            f"repo). Returns one message id per recipient. To answer one peer use {send}."
        ),
        "message_status": (
            "Whether messages you sent are still queued, were delivered (when, and by which "
            "path: channel, hook, wait, check, cli) or expired unread."
        ),
        "check_messages": (
            "Read your unread peer messages now (they are marked read), plus a few recent "
            f"ones for context. Answer a message with {send} and its reply_to. A message "
            "too long to show whole is shown cut; read on with message_id and offset."
        ),
        "wait_for_message": (
            "Block until a peer message arrives (optionally only from one peer, or only a "
            "reply to one of your messages), or until the timeout passes (default 45 s). "
            "Returns the message(s), marked read, or says that none came."
        ),
        "message_history": (
            "Recent messages you sent or received, newest first, with their delivery state."
        ),
        "set_summary": (
            "Tell peers in one or two sentences what you are working on; shown in list_peers."
        ),
        "set_name": "Change the name peers use to reach you (unique on this machine).",
        "whoami": "Your own peer name, id, client, directory, branch and unread count.",
        "kill_peer": (
            "Terminate another agent session's process. Disabled unless the user enabled it "
            "(kill_enabled = true in the claude-peers configuration); you cannot kill yourself."
        ),
        **file_descriptions(server),
    }


TOOLS: dict[str, type[Args]] = {
    "list_peers": ListPeersArgs,
    "send_message": SendMessageArgs,
    "broadcast": BroadcastArgs,
    "message_status": MessageStatusArgs,
    "check_messages": CheckMessagesArgs,
    "wait_for_message": WaitForMessageArgs,
    "message_history": MessageHistoryArgs,
    "set_summary": SetSummaryArgs,
    "set_name": SetNameArgs,
    "whoami": WhoamiArgs,
    "kill_peer": KillPeerArgs,
}


def input_schema(args: type[Args]) -> dict[str, Any]:
    """The flat JSON schema of an argument Struct (msgspec nests it under $defs)."""
    schema = msgspec.json.schema(args)
    name = schema["$ref"].rsplit("/", 1)[1]
    flat: dict[str, Any] = dict(schema["$defs"].pop(name))
    flat.pop("title", None)
    if schema["$defs"]:
        flat["$defs"] = schema["$defs"]
    flat.setdefault("properties", {})
    return flat


def parse(name: str, arguments: dict[str, Any] | None) -> Args:
    """Validated arguments; the error names the field that is wrong and the rule."""
    try:
        return msgspec.convert(arguments or {}, TOOLS[name])
    except msgspec.ValidationError as e:
        raise msgspec.ValidationError(rules.explain(e)[1]) from None


# --------------------------------------------------------------------------- who is touching what
# docs/coordination.md. The hooks record edits and warn before them by themselves; these
# tools are for saying so in advance (claims), asking, and a status note.

FilePathArg = rules.FilePath


class ClaimFilesArgs(Args):
    paths: Annotated[
        list[FilePathArg],
        Meta(
            min_length=1,
            max_length=rules.MAX_FILES,
            description="Files, folders (everything under them) or globs such as src/auth/** "
            "or tests/test_*.py; relative to your working directory, or absolute. Up to 1000.",
        ),
    ]
    exclusive: Annotated[
        bool,
        Meta(
            description="Exclusive: other sessions' edits of these files are refused until you "
            "release them. Shared (default): they are warned before they edit."
        ),
    ] = False
    ttl_minutes: Annotated[
        int, Meta(ge=1, le=1440, description="Minutes the claim lasts (1 to 1440, i.e. 24 h).")
    ] = 60
    reason: Annotated[
        rules.Reason, Meta(description="Why, in a few words; shown to the others.")
    ] = ""


class ReleaseFilesArgs(Args):
    paths: Annotated[
        list[FilePathArg],
        Meta(max_length=rules.MAX_FILES, description="The paths or globs as you claimed them."),
    ] = []
    all: Annotated[bool, Meta(description="Release every claim you hold.")] = False


class FileStatusArgs(Args):
    path: Annotated[
        FilePathArg,
        Meta(description="A file, folder or glob, relative to your working directory."),
    ]


class SetStatusArgs(Args):
    note: Annotated[
        rules.Note,
        Meta(
            description='A short note shown beside your name, e.g. "away until 3pm"; "" clears it.',
        ),
    ]


def file_descriptions(server: str) -> dict[str, str]:
    return {
        "claim_files": (
            "Claim files you are about to work on, so other agent sessions know before they "
            "edit them: shared (they are warned) or exclusive (their edits and commits are "
            "refused). Paths or globs; the claim lasts ttl_minutes (default 60, at most 24 h) "
            "or until you release it or your session ends. A claim overlapping another "
            "session's exclusive claim is refused, naming who holds it. Your edits are "
            "tracked anyway: claim only what you need to keep to yourself."
        ),
        "release_files": "Release claims you made with claim_files (the paths, or all).",
        "file_status": (
            "Who else is editing a file (or anything under a folder or glob) or holds a "
            "claim on it, since when and why."
        ),
        "set_status": (
            'Set a short note shown beside your name in list_peers (e.g. "away until 3pm", '
            '"reviewing PR 12"); "" clears it. Whether you are working or idle is tracked '
            "by itself."
        ),
    }


FILE_TOOLS: dict[str, type[Args]] = {
    "claim_files": ClaimFilesArgs,
    "release_files": ReleaseFilesArgs,
    "file_status": FileStatusArgs,
    "set_status": SetStatusArgs,
}
TOOLS.update(FILE_TOOLS)
