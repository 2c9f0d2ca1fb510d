"""Who is asking: process start times and ancestry, machine id, repository and branch.

Kept free of psutil and subprocesses so the hook can import it cheaply; on Linux
everything is read from /proc, elsewhere psutil is imported lazily. So are ``pathlib``
and ``socket`` (2 MiB of the idle-wake waiter, which lives as long as a session idles).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from collections.abc import Iterator
    from pathlib import Path

_LINUX = sys.platform.startswith("linux")
_boot_time: float | None = None
_clock_ticks: int | None = None


def _linux_boot_time() -> float:
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    _boot_time = float(line.split()[1])
                    break
            else:  # pragma: no cover - every Linux kernel has btime
                _boot_time = 0.0
    return _boot_time


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2 :].split()


def process_start(pid: int) -> float | None:
    """Start time of ``pid`` as epoch seconds, or None if no such process.

    Matches ``psutil.Process(pid).create_time()`` so values from either agree.
    """
    if _LINUX:
        global _clock_ticks
        try:
            fields = _stat_fields(pid)
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            return _psutil_start(pid)
        if _clock_ticks is None:
            _clock_ticks = os.sysconf("SC_CLK_TCK")
        return _linux_boot_time() + int(fields[19]) / _clock_ticks
    return _psutil_start(pid)


def _psutil_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return None


def parent_pid(pid: int) -> int | None:
    if _LINUX:
        try:
            return int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            return None
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def process_name(pid: int) -> str:
    """The short command name (``comm``), or "" when unknown."""
    if _LINUX:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                return f.read().strip().decode("utf-8", "replace")
        except OSError:
            return ""
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def process_cmdline(pid: int) -> list[str]:
    if _LINUX:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return []
        return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def ancestors(pid: int, limit: int = 64) -> Iterator[int]:
    """``pid``'s parent, grandparent, … up to (not including) pid 1."""
    current = pid
    for _ in range(limit):
        ppid = parent_pid(current)
        if not ppid or ppid <= 1 or ppid == current:
            return
        yield ppid
        current = ppid


def registered_ancestor(pid: int, agents: dict[int, tuple[str, float]]) -> tuple[int, str] | None:
    """(agent pid, peer id) of the entry in ``agents`` (pid -> (peer id, start time)) that
    ``pid`` is or descends from, where the process still has that start time."""
    for candidate in (pid, *ancestors(pid)):
        entry = agents.get(candidate)
        if entry is not None:
            start = process_start(candidate)
            if start is not None and same_start(start, entry[1]):
                return candidate, entry[0]
    return None


START_TOLERANCE = 0.05
"""Seconds two start times of one process may differ by: /proc has clock-tick resolution."""


def same_start(a: float, b: float) -> bool:
    """Start times from /proc have clock-tick resolution; allow for rounding."""
    return abs(a - b) < START_TOLERANCE


def is_alive(pid: int, start: float, unknown: bool = False) -> bool:
    """True while ``pid`` exists and is still the process that started at ``start``.

    A process we may not inspect counts as alive (it exists); a pid now held by a
    process with a different start time means the original is gone. ``unknown`` is the
    answer when /proc cannot be read at all (out of file descriptors): False where a
    wrong "alive" would be unsafe (before a signal), True where a wrong "dead" would
    be (the sweep would mark a live session gone).
    """
    if pid <= 0:
        return False
    if _LINUX:
        try:
            fields = _stat_fields(pid)
        except (FileNotFoundError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        except OSError:
            return unknown
        if fields[0] == b"Z":
            return False
        global _clock_ticks
        if _clock_ticks is None:
            _clock_ticks = os.sysconf("SC_CLK_TCK")
        return same_start(_linux_boot_time() + int(fields[19]) / _clock_ticks, start)
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return same_start(p.create_time(), start)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def process_uid(pid: int) -> int | None:
    """The real uid a process runs as, or None if it does not exist."""
    if _LINUX:
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None
    import psutil

    try:
        return psutil.Process(pid).uids().real
    except psutil.Error:
        return None


def machine_id(state_dir: Path) -> str:
    """A stable id for this machine, persisted on first use beside the database
    (``machine_secret.machine_id``, which the hook's hub client uses without this module)."""
    from . import machine_secret

    return machine_secret.machine_id(os.fspath(state_dir))


def host_label() -> str:
    import socket

    return socket.gethostname().split(".", 1)[0] or "localhost"


def git_info(cwd: str) -> tuple[str | None, str | None]:
    """(repository root, branch) for ``cwd`` without running git."""
    from pathlib import Path

    try:
        here = Path(cwd).resolve()
    except OSError:
        return None, None
    for folder in (here, *here.parents):
        dotgit = folder / ".git"
        try:
            if dotgit.is_dir():
                return str(folder), _branch(dotgit)
            if dotgit.is_file():
                text = dotgit.read_text(errors="replace").strip()
                if text.startswith("gitdir:"):
                    gitdir = Path(text[7:].strip())
                    if not gitdir.is_absolute():
                        gitdir = folder / gitdir
                    return str(folder), _branch(gitdir)
        except OSError:
            return None, None
    return None, None


def _branch(gitdir: Path) -> str | None:
    try:
        head = (gitdir / "HEAD").read_text(errors="replace").strip()
    except OSError:
        return None
    if head.startswith("ref: "):
        ref = head[5:]
        return ref.removeprefix("refs/heads/")
    return head[:12] or None


def tty_name() -> str | None:
    for fd in (0, 1, 2):
        try:
            return os.ttyname(fd)
        except OSError:
            continue
    return None
