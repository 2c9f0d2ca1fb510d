"""The snapshot of a sender's working tree (peers_mcp/gitstate.py) from real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio

from peers_mcp import gitstate


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def repo(tmp_path: Path) -> Path:
    path = tmp_path / "r"
    path.mkdir()
    git(path, "init", "-q", "-b", "topic/x")
    (path / "a.txt").write_text("a\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-qm", "one")
    return path


def test_branch_count_and_the_first_files(tmp_path: Path) -> None:
    path = repo(tmp_path)
    for i in range(7):
        (path / f"new {i}.txt").write_text("n\n")  # a space: -z keeps names whole
    (path / "a.txt").write_text("changed\n")
    found = gitstate.context(str(path))
    assert found is not None
    assert found.branch == "topic/x"
    assert found.dirty == 8
    assert len(found.files) == gitstate.SNAPSHOT_FILES
    assert "a.txt" in found.files or "new 0.txt" in found.files
    assert all(not f.startswith('"') for f in found.files)


def test_detached_head_and_a_clean_tree(tmp_path: Path) -> None:
    path = repo(tmp_path)
    git(path, "checkout", "-q", "--detach")
    found = gitstate.context(str(path))
    assert found is not None and found.branch is None and found.dirty == 0


def test_outside_a_repository_there_is_nothing_and_it_is_not_asked_again(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert gitstate.context(str(plain)) is None
    git(plain, "init", "-q")  # a repository now, but the failure is remembered for a while
    assert gitstate.context(str(plain)) is None


def test_the_async_variant_and_the_cache(tmp_path: Path) -> None:
    path = repo(tmp_path)

    async def twice() -> tuple[object, object]:
        first = await gitstate.acontext(str(path))
        (path / "b.txt").write_text("b\n")
        return first, await gitstate.acontext(str(path))  # within FRESH: the same answer

    first, second = anyio.run(twice)
    assert first == second
    assert first is not None and first.dirty == 0  # type: ignore[attr-defined]


def test_parse_reads_porcelain_output() -> None:
    out = b"## main...origin/main [ahead 2]\0 M src/a.py\0?? notes.md\0"
    found = gitstate.parse(out)
    assert (found.branch, found.dirty, found.files) == ("main", 2, ["src/a.py", "notes.md"])
    assert gitstate.parse(b"## No commits yet on trunk\0").branch == "trunk"
