"""Requests about who is touching what: edits, conflict checks, claims, status.

One handler per request, in the shape of ``handlers`` (check what can be checked
without the store, return the operation for the next batch). ``handlers`` adds
``HANDLERS`` below to its table. What the hooks and tools do with the answers is in
``docs/coordination.md``.

Everything here is about *other live peers on the caller's machine*: a peer is never
told about its own files, a gone peer holds nothing (``store.mark_gone``), and a path
on another machine is another file even when it is spelled the same.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from . import globs, groups
from . import protocol as p
from .errors import Code, PeersError
from .files import MAX_CLAIMS_PER_PEER
from .handlers import Effect, Handler, Op, Outcome, _me, _session_peer
from .handlers import _machine as _proven_machine
from .paths import PathError, check_wire_path, relative

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Daemon

NOTICE_EVERY = 600.0
"""A holder hears about one file from one peer at most this often (seconds)."""
RECENT_FILES = 3
"""Active files shown per peer in ``list_peers``."""


def _bad_path(e: PathError) -> PeersError:
    return PeersError(Code.BAD_REQUEST, str(e))


def _check_refs(refs: list[p.FileRef], what: str = "path") -> None:
    try:
        for ref in refs:
            check_wire_path(ref.path, what)
            if ref.repo is not None:
                check_wire_path(ref.repo, "repo")
    except PathError as e:
        raise _bad_path(e) from None


def _machine(d: Daemon, conn: Connection, caller: p.Peer | None) -> str:
    """The machine whose paths these are: the connection's own (a TCP client's proven one)."""
    return caller.machine_id if caller is not None else _proven_machine(conn)


# --------------------------------------------------------------------------- status


def effective_status(d: Daemon, peer_id: str) -> str | None:
    """working / idle / waiting: what the hooks said, "waiting" while a wake is armed.

    An armed wake is a connection bound to the peer that listens for its mail without
    being its helper: ``peers-hook --wait``. It shows only while the peer is not working.
    """
    state = d.store.files.status.get(peer_id, (None, None, ""))[0]
    armed = any("mail" in c.kinds and not c.helper for c in d.by_peer.get(peer_id, ()))
    if armed and state != "working":
        return "waiting"
    if state == "waiting":
        return "idle"  # said so, but no wake is armed (any more)
    return state


def reach(d: Daemon, peer: p.Peer, status: str | None = None) -> p.Reach:
    """How mail sent now reaches ``peer``, from what the daemon knows of it.

    The one place that decides: a new way to reach a peer (a wake the daemon starts for
    an idle session) is one more branch here, before ``next_prompt``.
    """
    if peer.state != "active":
        return "gone"  # the mail waits for a successor of the name, or expires
    if peer.receive == "push" and peer.connected:
        return "push"  # channel on, helper connected (``receive`` says push only then)
    status = status or effective_status(d, peer.id)
    if status == "working":
        return "next_tool_call"  # its hooks deliver after the next tool call or at Stop
    if status == "waiting":
        return "idle_wake"  # idle with a ``peers-hook --wait`` armed
    if status == "idle":
        via = d.waker.route_for(peer)
        if via is not None:  # the daemon wakes it (peersd/wake.py)
            return "codex_queue" if via == "codex queue" else "inbox"
        return "next_prompt"  # idle, nothing armed: the next prompt's hook delivers
    return "when_checked"  # no hook has reported: only check_messages / the CLI


def decorate(d: Daemon, peers: list[p.Peer]) -> list[p.Peer]:
    """Peers with reach, status, note and active files filled in (copies; the cache
    stays as is)."""
    files = d.store.files
    now = time.time()
    by_peer: dict[str, list[tuple[str, str | None]]] = {}
    only = peers[0].id if len(peers) == 1 else None  # one peer (set_status): its rows only
    since = now - d.settings.activity_ttl
    for peer_id, path, repo, _first, _last in files.all_active(since, only):
        by_peer.setdefault(peer_id, []).append((path, repo))
    out = []
    for peer in peers:
        if peer.state != "active":
            out.append(msgspec.structs.replace(peer, reach=reach(d, peer)))
            continue
        status = effective_status(d, peer.id)
        note = files.status.get(peer.id, (None, None, ""))[2]
        active = by_peer.get(peer.id, [])
        wake = d.waker.last.get(peer.id)
        out.append(
            msgspec.structs.replace(
                peer,
                reach=reach(d, peer, status),
                status=status,
                note=note,
                files=len(active),
                recent_files=[relative(path, repo) for path, repo in active[:RECENT_FILES]],
                wake=wake,
            )
        )
    return out


def set_status(d: Daemon, conn: Connection, r: p.SetStatus) -> Op:
    me = _me(conn)
    if r.wake is not None and conn.remote:
        # The daemon would run the program and connect to the socket named here.
        raise PeersError(Code.FORBIDDEN, "wake routes are only for the daemon's own machine")

    def op() -> Outcome:
        files = d.store.files
        state, at, note = files.status.get(me, (None, None, ""))
        if r.state is not None:
            state, at = r.state, time.time()
        if r.note is not None:
            note = r.note
        files.set_status(me, state, at, note)
        peer = decorate(d, [d.store.require_peer(me)])[0]
        # The session acted (or was told to): its next mail may wake it (peersd.wake).
        return Outcome(p.PeerResult(id=r.id, peer=peer), [lambda: d.waker.reported(me, r.wake)])

    return op


# --------------------------------------------------------------------------- holders


def _holder(d: Daemon, peer: p.Peer, **fields: Any) -> p.FileHolder:
    """``peer`` holding a file or pattern: who it is and what it is doing, plus ``fields``."""
    return p.FileHolder(
        peer_id=peer.id,
        name=peer.name,
        client=peer.client,
        status=effective_status(d, peer.id),  # type: ignore[arg-type]
        **fields,
    )


def _claim_holder(d: Daemon, peer: p.Peer, claim: tuple[Any, ...], **extra: Any) -> p.FileHolder:
    """A row of ``files.live_claims`` as a holder."""
    _peer_id, pattern, repo, exclusive, reason, created, expires = claim
    return _holder(
        d,
        peer,
        kind="claim",
        path=pattern,
        repo=repo,
        since=created,
        until=expires,
        exclusive=exclusive,
        reason=reason,
        **extra,
    )


def _active_holder(
    d: Daemon,
    peer: p.Peer,
    path: str,
    repo: str | None,
    first: float,
    last: float,
    ttl: float,
    **extra: Any,
) -> p.FileHolder:
    """A file ``peer`` edited, active until ``ttl`` after its last edit, as a holder."""
    return _holder(
        d,
        peer,
        kind="active",
        path=path,
        repo=repo,
        since=first,
        last=last,
        until=last + ttl,
        **extra,
    )


def holders(
    d: Daemon, targets: list[str], exclude: str | None, machine: str, now: float
) -> list[p.FileHolder]:
    """Other live peers' activity on, and claims over, each target (a path or a pattern)."""
    files = d.store.files
    ttl = d.settings.activity_ttl
    found: list[p.FileHolder] = []

    plain = [t for t in targets if not globs.is_glob(t)]
    literal = set(plain)
    patterns = [t for t in targets if globs.is_glob(t)]
    rows = files.active_on(plain, now - ttl)
    if patterns:
        rows += [
            row
            for row in files.all_active(now - ttl)
            if any(globs.matches(t, row[1]) for t in patterns)
        ]
    seen: set[tuple[str, str, str]] = set()
    for peer_id, path, repo, first, last in rows:
        peer = files.live(peer_id, machine) if peer_id != exclude else None
        if peer is None:
            continue
        also = [t for t in patterns if globs.matches(t, path)]
        for target in [path, *also] if path in literal else also:
            if (peer_id, path, target) in seen:
                continue
            seen.add((peer_id, path, target))
            found.append(_active_holder(d, peer, path, repo, first, last, ttl, target=target))
    for claim in files.live_claims(now):
        peer = files.live(claim[0], machine) if claim[0] != exclude else None
        if peer is None:
            continue
        for target in targets:
            if globs.overlap(claim[1], target):
                found.append(_claim_holder(d, peer, claim, target=target))
    order = {t: i for i, t in enumerate(targets)}
    found.sort(
        key=lambda h: (order.get(h.target or "", 0), h.kind != "claim", not h.exclusive, h.name)
    )
    return found


