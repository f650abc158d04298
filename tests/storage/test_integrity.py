"""Damaged stored values are found on read and by the scrub, never served, and repaired.

For every kind of value the LMDB store keeps, one byte is flipped under a valid B-tree (raw
LMDB, as bit rot would), then: the read that meets it raises ``DamageError`` naming the value
(or, for derived data, answers correctly without it and reports it), a scrub pass reports it
with what repairs it, and the repair API (given what a peer holds, for consensus data) restores
exactly the value, after which the store checks clean. Damage nothing can repair makes ``open``
refuse with one line naming the value and the fix.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest
from ops.chain import Chain, digests

from ledger.errors import CorruptionError, MalformedError, StorageError, VerificationError
from ledger.storage import BlockRecord, Damage, DamageError, LmdbStore, MemoryStore, Store

from .conftest import SMALL, TEST_MAP_SIZE, open_lmdb


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def build(path: Path, heights: int = 16, per_block: int = 7) -> Chain:
    """A chain of real blocks with checkpoints and a safety record, on the small index: 115
    leaves fill three stripes (done filters, merged runs) and part of a fourth, whose last
    three leaves are in a partial (edge) tile."""
    chain = Chain()
    with open_lmdb(path, SMALL) as store:
        for h in range(1, heights + 1):
            chain.commit(store, digests(per_block, b"h%d" % h))
        chain.commit(store, digests(3, b"last"))
        store.put_meta({b"safety": b"height 17 round 0"})
    return chain


_FLIP = """
import lmdb, sys
path, db, key, offset = sys.argv[1], sys.argv[2].encode(), bytes.fromhex(sys.argv[3]), \
    int(sys.argv[4])
env = lmdb.open(path, max_dbs=40, map_size=1 << 28)
handle = env.open_db(db, create=False)
with env.begin(write=True) as txn:
    value = bytearray(txn.get(key, db=handle))
    value[offset % (len(value) - 4)] ^= 0x10
    txn.put(key, bytes(value), db=handle)
env.close()
"""


def flip_elsewhere(path: Path, db: bytes, key: bytes, offset: int = 5) -> None:
    """:func:`flip` from another process (this one holds the store open)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _FLIP, str(path), db.decode(), key.hex(),
                    str(offset)], check=True, timeout=60)


def flip(path: Path, db: bytes, key: bytes, offset: int = 5) -> None:
    """Flip one payload byte of a stored value (its checksum left as it was)."""
    env = lmdb.open(str(path), max_dbs=40, map_size=TEST_MAP_SIZE)
    try:
        handle = env.open_db(db, create=False)
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=handle))
            value[offset % (len(value) - 4)] ^= 0x10
            txn.put(key, bytes(value), db=handle)
    finally:
        env.close()


def first_key(path: Path, db: bytes, prefix: bytes) -> bytes:
    env = lmdb.open(str(path), max_dbs=40, map_size=TEST_MAP_SIZE, readonly=True)
    try:
        handle = env.open_db(db, create=False)
        with env.begin() as txn:
            cursor = txn.cursor(db=handle)
            assert cursor.set_range(prefix)
            key = bytes(cursor.key())
            assert key.startswith(prefix)
            return key
    finally:
        env.close()


def scrub_all(store: LmdbStore, budget: int = 7) -> list[Damage]:
    """A whole scrub pass in small steps (cursors carried across steps)."""
    found: list[Damage] = []
    cursor: bytes | None = None
    steps = 0
    while True:
        report = store.scrub(cursor, budget=budget)
        found.extend(report.findings)
        steps += 1
        assert report.done <= report.total
        if report.cursor is None:
            break
        cursor = report.cursor
    assert steps > 1  # the pass really went a step at a time
    return found


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    """A damaged-to-be store and an identical peer (its hot copy) to repair from."""
    data = tmp_path / "data"
    build(data)
    peer = tmp_path / "peer"
    peer.mkdir()
    with LmdbStore.open(data) as store:
        store.copy_to(peer)
    return data, peer


def test_a_healthy_store_scrubs_clean(built: tuple[Path, Path]) -> None:
    data, _ = built
    with LmdbStore.open(data) as store:
        assert scrub_all(store) == []
        store.check()
        assert store.noticed() == []


# -- tiles ------------------------------------------------------------------------------------


def test_damaged_leaf_tile_is_found_and_repaired_from_a_peer(built: tuple[Path, Path]) -> None:
    data, peer = built
    flip(data, b"tiles00", u64(1), 100)
    with LmdbStore.open(peer) as good:
        leaves = good.digests_between(16, 32)
        proof = good.inclusion_proof(20, 100)
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError) as read:
            store.digest_at(20)
        damage = read.value.damage
        assert (damage.kind, damage.stratum, damage.tile, damage.repair) == ("tile", 0, 1, "peer")
        assert damage.nodes == (16, 32) and damage.leaves == (16, 32)
        with pytest.raises(DamageError):
            store.inclusion_proof(20, 100)  # never a proof built from a damaged tile
        with pytest.raises(DamageError):
            store.index_of(leaves[3])  # an indexed digest whose leaf is damaged: never "absent"
        assert damage in scrub_all(store)
        with pytest.raises(VerificationError):
            store.repair_tile(0, 1, [*leaves[:15], bytes(32)])  # a wrong replacement
        store.repair_tile(0, 1, leaves)
        assert store.inclusion_proof(20, 100) == proof
        assert store.index_of(leaves[3]) == 19
        assert scrub_all(store) == []


