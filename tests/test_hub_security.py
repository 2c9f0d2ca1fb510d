"""Hub mode as an attacker with the token (or without it) would try it, on loopback.

A token lets a machine join the hub; it must not let it speak for the hub's own sessions
or another machine's, learn their process details, starve local clients or pin the CPU.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from peersd import client, machine_secret, wire
from peersd import protocol as p
from peersd.client import session_registration
from peersd.config import load
from peersd.errors import Code, ConfigError, PeersError

from .conftest import PYTHON, register, run_peers
from .test_abuse import fd_baseline, fd_count, read_until_closed, wait_for
from .test_hub import TOKEN, _self_signed, free_port, hub, register_remote, remote_client

LINUX = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts /proc/PID/fd, uses 127.0.0.x sources"
)
SECRET_A = "a" * 64
SECRET_B = "b" * 64


class Raw:
    """A hand-made TCP client: any hello, any frame."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.frames = p.FrameBuffer(64 * 1024 * 1024)
        self.pending: list[bytes] = []

    def hello(self, machine_id: str | None, secret: str | None, token: str = TOKEN) -> p.Frame:
        self.send(
            p.Hello(
                protocol=p.PROTOCOL_VERSION,
                client_version="raw",
                token=token,
                machine_id=machine_id,
                machine_secret=secret,
            )
        )
        return self.read()

    def send(self, frame: p.Frame) -> None:
        self.sock.sendall(p.encode(frame))

    def read(self) -> p.Frame:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.pending += self.frames.feed(data)
        return p.server_decoder.decode(self.pending.pop(0))

    def ask(self, req: p.Request) -> p.Frame:
        self.send(req)
        while True:
            frame = self.read()
            if not isinstance(frame, p.EVENT_TYPES):
                return frame

    def closed(self, timeout: float = 5) -> bool:
        return read_until_closed(self.sock, timeout)

    def close(self) -> None:
        self.sock.close()


def machine_of(home: Path) -> tuple[str, str]:
    from peersd.identity import machine_id

    state = home / ".claude"
    return machine_id(state), machine_secret.load_or_create(str(state))


def remote_register(raw: Raw, pid: int, start: float, **fields: object) -> p.Frame:
    return raw.ask(p.Register(id=1, agent_pid=pid, agent_start=start, cwd="/w", **fields))


# --------------------------------------------------------------------------- item 5


def test_a_token_holder_cannot_take_over_a_local_session(make_daemon, agents, tmp_path):
    """The attack: the hub's machine id (from welcome) plus a local session's pid and
    start time bound a TCP connection to that session, which then claimed its mail."""
    d, port = hub(make_daemon)
    victim = agents.spawn()
    with d.client("claude-code") as local, d.client("cli") as sender:
        peer = register(local, victim.pid, name="victim", session_id="sess-victim")
        register(sender, agents.spawn().pid, name="sender")
        sent = sender.request(p.Send, to="victim", text="for the victim only")
        hub_id = local.welcome.machine_id
        attacker = Raw(port)
        try:
            refused = attacker.hello(hub_id, SECRET_A)
            assert isinstance(refused, p.Error), refused
            assert refused.code == Code.FORBIDDEN and "hub's own" in refused.message
            assert attacker.closed()
        finally:
            attacker.close()
        # Under its own machine id, the same pid and start time are another machine's
        # process: a new peer, with none of the victim's mail.
        attacker = Raw(port)
        try:
            assert isinstance(attacker.hello("attacker-box", SECRET_A), p.Welcome)
            got = remote_register(attacker, victim.pid, peer.agent_start, name="victim")
            assert isinstance(got, p.PeerResult) and got.peer.id != peer.id
            assert got.peer.machine_id == "attacker-box"
            assert attacker.ask(p.Claim(id=2)).messages == []
            # nor can it attach to the local session by its session id
            refused = attacker.ask(p.Attach(id=3, session_id="sess-victim"))
            assert isinstance(refused, p.Error) and refused.code == Code.UNKNOWN_PEER
        finally:
            attacker.close()
        (m,) = local.request(p.Claim).messages
        assert m.id == sent.message_id and m.text == "for the victim only"
        assert local.request(p.Whoami).peer.host == peer.host