# --------------------------------------------------------------------------- edits


def touch_files(d: Daemon, conn: Connection, r: p.TouchFiles) -> Op:
    me = _me(conn)
    _check_refs(r.files)

    def op() -> Outcome:
        now = time.time()
        files = d.store.files
        files.touch(me, [(f.path, f.repo) for f in r.files], now, d.settings.activity_ttl)
        files.prune(now, d.settings.activity_ttl)
        return Outcome(p.Ok(id=r.id))

    return op


def check_edit(d: Daemon, conn: Connection, r: p.CheckEdit) -> Op:
    bound = conn.peer_id
    if (r.record or r.notify) and bound is None and not r.attach:
        raise PeersError(
            Code.NOT_REGISTERED,
            "record and notify need a registered peer (register, attach, or set attach)",
        )
    _check_refs(r.files)
    pid = None if conn.remote else conn.pid

    def op() -> Outcome:
        now = time.time()
        caller = d.store.peer(bound) if bound else None
        if bound and caller is None:
            raise PeersError(Code.NOT_REGISTERED, f"peer {bound} is no longer known")
        if caller is None and r.attach:
            caller = _session_peer(d, conn, r.session_id, pid)
        me = caller.id if caller is not None else None
        machine = _machine(d, conn, caller)
        paths = list(dict.fromkeys(f.path for f in r.files))
        found = holders(d, paths, me, machine, now)
        exclusive = any(h.kind == "claim" and h.exclusive for h in found)
        decision = (
            "deny" if exclusive and d.settings.claims == "deny" else "warn" if found else "allow"
        )
        effects: list[Effect] = []
        if r.record and me is not None and decision != "deny":
            d.store.files.touch(
                me, [(f.path, f.repo) for f in r.files], now, d.settings.activity_ttl
            )
        # Holders in other groups still hold (the file on disk is shared) but are neither
        # named nor told: no mail crosses groups (peersd/groups.py).
        if r.notify and caller is not None and found:
            told = [h for h in found if groups.visible(caller, d.store._peers[h.peer_id])]
            effects += _notices(d, caller, told, decision, now) if told else []
        shown = groups.mask_holders(d.store, caller, found)
        return Outcome(p.EditCheck(id=r.id, decision=decision, holders=shown), effects)  # type: ignore[arg-type]

    return op


