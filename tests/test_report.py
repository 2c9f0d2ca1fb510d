"""The period report (peersd/report.py, ``peers report``) against a real daemon: every
section filled from what really happened (mail, a proposal, a claim, a kill), the Markdown
and the JSON of the CLI, ``--since`` as a duration or an ISO time, and a group's view."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import apsw
import pytest

from peers_cli.proposals import since_time
from peers_cli.report import cell
from peersd import handlers as _handlers  # noqa: F401 - loads peersd.report as peersd does
from peersd import protocol as p
from peersd import report

from .conftest import Agents, DaemonProc, run_peers
from .test_groups import join


@pytest.fixture
def busy(daemon: DaemonProc, agents: Agents, tmp_path: Path):
    """ann and bob talk, bob proposes and ann votes, ann claims a file, cid is killed;
    gil (group green) talks to nobody."""
    start = time.time() - 1
    c = {n: daemon.client("claude-code") for n in ("ann", "bob", "cid", "gil")}
    ann = join(c["ann"], agents, "ann", None, summary="auth | login\nrewrite")
    join(c["bob"], agents, "bob", None)
    cid = join(c["cid"], agents, "cid", None)
    join(c["gil"], agents, "gil", "green")
    for i in range(3):
        c["ann"].request(p.Send, to="bob", text=f"q{i}")
    msgs = c["bob"].request(p.Claim).messages
    c["bob"].request(p.Ack, message_ids=[m.id for m in msgs], via="check")
    c["bob"].request(p.Send, to="ann", text="a")
    x = c["bob"].request(p.Propose, title="Ship it?", voters=["ann"]).proposal
    c["ann"].request(p.Vote, proposal_id=x.id, vote="approve", reason="green CI")
    repo = os.path.realpath(tmp_path)
    c["ann"].request(
        p.ClaimFiles,
        patterns=[p.FileRef(path=f"{repo}/auth/**", repo=repo)],
        exclusive=True,
        reason="login rewrite",
    )
    with daemon.client("cli") as cli:
        assert cli.request(p.Kill, target="cid").outcome == "terminated"
    yield c, start, ann, cid
    for client in c.values():
        client.close()


def test_every_section_holds_what_happened(daemon: DaemonProc, busy) -> None:
    c, start, ann, cid = busy
    with daemon.client() as cli:
        r = cli.request(p.MakeReport, since=start)
    assert r.since == start and r.until >= start
    # 3 + 1 messages, the proposal's ask and its two results
    assert r.messages == 7
    pairs = {(x.sender_name, x.recipient_name): (x.count, x.delivered) for x in r.pairs}
    assert pairs == {("ann", "bob"): (3, 3), ("bob", "ann"): (3, 0), ("bob", "bob"): (1, 0)}
    took = {x.name: (x.sent, x.received, x.state) for x in r.peers}
    assert took["ann"] == (3, 3, "active") and took["bob"] == (4, 4, "active")
    assert took["cid"] == (0, 0, "gone") and took["gil"] == (0, 0, "active")
    (x,) = r.proposals
    assert (x.title, x.state, x.outcome) == ("Ship it?", "decided", "approve")
    assert [(b.voter_name, b.vote, b.reason) for b in x.ballots] == [("ann", "approve", "green CI")]
    (claim,) = r.claims
    assert (claim.name, claim.exclusive, claim.reason) == ("ann", True, "login rewrite")
    (kill,) = r.kills
    assert (kill.action, kill.target, kill.target_name) == ("kill", cid.id, "cid")
    assert "terminated" in kill.detail
    # a period before any of it is empty
    with daemon.client() as cli:
        empty = cli.request(p.MakeReport, since=start - 100, until=start - 50)
        assert (empty.messages, empty.pairs, empty.proposals, empty.kills) == (0, [], [], [])
        with pytest.raises(Exception, match="until is before since"):
            cli.request(p.MakeReport, since=start, until=start - 1)


def test_a_grouped_peer_sees_only_its_group(busy) -> None:
    c, start, _ann, _cid = busy
    r = c["gil"].request(p.MakeReport, since=start)
    assert [x.name for x in r.peers] == ["gil"]
    assert (r.messages, r.pairs, r.proposals, r.claims) == (0, [], [], [])


def test_the_cli_prints_markdown_and_json(daemon: DaemonProc, busy) -> None:
    r = run_peers(daemon.env, "report", "--since", "1h")
    assert r.code == 0, r
    md = r.out
    for heading in (
        "# claude-peers report: ",
        "## Who took part",
        "## Messages",
        "## Proposals and votes",
        "## File claims",
        "## Kills and cleanups",
    ):
        assert heading in md, heading
    assert "7 message(s) in all." in md
    assert "| ann | bob | 3 | 3 |" in md
    # a summary cannot end its cell or start a new line of the table
    assert "| auth \\| login rewrite |" in md
    assert "- #1 Ship it? — by bob" in md and "decided: approve" in md
    assert "  - ann — approve: green CI" in md
    assert ": auth/\\*\\* | exclusive | " in md and "login rewrite" in md
    assert "kill of cid by " in md and "terminated" in md
    r = run_peers(daemon.env, "report", "--since", "1h", "--json")
    assert r.code == 0, r
    data = r.json()
    assert data["messages"] == 7 and data["proposals"][0]["outcome"] == "approve"
    assert set(data) >= {"since", "until", "peers", "pairs", "proposals", "claims", "kills"}
    iso = datetime.fromtimestamp(time.time() - 3600).isoformat(timespec="minutes")
    r = run_peers(daemon.env, "report", "--since", iso, "--json")
    assert r.code == 0 and r.json()["messages"] == 7, r


@pytest.mark.parametrize(
    "bad, why",
    [
        ("yesterday", "give a duration back from now (30m, 4h, 2d) or an ISO time"),
        ("4x", "give a duration back from now"),
        ("0h", "give a duration back from now"),
        ("2999-01-01", "is in the future"),
    ],
)
def test_a_bad_since_is_one_clear_line(daemon: DaemonProc, bad: str, why: str) -> None:
    r = run_peers(daemon.env, "report", "--since", bad)
    assert r.code == 1 and why in r.err and len(r.err.splitlines()) == 1, r


def test_since_accepts_durations_and_iso_times() -> None:
    now = 1_800_000_000.0
    assert since_time("30m", now) == now - 1800
    assert since_time("4h", now) == now - 4 * 3600
    assert since_time("2d", now) == now - 2 * 86400
    assert since_time("90s", now) == now - 90
    assert since_time("2027-01-15T08:00:00+00:00", now) == now  # that very moment
    assert since_time("2027-01-15T09:00:00+01:00", now) == now
    local = datetime(2027, 1, 15, 8, 0).timestamp()
    assert since_time("2027-01-15T08:00", now) == local


def test_cells_keep_peer_text_inside_the_table() -> None:
    assert cell("a|b\nc") == "a\\|b c"
    assert cell("`x` *y* [z](u) <b>") == "\\`x\\` \\*y\\* \\[z](u) \\<b>"
    assert "\x1b" not in cell("\x1b[31mred")


def test_tasks_and_decisions_of_the_period(daemon: DaemonProc, agents: Agents) -> None:
    """The tasks and decisions sections (issue 10's shared work state): a task made and
    finished, one made earlier and untouched since, a decision posted and revoked; a peer
    of another group sees none of it."""
    c = {n: daemon.client("claude-code") for n in ("ann", "bob", "gil")}
    join(c["ann"], agents, "ann", None)
    join(c["bob"], agents, "bob", None)
    join(c["gil"], agents, "gil", "green")
    old = c["ann"].request(p.CreateTask, title="older work", scope="machine").task
    time.sleep(0.05)
    start = time.time()
    t = c["ann"].request(p.CreateTask, title="fix | login", assignee="bob", scope="machine").task
    c["bob"].request(p.UpdateTask, task=t.id, state="claimed")
    c["bob"].request(p.UpdateTask, task=t.id, state="done", result="merged")
    c["ann"].request(p.PostDecision, key="db.engine", value="postgres", rationale="jsonb")
    c["ann"].request(p.RevokeDecision, key="db.engine", reason="not yet")
    with daemon.client() as cli:
        r = cli.request(p.MakeReport, since=start)
    assert [(x.id, x.state, x.result) for x in r.tasks] == [(t.id, "done", "merged")]
    assert old.id not in {x.id for x in r.tasks}
    assert [(x.key, x.state, x.version) for x in r.decisions][:2] == [
        ("db.engine", "active", 1),
        ("db.engine", "revoked", 2),
    ]
    # the person at a terminal posts on the no-group board: not green's board either
    assert run_peers(daemon.env, "decide", "style", "black", "--why", "one style").code == 0
    hidden = c["gil"].request(p.MakeReport, since=start)
    assert (hidden.tasks, hidden.decisions) == ([], [])
    md = run_peers(daemon.env, "report", "--since", "1h")
    assert md.code == 0, md
    assert "## Tasks" in md.out and "2 opened, 1 done in the period." in md.out  # since 1h
    assert "fix \\| login" in md.out and "| merged |" in md.out
    assert "## Decisions" in md.out and "`db.engine` revoked (v2)" in md.out
    for client in c.values():
        client.close()


def test_tasks_are_the_ones_changed_last(make_daemon, agents: Agents) -> None:
    """More tasks than a section holds: the report keeps the ones changed last, so an old
    task touched in the period is in it and the cut is said (review 10, finding 12)."""
    daemon = make_daemon(rate_per_second="0")
    with daemon.client("claude-code") as c:
        join(c, agents, "ann", None)
        start = time.time()
        first = c.request(p.CreateTask, title="the first", scope="machine").task
        for i in range(report.CAP + 1):
            c.request(p.CreateTask, title=f"t{i}", scope="machine")
        c.request(p.UpdateTask, task=first.id, note="touched last")
        with daemon.client() as cli:
            r = cli.request(p.MakeReport, since=start)
    assert len(r.tasks) == report.CAP
    assert r.tasks[0].id == first.id
    assert [t.updated for t in r.tasks] == sorted((t.updated for t in r.tasks), reverse=True)
    assert r.cut == {"tasks": f"only the first {report.CAP} rows (more happened in the period)"}


def test_the_message_count_reads_only_the_latest_mail(make_daemon) -> None:
    """The count runs inside a commit batch: it reads at most ``SCAN`` messages of the
    period (the latest), and says so (finding 12)."""
    daemon = make_daemon()
    daemon.stop()
    conn = apsw.Connection(str(daemon.settings.db_path))
    now = time.time()
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, created, "
            "state, expires_at) SELECT 'p-0000000a', 'ann', 'p-0000000b', 'bob', 'hi', "
            "? - 100 + i * 0.001, 'delivered', ? + 3600 FROM n",
            (report.SCAN + 10, now, now),
        )
    conn.close()
    daemon.start()
    with daemon.client() as cli:
        r = cli.request(p.MakeReport, since=now - 200)
        assert r.messages == report.SCAN
        assert r.cut["messages"].startswith(f"counted only the latest {report.SCAN} messages")
        assert [(x.sender_name, x.recipient_name, x.count) for x in r.pairs] == [
            ("ann", "bob", report.SCAN)
        ]
        # a period holding fewer is counted whole and cuts nothing
        r = cli.request(p.MakeReport, since=now - 100 + 20 * 0.001)
        assert (r.messages, r.cut) == (report.SCAN - 9, {})


def test_a_report_too_big_for_a_frame_is_cut_to_fit(make_daemon, agents: Agents) -> None:
    """Long task texts are shortened, and a report still larger than a frame loses the
    later half of its largest list until it fits, saying so (finding 5): before, the
    answer was refused as too large."""
    daemon = make_daemon(rate_per_second="0")
    with daemon.client("claude-code") as c:
        join(c, agents, "ann", None)
        start = time.time()
        for i in range(140):
            c.request(p.CreateTask, title=f"t{i}", description="x" * 8000, scope="machine")
        with daemon.client() as cli:
            r = cli.request(p.MakeReport, since=start)
    assert len(r.tasks) == 140 and {len(t.description) for t in r.tasks} == {report.TEXT}
    assert r.tasks[0].description.endswith("…")
    assert r.cut == {
        "tasks": f"descriptions and results shortened to {report.TEXT} characters "
        "(task_info has them)"
    }
    daemon.stop()
    small = make_daemon(max_text="1000", max_frame="70000")  # a budget of 4464 bytes
    with small.client("claude-code") as c:
        join(c, agents, "amy", None)
        start = time.time()
        for i in range(40):
            c.request(p.CreateTask, title=f"{i:02} " + "y" * 190, scope="machine")
        with small.client() as cli:
            r = cli.request(p.MakeReport, since=start)
    assert 0 < len(r.tasks) < 40
    assert [t.title[:2] for t in r.tasks] == [f"{i:02}" for i in range(39, 39 - len(r.tasks), -1)]
    assert r.cut["tasks"] == f"{len(r.tasks)} rows kept to fit the answer in a frame"
    assert len(p.encode(r)) <= 70000 - 65536
    md = run_peers(small.env, "report", "--since", "1h")
    assert md.code == 0, md
    assert "Left out to keep the report to one answer:" in md.out
    (line,) = [x for x in md.out.splitlines() if x.startswith("- tasks: ")]
    assert line.endswith(" rows kept to fit the answer in a frame"), md.out
