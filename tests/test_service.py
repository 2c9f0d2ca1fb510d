"""peersd as a service: systemd socket activation, the unit files, the launchd agent,
``peers install|uninstall service``, and clients leaving a supervised socket alone.

Socket activation is real (``systemd-socket-activate`` hands peersd a listening socket
exactly as systemd does). ``systemctl`` and ``launchctl`` are fakes on PATH that record
their arguments, because a test cannot own the user's service manager; the fake
``systemctl`` links and unlinks ``sockets.target.wants`` like ``enable``/``disable`` do.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from peers_cli import service
from peersd import protocol as p
from peersd.autostart import installed_supervisor
from peersd.client import Client
from peersd.config import load
from peersd.errors import DaemonUnreachable
from peersd.lifecycle import _supervisor

from .conftest import PYTHON, Agents, DaemonProc, clean_env, register

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
PEERS = [PYTHON, "-m", "peers_cli.app"]
ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")
UNITS = ("claude-peers.socket", "claude-peers.service")

FAKE_SYSTEMCTL = r"""#!/bin/sh
# Records its arguments; enable/disable link like systemctl does; FAIL makes it fail.
printf '%s\n' "$*" >> "$FAKE_LOG"
if [ -n "$FAKE_FAIL" ]; then
    echo "Failed to connect to bus: No medium found" >&2
    exit 1
fi
dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
case "$2" in
    enable) mkdir -p "$dir/sockets.target.wants"
            ln -sf "../claude-peers.socket" "$dir/sockets.target.wants/claude-peers.socket" ;;
    disable) rm -f "$dir/sockets.target.wants/claude-peers.socket" ;;
esac
exit 0
"""

FAKE_LAUNCHCTL = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$1" in
    print) exit 113 ;;
    bootstrap)
        if [ -n "$FAKE_FAIL" ]; then
            echo "Bootstrap failed: 5: Input/output error" >&2
            exit 5
        fi ;;
esac
exit 0
"""


