"""``peers dashboard`` with plain HTTP and WebSocket clients, against a real peersd: what it
refuses (no token, a foreign Host, a foreign Origin, no CSRF header), what it serves, and
that it follows the daemon live (the overseer events) and outlives a daemon restart.
The same page in a real browser: tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from peersd import protocol as p
from peersd.errors import Code, PeersError

from .conftest import PEERS, plain_terminal_env, register, run_peers
from .dashboard_fixtures import Dashboard, running
from .dashboard_ws import connect, refused, snapshot, updates_until


@pytest.fixture
def dashboard(daemon, tmp_path):
    yield from running(daemon, tmp_path)


# --------------------------------------------------------------------------- refusals


def test_every_request_needs_the_token_which_the_url_swaps_for_a_cookie(dashboard):
    d = dashboard
    status, _, body = d.request("GET", "/", cookie=False)
    assert status == 401 and b"token is missing" in body
    assert d.request("GET", "/static/app.js", cookie=False)[0] == 401
    assert d.request("GET", "/?token=" + "0" * 64, cookie=False)[0] == 401  # a wrong one

    status, headers, body = d.request("GET", "/?token=" + d.token, cookie=False)
    assert status == 200 and b'content="0;url=/"' in body  # the token leaves the URL
    elsewhere = d.request("GET", "//evil.example/?token=" + d.token, cookie=False)[2]
    assert b'content="0;url=/evil.example/"' in elsewhere  # this origin's path, not a host
    cookie = headers["set-cookie"]
    assert cookie.startswith(d.cookie + ";")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert d.token not in cookie  # the cookie is derived from the token, not the token

    status, headers, body = d.request("GET", "/")
    assert status == 200
    assert d.csrf.encode() in body  # <meta name="peers-csrf">, the header POSTs need
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert b'<script type="module" src="/static/app.js">' in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # no external asset at all
    assert d.request("GET", "/static/app.js")[0] == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1", "evil.example", ""],
)
def test_a_foreign_host_header_is_refused(dashboard, host):
    """DNS rebinding: a page of another site resolving its name to 127.0.0.1."""
    status, _, body = dashboard.request("GET", "/", headers={"Host": host.format(port=9)})
    assert status == 403 and b"Host" in body


def test_loopback_names_are_accepted(dashboard):
    for host in ("localhost", "127.0.0.1", "[::1]"):
        headers = {"Host": f"{host}:{dashboard.port}"}
        assert dashboard.request("GET", "/", headers=headers)[0] == 200


def test_the_printed_url_works_for_another_loopback_host(daemon, tmp_path):
    """``--host 127.0.0.2`` (loopback, so no TLS needed): the URL it prints is answered."""
    d = Dashboard(daemon, tmp_path, "--host", "127.0.0.2")
    try:
        d.wait_ready()
        assert d.url.startswith("http://127.0.0.2:")
        status, headers, _ = d.request("GET", "/?token=" + d.token, cookie=False)
        assert status == 200 and "set-cookie" in headers
        assert d.request("GET", "/")[0] == 200
        assert refused(d) is None  # and the page's WebSocket, from that origin
    finally:
        d.stop()


def test_state_changes_need_the_csrf_header(dashboard, pair):
    _ca, _a, _cb, b = pair
    body = {"to": b.id, "text": "forged"}
    assert dashboard.request("POST", "/api/send", body, csrf=False)[0] == 403
    wrong = {"X-Peers-CSRF": "0" * 64}
    assert dashboard.request("POST", "/api/send", body, headers=wrong, csrf=False)[0] == 403
    assert dashboard.request("POST", "/api/send", body, cookie=False)[0] == 401
    with dashboard.daemon.client() as c:
        assert not c.request(p.History, mine=False).messages  # nothing was sent


def test_websocket_refused_without_cookie_or_from_a_foreign_origin(dashboard):
    assert refused(dashboard, origin="http://evil.example") == 403
    assert refused(dashboard, origin=f"http://evil.example:{dashboard.port}") == 403
    assert refused(dashboard, origin="null") == 403
    assert refused(dashboard, cookie=False) == 403  # a refused handshake is always a 403
    assert refused(dashboard) is None


def test_beyond_loopback_tls_is_required(daemon, tmp_path):
    env = plain_terminal_env(daemon.env)
    done = run_peers(env, "dashboard", "--no-open", "--host", "192.0.2.1", "--port", "0")
    assert done.code == 1
    assert "--tls-cert" in done.err and "192.0.2.1" in done.err
    half = run_peers(env, "dashboard", "--no-open", "--port", "0", "--tls-cert", "x.pem")
    assert half.code == 1 and "both --tls-cert and --tls-key" in half.err
    everywhere = run_peers(
        env, "dashboard", "--no-open", "--host", "0.0.0.0", "--tls-cert", "c", "--tls-key", "k"
    )
    assert everywhere.code == 1 and "every interface" in everywhere.err


def test_a_bad_peer_name_is_one_clear_line(daemon):
    done = run_peers(plain_terminal_env(daemon.env), "dashboard", "--no-open", "--as", "a b")
    assert done.code == 1 and "--as 'a b' is not a valid peer name" in done.err, done


def test_port_in_use_is_one_clear_line(daemon):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = plain_terminal_env(daemon.env)
        done = run_peers(env, "dashboard", "--no-open", "--port", str(port))
    assert done.code == 1 and f"cannot listen on 127.0.0.1:{port}" in done.err, done


def test_token_is_private_beside_the_socket_and_kept(daemon, tmp_path):
    first = Dashboard(daemon, tmp_path)
    try:
        first.wait_ready()
        path = daemon.settings.run_dir / "claude-peers-dashboard.token"
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
        assert path.read_text().strip() == first.token
    finally:
        assert first.stop() == 0
    second = Dashboard(daemon, tmp_path)
    try:
        assert second.token == first.token  # a bookmark (its cookie) keeps working
    finally:
        second.stop()
    third = Dashboard(daemon, tmp_path, "--new-token")
    try:
        assert third.token != first.token
    finally:
        third.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_exits_cleanly_on_ctrl_c_and_sigterm(daemon, tmp_path, sig):
    d = Dashboard(daemon, tmp_path)
    d.wait_ready()
    started = time.monotonic()
    assert d.stop(sig) == 0, d.stderr()
    assert time.monotonic() - started < 5
    assert "Traceback" not in d.stderr()
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", d.port))


def test_the_browser_is_opened_on_a_private_file_never_the_token(daemon, tmp_path):
    """A browser's command line is readable by every user (/proc/PID/cmdline): it gets the
    path of a 0600 page that redirects to the URL; the token stays off it."""
    record = tmp_path / "browser-args"
    browser = tmp_path / "browser"
    browser.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.tmp && mv {record}.tmp {record}\n'
    )
    browser.chmod(0o755)
    d = Dashboard(daemon, tmp_path, env={"BROWSER": str(browser)}, no_open=False)
    try:
        d.wait_ready()
        deadline = time.monotonic() + 10
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        [arg] = record.read_text().splitlines()
        assert d.token not in arg
        assert arg.startswith("file://")
        page = Path(urlsplit(arg).path)
        assert page.parent == daemon.settings.run_dir
        st = os.stat(page)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
        assert f'content="0;url={d.url}"' in page.read_text()
    finally:
        assert d.stop() == 0
    assert not page.exists()  # gone with the dashboard


def test_no_open_prints_exactly_one_line(daemon, tmp_path):
    d = Dashboard(daemon, tmp_path)
    try:
        d.wait_ready()
    finally:
        d.stop()
    assert d.proc.stdout is not None
    assert d.url.startswith("http://127.0.0.1:") and len(d.token) == 64


# --------------------------------------------------------------------------- live


def test_snapshot_lists_the_peers_and_the_human(dashboard, pair):
    _ca, a, _cb, b = pair
    deadline = time.monotonic() + 3  # the joins ring a doorbell; the refetch follows
    while True:
        snap = snapshot(dashboard)
        names = {x["name"] for x in snap["peers"] if x["state"] == "active"}
        if {"alpha", "beta"} <= names or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {"alpha", "beta"} <= names
    assert snap["me"]["client"] == "cli"
    assert snap["up"] is True
    assert snap["panels"] == {"tasks": [], "decisions": [], "proposals": []}  # none made yet
    assert snap["features"] == {"search": True, "report": True}
    alpha = next(x for x in snap["peers"] if x["id"] == a.id)
    assert alpha["reach"] and alpha["client"] == "claude-code"


def test_a_cli_message_reaches_the_page_live(dashboard, pair):
    ca, _a, _cb, b = pair
    text = "live <b>now</b>"

    async def run() -> tuple[dict, float]:
        async with connect(dashboard) as ws:
            json.loads(await ws.recv())  # the snapshot
            sent_at = time.monotonic()
            await asyncio.to_thread(ca.request, p.Send, to="beta", text=text)
            while True:
                update = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if update["t"] == "message":
                    return update, time.monotonic() - sent_at

    update, latency = asyncio.run(run())
    assert update["message"]["text"] == text
    assert update["message"]["recipient"] == b.id and update["message"]["state"] == "queued"
    assert latency < 1.0, latency


def test_compose_reaches_the_inbox_and_delivery_shows(dashboard, pair):
    _ca, _a, cb, b = pair
    status, body = dashboard.post("send", {"to": "beta", "text": "from the human"})
    assert status == 200, body
    [mid] = body["sent"]
    claimed = cb.request(p.Claim).messages
    assert [(m.id, m.text, m.sender_name) for m in claimed] == [
        (mid, "from the human", snapshot(dashboard)["me"]["name"])
    ]

    async def deliver() -> list[dict]:
        task = asyncio.create_task(
            updates_until(
                dashboard,
                lambda u: (
                    u["t"] == "changed"
                    and u["message"]["id"] == mid
                    and u["message"]["state"] == "delivered"
                ),
            )
        )
        await asyncio.sleep(0.3)
        await asyncio.to_thread(cb.request, p.Ack, message_ids=[mid], via="check")
        return await task

    seen = asyncio.run(deliver())
    assert seen[-1]["message"]["delivered_via"] == "check"


def test_compose_errors_are_specific(dashboard, pair):
    status, body = dashboard.post("send", {"to": "betta", "text": "x"})
    assert status == 409 and body["error"] == Code.UNKNOWN_PEER and "beta" in body["candidates"]
    status, body = dashboard.post("send", {"to": "beta", "text": ""})
    assert status == 400 and "'text'" in body["message"]
    status, body = dashboard.post("send", {"scope": "galaxy", "text": "x"})
    assert status == 400 and "scope must be" in body["message"]
    status, body = dashboard.post("nope", {})
    assert status == 400 and "unknown action" in body["message"]


def test_broadcast_to_a_scope(dashboard, pair):
    status, body = dashboard.post("send", {"scope": "machine", "text": "hello all"})
    assert status == 200 and len(body["sent"]) == 2, body


def test_every_change_to_a_message_reaches_the_page(daemon, pair, tmp_path):
    """Leased by a claim, queued again by a release, reacted to, delivered: each reaches the
    page (``ev_message_changed``), also when the dashboard runs in a group (it never joins
    one: the overseer sees everything, and ``ev_traffic`` is screened for grouped peers)."""
    ca, _a, cb, _b = pair
    d = Dashboard(daemon, tmp_path, env={"CLAUDE_PEERS_GROUP": "team-x"})
    try:
        snap = d.wait_ready()
        assert snap["me"].get("group") is None
        mid = ca.request(p.Send, to="beta", text="watch me change").message_id

        def change(step: Any, want: Any) -> dict:
            async def run() -> list[dict]:
                task = asyncio.create_task(
                    updates_until(
                        d, lambda u: u["t"] == "changed" and u["message"]["id"] == mid and want(u)
                    )
                )
                await asyncio.sleep(0.3)
                await asyncio.to_thread(step)
                return await task

            return asyncio.run(run())[-1]["message"]

        assert change(lambda: cb.request(p.Claim), lambda u: True)["state"] == "leased"
        queued = change(lambda: cb.request(p.Release, message_ids=[mid]), lambda u: True)
        assert queued["state"] == "queued"
        reacted = change(
            lambda: cb.request(p.React, message_id=mid, emoji="👍"),
            lambda u: u["message"].get("reactions"),
        )
        assert [r["emoji"] for r in reacted["reactions"]] == ["👍"]

        def deliver() -> None:
            cb.request(p.Claim)
            cb.request(p.Ack, message_ids=[mid], via="check")

        done = change(deliver, lambda u: u["message"]["state"] == "delivered")
        assert done["delivered_via"] == "check" and done["reactions"]
    finally:
        d.stop()


def test_mail_to_the_human_is_delivered_once_the_page_showed_it(dashboard, pair):
    ca, _a, _cb, _b = pair
    me = snapshot(dashboard)["me"]
    sent = ca.request(p.Send, to=me["id"], text="for the person")
    status, body = dashboard.post("ack", {"ids": [sent.message_id]})
    assert status == 200 and body["acked"] == [sent.message_id]
    [item] = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert item.state == "delivered" and item.delivered_via == "cli"


def test_peer_changes_reach_the_page(dashboard, pair):
    ca, a, _cb, _b = pair

    async def run() -> list[dict]:
        task = asyncio.create_task(
            updates_until(
                dashboard,
                lambda u: (
                    u["t"] == "peers"
                    and any(
                        x["id"] == a.id and x.get("summary") == "refactoring" for x in u["peers"]
                    )
                ),
            )
        )
        await asyncio.sleep(0.3)
        await asyncio.to_thread(ca.request, p.SetSummary, summary="refactoring")
        return await task

    asyncio.run(run())


def test_survives_a_daemon_restart_and_catches_up(daemon, tmp_path, agents):
    d = Dashboard(daemon, tmp_path)
    try:
        d.wait_ready()

        async def run() -> None:
            async with connect(d) as ws:
                json.loads(await ws.recv())
                await asyncio.to_thread(daemon.stop)
                while True:  # the page is told at once
                    update = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if update["t"] == "daemon":
                        assert update["up"] is False
                        break
                await asyncio.to_thread(daemon.start)

                def while_away() -> None:
                    with daemon.client() as c, daemon.client() as other:
                        register(c, agents.spawn().pid, name="newcomer")
                        register(other, agents.spawn().pid, name="oldtimer")
                        other.request(p.Send, to="newcomer", text="sent while the page was away")

                await asyncio.to_thread(while_away)
                while True:  # and catches up with a snapshot once it is back
                    update = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if update["t"] == "snapshot" and update["up"]:
                        break
            snap = await asyncio.to_thread(snapshot, d)
            assert any(x["name"] == "newcomer" for x in snap["peers"])
            assert any(m["text"] == "sent while the page was away" for m in snap["messages"])

        asyncio.run(run())
        assert d.proc.poll() is None
    finally:
        d.stop()


# --------------------------------------------------------------------------- owner actions


def test_rename_kill_and_release_from_the_page(dashboard, agents, tmp_path):
    daemon = dashboard.daemon
    victim = agents.spawn()
    with daemon.client("claude-code") as c:
        peer = register(c, victim.pid, cwd=str(tmp_path), name="worker")
        repo = str(tmp_path)
        c.request(p.ClaimFiles, patterns=[p.FileRef(path=f"{repo}/src/**", repo=repo)])
        status, body = dashboard.post("rename", {"target": "worker", "name": "builder"})
        assert status == 200 and body["peer"]["name"] == "builder"
        assert c.request(p.Whoami).peer.name == "builder"

        status, body = dashboard.post("release", {"target": "builder", "patterns": []})
        assert status == 200 and body["result"]["released"] == [f"{repo}/src/**"]
        assert not c.request(p.ListFiles).holders

    async def kill() -> list[dict]:
        task = asyncio.create_task(updates_until(dashboard, lambda u: u["t"] == "audit"))
        await asyncio.sleep(0.3)
        status, body = await asyncio.to_thread(dashboard.post, "kill", {"target": peer.id})
        assert status == 200 and body["result"]["outcome"] == "terminated", body
        return await task

    seen = asyncio.run(kill())
    assert victim.wait(5) == -signal.SIGTERM
    assert seen[-1]["audit"][0]["action"] == "kill"


def test_owner_actions_are_refused_to_agent_sessions(pair, tmp_path):
    ca, _a, cb, b = pair
    repo = str(tmp_path)
    cb.request(p.ClaimFiles, patterns=[p.FileRef(path=f"{repo}/x/**", repo=repo)])
    for req in (
        p.RenamePeer(id=0, target="beta", name="hijacked"),
        p.ReleaseClaims(id=0, target="beta", all=True),
    ):
        with pytest.raises(PeersError) as info:
            ca.call(req)
        assert info.value.code == Code.FORBIDDEN and "owner" in info.value.message
    assert cb.request(p.Whoami).peer.name == "beta"
    assert cb.request(p.ListFiles).holders


def test_release_claims_asks_for_patterns_or_all(daemon):
    with daemon.client() as c:
        for fields in ({}, {"all": True, "patterns": ["/r/x"]}):
            with pytest.raises(PeersError) as info:
                c.request(p.ReleaseClaims, target="nobody", **fields)
            assert info.value.code == Code.BAD_REQUEST


def test_overseer_events_carry_whole_messages_and_doorbells(daemon, pair):
    ca, a, _cb, b = pair
    with daemon.client() as watcher:
        watcher.request(p.Subscribe, kinds=["overseer"])
        text = "x" * 5000  # more than the 120 characters a traffic event previews
        sent = ca.request(p.Send, to="beta", text=text)
        ca.request(p.SetSummary, summary="busy")
        events = [watcher.next_event(5), watcher.next_event(5)]
    posted, changed = events
    assert isinstance(posted, p.MessagePosted)
    assert posted.message.id == sent.message_id and posted.message.text == text
    assert isinstance(changed, p.PeerChanged)
    assert (changed.what, changed.peer_id) == ("summary", a.id)


def test_a_lapsed_lease_rings_the_message_doorbell(daemon, pair):
    ca, _a, cb, _b = pair
    with daemon.client() as watcher:
        watcher.request(p.Subscribe, kinds=["overseer"])
        mid = ca.request(p.Send, to="beta", text="lease me").message_id
        assert isinstance(watcher.next_event(5), p.MessagePosted)
        cb.request(p.Claim, lease_seconds=0.1)
        leased = watcher.next_event(5)
        time.sleep(0.3)
        assert watcher.request(p.Sweep).requeued == 1
        again = watcher.next_event(5)
    assert (leased.what, leased.message_ids) == ("leased", [mid])
    assert isinstance(again, p.MessageChanged)
    assert (again.what, again.message_ids) == ("queued", [mid])


def test_dashboard_command_in_help():
    done = subprocess.run(
        [*PEERS, "dashboard", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for option in ("--no-open", "--port", "--host", "--tls-cert", "--tls-key", "--as"):
        assert option in done.stdout


def test_tls_when_asked_and_the_cookie_is_secure(daemon, tmp_path):
    import http.client
    import ssl

    from .test_hub import _self_signed

    cert, key = _self_signed(tmp_path)
    d = Dashboard(daemon, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert d.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(d.host, d.port, context=context, timeout=10)
        conn.request("GET", f"/?token={d.token}")
        res = conn.getresponse()
        res.read()
        assert res.status == 200
        assert "Secure" in res.getheader("set-cookie", "")
        conn.request("GET", "/", headers={"Cookie": d.cookie})
        res = conn.getresponse()
        assert res.status == 200 and b"peers-csrf" in res.read()
        conn.close()
        with socket.create_connection((d.host, d.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert not plain.recv(100).startswith(b"HTTP/1.1 200")  # no clear text
    finally:
        d.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_panel_appears_only_when_the_daemon_answers(daemon, monkeypatch, anyio_backend):
    """The mechanism for tasks, decisions, proposals: a request this protocol lacks, or one
    this daemon refuses (an older daemon: "Invalid value ... at `$.t`"), hides its panel."""
    from peers_cli.dashboard import link

    class ListWidgets(p.Request["Ok"], tag="list_widgets"):  # the daemon knows no such tag
        pass

    monkeypatch.setattr(p, "ListWidgets", ListWidgets, raising=False)
    monkeypatch.setattr(
        link,
        "PANELS",
        (
            link.Panel("machines", "ListMachines", {}, "machines"),  # answered: shown
            link.Panel("widgets", "ListWidgets"),  # refused by the daemon: hidden
            link.Panel("gadgets", "ListGadgets"),  # not in the protocol: hidden
        ),
    )
    overseer = link.Overseer(daemon.settings, os.getpid())
    task = asyncio.get_running_loop().create_task(overseer.run())
    try:
        await asyncio.wait_for(overseer.ready.wait(), 15)
        assert overseer.panels == {"machines": []}
        assert overseer.features == {"search": True, "report": True}  # this daemon has both
        snap = json.loads(overseer.snapshot())
        assert snap["panels"] == {"machines": []}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if overseer.client is not None:
            await overseer.client.aclose()


def test_urgent_mail_raises_a_desktop_notification(daemon, pair, tmp_path):
    """``urgent`` marks the text and runs the desktop notifier (here a stand-in for
    notify-send on PATH that records its arguments)."""
    _ca, _a, cb, _b = pair
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notified"
    fake = bin_dir / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    path = f"{bin_dir}:{daemon.env.get('PATH', os.defpath)}"
    d = Dashboard(daemon, tmp_path, env={"PATH": path})
    try:
        d.wait_ready()
        status, body = d.post("send", {"to": "beta", "text": "stop the deploy", "urgent": True})
        assert status == 200, body
        [msg] = cb.request(p.Claim).messages
        assert msg.text == "URGENT: stop the deploy"
        deadline = time.monotonic() + 5
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = record.read_text().splitlines()
        assert lines[:2] == ["--app-name=claude-peers", "urgent mail to beta"]
        assert lines[2] == "URGENT: stop the deploy"
    finally:
        d.stop()


def test_owner_actions_stop_at_this_machine_like_kill(make_daemon, agents, tmp_path):
    """On a hub, the local owner may not rename a session of another machine, drop its
    claims or kill it: the one check of ``kill.owned_target``."""
    from .test_hub import hub, register_remote, remote_client

    d, port = hub(make_daemon)
    with remote_client(tmp_path / "m1", f"tcp://127.0.0.1:{port}") as far:
        peer = register_remote(far, agents, "farbuilder", "alpha-box")
        claim = p.FileRef(path="/work/src/**", repo="/work")
        far.request(p.ClaimFiles, patterns=[claim], exclusive=True, reason="mine")
        with d.client("cli") as local:
            for req in (
                p.RenamePeer(id=0, target=peer.id, name="renamed-by-the-hub"),
                p.ReleaseClaims(id=0, target=peer.id, all=True),
                p.Kill(id=0, target=peer.id),
            ):
                with pytest.raises(PeersError) as info:
                    local.call(req)
                assert info.value.code == Code.BAD_REQUEST, req
                assert "runs on another machine (alpha-box)" in info.value.message
            assert far.request(p.Whoami).peer.name == "farbuilder"
            held = [(h.peer_id, h.path) for h in far.request(p.ListFiles).holders]
            assert held == [(peer.id, "/work/src/**")]


def test_owner_actions_leave_another_users_process_alone(daemon, tmp_path):
    """A session whose agent process is another user's (pid 1, or when the tests run as
    root a process of ``nobody``): neither renamed nor stripped of its claims, as ``kill``
    leaves it alone."""
    foreign = None
    pid = 1
    if os.getuid() == 0:
        foreign = subprocess.Popen(["sleep", "60"], user=65534, group=65534, cwd="/")
        pid = foreign.pid
    try:
        with daemon.client("claude-code") as c, daemon.client("cli") as owner:
            register(c, pid, name="rootly")
            c.request(p.ClaimFiles, patterns=[p.FileRef(path="/r/x/**", repo="/r")])
            for req in (
                p.RenamePeer(id=0, target="rootly", name="mine-now"),
                p.ReleaseClaims(id=0, target="rootly", all=True),
                p.Kill(id=0, target="rootly"),
            ):
                with pytest.raises(PeersError) as info:
                    owner.call(req)
                assert info.value.code == Code.FORBIDDEN, req
                assert "belongs to another user" in info.value.message
            assert c.request(p.Whoami).peer.name == "rootly"
            assert owner.request(p.ListFiles).holders
    finally:
        if foreign is not None:
            foreign.kill()
            foreign.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failed_catch_up_after_a_reconnect_is_retried(daemon, anyio_backend):
    """The client reconnects by itself, then the dashboard catches up; when that fails
    (here the first two tries, as a request timing out would) it tries again instead of
    staying "down" for good with the connection up."""
    from peers_cli.dashboard import link

    overseer = link.Overseer(daemon.settings, os.getpid())
    task = asyncio.get_running_loop().create_task(overseer.run())
    fetch = overseer._fetch
    failures = {"left": 0}

    async def flaky(what: set[str]) -> None:
        if "audit" in what and failures["left"]:  # a catch-up's fetch, not a doorbell's
            failures["left"] -= 1
            raise PeersError(Code.TIMEOUT, "injected: no answer in time")
        await fetch(what)

    overseer._fetch = flaky  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(overseer.ready.wait(), 15)
        failures["left"] = 2
        await asyncio.to_thread(daemon.stop)
        deadline = time.monotonic() + 10
        while overseer.up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.to_thread(daemon.start)
        deadline = time.monotonic() + 15
        while not (overseer.up and overseer.client and overseer.client.connected):
            assert time.monotonic() < deadline, (overseer.down_reason, failures)
            await asyncio.sleep(0.05)
        assert failures["left"] == 0  # it did fail twice, and came up after
        assert json.loads(overseer.snapshot())["up"] is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if overseer.client is not None:
            await overseer.client.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_page_that_stops_reading_is_hung_up_on(daemon, pair, monkeypatch, anyio_backend):
    """A page that never reads (a frozen tab) is hung up on once an update has waited
    ``SEND_TIMEOUT`` for it, well before its queue of 2000 updates fills: its queue is let
    go and its connection ends. In-process, with a 1 s timeout."""
    import base64

    from peers_cli.dashboard import link, web

    ca, _a, _cb, _b = pair
    monkeypatch.setattr(web, "SEND_TIMEOUT", 1.0)
    overseer = link.Overseer(daemon.settings, os.getpid())
    token = "ab" * 32
    _app, guard = web.build(overseer, token, "127.0.0.1", False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    guard.port = port = listener.getsockname()[1]
    server = web.Server(web.server_config(guard, None, None))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[listener]))
    page = socket.socket()
    try:
        await asyncio.wait_for(overseer.ready.wait(), 15)
        page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        page.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        page.sendall(
            (
                f"GET /live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
                f"Cookie: {guard.cookie}={guard.cookie_value}\r\n\r\n"
            ).encode()
        )
        page.settimeout(10)
        assert await asyncio.to_thread(page.recv, 12) == b"HTTP/1.1 101"
        deadline = time.monotonic() + 10
        while not overseer.pages:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

        def flood() -> None:  # about 9 MB: more than the socket buffers hold
            for n in range(300):
                ca.request(p.Send, to="beta", text=f"{n} " + "y" * 30000)

        await asyncio.to_thread(flood)
        deadline = time.monotonic() + 15
        while overseer.pages:  # detached: its queue and updates are freed
            assert time.monotonic() < deadline, "a page that reads nothing is never let go"
            await asyncio.sleep(0.05)

        def drain() -> None:
            with contextlib.suppress(ConnectionResetError):
                while page.recv(1 << 20):
                    pass

        await asyncio.to_thread(drain)  # and the connection ends (no 10 s timeout)
    finally:
        page.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
