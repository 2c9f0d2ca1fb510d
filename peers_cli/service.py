"""Run peersd under the user's service manager: ``peers install|uninstall service``.

Linux: two systemd *user* units in ``$XDG_CONFIG_HOME/systemd/user`` (default
``~/.config/systemd/user``). ``claude-peers.socket`` makes systemd own the daemon's
socket; ``claude-peers.service`` runs ``peersd`` on the first connection, and peersd
adopts the socket it is handed (``LISTEN_FDS``) and never removes it. macOS: a launchd
agent, ``~/Library/LaunchAgents/dev.claude-peers.peersd.plist``, which keeps peersd
running; there peersd binds the socket itself (launchd socket activation needs
``launch_activate_socket``, which could not be tested, so it is not used).

Rules:

- ``ExecStart``/``ProgramArguments`` name the ``peersd`` installed next to the running
  Python (absolute), else ``<python> -m peersd``.
- The units name the socket the settings resolve to (``%h/...`` when under HOME), and
  pin ``CLAUDE_PEERS_SOCKET`` so daemon and socket unit always agree; database and
  config file are pinned too when they differ from what HOME alone gives.
- Idempotent: unchanged files are not rewritten and nothing is restarted for them.
- A daemon that is running but not under this service manager (auto-started by a client,
  or started by hand) holds the socket path: it is asked to shut down (Shutdown request,
  mail in flight finished first) once the unit is enabled, and before the manager starts.
- ``--dry-run`` prints the files and the commands, and changes nothing.

The files in ``packaging/`` are these renderings with ``@PEERSD@`` (and ``@HOME@`` in
the plist) standing for the absolute paths the installer fills in.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from peersd import protocol as p
from peersd.autostart import (
    SYSTEMD_SERVICE_UNIT,
    SYSTEMD_SOCKET_UNIT,
    Supervisor,
    installed_supervisor,
    launchd_plist,
    systemd_user_dir,
)
from peersd.config import LAUNCHD_LABEL, Settings, home
from peersd.errors import ClaudePeersError

from .files import atomic_write

PEERSD_PLACEHOLDER = "@PEERSD@"
HOME_PLACEHOLDER = "@HOME@"
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LOG_HINT = {
    "systemd": "journalctl --user -u claude-peers",
    "launchd": "~/Library/Logs/claude-peers/peersd.log",
}


class ServiceError(ClaudePeersError):
    """A service step cannot be done; the message says why and what to do."""


# --------------------------------------------------------------------------- paths


def peersd_argv() -> list[str]:
    """How to run the installed daemon, with absolute paths."""
    # Not resolved: a venv's python is a symlink, and its scripts sit next to the link.
    script = Path(os.path.abspath(sys.executable)).parent / "peersd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [os.path.abspath(sys.executable), "-m", "peersd"]


def _tilde(path: Path | str, home_dir: Path) -> str:
    text, base = str(path), str(home_dir)
    if base not in ("", "/") and (text == base or text.startswith(base + "/")):
        return "~" + text[len(base) :]
    return text


def _under(path: Path | str, base: Path | str) -> bool:
    path, base = os.path.normpath(path), os.path.normpath(base)
    return path == base or path.startswith(base.rstrip("/") + "/")


def _pins(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """CLAUDE_PEERS_* values the service would not find from HOME and the config file."""
    from .install import env_pins

    return env_pins(settings, env)


# --------------------------------------------------------------------------- systemd


def _sd_escape(text: str) -> str:
    """Protect ``%`` from specifier expansion."""
    return text.replace("%", "%%")


def _sd_path(path: str, home_dir: Path | None) -> str:
    """``path`` for a unit file: ``%h/...`` when under HOME, specifiers escaped."""
    if home_dir is not None and str(home_dir) not in ("", "/") and _under(path, home_dir):
        return "%h" + _sd_escape(path[len(str(home_dir).rstrip("/")) :])
    return _sd_escape(path)


def _sd_quote(word: str) -> str:
    """One word of a unit-file list or command line, quoted when it has to be."""
    if word and not any(c.isspace() or c in "\"'\\;" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sd_exec(argv: list[str]) -> str:
    return " ".join(_sd_quote(_sd_escape(a).replace("$", "$$")) for a in argv)


def socket_unit(listen: str) -> str:
    return f"""\
