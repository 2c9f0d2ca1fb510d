"""The one delivery routine: claim → show what fits the budget → ack exactly that →
release the rest.

Every path that shows mail uses it: the hook's events and its idle wake (``hook.py``,
blocking, over the stdlib-only ``peersd.wire``), ``check_messages``,
``wait_for_message`` and channel push (``server.py``, async), and ``peers inbox``.

``plan`` is the sans-IO core: given the claimed messages and a budget it decides what is
shown (whole, or cut with the way to read on: see ``render.part``), what is
acknowledged (exactly what is shown) and what is released at once (the rest). Its rules:

- the oldest claimed message is always shown, whole or cut, so every delivery makes
  progress and no message can hold back those behind it;
- a message whose rendering fits the budget is shown whole, or not at all (it waits
  for the next delivery, where it is among the oldest);
- a message that can never fit is shown cut, with how many characters were left out
  and the exact ``check_messages`` call that reads on, and counts as shown;
- what waits is named in a closing line, with the tool that shows it.

``deliver`` and ``adeliver`` are the blocking and async drivers around it. They take a
mailbox (``claim``, ``ack``, ``release``) and a ``show`` callback. Kept free of heavy
imports: the hook loads it when there is mail.
"""

from __future__ import annotations

from peersd.errors import ClaudePeersError, Code

from . import render

TYPE_CHECKING = False
if TYPE_CHECKING:  # the hook imports this module: typing costs milliseconds at run time
    from collections.abc import Awaitable, Callable, Sequence
    from typing import Any

CLOSING_ROOM = 600
"""Characters kept free in a budget for the line naming what waits."""
NAMES_SHOWN = 5


class Plan:
    """What one delivery shows, acknowledges and gives back."""

    __slots__ = ("cut", "parts", "rest", "shown", "text")

    def __init__(self) -> None:
        self.text = ""
        """Everything shown, as one text (empty for an unrendered plan)."""
        self.shown: list[Any] = []
        """Messages shown, whole or cut, oldest first: exactly these are acknowledged."""
        self.parts: list[str] = []
        """The rendering of each shown message (rendered plans only)."""
        self.cut: dict[str, int] = {}
        """Messages shown cut: id → characters of its text shown."""
        self.rest: list[Any] = []
        """Claimed but not shown: released at once."""


def plan(
    msgs: Sequence[Any],
    budget: int | None = render.HOOK_BUDGET,
    server: str = render.SERVER_NAME,
    client: str | None = None,
    cap: int | None = None,
    rendered: bool = True,
) -> Plan:
    """Decide what to show of ``msgs`` (oldest first) in ``budget`` characters.

    With a ``budget`` the text is one block (``render.INTRO``, the messages, a closing
    line). Without one every message is shown, each in at most ``cap`` characters
    (channel push: one notification each), or not rendered at all (``rendered`` false:
    the caller shows them its own way, as ``peers inbox`` does).
    """
    out = Plan()
    if budget is None:
        out.shown = list(msgs)
        if rendered:
            for msg in msgs:
                got = render.part(msg, cap, server, client) if cap else None
                rendering = got[0] if got else render.message(msg, server, client=client)
                if got and got[1] < len(render.field_of(msg, "text")):
                    out.cut[render.field_of(msg, "id")] = got[1]
                out.parts.append(rendering)
        return out
    room = budget - len(render.INTRO) - CLOSING_ROOM
    if cap is not None:
        room = min(room, cap)
    # Each message whole, or None when it cannot fit (a rendering is never shorter than
    # the text, so a long text is not rendered whole just to learn that).
    whole: list[str | None] = []
    for msg in msgs:
        text = (
            render.message(msg, server, client=client)
            if len(render.field_of(msg, "text")) < room
            else None
        )
        whole.append(text if text is not None and len(text) + 2 <= room else None)
    chosen: dict[int, str] = {}
    # The oldest message is always shown: if it can only be shown cut, half the room is
    # kept for it while the others that fit whole are placed.
    reserve = room // 2 if msgs and whole[0] is None else 0
    left = room - reserve
    for i, text in enumerate(whole):
        if text is not None and len(text) + 2 <= left:
            chosen[i] = text
            left -= len(text) + 2
    left += reserve
    for i, text in enumerate(whole):
        if text is not None:
            continue  # fits whole: shown above, or waits for the next delivery
        got = render.part(msgs[i], left - 2, server, client)
        if got is None:
            continue
        chosen[i] = got[0]
        out.cut[render.field_of(msgs[i], "id")] = got[1]
        left -= len(got[0]) + 2
    for i, msg in enumerate(msgs):
        if i in chosen:
            out.shown.append(msg)
            out.parts.append(chosen[i])
        else:
            out.rest.append(msg)
    if out.shown:
        blocks = [render.INTRO, *out.parts]
        if out.rest:
            blocks.append(waiting_line(out.rest, server, client))
        out.text = "\n\n".join(blocks)
    return out


