"""Typed requests: what a message of each ``kind`` must carry, and the sender's snapshot.

A message may be plain text or one of the kinds below. Each kind is a Struct in one
tagged union (tag field ``kind``), so the decoder itself refuses a missing field or one
that belongs to another kind, naming it; the protocol (``Send.typed``), the store (the
``fields`` column holds the Struct as JSON) and the MCP tool (``send_message``'s
optional arguments, checked by ``build``) all use these types. The answer kinds
(``approval``, ``verification``) reply to the request kind in ``ANSWERS``.

Also here, as rules of the same sort: the context snapshot a message carries of its
sender (``Context`` from the client, ``Snapshot`` as stored) and the one-glyph rule of
a reaction (``check_glyph``). docs/coordination.md shows them in use.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import Code, PeersError

KindText = Annotated[str, Meta(min_length=1, max_length=2000)]
"""One field of a typed request: a sentence or a short paragraph."""
KindPath = Annotated[str, Meta(min_length=1, max_length=1024)]
KindFiles = Annotated[list[KindPath], Meta(max_length=50)]
"""Files a request is about, as the sender names them (relative or absolute)."""
Subject = Annotated[str, Meta(min_length=1, max_length=200)]
SNAPSHOT_FILES = 5
"""Uncommitted files a snapshot names at most (``dirty`` counts them all)."""
SNAPSHOT_SUMMARY = 200
"""Characters of the sender's summary a snapshot keeps."""


