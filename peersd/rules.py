"""The rules request fields obey, each written once as a constrained type.

The protocol's request Structs use these types, so the decoder refuses a value that
breaks a rule (a typed error naming the field and the rule, see ``invalid_request``); the
MCP tool schemas are built from the same types, and ``config`` uses them for the
settings that feed requests. A module of its own, beside ``protocol``, so that ``config``
can use them without creating the protocol's Structs (the hook imports ``config`` when a
config file exists). docs/protocol.md §11.1 lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .errors import Code, PeersError


def _whole(body: str) -> str:
    """A pattern for the whole string, the same in Python and in JSON Schema.

    msgspec tests a pattern with ``re.search``, whose ``$`` also matches before a final
    newline ("alice\\n" would pass); ``(?!\\n)`` rules that out. In ECMA-262 regexes (what
    JSON Schema validators use) ``$`` is the end already and the look-ahead is a no-op.
    """
    return f"^(?:{body})$(?!\\n)"


PeerName = Annotated[
    str,
    Meta(
        pattern=_whole(r"(?![pP]-[0-9a-fA-F]{8}$)[A-Za-z0-9_-]{1,32}"),
        description="a peer name: 1-32 letters, digits, '-' or '_', "
        "not shaped like a peer id (p- and 8 hex digits)",
    ),
]
PeerId = Annotated[
    str,
    Meta(pattern=_whole(r"p-[0-9a-f]{8}"), description="a peer id: p- and 8 hex digits"),
]
MessageId = Annotated[
    str,
    Meta(
        pattern=_whole(r"m-([0-9a-f]{6})-([0-9]{1,18})"),
        description="a message id: m-, 6 hex digits, - and a number (e.g. m-1a2b3c-42)",
    ),
]
PeerRef = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=300,
        description='A peer: its name (e.g. "api"), name@host, or id (e.g. "p-1a2b3c4d").',
    ),
]
"""What ``resolve`` accepts: a name, ``name@host`` (a host label is at most 255) or an id."""
MessageIds = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=1000)]
"""Ids to look up or settle: one that is malformed (or foreign) names no message of ours,
which the answer says (``found: false``, ``unknown_message``) rather than the decoder."""
Summary = Annotated[str, Meta(max_length=1000)]
Limit = Annotated[int, Meta(ge=1, le=1000)]
"""How many items one page or claim may ask for."""
LeaseSeconds = Annotated[float, Meta(gt=0, le=3600)]
Pid = Annotated[int, Meta(ge=0, le=2**31 - 1)]
EpochSeconds = Annotated[float, Meta(ge=0, le=1e11)]
"""A point in time, finite (SQLite would store NaN as NULL)."""
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
"""A row number (paging cursor), within SQLite's integer range."""
# Free text a peer describes itself with: bounded so one peer cannot flood every listing
# and mail header. Paths get PATH_MAX; the rest what real values need, with room.
PathText = Annotated[str, Meta(max_length=4096)]
AbsolutePath = Annotated[
    str,
    Meta(
        pattern=_whole(r"/[^\x00]{0,4095}"),
        description="an absolute path: starts with / (at most 4096 characters, no NUL)",
    ),
]
Branch = Annotated[str, Meta(max_length=256)]
HostLabel = Annotated[str, Meta(max_length=255)]
Tty = Annotated[str, Meta(max_length=64)]
SessionId = Annotated[str, Meta(max_length=256)]
MachineId = Annotated[str, Meta(max_length=128)]
"""A machine id as ``register`` carries it (ignored locally; over TCP, the proven one)."""
ProvenMachineId = Annotated[
    str,
    Meta(
        pattern=_whole(r"[A-Za-z0-9._:-]{1,64}"),
        description="a machine id: 1-64 of A-Z a-z 0-9 . _ : -",
    ),
]
"""A machine's id (``identity.machine_id``: a UUID), as a hub client proves it in hello."""
MachineSecret = Annotated[
    str,
    Meta(pattern=_whole(r"[0-9a-f]{64}"), description="a machine secret: 64 lowercase hex digits"),
]
"""32 random bytes in hex (``machine_secret``): proves a machine id to a hub."""
ShortText = Annotated[str, Meta(max_length=64)]
"""Versions, client kinds, audit actions."""
Token = Annotated[str, Meta(max_length=1024)]
# Who is touching what (docs/coordination.md).
MAX_FILES = 1000
"""Paths or patterns in one request; a client with more sends them in several."""
FilePath = Annotated[str, Meta(min_length=1, max_length=4096)]
"""An absolute, resolved path (or claim pattern) as text (``peersd.paths``)."""
PatternList = Annotated[list[FilePath], Meta(max_length=MAX_FILES)]
ClaimTTL = Annotated[float, Meta(gt=0, le=24 * 3600)]
"""Seconds a claim lasts: at most a day."""
Reason = Annotated[str, Meta(max_length=500)]
Note = Annotated[str, Meta(max_length=200)]
# Groups, proposals, the report (docs/coordination.md).
GroupName = Annotated[
    str,
    Meta(
        pattern=_whole(r"[A-Za-z0-9][A-Za-z0-9._/+@-]{0,63}"),
        description="a group name: 1-64 of letters, digits and . _ / + @ -, starting with a "
        "letter or digit",
    ),
]
ProposalTitle = Annotated[str, Meta(min_length=1, max_length=500)]
OptionName = Annotated[
    str,
    Meta(
        pattern=_whole(r"[^\s\x00-\x1f][^\x00-\x1f]{0,39}"),
        description="an option: 1-40 characters, no control characters, not starting with a space",
    ),
]
OptionList = Annotated[list[OptionName], Meta(min_length=2, max_length=10)]
Threshold = Annotated[
    str,
    Meta(
        pattern=_whole(
            r"all|majority|[1-9][0-9]{0,3}|[1-9][0-9]{0,3}/[1-9][0-9]{0,3}|[1-9][0-9]?%|100%"
        ),
        description="a threshold: a count of votes (e.g. 2), a fraction of the voters (2/3 or "
        "60%), majority (more than half) or all",
    ),
]
DeadlineSeconds = Annotated[float, Meta(gt=0, le=30 * 24 * 3600)]
"""Seconds from now until a proposal closes: at most 30 days."""
ProposalId = Annotated[int, Meta(ge=1, le=2**63 - 1)]
VoterList = Annotated[list[PeerRef], Meta(max_length=100)]

