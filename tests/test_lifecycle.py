"""The daemon as a process: restarts, crashes, single instance, sockets, permissions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peersd import protocol as p
from peersd.errors import PeersError

from .conftest import PYTHON, clean_env, register


def test_sigterm_exits_zero_and_mail_survives_restart(daemon, agents):
    agent_a, agent_b = agents.spawn(), agents.spawn()
    with daemon.client() as ca, daemon.client() as cb:
        a = register(ca, agent_a.pid, name="a")
        b = register(cb, agent_b.pid, name="b")
        cb.request(p.SetSummary, summary="still here")
        mid = ca.request(p.Send, to="b", text="survive the restart").message_id
    assert daemon.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in daemon.log()
    assert not daemon.settings.socket_path.exists()
    daemon.start()
    with daemon.client() as ca, daemon.client() as cb:
        again_b = register(cb, agent_b.pid)
        assert (again_b.id, again_b.name, again_b.summary) == (b.id, "b", "still here")
        (m,) = cb.request(p.Claim).messages
        assert (m.id, m.text, m.sender) == (mid, "survive the restart", a.id)


def test_sigint_also_stops_cleanly(daemon):
    assert daemon.stop(signal.SIGINT) == 0
    assert "stopped cleanly" in daemon.log()


def test_shutdown_request(daemon):
    with daemon.client() as c:
        c.request(p.Shutdown)
    assert daemon.proc.wait(10) == 0


def test_kill9_during_sends_loses_no_acknowledged_message(daemon, agents):
    agent_a, agent_b = agents.spawn(), agents.spawn()
    with daemon.client() as c:
        register(c, agent_a.pid, name="a")
    with daemon.client() as c:
        register(c, agent_b.pid, name="b")
    returned: list[str] = []
    stop = threading.Event()

    def sender(n: int) -> None:
        with daemon.client(timeout=5) as c:
            register(c, agent_a.pid)
            i = 0
            while not stop.is_set():
                try:
                    returned.append(c.request(p.Send, to="b", text=f"{n}:{i}").message_id)
                except PeersError:
                    return
                i += 1

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    daemon.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(returned) > 100, "the senders barely ran; the test proves nothing"
    daemon.start()
    with daemon.client() as c:
        register(c, agent_b.pid)
        items = c.request(p.MessageStatus, message_ids=returned[-1000:]).items
        assert all(i.found for i in items)
        got: list[str] = []
        while True:
            batch = c.request(p.Claim, limit=1000).messages
            if not batch:
                break
            got += [m.id for m in batch]
            c.request(p.Ack, message_ids=[m.id for m in batch], via="cli")
    assert len(got) == len(set(got)), "a message was stored twice"
    missing = set(returned) - set(got)
    assert not missing, f"{len(missing)} acknowledged messages were lost"


def test_second_daemon_refuses_to_start(daemon):
    second = subprocess.run(
        [PYTHON, "-m", "peersd"], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 3
    assert "already running" in second.stderr
    with daemon.client() as c:  # the first one is unharmed
        c.request(p.Status)


def test_stale_socket_file_is_recovered(make_daemon, home):
    d = make_daemon(start=False)
    run_dir = d.settings.run_dir
    run_dir.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(d.settings.socket_path))
    stale.close()  # the file stays, nothing listens: what a crashed daemon leaves
    assert d.settings.socket_path.exists()
    d.start()
    assert "removing stale socket" in d.log()


def test_refuses_to_replace_a_file_that_is_not_a_socket(make_daemon):
    d = make_daemon(start=False)
    d.settings.run_dir.mkdir(parents=True, mode=0o700)
    d.settings.socket_path.write_text("precious")
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert "not a socket" in d.log()
    assert d.settings.socket_path.read_text() == "precious"


def test_refuses_a_run_directory_owned_by_someone_else(make_daemon):
    d = make_daemon(start=False)
    d.settings.run_dir.mkdir(parents=True)
    os.chown(d.settings.run_dir, 65534, 65534)
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert "owned by uid 65534" in d.log()


def test_refuses_a_run_directory_others_can_write(make_daemon, home):
    """Was: such a directory was made 0700 and used, so a lock file another user had
    planted there as a link to a file of ours was followed: the file was truncated to
    our pid (and root, with the socket right in /tmp, made /tmp itself 0700)."""
    d = make_daemon(start=False)
    run = d.settings.run_dir
    run.mkdir(parents=True)
    run.chmod(0o1777)
    victim = home / "bashrc"
    victim.write_text("precious\n")
    os.symlink(victim, d.settings.lock_path)
    if os.getuid() == 0:
        os.lchown(d.settings.lock_path, 65534, 65534)
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert f"directory {run} can be written by other users (mode 1777)" in d.log()
    assert "CLAUDE_PEERS_SOCKET" in d.log() and "Traceback" not in d.log()
    assert victim.read_text() == "precious\n"
    assert run.stat().st_mode & 0o7777 == 0o1777  # not changed behind its owner's back


def test_corrupt_database_gives_a_clear_error(make_daemon):
    d = make_daemon(start=False)
    d.settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    d.settings.db_path.write_bytes(b"this is not a database at all " * 200)
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert "not a SQLite database" in d.log() or "corrupt" in d.log()


def test_files_are_owner_only(daemon):
    s = daemon.settings
    assert (s.run_dir.stat().st_mode & 0o777) == 0o700
    assert (s.socket_path.stat().st_mode & 0o777) == 0o600
    assert (s.db_path.stat().st_mode & 0o777) == 0o600


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs /usr/bin/python3")
def test_other_uid_is_refused(daemon):
    # Open the file permissions up so only the daemon's own uid check stands in the way.
    for path in (daemon.home, daemon.home / ".claude", daemon.settings.run_dir):
        os.chmod(path, 0o755)
    os.chmod(daemon.settings.socket_path, 0o666)
    hello = p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, client_version="x"))
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(bytes.fromhex(sys.argv[2]))\n"
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "print(data.hex())\n"
    )
    # The system interpreter: the test's own may sit under a directory uid 65534 cannot read.
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", probe, str(daemon.settings.socket_path), hello.hex()],
        user=65534,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    body = bytes.fromhex(done.stdout.strip())[4:]
    reply = p.server_decoder.decode(body)
    assert isinstance(reply, p.Error) and reply.code == "forbidden", reply
    assert "refused connection from uid 65534" in daemon.log()


def test_two_clients_auto_starting_at_once_start_one_daemon(home):
    env = clean_env(home)
    script = (
        "from peersd.client import Client\n"
        "from peersd import protocol as p\n"
        "with Client() as c: print(c.request(p.Status).pid)\n"
    )
    procs = [
        subprocess.Popen([PYTHON, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    pids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(pids) == 1, pids
    pid = int(pids.pop())
    try:
        lock_holder = (home / ".claude" / "run" / "claude-peers.sock.lock").read_text().strip()
        assert int(lock_holder) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)


def test_adopts_a_socket_passed_like_systemd_and_leaves_it(home):
    """LISTEN_PID/LISTEN_FDS as sd_listen_fds defines them, set up by an exec wrapper."""
    env = clean_env(home)
    sock_path = home / ".claude" / "run" / "claude-peers.sock"
    sock_path.parent.mkdir(parents=True, mode=0o700)
    wrapper = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(16)\n"
        "if s.fileno() != 3:\n"
        "    os.dup2(s.fileno(), 3)\n"
        "os.set_inheritable(3, True)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'peersd'])\n"
    )
    proc = subprocess.Popen(
        [PYTHON, "-c", wrapper, str(sock_path)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        from peersd.client import Client
        from peersd.config import load

        deadline = time.monotonic() + 15
        while True:
            try:
                with Client(load(env=env), autostart=False) as c:
                    st = c.request(p.Status)
                break
            except PeersError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert st.adopted_socket is True and st.supervisor == "systemd"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "adopted socket from systemd" in stderr
    assert sock_path.exists(), "an adopted socket belongs to the supervisor: never unlink it"


def test_async_client_reconnects_and_keeps_identity(daemon, agents):
    import asyncio

    from peersd.client import AsyncClient, session_registration

    agent = agents.spawn()

    async def scenario() -> None:
        reconnected = asyncio.Event()
        seen: list[p.Peer] = []

        async def on_reconnect() -> None:
            # A request from the callback, as peers-mcp makes (found in review: its answer
            # was never read, because the reader waited for the callback to return).
            seen.append((await c.request(p.Whoami)).peer)
            reconnected.set()

        async with AsyncClient(
            daemon.settings, autostart=False, timeout=10, on_reconnect=on_reconnect
        ) as c:
            req = session_registration(daemon.settings, agent.pid, "claude-code", cwd="/tmp")
            req.name = "steady"
            peer = await c.bind(req)
            await c.subscribe(["mail"])
            # many requests in flight on one connection
            results = await asyncio.gather(*(c.request(p.Whoami) for _ in range(50)))
            assert {r.peer.id for r in results} == {peer.id}
            await asyncio.to_thread(daemon.stop)
            await asyncio.to_thread(daemon.start)
            await asyncio.wait_for(reconnected.wait(), 15)
            assert c.peer is not None and c.peer.id == peer.id
            assert [x.id for x in seen] == [peer.id]
            me = await c.request(p.Whoami)
            assert (me.peer.id, me.peer.name) == (peer.id, "steady")
            # subscriptions are replayed: mail pushed after the restart arrives
            with daemon.client() as other:
                register(other, agents.spawn().pid, name="other")
                mid = other.request(p.Send, to="steady", text="after restart").message_id
            while True:
                ev = await c.next_event(5)
                assert ev is not None, "no mail event after reconnect"
                if isinstance(ev, p.MailEvent):
                    assert ev.message_id == mid
                    break

    asyncio.run(scenario())


def test_config_error_exits_2(home):
    env = clean_env(home, CLAUDE_PEERS_LEASE_SECONDS="soon")
    done = subprocess.run(
        [PYTHON, "-m", "peersd"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "lease_seconds" in done.stderr and "CLAUDE_PEERS_LEASE_SECONDS" in done.stderr


def test_version_flag():
    done = subprocess.run(
        [sys.executable, "-m", "peersd", "--version"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout.startswith("peersd ")


def test_database_is_locked_to_the_daemon(daemon):
    import apsw

    conn = apsw.Connection(str(daemon.settings.db_path))
    conn.set_busy_timeout(0)
    with pytest.raises(apsw.BusyError):
        conn.execute("SELECT count(*) FROM messages").fetchall()
    conn.close()


def _clean_stop(log: str) -> None:
    assert "stopped cleanly" in log, log
    for bad in ("Traceback", "was destroyed but it is pending", "Exception ignored", "Error"):
        assert bad not in log, log


def test_a_stop_while_a_notifier_runs_ends_and_reaps_it(make_daemon, agents, tmp_path):
    """Tasks belong to the daemon's task group: on stop the notification task is cancelled
    and awaited (it kills and reaps its notifier) before the store closes."""
    folder = tmp_path / "bin"
    folder.mkdir()
    pidfile = tmp_path / "notifier.pid"
    for name in ("notify-send", "osascript"):
        script = folder / name
        script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
        script.chmod(0o755)
    daemon = make_daemon(start=False, sweep_interval=0.1, escalate_after=0.2)
    daemon.env["PATH"] = f"{folder}:{os.environ['PATH']}"
    daemon.start()
    with daemon.client() as ca, daemon.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        ca.request(p.Send, to="b", text="nobody reads this")
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the notifier never ran"
        time.sleep(0.05)
    notifier = int(pidfile.read_text())
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    _clean_stop(daemon.log())
    state = Path(f"/proc/{notifier}/stat")
    if state.exists():  # only a zombie, reparented, may be left for a moment
        assert state.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_stop_while_a_sweep_runs_exits_cleanly(daemon, agents):
    """A sweep still checking processes in its thread when the stop comes is cancelled and
    awaited; the daemon exits 0 with nothing written after the store closed."""
    dead = agents.spawn()
    with daemon.client("claude-code") as c:
        peer = register(c, dead.pid, name="dead")
    dead.kill()
    dead.wait()
    with daemon.client() as c:
        c.connect()
        assert c.sock is not None
        # One write: the sweep starts its check, then the shutdown is committed.
        c.sock.sendall(p.encode(p.Sweep(id=1)) + p.encode(p.Shutdown(id=2)))
        assert daemon.proc is not None
        assert daemon.proc.wait(10) == 0
    _clean_stop(daemon.log())
    daemon.start()
    with daemon.client() as c:
        # the sweep's marking was cancelled or committed whole: never half
        state = {x.id: x.state for x in c.request(p.ListPeers, include_gone=True).peers}
        assert state[peer.id] in ("active", "gone")
        assert c.request(p.Sweep).gone in ([], [peer.id])


SLOW_LISTENER = """
import asyncio, sys
from peersd import lifecycle
from peersd.config import load

