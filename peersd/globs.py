"""Claim patterns: a path or a glob, matched against files and against each other.

A pattern is an absolute, normalised path that may hold wildcards, with the meaning
``glob.glob(..., recursive=True)`` gives them, except that names starting with a dot
are matched like any other (a claim on ``src/*`` covers ``src/.env``):

- ``*`` any run of characters within one path segment, ``?`` one such character,
  ``[abc]``, ``[a-z]``, ``[!abc]`` one character of (or not of) a set; none matches ``/``;
- ``**`` as a whole segment: any number of segments, none included (``src/**/x.py``
  matches ``src/x.py`` and ``src/a/b/x.py``; ``src/**`` everything under ``src``).
  ``**`` inside a segment (``a**b``) means ``*``.

``claim_pattern`` turns what a person or a model typed into such a pattern (relative to
a directory, a directory standing for everything under it); ``matches`` tests a file;
``overlap`` decides whether two patterns can match a common file, exactly (two globs
whose wildcards could meet overlap; ``src/*.py`` and ``src/*.js`` do not).
"""

from __future__ import annotations

import functools
import glob as _glob
import os
import re
from dataclasses import dataclass

from .paths import PathError, absolute, repo_of, text

WILDCARDS = frozenset("*?[")
MAX_DOUBLE_STARS = 4
"""``**`` segments per pattern; each doubles the work of an overlap check."""


def is_glob(pattern: str) -> bool:
    return any(c in WILDCARDS for c in pattern)


# --------------------------------------------------------------------------- normalising


@dataclass(frozen=True)
class ClaimPattern:
    pattern: str
    """Absolute pattern as text (what the daemon stores)."""
    repo: str
    """The repository it lies in (text)."""
    glob: bool
    matches_now: bool
    """Whether some file matches it today (a claim on a file not made yet is allowed)."""


def claim_pattern(raw: str, cwd: str) -> ClaimPattern:
    """What the daemon stores for one path or glob given relative to ``cwd``.

    A path that is a directory claims everything under it (``dir/**``). ``..`` is
    resolved against the directory part before the first wildcard, like a shell would;
    after a wildcard it is refused. A pattern outside every git repository is refused.
    Raises ``PathError`` with a message that names the input.
    """
    if not raw or not raw.strip():
        raise PathError("an empty path was given")
    if "\x00" in raw:
        raise PathError(f"path {text(raw)!r} contains a NUL character")
    if not is_glob(raw):
        path = absolute(raw, cwd)
        is_dir = os.path.isdir(path)
        pattern = path.rstrip("/") + "/**" if is_dir else path
        repo = repo_of(path)
        exists = os.path.lexists(path)
        if is_dir and repo == path:
            raise PathError(
                f"{text(raw)!r} is the whole repository {text(path)}; claim the files or "
                "folders you work on (a claim on everything stops every other session)"
            )
    else:
        prefix, rest = _split_glob(raw, cwd)
        pattern = prefix.rstrip("/") + "/" + "/".join(rest)
        repo = repo_of(prefix)
        exists = _matches_something(pattern)
        if repo is not None and prefix == repo and rest == ["**"]:
            raise PathError(
                f"{text(raw)!r} is the whole repository {text(repo)}; claim the files or "
                "folders you work on (a claim on everything stops every other session)"
            )
    if repo is None:
        raise PathError(
            f"{text(raw)!r} ({text(pattern)}) is not inside a git repository; "
            "claims are for files of a repository"
        )
    return ClaimPattern(text(pattern), text(repo), is_glob(pattern), exists)


def target(raw: str, cwd: str) -> str:
    """A path or glob to ask about (``file_status``): like ``claim_pattern``, but any
    path will do, in a repository or not. A directory stands for everything under it."""
    if not raw or not raw.strip() or "\x00" in raw:
        raise PathError(f"not a path: {text(raw)!r}")
    if not is_glob(raw):
        path = absolute(raw, cwd)
        return text(path.rstrip("/") + "/**" if os.path.isdir(path) and path != "/" else path)
    prefix, rest = _split_glob(raw, cwd)
    return text(prefix.rstrip("/") + "/" + "/".join(rest))


