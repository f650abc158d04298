"""The Merkle log as the consensus core's application (pure; part of the replica).

The core asks two things of its ``Application`` (``ledger/consensus/CORE_API.md``):

- ``propose(height, prev_block, now)``: the batch of the next block. :class:`LogApplication`
  takes the oldest pending digests from the mempool that are not in the log yet, asks the store
  for the tree head after them (``Store.preview``: nothing is written), and adds the oldest
  pending validator-set change that a block at ``height`` may carry (the core leaves out a
  change that is not valid there, so offering one early or twice is harmless);
- ``validate(block)``: recompute a proposed block's tree head the same way; a block whose head
  differs is refused, and no honest replica prevotes for it.

Committing is the replica's: :func:`commit_block` writes the block's digests, the block and its
certificate in one store transaction (the block record is the end-of-height marker: a block is
in the store with everything it appended, or not at all).

The store is the only thing this touches, through the ``Store`` protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ledger.consensus import Batch, Block, CommitCertificate
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.errors import CorruptionError, MalformedError, VerificationError
from ledger.replica.batching import Mempool
from ledger.replica.validators import ChangePool
from ledger.storage.base import AppendResult, BlockRecord, Store, TreeHead

__all__ = ["LogApplication", "commit_block"]


class LogApplication:
    """The log plus the change pool as the core's application (see the module docstring)."""

    def __init__(
        self, *, store: Store, mempool: Mempool, changes: ChangePool, max_batch: int
    ) -> None:
        if not 1 <= max_batch <= MAX_BLOCK_DIGESTS:
            raise MalformedError(f"batch size must be 1..{MAX_BLOCK_DIGESTS}")
        self._store = store
        self._mempool = mempool
        self._changes = changes
        self._max_batch = max_batch
        # The last proposed batch, the log head it was built on and the head after it.
        self._proposed: tuple[tuple[bytes, ...], TreeHead, TreeHead] | None = None

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        """The oldest pending digests that are not in the log yet, the tree head after them,
        and a pending validator-set change that may ride in a block at ``height``.

        Raises:
            StorageError: the store failed (the core then proposes nothing this round).
        """
        candidates = tuple(self._mempool.batch(self._max_batch))
        preview = self._store.preview(candidates)
        fresh = [d for d, new in zip(candidates, preview.new, strict=True) if new]
        if len(fresh) != len(candidates):
            # Committed meanwhile by a block we applied: drop them (defensive; commit removes).
            self._mempool.remove(d for d, new in zip(candidates, preview.new, strict=True)
                                 if not new)
        # The same tuple when nothing was dropped: the store then reuses this preview's work
        # when the block is appended.
        digests = candidates if len(fresh) == len(candidates) else tuple(fresh)
        self._proposed = (digests, self._store.tree_head(), preview.head)
        batch = Batch(digests=digests, tree_size=preview.head.size, tree_root=preview.head.root)
        change = self._changes.candidate(height)
        return batch if change is None else dataclasses.replace(batch, changes=(change,))

    def validate(self, block: Block) -> None:
        """Check that the log plus the block's digests gives the block's tree head (the core
        checks ``block.changes`` itself).

        Raises:
            MalformedError: too many digests, or one that is not 32 bytes.
            VerificationError: the tree head differs.
        """
        if len(block.digests) > MAX_BLOCK_DIGESTS:
            raise MalformedError("too many digests in one block")
        proposed = self._proposed
        if (proposed is not None and proposed[0] is block.digests
                and proposed[1] == self._store.tree_head()):
            # Our own proposal, unchanged log: propose() computed this very preview.
            head = proposed[2]
        else:
            head = self._store.preview(block.digests).head
        if (head.size, head.root) != (block.tree_size, block.tree_root):
            raise VerificationError(
                f"block {block.height} claims tree head {block.tree_size}, the log plus its "
                f"digests gives {head.size} with another root"
            )


def commit_block(
    store: Store, block: Block, certificate: CommitCertificate,
    *, meta: Mapping[bytes, bytes | None] | None = None,
) -> AppendResult:
    """Append ``block``'s digests, the block and its certificate in one transaction (with
    ``meta`` items, if given, in the same transaction where the store supports it).

    Raises:
        StorageError: the write failed, or the block does not follow the stored chain.
        CorruptionError: the tree head after the append is not the block's (a store that
            contradicts what consensus decided: never continue on it).
    """
    record = BlockRecord(height=block.height, block=block.encode(),
                         certificate=certificate.encode())
    result = store.append(block.digests, block=record, meta=meta or None)
    if (result.head.size, result.head.root) != (block.tree_size, block.tree_root):
        raise CorruptionError(
            f"the store's tree head after block {block.height} is not the block's")
    return result
