"""Client library for peersd, in a blocking flavour (CLI, hooks) and an asyncio one.

Both speak the framed protocol of ``protocol.py``, raise ``PeersError`` for typed
failures, start the daemon when nothing answers (unless told not to) and keep events
that arrive between answers. ``AsyncClient`` also reconnects by itself with backoff
and re-registers, so a long-lived helper keeps its peer across daemon restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NoReturn, TypeVar

import msgspec

from . import __version__, autostart
from . import protocol as p
from .config import Settings, load
from .endpoint import Endpoint, client_endpoint, client_tls, open_tcp
from .errors import Code, ConfigError, DaemonUnreachable, PeersError
from .wire import tls_failed

log = logging.getLogger("peersd.client")

A = TypeVar("A", bound=p.Frame)
FATAL = frozenset(
    {
        Code.BAD_FRAME,
        Code.FRAME_TOO_LARGE,
        Code.HELLO_REQUIRED,
        Code.UNSUPPORTED_VERSION,
        Code.FORBIDDEN,
        Code.SHUTTING_DOWN,
        Code.TOO_MANY_CONNECTIONS,
    }
)
"""Errors after which the daemon hangs up (sent without a request id)."""


def _hello(kind: str, settings: Settings, target: Endpoint) -> p.Hello:
    if not target.remote:
        return p.Hello(protocol=p.PROTOCOL_VERSION, client_version=__version__, client_kind=kind)
    machine, secret = hub_credentials(settings)
    return p.Hello(
        protocol=p.PROTOCOL_VERSION,
        client_version=__version__,
        client_kind=kind,
        token=settings.token or None,
        machine_id=machine,
        machine_secret=secret,
    )


def hub_credentials(settings: Settings) -> tuple[str, str]:
    """(machine id, machine secret) this machine proves itself with to a hub: the files
    beside its database (``machine_secret.hub_credentials``, as the hook's client reads them)."""
    from . import machine_secret

    try:
        return machine_secret.hub_credentials(str(settings.db_path.parent))
    except ConfigError as e:
        raise PeersError(
            Code.FORBIDDEN, f"cannot use this machine's id or hub secret: {e}"
        ) from None


def _open_remote(target: Endpoint, settings: Settings) -> socket.socket:
    """A TCP (or TLS) connection to a hub; hubs are never auto-started."""
    try:
        sock = open_tcp(target, settings.connect_timeout)
    except OSError as e:
        raise DaemonUnreachable(f"cannot reach the hub at {target}: {e}") from None
    if target.scheme == "tls":
        try:
            return client_tls(settings).wrap_socket(sock, server_hostname=target.host)
        except (ssl.SSLError, OSError) as e:
            sock.close()
            raise DaemonUnreachable(tls_failed(target, e)) from None
    return sock


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _raise(frame: p.Error) -> NoReturn:
    raise PeersError(frame.code, frame.message, frame.candidates)


def _answer(req: p.Request[A], frame: p.Frame) -> A:
    """``frame`` if it is the kind that answers ``req`` (``protocol.ANSWERS``)."""
    if not isinstance(frame, p.ANSWERS[type(req)]):
        raise PeersError(
            Code.BAD_FRAME,
            f"peersd answered {type(req).__name__} with {type(frame).__name__}",
        )
    return frame  # type: ignore[return-value]  # checked just above


class Client:
    """Blocking client: one request at a time, events buffered in between."""

    def __init__(
        self,
        settings: Settings | None = None,
        kind: str = "cli",
        autostart: bool | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings or load()
        self.kind = kind
        self.autostart = autostart
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.welcome: p.Welcome | None = None
        self.events: collections.deque[p.Frame] = collections.deque()
        self._frames = p.FrameBuffer(self.settings.max_frame)
        self._pending: collections.deque[bytes] = collections.deque()
        self._next_id = 0
        self._recv_timeout: float | None = None
        self._kernel_timeouts = True
        self.binding: p.Register | p.Attach | None = None
        """The request that made this client a peer, made again if the daemon forgets it."""

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> p.Welcome:
        if self.welcome is not None:
            return self.welcome
        target = client_endpoint(self.settings)
        self._recv_timeout = None
        if target.remote:
            self.sock = _open_remote(target, self.settings)
        else:
            self.sock = autostart.connect(self.settings, self.autostart)
        if isinstance(self.sock, ssl.SSLSocket):
            self._kernel_timeouts = False
            self.sock.settimeout(self.timeout)
        else:
            # A blocking socket with kernel timeouts: one syscall per send or receive,
            # where a Python-level timeout would add a poll() before each.
            self._kernel_timeouts = True
            self.sock.settimeout(None)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.timeout))
        self._write(_hello(self.kind, self.settings, target))
        frame = self._read(time.monotonic() + self.timeout)
        if isinstance(frame, p.Error):
            self.close()
            _raise(frame)
        if not isinstance(frame, p.Welcome):
            self.close()
            raise PeersError(Code.BAD_FRAME, f"expected a welcome, got {type(frame).__name__}")
        self.welcome = frame
        return frame

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.welcome = None

    def _write(self, frame: p.Frame) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(p.encode(frame))
        except OSError as e:
            self.close()
            raise DaemonUnreachable(f"lost the connection to peersd: {e}") from None

    def _read(self, deadline: float | None) -> p.Frame | None:
        """The next frame, or None if ``deadline`` passes first."""
        while not self._pending:
            if self.sock is None:
                raise DaemonUnreachable("not connected to peersd")
            if deadline is None:
                self._set_recv_timeout(0.0)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                # Re-arm the kernel timeout only when it is off by more than 10%.
                if not self._recv_timeout or abs(self._recv_timeout - left) > left * 0.1:
                    self._set_recv_timeout(left)
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, TimeoutError):
                return None
            except OSError as e:
                self.close()
                raise DaemonUnreachable(f"lost the connection to peersd: {e}") from None
            if not data:
                self.close()
                raise DaemonUnreachable("peersd closed the connection")
            self._pending.extend(self._frames.feed(data))
            if not self._pending and self._frames.error is not None:
                self.close()
                raise PeersError(Code.FRAME_TOO_LARGE, f"from peersd: {self._frames.error}")
        body = self._pending.popleft()
        try:
            return p.server_decoder.decode(body)
        except (msgspec.MsgspecError, UnicodeDecodeError) as e:  # msgspec: bad UTF-8
            raise PeersError(Code.BAD_FRAME, f"undecodable frame from peersd: {e}") from None

    def _set_recv_timeout(self, seconds: float) -> None:
        """How long a receive may wait; 0 waits forever."""
        if self.sock is not None and seconds != self._recv_timeout:
            if self._kernel_timeouts:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            else:
                self.sock.settimeout(seconds or None)
            self._recv_timeout = seconds

    def bind(self, req: p.Register | p.Attach) -> p.Peer:
        """Become a peer (register or attach), and again by itself should the daemon
        answer ``not_registered`` later (the peer was marked gone, or this is a new
        connection)."""
        reply = self.call(req)
        self.binding = _rebindable(req)
        return reply.peer

    def call(self, req: p.Request[A]) -> A:
        """Send ``req`` and return its answer; events that arrive meanwhile are kept."""
        try:
            return self._call(req)
        except PeersError as e:
            if e.code != Code.NOT_REGISTERED or not _retryable(req, self.binding):
                raise
        assert self.binding is not None
        log.info("peersd answered not_registered: binding again")
        self._call(self.binding)
        return self._call(req)

    def _call(self, req: p.Request[A]) -> A:
        self.connect()
        self._next_id += 1
        req.id = self._next_id
        self._write(req)
        deadline = time.monotonic() + self.timeout
        while True:
            frame = self._read(deadline)
            if frame is None:
                self.close()
                raise PeersError(
                    Code.TIMEOUT, f"peersd did not answer within {self.timeout:g}s"
                ) from None
            if isinstance(frame, p.EVENT_TYPES):
                self.events.append(frame)
                continue
            frame_id = getattr(frame, "id", None)
            if isinstance(frame, p.Error) and (frame_id is None or frame_id == req.id):
                if frame_id is None and frame.code in FATAL:
                    self.close()
                _raise(frame)
            if frame_id != req.id:
                continue
            if isinstance(req, p.Unregister):
                self.binding = None  # left on purpose: never bind again by itself
            return _answer(req, frame)

    def request(self, kind: type[p.Request[A]], **fields: Any) -> A:
        return self.call(kind(id=0, **fields))

    def next_event(self, timeout: float | None = None) -> p.Frame | None:
        """The next pushed event, waiting up to ``timeout`` seconds (None: forever)."""
        if self.events:
            return self.events.popleft()
        self.connect()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._read(deadline)
            if frame is None:
                return None
            if isinstance(frame, p.EVENT_TYPES):
                return frame
            if isinstance(frame, p.Error) and frame.id is None:
                if frame.code in FATAL:
                    self.close()
                _raise(frame)


