"""Property-based fuzzing of the frame decoder and of every request type.

Two layers:

- **Decoders, in process**: ``FrameBuffer`` reassembles any split of any frame sequence,
  stops exactly at an oversized header, and ``client_decoder`` / ``server_decoder`` /
  the hook's own msgpack codec (``peersd.wire``) fail on bad bytes only with their
  documented exception types.
- **A real daemon**: requests of every type, built from the msgspec Struct definitions
  with random (but correctly typed) field values, are sent over a registered connection.
  Each must get a frame back (its response type or a typed error other than
  ``internal``), the connection must stay open, another client must keep getting
  answers throughout, and ``status.connections`` must return to its baseline afterwards.
  Random mutations of valid frames (flipped bytes, truncation, extension, a forged
  length) must never kill the daemon either. ``shutdown`` is sent last, on its own.

Example counts are bounded to keep the whole file well under a minute.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersd import protocol as p
from peersd import rules, wire
from peersd.errors import CODES, Code, PeersError

from .conftest import DaemonProc, register

EXAMPLES = int(os.environ.get("PEERS_FUZZ_EXAMPLES", "40"))
"""Examples per request type; raise it for a longer hunt (the mutation test runs ~4x)."""
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KNOWN_CODES = set(CODES) - {Code.INTERNAL, Code.STORAGE}
"""What a fuzzed request may be refused with: any typed error but a bug or a storage fault."""
EXPECTED: dict[type[p.Request], type[p.Frame]] = {
    p.Register: p.PeerResult,
    p.Attach: p.PeerResult,
    p.Heartbeat: p.Ok,
    p.Unregister: p.Ok,
    p.SetSummary: p.PeerResult,
    p.SetName: p.PeerResult,
    p.Whoami: p.PeerResult,
    p.ListPeers: p.PeerList,
    p.Send: p.Sent,
    p.Broadcast: p.BroadcastSent,
    p.MessageStatus: p.Statuses,
    p.Claim: p.Claimed,
    p.Ack: p.Acked,
    p.Release: p.Released,
    p.History: p.HistoryPage,
    p.Subscribe: p.Ok,
    p.Status: p.DaemonStatus,
    p.Shutdown: p.Ok,
    p.Sweep: p.SweepResult,
    p.Kill: p.KillResult,
    p.Audit: p.AuditPage,
    p.ForgetMachine: p.Ok,
    p.ListMachines: p.MachineList,
    p.TouchFiles: p.Ok,
    p.CheckEdit: p.EditCheck,
    p.ClaimFiles: p.FilesClaimed,
    p.ReleaseFiles: p.FilesReleased,
    p.FileStatus: p.FileStatuses,
    p.ListFiles: p.FileListing,
    p.SetStatus: p.PeerResult,
    p.CreateTask: p.TaskResult,
    p.UpdateTask: p.TaskResult,
    p.ListTasks: p.TaskList,
    p.TaskInfo: p.TaskResult,
    p.PostDecision: p.DecisionResult,
    p.RevokeDecision: p.DecisionResult,
    p.QueryDecisions: p.DecisionList,
    p.SetGroup: p.PeerResult,
    p.Propose: p.ProposalResult,
    p.Vote: p.ProposalResult,
    p.ListProposals: p.ProposalList,
    p.MakeReport: p.Report,
    p.React: p.Ok,
    p.Search: p.SearchResults,
    p.RenamePeer: p.PeerResult,
    p.ReleaseClaims: p.FilesReleased,
}
FUZZED = [t for t in p.REQUEST_TYPES if t is not p.Shutdown]
BYSTANDER = "bystander"

# --------------------------------------------------------------------------- strategies

INT64 = st.integers(-(2**63), 2**63 - 1)
ANY_INT = st.one_of(
    st.integers(-3, 1100),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**53, 2**63 - 1, -(2**63), 2**64 - 1]),
    st.integers(-(2**63), 2**64 - 1),
)
ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.floats(min_value=-10, max_value=4000),
    st.integers(-10, 10**7),  # msgpack ints are accepted for float fields
)
UTF8_CHAR = st.characters(codec="utf-8")
"""Any character msgpack can carry: lone surrogates cannot be encoded by any client."""
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=UTF8_CHAR, max_size=300),
    st.text(alphabet="abcXYZ019-_ @.", min_size=1, max_size=34),
    st.sampled_from(["", " ", "\x00", "\u202e", "a" * 33, "p-00000000", "@", "x@", "@y"]),
)
# Filled in with live values (real peer names, ids, message ids) by the fixture.
LIVE: dict[str, list[str]] = {"names": [], "message_ids": [], "others": []}
"""names: ours (fuzzer, bystander); others: peers the fuzzed registers made."""
OUR_AGENTS: set[int] = set()
"""The pids of the fuzzer's and the bystander's agents (see ``defused``)."""


def _live(key: str) -> st.SearchStrategy[str]:
    """One of the live values at the moment of the draw (they change as the run goes)."""

    def pick(i: int) -> str:
        values = LIVE[key]
        return values[i % len(values)] if values else "nobody"

    return st.builds(pick, st.integers(0, 1000))


NAMEISH = st.one_of(_live("names"), _live("names"), _live("others"), TEXT)
MESSAGE_ID = st.one_of(
    _live("message_ids"),
    st.from_regex(r"\Am-[0-9a-f]{6}-[0-9]{1,18}\Z"),
    TEXT,
)
FIELD_HINTS: dict[str, st.SearchStrategy[typing.Any]] = {
    "to": NAMEISH,
    "target": NAMEISH,
    "peer": NAMEISH,
    "from_peer": NAMEISH,
    "name": NAMEISH,
    "reply_to": MESSAGE_ID,
    "message_ids": st.one_of(
        st.lists(_live("message_ids"), min_size=1, max_size=3), st.lists(MESSAGE_ID, max_size=6)
    ),
    "text": st.one_of(TEXT, st.builds(str.__mul__, UTF8_CHAR, st.integers(30000, 33000))),
    "summary": st.one_of(TEXT, st.builds(str.__mul__, UTF8_CHAR, st.integers(990, 1010))),
    "path": st.one_of(TEXT, st.sampled_from(["/", "/tmp/r/a.py", "/tmp/r/**", "/a/../b", "x"])),
    "repo": st.one_of(TEXT, st.sampled_from(["/", "/tmp/r", "/tmp/r/"])),
}


def for_type(tp: typing.Any, name: str) -> st.SearchStrategy[typing.Any]:
    """Values of the field's declared type, biased to edges and live values."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:  # a constrained type: values either side of its bounds too
        base, *metas = typing.get_args(tp)
        return st.one_of(for_type(base, name), *(near_bounds(base, m) for m in metas))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):  # a nested value (FileRef)
        fields = msgspec.structs.fields(tp)
        return st.fixed_dictionaries({f.name: for_type(f.type, f.name) for f in fields})
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(for_type(arg, name) for arg in typing.get_args(tp)))
    if tp is type(None):
        return st.none()
    hint = FIELD_HINTS.get(name)
    if hint is not None and tp is not type(None) and (origin is list or tp is str):
        return hint
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(for_type(item, name), max_size=6)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return ANY_INT
    if tp is float:
        return ANY_FLOAT
    if tp is str:
        return TEXT
    raise AssertionError(f"no strategy for {tp!r} ({name})")  # a new field type: add one


