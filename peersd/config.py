"""Every path and setting, resolved one way for daemon, MCP server, hook and CLI.

Order: explicit overrides (the command line), then ``CLAUDE_PEERS_*`` environment
variables, then the config file, then defaults. Defaults depend on HOME alone because
Codex starts MCP servers with a cleared environment.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

ENV_PREFIX = "CLAUDE_PEERS_"
LAUNCHD_LABEL = "dev.claude-peers.peersd"
"""The launchd job label of the daemon (the service installer and start-up both use it)."""


class ConfigError(Exception):
    """A setting, file or directory is unusable; the message says which and why."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """All settings. Field ``x`` is env ``CLAUDE_PEERS_X`` and key ``x`` in the file."""

    socket: str = ""
    db: str = ""
    config: str = ""
    log_level: str = "info"
    log_file: str = ""
    max_frame: int = 1024 * 1024
    max_text: int = 32 * 1024
    lease_seconds: float = 30.0
    message_ttl: float = 7 * 24 * 3600.0
    history_retention: float = 30 * 24 * 3600.0
    gone_retention: float = 30 * 24 * 3600.0
    queue_limit: int = 1000
    rate_per_second: float = 50.0
    rate_burst: int = 500
    sweep_interval: float = 5.0
    remote_timeout: float = 60.0
    write_buffer_limit: int = 8 * 1024 * 1024
    hello_timeout: float = 10.0
    """Daemon: seconds a new connection has to send its hello (0: no limit)."""
    max_connections: int = 1000
    """Daemon: connections served at once; more are refused with ``too_many_connections``."""
    autostart: bool = True
    connect_timeout: float = 5.0
    host_label: str = ""
    sync: str = "normal"
    channels: str = "auto"
    kill_enabled: bool = False
    kill_grace: float = 5.0
    orphan_cleanup: bool = True
    """Daemon: end our orphaned helpers (peers-mcp, peers-hook --wait) on a timer."""
    orphan_interval: float = 60.0
    """Daemon: seconds between orphan scans."""
    escalate_after: float = 90.0
    """Daemon: notify the desktop when mail waits this long (seconds; 0 disables)."""
    tcp: str = ""
    """Daemon: also listen on HOST:PORT (hub mode)."""
    tcp_insecure: bool = False
    """Daemon: allow a loopback TCP listener without a token."""
    url: str = ""
    """Clients: reach a hub at tcp://HOST:PORT or tls://HOST:PORT instead of the socket."""
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    heartbeat_interval: float = 15.0
    activity_ttl: float = 1800.0
    """Daemon: seconds a file counts as active for a peer after its last edit."""
    claims: Literal["deny", "warn"] = "deny"
    """Daemon: what another peer's exclusive claim does to an edit or commit."""

    @property
    def socket_path(self) -> Path:
        return Path(self.socket)

    @property
    def db_path(self) -> Path:
        return Path(self.db)

    @property
    def run_dir(self) -> Path:
        return Path(self.socket).parent

    @property
    def lock_path(self) -> Path:
        return Path(self.socket + ".lock")

    @property
    def spawn_lock_path(self) -> Path:
        return Path(self.socket + ".spawn")

    @property
    def daemon_log_path(self) -> Path:
        return Path(self.log_file) if self.log_file else self.run_dir / "peersd.log"


_FIELDS = set(Settings.__struct_fields__)


def home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("HOME") or os.path.expanduser("~"))


INHERITED_ELSEWHERE = (
    "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_PROJECT_DIR",
    "CLAUDECODE",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
)
"""Variables that tie a process to an agent session or a supervisor's hand-over."""


def isolated_env(home_dir: Path | str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a separate claude-peers world under ``home_dir``: none of this
    process's settings, agent session or socket hand-over leaks in. Tests and benchmarks
    start their own daemon and clients with it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIX) and k not in INHERITED_ELSEWHERE
    }
    env["HOME"] = str(home_dir)
    env.update(extra or {})
    return env


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    return home(env) / ".claude" / "claude-peers.toml"


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    if "config" in data:
        raise ConfigError(f"config file {path}: 'config' cannot be set inside a config file")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_FIELDS))}"
        )
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            found[name] = value
    return found


