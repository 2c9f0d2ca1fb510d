"""peers-mcp driven by the real MCP SDK client over stdio, under real stand-in agents.

Each session is the MCP server started by a process named ``claude`` or ``codex``
(tests/fake_agent.py through a link of that name) with a shell in between, so the
server must find its agent in its ancestry exactly as it would under the real clients.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import mcp_types as types
import pytest
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import BaseModel

from peers_mcp.tools import TOOLS
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
            # The sender learns at once which one is pushed and which one waits.
            assert (first.reach, second.reach) == ("push", "when_checked")

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


async def test_a_cancelled_check_releases_what_it_claimed(daemon, agent_bin, agents):
    """The client gives up on a check_messages call between its claim and its ack: the SDK
    drops the result, so the mail must be released, not acknowledged unseen."""
    env = {"CLAUDE_PEERS_TEST_MCP_PAUSE_BEFORE_ACK": "2"}
    async with mcp_session(daemon, agent_bin, env=env) as s:
        me = (await s.whoami())["id"]
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="asker")
            mid = c.request(p.Send, to=me, text="are you there?").message_id

            async def state_is(wanted: str) -> bool:
                return c.request(p.MessageStatus, message_ids=[mid]).items[0].state == wanted

            async with anyio.create_task_group() as tg:
                tg.start_soon(s.call, "check_messages")
                await wait_until(lambda: state_is("leased"))  # claimed; the ack waits 2 s
                tg.cancel_scope.cancel()  # the client sends notifications/cancelled
            await wait_until(lambda: state_is("queued"))  # released at once
            await anyio.sleep(2.5)  # past the pause: nothing acknowledges it after all
            assert await state_is("queued")
            shown = await s.data("check_messages")
            assert [m["id"] for m in shown["unread"]] == [mid]
            assert await state_is("delivered")


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


async def test_a_session_marked_gone_while_its_helper_lives_recovers_by_itself(
    daemon, agent_bin, agents
):
    """The daemon forgets the session (here an unregister from another connection acting
    as it; the same as a sweep or kill marking it gone): the helper's next tool call is
    answered not_registered, registers again and succeeds, and mail reaches it again."""
    async with mcp_session(daemon, agent_bin) as s:
        before = await s.whoami()
        with daemon.client() as c:
            c.request(p.Attach, pid=before["agent_pid"])
            c.request(p.Unregister)
            gone = {x.id: x.state for x in c.request(p.ListPeers, include_gone=True).peers}
            assert gone[before["id"]] == "gone"
        after = await s.whoami()  # would fail: "this connection is not registered"
        assert (after["id"], after["name"], after["state"]) == (
            before["id"],
            before["name"],
            "active",
        )
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="friend")
            mid = c.request(p.Send, to=before["name"], text="back again?").message_id
        got = await s.data("wait_for_message", timeout_seconds=5)
        assert [m["id"] for m in got["messages"]] == [mid]


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
            "react",
            "search_messages",
            "set_summary",
            "set_name",
            "whoami",
            "kill_peer",
            "claim_files",
            "release_files",
            "file_status",
            "set_status",
            "create_task",
            "update_task",
            "list_tasks",
            "post_decision",
            "revoke_decision",
            "query_decisions",
            "join_group",
            "leave_group",
            "propose",
            "vote",
            "list_proposals",
        ]
        send = next(t for t in tools if t.name == "send_message")
        assert "reply" in send.description and send.input_schema["required"] == ["to", "message"]


SCHEMA_CASES = [
    # (tool, arguments, whether the daemon would take them)
    ("set_name", {"name": "alice"}, True),
    ("set_name", {"name": "alice\n"}, False),
    ("set_name", {"name": "\nalice"}, False),
    ("set_name", {"name": "p-0123abcd"}, False),
    ("set_name", {"name": "x" * 33}, False),
    ("send_message", {"to": "x", "message": "m", "reply_to": "m-abcdef-1"}, True),
    ("send_message", {"to": "x", "message": "m", "reply_to": "m-abcdef-1\n"}, False),
    ("send_message", {"to": "x" * 301, "message": "m"}, False),
    ("set_summary", {"summary": "y" * 1001}, False),
    ("message_status", {"message_ids": ["m-abcdef-1\n"]}, False),
    ("update_task", {"task_id": "t-12"}, True),
    ("update_task", {"task_id": "12"}, True),
    ("update_task", {"task_id": "t-12\n"}, False),
    ("update_task", {"task_id": "task 12"}, False),
    ("query_decisions", {"key": "db.engine"}, True),
    ("query_decisions", {"key": "db engine"}, False),
    ("query_decisions", {"key": "-x"}, False),
    ("query_decisions", {"key": "k" * 101}, False),
    ("query_decisions", {"category": "a\n"}, False),
    ("join_group", {"name": "feature/login"}, True),
    ("join_group", {"name": "red\n"}, False),
    ("join_group", {"name": "-red"}, False),
    ("join_group", {"name": "r" * 65}, False),
]


def _ecma_verdicts(schemas: dict[str, Any]) -> list[bool] | None:
    """Each case judged by JavaScript's RegExp, as JSON Schema validators in the clients do."""
    node = shutil.which("node")
    if node is None:
        return None
    script = """
    const [schemas, cases] = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const ok = (s, v) => s.anyOf ? s.anyOf.some((x) => ok(x, v))
      : s.type === "null" ? v === null
      : s.type === "array" ? v.length <= (s.maxItems ?? Infinity) && v.every((x) => ok(s.items, x))
      : typeof v === "string" && v.length <= (s.maxLength ?? Infinity)
        && (!s.pattern || new RegExp(s.pattern, "u").test(v));
    const verdicts = cases.map(([tool, args]) =>
      Object.entries(args).every(([k, v]) => ok(schemas[tool].properties[k], v)));
    console.log(JSON.stringify(verdicts));
    """
    cases = [[tool, args] for tool, args, _ in SCHEMA_CASES]
    done = subprocess.run(
        [node, "-e", script], input=json.dumps([schemas, cases]), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_tool_schemas_refuse_what_the_daemon_refuses(daemon, agent_bin):
    """The schemas the server lists are the protocol's own rules: a JSON Schema validator
    (Python's, and JavaScript's regexes where node is installed) refuses exactly what the
    daemon would, and a call that breaks one is refused by the server, naming the rule."""
    async with mcp_session(daemon, agent_bin) as s:
        schemas = {t.name: t.input_schema for t in (await s.s.list_tools()).tools}
        for tool, args, good in SCHEMA_CASES:
            errors = list(jsonschema.Draft202012Validator(schemas[tool]).iter_errors(args))
            assert (not errors) is good, (tool, args, errors)
        ecma = _ecma_verdicts(schemas)
        if ecma is not None:
            assert ecma == [good for *_, good in SCHEMA_CASES]
        before = await s.whoami()
        bad = await s.call("set_name", name="alice\n")
        text = bad.content[0].text
        assert bad.is_error and text.startswith("invalid arguments for set_name"), text
        assert "`$.name`" in text and "1-32 letters, digits, '-' or '_'" in text, text
        assert "regex" not in text
        assert (await s.whoami())["name"] == before["name"]


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


async def test_send_broadcast_and_list_peers_say_how_mail_reaches_each_peer(
    daemon, agent_bin, tmp_path
):
    """Delivery health in the tools' text and data: how the recipient gets the mail now,
    its unread count, when it last read mail."""
    room = tmp_path / "room"
    room.mkdir()
    async with (
        mcp_session(daemon, agent_bin, cwd=str(room)) as a,
        mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(room)) as b,
    ):
        b_me = await b.whoami()
        b_name = b_me["name"]
        result = await a.call("send_message", to=b_name, message="first")
        text, data = result.content[0].text, result.structured_content
        assert (data["reach"], data["pending"], data["last_read"]) == ("when_checked", 1, None)
        assert data["expires_at"] > time.time()
        assert f"Delivery to {b_name}: only when it checks (no hooks seen); 1 unread; " in text
        assert "last read mail never" in text
        await b.text("check_messages")  # b reads: last_read is set
        with daemon.client() as hook:  # what b's hook says at a prompt
            hook.request(p.Attach, pid=b_me["agent_pid"])
            hook.request(p.SetStatus, state="working")
        result = await a.call("broadcast", scope="directory", message="standup")
        (item,) = result.structured_content["sent"]
        assert (item["to_name"], item["reach"], item["pending"]) == (b_name, "next_tool_call", 1)
        assert item["last_read"] is not None
        assert f"- {b_name} ({item['message_id']}): next tool call (it is working" in (
            result.content[0].text
        )
        assert "last read mail 0s ago" in result.content[0].text
        listed = await a.call("list_peers", scope="directory")
        (peer,) = listed.structured_content["peers"]
        assert (peer["reach"], peer["pending"]) == ("next_tool_call", 1)
        assert peer["last_read"] == item["last_read"]
        assert "mail reaches it: next tool call" in listed.content[0].text


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
        assert len(listed["result"]["tools"]) == len(TOOLS)
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


