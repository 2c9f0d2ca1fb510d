"""Typed requests, threads, reactions and search through peers-mcp, driven by the real MCP
SDK client over stdio under stand-in agents (as tests/test_mcp.py)."""

from __future__ import annotations

import jsonschema
import pytest

from .test_mcp import mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_approval_request_is_rendered_answered_and_shown_in_status(
    daemon, agent_bin, tmp_path
):
    (tmp_path / "api").mkdir()
    (tmp_path / "web").mkdir()
    async with (
        mcp_session(daemon, agent_bin, "claude", "claude-code", cwd=str(tmp_path / "api")) as api,
        mcp_session(
            daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(tmp_path / "web")
        ) as web,
    ):
        # each session registers after the handshake: both are peers before the send
        assert (await api.whoami())["name"] == "api" and (await web.whoami())["name"] == "web"
        sent = await api.data(
            "send_message",
            to="web",
            message="May I run the migration on staging?",
            kind="approval_request",
            action="run migration 0042 on staging",
            risk="<b>locks the orders table</b> for ~2 min",
            subject="staging migration",
        )
        got = await web.text("check_messages")
        assert "It is a request for your approval" in got
        assert 'action: "run migration 0042 on staging"' in got
        assert 'risk: "&lt;b>locks the orders table&lt;/b> for ~2 min"' in got  # data, detag'd
        assert (
            f'with to="api" and reply_to="{sent["message_id"]}", kind="approval", '
            'verdict="approve" or "reject", and reason="…"'
        ) in got
        assert 'subject "staging migration"' in got
        status = await api.text("message_status", message_ids=[sent["message_id"]])
        assert "approval_request: not answered yet" in status

        # a wrong answer is refused, naming what is wrong
        bad = await web.call(
            "send_message", to="api", message="ok", kind="approval", verdict="approve"
        )
        assert bad.is_error and "kind 'approval' needs reason" in bad.content[0].text
        bad = await web.call(
            "send_message",
            to="api",
            message="ok",
            kind="approval",
            verdict="verified",
            reason="r",
            reply_to=sent["message_id"],
        )
        assert bad.is_error and "verdict" in bad.content[0].text
        bad = await web.call(
            "send_message", to="api", message="ok", reason="fine", reply_to=sent["message_id"]
        )
        assert bad.is_error and "reason belongs to a typed request" in bad.content[0].text

        answer = await web.data(
            "send_message",
            to="api",
            message="Go ahead, traffic is low.",
            kind="approval",
            verdict="approve",
            reason="off-peak",
            reply_to=sent["message_id"],
        )
        status = await api.data("message_status", message_ids=[sent["message_id"]])
        item = status["messages"][0]
        assert item["kind"] == "approval_request"
        assert item["answer"]["message_id"] == answer["message_id"]
        assert item["answer"]["verdict"] == "approve"
        text = await api.text("message_status", message_ids=[sent["message_id"]])
        assert f'in {answer["message_id"]} (approval "approve")' in text

        # the thread: both messages, and the subject passed down to the answer
        history = await api.data("message_history", thread=answer["message_id"])
        assert [m["id"] for m in history["messages"]] == [
            answer["message_id"],
            sent["message_id"],
        ]
        assert {m["subject"] for m in history["messages"]} == {"staging migration"}
        assert {m["thread"] for m in history["messages"]} == {sent["message_id"]}


async def test_missing_and_foreign_fields_are_named(daemon, agent_bin, tmp_path):
    async with (
        mcp_session(daemon, agent_bin, cwd="/tmp") as a,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(tmp_path)) as b,
    ):
        other = (await b.whoami())["name"]
        bad = await a.call("send_message", to=other, message="?", kind="question")
        assert bad.is_error and "needs expected_format" in bad.content[0].text
        bad = await a.call(
            "send_message",
            to=other,
            message="?",
            kind="question",
            expected_format="a number",
            focus="x",
        )
        assert bad.is_error and "takes no focus" in bad.content[0].text
        bad = await a.call("send_message", to=other, message="?", kind="sonnet")
        assert bad.is_error and "kind" in bad.content[0].text
        ok = await a.data(
            "send_message",
            to=other,
            message="Review please",
            kind="review_request",
            files=["src/a.py", "src/b.py"],
            focus="error handling",
        )
        got = await b.text("check_messages")
        assert ok["message_id"] in got
        assert 'files: ["src/a.py", "src/b.py"]' in got and "It asks for a review" in got