def near_bounds(base: typing.Any, meta: msgspec.Meta) -> st.SearchStrategy[typing.Any]:
    """Values at and just past a ``Meta``'s limits, which the decoder must refuse cleanly."""
    edges: list[st.SearchStrategy[typing.Any]] = []
    if base is int and meta.ge is not None and meta.le is not None:
        edges.append(st.integers(meta.ge - 1, meta.le + 1))
    if base is float and meta.le is not None:
        low = meta.ge if meta.ge is not None else meta.gt
        edges.append(st.floats(low, meta.le * 1.01) | st.sampled_from([low, meta.le]))
    if base is str and meta.max_length is not None:
        n = meta.max_length
        edges.append(st.builds(str.__mul__, UTF8_CHAR, st.integers(max(n - 1, 0), n + 1)))
    return st.one_of(*edges) if edges else st.nothing()


@st.composite
def request_body(draw: st.DrawFn, cls: type[p.Request]) -> dict[str, typing.Any]:
    """A map the daemon will decode as ``cls``: required fields always, optional ones
    sometimes, every value of the declared type."""
    body: dict[str, typing.Any] = {"t": cls.__struct_config__.tag}
    for f in msgspec.structs.fields(cls):
        if f.name == "id":
            body["id"] = draw(INT64)
        elif f.required or draw(st.booleans()):
            body[f.name] = draw(for_type(f.type, f.name))
    return defused(body)


