"""The long peer-fuzz run: ``python tests/hostile/fuzz_peer.py --messages 100000``.

Same target, classes and invariant as ``test_peer_fuzz.py`` (see :mod:`hostile.peer_fuzz`),
over real HTTP by default (``--direct`` calls the handler the endpoint calls, about 8x faster).
Prints the count, the rate and the per-class and per-status counts; exits 1 if the node
crashed, halted, answered 5xx, or changed state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for node.harness

from hostile.peer_fuzz import (
    Generator,
    Result,
    check_node_unharmed,
    fuzz_direct,
    fuzz_http,
    invalid_total,
    prepared_node,
    snapshot,
)


async def main(messages: int, seed: int, direct: bool, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="peer-fuzz-") as tmp:
        async with prepared_node(Path(tmp)) as (node, corpus, url):
            before, invalid_before = snapshot(node), invalid_total(node)
            result = Result()
            gen = Generator(corpus=corpus, seed=seed)
            step = 10_000
            for start in range(0, messages, step):
                n = min(step, messages - start)
                if direct:
                    await fuzz_direct(node, gen, n, result)
                else:
                    await fuzz_http(url, gen, n, result, concurrency=concurrency)
                print(f"  {result.sent} sent, {result.refused} refused, "
                      f"{len(result.crashes)} crashes", flush=True)
            print(result.line())
            print(f"invalid counters: {invalid_before} -> {invalid_total(node)}")
            try:
                check_node_unharmed(node, before, invalid_before, result)
            except AssertionError as exc:
                print(f"FAILED: {exc}"[:4000])
                return 1
            print("OK: no crash, no 5xx, no state change")
            return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the node logs every bad cosignature
    sys.exit(asyncio.run(main(args.messages, args.seed, args.direct, args.concurrency)))