def test_a_gone_local_peers_mail_is_not_inherited_over_tcp(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    with d.client("claude-code") as local, d.client("cli") as sender:
        register(local, agents.spawn().pid, name="api")
        register(sender, agents.spawn().pid, name="sender")
        sent = sender.request(p.Send, to="api", text="waits for the next api")
        local.request(p.Unregister)
        hub_id = local.welcome.machine_id
    attacker = Raw(port)
    try:
        refused = attacker.hello(hub_id, SECRET_A)
        assert isinstance(refused, p.Error) and refused.code == Code.FORBIDDEN
    finally:
        attacker.close()
    with remote_client(tmp_path / "far", f"tcp://127.0.0.1:{port}") as far:
        got = register_remote(far, agents, "api", "far-box")
        assert far.request(p.Claim).messages == []
        assert got.machine_id != hub_id
    with d.client("claude-code") as local:
        register(local, agents.spawn().pid, name="api")
        assert [m.id for m in local.request(p.Claim).messages] == [sent.message_id]


def test_a_machine_id_is_bound_to_its_first_secret(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url) as owner:
        builder = register_remote(owner, agents, "builder", "m1-box")
        owner.request(p.Heartbeat)
        m1 = builder.machine_id
        attacker = Raw(port)
        try:
            refused = attacker.hello(m1, SECRET_B)
            assert isinstance(refused, p.Error) and refused.code == Code.FORBIDDEN
            assert "bound on this hub to another machine secret" in refused.message
            assert f"peers hub forget-machine {m1}" in refused.message
        finally:
            attacker.close()
        assert "is bound to another secret" in d.log()
        # the owner's own secret works from any number of connections
        with remote_client(tmp_path / "m1", url) as again:
            assert isinstance(again.connect(), p.Welcome)
        # a remote connection cannot forget a machine; the hub's owner can, locally
        with remote_client(tmp_path / "m2", url) as other, pytest.raises(PeersError) as info:
            other.request(p.ForgetMachine, machine_id=m1)
        assert info.value.code == Code.FORBIDDEN
        with d.client() as local:
            local.request(p.ForgetMachine, machine_id=m1)
            with pytest.raises(PeersError) as info:
                local.request(p.ForgetMachine, machine_id=m1)
            assert info.value.code == Code.BAD_REQUEST
        # the forgotten machine's connections are hung up on ...
        with pytest.raises(PeersError) as info:
            owner.request(p.Heartbeat)
        assert info.value.code in (Code.FORBIDDEN, Code.UNREACHABLE)
    # ... and the next secret to come binds the id again
    fresh = Raw(port)
    try:
        assert isinstance(fresh.hello(m1, SECRET_B), p.Welcome)
    finally:
        fresh.close()


def test_the_hubs_owner_lists_the_bound_machines(make_daemon, agents, tmp_path):
    """After an upgrade the owner must check which ids are bound (docs/operations.md):
    ``peers hub machines`` lists them, locally only."""
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url) as a:
        mine = register_remote(a, agents, "builder", "m1-box")
        with pytest.raises(PeersError) as info:
            a.request(p.ListMachines)
        assert info.value.code == Code.FORBIDDEN
        listed = run_peers(d.env, "hub", "machines", "--json")
        assert listed.code == 0, listed
        found = listed.json()
        assert found["total"] == 1
        (m,) = found["machines"]
        assert (m["machine_id"], m["host"], m["active_peers"]) == (mine.machine_id, "m1-box", 1)
        assert m["first_seen"] <= m["last_seen"]
        table = run_peers(d.env, "hub", "machines")
        assert mine.machine_id in table.out and "m1-box" in table.out, table


