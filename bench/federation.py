#!/usr/bin/env python3
"""Benchmark federation over NATS JetStream: three real machines, then a simulated fleet.

Run from the repository root with the project's virtualenv (test extras installed: they
bring nats-py and the nats-server binary)::

    .venv/bin/python bench/federation.py            # ~1-2 min on 2 cores
    .venv/bin/python bench/federation.py --quick    # smaller counts
    .venv/bin/python bench/federation.py --json     # machine-readable results on stdout

Part 1 starts one nats-server (config and credentials from ``peers federation init``)
and three ``python -m peersd`` "machines" on loopback, each with its own HOME and host
label, and measures send -> receive latency (``send`` called until the recipient's
connection has the ``ev_mail`` event) and throughput (a burst until every message was
claimed and acknowledged at the recipient), for mail to a peer on the same machine
(baseline, same run) and to a peer on another machine.

Part 2 simulates a larger fleet against a second nats-server (no auth: the permissions
are not what is measured): M machines, each with 20 peers in its directory entry, write
the directory bucket, and one new watcher loads all of it; each machine gets a durable
consumer on the mail stream and mail is published across them. It reports how the
directory, the stream and the server grow with M.

Every process started is stopped by pid; temporary directories are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from peersd import natsconf  # noqa: E402
from peersd import protocol as p  # noqa: E402
from peersd.directory import entry  # noqa: E402
from peersd.outbox import ENCODER, FedMail  # noqa: E402
from tests.federation_world import Machine, NatsServer, free_port, wait_for  # noqa: E402


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ part 1: three machines


def latency(sender: Any, receiver: Any, to: str, n: int) -> dict[str, float]:
    """One at a time: send, wait for the recipient's ev_mail, acknowledge it."""
    times: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        sender.request(p.Send, to=to, text=f"lat {i}")
        while True:
            ev = receiver.next_event(timeout=30)
            if isinstance(ev, p.MailEvent):
                break
            assert ev is not None, "no mail event within 30 s"
        times.append((time.perf_counter() - t0) * 1000)
        got = receiver.request(p.Claim, limit=50).messages
        if got:
            receiver.request(p.Ack, message_ids=[m.id for m in got], via="check")
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(pct(times, 0.99), 2),
        "max_ms": round(max(times), 2),
        "n": n,
    }


def throughput(sender: Any, receiver: Any, to: str, n: int) -> dict[str, float]:
    """A burst of n sends; until every one was claimed and acknowledged at the recipient."""
    t0 = time.perf_counter()
    for i in range(n):
        sender.request(p.Send, to=to, text=f"burst {i}")
    sent = time.perf_counter() - t0
    got = 0
    while got < n:
        batch = receiver.request(p.Claim, limit=500).messages
        if batch:
            receiver.request(p.Ack, message_ids=[m.id for m in batch], via="check")
            got += len(batch)
        else:
            time.sleep(0.002)
        if time.perf_counter() - t0 > 120:
            raise AssertionError(f"only {got} of {n} arrived in 120 s")
    total = time.perf_counter() - t0
    return {"msgs_per_s": round(n / total), "send_phase_s": round(sent, 2), "n": n}


