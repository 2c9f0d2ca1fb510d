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

from peersd import kinds, rules
from peersd.errors import Code, PeersError


def _rule(t: Any) -> str:
    """The rule a protocol type states in words, capitalised for a schema."""
    text = rules.meta(t).description or ""
    return text[0].upper() + text[1:]


PeerRef = rules.PeerRef
Scope = Annotated[
    Literal["machine", "directory", "repo", "group"],
    Meta(
        description="machine: every session on this machine; directory: sessions in the same "
        "working directory as you; repo: sessions in the same git repository as you; group: "
        "sessions in your group (join_group), on any machine."
    ),
]
ListScope = Annotated[
    Literal["machine", "directory", "repo", "group", "network"],
    Meta(
        description="machine: every session on this machine; directory: sessions in the same "
        "working directory as you; repo: sessions in the same git repository as you; group: "
        "sessions in your group (join_group), on any machine; network: this machine's "
        "sessions and those of every federated machine (address them as name@host)."
    ),
]
Text = Annotated[str, Meta(min_length=1, description="The message text (up to 32 KiB).")]
MessageId = Annotated[rules.MessageId, Meta(description=_rule(rules.MessageId) + ".")]


class Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every tool's arguments: unknown arguments are an error, not ignored."""


class ListPeersArgs(Args):
    scope: ListScope = "machine"


def _for(*names: str) -> str:
    return "With kind=" + " or ".join(f'"{n}"' for n in names)


KindText = kinds.KindText
KindFiles = kinds.KindFiles


class SendMessageArgs(Args):
    to: PeerRef
    message: Text
    reply_to: Annotated[
        MessageId | None,
        Meta(description="Id of the message you are answering (as shown with the message)."),
    ] = None
    subject: Annotated[
        kinds.Subject | None,
        Meta(description="A short subject for a new thread (replies inherit it)."),
    ] = None
    # A typed request: ``kind`` and the fields that kind needs (all of them, no others).
    kind: Annotated[
        kinds.KindName | None,
        Meta(
            description="Make this a typed request, whose fields (the arguments below, each "
            "saying which kind needs it) are all required: question (expected_format), "
            "review_request (files, focus), handoff (done, remaining, files, decisions), "
            "context_share (summary), decision (rationale), approval_request (action, risk), "
            "verification_request (claim, evidence_needed, files). Answers: approval "
            "(verdict approve|reject, reason) replies to an approval_request, verification "
            "(verdict verified|failed, evidence) to a verification_request."
        ),
    ] = None
    expected_format: Annotated[
        KindText | None, Meta(description=_for("question") + ": the form of answer you want.")
    ] = None
    files: Annotated[
        KindFiles | None,
        Meta(description=_for("review_request", "handoff", "verification_request") + ": files."),
    ] = None
    focus: Annotated[
        KindText | None, Meta(description=_for("review_request") + ": what to look at.")
    ] = None
    done: Annotated[KindText | None, Meta(description=_for("handoff") + ": what is done.")] = None
    remaining: Annotated[
        KindText | None, Meta(description=_for("handoff") + ": what is left to do.")
    ] = None
    decisions: Annotated[
        KindText | None, Meta(description=_for("handoff") + ": decisions made so far.")
    ] = None
    summary: Annotated[
        KindText | None, Meta(description=_for("context_share") + ": the context, summed up.")
    ] = None
    rationale: Annotated[
        KindText | None, Meta(description=_for("decision") + ": why it was decided.")
    ] = None
    action: Annotated[
        KindText | None, Meta(description=_for("approval_request") + ": what you want to do.")
    ] = None
    risk: Annotated[
        KindText | None, Meta(description=_for("approval_request") + ": what could go wrong.")
    ] = None
    verdict: Annotated[
        Literal["approve", "reject", "verified", "failed"] | None,
        Meta(
            description=_for("approval")
            + ': "approve" or "reject"; '
            + _for("verification")
            + ': "verified" or "failed".'
        ),
    ] = None
    reason: Annotated[KindText | None, Meta(description=_for("approval") + ": why.")] = None
    claim: Annotated[
        KindText | None, Meta(description=_for("verification_request") + ": what to verify.")
    ] = None
    evidence_needed: Annotated[
        KindText | None,
        Meta(description=_for("verification_request") + ": what would prove it."),
    ] = None
    evidence: Annotated[
        KindText | None, Meta(description=_for("verification") + ": what you checked and saw.")
    ] = None

    def typed(self) -> kinds.Kind | None:
        """The typed request these arguments make (``kinds.build`` names what is wrong)."""
        given = {name: getattr(self, name) for name in kinds.ALL_FIELDS}
        if self.kind is None:
            extra = [name for name, v in given.items() if v is not None]
            if extra:
                raise PeersError(
                    Code.BAD_REQUEST,
                    f"{', '.join(extra)} belong{'s' if len(extra) == 1 else ''} to a typed "
                    "request: pass kind as well",
                )
            return None
        return kinds.build(self.kind, given)


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
    thread: Annotated[
        MessageId | None,
        Meta(description="Only this thread: the id of any message in it (its root and replies)."),
    ] = None


