#!/usr/bin/env python3
"""Benchmark what one agent session costs us: memory of idle sessions, and cold start.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_sessions.py          # 50 sessions, 3 memory and 7 start rounds
    .venv/bin/python bench/bench_sessions.py --quick  # 20 sessions, 2 rounds, 3 start rounds
    .venv/bin/python bench/bench_sessions.py --json   # results as JSON on stdout

It starts its own ``python -m peersd`` in a throwaway HOME under /tmp and measures, side
by side in one run (the variants interleaved round by round, so load on the machine hits
all alike):

**Memory of N idle sessions** (default 50). Each session is a stand-in agent (``sleep``)
and what we run for it, started by this script acting as the MCP client: the handshake
(``initialize``, ``notifications/initialized``, ``tools/list``) is done, the session is
registered with the daemon and left idle. Variants:

- ``relay``: ``peers-mcp`` (the stdlib relay) plus the idle-wake waiter as installed
  (``python -I -S -c … --wait``), plus the one gateway they share (its memory divided by N);
- ``direct``: ``peers-mcp --direct`` (the SDK server in each session's own process, the
  shape of main before the relay) plus the waiter as main installed it (the
  ``peers-hook`` console script);
- ``minimal SDK``: a minimal MCP server on the same SDK (one tool, stdio), no waiter;
- ``floor``: a bare ``python -I -S`` reading stdin.

Per session it reports USS (memory only that process has), PSS (shared pages divided
among their users) and RSS (what ``ps`` shows) of everything run for the session: the
sum over its processes (and the share of the gateway) divided by N. Medians of the rounds.

**Cold start to tools/list**: the official MCP SDK client (``stdio_client`` +
``ClientSession``) spawns the server, initializes and lists the tools; the time from
just before the spawn to the answer. Variants: ``relay`` with the gateway up (every
session but the first), ``relay, gateway cold`` (the first session: the gateway is
stopped before), ``direct``, ``minimal SDK``, and ``floor``: a stdlib server under
``python -I -S`` answering from canned JSON (the least any Python server can take).
Medians of the rounds.

Everything it starts is stopped by pid (the gateway found by its socket path), the
temporary HOME removed, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from peers_cli.install.common import hook_launcher  # noqa: E402
from peers_mcp import relay  # noqa: E402
from peersd import protocol as p  # noqa: E402
from peersd.client import Client  # noqa: E402
from peersd.config import isolated_env, load  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
MCP = str(BIN / "peers-mcp")
HOOK = str(BIN / "peers-hook")
MIB = 1 << 20
GOAL_MIB = 12.0
GOAL_MS = 150.0

MINIMAL = """\
import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server


async def list_tools(ctx, params):
    tool = types.Tool(name="ping", description="Answers pong.", input_schema={"type": "object"})
    return types.ListToolsResult(tools=[tool])


async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text="pong")])


server = Server("minimal", on_list_tools=list_tools, on_call_tool=call_tool)


async def main():
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
"""

FLOOR = """\
import sys
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    def field(name, line=line):
        rest = line.split(b'"' + name + b'":', 1)
        if len(rest) < 2:
            return None
        rest = rest[1].lstrip()
        end = min(i for i in (rest.find(b","), rest.find(b"}")) if i >= 0)
        return rest[:end].strip()
    rid = field(b"id")
    if rid is None:
        continue
    if b'"initialize"' in line:
        version = field(b"protocolVersion") or b'"2025-11-25"'
        result = (b'{"protocolVersion": ' + version + b', "capabilities": {"tools": {}}, '
                  b'"serverInfo": {"name": "floor", "version": "0"}}')
    elif b'"tools/list"' in line:
        result = b'{"tools": []}'
    else:
        out.write(b'{"jsonrpc": "2.0", "id": ' + rid + b', "error": {"code": -32601, '
                  b'"message": "no"}}\\n')
        out.flush()
        continue
    out.write(b'{"jsonrpc": "2.0", "id": ' + rid + b', "result": ' + result + b'}\\n')
    out.flush()