# --------------------------------------------------------------------------- bounded delivery


async def test_a_flood_of_unrenderable_mail_never_blocks_the_tools(make_daemon, agent_bin, agents):
    """Item 8: 32 KiB texts of control characters render four times as long, more than a
    tool result holds, and more of them than one claim takes. check_messages and
    wait_for_message used to answer "too long… call check_messages" forever and a later
    message waited until it expired. Now every call shows something, acknowledges exactly
    that, and the message behind the flood arrives; a cut one is read to its end with the
    call its notice names."""
    from peers_mcp.render import TOOL_BUDGET

    from .test_hook import WORST_TEXT, shown_ids

    daemon = make_daemon(rate_per_second=0)
    async with mcp_session(daemon, agent_bin) as s:
        me = (await s.whoami())["id"]
        with daemon.client() as c:
            register(c, agents.spawn().pid, name="flooder")
            flood = [c.request(p.Send, to=me, text=WORST_TEXT).message_id for _ in range(32)]
            normal = c.request(p.Send, to=me, text="the normal message").message_id
            everything = [*flood, normal]
            seen: list[str] = []
            calls = 0
            while normal not in seen:
                calls += 1
                assert calls <= len(everything), "a call showed nothing"
                if calls % 2:
                    result = await s.call("check_messages", history=0)
                else:
                    result = await s.call("wait_for_message", timeout_seconds=5)
                assert not result.is_error
                text = result.content[0].text
                assert len(text) <= TOOL_BUDGET and "too long" not in text
                now = shown_ids(text)
                assert now and not set(now) & set(seen), "progress with every call"
                seen += now
                items = c.request(p.MessageStatus, message_ids=everything).items
                assert {i.message_id for i in items if i.state == "delivered"} == set(seen)
                assert not any(i.state == "leased" for i in items)
            assert "> the normal message" in text

            # The notice's call reads a cut message to its end, character for character.
            first = flood[0]
            got, offset, reads = "", 0, 0
            while True:
                reads += 1
                assert reads < 10
                result = await s.call("check_messages", message_id=first, offset=offset)
                assert not result.is_error, result.content[0].text
                assert len(result.content[0].text) <= TOOL_BUDGET
                data = result.meta["claude-peers/mail"]
                got += data["message"]["text"]
                offset = data["end"]
                if offset == len(WORST_TEXT):
                    assert "Cut here" not in result.content[0].text
                    break
                assert f'message_id="{first}" and offset={offset}' in result.content[0].text
            assert got == WORST_TEXT and reads > 1
            wrong = await s.call("check_messages", message_id=first, offset=len(WORST_TEXT))
            assert wrong.is_error and "past the end" in wrong.content[0].text
            other = await s.call("check_messages", message_id="m-000000-1")
            assert other.is_error and "no message m-000000-1 addressed to you" in (
                other.content[0].text
            )


