"""Our helper processes whose agent session is gone, and how to end them safely.

A helper is a ``peers-mcp`` server or a ``peers-hook --wait`` waiter of the current
user that talks to *this* daemon (its socket or hub URL, resolved from its own
environment and arguments exactly as it resolved them). A helper is an orphan when:

- its recorded agent (for ``peers-mcp``: the peer it registered, found by
  ``helper_pid``; for a waiter: the peer named by the lock file it holds) no longer
  exists with the same start time, and no Claude Code or Codex process is among its
  ancestors; or
- nothing records its agent, none is among its ancestors, and it was re-parented to
  pid 1 or to a subreaper (its parent exited).

A helper whose recorded agent still runs is never an orphan, whoever its parent is.
Nothing else is ever looked at twice: processes of other users, other programs, and
helpers of another daemon are skipped while scanning.

Ending one (``start`` / ``force``) re-checks pid, start time, uid and command line
before every signal, so a pid that was reused in the meantime is left alone.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from . import identity
from .agents import nearest_agent
from .config import ConfigError, Settings, load

ENTRY_POINTS = {"peers-mcp": "peers-mcp", "peers-hook": "peers-hook"}
MODULES = {"peers_mcp.server": "peers-mcp", "peers_mcp.hook": "peers-hook"}
INTERPRETERS = ("python", "pypy")
SUBREAPERS = frozenset(
    {
        "systemd",
        "init",
        "launchd",
        "tini",
        "dumb-init",
        "catatonit",
        "s6-svscan",
        "runsvdir",
        "supervisord",
    }
)
"""Process names that adopt orphans (``PR_SET_CHILD_SUBREAPER`` or init-like)."""
LOCK_RE = re.compile(r"^peers-hook-wait\.(p-[0-9a-f]{8})\.lock$")
_VALUED_PY_OPTS = frozenset({"-X", "-W", "-Q"})


@dataclass
class Helper:
    """One of our helper processes, as found by the scan."""

    pid: int
    started: float
    kind: str
    """"peers-mcp" or "peers-hook --wait"."""
    ppid: int
    argv: list[str]
    peer_id: str | None = None
    """For a waiter: the peer of the lock file it holds."""


@dataclass
class Orphan:
    pid: int
    started: float
    kind: str
    why: str
    peer_id: str | None = None
    peer_name: str | None = None

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.started)

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "kind": self.kind,
            "started": self.started,
            "age": round(self.age, 1),
            "peer_id": self.peer_id,
            "peer_name": self.peer_name,
            "why": self.why,
        }


@dataclass
class Action:
    """What cleanup did to one orphan."""

    orphan: Orphan
    outcome: str = "pending"
    """terminated, killed, already_gone, still_running, skipped or failed."""
    detail: str = ""
    signals: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            **self.orphan.to_json(),
            "outcome": self.outcome,
            "signals": self.signals,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class KnownPeer:
    """What the daemon knows of a peer, enough to judge its helpers."""

    id: str
    name: str
    state: str
    agent_pid: int
    agent_start: float
    helper_pid: int | None
    last_seen: float


# --------------------------------------------------------------------------- recognising


def helper_kind(argv: list[str]) -> tuple[str, list[str]] | None:
    """("peers-mcp" | "peers-hook --wait", its own arguments) when ``argv`` is ours.

    Recognised: the ``peers-mcp`` / ``peers-hook`` entry points (run directly, or as a
    script by a Python interpreter), ``python -m peers_mcp.server|hook`` and
    ``python -c "from peers_mcp.hook import main; main()"``. A hook counts only with
    ``--wait`` (the per-event hook ends within milliseconds by itself).
    """
    if not argv:
        return None
    found: tuple[str, list[str]] | None = None
    first = os.path.basename(argv[0])
    if first in ENTRY_POINTS:
        found = ENTRY_POINTS[first], argv[1:]
    elif first.startswith(INTERPRETERS):
        i = 1
        while i < len(argv):
            arg = argv[i]
            if arg == "-m" or (arg.startswith("-m") and len(arg) > 2):
                module = argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg[2:]
                rest = argv[i + 2 :] if arg == "-m" else argv[i + 1 :]
                if module in MODULES:
                    found = MODULES[module], rest
                break
            if arg == "-c":
                code = argv[i + 1] if i + 1 < len(argv) else ""
                for module, kind in MODULES.items():
                    if f"from {module} import" in code or f"import {module}" in code:
                        found = kind, argv[i + 2 :]
                break
            if not arg.startswith("-"):
                script = os.path.basename(arg)
                if script in ENTRY_POINTS:
                    found = ENTRY_POINTS[script], argv[i + 1 :]
                break
            i += 2 if arg in _VALUED_PY_OPTS else 1
    if found is None:
        return None
    kind, rest = found
    if kind == "peers-hook":
        if "--wait" not in rest:
            return None
        kind = "peers-hook --wait"
    return kind, rest


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def endpoint_key(settings: Settings) -> str:
    """Where a client with these settings connects: its hub URL, else its socket."""
    return settings.url.strip() or settings.socket


def _helper_endpoint(proc: psutil.Process, args: list[str]) -> str | None:
    """The endpoint the helper uses, resolved from its own environment; None if unknown."""
    try:
        env = proc.environ()
        cwd = proc.cwd()
    except (psutil.Error, OSError):
        return None
    sock = _option(args, "--socket")
    if sock and not os.path.isabs(sock):
        sock = os.path.join(cwd, sock)
    config = _option(args, "--config")
    if config and not os.path.isabs(config) and not config.startswith("~"):
        config = os.path.join(cwd, config)
    try:
        return endpoint_key(load({"socket": sock, "config": config}, env=env))
    except (ConfigError, OSError, ValueError):
        return None


def _held_lock_peer(proc: psutil.Process) -> str | None:
    """The peer id of the waiter lock file a process holds open, if any."""
    try:
        files = proc.open_files()
    except (psutil.Error, OSError):
        return None
    for f in files:
        m = LOCK_RE.match(os.path.basename(f.path))
        if m:
            return m.group(1)
    return None


def find_helpers(
    endpoints: Iterable[str], known_pids: Iterable[int] = (), uid: int | None = None
) -> list[Helper]:
    """Our helper processes (this uid) that use one of ``endpoints``.

    A helper whose environment cannot be read counts only when its pid is in
    ``known_pids`` (a helper the daemon knows: registered, or connected).
    """
    uid = os.getuid() if uid is None else uid
    wanted = set(endpoints)
    known = set(known_pids)
    me = os.getpid()
    found: list[Helper] = []
    for proc in psutil.process_iter(["pid", "ppid", "uids", "cmdline", "create_time", "status"]):
        info = proc.info
        try:
            if info["pid"] == me or info["uids"] is None or info["uids"].real != uid:
                continue
            if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
                continue
            recognised = helper_kind(info["cmdline"])
            if recognised is None:
                continue
            kind, args = recognised
            where = _helper_endpoint(proc, args)
            if where is None and info["pid"] not in known:
                continue
            if where is not None and where not in wanted:
                continue
            helper = Helper(
                pid=info["pid"],
                started=info["create_time"],
                kind=kind,
                ppid=info["ppid"] or 0,
                argv=list(info["cmdline"]),
            )
            if kind == "peers-hook --wait":
                helper.peer_id = _held_lock_peer(proc)
            found.append(helper)
        except (psutil.Error, OSError):
            continue
    return found


# --------------------------------------------------------------------------- judging


def _agent_ancestor(pid: int) -> int | None:
    """The nearest Claude Code or Codex process among ``pid``'s ancestors."""
    agent = nearest_agent(pid)
    return agent.pid if agent is not None else None