def test_damaged_upper_tile_is_repaired_from_its_nodes(tmp_path: Path) -> None:
    # 300 leaves: stratum 1's tile 0 (levels 4-7) is full; its bottom row is level-4 nodes.
    data = tmp_path / "data"
    docs = digests(300, b"upper")
    with open_lmdb(data, SMALL) as store:
        store.append(docs)
        nodes = [store.node(4, i) for i in range(16)]
        proof = store.inclusion_proof(5, 300)
    flip(data, b"tiles01", u64(0), 400)
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError, match=r"tiles01/0 \(leaves 0-255\)"):
            store.inclusion_proof(5, 300)
        assert [d.key for d in scrub_all(store)] == ["tiles01/0"]
        store.repair_tile(1, 0, nodes)
        assert store.inclusion_proof(5, 300) == proof
        store.check()


def test_damaged_edge_tile_blocks_writes_until_repaired(built: tuple[Path, Path]) -> None:
    data, peer = built
    flip(data, b"edge", b"\x00", 40)  # stratum 0's edge: leaves 112-114
    with LmdbStore.open(peer) as good:
        leaves = good.digests_between(112, 115)
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError, match="edge/0"):
            store.append(digests(1, b"new"))  # appending needs the edge tile
        with pytest.raises(DamageError, match="edge/0"):
            store.index_of(digests(1, b"new")[0])  # L0 cannot say "absent" without it
        assert store.tree_head().size == 115
        store.repair_tile(0, 7, leaves)
        store.append(digests(1, b"new"))
        assert store.index_of(digests(1, b"new")[0]) == 115
        store.check()


# -- blocks and checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [20, -10], ids=["block", "certificate"])
def test_damaged_block_record_is_repaired_byte_for_byte(
    built: tuple[Path, Path], offset: int
) -> None:
    data, peer = built
    flip(data, b"blocks", u64(5), offset)
    with LmdbStore.open(peer) as good:
        record = good.block(5)
    assert record is not None
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError) as read:
            store.block(5)
        assert (read.value.damage.kind, read.value.damage.height) == ("block", 5)
        assert "blocks/5" in str(read.value)
        assert [d.key for d in scrub_all(store)] == ["blocks/5"]
        store.repair_block(record)
        assert store.block(5) == record
        assert scrub_all(store) == []
        with pytest.raises(StorageError, match="no block"):
            store.repair_block(type(record)(height=99, block=b"", certificate=b""))


def test_damaged_checkpoint_is_repaired(built: tuple[Path, Path]) -> None:
    data, peer = built
    with LmdbStore.open(peer) as good:
        size = good.checkpoint_sizes()[3]
        note = good.checkpoint(size)
    assert note is not None
    flip(data, b"checkpoints", u64(size), 30)
    with LmdbStore.open(data) as store:
        with pytest.raises(DamageError, match=f"checkpoints/{size}"):
            store.checkpoint(size)
        assert [d.size for d in scrub_all(store)] == [size]
        store.repair_checkpoint(size, note)
        assert store.checkpoint(size) == note
        assert scrub_all(store) == []
        with pytest.raises(StorageError, match="no checkpoint"):
            store.repair_checkpoint(size + 1, note)


# -- the digest index (derived: rebuilt locally) ----------------------------------------------


def test_damaged_index_run_is_never_read_as_absent(built: tuple[Path, Path]) -> None:
    data, _ = built
    with LmdbStore.open(data) as store:
        run = store._view.state.runs_of_stripe(0)[0]  # type: ignore[union-attr]
        everything = store.digests_between(0, store.size)
    db = {1: b"runs", 2: b"merged", 3: b"stripes"}[run.level]
    key = first_key(data, db, run.ident.to_bytes(4, "big"))
    flip(data, db, key, 3)
    with LmdbStore.open(data) as store:
        answers: list[int | None] = []
        damaged = 0
        for leaf in range(run.first, run.end):
            try:
                answers.append(store.index_of(everything[leaf]))
            except DamageError as exc:
                assert exc.damage.kind == "index" and exc.damage.repair == "local"
                damaged += 1
        assert damaged and all(a is not None for a in answers)  # found, or refused: never None
        found = scrub_all(store)
        assert found and {d.kind for d in found} == {"index"}
        store.rebuild(found[0])
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        assert scrub_all(store) == []


