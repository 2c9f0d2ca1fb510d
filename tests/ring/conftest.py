"""The fast inner ring: the store and the daemon's request handling in this process.

No subprocess, no socket: a real ``Store`` on a temporary file and a real ``Daemon`` whose
real ``Connection`` objects are fed frames directly and write into an in-memory transport
(the one stand-in: asyncio's transport, not a part of ours). Group commit, handlers and
events all run as in the daemon, so most logic is checked in milliseconds; the black-box
suites one directory up check the same behaviour through real processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peersd import __version__, identity
from peersd import protocol as p
from peersd.config import Settings, isolated_env, load
from peersd.connection import Connection
from peersd.errors import PeersError
from peersd.server import Daemon
from peersd.store import Store


class MemoryTransport(asyncio.Transport):
    """What the daemon writes to one client, kept in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class RingClient:
    """One connection to the in-process daemon, spoken to with whole frames."""

    def __init__(self, ring: Ring, kind: str) -> None:
        self.ring = ring
        self.transport = MemoryTransport()
        self.conn = Connection(ring.daemon)
        self.frames = p.FrameBuffer()
        self.inbox: list[p.Frame] = []
        self.next_id = 0
        ring.run(self._open(kind))

    async def _open(self, kind: str) -> None:
        self.conn.connection_made(self.transport)
        self.conn.data_received(
            p.encode(
                p.Hello(protocol=p.PROTOCOL_VERSION, client_version=__version__, client_kind=kind)
            )
        )
        welcome = await self._next(lambda f: isinstance(f, (p.Welcome, p.Error)))
        assert isinstance(welcome, p.Welcome), welcome

    def _read(self) -> None:
        data = bytes(self.transport.out)
        self.transport.out.clear()
        for body in self.frames.feed(data):
            self.inbox.append(p.server_decoder.decode(body))

    async def _next(self, wanted: Any) -> p.Frame:
        for _ in range(1000):  # ticks, not seconds: commits run on the next loop turn
            self._read()
            for i, frame in enumerate(self.inbox):
                if wanted(frame):
                    return self.inbox.pop(i)
            await asyncio.sleep(0)
        raise AssertionError(f"no answer; have {self.inbox}")

    def call(self, kind: type[p.Request], **fields: Any) -> Any:
        """Send one request and return its answer; raise ``PeersError`` for an error frame."""
        self.next_id += 1
        req_id = self.next_id
        req = kind(id=req_id, **fields)

        async def ask() -> p.Frame:
            self.conn.data_received(p.encode(req))
            return await self._next(lambda f: getattr(f, "id", None) == req_id)

        answer = self.ring.run(ask())
        if isinstance(answer, p.Error):
            raise PeersError(answer.code, answer.message, answer.candidates)
        assert isinstance(answer, p.ANSWERS[kind]), f"{kind.__name__} answered {answer}"
        return answer

    def pipeline(self, *reqs: p.Request) -> dict[int, p.Frame]:
        """Send several requests in one write (one loop tick: one batch); answers by id."""

        async def ask() -> dict[int, p.Frame]:
            self.conn.data_received(b"".join(p.encode(r) for r in reqs))
            return {
                r.id: await self._next(lambda f, i=r.id: getattr(f, "id", None) == i) for r in reqs
            }

        return self.ring.run(ask())

    def events(self) -> list[p.Frame]:
        """Events received so far (taken out of the inbox)."""
        self._read()
        found = [f for f in self.inbox if type(f) in p.EVENT_TYPES]
        self.inbox = [f for f in self.inbox if type(f) not in p.EVENT_TYPES]
        return found

    def register(self, name: str | None = None, **fields: Any) -> p.Peer:
        fields.setdefault("agent_pid", os.getpid())
        fields.setdefault("agent_start", identity.process_start(os.getpid()) or time.time())
        fields.setdefault("cwd", str(self.ring.home))
        fields.setdefault("client", "claude-code")
        return self.call(p.Register, name=name, **fields).peer

    def close(self) -> None:
        self.ring.run(self._close())

    async def _close(self) -> None:
        self.conn.connection_lost(None)


class Ring:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.loop = asyncio.new_event_loop()
        self.settings: Settings = load(
            {"socket": str(home / "run" / "peers.sock"), "db": str(home / "peers.db")},
            env=isolated_env(home),
        )
        self.store = Store(self.settings.db_path)
        self.daemon = Daemon(self.settings, self.store, self.loop, socket_path=self.settings.socket)
        self.clients: list[RingClient] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def client(self, kind: str = "claude-code") -> RingClient:
        c = RingClient(self, kind)
        self.clients.append(c)
        return c

    def agent(self, kind: str = "claude-code", name: str | None = None) -> RingClient:
        """A client registered as a peer of its own (distinct fake agent pid)."""
        c = self.client(kind)
        c.register(name=name, agent_pid=100_000 + len(self.clients), agent_start=1.0)
        return c

    def close(self) -> None:
        for c in self.clients:
            if not c.conn.closed:
                c.close()
        self.run(self.daemon.commit.drained())
        self.store.close()
        self.loop.close()


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[Ring]:
    r = Ring(tmp_path)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "peers.db")
    try:
        yield s
    finally:
        s.close()