def _split_glob(raw: str, cwd: str) -> tuple[str, list[str]]:
    """(resolved directory before the first wildcard, the segments from it on)."""
    expanded = os.path.expanduser(raw) if raw.startswith("~") else raw
    if not os.path.isabs(expanded):
        expanded = os.path.join(cwd or os.sep, expanded)
    parts = expanded.split("/")
    first = next(i for i, part in enumerate(parts) if is_glob(part))
    rest = [part for part in parts[first:] if part not in ("", ".")]
    if ".." in rest:
        raise PathError(f"{text(raw)!r}: '..' after a wildcard is ambiguous; leave it out")
    if sum(part == "**" for part in rest) > MAX_DOUBLE_STARS:
        raise PathError(f"{text(raw)!r}: at most {MAX_DOUBLE_STARS} '**' segments")
    return absolute("/".join(parts[:first]) or "/", cwd), rest


def _matches_something(pattern: str) -> bool:
    try:
        return next(_glob.iglob(pattern, recursive=True, include_hidden=True), None) is not None
    except (OSError, ValueError, re.error):
        return False


def check_pattern(pattern: str) -> None:
    """The daemon's check of a stored pattern: a well-formed glob with few ``**``."""
    if pattern.count("**") > MAX_DOUBLE_STARS:
        raise PathError(f"pattern {pattern!r} has more than {MAX_DOUBLE_STARS} '**'")
    _tokens(pattern)  # raises for an unclosed '['


