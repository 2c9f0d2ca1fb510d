"""Bad bytes on the socket get a typed error or a closed connection, never a dead daemon."""

from __future__ import annotations

import math
import socket
import struct
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersd import config, protocol, rules, wire
from peersd import protocol as p
from peersd.client import session_registration
from peersd.errors import CODES, ClaudePeersError, Code, PeersError

from .conftest import register

ROOT = Path(__file__).resolve().parent.parent


def raw(daemon, hello: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(daemon.settings.socket_path))
    if hello:
        s.sendall(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, client_version="t")))
        assert isinstance(read_frame(s), p.Welcome)
    return s


def read_frame(s: socket.socket) -> p.Frame | None:
    """The next frame, or None when the daemon closed the connection."""
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return p.server_decoder.decode(body)


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def still_serving(daemon) -> None:
    with daemon.client() as c:
        assert c.request(p.Status).version


def test_garbage_bytes_get_bad_frame_and_close(daemon):
    s = raw(daemon)
    s.sendall(frame(b"\xc1\xc1\xc1 not msgpack"))
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "bad_frame"
    assert closed(s)
    still_serving(daemon)


def test_oversized_length_is_refused_before_the_body(make_daemon):
    d = make_daemon(max_frame=100_000)
    s = raw(d)
    s.sendall(struct.pack(">I", 50_000_000))  # no body follows: it must not wait for one
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "frame_too_large"
    assert "100000" in err.message
    assert closed(s)
    still_serving(d)


def test_frames_before_an_oversized_header_are_still_answered(make_daemon):
    d = make_daemon(max_frame=100_000)
    s = raw(d)
    s.sendall(p.encode(p.Status(id=6)) + struct.pack(">I", 50_000_000))
    first = read_frame(s)
    assert isinstance(first, p.DaemonStatus) and first.id == 6
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "frame_too_large"
    assert closed(s)


def test_truncated_frame_then_hangup_leaves_the_daemon_serving(daemon):
    s = raw(daemon)
    s.sendall(struct.pack(">I", 100) + b"\x81\xa1t")
    s.close()
    still_serving(daemon)
    with daemon.client() as c:
        assert c.request(p.Status).connections == 1


@pytest.mark.parametrize(
    "body",
    [
        {"t": "send", "id": 7, "to": 3, "text": "x"},
        {"t": "send", "id": 7},
        {"t": "no_such_request", "id": 7},
        {"t": "claim", "id": 7, "limit": "many"},
        {"t": "ack", "id": 7, "message_ids": ["m-1"], "via": "telepathy"},
        {"id": 7},
    ],
)
def test_valid_msgpack_of_the_wrong_shape_gets_bad_request(daemon, body):
    s = raw(daemon)
    s.sendall(frame(msgspec.msgpack.encode(body)))
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "bad_request"
    assert err.id == 7
    # the connection stays usable
    s.sendall(p.encode(p.Status(id=8)))
    ok = read_frame(s)
    assert isinstance(ok, p.DaemonStatus) and ok.id == 8


def test_non_map_bodies(daemon):
    for body in ([1, 2, 3], "text", 42, None):
        s = raw(daemon)
        s.sendall(frame(msgspec.msgpack.encode(body)))
        err = read_frame(s)
        assert isinstance(err, p.Error) and err.code == "bad_request" and err.id is None


def test_request_before_hello(daemon):
    s = raw(daemon, hello=False)
    s.sendall(p.encode(p.Status(id=1)))
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "hello_required"
    assert closed(s)


def test_incompatible_protocol_version(daemon):
    s = raw(daemon, hello=False)
    s.sendall(p.encode(p.Hello(protocol=99, client_version="future")))
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "unsupported_version"
    assert "99" in err.message
    assert closed(s)


def test_second_hello_is_an_error_not_a_reset(daemon):
    s = raw(daemon)
    s.sendall(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, client_version="t")))
    err = read_frame(s)
    assert isinstance(err, p.Error) and err.code == "bad_request"
    s.sendall(p.encode(p.Status(id=2)))
    assert isinstance(read_frame(s), p.DaemonStatus)