"""

INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "claude-code", "version": "bench"},
    },
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class World:
    """The daemon, the stand-in agents and every process started, stopped by pid."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cp-bs-", dir="/tmp"))
        self.env = isolated_env(self.home)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.settings = load(env=self.env)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        (self.home / "minimal.py").write_text(MINIMAL)
        (self.home / "floor.py").write_text(FLOOR)
        self.gateway_sock = str(self.settings.run_dir / relay.gateway_name(relay.fingerprint()))

    def start_daemon(self) -> None:
        with open(self.home / "peersd.log", "wb") as out:
            self.daemon = subprocess.Popen(
                [PYTHON, "-m", "peersd"],
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                with Client(self.settings, autostart=False, timeout=5) as c:
                    c.request(p.Status)
                return
            except Exception:
                if time.monotonic() > deadline or self.daemon.poll() is not None:
                    raise RuntimeError("peersd did not start") from None
                time.sleep(0.05)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kw)
        self.procs.append(proc)
        return proc

    def agent(self) -> subprocess.Popen[bytes]:
        return self.popen(["sleep", "900"], stdin=subprocess.DEVNULL)

    def gateways(self) -> list[int]:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            argv = proc.info["cmdline"] or []
            zombie = proc.info["status"] == psutil.STATUS_ZOMBIE
            if "peers_mcp.gateway" in argv and self.gateway_sock in argv and not zombie:
                found.append(proc.pid)
        return found

    def stop_gateways(self) -> None:
        for pid in self.gateways():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(15)

    def reap(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc in self.procs:
                self.procs.remove(proc)

    def kill(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self.reap(procs)

    def close(self) -> None:
        self.kill(list(self.procs))
        self.stop_gateways()
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def registered(world: World, agent_pids: set[int]) -> int:
    with Client(world.settings, autostart=False, timeout=10) as c:
        return sum(1 for x in c.request(p.ListPeers).peers if x.agent_pid in agent_pids)


def read_answer(proc: subprocess.Popen[bytes], rid: int) -> dict[str, Any]:
    assert proc.stdout
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a server closed its stdout")
        msg = json.loads(line)
        if msg.get("id") == rid:
            return msg


def memory_round(world: World, variant: str, n: int, rnd: int) -> dict[str, float]:
    """Start ``n`` idle sessions of ``variant``; their memory per session (MiB)."""
    prefix = f"bench-{variant}-{rnd}-"
    server = {
        "relay": [MCP],
        "direct": [MCP, "--direct"],
        "minimal SDK": [PYTHON, str(world.home / "minimal.py")],
        "floor": [PYTHON, "-I", "-S", "-c", "import sys; sys.stdin.buffer.read()"],
    }[variant]
    waiter = {
        "relay": [*shlex.split(hook_launcher()), "--wait"],
        "direct": [HOOK, "--wait"],
    }.get(variant)
    agents = [world.agent() for _ in range(n)]
    servers, waiters = [], []
    try:
        for i, agent in enumerate(agents):
            env = {
                **world.env,
                "CLAUDE_PEERS_AGENT_PID": str(agent.pid),
                "CLAUDE_CODE_SESSION_ID": f"{prefix}{i}",
            }
            servers.append(
                world.popen(
                    server,
                    env=env,
                    cwd=str(world.home),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
        if variant != "floor":
            for proc in servers:
                assert proc.stdin
                proc.stdin.write((json.dumps(INIT) + "\n").encode())
                proc.stdin.flush()
            for proc in servers:
                assert proc.stdin
                read_answer(proc, 0)
                proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
                proc.stdin.write(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}\n')
                proc.stdin.flush()
            for proc in servers:
                read_answer(proc, 1)
        if waiter is not None:
            deadline = time.monotonic() + 120
            while registered(world, {a.pid for a in agents}) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant}: not every session registered")
                time.sleep(0.2)
            for i in range(n):
                hook_input = {"session_id": f"{prefix}{i}", "hook_event_name": "Stop"}
                proc = world.popen(
                    waiter,
                    env=world.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                assert proc.stdin
                proc.stdin.write(json.dumps(hook_input).encode())
                proc.stdin.close()
                proc.stdin = None
                waiters.append(proc)
        time.sleep(3)  # settled: every waiter attached and blocking, every session idle
        for proc in waiters:
            if proc.poll() is not None:
                raise RuntimeError(f"{variant}: a waiter exited {proc.returncode}")
        shared = [psutil.Process(pid) for pid in world.gateways()] if variant == "relay" else []
        own = [psutil.Process(x.pid) for x in servers + waiters]
        mems = [x.memory_full_info() for x in own]
        shared_mems = [x.memory_full_info() for x in shared]
        total = {
            key: (sum(getattr(m, key) for m in mems + shared_mems)) / n / MIB
            for key in ("uss", "pss", "rss")
        }
        server_rss = statistics.median(psutil.Process(x.pid).memory_info().rss for x in servers)
        result = {**total, "server_rss": server_rss / MIB}
        if waiters:
            result["waiter_rss"] = (
                statistics.median(psutil.Process(x.pid).memory_info().rss for x in waiters) / MIB
            )
            result["waiter_uss"] = statistics.median(m.uss for m in mems[n:]) / MIB
        result["server_uss"] = statistics.median(m.uss for m in mems[:n]) / MIB
        if shared_mems:
            result["gateway_uss"] = sum(m.uss for m in shared_mems) / MIB
            result["gateway_rss"] = sum(m.rss for m in shared_mems) / MIB
        return result
    finally:
        world.kill(waiters)
        world.reap(servers)
        world.kill(agents)


async def cold_start(world: World, argv: list[str], agent_pid: int) -> float:
    env = {**world.env, "CLAUDE_PEERS_AGENT_PID": str(agent_pid)}
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(world.home))
    with open(os.devnull, "w") as devnull:
        start = time.perf_counter()
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            elapsed = (time.perf_counter() - start) * 1000
            assert listed.tools or argv[-1].endswith("floor.py")
    return elapsed


START_VARIANTS = ("relay", "relay, gateway cold", "direct", "minimal SDK", "floor")


def start_argv(world: World, variant: str) -> list[str]:
    return {
        "relay": [MCP],
        "relay, gateway cold": [MCP],
        "direct": [MCP, "--direct"],
        "minimal SDK": [PYTHON, str(world.home / "minimal.py")],
        "floor": [PYTHON, "-I", "-S", str(world.home / "floor.py")],
    }[variant]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="memory rounds (default 3)")
    ap.add_argument("--start-rounds", type=int, default=7, help="cold start rounds (default 7)")
    ap.add_argument("--quick", action="store_true", help="20 sessions, 2 rounds, 3 start rounds")
    ap.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.start_rounds = 20, 2, 3
    world = World()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        world.start_daemon()
        # Warm up: the .pyc files a real install has, and a gateway up.
        agent = world.agent()
        for variant in ("relay", "direct", "minimal SDK"):
            anyio.run(cold_start, world, start_argv(world, variant), agent.pid)

        starts: dict[str, list[float]] = {v: [] for v in START_VARIANTS}
        log(f"cold start to tools/list: {args.start_rounds} rounds")
        for _ in range(args.start_rounds):
            for variant in START_VARIANTS:
                if variant == "relay, gateway cold":
                    world.stop_gateways()
                ms = anyio.run(cold_start, world, start_argv(world, variant), agent.pid)
                starts[variant].append(ms)
        world.kill([agent])

        variants = ("relay", "direct", "minimal SDK", "floor")
        memory: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for rnd in range(args.rounds):
            for variant in variants:
                log(f"memory round {rnd + 1}/{args.rounds}: {args.sessions} x {variant}")
                memory[variant].append(memory_round(world, variant, args.sessions, rnd))
        load_avg = os.getloadavg()
    finally:
        world.close()

    start_med = {v: statistics.median(x) for v, x in starts.items()}
    mem_med = {
        v: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        for v, rounds in memory.items()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "sessions": args.sessions,
                    "rounds": args.rounds,
                    "start_rounds": args.start_rounds,
                    "cold_start_ms": start_med,
                    "cold_start_all_ms": starts,
                    "memory_mib_per_session": mem_med,
                    "loadavg": load_avg,
                },
                indent=2,
            )
        )
        return 0
    print(f"\nper-session cost, {args.sessions} idle sessions, medians of {args.rounds} rounds")
    print(f"({os.cpu_count()} CPUs, load average {load_avg[0]:.1f} at the end)\n")
    print(f"{'variant':14s} {'USS':>7s} {'PSS':>7s} {'RSS':>7s}   (MiB per session, all processes)")
    for v, m in mem_med.items():
        print(f"{v:14s} {m['uss']:7.1f} {m['pss']:7.1f} {m['rss']:7.1f}")
    print()
    for v, m in mem_med.items():
        parts = [f"server USS {m['server_uss']:.1f} RSS {m['server_rss']:.1f}"]
        if "waiter_uss" in m:
            parts.append(f"waiter USS {m['waiter_uss']:.1f} RSS {m['waiter_rss']:.1f}")
        if "gateway_uss" in m:
            parts.append(f"gateway (shared) USS {m['gateway_uss']:.1f} RSS {m['gateway_rss']:.1f}")
        print(f"{v:14s} " + "; ".join(parts))
    print(f"\ncold start to tools/list (SDK client over stdio), medians of {args.start_rounds}:\n")
    for v, ms in start_med.items():
        print(f"{v:22s} {ms:8.1f} ms   (min {min(starts[v]):.1f})")
    uss = mem_med["relay"]["uss"]
    print(
        f"\ngoal: <= {GOAL_MIB:g} MiB unique per session: {uss:.1f} MiB "
        f"{'met' if uss <= GOAL_MIB else 'MISSED'}; first tools/list <= {GOAL_MS:g} ms: "
        f"{start_med['relay']:.0f} ms {'met' if start_med['relay'] <= GOAL_MS else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
