"""The tile layout: post-order offsets, prefix growth, and placement of Frontier rows."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import CorruptionError, StorageError
from ledger.merkle import Frontier, InMemoryTree
from ledger.storage._tiles import (
    FULL_TILE_BYTES,
    FULL_TILE_HASHES,
    OFFSETS,
    TILE_HASHES,
    TILE_WIDTH,
    extend_stratum,
    stratum_hashes,
)

# Enough leaves for the largest batching the property below draws (12 batches of up to 70).
LEAVES = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(12 * 70)]


def test_full_tile_fits_an_lmdb_page_four_times_without_overflow() -> None:
    assert FULL_TILE_HASHES == 30 and FULL_TILE_BYTES == 960
    # 4 x (960-byte value + 8-byte key + 8-byte node header + 2-byte pointer) + 16-byte header.
    assert 4 * (FULL_TILE_BYTES + 8 + 8 + 2) + 16 <= 4096


def test_offsets_are_a_permutation_of_the_tile_slots() -> None:
    every = sorted(o for row in OFFSETS for o in row)
    assert every == [k * 32 for k in range(FULL_TILE_HASHES)]
    assert [len(row) for row in OFFSETS] == [16, 8, 4, 2]


def test_a_partial_tile_is_the_prefix_of_nodes_completed_so_far() -> None:
    # After m bottom-row nodes, exactly the completed nodes occupy slots [0, TILE_HASHES[m]).
    for m in range(TILE_WIDTH + 1):
        completed = [OFFSETS[r][j] for r in range(4) for j in range(m >> r)]
        assert sorted(completed) == [k * 32 for k in range(TILE_HASHES[m])]
    assert TILE_HASHES[TILE_WIDTH] == FULL_TILE_HASHES


def test_stratum_hashes_counts_full_and_partial_tiles() -> None:
    assert stratum_hashes(0) == 0
    assert stratum_hashes(16) == 30
    assert stratum_hashes(37) == 2 * 30 + TILE_HASHES[5]


def _stratum_zero(batches: list[int]) -> tuple[list[bytes], bytes, int]:
    """Feed stratum 0 of a growing tree batch by batch, as the store does."""
    frontier, tiles, edge, size = Frontier.empty(), [], b"", 0
    for k in batches:
        frontier, rows = frontier.extend(LEAVES[size : size + k])
        full, edge = extend_stratum(size, size + k, edge, rows[:4])
        tiles.extend(full)
        size += k
    return tiles, edge, size


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70), min_size=1, max_size=12))
def test_tiles_hold_every_node_at_its_offset_for_any_batching(batches: list[int]) -> None:
    tiles, edge, size = _stratum_zero(batches)
    reference = InMemoryTree(LEAVES[:size])
    assert len(tiles) == size // 16
    assert len(edge) == TILE_HASHES[size % 16] * 32
    stored = [*tiles, edge]
    for r in range(4):
        for i in range(size >> r):
            tile = stored[i >> (4 - r)]
            offset = OFFSETS[r][i % (16 >> r)]
            assert tile[offset : offset + 32] == reference.node(r, i)


def test_edge_of_wrong_length_is_corruption() -> None:
    _frontier, rows = Frontier.empty().extend(LEAVES[:3])
    with pytest.raises(CorruptionError):
        extend_stratum(3, 6, b"\x00" * 32, rows)  # 3 nodes need 4 hashes, not 1


def test_row_of_wrong_length_is_refused() -> None:
    with pytest.raises(StorageError):
        extend_stratum(0, 2, b"", [[LEAVES[0]]])