class AsyncClient:
    """asyncio client for long-lived helpers: many requests in flight, events, reconnects.

    ``bind`` remembers the request that made this connection a peer (register or
    attach) and ``subscribe`` the event kinds; both are replayed after a reconnect, and
    when the daemon answers ``not_registered`` (the peer was marked gone while its
    helper lives) before the request is tried once more. Use as ``async with
    AsyncClient(...) as c``: every task it starts (reader, heartbeat, ``on_reconnect``)
    is owned by the client and cancelled and awaited when the block ends.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        kind: str = "other",
        autostart: bool | None = None,
        timeout: float = 30.0,
        reconnect: bool = True,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings or load()
        self.kind = kind
        self.autostart = autostart
        self.env = env
        """The environment a daemon this client autostarts runs with (None: ours); the
        MCP gateway passes each session's own."""
        self.timeout = timeout
        self.reconnect = reconnect
        self.on_reconnect = on_reconnect
        self.on_lost = on_lost
        """Called (not awaited) when the connection is lost, before reconnecting: a live
        view says the daemon went away (``peers dashboard``)."""
        self.events: asyncio.Queue[p.Frame] = asyncio.Queue()
        self.welcome: p.Welcome | None = None
        self.binding: p.Register | p.Attach | None = None
        self.peer: p.Peer | None = None
        self.kinds: list[p.EventKind] = []
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._waiting: dict[int, asyncio.Future[p.Frame]] = {}
        self._next_id = 0
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        """Every task this client started and has not yet awaited."""
        self._task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        """``on_reconnect`` running (a newer reconnect cancels it)."""
        self._bound = 0
        """Bumped on every (re)binding: a not_registered answer to a request sent before
        the last one needs no new binding, only a retry."""
        self._rebinding = asyncio.Lock()
        self._closing = False
        self.remote = False

    async def __aenter__(self) -> AsyncClient:
        await self._open()
        self._connected.set()
        self._task = self._spawn(self._run())
        if self.remote:
            self._beat_task = self._spawn(self._beat())
        return self

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a peersd client task failed", exc_info=task.exception())

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _beat(self) -> None:
        """A peer on another machine is alive while it heartbeats (no pid to check)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            if self.binding is not None and self._connected.is_set():
                with contextlib.suppress(PeersError):
                    await self.call(p.Heartbeat(id=0))

    async def aclose(self) -> None:
        """Cancel every task of this client and wait for them, then hang up."""
        self._closing = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # return_exceptions: one task's error must not leave the others unawaited.
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        self._beat_task = self._reconnect_task = self._task = None
        self._drop("client closed")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _open(self) -> None:
        target = client_endpoint(self.settings)
        limit = self.settings.max_frame + 8
        if target.remote:
            try:
                sock = await asyncio.to_thread(open_tcp, target, self.settings.connect_timeout)
            except OSError as e:
                raise DaemonUnreachable(f"cannot reach the hub at {target}: {e}") from None
            context = client_tls(self.settings) if target.scheme == "tls" else None
            sock.setblocking(False)
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    ssl=context,
                    server_hostname=target.host if context else None,
                    limit=limit,
                )
            except (ssl.SSLError, OSError) as e:
                sock.close()
                why = tls_failed(target, e) if context else f"cannot reach the hub at {target}: {e}"
                raise DaemonUnreachable(why) from None
        else:
            sock = await asyncio.to_thread(
                autostart.connect, self.settings, self.autostart, self.env
            )
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=limit)
        self.remote = target.remote
        writer.write(p.encode(_hello(self.kind, self.settings, target)))
        frame = await asyncio.wait_for(self._read_frame(reader), self.timeout)
        if isinstance(frame, p.Error):
            writer.close()
            _raise(frame)
        if not isinstance(frame, p.Welcome):
            writer.close()
            raise PeersError(Code.BAD_FRAME, "expected a welcome from peersd")
        self.welcome = frame
        self._reader, self._writer = reader, writer

    async def _read_frame(self, reader: asyncio.StreamReader) -> p.Frame:
        header = await reader.readexactly(4)
        size = p.frame_length(header, self.settings.max_frame)
        body = await reader.readexactly(size)
        return p.server_decoder.decode(body)

    async def _run(self) -> None:
        """Read frames; on loss, fail what is in flight and reconnect with backoff."""
        while True:
            try:
                await self._pump()
            except (
                OSError,
                asyncio.IncompleteReadError,
                p.FrameTooLarge,
                msgspec.MsgspecError,
                UnicodeDecodeError,  # msgspec's error for a string that is not UTF-8
            ) as e:
                log.info("lost connection to peersd: %s", e)
            self._drop("lost the connection to peersd")
            if self.on_lost is not None and not self._closing:
                self.on_lost("lost the connection to peersd")
            if not self.reconnect or self._closing:
                return
            await self._reconnect()

    async def _pump(self) -> None:
        assert self._reader is not None
        reader = self._reader
        while True:
            frame = await self._read_frame(reader)
            if isinstance(frame, p.EVENT_TYPES):
                self.events.put_nowait(frame)
                continue
            frame_id = getattr(frame, "id", None)
            fut = self._waiting.pop(frame_id, None) if frame_id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(frame)
            elif isinstance(frame, p.Error) and frame_id is None:
                log.warning("peersd: %s", frame.message)

    def _drop(self, why: str) -> None:
        self._connected.clear()
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(DaemonUnreachable(why))

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._open()
                if self.binding is not None:
                    reply = await self._call_now(self.binding)
                    self.peer = reply.peer
                    self._bound += 1
                if self.kinds:
                    await self._call_now(p.Subscribe(id=0, kinds=list(self.kinds)))
                # Only now may callers use the connection: it is the same peer again.
                self._connected.set()
                log.info("reconnected to peersd")
                # Its own task: the callback may make requests, and only this task, back
                # in _pump, reads their answers.
                self._start_on_reconnect()
                return
            except (
                TimeoutError,
                OSError,
                PeersError,
                asyncio.IncompleteReadError,
                p.FrameTooLarge,
                msgspec.MsgspecError,
                UnicodeDecodeError,
            ) as e:
                log.info("reconnect failed: %s", e)
                self._drop("reconnect failed")
                delay = min(delay * 2, 2.0)

    def _start_on_reconnect(self) -> None:
        if self.on_reconnect is None or self._closing:
            return
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()  # still owned: awaited on close
        self._reconnect_task = self._spawn(self._after_reconnect(self.on_reconnect))

    async def _after_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except PeersError as e:  # the connection may be gone again: the next reconnect retries
            log.info("after reconnecting: %s", e)
        except Exception:
            log.exception("the reconnect callback failed")

    async def _call_now(self, req: p.Request[A]) -> A:
        """Send on the current connection and read the answer inline (reader not running)."""
        assert self._reader is not None and self._writer is not None
        self._next_id += 1
        req.id = self._next_id
        self._writer.write(p.encode(req))
        while True:
            frame = await asyncio.wait_for(self._read_frame(self._reader), self.timeout)
            if isinstance(frame, p.EVENT_TYPES):
                self.events.put_nowait(frame)
                continue
            frame_id = getattr(frame, "id", None)
            if isinstance(frame, p.Error) and frame_id in (None, req.id):
                _raise(frame)
            if frame_id == req.id:
                return _answer(req, frame)

    async def call(self, req: p.Request[A], wait_connected: float | None = None) -> A:
        """Send ``req`` and await its answer. Raises ``PeersError`` (incl. unreachable).

        A ``not_registered`` answer while this client is bound means the daemon no
        longer counts it as its peer (marked gone by the sweep, a kill, an unregister
        from elsewhere): it binds again, once for every request that saw it, and
        retries the request once.
        """
        bound = self._bound
        frame = await self._send(req, wait_connected)
        if (
            isinstance(frame, p.Error)
            and frame.code == Code.NOT_REGISTERED
            and _retryable(req, self.binding)
        ):
            await self._rebind(bound)
            frame = await self._send(req, wait_connected)
        if isinstance(frame, p.Error):
            _raise(frame)
        if isinstance(req, p.Unregister):
            self.binding = None  # left on purpose: never bind again by itself
        return _answer(req, frame)

    async def _rebind(self, seen: int) -> None:
        async with self._rebinding:
            if self._bound != seen or self.binding is None:
                return  # bound again meanwhile (another request, or a reconnect)
            log.info("peersd answered not_registered: registering again")
            for req in (self.binding, p.Subscribe(id=0, kinds=list(self.kinds))):
                if isinstance(req, p.Subscribe) and not self.kinds:
                    continue
                frame = await self._send(req, None)
                if isinstance(frame, p.Error):
                    _raise(frame)
                if isinstance(frame, p.PeerResult):
                    self.peer = frame.peer
            self._bound += 1
        self._start_on_reconnect()  # mail that came while it was gone, as after a reconnect

    async def _send(self, req: p.Request[Any], wait_connected: float | None) -> p.Frame:
        """Send ``req`` and await its answer frame, an ``Error`` included."""
        if not self._connected.is_set():
            if wait_connected:
                try:
                    await asyncio.wait_for(self._connected.wait(), wait_connected)
                except TimeoutError:
                    raise DaemonUnreachable("peersd is not reachable right now") from None
            else:
                raise DaemonUnreachable("peersd is not reachable right now")
        assert self._writer is not None
        self._next_id += 1
        req.id = self._next_id
        fut: asyncio.Future[p.Frame] = asyncio.get_running_loop().create_future()
        self._waiting[req.id] = fut
        self._writer.write(p.encode(req))
        try:
            frame = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            self._waiting.pop(req.id, None)
            raise PeersError(
                Code.TIMEOUT, f"peersd did not answer within {self.timeout:g}s"
            ) from None
        return frame

    async def request(self, kind: type[p.Request[A]], **fields: Any) -> A:
        return await self.call(kind(id=0, **fields))

    async def bind(self, req: p.Register | p.Attach) -> p.Peer:
        """Become a peer (register or attach) and remember it for reconnects."""
        reply = await self.call(req)
        self.binding = _rebindable(req)
        self._bound += 1
        self.peer = reply.peer
        return reply.peer

    async def subscribe(self, kinds: list[p.EventKind]) -> None:
        await self.call(p.Subscribe(id=0, kinds=kinds))
        self.kinds = list(kinds)

    async def next_event(self, timeout: float | None = None) -> p.Frame | None:
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None


def _rebindable(req: p.Register | p.Attach) -> p.Register | p.Attach:
    """``req`` as it is made again later: a register without the summary and name it
    set, so a later set_summary or set_name wins."""
    if isinstance(req, p.Register):
        req.summary = None
        req.name = None
    return req


def _retryable(req: p.Request[Any], binding: p.Register | p.Attach | None) -> bool:
    """Whether a ``not_registered`` answer to ``req`` is worth binding again for."""
    return binding is not None and not isinstance(req, (p.Register, p.Attach))


def running_status(settings: Settings, timeout: float = 5.0) -> p.DaemonStatus | None:
    """The daemon's status, or None when nothing answers. Never starts a daemon."""
    try:
        with Client(settings, kind="cli", autostart=False, timeout=timeout) as client:
            return client.request(p.Status)
    except DaemonUnreachable:
        return None


