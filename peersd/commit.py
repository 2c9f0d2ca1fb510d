"""Group commit: every store operation submitted in one event-loop tick shares a transaction.

A send is durable before its id is returned, yet sixteen clients sending at once pay
for one commit, not sixteen. Each operation runs in its own savepoint, so a failing
one is rolled back alone; if the commit itself fails, every operation of the batch
is told so and none of their effects (events) are published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from .errors import Code, PeersError
from .store import Store

log = logging.getLogger("peersd")

Op = Callable[[], Any]
T = TypeVar("T")
Done = Callable[[Any], None]


def _failure(e: Exception) -> PeersError:
    if isinstance(e, PeersError):
        return e
    if isinstance(e, apsw.Error):
        log.error("storage error in a request: %s", e)
        return PeersError(Code.STORAGE, f"storage error: {e}")
    if isinstance(e, OverflowError):  # an integer field beyond SQLite's signed 64 bits
        return PeersError(Code.BAD_REQUEST, f"a number in the request is out of range: {e}")
    log.error("internal error in a request", exc_info=e)  # a bug: answer it, keep serving
    return PeersError(Code.INTERNAL, f"internal error: {e!r}")


class GroupCommit:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._pending: list[tuple[Op, Done, bool]] = []
        self._scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, op: Op, done: Done, savepoint: bool = True) -> None:
        """Run ``op`` in the next batch; ``done`` gets its result or a ``PeersError``.

        ``savepoint=False`` is for operations that write at most one statement (SQLite
        undoes a failed statement by itself): they skip the savepoint's cost.
        """
        self._pending.append((op, done, savepoint))
        if not self._scheduled:
            self._scheduled = True
            self._idle.clear()
            self.loop.call_soon(self._flush)

    async def run(self, op: Callable[[], T]) -> T:
        """Submit and wait; raises the operation's ``PeersError``."""
        fut: asyncio.Future[Any] = self.loop.create_future()

        def done(result: Any) -> None:
            if not fut.done():
                fut.set_result(result)

        self.submit(op, done)
        result = await fut
        if isinstance(result, PeersError):
            raise result
        done_value: T = result
        return done_value

    async def drained(self) -> None:
        await self._idle.wait()

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        results: list[Any] = []
        store = self.store
        conn = store.conn  # apsw: the outer block is the transaction, inner ones savepoints
        try:
            with conn:
                for op, _, savepoint in batch:
                    generation = store.generation
                    try:
                        if savepoint:
                            with conn:
                                results.append(op())
                        else:
                            results.append(op())
                    except Exception as e:
                        results.append(_failure(e))
                        if store.generation != generation:
                            store.reload()  # the savepoint is gone: so are its cache changes
        except apsw.Error as e:
            log.error("commit of %d operations failed: %s", len(batch), e)
            failure = PeersError(Code.STORAGE, f"could not save to the database: {e}")
            results = [failure] * len(batch)
            try:
                store.reload()
            except apsw.Error as again:
                log.error("could not re-read peers after the failed commit: %s", again)
        for (_, done, _), result in zip(batch, results, strict=True):
            try:
                done(result)
            except Exception:
                log.exception("error while answering a request")
        if not self._pending:
            self._idle.set()