class SlowLoop(asyncio.SelectorEventLoop):
    '''asyncio's own loop (peersd's fallback without uvloop), slow to make the local
    listener: the TCP one already accepts meanwhile.'''

    async def create_unix_server(self, *args, **kwargs):
        await asyncio.sleep(float(sys.argv[1]))
        return await super().create_unix_server(*args, **kwargs)

lifecycle.setup_logging("info")
with asyncio.Runner(loop_factory=SlowLoop) as runner:
    sys.exit(runner.run(lifecycle.serve(load())))
"""


def test_a_tls_client_accepted_while_the_daemon_starts_gets_its_handshake(home, tmp_path):
    """The task group was entered after both listeners were made: with asyncio's own loop a
    TLS connection accepted in between called Daemon.spawn, which raised in
    connection_made, and the client's handshake never started (it timed out)."""
    from peersd.client import Client
    from peersd.config import load

    from .test_hub import TOKEN, _self_signed, free_port, remote_client

    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = clean_env(
        home,
        CLAUDE_PEERS_TCP=f"127.0.0.1:{port}",
        CLAUDE_PEERS_TOKEN=TOKEN,
        CLAUDE_PEERS_TLS_CERT=str(cert),
        CLAUDE_PEERS_TLS_KEY=str(key),
        CLAUDE_PEERS_HELLO_TIMEOUT="3",
    )
    log = tmp_path / "peersd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PYTHON, "-c", SLOW_LISTENER, "2"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while True:  # the TCP listener is up; the local one comes 2 s later
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
        url = f"tls://127.0.0.1:{port}"
        with remote_client(tmp_path / "m1", url, CLAUDE_PEERS_TLS_CA=str(cert)) as c:
            assert c.request(p.Status).pid == proc.pid
        # then the local socket answers too, and the daemon stops cleanly
        deadline = time.monotonic() + 15
        while True:
            try:
                with Client(load(env=env), autostart=False, timeout=5) as local:
                    local.request(p.Shutdown)
                break
            except PeersError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and "task group is not running" not in text, text


def test_a_listener_that_cannot_be_made_is_a_clear_startup_error(make_daemon):
    """Listeners are made inside the task group now: a refusal there still ends the daemon
    with its own message and exit 1 (not an ExceptionGroup traceback)."""
    from .test_hub import TOKEN

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = make_daemon(start=False, tcp=f"127.0.0.1:{port}", token=TOKEN)
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(15) == 1, d.log()
    assert f"cannot listen on 127.0.0.1:{port}" in d.log()
    assert "Traceback" not in d.log() and "ExceptionGroup" not in d.log()
    assert not d.settings.socket_path.exists()