class ReactArgs(Args):
    message_id: Annotated[MessageId, Meta(description="A message sent to you.")]
    emoji: Annotated[kinds.Emoji, Meta(description="One emoji or symbol, e.g. 👍 ✓ 👀 (no text).")]


class SearchMessagesArgs(Args):
    query: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=500,
            description='Words to find (SQLite FTS5: "exact phrase", prefix*, AND/OR/NOT).',
        ),
    ]
    peer: Annotated[PeerRef | None, Meta(description="Only mail to or from this peer.")] = None
    since: Annotated[
        Annotated[str, Meta(max_length=40)] | None,
        Meta(description='Only mail sent since then: "30m", "4h", "2d" ago, or an ISO date/time.'),
    ] = None
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def since(text: str, now: float) -> float:
    """The time ``text`` names: an age ("30m", "4h", "2d", "1w") before ``now``, or an ISO
    8601 date or date and time (UTC unless it says otherwise)."""
    from datetime import UTC, datetime

    raw = text.strip()
    unit = _UNITS.get(raw[-1:].lower())
    if unit is not None:
        try:
            amount = float(raw[:-1])
        except ValueError:
            amount = -1.0
        if amount >= 0 and amount == amount and amount < 1e7:
            return now - amount * unit
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise PeersError(
            Code.BAD_REQUEST,
            f'since {text!r} is neither an age ("30m", "4h", "2d", "1w") nor an ISO date '
            '("2026-12-01" or "2026-12-01T09:30")',
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


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
            "messaging tools do not reach peers. For a request that needs a structured answer "
            "(a question, review, handoff, approval, verification) pass kind and its fields. "
            "Returns the message id; check it later with message_status."
        ),
        "broadcast": (
            "Send the same message to every other peer in a scope (machine, directory or "
            f"repo). Returns one message id per recipient. To answer one peer use {send}."
        ),
        "message_status": (
            "Whether messages you sent are still queued, were delivered (when, and by which "
            "path: channel, hook, wait, check, cli) or expired unread; for a request, its "
            "answer (e.g. an approval's verdict) and any reactions."
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
            "Recent messages you sent or received, newest first, with their delivery state, "
            "kind and reactions; thread= shows one conversation (a message and its replies)."
        ),
        "react": (
            "Acknowledge a message sent to you with one emoji (e.g. 👍 seen/agreed, 👀 looking, "
            "✅ done) instead of a reply: its sender sees it in message_status, not as new mail."
        ),
        "search_messages": (
            "Search the mail you sent or received (full text, best matches first, with the "
            "matching passage), e.g. to find what a peer said earlier about a topic."
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
        **work_descriptions(server),
        **group_descriptions(),
    }