# claude-peers: the Unix socket of the peersd daemon, owned by systemd.
# systemd creates it (and its directory, 0700) and starts claude-peers.service on the
# first connection; peersd adopts the socket it is handed and never removes it.
# Installed by `peers install service` into ~/.config/systemd/user/ (docs/operations.md).
[Unit]
Description=claude-peers socket (peersd)

[Socket]
# Keep this path and CLAUDE_PEERS_SOCKET in claude-peers.service the same.
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
FileDescriptorName=claude-peers

[Install]
WantedBy=sockets.target
"""


def service_unit(
    exec_start: str, environment: list[str], writable: list[str], private_tmp: bool
) -> str:
    env_lines = "".join(f"Environment={_sd_quote(e)}\n" for e in environment)
    tmp = (
        "PrivateTmp=yes\n"
        if private_tmp
        else "# PrivateTmp= is off: a claude-peers path is under /tmp or /var/tmp.\n"
    )
    return f"""\
# claude-peers: the peersd daemon. systemd starts it on the first connection to
# claude-peers.socket and again if it fails; it logs to the journal:
#   journalctl --user -u claude-peers
# `peers install service` writes the absolute path of the installed peersd into
# ExecStart; the copy in packaging/systemd/ says @PEERSD@ there instead. By hand:
#   cd ~/.config/systemd/user && cp .../packaging/systemd/claude-peers.* . &&
#   sed -i "s|@PEERSD@|$(command -v peersd)|" claude-peers.service
[Unit]
Description=claude-peers daemon (peersd)
Requires=claude-peers.socket
After=claude-peers.socket

[Service]
Type=simple
ExecStart={exec_start}
{env_lines}Restart=on-failure
RestartSec=2
# 2: bad configuration; 3: another peersd already serves this socket. Retrying won't help.
RestartPreventExitStatus=2 3
# On SIGTERM peersd finishes the writes in flight, closes connections and exits 0.
TimeoutStopSec=30
StandardOutput=journal
StandardError=journal
SyslogIdentifier=peersd
UMask=0077

# Sandboxing. peersd writes only under ~/.claude (socket directory, database), and the
# `codex queue` it runs to wake an idle Codex session writes ~/.codex (a CODEX_HOME
# elsewhere needs its own ReadWritePaths=); it reads /proc to tell whether agent
# processes are alive. Checked with systemd 252 user
# managers: run by root, all of this applies; run by a normal user, the seccomp-based
# settings (NoNewPrivileges=, RestrictAddressFamilies=, ...) apply and the mount ones
# (ProtectSystem=, ProtectHome=, PrivateTmp=, ReadWritePaths=) are skipped, because
# without a user namespace the manager cannot mount; the daemon runs either way.
# systemd 253+ sets that user namespace up by itself where the kernel allows it.
# PrivateUsers=yes is deliberately absent: set explicitly, it makes the unit fail to
# start where unprivileged user namespaces are restricted (e.g. Ubuntu 24.04).
NoNewPrivileges=yes
{tmp}ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={" ".join(_sd_quote(w) for w in writable)}
# Left out because they broke the unit where this was checked: ProtectKernelTunables=
# (226/NAMESPACE under a root user manager), ProtectKernelModules= (218/CAPABILITIES
# under an unprivileged one); ProtectControlGroups= is for system services only. A
# user's daemon cannot change those things anyway.
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
# AF_INET/AF_INET6 for hub mode's TCP listener; AF_NETLINK for getaddrinfo().
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
Also=claude-peers.socket
"""


def systemd_units(
    settings: Settings, argv: list[str], env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The two unit files for ``settings``, by file name."""
    env = os.environ if env is None else env
    home_dir = home(env)
    listen = _sd_path(settings.socket, home_dir)
    environment = [f"CLAUDE_PEERS_SOCKET={listen}"]
    pins = _pins(settings, env)
    for var in ("CLAUDE_PEERS_DB", "CLAUDE_PEERS_CONFIG"):
        if var in pins:
            environment.append(f"{var}={_sd_path(pins[var], home_dir)}")
    claude_dir = home_dir / ".claude"
    writable = ["%h/.claude", "-%h/.codex"]  # codex queue (idle wakes) writes ~/.codex
    needed = [settings.run_dir, settings.db_path.parent]
    for path in needed:
        if not _under(path, claude_dir):
            word = "-" + _sd_path(str(path), home_dir)
            if word not in writable:
                writable.append(word)
    private_tmp = not any(_under(path, t) for path in needed for t in ("/tmp", "/var/tmp"))
    return {
        SYSTEMD_SOCKET_UNIT: socket_unit(listen),
        SYSTEMD_SERVICE_UNIT: service_unit(_sd_exec(argv), environment, writable, private_tmp),
    }


