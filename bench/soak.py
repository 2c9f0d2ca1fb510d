#!/usr/bin/env python3
"""Soak a real peersd: many peers joining, leaving and messaging for minutes on end.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/soak.py --minutes 10          # a table every 5 s, verdicts at the end
    .venv/bin/python bench/soak.py --seconds 60 --json   # what tests/test_soak.py runs, as JSON

The script starts its own ``python -m peersd`` in a throwaway HOME under /tmp with every
setting at its default (rate limit, queue limit, sweep every 5 s, orphan scans, logging
at info). ``--peers`` slots (default 50) each play one agent session in a loop:

- **join**: register a real live agent process (a ``sleep``) under the slot's name and
  subscribe to its mail;
- **live** for a few seconds: send to random other slots (about ``--rate`` messages a
  second per peer), claim and acknowledge its own mail as ``ev_mail`` events announce
  it, now and then ``set_summary``, ``list_peers``, ``history`` and ``message_status``;
- **leave** in one of three ways: ``unregister`` (65%), just closing the connection as
  a restarting helper does (20%; the same peer comes back), or its agent process dying
  (15%, ``--deaths``: the sweep marks the peer gone, and a new agent, a new session and
  so a new peer, takes over the name and inherits the mail that waited for it);
- pause, and join again.

Every ``--sample`` seconds it records the daemon's RSS and open file descriptors, its
CPU use, the open connections and peers, and the p50/p99 of every send's round trip
in that interval. At the end all peers leave, and the verdicts are:

- **memory flat**: final RSS within ``--rss-slack`` MiB (15) of the RSS after warm-up;
- **no fd leak**: the daemon's descriptors back to within 2 of their count before any
  client connected;
- **no latency drift**: p50 send latency of the last third of the run at most twice
  that of the first third (or within 0.3 ms of it: noise at these sizes);
- **nothing lost**: every acknowledgement matches the daemon's ``delivered`` count, and
  a sample of sent message ids is all found; no unexpected error codes.

Everything it starts is stopped by pid and the HOME is removed, also on Ctrl-C; agents
and the daemon get PR_SET_PDEATHSIG so even a SIGKILLed script leaves nothing behind.
Exit status: 0 when every verdict passed, 1 otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ctypes
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from peersd import protocol as p  # noqa: E402
from peersd.client import AsyncClient, Client, session_registration  # noqa: E402
from peersd.config import Settings, isolated_env, load  # noqa: E402
from peersd.errors import Code, PeersError  # noqa: E402

MiB = 1024 * 1024
EXPECTED_CODES = {Code.UNKNOWN_PEER, Code.NAME_TAKEN}
"""Sends to a slot that has not joined yet; a name still held by a dead agent's peer."""
WORDS = [
    "api",
    "port",
    "deploy",
    "review",
    "test",
    "branch",
    "merge",
    "lock",
    "schema",
    "cache",
    "build",
    "flaky",
    "fix",
]


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


try:
    _libc: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def _die_with_parent() -> None:
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- processes


