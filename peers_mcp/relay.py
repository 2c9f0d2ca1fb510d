"""``peers-mcp``: the process an agent starts for claude-peers, a relay of a few MiB.

It imports nothing outside the standard library's C-level pieces (and ``hook``'s JSON
helpers, which are the same), so it starts in milliseconds. It
connects to the gateway (``peers_mcp.gateway``: one process that runs the MCP SDK for
every session), starting it when nothing listens there, says who it is (its hello: the
server name, socket and config options, its working directory, environment and
terminal; the gateway finds the agent from its pid), and from then on copies the
session's MCP messages both ways, newline-delimited JSON-RPC as on stdio. The SDK server,
its tools and the daemon connection of this session live in the gateway.

What the relay keeps, to survive losing the gateway (killed, crashed, ended): the
client's ``initialize`` request and ``notifications/initialized``, and the ids of the
requests still unanswered. When the gateway goes away, each unanswered
request gets a JSON-RPC error saying whether it may have been done is not known; the
relay reconnects (starting a gateway again), replays the handshake to the new session
(its answer is swallowed unless the client still waits for it) and goes on. Requests
that arrive meanwhile wait up to ``QUEUE_TIMEOUT`` seconds, then get an error with the
reason. The daemon restarting does not concern the relay: the gateway's daemon link
reconnects and registers again as before.

It exits 0 when stdin closes, when the gateway says the agent is gone, or, while no
gateway is reachable, when the agent process is gone.

``peers-mcp --direct`` runs the SDK server in this process instead (``server.main``):
the way before the gateway, ~60 MiB and ~0.6 s of start-up per session. It is the
switch to fall back on; ``CLAUDE_PEERS_MCP_DIRECT=1`` does the same.
"""

import _socket
import os
import sys
import time

from peersd import __version__
from peersd.errors import ClaudePeersError, ConfigError
from peersd.private_files import ensure_private_dir

from .hook import json_loads, json_string

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the relay imports no typing
    from collections.abc import Mapping

GATEWAY_PREFIX = "claude-peers-mcp-"
"""The gateway's socket is ``<run dir>/claude-peers-mcp-<code tag>.sock`` (``gateway_name``)."""
LOG_NAME = "claude-peers-mcp.log"
LOG_LIMIT = 1024 * 1024
MAX_LINE = 64 * 1024 * 1024
"""Longest message line relayed; a longer one is dropped with a parse error."""
START_TIMEOUT = 30.0
"""Seconds to wait for a gateway to start listening (its imports take ~0.6 s)."""
HELLO_TIMEOUT = 10.0
QUEUE_TIMEOUT = 10.0
"""Seconds a request waits for a gateway before it is answered with an error."""
AGENT_CHECK = 2.0
DIRECT_ENV = "CLAUDE_PEERS_MCP_DIRECT"
LOST = -32603
PARSE_ERROR = -32700

USAGE = """\
usage: peers-mcp [--server-name NAME] [--socket PATH] [--config FILE] [--direct]

The claude-peers MCP server of one agent session (started by Claude Code, Codex, …):
a relay to the shared gateway that runs the MCP server. --direct runs it in this
process instead.
"""


class Fatal(ClaudePeersError):
    """A reason this relay cannot serve at all (a bad option, a config error)."""


class GatewayFailed(ClaudePeersError, OSError):
    """The gateway started for this relay exited at once (no MCP SDK, a broken install),
    or what is there is not ours: waiting will not help."""


# --------------------------------------------------------------------------- JSON


