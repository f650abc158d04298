"""Checkpoints: the validators' cosignatures of each tree head, and which note is served.

After each commit that grew the tree every validator signs the new tree head as the log (type
0x01, c2sp.org/tlog-checkpoint) and cosigns it with a timestamp (type 0x04,
c2sp.org/tlog-cosignature), and sends the cosignature to every peer. A
:class:`CosignatureCollector` (one per validator-set period) verifies the peers' cosignatures
against the local tree head and, once it holds a quorum (2f + 1), builds the checkpoint note.
:class:`CheckpointBook` stores that note (once per tree size: each store is an fsync, and a
later cosignature adds nothing the policy asks for), serves the latest, re-sends our own
cosignature of the newest head (a peer that missed it may lack a quorum until it gets it), and
adopts a peer's quorum checkpoint after catch-up once it verified against the trust policy of
its period and against our own tree.

Pure: the store is reached through the ``Store`` protocol and time arrives as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ledger.checkpoint import (
    Checkpoint,
    checkpoint_note,
    cosign,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
)
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, ValidatorKeys
from ledger.errors import MalformedError, VerificationError
from ledger.note import Signature, Verifier
from ledger.replica.wire import Cosignature
from ledger.storage.base import Store

if TYPE_CHECKING:
    from ledger.replica.validators import NodeValidators

__all__ = ["CheckpointBook", "CosignatureCollector", "note_body"]

#: Cosignatures for tree sizes beyond our own are buffered for at most this many sizes.
_MAX_FUTURE_SIZES: Final = 16
#: Tree heads whose cosignatures are still collected (older ones are complete or abandoned).
_MAX_OPEN_SIZES: Final = 64


def note_body(text: str) -> str:
    """The signed text of a note (everything up to the blank line before the signatures)."""
    split = text.rfind("\n\n")
    return text[: split + 1] if split >= 0 else text


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


class CheckpointBook:
    """The checkpoints of one replica (see the module docstring).

    ``validators`` gives the collector and the trust policy of each tree size's period.
    """

    def __init__(self, *, store: Store, validators: NodeValidators, origin: str) -> None:
        self._store = store
        self._validators = validators
        self._origin = origin
        self.latest: tuple[int, str] | None = None
        raw = store.latest_checkpoint()
        if raw is not None:
            text = raw.decode("utf-8")
            self.latest = (parse_checkpoint_body(note_body(text)).size, text)

    @property
    def latest_size(self) -> int:
        """The tree size of the latest stored checkpoint (0: none yet)."""
        return 0 if self.latest is None else self.latest[0]

    def cosign_head(self, *, now: int) -> Cosignature | None:
        """Sign and cosign the current tree head (``now`` in ms); return the cosignature to
        send, or ``None`` if there is nothing new or we hold no key of this period's set.
        Stores the checkpoint at once if our cosignature completes a quorum.

        Raises:
            StorageError: storing the note failed.
        """
        head = self._store.tree_head()
        if head.size == 0 or head.size <= self.latest_size:
            return None
        collector = self._validators.collector(head.size)
        if collector is None:
            return None  # not a validator of this period's set (removed, or not yet added)
        body = Checkpoint(origin=self._origin, size=head.size, root=head.root)
        cosig = collector.sign_local(body, timestamp=now // 1000)
        self.store_if_quorum(head.size)
        return cosig

    def add_peer(self, cosig: Cosignature) -> bool:
        """Take a peer's cosignature; return whether a new checkpoint was stored.

        Raises:
            MalformedError, VerificationError: the cosignature is bad (see
                :meth:`CosignatureCollector.add`).
            StorageError: storing the note failed.
        """
        size = self._store.size
        added = False
        for collector in self._validators.collectors_for_peer(cosig.size, latest_size=size):
            added = collector.add(cosig, latest_size=size) or added
        return added and self.store_if_quorum(cosig.size)

    def store_if_quorum(self, size: int) -> bool:
        """Store the note of ``size`` if it is newer than the latest and holds a quorum.

        Raises:
            StorageError: the write failed.
        """
        if size <= self.latest_size:
            return False
        collector = self._validators.collector(size)
        note = None if collector is None else collector.note(size)
        if note is None:
            return False
        self._store.put_checkpoint(size, note.encode("utf-8"))
        self.latest = (size, note)
        return True

    def own_newest(self) -> Cosignature | None:
        """Our cosignature of the newest tree head, for re-sending (``None`` if none)."""
        size = self._store.size
        collector = self._validators.collector(size)
        return None if collector is None else collector.own(size)

    def adopt(self, text: str) -> bool:
        """Store a peer's quorum checkpoint if it is newer than ours and within our tree.

        Returns whether it was stored; ``False`` for one that is not newer or beyond our tree.

        Raises:
            MalformedError: the note does not parse.
            VerificationError: it does not satisfy the trust policy of its period, is of
                another origin, or contradicts our tree.
            StorageError: the write failed.
        """
        size = parse_checkpoint_body(note_body(text)).size
        policy = self._validators.policy_for_size(size)
        opened = open_checkpoint(text, policy.verifiers())
        policy.evaluate((v.verifier for v in opened.note.verified),
                        origin=opened.checkpoint.origin)
        cp = opened.checkpoint
        if cp.origin != self._origin:
            raise VerificationError(f"checkpoint of origin {cp.origin!r}, not ours")
        if cp.size <= self.latest_size or cp.size > self._store.size:
            return False
        if self._store.root_at(cp.size) != cp.root:
            raise VerificationError(f"checkpoint of size {cp.size} contradicts our tree")
        self._store.put_checkpoint(cp.size, text.encode("utf-8"))
        self.latest = (cp.size, text)
        return True

    def rejected(self) -> int:
        """Peer cosignatures refused so far (metrics)."""
        return self._validators.rejected()
