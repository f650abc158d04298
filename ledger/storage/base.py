"""The ``Store`` protocol, its value types, and the rules both implementations share.

A store holds one node's copy of the ledger: the append-only RFC 9162 Merkle tree of anchored
document digests (its full nodes, its frontier and a digest -> index map), the committed blocks
with their commit certificates, the published checkpoints, and a small key-value space for
consensus safety state and node metadata (design brief, sections 2 and 4). It is the narrow
interface between the replica and the disk, implemented twice:
:class:`~ledger.storage.lmdb_store.LmdbStore` (durable) and
:class:`~ledger.storage.memory.MemoryStore` (its in-memory twin); the same test suite runs
against both.

Rules every implementation follows, and the tests check:

- **Atomic calls.** Every mutating call (``append``, ``put_checkpoint``, ``put_meta``) takes
  effect completely or not at all; ``append`` writes the tree nodes, the digest index, the new
  tree head and the optional block and certificate in one transaction.
- **A digest is anchored once.** ``append`` gives every input digest an index: a digest already
  in the log, or repeated earlier in the same batch, keeps its *first* index and is not
  appended again (``AppendResult.new`` says which ones were). The leaf data is the raw 32-byte
  digest; the leaf hash is ``SHA-256(0x00 || digest)``.
- **Full nodes only.** ``node(level, index)`` serves the roots of complete subtrees (the
  ``NodeReader`` of :mod:`ledger.merkle.proof`); proofs and historical roots are computed from
  them by the Merkle core, never by storage code.
- **Blocks form a chain.** A block's height must be exactly ``last_height() + 1``.
- **Errors.** Malformed arguments raise :class:`~ledger.errors.MalformedError`; asking for
  something the store does not hold raises :class:`~ledger.errors.NotFoundError` (or returns
  ``None`` where the signature says so); refusing a write that contradicts stored state, or a
  failing backend, raises :class:`~ledger.errors.StorageError`; stored bytes that contradict
  themselves raise :class:`~ledger.errors.CorruptionError`. A closed store raises
  ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ledger.errors import MalformedError, NotFoundError, StorageError
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import HASH_SIZE, leaf_hashes

__all__ = ["AppendResult", "BlockRecord", "Store", "TreeHead"]

#: LMDB's key size limit; both stores apply it to meta keys so that they behave alike.
MAX_META_KEY = 511


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeHead:
    """The size and root (RFC 9162 MTH) of the log after some append.

    :raises MalformedError: ``size`` is negative or ``root`` is not 32 bytes.
    """

    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 0:
            raise MalformedError(f"tree size must be a non-negative int, got {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise MalformedError("tree root must be 32 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    """What an append did (or, from ``preview``, would do).

    ``indices[i]`` is the leaf index of the ``i``-th input digest and ``new[i]`` is true if that
    digest was appended by this call (false if it was already in the log or repeated earlier in
    the batch). ``head`` is the tree head after the append.
    """

    head: TreeHead
    indices: tuple[int, ...]
    new: tuple[bool, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockRecord:
    """A committed block and its commit certificate, as opaque encoded bytes.

    The store does not parse either: consensus owns their format. ``height`` starts at 1.

    :raises MalformedError: ``height`` is not a positive int, or a field is not ``bytes``.
    """

    height: int
    block: bytes
    certificate: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.height, int) or self.height < 1:
            raise MalformedError(f"block height must be a positive int, got {self.height!r}")
        if not isinstance(self.block, bytes) or not isinstance(self.certificate, bytes):
            raise MalformedError("block and certificate must be bytes")


@runtime_checkable
class Store(Protocol):
    """One node's ledger state; see the module docstring for the rules."""

    @property
    def size(self) -> int:
        """The number of leaves in the log."""
        ...

    def tree_head(self) -> TreeHead:
        """The current tree head."""
        ...

    def frontier(self) -> Frontier:
        """The frontier of the current tree (enough to compute any later root)."""
        ...

    def preview(self, digests: Iterable[bytes]) -> AppendResult:
        """What :meth:`append` would return for ``digests``; writes nothing.

        :raises MalformedError: a digest is not 32 bytes.
        """
        ...

    def append(
        self, digests: Iterable[bytes], *, block: BlockRecord | None = None
    ) -> AppendResult:
        """Append the digests not yet in the log and, if given, the block, in one transaction.

        :raises MalformedError: a digest is not 32 bytes.
        :raises StorageError: ``block.height`` is not ``last_height() + 1``, or the write fails.
        """
        ...

    def index_of(self, digest: bytes) -> int | None:
        """The leaf index of ``digest``, or ``None`` if it was never anchored.

        :raises MalformedError: ``digest`` is not 32 bytes.
        """
        ...

    def index_of_many(self, digests: Sequence[bytes]) -> list[int | None]:
        """:meth:`index_of` of each digest, in order, read from one consistent snapshot.

        The node looks up whole requests and gossip batches at once: one read transaction
        (LMDB) instead of one per digest.

        :raises MalformedError: a digest is not 32 bytes.
        """
        ...

    def digest_at(self, index: int) -> bytes:
        """The digest anchored at leaf ``index``.

        :raises MalformedError: ``index`` is negative.
        :raises NotFoundError: ``index >= size``.
        """
        ...

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)`` (level 0: leaf hashes).

        :raises MalformedError: ``level`` or ``index`` is negative.
        :raises NotFoundError: the node is not (yet) a full node of the log.
        """
        ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        :raises MalformedError: ``index`` is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        """
        ...

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each leaf index against one tree ``size``, in order, from
        one snapshot (the receipts of one request share their upper tree nodes).

        :raises MalformedError: an index is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        """
        ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 2.1.4.1 consistency proof from ``old_size`` to ``new_size``.

        :raises MalformedError: ``old_size < 1`` or ``old_size > new_size``.
        :raises NotFoundError: ``new_size`` exceeds the log.
        """
        ...

    def root_at(self, size: int) -> bytes:
        """The root of the tree of the first ``size`` leaves.

        :raises MalformedError: ``size`` is negative.
        :raises NotFoundError: ``size`` exceeds the log.
        """
        ...

    def put_checkpoint(self, size: int, note: bytes) -> None:
        """Store the signed checkpoint note for tree ``size`` (replacing an earlier one).

        :raises MalformedError: ``size`` is negative or ``note`` is not non-empty bytes.
        :raises StorageError: ``size`` exceeds the log, or the write fails.
        """
        ...

    def checkpoint(self, size: int) -> bytes | None:
        """The checkpoint note stored for ``size``, or ``None``."""
        ...

    def latest_checkpoint(self) -> bytes | None:
        """The checkpoint note with the largest size, or ``None`` if there is none."""
        ...

    def block(self, height: int) -> BlockRecord | None:
        """The block at ``height``, or ``None``."""
        ...

    def last_height(self) -> int:
        """The height of the last stored block (0 = none)."""
        ...

    def get_meta(self, key: bytes) -> bytes | None:
        """The metadata value of ``key``, or ``None``.

        :raises MalformedError: ``key`` is not 1 to 511 bytes.
        """
        ...

    def put_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        """Set (or, for ``None``, delete) metadata keys, all in one transaction.

        :raises MalformedError: a key is not 1 to 511 bytes or a value is not bytes or ``None``.
        """
        ...

    def close(self) -> None:
        """Release the store; any later call raises :class:`~ledger.errors.StorageError`."""
        ...


