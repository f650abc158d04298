"""Frontier: roots equal the RFC 9162 MTH, and batching never changes rows or roots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import MalformedError
from ledger.merkle import EMPTY_ROOT, Frontier, InMemoryTree

from .oracle import leaves, mth, node

N_EXHAUSTIVE = 64
LEAVES = leaves(1100)


def _one_batch(n: int) -> tuple[Frontier, list[list[bytes]]]:
    return Frontier.empty().extend(LEAVES[:n])


def test_empty_frontier_has_the_empty_root() -> None:
    # RFC 9162 2.1.1: MTH({}) = SHA-256().
    assert Frontier.empty().root() == EMPTY_ROOT
    assert Frontier.empty().size == 0 and Frontier.empty().hashes == ()


@pytest.mark.parametrize("n", range(N_EXHAUSTIVE + 1))
def test_frontier_root_equals_memory_tree_and_naive_mth(n: int) -> None:
    frontier, _rows = _one_batch(n)
    assert frontier.size == n
    assert len(frontier.hashes) == n.bit_count()
    assert frontier.root() == mth(LEAVES[:n]) == InMemoryTree(LEAVES[:n]).root()


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=N_EXHAUSTIVE, max_value=len(LEAVES)))
def test_frontier_root_equals_naive_mth_at_larger_sizes(n: int) -> None:
    assert _one_batch(n)[0].root() == mth(LEAVES[:n])


@pytest.mark.parametrize("n", range(1, N_EXHAUSTIVE + 1))
def test_frontier_hashes_are_the_full_subtrees_of_the_decomposition(n: int) -> None:
    # hashes[i] is the MTH of the i-th full subtree of n's binary decomposition, largest first.
    frontier, _rows = _one_batch(n)
    start = 0
    for level, h in zip(frontier.levels(), frontier.hashes, strict=True):
        assert h == mth(LEAVES[start : start + (1 << level)])
        start += 1 << level
    assert start == n


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=20),
)
def test_extend_in_any_batch_split_gives_the_same_rows_and_root(batches: list[int]) -> None:
    total = sum(batches)
    whole, whole_rows = _one_batch(total)
    frontier = Frontier.empty()
    # Re-assemble each level's rows from the batches: they must concatenate to one batch's rows.
    joined: list[list[bytes]] = []
    start = 0
    for size in batches:
        old = frontier.size
        frontier, rows = frontier.extend(LEAVES[start : start + size])
        start += size
        assert rows[0] == LEAVES[old : old + size]
        for k, row in enumerate(rows):
            assert len(row) == (frontier.size >> k) - (old >> k)
            if k >= len(joined):
                assert (old >> k) == 0 or not row
                joined.append([])
            joined[k].extend(row)
        # No level above the last row gained a node.
        assert frontier.size >> len(rows) == old >> len(rows)
        assert frontier.root() == mth(LEAVES[: frontier.size])
    assert frontier == whole
    assert [r for r in joined if r] == [r for r in whole_rows if r]


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300))
def test_extend_rows_are_exactly_the_new_full_nodes(old: int, added: int) -> None:
    # rows[k][j] is full node (k, (old >> k) + j): the root of its 2^k leaves.
    frontier, _ = _one_batch(old)
    new_frontier, rows = frontier.extend(LEAVES[old : old + added])
    assert new_frontier.size == old + added
    for k, row in enumerate(rows):
        first = old >> k
        for j, h in enumerate(row):
            index = first + j
            assert h == mth(LEAVES[index << k : (index + 1) << k])


def test_extend_with_nothing_returns_the_same_frontier() -> None:
    frontier, _ = _one_batch(13)
    same, rows = frontier.extend([])
    assert same == frontier and rows == [[]]


def test_extend_pairs_an_odd_start_with_the_frontier_left_sibling() -> None:
    # Size 1 -> 2: the new node at level 1 is H(leaf0, leaf1), leaf0 coming from the frontier.
    frontier, _ = _one_batch(1)
    two, rows = frontier.extend([LEAVES[1]])
    assert rows == [[LEAVES[1]], [node(LEAVES[0], LEAVES[1])]]
    assert two.hashes == (node(LEAVES[0], LEAVES[1]),)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_extend_rejects_leaf_hashes_of_the_wrong_length(bad: bytes) -> None:
    with pytest.raises(MalformedError):
        Frontier.empty().extend([LEAVES[0], bad])


@pytest.mark.parametrize(
    ("size", "hashes"),
    [
        (-1, ()),
        (1, ()),
        (2, (LEAVES[0], LEAVES[1])),
        (3, (LEAVES[0],)),
        (1, (b"\x00" * 31,)),
    ],
)
def test_frontier_constructor_rejects_inconsistent_shapes(
    size: int, hashes: tuple[bytes, ...]
) -> None:
    with pytest.raises(MalformedError):
        Frontier(size=size, hashes=hashes)


def test_frontier_is_a_frozen_keyword_only_value() -> None:
    frontier = Frontier(size=1, hashes=(LEAVES[0],))
    with pytest.raises(AttributeError):
        frontier.size = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Frontier(1, (LEAVES[0],))  # type: ignore[call-arg]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000])
def test_frontier_rebuilt_from_stored_nodes_equals_the_appended_one(n: int) -> None:
    tree = InMemoryTree(LEAVES[:n])
    assert Frontier.from_reader(tree, n) == _one_batch(n)[0]
