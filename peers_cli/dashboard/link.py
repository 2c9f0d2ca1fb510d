"""The dashboard's link to peersd: one client subscribed to every event, what the pages
show (a snapshot rebuilt after each (re)connect), and the pages to send changes to.

Nothing here polls. Events either carry the change (a message, a delivery) or ring a
doorbell (a peer's status, files, claims, the audit log), and a doorbell refetches that
one list, coalesced over ``COALESCE`` seconds. When the daemon goes away the pages are
told at once; the client reconnects by itself, and the snapshot taken then catches every
page up (the last ``HISTORY`` messages, peers, files, audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from peersd import protocol as p
from peersd.client import AsyncClient, session_registration
from peersd.config import Settings
from peersd.errors import DaemonUnreachable, PeersError

log = logging.getLogger("peers.dashboard")

HISTORY = 300
"""Messages a page gets on (re)connect; older ones are a search away."""
KEEP = 2000
"""Messages the dashboard keeps in memory for the pages that connect later."""
COALESCE = 0.03
"""Seconds a doorbell waits for others before refetching (well inside the 100 ms budget)."""
PAGE_QUEUE = 2000
"""Updates a slow page may have waiting; past that it is hung up and catches up anew."""
RESYNC_FIRST, RESYNC_MAX = 0.2, 5.0
"""Seconds before retrying a failed resync after a reconnect, doubling up to the max."""
EVENT_KINDS: list[p.EventKind] = ["peers", "mail", "overseer"]
"""Not ``traffic``: what it says of a message comes whole from ``overseer`` events."""


@dataclass(frozen=True)
class Panel:
    """A panel whose data another feature brings (tasks, decisions, proposals).

    It is shown only when ``peersd.protocol`` has ``request`` and the daemon answers it;
    an error (an older daemon: "invalid value ... at `$.t`") hides it. ``items`` is the
    answer's field holding the rows; ``events`` the event class names that refresh it
    (besides a reconnect and every doorbell of the dashboard's own)."""

    name: str
    request: str
    fields: dict[str, Any] = field(default_factory=dict)
    items: str = ""
    events: tuple[str, ...] = ()


PANELS: tuple[Panel, ...] = (
    # The daemon rings ``ev_work`` (WorkChanged) after each change to tasks, decisions or
    # proposals; every panel refetches, coalesced with the other doorbells.
    Panel("tasks", "ListTasks", {"scope": "all", "final": True}, "tasks", ("WorkChanged",)),
    Panel("decisions", "QueryDecisions", {"everywhere": True}, "decisions", ("WorkChanged",)),
    Panel("proposals", "ListProposals", {}, "proposals", ("WorkChanged",)),
)


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


class Overseer:
    """What the dashboard knows, kept current from the daemon's events."""

    def __init__(self, settings: Settings, human_pid: int, name: str | None = None) -> None:
        self.settings = settings
        self.human_pid = human_pid
        self.name = name
        self.client: AsyncClient | None = None
        self.up = False
        self.down_reason = "connecting to peersd"
        self.me: p.Peer | None = None
        self.daemon: dict[str, Any] = {}
        self.peers: list[p.Peer] = []
        self.files: list[p.FileHolder] = []
        self.audit: list[p.AuditRecord] = []
        self.messages: dict[str, p.Message] = {}
        self.panels: dict[str, Any] = {}
        self.features: dict[str, bool] = {"search": False, "report": False}
        self.pages: set[asyncio.Queue[bytes | None]] = set()
        self._dirty: set[str] = set()
        self._changed: set[str] = set()
        """Messages an ``ev_message_changed`` named, refetched with the next doorbell."""
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the first snapshot is taken (tests and the first page wait for it)."""

    # ------------------------------------------------------------------ pages

    def attach(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(PAGE_QUEUE)
        self.pages.add(queue)
        return queue

    def detach(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.pages.discard(queue)

    def send(self, update: dict[str, Any]) -> None:
        data = _json(update)
        for queue in list(self.pages):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                # Too far behind: hang up; the page reconnects and takes a snapshot. What
                # it has not taken is dropped at once, so the hang-up is next in line.
                self.pages.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    def snapshot(self) -> bytes:
        messages = sorted(self.messages.values(), key=lambda m: m.created)[-HISTORY:]
        return _json(
            {
                "t": "snapshot",
                "up": self.up,
                "down_reason": "" if self.up else self.down_reason,
                "me": self.me,
                "daemon": self.daemon,
                "peers": self.peers,
                "messages": messages,
                "files": self.files,
                "audit": self.audit,
                "panels": self.panels,
                "features": self.features,
                "now": time.time(),
            }
        )

    # ------------------------------------------------------------------ the daemon

    async def run(self) -> None:
        """Connect (starting the daemon the first time if the settings say so), then
        follow its events for as long as the dashboard runs."""
        delay = 0.2
        autostart: bool | None = None
        refresher = asyncio.get_running_loop().create_task(self._refresher())
        try:
            while True:
                client = AsyncClient(
                    self.settings,
                    kind="cli",
                    autostart=autostart,
                    on_reconnect=self._resync_until_done,
                    on_lost=self._lost,
                )
                try:
                    async with client:
                        # Never start a daemon the user stopped: wait for it instead.
                        client.autostart = autostart = False
                        self.client = client
                        await self._resync()
                        delay = 0.2
                        await self._follow(client)
                except (DaemonUnreachable, PeersError, OSError) as e:
                    self._lost(str(e))
                finally:
                    self.client = None
                autostart = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    def _lost(self, why: str) -> None:
        was_up, self.up = self.up, False
        self.down_reason = why
        if was_up:
            log.info("peersd went away: %s", why)
        self.send({"t": "daemon", "up": False, "reason": why})

    async def _resync_until_done(self) -> None:
        """After the client reconnected by itself: resync, and on failure (a request that
        timed out, a daemon still starting or stopping) try again with backoff rather than
        stay "down" with the connection up. A newer reconnect cancels this and starts anew."""
        delay = RESYNC_FIRST
        while True:
            try:
                await self._resync()
                return
            except (PeersError, OSError) as e:
                log.info("resync after a reconnect failed, again in %.1fs: %s", delay, e)
                self.down_reason = f"catching up with peersd failed ({e}); retrying"
                self.send({"t": "daemon", "up": False, "reason": self.down_reason})
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESYNC_MAX)

    async def _resync(self) -> None:
        """Become the human's peer again, subscribe, and send every page a snapshot."""
        client = self.client
        if client is None:
            return
        if client.binding is None:
            req = await asyncio.to_thread(
                session_registration, self.settings, self.human_pid, "cli", name=self.name
            )
            req.group = None  # the overseer sees every session, whatever group it is in
            self.me = await client.bind(req)
            await client.subscribe(EVENT_KINDS)
        else:
            self.me = client.peer
        st = await client.request(p.Status)
        welcome = client.welcome
        self.daemon = {
            "version": st.version,
            "pid": st.pid,
            "host": st.host,
            "machine_id": st.machine_id,
            "remote": client.remote,
            "started_at": st.started_at,
            "conn": welcome.conn_id if welcome else 0,
        }
        page = await client.request(p.History, mine=False, limit=HISTORY)
        self.messages = {m.id: m for m in sorted(page.messages, key=lambda m: m.created)}
        await self._fetch({"peers", "files", "audit", "panels"})
        await self._probe_features()
        self.up = True
        self.down_reason = ""
        self.ready.set()
        snap = self.snapshot()
        for queue in list(self.pages):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(snap)

    async def _probe_features(self) -> None:
        """Search and report: offered only when the daemon answers them."""
        assert self.client is not None
        now = time.time()
        probes: dict[str, tuple[str, dict[str, Any]]] = {
            "search": ("Search", {"query": "dashboard", "limit": 1, "mine": False}),
            "report": ("MakeReport", {"since": now - 60}),
        }
        for name, (request, fields) in probes.items():
            self.features[name] = await self._optional(request, fields) is not None

    async def _optional(self, request: str, fields: dict[str, Any]) -> Any:
        """The answer to a request another feature brings, or None when this protocol or
        this daemon does not know it (or refuses it)."""
        kind = getattr(p, request, None)
        if self.client is None or kind is None:
            return None
        try:
            return await self.client.call(kind(id=0, **fields))
        except DaemonUnreachable:
            raise
        except (PeersError, TypeError, msgspec.ValidationError) as e:
            log.info("%s is not available from this daemon: %s", request, e)
            return None

    async def _follow(self, client: AsyncClient) -> None:
        while True:
            event = await client.events.get()
            self._on_event(event)

    def _on_event(self, event: p.Frame) -> None:
        if isinstance(event, p.MessagePosted):
            msg = event.message
            self.messages[msg.id] = msg
            if len(self.messages) > KEEP:
                for old in list(self.messages)[: len(self.messages) - KEEP]:
                    del self.messages[old]
            self.send({"t": "message", "message": msg})
            self.ring("peers")  # pending counts
        elif isinstance(event, p.MessageChanged):
            self._changed.update(event.message_ids)
            self.ring("messages", "" if event.what == "reactions" else "peers")
        elif isinstance(event, p.PeerChanged):
            self.ring("peers", "files" if event.what in ("files", "claims") else "")
        elif isinstance(event, (p.PeerJoined, p.PeerLeft, p.PeerRenamed)):
            self.ring("peers", "files")
            if isinstance(event, p.PeerRenamed) and self.me and event.peer_id == self.me.id:
                self.me = msgspec.structs.replace(self.me, name=event.new)
        elif isinstance(event, p.AuditAdded):
            self.ring("audit")
        elif isinstance(event, p.Escalation):
            self.send({"t": "escalation", "event": event})
        name = type(event).__name__
        if any(name in panel.events for panel in PANELS):
            self.ring("panels")

    def ring(self, *what: str) -> None:
        self._dirty.update(w for w in what if w)
        self._wake.set()

    async def _refresher(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._fetch(dirty)
            except PeersError as e:  # gone again: the reconnect's snapshot catches up
                log.info("refetching %s: %s", sorted(dirty), e)

    async def _fetch(self, what: set[str]) -> None:
        client = self.client
        if client is None:
            return
        if "peers" in what:
            listing = await client.request(
                p.ListPeers, scope="all", include_gone=True, include_self=True
            )
            self.peers = listing.peers
            self.send({"t": "peers", "peers": self.peers, "now": time.time()})
        if "files" in what:
            self.files = (await client.request(p.ListFiles)).holders
            self.send({"t": "files", "files": self.files})
        if "messages" in what:
            await self._refetch_messages(client)
        if "audit" in what:
            self.audit = (await client.request(p.Audit, limit=50)).records
            self.send({"t": "audit", "audit": self.audit})
        if "panels" in what:
            for panel in PANELS:
                answer = await self._optional(panel.request, panel.fields)
                if answer is None:
                    self.panels.pop(panel.name, None)
                else:
                    self.panels[panel.name] = getattr(answer, panel.items, [])
            self.send({"t": "panels", "panels": self.panels})

    async def _refetch_messages(self, client: AsyncClient) -> None:
        """The messages ``ev_message_changed`` named (those the pages have) as they are now:
        state, delivery, recipient (mail inherited by a new holder of a name), reactions."""
        ids, self._changed = [i for i in self._changed if i in self.messages], set()
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            items = (await client.request(p.MessageStatus, message_ids=chunk)).items
            for item in items:
                msg = self.messages.get(item.message_id)
                if msg is None or not item.found or item.state is None:
                    continue
                msg = msgspec.structs.replace(
                    msg,
                    state=item.state,
                    recipient=item.to or msg.recipient,
                    recipient_name=item.to_name or msg.recipient_name,
                    delivered_at=item.delivered_at,
                    expires_at=item.expires_at or msg.expires_at,
                    delivered_via=item.delivered_via,
                    reactions=item.reactions,
                )
                self.messages[msg.id] = msg
                self.send({"t": "changed", "message": msg})

    # ------------------------------------------------------------------ actions

    def _client(self) -> AsyncClient:
        if self.client is None or not self.up:
            raise DaemonUnreachable(f"peersd is not reachable right now ({self.down_reason})")
        return self.client

    async def send_mail(self, to: str | None, scope: str | None, text: str, reply_to: str | None):
        client = self._client()
        if scope:
            sent = await client.request(p.Broadcast, scope=scope, text=text)
            return {"sent": [s.message_id for s in sent.sent], "skipped": sent.skipped}
        one = await client.request(p.Send, to=to, text=text, reply_to=reply_to)
        return {"sent": [one.message_id], "to_name": one.to_name, "reach": one.reach}

    async def ack(self, ids: list[str]) -> list[str]:
        """The page has shown these messages to the human: deliver exactly those."""
        client = self._client()
        claimed = await client.request(p.Claim, limit=50)
        shown = [m.id for m in claimed.messages if m.id in ids]
        rest = [m.id for m in claimed.messages if m.id not in ids]
        if rest:
            await client.request(p.Release, message_ids=rest)
        if shown:
            await client.request(p.Ack, message_ids=shown, via="cli")
        return shown

    async def rename(self, target: str, name: str) -> p.Peer:
        return (await self._client().request(p.RenamePeer, target=target, name=name)).peer

    async def kill(self, target: str, force: bool) -> p.KillResult:
        return await self._client().request(p.Kill, target=target, force=force)

    async def release(self, target: str, patterns: list[str]) -> p.FilesReleased:
        return await self._client().request(
            p.ReleaseClaims, target=target, patterns=patterns, all=not patterns
        )

    async def search(self, query: str) -> list[Any] | None:
        answer = await self._optional("Search", {"query": query, "limit": 50, "mine": False})
        return None if answer is None else answer.hits

    async def report(self, since: float) -> str | None:
        """The Markdown of ``peers report`` (its renderer, once that feature is merged)."""
        answer = await self._optional("MakeReport", {"since": since})
        if answer is None:
            return None
        try:
            render = importlib.import_module("peers_cli.report").markdown
        except (ImportError, AttributeError):
            body = msgspec.json.format(msgspec.json.encode(answer)).decode()
            return f"# claude-peers report\n\n```json\n{body}\n```\n"
        return str(render(answer))


def error_body(e: PeersError) -> dict[str, Any]:
    return {"error": e.code, "message": e.message, "candidates": e.candidates}
