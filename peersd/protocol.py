"""The wire protocol between peersd and its clients.

Every frame is a 4-byte big-endian length followed by a msgpack body. Bodies are
msgspec Structs in three tagged unions (field ``t``): what a client sends
(``ClientFrame``: the hello plus every request), what the daemon answers
(``Response``) and what it pushes unasked (``Event``). Requests carry an ``id`` the
answer repeats, so one connection can have many requests in flight while events
arrive on the same stream. ``docs/protocol.md`` is the prose version of this file. The
rules a field's value obeys are its type, from ``rules``.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta

from .errors import ClaudePeersError, PeersError
from .kinds import Context, Emoji, KindName, Snapshot, Subject, Typed
from .rules import (
    MAX_FILES,
    AbsolutePath,
    Branch,
    Category,
    ClaimTTL,
    DeadlineSeconds,
    DecisionKey,
    DecisionValue,
    EpochSeconds,
    FilePath,
    GroupName,
    HostLabel,
    LeaseSeconds,
    Limit,
    MachineId,
    MachineSecret,
    MessageId,
    MessageIds,
    Note,
    OptionList,
    OptionName,
    PathText,
    PatternList,
    PeerName,
    PeerRef,
    Pid,
    ProposalId,
    ProposalTitle,
    ProvenMachineId,
    Rationale,
    Reason,
    SearchText,
    Seq,
    SessionId,
    ShortText,
    Summary,
    TaskId,
    TaskText,
    TaskTitle,
    Threshold,
    Token,
    Tty,
    VoterList,
)

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change; hello and welcome must agree on it."""

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1024 * 1024

ClientKind = Literal[
    "claude-code", "codex", "gemini", "cursor", "copilot", "opencode", "antigravity", "cli", "other"
]
HOOK_CLIENTS = ("claude-code", "codex", "gemini", "cursor", "copilot", "opencode", "antigravity")
"""Client kinds whose sessions get mail by hook (``peers install <client>`` wires one)."""
Scope = Literal["machine", "directory", "repo", "all", "group", "network"]
"""``network``: this machine's peers and those of every federated machine (docs/federation.md)."""
ReceiveMode = Literal["push", "hook", "poll"]
DeliveryPath = Literal["channel", "hook", "wake", "wait", "check", "cli"]
MessageState = Literal["queued", "leased", "delivered", "expired"]
KillOutcome = Literal["terminated", "killed", "still_running", "already_gone"]
EventKind = Literal["mail", "receipts", "peers", "traffic", "overseer"]
PeerStatus = Literal["working", "idle", "waiting"]
Reach = str
"""How mail sent now reaches a peer (``coordination.reach``): ``push``, ``next_tool_call``,
``idle_wake``, ``codex_queue``, ``inbox``, ``next_prompt``, ``when_checked`` or ``gone``; a
plain string, so a newer daemon may name a new way (render shows an unknown one as it is)."""
WakeVia = Literal["codex queue", "inbox"]
WakeResult = Literal["queued", "failed", "skipped"]


