"""The simulator's application: real blocks of digests with real RFC 9162 tree heads.

Each simulated node runs a :class:`ToyLog`, the smallest honest implementation of the core's
``Application`` protocol (``ledger/consensus/CORE_API.md``): it keeps the frontier of the global
tree (:class:`ledger.merkle.frontier.Frontier`, RFC 9162 section 2.1.1) after the last applied
block, proposes batches from its own :class:`Mempool`, and validates a proposed block by
appending the block's digests to its frontier and comparing the resulting tree head with the
one the block claims. The mempool is a deterministic stream, so a run needs no randomness here.

Unlike the production store, the toy log does not de-duplicate digests: every mempool produces
digests no other mempool can produce (they are hashes of a per-endpoint seed and a counter), so
a batch never repeats one and the tree head is simply the frontier after the batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ledger.consensus import Batch, Block, ValidatorSetChange
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.errors import MalformedError, VerificationError
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import HASH_SIZE, leaf_hashes


class Mempool:
    """An endless deterministic stream of fresh 32-byte digests for one endpoint."""

    def __init__(self, *, seed: bytes) -> None:
        self._seed = seed
        self._next = 0

    def take(self, n: int) -> tuple[bytes, ...]:
        """The next ``n`` digests of the stream."""
        start, self._next = self._next, self._next + n
        seed = self._seed
        return tuple(
            hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(start, start + n)
        )


def tree_after(frontier: Frontier, digests: tuple[bytes, ...]) -> Frontier:
    """The frontier after appending ``digests`` (each the leaf data of one anchor).

    Raises :class:`MalformedError` if a digest is not 32 bytes.
    """
    if any(len(d) != HASH_SIZE for d in digests):
        raise MalformedError("a digest is not 32 bytes")
    return frontier.extend(leaf_hashes(digests))[0]


class ToyLog:
    """One node's application state: the tree after its last applied block, and a mempool.

    ``batch_size`` digests go into each proposed block (0 gives empty blocks). ``changes``, if
    given, returns the validator-set changes waiting in the mempool (scenario 14): they are
    offered with every proposal, and the core leaves out what is not valid at that height.
    """

    def __init__(
        self, *, mempool: Mempool, batch_size: int,
        changes: Callable[[], tuple[ValidatorSetChange, ...]] | None = None,
    ) -> None:
        self.changes = changes
        self.mempool = mempool
        self.batch_size = batch_size
        self.frontier = Frontier.empty()
        self.height = 0
        self._checked: dict[bytes, Frontier] = {}

    # -- the Application protocol -----------------------------------------------------------

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        """A batch of the next mempool digests and the tree head after them."""
        digests = self.mempool.take(self.batch_size)
        after = tree_after(self.frontier, digests)
        offered = () if self.changes is None else self.changes()
        return Batch(digests=digests, tree_size=after.size, tree_root=after.root(),
                     changes=offered)

    def validate(self, block: Block) -> None:
        """Check the block's tree head against our tree plus its digests.

        Raises :class:`MalformedError` for a malformed or oversized batch and
        :class:`VerificationError` for a wrong tree head.
        """
        if len(block.digests) > MAX_BLOCK_DIGESTS:
            raise MalformedError("too many digests in one block")
        after = tree_after(self.frontier, block.digests)
        if (after.size, after.root()) != (block.tree_size, block.tree_root):
            raise VerificationError("block's tree head does not match the log plus its batch")
        if len(self._checked) > 64:
            self._checked.clear()
        self._checked[block.hash] = after

    # -- driver side ------------------------------------------------------------------------

    def apply(self, block: Block) -> None:
        """Append a committed block's batch (the driver calls this for each ``Commit``).

        Raises :class:`VerificationError` if the block is not the next height or its tree head
        is wrong: the core never commits such a block, so this is a safety alarm.
        """
        if block.height != self.height + 1:
            raise VerificationError(f"applying height {block.height} after {self.height}")
        after = self._checked.pop(block.hash, None)
        if after is None:
            after = tree_after(self.frontier, block.digests)
        if (after.size, after.root()) != (block.tree_size, block.tree_root):
            raise VerificationError("committed block's tree head is wrong")
        self.frontier = after
        self.height = block.height
        self._checked.clear()
