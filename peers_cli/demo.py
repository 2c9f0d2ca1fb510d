"""``peers demo``: two stand-in agent sessions ask and answer through the real daemon.

It shows the whole path a newcomer cares about: the daemon starting on first use, two
peers registering, a question pushed to the other side, an answer sent as a reply, and
the sender told when and how its message was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import TypeVar

from rich.console import Console

from peersd import protocol as p
from peersd.client import AsyncClient, Client, session_registration
from peersd.config import Settings
from peersd.errors import Code, PeersError


def _agent() -> subprocess.Popen[bytes]:
    """A real process to stand in for an agent session (identity is pid + start time)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL
    )


async def _conversation(settings: Settings, out: Console) -> None:
    alice_proc, bob_proc = _agent(), _agent()
    try:
        async with (
            AsyncClient(settings, kind="other") as alice,
            AsyncClient(settings, kind="other") as bob,
        ):
            a = await alice.bind(
                session_registration(
                    settings,
                    alice_proc.pid,
                    "other",
                    cwd="/",
                    summary="demo: asking",
                    receive="push",
                )
            )
            b = await bob.bind(
                session_registration(
                    settings,
                    bob_proc.pid,
                    "other",
                    cwd="/",
                    summary="demo: answering",
                    receive="push",
                )
            )
            me_a = await _rename(alice, a, "demo-alice")
            me_b = await _rename(bob, b, "demo-bob")
            out.print(
                f"[green]●[/] registered [bold]{me_a.name}[/] ({me_a.id}) and "
                f"[bold]{me_b.name}[/] ({me_b.id})"
            )
            await bob.subscribe(["mail"])
            await alice.subscribe(["mail", "receipts"])

            question = "Which port is the API server on?"
            started = time.perf_counter()
            sent = await alice.request(p.Send, to=me_b.name, text=question)
            out.print(
                f"[cyan]→[/] {me_a.name} asks {me_b.name}: {question!r}  "
                f"[dim](stored as {sent.message_id})[/]"
            )
            # The event is a doorbell: the receiver claims the mail it announces.
            await _next(bob, p.MailEvent)
            (got,) = (await bob.request(p.Claim)).messages
            pushed_ms = (time.perf_counter() - started) * 1000
            out.print(f"[cyan]←[/] {me_b.name} got it pushed in {pushed_ms:.2f} ms: {got.text!r}")
            await bob.request(p.Ack, message_ids=[got.id], via="wait")
            receipt = await _next(alice, p.ReceiptEvent)
            out.print(f"[green]✓[/] {me_a.name} is told it was delivered (via {receipt.via})")

            answer = "8080, and the admin UI is on 8081."
            await bob.request(p.Send, to=me_a.name, text=answer, reply_to=sent.message_id)
            await _next(alice, p.MailEvent)
            (reply,) = (await alice.request(p.Claim)).messages
            await alice.request(p.Ack, message_ids=[reply.id], via="wait")
            out.print(
                f"[cyan]←[/] {me_a.name} gets the answer (reply to "
                f"{reply.reply_to}): {reply.text!r}"
            )
            await alice.request(p.Unregister)
            await bob.request(p.Unregister)
    finally:
        for proc in (alice_proc, bob_proc):
            proc.kill()
            proc.wait()


async def _rename(client: AsyncClient, peer: p.Peer, wanted: str) -> p.Peer:
    """Take a friendly name unless another live session already has it."""
    try:
        return (await client.request(p.SetName, name=wanted)).peer
    except PeersError as e:
        if e.code != Code.NAME_TAKEN:
            raise
        return peer


E = TypeVar("E", bound=p.Frame)


async def _next(client: AsyncClient, kind: type[E], timeout: float = 10.0) -> E:
    deadline = time.monotonic() + timeout
    while True:
        event = await client.next_event(max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event
        if event is None:
            raise TimeoutError(f"no {kind.__name__} within {timeout:g}s")


def run_demo(settings: Settings, out: Console) -> None:
    with Client(settings, kind="cli") as client:
        status = client.request(p.Status)
    out.print(
        f"[green]●[/] peersd {status.version} is running (pid {status.pid}, "
        f"{status.supervisor}) on {status.socket}"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_conversation(settings, out))
    out.print()
    out.print(
        "The daemon keeps running. Next: [bold]peers status[/], [bold]peers peers[/], "
        "[bold]peers watch[/], [bold]peers history[/], [bold]peers daemon stop[/]."
    )