@pytest.mark.parametrize("which", ["done", "filling"])
def test_damaged_filter_is_bypassed_reported_and_rebuilt(
    built: tuple[Path, Path], which: str
) -> None:
    data, _ = built
    with LmdbStore.open(data) as store:
        everything = store.digests_between(0, store.size)
        filling = store._view.state.filters  # type: ignore[union-attr]
    key = b"S" + (0).to_bytes(4, "big") if which == "done" else first_key(
        data, b"filters", b"C" + filling.to_bytes(4, "big"))
    flip(data, b"filters", key, 3)
    with LmdbStore.open(data) as store:
        # Lookups still answer right (the stripe's runs are read instead of the filter)...
        assert [store.index_of(d) for d in everything] == list(range(len(everything)))
        assert store.index_of(digests(1, b"absent")[0]) is None
        # ... and say what they bypassed; the scrub reports it too.
        noticed = store.noticed()
        assert [d.kind for d in noticed] == ["filter"]
        assert noticed[0].key in {d.key for d in scrub_all(store)} or which == "filling"
        store.rebuild(noticed[0])
        assert store.noticed() == []
        assert scrub_all(store) == []
    with LmdbStore.open(data) as store:
        assert store.noticed() == []


# -- metadata, dictionary, state ----------------------------------------------------------------


def test_damaged_meta_value_is_refused_and_rewritten_by_its_owner(
    built: tuple[Path, Path]
) -> None:
    data, _ = built
    with LmdbStore.open(data) as store:
        flip_elsewhere(data, b"meta", b"safety", 2)  # under the open store, as a disk would
        with pytest.raises(DamageError) as read:
            store.get_meta(b"safety")
        assert read.value.damage.repair == "owner"
        assert any(d.kind == "meta" for d in scrub_all(store))
        store.put_meta({b"safety": b"height 18 round 0"})  # its writer rewrites it
        assert store.get_meta(b"safety") == b"height 18 round 0"
        assert scrub_all(store) == []
    # Found at open, it is not repairable there (no peer holds a node's own state).
    flip(data, b"meta", b"safety", 2)
    with pytest.raises(CorruptionError) as refused:
        LmdbStore.open(data)
    message = str(refused.value)
    assert "meta/safety" in message and "restore a backup" in message and "\n" not in message


def test_one_damaged_dictionary_copy_is_restored_from_its_twin(built: tuple[Path, Path]) -> None:
    data, _ = built
    flip(data, b"dict", (0).to_bytes(4, "big"), 1)
    with LmdbStore.open(data, readonly=True) as store:
        assert [d.kind for d in scrub_all(store)] == ["dictionary"]
        assert store.block(3) is not None  # records still rebuild from the good copy
    with LmdbStore.open(data) as store:  # a writable open rewrites the bad copy
        assert scrub_all(store) == []
    flip(data, b"dict", (0).to_bytes(4, "big"), 1)
    flip(data, b"dict", (0 | 1 << 31).to_bytes(4, "big"), 1)
    with pytest.raises(CorruptionError, match="dict/0: both copies"):
        LmdbStore.open(data)


@pytest.mark.parametrize(
    ("key", "words"),
    [(b"head", "tree head"), (b"index", "digest index's state"), (b"format", "format")],
)
def test_damaged_state_refuses_open_with_one_line(
    built: tuple[Path, Path], key: bytes, words: str
) -> None:
    data, _ = built
    flip(data, b"state", key, 1)
    with pytest.raises(StorageError) as refused:
        LmdbStore.open(data)
    message = str(refused.value)
    assert words in message and "\n" not in message


# -- both stores: the same repair API ----------------------------------------------------------


def test_repair_calls_check_their_input(store: Store) -> None:
    docs = digests(40, b"api")
    store.append(docs)
    store.put_checkpoint(40, b"note 40\n")
    store.append([], block=BlockRecord(height=1, block=b"b1", certificate=b"c1"))
    report = store.scrub()
    cursor = report.cursor
    while cursor is not None:
        report = store.scrub(cursor)
        cursor = report.cursor
        assert report.findings == ()
    store.repair_tile(0, 1, docs[16:32])  # the intact values: accepted, nothing changes
    store.repair_tile(0, 2, docs[32:40])  # the edge tile
    with pytest.raises(VerificationError):
        store.repair_tile(0, 1, list(reversed(docs[16:32])))
    with pytest.raises(MalformedError):
        store.repair_tile(0, 1, docs[16:31])
    with pytest.raises(StorageError):
        store.repair_tile(0, 3, docs[:1])
    with pytest.raises(MalformedError):
        store.scrub(b"not a cursor")
    with pytest.raises(MalformedError):
        store.rebuild(Damage(kind="tile", key="tiles00/0", repair="peer", detail="x"))
    store.repair_checkpoint(40, b"note 40 again\n")
    assert store.checkpoint(40) == b"note 40 again\n"
    block = store.block(1)
    assert block is not None
    store.repair_block(block)
    assert store.block(1) == block
    assert [store.index_of(d) for d in docs] == list(range(40))


def test_memory_store_has_nothing_to_scrub() -> None:
    store = MemoryStore()
    store.append(digests(5, b"m"))
    report = store.scrub()
    assert report.cursor is None and report.findings == () and report.done == report.total