def test_register_may_not_name_another_machine(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    raw = Raw(port)
    try:
        assert isinstance(raw.hello("box-one", SECRET_A), p.Welcome)
        for machine in ("box-two", raw_welcome_hub_id(d)):
            refused = remote_register(raw, agents.spawn().pid, 1.0, machine_id=machine)
            assert isinstance(refused, p.Error) and refused.code == Code.FORBIDDEN
        ok = remote_register(raw, agents.spawn().pid, 1.0, machine_id="box-one", host="")
        assert isinstance(ok, p.PeerResult)
        # no host: the stand-in others see for box-one, not the id it proves itself with
        assert ok.peer.machine_id == "box-one" and ok.peer.host.startswith("h-")
    finally:
        raw.close()


def raw_welcome_hub_id(d) -> str:
    with d.client() as c:
        return c.connect().machine_id


def test_hellos_without_machine_credentials_are_refused_over_tcp(make_daemon, tmp_path):
    d, port = hub(make_daemon)
    for machine, secret in ((None, None), ("box", None), (None, SECRET_A)):
        raw = Raw(port)
        try:
            refused = raw.hello(machine, secret)
            assert isinstance(refused, p.Error) and refused.code == Code.FORBIDDEN
            assert "machine_id and machine_secret" in refused.message
        finally:
            raw.close()
    # ... but a local client needs none (and what it sends is ignored)
    with d.client() as c:
        assert c.request(p.Status).pid == d.proc.pid


def test_tcp_clients_do_not_see_other_machines_process_details(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with d.client("claude-code") as local, remote_client(tmp_path / "m1", url) as a:
        here = register(local, agents.spawn().pid, name="local-one")
        mine = register_remote(a, agents, "far-one", "m1-box")
        with remote_client(tmp_path / "m2", url) as b:
            b.request(p.Subscribe, kinds=["peers"])
            listed = {x.name: x for x in b.request(p.ListPeers, scope="all").peers}
            for name, real in (("local-one", here), ("far-one", mine)):
                x = listed[name]
                assert (x.agent_pid, x.agent_start, x.helper_pid, x.tty) == (0, 0.0, None, None)
                # nor their machine ids (which a hub client presents), only a stand-in
                assert x.machine_id.startswith("h-") and real.machine_id not in x.machine_id
            assert listed["local-one"].machine_id != listed["far-one"].machine_id
            # events carry the same view
            with d.client("claude-code") as local2:
                register(local2, agents.spawn().pid, name="local-two")
                event = b.next_event(5)
                assert isinstance(event, p.PeerJoined) and event.peer.name == "local-two"
                assert (event.peer.agent_pid, event.peer.agent_start) == (0, 0.0)
                assert event.peer.machine_id == listed["local-one"].machine_id
        # a machine sees its own sessions whole; the hub's owner sees everything
        own = {x.name: x for x in a.request(p.ListPeers, scope="all", include_self=True).peers}
        assert (own["far-one"].agent_pid, own["far-one"].machine_id) == (
            mine.agent_pid,
            mine.machine_id,
        )
        assert own["local-one"].agent_pid == 0
        listed = local.request(p.ListPeers, scope="all", include_self=True).peers
        everyone = {x.name: x for x in listed}
        far = everyone["far-one"]
        assert (far.agent_pid, far.machine_id) == (mine.agent_pid, mine.machine_id)
        assert everyone["local-one"].agent_pid == here.agent_pid
        assert everyone["local-one"].machine_id == here.machine_id


def test_a_remote_session_without_a_host_is_not_shown_by_its_machine_id(
    make_daemon, agents, tmp_path
):
    """An empty host used to become the raw machine id, which every hub client then saw
    (and could present as its own, before that machine did)."""
    d, port = hub(make_daemon)
    machine, secret = machine_of(tmp_path / "m1")
    a = Raw(port)
    try:
        assert isinstance(a.hello(machine, secret), p.Welcome)
        proc = agents.spawn()
        got = remote_register(a, proc.pid, 1.0, name="nameless", host="")
        assert isinstance(got, p.PeerResult), got
        assert machine not in got.peer.host and got.peer.host.startswith("h-")
        with remote_client(tmp_path / "m2", f"tcp://127.0.0.1:{port}") as b:
            register_remote(b, agents, "other", "m2-box")
            (x,) = [x for x in b.request(p.ListPeers, scope="all").peers if x.name == "nameless"]
            assert x.host == x.machine_id == got.peer.host  # the one stand-in, everywhere
            assert b.request(p.Send, to=f"nameless@{x.host}", text="hi").to == got.peer.id
    finally:
        a.close()


def test_a_local_client_cannot_choose_its_host_label(daemon, agents):
    with daemon.client("claude-code") as c:
        host = c.connect().host
        req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/w")
        req.host = "not-this-box"
        assert c.call(req).peer.host == host


# --------------------------------------------------------------------------- the secret file


def test_the_machine_secret_file_is_private_and_never_follows_a_link(tmp_path):
    state = tmp_path / "state"
    secret = machine_secret.load_or_create(str(state))
    path = Path(machine_secret.secret_path(str(state)))
    assert len(secret) == 64 and machine_secret.load_or_create(str(state)) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [x.name for x in path.parent.iterdir()] == ["machine-secret"]  # no temp left
    # A symlink planted in its place is neither followed nor overwritten.
    target = tmp_path / "bashrc"
    target.write_text("keep me\n")
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(ConfigError):
        machine_secret.load_or_create(str(state))
    assert target.read_text() == "keep me\n"
    # A file others could read (or have written) is refused, not used.
    path.unlink()
    path.write_text(secret + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        machine_secret.load_or_create(str(state))
    # A private directory that is a symlink is refused too.
    other = tmp_path / "other"
    other.mkdir()
    (other / machine_secret.PRIVATE_DIR).symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="not a directory"):
        machine_secret.load_or_create(str(other))


def test_a_machine_id_that_cannot_be_used_is_the_clients_forbidden_error(tmp_path):
    """Both hub clients turn a refused machine-id file into their own ``forbidden`` error,
    as they do for the secret: the refusal is a ConfigError from the same helpers, which
    they once let escape (they caught only the secret's own error type)."""
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o777)  # a database directory others can write: both files are refused
    env = {"HOME": str(tmp_path), "CLAUDE_PEERS_DB": str(state / "claude-peers.db")}
    with pytest.raises(PeersError) as caught:
        client.hub_credentials(load(env=env))
    assert caught.value.code == Code.FORBIDDEN
    assert "can be written by other users" in caught.value.message
    with pytest.raises(wire.WireError) as seen:
        wire.hub_credentials(env=env)
    assert seen.value.code == Code.FORBIDDEN
    assert "can be written by other users" in seen.value.message


def test_the_hook_proves_its_machine_with_the_standard_library_only(make_daemon, agents, tmp_path):
    """The hook's hub client had its own copy of the credential code, which imported
    identity (pathlib, uuid, socket: ~14 ms per hook); both clients now share
    ``machine_secret.hub_credentials``, and the hook finds the session the client made."""
    import json

    from .test_hook import claude_input

    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    home = tmp_path / "m1"
    with remote_client(home, url) as a:
        req = session_registration(
            a.settings, agents.spawn().pid, "claude-code", cwd="/w", session_id="sess-hub"
        )
        a.call(req)
        code = (
            "import sys\nfrom peers_mcp import hook\nrc = hook.main([])\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(rc)\n"
        )
        env = {"HOME": str(home), "CLAUDE_PEERS_URL": url, "CLAUDE_PEERS_TOKEN": TOKEN}
        done = subprocess.run(
            [PYTHON, "-c", code],
            input=json.dumps(claude_input("PostToolUse", session_id="sess-hub")).encode(),
            capture_output=True,
            env={**env, "PATH": os.environ.get("PATH", "")},
            cwd=tmp_path,
            timeout=15,
        )
    assert (done.returncode, done.stdout) == (0, b""), done.stderr.decode()
    log = home / ".claude" / "run" / "peers-hook.log"
    assert not log.exists(), log.read_text()  # it proved the same machine, found the session
    modules = set(done.stderr.decode().split())
    assert {"peersd.wire", "peersd.machine_secret"} <= modules
    heavy = {
        "pathlib", "uuid", "peersd.identity", "peersd.config", "msgspec", "typing",
        "peersd.protocol", "peersd.client", "asyncio", "tomllib",
    }  # fmt: skip
    assert modules & heavy == set()


def test_processes_racing_to_create_the_secret_agree_on_one(tmp_path):
    code = (
        "import sys; from peersd import machine_secret; "
        "print(machine_secret.load_or_create(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen([PYTHON, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    values = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert len(values) == 1 and len(values.pop()) == 64


# --------------------------------------------------------------------------- item 6


def _sources(n: int) -> list[str]:
    return [f"127.0.0.{2 + i // 4}" for i in range(n)]  # 4 connections per address


def _idle_connections(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connections to the hub that never say hello, 4 per source address."""
    idle = []
    for source in _sources(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        idle.append(s)
    return idle


@LINUX
def test_idle_tcp_connections_cannot_starve_local_clients(make_daemon, agents):
    """Connections that never say hello used to fill max_connections, which TCP shared
    with the local socket: every local peers, hook and MCP call was refused."""
    d, port = hub(make_daemon, max_connections=12, tcp_max_connections=10, tcp_max_per_address=3)
    base = fd_baseline(d.proc.pid)
    idle: list[socket.socket] = []
    try:
        idle += _idle_connections(port, 40)
        time.sleep(0.3)
        # every local client still gets in, at once
        started = time.monotonic()
        clients = [d.client() for _ in range(11)]
        try:
            for c in clients:
                assert c.request(p.Status).pid == d.proc.pid
        finally:
            for c in clients:
                c.close()
        assert time.monotonic() - started < 5
        # the TCP ones got their own budget, 3 per address and 10 in all, and a clear no
        refused = 0
        for s in idle:
            s.settimeout(0.05)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if data:
                frame = p.server_decoder.decode(data[4:])
                assert isinstance(frame, p.Error) and frame.code == Code.TOO_MANY_CONNECTIONS
                refused += 1
        assert refused == 30
        assert fd_count(d.proc.pid) <= base + 10 + 2
        with d.client() as c:
            assert c.request(p.Status).connections == 10 + 1
        assert "(tcp_max_connections)" in d.log() or "(tcp_max_per_address)" in d.log()
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: fd_count(d.proc.pid) <= base, 5, "descriptors to come back")


@LINUX
def test_tls_handshakes_count_and_time_out(make_daemon, tmp_path):
    """On a TLS hub, connections still in the handshake were not counted at all, so
    idle connects exhausted the daemon's descriptors; and they lingered for a minute."""
    cert, key = _self_signed(tmp_path)
    d, port = hub(
        make_daemon,
        tls_cert=str(cert),
        tls_key=str(key),
        tcp_max_connections=8,
        tcp_max_per_address=4,
        hello_timeout=1.5,
    )
    base = fd_baseline(d.proc.pid)
    idle: list[socket.socket] = []
    try:
        idle += _idle_connections(port, 40)
        time.sleep(0.3)
        assert fd_count(d.proc.pid) <= base + 8 + 1
        with d.client() as c:
            assert c.request(p.Status).connections <= 8 + 1
        # the handshake times out: descriptors come back while the clients still wait
        wait_for(lambda: fd_count(d.proc.pid) <= base, 5, "handshakes to time out")
        # a real TLS client gets in once there is room again
        with remote_client(
            tmp_path / "m1", f"tls://127.0.0.1:{port}", CLAUDE_PEERS_TLS_CA=str(cert)
        ) as a:
            assert a.request(p.Status).pid == d.proc.pid
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: fd_count(d.proc.pid) <= base, 5, "descriptors to come back")


@LINUX
def test_a_failed_tls_handshake_frees_its_slot(make_daemon, tmp_path):
    cert, key = _self_signed(tmp_path)
    d, port = hub(make_daemon, tls_cert=str(cert), tls_key=str(key), tcp_max_connections=2)
    base = fd_baseline(d.proc.pid)
    for _ in range(10):  # plain bytes where a ClientHello belongs, or a client that gives up
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(b"\x00\x00\x00\x10not a tls hello!")
        context = ssl.create_default_context()  # does not trust the hub: fails
        with socket.create_connection(("127.0.0.1", port), 5) as s, pytest.raises(ssl.SSLError):
            context.wrap_socket(s, server_hostname="127.0.0.1")
    wait_for(lambda: fd_count(d.proc.pid) <= base, 5, "failed handshakes to be released")
    with remote_client(
        tmp_path / "m1", f"tls://127.0.0.1:{port}", CLAUDE_PEERS_TLS_CA=str(cert)
    ) as a:
        assert a.request(p.Status).pid == d.proc.pid


def test_welcomed_connections_do_not_count_against_their_address(make_daemon, agents, tmp_path):
    """Each remote session holds peers-mcp and an idle waiter and opens a connection per
    hook: four sessions on one machine (or machines behind one NAT) hit the per-address
    cap, and were refused. It now bounds only connections that have not been welcomed."""
    d, port = hub(make_daemon, tcp_max_connections=12, tcp_max_per_address=2)
    url = f"tcp://127.0.0.1:{port}"
    clients = [remote_client(tmp_path / f"m{i % 2}", url) for i in range(6)]
    idle: list[Raw] = []
    try:
        for c in clients:
            assert isinstance(c.connect(), p.Welcome)
        register_remote(clients[0], agents, "busy", "m0-box")
        # what has proved nothing yet is still capped per address
        idle = [Raw(port) for _ in range(3)]
        refused = idle[2].read()
        assert isinstance(refused, p.Error) and refused.code == Code.TOO_MANY_CONNECTIONS
        assert "not finished their hello (tcp_max_per_address)" in refused.message
        # one that says hello leaves the pre-hello budget: another may come
        machine, secret = machine_of(tmp_path / "m1")
        assert isinstance(idle[0].hello(machine, secret), p.Welcome)
        late = Raw(port)
        idle.append(late)
        assert isinstance(late.hello(machine, secret), p.Welcome)
        for c in clients:
            assert c.request(p.Status).pid == d.proc.pid
        # and tcp_max_connections still bounds them all
        with d.client() as local:
            assert local.request(p.Status).connections == 6 + 3 + 1
    finally:
        for c in clients:
            c.close()
        for raw in idle:
            raw.close()


def test_a_tls_refusal_says_what_it_may_be(make_daemon, tmp_path, monkeypatch):
    """On TLS the hub can only close a connection it cannot take: the clients said "TLS
    with the hub failed" and nothing more."""
    import asyncio

    cert, key = _self_signed(tmp_path)
    d, port = hub(make_daemon, tls_cert=str(cert), tls_key=str(key), tcp_max_connections=1)
    url = f"tls://127.0.0.1:{port}"
    hint = "it may be full"
    with socket.create_connection(("127.0.0.1", port)):  # holds the one slot
        time.sleep(0.2)
        with pytest.raises(PeersError) as info:
            remote_client(tmp_path / "m1", url, CLAUDE_PEERS_TLS_CA=str(cert)).connect()
        assert info.value.code == Code.UNREACHABLE
        assert hint in info.value.message and "tcp_max_connections" in info.value.message

        async def scenario() -> None:
            c = client.AsyncClient(
                remote_client(tmp_path / "m1", url, CLAUDE_PEERS_TLS_CA=str(cert)).settings,
                timeout=5,
            )
            with pytest.raises(PeersError) as info:
                await c.__aenter__()
            assert info.value.code == Code.UNREACHABLE and hint in info.value.message

        asyncio.run(scenario())
        monkeypatch.setenv("HOME", str(tmp_path / "m1"))  # the hook's machine
        with pytest.raises(wire.WireError) as seen:
            wire.Wire(url, token=TOKEN, cafile=str(cert))
        assert seen.value.code == Code.UNREACHABLE and hint in seen.value.message


def test_a_tcp_hub_with_no_hello_timeout_still_ends_idle_connections(make_daemon):
    """hello_timeout = 0 turned the pre-hello limit off over plain TCP too (TLS fell back
    to 10 s): tcp_max_connections idle sockets locked every hub client out for good."""
    d, port = hub(make_daemon, hello_timeout=0)
    idle = Raw(port, timeout=20)
    try:
        started = time.monotonic()
        refused = idle.read()
        assert isinstance(refused, p.Error) and refused.code == Code.HELLO_REQUIRED
        assert refused.message == "no hello within 10s"
        assert 9 < time.monotonic() - started < 15
        assert idle.closed()
    finally:
        idle.close()


# --------------------------------------------------------------------------- item 7


def _bad_big_frame(size: int = 1024 * 1024 - 64) -> bytes:
    """Valid msgpack that fails validation after a lot of work: a million empty arrays."""
    body = msgspec.msgpack.encode({"t": "send", "id": 1, "x": [[]] * (size - 40)})
    return struct.pack(">I", len(body)) + body


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_unauthenticated_frames_are_refused_before_they_are_read(make_daemon):
    d, port = hub(make_daemon)
    raw = Raw(port)
    try:
        raw.sock.sendall(_bad_big_frame()[:4])  # the header alone is enough to refuse it
        refused = raw.read()
        assert isinstance(refused, p.Error) and refused.code == Code.FRAME_TOO_LARGE
        assert "before the hello" in refused.message
        assert raw.closed()
    finally:
        raw.close()
    # a small first frame that is no valid hello ends the connection too (no second try)
    raw = Raw(port)
    try:
        body = msgspec.msgpack.encode({"t": "hello", "protocol": "one"})
        raw.sock.sendall(struct.pack(">I", len(body)) + body)
        refused = raw.read()
        assert isinstance(refused, p.Error) and refused.code == Code.BAD_REQUEST
        assert raw.closed()
    finally:
        raw.close()


@LINUX
def test_a_bad_big_frame_is_decoded_once(make_daemon, tmp_path):
    """A 1 MiB frame that failed validation was decoded a second time, in full, to find
    its id: ~0.3 s of daemon CPU each. Now the id is read without building the rest."""
    d, port = hub(make_daemon)
    raw = Raw(port)
    try:
        machine, secret = machine_of(tmp_path / "m1")
        assert isinstance(raw.hello(machine, secret), p.Welcome)
        frame = _bad_big_frame()
        before = _cpu(d.proc.pid)
        for _ in range(5):
            raw.sock.sendall(frame)
            err = raw.read()
            assert isinstance(err, p.Error) and err.code == Code.BAD_REQUEST and err.id == 1
        spent = (_cpu(d.proc.pid) - before) / 5
    finally:
        raw.close()
    assert spent < 0.1, f"{spent * 1000:.0f} ms of daemon CPU per bad frame"


def test_a_flood_of_bad_frames_does_not_stall_local_clients(make_daemon):
    d, port = hub(make_daemon, tcp_max_per_address=64, tcp_max_connections=64)
    frame = _bad_big_frame()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), 5) as s:
                    for _ in range(20):
                        s.sendall(frame)
            except OSError:
                pass

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        worst = 0.0
        for _ in range(10):
            started = time.monotonic()
            with d.client(timeout=15) as c:
                c.connect()
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert worst < 2.0, f"a local welcome took {worst:.2f}s during the flood"
    assert d.running