class Procs:
    """Everything started here, stopped by pid."""

    def __init__(self) -> None:
        self.daemon: subprocess.Popen[bytes] | None = None
        self.agents: set[subprocess.Popen[bytes]] = set()
        self.home = Path(tempfile.mkdtemp(prefix="cps-", dir="/tmp"))

    def agent(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["sleep", "7200"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.agents.add(proc)
        return proc

    def kill_agent(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self.agents.discard(proc)

    def start_daemon(self, env: dict[str, str]) -> None:
        with open(self.home / "peersd.log", "wb") as out:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "peersd"],
                env=env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                cwd=str(self.home),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def stop_daemon(self) -> int | None:
        proc, self.daemon = self.daemon, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_daemon()
        for proc in list(self.agents):
            self.kill_agent(proc)
        shutil.rmtree(self.home, ignore_errors=True)


def proc_rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MiB
    raise RuntimeError("no VmRSS")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the run


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    connections: int
    peers_active: int
    peers_gone: int
    sends: int
    p50_ms: float
    p99_ms: float
    cpu_pct: float
    queued: int
    delivered: int


@dataclass
class Counts:
    joins: int = 0
    new_sessions: int = 0
    unregisters: int = 0
    helper_restarts: int = 0
    agent_deaths: int = 0
    sends: int = 0
    acked: int = 0
    claims: int = 0
    other_requests: int = 0
    expected_errors: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Result:
    seconds: float
    peers: int
    samples: list[Sample]
    counts: Counts
    warmup_rss_mib: float
    final_rss_mib: float
    fd_baseline: int
    fd_final: int
    connections_final: int
    p50_first_ms: float
    p50_last_ms: float
    p99_all_ms: float
    delivered_in_db: int
    sampled_ids_found: int
    sampled_ids: int
    daemon_exit: int | None
    rss_slack_mib: float
    verdicts: dict[str, bool] = field(default_factory=dict)

    def judge(self) -> dict[str, bool]:
        c = self.counts
        self.verdicts = {
            "memory flat": self.final_rss_mib - self.warmup_rss_mib <= self.rss_slack_mib,
            "no fd leak": self.fd_final <= self.fd_baseline + 2 and self.connections_final == 1,
            "no latency drift": (
                self.p50_last_ms <= 2 * self.p50_first_ms
                or self.p50_last_ms - self.p50_first_ms < 0.3
            ),
            "nothing lost": (
                c.acked == self.delivered_in_db and self.sampled_ids_found == self.sampled_ids
            ),
            "no unexpected errors": not c.errors,
            "clean exit": self.daemon_exit == 0,
        }
        return self.verdicts

    @property
    def ok(self) -> bool:
        return all(self.judge().values())


class Soak:
    def __init__(
        self,
        procs: Procs,
        settings: Settings,
        peers: int,
        rate: float,
        seconds: float,
        deaths: float = 0.15,
    ) -> None:
        self.procs = procs
        self.deaths = deaths
        self.settings = settings
        self.n = peers
        self.rate = rate
        self.seconds = seconds
        self.counts = Counts()
        self.lat_at = array.array("d")  # when each send returned (monotonic)
        self.lat = array.array("d")  # its round trip, seconds
        self.sent_ids: list[str] = []
        """A uniform sample (reservoir) of the ids sent, checked at the end."""
        self.recent_ids: list[str] = []
        self.stop = asyncio.Event()
        self.rng = random.Random(int(os.environ.get("SOAK_SEED", "0")) or None)
        self.names = [f"peer-{i:02d}" for i in range(peers)]

    def keep(self, message_id: str) -> None:
        self.recent_ids = [*self.recent_ids[-4:], message_id]
        n = self.counts.sends
        if len(self.sent_ids) < 1000:
            self.sent_ids.append(message_id)
        elif (j := self.rng.randrange(n)) < 1000:
            self.sent_ids[j] = message_id

    async def request(self, c: AsyncClient, req: p.Request) -> Any:
        try:
            return await c.call(req)
        except PeersError as e:
            if e.code in EXPECTED_CODES:
                self.counts.expected_errors += 1
                return None
            self.counts.errors.append(f"{type(req).__name__}: {e.code}: {e.message}")
            return None

    async def slot(self, i: int) -> None:
        rng = self.rng
        name = self.names[i]
        cwd = self.procs.home / "work" / f"repo{i % 5}"
        cwd.mkdir(parents=True, exist_ok=True)
        agent = self.procs.agent()
        self.counts.new_sessions += 1
        await asyncio.sleep(rng.uniform(0, 2))  # stagger the first joins
        while not self.stop.is_set():
            c = AsyncClient(
                self.settings, kind="claude-code", autostart=False, reconnect=False, timeout=15
            )
            await c.__aenter__()
            try:
                if not await self.join(c, agent, name, str(cwd)):
                    await asyncio.sleep(0.5)
                    continue
                await self.live(c, i, rng.uniform(3, 12))
                how = rng.random()
                if not self.stop.is_set() and how < self.deaths:
                    self.procs.kill_agent(agent)  # the session's process dies
                    self.counts.agent_deaths += 1
                    agent = self.procs.agent()
                    self.counts.new_sessions += 1
                elif not self.stop.is_set() and how < self.deaths + 0.2:
                    self.counts.helper_restarts += 1  # the same peer comes back
                else:
                    await self.request(c, p.Unregister(id=0))
                    self.counts.unregisters += 1
            finally:
                await c.aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), rng.uniform(0.2, 2.0))
        self.procs.kill_agent(agent)

    async def join(self, c: AsyncClient, agent: subprocess.Popen[bytes], name: str, cwd: str):
        while not self.stop.is_set():
            req = session_registration(self.settings, agent.pid, "claude-code", cwd=cwd)
            req.name = name
            try:
                await c.bind(req)
            except PeersError as e:
                if e.code != Code.NAME_TAKEN:
                    self.counts.errors.append(f"register: {e.code}: {e.message}")
                    return False
                # A dead agent's peer holds the name until the sweep notices (<= 5 s).
                self.counts.expected_errors += 1
                await asyncio.sleep(0.5)
                continue
            await c.subscribe(["mail"])
            self.counts.joins += 1
            await self.collect(c)  # mail that waited while we were away
            return True
        return False

    async def collect(self, c: AsyncClient) -> None:
        while True:
            claimed = await self.request(c, p.Claim(id=0, limit=50))
            if not claimed or not claimed.messages:
                return
            self.counts.claims += 1
            ids = [m.id for m in claimed.messages]
            acked = await self.request(c, p.Ack(id=0, message_ids=ids, via="wait"))
            if acked is not None:
                self.counts.acked += len(acked.acked)

    async def live(self, c: AsyncClient, i: int, seconds: float) -> None:
        rng = self.rng
        until = time.monotonic() + seconds
        last_collect = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < until:
            await asyncio.sleep(rng.expovariate(self.rate))
            to = self.names[rng.choice([j for j in range(self.n) if j != i])]
            text = " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))
            t0 = time.perf_counter()
            sent = await self.request(c, p.Send(id=0, to=to, text=text))
            if sent is not None:
                self.lat.append(time.perf_counter() - t0)
                self.lat_at.append(time.monotonic())
                self.counts.sends += 1
                self.keep(sent.message_id)
            mail = False
            while not c.events.empty():
                mail |= isinstance(c.events.get_nowait(), p.MailEvent)
            if mail or time.monotonic() - last_collect > 2:
                await self.collect(c)
                last_collect = time.monotonic()
            roll = rng.random()
            if roll < 0.02:
                await self.request(c, p.SetSummary(id=0, summary=f"working on {text[:40]}"))
            elif roll < 0.04:
                await self.request(c, p.ListPeers(id=0, scope="machine"))
            elif roll < 0.05:
                await self.request(c, p.History(id=0, limit=20))
            elif roll < 0.06 and self.recent_ids:
                await self.request(c, p.MessageStatus(id=0, message_ids=self.recent_ids))
            else:
                continue
            self.counts.other_requests += 1


