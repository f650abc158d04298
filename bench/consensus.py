"""Simulated consensus throughput: committed heights per CPU second, 4 nodes, calm network.

All four validators run in one process on the deterministic simulator, each the production
``Replica`` over the simulator's memory store (no network, no disk I/O), so the figure is the
CPU cost of the replica itself per block -- consensus, signing, verification, encoding, hashing
the batch into the tree, checkpoints and receipts -- before any real network is added. Two
cases: small blocks (the simulator's clients, a few digests per request, waiting for their
receipts) and full blocks of 10,000 digests (every mempool filled before the run). The share
of time spent in Ed25519 signing and verification is measured by timing around the two
primitives the core uses (``Ed25519Signer.sign`` and ``messages.verify_signature``).

Usage: ``.venv/bin/python bench/consensus.py [--heights N]``
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from typing import Any

from ledger.consensus import messages
from ledger.sim import SimConfig, build_world

_spent = {"sign": 0.0, "verify": 0.0}


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[name] += time.perf_counter() - t0

    return wrapper


def run(batch: int, heights: int, *, full: bool) -> dict[str, float]:
    """Commit ``heights`` heights on a calm 4-node cluster; return the figures. ``full``:
    every mempool holds ``batch * heights`` digests before the start, so every block is full;
    otherwise the simulator's clients make the load."""
    config = SimConfig(batch_size=batch, gst_ms=0,
                       timeouts=SimConfig().timeouts.__class__(
                           propose=800, propose_delta=200, prevote=400, prevote_delta=200,
                           precommit=400, precommit_delta=200, commit=0))
    world = build_world(config, seed=1)
    for node in world.nodes.values():
        node.boot()
    if full:
        digests = [hashlib.sha256(b"bench-%d" % i).digest() for i in range(batch * heights)]
        for node in world.nodes.values():
            replica = node.replica
            assert replica is not None
            driver = replica.driver
            driver.clients.take(digests)  # as if gossiped: beyond the client backlog
            driver.run(node.clock.now_ms(), driver.work_arrived)
            node.perform(driver.flush())
    else:
        world.client.start()
    _spent["sign"] = _spent["verify"] = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    world.sched.run(until=10**12, max_events=10**9,
                    stop=lambda: min(n.height for n in world.nodes.values()) >= heights)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = min(n.height for n in world.nodes.values())
    world.client.stopped = True
    committed = min(n.replica.driver.store.size for n in world.nodes.values()
                    if n.replica is not None)
    return {
        "batch": batch, "heights": done, "cpu_s": cpu,
        "heights_per_cpu_s": done / cpu, "digests_per_cpu_s": committed / cpu,
        "sign_share": _spent["sign"] / wall, "verify_share": _spent["verify"] / wall,
        "ms_per_height": 1000 * cpu / done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heights", type=int, default=200, help="heights per case")
    args = parser.parse_args()
    messages.Ed25519Signer.sign = _timed("sign", messages.Ed25519Signer.sign)  # type: ignore[method-assign]
    messages.verify_signature = _timed("verify", messages.verify_signature)
    print(f"{'digests/block':>13} {'heights':>7} {'cpu s':>7} {'heights/cpu-s':>13} "
          f"{'ms/height':>9} {'digests/cpu-s':>13} {'sign %':>6} {'verify %':>8}")
    for batch, heights, full in ((64, args.heights, False),
                                 (10_000, max(1, args.heights // 10), True)):
        r = run(batch, heights, full=full)
        print(f"{batch:>13} {r['heights']:>7.0f} {r['cpu_s']:>7.2f} "
              f"{r['heights_per_cpu_s']:>13.1f} {r['ms_per_height']:>9.2f} "
              f"{r['digests_per_cpu_s']:>13.0f} {100 * r['sign_share']:>6.1f} "
              f"{100 * r['verify_share']:>8.1f}")


if __name__ == "__main__":
    main()
