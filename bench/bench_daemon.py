#!/usr/bin/env python3
"""Benchmark a real peersd: round trips, fan-in, push latency, list_peers, sweep, memory.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_daemon.py            # full run (~2 min on 2 cores)
    .venv/bin/python bench/bench_daemon.py --quick    # smaller counts (~20 s)
    .venv/bin/python bench/bench_daemon.py --json     # machine-readable results on stdout

The script starts its own ``python -m peersd`` in a throwaway HOME under /tmp (Unix
socket paths are limited to 107 bytes), with the per-sender rate limit switched off
(``CLAUDE_PEERS_RATE_PER_SECOND=0``) and a very large per-recipient queue limit, so
neither limit caps what is measured. Every other setting is the default (logging at
info, ``sync=normal``, the sweeper every 5 s). It also starts a minimal uvloop echo
server speaking the same 4-byte length framing as a baseline: figures are reported
next to "the raw socket round trip on this machine".

Every process the script starts (daemon, echo server, ``sleep`` processes standing in
for agent sessions, client worker processes) is stopped by pid, and the temporary
HOME removed, on normal exit, on errors and on Ctrl-C / SIGTERM. See
``docs/benchmarks.md`` for what each figure means and the measured results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from peersd import __version__, identity  # noqa: E402
from peersd import protocol as p  # noqa: E402
from peersd.client import Client, session_registration  # noqa: E402
from peersd.config import Settings, isolated_env, load  # noqa: E402

PYTHON = sys.executable
MiB = 1024 * 1024
QUEUE_LIMIT = 10_000_000
AGENT_SLEEP = "900"  # agents exit by themselves after 15 min even if cleanup never ran
TEXT = "benchmark message: please review the change in src/app.py and reply when done ok"
N_WORKERS = 16
N_PEERS = 1000
RSS_MESSAGES = 100_000


def mono() -> float:
    """CLOCK_MONOTONIC: comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


# --------------------------------------------------------------------------- config


@dataclass
class Plan:
    reps: int
    baseline_seconds: float
    seq_seconds: float
    push_messages: int
    push_gap: float
    agg_seconds: float
    list_calls: int
    sweeps: int
    peers: int = N_PEERS
    rss_messages: int = RSS_MESSAGES


FULL = Plan(
    reps=7,
    baseline_seconds=2.0,
    seq_seconds=3.0,
    push_messages=600,
    push_gap=0.002,
    agg_seconds=4.0,
    list_calls=200,
    sweeps=4,
)
QUICK = Plan(
    reps=3,
    baseline_seconds=0.5,
    seq_seconds=1.0,
    push_messages=200,
    push_gap=0.002,
    agg_seconds=1.5,
    list_calls=60,
    sweeps=3,
)

PHASES = ("baseline", "peers", "seq", "push", "aggregate", "rss", "backlog", "index")


# --------------------------------------------------------------------------- cleanup


try:  # loaded here, not in the forked child
    _libc: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:
    _libc = None


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if this script dies (even by SIGKILL). Linux."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Cleanup:
    """Everything this run started, stopped by pid in reverse order of creation."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[mp.process.BaseProcess] = []
        self.dirs: list[Path] = []

    def popen(self, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def stop_proc(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def kill_procs(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in procs:
            proc.wait()
        gone = set(map(id, procs))
        self.procs = [q for q in self.procs if id(q) not in gone]

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.is_alive() and w.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        for w in self.workers:
            w.join(5)
        self.workers.clear()

    def run(self) -> None:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stop_workers()
        # SIGTERM first so the daemon finishes its writes; agents are plain SIGKILLed.
        for proc in reversed(list(self.procs)):
            if proc.args[0] == "sleep":
                continue
            with contextlib.suppress(Exception):
                self.stop_proc(proc, timeout=10)
        self.kill_procs(list(self.procs))
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _child_init() -> None:
    """In forked workers: Ctrl-C is the parent's business; the parent kills us by pid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------- daemon


DAEMON_ENV = {
    "CLAUDE_PEERS_RATE_PER_SECOND": "0",
    "CLAUDE_PEERS_QUEUE_LIMIT": str(QUEUE_LIMIT),
}


