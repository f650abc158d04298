"""Fixtures: the same contract tests run against ``MemoryStore`` and a real LMDB ``LmdbStore``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.storage import LmdbStore, MemoryStore, Store

#: Small map for tests: the default 64 GiB reservation is pointless for a few hundred leaves.
TEST_MAP_SIZE = 1 << 28


def digests(n: int, tag: bytes = b"doc") -> list[bytes]:
    """``n`` distinct, deterministic 32-byte document digests."""
    return [hashlib.sha256(tag + i.to_bytes(8, "big")).digest() for i in range(n)]


def open_lmdb(path: Path) -> LmdbStore:
    return LmdbStore.open(path, map_size=TEST_MAP_SIZE)


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each kind; LMDB on a real file under ``tmp_path``."""
    s: Store = MemoryStore() if request.param == "memory" else open_lmdb(tmp_path / "db")
    yield s
    s.close()