def _notices(
    d: Daemon, editor: p.Peer, found: list[p.FileHolder], decision: str, now: float
) -> list[Effect]:
    """Mail each holder once per file and editor (every ``NOTICE_EVERY`` seconds at most)."""
    by_pair: dict[tuple[str, str], list[p.FileHolder]] = {}
    for h in found:
        by_pair.setdefault((h.target or h.path, h.peer_id), []).append(h)
    effects: list[Effect] = []
    sent: list[tuple[str, str, str]] = []
    notified = d.store.files.notified
    for (target, holder_id), held in by_pair.items():
        key = (target, editor.id, holder_id)
        if now - notified.get(key, 0.0) < NOTICE_EVERY:
            continue
        recipient = d.store.peer(holder_id)
        if recipient is None or recipient.pending >= d.settings.queue_limit:
            continue
        text = _notice_text(editor.name, target, held, decision)
        msg = d.store.send(editor, recipient, text, None, now, d.settings.message_ttl)
        effects += d.mail_effects(msg)
        sent.append(key)

    def remember() -> None:
        for key in sent:
            notified[key] = now
        for key in [k for k, at in notified.items() if now - at >= NOTICE_EVERY]:
            del notified[key]

    return [remember, *effects]


def _notice_text(editor: str, target: str, held: list[p.FileHolder], decision: str) -> str:
    repo = next((h.repo for h in held if h.repo), None)
    shown = relative(target, repo)
    claim = next((h for h in held if h.kind == "claim"), None)
    if claim is None:
        why = "which you are editing"
    elif claim.exclusive:
        pattern = relative(claim.path, claim.repo)
        outcome = "the edit was refused" if decision == "deny" else "the edit went ahead"
        why = f"under your exclusive claim on {pattern} ({outcome})"
    else:
        why = f"under your claim on {relative(claim.path, claim.repo)}"
    return (
        f"[claude-peers notice] {editor} was about to edit {shown}, {why}. Nothing is needed "
        f"unless you want to coordinate; {editor} can be reached with send_message."
    )


