"""Starting and stopping peersd like a well-behaved service.

One instance per socket (an flock held for the daemon's life), a socket handed over by
systemd adopted as is, a stale socket file recovered only when nothing answers on it,
logs on stderr in a form journald understands, and SIGTERM/SIGINT answered by finishing
the writes in flight, closing connections and exiting 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import ssl
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from . import __version__
from .config import LAUNCHD_LABEL, ConfigError, Settings
from .connection import Connection
from .endpoint import host_port, is_loopback, tcp_warnings
from .errors import ClaudePeersError
from .mailops import index_loop
from .private_files import ensure_private_dir
from .server import Daemon
from .store import Store, StoreError

log = logging.getLogger("peersd")

FD_SPARE = 64
"""Descriptors beyond the connections: the database and its WAL, listeners, /proc reads."""

BACKLOG = 512
"""Connections the kernel queues while the daemon is busy; more get EAGAIN at once."""
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ALREADY_RUNNING = 3


class StartupError(ClaudePeersError):
    """peersd cannot start; the message says why and what to do."""

    exit_code = EXIT_ERROR


class AlreadyRunning(StartupError):
    exit_code = EXIT_ALREADY_RUNNING


_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """``<priority>message``: journald turns the prefix into the record's level."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{super().format(record)}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s peersd[%(process)d] %(levelname)s %(message)s")
        )
    root = logging.getLogger("peersd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class InstanceLock:
    """An flock beside the socket: one daemon per socket path, whoever started it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"peersd is already running for {self.path.with_suffix('')} (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (sd_listen_fds), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    socks = []
    for fd in range(3, 3 + count):
        os.set_inheritable(fd, False)
        socks.append(socket.socket(fileno=fd))
    return socks


def _probe(path: str) -> bool:
    """True if something accepts connections on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()


def bind_socket(path: Path) -> socket.socket:
    """Bind our own listening socket, recovering a stale file left by a dead daemon."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
        if st.st_uid != os.getuid():
            raise StartupError(f"socket {path} belongs to uid {st.st_uid}; refusing to use it")
        if _probe(str(path)):
            raise AlreadyRunning(f"another daemon is answering on {path}")
        log.info("removing stale socket %s", path)
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def tcp_plan(settings: Settings) -> tuple[str, int, ssl.SSLContext | None] | None:
    """Validate the TCP listener settings; refuse an unprotected one with a clear error."""
    if not settings.tcp:
        return None
    try:
        host, port = host_port(settings.tcp, "tcp")
    except ConfigError as e:
        raise StartupError(str(e)) from None
    if not settings.token:
        if not is_loopback(host):
            raise StartupError(
                f"refusing to listen on {host}:{port} without a token: anyone who can reach "
                "it could read and send mail. Set CLAUDE_PEERS_TOKEN (16+ characters)."
            )
        if not settings.tcp_insecure:
            raise StartupError(
                f"refusing an unauthenticated TCP listener on {host}:{port}: set "
                "CLAUDE_PEERS_TOKEN, or tcp_insecure = true to allow it on loopback"
            )
    context = None
    if settings.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise StartupError(f"cannot load the TLS certificate or key: {e}") from None
    return host, port, context


async def _tcp_listener(
    settings: Settings, daemon: Daemon, loop: asyncio.AbstractEventLoop
) -> asyncio.AbstractServer | None:
    plan = tcp_plan(settings)
    if plan is None:
        return None
    host, port, context = plan
    try:
        # TLS is started by each connection (``Connection.start_tls``), not by the server:
        # so a handshake in progress is already counted in the TCP budget, and one that
        # fails or stalls is released by its owner.
        server = await loop.create_server(
            lambda: Connection(daemon, remote=True, tls=context),
            host,
            port,
            reuse_address=True,
            backlog=BACKLOG,
        )
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    log.info(
        "listening on %s://%s:%d (%s)",
        "tls" if context else "tcp",
        host,
        port,
        "token required" if settings.token else "NO TOKEN, loopback only",
    )
    for warning in tcp_warnings(settings):
        log.warning("%s", warning)
    return server


def _socket_name(sock: socket.socket) -> str | None:
    name = sock.getsockname()
    return name if isinstance(name, str) and name else None


def _supervisor(
    adopted: bool, env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> str:
    """Who runs this daemon: systemd, launchd, auto-started (by a client) or manual."""
    env = os.environ if env is None else env
    if adopted:
        return "systemd"
    if env.get("CLAUDE_PEERS_AUTOSTARTED") == "1":
        return "auto-started"
    # systemd (248+) names the pid it exec'd; INVOCATION_ID alone is inherited by shells
    # in terminals that run as user services, so it does not prove anything.
    if env.get("SYSTEMD_EXEC_PID") == str(os.getpid()):
        return "systemd"
    if platform == "darwin":
        # launchd puts the job's label in XPC_SERVICE_NAME. Shells in Terminal, iTerm or
        # an editor carry "0" or "application.<bundle id>.<n>" instead.
        job = env.get("XPC_SERVICE_NAME", "")
        if job == LAUNCHD_LABEL or (job not in ("", "0") and not job.startswith("application.")):
            return "launchd"
    return "manual"


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-file limit to ``wanted`` (as far as the hard limit allows), so
    ``max_connections`` is what ends new connections, not EMFILE in accept."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
            return
    if target < wanted:
        log.warning(
            "open-file limit is %d (hard limit); max_connections %d may not all fit",
            target,
            wanted - FD_SPARE,
        )


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT or a shutdown request; return the exit code."""
    os.umask(0o077)
    loop = asyncio.get_running_loop()
    try:
        ensure_private_dir(settings.run_dir)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    adopted_socks = systemd_sockets()
    tcp_budget = settings.tcp_max_connections if settings.tcp else 0
    raise_fd_limit(settings.max_connections + tcp_budget + FD_SPARE)
    lock = InstanceLock(settings.lock_path)
    lock.acquire()
    store: Store | None = None
    server: asyncio.AbstractServer | None = None
    tcp_server: asyncio.AbstractServer | None = None
    bound_path: Path | None = None
    try:
        if adopted_socks:
            sock = adopted_socks[0]
            log.info("adopted socket from systemd (fd %d)", sock.fileno())
        else:
            sock = bind_socket(settings.socket_path)
            bound_path = settings.socket_path
        try:
            store = Store(settings.db_path, settings.sync)
            # Reads (or makes) the machine-id file beside the database: refused like it.
            daemon = Daemon(
                settings,
                store,
                loop,
                socket_path=_socket_name(sock) or settings.socket,
                supervisor=_supervisor(bool(adopted_socks)),
                adopted=bool(adopted_socks),
            )
        except (StoreError, ConfigError) as e:
            raise StartupError(str(e)) from None
        failed: Exception | None = None
        # Every task the daemon starts belongs to this group, open before anything listens
        # (a TLS connection accepted at once starts its handshake as a task; with asyncio's
        # own loop that can happen while the next listener is being created). On stop the
        # tasks are cancelled and awaited (a kill records its outcome) before the store is
        # closed below.
        async with asyncio.TaskGroup() as tg:
            daemon.task_group = tg
            try:
                # TCP first: once the local socket answers, everything is up.
                tcp_server = await _tcp_listener(settings, daemon, loop)
                # asyncio listens again, with a backlog of 100 unless told otherwise.
                server = await loop.create_unix_server(
                    lambda: Connection(daemon), sock=sock, backlog=BACKLOG
                )
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, daemon.stop_requested.set)
                log.info(
                    "peersd %s listening on %s (db %s, pid %d, %s)",
                    __version__,
                    settings.socket,
                    settings.db,
                    os.getpid(),
                    daemon.supervisor,
                )
                if ready is not None:
                    ready.set()
                daemon.spawn(daemon.housekeeper.run())
                daemon.spawn(index_loop(daemon))
                if daemon.federation is not None:
                    daemon.spawn(daemon.federation.run())
                await daemon.stop_requested.wait()
                log.info("stopping: finishing writes in flight")
            except Exception as e:  # raised as itself below, not in an ExceptionGroup
                failed = e
            finally:
                daemon.stopping = True
                if server is not None:
                    server.close()
                if tcp_server is not None:
                    tcp_server.close()
                daemon.cancel_tasks()
        daemon.task_group = None
        if failed is not None:
            raise failed
        await daemon.commit.drained()
        for conn in list(daemon.connections):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        log.info("stopped cleanly")
        return EXIT_OK
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        if server is not None:
            server.close()
        if store is not None:
            store.close()
        if bound_path is not None:
            with contextlib.suppress(FileNotFoundError):
                bound_path.unlink()
        lock.release()


def run(settings: Settings) -> int:
    setup_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency but optional at runtime
        uvloop = None  # type: ignore[assignment]
    try:
        if uvloop is not None:
            return uvloop.run(serve(settings))
        return asyncio.run(serve(settings))
    except StartupError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:  # pragma: no cover - the signal handler normally wins
        return EXIT_OK