def dumps(obj: object) -> str:
    """JSON text of plain values, without importing ``json`` (and its ``re``)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(int(obj))
    if isinstance(obj, float):
        return repr(obj) if obj == obj and obj not in (float("inf"), float("-inf")) else "null"
    if isinstance(obj, str):
        return json_string(obj)
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json_string(str(k))}: {dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def loads(raw: bytes) -> object:
    """One JSON document; ValueError for anything that is not one."""
    try:
        return json_loads(raw)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"not JSON: {type(e).__name__}") from None


GATEWAY_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH")
"""The variables the gateway process itself starts with (``spawn``), from the relay that
starts it: what Python needs to find the same code and write its log. Nothing else of
that session reaches the gateway or what it starts for other sessions."""
SESSION_ENV = (
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "CLAUDE_PROJECT_DIR",
    "CLAUDE_CODE_SESSION_ID",
    "CODEX_HOME",
)
SESSION_ENV_PREFIXES = ("CLAUDE_PEERS_", "GIT_", "XDG_", "LC_")
"""The hello's ``env``: the session's variables its tools use (settings, agent discovery,
the project directory and session id), and what an autostarted daemon and ``git status``
for the send snapshot run with (docs/clients.md). No other variable leaves the relay."""


def session_env(env: "Mapping[str, str]") -> dict[str, str]:
    """The part of ``env`` the gateway is told (``SESSION_ENV``, ``SESSION_ENV_PREFIXES``)."""
    return {k: v for k, v in env.items() if k in SESSION_ENV or k.startswith(SESSION_ENV_PREFIXES)}


def gateway_env(env: "Mapping[str, str]") -> dict[str, str]:
    """The gateway process's whole environment (``GATEWAY_ENV``)."""
    found = {k: env[k] for k in GATEWAY_ENV if k in env}
    found.setdefault("PATH", os.defpath)
    return found


def fingerprint() -> str:
    """This code's identity: the version and the newest modification of its modules, read
    once when a relay or gateway starts (``Relay.__init__``, ``Gateway.__init__``). It
    names the gateway's socket (``gateway_name``): relays of other code meet other
    gateways, so neither ever makes the other go away."""
    newest, count = 0, 0
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.join(os.path.dirname(here), "peersd")):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.endswith(".py"):
                        count += 1
                        newest = max(newest, entry.stat().st_mtime_ns)
        except OSError:
            pass
    return f"{__version__}:{count}:{newest}:{here}"


# --------------------------------------------------------------------------- options


class Options:
    __slots__ = ("config", "server_name", "socket")

    def __init__(self) -> None:
        self.server_name = "claude-peers"
        self.socket: str | None = None
        self.config: str | None = None


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    valued = {"--server-name": "server_name", "--socket": "socket", "--config": "config"}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in valued:
            raise Fatal(f"unknown argument {argv[i]!r}")
        if not eq:
            i += 1
            if i >= len(argv):
                raise Fatal(f"{name} needs a value")
            value = argv[i]
        setattr(opts, valued[name], value)
        i += 1
    return opts


def gateway_name(code: str) -> str:
    """The socket's file name for the code ``fingerprint`` gives (FNV-1a, 48 bits)."""
    h = 0xCBF29CE484222325
    for b in code.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{GATEWAY_PREFIX}{h >> 16:012x}.sock"


def gateway_path(opts: Options, code: str) -> str:
    """The gateway's socket: in the run directory of ``--socket``, else of
    ``CLAUDE_PEERS_SOCKET``, else ``~/.claude/run``, named for the code (``gateway_name``).
    A config file is not read here (it would cost the relay ``tomllib`` and ``msgspec``):
    the gateway serves any daemon, as each session's hello says, so its place only has to
    be private and the same for all."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    sock = opts.socket or os.environ.get("CLAUDE_PEERS_SOCKET") or ""
    if sock == "~" or sock.startswith("~/"):
        sock = home + sock[1:]
    run_dir = os.path.dirname(os.path.abspath(sock)) if sock else ""
    return os.path.join(run_dir or os.path.join(home, ".claude", "run"), gateway_name(code))


def tty_name() -> str | None:
    for fd in (0, 1, 2):
        try:
            return os.ttyname(fd)
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- the gateway


def _connect(path: str) -> "_socket.socket":
    """Connected to what listens on ``path``, once it is known to run as us (by
    ``SO_PEERCRED``, where there is one; elsewhere the private directory vouches)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        opt = getattr(_socket, "SO_PEERCRED", None)
        if opt is not None:
            creds = sock.getsockopt(_socket.SOL_SOCKET, opt, 12)  # pid, uid, gid
            uid = int.from_bytes(creds[4:8], sys.byteorder)
            if uid != os.getuid():
                raise GatewayFailed(
                    f"the process listening on {path} runs as uid {uid}, not as you "
                    f"(uid {os.getuid()}); refusing to send it this session. Remove {path}."
                )
    except BaseException:
        sock.close()
        raise
    return sock