# --------------------------------------------------------------------------- claims


def claim_files(d: Daemon, conn: Connection, r: p.ClaimFiles) -> Op:
    me = _me(conn)
    _check_refs(r.patterns, "pattern")
    try:
        for ref in r.patterns:
            globs.check_pattern(ref.path)
            if ref.repo is None:
                raise PathError(
                    f"pattern {ref.path!r} has no repository; claims are per repository"
                )
            if not ref.path.startswith(ref.repo.rstrip("/") + "/"):
                raise PathError(f"pattern {ref.path!r} is not inside its repository {ref.repo!r}")
    except PathError as e:
        raise _bad_path(e) from None

    def op() -> Outcome:
        now = time.time()
        files = d.store.files
        caller = d.store.require_peer(me)
        wanted = {ref.path: ref.repo or "" for ref in r.patterns}
        # Refused: overlapping another live peer's exclusive claim, or, for an exclusive
        # claim, overlapping any claim of another live peer.
        for peer_id, pattern, repo, exclusive, reason, created, expires in files.live_claims(now):
            holder = files.live(peer_id, caller.machine_id) if peer_id != me else None
            if holder is None or not (exclusive or r.exclusive):
                continue
            for mine in wanted:
                if globs.overlap(pattern, mine):
                    if not groups.visible(caller, holder):
                        raise PeersError(
                            Code.CLAIM_CONFLICT,
                            f"{relative(mine, wanted[mine])} overlaps "
                            f"{'an exclusive claim' if exclusive else 'a claim'} of "
                            f"{groups.HIDDEN_NAME} on {relative(pattern, repo)}, until "
                            f"{time.strftime('%H:%M UTC', time.gmtime(expires))}.",
                        )
                    raise PeersError(
                        Code.CLAIM_CONFLICT,
                        _conflict_text(
                            holder,
                            mine,
                            wanted[mine],
                            pattern,
                            repo,
                            exclusive,
                            reason,
                            created,
                            expires,
                        ),
                        candidates=[holder.name],
                    )
        if files.claim_count(me, now) + len(wanted) > MAX_CLAIMS_PER_PEER:
            raise PeersError(
                Code.BAD_REQUEST,
                f"a peer may hold at most {MAX_CLAIMS_PER_PEER} claims; release some first",
            )
        files.claim(me, wanted.items(), r.exclusive, r.reason, now, r.ttl_seconds)
        files.prune(now, d.settings.activity_ttl)
        claims = [
            p.FileHolder(
                peer_id=me,
                name=caller.name,
                client=caller.client,
                kind="claim",
                path=pattern,
                repo=repo,
                since=created,
                until=expires,
                exclusive=exclusive,
                reason=reason,
            )
            for peer_id, pattern, repo, exclusive, reason, created, expires in files.live_claims(
                now
            )
            if peer_id == me and pattern in wanted
        ]
        active = [
            h for h in holders(d, list(wanted), me, caller.machine_id, now) if h.kind == "active"
        ]
        active = groups.mask_holders(d.store, caller, active)
        return Outcome(p.FilesClaimed(id=r.id, claims=claims, holders=active))

    return op