def status(settings: Settings) -> p.DaemonStatus:
    with Client(settings, kind="cli", autostart=False, timeout=30) as c:
        return c.request(p.Status)


async def sampler(soak: Soak, pid: int, every: float, samples: list[Sample], quiet: bool) -> None:
    start = time.monotonic()
    last_cpu, last_t, seen = proc_cpu(pid), start, 0
    while not soak.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(soak.stop.wait(), every)
        now = time.monotonic()
        window = list(soak.lat[seen:])
        seen = len(window) + seen
        st = await asyncio.to_thread(status, soak.settings)
        cpu = proc_cpu(pid)
        s = Sample(
            t=now - start,
            rss_mib=proc_rss(pid),
            fds=proc_fds(pid),
            connections=st.connections,
            peers_active=st.peers_active,
            peers_gone=st.peers_gone,
            sends=len(window),
            p50_ms=pct(window, 50) * 1000,
            p99_ms=pct(window, 99) * 1000,
            cpu_pct=(cpu - last_cpu) / (now - last_t) * 100,
            queued=st.messages["queued"] + st.messages["leased"],
            delivered=st.messages["delivered"],
        )
        last_cpu, last_t = cpu, now
        samples.append(s)
        if not quiet:
            print(row(s), flush=True)


HEADER = (
    f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'conns':>5} {'active':>6} {'gone':>5} "
    f"{'sends':>6} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} {'waiting':>7} {'delivered':>9}"
)


def row(s: Sample) -> str:
    return (
        f"{s.t:7.1f} {s.rss_mib:8.1f} {s.fds:5d} {s.connections:5d} {s.peers_active:6d} "
        f"{s.peers_gone:5d} {s.sends:6d} {s.p50_ms:7.2f} {s.p99_ms:7.2f} {s.cpu_pct:6.1f} "
        f"{s.queued:7d} {s.delivered:9d}"
    )