# --------------------------------------------------------------------------- matching


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    segments = pattern.split("/")
    for n, seg in enumerate(segments):
        last = n == len(segments) - 1
        if seg == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        i = 0
        while i < len(seg):
            c = seg[i]
            if c == "*":
                while i + 1 < len(seg) and seg[i + 1] == "*":
                    i += 1
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                end, cls = _class(seg, i)
                if cls is None:
                    out.append(re.escape(c))
                else:
                    negate, chars, ranges = cls
                    body = "".join(re.escape(ch) for ch in sorted(chars))
                    body += "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges)
                    out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
                    i = end
            else:
                out.append(re.escape(c))
            i += 1
        if not last:
            out.append("/")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _class(
    seg: str, start: int
) -> tuple[int, tuple[bool, frozenset[str], tuple[tuple[str, str], ...]] | None]:
    """Parse ``[...]`` at ``seg[start]``: (index of ``]``, (negated, chars, ranges)), or
    (start, None) when the bracket is not closed (then it is a literal ``[``)."""
    i = start + 1
    negate = i < len(seg) and seg[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < len(seg) and seg[i] == "]":
        i += 1  # a leading ']' is a member
    while i < len(seg) and seg[i] != "]":
        i += 1
    if i >= len(seg):
        return start, None
    body = seg[body_start:i]
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            lo, hi = body[j], body[j + 2]
            if lo <= hi:
                ranges.append((lo, hi))
            j += 3
        else:
            chars.add(body[j])
            j += 1
    return i, (negate, frozenset(chars), tuple(ranges))


def matches(pattern: str, path: str) -> bool:
    """Whether ``path`` (absolute) falls under ``pattern``."""
    if not is_glob(pattern):
        return pattern == path
    return _regex(pattern).match(path) is not None


# --------------------------------------------------------------------------- overlap
#
# A pattern is a sequence of tokens, each a set of characters that repeats (a star) or
# not; "**" segments expand to alternatives (absent, or any run ending in "/"). Two
# token sequences can match a common string iff the end of both is reachable in their
# product automaton, which a search over (position, position) pairs decides.


@dataclass(frozen=True)
class _Set:
    negate: bool
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    slash: bool
    """Whether '/' is in the set (only for a literal '/' and the run of '**')."""

    def has(self, c: str) -> bool:
        if c == "/":
            return self.slash
        inside = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return inside != self.negate

    def edges(self) -> set[str]:
        """Characters where membership can change: one of them lies in every interval."""
        found = {"/", "\x00", "\x01"}
        for c in self.chars:
            found |= {c, chr(min(ord(c) + 1, 0x10FFFF))}
        for lo, hi in self.ranges:
            found |= {lo, chr(min(ord(hi) + 1, 0x10FFFF))}
        return found


_ANY_BUT_SLASH = _Set(True, frozenset(), (), False)
_ANY = _Set(True, frozenset(), (), True)


def _literal(c: str) -> _Set:
    return _Set(False, frozenset() if c == "/" else frozenset(c), (), c == "/")


Token = tuple[_Set, bool]  # (characters, repeats)


def _tokens(pattern: str) -> list[list[Token]]:
    """The alternatives of ``pattern`` as token lists (``**`` segments expanded)."""
    alternatives: list[list[Token]] = [[]]
    segments = pattern.split("/")
    for n, seg in enumerate(segments):
        last = n == len(segments) - 1
        if seg == "**":
            if last:
                alternatives = [[*alt, (_ANY, True)] for alt in alternatives]
            else:
                with_run = [(_ANY, True), (_literal("/"), False)]
                alternatives = [alt for a in alternatives for alt in (a, a + with_run)]
            continue
        seq: list[Token] = []
        i = 0
        while i < len(seg):
            c = seg[i]
            if c == "*":
                while i + 1 < len(seg) and seg[i + 1] == "*":
                    i += 1
                seq.append((_ANY_BUT_SLASH, True))
            elif c == "?":
                seq.append((_ANY_BUT_SLASH, False))
            elif c == "[":
                end, cls = _class(seg, i)
                if cls is None:
                    seq.append((_literal(c), False))
                else:
                    seq.append((_Set(cls[0], cls[1], cls[2], False), False))
                    i = end
            else:
                seq.append((_literal(c), False))
            i += 1
        if not last:
            seq.append((_literal("/"), False))
        alternatives = [alt + seq for alt in alternatives]
    return alternatives


def _meet(a: _Set, b: _Set) -> bool:
    return any(a.has(c) and b.has(c) for c in a.edges() | b.edges())


def _sequences_meet(a: list[Token], b: list[Token]) -> bool:
    # Equal literal heads and tails decide quickly and shrink the search.
    while a and b and not a[-1][1] and not b[-1][1]:
        if not _meet(a[-1][0], b[-1][0]):
            return False
        a, b = a[:-1], b[:-1]
    start = 0
    while start < min(len(a), len(b)) and not a[start][1] and not b[start][1]:
        if not _meet(a[start][0], b[start][0]):
            return False
        start += 1
    a, b = a[start:], b[start:]
    end = (len(a), len(b))
    todo = [(0, 0)]
    seen = {(0, 0)}
    while todo:
        i, j = todo.pop()
        if (i, j) == end:
            return True
        nxt = []
        if i < len(a) and a[i][1]:
            nxt.append((i + 1, j))  # a's star matches nothing more
        if j < len(b) and b[j][1]:
            nxt.append((i, j + 1))
        both = i < len(a) and j < len(b) and not (a[i][1] and b[j][1])
        if both and _meet(a[i][0], b[j][0]):  # one character taken by both
            nxt.append((i if a[i][1] else i + 1, j if b[j][1] else j + 1))
        for state in nxt:
            if state not in seen:
                seen.add(state)
                todo.append(state)
    return False


def _literal_prefix(pattern: str) -> str:
    for i, c in enumerate(pattern):
        if c in WILDCARDS:
            return pattern[:i]
    return pattern


def overlap(a: str, b: str) -> bool:
    """Whether some path matches both patterns."""
    if not is_glob(a):
        return matches(b, a)
    if not is_glob(b):
        return matches(a, b)
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    if not (pa.startswith(pb) or pb.startswith(pa)):
        return False
    return any(_sequences_meet(x, y) for x in _tokens(a) for y in _tokens(b))