class Kind(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every typed request: ``kind`` names it."""


class Question(Kind, tag="question"):
    expected_format: KindText
    """What form the answer should take ("a number", "yes/no and why", …)."""


class ReviewRequest(Kind, tag="review_request"):
    files: KindFiles
    focus: KindText


class Handoff(Kind, tag="handoff"):
    done: KindText
    remaining: KindText
    files: KindFiles
    decisions: KindText


class ContextShare(Kind, tag="context_share"):
    summary: KindText


class Decision(Kind, tag="decision"):
    rationale: KindText


class ApprovalRequest(Kind, tag="approval_request"):
    action: KindText
    risk: KindText


class Approval(Kind, tag="approval"):
    verdict: Literal["approve", "reject"]
    reason: KindText


class VerificationRequest(Kind, tag="verification_request"):
    claim: KindText
    evidence_needed: KindText
    files: KindFiles


class Verification(Kind, tag="verification"):
    verdict: Literal["verified", "failed"]
    evidence: KindText


Typed = (
    Question
    | ReviewRequest
    | Handoff
    | ContextShare
    | Decision
    | ApprovalRequest
    | Approval
    | VerificationRequest
    | Verification
)
KINDS: dict[str, type[Kind]] = {
    str(t.__struct_config__.tag): t
    for t in (
        Question,
        ReviewRequest,
        Handoff,
        ContextShare,
        Decision,
        ApprovalRequest,
        Approval,
        VerificationRequest,
        Verification,
    )
}
KindName = Literal[
    "question",
    "review_request",
    "handoff",
    "context_share",
    "decision",
    "approval_request",
    "approval",
    "verification_request",
    "verification",
]
ANSWERS: dict[str, str] = {"approval": "approval_request", "verification": "verification_request"}
"""Answer kind -> the request kind it must reply to."""
ANSWERED_BY = {request: answer for answer, request in ANSWERS.items()}

FIELDS: dict[str, list[str]] = {name: list(t.__struct_fields__) for name, t in KINDS.items()}
"""Each kind's fields, in order (all required)."""
ALL_FIELDS: list[str] = list(dict.fromkeys(f for names in FIELDS.values() for f in names))


def kind_of(typed: Any) -> str | None:
    """The kind of a typed value, a Struct or the hook's plain dict."""
    if typed is None:
        return None
    if isinstance(typed, dict):
        kind = typed.get("kind")
        return kind if isinstance(kind, str) else None
    return str(typed.__struct_config__.tag)


def build(kind: str, given: dict[str, Any]) -> Kind:
    """The typed request for ``kind`` from the fields a caller gave (None = not given):
    every missing field and every field of another kind named at once."""
    cls = KINDS.get(kind)
    if cls is None:
        raise PeersError(
            Code.BAD_REQUEST, f"unknown kind {kind!r}; the kinds are {', '.join(KINDS)}"
        )
    fields = {k: v for k, v in given.items() if v is not None}
    wanted = FIELDS[kind]
    missing = [f for f in wanted if f not in fields]
    foreign = [f for f in fields if f not in wanted]
    problems = []
    if missing:
        problems.append(f"needs {', '.join(missing)}")
    if foreign:
        problems.append(f"takes no {', '.join(foreign)}")
    if problems:
        raise PeersError(
            Code.BAD_REQUEST,
            f"kind {kind!r} {' and '.join(problems)} (its fields: {', '.join(wanted)})",
        )
    try:
        return msgspec.convert({"kind": kind, **fields}, cls)
    except msgspec.ValidationError as e:
        raise PeersError(Code.BAD_REQUEST, f"kind {kind!r}: {e}") from None


_json = msgspec.json.Encoder()
_typed = msgspec.json.Decoder(Typed)


def encode(typed: Kind) -> str:
    return _json.encode(typed).decode()


def decode(text: str | None) -> Kind | None:
    """A stored typed request (the ``fields`` column), or None for plain mail."""
    return None if text is None else _typed.decode(text)


# --------------------------------------------------------------------------- snapshot


class Context(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """What the sending client saw of its working tree just before sending (``git
    status``, within a strict time budget): the daemon adds what it knows itself."""

    branch: Annotated[str, Meta(max_length=256)] | None = None
    dirty: Annotated[int, Meta(ge=0, le=10**9)] = 0
    """Uncommitted files (modified, staged or untracked)."""
    files: Annotated[
        list[Annotated[str, Meta(max_length=512)]], Meta(max_length=SNAPSHOT_FILES)
    ] = []
    """The first few of them, relative to the repository."""


class Snapshot(msgspec.Struct, omit_defaults=True):
    """The sender at send time, as kept with the message (bounded: a few hundred bytes)."""

    branch: str | None = None
    dirty: int | None = None
    """Uncommitted files; None when the client did not look (or could not in time)."""
    files: list[str] = []
    summary: str = ""


_snap = msgspec.json.Decoder(Snapshot)


def snapshot(context: Context | None, branch: str | None, summary: str) -> Snapshot | None:
    """The snapshot to store: the client's view of its tree, else the daemon's branch;
    None when there is nothing to say."""
    snap = Snapshot(
        branch=(context.branch if context is not None and context.branch else branch),
        dirty=context.dirty if context is not None else None,
        files=list(context.files) if context is not None else [],
        summary=summary[:SNAPSHOT_SUMMARY],
    )
    return None if snap == Snapshot() else snap


def encode_snapshot(snap: Snapshot) -> str:
    return _json.encode(snap).decode()


def decode_snapshot(text: str | None) -> Snapshot | None:
    return None if text is None else _snap.decode(text)


# --------------------------------------------------------------------------- reactions

Emoji = Annotated[str, Meta(min_length=1, max_length=16)]
"""A reaction as it travels; ``check_glyph`` says whether it is one glyph."""

_ZWJ = 0x200D
_VS = (0xFE0E, 0xFE0F)
_KEYCAP = 0x20E3
_SKIN = range(0x1F3FB, 0x1F400)
_FLAG = range(0x1F1E6, 0x1F200)
_TAGS = range(0xE0020, 0xE007F)
_CANCEL_TAG = 0xE007F
_SYMBOL = frozenset({"So", "Sm", "Sk", "Po"})


def _is_base(c: str) -> bool:
    cat = unicodedata.category(c)
    return cat in _SYMBOL and not c.isspace()


def check_glyph(text: str) -> str:
    """``text`` if it is exactly one emoji or symbol (one grapheme), else a clear error.

    Accepted: one symbol character (``✓``, ``👍``) with an optional variation selector
    and skin tone; emoji joined by zero-width joiners (``👩‍💻``); a flag (two regional
    indicators, or a tag sequence); a keycap (``1️⃣``). Refused: letters and digits (text),
    spaces, control, format and bidirectional characters outside those sequences, and
    more than one glyph.
    """

    def bad(why: str) -> PeersError:
        return PeersError(
            Code.BAD_REQUEST,
            f"a reaction is one emoji or symbol (e.g. 👍 ✓ 👀); {text!r} {why}",
        )

    cps = [ord(c) for c in text]
    if not cps:
        raise bad("is empty")
    for c in text:
        cat = unicodedata.category(c)
        if cat in ("Cc", "Zl", "Zp", "Zs", "Co", "Cn", "Cs"):
            raise bad(f"contains U+{ord(c):04X} ({cat}), which is not a glyph")
        if cat == "Cf" and ord(c) != _ZWJ and ord(c) not in _TAGS and ord(c) != _CANCEL_TAG:
            raise bad(f"contains the invisible or bidirectional character U+{ord(c):04X}")
    # a flag: two regional indicators
    if len(cps) == 2 and all(c in _FLAG for c in cps):
        return text
    # a keycap: 0-9 # * [VS16] U+20E3
    if cps[-1] == _KEYCAP and chr(cps[0]) in "0123456789#*" and cps[1:-1] in ([], [0xFE0F]):
        return text
    # a tag sequence (subdivision flags): base, tags, cancel tag
    if cps[-1] == _CANCEL_TAG:
        if len(cps) < 3 or not _is_base(chr(cps[0])) or not all(c in _TAGS for c in cps[1:-1]):
            raise bad("is not a valid tag sequence")
        return text
    # emoji (ZWJ) sequence: element (ZWJ element)*, element = base [VS] [skin]
    i = 0
    while True:
        if i >= len(cps) or not _is_base(chr(cps[i])):
            what = "more than one glyph" if i else "text, not a symbol"
            if i < len(cps) and unicodedata.category(chr(cps[i]))[0] in "LN":
                what = "text (letters or digits), not a symbol"
            raise bad(f"is {what}")
        i += 1
        if i < len(cps) and cps[i] in _VS:
            i += 1
        if i < len(cps) and cps[i] in _SKIN:
            i += 1
        if i == len(cps):
            return text
        if cps[i] != _ZWJ:
            raise bad("is more than one glyph")
        i += 1
