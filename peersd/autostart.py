"""Start a daemon when nothing answers on the socket, without two clients starting two.

Clients serialise on an flock beside the socket, look again once they hold it, and
only then launch ``python -m peersd --detach`` with the absolute interpreter path. The
daemon's own instance lock is the second line of defence.

When a service manager owns the socket (``peers install service``: a systemd user socket
unit that is enabled, or a launchd agent), clients never start a daemon of their own: it
would compete with the supervised one for the socket path. They say how to start the
unit instead. That check only looks at files, and only once nothing has answered.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import wire
from .config import LAUNCHD_LABEL, Settings, home
from .errors import DaemonUnreachable
from .private_files import check_socket_owner, ensure_private_dir

NOT_LISTENING = (errno.ENOENT, errno.ECONNREFUSED)
SYSTEMD_SOCKET_UNIT = "claude-peers.socket"
SYSTEMD_SERVICE_UNIT = "claude-peers.service"


@dataclass(frozen=True)
class Supervisor:
    """A service manager set up to run peersd for one socket (found by its files)."""

    kind: str
    """``systemd`` or ``launchd``"""
    unit: Path
    """The socket unit or the launchd plist."""
    enabled: bool
    """systemd: ``systemctl --user enable`` linked it into sockets.target; launchd: always."""
    start: str
    """The command that starts it."""


def systemd_user_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user`` (default ``~/.config/systemd/user``)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else home(env) / ".config"
    return root / "systemd" / "user"


def launchd_plist(env: Mapping[str, str] | None = None) -> Path:
    return home(env) / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def _unit_socket(unit: Path, env: Mapping[str, str]) -> str | None:
    """The path in the unit's ``ListenStream=``; None when it cannot be told."""
    try:
        text = unit.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.strip() != "ListenStream":
            continue
        value = value.strip()
        runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        known = {"h": str(home(env)), "t": runtime, "%": "%"}
        out, i = [], 0
        while i < len(value):
            if value[i] == "%" and i + 1 < len(value):
                if value[i + 1] not in known:
                    return None
                out.append(known[value[i + 1]])
                i += 2
            else:
                out.append(value[i])
                i += 1
        return os.path.normpath("".join(out))
    return None


def _plist_socket(plist: Path) -> str | None:
    import plistlib

    try:
        with open(plist, "rb") as f:
            data = plistlib.load(f)
        return str(data["EnvironmentVariables"]["CLAUDE_PEERS_SOCKET"])
    except Exception:
        return None


def installed_supervisor(
    settings: Settings, env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> Supervisor | None:
    """The service manager set up to serve ``settings.socket``, if any; file checks only."""
    env = os.environ if env is None else env
    if platform == "darwin":
        plist = launchd_plist(env)
        if not plist.is_file():
            return None
        path = _plist_socket(plist)
        if path is not None and path != settings.socket:
            return None
        return Supervisor(
            "launchd",
            plist,
            True,
            f"launchctl kickstart gui/{os.getuid()}/{LAUNCHD_LABEL} "
            "(if it is not loaded: peers install service)",
        )
    unit_dir = systemd_user_dir(env)
    unit = unit_dir / SYSTEMD_SOCKET_UNIT
    if not unit.is_file():
        return None
    path = _unit_socket(unit, env)
    if path is not None and path != settings.socket:
        return None
    enabled = os.path.lexists(unit_dir / "sockets.target.wants" / SYSTEMD_SOCKET_UNIT)
    return Supervisor("systemd", unit, enabled, f"systemctl --user start {SYSTEMD_SOCKET_UNIT}")


def _supervised_error(settings: Settings, sup: Supervisor) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"peersd is not answering on {settings.socket}, and {sup.kind} runs it ({sup.unit}), "
        f"so no daemon is started here; start or repair the service: {sup.start} "
        "(then see `peers status`)"
    )


def connect_unix(path: str, timeout: float) -> socket.socket:
    sock: socket.socket = wire.connect_unix(path, timeout, socket.socket)
    return sock


@contextlib.contextmanager
def _spawn_lock(settings: Settings) -> Iterator[None]:
    fd = os.open(settings.spawn_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try(settings: Settings) -> socket.socket | None:
    try:
        return connect_unix(settings.socket, settings.connect_timeout)
    except OSError as e:
        if e.errno in NOT_LISTENING:
            return None
        raise DaemonUnreachable(f"cannot connect to {settings.socket}: {e.strerror}") from None


def connect(
    settings: Settings, autostart: bool | None = None, env: Mapping[str, str] | None = None
) -> socket.socket:
    """A connected socket to the daemon, starting one first if allowed and needed. ``env``
    (default ours) is the environment of the session it is for: the daemon started runs
    with it, and the service manager's files are looked for under its HOME."""
    check_socket_owner(settings.socket_path)
    sock = _try(settings)
    if sock is not None:
        return sock
    sup = installed_supervisor(settings, env)
    if sup is not None and sup.enabled:
        raise _supervised_error(settings, sup)
    if not (settings.autostart if autostart is None else autostart):
        raise DaemonUnreachable(
            f"peersd is not running (nothing answers on {settings.socket}); "
            "start it with `peers daemon start`"
        )
    ensure_private_dir(settings.run_dir)
    with _spawn_lock(settings):
        sock = _try(settings)
        if sock is not None:
            return sock
        launch(settings, env)
        deadline = time.monotonic() + settings.connect_timeout
        delay = 0.005
        while True:
            sock = _try(settings)
            if sock is not None:
                return sock
            if time.monotonic() > deadline:
                raise DaemonUnreachable(
                    f"started peersd but nothing answered on {settings.socket} within "
                    f"{settings.connect_timeout:g}s; see {settings.daemon_log_path}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def launch(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Run ``peersd --detach`` with ``env`` (default ours) and wait for it to hand the
    daemon off."""
    args = [
        sys.executable,
        "-m",
        "peersd",
        "--detach",
        "--socket",
        settings.socket,
        "--db",
        settings.db,
    ]
    if os.path.exists(settings.config):
        args += ["--config", settings.config]
    done = subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=None if env is None else dict(env),
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise DaemonUnreachable(
            "could not start peersd: " + done.stderr.decode(errors="replace").strip()
        )