def _conflict_text(
    holder: p.Peer,
    mine: str,
    mine_repo: str,
    pattern: str,
    repo: str,
    exclusive: bool,
    reason: str,
    created: float,
    expires: float,
) -> str:
    kind = "an exclusive claim" if exclusive else "a claim"
    why = f' ("{reason}")' if reason else ""
    when = time.strftime("%H:%M UTC", time.gmtime(created))
    until = time.strftime("%H:%M UTC", time.gmtime(expires))
    return (
        f"{relative(mine, mine_repo)} overlaps {kind} of {holder.name} on "
        f"{relative(pattern, repo)}{why}, held since {when} until {until}. Ask {holder.name} "
        f"to release it: send_message to {holder.name}."
    )


def release_files(d: Daemon, conn: Connection, r: p.ReleaseFiles) -> Op:
    me = _me(conn)
    if r.all and r.patterns:
        raise PeersError(Code.BAD_REQUEST, "give patterns or all, not both")
    if not r.all and not r.patterns:
        raise PeersError(Code.BAD_REQUEST, "nothing to release: give patterns, or all")

    def op() -> Outcome:
        now = time.time()
        released = d.store.files.release(me, None if r.all else r.patterns, now)
        not_held = [x for x in dict.fromkeys(r.patterns) if x not in released]
        return Outcome(p.FilesReleased(id=r.id, released=released, not_held=not_held))

    return op


def file_status(d: Daemon, conn: Connection, r: p.FileStatus) -> Op:
    try:
        for path in r.paths:
            check_wire_path(path)
            globs.check_pattern(path)
    except PathError as e:
        raise _bad_path(e) from None

    def op() -> Outcome:
        now = time.time()
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        machine = _machine(d, conn, caller)
        found = holders(d, list(dict.fromkeys(r.paths)), None, machine, now)
        found = groups.mask_holders(d.store, caller, found)
        items = [
            p.FileStatusItem(path=path, holders=[h for h in found if h.target == path])
            for path in r.paths
        ]
        return Outcome(p.FileStatuses(id=r.id, items=items))

    return op


def list_files(d: Daemon, conn: Connection, r: p.ListFiles) -> Op:
    if r.repo is not None:
        try:
            check_wire_path(r.repo, "repo")
        except PathError as e:
            raise _bad_path(e) from None

    def op() -> Outcome:
        now = time.time()
        files = d.store.files
        ttl = d.settings.activity_ttl
        caller = d.store.peer(conn.peer_id) if conn.peer_id else None
        machine = _machine(d, conn, caller)
        found: list[p.FileHolder] = []
        for claim in files.live_claims(now):
            peer = files.live(claim[0], machine)
            if peer is not None and (r.repo is None or claim[2] == r.repo):
                found.append(_claim_holder(d, peer, claim))
        for peer_id, path, where, first, last in files.all_active(now - ttl):
            peer = files.live(peer_id, machine)
            if peer is not None and (r.repo is None or where == r.repo):
                found.append(_active_holder(d, peer, path, where, first, last, ttl))
        found.sort(key=lambda h: (h.repo or "", h.path, h.kind != "claim", h.name))
        found = groups.mask_holders(d.store, caller, found)
        return Outcome(p.FileListing(id=r.id, holders=found))

    return op


HANDLERS: dict[type[p.Request[Any]], Handler] = {
    p.TouchFiles: touch_files,
    p.CheckEdit: check_edit,
    p.ClaimFiles: claim_files,
    p.ReleaseFiles: release_files,
    p.FileStatus: file_status,
    p.ListFiles: list_files,
    p.SetStatus: set_status,
}
SINGLE_STATEMENT: frozenset[type[p.Request[Any]]] = frozenset(
    {p.SetStatus, p.FileStatus, p.ListFiles}
)
"""Of these, the ones that write at most one SQL statement."""
