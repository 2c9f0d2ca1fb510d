"""A real ``peers dashboard`` process on a free port, talking to the test's real peersd.

Shared by tests/test_dashboard.py (plain HTTP and WebSocket clients) and
tests/test_dashboard_browser.py (headless Chromium).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .conftest import PEERS, DaemonProc, plain_terminal_env


class Dashboard:
    """``peers dashboard --no-open --port 0`` as a subprocess: its URL, token, cookie."""

    def __init__(
        self,
        daemon: DaemonProc,
        cwd: Path,
        *args: str,
        env: dict[str, str] | None = None,
        no_open: bool = True,
    ) -> None:
        self.daemon = daemon
        self.err_path = cwd / f"dashboard-{time.monotonic_ns()}.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*PEERS, "dashboard", *(["--no-open"] if no_open else []), "--port", "0", *args],
                env=plain_terminal_env({**daemon.env, **(env or {})}),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("http"), f"no URL printed: {line!r}\n{self.stderr()}"
        self.url = line
        parts = urlsplit(line)
        self.host = parts.hostname or ""
        self.port = parts.port or 0
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.token = parts.query.removeprefix("token=")
        self.cookie = (
            f"peers_dash_{self.port}="
            + hmac.new(self.token.encode(), b"cookie", hashlib.sha256).hexdigest()
        )
        self.csrf = hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        cookie: bool = True,
        csrf: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = {"Host": f"{self.host}:{self.port}"}
        if cookie:
            sent["Cookie"] = self.cookie
        if csrf and method != "GET":
            sent["X-Peers-CSRF"] = self.csrf
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=sent)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def post(self, action: str, body: Any) -> tuple[int, Any]:
        status, _, data = self.request("POST", f"/api/{action}", body)
        return status, json.loads(data)

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """The first snapshot that says the daemon is up."""
        from .dashboard_ws import snapshot

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dashboard exited:\n{self.stderr()}"
            try:
                last = snapshot(self)
                if last.get("up"):
                    return last
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"dashboard not ready: {last}\n{self.stderr()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"dashboard did not stop on {sig}:\n{self.stderr()}") from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def running(daemon: DaemonProc, tmp_path: Path) -> Iterator[Dashboard]:
    """A ready dashboard for the length of a test (each test file's ``dash`` fixture)."""
    d = Dashboard(daemon, tmp_path)
    d.wait_ready()
    yield d
    d.stop()