def three_machines(root: Path, quick: bool, sync_always: bool) -> dict[str, Any]:
    root = root / ("sync" if sync_always else "nosync")
    root.mkdir()
    server = NatsServer(root, ["alpha", "beta", "gamma"], sync_always=sync_always).start()
    machines = [
        Machine(root, name, server, queue_limit="1000000") for name in ("alpha", "beta", "gamma")
    ]
    try:
        for m in machines:
            m.start()
        alpha, beta, _ = machines
        ca, _ann = alpha.peer("ann")
        cl, _ = alpha.peer("al")
        cb, _ = beta.peer("bob")
        wait_for(
            lambda: any(x.host == "beta" for x in ca.request(p.ListPeers, scope="network").peers),
            what="the directory",
        )
        for c in (cl, cb):
            c.request(p.Subscribe, kinds=["mail"])
        n_lat, n_burst = (100, 500) if quick else (300, 2000)
        out: dict[str, Any] = {}
        log("part 1: local latency")
        out["local_latency"] = latency(ca, cl, "al", n_lat)
        log("part 1: remote latency")
        out["remote_latency"] = latency(ca, cb, "bob@beta", n_lat)
        for c in (cl, cb):
            c.request(p.Subscribe, kinds=[])
            while c.next_event(timeout=0.2) is not None:
                pass
        log("part 1: local throughput")
        out["local_throughput"] = throughput(ca, cl, "al", n_burst)
        log("part 1: remote throughput")
        out["remote_throughput"] = throughput(ca, cb, "bob@beta", n_burst)
        return out
    finally:
        for m in machines:
            m.close()
        server.stop()


# ------------------------------------------------------------------ part 2: a simulated fleet


def fleet_server(root: Path) -> tuple[Any, str]:
    from tests.federation_world import nats_server_bin

    port = free_port()
    conf = root / "fleet.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{root / "fleet-js"}", sync_interval: always }}\n'
        "max_payload: 1048576\n"
    )
    logf = open(root / "fleet.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [nats_server_bin() or "nats-server", "-c", str(conf)], stdout=logf, stderr=logf
    )
    logf.close()
    return proc, f"nats://127.0.0.1:{port}"


def fake_peers(node: str, n: int) -> list[p.Peer]:
    return [
        p.Peer(
            id=f"p-{abs(hash((node, i))) % (1 << 32):08x}",
            name=f"session-{i}",
            client="claude-code",
            state="active",
            machine_id=node,
            host=node,
            cwd="/home/dev/src/project",
            agent_pid=1000 + i,
            agent_start=0.0,
            registered_at=0.0,
            last_seen=0.0,
            receive="hook",
            summary="refactoring the payment service's retry logic",
            git_root=f"/home/dev/src/project-{i % 4}",
            branch="main",
            status="working",
            reach="next_tool_call",
        )
        for i in range(n)
    ]


async def fleet(url: str, proc: Any, m: int, peers_per: int, mail_per: int) -> dict[str, Any]:
    import nats
    from nats.js import api

    conns = [await nats.connect(url) for _ in range(min(m, 20))]
    js = [c.jetstream(timeout=30) for c in conns]
    try:
        await js[0].create_key_value(bucket=natsconf.BUCKET, history=1, ttl=60)
        await js[0].add_stream(
            name=natsconf.STREAM,
            subjects=[natsconf.SUBJECTS],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=600.0,
        )
        nodes = [f"m{i:04d}" for i in range(m)]
        values = {n: entry(n, n, fake_peers(n, peers_per), time.time()) for n in nodes}
        kvs = [await j.key_value(natsconf.BUCKET) for j in js]
        # Directory: every machine writes its entry (one refresh round).
        t0 = time.perf_counter()
        await asyncio.gather(*(kvs[i % len(kvs)].put(n, values[n]) for i, n in enumerate(nodes)))
        put_s = time.perf_counter() - t0
        # A machine joining: its watcher loads the whole directory.
        t0 = time.perf_counter()
        watcher = await kvs[0].watchall()
        seen = 0
        while True:
            e = await watcher.updates(timeout=30)
            if e is None:
                break
            seen += 1
        load_s = time.perf_counter() - t0
        await watcher.stop()
        kv_info = await js[0].stream_info(natsconf.KV_STREAM)
        # Mail: a durable consumer per machine, then mail_per messages to each machine.
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                js[i % len(js)].add_consumer(
                    natsconf.STREAM,
                    api.ConsumerConfig(
                        name=natsconf.consumer(n),
                        durable_name=natsconf.consumer(n),
                        filter_subject=f"peers.in.{n}.>",
                        ack_policy=api.AckPolicy.EXPLICIT,
                    ),
                )
                for i, n in enumerate(nodes)
            )
        )
        consumers_s = time.perf_counter() - t0
        frame = ENCODER.encode(
            FedMail(
                id="m-abcdef-1",
                sender="p-00000001",
                sender_name="session-1",
                sender_host="m0000",
                to="p-00000002",
                to_name="session-2",
                text="x" * 200,
                created=time.time(),
                expires_at=time.time() + 600,
            )
        )
        total = m * mail_per
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(256)

        async def pub(k: int) -> None:
            target, origin = nodes[k % m], nodes[(k * 7 + 1) % m]
            async with sem:
                await js[k % len(js)].publish(
                    natsconf.inbox(target, origin),
                    frame,
                    headers={"Nats-Msg-Id": f"{origin}.mail.m-{k}"},
                )

        await asyncio.gather(*(pub(k) for k in range(total)))
        pub_s = time.perf_counter() - t0
        mail_info = await js[0].stream_info(natsconf.STREAM)
        rss = psutil.Process(proc.pid).memory_info().rss
        return {
            "machines": m,
            "peers": m * peers_per,
            "directory_bytes": kv_info.state.bytes,
            "entry_bytes": len(values[nodes[0]]),
            "directory_put_round_s": round(put_s, 3),
            "directory_load_s": round(load_s, 3),
            "directory_keys_seen": seen,
            "refresh_puts_per_s_at_ttl60": round(m / 20.0, 1),
            "watch_deliveries_per_s_at_ttl60": round(m * m / 20.0),
            "consumers_create_s": round(consumers_s, 3),
            "mail_published": total,
            "mail_publish_per_s": round(total / pub_s),
            "mail_stream_bytes": mail_info.state.bytes,
            "server_rss_mib": round(rss / 2**20, 1),
        }
    finally:
        for c in conns:
            await c.close()


