"""Cluster benchmark of issue 4: a real 4-validator devnet on 127.0.0.1, measured end to end.

Starts four ``ledger node`` processes (``ledger.devnet`` files in a temporary directory, one
process per node, SIGTERM then SIGKILL on the way out, always) and prints one line per figure::

    <figure>  measured  target  ratio-to-ceiling

next to this machine's ceilings, measured in the same run:

- ``sha256+lmdb``: leaf hash plus one LMDB put per digest (1,000 per synced transaction), the
  least work any node must do per anchor;
- ``ed25519 sign`` / ``ed25519 verify``: PyNaCl, per operation;
- ``aiohttp no-op``: requests per second of *the same client code* as the single-digest figure
  against an aiohttp server process that answers every POST with a small JSON body.

Figures (issue 15's targets printed beside each), each with the CPU time every node process
spent per anchor or request in that phase (``/proc/<pid>/stat``, user + system):

1. anchors/s committed without waiting: ``--clients`` concurrent clients post 1,000 digests
   per request (round robin over the nodes) for ``--duration`` seconds; the figure is the
   growth of the tree over that time (what the nodes committed, not what they queued);
2. anchors/s with receipts: the same with ``?wait=true``; only digests answered ``200`` (every
   one anchored, with its receipt) count; against figure 1;
3. single-digest requests/s: one digest per request, keep-alive, no wait, vs the no-op rate,
   and the CPU per request summed over the four nodes;
4. anchor-to-receipt latency p50/p99 at 1,000 single-digest ``?wait=true`` anchors per second,
   open loop (each latency runs from the request's *scheduled* send time, so a stall is not
   hidden by the load generator waiting for it);
5. catch-up: node 4 is stopped, its data directory wiped, and restarted; time until its
   ``/v1/status`` height equals the others' and ``/readyz`` says ready; anchors/s = log size /
   that time. The log is first grown to ``--catchup-anchors`` (10**6) with batched anchors.

``--quick`` runs every phase for a few seconds with a small log (the smoke test in
tests/bench uses it); it asserts nothing about speed. Usage::

    .venv/bin/python bench/cluster.py [--duration 60] [--clients 8] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from ledger.config import format_node_config, load_node_config
from ledger.devnet import free_base_port, init_devnet, node_command

N = 4
BATCH = 1_000


# ----------------------------------------------------------------------------- helpers


def _digests(tag: str, start: int, count: int) -> list[str]:
    prefix = tag.encode()
    return [hashlib.sha256(prefix + i.to_bytes(8, "big")).hexdigest()
            for i in range(start, start + count)]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclasses.dataclass
class Line:
    figure: str
    measured: float
    unit: str
    target: str
    ceiling: str

    def show(self) -> str:
        return (f"{self.figure:<44} {self.measured:>12,.1f} {self.unit:<6} "
                f"target {self.target:<14} {self.ceiling}")


# ----------------------------------------------------------------------------- ceilings


def ceiling_sha_lmdb(count: int) -> float:
    """Digests per second: leaf hash + LMDB put, 1,000 per synced write transaction."""
    import lmdb

    with tempfile.TemporaryDirectory(prefix="bench-lmdb-") as tmp:
        env = lmdb.open(tmp, map_size=1 << 30, sync=True)
        data = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(count)]
        sha = hashlib.sha256
        start = time.perf_counter()
        for k in range(0, count, BATCH):
            with env.begin(write=True) as txn:
                for d in data[k:k + BATCH]:
                    txn.put(sha(b"\x00" + d).digest()[:8], d)
        elapsed = time.perf_counter() - start
        env.close()
    return count / elapsed


def ceiling_ed25519(count: int) -> tuple[float, float]:
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    message = b"x" * 200
    start = time.perf_counter()
    signed = [key.sign(message) for _ in range(count)]
    sign_rate = count / (time.perf_counter() - start)
    verify = key.verify_key.verify
    start = time.perf_counter()
    for s in signed:
        verify(s)
    return sign_rate, count / (time.perf_counter() - start)


def _noop_server(port: int) -> None:
    """Entry of the no-op server process: an aiohttp app that answers every POST at once."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"anchors": [], "tree_size": 0}, status=202)

    app = web.Application()
    app.router.add_post("/v1/anchors", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ----------------------------------------------------------------------------- load


async def request_rate(urls: list[str], token: str, seconds: float, workers: int,
                       tag: str) -> tuple[float, int]:
    """Single-digest POSTs per second (no wait), keep-alive; returns (rate, non-2xx count)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    done = 0
    bad = 0
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal done, bad
        while time.monotonic() < stop:
            digest = hashlib.sha256(f"{tag}{next(counter)}".encode()).hexdigest()
            body = b'{"digests": ["' + digest.encode() + b'"]}'
            async with session.post(url + "/v1/anchors", data=body, headers=headers) as r:
                await r.read()
                if r.status >= 300:
                    bad += 1
            done += 1

    connector = aiohttp.TCPConnector(limit=workers * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.monotonic()
        await asyncio.gather(*(worker(session, urls[i % len(urls)]) for i in range(workers)))
        elapsed = time.monotonic() - start
    return done / elapsed, bad


#: 503 answers (backlog) per load tag, the batched clients backed off from.
BACKOFFS: dict[str, int] = {}


async def batched_throughput(urls: list[str], token: str, seconds: float, clients: int,
                             tag: str, *, wait: bool = True) -> tuple[float, int, int]:
    """Digests per second answered 200 (anchored with receipts) by 1,000-digest requests.

    A client answered 503 (the node has a backlog) backs off for 50 ms, as a client that
    honours ``Retry-After`` would, only sooner; those answers are counted in
    :data:`BACKOFFS`, not as failures."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    anchored = 0
    failed = 0
    stop = time.monotonic() + seconds
    next_batch = iter(range(10**9))
    query = "?wait=true" if wait else ""

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal anchored, failed
        url = urls[k % len(urls)] + "/v1/anchors" + query
        while time.monotonic() < stop:
            digests = _digests(tag, next(next_batch) * BATCH, BATCH)
            body = json.dumps({"digests": digests}).encode()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()  # the receipts; status 200 = every digest anchored
                    if r.status == 200 or (not wait and r.status == 202):
                        anchored += BATCH
                    elif r.status == 503:
                        BACKOFFS[tag] = BACKOFFS.get(tag, 0) + 1
                        await asyncio.sleep(0.05)
                    else:
                        failed += 1
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=clients * 2)) as s:
        start = time.monotonic()
        await asyncio.gather(*(client(s, k) for k in range(clients)))
        elapsed = time.monotonic() - start
    return anchored / elapsed, anchored, failed