class Daemon:
    def __init__(
        self,
        cleanup: Cleanup,
        home: Path,
        profile: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cleanup = cleanup
        self.home = home
        self.env = isolated_env(home, {**DAEMON_ENV, **(extra_env or {})})
        self.settings: Settings = load(env=self.env)
        self.log_path = home / "peersd.log"
        # The daemon runs in the temporary HOME, which is deleted at the end.
        self.profile = os.path.abspath(profile) if profile else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [PYTHON, "-m", "peersd"]
        if self.profile:
            args = [PYTHON, "-m", "cProfile", "-o", self.profile, "-m", "peersd"]
        with open(self.log_path, "wb") as out:
            self.proc = self.cleanup.popen(
                args,
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                cwd=str(self.home),
                start_new_session=True,  # Ctrl-C reaches only us; we stop it by pid
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"peersd exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.client() as c:
                    c.request(p.Status)
                return
            except Exception:
                time.sleep(0.02)
        raise RuntimeError(f"peersd did not answer within 20 s:\n{self.log_tail()}")

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.settings, kind="cli", autostart=False, timeout=timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the daemon process in MiB."""
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024 / MiB
        return values["VmRSS"], values["VmHWM"]

    def cpu(self) -> float:
        """User + system CPU seconds the daemon (all its threads) has used so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.cleanup.stop_proc(self.proc, timeout=60 if self.profile else 15)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Agents:
    """``sleep`` processes standing in for agent sessions: real, live, cheap pids."""

    def __init__(self, cleanup: Cleanup) -> None:
        self.cleanup = cleanup
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, n: int = 1) -> list[subprocess.Popen[bytes]]:
        new = [
            self.cleanup.popen(
                ["sleep", AGENT_SLEEP],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(n)
        ]
        self.procs += new
        return new

    def kill(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.cleanup.kill_procs(procs)
        gone = set(map(id, procs))
        self.procs = [q for q in self.procs if id(q) not in gone]

    def alive(self) -> int:
        return sum(1 for proc in self.procs if proc.poll() is None)

    def close(self) -> None:
        self.cleanup.kill_procs(self.procs)
        self.procs = []


def register(c: Client, agent_pid: int, name: str, **fields: Any) -> p.Peer:
    req = session_registration(
        c.settings, agent_pid, fields.pop("client", "claude-code"), cwd="/tmp", name=name, **fields
    )
    return c.call(req).peer


# --------------------------------------------------------------------------- baseline


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if end > n:
                break
            pos = end
        if pos:
            self.t.write(bytes(buf[:pos]))  # echo every complete frame, unchanged
            del buf[:pos]


def echo_server(path: str) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(_Echo, path)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(main())


def raw_round_trips(path: str, seconds: float) -> tuple[float, list[float]]:
    """Ping-pong one framed request-sized body; (round trips/s, latencies in s)."""
    frame = p.encode(p.Send(id=1, to="seq-b", text=TEXT))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    frames = p.FrameBuffer()
    lat: list[float] = []
    clock = time.perf_counter
    try:
        for _ in range(200):  # warm-up
            sock.sendall(frame)
            while not frames.feed(sock.recv(262144)):
                pass
        start = clock()
        deadline = start + seconds
        while True:
            t0 = clock()
            sock.sendall(frame)
            while not frames.feed(sock.recv(262144)):
                pass
            t1 = clock()
            lat.append(t1 - t0)
            if t1 >= deadline:
                break
        return len(lat) / (t1 - start), lat
    finally:
        sock.close()


# --------------------------------------------------------------------------- workers


def _aggregate_worker(
    settings: Settings,
    index: int,
    n: int,
    barrier: Any,
    results: Any,
    reps: int,
    seconds: float,
) -> None:
    _child_init()
    try:
        with Client(settings, kind="cli", autostart=False, timeout=60) as c:
            register(c, os.getpid(), f"w{index:02d}", client="other")
            target = f"w{(index + 1) % n:02d}"
            results.put(("ready", index))
            for _ in range(reps):
                barrier.wait(120)
                count = 0
                cpu = os.times()
                t0 = mono()
                deadline = t0 + seconds
                while True:
                    c.call(p.Send(id=0, to=target, text=TEXT))
                    count += 1
                    t1 = mono()
                    if t1 >= deadline:
                        break
                used = os.times()
                cpu_s = used.user + used.system - cpu.user - cpu.system
                results.put(("rep", index, count, t0, t1, cpu_s))
            c.request(p.Unregister)
    except BaseException as e:
        results.put(("error", index, repr(e)))


def _push_receiver(settings: Settings, pipe: Pipe) -> None:
    """What a real receiver does: on each doorbell (``MailEvent``, no text) claim what
    waits, read it, acknowledge it. Reports per message the time from send to the text
    in hand, and from send to the doorbell that led to it."""
    _child_init()
    try:
        with Client(settings, kind="other", autostart=False, timeout=120) as c:
            register(c, os.getpid(), "push-rx", client="other", receive="push")
            c.request(p.Subscribe, kinds=["mail"])
            pipe.send("ready")
            lat: list[float] = []
            bell: list[float] = []
            while True:
                ev = c.next_event(timeout=120)
                t_bell = mono()
                if ev is None:
                    pipe.send(("error", "no event for 120 s"))
                    return
                if not isinstance(ev, p.MailEvent):
                    continue
                claimed = c.request(p.Claim, limit=100).messages
                t1 = mono()
                if not claimed:
                    continue  # a doorbell for mail an earlier claim already took
                c.request(p.Ack, message_ids=[m.id for m in claimed], via="wait")
                for m in claimed:
                    if m.text.startswith("END"):
                        pipe.send((lat, bell))
                        lat, bell = [], []
                    elif m.text.startswith("QUIT"):
                        return
                    else:
                        t0 = float(m.text.split(" ", 2)[1])
                        lat.append(t1 - t0)
                        if m.id == ev.message_id:
                            bell.append(t_bell - t0)
    except BaseException as e:
        with contextlib.suppress(Exception):
            pipe.send(("error", repr(e)))


# --------------------------------------------------------------------------- phases


@dataclass
class Results:
    plan: Plan
    values: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return med(self.values.get(key, []))


class Baseline:
    """The echo server, kept running so raw samples can be paired with daemon reps.

    On a shared VM the raw round trip alone varies several-fold from minute to minute
    (mostly with whether client and server land on the same vCPU and whether the other
    vCPU is idle), so each daemon repetition is compared with a raw sample taken
    just before it rather than with one figure from the start of the run.
    """

    def __init__(self, r: Results, cleanup: Cleanup, home: Path) -> None:
        self.r = r
        self.cleanup = cleanup
        self.path = str(home / "echo.sock")
        self.proc = cleanup.popen(
            [PYTHON, str(Path(__file__).resolve()), "--_echo-server", self.path],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.01)

    def sample(self, seconds: float) -> tuple[float, float]:
        """Record one raw sample; returns (round trips/s, mean round trip in ms).

        The mean (1/rate), not the p50, is what latencies are compared with: on this
        kind of VM the raw distribution is bimodal (same vCPU or not), and its p50
        jumps between the modes from one sample to the next.
        """
        rate, lat = raw_round_trips(self.path, seconds)
        self.r.add("baseline_rps", rate)
        self.r.add("baseline_mean_ms", 1e3 / rate)
        self.r.add("baseline_p50_ms", pct(lat, 50) * 1e3)
        self.r.add("baseline_p99_ms", pct(lat, 99) * 1e3)
        return rate, 1e3 / rate

    def stop(self) -> None:
        self.cleanup.stop_proc(self.proc)


def phase_baseline(r: Results, base: Baseline) -> None:
    for rep in range(r.plan.reps):
        rate, _ = base.sample(r.plan.baseline_seconds)
        log(f"  baseline rep {rep + 1}: {rate:,.0f} round trips/s")


def seq_sends(c: Client, to: str, seconds: float) -> tuple[float, list[float]]:
    clock = time.perf_counter
    lat: list[float] = []
    start = clock()
    deadline = start + seconds
    while True:
        t0 = clock()
        c.call(p.Send(id=0, to=to, text=TEXT))
        t1 = clock()
        lat.append(t1 - t0)
        if t1 >= deadline:
            break
    return len(lat) / (t1 - start), lat


def raw_sends(c: Client, to: str, seconds: float) -> tuple[float, int]:
    """Like ``seq_sends`` but with a pre-encoded frame on the bare socket: no client library.

    What is left is the daemon's work plus the socket round trip, so the gap to
    ``seq_sends`` is what ``Client.call`` itself costs per request.
    """
    sock = c.sock
    assert sock is not None
    frame = p.encode(p.Send(id=2**40, to=to, text=TEXT))
    frames = p.FrameBuffer(c.settings.max_frame)
    clock = time.perf_counter
    n = 0
    start = clock()
    deadline = start + seconds
    while True:
        sock.sendall(frame)
        while not (bodies := frames.feed(sock.recv(262144))):
            pass
        if b"\xa1t\xa4sent" not in bodies[0][:8]:  # msgpack of {"t": "sent", ...}
            raise RuntimeError(f"unexpected answer: {p.server_decoder.decode(bodies[0])!r}")
        n += 1
        t1 = clock()
        if t1 >= deadline:
            return n / (t1 - start), n


def phase_seq(r: Results, d: Daemon, agents: Agents, base: Baseline | None) -> None:
    a, b = agents.spawn(2)
    with d.client() as ca, d.client() as cb:
        register(ca, a.pid, "seq-a")
        register(cb, b.pid, "seq-b")
        seq_sends(ca, "seq-b", 0.3)  # warm-up
        for rep in range(r.plan.reps):
            raw = base.sample(r.plan.baseline_seconds / 2) if base else None
            cpu, mine = d.cpu(), os.times()
            rate, lat = seq_sends(ca, "seq-b", r.plan.seq_seconds)
            r.add("seq_daemon_cpu_us", (d.cpu() - cpu) / len(lat) * 1e6)
            used = os.times()
            r.add(
                "seq_client_cpu_us",
                (used.user + used.system - mine.user - mine.system) / len(lat) * 1e6,
            )
            r.add("seq_sends_per_s", rate)
            r.add("seq_p50_ms", pct(lat, 50) * 1e3)
            r.add("seq_p99_ms", pct(lat, 99) * 1e3)
            r.add("seq_max_ms", max(lat) * 1e3)
            if raw:
                r.add("seq_sends_per_s_vs_raw", rate / raw[0])
                r.add("seq_p50_ms_vs_raw", pct(lat, 50) * 1e3 / raw[1])
            rate_raw, _ = raw_sends(ca, "seq-b", r.plan.seq_seconds / 2)
            r.add("seq_raw_sends_per_s", rate_raw)
            log(
                f"  sequential rep {rep + 1}: {rate:,.0f} sends/s, p50 {pct(lat, 50) * 1e3:.3f} ms;"
                f" bare-socket client {rate_raw:,.0f} sends/s"
                + (f"; raw echo just before: {raw[0]:,.0f}/s" if raw else "")
            )


def phase_push(
    r: Results, d: Daemon, agents: Agents, cleanup: Cleanup, base: Baseline | None
) -> None:
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    rx = ctx.Process(target=_push_receiver, args=(d.settings, there), daemon=True)
    rx.start()
    cleanup.workers.append(rx)
    (sender_agent,) = agents.spawn(1)
    with d.client() as c:
        register(c, sender_agent.pid, "push-tx")
        if not here.poll(30):
            raise RuntimeError("the push receiver did not start")
        got = here.recv()
        if got != "ready":
            raise RuntimeError(f"push receiver: {got}")
        pad = "x" * 40
        for rep in range(-1, r.plan.reps):  # rep -1 is a warm-up
            n = 50 if rep < 0 else r.plan.push_messages
            raw = base.sample(r.plan.baseline_seconds / 2) if base and rep >= 0 else None
            for _ in range(n):
                t0 = mono()
                c.call(p.Send(id=0, to="push-rx", text=f"t {t0!r} {pad}"))
                time.sleep(r.plan.push_gap)
            c.call(p.Send(id=0, to="push-rx", text="END"))
            if not here.poll(60):
                raise RuntimeError("the push receiver did not report")
            got = here.recv()
            if got[0] == "error":
                raise RuntimeError(f"push receiver: {got[1]}")
            lat, bell = got
            if len(lat) != n:
                raise RuntimeError(f"push receiver saw {len(lat)} of {n} messages")
            if rep < 0:
                continue
            r.add("push_p50_ms", pct(lat, 50) * 1e3)
            r.add("push_p99_ms", pct(lat, 99) * 1e3)
            r.add("push_max_ms", max(lat) * 1e3)
            r.add("bell_p50_ms", pct(bell, 50) * 1e3)
            r.add("bell_p99_ms", pct(bell, 99) * 1e3)
            if raw:
                r.add("push_p50_ms_vs_raw", pct(lat, 50) * 1e3 / raw[1])
                r.add("push_p99_ms_vs_raw", pct(lat, 99) * 1e3 / raw[1])
            log(
                f"  push rep {rep + 1}: p50 {pct(lat, 50) * 1e3:.3f} ms, "
                f"p99 {pct(lat, 99) * 1e3:.3f} ms ({n} messages); doorbell alone p50 "
                f"{pct(bell, 50) * 1e3:.3f} ms"
            )
        c.call(p.Send(id=0, to="push-rx", text="QUIT"))
    rx.join(10)


def phase_aggregate(r: Results, d: Daemon, cleanup: Cleanup) -> None:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N_WORKERS + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_aggregate_worker,
            args=(d.settings, i, N_WORKERS, barrier, results, r.plan.reps, r.plan.agg_seconds),
            daemon=True,
        )
        for i in range(N_WORKERS)
    ]
    for w in workers:
        w.start()
        cleanup.workers.append(w)

    def get() -> tuple:
        item = results.get(timeout=120)
        if item[0] == "error":
            raise RuntimeError(f"worker {item[1]} failed: {item[2]}")
        return item

    for _ in range(N_WORKERS):
        get()
    for rep in range(r.plan.reps):
        cpu = d.cpu()
        barrier.wait(60)
        reps = [get() for _ in range(N_WORKERS)]
        cpu = d.cpu() - cpu
        total = sum(item[2] for item in reps)
        wall = max(item[4] for item in reps) - min(item[3] for item in reps)
        r.add("agg_sends_per_s", total / wall)
        r.add("agg_daemon_cpu_us", cpu / total * 1e6)
        r.add("agg_client_cpu_us", sum(item[5] for item in reps) / total * 1e6)
        log(f"  aggregate rep {rep + 1}: {total:,} sends in {wall:.2f} s = {total / wall:,.0f}/s")
    for w in workers:
        w.join(30)
    cleanup.stop_workers()


def pipelined_sends(c: Client, to: str, total: int, window: int = 256) -> float:
    """Send ``total`` messages keeping ``window`` requests in flight; returns sends/s."""
    sock = c.sock
    assert sock is not None
    frames = p.FrameBuffer(c.settings.max_frame)
    sent = 0
    start = time.perf_counter()
    while sent < total:
        k = min(window, total - sent)
        sock.sendall(
            b"".join(p.encode(p.Send(id=10**9 + sent + i, to=to, text=TEXT)) for i in range(k))
        )
        got = 0
        while got < k:
            data = sock.recv(262144)
            if not data:
                raise RuntimeError("peersd closed the connection")
            for body in frames.feed(data):
                frame = p.server_decoder.decode(body)
                if isinstance(frame, p.Error):
                    raise RuntimeError(f"send failed: {frame.code}: {frame.message}")
                if isinstance(frame, p.Sent):
                    got += 1
        sent += k
    return total / (time.perf_counter() - start)


def phase_index(r: Results, cleanup: Cleanup, home: Path, agents: Agents) -> None:
    """Send throughput with the full-text search index on (the default: indexed in the
    background, in batches) against off (``CLAUDE_PEERS_SEARCH_INDEX=0``): two fresh
    daemons in this run, measured in alternation so both see the same load."""
    on = Daemon(cleanup, home / "on")
    off = Daemon(cleanup, home / "off", extra_env={"CLAUDE_PEERS_SEARCH_INDEX": "0"})
    for d in (on, off):
        d.home.mkdir()
        d.start()
    pids = agents.spawn(4)
    with on.client() as a_on, on.client() as b_on, off.client() as a_off, off.client() as b_off:
        register(a_on, pids[0].pid, "idx-a")
        register(b_on, pids[1].pid, "idx-b")
        register(a_off, pids[2].pid, "idx-a")
        register(b_off, pids[3].pid, "idx-b")
        for c in (a_on, a_off):
            seq_sends(c, "idx-b", 0.3)  # warm-up
        total = 20_000 if r.plan is FULL else 5_000
        for rep in range(r.plan.reps):
            got: dict[str, float] = {}
            order = [("on", a_on, on), ("off", a_off, off)]
            if rep % 2:
                order.reverse()
            for name, c, d in order:
                cpu = d.cpu()
                got[f"seq_{name}"], lat = seq_sends(c, "idx-b", r.plan.seq_seconds)
                got[f"pipe_{name}"] = pipelined_sends(c, "idx-b", total)
                time.sleep(1.5)  # the background indexing of what was sent counts as well
                got[f"cpu_{name}"] = (d.cpu() - cpu) / (len(lat) + total) * 1e6
            for key, value in got.items():
                r.add(f"index_{key}", value)
            r.add("index_seq_ratio", got["seq_on"] / got["seq_off"])
            r.add("index_pipe_ratio", got["pipe_on"] / got["pipe_off"])
            r.add("index_cpu_ratio", got["cpu_on"] / got["cpu_off"])
            log(
                f"  index rep {rep + 1}: sequential {got['seq_on']:,.0f}/s with the index, "
                f"{got['seq_off']:,.0f}/s without; pipelined {got['pipe_on']:,.0f}/s with, "
                f"{got['pipe_off']:,.0f}/s without; daemon CPU per send {got['cpu_on']:.1f} us "
                f"with, {got['cpu_off']:.1f} us without"
            )
    on.stop()
    off.stop()


def phase_rss(r: Results, d: Daemon, agents: Agents) -> None:
    a, b = agents.spawn(2)
    with d.client() as ca, d.client() as cb:
        register(ca, a.pid, "bulk-a")
        register(cb, b.pid, "bulk-b")
        counts = ca.request(p.Status).messages
        already = sum(counts.values())
        need = max(0, r.plan.rss_messages - already)
        if need:
            rate = pipelined_sends(ca, "bulk-b", need)
            r.info["pipelined_sends_per_s"] = rate
            r.info["pipelined_messages"] = need
            log(f"  sent {need:,} more messages pipelined (256 in flight): {rate:,.0f}/s")
        counts = ca.request(p.Status).messages
        total = sum(counts.values())
    time.sleep(0.5)
    rss, hwm = d.rss()
    r.add("rss_after_msgs_mib", rss)
    r.info["rss_after_msgs_hwm_mib"] = hwm
    r.info["messages_in_db"] = total
    log(f"  daemon RSS after {total:,} messages: {rss:.1f} MiB (peak {hwm:.1f} MiB)")


def spawn_crowd(r: Results, d: Daemon, agents: Agents, key: str) -> list[subprocess.Popen[bytes]]:
    """``plan.peers`` live agent processes, each registered as a peer (one connection)."""
    n = r.plan.peers
    t = time.perf_counter()
    crowd = agents.spawn(n)
    r.info[f"{key}_spawn_agents_s"] = time.perf_counter() - t
    with d.client() as reg:
        t = time.perf_counter()
        for i, proc in enumerate(crowd):
            register(
                reg,
                proc.pid,
                f"{key}-{i:04d}",
                client="claude-code" if i % 2 else "codex",
                summary=f"working on task {i}: refactoring module {i % 37} and its tests",
            )
        r.info[f"{key}_register_peers_s"] = time.perf_counter() - t
    log(
        f"  spawned {n} sleep agents in {r.info[f'{key}_spawn_agents_s']:.1f} s, registered "
        f"them in {r.info[f'{key}_register_peers_s']:.1f} s (one connection)"
    )
    return crowd


def sweeps(r: Results, c: Client, key: str) -> None:
    for rep in range(r.plan.reps):
        durations = []
        for _ in range(r.plan.sweeps):
            res = c.request(p.Sweep)
            if res.gone:
                raise RuntimeError(f"the sweep marked {len(res.gone)} live agents gone")
            durations.append(res.duration_ms)
        r.add(key, med(durations))
        log(f"  sweep rep {rep + 1}: median duration_ms {med(durations):.1f}")


def retire_crowd(r: Results, c: Client, agents: Agents, crowd: list[Any], key: str) -> None:
    """Kill the crowd's agents and let one sweep mark them all gone (timed)."""
    agents.kill(crowd)
    res = c.request(p.Sweep)
    r.info[f"{key}_sweep_marking_gone_ms"] = res.duration_ms
    log(
        f"  killed the agents; the sweep marking {len(res.gone)} peers gone took "
        f"{res.duration_ms:.1f} ms"
    )


def phase_peers(r: Results, d: Daemon, agents: Agents) -> None:
    n = r.plan.peers
    crowd = spawn_crowd(r, d, agents, "agent")
    (me,) = agents.spawn(1)
    with d.client() as c:
        register(c, me.pid, "lister")
        clock = time.perf_counter
        reply = c.request(p.ListPeers)
        seen = len(reply.peers)
        if seen < n:
            raise RuntimeError(f"list_peers returned {seen} peers, expected at least {n}")
        body = p.encode(reply)[4:]
        t = clock()
        for _ in range(20):
            p.server_decoder.decode(body)
        r.info["list_peers_reply_bytes"] = len(body)
        r.info["list_peers_client_decode_ms"] = (clock() - t) / 20 * 1e3
        r.info["list_peers_count"] = seen
        for rep in range(r.plan.reps):
            lat = []
            cpu = d.cpu()
            for _ in range(r.plan.list_calls):
                t0 = clock()
                c.call(p.ListPeers(id=0))
                lat.append(clock() - t0)
            r.add("list_daemon_cpu_ms", (d.cpu() - cpu) / len(lat) * 1e3)
            r.add("list_p50_ms", pct(lat, 50) * 1e3)
            r.add("list_p99_ms", pct(lat, 99) * 1e3)
            log(
                f"  list_peers rep {rep + 1}: p50 {pct(lat, 50) * 1e3:.2f} ms, "
                f"p99 {pct(lat, 99) * 1e3:.2f} ms ({seen} peers)"
            )
        sweeps(r, c, "sweep_ms")
        status = c.request(p.Status)
        r.add("last_sweep_ms", status.last_sweep_ms)
        r.info["peers_active"] = status.peers_active
        # The heart of a sweep measured outside the daemon: one /proc read per agent.
        starts = {proc.pid: identity.process_start(proc.pid) or 0.0 for proc in crowd}
        t = clock()
        for pid, start in starts.items():
            identity.is_alive(pid, start)
        r.info["liveness_check_all_agents_in_bench_ms"] = (clock() - t) * 1e3
        r.info["rss_with_1000_peers_mib"] = d.rss()[0]
        if agents.alive() < n:
            raise RuntimeError("some agent processes died during the measurement")
        retire_crowd(r, c, agents, crowd, "agent")


def phase_backlog(r: Results, d: Daemon, agents: Agents) -> None:
    """The sweep again with 1,000 live peers, now with the earlier phases' mail undelivered."""
    crowd = spawn_crowd(r, d, agents, "late")
    with d.client() as c:
        counts = c.request(p.Status).messages
        r.info["backlog_undelivered_messages"] = counts["queued"] + counts["leased"]
        sweeps(r, c, "sweep_backlog_ms")
        retire_crowd(r, c, agents, crowd, "late")


# --------------------------------------------------------------------------- report


@dataclass
class Row:
    label: str
    key: str
    unit: str
    target: float | None = None
    better: str = ">="  # or "<="
    vs: str = ""  # "rate" (share of the raw round-trip rate) or "lat" (multiple of raw RTT)

    def value(self, r: Results) -> float:
        return r.median(self.key)

    def ok(self, r: Results) -> bool | None:
        v = self.value(r)
        if self.target is None or math.isnan(v):
            return None
        return v >= self.target if self.better == ">=" else v <= self.target


ROWS = [
    Row("raw socket round trips/s (uvloop echo)", "baseline_rps", "/s"),
    Row("raw socket round trip mean (1/rate)", "baseline_mean_ms", "ms"),
    Row("raw socket round trip p50", "baseline_p50_ms", "ms"),
    Row("raw socket round trip p99", "baseline_p99_ms", "ms"),
    Row("sequential sends/s (1 client)", "seq_sends_per_s", "/s", 8000, ">=", "rate"),
    Row("sequential sends/s, bare-socket client", "seq_raw_sends_per_s", "/s", None, ">=", "rate"),
    Row("daemon CPU per sequential send", "seq_daemon_cpu_us", "us"),
    Row("client CPU per sequential send", "seq_client_cpu_us", "us"),
    Row("sequential send latency p50", "seq_p50_ms", "ms", None, "<=", "lat"),
    Row("sequential send latency p99", "seq_p99_ms", "ms", None, "<=", "lat"),
    Row("sequential send latency max", "seq_max_ms", "ms", None, "<=", "lat"),
    Row(f"aggregate sends/s ({N_WORKERS} processes)", "agg_sends_per_s", "/s", 20000, ">=", "rate"),
    Row("daemon CPU per send (16 processes)", "agg_daemon_cpu_us", "us"),
    Row("client CPU per send (16 processes)", "agg_client_cpu_us", "us"),
    Row(
        "push latency p50 (send -> doorbell -> claim -> text)",
        "push_p50_ms",
        "ms",
        0.5,
        "<=",
        "lat",
    ),
    Row("push latency p99", "push_p99_ms", "ms", 5.0, "<=", "lat"),
    Row("push latency max", "push_max_ms", "ms", None, "<=", "lat"),
    Row("doorbell alone p50 (send -> MailEvent)", "bell_p50_ms", "ms", None, "<=", "lat"),
    Row("doorbell alone p99", "bell_p99_ms", "ms", None, "<=", "lat"),
    Row(f"list_peers p50 ({N_PEERS} peers)", "list_p50_ms", "ms", 2.0, "<=", "lat"),
    Row(f"list_peers p99 ({N_PEERS} peers)", "list_p99_ms", "ms", None, "<=", "lat"),
    Row(f"daemon CPU per list_peers ({N_PEERS} peers)", "list_daemon_cpu_ms", "ms"),
    Row(f"sweep duration_ms ({N_PEERS} peers)", "sweep_ms", "ms", 50.0, "<="),
    Row("status last_sweep_ms", "last_sweep_ms", "ms", 50.0, "<="),
    Row(f"sweep, {N_PEERS} peers + undelivered backlog", "sweep_backlog_ms", "ms"),
    Row("sequential sends/s, search index on", "index_seq_on", "/s"),
    Row("sequential sends/s, search index off", "index_seq_off", "/s"),
    Row("sequential, index on / off (paired)", "index_seq_ratio", "ratio", 0.9, ">="),
    Row("pipelined sends/s, search index on", "index_pipe_on", "/s"),
    Row("pipelined sends/s, search index off", "index_pipe_off", "/s"),
    Row("pipelined, index on / off (paired)", "index_pipe_ratio", "ratio", 0.85, ">="),
    Row("daemon CPU per send, search index on", "index_cpu_on", "us"),
    Row("daemon CPU per send, search index off", "index_cpu_off", "us"),
    Row("daemon CPU per send, on / off (paired)", "index_cpu_ratio", "ratio"),
    Row("daemon RSS idle", "rss_idle_mib", "MiB", 60.0, "<="),
    Row(f"daemon RSS after >= {RSS_MESSAGES:,} messages", "rss_after_msgs_mib", "MiB", 60.0, "<="),
]


def fmt(v: float, unit: str) -> str:
    if math.isnan(v):
        return "-"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "ms":
        return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"
    if unit == "ratio":
        return f"{v:.3f}"
    return f"{v:.1f} {unit}"


def vs_baseline(row: Row, r: Results) -> str:
    paired = r.values.get(row.key + "_vs_raw")
    if paired:
        ratio = med(paired)
        return f"{ratio:.0%} of raw RT/s" if row.vs == "rate" else f"{ratio:.1f}x raw mean RT"
    v = row.value(r)
    if row.vs == "rate":
        base = r.median("baseline_rps")
        return "" if math.isnan(base) or math.isnan(v) else f"{v / base:.0%} of raw RT/s"
    if row.vs == "lat":
        base = r.median("baseline_mean_ms")
        return "" if math.isnan(base) or math.isnan(v) else f"{v / base:.1f}x raw mean RT"
    return ""


def table(r: Results) -> str:
    head = ("metric", "median", "target", "result", "vs baseline")
    lines = []
    for row in ROWS:
        if row.key not in r.values:
            continue
        target = "" if row.target is None else f"{row.better} {fmt(row.target, row.unit)}"
        ok = row.ok(r)
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        lines.append((row.label, fmt(row.value(r), row.unit), target, verdict, vs_baseline(row, r)))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    for line in lines:
        out.append(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    return "\n".join(out)


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu() -> float:
    """CPU-seconds of this process and every child it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """How much of the machine something other than this benchmark used meanwhile."""

    def __init__(self) -> None:
        self.busy, self.steal = system_cpu()
        self.own = own_cpu()
        self.wall = time.monotonic()
        self.loadavg = os.getloadavg()[0]

    def finish(self, r: Results) -> None:
        busy, steal = system_cpu()
        capacity = (time.monotonic() - self.wall) * (os.cpu_count() or 1)
        machine = (busy - self.busy) / capacity
        ours = (own_cpu() - self.own) / capacity
        r.info["load_average_at_start"] = self.loadavg
        r.info["machine_busy_share"] = machine
        r.info["this_benchmark_share"] = ours
        # The two are counted differently by the kernel (ticks vs exact), so a small
        # negative difference means "nothing else ran".
        r.info["other_processes_cpu_share"] = max(0.0, machine - ours)
        r.info["steal_cpu_share"] = (steal - self.steal) / capacity


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "peersd"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        git = head + (" + uncommitted changes in peersd/" if dirty else "")
    return {
        "git": git,
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "peersd": __version__,
    }


def report(r: Results, mode: str, elapsed: float, as_json: bool) -> None:
    info = machine_info()
    rows = {}
    for row in ROWS:
        if row.key in r.values:
            rows[row.key] = {
                "label": row.label,
                "unit": row.unit,
                "median": row.value(r),
                "reps": r.values[row.key],
                "target": row.target,
                "better": row.better if row.target is not None else None,
                "pass": row.ok(r),
            }
    if as_json:
        out = {
            "mode": mode,
            "elapsed_s": elapsed,
            "machine": info,
            "settings": DAEMON_ENV,
            "metrics": rows,
            "info": r.info,
        }
        print(json.dumps(out, indent=2))
        return
    print()
    print(
        f"peersd {info['peersd']} benchmark ({mode} run, {r.plan.reps} repetitions, medians) "
        f"on {info['cpus']} CPUs: {info['cpu']}; Python {info['python']}, Linux {info['kernel']}"
    )
    print(f"Code: git {info['git'] or '?'}")
    print(
        "Daemon settings: CLAUDE_PEERS_RATE_PER_SECOND=0 (rate limit off), "
        f"CLAUDE_PEERS_QUEUE_LIMIT={QUEUE_LIMIT:,} (queue limit out of the way); "
        "everything else default."
    )
    print()
    print(table(r))
    print()
    print(
        "vs baseline: throughput as a share of the raw echo round trips/s, latency as a "
        "multiple of the raw mean round trip (1/rate); paired with a raw sample taken just before "
        "each repetition where the phase allows."
    )
    print("Details:")
    for key, value in r.info.items():
        if key.endswith("_share"):
            value = f"{value:.0%}"
        elif isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"  {key}: {value}")
    print(f"\nTotal time: {elapsed:.1f} s")


def print_profile(path: str, limit: int = 30) -> None:
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan.reps = args.reps
    only = set(args.only.split(",")) if args.only else set(PHASES)
    unknown = only - set(PHASES)
    if unknown:
        print(f"unknown phase(s): {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}")
        return 2
    r = Results(plan)
    cleanup = Cleanup()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    started = time.perf_counter()
    meter = LoadMeter()
    try:
        home = Path(tempfile.mkdtemp(prefix="cpb-", dir="/tmp"))
        cleanup.dirs.append(home)
        base = None
        if "baseline" in only:
            log("baseline: uvloop echo server, same framing, one sync client")
            base = Baseline(r, cleanup, home)
            phase_baseline(r, base)
        daemon = Daemon(cleanup, home, args.profile_daemon)
        log(
            f"starting peersd in {home} with CLAUDE_PEERS_RATE_PER_SECOND=0, "
            f"CLAUDE_PEERS_QUEUE_LIMIT={QUEUE_LIMIT}"
            + (
                f" under cProfile ({args.profile_daemon}): figures are NOT valid"
                if args.profile_daemon
                else ""
            )
        )
        daemon.start()
        time.sleep(1.0)
        rss, _ = daemon.rss()
        r.add("rss_idle_mib", rss)
        log(f"  daemon pid {daemon.pid}, RSS idle {rss:.1f} MiB")
        agents = Agents(cleanup)
        if "peers" in only:
            log(f"{plan.peers} live peers: list_peers and sweep")
            phase_peers(r, daemon, agents)
        if "seq" in only:
            log("sequential sends: one sync Client, one Send at a time")
            phase_seq(r, daemon, agents, base)
        if "push" in only:
            log("push latency: receiver process subscribed to mail")
            phase_push(r, daemon, agents, cleanup, base)
        if base is not None:
            base.stop()
        if "aggregate" in only:
            log(f"aggregate: {N_WORKERS} processes, one Client and one peer each")
            phase_aggregate(r, daemon, cleanup)
        if "rss" in only:
            log(f"memory after {plan.rss_messages:,} messages")
            phase_rss(r, daemon, agents)
        if "backlog" in only:
            log(f"{plan.peers} live peers again, sweep with the undelivered mail of the run")
            phase_backlog(r, daemon, agents)
        daemon.stop()
        if "index" in only:
            log("search index: send throughput with background indexing on against off")
            phase_index(r, cleanup, home, agents)
        agents.close()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        cleanup.run()
        return 130
    except Exception:
        log("failed: cleaning up")
        cleanup.run()
        raise
    cleanup.run()
    elapsed = time.perf_counter() - started
    meter.finish(r)
    if args.profile_daemon:
        print_profile(args.profile_daemon)
    report(r, "quick" if args.quick else "full", elapsed, args.json)
    failed = [row.label for row in ROWS if row.key in r.values and row.ok(r) is False]
    if failed and not args.json:
        print("Missed targets: " + "; ".join(failed))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller counts")
    ap.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    ap.add_argument("--reps", type=int, help="override the number of repetitions")
    ap.add_argument("--only", help=f"comma-separated phases to run: {','.join(PHASES)}")
    ap.add_argument(
        "--profile-daemon",
        metavar="FILE",
        help="run peersd under cProfile, write stats to FILE and print the top entries "
        "(the figures of such a run are distorted by the profiler)",
    )
    ap.add_argument("--_echo-server", dest="echo_server", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
