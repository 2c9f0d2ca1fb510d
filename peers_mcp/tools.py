"""The MCP tools: their argument types (the schemas models see) and descriptions.

Names and descriptions are the contract with the models. Descriptions say what comes
back, what the scopes mean, and that replies go through this server's send_message
(models otherwise reach for a built-in messaging tool and the reply is lost).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

PeerRef = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        description='A peer: its name (e.g. "api"), name@host, or id (e.g. "p-1a2b3c4d").',
    ),
]
Scope = Annotated[
    Literal["machine", "directory", "repo"],
    Meta(
        description="machine: every session on this machine; directory: sessions in the same "
        "working directory as you; repo: sessions in the same git repository as you."
    ),
]
Text = Annotated[str, Meta(min_length=1, description="The message text (up to 32 KiB).")]
MessageId = Annotated[str, Meta(pattern=r"^m-[0-9a-f]{6}-[0-9]+$", description="A message id.")]


class Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every tool's arguments: unknown arguments are an error, not ignored."""


class ListPeersArgs(Args):
    scope: Scope = "machine"


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


class WaitForMessageArgs(Args):
    timeout_seconds: Annotated[
        float,
        Meta(gt=0, le=600, description="Give up after this many seconds (default 45)."),
    ] = 45.0
    from_peer: Annotated[
        str | None, Meta(description="Only a message from this peer (name or id).")
    ] = None
    reply_to: Annotated[MessageId | None, Meta(description="Only a reply to this message id.")] = (
        None
    )


class MessageHistoryArgs(Args):
    peer: Annotated[str | None, Meta(description="Only messages to or from this peer.")] = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 20


class SetSummaryArgs(Args):
    summary: Annotated[
        str,
        Meta(
            max_length=1000,
            description="One or two sentences on what you are working on, shown to peers.",
        ),
    ]


class SetNameArgs(Args):
    name: Annotated[
        str,
        Meta(
            pattern=r"^[A-Za-z0-9_-]{1,32}$",
            description="1-32 letters, digits, '-' or '_'; unique on this machine.",
        ),
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
            f"ones for context. Answer a message with {send} and its reply_to."
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
    """Validated arguments; msgspec's error names the field that is wrong."""
    return msgspec.convert(arguments or {}, TOOLS[name])


# --------------------------------------------------------------------------- who is touching what
# docs/coordination.md. The hooks record edits and warn before them by themselves; these
# tools are for saying so in advance (claims), asking, and a status note.

FilePathArg = Annotated[str, Meta(min_length=1, max_length=4096)]


class ClaimFilesArgs(Args):
    paths: Annotated[
        list[FilePathArg],
        Meta(
            min_length=1,
            max_length=1000,
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
        str, Meta(max_length=500, description="Why, in a few words; shown to the others.")
    ] = ""


class ReleaseFilesArgs(Args):
    paths: Annotated[
        list[FilePathArg],
        Meta(max_length=1000, description="The paths or globs as you claimed them."),
    ] = []
    all: Annotated[bool, Meta(description="Release every claim you hold.")] = False


class FileStatusArgs(Args):
    path: Annotated[
        FilePathArg,
        Meta(description="A file, folder or glob, relative to your working directory."),
    ]


class SetStatusArgs(Args):
    note: Annotated[
        str,
        Meta(
            max_length=200,
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
