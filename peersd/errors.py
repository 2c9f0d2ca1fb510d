"""Typed failures shared by the daemon and its clients.

A ``PeersError`` raised anywhere in request handling becomes an ``Error`` frame
(code + human message); the client library raises it again on the other side, so
callers catch one exception type with a stable ``code`` to branch on.
"""

from __future__ import annotations


class Code:
    """Every error code that appears on the wire."""

    BAD_REQUEST = "bad_request"
    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"
    FORBIDDEN = "forbidden"
    DISABLED = "disabled"
    NOT_REGISTERED = "not_registered"
    UNKNOWN_PEER = "unknown_peer"
    UNKNOWN_MESSAGE = "unknown_message"
    INVALID_NAME = "invalid_name"
    NAME_TAKEN = "name_taken"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    CLAIM_CONFLICT = "claim_conflict"
    STORAGE = "storage_error"
    SHUTTING_DOWN = "shutting_down"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    INTERNAL = "internal"
    UNREACHABLE = "daemon_unreachable"
    TIMEOUT = "timeout"


class PeersError(Exception):
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