def _adopter(ppid: int) -> str | None:
    """How the parent shows the helper was re-parented, or None if it does not."""
    if ppid <= 1:
        return "re-parented to pid 1 (its parent exited)"
    name = identity.process_name(ppid)
    if name in SUBREAPERS:
        return f"re-parented to {name} (pid {ppid}, a subreaper; its parent exited)"
    return None


def _recorded_peer(helper: Helper, peers: list[KnownPeer]) -> KnownPeer | None:
    if helper.peer_id is not None:
        for peer in peers:
            if peer.id == helper.peer_id:
                return peer
        return None
    if helper.kind != "peers-mcp":
        return None
    # The newest registration by this helper pid, made while this very process ran.
    mine = [x for x in peers if x.helper_pid == helper.pid and x.last_seen >= helper.started - 1.0]
    mine.sort(key=lambda x: (x.state == "active", x.last_seen), reverse=True)
    return mine[0] if mine else None


def judge(helper: Helper, peers: list[KnownPeer]) -> Orphan | None:
    """``helper`` as an orphan with the reason, or None while its agent may still run."""
    if _agent_ancestor(helper.pid) is not None:
        return None  # under a live agent: in use, whatever the records say
    peer = _recorded_peer(helper, peers)
    adopted = _adopter(helper.ppid)
    if peer is not None:
        if identity.is_alive(peer.agent_pid, peer.agent_start):
            return None
        why = f"its agent (pid {peer.agent_pid}) has exited"
        if adopted:
            why += f"; {adopted}"
        return Orphan(helper.pid, helper.started, helper.kind, why, peer.id, peer.name)
    if adopted is None:
        return None  # nothing says its agent is gone
    return Orphan(helper.pid, helper.started, helper.kind, adopted, helper.peer_id)