class Frame(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame body: the ``t`` tag names its type."""


# --------------------------------------------------------------------------- values


class Wake(msgspec.Struct, omit_defaults=True):
    """What the daemon did to wake an idle session for its mail (``peersd.wake``)."""

    via: WakeVia
    outcome: WakeResult
    at: float
    reason: str = ""
    """Why it failed or was skipped; empty when queued."""


class Peer(msgspec.Struct, omit_defaults=True):
    """One agent session as the daemon knows it."""

    id: str
    name: str
    client: str
    state: Literal["active", "gone"]
    machine_id: str
    host: str
    cwd: str
    agent_pid: int
    agent_start: float
    registered_at: float
    last_seen: float
    receive: ReceiveMode
    summary: str = ""
    git_root: str | None = None
    branch: str | None = None
    tty: str | None = None
    session_id: str | None = None
    helper_pid: int | None = None
    pending: int = 0
    connected: bool = False
    gone_reason: str | None = None
    # Working on the same repository (docs/coordination.md): filled in by list_peers.
    status: PeerStatus | None = None
    """working (between a prompt and its Stop), idle, or waiting (idle, a wake armed)."""
    note: str = ""
    files: int = 0
    """Files this peer edited within ``activity_ttl``."""
    recent_files: list[str] = []
    """The most recent few of them, newest first, relative to their repository."""
    last_read: float | None = None
    """When the peer last acknowledged mail (any ``via``), if ever."""
    reach: Reach | None = None
    """In list_peers answers: how mail sent now would reach it."""
    wake: Wake | None = None
    """The last idle wake for its mail (list_peers; kept in the daemon's memory)."""
    group: str | None = None
    """Its isolation group (``peersd.groups``); None: no group."""


class Message(msgspec.Struct, omit_defaults=True):
    """One message with enough about its sender to render it for a model."""

    id: str
    sender: str
    sender_name: str
    recipient: str
    recipient_name: str
    text: str
    created: float
    state: MessageState
    expires_at: float
    reply_to: str | None = None
    delivered_at: float | None = None
    delivered_via: str | None = None
    attempts: int = 0
    sender_client: str = ""
    sender_cwd: str = ""
    sender_branch: str | None = None
    sender_host: str = ""
    # Typed requests, threads, reactions (docs/coordination.md "Typed requests"):
    typed: Typed | None = None
    """The kind and its fields, when the message is a typed request or answer."""
    snapshot: Snapshot | None = None
    """Its sender at send time: branch, uncommitted files, summary."""
    thread: str | None = None
    """The id of the root of its ``reply_to`` chain (its own id for a root)."""
    subject: str | None = None
    reactions: list[Reaction] = []
    """Reactions of its recipient (history and search answers)."""


class SentItem(msgspec.Struct):
    message_id: str
    to: str
    to_name: str
    # Delivery health: how the recipient gets this message now.
    reach: Reach = ""
    pending: int = 0
    """The recipient's undelivered mail, this message included."""
    last_read: float | None = None
    expires_at: float = 0.0


class MessageStatusItem(msgspec.Struct, omit_defaults=True):
    message_id: str
    found: bool
    state: MessageState | None = None
    to: str | None = None
    to_name: str | None = None
    created: float | None = None
    delivered_at: float | None = None
    delivered_via: str | None = None
    expires_at: float | None = None
    wake: Wake | None = None
    """The idle wake that told its recipient about it, if any (kept in memory)."""
    remote: str | None = None
    """Mail to another machine (federation): ``outbox for NODE`` (waiting for NATS) or
    ``published to NODE`` (in the mail stream; delivered once its receipt is back)."""
    kind: KindName | None = None
    answer: Answer | None = None
    """The latest reply to it (for an approval or verification request: the latest answer
    of the matching kind)."""
    reactions: list[Reaction] = []


class Reaction(msgspec.Struct, omit_defaults=True):
    """A one-glyph receipt its recipient put on a message (``react``)."""

    peer: str
    name: str
    emoji: str
    at: float


class Answer(msgspec.Struct, omit_defaults=True):
    """The reply that answers a message (``message_status``)."""

    message_id: str
    sender_name: str
    created: float
    kind: str | None = None
    verdict: str | None = None
    """approve / reject, or verified / failed, for the answer kinds."""
    preview: str = ""
    """The first 200 characters of its text."""


# --------------------------------------------------------------------------- client -> daemon


class Hello(Frame, tag="hello"):
    protocol: int
    client_version: ShortText
    client_kind: ShortText = "other"
    token: Token | None = None
    """Required over TCP when the daemon has a token; never sent over the local socket."""
    machine_id: ProvenMachineId | None = None
    """Required over TCP: the client's machine, which its peers belong to. Ignored locally."""
    machine_secret: MachineSecret | None = None
    """Required over TCP: the hub binds ``machine_id`` to the first secret it sees with it."""


A = TypeVar("A", bound="Frame")


class Request(Frame, Generic[A]):
    """Base of every request; ``id`` is chosen by the client and echoed back.

    The parameter is the frame that answers it (besides ``Error``): ``Send`` is a
    ``Request[Sent]``, so a client's ``call(Send(...))`` is typed ``Sent`` end to end and
    checked against ``ANSWERS`` at run time.
    """

    id: int


class Register(Request["PeerResult"], tag="register"):
    """Become (or become again) the peer for one agent session."""

    agent_pid: Pid
    agent_start: EpochSeconds
    client: ClientKind = "other"
    helper_pid: Pid | None = None
    session_id: SessionId | None = None
    cwd: PathText = ""
    git_root: PathText | None = None
    branch: Branch | None = None
    tty: Tty | None = None
    machine_id: MachineId = ""
    host: HostLabel = ""
    summary: Summary | None = None
    name: PeerName | None = None
    receive: ReceiveMode = "poll"
    group: GroupName | None = None
    """The session's group (setting ``group``, or its branch with ``auto_group``); None
    keeps the group the peer has (a new peer: none)."""


class Attach(Request["PeerResult"], tag="attach"):
    """Act as an already-registered peer: by session id, else by the caller's ancestry."""

    session_id: SessionId | None = None
    pid: Pid | None = None


class Heartbeat(Request["Ok"], tag="heartbeat"):
    pass


class Unregister(Request["Ok"], tag="unregister"):
    pass


class SetSummary(Request["PeerResult"], tag="set_summary"):
    summary: Summary


class SetName(Request["PeerResult"], tag="set_name"):
    name: PeerName


class Whoami(Request["PeerResult"], tag="whoami"):
    pass


class ListPeers(Request["PeerList"], tag="list_peers"):
    scope: Scope = "machine"
    include_gone: bool = False
    include_self: bool = False
    group: GroupName | None = None
    """Only peers of this group (within what the caller may see anyway)."""


class Send(Request["Sent"], tag="send"):
    to: PeerRef
    text: str
    """At most ``max_text`` UTF-8 bytes: a setting, so the handler checks it."""
    reply_to: MessageId | None = None
    typed: Typed | None = None
    """A typed request or answer (``kinds``): its kind and that kind's fields."""
    subject: Subject | None = None
    """A reply without one inherits the subject of the message it answers."""
    context: Context | None = None
    """The sender's working tree as its client saw it (for the snapshot)."""


class Broadcast(Request["BroadcastSent"], tag="broadcast"):
    scope: Scope
    text: str
    context: Context | None = None
    """As in ``send``: the sender's working tree, for each message's snapshot."""


class MessageStatus(Request["Statuses"], tag="message_status"):
    message_ids: MessageIds


class Claim(Request["Claimed"], tag="claim"):
    """Lease up to ``limit`` of my queued messages for one delivery attempt."""

    limit: Limit = 50
    lease_seconds: LeaseSeconds | None = None
    from_peer: PeerRef | None = None
    reply_to: MessageId | None = None


class Ack(Request["Acked"], tag="ack"):
    """The messages were put in front of the reader: mark exactly these delivered."""

    message_ids: Annotated[MessageIds, Meta(min_length=1)]
    via: DeliveryPath


class Release(Request["Released"], tag="release"):
    """Give leased messages back to the queue without delivering them."""

    message_ids: MessageIds


class History(Request["HistoryPage"], tag="history"):
    peer: PeerRef | None = None
    limit: Limit = 50
    before: Seq | None = None
    mine: bool = True
    state: MessageState | None = None
    direction: Literal["any", "in", "out"] = "any"
    thread: MessageId | None = None
    """Only the thread whose root is this message (any message of it names its root)."""


class Subscribe(Request["Ok"], tag="subscribe"):
    kinds: list[EventKind]


class Status(Request["DaemonStatus"], tag="status"):
    pass


class Shutdown(Request["Ok"], tag="shutdown"):
    pass


class Sweep(Request["SweepResult"], tag="sweep"):
    """Run the liveness and expiry sweep now instead of waiting for its timer."""


class Kill(Request["KillResult"], tag="kill"):
    """Terminate a peer's agent process (only if pid, start time and uid still match)."""

    target: PeerRef
    force: bool = False


class ForgetMachine(Request["Ok"], tag="forget_machine"):
    """Hub owner only (local socket): unbind a remote machine id from its secret."""

    machine_id: ProvenMachineId


class ListMachines(Request["MachineList"], tag="list_machines"):
    """Hub owner only (local socket): the remote machine ids bound to a secret, most
    recently seen first, so the owner can check them (``peers hub machines``)."""

    limit: Limit = 1000


class Audit(Request["AuditPage"], tag="audit"):
    """Recent audit records (kills, orphan cleanups), newest first."""

    limit: Limit = 50
    before: Seq | None = None
    action: ShortText | None = None


# --------------------------------------------------------------------------- who is touching what
# Requests of docs/coordination.md: file activity, claims, conflict checks, peer status.


class FileRef(msgspec.Struct, omit_defaults=True):
    """A file (or claim pattern) and the repository it lies in, as the client resolved them."""

    path: FilePath
    repo: FilePath | None = None


FileList = Annotated[list[FileRef], Meta(max_length=MAX_FILES)]


class TouchFiles(Request["Ok"], tag="touch_files"):
    """I edited these files (a PostToolUse hook): they are active for me until
    ``activity_ttl`` after now."""

    files: FileList


class CheckEdit(Request["EditCheck"], tag="check_edit"):
    """I am about to edit these files (PreToolUse, or a commit): who else holds them?"""

    files: FileList
    record: bool = True
    """Also count them as edited by me, unless the answer is deny."""
    notify: bool = True
    """Tell each holder (mail, at most once per file and pair every 10 minutes)."""
    attach: bool = False
    """On a connection not bound to a peer: act as the caller's session, found as ``attach``
    finds it (``session_id``, else the process ancestry), or as nobody if there is none
    (then nothing is recorded and nobody told). One round trip for ``peers-hook``."""
    session_id: SessionId | None = None


class ClaimFiles(Request["FilesClaimed"], tag="claim_files"):
    patterns: Annotated[list[FileRef], Meta(min_length=1, max_length=MAX_FILES)]
    exclusive: bool = False
    ttl_seconds: ClaimTTL = 3600.0
    reason: Reason = ""


class ReleaseFiles(Request["FilesReleased"], tag="release_files"):
    patterns: PatternList = []
    all: bool = False


class FileStatus(Request["FileStatuses"], tag="file_status"):
    paths: Annotated[list[FilePath], Meta(min_length=1, max_length=MAX_FILES)]


class ListFiles(Request["FileListing"], tag="list_files"):
    repo: FilePath | None = None


class WakeRoute(msgspec.Struct, omit_defaults=True):
    """How the daemon can wake this session when it is idle (``peers-hook`` at Stop)."""

    thread: SessionId | None = None
    """The Codex thread id (the hook's ``session_id``)."""
    codex_bin: AbsolutePath | None = None
    """The ``codex`` on the PATH the session's hooks run with."""
    codex_home: AbsolutePath | None = None
    """The session's ``CODEX_HOME``, when set."""
    inbox: AbsolutePath | None = None
    """Claude Code's inbox socket (``CLAUDE_CODE_MESSAGING_SOCKET``)."""
    inbox_token: Token | None = None
    """Its ``CLAUDE_CODE_MESSAGING_TOKEN``."""


class SetStatus(Request["PeerResult"], tag="set_status"):
    state: PeerStatus | None = None
    note: Note | None = None
    wake: WakeRoute | None = None


# --------------------------------------------------------------------------- shared work state
# Requests of docs/coordination.md "Tasks" and "Decisions board": durable tasks with a
# history, and decisions kept with every earlier version. Every change is announced as
# ordinary mail (no events of their own), so it reaches a session however mail does.

TaskState = Literal["open", "claimed", "done", "cancelled"]
TaskScope = Literal["machine", "directory", "repo"]
"""Who may take an unassigned task: peers on the creator's machine, in its directory, or in
its repository (its directory when it is not in one). A plain Literal: a scope such as
``group`` is one more value here and one more branch in ``tasks.in_scope``."""
ListScope = Literal["machine", "directory", "repo", "all"]


class CreateTask(Request["TaskResult"], tag="create_task"):
    title: TaskTitle
    description: TaskText = ""
    assignee: PeerRef | None = None
    """A name, ``name@host`` or id; None: open to anyone in ``scope``."""
    scope: TaskScope = "repo"


class UpdateTask(Request["TaskResult"], tag="update_task"):
    """Change one task: its state, its assignee, and/or add a note; the result with done
    or cancelled. At least one of ``state``, ``assignee``, ``note`` is given."""

    task: TaskId
    state: TaskState | None = None
    note: TaskText | None = None
    result: TaskText | None = None
    assignee: PeerRef | None = None


class ListTasks(Request["TaskList"], tag="list_tasks"):
    mine: bool = False
    """Only tasks I created or am assigned."""
    state: TaskState | None = None
    """None: open and claimed ones (unless ``final``)."""
    final: bool = False
    """With ``state`` None: done and cancelled ones too."""
    scope: ListScope = "machine"
    limit: Limit = 200


class TaskInfo(Request["TaskResult"], tag="task_info"):
    """One task with its whole history."""

    task: TaskId


class PostDecision(Request["DecisionResult"], tag="post_decision"):
    key: DecisionKey
    value: DecisionValue
    rationale: Rationale
    category: Category | None = None
    """None: the current version's category, if any."""


class RevokeDecision(Request["DecisionResult"], tag="revoke_decision"):
    key: DecisionKey
    reason: Rationale


class QueryDecisions(Request["DecisionList"], tag="query_decisions"):
    """Decisions of the caller's repository (directory when not in one), or ``everywhere``."""

    key: DecisionKey | None = None
    category: Category | None = None
    text: SearchText | None = None
    """Case-insensitive substring of the key, value, rationale or category."""
    revoked: bool = False
    """Include revoked decisions."""
    history: bool = False
    """Each with its earlier versions."""
    everywhere: bool = False
    limit: Limit = 200


# ------------------------------------------------------------------ groups, proposals, report
# docs/coordination.md: isolation groups, proposals with votes, the period report.


class SetGroup(Request["PeerResult"], tag="set_group"):
    """Join a group (``group``), or leave the one the caller is in (None)."""

    group: GroupName | None = None


class Propose(Request["ProposalResult"], tag="propose"):
    """Put a question to a set of voters: ``voters`` (names or ids) or a ``scope``."""

    title: ProposalTitle
    options: OptionList = msgspec.field(default_factory=lambda: ["approve", "reject"])
    voters: VoterList = []
    scope: Scope | None = None
    threshold: Threshold = "majority"
    deadline_seconds: DeadlineSeconds | None = None


class Vote(Request["ProposalResult"], tag="vote"):
    proposal_id: ProposalId
    vote: OptionName
    reason: Reason = ""


ProposalState = Literal["open", "decided", "failed", "expired"]


class ListProposals(Request["ProposalList"], tag="list_proposals"):
    """Proposals newest first: the caller's own and those it votes on when ``mine``."""

    state: ProposalState | None = None
    mine: bool = False
    limit: Limit = 50


class MakeReport(Request["Report"], tag="report"):
    """What happened between ``since`` and ``until`` (default now), section by section."""

    since: EpochSeconds
    until: EpochSeconds | None = None


# --------------------------------------------------------------------------- reactions and search
# Message-level features of docs/coordination.md: a one-glyph receipt on a message, and
# full-text search (SQLite FTS5) over the mail a peer sent or received.


class React(Request["Ok"], tag="react"):
    """Put a one-glyph receipt on a message sent to me (again: no change)."""

    message_id: MessageId
    emoji: Emoji


class Search(Request["SearchResults"], tag="search"):
    """Messages matching an FTS5 query, best first, with a snippet each."""

    query: Annotated[str, Meta(min_length=1, max_length=500)]
    peer: PeerRef | None = None
    """Only mail to or from this peer."""
    since: EpochSeconds | None = None
    limit: Limit = 20
    mine: bool = True
    """Only the caller's own mail; false (local connections only) searches all mail."""


class SearchHit(msgspec.Struct, omit_defaults=True):
    message: Message
    """The message, its text cut to ``SEARCH_TEXT`` characters."""
    snippet: str
    """The matching passage, matches between [ and ]."""
    rank: float
    """bm25 rank: lower is better."""


class SearchResults(Frame, tag="search_results"):
    id: int
    hits: list[SearchHit]
    unindexed: int = 0
    """The newest messages (at most this many) not indexed yet, so not searched: the
    background indexes them in a moment. 0: the search saw every committed message."""


# --------------------------------------------------------------------------- overseer's dashboard
# What `peers dashboard` (peers_cli/dashboard) needs beyond the rest (docs/protocol.md §13):
# two actions the machine's owner takes on another session, and the events of kind
# "overseer" (local socket only): every message whole as it is stored, and doorbells for a
# change to a peer (status, summary, files, claims), to messages (state, reactions) or to
# the audit log. Like every event, sent only after the change is committed.


class RenamePeer(Request["PeerResult"], tag="rename_peer"):
    """The machine's owner renames another session (local socket, a person's CLI only:
    the rule of ``kill`` with ``kill_enabled`` off)."""

    target: PeerRef
    name: PeerName


class ReleaseClaims(Request["FilesReleased"], tag="release_claims"):
    """The machine's owner drops another session's claims (a stale one): by pattern, or all."""

    target: PeerRef
    patterns: PatternList = []
    all: bool = False


class MessagePosted(Frame, tag="ev_message"):
    """A message was stored (sent, or one copy of a broadcast), with its whole text."""

    message: Message


PeerChange = Literal["summary", "status", "files", "claims", "group"]


class PeerChanged(Frame, tag="ev_peer_changed"):
    """A doorbell: something ``list_peers`` or ``list_files`` shows changed for a peer."""

    what: PeerChange
    peer_id: str | None = None
    """The peer, when the change came from a connection bound to it (a hook's one-shot
    ``check_edit`` with ``attach`` says only that some peer's files changed)."""


WorkChange = Literal["tasks", "decisions", "proposals"]


class WorkChanged(Frame, tag="ev_work"):
    """A doorbell: a task, decision or proposal was made or changed (``list_tasks``,
    ``query_decisions`` or ``list_proposals`` shows something new)."""

    what: WorkChange


MessageChange = Literal["leased", "queued", "delivered", "expired", "reactions"]


class MessageChanged(Frame, tag="ev_message_changed"):
    """A doorbell: stored messages changed as ``message_status`` shows them: leased by a
    claim, queued again (released, a lapsed lease, inherited by a new holder of the name),
    delivered, expired, or reacted to."""

    what: MessageChange
    message_ids: list[str]


class AuditAdded(Frame, tag="ev_audit"):
    """A doorbell: the audit record ``seq`` was written or its outcome filled in."""

    seq: int


OVERSEER_REQUESTS: tuple[type[Request[Any]], ...] = (RenamePeer, ReleaseClaims)


REQUEST_TYPES: tuple[type[Request[Any]], ...] = (
    Register,
    Attach,
    Heartbeat,
    Unregister,
    SetSummary,
    SetName,
    Whoami,
    ListPeers,
    Send,
    Broadcast,
    MessageStatus,
    Claim,
    Ack,
    Release,
    History,
    Subscribe,
    Status,
    Shutdown,
    Sweep,
    Kill,
    Audit,
    ForgetMachine,
    ListMachines,
    TouchFiles,
    CheckEdit,
    ClaimFiles,
    ReleaseFiles,
    FileStatus,
    ListFiles,
    SetStatus,
    CreateTask,
    UpdateTask,
    ListTasks,
    TaskInfo,
    PostDecision,
    RevokeDecision,
    QueryDecisions,
    SetGroup,
    Propose,
    Vote,
    ListProposals,
    MakeReport,
    React,
    Search,
    *OVERSEER_REQUESTS,
)

ClientFrame = (
    Hello
    | Register
    | Attach
    | Heartbeat
    | Unregister
    | SetSummary
    | SetName
    | Whoami
    | ListPeers
    | Send
    | Broadcast
    | MessageStatus
    | Claim
    | Ack
    | Release
    | History
    | Subscribe
    | Status
    | Shutdown
    | Sweep
    | Kill
    | Audit
    | ForgetMachine
    | ListMachines
    | TouchFiles
    | CheckEdit
    | ClaimFiles
    | ReleaseFiles
    | FileStatus
    | ListFiles
    | SetStatus
    | CreateTask
    | UpdateTask
    | ListTasks
    | TaskInfo
    | PostDecision
    | RevokeDecision
    | QueryDecisions
    | SetGroup
    | Propose
    | Vote
    | ListProposals
    | MakeReport
    | React
    | Search
    | RenamePeer
    | ReleaseClaims
)

# --------------------------------------------------------------------------- daemon -> client


class Welcome(Frame, tag="welcome"):
    protocol: int
    daemon_version: str
    daemon_pid: int
    machine_id: str
    host: str
    conn_id: int


class Error(Frame, tag="error"):
    """A typed failure. ``id`` is None when the frame could not be tied to a request."""

    code: str
    """One of ``errors.CODES`` when this daemon sends it (tests check every code it can
    send). Decoded as any string: a newer daemon may send a code this client does not know
    yet, which reaches the caller as a ``PeersError`` with that code and the message."""
    message: str
    id: int | None = None
    candidates: list[str] = []

    @classmethod
    def of(cls, e: PeersError, req_id: int | None = None) -> Error:
        """The frame for a ``PeersError``, answering ``req_id``."""
        return cls(code=e.code, message=e.message, id=req_id, candidates=e.candidates)


class Ok(Frame, tag="ok"):
    id: int


class PeerResult(Frame, tag="peer"):
    id: int
    peer: Peer
    inherited: int = 0


class PeerList(Frame, tag="peers"):
    id: int
    peers: list[Peer]
    omitted: int = 0
    """Peers in scope left out (the last in order) to keep the answer inside a frame."""


class Sent(Frame, tag="sent"):
    id: int
    message_id: str
    to: str
    to_name: str
    reach: Reach = ""
    """Delivery health, as in ``SentItem``."""
    pending: int = 0
    last_read: float | None = None
    expires_at: float = 0.0


class BroadcastSent(Frame, tag="broadcast_sent"):
    id: int
    sent: list[SentItem]
    skipped: list[str] = []
    """Peers in scope that got nothing, each as "name: reason"."""


class Statuses(Frame, tag="statuses"):
    id: int
    items: list[MessageStatusItem]


class Claimed(Frame, tag="claimed"):
    id: int
    lease_until: float
    messages: list[Message]


class Acked(Frame, tag="acked"):
    id: int
    acked: list[str]
    already: list[str] = []


class Released(Frame, tag="released"):
    id: int
    released: list[str]


class HistoryPage(Frame, tag="history_page"):
    id: int
    messages: list[Message]
    next_before: int | None = None


# --------------------------------------------------------------------------- federation
# Answers about the link to other machines over NATS (docs/federation.md). Requests are
# the existing ones: list_peers(scope="network"), send to name@host, message_status.


class FederationState(msgspec.Struct, omit_defaults=True):
    """In ``status`` answers when ``nats_url`` is set."""

    node: str
    """This machine's node name in NATS (its host label as a subject token)."""
    servers: list[str]
    connected: bool
    outbox: int = 0
    """Frames (mail, receipts) stored here that are not in the stream yet."""
    machines: int = 0
    """Other machines in the directory now."""
    published: int = 0
    received: int = 0
    """Frames published and received since the daemon started."""
    error: str = ""
    """Why it is not connected, when it is not."""


class DaemonStatus(Frame, tag="daemon_status"):
    id: int
    version: str
    protocol: int
    pid: int
    started_at: float
    socket: str
    db: str
    machine_id: str
    host: str
    supervisor: str
    peers_active: int
    peers_gone: int
    connections: int
    messages: dict[str, int]
    schema: int = 0
    last_sweep_ms: float = 0.0
    adopted_socket: bool = False
    warnings: list[str] = []
    """Configuration that works but is risky, e.g. a TCP listener without a token."""
    federation: FederationState | None = None
    """The NATS link, when federation is on."""


class KillResult(Frame, tag="kill_result"):
    id: int
    peer_id: str
    name: str
    outcome: KillOutcome
    detail: str


class AuditRecord(msgspec.Struct, omit_defaults=True):
    """Who did what to whom, when: one row of the daemon's audit log."""

    seq: int
    at: float
    actor: str
    action: str
    detail: str
    target: str | None = None
    target_name: str | None = None


class AuditPage(Frame, tag="audit_page"):
    id: int
    records: list[AuditRecord]
    next_before: int | None = None


class MachineRecord(msgspec.Struct, omit_defaults=True):
    """A remote machine id bound to a secret on this hub."""

    machine_id: str
    first_seen: float
    """When its first hello bound it (the secret it presented then is the one it keeps)."""
    last_seen: float
    """Its latest hello."""
    host: str = ""
    """The host label of its most recently seen peer, if it has one."""
    active_peers: int = 0


class MachineList(Frame, tag="machines"):
    id: int
    machines: list[MachineRecord]
    total: int
    """Machines bound in all (more than listed when over ``limit``)."""


class SweepResult(Frame, tag="sweep_result"):
    id: int
    gone: list[str]
    requeued: int
    expired: int
    duration_ms: float


class FileHolder(msgspec.Struct, omit_defaults=True):
    """Another peer's hold on a file: its recent edits (``active``) or a ``claim``."""

    peer_id: str
    name: str
    kind: Literal["active", "claim"]
    path: str
    """The file (active) or the claim's pattern, absolute."""
    since: float
    """First edit of this stretch of activity, or when the claim was made."""
    until: float
    """When the activity fades (last edit + ``activity_ttl``), or the claim expires."""
    repo: str | None = None
    target: str | None = None
    """The path asked about that this hold concerns (answers to a check or a status)."""
    last: float | None = None
    """Last edit (active)."""
    exclusive: bool = False
    reason: str = ""
    client: str = ""
    status: PeerStatus | None = None


class EditCheck(Frame, tag="edit_check"):
    id: int
    decision: Literal["allow", "warn", "deny"]
    holders: list[FileHolder] = []


class FilesClaimed(Frame, tag="files_claimed"):
    id: int
    claims: list[FileHolder]
    """The caller's claims as stored now (one per pattern asked for)."""
    holders: list[FileHolder] = []
    """Other peers active on files the new claims cover (the claims stand)."""


class FilesReleased(Frame, tag="files_released"):
    id: int
    released: list[str]
    not_held: list[str] = []


class FileStatusItem(msgspec.Struct, omit_defaults=True):
    path: str
    holders: list[FileHolder] = []


class FileStatuses(Frame, tag="file_statuses"):
    id: int
    items: list[FileStatusItem]


class FileListing(Frame, tag="file_list"):
    id: int
    holders: list[FileHolder]


# Shared work state (docs/coordination.md): tasks and decisions as answers carry them.


class TaskEvent(msgspec.Struct, omit_defaults=True):
    """One entry of a task's history: who did what, when, and the state after it."""

    at: float
    actor: str
    actor_name: str
    what: str
    """created, assigned, claimed, released, done, cancelled, note, passed, reopened."""
    state: TaskState
    assignee_name: str | None = None
    text: str = ""
    """The note, result or reason."""


class Task(msgspec.Struct, omit_defaults=True):
    id: str
    """``t-`` and a number."""
    title: str
    state: TaskState
    scope: TaskScope
    creator: str
    creator_name: str
    created: float
    updated: float
    cwd: str
    """The creator's directory when it made the task (the ``directory`` scope)."""
    description: str = ""
    repo: str | None = None
    """The creator's repository then (the ``repo`` scope)."""
    assignee: str | None = None
    assignee_name: str | None = None
    result: str = ""
    history: list[TaskEvent] = []
    """Only in ``task_info`` answers and the answers to changes: the last entries, oldest
    first, as many as fit (at most ``workstate.HISTORY_SHOWN``)."""
    history_total: int = 0
    """With ``history``: how many entries the task has in all."""


class TaskResult(Frame, tag="task"):
    id: int
    task: Task
    notified: list[str] = []
    """Names of the peers this change was mailed to."""
    skipped: list[str] = []
    """Peers not mailed, each as "name: reason" (a full queue)."""


class TaskList(Frame, tag="tasks"):
    id: int
    tasks: list[Task]
    """Each with ``description`` and ``result`` cut to ``tasks.LISTING_TEXT`` characters."""
    omitted: int = 0
    """Tasks found but left out (the oldest) to keep the answer inside a frame."""


class DecisionVersion(msgspec.Struct, omit_defaults=True):
    version: int
    value: str
    rationale: str
    state: Literal["active", "revoked"]
    by: str
    by_name: str
    at: float
    category: str | None = None


class Decision(msgspec.Struct, omit_defaults=True):
    key: str
    value: str
    rationale: str
    """Why (or, once revoked, why it was revoked)."""
    state: Literal["active", "revoked"]
    version: int
    by: str
    by_name: str
    at: float
    place: str
    """The repository (or directory) the decision belongs to."""
    category: str | None = None
    group: str | None = None
    """The isolation group whose board it is on (its author's when posted); None: no group."""
    history: list[DecisionVersion] = []
    """Earlier versions, newest first (with ``history``)."""


class DecisionResult(Frame, tag="decision"):
    id: int
    decision: Decision
    notified: list[str] = []
    skipped: list[str] = []


class DecisionList(Frame, tag="decisions"):
    id: int
    decisions: list[Decision]


# Groups, proposals, report (docs/coordination.md).


class Ballot(msgspec.Struct, omit_defaults=True):
    """One voter of a proposal and, once cast, its vote."""

    voter: str
    voter_name: str
    vote: str | None = None
    reason: str = ""
    at: float | None = None


class Proposal(msgspec.Struct, omit_defaults=True):
    """A question put to voters; ``required`` votes for one option decide it."""

    id: int
    title: str
    proposer: str
    proposer_name: str
    options: list[str]
    threshold: str
    required: int
    """Votes one option needs, worked out from ``threshold`` and the number of voters."""
    created: float
    state: ProposalState
    deadline: float | None = None
    outcome: str | None = None
    """The option that reached ``required`` (state ``decided``)."""
    resolved_at: float | None = None
    group: str | None = None
    """The proposer's group when it was made."""
    operator: bool = False
    """Made by the operator (a CLI peer in no group): its voters may be in any groups, so
    only they, the proposer and whoever sees everyone see it; a voter in a group the
    viewer may not see is shown as ``groups.HIDDEN_NAME`` with ``voter`` empty."""
    ballots: list[Ballot] = []
    tally: dict[str, int] = {}
    """Votes cast per option (every option present)."""


class ProposalResult(Frame, tag="proposal"):
    id: int
    proposal: Proposal


class ProposalList(Frame, tag="proposals"):
    id: int
    proposals: list[Proposal]


class ReportPeer(msgspec.Struct, omit_defaults=True):
    """A peer that took part in the period: active in it, or sent or received mail."""

    peer_id: str
    name: str
    client: str
    state: str
    sent: int = 0
    received: int = 0
    group: str | None = None
    summary: str = ""


class PairCount(msgspec.Struct):
    """Messages from one peer to another in the period."""

    sender: str
    sender_name: str
    recipient: str
    recipient_name: str
    count: int
    delivered: int
    """Of them, delivered by now."""


class ReportClaim(msgspec.Struct, omit_defaults=True):
    """A file claim made in the period, or live during it (claims end with their peer)."""

    peer_id: str
    name: str
    pattern: str
    repo: str
    exclusive: bool
    created: float
    expires_at: float
    reason: str = ""


class Report(Frame, tag="report_data"):
    """One field per section (``peersd.report.SECTIONS``)."""

    id: int
    since: float
    until: float
    messages: int = 0
    """Messages sent in the period."""
    peers: list[ReportPeer] = []
    pairs: list[PairCount] = []
    tasks: list[Task] = []
    """Tasks made or changed in the period, in their state now."""
    decisions: list[Decision] = []
    """Decision versions posted (or revoked) in the period, oldest first."""
    proposals: list[Proposal] = []
    claims: list[ReportClaim] = []
    kills: list[AuditRecord] = []
    cut: dict[str, str] = {}
    """What was left out, by section: rows past a cap, mail past the counted latest, rows
    dropped so the answer fits in a frame, shortened texts. Empty when nothing was."""


Response = (
    Welcome
    | Error
    | Ok
    | PeerResult
    | PeerList
    | Sent
    | BroadcastSent
    | Statuses
    | Claimed
    | Acked
    | Released
    | HistoryPage
    | DaemonStatus
    | SweepResult
    | KillResult
    | AuditPage
    | MachineList
    | EditCheck
    | FilesClaimed
    | FilesReleased
    | FileStatuses
    | FileListing
    | TaskResult
    | TaskList
    | DecisionResult
    | DecisionList
    | ProposalResult
    | ProposalList
    | Report
    | SearchResults
)


def _answer(req: type[Request[Any]]) -> type[Frame]:
    (ref,) = get_args(req.__orig_bases__[0])  # type: ignore[attr-defined]
    found = globals()[getattr(ref, "__forward_arg__", ref)]
    assert isinstance(found, type) and issubclass(found, Frame)
    return found


ANSWERS: dict[type[Request[Any]], type[Frame]] = {req: _answer(req) for req in REQUEST_TYPES}
"""Each request type -> the frame that answers it (its type parameter), for the checks."""

# --------------------------------------------------------------------------- events


class MailEvent(Frame, tag="ev_mail"):
    """A doorbell: mail is waiting for the subscriber's peer (new, inherited, released,
    or back after a lease). It carries no text: a receiver claims what waits, and shows
    and acknowledges it (every receiver does, so the body was never used)."""

    peer_id: str
    """The recipient: the peer the subscribing connection is bound to."""
    message_id: str
    """The message that became waiting (one event per message)."""


class ReceiptEvent(Frame, tag="ev_receipt"):
    """Mail the subscriber sent was delivered or expired."""

    message_id: str
    to: str
    to_name: str
    state: MessageState
    at: float
    via: str | None = None


class PeerJoined(Frame, tag="ev_peer_joined"):
    peer: Peer


class PeerLeft(Frame, tag="ev_peer_left"):
    peer_id: str
    name: str
    reason: str


class PeerRenamed(Frame, tag="ev_peer_renamed"):
    peer_id: str
    old: str
    new: str


class TrafficEvent(Frame, tag="ev_traffic"):
    """Any message sent or delivered on this daemon (for ``peers watch``)."""

    what: Literal["sent", "delivered", "expired"]
    message_id: str
    sender_name: str
    recipient_name: str
    at: float
    preview: str = ""
    via: str | None = None


class Escalation(Frame, tag="ev_escalation"):
    """Mail has waited longer than ``escalate_after`` for a session (to "peers")."""

    peer_id: str
    name: str
    waiting: int
    oldest_age: float


Event = (
    MailEvent
    | ReceiptEvent
    | PeerJoined
    | PeerLeft
    | PeerRenamed
    | TrafficEvent
    | Escalation
    | MessagePosted
    | WorkChanged
    | PeerChanged
    | MessageChanged
    | AuditAdded
)
ServerFrame = Response | Event
EVENT_TYPES = (
    MailEvent,
    ReceiptEvent,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    TrafficEvent,
    Escalation,
    MessagePosted,
    WorkChanged,
    PeerChanged,
    MessageChanged,
    AuditAdded,
)

# --------------------------------------------------------------------------- codecs


class FrameTooLarge(ClaudePeersError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


_encoder = msgspec.msgpack.Encoder()
client_decoder = msgspec.msgpack.Decoder(ClientFrame)
server_decoder = msgspec.msgpack.Decoder(ServerFrame)


def encode(frame: Frame) -> bytes:
    """The frame with its length prefix, ready to write."""
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes, limit: int) -> int:
    """Length announced by a 4-byte header, refused before any body is read if too big."""
    size: int = HEADER.unpack(header)[0]
    if size > limit:
        raise FrameTooLarge(size, limit)
    return size


class FrameBuffer:
    """Accumulates stream bytes and yields complete frame bodies.

    An oversized length header stops parsing: the frames before it are still
    returned, and ``error`` is set so the caller can answer them and then hang up.
    ``first_limit``, when given, bounds the first frame instead (a hello is small:
    a client that has not proved anything yet cannot make the daemon read a megabyte).
    """

    __slots__ = ("_buf", "error", "first_limit", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_FRAME, first_limit: int | None = None) -> None:
        self._buf = bytearray()
        self.limit = limit
        self.first_limit = first_limit
        self.error: FrameTooLarge | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        bodies: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            limit = self.limit if self.first_limit is None else self.first_limit
            try:
                size = frame_length(bytes(buf[pos : pos + 4]), limit)
            except FrameTooLarge as e:
                self.error = e
                break
            end = pos + 4 + size
            if end > n:
                break
            bodies.append(bytes(buf[pos + 4 : end]))
            self.first_limit = None
            pos = end
        if pos:
            del buf[:pos]
        return bodies

    @property
    def pending(self) -> int:
        return len(self._buf)