# --------------------------------------------------------------------------- item 10


def _nested(depth: int) -> bytes:
    body = b"\x83\xa1t\xa6status\xa2id\x05\xa1x" + b"\x91" * depth + b"\xc0"
    return struct.pack(">I", len(body)) + body


def test_deeply_nested_msgpack_is_a_bad_frame(daemon, make_daemon):
    from .test_malformed import raw, read_frame

    s = raw(daemon)
    try:
        s.sendall(_nested(100_000))
        err = read_frame(s)
        assert isinstance(err, p.Error) and err.code == Code.BAD_FRAME
        assert "nested too deeply" in err.message
    finally:
        s.close()
    with daemon.client() as c:  # the daemon serves others as before
        assert c.request(p.Status).pid == daemon.proc.pid
    assert "Traceback" not in daemon.log()


def test_deeply_nested_msgpack_before_the_hello_over_tcp(make_daemon):
    d, port = hub(make_daemon)
    raw = Raw(port)
    try:
        raw.sock.sendall(_nested(10_000))  # within the small first-frame limit
        err = raw.read()
        assert isinstance(err, p.Error) and err.code == Code.BAD_FRAME
    finally:
        raw.close()
    with d.client() as c:
        assert c.request(p.Status).pid == d.proc.pid
    assert "Traceback" not in d.log()


