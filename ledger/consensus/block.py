"""Blocks: one batch of anchored digests, chained by hash, committing to the tree head after it.

A block at height ``h`` carries:

- ``digests``: the batch (raw 32-byte SHA-256 document digests, in order);
- ``prev_hash``: the hash of block ``h - 1`` (:data:`GENESIS_PREV_HASH` at height 1);
- ``tree_size``/``tree_root``: the RFC 9162 tree head of the global log *after* the batch;
- ``proposer``: the public key of the validator that built it;
- ``time``: the BFT time (milliseconds since the Unix epoch), see :func:`bft_time`;
- ``last_commit``: the commit certificate of block ``h - 1`` (``None`` at height 1), so any
  validator can recompute ``time`` from the block alone, whatever certificate it holds itself;
- ``changes``: at most one validator-set change (:mod:`ledger.consensus.reconfig`), empty in
  almost every block. It is encoded as a 9th wire element *only when non-empty*, so blocks
  without a change keep the 8-element encoding (and hash) they always had.

**BFT time** (as in Tendermint's "BFT time", CometBFT spec ``consensus/bft-time.md``): a correct
validator stamps its precommit for block ``B`` with ``max(now, B.time + 1)``. The time of the next
block is the median of the timestamps of the precommits in ``last_commit`` (lower median, index
``(k - 1) // 2`` of ``k`` sorted timestamps). With ``k >= 2f + 1`` precommits of which at most
``f`` are faulty, at least one correct timestamp is ``<=`` the median and at least one is ``>=``
it, so ``f`` faulty validators cannot move block time outside the range of correct clocks. The
result is clamped to ``prev_time + 1`` so block time strictly increases even if more than ``f``
validators lie (then the time bound is void, but never goes backwards).

This module is pure: no I/O, no clock. Decoding untrusted block bytes lives with the peer
message codec in :mod:`ledger.consensus.messages` (:func:`~ledger.consensus.messages.decode_block`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgpack

from ledger.errors import VerificationError
from ledger.merkle.hashing import HASH_SIZE

if TYPE_CHECKING:
    from ledger.consensus.messages import CommitCertificate
    from ledger.consensus.reconfig import ValidatorSetChange

#: Domain-separation prefix of a block hash: SHA-256(BLOCK_HASH_DOMAIN || canonical encoding).
BLOCK_HASH_DOMAIN = b"ledger/consensus/block/v1\n"

#: ``prev_hash`` of the block at height 1.
GENESIS_PREV_HASH = bytes(HASH_SIZE)

#: Most digests one block may carry (a 32-byte digest costs 34 bytes on the wire).
MAX_BLOCK_DIGESTS = 100_000


@dataclass(frozen=True, kw_only=True)
class Block:
    """A proposed or committed block; frozen, built with keyword arguments only."""

    height: int
    prev_hash: bytes
    time: int
    proposer: bytes
    tree_size: int
    tree_root: bytes
    digests: tuple[bytes, ...]
    last_commit: CommitCertificate | None = None
    changes: tuple[ValidatorSetChange, ...] = ()

    def to_wire(self) -> list[Any]:
        """The fixed msgpack schema of a block (a list, in field order; ``changes`` only when
        there are any)."""
        wire = [
            self.height,
            self.prev_hash,
            self.time,
            self.proposer,
            self.tree_size,
            self.tree_root,
            list(self.digests),
            None if self.last_commit is None else self.last_commit.to_wire(),
        ]
        if self.changes:
            wire.append([c.to_wire() for c in self.changes])
        return wire

    def encode(self) -> bytes:
        """Canonical msgpack bytes of the block (deterministic: equal blocks, equal bytes)."""
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))

    @cached_property
    def hash(self) -> bytes:
        """``SHA-256(BLOCK_HASH_DOMAIN || encode())``: the block's identity in votes."""
        return hashlib.sha256(BLOCK_HASH_DOMAIN + self.encode()).digest()


def median_time(timestamps: list[int]) -> int:
    """The lower median of ``timestamps`` (index ``(k - 1) // 2`` once sorted).

    Raises :class:`VerificationError` on an empty list.
    """
    if not timestamps:
        raise VerificationError("no timestamps to take a median of")
    ordered = sorted(timestamps)
    return ordered[(len(ordered) - 1) // 2]


def bft_time(certificate: CommitCertificate, prev_time: int) -> int:
    """Block time of the block that follows the one ``certificate`` commits.

    ``prev_time`` is the time of the committed block. Returns
    ``max(median_time(precommit timestamps), prev_time + 1)``; see the module docstring for why
    ``f`` faulty validators cannot move it outside the correct validators' clock range.
    Raises :class:`VerificationError` if the certificate has no precommits.
    """
    return max(median_time([v.timestamp for v in certificate.precommits]), prev_time + 1)


def expected_time(
    *, height: int, last_commit: CommitCertificate | None, prev_block: Block | None,
    genesis_time: int,
) -> int:
    """The only valid ``time`` for a block at ``height``.

    Height 1 takes ``genesis_time``; later heights take :func:`bft_time` of ``last_commit`` over
    ``prev_block.time``. Raises :class:`VerificationError` if a height above 1 lacks its
    ``last_commit`` or ``prev_block``.
    """
    if height == 1:
        return genesis_time
    if last_commit is None or prev_block is None:
        raise VerificationError(f"block at height {height} needs the previous commit")
    return bft_time(last_commit, prev_block.time)
