"""The gateway: one process that runs the MCP SDK for every agent session on this machine.

The SDK's import (pydantic, httpx, starlette, …) costs ~60 MiB and ~0.6 s; paid once here
instead of by every session. Each ``peers-mcp`` relay (``peers_mcp.relay``, stdlib only)
connects to ``<run dir>/claude-peers-mcp-<code tag>.sock`` (``relay.gateway_path``) and sends one
JSON line, its hello::

    {"relay": 1, "fingerprint": "...", "server_name": "claude-peers", "socket": null,
     "config": null, "cwd": "/src/app", "tty": null, "env": {...}}

and gets one line back: ``{"gateway": 1, "pid": …, "agent_pid": …, "agent_kind": …}``,
or ``{"error": "…"}`` (``env`` holds only the variables ``relay.SESSION_ENV`` names).
From then on the connection carries that session's MCP messages, newline-delimited
JSON-RPC exactly as on stdio, served by one ``server.PeersMCP`` (its own SDK session
and its own daemon connection) until the relay hangs up. A line without ``jsonrpc``
from the gateway is for the relay itself:
``{"peers-relay": "exit", "reason": "…"}`` when the session's agent is gone.

The relay's pid comes from the socket's credentials (``SO_PEERCRED``; the hello's
``pid`` elsewhere), and a connection from another uid is refused. Its environment,
working directory and terminal are what the session's tools see (``server.Origin``), and
what is started for it runs with that environment: an autostarted daemon, ``git status``
for a send's snapshot. The gateway's own environment is only ``relay.GATEWAY_ENV``.

Lifetime: the first relay that finds nothing listening starts it (``relay.spawn``, under
an flock, so 50 sessions starting at once start one). It listens only once its imports
are done, so a relay that connects finds it ready. It exits after ``--idle-exit``
seconds without a session (default 600), when its socket file is removed or replaced,
and on SIGTERM/SIGINT. Code is told apart by ``relay.fingerprint`` (the version and the
modification times of the package's files, read once at start), which names the socket:
after an upgrade new relays start a new gateway beside the old, which ends with its
sessions (idle exit). A relay whose fingerprint differs from ours (it started before the
files on disk changed, then started us) is served all the same: the hello is the
contract, and turning it away would only start another gateway of the same code. Its log
is ``<run dir>/claude-peers-mcp.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.stdio import stdio_server

from peersd.config import ConfigError, load

from . import relay
from .agent import find_agent
from .server import Origin, PeersMCP, run_session, tool_specs

log = logging.getLogger("peers_mcp.gateway")

IDLE_EXIT = 600.0
"""Seconds without a session before the gateway exits (the next session starts one)."""
HELLO_TIMEOUT = 10.0
MAX_HELLO = 1024 * 1024
WATCH_INTERVAL = 2.0


class Lines:
    """The relay's lines, as ``stdio_server`` reads stdin (``async for line in stdin``)."""

    def __init__(self, buffered: BufferedByteReceiveStream) -> None:
        self.buffered = buffered

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            try:
                line = await self.buffered.receive_until(b"\n", relay.MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return
            except anyio.DelimiterNotFound:
                log.warning("a line over %d bytes from a relay; ending its session", relay.MAX_LINE)
                return
            yield line.decode("utf-8", "replace")


class Writer:
    """What ``stdio_server`` writes stdout with (``write``, ``flush``), onto the socket;
    one writer at a time, as the control lines share the stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.lock = anyio.Lock()

    async def write(self, text: str) -> None:
        async with self.lock:
            await self.stream.send(text.encode("utf-8"))

    async def flush(self) -> None:
        pass


def peer_credentials(stream: anyio.abc.SocketStream) -> tuple[int, int] | None:
    """(pid, uid) of the connected process, where the platform says (Linux)."""
    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    pid, uid, _gid = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, opt, 12))
    return pid, uid


class Gateway:
    def __init__(self, path: str, idle_exit: float) -> None:
        self.path = path
        self.idle_exit = idle_exit
        self.fingerprint = relay.fingerprint()
        self.sessions = 0
        self.idle_since = time.monotonic()
        self.inode: int | None = None
        self.lock_fd: int | None = None

    # ------------------------------------------------------------ one session

    async def session(self, stream: anyio.abc.SocketStream) -> None:
        self.sessions += 1
        try:
            async with stream:
                await self._session(stream)
        except Exception:
            log.exception("session ended by an error")
        finally:
            self.sessions -= 1
            self.idle_since = time.monotonic()

    async def _session(self, stream: anyio.abc.SocketStream) -> None:
        writer = Writer(stream)
        buffered = BufferedByteReceiveStream(stream)
        creds = peer_credentials(stream)
        if creds is not None and creds[1] != os.getuid():
            await writer.write(relay.dumps({"error": "connection from another user"}) + "\n")
            return
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                raw = await buffered.receive_until(b"\n", MAX_HELLO)
            hello = relay.loads(raw)
            if not isinstance(hello, dict) or hello.get("relay") != 1:
                raise ValueError("not a relay hello")
        except Exception as e:
            log.warning("no valid hello from a relay: %s", e)
            with contextlib.suppress(Exception):
                await writer.write(relay.dumps({"error": f"bad hello: {e}"}) + "\n")
            return
        if hello.get("fingerprint") != self.fingerprint:
            log.info("a relay of other code (%s); serving it", hello.get("fingerprint"))
        env = {str(k): str(v) for k, v in (hello.get("env") or {}).items()}
        pid = creds[0] if creds is not None else int(hello.get("pid") or 0)
        server_name = str(hello.get("server_name") or "claude-peers")
        try:
            settings = load({"socket": hello.get("socket"), "config": hello.get("config")}, env=env)
        except ConfigError as e:
            await writer.write(relay.dumps({"error": str(e)}) + "\n")
            return
        cwd = str(hello.get("cwd") or "/")
        tty = hello.get("tty")
        origin = Origin(pid, env, cwd, tty if isinstance(tty, str) else None)
        agent = find_agent(pid, env)
        done = anyio.Event()

        async def agent_gone() -> None:
            with contextlib.suppress(Exception):
                await writer.write(
                    relay.dumps({"peers-relay": "exit", "reason": "the agent is gone"}) + "\n"
                )
            done.set()

        app = PeersMCP(settings, server_name, agent, origin, on_agent_gone=agent_gone)
        answer = {"gateway": 1, "pid": os.getpid(), "agent_pid": agent.pid}
        await writer.write(relay.dumps({**answer, "agent_kind": agent.kind}) + "\n")
        log.info("session of relay %d (agent %d, %s)", pid, agent.pid, agent.kind or "?")
        async with (
            stdio_server(Lines(buffered), writer) as (read, write),  # type: ignore[arg-type]
            anyio.create_task_group() as tg,
        ):

            async def end_when_done() -> None:
                await done.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(end_when_done)
            await run_session(app, read, write)
            tg.cancel_scope.cancel()

    # ------------------------------------------------------------ lifetime

    async def watch(self, scope: anyio.CancelScope) -> None:
        """Exit when idle, or when our socket file is gone or replaced."""
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            if self.sessions == 0 and time.monotonic() - self.idle_since >= self.idle_exit:
                log.info("no sessions; exiting")
                break
            try:
                ino: int | None = os.stat(self.path).st_ino
            except OSError:
                ino = None
            if ino != self.inode:
                log.info("socket %s is gone or replaced; exiting", self.path)
                break
        scope.cancel()

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("stopping on signal %d", signum)
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(on_signal)
                tg.start_soon(self.watch, tg.cancel_scope)
                async with listener:
                    await listener.serve(self.session, task_group=tg)

    def lock(self) -> bool:
        """Take the instance lock; False if another gateway holds it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path + ".lock", flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        return True

    async def run(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead gateway's socket: we hold the lock
        listener = await anyio.create_unix_listener(self.path, mode=0o600)
        self.inode = os.stat(self.path).st_ino
        log.info("listening on %s", self.path)
        try:
            await self.serve(listener)
        finally:
            # Each code's gateway has a socket name of its own: leave none behind.
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m peers_mcp.gateway",
        description="The claude-peers MCP gateway: runs the MCP server of every peers-mcp "
        "relay on this machine (started by the first relay; not meant to be run by hand).",
    )
    ap.add_argument("--listen", required=True, help="the Unix socket path to listen on")
    ap.add_argument("--idle-exit", type=float, default=IDLE_EXIT, help="seconds (default 600)")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s peers-mcp-gateway[%(process)d] %(message)s",
    )
    tool_specs("claude-peers")  # made before listening: the sessions share them
    gateway = Gateway(os.path.abspath(args.listen), args.idle_exit)
    if not gateway.lock():
        log.info("another gateway listens on %s", gateway.path)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(gateway.run, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