def defused(body: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """Keep fuzzed requests off our own two agents: a kill aimed at the bystander (or an
    attach acting as it) would end the test's witness, not find a bug."""
    target = body.get("target")
    ours = {n.lower() for n in [BYSTANDER, *LIVE["names"]]}
    if isinstance(target, str) and target.strip().partition("@")[0].lower() in ours:
        body["target"] = "nobody"
    if body.get("pid") in OUR_AGENTS:
        body["pid"] = None
    return body


def encoded(body: dict[str, typing.Any]) -> bytes:
    data = msgspec.msgpack.encode(body)
    return struct.pack(">I", len(data)) + data


# --------------------------------------------------------------------------- in process


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
@settings(max_examples=300, deadline=None)
def test_frame_buffer_reassembles_any_split(bodies, cuts):
    stream = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    fb = p.FrameBuffer(limit=1000)
    got: list[bytes] = []
    start = 0
    for end in [*points, len(stream)]:
        got += fb.feed(stream[start:end])
        start = end
    assert got == bodies
    assert fb.pending == 0 and fb.error is None


@given(
    before=st.lists(st.binary(max_size=50), max_size=5),
    size=st.integers(1001, 2**32 - 1),
    after=st.binary(max_size=100),
    chunk=st.integers(1, 64),
)
@settings(max_examples=200, deadline=None)
def test_frame_buffer_stops_at_an_oversized_header(before, size, after, chunk):
    stream = b"".join(struct.pack(">I", len(b)) + b for b in before)
    stream += struct.pack(">I", size) + after
    fb = p.FrameBuffer(limit=1000)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += fb.feed(stream[i : i + chunk])
    assert got == before
    assert fb.error is not None and fb.error.size == size and fb.error.limit == 1000
    assert fb.feed(b"\x00\x00\x00\x01x") == []  # nothing more is parsed


@given(data=st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_decoders_fail_only_with_their_own_errors(data):
    for decoder in (p.client_decoder, p.server_decoder):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decoder.decode(data)
    with contextlib.suppress(wire.CodecError):
        wire.unpackb(data)


def _str8(raw: bytes) -> bytes:
    """A msgpack str of exactly these bytes, UTF-8 or not."""
    return b"\xd9" + bytes([len(raw)]) + raw


RAW_STRINGS = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"\xf6", b"\xc3", b"\xed\xa0\x80", b"t", b"id", b"send", b"status"]),
)


@given(entries=st.lists(st.tuples(RAW_STRINGS, RAW_STRINGS), max_size=4))
@settings(max_examples=300, deadline=None)
def test_maps_of_arbitrary_strings_fail_only_as_the_daemon_expects(entries):
    """msgspec reports bad UTF-8 as UnicodeDecodeError, which the daemon also catches."""
    body = bytes([0x80 | len(entries)]) + b"".join(_str8(k) + _str8(v) for k, v in entries)
    for decoder in (p.client_decoder, p.server_decoder):
        with contextlib.suppress(msgspec.MsgspecError, UnicodeDecodeError):
            decoder.decode(body)


def test_wire_codec_refuses_deep_nesting_with_its_own_error():
    """A stream of nested arrays: a CodecError, not a RecursionError in the hook."""
    for opener in (b"\x91", b"\x81\xa1k"):
        with contextlib.suppress(wire.CodecError):
            wire.unpackb(opener * 100_000 + b"\xc0")


@given(data=st.data(), cls=st.sampled_from(p.REQUEST_TYPES))
@settings(max_examples=300, deadline=None)
def test_every_request_shape_round_trips(data, cls):
    """A well-typed body decodes and round-trips, or breaks a rule of its field's type and
    is refused with a known code and a message that names the field."""
    body = data.draw(request_body(cls))
    try:
        frame = p.client_decoder.decode(msgspec.msgpack.encode(body))
    except msgspec.ValidationError as e:
        error = rules.invalid_request(e)
        assert error.code in {Code.BAD_REQUEST, Code.INVALID_NAME, Code.TOO_LARGE}
        assert " - at `$." in error.message and "regex" not in error.message, error.message
        return
    assert type(frame) is cls
    again = p.client_decoder.decode(p.encode(frame)[4:])
    assert msgspec.structs.asdict(again) == msgspec.structs.asdict(frame) or _has_nan(body)


