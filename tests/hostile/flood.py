"""A connection flood against one node: idle connections and slowloris heads, from many source
addresses of 127.0.0.0/8, while a normal client anchors and asks for proofs.

Run by ``tests/hostile/test_flood.py`` (scaled to fit ``make test``) and by ``make fuzz`` at the
full size of the security review (20,000 idle + 1,000 slowloris connections)::

    python tests/hostile/flood.py --idle 20000 --slowloris 1000

It starts a devnet (``ledger devnet up --detach``), floods validator-1 from attacker processes
(each holds at most :data:`PER_PROCESS` sockets, to stay under the open-file limit), and
measures: the latency of an anchor with ``?wait=true`` and of a proof request to the flooded
node (each with a 1 s budget), whether the cluster keeps committing, and how much the devnet's
log grew. It exits non-zero if a request failed, the cluster stalled or the log grew 1 MB or
more. Every loop is bounded in count and time, and it only talks to 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cli.devnets import detached_devnet  # noqa: E402

from ledger.client import LedgerClient, read_token_file  # noqa: E402

#: Sockets one attacker process holds at most.
PER_PROCESS = 9000
#: Idle attackers spread over this many source addresses (127.10.x.y).
IDLE_ADDRESSES = 250
SLOW_ADDRESSES = 20


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------- the attacker


async def attack(port: int, idle: int, slow: int, offset: int, duration: float) -> dict[str, int]:
    """Hold ``idle`` silent connections and ``slow`` slowloris heads until stdin closes (or
    ``duration`` seconds); a connection the node closes is opened again (at most once per
    0.2 s each)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.call_later(duration, stop.set)
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    stdin_closed.add_done_callback(lambda _: stop.set())
    stats = {"opened": 0, "closed_by_node": 0, "failed": 0}

    def source(i: int, addresses: int, net: int) -> str:
        k = (i + offset) % addresses
        return f"127.{net}.{k // 250}.{k % 250 + 1}"

    async def until_stop(coro: object, timeout: float) -> bool:
        """Await ``coro`` (a read) up to ``timeout``; whether the node closed the socket."""
        read = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read, stopped}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if read in done:
            try:
                return read.result() == b""
            except OSError:
                return True
        read.cancel()
        return False

    async def one(i: int, slowloris: bool) -> None:
        src = source(i, SLOW_ADDRESSES if slowloris else IDLE_ADDRESSES,
                     11 if slowloris else 10)
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(src, 0)), timeout=5)
            except (OSError, TimeoutError):
                stats["failed"] += 1
                await asyncio.sleep(0.2)
                continue
            stats["opened"] += 1
            closed = False
            try:
                if slowloris:
                    writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                    while not stop.is_set() and not closed:
                        writer.write(b"X-a: b\r\n")  # a header line a second, never the end
                        closed = await until_stop(reader.read(1024), 1.0)
                else:
                    while not stop.is_set() and not closed:
                        closed = await until_stop(reader.read(1024), 5.0)
            except OSError:
                closed = True
            if closed:
                stats["closed_by_node"] += 1
            writer.close()
            await asyncio.sleep(0.2)

    await asyncio.gather(*(one(i, False) for i in range(idle)),
                         *(one(i, True) for i in range(slow)))
    return stats


def attacker_main(argv: list[str]) -> None:
    port, idle, slow, offset, duration = (int(argv[0]), int(argv[1]), int(argv[2]),
                                          int(argv[3]), float(argv[4]))
    raise_nofile()
    print(json.dumps(asyncio.run(attack(port, idle, slow, offset, duration))), flush=True)


# ---------------------------------------------------------------------------- the run


