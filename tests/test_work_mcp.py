"""The task and decision tools of peers-mcp through the real MCP SDK client: a task handed
from one session to another arrives as mail (check_messages), is claimed and finished with
update_task, and the creator reads the result the same way; decisions are posted, found,
revoked; refusals come back as tool errors that say what to do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .test_mcp import mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return Path(os.path.realpath(root))


async def work(s, tool: str, **args) -> dict:
    result = await s.call(tool, **args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is None  # the data stays in _meta
    return result.meta["claude-peers/work"]


async def test_a_task_travels_as_mail_between_two_sessions(daemon, agent_bin, repo) -> None:
    async with (
        mcp_session(daemon, agent_bin, cwd=str(repo)) as lead,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(repo)) as dev,
    ):
        await lead.call("set_name", name="lead")
        await dev.call("set_name", name="dev")
        text = await lead.text(
            "create_task", title="Add rate limiting", description="100 req/s", assignee="dev"
        )
        assert text.startswith("Created task t-") and "assigned to dev" in text
        assert "Mailed: dev." in text
        task_id = text.split()[2].rstrip(",")
        inbox = await dev.text("check_messages")
        assert f"assigned you task {task_id}" in inbox and "100 req/s" in inbox
        assert f'update_task(task_id="{task_id}", state="claimed")' in inbox

        text = await dev.text("update_task", task_id=task_id, state="claimed")
        assert text == f"Task {task_id} is now claimed (claimed by dev). Mailed: lead."
        listed = await dev.text("list_tasks", mine=True)
        assert f"{task_id} [claimed]" in listed and '"Add rate limiting"' in listed
        data = await work(dev, "update_task", task_id=task_id, state="done", result="token bucket")
        assert data["task"]["state"] == "done" and data["notified"] == ["lead"]

        inbox = await lead.text("check_messages")
        assert "dev marked task" in inbox and "token bucket" in inbox
        full = await lead.text("list_tasks", task_id=task_id)
        for words in ("[done]", "History:", "lead created → dev", "dev claimed", "dev done"):
            assert words in full, full
        assert await lead.text("list_tasks") == "No open or claimed tasks in scope 'repo'."
        assert task_id in await lead.text("list_tasks", state="all")

        # Refusals are tool errors naming the state and what to do.
        bad = await dev.call("update_task", task_id=task_id, state="open")
        assert bad.is_error and "is done; a finished task does not change" in bad.content[0].text
        bad = await dev.call("update_task", task_id="t-9999", note="x")
        assert bad.is_error and "no task t-9999" in bad.content[0].text
        bad = await dev.call("update_task", task_id="task9")
        assert bad.is_error and "invalid arguments for update_task" in bad.content[0].text
        bad = await lead.call("create_task", title="x", assignee="dve")
        assert bad.is_error and "did you mean: dev?" in bad.content[0].text


async def test_decisions_through_the_tools(daemon, agent_bin, repo) -> None:
    async with (
        mcp_session(daemon, agent_bin, cwd=str(repo)) as a,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(repo)) as b,
    ):
        await a.call("set_name", name="arch")
        await b.call("set_name", name="impl")
        data = await work(
            a,
            "post_decision",
            key="api.errors",
            value="RFC 9457 problem+json",
            rationale="clients parse one shape",
            category="api",
        )
        assert data["decision"]["version"] == 1 and data["notified"] == ["impl"]
        inbox = await b.text("check_messages")
        assert "arch decided [api]: api.errors = RFC 9457 problem+json" in inbox
        text = await b.text("query_decisions", text="problem")
        assert text.startswith("1 decision(s):") and "api.errors [api]" in text
        await a.text("post_decision", key="api.errors", value="plain JSON", rationale="simpler")
        text = await b.text("query_decisions", key="api.errors", history=True)
        assert "v2 by arch" in text and "v1 active" in text
        text = await b.text("revoke_decision", key="api.errors", reason="left to each service")
        assert text == "Decision api.errors is revoked (version 3). Mailed: arch."
        assert await b.text("query_decisions") == "No decisions yet."
        assert "(REVOKED)" in await b.text("query_decisions", include_revoked=True)
        bad = await b.call("revoke_decision", key="api.error", reason="x")
        assert bad.is_error and "did you mean: api.errors" in bad.content[0].text
        bad = await b.call("post_decision", key="a b", value="v", rationale="r")
        assert bad.is_error and "a decision key" in bad.content[0].text


async def test_a_long_history_says_how_much_is_shown(daemon, agent_bin, repo) -> None:
    async with mcp_session(daemon, agent_bin, cwd=str(repo)) as lead:
        text = await lead.text("create_task", title="long one")
        task_id = text.split()[2].rstrip(",")
        for i in range(55):
            await work(lead, "update_task", task_id=task_id, note=f"step {i}")
        full = await lead.text("list_tasks", task_id=task_id)
        assert "History (the last 50 of 56):" in full, full
        assert "step 54" in full and "note (open): step 4\n" not in full
