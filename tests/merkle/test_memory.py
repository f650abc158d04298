"""InMemoryTree: the one-leaf-at-a-time reference agrees with the naive MTH and the frontier."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import MalformedError, NotFoundError
from ledger.merkle import Frontier, InMemoryTree

from .oracle import leaves, mth

LEAVES = leaves(300)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), max_size=10))
def test_memory_tree_nodes_equal_frontier_rows_for_any_batching(batches: list[int]) -> None:
    tree = InMemoryTree()
    frontier = Frontier.empty()
    start = 0
    for size in batches:
        batch = LEAVES[start : start + size]
        old = frontier.size
        tree.append(batch)
        frontier, rows = frontier.extend(batch)
        start += size
        for k, row in enumerate(rows):
            for j, h in enumerate(row):
                assert tree.node(k, (old >> k) + j) == h
        assert tree.size == frontier.size
        assert tree.root() == frontier.root() == mth(LEAVES[:start])


def test_memory_tree_serves_roots_and_proofs_of_earlier_sizes() -> None:
    tree = InMemoryTree(LEAVES[:100])
    assert tree.root(37) == mth(LEAVES[:37])
    assert tree.inclusion_proof(3, 37) == tree.inclusion_proof(3, 37)
    assert tree.consistency_proof(37) == tree.consistency_proof(37, 100)


def test_memory_tree_raises_not_found_for_absent_nodes() -> None:
    tree = InMemoryTree(LEAVES[:5])
    tree.node(2, 0)
    for level, index in [(0, 5), (1, 2), (2, 1), (3, 0), (-1, 0), (0, -1)]:
        with pytest.raises(NotFoundError):
            tree.node(level, index)


def test_memory_tree_rejects_malformed_leaves() -> None:
    with pytest.raises(MalformedError):
        InMemoryTree([b"short"])