@pytest.fixture
def fake_bin(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with fake systemctl and launchctl, first on PATH; calls go to calls.log."""
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    bin_dir = home / "fakebin"
    bin_dir.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("launchctl", FAKE_LAUNCHCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_LOG", str(home / "calls.log"))
    return bin_dir


def calls(home: Path) -> list[str]:
    log = home / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def peers_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PEERS, *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = clean_env(home)
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra)
    return env


def unit_dir(home: Path) -> Path:
    return home / ".config" / "systemd" / "user"


# --------------------------------------------------------------------------- activation


@pytest.mark.skipif(
    ACTIVATE is None,
    reason="systemd-socket-activate is not installed (Debian package `systemd`; "
    ".ci/run installs it when it runs as root)",
)
def test_socket_activation_starts_on_first_connection_and_leaves_the_socket(
    home: Path, agents: Agents
) -> None:
    sock = home / ".claude" / "run" / "claude-peers.sock"
    sock.parent.mkdir(parents=True, mode=0o700)
    log = home / "activate.log"
    # systemd-socket-activate passes only LISTEN_* and -E variables on, like systemd.
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                ACTIVATE,  # type: ignore[list-item]
                "--listen",
                str(sock),
                "--fdname=claude-peers",
                f"--setenv=HOME={home}",
                f"--setenv=CLAUDE_PEERS_SOCKET={sock}",
                PYTHON,
                "-m",
                "peersd",
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        # Listening, but no daemon yet: the activator has not exec'd anything.
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(ACTIVATE).resolve()
        settings = load(env=clean_env(home))
        with Client(settings, autostart=False, timeout=15) as c:
            st = c.request(p.Status)
            assert st.supervisor == "systemd" and st.adopted_socket is True
            assert st.pid == proc.pid  # the activator exec'd peersd in its place
            assert st.socket == str(sock)
            a = register(c, agents.spawn().pid, name="a")
        with Client(settings, autostart=False) as c:
            register(c, agents.spawn().pid, name="b")
            with Client(settings, autostart=False) as ca:
                register(ca, a.agent_pid)
                mid = ca.request(p.Send, to="b", text="via systemd's socket").message_id
            (m,) = c.request(p.Claim).messages
            assert (m.id, m.text) == (mid, "via systemd's socket")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "adopted socket from systemd" in text and "stopped cleanly" in text, text
    assert sock.exists(), "the socket belongs to systemd: peersd must not remove it"


# --------------------------------------------------------------------------- unit files


def test_packaging_files_are_what_the_installer_writes() -> None:
    for rel, text in service.packaging_files().items():
        path = PACKAGING / rel
        assert path.read_text() == text, (
            f"{path} is out of date; regenerate with: python -c 'from pathlib import Path; "
            "from peers_cli.service import packaging_files; "
            '[Path("packaging", k).write_text(v) for k, v in packaging_files().items()]\''
        )
    socket_unit = (PACKAGING / "systemd/claude-peers.socket").read_text()
    for line in (
        "ListenStream=%h/.claude/run/claude-peers.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
        "FileDescriptorName=claude-peers",
    ):
        assert line in socket_unit.splitlines()
    unit = (PACKAGING / "systemd/claude-peers.service").read_text().splitlines()
    for line in (
        "ExecStart=@PEERSD@",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ReadWritePaths=%h/.claude -%h/.codex",
        "StandardError=journal",
    ):
        assert line in unit
    assert "PrivateUsers=yes" not in unit


def _analyze(home: Path, paths: list[Path]) -> None:
    run_dir = home / "xdg-run"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    # --user needs a runtime directory, not a running user manager; %h is this HOME.
    env = dict(cli_env(home), XDG_RUNTIME_DIR=str(run_dir))
    done = subprocess.run(
        [ANALYZE, "--user", "verify", "--man=no", *map(str, paths)],  # type: ignore[list-item]
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    for word in ("Unknown", "ignoring", "Failed", "not executable", "Invalid"):
        assert word not in said, said


@pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package `systemd`)"
)
@pytest.mark.parametrize("socket", ["", "elsewhere/a b%.sock", "/tmp/{tmp}/p.sock"])
def test_generated_units_pass_systemd_analyze_verify(home: Path, socket: str) -> None:
    extra = {}
    if socket:
        socket = socket.format(tmp=home.name)
        extra["CLAUDE_PEERS_SOCKET"] = socket if socket.startswith("/") else f"{home}/{socket}"
    env = cli_env(home, **extra)
    settings = load(env=env)
    units = service.systemd_units(settings, service.peersd_argv(), env)
    out_dir = home / "units"
    out_dir.mkdir()
    for name, text in units.items():
        (out_dir / name).write_text(text)
    _analyze(home, [out_dir / name for name in UNITS])
    # What clients read back from the unit is the socket the settings name.
    (unit_dir(home) / "sockets.target.wants").mkdir(parents=True)
    shutil.copy(out_dir / "claude-peers.socket", unit_dir(home))
    (unit_dir(home) / "sockets.target.wants" / "claude-peers.socket").symlink_to(
        "../claude-peers.socket"
    )
    sup = installed_supervisor(settings, env, platform="linux")
    assert sup is not None and sup.kind == "systemd" and sup.enabled
    service_text = units["claude-peers.service"]
    assert ("PrivateTmp=yes" in service_text) == (not settings.socket.startswith("/tmp/"))


@pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package `systemd`)"
)
def test_packaged_units_pass_systemd_analyze_verify_once_filled_in(home: Path) -> None:
    out_dir = home / "units"
    out_dir.mkdir()
    for name in UNITS:
        text = (PACKAGING / "systemd" / name).read_text()
        (out_dir / name).write_text(text.replace("@PEERSD@", service.peersd_argv()[0]))
    _analyze(home, [out_dir / name for name in UNITS])


def test_launchd_plist_parses_and_names_only_absolute_paths(home: Path) -> None:
    packaged = plistlib.loads((PACKAGING / "launchd/dev.claude-peers.peersd.plist").read_bytes())
    assert packaged["ProgramArguments"] == ["@PEERSD@"]
    assert packaged["StandardErrorPath"] == "@HOME@/Library/Logs/claude-peers/peersd.log"

    env = cli_env(home)
    settings = load(env=env)
    (text,) = service.launchd_files(settings, service.peersd_argv(), env).values()
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == "dev.claude-peers.peersd"
    assert plist["RunAtLoad"] is True and "KeepAlive" in plist
    assert "Sockets" not in plist  # peersd binds the socket itself
    log = f"{home}/Library/Logs/claude-peers/peersd.log"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
    assert plist["EnvironmentVariables"]["CLAUDE_PEERS_SOCKET"] == settings.socket
    program = plist["ProgramArguments"]
    assert os.path.isabs(program[0]) and os.access(program[0], os.X_OK)
    paths = [*program, log, plist["WorkingDirectory"], *plist["EnvironmentVariables"].values()]
    for value in paths:
        if value.startswith(("/", "~", "$", ".")) or "/" in value:
            assert os.path.isabs(value), value

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(plist) if "~" in s or "$" in s]


# --------------------------------------------------------------------------- install


def test_install_service_dry_run_prints_units_and_writes_nothing(home: Path) -> None:
    before = sorted(str(p) for p in home.rglob("*"))
    env = cli_env(home, PATH="/nonexistent")  # not even systemctl: a dry run still works
    done = peers_cli(env, "install", "service", "--dry-run")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    peersd = service.peersd_argv()[0]
    assert f"| ExecStart={peersd}" in text and os.path.isabs(peersd)
    assert "| ListenStream=%h/.claude/run/claude-peers.sock" in text
    assert "would create ~/.config/systemd/user/claude-peers.socket:" in text
    assert "would create ~/.config/systemd/user/claude-peers.service:" in text
    assert re.search(r"would run +systemctl --user enable claude-peers.socket\n", text)
    assert "systemctl is not on PATH" in text
    assert sorted(str(p) for p in home.rglob("*")) == before, "a dry run wrote something"

    xdg_env = cli_env(home, XDG_CONFIG_HOME=str(home / "xdg"))
    done = peers_cli(xdg_env, "install", "service", "--dry-run", "--json")
    report = json.loads(done.stdout)
    assert report["dry_run"] is True and report["manager"] == "systemd"
    assert [f["path"] for f in report["files"]] == [
        str(home / "xdg/systemd/user/claude-peers.socket"),
        str(home / "xdg/systemd/user/claude-peers.service"),
    ]
    assert all(f["action"] == "create" and f["content"] for f in report["files"])
    assert ["systemctl", "--user", "start", "claude-peers.socket"] in report["commands"]
    assert sorted(str(p) for p in home.rglob("*")) == before


def test_install_with_a_custom_socket_pins_it(home: Path) -> None:
    sock = "/tmp/" + home.name + "-peers/p.sock"
    env = cli_env(home, CLAUDE_PEERS_SOCKET=sock, CLAUDE_PEERS_DB=f"{home}/data/p.db")
    report = json.loads(peers_cli(env, "install", "service", "--dry-run", "--json").stdout)
    socket_unit, service_unit = (f["content"] for f in report["files"])
    assert f"ListenStream={sock}" in socket_unit.splitlines()
    lines = service_unit.splitlines()
    assert f"Environment=CLAUDE_PEERS_SOCKET={sock}" in lines
    assert "Environment=CLAUDE_PEERS_DB=%h/data/p.db" in lines
    assert f"ReadWritePaths=%h/.claude -%h/.codex -/tmp/{home.name}-peers -%h/data" in lines
    assert "PrivateTmp=yes" not in lines  # the socket lives in the real /tmp


def test_install_and_uninstall_service_with_a_fake_systemctl(
    home: Path, fake_bin: Path, make_daemon
) -> None:
    d: DaemonProc = make_daemon()  # a daemon that holds the socket and must make way
    env = dict(d.env, PATH=os.environ["PATH"], FAKE_LOG=os.environ["FAKE_LOG"])
    env.pop("XDG_CONFIG_HOME", None)
    done = peers_cli(env, "install", "service")
    assert done.returncode == 0, done.stderr
    assert f"stopped        peersd pid {d.proc.pid} (manual)" in done.stdout
    assert d.proc.wait(5) == 0, "the running daemon was not shut down cleanly"
    assert calls(home) == [
        "--user daemon-reload",
        "--user enable claude-peers.socket",
        "--user start claude-peers.socket",
        "--user try-restart claude-peers.service",
    ]
    units = unit_dir(home)
    for name in UNITS:
        assert (units / name).stat().st_mode & 0o777 == 0o644
    service_text = (units / "claude-peers.service").read_text()
    assert f"ExecStart={service.peersd_argv()[0]}\n" in service_text
    assert (units / "sockets.target.wants/claude-peers.socket").is_symlink()

    # Supervised now: nothing answers (the fake started nothing), and nobody auto-starts.
    st = peers_cli(env, "status", "--json")
    assert st.returncode == 1
    assert json.loads(st.stdout)["service"] == {
        "manager": "systemd",
        "unit": str(units / "claude-peers.socket"),
        "enabled": True,
    }
    st = peers_cli(env, "status")
    assert "claude-peers.socket is installed and enabled" in st.stdout
    assert "systemctl --user start claude-peers.socket" in st.stdout
    r = peers_cli(env, "peers")
    assert r.returncode == 3 and "systemctl --user start claude-peers.socket" in r.stderr, r
    assert not d.settings.socket_path.exists()

    # `peers daemon start` goes through the service, never around it.
    (home / "calls.log").unlink()
    r = peers_cli(env, "daemon", "start")
    assert r.returncode == 1 and "does not answer" in r.stderr, r
    assert calls(home) == ["--user start claude-peers.socket"]
    assert not d.settings.socket_path.exists()

    # Idempotent: nothing rewritten, nothing restarted.
    (home / "calls.log").unlink()
    done = peers_cli(env, "install", "service")
    assert done.returncode == 0, done.stderr
    assert "unit files unchanged" in done.stdout
    assert calls(home) == [
        "--user daemon-reload",
        "--user enable claude-peers.socket",
        "--user start claude-peers.socket",
    ]

    (home / "calls.log").unlink()
    done = peers_cli(env, "uninstall", "service", "--dry-run")
    assert done.returncode == 0 and calls(home) == [], done
    assert (units / "claude-peers.socket").exists()
    done = peers_cli(env, "uninstall", "service")
    assert done.returncode == 0, done.stderr
    assert calls(home) == [
        "--user disable --now claude-peers.socket claude-peers.service",
        "--user daemon-reload",
    ]
    assert not any(units.rglob("claude-peers.*"))
    done = peers_cli(env, "uninstall", "service")
    assert done.returncode == 0 and "nothing installed" in done.stdout


def test_install_service_reports_systemctl_failures(home: Path, fake_bin: Path) -> None:
    env = cli_env(home, PATH=os.environ["PATH"], FAKE_LOG=os.environ["FAKE_LOG"], FAKE_FAIL="1")
    done = peers_cli(env, "install", "service")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "systemctl --user daemon-reload` failed (exit 1)" in line
    assert "Failed to connect to bus: No medium found" in line
    assert "loginctl enable-linger" in line
    # Not enabled, so clients still start peersd on demand.
    assert not (unit_dir(home) / "sockets.target.wants").exists()

    env["PATH"] = str(home / "empty")
    done = peers_cli(env, "install", "service")
    assert done.returncode == 1
    assert "systemctl not found on PATH" in done.stderr


# --------------------------------------------------------------------------- launchd


def test_launchd_install_and_uninstall_with_a_fake_launchctl(home: Path, fake_bin: Path) -> None:
    settings = load()
    report = service.install_service(settings, platform="darwin")
    plist = home / "Library/LaunchAgents/dev.claude-peers.peersd.plist"
    assert [f.path for f in report.files] == [str(plist)]
    assert plistlib.loads(plist.read_bytes())["Label"] == "dev.claude-peers.peersd"
    assert (home / "Library/Logs/claude-peers").is_dir()
    uid = os.getuid()
    assert calls(home) == [
        f"print gui/{uid}/dev.claude-peers.peersd",
        f"bootstrap gui/{uid} {plist}",
    ]
    sup = installed_supervisor(settings, platform="darwin")
    assert sup is not None and sup.kind == "launchd"
    assert f"launchctl kickstart gui/{uid}/dev.claude-peers.peersd" in sup.start

    (home / "calls.log").unlink()
    report = service.uninstall_service(settings, platform="darwin")
    assert calls(home) == [f"bootout gui/{uid}/dev.claude-peers.peersd"]
    assert not plist.exists()

    # A failed bootstrap leaves no plist behind (it would stop clients auto-starting).
    os.environ["FAKE_FAIL"] = "1"
    try:
        with pytest.raises(service.ServiceError, match="Bootstrap failed: 5"):
            service.install_service(settings, platform="darwin")
    finally:
        del os.environ["FAKE_FAIL"]
    assert not plist.exists()


# --------------------------------------------------------------------------- clients


def test_autostart_leaves_a_supervised_socket_alone(home: Path, monkeypatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    env = cli_env(home)
    settings = load(env=env)
    units = unit_dir(home)
    units.mkdir(parents=True)
    for name, text in service.systemd_units(settings, service.peersd_argv(), env).items():
        (units / name).write_text(text)
    wants = units / "sockets.target.wants"
    wants.mkdir()
    (wants / "claude-peers.socket").symlink_to("../claude-peers.socket")

    started = time.monotonic()
    with pytest.raises(DaemonUnreachable) as e:
        Client(settings, autostart=True).connect()
    assert time.monotonic() - started < 4  # refused at once, not after the 5 s start timeout
    assert "systemctl --user start claude-peers.socket" in str(e.value)
    assert str(units / "claude-peers.socket") in str(e.value)
    assert not settings.socket_path.exists(), "a daemon was started anyway"

    # A unit for another socket is not ours to respect.
    other = load(env=dict(env, CLAUDE_PEERS_SOCKET=str(home / "other.sock")))
    assert installed_supervisor(other, env, platform="linux") is None
    # Installed but not enabled (say `enable` failed): clients start peersd as before.
    (wants / "claude-peers.socket").unlink()
    sup = installed_supervisor(settings, env, platform="linux")
    assert sup is not None and not sup.enabled
    with Client(settings, autostart=True) as c:
        st = c.request(p.Status)
    try:
        assert st.supervisor == "auto-started"
        r = peers_cli(env, "status")
        assert "installed but not enabled" not in r.stdout  # running: nothing to say
    finally:
        os.kill(st.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{st.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def test_status_names_the_supervisor(daemon: DaemonProc, home: Path) -> None:
    r = peers_cli(dict(daemon.env, PATH=os.environ.get("PATH", "")), "daemon", "status")
    assert r.returncode == 0, r.stderr
    assert "supervised by  manual (started by hand)" in r.stdout
    assert f"pid {daemon.proc.pid}, up " in r.stdout and "peersd 0.1.0 running" in r.stdout
    record = json.loads(peers_cli(daemon.env, "status", "--json").stdout)
    assert record["supervised_by"] == "manual (started by hand)" and "service" not in record


def test_supervisor_detection() -> None:
    me = str(os.getpid())
    assert _supervisor(True, {}) == "systemd"
    assert _supervisor(False, {"SYSTEMD_EXEC_PID": me, "INVOCATION_ID": "x"}) == "systemd"
    # INVOCATION_ID alone is what a shell inside a terminal run as a user service has.
    assert _supervisor(False, {"INVOCATION_ID": "x"}) == "manual"
    assert _supervisor(False, {"CLAUDE_PEERS_AUTOSTARTED": "1"}) == "auto-started"
    label = {"XPC_SERVICE_NAME": "dev.claude-peers.peersd"}
    assert _supervisor(False, label, platform="darwin") == "launchd"
    assert _supervisor(False, label, platform="linux") == "manual"
    for shell in ("0", "application.com.apple.Terminal.1234-5678", ""):
        env = {"XPC_SERVICE_NAME": shell}
        assert _supervisor(False, env, platform="darwin") == "manual"
    fields = dict(id=0, version="x", protocol=1, pid=1, started_at=0.0, socket="s", db="d")
    fields.update(machine_id="m", host="h", peers_active=0, peers_gone=0, connections=0)
    st = p.DaemonStatus(**fields, messages={}, supervisor="systemd", adopted_socket=True)
    assert service.supervisor_label(st) == "systemd (socket activation)"


def test_unsupported_platform_is_a_clear_error() -> None:
    with pytest.raises(service.ServiceError, match="no service manager support for win32"):
        service.install_service(load(env={"HOME": "/nonexistent"}), platform="win32")
