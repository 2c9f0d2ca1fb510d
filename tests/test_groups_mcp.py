"""The group and proposal tools of peers-mcp (join_group, leave_group, propose, vote,
list_proposals) through the real MCP SDK client, against a real daemon."""

from __future__ import annotations

import pytest

from peersd import protocol as p

from .test_groups import join
from .test_mcp import mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def meta(s, tool: str, **args) -> dict:
    result = await s.call(tool, **args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is None  # peers' words stay in the quoted text
    return result.meta["claude-peers/proposals"]


async def test_join_and_leave_a_group(daemon, agent_bin, agents) -> None:
    red = daemon.client("codex")
    join(red, agents, "rosa", "red", kind="codex")
    async with mcp_session(daemon, agent_bin) as s:
        assert "rosa" not in await s.text("list_peers")
        bad = await s.call("send_message", to="rosa", message="hi")
        assert bad.is_error and "no peer named 'rosa'" in bad.content[0].text
        assert (await meta(s, "join_group", name="red"))["group"] == "red"
        text = await s.text("list_peers")
        assert "- rosa (" in text and ") in group red: codex in" in text
        assert "in group red" in await s.text("whoami")
        assert "rosa" in await s.text("list_peers", scope="group")
        await s.text("send_message", to="rosa", message="hello red")
        assert [m.text for m in red.request(p.Claim).messages] == ["hello red"]
        bad = await s.call("join_group", name="no spaces")
        assert bad.is_error and "a group name: 1-64" in bad.content[0].text
        assert (await meta(s, "leave_group"))["group"] is None
        assert "rosa" not in await s.text("list_peers")
        bad = await s.call("list_peers", scope="group")
        assert bad.is_error and "you are in none" in bad.content[0].text
    red.close()


async def test_propose_vote_and_list(daemon, agent_bin, agents) -> None:
    voter = daemon.client("codex")
    v = join(voter, agents, "vic", None, kind="codex")
    async with mcp_session(daemon, agent_bin) as s:
        data = await meta(
            s, "propose", title="Merge the auth branch?", voters=["vic"], deadline_minutes=30
        )
        x = data["proposal"]
        assert (x["required"], x["state"], x["threshold"]) == (1, "open", "majority")
        (ask,) = voter.request(p.Claim).messages
        assert ask.text.startswith(f"[claude-peers proposal #{x['id']}]")
        voter.request(p.Ack, message_ids=[ask.id], via="check")
        # the voter is the codex peer; the MCP session is the proposer and cannot vote
        bad = await s.call("vote", proposal_id=x["id"], vote="approve")
        assert bad.is_error and "you are not a voter" in bad.content[0].text
        voter.request(p.Vote, proposal_id=x["id"], vote="approve", reason="reviewed")
        text = await s.text("list_proposals", state="decided")
        assert f'#{x["id"]} "Merge the auth branch?" by ' in text
        assert 'decided: "approve"' in text and '- vic: "approve" ("reviewed")' in text
        # now vic proposes and the session votes
        y = voter.request(p.Propose, title="Lunch?", options=["now", "later"], scope="machine")
        me = (await s.whoami())["name"]
        assert [b.voter_name for b in y.proposal.ballots] == [me]
        bad = await s.call("vote", proposal_id=y.proposal.id, vote="never")
        assert bad.is_error and "the options are now, later" in bad.content[0].text
        done = (await meta(s, "vote", proposal_id=y.proposal.id, vote="later"))["proposal"]
        assert (done["state"], done["outcome"]) == ("decided", "later")
        mine = (await meta(s, "list_proposals", mine=True))["proposals"]
        assert [m["id"] for m in mine] == [y.proposal.id, x["id"]]
        bad = await s.call("propose", title="t", voters=["vic"], threshold="most")
        assert bad.is_error and "threshold" in bad.content[0].text
    assert v.group is None
    voter.close()