# --------------------------------------------------------------------------- launchd


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def launchd_agent(settings: Settings, argv: list[str], home_dir: str, pins: dict[str, str]) -> str:
    """The LaunchAgent plist (paths absolute: launchd expands neither ~ nor $VARS)."""
    args = "".join(f"\n        <string>{_xml(a)}</string>" for a in argv)
    env = {"CLAUDE_PEERS_SOCKET": settings.socket, **pins}
    env_xml = "".join(
        f"\n        <key>{_xml(k)}</key>\n        <string>{_xml(v)}</string>"
        for k, v in sorted(env.items())
    )
    log = f"{home_dir}/Library/Logs/claude-peers/peersd.log"
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  claude-peers: keeps the peersd daemon running for this user (launchd agent).
  Installed by `peers install service` as
  ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist, with absolute paths filled in:
  launchd expands neither ~ nor $VARIABLES. In the copy in packaging/launchd/,
  {PEERSD_PLACEHOLDER} stands for the absolute path of peersd and {HOME_PLACEHOLDER} for your home.
  peersd binds its socket itself (no launchd Sockets entry). It is restarted when it
  exits with an error; a clean stop (`peers daemon stop`) leaves it stopped until
  `launchctl kickstart gui/$(id -u)/{LAUNCHD_LABEL}` or the next login.
-->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{LAUNCHD_LABEL}</string>
    <key>ProgramArguments</key>
    <array>{args}
    </array>
    <key>EnvironmentVariables</key>
    <dict>{env_xml}
    </dict>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ThrottleInterval</key>
    <integer>5</integer>
    <key>WorkingDirectory</key>
    <string>/</string>
    <key>StandardOutPath</key>
    <string>{_xml(log)}</string>
    <key>StandardErrorPath</key>
    <string>{_xml(log)}</string>