def test_pipelined_requests_all_answered_in_order(daemon, agents):
    with daemon.client() as c:
        register(c, agents.spawn().pid, name="pipe")
    s = raw(daemon)
    s.sendall(b"".join(p.encode(p.Status(id=i)) for i in range(1, 101)))
    ids = [read_frame(s).id for _ in range(100)]
    assert ids == list(range(1, 101))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=200))
def test_fuzz_random_bodies_never_kill_the_daemon(daemon, body):
    s = raw(daemon)
    s.sendall(frame(body))
    reply = read_frame(s)
    assert reply is None or isinstance(reply, p.Frame)
    s.close()
    still_serving(daemon)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["t", "id", "to", "text", "limit", "message_ids", "via", "scope", "name"]),
        st.one_of(
            st.sampled_from(
                [r.__struct_config__.tag for r in p.REQUEST_TYPES if r is not p.Shutdown]
            ),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=40),
            st.lists(st.text(max_size=10), max_size=3),
            st.none(),
            st.booleans(),
        ),
    )
)
def test_fuzz_request_shaped_maps(daemon, body):
    s = raw(daemon)
    s.sendall(frame(msgspec.msgpack.encode(body)))
    reply = read_frame(s)
    assert reply is not None and isinstance(reply, p.Frame)
    s.close()
    still_serving(daemon)


# --------------------------------------------------------------------------- rules in types

RULES = [
    # (request, the field it breaks, code, words the message must hold)
    (p.SetName(id=0, name="alice\n"), "name", Code.INVALID_NAME, "letters, digits, '-' or '_'"),
    (p.SetName(id=0, name="P-0123ABCD"), "name", Code.INVALID_NAME, "not shaped like a peer id"),
    (p.SetName(id=0, name="x" * 33), "name", Code.INVALID_NAME, "1-32 letters"),
    (p.SetSummary(id=0, summary="y" * 1001), "summary", Code.TOO_LARGE, "length <= 1000"),
    (p.Send(id=0, to="x" * 301, text="hi"), "to", Code.TOO_LARGE, "length <= 300"),
    (p.Send(id=0, to="x", text="hi", reply_to="m-abcdef-1\n"), "reply_to", Code.BAD_REQUEST,
     "Expected a message id"),
    (p.Claim(id=0, limit=0), "limit", Code.BAD_REQUEST, ">= 1"),
    (p.Claim(id=0, lease_seconds=3601), "lease_seconds", Code.BAD_REQUEST, "<= 3600"),
    (p.Claim(id=0, lease_seconds=0), "lease_seconds", Code.BAD_REQUEST, "> 0"),
    (p.History(id=0, limit=1001), "limit", Code.BAD_REQUEST, "<= 1000"),
    (p.History(id=0, before=-1), "before", Code.BAD_REQUEST, ">= 0"),
    (p.Audit(id=0, limit=0), "limit", Code.BAD_REQUEST, ">= 1"),
    (p.Ack(id=0, message_ids=[], via="cli"), "message_ids", Code.BAD_REQUEST, "length >= 1"),
    (p.MessageStatus(id=0, message_ids=["m-abcdef-1"] * 1001), "message_ids", Code.BAD_REQUEST,
     "length <= 1000"),
    (p.Kill(id=0, target=""), "target", Code.BAD_REQUEST, "length >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("req", "field", "code", "words"), RULES, ids=[f"{type(r[0]).__name__}.{r[1]}" for r in RULES]
)
def test_a_broken_rule_is_refused_naming_the_field_and_the_rule(pair, req, field, code, words):
    """The rules live in the protocol's types: the decoder refuses, before any handler."""
    ca, a, *_ = pair
    with pytest.raises(PeersError) as err:
        ca.call(req)
    assert err.value.code == code, err.value.message
    assert f"at `$.{field}" in err.value.message and words in err.value.message, err.value
    assert "regex" not in err.value.message  # the rule in words, not the pattern
    assert ca.request(p.Whoami).peer.name == a.name  # nothing changed


REGISTER_FIELDS = [
    # (field, a value one past its limit)
    ("cwd", "/" + "c" * 4096),
    ("git_root", "/" + "g" * 4096),
    ("branch", "b" * 257),
    ("host", "h" * 256),
    ("tty", "/dev/" + "t" * 60),
    ("session_id", "s" * 257),
    ("machine_id", "m" * 129),
    ("summary", "y" * 1001),
]


@pytest.mark.parametrize(("field", "value"), REGISTER_FIELDS, ids=[f for f, _ in REGISTER_FIELDS])
def test_free_text_of_a_peer_is_bounded(daemon, agents, field, value):
    with daemon.client() as c:
        req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/tmp")
        setattr(req, field, value)
        with pytest.raises(PeersError) as err:
            c.call(req)
        assert err.value.code == Code.TOO_LARGE
        assert f"at `$.{field}`" in err.value.message and "length <=" in err.value.message
        setattr(req, field, value[:-1])  # at the limit: accepted
        assert c.call(req).peer.id


def test_a_100_kb_cwd_is_refused_and_nothing_is_stored(daemon, agents):
    """One peer must not flood every listing and mail header with its working directory."""
    with daemon.client() as c:
        before = c.request(p.Status).peers_active
        req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/tmp")
        req.cwd = "/" + "x" * 100_000
        with pytest.raises(PeersError) as err:
            c.call(req)
        assert err.value.code == Code.TOO_LARGE and "`$.cwd`" in err.value.message
        assert c.request(p.Status).peers_active == before
        assert all(len(x.cwd) < 4096 for x in c.request(p.ListPeers, include_gone=True).peers)
        with pytest.raises(PeersError) as err:
            c.request(p.Whoami)
        assert err.value.code == Code.NOT_REGISTERED  # the connection was not bound either


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("agent_pid", -1, ">= 0"),
        ("agent_start", math.nan, ">= 0"),
        ("agent_start", math.inf, "<= 1"),
        ("helper_pid", 2**31, "<= 2147483647"),
    ],
)
def test_numbers_of_a_registration_are_checked(daemon, agents, field, value, words):
    with daemon.client() as c:
        req = session_registration(c.settings, agents.spawn().pid, "claude-code", cwd="/tmp")
        setattr(req, field, value)
        with pytest.raises(PeersError) as err:
            c.call(req)
        assert err.value.code == Code.BAD_REQUEST
        assert f"at `$.{field}`" in err.value.message and words in err.value.message


