"""A minimal blocking client for peersd, cheap enough to start after every tool call.

``peers-hook`` runs as a fresh process for every hook event, so what it imports is
what it costs: ``msgspec`` (with ``typing``, ``typing_extensions`` and ``inspect``)
and the ~45 Structs of ``protocol.py`` would more than double its start-up time. This
module therefore speaks the same framed protocol with nothing but the standard
library's C-level pieces: a small msgpack codec for the plain values the protocol
uses (maps, arrays, strings, integers, floats, booleans, nil, binary), requests
written as dicts following the tags and field names of ``protocol.py`` exactly, and
answers decoded untyped (dicts with a ``"t"`` tag). Error codes come from ``errors``,
which imports nothing.

It never starts the daemon: a hook that finds nothing listening leaves the mail
waiting. ``socket_path`` resolves the socket like ``config.load`` does, importing
``config`` (tomllib, msgspec) only when a config file exists.
"""

import _socket
import _struct
import os

from . import __version__
from .errors import ClaudePeersError, Code, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: collections.abc would import the collections package
    from collections.abc import Mapping
    from typing import Any

PROTOCOL_VERSION = 1
"""Must equal ``protocol.PROTOCOL_VERSION`` (a test checks)."""
MAX_FRAME = 64 * 1024 * 1024
"""Refuse announced frame sizes above this (the daemon's own limit is far lower)."""

_F64 = _struct.Struct(">d")
_F32 = _struct.Struct(">f")

# --------------------------------------------------------------------------- msgpack


class CodecError(ClaudePeersError, ValueError):
    """Bytes that are not the msgpack this module understands."""