async def paced_latency(urls: list[str], token: str, seconds: float, rate: float,
                        tag: str) -> tuple[list[float], int]:
    """Open-loop single-digest ``?wait=true`` anchors at ``rate``/s; latencies in ms."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failed = 0
    loop = asyncio.get_running_loop()

    async def one(session: aiohttp.ClientSession, k: int, scheduled: float) -> None:
        nonlocal failed
        digest = hashlib.sha256(f"{tag}{k}".encode()).hexdigest()
        body = b'{"digests": ["' + digest.encode() + b'"]}'
        url = urls[k % len(urls)] + "/v1/anchors?wait=true"
        try:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    failed += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
            return
        latencies.append((loop.time() - scheduled) * 1000)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=2000)) as session:
        start = loop.time() + 0.05
        total = int(seconds * rate)
        tasks = []
        for k in range(total):
            scheduled = start + k / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, k, scheduled)))
        await asyncio.gather(*tasks)
    return latencies, failed


# ----------------------------------------------------------------------------- cluster


def _get(url: str, timeout: float = 5) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


class Cluster:
    """Four node processes of a fresh devnet in ``root``."""

    def __init__(self, root: Path, *, batch_window_ms: int | None) -> None:
        self.root = root
        base = free_base_port(N)
        devnet = init_devnet(root, nodes=N, base_port=base,
                             genesis_time_ms=int(time.time() * 1000))
        self.configs = [path for _, path in devnet.configs]
        self.urls = [url for _, url in devnet.urls]
        for path in self.configs:
            # The load generator is one address standing in for many clients: the caps on
            # connections and requests per address would refuse it, not the node's capacity.
            config = load_node_config(path)
            limits = dataclasses.replace(config.limits, max_connections_per_address=4096,
                                         max_requests_per_address=4096)
            config = dataclasses.replace(config, limits=limits, log_level="warning")
            if batch_window_ms is not None:
                config = dataclasses.replace(config, batch=dataclasses.replace(
                    config.batch, batch_window_ms=batch_window_ms))
            path.write_text(format_node_config(config, relative_to=path.parent))
        self.token = devnet.token_file.read_text().strip()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * N

    def start(self, i: int) -> None:
        log = open(self.root / f"node{i + 1}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[i] = subprocess.Popen(
            node_command(self.configs[i]), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
        log.close()

    def stop(self, i: int, grace: float = 20) -> None:
        proc = self.procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs[i] = None

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i in range(N):
            self.stop(i)

    def status(self, i: int) -> dict[str, Any] | None:
        code, body = _get(self.urls[i] + "/v1/status")
        return body if code == 200 and isinstance(body, dict) else None

    def ready(self, i: int) -> bool:
        return _get(self.urls[i] + "/readyz")[0] == 200

    def wait(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.root}")
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"node {i + 1} exited; log: {self.root}/node{i + 1}.log")
            time.sleep(0.05)


@contextlib.contextmanager
def running_cluster(root: Path, *, batch_window_ms: int | None) -> Iterator[Cluster]:
    cluster = Cluster(root, batch_window_ms=batch_window_ms)
    try:
        for i in range(N):
            cluster.start(i)
        cluster.wait(lambda: all(cluster.ready(i) for i in range(N)), "4 nodes ready", 60)
        yield cluster
    finally:
        cluster.stop_all()


@contextlib.contextmanager
def noop_server() -> Iterator[str]:
    port = free_base_port(1)
    proc = subprocess.Popen([sys.executable, __file__, "--noop-server", str(port)],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the no-op server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- main


class CpuMeter:
    """CPU seconds (user + system, from /proc/<pid>/stat) of each node process."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> list[float]:
        out = []
        for proc in self.cluster.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out.append((int(fields[11]) + int(fields[12])) / self._tick)
            except (AttributeError, OSError, IndexError, ValueError):
                out.append(float("nan"))
        return out

    @staticmethod
    def per(before: list[float], after: list[float], count: int) -> list[float]:
        """Microseconds of CPU per ``count`` (anchors, requests) on each node."""
        return [(b - a) * 1e6 / max(count, 1) for a, b in zip(before, after, strict=True)]


