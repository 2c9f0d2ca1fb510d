"""Waking an idle session for its mail: ``codex queue`` for Codex, the inbox socket for
Claude Code (``docs/clients.md``, "Idle wakes").

A session is idle from its Stop hook until its next prompt or tool event (the status the
hooks report, ``coordination.effective_status``); a Claude Code session with an armed
``peers-hook --wait`` is "waiting", not idle, and needs no help. When mail becomes waiting
for an idle Codex or Claude Code session on this machine, one task the daemon owns waits
``BATCH_WINDOW`` to gather the batch, then:

- Codex: runs ``codex queue --thread <thread> --message <nudge>`` (the ``codex`` the
  session's hooks found on their PATH, or the ``codex_bin`` setting), which starts a turn
  in a loaded interactive thread. ``codex exec`` sessions are skipped: a queued item is
  lost there.
- Claude Code: connects to ``CLAUDE_CODE_MESSAGING_SOCKET`` and writes the auth line and
  one user message line, built before the connection is opened.

The text is a fixed nudge naming the senders, never the mail: it goes in as user input,
and the mail itself arrives through the delivery paths, quoted as data. The mail stays
queued whatever happens. One wake per batch; the next waits until the session acts again
(``acted``) or ``wake_rearm`` seconds pass. Each outcome (queued, failed and why, skipped
and why) is kept in memory for ``list_peers`` and ``message_status``; a failure is a
logged warning, never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from . import identity
from . import protocol as p

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("peersd")

BATCH_WINDOW = 0.2
"""Seconds a wake waits for the rest of a batch (a broadcast, a burst) before it runs."""
CODEX_TIMEOUT = 30.0
INBOX_TIMEOUT = 2.0
MESSAGES_KEPT = 10_000
"""Wake outcomes remembered per message (the oldest are forgotten first)."""
MAX_NAMED = 3
VIA: dict[str, p.WakeVia] = {"codex": "codex queue", "claude-code": "inbox"}
PRINT_FLAGS = ("-p", "--print")


def nudge(senders: list[str]) -> str:
    """The fixed text: who wrote, and what to call. Names are peer names (letters,
    digits, ``-``, ``_``), so nothing a sender writes reaches the session this way."""
    names = sorted(set(senders))
    shown = ", ".join(names[:MAX_NAMED])
    if len(names) > MAX_NAMED:
        shown += f" and {len(names) - MAX_NAMED} more"
    what = "new message" if len(senders) == 1 else "new messages"
    return f"[claude-peers] {what} from {shown}; call check_messages to read and reply."


def codex_exec(cmdline: list[str]) -> bool:
    """Whether the agent process runs ``codex exec`` (or its alias ``codex e``)."""
    args = cmdline[1:]
    if args and args[0].endswith(("codex.js", "/codex")):  # node .../codex.js exec ...
        args = args[1:]
    return "exec" in args or args[:1] == ["e"]


class Waker:
    """Routes the hooks reported, the last outcome per peer and per message, and the
    one pending wake task per peer."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.routes: dict[str, p.WakeRoute] = {}
        self.reported_at: dict[str, float] = {}
        """When each route was last reported (a wake that failed since says it will not work)."""
        self.last: dict[str, p.Wake] = {}
        self.woken_at: dict[str, float] = {}
        """Peer id -> monotonic time of its last wake attempt, until it acts again."""
        self.batches: dict[str, dict[str, str]] = {}
        """Peer id -> {message id: sender name} for the wake task about to run."""
        self.by_message: OrderedDict[str, p.Wake] = OrderedDict()

    # ------------------------------------------------------------ what the daemon tells it

    def reported(self, peer_id: str, route: p.WakeRoute | None) -> None:
        """The session's hook reported how to wake it, and acted (a prompt, a Stop)."""
        if route is not None:
            self.routes[peer_id] = route
            self.reported_at[peer_id] = time.time()
        self.acted(peer_id)

    def acted(self, peer_id: str) -> None:
        """The session did something: the next mail may wake it again."""
        self.woken_at.pop(peer_id, None)

    def mail(self, msg: p.Message) -> None:
        """A message became waiting: wake its recipient if it is an idle session we can wake."""
        peer = self.d.store.peer(msg.recipient)
        if peer is None or peer.state != "active" or peer.client not in VIA:
            return
        if not self._idle(peer.id):
            return
        batch = self.batches.get(peer.id)
        if batch is not None:
            batch[msg.id] = msg.sender_name
            return
        self.batches[peer.id] = {msg.id: msg.sender_name}
        if self.d.spawn(self._wake(peer.id)) is None:
            self.batches.pop(peer.id, None)

    def message_wake(self, message_id: str) -> p.Wake | None:
        return self.by_message.get(message_id)

    # ------------------------------------------------------------ the wake

    def _idle(self, peer_id: str) -> bool:
        from .coordination import effective_status

        return effective_status(self.d, peer_id) == "idle"

    async def _wake(self, peer_id: str) -> None:
        try:
            await asyncio.sleep(BATCH_WINDOW)
        finally:
            batch = self.batches.pop(peer_id, {})
        peer = self.d.store.peer(peer_id)
        if peer is None or peer.state != "active" or not peer.pending or not self._idle(peer_id):
            return  # read meanwhile, or the session woke up, or a waiter armed
        via = VIA[peer.client]
        since = self.woken_at.get(peer_id)
        if since is not None and time.monotonic() - since < self.d.settings.wake_rearm:
            earlier = self.last.get(peer_id)
            if earlier is not None:
                self._record(peer_id, batch, earlier)  # told already: this mail rides on it
            return
        route = self.routes.get(peer_id)
        reason = self._skip(peer, route)
        if reason:
            log.info("no wake for %s (%s): %s", peer.name, peer_id, reason)
            self._record(peer_id, batch, p.Wake(via, "skipped", time.time(), reason))
            return
        assert route is not None
        self.woken_at[peer_id] = time.monotonic()
        text = nudge(list(batch.values()))
        if via == "codex queue":
            failure = await self._codex(route, text)
        else:
            failure = await self._inbox(route, text)
        if failure:
            log.warning("wake of %s (%s) via %s failed: %s", peer.name, peer_id, via, failure)
            wake = p.Wake(via, "failed", time.time(), failure)
        else:
            log.info("woke %s (%s) via %s", peer.name, peer_id, via)
            wake = p.Wake(via, "queued", time.time())
        self._record(peer_id, batch, wake)

    def route_for(self, peer: p.Peer) -> p.WakeVia | None:
        """How mail for ``peer`` would wake it now, if it is idle: its route is known and
        wakes are on (the cheap part of ``_skip``; a ``codex exec`` or ``claude -p``
        session is found out, and recorded as skipped, when mail comes)."""
        route = self.routes.get(peer.id)
        if route is None or not self.d.settings.native_wake:
            return None
        if peer.machine_id != self.d.machine_id or peer.client not in VIA:
            return None
        via = VIA[peer.client]
        last = self.last.get(peer.id)
        failed = last is not None and last.outcome != "queued"
        if failed and last.at >= self.reported_at.get(peer.id, 0.0):  # type: ignore[union-attr]
            return None  # skipped or failed with this route: it will not wake it now
        return via if (route.thread if via == "codex queue" else route.inbox) else None

    def _skip(self, peer: p.Peer, route: p.WakeRoute | None) -> str:
        """Why this peer is not woken ("" to wake it)."""
        if not self.d.settings.native_wake:
            return "native_wake is off"
        if peer.machine_id != self.d.machine_id:
            return "the session is on another machine"
        cmdline = identity.process_cmdline(peer.agent_pid)
        if peer.client == "codex":
            if codex_exec(cmdline):
                return "a codex exec session (not interactive: a queued turn would be lost)"
            if route is None or not route.thread:
                return "no thread id reported yet (its hooks report it at Stop)"
            return ""
        if any(arg in PRINT_FLAGS for arg in cmdline[1:]):
            return "a claude -p session (it ends with its turn)"
        if route is None or not route.inbox:
            return "no inbox socket reported (Claude Code before 2.1.224, or messaging off)"
        return ""

    def _record(self, peer_id: str, batch: dict[str, str], wake: p.Wake) -> None:
        self.last[peer_id] = wake
        for message_id in batch:
            self.by_message[message_id] = wake
            self.by_message.move_to_end(message_id)
        while len(self.by_message) > MESSAGES_KEPT:
            self.by_message.popitem(last=False)

    async def _codex(self, route: p.WakeRoute, text: str) -> str:
        """Run ``codex queue``: "" once it queued, else what went wrong."""
        binary, refused = codex_program(self.d.settings.codex_bin, route.codex_bin)
        if binary is None:
            return refused
        assert route.thread is not None
        env = {k: v for k, v in os.environ.items() if k != "CODEX_HOME"}  # not the starter's
        if route.codex_home:
            if not _own(route.codex_home, stat.S_IFDIR):
                return f"CODEX_HOME {route.codex_home} is not a directory of yours"
            env["CODEX_HOME"] = route.codex_home
        argv = [binary, "queue", "--thread", route.thread, "--message", text]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            return f"cannot run {binary}: {e.strerror or e}"
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), CODEX_TIMEOUT)
        except TimeoutError:
            return f"codex queue gave no answer within {CODEX_TIMEOUT:g} s"
        finally:
            if proc.returncode is None:  # the whole group: npm's wrapper and the native codex
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5.0)
        if proc.returncode != 0:
            lines = [x for x in err.decode("utf-8", "replace").splitlines() if x.strip()]
            said = next((x for x in lines if x.startswith("Error")), lines[0] if lines else "")
            return f"codex queue exited {proc.returncode}: {said[:300]}".rstrip(": ")
        return ""

    async def _inbox(self, route: p.WakeRoute, text: str) -> str:
        """Post the nudge to the inbox socket: "" once written, else what went wrong."""
        assert route.inbox is not None
        if not _own(route.inbox, stat.S_IFSOCK):
            return f"{route.inbox} is not a socket of yours"
        data = b""
        if route.inbox_token:
            data += msgspec.json.encode({"type": "auth", "token": route.inbox_token}) + b"\n"
        user = {"type": "user", "message": {"role": "user", "content": text}}
        data += msgspec.json.encode(user) + b"\n"  # ready before the connection opens
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(route.inbox), INBOX_TIMEOUT
            )
        except (OSError, TimeoutError) as e:
            return f"cannot connect to the inbox {route.inbox}: {_why(e)}"
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), INBOX_TIMEOUT)
        except (OSError, TimeoutError) as e:
            return f"cannot write to the inbox {route.inbox}: {_why(e)}"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), INBOX_TIMEOUT)
        return ""


def codex_program(setting: str, reported: str | None) -> tuple[str | None, str]:
    """The ``codex`` the daemon may run, or None and why not.

    A client reports the path its hooks found; the daemon runs it only when it is the
    ``codex_bin`` setting or a program only root can change (owned by root, and neither it
    nor its directory writable by others). Any process of the user can report a route, so
    running a path of the user's own (a sandboxed agent can write one) would let it run
    code outside its sandbox: for such installs (nvm, ~/.npm-global) the user names the
    program once with ``codex_bin``.
    """
    if setting:
        return setting, ""
    if not reported:
        return None, "no codex binary: none on the PATH of the session's hooks, codex_bin unset"
    real = os.path.realpath(reported)
    if not _root_only(real) or not _root_only(os.path.dirname(real)):
        return None, (
            f"{reported} is not the codex_bin setting and can be changed by a user; "
            f"set codex_bin = {json.dumps(reported)} in the claude-peers config to allow it"
        )
    return real, ""


def _root_only(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _own(path: str, kind: int) -> bool:
    """``path`` is ours and of ``kind`` (``stat.S_IFDIR``, ``S_IFSOCK``), never followed
    through a link; or nothing is there yet (codex creates its home; connecting to a
    missing socket says so)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid()


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
