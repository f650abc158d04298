"""Batch reads the node uses per request and per block, and the hot-backup copy.

``index_of_many`` and ``inclusion_proofs`` must answer exactly what the one-at-a-time calls
answer (same order, ``None`` for unknown digests), on both stores; ``copy_to`` must give a
store that opens, checks and holds the same log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ledger.storage._index as ix
from ledger.errors import MalformedError, NotFoundError, StorageError
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.storage import BlockRecord, LmdbStore, Store

from .conftest import SMALL, digests, open_lmdb

DOCS = digests(600)


def test_index_of_many_matches_index_of(store: Store) -> None:
    for start in range(0, 500, 97):
        store.append(DOCS[start : min(start + 97, 500)])
    query = [DOCS[599], DOCS[0], DOCS[257], DOCS[257], DOCS[499], DOCS[500]]
    assert store.index_of_many(query) == [store.index_of(d) for d in query]
    assert store.index_of_many(query) == [None, 0, 257, 257, 499, None]
    assert store.index_of_many([]) == []


def test_index_of_many_refuses_a_bad_digest_whole(store: Store) -> None:
    store.append(DOCS[:3])
    with pytest.raises(MalformedError):
        store.index_of_many([DOCS[0], b"short"])


def test_index_of_many_resolves_colliding_index_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every digest gets one hash, so every run entry shares one key and every filter test
    # passes: the batch lookup must still compare full digests (small index: 40 leaves make
    # runs, a merge and a completed stripe).
    monkeypatch.setattr(ix, "hashes_of", lambda leaves, secret: [0] * len(leaves))
    with open_lmdb(tmp_path / "db", params=SMALL) as store:
        for start in range(0, 40, 3):
            store.append(DOCS[start : min(start + 3, 40)])
        assert store.index_of_many(DOCS[:45]) == [*range(40), None, None, None, None, None]


def test_inclusion_proofs_match_single_proofs_and_verify(store: Store) -> None:
    for start in range(0, 600, 61):
        store.append(DOCS[start : start + 61])
    for size in (1, 17, 256, 431, 600):
        indices = sorted({0, size // 3, size // 2, size - 1})
        paths = store.inclusion_proofs(indices, size)
        assert paths == [store.inclusion_proof(i, size) for i in indices]
        root = store.root_at(size)
        for i, path in zip(indices, paths, strict=True):
            verify_inclusion(leaf_hash(DOCS[i]), i, size, path, root)
    assert store.inclusion_proofs([], 600) == []


def test_inclusion_proofs_refuse_bad_indices_and_sizes(store: Store) -> None:
    store.append(DOCS[:10])
    with pytest.raises(MalformedError):
        store.inclusion_proofs([0, 10], 10)
    with pytest.raises(NotFoundError):
        store.inclusion_proofs([0], 11)


def _record(height: int) -> BlockRecord:
    return BlockRecord(height=height, block=b"block-%d" % height, certificate=b"cert")


def test_copy_to_makes_a_store_that_opens_checks_and_matches(tmp_path: Path) -> None:
    with open_lmdb(tmp_path / "live") as live:
        live.append(DOCS[:300], block=_record(1))
        live.put_checkpoint(300, b"note 300\n")
        target = tmp_path / "copy"
        target.mkdir()
        live.copy_to(target)
        live.append(DOCS[300:400], block=_record(2))  # after the copy: not in it
        head = live.tree_head()
    with open_lmdb(tmp_path / "copy") as copy:
        copy.check()
        assert copy.size == 300 and copy.last_height() == 1
        assert copy.index_of_many([DOCS[0], DOCS[350]]) == [0, None]
        assert copy.checkpoint(300) == b"note 300\n"
        assert copy.tree_head() != head


def test_copy_to_refuses_a_non_empty_or_missing_directory(tmp_path: Path) -> None:
    with open_lmdb(tmp_path / "live") as live:
        live.append(DOCS[:5])
        with pytest.raises(StorageError):
            live.copy_to(tmp_path / "missing")
        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "x").write_text("x")
        with pytest.raises(StorageError):
            live.copy_to(busy)
    with pytest.raises(StorageError):
        live.copy_to(tmp_path)  # closed


def test_checkpoint_sizes_lists_every_stored_size(tmp_path: Path) -> None:
    with open_lmdb(tmp_path / "db") as store:
        assert store.checkpoint_sizes() == []
        store.append(DOCS[:300])
        for size in (300, 7, 256):
            store.put_checkpoint(size, b"note\n")
        assert store.checkpoint_sizes() == [7, 256, 300]
    assert isinstance(store, LmdbStore)