def _cpu_text(per: list[float]) -> str:
    return "CPU/anchor per node " + " ".join(f"{x:,.1f}" for x in per) + " us"


def committed(cluster: Cluster) -> int:
    """The tree size of node 1 (committed anchors)."""
    s = cluster.status(0)
    return int(s["tree_size"]) if s else 0


def run(args: argparse.Namespace) -> list[Line]:
    quick = args.quick
    duration = 3.0 if quick else args.duration
    short = 3.0 if quick else min(20.0, args.duration)
    workers = 16
    lines: list[Line] = []

    def show(line: Line) -> None:
        lines.append(line)
        print(line.show(), flush=True)

    sha_lmdb = ceiling_sha_lmdb(20_000 if quick else 200_000)
    sign, verify = ceiling_ed25519(500 if quick else 5_000)
    print(f"ceiling sha256+lmdb put      {sha_lmdb:>12,.0f} digests/s "
          f"({1e6 / sha_lmdb:.1f} us per digest)")
    print(f"ceiling ed25519 sign/verify  {sign:>12,.0f} / {verify:,.0f} ops/s")
    with noop_server() as url:
        asyncio.run(request_rate([url], "t", 0.5, workers, "warm"))
        noop, _ = asyncio.run(request_rate([url], "t", short, workers, "noop"))
    print(f"ceiling aiohttp no-op        {noop:>12,.0f} requests/s (same client, {workers} "
          "workers, keep-alive)")
    sys.stdout.flush()

    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        with running_cluster(tmp / "devnet", batch_window_ms=args.batch_window_ms) as cluster:
            urls, token = cluster.urls, cluster.token
            cpu = CpuMeter(cluster)
            # 1. batched, no wait: the committed rate (tree growth) while clients keep the
            # mempools full; 2. the same with wait=true (every digest answered with its
            # receipt); target: wait >= 0.8 x no wait.
            asyncio.run(batched_throughput(urls, token, 1.0, args.clients, "warm", wait=False))
            cluster.wait(lambda: all((cluster.status(i) or {}).get("mempool", 1) == 0
                                     for i in range(N)), "the mempools to drain", 600)
            t0, c0, before = time.monotonic(), committed(cluster), cpu.read()
            _, sent, failed = asyncio.run(
                batched_throughput(urls, token, duration, args.clients, "nw", wait=False))
            t1, c1, after = time.monotonic(), committed(cluster), cpu.read()
            nowait = (c1 - c0) / (t1 - t0)
            per = CpuMeter.per(before, after, c1 - c0)
            show(Line("anchors/s committed (1,000/req, no wait)", nowait, "/s", ">= 60,000",
                      f"{nowait / sha_lmdb:.1%} of sha256+lmdb ceiling; {_cpu_text(per)} "
                      f"(busiest {max(per):,.1f}, target <= 7); {sent:,} sent, "
                      f"{failed} failed, {BACKOFFS.get('nw', 0)} backed off (503)"))
            cluster.wait(lambda: all((cluster.status(i) or {}).get("mempool", 1) == 0
                                     for i in range(N)), "the mempools to drain", 600)
            before = cpu.read()
            rate, total, failed = asyncio.run(
                batched_throughput(urls, token, duration, args.clients, "tp"))
            per = CpuMeter.per(before, cpu.read(), total)
            show(Line("anchors/s with receipts (1,000/req, wait)", rate, "/s",
                      f">= {0.8 * nowait:,.0f}",
                      f"{rate / nowait:.2f} x no wait (target >= 0.8); {_cpu_text(per)}; "
                      f"{total:,} in {duration:g} s, {failed} failed, "
                      f"{BACKOFFS.get('tp', 0)} backed off (503)"))
            # 3. single-digest requests (no wait) against the no-op rate, and the CPU they
            # cost summed over the cluster.
            before = cpu.read()
            single, bad = asyncio.run(request_rate(urls, token, short, workers, "single"))
            requests = int(single * short)
            per = CpuMeter.per(before, cpu.read(), requests)
            show(Line("single-digest requests/s (keep-alive)", single, "req/s",
                      f">= {0.5 * noop:,.0f}",
                      f"{single / noop:.2f} x aiohttp no-op (target >= 0.5); CPU per request "
                      f"summed {sum(per):,.0f} us (target <= 150: "
                      + " ".join(f"{x:,.0f}" for x in per) + f"); {bad} non-2xx"))
            # 4. latency at 1,000 anchors/s, open loop
            lat, failed = asyncio.run(paced_latency(urls, token, short, 1000.0, "lat"))
            p50, p99 = _percentile(lat, 0.50), _percentile(lat, 0.99)
            show(Line("anchor-to-receipt latency p50 @1,000/s", p50, "ms", "<= 50",
                      f"{len(lat):,} anchors, {failed} failed"))
            show(Line("anchor-to-receipt latency p99 @1,000/s", p99, "ms", "<= 250",
                      f"max {max(lat, default=float('nan')):,.0f} ms"))
            # 5. catch-up of an empty node
            target = 20_000 if quick else args.catchup_anchors

            def size(pending: bool = False) -> int:
                s = cluster.status(0)
                return int(s["tree_size"]) + (int(s["mempool"]) if pending else 0) if s else 0
            # Without wait the mempools take anchors faster than blocks commit them: fill in
            # short bursts and count what is pending too, so the log ends near the target.
            while size(pending=True) < target:
                asyncio.run(batched_throughput(urls, token, 1.0, min(args.clients, 4),
                                               f"fill{size(pending=True)}", wait=False))
            cluster.wait(lambda: all((cluster.status(i) or {}).get("mempool", 1) == 0
                                     for i in range(N)), "the mempools to drain", 600)
            cluster.stop(3)
            shutil.rmtree(cluster.root / "data" / "validator-4")
            heights = [(cluster.status(i) or {}).get("height", 0) for i in range(3)]
            goal, tree = max(heights), size()
            start = time.monotonic()
            cluster.start(3)
            cluster.wait(lambda: ((cluster.status(3) or {}).get("height", -1) >= goal
                                  and cluster.ready(3)), "node 4 to catch up", 3600)
            elapsed = time.monotonic() - start
            caught = cpu.read()[3]
            show(Line("catch-up of an empty node (anchors/s)", tree / elapsed, "/s",
                      ">= 80,000",
                      f"{tree / elapsed / sha_lmdb:.1%} of sha256+lmdb ceiling "
                      f"({tree:,} anchors, {goal} blocks in {elapsed:.1f} s incl. "
                      f"process start; node 4 CPU {caught * 1e6 / max(tree, 1):,.1f} us/anchor)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of the sustained batched phase (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent batched clients")
    parser.add_argument("--catchup-anchors", type=int, default=1_000_000)
    parser.add_argument("--batch-window-ms", type=int, default=None,
                        help="override the nodes' batch window (default: the config default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--noop-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_server is not None:
        _noop_server(args.noop_server)
        return
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    lines = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(x) for x in lines], indent=2))


if __name__ == "__main__":
    main()
