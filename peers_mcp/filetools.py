"""The MCP tools about files and status: ``claim_files``, ``release_files``,
``file_status``, ``set_status`` (``docs/coordination.md``).

A mixin of ``server.PeersMCP``: its ``t_<tool>`` methods are found by name like the
others. Paths are resolved here, where the session's files are (``peersd.globs``):
relative to the session's directory, a folder standing for everything under it.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import mcp_types as types
import msgspec

from peersd import globs
from peersd import protocol as p
from peersd.errors import Code, PeersError
from peersd.paths import PathError

from . import conflicts, render, tools

if TYPE_CHECKING:
    from peersd.config import Settings


FILES_META = "claude-peers/files"


def _ok(text: str, data: dict[str, Any]) -> types.CallToolResult:
    """The text for the model, the data in ``_meta``: with structured content the clients
    show the model the JSON instead, and it would lose who to ask and how."""
    return types.CallToolResult(  # `meta` is the field's name; `_meta` its wire alias
        content=[types.TextContent(type="text", text=text)],
        meta={FILES_META: data},  # type: ignore[call-arg]
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def describe_claims(
    claims: list[p.FileHolder], unmatched: list[str], others: list[p.FileHolder]
) -> str:
    """What ``claim_files`` says it did."""
    parts = []
    for c in claims:
        kind = "exclusive" if c.exclusive else "shared"
        why = f', reason "{render.inline(c.reason)}"' if c.reason else ""
        parts.append(
            f"{render.inline(conflicts.rel(c.path, c.repo))} ({kind}, until "
            f"{conflicts.clock(c.until)}{why})"
        )
    text = "Claimed " + "; ".join(parts) + "."
    if unmatched:
        text += (
            " No file matches " + ", ".join(render.inline(u) for u in unmatched) + " yet; "
            "the claim covers files made there later."
        )
    if others:
        now = time.time()
        text += " Already editing files under them: " + "; ".join(
            conflicts.describe(h, now) for h in others
        )
        text += "."
    return text


def doing(peer: p.Peer) -> str:
    """``; working, editing 2 files (src/a.py, b.py); note "away"`` for ``list_peers``."""
    parts: list[str] = []
    if peer.status:
        parts.append(peer.status)
    if peer.files:
        shown = ", ".join(render.field(f) for f in peer.recent_files)
        more = ", …" if peer.files > len(peer.recent_files) else ""
        parts.append(f"editing {peer.files} file(s) ({shown}{more})")
    if peer.note:
        parts.append(f"note {render.field(peer.note)}")
    return "; " + "; ".join(parts) if parts else ""


class FileTools:
    """Mixed into ``PeersMCP``; uses its ``_call``, ``server_name`` and ``client_kind``."""

    settings: Settings
    server_name: str
    client_kind: str

    async def _call(self, kind: type[p.Request], **fields: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _files_cwd(self) -> str:
        return os.environ.get("CLAUDE_PROJECT_DIR") or os.getcwd()

    async def t_claim_files(self, a: tools.ClaimFilesArgs) -> types.CallToolResult:
        cwd = self._files_cwd()
        refs, unmatched = [], []
        try:
            for raw in a.paths:
                c = globs.claim_pattern(raw, cwd)
                refs.append(p.FileRef(path=c.pattern, repo=c.repo))
                if not c.matches_now:
                    unmatched.append(raw)
        except PathError as e:
            return _error(f"Nothing was claimed: {e}.")
        try:
            reply = await self._call(
                p.ClaimFiles,
                patterns=refs,
                exclusive=a.exclusive,
                ttl_seconds=a.ttl_minutes * 60.0,
                reason=a.reason,
            )
        except PeersError as e:
            if e.code != Code.CLAIM_CONFLICT:
                raise
            send = render.tool("send_message", self.server_name, self.client_kind)
            who = e.candidates[0] if e.candidates else "them"
            return _error(
                f'Nothing was claimed: {e.message} (call {send} with to="{render.inline(who)}").'
            )
        return _ok(
            describe_claims(reply.claims, unmatched, reply.holders),
            {
                "claims": [msgspec.to_builtins(c) for c in reply.claims],
                "unmatched": unmatched,
                "others": [msgspec.to_builtins(h) for h in reply.holders],
            },
        )

    async def t_release_files(self, a: tools.ReleaseFilesArgs) -> types.CallToolResult:
        if a.all == bool(a.paths):
            return _error("Give the paths you claimed, or all=true (not both).")
        cwd = self._files_cwd()
        patterns = []
        for raw in a.paths:
            try:
                patterns.append(globs.claim_pattern(raw, cwd).pattern)
            except PathError:
                patterns.append(globs.target(raw, cwd))
        reply = await self._call(p.ReleaseFiles, patterns=patterns, all=a.all)
        if reply.released:
            text = f"Released {len(reply.released)} claim(s)."
        else:
            text = "You held no such claim; nothing was released."
        if reply.not_held:
            text += " Not yours (or already ended): " + ", ".join(
                render.inline(x) for x in reply.not_held
            )
            text += "."
        return _ok(text, {"released": reply.released, "not_held": reply.not_held})

    async def t_file_status(self, a: tools.FileStatusArgs) -> types.CallToolResult:
        try:
            path = globs.target(a.path, self._files_cwd())
        except PathError as e:
            return _error(str(e))
        reply = await self._call(p.FileStatus, paths=[path])
        me = (await self._call(p.Whoami)).peer.id
        item = reply.items[0]
        text = conflicts.status_text(render.inline(a.path), item.holders, me)
        if any(h.peer_id not in (me, "") for h in item.holders):
            # a holder without an id is in another group: it cannot be asked
            names = sorted({h.name for h in item.holders if h.peer_id not in (me, "")})
            send = render.tool("send_message", self.server_name, self.client_kind)
            text += " To ask: " + " or ".join(f'{send} with to="{n}"' for n in names) + "."
        return _ok(text, {"path": path, "holders": [msgspec.to_builtins(h) for h in item.holders]})

    async def t_set_status(self, a: tools.SetStatusArgs) -> types.CallToolResult:
        peer = (await self._call(p.SetStatus, note=a.note)).peer
        text = f'Your note is now: "{peer.note}"' if peer.note else "Your note is cleared."
        return _ok(text, {"note": peer.note, "status": peer.status})