def scan(
    settings: Settings | Iterable[str],
    peers: list[KnownPeer],
    known_pids: Iterable[int] = (),
) -> list[Orphan]:
    """Every orphaned helper of ours (see the module docstring), oldest first.

    ``settings``: the daemon's or client's settings, or the endpoints to match.
    """
    endpoints = [endpoint_key(settings)] if isinstance(settings, Settings) else list(settings)
    pids = set(known_pids) | {x.helper_pid for x in peers if x.helper_pid}
    found = []
    for helper in find_helpers(endpoints, pids):
        orphan = judge(helper, peers)
        if orphan is not None:
            found.append(orphan)
    found.sort(key=lambda o: o.started)
    return found


def known_peers(peers: Iterable[object]) -> list[KnownPeer]:
    """``KnownPeer`` values from ``protocol.Peer`` objects (a snapshot)."""
    return [
        KnownPeer(
            x.id,  # type: ignore[attr-defined]
            x.name,  # type: ignore[attr-defined]
            x.state,  # type: ignore[attr-defined]
            x.agent_pid,  # type: ignore[attr-defined]
            x.agent_start,  # type: ignore[attr-defined]
            x.helper_pid,  # type: ignore[attr-defined]
            x.last_seen,  # type: ignore[attr-defined]
        )
        for x in peers
    ]


# --------------------------------------------------------------------------- ending


def still_ours(orphan: Orphan) -> bool:
    """Still the same process (pid + start time), ours, and one of our helpers."""
    if not identity.is_alive(orphan.pid, orphan.started):
        return False
    if identity.process_uid(orphan.pid) != os.getuid():
        return False
    return helper_kind(identity.process_cmdline(orphan.pid)) is not None


def _signal(action: Action, sig: signal.Signals) -> bool:
    """Send ``sig`` if the process is still the orphan we judged; False if it is not."""
    if not still_ours(action.orphan):
        return False
    try:
        os.kill(action.orphan.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as e:
        action.outcome, action.detail = "failed", f"cannot signal: {e.strerror}"
        return False
    action.signals.append(sig.name)
    return True


def start(orphans: list[Orphan]) -> list[Action]:
    """SIGTERM each orphan (and SIGCONT, so a stopped one can act on it)."""
    actions = [Action(o) for o in orphans]
    for action in actions:
        if _signal(action, signal.SIGTERM):
            _signal(action, signal.SIGCONT)
        elif action.outcome == "pending":
            action.outcome, action.detail = "already_gone", "had exited before the signal"
    return actions


def waiting(actions: list[Action]) -> list[Action]:
    """The actions whose process still runs; the others are marked done."""
    left = []
    for action in actions:
        if action.outcome != "pending":
            continue
        if identity.is_alive(action.orphan.pid, action.orphan.started):
            left.append(action)
        elif "SIGKILL" in action.signals:
            action.outcome, action.detail = "killed", "did not exit on SIGTERM; sent SIGKILL"
        else:
            action.outcome, action.detail = "terminated", "exited after SIGTERM"
    return left


def force(actions: list[Action]) -> None:
    """SIGKILL what still runs after the grace period (re-checked first)."""
    for action in waiting(actions):
        if not _signal(action, signal.SIGKILL) and action.outcome == "pending":
            action.outcome, action.detail = "terminated", "exited after SIGTERM"


def finish(actions: list[Action]) -> None:
    """Settle every action once waiting is over."""
    for action in waiting(actions):
        action.outcome = "still_running"
        action.detail = "still running after " + " and ".join(action.signals or ["no signal"])


def cleanup(orphans: list[Orphan], grace: float, poll: float = 0.05) -> list[Action]:
    """End ``orphans``: SIGTERM, then SIGKILL after ``grace`` seconds (blocking)."""
    actions = start(orphans)
    deadline = time.monotonic() + grace
    while waiting(actions) and time.monotonic() < deadline:
        time.sleep(poll)
    if waiting(actions):
        force(actions)
        deadline = time.monotonic() + 2.0
        while waiting(actions) and time.monotonic() < deadline:
            time.sleep(poll)
    finish(actions)
    return actions