def waiting_line(rest: Sequence[Any], server: str, client: str | None) -> str:
    """Names what did not fit this time, and the tool that shows it."""
    senders = sorted({str(render.field_of(m, "sender_name")) for m in rest})
    names = ", ".join(render.field(n, 40) for n in senders[:NAMES_SHOWN])
    if len(senders) > NAMES_SHOWN:
        names += f" and {len(senders) - NAMES_SHOWN} more peers"
    return (
        f"{len(rest)} more message(s) from {names} are waiting: they did not fit here. "
        f"They come with the next delivery, or call the tool "
        f"{render.tool('check_messages', server, client)} to read them now."
    )


UNANSWERED = (Code.TIMEOUT, Code.UNREACHABLE, Code.BAD_FRAME, Code.FRAME_TOO_LARGE)
"""Codes (``peersd.errors.Code``) of a request that got no answer the client could read."""


def maybe_done(e: BaseException) -> bool:
    """Whether a request that failed with ``e`` may still have been done.

    An error frame answering it means the daemon refused it and rolled it back. A time-out,
    a hang-up or an unreadable answer (or a failure with no code at all) says nothing: the
    daemon may have committed it before its answer was lost.
    """
    code = getattr(e, "code", None)
    return not isinstance(code, str) or code in UNANSWERED


class Unsettled(ClaudePeersError):
    """The mail was shown but could not be acknowledged (``acked`` false: its leases run
    out and it is offered again), or the rest could not be released (``acked`` true: only
    the rest waits for its leases).

    ``maybe_acked``: not known to be acknowledged, but the ack's answer was lost, so it may
    have been (``maybe_done``). The mail may then never come again: treat it as shown (a
    message shown twice beats one marked read unseen)."""

    def __init__(self, shown: Plan, cause: BaseException, acked: bool) -> None:
        what = "release the rest" if acked else "acknowledge them"
        super().__init__(f"showed {len(shown.shown)} message(s) but could not {what}: {cause}")
        self.plan = shown
        self.cause = cause
        self.acked = acked
        self.maybe_acked = not acked and maybe_done(cause)


def deliver(
    box: Any,
    show: Callable[[Plan], object],
    via: str,
    limit: int = 50,
    filters: dict[str, Any] | None = None,
    **how: Any,
) -> Plan | None:
    """Claim, plan (``how``: ``plan``'s options), show, ack what was shown, release the
    rest. None when nothing was claimable. If planning or showing fails, everything
    claimed is released and the error raised; if settling fails, ``Unsettled``."""
    msgs = box.claim(limit, filters or {})
    if not msgs:
        return None
    try:
        chosen = plan(msgs, **how)
        if chosen.shown:
            show(chosen)
    except BaseException:
        try:  # noqa: SIM105 - no contextlib import on the hook's path
            box.release([render.field_of(m, "id") for m in msgs])
        except Exception:  # the error that stopped the delivery is the one to report
            pass
        raise
    acked = False
    try:
        if chosen.shown:
            box.ack([render.field_of(m, "id") for m in chosen.shown], via)
        acked = True
        if chosen.rest:
            box.release([render.field_of(m, "id") for m in chosen.rest])
    except Exception as e:
        raise Unsettled(chosen, e, acked) from e
    return chosen


async def adeliver(
    box: Any,
    show: Callable[[Plan], Awaitable[object]] | None,
    via: str,
    limit: int = 50,
    filters: dict[str, Any] | None = None,
    **how: Any,
) -> Plan | None:
    """``deliver`` for async mailboxes; ``show`` None when the caller shows the plan
    itself once this returns (a tool result)."""
    msgs = await box.claim(limit, filters or {})
    if not msgs:
        return None
    try:
        chosen = plan(msgs, **how)
        if chosen.shown and show is not None:
            await show(chosen)
    except BaseException:
        try:  # noqa: SIM105 - as in deliver
            await box.release([render.field_of(m, "id") for m in msgs])
        except Exception:
            pass
        raise
    acked = False
    try:
        if chosen.shown:
            await box.ack([render.field_of(m, "id") for m in chosen.shown], via)
        acked = True
        if chosen.rest:
            await box.release([render.field_of(m, "id") for m in chosen.rest])
    except Exception as e:
        raise Unsettled(chosen, e, acked) from e
    return chosen