</dict>
</plist>
"""


def launchd_files(
    settings: Settings, argv: list[str], env: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = os.environ if env is None else env
    pins = {k: v for k, v in _pins(settings, env).items() if k != "CLAUDE_PEERS_SOCKET"}
    return {
        f"{LAUNCHD_LABEL}.plist": launchd_agent(settings, argv, str(home(env)), pins),
    }


# --------------------------------------------------------------------------- packaging


def packaging_files() -> dict[str, str]:
    """``packaging/`` as it is in the repository: the default settings, placeholders."""
    from peersd.config import load

    fake_home = "/nonexistent-home"
    env = {"HOME": fake_home}
    settings = load(env=env)  # no config file there: the defaults
    files = {
        f"systemd/{name}": text
        for name, text in systemd_units(settings, [PEERSD_PLACEHOLDER], env).items()
    }
    plist = launchd_agent(settings, [PEERSD_PLACEHOLDER], fake_home, {})
    files[f"launchd/{LAUNCHD_LABEL}.plist"] = plist.replace(fake_home, HOME_PLACEHOLDER)
    return files


# --------------------------------------------------------------------------- reports


@dataclass
class FileChange:
    path: str
    action: str
    """create, update, unchanged or remove"""
    content: str | None = None


@dataclass
class ServiceReport:
    operation: str
    """install or uninstall"""
    manager: str
    """systemd or launchd"""
    dry_run: bool
    home: Path
    files: list[FileChange] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.action != "unchanged" for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "manager": self.manager,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "files": [vars(f) for f in self.files],
            "commands": self.commands,
            "stopped_daemon": self.stopped,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        if self.operation == "install":
            what = "already installed, unit files unchanged" if not self.changed else "installed"
        else:
            what = "uninstalled" if self.files else "nothing installed, nothing to remove"
        if self.dry_run:
            what = "dry run, nothing changed"
        out = [f"{self.manager} service for peersd: {what}"]
        verbs = {"create": "wrote", "update": "updated", "remove": "removed"}
        for f in self.files:
            where = _tilde(f.path, self.home)
            if f.action == "unchanged":
                out.append(f"  {'unchanged':<14} {where}")
            elif self.dry_run and f.content is not None:
                out.append(f"  would {f.action} {where}:")
                out += [f"    | {line}" for line in f.content.splitlines()]
            else:
                verb = f"would {f.action}" if self.dry_run else verbs[f.action]
                out.append(f"  {verb:<14} {where}")
        for i, argv in enumerate([*self.commands, None]):
            if self.stopped and i == self.stopped["after_command"]:
                verb = "would stop" if self.dry_run else "stopped"
                out.append(
                    f"  {verb:<14} peersd pid {self.stopped['pid']} "
                    f"({self.stopped['supervisor']}), so that {self.manager} owns the socket"
                )
            if argv is not None:
                out.append(f"  {'would run' if self.dry_run else 'ran':<14} {shlex.join(argv)}")
        out += [f"  note: {n}" for n in self.notes]
        return out


# --------------------------------------------------------------------------- steps


def _tool(name: str, dry_run: bool, report: ServiceReport, why: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if dry_run:
        report.notes.append(f"{name} is not on PATH: the commands below would fail ({why})")
        return name
    raise ServiceError(f"{name} not found on PATH: {why}")


def _run(
    tool: str, argv: list[str], report: ServiceReport, check: bool = True
) -> subprocess.CompletedProcess[str] | None:
    """Run ``argv`` (its first word resolved to ``tool``); a failure says what it printed."""
    report.commands.append(argv)
    if report.dry_run:
        return None
    try:
        done = subprocess.run(
            [tool, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"`{shlex.join(argv)}` failed: {e}") from None
    if done.returncode != 0 and check:
        said = " ".join((done.stderr or done.stdout).split()) or "(no output)"
        hint = ""
        if argv[0] == "systemctl" and any(
            w in said for w in ("bus", "XDG_RUNTIME_DIR", "DBUS_SESSION")
        ):
            hint = (
                "; is your systemd user manager running? Log in normally (not `su`), or "
                "run `loginctl enable-linger $USER`; over sudo or ssh set "
                "XDG_RUNTIME_DIR=/run/user/$(id -u)"
            )
        raise ServiceError(f"`{shlex.join(argv)}` failed (exit {done.returncode}): {said}{hint}")
    return done


def _write(path: Path, text: str) -> None:
    try:
        atomic_write(path, text, 0o644, dir_mode=0o755)
    except OSError as e:
        raise ServiceError(f"cannot write {path}: {e.strerror or e}") from None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ServiceError(f"cannot remove {path}: {e.strerror or e}") from None


def _plan_files(files: dict[Path, str], report: ServiceReport) -> list[tuple[Path, str]]:
    """Record what changes; return the files to write."""
    todo = []
    for path, text in files.items():
        try:
            old: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = None
        except OSError as e:
            raise ServiceError(f"cannot read {path}: {e.strerror or e}") from None
        if old == text:
            report.files.append(FileChange(str(path), "unchanged"))
            continue
        action = "create" if old is None else "update"
        report.files.append(FileChange(str(path), action, text))
        todo.append((path, text))
    return todo


def _local(settings: Settings) -> Settings:
    """The settings for this machine's daemon, even in hub-client mode."""
    return msgspec.structs.replace(settings, url="")


def running_daemon(settings: Settings) -> p.DaemonStatus | None:
    """The local daemon's status, or None when nothing answers (never starts one)."""
    from peersd.client import running_status

    return running_status(_local(settings))


def _owned_by(st: p.DaemonStatus, manager: str) -> bool:
    if manager == "systemd":
        return st.supervisor == "systemd" and st.adopted_socket
    return st.supervisor == manager


def _stop_daemon(settings: Settings, st: p.DaemonStatus) -> None:
    """Ask the daemon to shut down and wait until its process has gone."""
    from peersd.client import shutdown_and_wait
    from peersd.errors import PeersError

    try:
        stopped = shutdown_and_wait(_local(settings), st, STOP_TIMEOUT)
    except PeersError as e:
        raise ServiceError(f"could not stop peersd (pid {st.pid}): {e}") from None
    if not stopped:
        raise ServiceError(
            f"peersd (pid {st.pid}) did not stop within {STOP_TIMEOUT:g}s; stop it "
            "(`peers daemon stop`) and run this again"
        )