def _has_nan(body: dict[str, typing.Any]) -> bool:
    return any(isinstance(v, float) and v != v for v in body.values())


# --------------------------------------------------------------------------- a real daemon


class Raw:
    """A raw connection that speaks frames and matches answers by id."""

    def __init__(self, path: str, kind: str = "other") -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.sock.sendall(p.encode(p.Hello(protocol=1, client_version="fuzz", client_kind=kind)))
        assert isinstance(self.read(), p.Welcome)

    def read(self) -> p.Frame | None:
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + size:
                    body, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    return p.server_decoder.decode(body)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk

    def ask(self, data: bytes, req_id: int | None) -> p.Frame:
        self.sock.sendall(data)
        while True:
            frame = self.read()
            assert frame is not None, "the daemon closed a connection that sent a valid frame"
            if isinstance(frame, p.EVENT_TYPES):
                continue
            if getattr(frame, "id", None) == req_id:
                return frame
            assert not isinstance(frame, p.Error), f"unexpected error frame {frame}"

    def close(self) -> None:
        self.sock.close()


class FuzzRig:
    def __init__(self, daemon: DaemonProc, agent_pids: list[int]) -> None:
        self.daemon = daemon
        self.fuzz_agent, bystander_agent = agent_pids
        OUR_AGENTS.update(agent_pids)
        self.bystander = daemon.client("cli")
        by = register(self.bystander, bystander_agent, name=BYSTANDER)
        self.bystander_id = by.id
        self.fz: Raw | None = None
        self.count = 0
        self.latencies: list[float] = []

    def connection(self) -> Raw:
        if self.fz is None:
            self.fz = Raw(str(self.daemon.settings.socket_path))
        return self.fz

    def ensure_registered(self) -> None:
        fz = self.connection()
        reply = fz.ask(p.encode(p.Whoami(id=-1)), -1)
        if isinstance(reply, p.Error):
            assert reply.code == Code.NOT_REGISTERED, reply
            from peersd.client import session_registration

            req = session_registration(self.daemon.settings, self.fuzz_agent, "other", cwd="/tmp")
            req.id = -2
            reply = fz.ask(p.encode(req), -2)
            assert isinstance(reply, p.PeerResult), reply
        peer = reply.peer
        if peer.group is not None:  # a fuzzed set_group: back with the bystander
            reply = fz.ask(p.encode(p.SetGroup(id=-3)), -3)
            assert isinstance(reply, p.PeerResult) and reply.peer.group is None, reply
        LIVE["names"] = sorted({peer.name, peer.id, BYSTANDER, self.bystander_id})
        self.count += 1
        if self.count % 10 == 1:
            everyone = self.bystander.request(
                p.ListPeers, scope="all", include_gone=True, include_self=True
            ).peers
            ours = {peer.id, self.bystander_id}
            LIVE["others"] = [v for x in everyone if x.id not in ours for v in (x.name, x.id)]
        if self.count % 5 == 1:  # keep some real mail around for claim, ack, release
            try:
                mid = self.bystander.request(p.Send, to=peer.id, text=f"mail {self.count}")
                LIVE["message_ids"] = [*LIVE["message_ids"][-20:], mid.message_id]
            except PeersError as e:
                assert e.code in (Code.QUEUE_FULL, Code.RATE_LIMITED), e

    def bystander_works(self) -> None:
        t0 = time.perf_counter()
        assert self.bystander.request(p.Whoami).peer.id == self.bystander_id
        self.latencies.append(time.perf_counter() - t0)

    def connections(self) -> int:
        return self.bystander.request(p.Status).connections

    def close_fuzzer(self) -> None:
        if self.fz is not None:
            self.fz.close()
            self.fz = None


