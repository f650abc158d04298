"""Damage that appears while the store is open (a disk going bad under a running node) is
found: values this process verified before are verified again by the scrub, and every read
that meets damage leaves it in ``pending_damage`` for the node to repair.

Bytes are flipped from another process under a valid B-tree (raw LMDB), as in
``test_integrity.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.storage import DamageError, LmdbStore

from .conftest import SMALL, digests
from .test_integrity import build, flip, flip_elsewhere, scrub_all, u64


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    build(path)
    return path


def test_a_filter_verified_earlier_and_damaged_since_is_found_by_the_scrub(data: Path) -> None:
    with LmdbStore.open(data) as store:
        everything = store.digests_between(0, store.size)
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        assert scrub_all(store) == []  # every filter block verified by this process
        flip_elsewhere(data, b"filters", b"S" + (1).to_bytes(4, "big"), 3)
        found = scrub_all(store)
        assert {d.key for d in found} == {"filters/1"}, found
        # Lookups no longer trust the block: they read the runs, and still answer right.
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        assert store.index_of(digests(1, b"absent")[0]) is None
        store.rebuild(found[0])
        assert scrub_all(store) == []


def test_damage_met_by_a_read_is_pending_until_repaired(data: Path) -> None:
    with LmdbStore.open(data) as store:
        good = store.block(3)
        assert good is not None
        flip_elsewhere(data, b"blocks", u64(3))
        assert store.pending_damage() == []
        with pytest.raises(DamageError):
            store.block(3)
        assert [d.key for d in store.pending_damage()] == ["blocks/3"]
        store.repair_block(good)
        store.forget("blocks/3")
        assert store.pending_damage() == []
        assert store.block(3) == good


def test_damage_met_by_an_append_is_pending(data: Path) -> None:
    # The append reads the edge tile it extends: damaged, the append is refused, nothing is
    # written, and the damage is pending.
    with LmdbStore.open(data) as store:
        size = store.size
        flip_elsewhere(data, b"edge", bytes((0,)), 2)
        with pytest.raises(DamageError):
            store.append(digests(3, b"more"))
        assert store.size == size
        assert [d.key for d in store.pending_damage()] == ["edge/0"]


def test_a_damaged_tile_under_the_index_is_reported_by_the_scrub_not_raised(
        tmp_path: Path) -> None:
    # The scrub's index phases read leaves from the tiles (here the filling stripe's filter is
    # completed from leaves 272-275, in the edge tile); a damaged one is a finding (the
    # tile's, not the filter's), and the pass goes on.
    data = tmp_path / "data"
    build(data, heights=39, per_block=7)  # 276 leaves
    with LmdbStore.open(data) as store:
        flip_elsewhere(data, b"edge", bytes((0,)), 2)
        for budget in (7, 1000):
            keys = {d.key for d in scrub_all(store, budget=budget)} if budget < 1000 else {
                d.key for d in store.scrub(None, budget=budget).findings}
            assert keys == {"edge/0"}, (budget, keys)


def test_two_damaged_tiles_on_one_path_are_repaired_top_down(tmp_path: Path) -> None:
    # A leaf tile is checked against the node above it: while that tile is damaged too, the
    # repair names it (DamageError), and succeeds once it is repaired.
    data = tmp_path / "data"
    docs = digests(300, b"path")
    with LmdbStore.open(data, index_params=SMALL) as store:
        store.append(docs)
        upper = [store.node(4, i) for i in range(16)]
        proof = store.inclusion_proof(20, 300)
    flip(data, b"tiles00", u64(1), 100)
    flip(data, b"tiles01", u64(0), 400)
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError) as above:
            store.repair_tile(0, 1, docs[16:32])
        assert above.value.damage.key == "tiles01/0"
        store.repair_tile(1, 0, upper)
        store.repair_tile(0, 1, docs[16:32])
        assert store.inclusion_proof(20, 300) == proof
        store.check()


_CLEAR_BITS = """
import lmdb, sys
from array import array
path, stripe, word, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
env = lmdb.open(path, max_dbs=40, map_size=1 << 28)
handle = env.open_db(b"filters", create=False)
key = b"S" + stripe.to_bytes(4, "big")
with env.begin(write=True) as txn:
    value = bytearray(txn.get(key, db=handle))
    words = array("Q", bytes(value[: (len(value) // 8) * 8]))
    words[word] &= ~mask & (2**64 - 1)
    value[: len(words) * 8] = words.tobytes()
    txn.put(key, bytes(value), db=handle)
env.close()
"""


def test_an_anchored_digest_is_never_told_absent_after_its_filter_went_bad(data: Path) -> None:
    # A completed stripe's filter is verified once per process, then read in place from the
    # memory map. A disk that clears the digest's bits afterwards makes the fast lookup say
    # "absent"; the lookup a node makes before answering 404 verifies the block again, finds
    # the digest through the runs, reports the filter and stops trusting it.
    import subprocess
    import sys

    from ledger.merkle.hashing import leaf_hashes
    from ledger.storage import _index as ix

    with LmdbStore.open(data) as store:
        everything = store.digests_between(0, store.size)
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        state = store._view.state  # type: ignore[union-attr]
        leaf = 40  # in stripe 1 (leaves 32-63), a completed one
        h = ix.hashes_of(leaf_hashes([everything[leaf]]), state.secret)[0]
        word, mask = ix.filter_position(h, state.params)
        subprocess.run([sys.executable, "-c", _CLEAR_BITS, str(data), "1", str(word),
                        str(mask)], check=True, timeout=60)
        fast = store.index_of(everything[leaf])
        assert fast in (None, leaf)  # the fast path may now miss it (the hazard)
        assert store.index_of_rechecked(everything[leaf]) == leaf
        assert "filters/1" in {d.key for d in store.pending_damage()}
        assert store.index_of(everything[leaf]) == leaf  # no longer trusted: runs are read


def test_recheck_filters_finds_a_block_damaged_after_it_was_verified(data: Path) -> None:
    with LmdbStore.open(data) as store:
        everything = store.digests_between(0, store.size)
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        assert store.recheck_filters() == []
        flip_elsewhere(data, b"filters", b"S" + (2).to_bytes(4, "big"), 5)
        assert [d.key for d in store.recheck_filters()] == ["filters/2"]
        assert "filters/2" in {d.key for d in store.pending_damage()}
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