def _maybe_stop(settings: Settings, report: ServiceReport) -> None:
    """Stop a daemon this manager does not own; it holds the socket path."""
    st = running_daemon(settings)
    if st is None or _owned_by(st, report.manager):
        return
    report.stopped = {
        "pid": st.pid,
        "supervisor": st.supervisor,
        "version": st.version,
        "after_command": len(report.commands),
    }
    if not report.dry_run:
        _stop_daemon(settings, st)


# --------------------------------------------------------------------------- install


def _platform(platform: str | None) -> str:
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise ServiceError(
        f"no service manager support for {platform}; clients start the daemon on demand "
        "(or run `peersd` under your own supervisor)"
    )


def install_service(
    settings: Settings,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
) -> ServiceReport:
    env = os.environ if env is None else env
    manager = _platform(platform)
    report = ServiceReport("install", manager, dry_run, home(env))
    if settings.url:
        report.notes.append(
            f"this shell talks to a hub ({settings.url}); the service runs the daemon of "
            "this machine"
        )
    if manager == "systemd":
        _install_systemd(settings, report, env)
    else:
        _install_launchd(settings, report, env)
    return report


def _install_systemd(settings: Settings, report: ServiceReport, env: Mapping[str, str]) -> None:
    unit_dir = systemd_user_dir(env)
    units = systemd_units(settings, peersd_argv(), env)
    todo = _plan_files({unit_dir / name: text for name, text in units.items()}, report)
    tool = _tool(
        "systemctl",
        report.dry_run,
        report,
        "a systemd user manager is needed; without one, clients start peersd on demand",
    )
    if not report.dry_run:
        for path, text in todo:
            _write(path, text)
        # ReadWritePaths= needs these to exist (systemd creates the socket's directory).
        for path in (home(env) / ".claude", settings.db_path.parent):
            with contextlib.suppress(OSError):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run(tool, ["systemctl", "--user", "daemon-reload"], report)
    # Enabled first: from then on clients leave the socket to systemd (no auto-start race).
    _run(tool, ["systemctl", "--user", "enable", SYSTEMD_SOCKET_UNIT], report)
    _maybe_stop(settings, report)
    _run(tool, ["systemctl", "--user", "start", SYSTEMD_SOCKET_UNIT], report)
    if todo:
        # A daemon systemd already runs picks up the new unit (no-op when none runs).
        _run(tool, ["systemctl", "--user", "try-restart", SYSTEMD_SERVICE_UNIT], report)
    report.notes.append(
        "systemd starts peersd on the first connection; `peers status` shows it. "
        f"Logs: {LOG_HINT['systemd']}"
    )
    report.notes.append("to keep it running while you are logged out: loginctl enable-linger $USER")


def _gui_domain() -> str:
    return f"gui/{os.getuid()}"


