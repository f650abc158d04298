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

- **Atomic calls.** Every mutating call (``append``, ``put_checkpoint``, ``put_meta``, the
  ``repair_*`` calls) takes effect completely or not at all; ``append`` writes the tree nodes,
  the digest index, the new tree head, the optional block and certificate and the optional
  metadata items in one transaction (one sync).
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
  themselves raise :class:`~ledger.errors.CorruptionError`, never "not found"; a write refused
  because the disk is full raises :class:`DiskFullError` (reads go on; writes are accepted
  again once space returns). A closed store raises ``StorageError``.
- **Damage is found and repaired, not served.** :meth:`Store.scrub` re-verifies the store a
  bounded step at a time and reports each damaged value as a :class:`Damage`, which says what
  replacement repairs it: ``"peer"`` (a value every validator holds: the caller fetches it,
  verifies it against the cosigned tree head and passes it to :meth:`Store.repair_tile`,
  :meth:`Store.repair_block` or :meth:`Store.repair_checkpoint`), ``"local"`` (derived data
  the store rebuilds from its own intact values: :meth:`Store.rebuild`), ``"owner"`` (a
  metadata value only its writer can restore, with ``put_meta``) or ``"none"``. The in-memory
  store holds no damage but offers the same calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ledger.errors import CorruptionError, MalformedError, NotFoundError, StorageError
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import HASH_SIZE, leaf_hashes
from ledger.merkle.proof import Chain

__all__ = [
    "AppendResult",
    "BlockRecord",
    "Damage",
    "DamageError",
    "DiskFullError",
    "ScrubReport",
    "Store",
    "TreeHead",
]

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


class DiskFullError(StorageError):
    """A write was refused because the file system holding the store is full.

    The message says ``no space left on device``, names the directory and the bytes still
    free. Nothing was written; reads keep working; the same write succeeds once space returns.
    """

    code = "disk_full"


#: What a :class:`Damage` asks for: the kinds of replacement that repair it.
REPAIR_PEER = "peer"
REPAIR_LOCAL = "local"
REPAIR_OWNER = "owner"
REPAIR_NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Damage:
    """One damaged stored value, as :meth:`Store.scrub` or a failed read finds it.

    ``kind`` is one of ``"tile"`` (tree nodes), ``"block"`` (a block and its certificate),
    ``"checkpoint"``, ``"meta"``, ``"index"`` (a run of the digest index), ``"filter"`` (a
    stripe's lookup filter), ``"dictionary"`` or ``"state"``; ``key`` names the stored value
    (``"tiles00/12"``, ``"blocks/7"``). ``repair`` is ``"peer"``, ``"local"``, ``"owner"``
    or ``"none"`` (see the module docstring) and ``detail`` says what was wrong.

    For a tile: ``stratum`` and ``tile`` address it, ``levels`` are the tree levels it holds
    (``4s .. 4s+3``), ``nodes`` the index range ``[first, end)`` of its bottom-row nodes at
    level ``4s`` (what :meth:`Store.repair_tile` takes: for stratum 0 the leaves' digests, for
    higher strata the level-``4s`` node hashes) and ``leaves`` the leaf range it covers. For a
    block, ``height``; for a checkpoint, ``size``; for metadata, ``meta_key``; for an index run
    or a filter, ``leaves`` (the leaves it indexes).
    """

    kind: str
    key: str
    repair: str
    detail: str
    stratum: int | None = None
    tile: int | None = None
    levels: tuple[int, int] | None = None
    nodes: tuple[int, int] | None = None
    leaves: tuple[int, int] | None = None
    height: int | None = None
    size: int | None = None
    meta_key: bytes | None = None

    def line(self) -> str:
        """One line for an operator: what is damaged, and how it is repaired."""
        how = {
            REPAIR_PEER: "repairable from any other validator's copy",
            REPAIR_LOCAL: "derived data, rebuilt from the stored tree: ledger db check --rebuild",
            REPAIR_OWNER: "its writer must write it again",
            REPAIR_NONE: "not repairable: restore a backup or resync into an empty data "
            "directory",
        }.get(self.repair, self.repair)
        where = self.key
        if self.leaves is not None and self.kind in ("tile", "index", "filter"):
            where += f" (leaves {self.leaves[0]}-{self.leaves[1] - 1})"
        return f"{where}: {self.detail} ({how})"


