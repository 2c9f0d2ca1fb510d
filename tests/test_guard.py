"""``peers guard``: the Git pre-commit hook, in real repositories with real commits.

Install keeps and chains an existing hook and is idempotent; uninstall puts back exactly
what was there. A commit whose staged files fall under another live session's exclusive
claim is refused with the holder, the claim's reason and the overrides; ``PEERS_GUARD=0``
and ``--no-verify`` get through; one's own claim, a gone holder's claim and files outside
any claim do not stop anything; an unreachable daemon is reported and the commit goes on.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from peersd import protocol as p

from .conftest import PEERS, Agents, register, run_peers

GIT_ID = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def repo(tmp_path: Path, home: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    env = {**os.environ, **GIT_ID}
    assert git(root, "init", "-q", env=env).returncode == 0
    (root / "src" / "auth").mkdir(parents=True)
    for name in ("src/auth/login.py", "src/app.py", "README.md"):
        (root / name).write_text(f"# {name}\n")
    git(root, "add", ".", env=env)
    assert git(root, "commit", "-qm", "init", env=env).returncode == 0
    return Path(os.path.realpath(root))


def genv(daemon, **extra: str) -> dict[str, str]:
    return {**daemon.env, **GIT_ID, **extra}


def change(repo: Path, *names: str, env: dict[str, str]) -> None:
    for name in names:
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write("more\n")
    assert git(repo, "add", *names, env=env).returncode == 0


def commit(repo: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return git(repo, "commit", "-qm", "change", *extra, env=env)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for entry in sorted(folder.iterdir()):
        st = entry.lstat()
        data = os.readlink(entry).encode() if entry.is_symlink() else entry.read_bytes()
        found[entry.name] = (
            stat.S_IMODE(st.st_mode) | (stat.S_IFLNK if entry.is_symlink() else 0),
            data,
        )
    return found


def install(daemon, repo: Path) -> str:
    done = run_peers(daemon.env, "guard", "install", "--repo", str(repo))
    assert done.code == 0, done
    return done.out


# --------------------------------------------------------------------------- install


def test_install_chains_an_existing_hook_and_uninstall_restores_it(daemon, repo: Path) -> None:
    env = genv(daemon)
    hooks = repo / ".git" / "hooks"
    marker = repo.parent / "chained-ran"
    old = hooks / "pre-commit"
    old.write_text(f"#!/bin/sh\necho ran >> {shlex.quote(str(marker))}\nexit 0\n")
    os.chmod(old, 0o750)
    before = snapshot(hooks)
    inode = old.stat().st_ino

    out = install(daemon, repo)
    assert "installed the guard" in out and "pre-commit.peers-chained" in out
    assert (hooks / "pre-commit.peers-chained").stat().st_ino == inode  # moved, not copied
    ours = (hooks / "pre-commit").read_bytes()
    assert b"# claude-peers guard" in ours
    assert "already installed" in install(daemon, repo)
    assert (hooks / "pre-commit").read_bytes() == ours

    change(repo, "README.md", env=env)
    done = commit(repo, env)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "ran\n"  # the earlier hook still runs
    # ...and can still stop a commit
    (hooks / "pre-commit.peers-chained").write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    change(repo, "README.md", env=env)
    assert commit(repo, env).returncode == 1
    (hooks / "pre-commit.peers-chained").write_text(
        f"#!/bin/sh\necho ran >> {shlex.quote(str(marker))}\nexit 0\n"
    )
    os.chmod(hooks / "pre-commit.peers-chained", 0o750)

    done = run_peers(daemon.env, "guard", "uninstall", "--repo", str(repo))
    assert done.code == 0 and "put back the earlier hook" in done.out
    assert snapshot(hooks) == before
    assert old.stat().st_ino == inode
    done = run_peers(daemon.env, "guard", "uninstall", "--repo", str(repo))
    assert done.code == 0 and "no guard installed" in done.out
    assert snapshot(hooks) == before


def test_install_without_a_hook_and_with_a_symlink(daemon, repo: Path, tmp_path: Path) -> None:
    hooks = repo / ".git" / "hooks"
    before = snapshot(hooks)
    install(daemon, repo)
    assert stat.S_IMODE((hooks / "pre-commit").stat().st_mode) == 0o755
    run_peers(daemon.env, "guard", "uninstall", "--repo", str(repo))
    assert snapshot(hooks) == before
    # a hook that is a symlink is moved and put back as the same symlink
    target = tmp_path / "shared-hook"
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o755)
    os.symlink(target, hooks / "pre-commit")
    before = snapshot(hooks)
    install(daemon, repo)
    assert (hooks / "pre-commit.peers-chained").is_symlink()
    run_peers(daemon.env, "guard", "uninstall", "--repo", str(repo))
    assert snapshot(hooks) == before


def test_install_errors(daemon, repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    bad = run_peers(daemon.env, "guard", "install", "--repo", str(plain))
    assert bad.code == 1 and "not inside a git work tree" in bad.err
    hooks = repo / ".git" / "hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (hooks / "pre-commit.peers-chained").write_text("#!/bin/sh\nexit 0\n")
    bad = run_peers(daemon.env, "guard", "install", "--repo", str(repo))
    assert bad.code == 1 and "already exists" in bad.err


# --------------------------------------------------------------------------- the check


def holder(daemon, agents: Agents, repo: Path, pattern: str, reason: str = "", name="alpha"):
    proc = agents.spawn()
    c = daemon.client("claude-code")
    register(c, proc.pid, "claude-code", cwd=str(repo), name=name)
    c.request(
        p.ClaimFiles,
        patterns=[p.FileRef(path=str(repo / pattern), repo=str(repo))],
        exclusive=True,
        reason=reason,
    )
    return c, proc


def test_a_commit_under_another_sessions_exclusive_claim_is_refused(
    daemon, agents: Agents, repo: Path
) -> None:
    env = genv(daemon)
    c, _ = holder(daemon, agents, repo, "src/auth/**", reason="rewriting login")
    install(daemon, repo)

    change(repo, "src/auth/login.py", env=env)
    done = commit(repo, env)
    assert done.returncode == 1
    err = done.stderr
    assert "peers guard: this commit is stopped" in err
    assert "src/auth/login.py: alpha (claude-code) holds an exclusive claim on src/auth/**" in err
    assert 'reason: "rewriting login"' in err
    assert "git commit --no-verify" in err and "PEERS_GUARD=0 git commit" in err
    assert git(repo, "diff", "--cached", "--name-only", env=env).stdout.split() == [
        "src/auth/login.py"
    ]  # nothing was committed

    # the overrides
    assert commit(repo, {**env, "PEERS_GUARD": "0"}).returncode == 0
    change(repo, "src/auth/login.py", env=env)
    assert commit(repo, env, "--no-verify").returncode == 0
    # a rename out of the claim touches the claimed name: refused
    assert git(repo, "mv", "src/auth/login.py", "src/login.py", env=env).returncode == 0
    assert commit(repo, env).returncode == 1
    git(repo, "reset", "-q", "--hard", env=env)
    # files outside the claim are free, also with commit -a
    with open(repo / "src/app.py", "a") as f:
        f.write("x\n")
    assert commit(repo, env, "-a").returncode == 0
    c.close()


def test_ones_own_claim_and_a_gone_holders_claim_do_not_stop_a_commit(
    make_daemon, agents: Agents, repo: Path
) -> None:
    # No sweep of its own: the claiming shell has exited when the other commit is tried.
    daemon = make_daemon(sweep_interval=3600)
    env = genv(daemon)
    install(daemon, repo)
    # a shell claims with `peers claim` and commits: it is the CLI peer on both sides
    script = (
        f"{shlex.join([*PEERS, 'claim', '--exclusive', 'src/app.py'])} >/dev/null && "
        "echo more >> src/app.py && git add src/app.py && git commit -qm mine"
    )
    done = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # from another shell, the same file is someone else's claim
    change(repo, "src/app.py", env=env)
    refused = commit(repo, env)
    assert refused.returncode == 1 and "exclusive claim on src/app.py" in refused.stderr
    git(repo, "reset", "-q", "--hard", env=env)

    c, proc = holder(daemon, agents, repo, "README.md", name="gone-soon")
    change(repo, "README.md", env=env)
    assert commit(repo, env).returncode == 1
    proc.kill()
    proc.wait()
    c.request(p.Sweep)
    assert commit(repo, env).returncode == 0
    c.close()


def test_claims_warn_setting_only_warns(make_daemon, agents: Agents, tmp_path: Path) -> None:
    daemon = make_daemon(claims="warn")
    env = genv(daemon)
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", env=env)
    repo = Path(os.path.realpath(repo))
    c, _ = holder(daemon, agents, repo, "a.txt", reason="mine")
    install(daemon, repo)
    change(repo, "a.txt", env=env)
    done = commit(repo, env)
    assert done.returncode == 0
    assert "warning (claims only warn here)" in done.stderr and "a.txt" in done.stderr
    c.close()


def test_an_unreachable_daemon_warns_and_lets_the_commit_through(daemon, repo: Path) -> None:
    env = genv(daemon)
    install(daemon, repo)
    daemon.stop()
    change(repo, "src/app.py", env=env)
    done = commit(repo, env)
    assert done.returncode == 0
    assert "peers guard: claude-peers is not reachable" in done.stderr
    assert "claims not checked" in done.stderr
    assert not daemon.settings.socket_path.exists()  # the guard started no daemon


def test_a_guard_that_cannot_run_lets_the_commit_through(daemon, repo: Path) -> None:
    """A moved or deleted interpreter (exit 127) is not a refusal: only exit 1 is."""
    from peers_cli import guard

    guard.install(repo, ["/nonexistent/python", "-m", "peers_cli.guard", "check"])
    env = genv(daemon)
    change(repo, "README.md", env=env)
    done = commit(repo, env)
    assert done.returncode == 0
    assert "peers guard: the check could not run (exit 127); claims not checked" in done.stderr
