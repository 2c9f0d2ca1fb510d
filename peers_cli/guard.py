"""``peers guard``: a Git pre-commit hook that keeps commits off other sessions' exclusive claims.

``install`` writes ``pre-commit`` into the repository's hooks directory (``git rev-parse
--git-path hooks``, so ``core.hooksPath`` and worktrees are respected). A hook that was
there already is moved aside, byte for byte and mode for mode, to
``pre-commit.peers-chained``, and ours runs it after its own check. Installing again
changes nothing (or refreshes our script); ``uninstall`` removes ours and moves the old
one back, leaving the directory as it was.

The hook runs ``python -m peers_cli.guard check``: it lists the staged files (``git diff
--cached --name-only -z --no-renames``, so both names of a rename), finds the committing
session the way every client does (``attach``: its session id if the environment has
one, else the daemon walks the process ancestry; a plain shell is its CLI peer, an
unknown one is nobody) and asks the daemon (``check_edit``, recording nothing). A file
under another live session's exclusive claim stops the commit, naming the holder, the
claim's reason and the overrides (``git commit --no-verify``, ``PEERS_GUARD=0``). With
the setting ``claims = "warn"`` it only warns. When the daemon cannot be reached it says
so and lets the commit through. The check imports only the standard library,
``peersd.wire`` and the text helpers: it never starts a daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from peersd.errors import ClaudePeersError

MARK = "# claude-peers guard"
CHAINED = "pre-commit.peers-chained"
HOOK = "pre-commit"
ENV = "PEERS_GUARD"
CHUNK = 500


class GuardError(ClaudePeersError):
    """Something about the repository or its hooks stops install/uninstall; says what."""


def git(repo: Path | str, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GuardError("git is not installed (or not on PATH)") from None
    except NotADirectoryError:
        raise GuardError(f"{repo} is not a directory") from None
    if done.returncode != 0:
        raise GuardError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def repo_root(where: Path | str) -> Path:
    if not os.path.isdir(where):
        raise GuardError(f"{where} is not a directory")
    try:
        return Path(git(where, "rev-parse", "--show-toplevel"))
    except GuardError as e:
        raise GuardError(f"{where} is not inside a git work tree ({e})") from None


def hooks_dir(root: Path) -> Path:
    path = Path(git(root, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else root / path


def script(argv: list[str]) -> str:
    """Our pre-commit hook: the check (unless ``PEERS_GUARD=0``), then the chained hook."""
    import shlex

    return f"""#!/bin/sh
{MARK} (installed by `peers guard install`; `peers guard uninstall` restores what was here)
# Refuses a commit whose staged files fall under another live session's exclusive claim.
# Skip it once with `git commit --no-verify` or `{ENV}=0 git commit`.
# Only exit status 1 stops the commit: a check that cannot run lets it through.
if [ "${{{ENV}:-1}}" != "0" ]; then
    {shlex.join(argv)}
    status=$?
    if [ "$status" -eq 1 ]; then
        exit 1
    elif [ "$status" -ne 0 ]; then
        echo "peers guard: the check could not run (exit $status); claims not checked" >&2
    fi
fi
chained="$(dirname "$0")/{CHAINED}"
if [ -x "$chained" ]; then
    exec "$chained" "$@"