def run(
    seconds: float,
    peers: int = 50,
    rate: float = 3.0,
    sample: float = 5.0,
    rss_slack: float = 15.0,
    quiet: bool = False,
    deaths: float = 0.15,
) -> Result:
    """Start a daemon, soak it for ``seconds``, stop everything; the measured Result."""
    procs = Procs()
    try:
        env = isolated_env(procs.home)
        settings = load(env=env)
        procs.start_daemon(env)
        assert procs.daemon is not None
        pid = procs.daemon.pid
        deadline = time.monotonic() + 20
        while True:
            try:
                status(settings)
                break
            except PeersError:
                if procs.daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "peersd did not start:\n" + (procs.home / "peersd.log").read_text()
                    ) from None
                time.sleep(0.05)
        time.sleep(0.3)
        fd_baseline = proc_fds(pid)
        soak = Soak(procs, settings, peers, rate, seconds, deaths)
        samples: list[Sample] = []
        if not quiet:
            log(f"peersd pid {pid}, HOME {procs.home}; {peers} peers for {seconds:g} s")
            print(HEADER, flush=True)

        async def main() -> None:
            tasks = [asyncio.create_task(soak.slot(i)) for i in range(peers)]
            sampling = asyncio.create_task(sampler(soak, pid, sample, samples, quiet))
            await asyncio.sleep(seconds)
            soak.stop.set()  # every peer leaves (unregister) and disconnects
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await sampling

        asyncio.run(main())
        time.sleep(0.5)
        fd_final = proc_fds(pid)
        final_rss = proc_rss(pid)
        st = status(settings)
        picked = soak.sent_ids
        with Client(settings, kind="cli", autostart=False, timeout=30) as c:
            found = sum(x.found for x in c.request(p.MessageStatus, message_ids=picked).items)
        warm = [s for s in samples if s.t >= min(10.0, seconds / 5)]
        warmup_rss = warm[0].rss_mib if warm else samples[0].rss_mib
        at, lat = soak.lat_at, soak.lat
        t0 = at[0] if at else 0.0
        span = (at[-1] - t0) if at else 0.0
        first = [x for t, x in zip(at, lat, strict=True) if t - t0 < span / 3]
        last = [x for t, x in zip(at, lat, strict=True) if t - t0 >= 2 * span / 3]
        result = Result(
            seconds=seconds,
            peers=peers,
            samples=samples,
            counts=soak.counts,
            warmup_rss_mib=warmup_rss,
            final_rss_mib=final_rss,
            fd_baseline=fd_baseline,
            fd_final=fd_final,
            connections_final=st.connections,
            p50_first_ms=pct(first, 50) * 1000,
            p50_last_ms=pct(last, 50) * 1000,
            p99_all_ms=pct(list(lat), 99) * 1000,
            delivered_in_db=st.messages["delivered"],
            sampled_ids_found=found,
            sampled_ids=len(picked),
            daemon_exit=procs.stop_daemon(),
            rss_slack_mib=rss_slack,
        )
        result.judge()
        log_text = (procs.home / "peersd.log").read_text(errors="replace")
        if "Traceback" in log_text:
            result.counts.errors.append("a traceback in the daemon log")
            result.judge()
        return result
    finally:
        procs.close()


def summary(r: Result) -> str:
    c = r.counts
    lines = [
        f"{r.peers} peers, {r.seconds:g} s: {c.joins} joins ({c.new_sessions} sessions), "
        f"{c.unregisters} unregisters, {c.helper_restarts} helper restarts, "
        f"{c.agent_deaths} agent deaths",
        f"{c.sends} sends, {c.acked} acknowledged, {c.claims} claims, "
        f"{c.other_requests} other requests, {c.expected_errors} expected refusals",
        f"RSS after warm-up {r.warmup_rss_mib:.1f} MiB, final {r.final_rss_mib:.1f} MiB "
        f"({r.final_rss_mib - r.warmup_rss_mib:+.1f}, limit +{r.rss_slack_mib:g})",
        f"fds before clients {r.fd_baseline}, after they left {r.fd_final}; "
        f"connections left {r.connections_final} (the status probe)",
        f"send p50 first third {r.p50_first_ms:.2f} ms, last third {r.p50_last_ms:.2f} ms; "
        f"p99 over the run {r.p99_all_ms:.2f} ms",
        f"delivered in the database {r.delivered_in_db} = acknowledged {c.acked}; "
        f"sampled ids found {r.sampled_ids_found}/{r.sampled_ids}",
    ]
    for name, passed in r.verdicts.items():
        lines.append(f"{'PASS' if passed else 'FAIL'}  {name}")
    for err in c.errors[:10]:
        lines.append(f"error: {err}")
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="run this long (default 1)")
    length.add_argument("--seconds", type=float, help="run this long")
    ap.add_argument("--peers", type=int, default=50, help="peer slots (default 50)")
    ap.add_argument("--rate", type=float, default=3.0, help="sends/s per live peer (3)")
    ap.add_argument(
        "--deaths",
        type=float,
        default=0.15,
        help="share of leaves where the agent process dies, so a new session (a new peer) "
        "follows (0.15); the rest: 20%% helper restarts, else unregister",
    )
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--rss-slack", type=float, default=15.0, help="allowed RSS growth, MiB")
    ap.add_argument("--json", action="store_true", help="results as JSON on stdout")
    args = ap.parse_args(argv)
    seconds = args.seconds or (args.minutes or 1.0) * 60
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        r = run(
            seconds,
            args.peers,
            args.rate,
            args.sample,
            args.rss_slack,
            quiet=args.json,
            deaths=args.deaths,
        )
    except KeyboardInterrupt:
        log("interrupted; everything stopped")
        return 130
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    else:
        print()
        print(summary(r))
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