@pytest.fixture(scope="module")
def rig() -> Iterator[FuzzRig]:
    home = Path(tempfile.mkdtemp(prefix="cpf-", dir="/tmp"))
    agents = [subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL) for _ in range(2)]
    # kill_enabled, so kill gets past its permission check (never aimed at the bystander).
    daemon = DaemonProc(home, {"CLAUDE_PEERS_KILL_ENABLED": "true", "CLAUDE_PEERS_KILL_GRACE": "1"})
    try:
        daemon.start()
        r = FuzzRig(daemon, [a.pid for a in agents])
        yield r
        r.close_fuzzer()
        r.bystander.close()
        # Shutdown is fuzzed last, on its own: it is answered and the daemon exits 0.
        fz = Raw(str(daemon.settings.socket_path))
        body = {"t": "shutdown", "id": 2**63 - 1, "junk": [1, {"x": None}]}
        reply = fz.ask(encoded(body), 2**63 - 1)
        assert isinstance(reply, p.Ok) and reply.id == 2**63 - 1
        assert daemon.proc is not None and daemon.proc.wait(15) == 0
        log = daemon.log()
        assert "Traceback" not in log, log[-4000:]
    finally:
        if daemon.running:
            daemon.stop()
        for a in agents:
            a.kill()
            a.wait()
        if os.environ.get("KEEP_HOME") is None:
            shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("cls", FUZZED, ids=lambda c: c.__struct_config__.tag)
