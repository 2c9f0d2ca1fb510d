"""Claim patterns (``peersd.globs``) and path normalisation (``peersd.paths``), no daemon.

The overlap check is compared with brute force: for small patterns over a small
alphabet, two patterns overlap exactly when some short string matches both.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peersd import globs, paths
from peersd.paths import PathError


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("/r/src/**", "/r/src/a/b.py", True),
        ("/r/src/**", "/r/src", False),
        ("/r/src/**/x.py", "/r/src/x.py", True),
        ("/r/src/**/x.py", "/r/src/a/b/x.py", True),
        ("/r/src/*", "/r/src/a/b", False),
        ("/r/src/*", "/r/src/.env", True),  # dot files are covered
        ("/r/src/*.py", "/r/src/a.py", True),
        ("/r/src/*.py", "/r/src/a.pyc", False),
        ("/r/[!a]*", "/r/b", True),
        ("/r/[!a]*", "/r/a", False),
        ("/r/f?.txt", "/r/f1.txt", True),
        ("/r/f?.txt", "/r/f/.txt", False),
        ("/r/a[", "/r/a[", True),  # an unclosed bracket is a literal
        ("/r/a**b", "/r/axyb", True),  # ** inside a segment is *
        ("/r/a**b", "/r/ax/yb", False),
        ("/r/exact.py", "/r/exact.py", True),
        ("/r/exact.py", "/r/exact.py.bak", False),
    ],
)
def test_matches(pattern: str, path: str, hit: bool) -> None:
    assert globs.matches(pattern, path) is hit


@pytest.mark.parametrize(
    ("a", "b", "meet"),
    [
        ("/r/src/**", "/r/src/auth/*.py", True),
        ("/r/src/*.py", "/r/src/*.js", False),
        ("/r/src/*.py", "/r/src/a*", True),
        ("/r/src/**/x.py", "/r/src/x.py", True),
        ("/r/src/*/x.py", "/r/src/x.py", False),
        ("/r/src/[a-c]*.py", "/r/src/[!a-c]*.py", False),
        ("/r/src/[a-c]*.py", "/r/src/b?.py", True),
        ("/r/a/**", "/r/b/**", False),
        ("/r/**/test_*.py", "/r/src/**", True),
        ("/r/src/a.py", "/r/src/a.py", True),
        ("/r/src/a.py", "/r/src/b.py", False),
    ],
)
def test_overlap(a: str, b: str, meet: bool) -> None:
    assert globs.overlap(a, b) is meet
    assert globs.overlap(b, a) is meet


SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "?", "**", "a*", "*b", "[ab]", "[!a]"])
PATTERNS = st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))


def _witnesses(limit: int) -> list[str]:
    found = []
    for n in range(1, limit + 1):
        for chars in itertools.product("ab/", repeat=n):
            s = "/" + "".join(chars)
            if "//" not in s and not s.endswith("/"):
                found.append(s)
    return found


WITNESSES = _witnesses(7)


@settings(max_examples=300, deadline=None)
@given(PATTERNS, PATTERNS)
def test_overlap_agrees_with_brute_force(a: str, b: str) -> None:
    common = any(globs.matches(a, s) and globs.matches(b, s) for s in WITNESSES)
    if common:
        assert globs.overlap(a, b), (a, b)
    elif globs.overlap(a, b):
        # no short witness: there must be a longer one (stars take any length)
        longer = [s.replace("a", "aaaa") for s in WITNESSES] + _witnesses(9)
        assert any(globs.matches(a, s) and globs.matches(b, s) for s in longer), (a, b)


def git_repo(path: Path) -> Path:
    (path / ".git").mkdir(parents=True)
    return path


def test_claim_pattern_normalises(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "src" / "auth").mkdir(parents=True)
    (repo / "src" / "auth" / "login.py").write_text("x")
    os.symlink(repo / "src", tmp_path / "link")
    c = globs.claim_pattern("src/auth/login.py", str(repo))
    assert (c.pattern, c.repo, c.glob, c.matches_now) == (
        f"{repo}/src/auth/login.py",
        str(repo),
        False,
        True,
    )
    # a folder stands for everything under it; symlinks and '..' are resolved
    assert (
        globs.claim_pattern("../../link/auth", str(repo / "src")).pattern == f"{repo}/src/auth/**"
    )
    assert globs.claim_pattern("src/./auth/../auth/*.py", str(repo)).pattern == (
        f"{repo}/src/auth/*.py"
    )
    # a file that does not exist yet, and a glob that matches nothing: allowed, and said
    assert not globs.claim_pattern("src/new.py", str(repo)).matches_now
    assert not globs.claim_pattern("src/**/*.rs", str(repo)).matches_now
    assert globs.claim_pattern("src/**/*.py", str(repo)).matches_now


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("../../outside.txt", "not inside a git repository"),
        ("/etc/hosts", "not inside a git repository"),
        ("src/*/../x", "'..' after a wildcard"),
        (".", "the whole repository"),
        ("**", "the whole repository"),
        ("", "empty"),
        ("a/**/b/**/c/**/d/**/e/**", r"at most 4 '\*\*'"),
        ("a\x00b", "NUL"),
    ],
)
def test_claim_pattern_refuses(tmp_path: Path, raw: str, why: str) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "src").mkdir()
    with pytest.raises(PathError, match=why):
        globs.claim_pattern(raw, str(repo))


def test_non_utf8_names_travel_as_escaped_text(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: not UTF-8
    (repo / name).write_text("x")
    ref = paths.file_ref(name, str(repo))
    assert ref == {"path": f"{repo}/caf\\xe9.txt", "repo": str(repo)}
    ref["path"].encode("utf-8")  # wire-safe
    assert globs.claim_pattern(name, str(repo)).pattern == ref["path"]
    assert paths.text("\udcff\ud800") == "\\xff\\ud800"  # any lone surrogate


@pytest.mark.parametrize(
    "bad",
    ["relative/x", "/a//b", "/a/./b", "/a/../b", "/a/", "/a/..", "/a\x00b", "/" + "x" * 5000],
)
def test_the_daemon_refuses_paths_that_are_not_normalised(bad: str) -> None:
    with pytest.raises(PathError):
        paths.check_wire_path(bad)
