"""Fixtures: the same contract tests run against ``MemoryStore`` and a real LMDB ``LmdbStore``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.storage import LmdbStore, MemoryStore, Store
from ledger.storage._index import IndexParams

#: Small map for tests: the default 64 GiB reservation is pointless for a few hundred leaves.
TEST_MAP_SIZE = 1 << 28
#: A digest index small enough for a few hundred leaves to exercise all of it: stripes of 32
#: leaves, runs of 4, merges of 4 runs, 8-word filters, a filter write every 2 flushes.
SMALL = IndexParams(stripe_bits=5, flush=4, fanout=4, filter_bits=3, persist_every=2)


def digests(n: int, tag: bytes = b"doc") -> list[bytes]:
    """``n`` distinct, deterministic 32-byte document digests."""
    return [hashlib.sha256(tag + i.to_bytes(8, "big")).digest() for i in range(n)]


def open_lmdb(path: Path, params: IndexParams | None = None, **kwargs: object) -> LmdbStore:
    """A store on real files; ``params`` sets the index geometry of a new one."""
    return LmdbStore.open(path, map_size=TEST_MAP_SIZE, index_params=params,
                          **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "lmdb", "lmdb-small-index"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each kind; LMDB on a real file under ``tmp_path``, with the default
    digest index and with a tiny one (so that a few hundred leaves flush, merge and complete
    stripes)."""
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    else:
        s = open_lmdb(tmp_path / "db", SMALL if request.param == "lmdb-small-index" else None)
    yield s
    s.close()