# ------------------------------------------------------------------------------------------
# Shared rules (private to ledger.storage): one implementation, so the two stores cannot drift.


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a batch maps onto the log: the inputs' indices and the digests to append."""

    indices: tuple[int, ...]
    new: tuple[bool, ...]
    digests: list[bytes]
    leaves: list[bytes]


def check_digest(digest: object) -> bytes:
    """Return ``digest`` if it is 32 bytes.

    :raises MalformedError: otherwise.
    """
    if not isinstance(digest, bytes) or len(digest) != HASH_SIZE:
        raise MalformedError(f"a digest must be {HASH_SIZE} raw bytes")
    return digest


def check_non_negative(value: object, what: str) -> int:
    """Return ``value`` if it is a non-negative ``int``.

    :raises MalformedError: otherwise.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedError(f"{what} must be a non-negative int, got {value!r}")
    return value


def check_meta_items(items: Mapping[bytes, bytes | None]) -> None:
    """Check metadata keys (1..511 bytes) and values (bytes or ``None``).

    :raises MalformedError: a key or value is of the wrong type or size.
    """
    for key, value in items.items():
        check_meta_key(key)
        if value is not None and not isinstance(value, bytes):
            raise MalformedError("a metadata value must be bytes or None")


def check_meta_key(key: object) -> bytes:
    """Return ``key`` if it is 1 to 511 bytes.

    :raises MalformedError: otherwise.
    """
    if not isinstance(key, bytes) or not 1 <= len(key) <= MAX_META_KEY:
        raise MalformedError(f"a metadata key must be 1 to {MAX_META_KEY} bytes")
    return key


def check_note(note: object) -> bytes:
    """Return ``note`` if it is non-empty bytes.

    :raises MalformedError: otherwise.
    """
    if not isinstance(note, bytes) or not note:
        raise MalformedError("a checkpoint note must be non-empty bytes")
    return note


def check_block_follows(block: BlockRecord, last_height: int) -> None:
    """Blocks form a chain: ``block.height`` must be ``last_height + 1``.

    :raises MalformedError: ``block`` is not a :class:`BlockRecord`.
    :raises StorageError: the height does not follow.
    """
    if not isinstance(block, BlockRecord):
        raise MalformedError("block must be a BlockRecord")
    if block.height != last_height + 1:
        raise StorageError(f"block height {block.height} does not follow last height {last_height}")


def check_within(size: int, stored: int, what: str) -> None:
    """A size argument must not exceed the log.

    :raises NotFoundError: ``size > stored``.
    """
    if isinstance(size, int) and size > stored:
        raise NotFoundError(f"{what} {size} exceeds the log size {stored}")


def plan_append(
    digests: Iterable[bytes], size: int, lookup: Callable[[bytes, bytes], int | None]
) -> _Plan:
    """Assign an index to every input digest; collect the ones to append.

    ``lookup(digest, leaf_hash)`` returns the index of a digest already in the log, or
    ``None``. A digest already in the log keeps its index; a digest repeated within the batch
    keeps the index of its first occurrence; every other digest gets the next index from
    ``size``. The whole input is consumed and checked before anything is decided, so a bad
    digest leaves no partial plan.

    :raises MalformedError: a digest is not 32 bytes.
    """
    batch = [check_digest(d) for d in digests]
    hashes = leaf_hashes(batch)
    seen: dict[bytes, int] = {}
    indices: list[int] = []
    new: list[bool] = []
    to_append: list[bytes] = []
    leaves: list[bytes] = []
    for digest, leaf in zip(batch, hashes, strict=True):
        index = seen.get(digest)
        if index is None:
            index = lookup(digest, leaf)
            if index is not None:
                seen[digest] = index
        if index is not None:
            indices.append(index)
            new.append(False)
            continue
        index = size + len(to_append)
        seen[digest] = index
        to_append.append(digest)
        leaves.append(leaf)
        indices.append(index)
        new.append(True)
    return _Plan(tuple(indices), tuple(new), to_append, leaves)