async def test_react_search_and_the_snapshot(daemon, agent_bin, tmp_path):
    async with (
        mcp_session(daemon, agent_bin, cwd="/tmp") as a,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(tmp_path)) as b,
    ):
        me = (await a.whoami())["name"]
        other = (await b.whoami())["name"]
        await a.data("set_summary", summary="porting the scheduler")
        sent = await a.data(
            "send_message",
            to=other,
            message="FYI the scheduler now uses a min-heap",
            kind="decision",
            rationale="O(log n) inserts",
        )
        got = await b.text("check_messages")
        assert 'Sender at send time: summary "porting the scheduler"' in got
        assert "No answer is needed" in got and "react" in got
        bad = await b.call("react", message_id=sent["message_id"], emoji="ok")
        assert bad.is_error and "one emoji or symbol" in bad.content[0].text
        await b.data("react", message_id=sent["message_id"], emoji="👍")
        assert (await a.data("check_messages"))["unread"] == []  # a receipt, not mail
        status = await a.data("message_status", message_ids=[sent["message_id"]])
        assert [r["emoji"] for r in status["messages"][0]["reactions"]] == ["👍"]
        assert 'reactions: "👍" from' in await a.text(
            "message_status", message_ids=[sent["message_id"]]
        )

        found = await b.data("search_messages", query="heap")
        assert [h["message"]["id"] for h in found["hits"]] == [sent["message_id"]]
        assert "[heap]" in found["hits"][0]["snippet"]
        text = await b.text("search_messages", query="min-heap")
        assert "bad search query" not in text  # a hyphen is a phrase, not NOT
        assert (await b.data("search_messages", query="heap", since="2099-01-01"))["hits"] == []
        bad = await b.call("search_messages", query='"heap')
        assert bad.is_error and "bad search query" in bad.content[0].text
        bad = await b.call("search_messages", query="heap", since="last tuesday")
        assert bad.is_error and "neither an age" in bad.content[0].text
        assert me


async def test_the_send_schema_stays_readable_and_validates(daemon, agent_bin):
    async with mcp_session(daemon, agent_bin) as s:
        tools = {t.name: t for t in (await s.s.list_tools()).tools}
        send = tools["send_message"].input_schema
        assert send["required"] == ["to", "message"]
        assert "$defs" not in send  # flat: every field an optional argument
        for name in ("expected_format", "action", "risk", "verdict", "evidence", "files"):
            assert "With kind=" in send["properties"][name]["description"], name
        v = jsonschema.Draft202012Validator(send)
        assert v.is_valid({"to": "x", "message": "m", "kind": "question", "expected_format": "n"})
        assert not v.is_valid({"to": "x", "message": "m", "kind": "poem"})
        assert not v.is_valid({"to": "x", "message": "m", "verdict": "maybe"})
        react = tools["react"].input_schema
        assert react["required"] == ["message_id", "emoji"]


async def test_the_snapshot_is_of_the_senders_own_directory(daemon, agent_bin, tmp_path):
    """peers-mcp is a relay into one shared gateway (docs/clients.md): the snapshot's
    ``git status`` must run in the sending session's directory, not the gateway's."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "-C", str(repo), "add", "a.py"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "a"], check=True)
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new_file.py").write_text("")
    async with (
        mcp_session(daemon, agent_bin, cwd="/tmp") as a,  # the first session: starts the gateway
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(repo)) as b,
    ):
        me = (await a.whoami())["name"]
        await b.data("send_message", to=me, message="see my tree")
        got = await a.text("check_messages")
        assert "2 uncommitted files" in got and "a.py" in got and "new_file.py" in got, got
