"""The on-disk tile layout of the Merkle tree's full nodes (pure: no I/O).

Why tiles
---------
A store that keeps one record per full node pays the record overhead of its key-value store
(about 16 bytes of LMDB node header and key) on every 32-byte hash, and a proof touches one
record per level. Like C2SP tlog-tiles and Tessera, we group hashes instead. The tree's levels
are cut into *strata* of :data:`TILE_HEIGHT` = 4 levels: stratum ``s`` holds levels
``4s .. 4s + 3``. Within a stratum, a *tile* ``t`` holds every full node of those four levels
under the (level ``4s + 4``, index ``t``) node: 16 nodes on its bottom row, then 8, 4 and 2,
30 hashes, 960 bytes. The node on top of a tile is not in it: it is a bottom-row node of the
tile above, so every full node is stored exactly once. Four full tiles fill one 4 KiB LMDB
page with no overflow page, and a proof at 10^6 leaves (20 levels) reads 5 tiles.

Differences from tlog-tiles, and why: tlog-tiles stores only the bottom row of 8-level tiles
and recomputes the rest; we store all four rows (about 2x the hashes of bottom-row-only) so a
proof costs slicing, not hashing, and we keep 4 levels so a tile stays well under LMDB's
overflow threshold. Stratum 0's bottom row holds the 32-byte *document digests* (the leaf
data) instead of their leaf hashes: the digest must be stored anyway (``digest_at``), the leaf
hash is ``SHA-256(0x00 || digest)`` (RFC 9162 section 2.1.1) and costs one hash to recompute,
and storing only one of the two saves 32 bytes per anchor.

Post-order inside a tile
------------------------
The hashes of a tile are stored in the order in which an append completes them (post-order:
leaf 0, leaf 1, their parent, leaf 2, leaf 3, their parent, the parent of those two, ...). A
tile that is still growing (the right edge of the tree) is therefore always a *prefix* of the
tile it will become: appending to it is appending bytes, and a node has the same offset in a
partial and in a full tile (:data:`OFFSETS`). A tile with ``m`` bottom-row nodes (``m < 16``)
holds ``2m - popcount(m)`` hashes (:data:`TILE_HASHES`); a full one holds 30.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import CorruptionError, StorageError
from ledger.merkle.hashing import HASH_SIZE

__all__ = [
    "FULL_TILE_BYTES",
    "FULL_TILE_HASHES",
    "MAX_STRATA",
    "OFFSETS",
    "TILE_HASHES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "extend_stratum",
    "stratum_hashes",
]

#: Levels per stratum; a tile spans this many levels of the tree.
TILE_HEIGHT = 4
#: Bottom-row nodes of a full tile.
TILE_WIDTH = 1 << TILE_HEIGHT
#: Hashes in a full tile: 16 + 8 + 4 + 2.
FULL_TILE_HASHES = 2 * TILE_WIDTH - 2
#: Bytes of a full tile (960: four fit in a 4 KiB LMDB page, none needs an overflow page).
FULL_TILE_BYTES = FULL_TILE_HASHES * HASH_SIZE
#: Strata needed for trees of up to 2**64 leaves (levels 0..63).
MAX_STRATA = 64 // TILE_HEIGHT


def _post_order() -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Byte offset of every node of a tile, and the hash count after each bottom-row append.

    Simulates appending the 16 bottom-row nodes one at a time and numbers each node of rows
    0..3 as it is completed (a binary counter: a node completes a pair whenever its row's count
    becomes even). The top (row 4) completes last and is not part of the tile.
    """
    positions: list[list[int]] = [[] for _ in range(TILE_HEIGHT)]
    counts = [0] * (TILE_HEIGHT + 1)
    after: list[int] = [0]
    order = 0
    for _ in range(TILE_WIDTH):
        row = 0
        while row < TILE_HEIGHT:
            counts[row] += 1
            positions[row].append(order * HASH_SIZE)
            order += 1
            if counts[row] % 2:
                break
            row += 1
        after.append(order)
    return tuple(tuple(p) for p in positions), tuple(after)


#: ``OFFSETS[r][j]``: byte offset of the node on row ``r``, position ``j`` of a tile.
#: ``TILE_HASHES[m]``: hashes stored in a tile with ``m`` bottom-row nodes (``0 <= m <= 16``).
OFFSETS, TILE_HASHES = _post_order()


def stratum_hashes(count: int) -> int:
    """Hashes stored for a stratum whose bottom row has ``count`` nodes (all its tiles)."""
    return (count >> TILE_HEIGHT) * FULL_TILE_HASHES + TILE_HASHES[count & (TILE_WIDTH - 1)]


def extend_stratum(
    old_count: int, new_count: int, edge: bytes, rows: Sequence[Sequence[bytes]]
) -> tuple[list[bytes], bytes]:
    """Place one stratum's new nodes into tiles.

    ``old_count`` and ``new_count`` are the stratum's bottom-row node counts before and after
    the append (``size >> 4s``). ``edge`` is the stored partial tile (``b""`` when
    ``old_count`` is a multiple of 16). ``rows[r]`` are the new nodes of the stratum's row
    ``r``, in index order from ``old_count >> r`` (missing trailing rows mean no new nodes), as
    :meth:`~ledger.merkle.frontier.Frontier.extend` returns them.

    Returns the tiles that became full, in order, starting with tile ``old_count >> 4``, and
    the new partial tile (``b""`` if none): exactly what the store writes.

    :raises CorruptionError: ``edge`` has the wrong length for ``old_count`` (the stored tile
        was truncated or belongs to another size).
    :raises StorageError: a row has the wrong number of nodes (a caller bug).
    """
    mask = TILE_WIDTH - 1
    if len(edge) != TILE_HASHES[old_count & mask] * HASH_SIZE:
        raise CorruptionError(
            f"partial tile holds {len(edge)} bytes, expected "
            f"{TILE_HASHES[old_count & mask] * HASH_SIZE} for {old_count} bottom-row nodes"
        )
    first = old_count >> TILE_HEIGHT
    total = (stratum_hashes(new_count) - first * FULL_TILE_HASHES) * HASH_SIZE
    buf = bytearray(total)
    buf[: len(edge)] = edge
    for r in range(TILE_HEIGHT):
        row = rows[r] if r < len(rows) else ()
        start = old_count >> r
        if len(row) != (new_count >> r) - start:
            raise StorageError(
                f"row {r} of a stratum has {len(row)} new nodes, expected "
                f"{(new_count >> r) - start}"
            )
        shift = TILE_HEIGHT - r
        row_mask = (TILE_WIDTH >> r) - 1
        offsets = OFFSETS[r]
        for i, h in enumerate(row, start):
            pos = ((i >> shift) - first) * FULL_TILE_BYTES + offsets[i & row_mask]
            buf[pos : pos + HASH_SIZE] = h
    full = (new_count >> TILE_HEIGHT) - first
    tiles = [bytes(buf[k * FULL_TILE_BYTES : (k + 1) * FULL_TILE_BYTES]) for k in range(full)]
    return tiles, bytes(buf[full * FULL_TILE_BYTES :])