def load(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings. ``overrides`` are command-line values (None means not given)."""
    env = os.environ if env is None else env
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    from_env = _from_env(env)
    config_path = given.get("config") or from_env.get("config")
    explicit = bool(config_path)
    path = Path(config_path).expanduser() if config_path else default_config_path(env)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in (
        (f"config file {path}", _read_file(path, explicit)),
        ("environment", from_env),
        ("command line", given),
    ):
        for key, value in values.items():
            merged[key] = value
            sources[key] = source
    merged["config"] = os.path.abspath(path)  # an auto-started daemon runs from "/"
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as e:
        field = _field_of(str(e))
        where = sources.get(field, "settings") if field else "settings"
        hint = f" (env {ENV_PREFIX}{field.upper()})" if field and where == "environment" else ""
        raise ConfigError(f"invalid setting in {where}{hint}: {e}") from None
    return _finish(settings, home(env))


def _field_of(message: str) -> str | None:
    marker = "`$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0]
    return None


def _finish(s: Settings, home_dir: Path) -> Settings:
    base = home_dir / ".claude"
    if not s.socket:
        s.socket = str(base / "run" / "claude-peers.sock")
    if not s.db:
        s.db = str(base / "claude-peers.db")
    # Absolute, because an auto-started daemon runs from "/".
    s.socket = os.path.abspath(_expand(s.socket, home_dir))
    s.db = os.path.abspath(_expand(s.db, home_dir))
    for name in ("log_file", "tls_cert", "tls_key", "tls_ca"):
        if getattr(s, name):
            setattr(s, name, os.path.abspath(_expand(getattr(s, name), home_dir)))
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both or neither")
    if s.token and len(s.token) < 16:
        raise ConfigError("token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    s.log_level = s.log_level.lower()
    if s.log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log_level must be debug, info, warning or error, not {s.log_level!r}")
    if s.channels not in {"auto", "on", "off"}:
        raise ConfigError(f"channels must be 'auto', 'on' or 'off', not {s.channels!r}")
    if s.sync not in {"normal", "full"}:
        raise ConfigError(f"sync must be 'normal' or 'full', not {s.sync!r}")
    for name in (
        "max_frame",
        "max_text",
        "queue_limit",
        "rate_burst",
        "write_buffer_limit",
        "max_connections",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive, not {getattr(s, name)}")
    for name in (
        "lease_seconds",
        "message_ttl",
        "sweep_interval",
        "connect_timeout",
        "history_retention",
        "gone_retention",
        "remote_timeout",
        "kill_grace",
        "heartbeat_interval",
        "orphan_interval",
        "activity_ttl",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive, not {getattr(s, name)}")
    if s.max_frame < s.max_text + 64 * 1024:
        raise ConfigError(
            f"max_frame ({s.max_frame}) must exceed max_text ({s.max_text}) by at least 65536 "
            "bytes, so one message always fits in a frame"
        )
    if s.escalate_after < 0:
        raise ConfigError("escalate_after must be 0 (off) or a number of seconds")
    if s.rate_per_second < 0:
        raise ConfigError("rate_per_second must be 0 (no limit) or positive")
    if s.hello_timeout < 0:
        raise ConfigError("hello_timeout must be 0 (no limit) or a number of seconds")
    if len(s.socket.encode()) > 107:
        raise ConfigError(
            f"socket path {s.socket} is {len(s.socket.encode())} bytes; Unix sockets allow 107"
        )
    return s


def _expand(path: str, home_dir: Path) -> str:
    if path == "~" or path.startswith("~/"):
        return str(home_dir) + path[1:]
    return path


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 if missing; refuse one owned by another user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create directory {path}: {e.strerror}") from None
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"directory {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "refusing to use it. Remove it or set CLAUDE_PEERS_SOCKET to a path you own."
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def check_socket_owner(path: Path) -> None:
    """Refuse to talk to a socket file another user owns."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"socket {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "refusing to use it."
        )