# Shared work state: tasks and the decisions board (docs/coordination.md).
TaskId = Annotated[
    str,
    Meta(
        pattern=_whole(r"(?:[tT]-)?[0-9]{1,18}"),
        description="a task id: t- and a number (e.g. t-12); the number alone is accepted",
    ),
]
TaskTitle = Annotated[str, Meta(min_length=1, max_length=200)]
TaskText = Annotated[str, Meta(max_length=8000)]
"""A task's description, a note, or its result."""
DecisionKey = Annotated[
    str,
    Meta(
        pattern=_whole(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,99}"),
        description="a decision key: 1-100 of A-Z a-z 0-9 . _ / : -, starting with a letter "
        "or digit (e.g. db.engine)",
    ),
]
DecisionValue = Annotated[str, Meta(min_length=1, max_length=2000)]
Rationale = Annotated[str, Meta(min_length=1, max_length=2000)]
"""Why a decision was taken or revoked: required, so the board explains itself."""
Category = Annotated[
    str,
    Meta(
        pattern=_whole(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"),
        description="a category: 1-32 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    ),
]
SearchText = Annotated[str, Meta(min_length=1, max_length=200)]


def meta(t: Any) -> Meta:
    """The constraints of a type defined here (``Annotated[base, Meta(...)]``)."""
    found: Meta = t.__metadata__[0]
    return found


_PATTERNS: list[tuple[str, str, str]] = [
    (f"Expected `str` matching regex {meta(t).pattern!r}", meta(t).description or "", code)
    for t, code in (
        (PeerName, Code.INVALID_NAME),
        (PeerId, Code.BAD_REQUEST),
        (MessageId, Code.BAD_REQUEST),
        (ProvenMachineId, Code.BAD_REQUEST),
        (MachineSecret, Code.BAD_REQUEST),
        (AbsolutePath, Code.BAD_REQUEST),
        (TaskId, Code.BAD_REQUEST),
        (DecisionKey, Code.BAD_REQUEST),
        (Category, Code.BAD_REQUEST),
        (GroupName, Code.BAD_REQUEST),
        (OptionName, Code.BAD_REQUEST),
        (Threshold, Code.BAD_REQUEST),
    )
]
"""msgspec's words for each of our patterns -> (the rule in words, the error code)."""


def explain(e: msgspec.ValidationError) -> tuple[str, str]:
    """The error code and message for a value that broke a rule: msgspec's message,
    naming the field, with any of our regexes replaced by the rule in words. A bad name
    is ``invalid_name`` and a string over its length ``too_large``, as before the rules
    moved into types."""
    message = str(e)
    for regex, rule, code in _PATTERNS:
        if regex in message:
            return code, message.replace(regex, "Expected " + rule)
    if message.startswith("Expected `str` of length <="):
        return Code.TOO_LARGE, message
    return Code.BAD_REQUEST, message


def invalid_request(e: msgspec.ValidationError) -> PeersError:
    """The error for a frame that does not decode as a valid request."""
    code, message = explain(e)
    return PeersError(code, f"invalid request: {message}")


def _matcher(t: Any) -> Callable[[str], re.Match[str] | None]:
    """The decoder's own test of a patterned type, for values that did not pass through it."""
    return re.compile(meta(t).pattern or "").search


match_peer_id = _matcher(PeerId)
match_message_id = _matcher(MessageId)
"""Groups 1 and 2: the database tag and the row."""
match_group = _matcher(GroupName)