def shutdown_and_wait(settings: Settings, st: p.DaemonStatus, timeout: float) -> bool:
    """Ask the daemon that answered ``st`` to stop, then wait; True once it has gone.

    Gone means its process (pid and start time) has exited, or, for a process this
    user cannot see, that nothing answers on the socket any more. A refused shutdown
    raises its ``PeersError``.
    """
    from . import identity

    start = identity.process_start(st.pid)
    try:
        with Client(settings, kind="cli", autostart=False, timeout=10) as client:
            client.request(p.Shutdown)
    except DaemonUnreachable:
        pass
    deadline = time.monotonic() + timeout
    while True:
        if start is not None:
            if not identity.is_alive(st.pid, start):
                return True
        else:
            with contextlib.suppress(PeersError):  # shutting_down: not gone yet
                if running_status(settings) is None:
                    return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def session_registration(
    settings: Settings,
    agent_pid: int,
    client: str,
    *,
    cwd: str | None = None,
    session_id: str | None = None,
    helper_pid: int | None = None,
    receive: str = "poll",
    summary: str | None = None,
    name: str | None = None,
) -> p.Register:
    """A Register request describing the agent process ``agent_pid`` on this machine."""
    import os

    from . import identity

    start = identity.process_start(agent_pid)
    if start is None:
        raise PeersError(Code.BAD_REQUEST, f"agent process {agent_pid} does not exist")
    cwd = cwd or os.getcwd()
    git_root, branch = identity.git_info(cwd)
    return p.Register(
        id=0,
        agent_pid=agent_pid,
        agent_start=start,
        client=client,  # type: ignore[arg-type]
        helper_pid=helper_pid,
        session_id=session_id,
        cwd=cwd,
        git_root=git_root,
        branch=branch,
        tty=identity.tty_name(),
        # Over the local socket the daemon's own machine id applies; a hub needs ours.
        machine_id=(
            identity.machine_id(settings.db_path.parent) if client_endpoint(settings).remote else ""
        ),
        host=settings.host_label or identity.host_label(),
        summary=summary,
        name=name,
        receive=receive,  # type: ignore[arg-type]
        group=settings.session_group(branch),
    )
