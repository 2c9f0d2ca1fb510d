"""Shared fixtures: a real peersd on a socket in a temporary HOME, real agent processes.

Nothing of ours is mocked. ``daemon`` starts ``python -m peersd`` as a subprocess with
its own HOME, so socket, database and machine id all live in a throwaway directory;
``agent`` starts a real process to stand in for a Claude Code or Codex session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.config import Settings, isolated_env, load

PYTHON = sys.executable


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    return isolated_env(home, extra)


# --------------------------------------------------------------------------- the peers CLI

PEERS = [sys.executable, "-m", "peers_cli.app"]
_NO_TTY_HINTS = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


class Run:
    """What one ``peers`` invocation did."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code = done.returncode
        self.out = done.stdout
        self.err = done.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}>"


def plain_terminal_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """No colour or terminal-size hints: the CLI's output is compared as plain text."""
    env = {k: v for k, v in env.items() if k not in _NO_TTY_HINTS}
    env.update(extra)
    return env


def run_peers(
    env: dict[str, str],
    *args: str | bytes,
    input: str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 30,
) -> Run:
    done = subprocess.run(
        [*PEERS, *args],
        env=plain_terminal_env(env),
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return Run(done)


@pytest.fixture
def agent_bin(tmp_path: Path) -> Path:
    """A folder with ``claude`` and ``codex``: links to Python, so a process started as
    one of them is recognised as that agent by its name."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("claude", "codex"):
        os.symlink(sys.executable, folder / name)
    return folder


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short temporary HOME (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    for key in list(os.environ):
        if key.startswith("CLAUDE_PEERS_") or key in ("CLAUDE_CODE_SESSION_ID",):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(path))
    yield path
    if os.environ.get("KEEP_HOME") is None:
        shutil.rmtree(path, ignore_errors=True)


class DaemonProc:
    """A real peersd subprocess bound to ``home``."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = clean_env(home, **env)
        self.settings: Settings = load(env=self.env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / f"peersd-{int(time.time() * 1000)}.log"
        self.logs: list[Path] = []

    def start(self, wait: bool = True) -> DaemonProc:
        self.log_path = self.home / f"peersd-{len(self.logs)}.log"
        self.logs.append(self.log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "peersd"],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"peersd exited {self.proc.returncode}:\n{self.log()}")
            try:
                with self.client(autostart=False) as c:
                    c.request(p.Status)
                return
            except Exception:
                time.sleep(0.02)
        raise AssertionError(f"peersd did not answer within {timeout}s:\n{self.log()}")

    def client(self, kind: str = "cli", autostart: bool = False, timeout: float = 10) -> Client:
        return Client(self.settings, kind=kind, autostart=autostart, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"peersd did not stop on signal {sig}:\n{self.log()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def make_daemon(home: Path) -> Iterator[Callable[..., DaemonProc]]:
    started: list[DaemonProc] = []

    def make(start: bool = True, **env: str) -> DaemonProc:
        d = DaemonProc(home, {f"CLAUDE_PEERS_{k.upper()}": str(v) for k, v in env.items()})
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        if d.running:
            d.stop()


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProc]) -> DaemonProc:
    return make_daemon()


class Agents:
    """Real processes standing in for agent sessions (Claude Code, Codex)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [PYTHON, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


@pytest.fixture
def agents() -> Iterator[Agents]:
    a = Agents()
    yield a
    a.close()


def register(
    client: Client,
    agent_pid: int,
    kind: str = "claude-code",
    cwd: str = "/tmp",
    **fields: object,
) -> p.Peer:
    req = session_registration(client.settings, agent_pid, kind, cwd=cwd, **fields)  # type: ignore[arg-type]
    return client.call(req).peer


@pytest.fixture
def pair(daemon: DaemonProc, agents: Agents) -> Iterator[tuple[Client, p.Peer, Client, p.Peer]]:
    """Two registered peers, ``alpha`` and ``beta``, each on its own connection."""
    ca, cb = daemon.client("claude-code"), daemon.client("codex")
    a = register(ca, agents.spawn().pid, "claude-code", name="alpha")
    b = register(cb, agents.spawn().pid, "codex", name="beta")
    yield ca, a, cb, b
    ca.close()
    cb.close()
