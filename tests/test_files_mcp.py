"""The file tools of peers-mcp (claim_files, release_files, file_status, set_status) and
what list_peers says about status and files, through the real MCP SDK client."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from peersd import protocol as p

from .conftest import register
from .test_mcp import mcp_session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def files_data(s, tool: str, **args) -> dict:
    """What a file tool returns for programs: in ``_meta``, not as structured content (the
    clients would show the model that JSON instead of the text)."""
    result = await s.call(tool, **args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is None
    return result.meta["claude-peers/files"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    (root / "src" / "auth").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "src" / "auth" / "login.py").write_text("x\n")
    (root / "src" / "app.py").write_text("x\n")
    return Path(os.path.realpath(root))


async def test_claim_status_release_and_list(daemon, agent_bin, agents, repo: Path) -> None:
    other = daemon.client("codex")
    register(other, agents.spawn().pid, "codex", cwd=str(repo), name="bob")
    other.request(p.TouchFiles, files=[p.FileRef(path=str(repo / "src/app.py"), repo=str(repo))])
    async with mcp_session(daemon, agent_bin, cwd=str(repo)) as s:
        me = (await s.whoami())["name"]
        text = await s.text(
            "claim_files", paths=["src/auth", "src/new/*.rs"], exclusive=True, reason="login flow"
        )
        assert (
            text.startswith("Claimed src/auth/** (exclusive, until ")
            and 'reason "login flow"' in text
        )
        assert "No file matches src/new/*.rs yet" in text
        # bob is refused, and the tool he would use is named
        with pytest.raises(Exception, match=f"exclusive claim of {me}"):
            other.request(
                p.ClaimFiles,
                patterns=[p.FileRef(path=str(repo / "src/auth/login.py"), repo=str(repo))],
            )
        # a claim over bob's... shared claim of a file bob edits: allowed, bob named
        data = await files_data(s, "claim_files", paths=["src/app.py"])
        assert [o["name"] for o in data["others"]] == ["bob"]
        text = await s.text("file_status", path="src/app.py")
        assert "bob (codex) has been editing src/app.py" in text
        assert "you (this session) hold a shared claim on src/app.py" in text
        assert 'mcp__claude-peers__send_message with to="bob"' in text
        # bad input is refused by the schema or with a message naming the path
        for args, why in [
            ({"paths": ["x"], "ttl_minutes": 0}, "ttl_minutes"),
            ({"paths": ["x"], "ttl_minutes": 1441}, "ttl_minutes"),
            ({"paths": []}, "paths"),
            ({"paths": ["/etc/hosts"]}, "not inside a git repository"),
            ({"paths": ["src/*/../x"]}, "'..' after a wildcard"),
        ]:
            bad = await s.call("claim_files", **args)
            assert bad.is_error and why in bad.content[0].text, (args, bad.content[0].text)
        # status note, and what list_peers shows of bob
        assert (await s.text("set_status", note="back at 3")) == 'Your note is now: "back at 3"'
        listed = await s.text("list_peers")
        assert 'editing 1 file(s) ("src/app.py")' in listed
        peers = {x.name: x for x in other.request(p.ListPeers).peers}
        assert peers[me].note == "back at 3"
        # release
        released = await files_data(s, "release_files", paths=["src/auth"])
        assert released["released"] == [str(repo / "src/auth/**")]
        assert (await files_data(s, "release_files", all=True))["released"] == [
            str(repo / "src/app.py"),
            str(repo / "src/new/*.rs"),
        ]
        bad = await s.call("release_files")
        assert bad.is_error
    other.close()


async def test_a_conflict_names_the_holder_and_the_call(daemon, agent_bin, agents, repo) -> None:
    other = daemon.client("codex")
    register(other, agents.spawn().pid, "codex", cwd=str(repo), name="bob")
    other.request(
        p.ClaimFiles,
        patterns=[p.FileRef(path=str(repo / "src/**"), repo=str(repo))],
        exclusive=True,
        reason="big refactor",
    )
    async with mcp_session(daemon, agent_bin, "codex", "codex-mcp-client", cwd=str(repo)) as s:
        bad = await s.call("claim_files", paths=["src/app.py"])
        text = bad.content[0].text
        assert bad.is_error and text.startswith("Nothing was claimed: src/app.py overlaps")
        assert 'exclusive claim of bob on src/** ("big refactor")' in text
        assert 'call mcp__claude_peers__send_message with to="bob"' in text
    other.close()