def test_every_request_type_gets_an_answer(rig, cls):
    rig.close_fuzzer()  # whatever an earlier test left open is not part of the baseline
    baseline = rig.connections()

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data):
        rig.ensure_registered()
        body = data.draw(request_body(cls))
        reply = rig.connection().ask(encoded(body), body["id"])
        expected = EXPECTED[cls]
        assert isinstance(reply, expected | p.Error), f"{body} -> {reply}"
        if isinstance(reply, p.Error):
            assert reply.code in KNOWN_CODES, f"{body} -> {reply}"
        rig.bystander_works()

    try:
        run()
    finally:
        rig.close_fuzzer()
    deadline = time.monotonic() + 5
    while rig.connections() != baseline:
        assert time.monotonic() < deadline, f"connections {rig.connections()} != {baseline}"
        time.sleep(0.02)
    # A stall guard (the daemon busy with one bad client answers nobody), not a speed target.
    assert sorted(rig.latencies)[len(rig.latencies) // 2] < 0.25


@pytest.mark.parametrize(
    "body",
    [
        {"t": "register", "agent_pid": 2**64 - 1, "agent_start": 1.0, "cwd": "/"},
        {"t": "register", "agent_pid": 1, "agent_start": 1.0, "cwd": "/", "helper_pid": 2**63},
        {"t": "register", "agent_pid": 1, "agent_start": math.nan, "cwd": "/"},
        {"t": "register", "agent_pid": 1, "agent_start": math.inf, "cwd": "/"},
        {"t": "history", "before": 2**64 - 1},
        {"t": "audit", "before": 2**63},
    ],
    ids=["agent_pid", "helper_pid", "nan_start", "inf_start", "history_before", "audit_before"],
)
def test_numbers_sqlite_cannot_hold_are_bad_requests(rig, body):
    """Found by the request fuzzer: integers past 2**63 - 1 (msgspec accepts uint64)
    reached SQLite and came back as ``internal`` errors; a NaN start time came back as
    ``storage_error`` (SQLite stores NaN as NULL)."""
    rig.ensure_registered()
    reply = rig.connection().ask(encoded({**body, "id": 77}), 77)
    assert isinstance(reply, p.Error) and reply.code == Code.BAD_REQUEST, reply
    rig.bystander_works()


MUTATIONS = st.sampled_from(["flip", "truncate", "extend", "length", "splice", "zero"])


@st.composite
def mutated_stream(draw: st.DrawFn) -> bytes:
    frames = [
        encoded(draw(request_body(draw(st.sampled_from(FUZZED)))))
        for _ in range(draw(st.integers(1, 3)))
    ]
    data = bytearray(b"".join(frames))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(MUTATIONS)
        if how == "flip" and data:
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= draw(st.integers(1, 255))
        elif how == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif how == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif how == "length" and len(data) >= 4:
            data[0:4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
        elif how == "splice":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
        elif how == "zero":
            data += b"\x00\x00\x00\x00"
    return bytes(data)


def test_mutated_frames_never_hurt_the_daemon(rig):
    baseline = rig.connections()
    path = str(rig.daemon.settings.socket_path)

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 4)
    @given(stream=mutated_stream(), hello=st.booleans())
    def run(stream, hello):
        s = Raw(path) if hello else None
        sock = s.sock if s else socket.socket(socket.AF_UNIX)
        if s is None:
            sock.settimeout(10)
            sock.connect(path)
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
            # Whatever comes back is well-formed frames, then the daemon hangs up.
            reader = s or _wrap(sock)
            while True:
                try:
                    frame = reader.read()
                except ConnectionResetError:
                    break
                if frame is None:
                    break
                assert isinstance(frame, p.Frame)
        finally:
            sock.close()
        rig.bystander_works()

    run()
    deadline = time.monotonic() + 5
    while rig.connections() != baseline:
        assert time.monotonic() < deadline, f"connections {rig.connections()} != {baseline}"
        time.sleep(0.02)


def _wrap(sock: socket.socket) -> Raw:
    raw = Raw.__new__(Raw)
    raw.sock, raw.buf = sock, b""
    return raw


@pytest.mark.parametrize(
    "body",
    [
        b"\x81\xa1t" + _str8(b"\xf6"),  # the tag
        b"\x82" + _str8(b"\xf6") + b"\xa1x\xa1t\xa6status",  # a key
        b"\x83\xa1t\xa4send\xa2id\x07\xa2to" + _str8(b"\xed\xa0\x80"),  # a surrogate
        b"\x83\xa1t\xa4send\xa2id\x07\xa4junk" + _str8(b"\xc3"),  # invalid, and invalid junk
    ],
    ids=["tag", "key", "surrogate", "junk"],
)
def test_strings_that_are_not_utf8_get_an_answer_not_a_reset(rig, body):
    """Found by the mutation fuzzer: msgspec raised UnicodeDecodeError out of
    data_received, and the connection was dropped with no error frame."""
    s = Raw(str(rig.daemon.settings.socket_path))
    try:
        s.sock.sendall(struct.pack(">I", len(body)) + body)
        reply = s.read()
        assert isinstance(reply, p.Error), reply
        assert reply.code in (Code.BAD_FRAME, Code.BAD_REQUEST), reply
        if reply.code == Code.BAD_FRAME:
            assert s.read() is None  # then the daemon hangs up
        else:
            assert s.ask(p.encode(p.Status(id=5)), 5).id == 5  # and the connection lives on
    finally:
        s.close()
    rig.bystander_works()


def test_clients_survive_a_daemon_that_sends_bad_utf8(home, tmp_path):
    """A frame that is not UTF-8 from the other side: the sync client raises bad_frame,
    the async client counts the connection as lost and reconnects (its reader task
    used to die on the UnicodeDecodeError, leaving the client hung)."""
    import asyncio
    import threading

    from peersd.client import AsyncClient, Client
    from peersd.config import load

    settings_ = load(env={"HOME": str(home)})
    settings_.run_dir.mkdir(parents=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(settings_.socket)
    listener.listen(8)
    welcome = p.encode(
        p.Welcome(protocol=1, daemon_version="x", daemon_pid=1, machine_id="m", host="h", conn_id=1)
    )
    bad = b"\x82\xa1t\xa6status\xa2id" + _str8(b"\xf6")
    accepted = 0

    done = threading.Event()
    listener.settimeout(0.05)

    def serve() -> None:
        nonlocal accepted
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            accepted += 1
            with conn, contextlib.suppress(OSError):
                conn.recv(4096)  # the hello
                conn.sendall(welcome)
                conn.recv(4096)  # a request
                conn.sendall(struct.pack(">I", len(bad)) + bad)
                time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Client(settings_, autostart=False, timeout=5) as c:
            with pytest.raises(PeersError) as err:
                c.request(p.Status)
            assert err.value.code == Code.BAD_FRAME

        async def scenario() -> None:
            async with AsyncClient(settings_, autostart=False, timeout=5) as c:
                with pytest.raises(PeersError) as err:
                    await c.request(p.Status)
                assert err.value.code == Code.UNREACHABLE
                assert c._task is not None
                before = accepted
                deadline = time.monotonic() + 5
                while accepted == before:  # it reconnects by itself
                    assert time.monotonic() < deadline, "the async client never reconnected"
                    assert not c._task.done(), c._task
                    await asyncio.sleep(0.02)

        asyncio.run(scenario())
    finally:
        done.set()
        thread.join(5)
        listener.close()
