"""The node's in-memory state machines that are not consensus (package-private, no I/O).

- :class:`Mempool`: anchors accepted (by this node or gossiped by a peer) and not yet
  committed, in arrival order. A digest stays here until a committed block carries it, so a
  round that fails, a proposer that crashes or a gossip message that is lost never loses an
  anchor: the next proposer that holds it proposes it again.
- :class:`LogApplication`: the consensus core's ``Application`` (``ledger/consensus/CORE_API.md``):
  ``propose`` takes a batch from the mempool and asks the store for the tree head after it
  (``Store.preview``); ``validate`` recomputes a proposed block's tree head the same way.
- :class:`CosignatureCollector`: after each commit every validator signs the new tree head as
  the log (type 0x01, c2sp.org/tlog-checkpoint) and cosigns it with a timestamp (type 0x04,
  c2sp.org/tlog-cosignature); the collector verifies the peers' cosignatures against the local
  tree head and, once it holds a quorum (2f + 1), builds the checkpoint note the node serves.

The store is the only thing these touch, through the ``Store`` protocol; the clock is an
argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.consensus import Batch, Block
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, ValidatorKeys
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.node_peer import Cosignature
from ledger.note import Signature, Verifier
from ledger.storage.base import Store, TreeHead

__all__ = [
    "CosignatureCollector",
    "LogApplication",
    "Mempool",
    "OverloadedError",
]

#: Cosignatures for tree sizes beyond our own are buffered for at most this many sizes.
_MAX_FUTURE_SIZES: Final = 16
#: Tree heads whose cosignatures are still collected (older ones are complete or abandoned).
_MAX_OPEN_SIZES: Final = 64


class OverloadedError(LedgerError):
    """The node cannot take more anchors now (its mempool is full); retry later."""

    code = "overloaded"


class Mempool:
    """Pending anchors in arrival order, each at most once.

    ``capacity`` bounds memory: :meth:`add` refuses a batch that would not fit, as a whole.
    """

    def __init__(self, *, capacity: int) -> None:
        self._capacity = capacity
        self._pending: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, digest: object) -> bool:
        return digest in self._pending

    def add(self, digests: Iterable[bytes]) -> list[bytes]:
        """Add the digests not pending yet; return those that were added, in order.

        The caller has already dropped digests that are in the store.

        Raises:
            OverloadedError: the mempool cannot take them all (nothing is added).
        """
        fresh = [d for d in dict.fromkeys(digests) if d not in self._pending]
        if len(self._pending) + len(fresh) > self._capacity:
            raise OverloadedError(
                f"the node has {len(self._pending)} anchors pending; retry later"
            )
        for d in fresh:
            self._pending[d] = None
        return fresh

    def batch(self, limit: int) -> list[bytes]:
        """The oldest ``limit`` pending digests (they stay pending until committed)."""
        out: list[bytes] = []
        for d in self._pending:
            if len(out) >= limit:
                break
            out.append(d)
        return out

    def remove(self, digests: Iterable[bytes]) -> None:
        """Forget digests that a committed block carried."""
        for d in digests:
            self._pending.pop(d, None)


class LogApplication:
    """The Merkle log as the consensus core's application (see the module docstring)."""

    def __init__(self, *, store: Store, mempool: Mempool, max_batch: int) -> None:
        if not 1 <= max_batch <= MAX_BLOCK_DIGESTS:
            raise MalformedError(f"batch size must be 1..{MAX_BLOCK_DIGESTS}")
        self._store = store
        self._mempool = mempool
        self._max_batch = max_batch
        # The last proposed batch, the log head it was built on and the head after it.
        self._proposed: tuple[tuple[bytes, ...], TreeHead, TreeHead] | None = None

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        """The oldest pending digests that are not in the log yet, and the tree head after them.

        Raises:
            StorageError: the store failed (the core then proposes nothing this round).
        """
        candidates = self._mempool.batch(self._max_batch)
        preview = self._store.preview(candidates)
        fresh = [d for d, new in zip(candidates, preview.new, strict=True) if new]
        if len(fresh) != len(candidates):
            # Committed meanwhile by a block we applied: drop them (defensive; apply removes).
            self._mempool.remove(d for d, new in zip(candidates, preview.new, strict=True)
                                 if not new)
        digests = tuple(fresh)
        before = self._store.tree_head()
        self._proposed = (digests, before, preview.head)
        return Batch(digests=digests, tree_size=preview.head.size, tree_root=preview.head.root)

    def validate(self, block: Block) -> None:
        """Check that the log plus the block's digests gives the block's tree head.

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


@dataclass
class _Open:
    """Cosignatures collected for one tree head."""

    body: Checkpoint
    log_signature: Signature
    cosignatures: dict[str, Signature] = field(default_factory=dict)


class CosignatureCollector:
    """Collects validator cosignatures per tree size and builds quorum checkpoint notes.

    ``cosigners`` maps each validator name to its cosigner verifier (type 0x04); ``quorum`` is
    the number of cosignatures a checkpoint needs (2f + 1).
    """

    def __init__(
        self, *, keys: ValidatorKeys, cosigners: Mapping[str, Verifier], quorum: int
    ) -> None:
        for name, verifier in cosigners.items():
            if verifier.name != name or verifier.sig_type != SIG_TYPE_COSIGNATURE_V1:
                raise MalformedError(f"cosigner key of {name} is not a type 0x04 key of {name}")
        if keys.name not in cosigners:
            raise MalformedError(f"this node's validator {keys.name} is not in the validator set")
        self._keys = keys
        self._cosigners = dict(cosigners)
        self._order = list(cosigners)
        self._quorum = quorum
        self._open: dict[int, _Open] = {}
        self._future: dict[int, list[tuple[bytes, Signature]]] = {}
        self.rejected = 0

    def sign_local(self, body: Checkpoint, *, timestamp: int) -> Cosignature:
        """Sign tree head ``body`` as the log and cosign it; return our cosignature to send.

        Cosignatures that arrived before we reached this size are verified now.

        Raises:
            MalformedError: the origin or the timestamp is out of range.
        """
        entry = self._open.get(body.size)
        if entry is None or entry.body != body:
            entry = _Open(body=body, log_signature=sign_checkpoint(body, key=self._keys.log_key))
            self._open[body.size] = entry
        mine = entry.cosignatures.get(self._keys.name)
        if mine is None:
            mine = cosign(body, name=self._keys.name, key=self._keys.cosigner_key,
                          timestamp=timestamp)
            entry.cosignatures[self._keys.name] = mine
        for root, sig in self._future.pop(body.size, []):
            self._try_add(entry, root, sig)
        for size in [s for s in self._open if s < body.size - _MAX_OPEN_SIZES]:
            del self._open[size]
        for size in [s for s in self._future if s <= body.size]:
            del self._future[size]
        return Cosignature(size=body.size, root=body.root, line=mine.line().rstrip("\n"))

    def own(self, size: int) -> Cosignature | None:
        """Our cosignature for ``size``, for re-sending; ``None`` if we have not signed it."""
        entry = self._open.get(size)
        mine = None if entry is None else entry.cosignatures.get(self._keys.name)
        if entry is None or mine is None:
            return None
        return Cosignature(size=size, root=entry.body.root, line=mine.line().rstrip("\n"))

    def add(self, cosig: Cosignature, *, latest_size: int) -> bool:
        """Take a peer's cosignature; return true if it is new and valid for a known head.

        ``latest_size`` is our own tree size: a cosignature for a larger one is buffered
        (bounded) until we commit that far.

        Raises:
            MalformedError: the signature line does not parse or names no validator.
            VerificationError: it is for a root that differs from ours at that size, or it
                does not verify.
        """
        sig = Signature.parse_line(cosig.line)
        if sig.name not in self._cosigners:
            raise MalformedError(f"cosignature by {sig.name}, which is not a validator")
        entry = self._open.get(cosig.size)
        if entry is None:
            room = len(self._future) < _MAX_FUTURE_SIZES or cosig.size in self._future
            if cosig.size > latest_size and room:
                bucket = self._future.setdefault(cosig.size, [])
                if len(bucket) < 2 * len(self._cosigners):
                    bucket.append((cosig.root, sig))
            return False
        return self._try_add(entry, cosig.root, sig, strict=True)

    def _try_add(self, entry: _Open, root: bytes, sig: Signature, strict: bool = False) -> bool:
        try:
            if root != entry.body.root:
                raise VerificationError(
                    f"{sig.name} cosigned another root for tree size {entry.body.size}"
                )
            if sig.name in entry.cosignatures:
                return False
            verifier = self._cosigners[sig.name]
            if sig.key_id != verifier.key_id:
                raise VerificationError(f"cosignature by {sig.name} has the wrong key ID")
            verifier.verify(entry.body.body().encode("utf-8"), sig)
        except VerificationError:
            self.rejected += 1
            if strict:
                raise
            return False
        entry.cosignatures[sig.name] = sig
        return True

    def count(self, size: int) -> int:
        """How many valid cosignatures (ours included) we hold for ``size``."""
        entry = self._open.get(size)
        return 0 if entry is None else len(entry.cosignatures)

    def note(self, size: int) -> str | None:
        """The checkpoint note for ``size`` if it holds a quorum of cosignatures, else ``None``.

        The note carries our log signature and every cosignature held, in validator order.
        """
        entry = self._open.get(size)
        if entry is None or len(entry.cosignatures) < self._quorum:
            return None
        sigs: Sequence[Signature] = [entry.log_signature] + [
            entry.cosignatures[n] for n in self._order if n in entry.cosignatures
        ]
        return checkpoint_note(entry.body, sigs)
