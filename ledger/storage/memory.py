"""``MemoryStore``: the in-memory twin of :class:`~ledger.storage.lmdb_store.LmdbStore`.

Used by the consensus simulator and by tests that need a store but not durability. It obeys
every rule of :mod:`ledger.storage.base` (the shared test suite runs against both stores) and
keeps the full nodes in one list per level, extended with the rows that
:meth:`~ledger.merkle.frontier.Frontier.extend` returns, the same rows the LMDB store writes.

Atomicity: every mutating method validates and computes everything first and only then
mutates, with nothing that can fail in between, so a failing call changes nothing.

Memory cannot rot, so :meth:`MemoryStore.scrub` finds nothing; the repair calls check their
input exactly as the LMDB store does (a tile's nodes must hash to the stored tree) and rewrite
the value, so callers see one behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ledger.errors import MalformedError, NotFoundError, StorageError, VerificationError
from ledger.merkle import proof
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import HASH_SIZE, leaf_hash, leaf_hashes, node_hash
from ledger.merkle.proof import Chain
from ledger.storage.base import (
    REPAIR_LOCAL,
    AppendResult,
    BlockRecord,
    Damage,
    ScrubReport,
    TreeHead,
    check_block_follows,
    check_digest,
    check_meta_items,
    check_meta_key,
    check_non_negative,
    check_note,
    check_within,
    plan_append,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~ledger.storage.base.Store` held in memory (lost when the process ends)."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._closed = False
        self._frontier = Frontier.empty()
        self._head = TreeHead(size=0, root=self._frontier.root())
        self._digests: list[bytes] = []
        self._index: dict[bytes, int] = {}
        # _levels[k][i] = full node (k, i) for k >= 1; level 0 is derived from _digests.
        self._levels: list[list[bytes]] = [[]]
        self._checkpoints: dict[int, bytes] = {}
        self._blocks: list[BlockRecord] = []
        self._meta: dict[bytes, bytes] = {}

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        if self._closed:
            raise StorageError("the store is closed")

    # -- tree ---------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of leaves in the log.

        :raises StorageError: the store is closed.
        """
        self._open()
        return self._frontier.size

    def tree_head(self) -> TreeHead:
        """The current tree head.

        :raises StorageError: the store is closed.
        """
        self._open()
        return self._head

    def frontier(self) -> Frontier:
        """The frontier of the current tree.

        :raises StorageError: the store is closed.
        """
        self._open()
        return self._frontier

    def preview(self, digests: Iterable[bytes]) -> AppendResult:
        """What :meth:`append` would return for ``digests``; changes nothing.

        :raises MalformedError: a digest is not 32 bytes.
        :raises StorageError: the store is closed.
        """
        self._open()
        plan = plan_append(digests, self._frontier.size, self._lookup_many)
        frontier, _ = self._frontier.extend(plan.leaves)
        head = TreeHead(size=frontier.size, root=frontier.root())
        return AppendResult(head=head, indices=plan.indices, new=plan.new)

    def append(
        self,
        digests: Iterable[bytes],
        *,
        block: BlockRecord | None = None,
        meta: Mapping[bytes, bytes | None] | None = None,
    ) -> AppendResult:
        """Append the digests not yet in the log and, if given, the block and the metadata
        items; all or nothing.

        :raises MalformedError: a digest is not 32 bytes, ``block`` is not a BlockRecord, or a
            metadata key or value is bad.
        :raises StorageError: ``block.height`` is not ``last_height() + 1``, or the store is
            closed.
        """
        self._open()
        if meta is not None:
            check_meta_items(meta)
        plan = plan_append(digests, self._frontier.size, self._lookup_many)
        if block is not None:
            check_block_follows(block, len(self._blocks))
        frontier, rows = self._frontier.extend(plan.leaves)
        head = TreeHead(size=frontier.size, root=frontier.root())
        # Nothing below can fail: the mutation is all-or-nothing.
        start = self._frontier.size
        self._digests.extend(plan.digests)
        for i, digest in enumerate(plan.digests, start):
            self._index[digest] = i
        for level in range(1, len(rows)):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].extend(rows[level])
        if block is not None:
            self._blocks.append(block)
        if meta:
            self._apply_meta(meta)
        self._frontier, self._head = frontier, head
        return AppendResult(head=head, indices=plan.indices, new=plan.new)

    def _lookup_many(self, digests: list[bytes], _leaves: list[bytes]) -> list[int | None]:
        index = self._index
        return [index.get(d) for d in digests]

    def index_of(self, digest: bytes) -> int | None:
        """The leaf index of ``digest``, or ``None``.

        :raises MalformedError: ``digest`` is not 32 bytes.
        :raises StorageError: the store is closed.
        """
        self._open()
        return self._index.get(check_digest(digest))

    def index_of_many(self, digests: Sequence[bytes]) -> list[int | None]:
        """:meth:`index_of` of each digest, in order.

        :raises MalformedError: a digest is not 32 bytes.
        :raises StorageError: the store is closed.
        """
        self._open()
        index = self._index
        return [index.get(check_digest(d)) for d in digests]

    def digest_at(self, index: int) -> bytes:
        """The digest at leaf ``index``.

        :raises MalformedError: ``index`` is negative.
        :raises NotFoundError: ``index >= size``.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(index, "leaf index")
        if index >= len(self._digests):
            raise NotFoundError(f"no leaf {index} in a log of size {len(self._digests)}")
        return self._digests[index]

    def digests_between(self, start: int, end: int) -> list[bytes]:
        """The digests of leaves ``[start, end)``, in order.

        :raises MalformedError: ``start`` is negative or ``end < start``.
        :raises NotFoundError: ``end`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(start, "leaf index")
        if not isinstance(end, int) or end < start:
            raise MalformedError(f"no leaf range [{start}, {end!r})")
        if end > len(self._digests):
            raise NotFoundError(f"no leaves [{start}, {end}) in a log of size "
                                f"{len(self._digests)}")
        return self._digests[start:end]

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``.

        :raises MalformedError: ``level`` or ``index`` is negative.
        :raises NotFoundError: no such full node.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(level, "node level")
        check_non_negative(index, "node index")
        if ((index + 1) << level) > self._frontier.size:
            raise NotFoundError(
                f"no full node ({level}, {index}) in a log of size {self._frontier.size}"
            )
        if level == 0:
            return leaf_hash(self._digests[index])
        return self._levels[level][index]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        :raises MalformedError: ``index`` is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_within(size, self._frontier.size, "tree size")
        return proof.inclusion_proof(self, index, size)

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each index in the tree of ``size`` leaves, in order.

        :raises MalformedError: an index is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_within(size, self._frontier.size, "tree size")
        return proof.inclusion_proofs(self, indices, size)[0]

    def inclusion_chains(self, indices: Sequence[int], leaf_hashes: Sequence[bytes],
                         size: int) -> tuple[list[Chain], bytes]:
        """The paths of ``indices`` and the root they lead to from ``leaf_hashes``.

        :raises MalformedError: an index is not in ``[0, size)`` or a leaf hash is missing.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_within(size, self._frontier.size, "tree size")
        return proof.inclusion_chains(self, indices, size, leaf_hashes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 2.1.4.1 consistency proof from ``old_size`` to ``new_size``.

        :raises MalformedError: ``old_size < 1`` or ``old_size > new_size``.
        :raises NotFoundError: ``new_size`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_within(new_size, self._frontier.size, "tree size")
        return proof.consistency_proof(self, old_size, new_size)

    def root_at(self, size: int) -> bytes:
        """The root of the first ``size`` leaves.

        :raises MalformedError: ``size`` is negative.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_within(size, self._frontier.size, "tree size")
        return proof.root_at(self, size)

    # -- checkpoints, blocks, metadata --------------------------------------------------------

    def put_checkpoint(self, size: int, note: bytes) -> None:
        """Store the checkpoint note for tree ``size``, replacing an earlier one.

        :raises MalformedError: ``size`` is negative or ``note`` is not non-empty bytes.
        :raises StorageError: ``size`` exceeds the log, or the store is closed.
        """
        self._open()
        check_non_negative(size, "checkpoint size")
        check_note(note)
        if size > self._frontier.size:
            raise StorageError(f"checkpoint size {size} exceeds the log size {self._frontier.size}")
        self._checkpoints[size] = note

    def checkpoint(self, size: int) -> bytes | None:
        """The checkpoint note for ``size``, or ``None``.

        :raises MalformedError: ``size`` is negative.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(size, "checkpoint size")
        return self._checkpoints.get(size)

    def latest_checkpoint(self) -> bytes | None:
        """The checkpoint note with the largest size, or ``None``.

        :raises StorageError: the store is closed.
        """
        self._open()
        if not self._checkpoints:
            return None
        return self._checkpoints[max(self._checkpoints)]

    def earliest_checkpoint(self, leaf: int) -> tuple[int, bytes] | None:
        """``(size, note)`` of the smallest stored checkpoint size above ``leaf``, or None.

        :raises MalformedError: ``leaf`` is negative.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(leaf, "leaf index")
        sizes = [s for s in self._checkpoints if s > leaf]
        if not sizes:
            return None
        size = min(sizes)
        return size, self._checkpoints[size]

    def block(self, height: int) -> BlockRecord | None:
        """The block at ``height``, or ``None`` (also for height 0).

        :raises MalformedError: ``height`` is negative.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_non_negative(height, "block height")
        if 1 <= height <= len(self._blocks):
            return self._blocks[height - 1]
        return None

    def last_height(self) -> int:
        """The height of the last block (0 = none).

        :raises StorageError: the store is closed.
        """
        self._open()
        return len(self._blocks)

    def get_meta(self, key: bytes) -> bytes | None:
        """The metadata value of ``key``, or ``None``.

        :raises MalformedError: ``key`` is not 1 to 511 bytes.
        :raises StorageError: the store is closed.
        """
        self._open()
        return self._meta.get(check_meta_key(key))

    def put_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        """Set (``None``: delete) metadata keys, all or nothing.

        :raises MalformedError: a key is not 1 to 511 bytes or a value not bytes or ``None``.
        :raises StorageError: the store is closed.
        """
        self._open()
        check_meta_items(items)
        self._apply_meta(items)

    def _apply_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        for key, value in items.items():
            if value is None:
                self._meta.pop(key, None)
            else:
                self._meta[key] = value

    # -- scrub and repair ---------------------------------------------------------------------

    def scrub(self, cursor: bytes | None = None, *, budget: int = 4096) -> ScrubReport:
        """A pass over memory: nothing to find (one step covers it all).

        :raises MalformedError: ``cursor`` is not ``None`` or ``budget < 1``.
        :raises StorageError: the store is closed.
        """
        self._open()
        if cursor is not None:
            raise MalformedError("not a scrub cursor of this store")
        if not isinstance(budget, int) or budget < 1:
            raise MalformedError("a scrub budget must be a positive int")
        units = len(self._digests) + len(self._blocks) + len(self._checkpoints)
        return ScrubReport(cursor=None, findings=(), checked=units, done=units, total=units)

    def repair_tile(self, stratum: int, tile: int, nodes: Sequence[bytes]) -> None:
        """Rewrite the nodes of a tile (levels ``4s .. 4s+3``) from its bottom row, after
        checking they hash to the stored node above (or to the tree's frontier).

        :raises MalformedError: wrong count or size of ``nodes``.
        :raises VerificationError: the nodes do not hash to the stored tree.
        :raises StorageError: no such tile, or the store is closed.
        """
        self._open()
        check_non_negative(stratum, "stratum")
        check_non_negative(tile, "tile")
        values = list(nodes)
        if any(not isinstance(v, bytes) or len(v) != HASH_SIZE for v in values):
            raise MalformedError("tile nodes must be 32-byte values")
        size = self._frontier.size
        base = 4 * stratum
        count = size >> base
        width = 16 if tile < count >> 4 else (count & 15 if tile == count >> 4 else 0)
        if not width:
            raise StorageError(f"the log of size {size} has no tile {tile} in stratum {stratum}")
        if len(values) != width:
            raise MalformedError(f"tile {tile} of stratum {stratum} has {width} bottom-row "
                                 f"nodes, got {len(values)}")
        rows = [leaf_hashes(values) if stratum == 0 else values]
        for _ in range(3):
            prev = rows[-1]
            rows.append([node_hash(prev[2 * j], prev[2 * j + 1]) for j in range(len(prev) // 2)])
        for r, row in enumerate(rows):
            level = base + r
            first = tile << (4 - r)
            for j, value in enumerate(row):
                if self.node(level, first + j) != value:
                    raise VerificationError(
                        f"the nodes do not hash to the stored node ({level}, {first + j})")
        if width == 16:
            top = node_hash(rows[3][0], rows[3][1])
            if self.node(base + 4, tile) != top:
                raise VerificationError(f"the nodes do not hash to the stored node "
                                        f"({base + 4}, {tile})")
        # Memory holds exactly these values already: nothing to rewrite.

    def repair_block(self, record: BlockRecord) -> None:
        """Replace the block stored at ``record.height``.

        :raises MalformedError: ``record`` is not a BlockRecord.
        :raises StorageError: no block at that height, or the store is closed.
        """
        self._open()
        if not isinstance(record, BlockRecord):
            raise MalformedError("record must be a BlockRecord")
        if not 1 <= record.height <= len(self._blocks):
            raise StorageError(f"no block is stored at height {record.height}")
        self._blocks[record.height - 1] = record

    def repair_checkpoint(self, size: int, note: bytes) -> None:
        """Replace the checkpoint note stored for ``size``.

        :raises MalformedError: ``size`` is negative or ``note`` is not non-empty bytes.
        :raises StorageError: no checkpoint at that size, or the store is closed.
        """
        self._open()
        check_non_negative(size, "checkpoint size")
        check_note(note)
        if size not in self._checkpoints:
            raise StorageError(f"no checkpoint is stored for size {size}")
        self._checkpoints[size] = note

    def rebuild(self, damage: Damage) -> None:
        """Nothing is derived on disk here: accepts any local damage and does nothing.

        :raises MalformedError: ``damage`` is not repairable locally.
        :raises StorageError: the store is closed.
        """
        self._open()
        if not isinstance(damage, Damage) or damage.repair != REPAIR_LOCAL:
            raise MalformedError("only damage marked 'local' is rebuilt by the store")

    def close(self) -> None:
        """Drop the contents; later calls raise :class:`~ledger.errors.StorageError`."""
        self._closed = True
        self._digests, self._levels, self._index = [], [[]], {}