def _install_launchd(settings: Settings, report: ServiceReport, env: Mapping[str, str]) -> None:
    plist = launchd_plist(env)
    (text,) = launchd_files(settings, peersd_argv(), env).values()
    todo = _plan_files({plist: text}, report)
    tool = _tool("launchctl", report.dry_run, report, "launchd agents need macOS's launchctl")
    logs = home(env) / "Library" / "Logs" / "claude-peers"
    if not report.dry_run:
        for path, content in todo:
            _write(path, content)
        with contextlib.suppress(OSError):
            logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = f"{_gui_domain()}/{LAUNCHD_LABEL}"
    loaded = False
    if not report.dry_run:
        probe = subprocess.run(
            [tool, "print", target],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        loaded = probe.returncode == 0
    # The plist exists now, so clients no longer start a daemon of their own.
    _maybe_stop(settings, report)
    if loaded and not todo:
        report.notes.append(f"{LAUNCHD_LABEL} is already loaded")
    else:
        if loaded or report.dry_run:
            _run(tool, ["launchctl", "bootout", target], report, check=False)
        try:
            _run(tool, ["launchctl", "bootstrap", _gui_domain(), str(plist)], report)
        except ServiceError as e:
            if any(f.action == "create" for f in report.files):
                _remove(plist)  # not loaded: leave no plist that stops clients auto-starting
                raise ServiceError(
                    f"{e} (removed {plist} again; clients keep starting peersd on demand)"
                ) from None
            raise
    report.notes.append(
        f"launchd keeps peersd running; `peers status` shows it. Logs: {LOG_HINT['launchd']}"
    )


# --------------------------------------------------------------------------- uninstall


def uninstall_service(
    settings: Settings,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
) -> ServiceReport:
    env = os.environ if env is None else env
    manager = _platform(platform)
    report = ServiceReport("uninstall", manager, dry_run, home(env))
    if manager == "systemd":
        _uninstall_systemd(report, env)
    else:
        _uninstall_launchd(report, env)
    return report


def _uninstall_systemd(report: ServiceReport, env: Mapping[str, str]) -> None:
    unit_dir = systemd_user_dir(env)
    units = [unit_dir / SYSTEMD_SOCKET_UNIT, unit_dir / SYSTEMD_SERVICE_UNIT]
    links = [
        unit_dir / "sockets.target.wants" / SYSTEMD_SOCKET_UNIT,
    ]
    present = [u for u in units if u.exists()]
    if not present and not any(os.path.lexists(link) for link in links):
        return
    report.files = [FileChange(str(u), "remove") for u in present]
    tool = shutil.which("systemctl")
    if tool is None:
        report.notes.append("systemctl is not on PATH: removing the files only")
    else:
        _run(
            tool,
            [
                "systemctl",
                "--user",
                "disable",
                "--now",
                SYSTEMD_SOCKET_UNIT,
                SYSTEMD_SERVICE_UNIT,
            ],
            report,
        )
    if not report.dry_run:
        for path in [*present, *links]:
            if os.path.lexists(path):
                _remove(path)
    if tool is not None:
        _run(tool, ["systemctl", "--user", "daemon-reload"], report)
    report.notes.append("clients start peersd on demand again")


def _uninstall_launchd(report: ServiceReport, env: Mapping[str, str]) -> None:
    plist = launchd_plist(env)
    if not plist.exists():
        return
    report.files = [FileChange(str(plist), "remove")]
    tool = shutil.which("launchctl")
    if tool is None:
        report.notes.append("launchctl is not on PATH: removing the file only")
    else:
        done = _run(
            tool, ["launchctl", "bootout", f"{_gui_domain()}/{LAUNCHD_LABEL}"], report, check=False
        )
        if done is not None and done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())
            report.notes.append(f"launchctl bootout: {said or 'not loaded'}")
    if not report.dry_run:
        _remove(plist)
    report.notes.append("clients start peersd on demand again")


# --------------------------------------------------------------------------- status


SUPERVISOR_LABELS = {
    "systemd": "systemd",
    "launchd": "launchd",
    "auto-started": "auto-started by a client",
    "manual": "manual (started by hand)",
}


def supervisor_label(st: p.DaemonStatus) -> str:
    if st.supervisor == "systemd" and st.adopted_socket:
        return "systemd (socket activation)"
    return SUPERVISOR_LABELS.get(st.supervisor, st.supervisor)


def installed(settings: Settings) -> Supervisor | None:
    return installed_supervisor(_local(settings))


def describe_installed(sup: Supervisor, home_dir: Path) -> str:
    unit = _tilde(sup.unit, home_dir)
    if sup.kind == "systemd":
        state = "installed and enabled" if sup.enabled else "installed but not enabled"
        return f"systemd user unit {SYSTEMD_SOCKET_UNIT} is {state} ({unit})"
    return f"launchd agent {LAUNCHD_LABEL} is installed ({unit})"


def installed_json(settings: Settings) -> dict[str, Any] | None:
    """The installed service for ``peers status --json``; None in hub-client mode."""
    sup = None if settings.url else installed(settings)
    if sup is None:
        return None
    return {"manager": sup.kind, "unit": str(sup.unit), "enabled": sup.enabled}


def status_notes(settings: Settings, st: p.DaemonStatus | None) -> list[str]:
    """What the service manager side adds to ``peers status`` (not for a hub)."""
    sup = None if settings.url else installed(settings)
    if sup is None:
        return []
    home_dir = home()
    what = describe_installed(sup, home_dir)
    if st is None:
        if sup.kind == "systemd" and not sup.enabled:
            return [f"{what}; enable it: systemctl --user enable --now {SYSTEMD_SOCKET_UNIT}"]
        return [f"{what}, but nothing answers; start it: {sup.start}"]
    if st.supervisor != sup.kind and sup.enabled:
        return [
            f"{what}, but this daemon is {supervisor_label(st)}; "
            f"`peers install service` hands the socket over to {sup.kind}"
        ]
    return []
