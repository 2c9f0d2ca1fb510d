"""Isolation groups: which peers may see and address each other. The one rule lives here.

A peer's group comes from its session's configuration (``group``, or its git branch with
``auto_group = "branch"``), reported at ``register``, or from ``set_group``. Two peers see
each other when they are in the same group (no group counts as one group of its own),
or when either is the person at a terminal: a ``cli`` peer with no group (the human CLI).
A connection bound to no peer (``peers peers``) sees everyone.

Every feature that lists or addresses peers asks ``visible`` (or filters rows with
``sql_visible``); a peer it may not see is answered as if it did not exist
(``unknown_peer``, ``hidden``), so isolation does not tell a peer who is in other groups.
Groups organise work; they are no security boundary (every peer runs as the same user).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .errors import Code, PeersError

if TYPE_CHECKING:
    from .protocol import FileHolder, Peer
    from .store import Store

HIDDEN_NAME = "(a session in another group)"
"""What a file holder in a group the viewer may not see is called (``mask_holders``)."""


def operator(peer: Peer) -> bool:
    """The person at a terminal: a CLI peer in no group sees and reaches everyone."""
    return peer.client == "cli" and peer.group is None


def visible(viewer: Peer | None, other: Peer) -> bool:
    """Whether ``viewer`` may see and address ``other`` (None: an unbound connection)."""
    if viewer is None or viewer.id == other.id:
        return True
    if operator(viewer) or operator(other):
        return True
    return viewer.group == other.group


def sql_visible(viewer: Peer | None, column: str) -> tuple[str, list[Any]]:
    """``visible`` as a SQL condition on a column holding peer ids, and its arguments.

    Peers no longer in the table (purged after ``gone_retention``) count as visible only
    to viewers that see everyone.
    """
    if viewer is None or operator(viewer):
        return "1", []
    return (
        f"({column} = ? OR {column} IN (SELECT id FROM peers WHERE "
        "coalesce(group_name, '') = ? OR (client = 'cli' AND group_name IS NULL)))",
        [viewer.id, viewer.group or ""],
    )


def hidden(target: str, viewer: Peer | None) -> PeersError:
    """The error for a peer ``viewer`` may not see: the same as for one that does not exist
    (whether a name exists in another group is not the viewer's to learn)."""
    where = f" in your group {viewer.group!r}" if viewer is not None and viewer.group else ""
    extra = (
        " (peers in other groups cannot be seen or reached; list_peers shows yours)"
        if viewer is not None and viewer.group
        else ""
    )
    return PeersError(Code.UNKNOWN_PEER, f"no peer named {target!r}{where}{extra}")


def resolve(store: Store, viewer: Peer | None, target: str, machine_id: str) -> Peer:
    """``store.resolve`` as ``viewer`` may: a peer it may not see is ``hidden``, and the
    "did you mean" candidates are only names it may see."""
    target = target.strip()
    try:
        peer = store.resolve(target, machine_id)
    except PeersError as e:
        if e.code == Code.UNKNOWN_PEER and viewer is not None:
            seen = {x.name for x in store.list_peers(viewer, "all", include_self=True)}
            e.candidates = [name for name in e.candidates if name in seen]
            if viewer.group:
                e.message = hidden(target, viewer).message
        raise
    if not visible(viewer, peer):
        raise hidden(target, viewer)
    return peer


def mask_holders(store: Store, viewer: Peer | None, holders: list[FileHolder]) -> list[FileHolder]:
    """File holders as ``viewer`` may see them: one in a group it may not see keeps its
    hold (the file on disk is shared whatever the groups) but not its name or id."""
    if viewer is None or operator(viewer):
        return holders
    shown = []
    for h in holders:
        peer = store._peers.get(h.peer_id)
        if peer is not None and not visible(viewer, peer):
            h = msgspec.structs.replace(h, peer_id="", name=HIDDEN_NAME, client="")
        shown.append(h)
    return shown
