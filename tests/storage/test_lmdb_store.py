"""LmdbStore only: persistence across reopen, durability settings, integrity checks, and
correctness of the digest index under hostile (forced) key collisions."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.storage._index as ix
import ledger.storage.lmdb_store as lmdb_store
from ledger.errors import CorruptionError, NotFoundError, StorageError
from ledger.merkle import InMemoryTree, leaf_hash, verify_inclusion
from ledger.storage import BlockRecord, DamageError, LmdbStore

from .conftest import SMALL, TEST_MAP_SIZE, digests, open_lmdb

DOCS = digests(2000)


def _build(path: Path, n: int, batch: int = 97) -> None:
    with open_lmdb(path) as store:
        for start in range(0, n, batch):
            height = start // batch + 1
            block = BlockRecord(height=height, block=b"block %d" % height, certificate=b"cert")
            store.append(DOCS[start : min(start + batch, n)], block=block)
            store.put_checkpoint(store.size, b"checkpoint %d" % store.size)
        store.put_meta({b"last-signed": b"h=7 r=0"})


def _flip_everywhere(path: Path, needle: bytes, offset: int = 5) -> int:
    """Flip one byte of ``needle`` in every copy of it in the data file (stale CoW copies in
    free pages included, so the live copy is certainly hit); return the number of copies."""
    data = path / "data.mdb"
    raw = bytearray(data.read_bytes())
    copies = 0
    at = raw.find(needle)
    while at >= 0:
        raw[at + offset] ^= 0x01
        copies += 1
        at = raw.find(needle, at + 1)
    data.write_bytes(bytes(raw))
    return copies


# -- persistence ------------------------------------------------------------------------------


def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    _build(tmp_path, 1000)
    reference = InMemoryTree(leaf_hash(d) for d in DOCS[:1000])
    with open_lmdb(tmp_path) as store:
        assert store.size == 1000
        assert store.tree_head().root == reference.root()
        assert store.frontier().root() == reference.root()
        assert store.index_of(DOCS[999]) == 999 and store.digest_at(123) == DOCS[123]
        assert store.inclusion_proof(517, 1000) == reference.inclusion_proof(517, 1000)
        assert store.consistency_proof(97, 1000) == reference.consistency_proof(97, 1000)
        assert store.last_height() == 11
        assert store.block(11) == BlockRecord(height=11, block=b"block 11", certificate=b"cert")
        assert store.latest_checkpoint() == b"checkpoint 1000"
        assert store.checkpoint(97) == b"checkpoint 97"
        assert store.get_meta(b"last-signed") == b"h=7 r=0"
        store.check()


def test_appending_after_reopen_continues_the_same_tree(tmp_path: Path) -> None:
    # The frontier is rebuilt from stored nodes at open: later roots must be unaffected.
    _build(tmp_path, 333)
    with open_lmdb(tmp_path) as store:
        result = store.append(DOCS[300:700])  # 33 duplicates, then 367 new
        assert result.new == (False,) * 33 + (True,) * 367
        assert result.head.root == InMemoryTree(leaf_hash(d) for d in DOCS[:700]).root()
        store.check()


def test_proofs_served_from_another_thread_during_appends_verify(tmp_path: Path) -> None:
    # Readers see consistent snapshots (and consistent cached tiles) while a writer appends.
    roots = {0: InMemoryTree().root()}
    reference = InMemoryTree()
    for start in range(0, 1500, 50):
        reference.append(leaf_hash(d) for d in DOCS[start : start + 50])
        roots[reference.size] = reference.root()
    failures: list[BaseException] = []
    with open_lmdb(tmp_path) as store:
        store.append(DOCS[:50])
        done = threading.Event()

        def serve() -> None:
            try:
                while not done.is_set():
                    size = store.tree_head().size
                    for index in (0, size // 3, size - 1):
                        path = store.inclusion_proof(index, size)
                        verify_inclusion(leaf_hash(DOCS[index]), index, size, path, roots[size])
            except BaseException as exc:
                failures.append(exc)

        reader = threading.Thread(target=serve)
        reader.start()
        for start in range(50, 1500, 50):
            store.append(DOCS[start : start + 50])
        done.set()
        reader.join()
    assert failures == []


def test_readonly_open_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    _build(tmp_path, 50)
    with LmdbStore.open(tmp_path, readonly=True) as store:
        assert store.size == 50
        assert store.index_of(DOCS[49]) == 49
        with pytest.raises(StorageError, match="read-only"):
            store.append(DOCS[50:51])
        with pytest.raises(StorageError, match="read-only"):
            store.put_meta({b"k": b"v"})


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    # Two LMDB environments on one file in one process break LMDB's locking.
    with open_lmdb(tmp_path):
        with pytest.raises(StorageError, match="already open"):
            open_lmdb(tmp_path)
        with pytest.raises(StorageError, match="already open"):
            LmdbStore.open(tmp_path / ".", readonly=True)
    with open_lmdb(tmp_path) as store:
        assert store.size == 0


def test_readonly_open_of_missing_store_fails(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        LmdbStore.open(tmp_path / "nothing", readonly=True)


def test_environment_is_durable(tmp_path: Path) -> None:
    # Design brief section 4: LMDB stays with sync on; no writemap, no async map flushes.
    with open_lmdb(tmp_path) as store:
        flags = store._env.flags()
    assert flags["sync"] and flags["metasync"]
    assert not flags["writemap"] and not flags["map_async"]


def test_failed_append_leaves_nothing_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The block is the last write of the transaction: failing there must roll back the tiles,
    # edge tiles, index entries and tree head already written in the same transaction.
    _build(tmp_path, 100)

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("disk on fire")

    with open_lmdb(tmp_path) as store:
        head = store.tree_head()
        monkeypatch.setattr(lmdb_store, "pack_block_record", broken)
        with pytest.raises(RuntimeError):
            store.append(DOCS[100:400], block=BlockRecord(height=3, block=b"", certificate=b""))
        assert store.tree_head() == head
    with open_lmdb(tmp_path) as store:
        assert store.tree_head() == head
        assert store.index_of(DOCS[150]) is None
        assert store.last_height() == 2
        store.check()


def test_disk_usage_reports_the_data_file(tmp_path: Path) -> None:
    with open_lmdb(tmp_path) as store:
        empty = store.disk_usage()
        store.append(DOCS)
        assert store.disk_usage() == (tmp_path / "data.mdb").stat().st_size > empty


# -- integrity --------------------------------------------------------------------------------


def test_check_passes_on_a_healthy_store_and_reports_progress(tmp_path: Path) -> None:
    _build(tmp_path, 2000)
    calls: list[tuple[int, int]] = []
    with open_lmdb(tmp_path) as store:
        store.check(progress=lambda done, total: calls.append((done, total)))
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1] > 2000


@pytest.mark.parametrize(
    ("level", "index"),
    [(1, 5), (2, 3), (3, 17), (4, 2), (5, 1), (7, 0)],
)
def test_check_detects_one_flipped_byte_in_a_stored_node(
    tmp_path: Path, level: int, index: int
) -> None:
    _build(tmp_path, 1000)
    with open_lmdb(tmp_path) as store:
        victim = store.node(level, index)
    assert _flip_everywhere(tmp_path, victim) >= 1
    with open_lmdb(tmp_path) as store, pytest.raises(CorruptionError, match="does not match"):
        store.check()


def test_check_detects_a_flipped_digest(tmp_path: Path) -> None:
    _build(tmp_path, 1000)
    _flip_everywhere(tmp_path, DOCS[421])
    # Found either as a leaf that no longer hashes to its parent (1, 210) or as a digest that
    # is no longer filed under its index key, whichever the scan meets first.
    with (
        open_lmdb(tmp_path) as store,
        pytest.raises(CorruptionError, match=r"\(1, 210\)|leaf 421 is missing"),
    ):
        store.check()


def test_open_detects_a_flipped_frontier_node(tmp_path: Path) -> None:
    # 1000 = 512 + 256 + 128 + 64 + 32 + 8: node (9, 0) is a frontier node.
    _build(tmp_path, 1000)
    with open_lmdb(tmp_path) as store:
        victim = store.node(9, 0)
    _flip_everywhere(tmp_path, victim)
    with pytest.raises(CorruptionError, match="tree head"):
        open_lmdb(tmp_path)


def test_open_detects_a_truncated_file(tmp_path: Path) -> None:
    _build(tmp_path, 2000)
    data = tmp_path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, size // 2)
    with pytest.raises(CorruptionError, match="truncated"):
        open_lmdb(tmp_path)


def test_open_detects_an_emptied_file(tmp_path: Path) -> None:
    # LMDB would silently initialise a fresh environment in a zero-length file.
    _build(tmp_path, 10)
    os.truncate(tmp_path / "data.mdb", 0)
    with pytest.raises(CorruptionError, match="empty"):
        open_lmdb(tmp_path)


def test_open_detects_a_missing_tile(tmp_path: Path) -> None:
    _build(tmp_path, 300)
    env = lmdb_store.lmdb.open(str(tmp_path), max_dbs=32)
    tiles = env.open_db(b"tiles00")
    with env.begin(write=True) as txn:
        assert txn.delete((3).to_bytes(8, "big"), db=tiles)
    env.close()
    with pytest.raises(CorruptionError, match="stratum 0"):
        open_lmdb(tmp_path)


def test_open_detects_a_head_that_disagrees_with_the_nodes(tmp_path: Path) -> None:
    _build(tmp_path, 300)
    env = lmdb_store.lmdb.open(str(tmp_path), max_dbs=32)
    state = env.open_db(b"state")
    with env.begin(write=True) as txn:
        head = txn.get(b"head", db=state)
        txn.put(b"head", head[:8] + bytes(32), db=state)
    env.close()
    with pytest.raises(CorruptionError, match="tree head"):
        open_lmdb(tmp_path)


def test_foreign_lmdb_environment_is_refused(tmp_path: Path) -> None:
    env = lmdb_store.lmdb.open(str(tmp_path), max_dbs=4)
    env.open_db(b"something-else")
    env.close()
    with pytest.raises(StorageError, match="not a ledger store"):
        open_lmdb(tmp_path)


# -- the digest index under hostile key collisions ----------------------------------------------


@pytest.mark.parametrize("distinct", [1, 2])
def test_index_is_correct_when_every_key_collides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, distinct: int
) -> None:
    # An attacker who could make index keys collide must not get a wrong index, a lost
    # duplicate or a double append: keys are candidates, full digests decide. With the small
    # index the 150 leaves pass through L0, runs, merges and completed stripes.
    monkeypatch.setattr(
        ix, "hashes_of", lambda leaves, secret: [(leaf[0] % distinct) << 63 for leaf in leaves]
    )
    docs = DOCS[:150]
    with open_lmdb(tmp_path, SMALL) as store:
        for start in range(0, 100, 7):
            store.append(docs[start : min(start + 7, 100)])
        result = store.append([docs[50], docs[120], docs[120], docs[0], docs[149]])
        assert result.indices == (50, 100, 100, 0, 101)
        assert result.new == (False, True, False, False, True)
        assert store.preview([docs[99], docs[148]]).indices == (99, 102)
    with open_lmdb(tmp_path) as store:
        assert [store.index_of(d) for d in docs[:100]] == list(range(100))
        assert store.index_of(docs[120]) == 100
        assert store.index_of(docs[130]) is None
        store.check()


def test_check_detects_a_digest_stored_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a dedup failure: a lookup that never finds anything lets a digest in twice,
    # once while the first copy is in L0 and once after it moved into a run.
    for when in (10, 40):
        path = tmp_path / str(when)
        with open_lmdb(path, SMALL) as store:
            store.append(DOCS[:when])
            def blind(
                self: LmdbStore, *args: object, real: Any = lmdb_store.LmdbStore._lookup_many
            ) -> tuple[list[None], list[int]]:
                found, hashes = real(self, *args)
                return [None] * len(found), hashes

            monkeypatch.setattr(lmdb_store.LmdbStore, "_lookup_many", blind)
            store.append([DOCS[3]])
            monkeypatch.undo()
            with pytest.raises(CorruptionError, match="same digest"):
                store.check()


def _raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=40, map_size=TEST_MAP_SIZE)


def test_check_detects_a_missing_index_chunk(tmp_path: Path) -> None:
    # A run chunk deleted under a valid B-tree: the run no longer covers its leaves.
    with open_lmdb(tmp_path, SMALL) as store:
        store.append(DOCS[:40])
        run = store._view.state.runs[0]  # type: ignore[union-attr]
    env = _raw_env(tmp_path)
    runs = env.open_db({1: b"runs", 2: b"merged", 3: b"stripes"}[run.level], create=False)
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db=runs)
        assert cursor.set_range(run.ident.to_bytes(4, "big"))
        assert cursor.delete()
    env.close()
    with open_lmdb(tmp_path) as store:
        with pytest.raises(DamageError, match=f"runs/{run.ident}") as caught:
            store.check()
        assert caught.value.damage.repair == "local"
        store.rebuild(caught.value.damage)
        store.check()
        assert [store.index_of(d) for d in DOCS[:40]] == list(range(40))
        with pytest.raises(NotFoundError):
            store.digest_at(40)


def test_append_metadata_rolls_back_with_the_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failure late in the append's transaction (the block record) leaves the metadata as it
    # was, on disk too: they are one transaction.
    with open_lmdb(tmp_path) as store:
        store.append(DOCS[:10], meta={b"safety": b"before"})

        def broken(*args: object, **kwargs: object) -> bytes:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(lmdb_store, "pack_block_record", broken)
        with pytest.raises(RuntimeError):
            store.append(DOCS[10:20], block=BlockRecord(height=1, block=b"", certificate=b""),
                         meta={b"safety": b"after"})
    with open_lmdb(tmp_path) as store:
        assert store.get_meta(b"safety") == b"before" and store.size == 10


# -- the digest index through flushes, merges, stripes and reopens -------------------------------

_POOL = digests(400, b"pool")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 399), max_size=60), st.booleans()),
                min_size=1, max_size=12))
def test_small_index_matches_the_model_across_reopens(
    batches: list[tuple[list[int], bool]],
) -> None:
    # Every digest is found at its first index and every absent one is absent, whatever the
    # batching, with the store closed and opened again (L0 rebuilt from tiles, the filling
    # stripe's filter from its stored chunks and runs) between any two appends.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        log: dict[bytes, int] = {}
        store = open_lmdb(path, SMALL)
        try:
            for picks, reopen in batches:
                batch = [_POOL[i] for i in picks]
                result = store.append(batch)
                for d, index in zip(batch, result.indices, strict=True):
                    assert log.setdefault(d, len(log)) == index
                if reopen:
                    store.close()
                    store = open_lmdb(path)
                assert store.index_of_many(_POOL) == [log.get(d) for d in _POOL]
            store.check()
        finally:
            store.close()


_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from storage.conftest import SMALL, digests, open_lmdb
from pathlib import Path
docs = digests(3000, b"shared")
with open_lmdb(Path(sys.argv[1]), SMALL) as store:
    print("open", flush=True)
    for start in range(0, 3000, 7):
        store.append(docs[start:start + 7])
    print("done", flush=True)
"""


def test_a_reader_in_another_process_follows_flushes_and_merges(tmp_path: Path) -> None:
    # `ledger db check` and backups read a store a node keeps writing: every snapshot they
    # read must answer lookups exactly, across the writer's flushes, merges and stripes.
    import subprocess
    import sys

    docs = digests(3000, b"shared")
    with open_lmdb(tmp_path, SMALL):
        pass  # create it (small index) so the reader can open it at once
    tests = str(Path(__file__).resolve().parents[1])
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), tests],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        seen = 0
        with LmdbStore.open(tmp_path, readonly=True) as reader:
            while True:
                done = writer.poll() is not None
                found = reader.index_of_many(docs)
                known = [i for i in found if i is not None]
                assert known == list(range(len(known)))  # exactly a prefix, each at its index
                assert all(i is None for i in found[len(known):])
                seen = max(seen, len(known))
                if done:
                    break
        assert seen == 3000
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