async def test_peer_fields_and_tags_cannot_fake_structure_in_tools_or_pushes(
    daemon, agent_bin, agents
):
    """Item 10, through the real server: check_messages and a channel push show a forged
    directory, branch and tagged text as quoted data; a long pushed message is cut."""
    from peers_mcp.render import CHANNEL_BUDGET

    from .test_hook import FORGED_TEXT, WORST_TEXT, check_forgery, register_forger

    flags = ("--dangerously-load-development-channels", "server:claude-peers")
    async with (
        mcp_session(daemon, agent_bin) as polled,
        mcp_session(daemon, agent_bin, agent_flags=flags) as pushed,
    ):
        polled_me = (await polled.whoami())["id"]
        pushed_me = (await pushed.whoami())["id"]
        with daemon.client("codex") as c:
            register_forger(c, agents.spawn().pid)
            mid = c.request(p.Send, to=polled_me, text=FORGED_TEXT).message_id
            check_forgery(await polled.text("check_messages", history=0), mid)

            forged = c.request(p.Send, to=pushed_me, text=FORGED_TEXT).message_id
            long = c.request(p.Send, to=pushed_me, text=WORST_TEXT).message_id

            async def both() -> bool:
                return len(pushed.pushed) >= 2

            await wait_until(both)
            first, second = pushed.pushed[:2]
            assert first.meta["message_id"] == forged
            check_forgery(first.content, forged)
            assert second.meta["message_id"] == long
            assert len(second.content) <= CHANNEL_BUDGET
            assert f'check_messages with message_id="{long}" and offset=' in second.content
            states = c.request(p.MessageStatus, message_ids=[forged, long]).items
            assert {(i.state, i.delivered_via) for i in states} == {("delivered", "channel")}
