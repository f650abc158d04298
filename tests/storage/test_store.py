"""The ``Store`` contract, run against both ``MemoryStore`` and ``LmdbStore`` (conftest)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.storage
from ledger.errors import MalformedError, NotFoundError, StorageError
from ledger.merkle import (
    EMPTY_ROOT,
    InMemoryTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.storage import AppendResult, BlockRecord, MemoryStore, Store, TreeHead

from .conftest import digests, open_lmdb

DOCS = digests(700)


def _reference(ds: list[bytes]) -> InMemoryTree:
    return InMemoryTree(leaf_hash(d) for d in ds)


# -- the value types --------------------------------------------------------------------------


def test_public_names_are_exported() -> None:
    assert set(ledger.storage.__all__) == {
        "DEFAULT_MAP_SIZE",
        "FORMAT_VERSION",
        "AppendResult",
        "BlockRecord",
        "Damage",
        "DamageError",
        "DiskFullError",
        "LmdbStore",
        "MemoryStore",
        "ScrubReport",
        "Store",
        "TreeHead",
    }


def test_value_types_are_frozen_and_keyword_only() -> None:
    head = TreeHead(size=0, root=EMPTY_ROOT)
    with pytest.raises(AttributeError):
        head.size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        TreeHead(0, EMPTY_ROOT)  # type: ignore[misc]
    with pytest.raises(TypeError):
        BlockRecord(1, b"b", b"c")  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 0, "block": b"b", "certificate": b"c"},
        {"height": -1, "block": b"b", "certificate": b"c"},
        {"height": 1, "block": "b", "certificate": b"c"},
        {"height": 1, "block": b"b", "certificate": None},
    ],
)
def test_block_record_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(MalformedError):
        BlockRecord(**kwargs)  # type: ignore[arg-type]


def test_tree_head_rejects_bad_fields() -> None:
    with pytest.raises(MalformedError):
        TreeHead(size=-1, root=EMPTY_ROOT)
    with pytest.raises(MalformedError):
        TreeHead(size=0, root=b"short")


# -- append, dedup, preview -------------------------------------------------------------------


def test_both_stores_satisfy_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_empty_store_has_the_empty_tree_head(store: Store) -> None:
    assert store.size == 0
    assert store.tree_head() == TreeHead(size=0, root=EMPTY_ROOT)
    assert store.frontier().size == 0
    assert store.root_at(0) == EMPTY_ROOT
    assert store.last_height() == 0
    assert store.latest_checkpoint() is None


def test_append_returns_indices_and_the_rfc9162_root(store: Store) -> None:
    result = store.append(DOCS[:5])
    assert result == AppendResult(
        head=TreeHead(size=5, root=_reference(DOCS[:5]).root()),
        indices=(0, 1, 2, 3, 4),
        new=(True,) * 5,
    )
    assert store.tree_head() == result.head
    assert store.frontier().root() == result.head.root


def test_digest_already_in_log_keeps_its_first_index(store: Store) -> None:
    store.append(DOCS[:10])
    result = store.append([DOCS[3], DOCS[10], DOCS[0]])
    assert result.indices == (3, 10, 0)
    assert result.new == (False, True, False)
    assert store.size == 11
    assert result.head.root == _reference(DOCS[:11]).root()


def test_digest_repeated_in_batch_is_appended_once(store: Store) -> None:
    result = store.append([DOCS[0], DOCS[1], DOCS[0], DOCS[1], DOCS[2], DOCS[0]])
    assert result.indices == (0, 1, 0, 1, 2, 0)
    assert result.new == (True, True, False, False, True, False)
    assert store.size == 3
    assert [store.digest_at(i) for i in range(3)] == DOCS[:3]


def test_reappending_everything_changes_nothing(store: Store) -> None:
    first = store.append(DOCS[:40])
    again = store.append(reversed(DOCS[:40]))
    assert again.head == first.head
    assert again.indices == tuple(range(39, -1, -1))
    assert not any(again.new)


def test_preview_predicts_append_and_writes_nothing(store: Store) -> None:
    store.append(DOCS[:17])
    batch = [DOCS[20], DOCS[5], DOCS[20], DOCS[21]]
    predicted = store.preview(batch)
    assert store.size == 17
    assert store.index_of(DOCS[20]) is None
    assert store.append(batch) == predicted


def test_empty_append_is_a_no_op(store: Store) -> None:
    store.append(DOCS[:3])
    head = store.tree_head()
    assert store.append([]) == AppendResult(head=head, indices=(), new=())
    assert store.tree_head() == head


@pytest.mark.parametrize("bad", [b"x" * 31, b"x" * 33, "a" * 32, bytearray(32), None])
def test_bad_digest_is_malformed_and_appends_nothing(store: Store, bad: object) -> None:
    with pytest.raises(MalformedError):
        store.append([DOCS[0], bad])  # type: ignore[list-item]
    with pytest.raises(MalformedError):
        store.preview([bad])  # type: ignore[list-item]
    assert store.size == 0
    assert store.index_of(DOCS[0]) is None


def test_index_of_and_digest_at_round_trip(store: Store) -> None:
    store.append(DOCS[:300])
    for i in (0, 1, 15, 16, 17, 255, 256, 299):
        assert store.digest_at(i) == DOCS[i]
        assert store.index_of(DOCS[i]) == i
    assert store.index_of(DOCS[300]) is None
    with pytest.raises(NotFoundError):
        store.digest_at(300)
    with pytest.raises(MalformedError):
        store.digest_at(-1)
    with pytest.raises(MalformedError):
        store.index_of(b"short")


# -- nodes and proofs -------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [3, 7, 16, 100, 700])
def test_nodes_equal_the_reference_tree_for_any_batching(store: Store, batch: int) -> None:
    # The tiles written by many small appends and by one big append hold the same nodes.
    for start in range(0, 700, batch):
        store.append(DOCS[start : start + batch])
    reference = _reference(DOCS)
    level = 0
    while (1 << level) <= 700:
        for index in range(700 >> level):
            assert store.node(level, index) == reference.node(level, index), (level, index)
        level += 1


def test_proofs_between_appends_see_the_grown_right_edge(store: Store) -> None:
    # The right edge of every stratum grows with each append; a proof served in between must
    # never be answered from a copy of an edge tile read before the append.
    for end in range(13, 700, 29):
        store.append(DOCS[end - 29 if end > 29 else 0 : end])
        reference = _reference(DOCS[:end])
        for index in (0, end // 2, end - 1):
            assert store.inclusion_proof(index, end) == reference.inclusion_proof(index, end)
        assert store.root_at(end) == reference.root()


def test_node_outside_the_tree_is_not_found(store: Store) -> None:
    store.append(DOCS[:5])
    with pytest.raises(NotFoundError):
        store.node(0, 5)
    with pytest.raises(NotFoundError):
        store.node(1, 2)  # covers leaves 4..5: not a full node at size 5
    with pytest.raises(NotFoundError):
        store.node(3, 0)
    with pytest.raises(MalformedError):
        store.node(-1, 0)


def test_proofs_verify_and_match_the_reference(store: Store) -> None:
    for start in range(0, 700, 53):
        store.append(DOCS[start : start + 53])
    reference = _reference(DOCS)
    for size in (1, 2, 3, 15, 16, 17, 31, 255, 256, 257, 511, 699, 700):
        root = store.root_at(size)
        assert root == reference.root(size)
        for index in {0, size // 3, size // 2, size - 1}:
            path = store.inclusion_proof(index, size)
            assert path == reference.inclusion_proof(index, size)
            verify_inclusion(leaf_hash(DOCS[index]), index, size, path, root)
        for old in {1, size // 2 or 1, size - 1 or 1, size}:
            path = store.consistency_proof(old, size)
            assert path == reference.consistency_proof(old, size)
            verify_consistency(old, size, reference.root(old), root, path)


def test_proofs_beyond_the_log_are_not_found(store: Store) -> None:
    store.append(DOCS[:10])
    with pytest.raises(NotFoundError):
        store.inclusion_proof(0, 11)
    with pytest.raises(NotFoundError):
        store.consistency_proof(1, 11)
    with pytest.raises(NotFoundError):
        store.root_at(11)
    with pytest.raises(MalformedError):
        store.inclusion_proof(10, 10)
    with pytest.raises(MalformedError):
        store.consistency_proof(0, 5)


# -- atomicity --------------------------------------------------------------------------------


def _assert_untouched(store: Store, head: TreeHead, size: int) -> None:
    assert store.tree_head() == head
    assert store.size == size
    assert store.index_of(DOCS[size]) is None
    assert store.last_height() == 1
    with pytest.raises(NotFoundError):
        store.digest_at(size)
    with pytest.raises(NotFoundError):
        store.node(0, size)


def test_append_with_out_of_sequence_block_writes_nothing(store: Store) -> None:
    store.append(DOCS[:20], block=BlockRecord(height=1, block=b"b1", certificate=b"c1"))
    head = store.tree_head()
    bad = BlockRecord(height=3, block=b"b3", certificate=b"c3")
    with pytest.raises(StorageError, match="does not follow"):
        store.append(DOCS[20:40], block=bad)
    _assert_untouched(store, head, 20)
    assert store.block(3) is None
    # The store still works: the right height and the same digests go in.
    result = store.append(DOCS[20:40], block=BlockRecord(height=2, block=b"b", certificate=b""))
    assert result.indices == tuple(range(20, 40))
    assert result.head.root == _reference(DOCS[:40]).root()


def test_digest_iterable_failing_midway_writes_nothing(store: Store) -> None:
    store.append(DOCS[:20], block=BlockRecord(height=1, block=b"b1", certificate=b"c1"))
    head = store.tree_head()

    def failing() -> Iterator[bytes]:
        yield from DOCS[20:30]
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        store.append(failing(), block=BlockRecord(height=2, block=b"b", certificate=b"c"))
    _assert_untouched(store, head, 20)


# -- blocks, checkpoints, metadata ------------------------------------------------------------


def test_blocks_are_stored_with_their_certificates(store: Store) -> None:
    b1 = BlockRecord(height=1, block=b"block one", certificate=b"cert one")
    b2 = BlockRecord(height=2, block=b"", certificate=b"\x00" * 1000)
    b3 = BlockRecord(height=3, block=b"x" * 10_000, certificate=b"")  # an overflow page
    store.append(DOCS[:3], block=b1)
    store.append([], block=b2)  # an empty block still commits
    store.append(DOCS[:4], block=b3)
    assert [store.block(h) for h in (1, 2, 3)] == [b1, b2, b3]
    assert store.block(0) is None and store.block(4) is None
    assert store.last_height() == 3
    with pytest.raises(StorageError):
        store.append([], block=b3)
    with pytest.raises(MalformedError):
        store.block(-1)


def test_checkpoints_by_size_and_latest(store: Store) -> None:
    store.append(DOCS[:10])
    with pytest.raises(StorageError):
        store.put_checkpoint(11, b"too far")
    store.put_checkpoint(5, b"note 5")
    store.put_checkpoint(10, b"note 10")
    store.put_checkpoint(0, b"note 0")
    assert store.checkpoint(5) == b"note 5"
    assert store.checkpoint(6) is None
    assert store.latest_checkpoint() == b"note 10"
    store.put_checkpoint(10, b"note 10 with more cosignatures")
    assert store.latest_checkpoint() == b"note 10 with more cosignatures"
    with pytest.raises(MalformedError):
        store.put_checkpoint(3, b"")
    with pytest.raises(MalformedError):
        store.put_checkpoint(-1, b"n")


def test_meta_set_overwrite_delete_in_one_call(store: Store) -> None:
    assert store.get_meta(b"k") is None
    store.put_meta({b"k": b"v1", b"other": b"x"})
    assert store.get_meta(b"k") == b"v1"
    store.put_meta({b"k": None, b"other": b"y", b"absent": None})
    assert store.get_meta(b"k") is None
    assert store.get_meta(b"other") == b"y"
    store.put_meta({b"empty": b""})
    assert store.get_meta(b"empty") == b""


@pytest.mark.parametrize("key", [b"", b"k" * 512, "text"])
def test_bad_meta_key_is_malformed_and_nothing_is_written(store: Store, key: object) -> None:
    with pytest.raises(MalformedError):
        store.put_meta({b"good": b"v", key: b"v"})  # type: ignore[dict-item]
    with pytest.raises(MalformedError):
        store.get_meta(key)  # type: ignore[arg-type]
    assert store.get_meta(b"good") is None


def test_bad_meta_value_is_malformed(store: Store) -> None:
    with pytest.raises(MalformedError):
        store.put_meta({b"k": "text"})  # type: ignore[dict-item]
    assert store.get_meta(b"k") is None


def test_closed_store_refuses_every_call(store: Store) -> None:
    store.append(DOCS[:2])
    store.close()
    store.close()  # idempotent
    for call in (
        lambda: store.size,
        store.tree_head,
        lambda: store.append(DOCS[2:3]),
        lambda: store.index_of(DOCS[0]),
        lambda: store.node(0, 0),
        lambda: store.inclusion_proof(0, 1),
        lambda: store.get_meta(b"k"),
        lambda: store.put_meta({b"k": b"v"}),
        store.latest_checkpoint,
        store.last_height,
    ):
        with pytest.raises(StorageError, match="closed"):
            call()


# -- the model-based property -----------------------------------------------------------------

POOL = DOCS[:60]
batches_strategy = st.lists(
    st.lists(st.integers(min_value=0, max_value=len(POOL) - 1), max_size=40),
    min_size=1,
    max_size=8,
)


def _check_against_model(store: Store, batches: list[list[int]]) -> None:
    log: list[bytes] = []
    for batch in batches:
        ds = [POOL[i] for i in batch]
        preview = store.preview(ds)
        result = store.append(ds)
        assert result == preview
        expected_indices = []
        expected_new = []
        for d in ds:
            if d in log:
                expected_indices.append(log.index(d))
                expected_new.append(False)
            else:
                log.append(d)
                expected_indices.append(len(log) - 1)
                expected_new.append(True)
        assert result.indices == tuple(expected_indices)
        assert result.new == tuple(expected_new)
        assert result.head == TreeHead(size=len(log), root=_reference(log).root())
        if log:  # proofs between appends: no cached tile may outlive the append that grew it
            reference, size = _reference(log), len(log)
            for index in (0, size - 1):
                assert store.inclusion_proof(index, size) == reference.inclusion_proof(index, size)
    reference = _reference(log)
    for i, d in enumerate(log):
        assert store.index_of(d) == i
        assert store.digest_at(i) == d
    for size in range(1, len(log) + 1):
        assert store.root_at(size) == reference.root(size)
        assert store.inclusion_proof(size - 1, size) == reference.inclusion_proof(size - 1, size)
        assert store.consistency_proof(1, size) == reference.consistency_proof(1, size)


@settings(max_examples=40, deadline=None)
@given(batches_strategy)
def test_memory_store_matches_the_model(batches: list[list[int]]) -> None:
    _check_against_model(MemoryStore(), batches)


@settings(max_examples=25, deadline=None)
@given(batches_strategy)
def test_lmdb_store_matches_the_model(batches: list[list[int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, open_lmdb(Path(tmp)) as store:
        _check_against_model(store, batches)
        store.check()


# -- metadata written with an append ------------------------------------------------------------


def test_append_writes_its_metadata_in_the_same_transaction(store: Store) -> None:
    # The node keeps its safety record and indexes with the block that changes them: one
    # transaction, one sync. All of it lands, or none of it.
    b1 = BlockRecord(height=1, block=b"b1", certificate=b"c1")
    store.append(DOCS[:3], block=b1, meta={b"safety": b"h1", b"changes/1": b"x"})
    assert store.get_meta(b"safety") == b"h1" and store.get_meta(b"changes/1") == b"x"
    with pytest.raises(StorageError, match="does not follow"):  # a bad block: nothing lands
        store.append(DOCS[3:6], block=BlockRecord(height=3, block=b"", certificate=b""),
                     meta={b"safety": b"h3"})
    assert store.get_meta(b"safety") == b"h1" and store.size == 3
    with pytest.raises(MalformedError):  # a bad key: nothing lands either
        store.append(DOCS[3:6], meta={b"safety": b"h2", b"": b"bad"})
    assert store.get_meta(b"safety") == b"h1" and store.size == 3
    with pytest.raises(MalformedError):
        store.append(DOCS[3:6], meta={b"safety": "text"})  # type: ignore[dict-item]
    store.append([], meta={b"changes/1": None, b"safety": b"h1b"})  # metadata alone, deletes
    assert store.get_meta(b"changes/1") is None and store.get_meta(b"safety") == b"h1b"
    result = store.append(DOCS[3:6], block=BlockRecord(height=2, block=b"b2", certificate=b""),
                          meta={b"safety": b"h2"})
    assert result.indices == (3, 4, 5) and store.get_meta(b"safety") == b"h2"
    assert store.last_height() == 2


def test_digests_between_returns_a_leaf_range(store: Store) -> None:
    store.append(DOCS[:40])
    assert store.digests_between(5, 37) == DOCS[5:37]
    assert store.digests_between(40, 40) == []
    with pytest.raises(NotFoundError):
        store.digests_between(0, 41)
    with pytest.raises(MalformedError):
        store.digests_between(10, 5)


def test_earliest_checkpoint_containing_a_leaf(store: Store) -> None:
    # The receipt that proves the earliest moment is cut against the first checkpoint whose
    # tree holds the leaf (issue 11).
    store.append(DOCS[:30])
    for size in (10, 20, 30):
        store.put_checkpoint(size, b"note %d\n" % size)
    assert store.earliest_checkpoint(0) == (10, b"note 10\n")
    assert store.earliest_checkpoint(9) == (10, b"note 10\n")
    assert store.earliest_checkpoint(10) == (20, b"note 20\n")
    assert store.earliest_checkpoint(29) == (30, b"note 30\n")
    assert store.earliest_checkpoint(30) is None
    with pytest.raises(MalformedError):
        store.earliest_checkpoint(-1)
