"""CLI commands for proposals and the period report: ``proposals``, ``propose``, ``vote``,
``report`` (``docs/coordination.md``).

``register(app_module)`` adds them to the ``peers`` app, like ``peers_cli.coordination``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Annotated

import typer

from peersd import protocol as p

from . import report as report_md

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(value: str, option: str) -> float:
    """``30m``, ``4h``, ``2d``, ``90s`` → seconds (more than 0)."""
    m = _DURATION.match(value)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{option} {value!r}: give a duration such as 30m, 4h or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def since_time(value: str, now: float) -> float:
    """``--since``: a duration back from ``now`` (30m, 4h, 2d) or an ISO time (2026-12-02,
    2026-12-02T09:30, with an offset or local time)."""
    try:
        return now - duration(value, "--since")
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value!r}: give a duration back from now (30m, 4h, 2d) or an ISO time "
            "(2026-12-02T09:30, 2026-12-02T09:30+01:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a person types it
    ts = when.timestamp()
    if ts > now:
        raise ValueError(f"--since {value!r} is in the future")
    return ts


def describe(x: p.Proposal, esc: Callable[[str], str]) -> list[str]:
    """Lines for one proposal in a terminal (``esc`` escapes peers' text)."""
    state: str = x.state
    if x.state == "decided":
        state += f": {esc(x.outcome or '')}"
    elif x.state == "open":
        state += f", needs {x.required}"
        if x.deadline:
            state += f", closes {time.strftime('%H:%M', time.localtime(x.deadline))}"
    tally = ", ".join(f"{esc(o)} {n}" for o, n in x.tally.items())
    lines = [
        f"#{x.id} {esc(x.title)}",
        f"   by {esc(x.proposer_name)}; threshold {x.threshold}; {state}; votes: {tally}",
    ]
    for b in x.ballots:
        vote = esc(b.vote) if b.vote else "-"
        why = f" ({esc(b.reason)})" if b.reason else ""
        lines.append(f"   {esc(b.voter_name)}: {vote}{why}")
    return lines


def register(cli: ModuleType) -> None:
    """Add the commands to ``cli.app`` (the ``peers_cli.app`` module)."""
    app: typer.Typer = cli.app
    out, safe, errors, connect, die = cli.out, cli.safe, cli.errors, cli.connect, cli.die

    @app.command("proposals")
    def list_proposals(
        state: Annotated[
            str | None, typer.Option(help="Only open, decided, failed or expired ones.")
        ] = None,
        mine: Annotated[
            bool, typer.Option("--mine", help="Only this shell's peer's, or those it votes on.")
        ] = False,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
        as_json: JsonOpt = False,
    ) -> None:
        """Proposals, newest first, with their votes and result."""
        if state is not None and state not in ("open", "decided", "failed", "expired"):
            die(f"unknown state {state!r}: use open, decided, failed or expired")
        with errors(), connect() as client:
            if mine:
                cli.become_peer(client)
            found = client.request(p.ListProposals, state=state, mine=mine, limit=limit).proposals
        if as_json:
            cli.emit_json(found)
            return
        if not found:
            out.print("No proposals.")
        for x in found:
            for line in describe(x, safe):
                out.print(line)

    @app.command()
    def propose(
        title: Annotated[str, typer.Argument(help="The question or plan to decide.")],
        option: Annotated[
            list[str] | None,
            typer.Option("--option", help="A choice (repeat; default approve and reject)."),
        ] = None,
        voter: Annotated[
            list[str] | None, typer.Option("--voter", help="A voter by name or id (repeat).")
        ] = None,
        scope: Annotated[
            str | None,
            typer.Option(help="Everyone else in machine, directory, repo or group votes."),
        ] = None,
        threshold: Annotated[
            str, typer.Option(help="Votes one option needs: 2, 2/3, 60%, majority or all.")
        ] = "majority",
        deadline: Annotated[
            str | None, typer.Option(help="Close it after this long (30m, 4h, 2d).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Put a decision to a vote of other sessions; each voter is mailed it."""
        if bool(voter) == (scope is not None):
            die("give --voter (one or more) or --scope: one of the two")
        if scope is not None and scope not in ("machine", "directory", "repo", "group"):
            die(f"unknown scope {scope!r}: use machine, directory, repo or group")
        seconds = None
        if deadline is not None:
            try:
                seconds = duration(deadline, "--deadline")
            except ValueError as e:
                die(str(e))
        with errors(), connect() as client:
            cli.become_peer(client)
            fields: dict[str, object] = {}
            if option:
                fields["options"] = option
            x = client.request(
                p.Propose,
                title=title,
                voters=voter or [],
                scope=scope,
                threshold=threshold,
                deadline_seconds=seconds,
                **fields,
            ).proposal
        if as_json:
            cli.emit_json(x)
            return
        out.print(f"proposal #{x.id} sent to {len(x.ballots)} voter(s)")
        for line in describe(x, safe):
            out.print(line)

    @app.command()
    def vote(
        proposal_id: Annotated[int, typer.Argument(help="The proposal's number.")],
        choice: Annotated[str, typer.Argument(help="One of its options.")],
        reason: Annotated[str, typer.Option(help="Why, in a sentence.")] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Vote on a proposal this shell's peer was asked to vote on (a vote is final)."""
        if proposal_id < 1:
            die(f"proposal ids start at 1, not {proposal_id}")
        with errors(), connect() as client:
            cli.become_peer(client)
            x = client.request(p.Vote, proposal_id=proposal_id, vote=choice, reason=reason).proposal
        if as_json:
            cli.emit_json(x)
            return
        for line in describe(x, safe):
            out.print(line)

    @app.command()
    def report(
        since: Annotated[
            str, typer.Option(help="Start: a duration back (30m, 4h, 2d) or an ISO time.")
        ] = "4h",
        as_json: JsonOpt = False,
    ) -> None:
        """What happened in a period, as Markdown: who took part, messages per pair,
        proposals and votes, file claims, kills."""
        now = time.time()
        try:
            start = since_time(since, now)
        except ValueError as e:
            die(str(e))
        with errors(), connect() as client:
            data = client.request(p.MakeReport, since=start)
        if as_json:
            cli.emit_json(data)
            return
        sys.stdout.write(report_md.markdown(data))