class DamageError(CorruptionError):
    """A read or write met a damaged stored value; :attr:`damage` says which and how it is
    repaired. The message is :meth:`Damage.line`."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(damage.line())
        self.damage = damage


@dataclass(frozen=True, slots=True, kw_only=True)
class ScrubReport:
    """The outcome of one :meth:`Store.scrub` step.

    ``cursor`` is where the next step continues (``None``: this step finished a full pass);
    ``findings`` the damage found in this step; ``checked`` the units (tiles, run chunks,
    filter blocks, blocks, checkpoints, metadata values) verified in it; ``done`` and
    ``total`` the progress through the current pass, in the same units (``total`` is an
    estimate taken at the start of the pass).
    """

    cursor: bytes | None
    findings: tuple[Damage, ...]
    checked: int
    done: int
    total: int


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
        self,
        digests: Iterable[bytes],
        *,
        block: BlockRecord | None = None,
        meta: Mapping[bytes, bytes | None] | None = None,
    ) -> AppendResult:
        """Append the digests not yet in the log and, if given, the block and the metadata
        items (set, or delete for ``None``, as :meth:`put_meta`), all in one transaction.

        :raises MalformedError: a digest is not 32 bytes, or a metadata key or value is bad.
        :raises StorageError: ``block.height`` is not ``last_height() + 1``, or the write fails
            (:class:`DiskFullError` when the disk is full).
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

    def digests_between(self, start: int, end: int) -> list[bytes]:
        """The digests of leaves ``[start, end)``, in order, from one snapshot.

        :raises MalformedError: ``start`` is negative or ``end < start``.
        :raises NotFoundError: ``end`` exceeds the log.
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

    def inclusion_chains(self, indices: Sequence[int], leaf_hashes: Sequence[bytes],
                         size: int) -> tuple[list[Chain], bytes]:
        """The paths of :meth:`inclusion_proofs` as shared chains, and the root they lead to
        from the given leaf hashes (:func:`ledger.merkle.proof.inclusion_chains`): equal to a
        checkpoint's root, it proves every path for its leaf against that checkpoint.

        :raises MalformedError: an index is not in ``[0, size)`` or a leaf hash is missing.
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

    def earliest_checkpoint(self, leaf: int) -> tuple[int, bytes] | None:
        """``(size, note)`` of the stored checkpoint with the smallest size that contains leaf
        ``leaf`` (``size > leaf``), or ``None``: what a receipt proving the earliest moment is
        cut against.

        :raises MalformedError: ``leaf`` is negative.
        """
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

    def scrub(self, cursor: bytes | None = None, *, budget: int = 4096) -> ScrubReport:
        """Re-verify about ``budget`` units of the store, from ``cursor`` (``None``: the
        start of a pass); see :class:`ScrubReport`. One read snapshot per call.

        :raises MalformedError: ``cursor`` is not one this store returned, or ``budget < 1``.
        """
        ...

    def repair_tile(self, stratum: int, tile: int, nodes: Sequence[bytes]) -> None:
        """Rewrite tile ``tile`` of ``stratum`` from its bottom-row nodes (see
        :class:`Damage`), after checking that they hash to the stored tree above them.

        :raises MalformedError: wrong count or size of ``nodes``.
        :raises VerificationError: the nodes do not hash to the node above them.
        :raises DamageError: the tile above is damaged too (repair that one first).
        :raises StorageError: no such tile, or the write fails.
        """
        ...

    def repair_block(self, record: BlockRecord) -> None:
        """Rewrite the stored block at ``record.height`` with ``record`` (verified by the
        caller against the chain).

        :raises StorageError: no block at that height, or the write fails.
        """
        ...

    def repair_checkpoint(self, size: int, note: bytes) -> None:
        """Rewrite the stored checkpoint note of ``size`` (verified by the caller).

        :raises StorageError: no checkpoint at that size, or the write fails.
        """
        ...

    def rebuild(self, damage: Damage) -> None:
        """Rebuild a ``"local"`` damage (an index run, a filter, a dictionary copy) from the
        store's own data.

        :raises MalformedError: ``damage`` is not repairable locally.
        :raises CorruptionError: the data it is rebuilt from is damaged too (repair that
            first: the error names it).
        """
        ...

    def close(self) -> None:
        """Release the store; any later call raises :class:`~ledger.errors.StorageError`."""
        ...


# ------------------------------------------------------------------------------------------
# Shared rules (private to ledger.storage): one implementation, so the two stores cannot drift.


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a batch maps onto the log: the inputs' indices and the digests to append.

    ``positions[k]`` is where in the input the ``k``-th appended digest was.
    """

    indices: tuple[int, ...]
    new: tuple[bool, ...]
    digests: list[bytes]
    leaves: list[bytes]
    positions: list[int]


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

    :raises MalformedError: ``items`` is not a mapping, or a key or value is of the wrong type
        or size.
    """
    if not isinstance(items, Mapping):
        raise MalformedError("metadata items must be a mapping")
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
    digests: Iterable[bytes],
    size: int,
    lookup_many: Callable[[list[bytes], list[bytes]], Sequence[int | None]],
) -> _Plan:
    """Assign an index to every input digest; collect the ones to append.

    ``lookup_many(digests, leaf_hashes)`` returns, for each digest, its index in the log or
    ``None``. A digest already in the log keeps its index; a digest repeated within the batch
    keeps the index of its first occurrence; every other digest gets the next index from
    ``size``. The whole input is consumed and checked before anything is decided, so a bad
    digest leaves no partial plan.

    :raises MalformedError: a digest is not 32 bytes.
    """
    batch = [check_digest(d) for d in digests]
    hashes = leaf_hashes(batch)
    known = lookup_many(batch, hashes) if batch else []
    seen: dict[bytes, int] = {}
    indices: list[int] = []
    new: list[bool] = []
    to_append: list[bytes] = []
    leaves: list[bytes] = []
    positions: list[int] = []
    for position, (digest, leaf, found) in enumerate(zip(batch, hashes, known, strict=True)):
        index = found if found is not None else seen.get(digest)
        if index is not None:
            indices.append(index)
            new.append(False)
            continue
        index = size + len(to_append)
        seen[digest] = index
        to_append.append(digest)
        leaves.append(leaf)
        positions.append(position)
        indices.append(index)
        new.append(True)
    return _Plan(tuple(indices), tuple(new), to_append, leaves, positions)