def test_patterns_match_whole_strings_only():
    """Python's ``$`` matches before a final newline: the patterns must not let one through."""
    for value in ("alice\n", "\nalice", "alice\r", "p-0123abcd", "P-0123ABCD", "", "a" * 33):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(value, rules.PeerName)
    for value in ("alice", "a" * 32, "p-0123abc", "p-0123abcde", "peer-0123abcd"):
        assert msgspec.convert(value, rules.PeerName) == value
    assert rules.match_message_id("m-abcdef-12\n") is None
    assert rules.match_message_id("m-abcdef-12").groups() == ("abcdef", "12")
    assert rules.match_peer_id("p-0123abcd\n") is None and rules.match_peer_id("p-0123abcd")


# --------------------------------------------------------------------------- one vocabulary


def test_error_codes_are_one_vocabulary_and_a_new_one_is_passed_through():
    for code in CODES:
        frame = p.server_decoder.decode(
            msgspec.msgpack.encode({"t": "error", "code": code, "message": "m"})
        )
        assert isinstance(frame, p.Error) and frame.code == code
    # A code this client does not know (a newer daemon's) still decodes: it used to fail
    # the decode, which the clients took for a broken connection.
    frame = p.server_decoder.decode(
        msgspec.msgpack.encode({"t": "error", "code": "brand_new_code", "message": "m", "id": 3})
    )
    assert isinstance(frame, p.Error) and (frame.code, frame.id) == ("brand_new_code", 3)
    assert len(set(CODES)) == len(CODES) == len([k for k in vars(Code) if k.isupper()])


