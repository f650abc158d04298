"""Independent oracles for the Merkle tests: RFC 9162 written as literally as possible.

Nothing here is fast or clever: each function is the recursive definition of RFC 9162 section
2.1 transcribed, so that the optimised code in ``ledger.merkle`` is checked against the text of
the spec rather than against itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.errors import NotFoundError


def leaf(data: bytes) -> bytes:
    """SHA-256(0x00 || data), RFC 9162 2.1.1."""
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), RFC 9162 2.1.1."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 2.1.1, over leaf *hashes*."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = split(n)
    return node(mth(leaf_hashes[:k]), mth(leaf_hashes[k:]))


def path(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1."""
    n = len(leaf_hashes)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*path(m, leaf_hashes[:k]), mth(leaf_hashes[k:])]
    return [*path(m - k, leaf_hashes[k:]), mth(leaf_hashes[:k])]


def subproof(m: int, leaf_hashes: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 2.1.4.1."""
    n = len(leaf_hashes)
    if m == n:
        return [] if b else [mth(leaf_hashes)]
    k = split(n)
    if m <= k:
        return [*subproof(m, leaf_hashes[:k], b), mth(leaf_hashes[k:])]
    return [*subproof(m - k, leaf_hashes[k:], False), mth(leaf_hashes[:k])]


def leaves(n: int, seed: int = 0) -> list[bytes]:
    """n distinct, deterministic leaf hashes."""
    return [leaf(seed.to_bytes(8, "big") + i.to_bytes(8, "big")) for i in range(n)]


class CountingReader:
    """A NodeReader over a dict of full nodes that counts reads (to check O(log n) cost)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        row = list(leaf_hashes)
        level = 0
        while row:
            for i, h in enumerate(row):
                self.nodes[(level, i)] = h
            row = [node(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
            level += 1
        self.reads = 0

    def node(self, level: int, index: int) -> bytes:
        self.reads += 1
        try:
            return self.nodes[(level, index)]
        except KeyError:
            raise NotFoundError(f"no node ({level}, {index})") from None
