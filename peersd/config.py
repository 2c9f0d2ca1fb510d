"""Every path and setting, resolved one way for daemon, MCP server, hook and CLI.

Order: explicit overrides (the command line), then ``CLAUDE_PEERS_*`` environment
variables, then the config file, then defaults. Defaults depend on HOME alone because
Codex starts MCP servers with a cleared environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import ConfigError as ConfigError  # still importable from here
from .rules import HostLabel, LeaseSeconds, Token, match_group

ENV_PREFIX = "CLAUDE_PEERS_"
LAUNCHD_LABEL = "dev.claude-peers.peersd"
"""The launchd job label of the daemon (the service installer and start-up both use it)."""
PositiveInt = Annotated[int, Meta(gt=0)]
Positive = Annotated[float, Meta(gt=0)]
ZeroOrMore = Annotated[float, Meta(ge=0)]
"""A duration or rate where 0 means off (no limit)."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """All settings. Field ``x`` is env ``CLAUDE_PEERS_X`` and key ``x`` in the file."""

    socket: str = ""
    db: str = ""
    config: str = ""
    log_level: str = "info"
    log_file: str = ""
    max_frame: PositiveInt = 1024 * 1024
    max_text: PositiveInt = 32 * 1024
    lease_seconds: LeaseSeconds = 30.0
    message_ttl: Positive = 7 * 24 * 3600.0
    history_retention: Positive = 30 * 24 * 3600.0
    gone_retention: Positive = 30 * 24 * 3600.0
    queue_limit: PositiveInt = 1000
    rate_per_second: ZeroOrMore = 50.0
    rate_burst: PositiveInt = 500
    sweep_interval: Positive = 5.0
    remote_timeout: Positive = 60.0
    write_buffer_limit: PositiveInt = 8 * 1024 * 1024
    hello_timeout: ZeroOrMore = 10.0
    """Daemon: seconds a new connection has to send its hello (0: no limit)."""
    max_connections: PositiveInt = 1000
    """Daemon: connections served at once; more are refused with ``too_many_connections``."""
    autostart: bool = True
    connect_timeout: Positive = 5.0
    host_label: HostLabel = ""
    sync: str = "normal"
    channels: str = "auto"
    kill_enabled: bool = False
    kill_grace: Positive = 5.0
    orphan_cleanup: bool = True
    """Daemon: end our orphaned helpers (peers-mcp, peers-hook --wait) on a timer."""
    orphan_interval: Positive = 60.0
    """Daemon: seconds between orphan scans."""
    escalate_after: ZeroOrMore = 90.0
    """Daemon: notify the desktop when mail waits this long (seconds; 0 disables)."""
    tcp: str = ""
    """Daemon: also listen on HOST:PORT (hub mode)."""
    tcp_insecure: bool = False
    """Daemon: allow a loopback TCP listener without a token."""
    tcp_max_connections: PositiveInt = 64
    """Daemon: TCP connections served at once (TLS handshakes included), apart from
    ``max_connections``, which stays for local clients."""
    tcp_max_per_address: PositiveInt = 8
    """Daemon: TCP connections from one IP address at once."""
    url: str = ""
    """Clients: reach a hub at tcp://HOST:PORT or tls://HOST:PORT instead of the socket."""
    token: Token = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    heartbeat_interval: Positive = 15.0
    activity_ttl: Positive = 1800.0
    """Daemon: seconds a file counts as active for a peer after its last edit."""
    claims: Literal["deny", "warn"] = "deny"
    """Daemon: what another peer's exclusive claim does to an edit or commit."""
    native_wake: bool = True
    """Daemon: wake idle Codex (``codex queue``) and Claude Code (inbox) sessions for mail."""
    codex_bin: str = ""
    """Daemon: the ``codex`` to run for a wake; empty: the one the session's hooks found."""
    wake_rearm: Positive = 300.0
    """Daemon: seconds after a wake before an idle session that has not acted is woken again."""
    task_grace: Positive = 600.0
    """Daemon: seconds a gone session's tasks wait for a successor of its name before they
    are open to anyone again (its creator is told)."""
    group: str = ""
    """Sessions: the isolation group a session joins at register ("": none, or by branch)."""
    auto_group: Literal["off", "branch"] = "off"
    """Sessions: with "branch", a session without ``group`` joins the group of its git branch."""

    def session_group(self, branch: str | None) -> str | None:
        """The group a session registers in: ``group``, else its branch with
        ``auto_group = "branch"`` (made a valid group name), else none."""
        if self.group:
            return self.group
        if self.auto_group == "branch" and branch:
            name = re.sub(r"[^A-Za-z0-9._/+@-]", "-", branch).lstrip("._/+@-")[:64]
            return name or None
        return None

    search_index: bool = True
    """Daemon: index mail for ``search`` (in the background, in batches); false: no search."""
    nats_url: str = ""
    """Daemon: federate with other machines over NATS JetStream: one or more nats:// or
    tls:// URLs, comma-separated (docs/federation.md); empty: this machine only."""
    nats_creds: str = ""
    """Daemon: this machine's NATS credentials: the nkey seed file ``peers federation init``
    writes, or a NATS .creds file (JWT); empty: connect without."""
    nats_tls_ca: str = ""
    """Daemon: CA certificate(s) that sign the NATS servers' TLS certificates."""
    nats_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    """Daemon: copies the NATS cluster keeps of the mail stream and the directory (set 3
    with a three-node cluster); used by the first peersd that creates them."""
    nats_directory_ttl: Annotated[float, Meta(ge=3)] = 60.0
    """Daemon: seconds a machine's entry in the network directory lives unless refreshed
    (each peersd refreshes its own every third of it); every machine must agree."""

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
    "CLAUDE_CODE_MESSAGING_SOCKET",
    "CLAUDE_CODE_MESSAGING_TOKEN",
    "CODEX_THREAD_ID",
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
        where = sources.get(field, "settings") if field is not None else "settings"
        hint = f" (env {ENV_PREFIX}{field.upper()})" if field and where == "environment" else ""
        value = repr(merged.get(field)) if field is not None else ""
        got = "" if field not in merged or field == "token" else f", not {value[:40]}"
        got += "…" if got and len(value) > 40 else ""
        raise ConfigError(f"invalid setting in {where}{hint}: {e}{got}") from None
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
    for name in ("log_file", "tls_cert", "tls_key", "tls_ca", "nats_creds", "nats_tls_ca"):
        if getattr(s, name):
            setattr(s, name, os.path.abspath(_expand(getattr(s, name), home_dir)))
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both or neither")
    nats_urls(s.nats_url)  # refuses a malformed one now, not at the first send
    if s.token and len(s.token) < 16:
        raise ConfigError("token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    s.log_level = s.log_level.lower()
    if s.log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log_level must be debug, info, warning or error, not {s.log_level!r}")
    if s.channels not in {"auto", "on", "off"}:
        raise ConfigError(f"channels must be 'auto', 'on' or 'off', not {s.channels!r}")
    if s.group and not match_group(s.group):
        raise ConfigError(
            f"group must be 1-64 of letters, digits and . _ / + @ -, starting with a letter or "
            f"digit, not {s.group[:70]!r}"
        )
    if s.sync not in {"normal", "full"}:
        raise ConfigError(f"sync must be 'normal' or 'full', not {s.sync!r}")
    if s.max_frame < s.max_text + 64 * 1024:
        raise ConfigError(
            f"max_frame ({s.max_frame}) must exceed max_text ({s.max_text}) by at least 65536 "
            "bytes, so one message always fits in a frame"
        )
    if len(s.socket.encode()) > 107:
        raise ConfigError(
            f"socket path {s.socket} is {len(s.socket.encode())} bytes; Unix sockets allow 107"
        )
    return s


def nats_urls(value: str) -> list[str]:
    """The NATS server URLs in ``nats_url`` (comma-separated), each checked."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest.split("@")[-1].strip("/"):
            raise ConfigError(
                f"nats_url: {url!r} is not a NATS server URL "
                "(nats://HOST:PORT or tls://HOST:PORT, comma-separated)"
            )
    return urls


def _expand(path: str, home_dir: Path) -> str:
    if path == "~" or path.startswith("~/"):
        return str(home_dir) + path[1:]
    return path
