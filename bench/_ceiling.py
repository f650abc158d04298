"""Machine ceilings for benchmarks: what plain Python can do on this machine, right now.

A throughput figure means little on its own (the machine may be shared, throttled or slow), so
our benchmarks report each rate next to the *raw ceiling* measured in the same process a moment
earlier: the rate of a plain Python loop computing ``sha256(b"\\x00" + d).digest()`` over
32-byte digests, i.e. RFC 9162 leaf hashing with nothing else. No Merkle code can append leaves
faster than it hashes them, so ``rate / ceiling`` is a machine-independent efficiency.

The ceiling is the best of a few repetitions of the faster of two loop forms (a ``for`` loop and
a list comprehension, both with locals bound), so it is an upper bound and ratios against it are
conservative. Only ``hashlib`` and ``time``: no project imports, usable by every benchmark.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Callable, Sequence

__all__ = ["best_time", "leaf_hash_ceiling", "random_digests"]


def random_digests(count: int, seed: int = 1) -> list[bytes]:
    """``count`` pseudo-random 32-byte digests, reproducible for a seed (SHA-256 counter mode)."""
    sha, prefix = hashlib.sha256, seed.to_bytes(8, "big")
    return [sha(prefix + i.to_bytes(8, "big")).digest() for i in range(count)]


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``run``, with the cyclic GC paused.

    The GC is paused for every contender alike: it otherwise charges object-heavy code (such as
    a tree of node objects) for collections it triggers, at unpredictable moments.
    """
    best = float("inf")
    for _ in range(max(1, repeats)):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def _loop(digests: Sequence[bytes]) -> list[bytes]:
    sha, prefix = hashlib.sha256, b"\x00"
    out: list[bytes] = []
    append = out.append
    for d in digests:
        append(sha(prefix + d).digest())
    return out


def _comprehension(digests: Sequence[bytes]) -> list[bytes]:
    sha, prefix = hashlib.sha256, b"\x00"
    return [sha(prefix + d).digest() for d in digests]


def leaf_hash_ceiling(digests: Sequence[bytes], repeats: int = 3) -> float:
    """Leaf hashes per second of the fastest plain-Python loop over ``digests``."""
    best = min(
        best_time(lambda: _loop(digests), repeats),
        best_time(lambda: _comprehension(digests), repeats),
    )
    return len(digests) / best


if __name__ == "__main__":  # pragma: no cover - manual use
    n = 1_000_000
    print(f"raw SHA-256 leaf hashing: {leaf_hash_ceiling(random_digests(n)):,.0f} /s "
          f"({os.cpu_count()} CPUs)")