TOOLS: dict[str, type[Args]] = {
    "list_peers": ListPeersArgs,
    "send_message": SendMessageArgs,
    "broadcast": BroadcastArgs,
    "message_status": MessageStatusArgs,
    "check_messages": CheckMessagesArgs,
    "wait_for_message": WaitForMessageArgs,
    "message_history": MessageHistoryArgs,
    "react": ReactArgs,
    "search_messages": SearchMessagesArgs,
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


# --------------------------------------------------------------------------- shared work state
# docs/coordination.md "Tasks" and "Decisions board": durable state every session can read.

TaskIdArg = Annotated[rules.TaskId, Meta(description=_rule(rules.TaskId) + ".")]
TaskStateArg = Literal["open", "claimed", "done", "cancelled"]


class CreateTaskArgs(Args):
    title: Annotated[rules.TaskTitle, Meta(description="What is to be done, in one line.")]
    description: Annotated[
        rules.TaskText, Meta(description="Details: what done looks like, files, constraints.")
    ] = ""
    assignee: Annotated[
        PeerRef | None,
        Meta(description="Who should do it (name, name@host or id); omit to leave it open."),
    ] = None
    scope: Annotated[
        Literal["machine", "directory", "repo"],
        Meta(
            description="Who may take it while unassigned: sessions on this machine, in "
            "your directory, or in your git repository (default)."
        ),
    ] = "repo"


class UpdateTaskArgs(Args):
    task_id: TaskIdArg
    state: Annotated[
        TaskStateArg | None,
        Meta(
            description="claimed: you start on it (also takes an unassigned task); done: "
            "finished (give result); open: hand it back; cancelled: it will not be done."
        ),
    ] = None
    note: Annotated[rules.TaskText | None, Meta(description="A note for its history.")] = None
    result: Annotated[
        rules.TaskText | None, Meta(description="With done or cancelled: what came of it.")
    ] = None
    assignee: Annotated[
        PeerRef | None, Meta(description="Reassign it to this peer (creator or assignee only).")
    ] = None


class ListTasksArgs(Args):
    task_id: Annotated[
        rules.TaskId | None, Meta(description="Show this one task with its whole history.")
    ] = None
    mine: Annotated[bool, Meta(description="Only tasks you created or are assigned.")] = False
    state: Annotated[
        TaskStateArg | Literal["all"] | None,
        Meta(
            description="Only tasks in this state; all: finished ones too. Default: open "
            "and claimed."
        ),
    ] = None
    scope: Annotated[
        Literal["machine", "directory", "repo", "all"],
        Meta(
            description="Tasks made on this machine, in your directory, in your repository "
            "(default), or everywhere."
        ),
    ] = "repo"


class PostDecisionArgs(Args):
    key: Annotated[rules.DecisionKey, Meta(description=_rule(rules.DecisionKey) + ".")]
    value: Annotated[rules.DecisionValue, Meta(description="What was decided.")]
    rationale: Annotated[rules.Rationale, Meta(description="Why, so others can follow it.")]
    category: Annotated[
        rules.Category | None, Meta(description="Optional grouping, e.g. arch, api, style.")
    ] = None


class RevokeDecisionArgs(Args):
    key: Annotated[rules.DecisionKey, Meta(description="The decision's key.")]
    reason: Annotated[rules.Rationale, Meta(description="Why it no longer holds.")]


class QueryDecisionsArgs(Args):
    key: Annotated[rules.DecisionKey | None, Meta(description="Exactly this key.")] = None
    category: Annotated[rules.Category | None, Meta(description="Only this category.")] = None
    text: Annotated[
        rules.SearchText | None,
        Meta(description="Words in the key, value, rationale or category (any case)."),
    ] = None
    include_revoked: bool = False
    history: Annotated[bool, Meta(description="Show earlier versions too.")] = False
    everywhere: Annotated[
        bool, Meta(description="Every repository's decisions, not just yours.")
    ] = False


def work_descriptions(server: str) -> dict[str, str]:
    return {
        "create_task": (
            "Record a task for another session (assignee) or for anyone in your repository to "
            "take. The assignee is mailed it; you are mailed when it is claimed, done or "
            "cancelled. Use it to hand off work instead of a plain message when you want to "
            "track it."
        ),
        "update_task": (
            "Change a task: claim it when you start (state=claimed), finish it (state=done "
            "with result), hand it back (open), cancel it, reassign it, or add a note. Call it "
            "when a task mail asks you to."
        ),
        "list_tasks": (
            "List tasks (default: open and claimed in your repository), or one task with its "
            "history (task_id). Check it before starting work others may have taken."
        ),
        "post_decision": (
            "Record a decision the sessions in your repository should follow (key, value, "
            "why). Posting a key again makes a new version; earlier ones are kept. The others "
            "are mailed it once."
        ),
        "revoke_decision": "Withdraw a decision by key, saying why; the others are mailed.",
        "query_decisions": (
            "Look up decisions in force in your repository (by key, category or words), with "
            "their history on request. Check before choosing something others may have "
            "decided."
        ),
    }


WORK_TOOLS: dict[str, type[Args]] = {
    "create_task": CreateTaskArgs,
    "update_task": UpdateTaskArgs,
    "list_tasks": ListTasksArgs,
    "post_decision": PostDecisionArgs,
    "revoke_decision": RevokeDecisionArgs,
    "query_decisions": QueryDecisionsArgs,
}
TOOLS.update(WORK_TOOLS)
# --------------------------------------------------------------------------- groups and proposals
# docs/coordination.md: isolation groups, and proposals put to a vote.


class JoinGroupArgs(Args):
    name: Annotated[rules.GroupName, Meta(description=_rule(rules.GroupName) + ".")]


class LeaveGroupArgs(Args):
    pass


class ProposeArgs(Args):
    title: Annotated[
        rules.ProposalTitle, Meta(description="The question or plan to decide, in one line.")
    ]
    options: Annotated[
        rules.OptionList,
        Meta(description="2 to 10 choices (default approve, reject)."),
    ] = msgspec.field(default_factory=lambda: ["approve", "reject"])
    voters: Annotated[
        list[PeerRef],
        Meta(max_length=100, description="Who votes: peer names or ids. Or give scope instead."),
    ] = []
    scope: Annotated[
        Literal["machine", "directory", "repo", "group"] | None,
        Meta(description="Who votes: every other session in this scope (instead of voters)."),
    ] = None
    threshold: Annotated[
        rules.Threshold,
        Meta(
            description="Votes one option needs: a count (2), a fraction of the voters (2/3, "
            "60%), majority (more than half, the default) or all."
        ),
    ] = "majority"
    deadline_minutes: (
        Annotated[
            float,
            Meta(gt=0, le=43200, description="Close it after this many minutes (default: never)."),
        ]
        | None
    ) = None


class VoteArgs(Args):
    proposal_id: Annotated[rules.ProposalId, Meta(description="The proposal's number.")]
    vote: Annotated[rules.OptionName, Meta(description="One of the proposal's options.")]
    reason: Annotated[rules.Reason, Meta(description="Why, in a sentence (optional).")] = ""


class ListProposalsArgs(Args):
    state: Literal["open", "decided", "failed", "expired"] | None = None
    mine: Annotated[
        bool, Meta(description="Only proposals you made or vote on (default: all you can see).")
    ] = False


def group_descriptions() -> dict[str, str]:
    return {
        "join_group": (
            "Join an isolation group: from then on you see and message only sessions in the "
            "same group (list_peers, send_message, broadcast). Use it when the user asks you "
            "to work in a group or team."
        ),
        "leave_group": "Leave your isolation group; you then see the sessions in no group.",
        "propose": (
            "Put a decision to a vote of other sessions (by name, or everyone in a scope): "
            "each voter gets it as a message and answers with vote. It is decided when one "
            "option reaches the threshold, fails when none can any more, or expires at the "
            "deadline; you and the voters are told the result."
        ),
        "vote": (
            "Vote on a proposal you were asked to vote on (proposal_id and one of its "
            "options). A vote is final."
        ),
        "list_proposals": "Proposals you can see, newest first, with their votes and result.",
    }


GROUP_TOOLS: dict[str, type[Args]] = {
    "join_group": JoinGroupArgs,
    "leave_group": LeaveGroupArgs,
    "propose": ProposeArgs,
    "vote": VoteArgs,
    "list_proposals": ListProposalsArgs,
}
TOOLS.update(GROUP_TOOLS)
