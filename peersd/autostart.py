"""Start a daemon when nothing answers on the socket, without two clients starting two.

Clients serialise on an flock beside the socket, look again once they hold it, and
only then launch ``python -m peersd --detach`` with the absolute interpreter path. The
daemon's own instance lock is the second line of defence.
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
from collections.abc import Iterator

from .config import Settings, check_socket_owner, ensure_private_dir
from .errors import DaemonUnreachable

NOT_LISTENING = (errno.ENOENT, errno.ECONNREFUSED)


def connect_unix(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
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


def connect(settings: Settings, autostart: bool | None = None) -> socket.socket:
    """A connected socket to the daemon, starting one first if allowed and needed."""
    check_socket_owner(settings.socket_path)
    sock = _try(settings)
    if sock is not None:
        return sock
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
        launch(settings)
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


def launch(settings: Settings) -> None:
    """Run ``peersd --detach`` and wait for it to hand the daemon off."""
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
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise DaemonUnreachable(
            "could not start peersd: " + done.stderr.decode(errors="replace").strip()
        )