def packb(obj: object) -> bytes:
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(obj: object, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out.append(0xCB)
        out += _F64.pack(obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        n = len(data)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 0x100:
            out += b"\xd9" + n.to_bytes(1, "big")
        elif n < 0x10000:
            out += b"\xda" + n.to_bytes(2, "big")
        else:
            out += b"\xdb" + n.to_bytes(4, "big")
        out += data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        n = len(data)
        if n < 0x100:
            out += b"\xc4" + n.to_bytes(1, "big")
        elif n < 0x10000:
            out += b"\xc5" + n.to_bytes(2, "big")
        else:
            out += b"\xc6" + n.to_bytes(4, "big")
        out += data
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        if n < 16:
            out.append(0x90 | n)
        elif n < 0x10000:
            out += b"\xdc" + n.to_bytes(2, "big")
        else:
            out += b"\xdd" + n.to_bytes(4, "big")
        for item in obj:
            _pack(item, out)
    elif isinstance(obj, dict):
        n = len(obj)
        if n < 16:
            out.append(0x80 | n)
        elif n < 0x10000:
            out += b"\xde" + n.to_bytes(2, "big")
        else:
            out += b"\xdf" + n.to_bytes(4, "big")
        for key, value in obj.items():
            _pack(key, out)
            _pack(value, out)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n < 0x80:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif n >= 0:
        for code, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if n < 1 << (8 * size):
                out.append(code)
                out += n.to_bytes(size, "big")
                return
        raise OverflowError("integer too large for msgpack")
    else:
        for code, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if n >= -(1 << (8 * size - 1)):
                out.append(code)
                out += n.to_bytes(size, "big", signed=True)
                return
        raise OverflowError("integer too small for msgpack")


def unpackb(data: bytes) -> object:
    """Decode one msgpack value that fills ``data`` exactly."""
    try:
        obj, pos = _unpack(data, 0)
    except IndexError:
        raise CodecError("truncated msgpack data") from None
    except (UnicodeDecodeError, TypeError) as e:
        raise CodecError(f"invalid msgpack data: {e}") from None
    except RecursionError:
        raise CodecError("msgpack data nested too deeply") from None
    if pos != len(data):
        raise CodecError(f"{len(data) - pos} trailing bytes after the msgpack value")
    return obj


def _take(data: bytes, pos: int, n: int) -> bytes:
    end = pos + n
    if end > len(data):
        raise IndexError
    return data[pos:end]


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(_take(data, pos, size), "big")


def _unpack(data: bytes, pos: int) -> tuple[object, int]:
    c = data[pos]
    pos += 1
    if c < 0x80:
        return c, pos
    if c >= 0xE0:
        return c - 0x100, pos
    if 0xA0 <= c <= 0xBF:
        n = c & 0x1F
        return _take(data, pos, n).decode("utf-8", "surrogatepass"), pos + n
    if 0x90 <= c <= 0x9F:
        return _array(data, pos, c & 0x0F)
    if 0x80 <= c <= 0x8F:
        return _map(data, pos, c & 0x0F)
    if c == 0xC0:
        return None, pos
    if c == 0xC2:
        return False, pos
    if c == 0xC3:
        return True, pos
    if 0xCC <= c <= 0xCF:
        size = 1 << (c - 0xCC)
        return _uint(data, pos, size), pos + size
    if 0xD0 <= c <= 0xD3:
        size = 1 << (c - 0xD0)
        return int.from_bytes(_take(data, pos, size), "big", signed=True), pos + size
    if c == 0xCB:
        return _F64.unpack(_take(data, pos, 8))[0], pos + 8
    if c == 0xCA:
        return _F32.unpack(_take(data, pos, 4))[0], pos + 4
    if 0xD9 <= c <= 0xDB:
        size = 1 << (c - 0xD9)
        n = _uint(data, pos, size)
        pos += size
        return _take(data, pos, n).decode("utf-8", "surrogatepass"), pos + n
    if 0xC4 <= c <= 0xC6:
        size = 1 << (c - 0xC4)
        n = _uint(data, pos, size)
        pos += size
        return _take(data, pos, n), pos + n
    if c in (0xDC, 0xDD):
        size = 2 if c == 0xDC else 4
        return _array(data, pos + size, _uint(data, pos, size))
    if c in (0xDE, 0xDF):
        size = 2 if c == 0xDE else 4
        return _map(data, pos + size, _uint(data, pos, size))
    raise CodecError(f"unsupported msgpack type byte 0x{c:02x}")


def _array(data: bytes, pos: int, n: int) -> tuple[list[object], int]:
    items = []
    for _ in range(n):
        item, pos = _unpack(data, pos)
        items.append(item)
    return items, pos


def _map(data: bytes, pos: int, n: int) -> tuple[dict[object, object], int]:
    result = {}
    for _ in range(n):
        key, pos = _unpack(data, pos)
        value, pos = _unpack(data, pos)
        result[key] = value
    return result, pos


MESSAGE_DEFAULTS: dict[str, object] = {
    "reply_to": None,
    "delivered_at": None,
    "delivered_via": None,
    "attempts": 0,
    "sender_client": "",
    "sender_cwd": "",
    "sender_branch": None,
    "sender_host": "",
    "typed": None,
    "snapshot": None,
    "thread": None,
    "subject": None,
    "reactions": [],
}
"""``protocol.Message`` fields with defaults, which the daemon leaves out when unset."""


def message(raw: object) -> dict[str, object]:
    """A message as decoded from a frame, with the omitted defaults filled in."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise CodecError("not a message")
    return {**MESSAGE_DEFAULTS, **raw}


def frame(body: dict[str, object]) -> bytes:
    """One request with its 4-byte big-endian length prefix."""
    data = packb(body)
    return len(data).to_bytes(4, "big") + data


# --------------------------------------------------------------------------- settings


def _settings(
    env: "Mapping[str, str]", config: str | None
) -> "tuple[str, str, str | None, str | None, str]":
    """(url, socket, token, CA file, database) resolved as ``peersd.config.load`` does.

    Without a config file (the common case) only ``CLAUDE_PEERS_*`` variables and HOME
    matter, and nothing heavy is imported; with one, ``config.load`` decides.
    """
    home = env.get("HOME") or os.path.expanduser("~")
    explicit = config or env.get("CLAUDE_PEERS_CONFIG")
    if explicit or os.path.exists(os.path.join(home, ".claude", "claude-peers.toml")):
        from .config import load

        settings = load({"config": config}, env=env)
        return (
            settings.url,
            settings.socket,
            settings.token or None,
            settings.tls_ca or None,
            str(settings.db_path),
        )
    sock = env.get("CLAUDE_PEERS_SOCKET") or os.path.join(
        home, ".claude", "run", "claude-peers.sock"
    )
    db = env.get("CLAUDE_PEERS_DB") or os.path.join(home, ".claude", "claude-peers.db")
    if sock == "~" or sock.startswith("~/"):
        sock = home + sock[1:]
    if db == "~" or db.startswith("~/"):
        db = home + db[1:]
    return (
        env.get("CLAUDE_PEERS_URL", ""),
        sock,
        env.get("CLAUDE_PEERS_TOKEN") or None,
        env.get("CLAUDE_PEERS_TLS_CA") or None,
        os.path.abspath(db),
    )


def locate(
    env: "Mapping[str, str] | None" = None, config: str | None = None
) -> "tuple[str, str | None, str | None]":
    """Where the daemon is: the socket path or a hub's ``tcp://`` / ``tls://`` URL, with
    the hub's token and CA file (see ``_settings``)."""
    url, sock, token, cafile, _db = _settings(os.environ if env is None else env, config)
    url = url.strip()
    if url.startswith("unix://"):
        url, sock = "", url[len("unix://") :]
    if url:
        return url, token, cafile  # a hub: tcp://HOST:PORT or tls://HOST:PORT
    return os.path.abspath(sock), None, None


def hub_credentials(
    env: "Mapping[str, str] | None" = None, config: str | None = None
) -> "tuple[str, str]":
    """(machine id, machine secret) for a hub's hello: ``machine_secret.hub_credentials``
    (what ``client`` uses too) on the directory of this machine's database. Hub mode only."""
    from . import machine_secret

    db = _settings(os.environ if env is None else env, config)[4]
    try:
        return machine_secret.hub_credentials(os.path.dirname(db))
    except ConfigError as e:
        raise WireError(
            f"cannot use this machine's id or hub secret: {e}", Code.FORBIDDEN
        ) from None


def socket_path(env: "Mapping[str, str] | None" = None, config: str | None = None) -> str:
    """The daemon's socket path, or a hub's URL (see ``locate``)."""
    return locate(env, config)[0]


# --------------------------------------------------------------------------- connection


def connect_unix(path: str, timeout: float, factory: "Any" = _socket.socket) -> "Any":
    """Connect to the daemon's socket, waiting out a full accept queue.

    A burst of clients, or a daemon busy for a moment, fills the listen backlog, and a
    Unix socket connect then fails at once with EAGAIN instead of waiting: retry until
    ``timeout``. ``factory`` is ``socket.socket`` for callers that want the full object.
    """
    import time  # a built-in module: no cost worth avoiding

    deadline = time.monotonic() + timeout
    while True:
        sock = factory(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
        except BaseException:
            sock.close()
            raise


class WireError(ClaudePeersError):
    """The daemon could not be reached, hung up, or answered with an error frame."""

    def __init__(self, message: str, code: str = Code.UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Closed(WireError):
    """The daemon closed the connection (or never answered)."""


def _error(frame_: dict[str, object]) -> WireError:
    """The exception for an error frame; a daemon that is stopping counts as gone."""
    code, message = str(frame_.get("code")), str(frame_.get("message"))
    return Closed(message, code) if code == Code.SHUTTING_DOWN else WireError(message, code)


def tls_failed(url: object, e: BaseException) -> str:
    """What to say when the TLS handshake with a hub failed. A hub that cannot take one
    more connection closes it before the handshake (there is no TLS yet to say why in),
    which the client sees as a reset or an EOF: then say that this may be why."""
    import ssl

    message = f"TLS with the hub at {url} failed: {e or type(e).__name__}"
    if isinstance(e, (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        message += (
            ". If the hub closed the connection, it may be full: it closes one it cannot "
            "take before the handshake, when it serves tcp_max_connections already or "
            "tcp_max_per_address from this address have not finished their hello (its log "
            "says which). Try again shortly, or ask the hub's owner"
        )
    return message


def _connect_hub(url: str, timeout: float, cafile: str | None) -> "Any":
    """TCP (and TLS, which costs an ``ssl`` import) to a hub; only in hub mode."""
    import socket  # hub mode only: the local path keeps to _socket

    scheme, _, rest = url.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout)
    except (OSError, ValueError) as e:
        raise Closed(f"cannot reach the hub at {url}: {e}") from None
    if scheme == "tls":
        import ssl

        try:
            return ssl.create_default_context(cafile=cafile).wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise Closed(tls_failed(url, e)) from None
    return sock


class Wire:
    """One blocking connection: hello on connect, one request at a time, events kept.

    ``call`` returns the answer to a request as a dict and raises ``WireError`` for
    an error frame; pushed events (tags starting ``ev_``) that arrive meanwhile are
    kept in ``events`` for ``next_event``.
    """

    def __init__(
        self,
        path: str,
        timeout: float = 5.0,
        kind: str = "hook",
        token: str | None = None,
        cafile: str | None = None,
        config: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.events: list[dict[str, object]] = []
        self._buf = b""
        self._next_id = 0
        self.remote = path.startswith(("tcp://", "tls://"))
        """A hub over TCP, not this machine's daemon."""
        if self.remote:
            # A hub needs to know (and have proved) which machine this is.
            machine, secret = hub_credentials(config=config)
            self.sock = _connect_hub(
                path, timeout, cafile or os.environ.get("CLAUDE_PEERS_TLS_CA") or None
            )
            hello = {
                "t": "hello",
                "protocol": PROTOCOL_VERSION,
                "client_version": __version__,
                "client_kind": kind,
                "token": token if token is not None else os.environ.get("CLAUDE_PEERS_TOKEN"),
                "machine_id": machine,
                "machine_secret": secret,
            }
            self._pending_hello = frame(hello)
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise Closed(f"peersd is not running (no socket at {path})") from None
        except OSError as e:
            raise Closed(f"cannot use {path}: {e.strerror}") from None
        if st.st_uid != os.getuid():
            raise WireError(
                f"socket {path} is owned by uid {st.st_uid}, not by you; refusing it",
                Code.FORBIDDEN,
            )
        try:
            self.sock = connect_unix(path, timeout)
        except OSError as e:
            raise Closed(f"peersd is not running (cannot connect to {path}: {e})") from None
        hello = {
            "t": "hello",
            "protocol": PROTOCOL_VERSION,
            "client_version": __version__,
            "client_kind": kind,
        }
        self._pending_hello = frame(hello)

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:  # noqa: SIM105 - contextlib would be one more import per hook run
                sock.close()
            except OSError:
                pass

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            raise Closed("not connected to peersd")
        if self._pending_hello:
            # The hello goes out with the first request: one write, one round trip.
            data = self._pending_hello + data
            self._pending_hello = b""
            self._sendall(data)
            try:
                welcome = self.read()
            except TimeoutError:
                self.close()
                raise Closed(f"peersd did not answer within {self.timeout:g}s") from None
            if welcome.get("t") == "error":
                self.close()
                raise _error(welcome)
            if welcome.get("t") != "welcome":
                self.close()
                raise WireError(f"expected a welcome, got {welcome.get('t')!r}", Code.BAD_FRAME)
            return
        self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.close()
            raise Closed(f"lost the connection to peersd: {e}") from None

    def read(self, timeout: float | None = -1.0) -> dict[str, object]:
        """The next frame. ``timeout`` (seconds, None = forever) overrides the default;
        ``TimeoutError`` when it passes."""
        while True:
            buf = self._buf
            if len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if size > MAX_FRAME:
                    self.close()
                    raise WireError(f"frame of {size} bytes from peersd", Code.FRAME_TOO_LARGE)
                if len(buf) >= 4 + size:
                    body, self._buf = buf[4 : 4 + size], buf[4 + size :]
                    try:
                        result = unpackb(body)
                    except CodecError as e:
                        self.close()
                        raise WireError(
                            f"undecodable frame from peersd: {e}", Code.BAD_FRAME
                        ) from e
                    if not isinstance(result, dict):
                        self.close()
                        raise WireError("frame from peersd is not a map", Code.BAD_FRAME)
                    return result
            if self.sock is None:
                raise Closed("not connected to peersd")
            if timeout != -1.0:
                self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(262144)
            except TimeoutError:
                raise
            except OSError as e:
                self.close()
                raise Closed(f"lost the connection to peersd: {e}") from None
            finally:
                if timeout != -1.0 and self.sock is not None:
                    self.sock.settimeout(self.timeout)
            if not data:
                self.close()
                raise Closed("peersd closed the connection")
            self._buf = buf + data if buf else data

    def call(self, request: dict[str, object]) -> dict[str, object]:
        """Send ``request`` (given its ``t`` tag and fields; the id is set here)."""
        self._next_id += 1
        req_id = self._next_id
        request["id"] = req_id
        self._send(frame(request))
        while True:
            try:
                answer = self.read()
            except TimeoutError:
                self.close()
                raise Closed(f"peersd did not answer within {self.timeout:g}s") from None
            tag = answer.get("t")
            if isinstance(tag, str) and tag.startswith("ev_"):
                self.events.append(answer)
                continue
            answer_id = answer.get("id")
            if tag == "error" and answer_id in (None, req_id):
                raise _error(answer)
            if answer_id == req_id:
                return answer

    def next_event(self, timeout: float | None) -> dict[str, object] | None:
        """The next pushed event, or None when ``timeout`` seconds pass without one."""
        if self.events:
            return self.events.pop(0)
        while True:
            try:
                frame_ = self.read(timeout)
            except TimeoutError:
                return None
            tag = frame_.get("t")
            if isinstance(tag, str) and tag.startswith("ev_"):
                return frame_
            if tag == "error" and frame_.get("id") is None:
                self.close()
                raise _error(frame_)
