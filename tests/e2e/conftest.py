"""End-to-end fixtures: the real Claude Code, Codex, Gemini CLI, opencode and Copilot CLI
against scripted model stubs.

The CLIs come from npm (``install_clients.sh``, once per cache directory, pinned to the
versions below; Gemini CLI, opencode and Copilot CLI each in its own prefix,
``<cache>/<name>``, with its own fixture, ``gemini_world``, ``opencode_world``,
``copilot_world``, so one install can fail without skipping the others' tests).

Each test gets its own short temporary HOME with a real ``peersd``
(the ``daemon`` fixture of ``tests/conftest.py``), wires the clients with the real
``peers install claude|codex|gemini|opencode|copilot``, points them at a model stub on
127.0.0.1, and runs them in print / exec mode. Nothing leaves the machine.

When a test fails, everything needed to see why is printed with it: each CLI's command,
exit code, stdout and stderr, every request each stub received (abbreviated) and what
it answered, the hook inputs, the daemon log, ``peers-hook.log`` and Claude Code's
debug log.

Environment knobs: ``PEERS_E2E=0`` skips these tests; ``PEERS_E2E_CACHE`` moves the
npm cache directory (default ``<repo>/.e2e-cache``); ``PEERS_E2E_CLAUDE_VERSION`` and
``PEERS_E2E_CODEX_VERSION``, ``PEERS_E2E_GEMINI_VERSION``, ``PEERS_E2E_OPENCODE_VERSION`` and
``PEERS_E2E_COPILOT_VERSION`` try other client versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peersd import protocol as p
from peersd.client import Client
from tests.conftest import Agents, DaemonProc, clean_env, register

from .model_stub import ModelStub

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLAUDE_CODE_VERSION = os.environ.get("PEERS_E2E_CLAUDE_VERSION") or "2.1.328"
CODEX_VERSION = os.environ.get("PEERS_E2E_CODEX_VERSION") or "0.169.0"
GEMINI_VERSION = os.environ.get("PEERS_E2E_GEMINI_VERSION") or "0.61.0"
OPENCODE_VERSION = os.environ.get("PEERS_E2E_OPENCODE_VERSION") or "1.18.33"
COPILOT_VERSION = os.environ.get("PEERS_E2E_COPILOT_VERSION") or "1.0.102"
CACHE = Path(os.environ.get("PEERS_E2E_CACHE") or REPO / ".e2e-cache")
INSTALL_TIMEOUT = 600.0
RUN_TIMEOUT = 90.0
"""Seconds one CLI run may take before it is killed (a run normally takes 2-6 s)."""
TEST_TIMEOUT = int(INSTALL_TIMEOUT + 3 * RUN_TIMEOUT)
SERVER = "claude-peers"
BIN = Path(sys.executable).parent
"""Where ``peers``, ``peers-mcp`` and ``peers-hook`` are (the virtualenv's bin)."""
MESSAGE_ID = re.compile(r"m-[0-9a-f]{6}-[0-9]+")
SCRUB_PREFIXES = (
    "ANTHROPIC_",
    "CLAUDE",
    "CODEX_",
    "OPENAI_",
    "MCP_",
    "GEMINI_",
    "GOOGLE_",
    "OPENCODE",
    "COPILOT_",
    "GH_",
    "GITHUB_",
)
SCRUB_PROXY = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: runs the real agent CLIs from npm (skipped if npm cannot install them)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# --------------------------------------------------------------------------- the CLIs


@dataclass(frozen=True)
class Clients:
    claude: Path
    codex: Path

    @property
    def bin_dir(self) -> Path:
        return self.claude.parent


def _install(args: list[str], what: str) -> list[Path]:
    """Run ``install_clients.sh`` with ``args``; skip (saying why) when it cannot."""
    if os.environ.get("PEERS_E2E") == "0":
        pytest.skip("PEERS_E2E=0: end-to-end tests with the real clients are turned off")
    if shutil.which("flock") is None:
        pytest.skip("flock (util-linux) is needed to install the clients")
    try:
        done = subprocess.run(
            ["bash", str(HERE / "install_clients.sh"), *args],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing {what} from npm took over {INSTALL_TIMEOUT:g} s")
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        key = [x for x in lines if re.search(r"error (code|errno|network)|not installed", x)]
        why = " | ".join((key or lines or ["no output"])[:3])
        pytest.skip(f"cannot install {what} from npm (exit {done.returncode}): {why}")
    if not (BIN / "peers").exists():
        pytest.skip(f"claude-peers is not installed next to {sys.executable} (no {BIN}/peers)")
    return [Path(line) for line in done.stdout.split()]


@pytest.fixture(scope="session")
def clients() -> Clients:
    """The real CLIs, installed from npm into the cache once; skip when that cannot be done."""
    claude, codex = _install(
        [str(CACHE), CLAUDE_CODE_VERSION, CODEX_VERSION],
        f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION} and @openai/codex@{CODEX_VERSION}",
    )
    return Clients(claude=claude, codex=codex)


@pytest.fixture(scope="session")
def gemini_cli() -> Path:
    """The real Gemini CLI, in its own npm prefix under the cache; skip when not installable."""
    (gemini,) = _install(
        ["--gemini", str(CACHE), GEMINI_VERSION], f"@google/gemini-cli@{GEMINI_VERSION}"
    )
    return gemini


@pytest.fixture(scope="session")
def copilot_cli() -> Path:
    """The real GitHub Copilot CLI, in its own npm prefix under the cache."""
    (copilot,) = _install(
        ["--copilot", str(CACHE), COPILOT_VERSION], f"@github/copilot@{COPILOT_VERSION}"
    )
    return copilot


@pytest.fixture(scope="session")
def opencode_cli() -> Path:
    """The real opencode, in its own npm prefix under the cache; skip when not installable."""
    (opencode,) = _install(
        ["--opencode", str(CACHE), OPENCODE_VERSION], f"opencode-ai@{OPENCODE_VERSION}"
    )
    return opencode


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One CLI run: started in its own process group, output kept in files."""

    name: str
    argv: list[str]
    cwd: Path
    out: Path
    err: Path
    proc: subprocess.Popen[bytes]
    timeout: float
    started: float = field(default_factory=time.monotonic)
    returncode: int | None = None
    duration: float = 0.0
    timed_out: bool = False

    def wait(self) -> Run:
        if self.returncode is not None:
            return self
        left = max(0.1, self.started + self.timeout - time.monotonic())
        try:
            self.returncode = self.proc.wait(left)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            self.returncode = self.proc.wait()
        self.duration = time.monotonic() - self.started
        return self

    def kill(self) -> None:
        """Kill the process group this run leads (only our own child's group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def check(self) -> Run:
        self.wait()
        assert not self.timed_out, f"{self.name} did not finish within {self.timeout:g} s"
        assert self.returncode == 0, f"{self.name} exited {self.returncode}"
        return self

    def describe(self) -> str:
        state = (
            "running"
            if self.returncode is None
            else f"exit {self.returncode}"
            + (" (killed: timeout)" if self.timed_out else "")
            + f" after {self.duration:.1f} s"
        )
        return (
            f"== {self.name}: {shlex.join(self.argv)}\n   cwd {self.cwd}; {state}\n"
            f"-- stdout:\n{tail(self.stdout, 8000)}\n-- stderr:\n{tail(self.stderr, 8000)}"
        )

    def result(self) -> dict[str, Any]:
        """Claude Code's ``--output-format json`` result object."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    def events(self) -> list[dict[str, Any]]:
        """Codex's ``exec --json`` events."""
        found = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found


def tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


class Tmux:
    """A private tmux server (its own socket) with one window, for a terminal UI."""

    def __init__(self, name: str, logs: Path) -> None:
        self.name = name
        self.logs = logs
        self.server_pid: int | None = None
        self.pane_pid: int | None = None
        self.last_screen = ""

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=15,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout

    def start(self, argv: list[str], cwd: Path) -> None:
        size = ("-x", "200", "-y", "50")
        self.tmux("new-session", "-d", "-s", "e2e", *size, "-c", str(cwd), shlex.join(argv))
        self.server_pid = int(self.tmux("display-message", "-p", "#{pid}").strip())
        self.pane_pid = int(self.tmux("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip())

    def screen(self) -> str:
        self.last_screen = self.tmux("capture-pane", "-p", "-t", "e2e")
        return self.last_screen

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            assert time.monotonic() < deadline, f"{text!r} never appeared on the screen"
            time.sleep(0.1)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "e2e", "-l", text)
        time.sleep(0.2)
        self.tmux("send-keys", "-t", "e2e", "Enter")

    def close(self) -> None:
        """End the program in the pane, then our tmux server: each by its pid."""
        with contextlib.suppress(Exception):
            self.screen()
        for pid in (self.pane_pid, self.server_pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.pane_pid = self.server_pid = None


# --------------------------------------------------------------------------- the world


class World:
    """One temporary HOME: a real daemon, the real CLIs wired by ``peers install``."""

    def __init__(
        self,
        home: Path,
        daemon: DaemonProc,
        clients: Clients | None,
        agents: Agents,
        gemini: Path | None = None,
        opencode: Path | None = None,
        copilot: Path | None = None,
    ) -> None:
        self.home = home
        self.daemon = daemon
        self._clients = clients
        self.gemini_bin = gemini
        self.opencode_bin = opencode
        self.copilot_bin = copilot
        self.agents = agents
        self.logs = home / "logs"
        self.logs.mkdir()
        self.hook_log = home / "hook-inputs.jsonl"
        self.runs: list[Run] = []
        self.stubs: list[ModelStub] = []
        self.peer_clients: list[Client] = []
        self.cli = daemon.client("cli")
        self.peer_clients.append(self.cli)
        self.installed: dict[str, str] = {}
        self.tmuxes: list[Tmux] = []

    @property
    def clients(self) -> Clients:
        assert self._clients is not None, "this world has no Claude Code / Codex"
        return self._clients

    # ------------------------------------------------------------ environment

    def env(self, **extra: str) -> dict[str, str]:
        """The daemon's environment for a client, minus anything of a real session."""
        env = clean_env(self.home)
        for key in list(env):
            if key.startswith(SCRUB_PREFIXES) or key.lower() in SCRUB_PROXY:
                del env[key]
        bins = [str(x.parent) for x in (self.gemini_bin, self.opencode_bin, self.copilot_bin) if x]
        bins += [str(self._clients.bin_dir)] if self._clients else []
        env["PATH"] = os.pathsep.join([*bins, str(BIN), env.get("PATH", "")])
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.update(extra)
        return env

    def workdir(self, name: str) -> Path:
        """A directory whose basename becomes the session's peer name."""
        path = self.home / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stub(self, stub: ModelStub) -> ModelStub:
        self.stubs.append(stub.start())
        return stub

    def record_hook_command(self) -> str:
        return shlex.join([sys.executable, str(HERE / "record_hook.py"), str(self.hook_log)])

    def hook_inputs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every hook input a recording hook saw (in order), optionally of one event."""
        if not self.hook_log.exists():
            return []
        found = [json.loads(line) for line in self.hook_log.read_text().splitlines() if line]
        return [h for h in found if event is None or h.get("hook_event_name") == event]

    def peers_cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "peers"), *args],
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        self.installed[" ".join(args)] = done.stdout + done.stderr
        assert done.returncode == 0, f"peers {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def start(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
        n = len(self.runs)
        out, err = self.logs / f"{n}-{name}.out", self.logs / f"{n}-{name}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        run = Run(name, argv, cwd, out, err, proc, RUN_TIMEOUT)
        self.runs.append(run)
        return run

    # ------------------------------------------------------------ Claude Code

    def claude_env(self, stub: ModelStub) -> dict[str, str]:
        return self.env(
            ANTHROPIC_BASE_URL=stub.url,
            ANTHROPIC_API_KEY="sk-ant-e2e-dummy-key",
            DISABLE_TELEMETRY="1",
            DISABLE_AUTOUPDATER="1",
            DISABLE_ERROR_REPORTING="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            # The terminal UI would otherwise try to git clone the official plugin
            # marketplace from github.com at startup.
            CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL="1",
        )

    def install_claude(self) -> None:
        """``peers install claude`` (with ``claude`` on PATH: ``claude mcp add``), plus a
        recording hook on every event so tests can see the hook inputs."""
        self.peers_cli("install", "claude")
        settings = self.home / ".claude" / "settings.json"
        data = json.loads(settings.read_text())
        for event in ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"):
            data["hooks"][event].append(
                {"hooks": [{"type": "command", "command": self.record_hook_command()}]}
            )
        settings.write_text(json.dumps(data, indent=2))

    def claude(self, stub: ModelStub, cwd: Path, prompt: str, tools: list[str]) -> Run:
        allowed = ",".join(f"mcp__{SERVER}__{t}" for t in tools)
        argv = [
            str(self.clients.claude),
            "-p",
            prompt,
            "--allowedTools",
            allowed,
            "--output-format",
            "json",
            "--debug",
        ]
        return self.start("claude", argv, cwd, self.claude_env(stub))

    def claude_interactive(self, stub: ModelStub, cwd: Path) -> Tmux:
        """Claude Code's terminal UI in a private tmux server (first-run screens
        answered in ``~/.claude.json``: onboarding done, folder trusted, key approved)."""
        if shutil.which("tmux") is None:
            pytest.skip("tmux is needed to drive an interactive Claude Code session")
        env = self.claude_env(stub)
        key = env["ANTHROPIC_API_KEY"]
        path = self.home / ".claude.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(
            hasCompletedOnboarding=True,
            theme="dark",
            customApiKeyResponses={"approved": [key[-20:]], "rejected": []},
        )
        project = data.setdefault("projects", {}).setdefault(str(cwd), {})
        project.update(hasTrustDialogAccepted=True, hasCompletedProjectOnboarding=True)
        path.write_text(json.dumps(data, indent=2))
        env["TERM"] = "xterm-256color"
        tmux = Tmux(f"cp-e2e-{os.getpid()}-{len(self.tmuxes)}", self.logs)
        self.tmuxes.append(tmux)
        variables = [f"{k}={v}" for k, v in env.items()]
        tmux.start(["env", "-i", *variables, str(self.clients.claude), "--debug"], cwd)
        return tmux

    # ------------------------------------------------------------ Codex

    @property
    def codex_home(self) -> Path:
        return self.home / ".codex"

    def install_codex(self, stub: ModelStub) -> None:
        """A config.toml with the stub as model provider, then ``peers install codex``;
        MCP calls approved (``approval_policy = "never"`` refuses them otherwise)."""
        import tomlkit

        self.codex_home.mkdir(exist_ok=True)
        (self.codex_home / "config.toml").write_text(
            "# written by the e2e tests\n"
            'model = "gpt-e2e-stub"\n'
            'model_provider = "stub"\n'
            'approval_policy = "never"\n'
            'sandbox_mode = "read-only"\n'
            "check_for_update_on_startup = false\n\n"
            "[analytics]\nenabled = false\n\n"
            # Off, or Codex syncs its curated plugins (github.com, chatgpt.com) at startup.
            "[features]\nplugins = false\nremote_plugin = false\napps = false\n\n"
            "[model_providers.stub]\n"
            'name = "scripted stub"\n'
            f'base_url = "{stub.url}/v1"\n'
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n"
        )
        self.peers_cli("install", "codex", env=self.env(CODEX_HOME=str(self.codex_home)))
        path = self.codex_home / "config.toml"
        doc = tomlkit.parse(path.read_text())
        server = doc["mcp_servers"][SERVER]  # type: ignore[index]
        server["default_tools_approval_mode"] = "approve"  # type: ignore[index]
        # codex exec may build its first model request before the server's tools are
        # listed (they appear from the next request on); a required server is waited for.
        server["required"] = True  # type: ignore[index]
        path.write_text(tomlkit.dumps(doc))
        hooks_path = self.codex_home / "hooks.json"
        hooks = json.loads(hooks_path.read_text())
        for event in ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"):
            hooks["hooks"][event].append(
                {"hooks": [{"type": "command", "command": self.record_hook_command()}]}
            )
        hooks_path.write_text(json.dumps(hooks, indent=2))

    def codex(self, cwd: Path, prompt: str) -> Run:
        argv = [
            str(self.clients.codex),
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-hook-trust",
            "--json",
            prompt,
        ]
        return self.start("codex", argv, cwd, self.env(CODEX_HOME=str(self.codex_home)))

    # ------------------------------------------------------------ Gemini CLI

    def install_gemini(self) -> None:
        """``peers install gemini``, then what a headless run needs in the same
        ``~/.gemini/settings.json``: the API-key auth (``GOOGLE_GEMINI_BASE_URL`` alone
        selects a "gateway" auth that ``gemini -p`` refuses), and a recording hook on
        every event so tests can see the hook inputs."""
        self.peers_cli("install", "gemini")
        path = self.home / ".gemini" / "settings.json"
        data = json.loads(path.read_text())
        data.setdefault("security", {})["auth"] = {"selectedType": "gemini-api-key"}
        for event in ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent"):
            data["hooks"][event].append(
                {"hooks": [{"type": "command", "command": self.record_hook_command()}]}
            )
        path.write_text(json.dumps(data, indent=2))

    def gemini(self, stub: ModelStub, cwd: Path, prompt: str) -> Run:
        """``gemini -p`` against the stub, the folder trusted, every tool allowed."""
        assert self.gemini_bin is not None
        argv = [str(self.gemini_bin), "-p", prompt, "-m", "gemini-2.5-flash", "--yolo"]
        env = self.env(
            GOOGLE_GEMINI_BASE_URL=stub.url,
            GEMINI_API_KEY="e2e-dummy-key",
            GEMINI_CLI_TRUST_WORKSPACE="true",
        )
        return self.start("gemini", argv, cwd, env)

    # ------------------------------------------------------------ Copilot CLI

    def install_copilot(self) -> None:
        """``peers install copilot``, and a recording hook on the same two events."""
        self.peers_cli("install", "copilot")
        record = {"type": "command", "bash": self.record_hook_command(), "timeoutSec": 10}
        hooks = {"version": 1, "hooks": {"postToolUse": [record], "agentStop": [record]}}
        path = self.home / ".copilot" / "hooks" / "record.json"
        path.write_text(json.dumps(hooks, indent=2))

    def copilot(self, stub: ModelStub, cwd: Path, prompt: str) -> Run:
        """``copilot -p`` against the stub: offline, bring-your-own-model (an OpenAI Chat
        Completions endpoint), every tool allowed, no GitHub sign-in."""
        assert self.copilot_bin is not None
        argv = [str(self.copilot_bin), "-p", prompt, "--allow-all-tools"]
        env = self.env(
            COPILOT_OFFLINE="true",
            COPILOT_PROVIDER_BASE_URL=f"{stub.url}/v1",
            COPILOT_PROVIDER_API_KEY="e2e-dummy-key",
            COPILOT_MODEL="stub-model",
        )
        return self.start("copilot", argv, cwd, env)

    # ------------------------------------------------------------ opencode

    def install_opencode(self, stub: ModelStub) -> None:
        """``peers install opencode``, then the stub as an OpenAI-compatible provider (the
        one model, also for titles) in the same ``~/.config/opencode/opencode.json``."""
        self.peers_cli("install", "opencode", env=self.opencode_env())
        path = self.home / ".config" / "opencode" / "opencode.json"
        data = json.loads(path.read_text())
        data["provider"] = {
            "stub": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Stub",
                "options": {"baseURL": f"{stub.url}/v1", "apiKey": "e2e-dummy-key"},
                "models": {"stub-model": {"name": "Stub", "tool_call": True}},
            }
        }
        data.update(model="stub/stub-model", small_model="stub/stub-model", autoupdate=False)
        data["share"] = "disabled"
        path.write_text(json.dumps(data, indent=2))

    def opencode(self, cwd: Path, prompt: str) -> Run:
        """``opencode run`` (one prompt, then exit) against the stub."""
        assert self.opencode_bin is not None
        argv = [str(self.opencode_bin), "run", prompt]
        # opencode takes its directory from $PWD (inherited here), not from its cwd
        return self.start("opencode", argv, cwd, {**self.opencode_env(), "PWD": str(cwd)})

    def opencode_serve(self, cwd: Path) -> tuple[Run, str]:
        """``opencode serve`` (a long-lived server, as behind the TUI) on a free port; its
        URL once it answers."""
        assert self.opencode_bin is not None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [str(self.opencode_bin), "serve", "--hostname", "127.0.0.1", "--port", str(port)]
        run = self.start("opencode", argv, cwd, {**self.opencode_env(), "PWD": str(cwd)})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/session", timeout=5):
                    return run, url
            except OSError:
                if run.proc.poll() is not None or time.monotonic() > deadline:
                    run.kill()
                    run.wait()
                    raise AssertionError(
                        f"opencode serve did not answer:\n{run.describe()}"
                    ) from None
                time.sleep(0.2)

    def opencode_env(self) -> dict[str, str]:
        """Config, data, cache and state under this HOME, whatever XDG says outside."""
        return self.env(
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_STATE_HOME=str(self.home / ".local" / "state"),
            OPENCODE_DISABLE_MODELS_FETCH="1",
            OPENCODE_DISABLE_AUTOUPDATE="1",
        )

    # ------------------------------------------------------------ peers and mail

    def fake_peer(self, name: str, client: str = "codex", cwd: str = "/tmp") -> Client:
        """A registered peer whose agent is a sleeping process (a stand-in sender)."""
        c = self.daemon.client(client)
        self.peer_clients.append(c)
        register(c, self.agents.spawn().pid, client, cwd=cwd, name=name)
        return c

    def gone_peer(self, name: str, client: str) -> None:
        """A peer that held ``name`` and has gone: mail to ``name`` waits for its successor."""
        c = self.daemon.client(client)
        proc = self.agents.spawn()
        register(c, proc.pid, client, name=name)
        c.close()
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while name not in self.peer_names(include_gone=True, state="gone"):
            assert time.monotonic() < deadline, f"{name} was not marked gone"
            self.cli.request(p.Sweep)
            time.sleep(0.05)

    def peer_names(self, include_gone: bool = False, state: str = "active") -> list[str]:
        peers = self.cli.request(p.ListPeers, scope="machine", include_gone=include_gone).peers
        return [x.name for x in peers if x.state == state]

    def wait_peer(
        self, name: str, client: str, run: Run | None = None, timeout: float = 30.0
    ) -> p.Peer:
        """Until the session named ``name`` has registered (its MCP server is up);
        given the ``run`` of that session, fail at once if it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            for peer in self.cli.request(p.ListPeers, scope="machine").peers:
                if peer.name == name and peer.client == client and peer.state == "active":
                    return peer
            if run is not None and run.proc.poll() is not None:
                run.wait()
                raise AssertionError(
                    f"{run.name} ended (exit {run.returncode}) before {name} registered"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no active {client} peer named {name} after {timeout:g} s")
            time.sleep(0.05)

    def status(self, *ids: str) -> dict[str, p.MessageStatusItem]:
        items = self.cli.request(p.MessageStatus, message_ids=list(ids)).items
        return {i.message_id: i for i in items}

    def history(self, peer: str) -> list[p.Message]:
        return self.cli.request(p.History, peer=peer, mine=False, limit=100).messages

    # ------------------------------------------------------------ diagnostics

    def diagnostics(self) -> str:
        parts = [f"##### e2e diagnostics (HOME {self.home})"]
        parts += [f"== peers {args}:\n{text.strip()}" for args, text in self.installed.items()]
        parts += [run.describe() for run in self.runs]
        parts += [f"== tmux {t.name} screen:\n{t.last_screen}" for t in self.tmuxes]
        parts += [stub.dump() for stub in self.stubs]
        parts.append(
            "== hook inputs (recording hook):\n"
            + "\n".join(json.dumps(h)[:600] for h in self.hook_inputs())
        )
        parts.append("== peersd log:\n" + tail(self.daemon.log(), 6000))
        hook_log = self.daemon.settings.run_dir / "peers-hook.log"
        if hook_log.exists():
            parts.append("== peers-hook.log:\n" + tail(hook_log.read_text(errors="replace"), 4000))
        debug = self.home / ".claude" / "debug"
        for path in sorted(debug.glob("*.txt")) if debug.exists() else []:
            interesting = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if re.search(r"MCP|Hook|hook|API|ERROR|WARN|engine", line)
            ]
            parts.append(
                f"== Claude Code debug log {path.name}:\n" + tail("\n".join(interesting), 8000)
            )
        return "\n\n".join(parts)

    def close(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.kill()
                run.proc.wait()
        for tmux in self.tmuxes:
            tmux.close()
        for n, stub in enumerate(self.stubs):
            stub.stop()
            # Kept with the HOME when KEEP_HOME is set: every request body, in full.
            with open(self.logs / f"stub-{n}-requests.json", "w") as f:
                json.dump(
                    [{"path": r.path, "answer": r.answer, "body": r.body} for r in stub.requests],
                    f,
                    indent=1,
                )
        for c in self.peer_clients:
            c.close()


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    home: Path,
    daemon: DaemonProc,
    clients: Clients,
    agents: Agents,
) -> Iterator[World]:
    yield from _world(request, World(home, daemon, clients, agents))


@pytest.fixture
def gemini_world(
    request: pytest.FixtureRequest,
    home: Path,
    daemon: DaemonProc,
    gemini_cli: Path,
    agents: Agents,
) -> Iterator[World]:
    """A world with only the Gemini CLI (it needs neither Claude Code nor Codex)."""
    yield from _world(request, World(home, daemon, None, agents, gemini=gemini_cli))


@pytest.fixture
def copilot_world(
    request: pytest.FixtureRequest,
    home: Path,
    daemon: DaemonProc,
    copilot_cli: Path,
    agents: Agents,
) -> Iterator[World]:
    """A world with only GitHub Copilot CLI."""
    yield from _world(request, World(home, daemon, None, agents, copilot=copilot_cli))


@pytest.fixture
def opencode_world(
    request: pytest.FixtureRequest,
    home: Path,
    daemon: DaemonProc,
    opencode_cli: Path,
    agents: Agents,
) -> Iterator[World]:
    """A world with only opencode."""
    yield from _world(request, World(home, daemon, None, agents, opencode=opencode_cli))


def _world(request: pytest.FixtureRequest, w: World) -> Iterator[World]:
    try:
        yield w
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            # Printed in teardown: pytest shows it under "Captured stdout teardown".
            print(w.diagnostics())
        w.close()


def message_ids(text: str) -> list[str]:
    return MESSAGE_ID.findall(text)