@dataclass
class Figures:
    idle: int
    slowloris: int
    anchor_seconds: list[float] = field(default_factory=list)
    proof_seconds: list[float] = field(default_factory=list)
    heights: tuple[int, int] = (0, 0)
    log_growth: int = 0
    attackers: list[dict[str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"flood {self.idle} idle + {self.slowloris} slowloris: anchor "
                f"{', '.join(f'{s:.3f}' for s in self.anchor_seconds)} s, proof "
                f"{', '.join(f'{s:.3f}' for s in self.proof_seconds)} s, height "
                f"{self.heights[0]} -> {self.heights[1]}, log +{self.log_growth} bytes, "
                f"failed attempts {self.errors}, attackers {self.attackers}")


def _timed(func: object) -> float:
    start = time.monotonic()
    func()  # type: ignore[operator]
    return time.monotonic() - start


def run_flood(parent: Path, *, idle: int, slowloris: int, settle: float = 4.0,
              tries: int = 3) -> Figures:
    """The whole run (module docstring); returns the figures (``failures`` lists what broke)."""
    figures = Figures(idle=idle, slowloris=slowloris)
    with detached_devnet(parent) as devnet:
        log_file = devnet.directory / "devnet.log"
        token = read_token_file(devnet.token_file)
        url = devnet.url
        port = devnet.base_port
        with LedgerClient(url, token, timeout=30) as client:  # the cluster is up and anchoring
            client.anchor([os.urandom(32)], wait=True)
            figures.heights = (client.status()["height"], 0)
        start_size = log_file.stat().st_size
        total = idle + slowloris
        processes = max(1, -(-total // PER_PROCESS))
        duration = settle + 60.0  # a bound; the attackers stop when their stdin closes
        attackers = []
        for p in range(processes):
            share_idle = idle // processes + (1 if p < idle % processes else 0)
            share_slow = slowloris // processes + (1 if p < slowloris % processes else 0)
            attackers.append(subprocess.Popen(
                [sys.executable, __file__, "--attacker", str(port), str(share_idle),
                 str(share_slow), str(p * 7919), str(duration)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        try:
            time.sleep(settle)  # the flood is in place: every socket opened, heads trickling
            for _ in range(tries):
                doc = os.urandom(32)
                try:
                    with LedgerClient(url, token, timeout=1.0) as client:
                        figures.anchor_seconds.append(
                            _timed(lambda c=client, d=doc: c.anchor([d], wait=True)))
                        figures.proof_seconds.append(
                            _timed(lambda c=client, d=doc: c.proof(d)))
                except Exception as exc:  # a failure is a figure too
                    figures.errors.append(str(exc))
                time.sleep(0.5)
            ok_anchor = [s for s in figures.anchor_seconds if s < 1.0]
            ok_proof = [s for s in figures.proof_seconds if s < 1.0]
            if not (ok_anchor and ok_proof):  # one of each within 1 s is the criterion
                figures.failures.append("no anchor and proof within 1 s")
            # The cluster keeps committing: anchors at another node commit, and the flooded
            # node (reached by its peers through the same flooded port) takes part.
            with LedgerClient(devnet.urls[1], token, timeout=10) as other:
                before = other.status()["height"]
                for _ in range(3):
                    other.anchor([os.urandom(32)], wait=True)
                after = other.status()["height"]
            with LedgerClient(url, token, timeout=10) as flooded:
                flooded_height = flooded.status()["height"]
            figures.heights = (before, after)
            if after <= before or flooded_height < before:
                figures.failures.append(f"the cluster stopped committing ({before} -> {after}, "
                                        f"flooded node at {flooded_height})")
        finally:
            for proc in attackers:
                assert proc.stdin is not None
                proc.stdin.close()  # the attackers stop
            for proc in attackers:
                out = proc.stdout.read() if proc.stdout is not None else ""
                proc.wait(timeout=60)
                if out.strip():
                    figures.attackers.append(json.loads(out.strip().splitlines()[-1]))
        figures.log_growth = log_file.stat().st_size - start_size
        if figures.log_growth >= 1 << 20:
            figures.failures.append(f"the log grew by {figures.log_growth} bytes")
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        attacker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=20_000)
    parser.add_argument("--slowloris", type=int, default=1_000)
    args = parser.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_flood(Path(tmp), idle=args.idle, slowloris=args.slowloris)
    print(figures.line())
    for failure in figures.failures:
        print(f"FAIL: {failure}")
    sys.exit(1 if figures.failures else 0)


if __name__ == "__main__":
    main()