def test_an_unauthenticated_loopback_listener_is_flagged(make_daemon, tmp_path):
    from .conftest import run_peers

    port = free_port()
    d = make_daemon(tcp=f"127.0.0.1:{port}", tcp_insecure="1")
    assert "has no token (tcp_insecure)" in d.log()
    with d.client() as c:
        (warning,) = c.request(p.Status).warnings
    assert "every user and process on this machine" in warning
    shown = run_peers(d.env, "status")
    assert shown.code == 0, shown
    assert "warning" in shown.out and "no token" in shown.out


def test_a_hub_with_a_token_has_no_warning(make_daemon):
    d, _ = hub(make_daemon)
    with d.client() as c:
        assert c.request(p.Status).warnings == []


def test_session_registration_for_a_hub_names_this_machine(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    with remote_client(tmp_path / "m1", f"tcp://127.0.0.1:{port}") as a:
        req = session_registration(a.settings, agents.spawn().pid, "codex", cwd="/w")
        assert req.machine_id == machine_of(tmp_path / "m1")[0]
        assert a.call(req).peer.machine_id == req.machine_id


def test_local_clients_never_bind_to_another_machines_session(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    far_agent = agents.spawn()
    with remote_client(tmp_path / "m1", f"tcp://127.0.0.1:{port}") as far:
        req = session_registration(far.settings, far_agent.pid, "claude-code", cwd="/w")
        req.name, req.session_id, req.host = "far", "sess-far", "far-box"
        remote = far.call(req).peer
        with d.client("claude-code") as local:
            with pytest.raises(PeersError) as info:
                local.request(p.Attach, session_id="sess-far")
            assert info.value.code == Code.UNKNOWN_PEER
            # the same process seen from the hub's machine is a session of this machine
            mine = register(local, far_agent.pid, name="near")
            assert mine.id != remote.id and mine.machine_id != remote.machine_id
        assert far.request(p.Whoami).peer.id == remote.id


def test_register_leaves_the_decoded_request_as_it_was(tmp_path):
    """In process: the handler used to write the machine id and host into the request."""
    import asyncio

    from peersd import handlers
    from peersd.config import load
    from peersd.connection import Connection
    from peersd.server import Daemon
    from peersd.store import Store

    settings = load(env={"HOME": str(tmp_path)})
    store = Store(settings.db_path)
    loop = asyncio.new_event_loop()
    try:
        daemon = Daemon(settings, store, loop, socket_path=settings.socket)
        conn = Connection(daemon)
        req = p.Register(id=1, agent_pid=os.getpid(), agent_start=1.0, cwd="/w", host="evil")
        before = msgspec.structs.asdict(req)
        op = handlers.register(daemon, conn, req)
        with store.transaction():
            outcome = op()
        assert msgspec.structs.asdict(req) == before
        peer = outcome.response.peer
        assert (peer.machine_id, peer.host) == (daemon.machine_id, daemon.host)
    finally:
        loop.close()
        store.close()
