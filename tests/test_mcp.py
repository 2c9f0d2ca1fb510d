"""peers-mcp driven by the real MCP SDK client over stdio, under real stand-in agents.

Each session is the MCP server started by a process named ``claude`` or ``codex``
(tests/fake_agent.py through a link of that name) with a shell in between, so the
server must find its agent in its ancestry exactly as it would under the real clients.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import BaseModel

from peersd import protocol as p

from .conftest import register

HERE = Path(__file__).resolve().parent
PEERS_MCP = str(Path(sys.executable).with_name("peers-mcp"))
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ChannelParams(BaseModel):
    content: str
    meta: dict[str, str] = {}


class Session:
    """One MCP client session plus what it observed."""

    def __init__(self, session: ClientSession, init: types.InitializeResult) -> None:
        self.s = session
        self.init = init
        self.pushed: list[ChannelParams] = []

    async def call(self, tool: str, **args: Any) -> types.CallToolResult:
        return await self.s.call_tool(tool, args)

    async def text(self, tool: str, **args: Any) -> str:
        result = await self.call(tool, **args)
        assert not result.is_error, result.content[0].text
        return result.content[0].text

    async def data(self, tool: str, **args: Any) -> dict[str, Any]:
        result = await self.call(tool, **args)
        assert not result.is_error, result.content[0].text
        if result.meta and "claude-peers/mail" in result.meta:
            # mail results keep their data out of the model's sight, in _meta
            assert result.structured_content is None
            return result.meta["claude-peers/mail"]
        return result.structured_content

    async def whoami(self) -> dict[str, Any]:
        return (await self.data("whoami"))["peer"]


@asynccontextmanager
async def mcp_session(
    daemon,
    agent_bin: Path,
    agent: str = "claude",
    client_name: str = "claude-code",
    agent_flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> AsyncIterator[Session]:
    params = StdioServerParameters(
        command=str(agent_bin / agent),
        args=[str(HERE / "fake_agent.py"), *agent_flags, "--", PEERS_MCP],
        # The test's daemon is the only one: a helper must not start its own while the
        # test restarts it.
        env={**daemon.env, "CLAUDE_PEERS_AUTOSTART": "0", **(env or {})},
        cwd=cwd or "/tmp",
    )
    holder: list[Session] = []

    async def on_channel(params_: ChannelParams) -> None:
        holder[0].pushed.append(params_)

    with open(daemon.home / "mcp-stderr.log", "a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(
                read,
                write,
                client_info=types.Implementation(name=client_name, version="test"),
                notification_bindings=[
                    NotificationBinding(
                        method="notifications/claude/channel",
                        params_type=ChannelParams,
                        handler=on_channel,
                    )
                ],
            ) as session,
        ):
            init = await session.initialize()
            holder.append(Session(session, init))
            yield holder[0]


async def wait_until(predicate, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.05)


async def test_two_sessions_find_each_other_and_exchange_a_question(daemon, agent_bin, tmp_path):
    api = tmp_path / "api"
    web = tmp_path / "web"
    api.mkdir()
    web.mkdir()
    async with (
        mcp_session(daemon, agent_bin, "claude", "claude-code", cwd=str(api)) as claude,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(web)) as codex,
    ):
        me_claude = await claude.whoami()
        me_codex = await codex.whoami()
        assert (me_claude["name"], me_claude["client"]) == ("api", "claude-code")
        assert (me_codex["name"], me_codex["client"]) == ("web", "codex")
        # the peer is the agent process, not the MCP helper (a shell sits between them)
        assert me_claude["agent_pid"] != os.getpid()
        listed = await claude.data("list_peers")
        assert [x["name"] for x in listed["peers"]] == ["web"]
        assert "web" in await claude.text("list_peers")

        sent = await claude.data("send_message", to="web", message="Which port is the API on?")
        got = await codex.text("check_messages")
        assert "Which port is the API on?" in got
        assert 'from peer "api"' in got and sent["message_id"] in got
        # Codex names the tools in a namespace with "_" for "-"
        assert 'mcp__claude_peers__send_message with to="api"' in got
        reply = await codex.data(
            "send_message", to="api", message="8080", reply_to=sent["message_id"]
        )
        answer = await claude.data("wait_for_message", timeout_seconds=5)
        (msg,) = answer["messages"]
        assert (msg["id"], msg["text"], msg["reply_to"]) == (
            reply["message_id"],
            "8080",
            sent["message_id"],
        )
        status = await claude.data("message_status", message_ids=[sent["message_id"]])
        assert status["messages"][0]["state"] == "delivered"
        assert status["messages"][0]["delivered_via"] == "check"


async def test_channel_push_only_when_channels_are_on(daemon, agent_bin, agents):
    flags = ("--dangerously-load-development-channels", "server:claude-peers")
    async with (
        mcp_session(daemon, agent_bin, agent_flags=flags) as pushed,
        mcp_session(daemon, agent_bin) as plain,
    ):
        assert pushed.init.capabilities.experimental == {"claude/channel": {}}
        assert (await pushed.data("whoami"))["channels"] is True
        assert (await plain.data("whoami"))["channels"] is False
        push_me = (await pushed.whoami())["id"]
        plain_me = (await plain.whoami())["id"]
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="sender")
            first = c.request(p.Send, to=push_me, text="pushed to you", reply_to=None)
            second = c.request(p.Send, to=plain_me, text="wait for your hooks")

            async def arrived() -> bool:
                return bool(pushed.pushed)

            await wait_until(arrived)
            note = pushed.pushed[0]
            assert note.meta["from_name"] == "sender"
            assert note.meta["message_id"] == first.message_id
            assert set(note.meta) <= {"from", "from_name", "message_id", "reply_to", "sent_at"}
            assert all(k.replace("_", "").isalnum() for k in note.meta)
            assert "pushed to you" in note.content

            async def delivered() -> bool:
                item = c.request(p.MessageStatus, message_ids=[first.message_id]).items[0]
                return item.state == "delivered" and item.delivered_via == "channel"

            await wait_until(delivered)
            await anyio.sleep(0.3)
            assert plain.pushed == []
            item = c.request(p.MessageStatus, message_ids=[second.message_id]).items[0]
            assert item.state == "queued", "mail for a session without channels was not kept"


async def test_check_messages_acknowledges_exactly_what_it_showed(daemon, agent_bin, agents):
    async with mcp_session(daemon, agent_bin) as s:
        me = (await s.whoami())["id"]
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="chatty")
            ids = [c.request(p.Send, to=me, text=f"note {i}").message_id for i in range(3)]
            shown = await s.data("check_messages")
            assert [m["id"] for m in shown["unread"]] == ids
            later = c.request(p.Send, to=me, text="arrived after the check").message_id
            states = {
                i.message_id: i.state
                for i in c.request(p.MessageStatus, message_ids=[*ids, later]).items
            }
            assert states == {
                ids[0]: "delivered",
                ids[1]: "delivered",
                ids[2]: "delivered",
                later: "queued",
            }
            again = await s.data("check_messages", history=2)
            assert [m["id"] for m in again["unread"]] == [later]
            assert len(again["recent"]) == 2


async def test_wait_for_message_returns_on_arrival_and_times_out(daemon, agent_bin, agents):
    async with mcp_session(daemon, agent_bin) as s:
        me = (await s.whoami())["id"]
        started = time.monotonic()
        timed_out = await s.call("wait_for_message", timeout_seconds=0.4)
        assert not timed_out.is_error
        assert "No message arrived within 0.4 s" in timed_out.content[0].text
        assert time.monotonic() - started < 5
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="later")

            async def send_soon() -> None:
                await anyio.sleep(0.5)
                c.request(p.Send, to=me, text="from someone else")
                c.request(p.Send, to=me, text="the one you wait for")

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_soon)
                started = time.monotonic()
                got = await s.data("wait_for_message", timeout_seconds=20, from_peer="later")
                texts = [m["text"] for m in got["messages"]]
                if len(texts) == 1:  # the two sends came in separate ticks: two batches
                    got = await s.data("wait_for_message", timeout_seconds=20, from_peer="later")
                    texts += [m["text"] for m in got["messages"]]
            assert time.monotonic() - started < 10
            assert texts == ["from someone else", "the one you wait for"]


async def test_daemon_restart_keeps_the_session_identity(daemon, agent_bin, agents):
    async with mcp_session(daemon, agent_bin) as s:
        await s.text("set_summary", summary="porting the parser")
        before = await s.whoami()
        daemon.stop()
        daemon.start()

        async def back() -> bool:
            result = await s.call("whoami")
            return not result.is_error

        await wait_until(back, 20)
        after = await s.whoami()
        assert (after["id"], after["name"], after["summary"]) == (
            before["id"],
            before["name"],
            "porting the parser",
        )
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="after-restart")
            c.request(p.Send, to=before["name"], text="still reachable?")
        assert "still reachable?" in await s.text("check_messages")


async def test_tool_errors_say_what_was_wrong(daemon, agent_bin):
    async with mcp_session(daemon, agent_bin) as s:
        bad = await s.call("send_message", to="x")
        assert bad.is_error and "message" in bad.content[0].text
        bad = await s.call("send_message", to="x", message="hi", colour="blue")
        assert bad.is_error and "colour" in bad.content[0].text
        bad = await s.call("set_name", name="has space")
        assert bad.is_error and "name" in bad.content[0].text
        bad = await s.call("send_message", to="nobody-here", message="hi")
        assert bad.is_error and "no peer named 'nobody-here'" in bad.content[0].text
        bad = await s.call("kill_peer", peer="anyone")
        assert bad.is_error and "disabled" in bad.content[0].text
        bad = await s.call("message_status", message_ids=["not-an-id"])
        assert bad.is_error
        tools = (await s.s.list_tools()).tools
        names = [t.name for t in tools]
        assert names == [
            "list_peers",
            "send_message",
            "broadcast",
            "message_status",
            "check_messages",
            "wait_for_message",
            "message_history",
            "set_summary",
            "set_name",
            "whoami",
            "kill_peer",
            "claim_files",
            "release_files",
            "file_status",
            "set_status",
        ]
        send = next(t for t in tools if t.name == "send_message")
        assert "reply" in send.description and send.input_schema["required"] == ["to", "message"]


async def test_history_and_broadcast(daemon, agent_bin, tmp_path):
    room = tmp_path / "room"
    room.mkdir()
    async with (
        mcp_session(daemon, agent_bin, cwd=str(room)) as a,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(room)) as b,
    ):
        b_name = (await b.whoami())["name"]  # registered (sessions register just after start)
        sent = await a.data("broadcast", scope="directory", message="standup")
        assert [x["to_name"] for x in sent["sent"]] == [b_name]
        await b.text("check_messages")
        history = await a.data("message_history")
        assert history["messages"][0]["text"] == "standup"
        assert history["messages"][0]["state"] == "delivered"


def test_legacy_handshake_is_kept_when_probed(daemon, agent_bin):
    """Claude Code's server/discover probe gets -32601 and initialize then works."""
    env = {**daemon.env}
    proc = subprocess.Popen(
        [str(agent_bin / "claude"), str(HERE / "fake_agent.py"), "--", PEERS_MCP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin and proc.stdout

    def send(obj: dict) -> dict | None:
        proc.stdin.write((json.dumps(obj) + "\n").encode())
        proc.stdin.flush()
        if "id" not in obj:
            return None
        return json.loads(proc.stdout.readline())

    try:
        probe = send(
            {
                "jsonrpc": "2.0",
                "id": "server-discover-probe-1",
                "method": "server/discover",
                "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
            }
        )
        assert probe["error"]["code"] == -32601
        init = send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"roots": {"listChanged": True}},
                    "clientInfo": {"name": "claude-code", "version": "2.1.328"},
                },
            }
        )
        caps = init["result"]["capabilities"]
        assert caps["experimental"] == {"claude/channel": {}}
        assert "tools" in caps
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert len(listed["result"]["tools"]) == 15
    finally:
        proc.stdin.close()
        assert proc.wait(15) == 0, "peers-mcp did not exit when stdin closed"


def test_exits_when_the_agent_is_gone(daemon, agent_bin):
    proc = subprocess.Popen(
        [str(agent_bin / "claude"), str(HERE / "fake_agent.py"), "--", PEERS_MCP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=daemon.env,
    )
    try:
        helper = _child_of(_child_of(proc.pid))  # agent -> shell -> peers-mcp
        assert "peers-mcp" in Path(f"/proc/{helper}/cmdline").read_text()
        assert proc.stdin and proc.stdout
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "claude-code", "version": "test"},
            },
        }
        proc.stdin.write((json.dumps(init) + "\n").encode())
        proc.stdin.flush()
        assert "result" in json.loads(proc.stdout.readline())  # up and serving
        os.kill(proc.pid, signal.SIGKILL)  # the agent dies; the shell and helper stay
        proc.wait()
        if not _ends_within(helper, 15):
            raise AssertionError("peers-mcp kept running after its agent died")
    finally:
        if proc.poll() is None:
            proc.kill()


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _child_of(pid: int) -> int:
    """The first child process of ``pid``."""
    for _ in range(100):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("the fake agent started nothing")
