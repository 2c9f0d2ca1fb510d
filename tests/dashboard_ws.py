"""A plain WebSocket client for the dashboard's /live socket (the `websockets` package)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import websockets

if TYPE_CHECKING:
    from .dashboard_fixtures import Dashboard


def connect(d: Dashboard, origin: str | None = None, cookie: bool = True) -> Any:
    headers = {"Cookie": d.cookie} if cookie else {}
    return websockets.connect(
        f"ws://{d.host}:{d.port}/live",
        origin=origin if origin is not None else d.origin,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=10,
    )


def _run(coro: Any) -> Any:
    """``asyncio.run`` in a thread of its own: callable where a loop already runs (in a
    coroutine, or beside Playwright's sync API)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def snapshot(d: Dashboard) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with connect(d) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    return _run(run())


def refused(d: Dashboard, **kwargs: Any) -> int | None:
    """The HTTP status the WebSocket handshake was refused with, None if it was accepted."""

    async def run() -> int | None:
        try:
            async with connect(d, **kwargs):
                return None
        except websockets.InvalidStatus as e:
            return e.response.status_code

    return _run(run())


async def updates_until(d: Dashboard, want: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every update (after the snapshot) until ``want(update)`` is true."""
    seen: list[dict[str, Any]] = []
    async with connect(d) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no wanted update in {timeout}s; saw {seen}")
            update = json.loads(await asyncio.wait_for(ws.recv(), left))
            seen.append(update)
            if want(update):
                return seen
