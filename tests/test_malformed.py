"""Bad bytes on the socket get a typed error or a closed connection, never a dead daemon."""

from __future__ import annotations

import socket
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersd import protocol as p

from .conftest import register


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