def simulated(root: Path, quick: bool) -> list[dict[str, Any]]:
    sizes = [10, 100, 300] if quick else [10, 100, 500, 1000]
    results = []
    for m in sizes:
        run_root = root / f"fleet-{m}"
        run_root.mkdir()
        proc, url = fleet_server(run_root)
        try:
            import socket

            addr = url.rsplit("/", 1)[1].split(":")
            wait_for(lambda a=addr: _listening(socket, a[0], int(a[1])), what="fleet server")
            log(f"part 2: {m} simulated machines")
            results.append(asyncio.run(fleet(url, proc, m, 20, 5)))
            log(f"  {results[-1]}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return results


def _listening(socket: Any, host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.2).close()
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="machines,fleet")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cpf-", dir="/tmp"))
    results: dict[str, Any] = {}
    try:
        if "machines" in args.only:
            results["three_machines"] = three_machines(root, args.quick, True)
            results["three_machines_no_sync"] = three_machines(root, args.quick, False)
        if "fleet" in args.only:
            results["fleet"] = simulated(root, args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key, how in (("three_machines", "always"), ("three_machines_no_sync", "default")):
        tm = results.get(key)
        if not tm:
            continue
        print(f"three machines on loopback (one nats-server, sync_interval {how})")
        for kind in ("local", "remote"):
            lat, thr = tm[f"{kind}_latency"], tm[f"{kind}_throughput"]
            print(
                f"  {kind:6} send->ev_mail p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms  "
                f"max {lat['max_ms']} ms;  burst {thr['msgs_per_s']} msgs/s ({thr['n']})"
            )
    for r in results.get("fleet", []):
        print(
            f"  fleet {r['machines']:5} machines / {r['peers']:6} peers: directory "
            f"{r['directory_bytes'] / 1024:.0f} KiB (entry {r['entry_bytes']} B), put round "
            f"{r['directory_put_round_s']} s, load {r['directory_load_s']} s; "
            f"{r['consumers_create_s']} s for {r['machines']} consumers; mail "
            f"{r['mail_publish_per_s']}/s, stream {r['mail_stream_bytes'] / 1024:.0f} KiB; "
            f"server RSS {r['server_rss_mib']} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