def spawn(path: str) -> int:
    """Start a gateway for ``path`` in a session of its own; its pid."""
    run_dir = os.path.dirname(path)
    log_path = os.path.join(run_dir, LOG_NAME)
    try:
        if os.lstat(log_path).st_size > LOG_LIMIT:
            os.replace(log_path, log_path + ".1")
    except OSError:
        pass
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(log_path, flags, 0o600)
    except OSError as e:
        raise GatewayFailed(
            f"cannot open the gateway's log {log_path}: {e.strerror}"
            + (" (a symbolic link: remove it)" if os.path.islink(log_path) else "")
        ) from None
    argv = [sys.executable, "-m", "peers_mcp.gateway", "--listen", path]
    env = gateway_env(os.environ)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setsid()  # not in the agent's process group: its Ctrl-C is not ours
                os.chdir("/")
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
    finally:
        os.close(out)
    return pid


def _log_tail(path: str) -> str:
    try:
        fd = os.open(os.path.join(os.path.dirname(path), LOG_NAME), os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def connect_or_start(path: str) -> "_socket.socket":
    """Connect to the gateway, starting one (only one at a time) if nothing listens. Its
    directory must be ours and private, as the daemon's (``ensure_private_dir``)."""
    try:
        ensure_private_dir(os.path.dirname(path))
    except ConfigError as e:
        raise GatewayFailed(str(e)) from None
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    import fcntl

    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path + ".start", flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return _connect(path)  # another relay started it meanwhile
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        pid = spawn(path)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            time.sleep(0.01)
            try:
                return _connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    why = _log_tail(path)
                    log_path = os.path.join(os.path.dirname(path), LOG_NAME)
                    raise GatewayFailed(
                        f"the gateway exited with status {code}: {why} (see {log_path}; "
                        "reinstalling claude-peers brings the MCP SDK it needs)"
                    )
            if time.monotonic() > deadline:
                raise OSError(f"the gateway did not listen within {START_TIMEOUT:g} s")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the relay


def _key(rid: object) -> object:
    return rid if isinstance(rid, (int, str)) else repr(rid)


class Relay:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.fingerprint = fingerprint()
        """Read once: a relay started before an upgrade stays of its code (its gateway's)."""
        self.path = gateway_path(opts, self.fingerprint)
        self.sock: _socket.socket | None = None
        self.gbuf = bytearray()
        self.ibuf = bytearray()
        self.skipping = False
        self.init_line: bytes | None = None
        self.init_id: object = None
        self.init_answered = False
        self.init_at = 0.0
        self.down_since = time.monotonic()
        self.initialized_line: bytes | None = None
        self.pending: dict[object, tuple[object, str]] = {}
        """Requests sent and not answered: key → (id as sent, method)."""
        self.swallow: set[object] = set()
        self.backlog: list[tuple[float, bytes, object, str | None]] = []
        """Lines waiting for a gateway: (when read, line, id, method)."""
        self.agent_pid: int | None = None
        self.failed = False
        """The last gateway started exited at once: waiting longer will not help."""
        self.why = "not connected yet"
        self.retry_at = 0.0
        self.delay = 0.1
        self.next_check = 0.0

    # ------------------------------------------------------------ gateway link

    def hello(self) -> dict[str, object]:
        return {
            "relay": 1,
            "fingerprint": self.fingerprint,
            "pid": os.getpid(),
            "server_name": self.opts.server_name,
            "socket": self.opts.socket and os.path.abspath(self.opts.socket),
            "config": self.opts.config and os.path.abspath(self.opts.config),
            "cwd": os.getcwd(),
            "tty": tty_name(),
            "env": session_env(os.environ),
        }

    def connect(self) -> bool:
        """One attempt at a gateway session: True once connected and the handshake replayed."""
        try:
            sock = connect_or_start(self.path)
        except OSError as e:
            self.why = f"cannot reach the claude-peers MCP gateway: {e}"
            self.failed = isinstance(e, GatewayFailed)
            return False
        self.failed = False
        try:
            sock.settimeout(HELLO_TIMEOUT)
            sock.sendall((dumps(self.hello()) + "\n").encode())
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the gateway hung up during the hello")
                buf += chunk
            line, _, rest = bytes(buf).partition(b"\n")
            answer = loads(line)
            if not isinstance(answer, dict):
                raise OSError("the gateway answered the hello with something else")
        except (OSError, ValueError) as e:
            sock.close()
            self.why = f"the claude-peers MCP gateway failed: {e}"
            return False
        if "error" in answer:
            sock.close()
            raise Fatal(str(answer["error"]))
        sock.settimeout(None)
        agent = answer.get("agent_pid")
        self.agent_pid = agent if isinstance(agent, int) else None
        self.sock, self.gbuf = sock, bytearray(rest)
        self.delay = 0.1
        return self.replay()

    def attempt(self) -> None:
        if not self.connect():
            self.retry_at = time.monotonic() + (10.0 if self.failed else self.delay)
            self.delay = min(self.delay * 2, 2.0)

    def replay(self) -> bool:
        """Bring a new gateway session to where the client is: handshake, then backlog."""
        if self.init_line is not None:
            if self.init_answered:
                self.swallow.add(_key(self.init_id))
            else:
                self.pending[_key(self.init_id)] = (self.init_id, "initialize")
            if not self.send(self.init_line):
                return False
            if self.initialized_line is not None and not self.send(self.initialized_line):
                return False
        backlog, self.backlog = self.backlog, []
        for i, (_, line, rid, method) in enumerate(backlog):
            if method is not None:
                self.pending[_key(rid)] = (rid, method)
            if not self.send(line):
                self.backlog = backlog[i + 1 :]  # this one was answered by lost(); the rest wait
                return False
        return True

    def send(self, line: bytes) -> bool:
        assert self.sock is not None
        try:
            self.sock.sendall(line + b"\n")
            return True
        except OSError as e:
            self.lost(f"lost the claude-peers MCP gateway ({e})")
            return False

    def lost(self, why: str) -> None:
        """The gateway went away: answer what it left unanswered, then reconnect."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.why = why
        self.down_since = time.monotonic()
        self.swallow.clear()
        pending, self.pending = self.pending, {}
        for key, (rid, method) in pending.items():
            if self.init_line is not None and key == _key(self.init_id):
                continue  # replayed to the next gateway: the client still gets its answer
            self.error(
                rid,
                LOST,
                f"{why} before it answered {method}; whether it was done is not known "
                "(message_history shows what was sent). Try again.",
            )
        self.retry_at = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, 2.0)
        try:  # noqa: SIM105 - a gateway we started that has ended is not left a zombie
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass

    # ------------------------------------------------------------ client side

    def error(self, rid: object, code: int, message: str) -> None:
        body = {"code": code, "message": message}
        self.out(dumps({"jsonrpc": "2.0", "id": rid, "error": body}).encode() + b"\n")

    def out(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]

    def from_client(self, data: bytes) -> None:
        self.ibuf += data
        while True:
            end = self.ibuf.find(b"\n")
            if end < 0:
                if len(self.ibuf) > MAX_LINE:
                    self.ibuf.clear()
                    if not self.skipping:
                        self.skipping = True
                        self.error(None, PARSE_ERROR, f"a message over {MAX_LINE} bytes")
                return
            line = bytes(self.ibuf[:end]).rstrip(b"\r")
            del self.ibuf[: end + 1]
            if self.skipping:
                self.skipping = False  # the end of the overlong line
                continue
            if line.strip():
                self.client_line(line)

    def client_line(self, line: bytes) -> None:
        try:
            msg = loads(line)
        except ValueError:
            msg = None  # garbage: the SDK answers it as it always has
        rid: object = None
        method: str | None = None
        if isinstance(msg, dict):
            m = msg.get("method")
            method = m if isinstance(m, str) else None
            if method is not None and "id" in msg:
                rid = msg["id"]
                if method == "initialize":
                    self.init_line, self.init_id, self.init_answered = line, rid, False
                    self.init_at = time.monotonic()
            else:
                if method == "notifications/initialized":
                    self.initialized_line = line
                method = None  # only requests are awaited
        if self.sock is None:
            if line is self.init_line or line is self.initialized_line:
                return  # replayed from there once connected
            self.backlog.append((time.monotonic(), line, rid, method))
            return
        if method is not None:
            self.pending[_key(rid)] = (rid, method)
        self.send(line)

    def from_gateway(self, data: bytes) -> None:
        self.gbuf += data
        while True:
            end = self.gbuf.find(b"\n")
            if end < 0:
                return
            line = bytes(self.gbuf[: end + 1])
            del self.gbuf[: end + 1]
            try:
                msg = loads(line)
            except ValueError:
                msg = None
            if isinstance(msg, dict):
                if "jsonrpc" not in msg:
                    if msg.get("peers-relay") == "exit":
                        raise SystemExit(0)  # the agent is gone
                    continue
                if "method" not in msg and "id" in msg:
                    key = _key(msg["id"])
                    if key in self.swallow:
                        self.swallow.discard(key)  # the replayed initialize's answer
                        continue
                    self.pending.pop(key, None)
                    if self.init_line is not None and key == _key(self.init_id):
                        self.init_answered = True
            self.out(line)

    # ------------------------------------------------------------ the loop

    def expire(self, now: float) -> None:
        """Requests that waited too long for a gateway: answered with the reason."""
        keep = []
        wait = 0.0 if self.failed else QUEUE_TIMEOUT
        for item in self.backlog:
            when, _line, rid, method = item
            if now - max(when, self.down_since) < wait:
                keep.append(item)
            elif method is not None:
                self.error(rid, LOST, f"{self.why}; nothing was done. Try again shortly.")
        self.backlog = keep
        if (
            self.init_line is not None
            and not self.init_answered
            and now - max(self.init_at, self.down_since) >= wait
        ):
            self.init_answered = True  # answered now; a later gateway session replays it
            self.error(self.init_id, LOST, f"{self.why}. Try again shortly.")

    def agent_gone(self) -> bool:
        if self.agent_pid is None:
            return False
        try:
            os.kill(self.agent_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def run(self) -> int:
        import select

        self.attempt()
        poller = select.poll()
        poller.register(0, select.POLLIN)
        watched: int | None = None
        while True:
            fd = self.sock.fileno() if self.sock is not None else None
            if fd != watched:
                if watched is not None:
                    poller.unregister(watched)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                watched = fd
            timeout = None if fd is not None else max(0.0, self.retry_at - time.monotonic())
            events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            for ready, _mask in events:
                if ready == 0:
                    data = os.read(0, 65536)
                    if not data:
                        return 0  # the client closed stdin: the session is over
                    self.from_client(data)
                elif self.sock is not None and ready == self.sock.fileno():
                    try:
                        data = self.sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        self.from_gateway(data)
                    else:
                        self.lost("lost the claude-peers MCP gateway")
            if self.sock is None:
                now = time.monotonic()
                if now >= self.retry_at:
                    self.attempt()
                if self.sock is None:
                    self.expire(time.monotonic())
                    if now >= self.next_check:
                        self.next_check = now + AGENT_CHECK
                        if self.agent_gone():
                            return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--direct" in args or os.environ.get(DIRECT_ENV) == "1":
        from .server import main as direct

        return direct([a for a in args if a != "--direct"])
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    if "--version" in args:
        sys.stdout.write(f"peers-mcp {__version__}\n")
        return 0
    try:
        opts = parse_args(args)
        return Relay(opts).run()
    except Fatal as e:
        sys.stderr.write(f"peers-mcp: {e}\n")
        return 2
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