class NewerDaemon:
    """A stand-in for a newer daemon on a Unix socket: it welcomes every client and
    answers each request with an error whose code this client has never heard of."""

    CODE = "brand_new_code"

    def __init__(self, home: Path) -> None:
        import threading

        self.settings = config.load(env={"HOME": str(home)})
        self.settings.run_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.settings.socket)
        self.listener.listen(8)
        self.listener.settimeout(0.05)
        self.accepted = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import threading

        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        welcome = p.Welcome(
            protocol=1, daemon_version="9", daemon_pid=1, machine_id="m", host="h", conn_id=1
        )
        frames = p.FrameBuffer()
        conn.settimeout(0.1)
        with conn:
            while not self.done.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for body in frames.feed(data):
                    req = p.client_decoder.decode(body)
                    if isinstance(req, p.Hello):
                        conn.sendall(p.encode(welcome))
                    else:
                        error = {
                            "t": "error",
                            "code": self.CODE,
                            "message": "new rule",
                            "id": req.id,
                        }
                        body = msgspec.msgpack.encode(error)
                        conn.sendall(struct.pack(">I", len(body)) + body)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()


def test_clients_pass_an_error_code_they_do_not_know_to_the_caller(home):
    """A daemon with a new code (as claim_conflict was) and protocol 1: the sync client
    raised bad_frame, the async one failed every request in flight and reconnected, again
    and again. Now each caller gets a PeersError with the code and the daemon's message,
    and the connection lives on."""
    import asyncio

    from peersd.client import AsyncClient, Client

    newer = NewerDaemon(home)
    try:
        with Client(newer.settings, autostart=False, timeout=5) as c:
            for _ in range(2):
                with pytest.raises(PeersError) as err:
                    c.request(p.Status)
                assert (err.value.code, err.value.message) == (newer.CODE, "new rule")
            assert c.sock is not None  # the same connection
        assert newer.accepted == 1

        async def scenario() -> None:
            async with AsyncClient(newer.settings, autostart=False, timeout=5) as c:
                results = await asyncio.gather(
                    *(c.request(p.Status) for _ in range(3)), return_exceptions=True
                )
                for e in results:
                    assert isinstance(e, PeersError), e
                    assert (e.code, e.message) == (newer.CODE, "new rule")
                assert c.connected and c._task is not None and not c._task.done()

        asyncio.run(scenario())
        assert newer.accepted == 2  # one each: nobody reconnected
        with wire.Wire(str(newer.settings.socket_path)) as w:
            with pytest.raises(wire.WireError) as werr:
                w.call({"t": "status"})
            assert (werr.value.code, werr.value.message) == (newer.CODE, "new rule")
    finally:
        newer.close()


def our_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in our three packages, found by importing each module."""
    import importlib
    import inspect
    import pkgutil

    # handlers and coordination import each other: load them the way the daemon does
    importlib.import_module("peersd.server")
    found: list[type[BaseException]] = []
    for package in ("peersd", "peers_mcp", "peers_cli"):
        root = importlib.import_module(package)
        names = [package] + [
            info.name for info in pkgutil.walk_packages(root.__path__, package + ".")
        ]
        for name in names:
            module = importlib.import_module(name)
            found += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == name
            ]
    return found


def test_every_failure_we_raise_shares_one_root():
    """Each exception class any module of ours defines, so a new one cannot slip by."""
    classes = our_exception_classes()
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in classes}
    # the walk finds them all, in every package (a broken walk would pass vacuously)
    for known in (
        "peersd.errors.PeersError",
        "peersd.lifecycle.StartupError",
        "peers_mcp.delivery.Unsettled",
        "peers_mcp.server.Unavailable",
        "peers_cli.install.common.InstallError",
        "peers_cli.service.ServiceError",
    ):
        assert known in names, names
    strays = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, ClaudePeersError)
    )
    assert strays == [], f"derive these from peersd.errors.ClaudePeersError: {strays}"
    assert issubclass(protocol.PeersError, ClaudePeersError)


def test_the_hook_client_imports_the_codes_instead_of_spelling_them():
    for path in ("peersd/wire.py", "peers_mcp/hook.py"):
        source = (ROOT / path).read_text()
        spelled = [code for code in CODES if f'"{code}"' in source or f"'{code}'" in source]
        assert spelled == [], f"{path} spells {spelled}: use peersd.errors.Code"