fi
exit 0
"""


def check_command(socket: str | None = None, config: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "peers_cli.guard", "check"]
    if socket:
        argv += ["--socket", os.path.abspath(socket)]
    if config:
        argv += ["--config", os.path.abspath(config)]
    return argv


def is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return MARK.encode() in f.read(4096)
    except OSError:
        return False


@dataclass
class Report:
    hook: Path
    action: str
    """installed, updated, unchanged, removed, not_installed"""
    chained: Path | None = None
    """The earlier hook ours runs (install), or that was put back (uninstall)."""


def install(where: Path | str, argv: list[str]) -> Report:
    root = repo_root(where)
    hooks = hooks_dir(root)
    hook, chained = hooks / HOOK, hooks / CHAINED
    text = script(argv)
    if hook.is_symlink() or hook.exists():
        if is_ours(hook) and not hook.is_symlink():
            if hook.read_text(errors="replace") == text:
                return Report(hook, "unchanged", chained if chained.exists() else None)
            _write(hook, text)
            return Report(hook, "updated", chained if chained.exists() else None)
        if chained.is_symlink() or chained.exists():
            raise GuardError(
                f"{hook} is not ours and {chained} already exists; move one of them away first"
            )
        os.rename(hook, chained)  # the very file (or symlink), mode and bytes kept
        try:
            _write(hook, text)
        except OSError:
            os.rename(chained, hook)
            raise
        return Report(hook, "installed", chained)
    hooks.mkdir(parents=True, exist_ok=True)
    _write(hook, text)
    return Report(hook, "installed", None)


def uninstall(where: Path | str) -> Report:
    root = repo_root(where)
    hooks = hooks_dir(root)
    hook, chained = hooks / HOOK, hooks / CHAINED
    if not (hook.is_symlink() or hook.exists()):
        if chained.is_symlink() or chained.exists():
            os.rename(chained, hook)
            return Report(hook, "removed", hook)
        return Report(hook, "not_installed")
    if hook.is_symlink() or not is_ours(hook):
        if chained.is_symlink() or chained.exists():
            raise GuardError(
                f"{hook} is no longer ours (something replaced it); the hook that was there "
                f"before the guard is still at {chained}. Sort them out by hand."
            )
        return Report(hook, "not_installed")
    os.unlink(hook)
    if chained.is_symlink() or chained.exists():
        os.rename(chained, hook)
        return Report(hook, "removed", hook)
    return Report(hook, "removed")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o755)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        try:  # noqa: SIM105
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------- the check


def staged_files(root: str) -> list[dict]:
    """The staged files as ``FileRef`` dicts (both names of a rename; deletions too)."""
    from peersd import paths

    done = subprocess.run(
        ["git", "diff", "--cached", "--name-only", "-z", "--no-renames"],
        cwd=root,
        capture_output=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    names = [os.fsdecode(n) for n in done.stdout.split(b"\0") if n]
    return paths.file_refs(names, root)


def check(argv: list[str]) -> int:
    """The pre-commit check: 0 lets the commit through, 1 stops it."""
    from peersd import wire

    err = sys.stderr
    if os.environ.get(ENV) == "0":
        return 0
    socket = config = None
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in ("--socket", "--config") and args:
            value = args.pop(0)
            socket, config = (value, config) if flag == "--socket" else (socket, value)
    try:
        top = os.path.realpath(
            subprocess.run(
                ["git", "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
                check=True,
                stdin=subprocess.DEVNULL,
            ).stdout.strip()
        )
        refs = staged_files(top)
    except (OSError, subprocess.CalledProcessError) as e:
        err.write(f"peers guard: cannot list the staged files ({e}); not checking claims\n")
        return 0
    if not refs:
        return 0
    try:
        if socket:
            where, token, cafile = os.path.abspath(socket), None, None
        else:
            where, token, cafile = wire.locate(config=config)
        conn = wire.Wire(where, 5.0, kind="cli", token=token, cafile=cafile)
    except wire.WireError as e:
        err.write(f"peers guard: claude-peers is not reachable ({e.message}); claims not checked\n")
        return 0
    holders: list[dict] = []
    decision = "allow"
    me: str | None = None
    with conn:
        try:
            try:
                req: dict = {"t": "attach"}
                session = os.environ.get("CLAUDE_CODE_SESSION_ID")
                if session:
                    req["session_id"] = session
                peer = conn.call(req)["peer"]
                me = str(peer.get("name")) if isinstance(peer, dict) else None
            except wire.WireError as e:
                if e.code != "unknown_peer":
                    raise
            for start in range(0, len(refs), CHUNK):
                answer = conn.call(
                    {
                        "t": "check_edit",
                        "files": refs[start : start + CHUNK],
                        "record": False,
                        "notify": False,
                    }
                )
                found = answer.get("holders")
                holders += [
                    h
                    for h in (found if isinstance(found, list) else [])
                    if h.get("kind") == "claim" and h.get("exclusive")
                ]
                if answer.get("decision") == "deny":
                    decision = "deny"
        except wire.WireError as e:
            err.write(
                f"peers guard: claude-peers did not answer ({e.message}); claims not checked\n"
            )
            return 0
    if not holders:
        return 0
    err.write(refusal(holders, decision, me, top))
    return 1 if decision == "deny" else 0


def refusal(holders: list[dict], decision: str, me: str | None, top: str) -> str:
    import time

    from peers_mcp.conflicts import describe, rel
    from peers_mcp.render import inline

    now = time.time()
    stopped = decision == "deny"
    head = "this commit is stopped" if stopped else "warning (claims only warn here)"
    lines = [
        f"peers guard: {head}: staged files fall under another session's exclusive claim"
        + (f" (you are {inline(me)})" if me else "")
        + ":"
    ]
    for h in holders[:20]:
        target = inline(rel(str(h.get("target") or h.get("path")), top))
        lines.append(f"  {target}: {describe(h, now)}")
    if len(holders) > 20:
        lines.append(f"  … and {len(holders) - 20} more")
    names = sorted({inline(str(h.get("name"))) for h in holders})
    lines.append(
        "Ask " + " or ".join(names) + " to release it (e.g. `peers send "
        f'{names[0]} "may I commit …?"`), or wait until the claim ends.'
    )
    if stopped:
        lines.append(
            f"To commit anyway: `git commit --no-verify` (skips every pre-commit hook) or "
            f"`{ENV}=0 git commit` (skips only this check)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "check":
        sys.stderr.write("usage: python -m peers_cli.guard check [--socket PATH] [--config FILE]\n")
        sys.exit(2)
    try:
        code = check(args[1:])
    except Exception as e:  # the guard never breaks a commit by itself
        sys.stderr.write(f"peers guard: {type(e).__name__}: {e}; claims not checked\n")
        code = 0
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
