"""The wire protocol between peersd and its clients.

Every frame is a 4-byte big-endian length followed by a msgpack body. Bodies are
msgspec Structs in three tagged unions (field ``t``): what a client sends
(``ClientFrame``: the hello plus every request), what the daemon answers
(``Response``) and what it pushes unasked (``Event``). Requests carry an ``id`` the
answer repeats, so one connection can have many requests in flight while events
arrive on the same stream. ``docs/protocol.md`` is the prose version of this file.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .errors import PeersError

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change; hello and welcome must agree on it."""

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1024 * 1024

ClientKind = Literal["claude-code", "codex", "cli", "other"]
Scope = Literal["machine", "directory", "repo", "all"]
ReceiveMode = Literal["push", "hook", "poll"]
DeliveryPath = Literal["channel", "hook", "wake", "wait", "check", "cli"]
MessageState = Literal["queued", "leased", "delivered", "expired"]
EventKind = Literal["mail", "receipts", "peers", "traffic"]
PeerStatus = Literal["working", "idle", "waiting"]


class Frame(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame body: the ``t`` tag names its type."""


# --------------------------------------------------------------------------- values


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


class SentItem(msgspec.Struct):
    message_id: str
    to: str
    to_name: str


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


# --------------------------------------------------------------------------- client -> daemon


class Hello(Frame, tag="hello"):
    protocol: int
    client_version: str
    client_kind: str = "other"
    token: str | None = None
    """Required over TCP when the daemon has a token; never sent over the local socket."""


class Request(Frame):
    """Base of every request; ``id`` is chosen by the client and echoed back."""

    id: int


class Register(Request, tag="register"):
    """Become (or become again) the peer for one agent session."""

    agent_pid: int
    agent_start: float
    client: ClientKind = "other"
    helper_pid: int | None = None
    session_id: str | None = None
    cwd: str = ""
    git_root: str | None = None
    branch: str | None = None
    tty: str | None = None
    machine_id: str = ""
    host: str = ""
    summary: str | None = None
    name: str | None = None
    receive: ReceiveMode = "poll"


class Attach(Request, tag="attach"):
    """Act as an already-registered peer: by session id, else by the caller's ancestry."""

    session_id: str | None = None
    pid: int | None = None


class Heartbeat(Request, tag="heartbeat"):
    pass


class Unregister(Request, tag="unregister"):
    pass


class SetSummary(Request, tag="set_summary"):
    summary: str


class SetName(Request, tag="set_name"):
    name: str


class Whoami(Request, tag="whoami"):
    pass


class ListPeers(Request, tag="list_peers"):
    scope: Scope = "machine"
    include_gone: bool = False
    include_self: bool = False


class Send(Request, tag="send"):
    to: str
    text: str
    reply_to: str | None = None


class Broadcast(Request, tag="broadcast"):
    scope: Scope
    text: str


class MessageStatus(Request, tag="message_status"):
    message_ids: list[str]


class Claim(Request, tag="claim"):
    """Lease up to ``limit`` of my queued messages for one delivery attempt."""

    limit: int = 50
    lease_seconds: float | None = None
    from_peer: str | None = None
    reply_to: str | None = None


class Ack(Request, tag="ack"):
    """The messages were put in front of the reader: mark exactly these delivered."""

    message_ids: list[str]
    via: DeliveryPath


class Release(Request, tag="release"):
    """Give leased messages back to the queue without delivering them."""

    message_ids: list[str]


class History(Request, tag="history"):
    peer: str | None = None
    limit: int = 50
    before: int | None = None
    mine: bool = True
    state: MessageState | None = None
    direction: Literal["any", "in", "out"] = "any"


class Subscribe(Request, tag="subscribe"):
    kinds: list[EventKind]


class Status(Request, tag="status"):
    pass


class Shutdown(Request, tag="shutdown"):
    pass


class Sweep(Request, tag="sweep"):
    """Run the liveness and expiry sweep now instead of waiting for its timer."""


class Kill(Request, tag="kill"):
    """Terminate a peer's agent process (only if pid, start time and uid still match)."""

    target: str
    force: bool = False


class Audit(Request, tag="audit"):
    """Recent audit records (kills, orphan cleanups), newest first."""

    limit: int = 50
    before: int | None = None
    action: str | None = None


# --------------------------------------------------------------------------- who is touching what
# Requests of docs/coordination.md: file activity, claims, conflict checks, peer status.

MAX_FILES = 1000
"""Paths or patterns in one request; a client with more sends them in several."""

FilePath = Annotated[str, Meta(min_length=1, max_length=4096)]
"""An absolute, resolved path (or claim pattern) as text (``peersd.paths``)."""
PatternList = Annotated[list[FilePath], Meta(max_length=MAX_FILES)]
ClaimTTL = Annotated[float, Meta(gt=0, le=24 * 3600)]
Reason = Annotated[str, Meta(max_length=500)]
Note = Annotated[str, Meta(max_length=200)]


class FileRef(msgspec.Struct, omit_defaults=True):
    """A file (or claim pattern) and the repository it lies in, as the client resolved them."""

    path: FilePath
    repo: FilePath | None = None


FileList = Annotated[list[FileRef], Meta(max_length=MAX_FILES)]


class TouchFiles(Request, tag="touch_files"):
    """I edited these files (a PostToolUse hook): they are active for me until
    ``activity_ttl`` after now."""

    files: FileList


class CheckEdit(Request, tag="check_edit"):
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
    session_id: str | None = None


class ClaimFiles(Request, tag="claim_files"):
    patterns: Annotated[list[FileRef], Meta(min_length=1, max_length=MAX_FILES)]
    exclusive: bool = False
    ttl_seconds: ClaimTTL = 3600.0
    reason: Reason = ""


class ReleaseFiles(Request, tag="release_files"):
    patterns: PatternList = []
    all: bool = False


class FileStatus(Request, tag="file_status"):
    paths: Annotated[list[FilePath], Meta(min_length=1, max_length=MAX_FILES)]


class ListFiles(Request, tag="list_files"):
    repo: FilePath | None = None


class SetStatus(Request, tag="set_status"):
    state: PeerStatus | None = None
    note: Note | None = None


REQUEST_TYPES: tuple[type[Request], ...] = (
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
    TouchFiles,
    CheckEdit,
    ClaimFiles,
    ReleaseFiles,
    FileStatus,
    ListFiles,
    SetStatus,
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
    | TouchFiles
    | CheckEdit
    | ClaimFiles
    | ReleaseFiles
    | FileStatus
    | ListFiles
    | SetStatus
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


class Sent(Frame, tag="sent"):
    id: int
    message_id: str
    to: str
    to_name: str


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


class KillResult(Frame, tag="kill_result"):
    id: int
    peer_id: str
    name: str
    outcome: Literal["terminated", "killed", "still_running", "already_gone"]
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
    | EditCheck
    | FilesClaimed
    | FilesReleased
    | FileStatuses
    | FileListing
)

# --------------------------------------------------------------------------- events


class MailEvent(Frame, tag="ev_mail"):
    """Mail waiting for the subscriber: new, inherited, released, or back after a lease."""

    message: Message


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


Event = MailEvent | ReceiptEvent | PeerJoined | PeerLeft | PeerRenamed | TrafficEvent | Escalation
ServerFrame = Response | Event
EVENT_TYPES = (
    MailEvent,
    ReceiptEvent,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    TrafficEvent,
    Escalation,
)

# --------------------------------------------------------------------------- codecs


class FrameTooLarge(ValueError):
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
    (size,) = HEADER.unpack(header)
    if size > limit:
        raise FrameTooLarge(size, limit)
    return size


class FrameBuffer:
    """Accumulates stream bytes and yields complete frame bodies.

    An oversized length header stops parsing: the frames before it are still
    returned, and ``error`` is set so the caller can answer them and then hang up.
    """

    __slots__ = ("_buf", "error", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit
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
            try:
                size = frame_length(bytes(buf[pos : pos + 4]), self.limit)
            except FrameTooLarge as e:
                self.error = e
                break
            end = pos + 4 + size
            if end > n:
                break
            bodies.append(bytes(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return bodies

    @property
    def pending(self) -> int:
        return len(self._buf)
