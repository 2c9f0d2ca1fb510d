"""Typed failures shared by the daemon and its clients: one root, one set of codes.

A ``PeersError`` raised anywhere in request handling becomes an ``Error`` frame
(code + human message); the client library raises it again on the other side, so
callers catch one exception type with a stable ``code`` to branch on. Every exception
the project raises on purpose derives from ``ClaudePeersError``.

Imports nothing: ``peersd.wire``, the hook's stdlib-only client, takes its codes from here.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only (never evaluated): typing is too heavy for the hook
    from typing import Final


class Code:
    """Every error code that appears on the wire (docs/protocol.md §15 says when)."""

    BAD_REQUEST: Final = "bad_request"
    BAD_FRAME: Final = "bad_frame"
    FRAME_TOO_LARGE: Final = "frame_too_large"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    HELLO_REQUIRED: Final = "hello_required"
    FORBIDDEN: Final = "forbidden"
    DISABLED: Final = "disabled"
    NOT_REGISTERED: Final = "not_registered"
    UNKNOWN_PEER: Final = "unknown_peer"
    UNKNOWN_MESSAGE: Final = "unknown_message"
    INVALID_NAME: Final = "invalid_name"
    NAME_TAKEN: Final = "name_taken"
    TOO_LARGE: Final = "too_large"
    RATE_LIMITED: Final = "rate_limited"
    QUEUE_FULL: Final = "queue_full"
    CLAIM_CONFLICT: Final = "claim_conflict"
    UNKNOWN_TASK: Final = "unknown_task"
    TASK_STATE: Final = "task_state"
    UNKNOWN_DECISION: Final = "unknown_decision"
    UNKNOWN_PROPOSAL: Final = "unknown_proposal"
    NOT_A_VOTER: Final = "not_a_voter"
    ALREADY_VOTED: Final = "already_voted"
    PROPOSAL_CLOSED: Final = "proposal_closed"
    STORAGE: Final = "storage_error"
    SHUTTING_DOWN: Final = "shutting_down"
    TOO_MANY_CONNECTIONS: Final = "too_many_connections"
    INTERNAL: Final = "internal"
    UNREACHABLE: Final = "daemon_unreachable"
    TIMEOUT: Final = "timeout"


CODES: tuple[str, ...] = tuple(v for k, v in vars(Code).items() if k.isupper())
"""The whole vocabulary this daemon sends. Clients decode ``Error.code`` as any string, so
a new code needs no protocol version: an older client passes it on as a ``PeersError``."""


class ClaudePeersError(Exception):
    """Root of every exception claude-peers raises on purpose."""


class PeersError(ClaudePeersError):
    """A failure with a wire code: an ``Error`` frame, or the client's view of one."""

    def __init__(self, code: str, message: str, candidates: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.candidates = candidates or []

    def __str__(self) -> str:
        return self.message


class DaemonUnreachable(PeersError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.UNREACHABLE, message)


class ConfigError(ClaudePeersError):
    """A setting, file or directory is unusable; the message says which and why."""


class StoreError(ClaudePeersError):
    """The database cannot be opened or used; the message says what to do."""
