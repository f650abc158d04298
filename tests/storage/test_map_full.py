"""LMDB's map (the address space reserved for the data file) full: the write is refused as a
full disk (``DiskFullError``, "no space left"), nothing is written, reads go on, and the map
is grown so that the same write succeeds when tried again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.storage import BlockRecord, DiskFullError, LmdbStore

from .conftest import digests

DOCS = digests(30_000, b"map")


def test_a_full_map_is_grown_and_the_write_goes_in_when_tried_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LmdbStore.open(data, map_size=1 << 20) as store:
        store.append(DOCS[:1_000], block=BlockRecord(height=1, block=b"b1", certificate=b""))
        head = store.tree_head()
        batch = DOCS[1_000:30_000]
        with pytest.raises(DiskFullError, match="no space left in the LMDB map") as refused:
            store.append(batch, block=BlockRecord(height=2, block=b"b2", certificate=b""))
        assert str(data) in str(refused.value)
        assert store.tree_head() == head and store.last_height() == 1  # nothing written
        assert store.index_of(DOCS[999]) == 999  # reads go on
        for _ in range(8):  # each refusal doubles the map
            try:
                store.append(batch, block=BlockRecord(height=2, block=b"b2", certificate=b""))
                break
            except DiskFullError:
                continue
        assert store.size == 30_000 and store.last_height() == 2
        assert store.index_of(DOCS[29_999]) == 29_999
        store.check()
