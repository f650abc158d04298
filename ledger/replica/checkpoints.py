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
from ledger.note import Note, Signature, Verifier, parse_note
from ledger.replica.wire import Cosignature
from ledger.storage.base import Store

if TYPE_CHECKING:
    from ledger.replica.validators import NodeValidators

__all__ = [
    "COSIGNATURE_TOLERANCE_S",
    "PENDING_KEY",
    "RESEND_OWN",
    "CheckpointBook",
    "CosignatureCollector",
    "merge_notes",
    "note_body",
]

#: Cosignatures for tree sizes beyond our own are buffered for at most this many sizes.
_MAX_FUTURE_SIZES: Final = 16
#: Tree heads whose cosignatures are still collected (older ones are complete or abandoned).
_MAX_OPEN_SIZES: Final = 64
#: Our own cosignatures re-sent on every tick: of this many newest tree heads (a peer that
#: missed one holds a note with fewer cosignatures, so a later time bound, until it gets it).
RESEND_OWN: Final = 8
#: A committed block's note not stored after this long is fetched from a peer (ms).
FETCH_MISSING_AFTER_MS: Final = 2_000
#: Missing notes tracked at most (the oldest are forgotten beyond).
MAX_EXPECTED: Final = 4096
#: Store metadata: the tree sizes of committed blocks whose note may not be stored yet
#: (big-endian 8-byte sizes), written with each block so that a restart, or a restore from a
#: backup taken between a block and its note, still knows which notes to fetch.
PENDING_KEY: Final = b"checkpoints/pending/v1"
#: The clock tolerance validators enforce on each other's cosignatures, in seconds: a
#: timestamp more than this before the time of the block that produced the tree head, or more
#: than this after the receiver's own clock, is refused. So no validator can put a time into a
#: note that it could not have seen, and the (f + 1)-th smallest time of a note is at least the
#: block's time minus this tolerance.
COSIGNATURE_TOLERANCE_S: Final = 30


def merge_notes(held: str, other: str, verifiers: Sequence[Verifier]) -> str:
    """``held`` with the valid signatures of ``other`` (the same checkpoint) it lacks, by the
    keys of ``verifiers``; unknown and invalid lines of ``other`` are left out.

    Raises:
        MalformedError: a note does not parse, or the two are of different checkpoints.
    """
    first, second = parse_note(held), parse_note(other)
    if first.text != second.text:
        raise MalformedError("the two notes are of different checkpoints")
    known = {(v.name, v.key_id): v for v in verifiers}
    have = {(sig.name, sig.key_id) for sig in first.signatures}
    extra: list[Signature] = []
    for sig in second.signatures:
        ident = (sig.name, sig.key_id)
        verifier = known.get(ident)
        if verifier is None or ident in have:
            continue
        try:
            verifier.verify(second.text.encode("utf-8"), sig)
        except VerificationError:
            continue
        extra.append(sig)
        have.add(ident)
    if not extra:
        return held
    return Note(text=first.text, signatures=(*first.signatures, *extra)).format()


def note_body(text: str) -> str:
    """The signed text of a note (everything up to the blank line before the signatures)."""
    split = text.rfind("\n\n")
    return text[: split + 1] if split >= 0 else text


@dataclass
class _Open:
    """Cosignatures collected for one tree head; ``not_before``: the time (UNIX seconds) of
    the block that produced it, minus the tolerance."""

    body: Checkpoint
    log_signature: Signature
    not_before: int
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

    def sign_local(self, body: Checkpoint, *, timestamp: int, block_time: int) -> Cosignature:
        """Sign tree head ``body`` as the log and cosign it at ``timestamp`` (UNIX seconds);
        return our cosignature to send. ``block_time`` (UNIX seconds) is the time of the block
        that produced the head (the tolerance of :data:`COSIGNATURE_TOLERANCE_S` counts from
        it).

        Cosignatures that arrived before we reached this size are verified now.

        Raises:
            MalformedError: the origin or the timestamp is out of range.
        """
        entry = self._open.get(body.size)
        if entry is None or entry.body != body:
            entry = _Open(body=body, log_signature=sign_checkpoint(body, key=self._keys.log_key),
                          not_before=block_time - COSIGNATURE_TOLERANCE_S)
            self._open[body.size] = entry
        mine = entry.cosignatures.get(self._keys.name)
        if mine is None:
            mine = cosign(body, name=self._keys.name, key=self._keys.cosigner_key,
                          timestamp=timestamp)
            entry.cosignatures[self._keys.name] = mine
        for root, sig in self._future.pop(body.size, []):
            self._try_add(entry, root, sig, now=timestamp)
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

    def own_recent(self, count: int) -> list[Cosignature]:
        """Our cosignatures of the ``count`` newest tree heads we cosigned, newest first."""
        out: list[Cosignature] = []
        for size in sorted(self._open, reverse=True)[:count]:
            mine = self.own(size)
            if mine is not None:
                out.append(mine)
        return out

    def add(self, cosig: Cosignature, *, latest_size: int, now: int) -> bool:
        """Take a peer's cosignature; return true if it is new and valid for a known head.

        ``latest_size`` is our own tree size: a cosignature for a larger one is buffered
        (bounded) until we commit that far. ``now`` (UNIX seconds) is our clock.

        Raises:
            MalformedError: the signature line does not parse or names no validator.
            VerificationError: it is for a root that differs from ours at that size, it does
                not verify, or its timestamp is outside the tolerance.
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
        return self._try_add(entry, cosig.root, sig, now=now, strict=True)

    def _try_add(self, entry: _Open, root: bytes, sig: Signature, *, now: int,
                 strict: bool = False) -> bool:
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
            stamp = verifier.verify(entry.body.body().encode("utf-8"), sig)
            if stamp is None or not (entry.not_before <= stamp
                                     <= now + COSIGNATURE_TOLERANCE_S):
                raise VerificationError(
                    f"cosignature by {sig.name} is timestamped {stamp}, outside the "
                    f"{COSIGNATURE_TOLERANCE_S} s tolerance of the block's time and our clock")
        except VerificationError:
            self.rejected += 1
            if strict:
                raise
            return False
        entry.cosignatures[sig.name] = sig
        return True

    def sizes(self) -> list[int]:
        """The tree sizes whose cosignatures are still collected."""
        return sorted(self._open)

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

    **Every cosignature is kept.** A note is stored as soon as it holds a quorum, and stored
    again whenever a further valid cosignature for that tree head arrives (while its
    cosignatures are still collected, :data:`_MAX_OPEN_SIZES` heads): each cosignature more
    can only lower the (f + 1)-th smallest timestamp, so the time bound of a receipt cut later
    is never later than that of one cut earlier, on any node that has heard what the first had.
    """

    def __init__(self, *, store: Store, validators: NodeValidators, origin: str) -> None:
        self._store = store
        self._validators = validators
        self._origin = origin
        self.latest: tuple[int, str] | None = None
        #: tree size -> how many cosignatures the stored note of it holds (open sizes only)
        self._stored: dict[int, int] = {}
        #: tree sizes of committed blocks whose note is not stored yet -> (since, last asked;
        #: ``since`` until a peer was asked)
        self._expected: dict[int, tuple[int, int]] = {}
        #: tree size -> outside witnesses' cosignatures added to its stored note (open sizes)
        self._outside: dict[int, tuple[Signature, ...]] = {}
        raw = store.latest_checkpoint()
        if raw is not None:
            text = raw.decode("utf-8")
            self.latest = (parse_checkpoint_body(note_body(text)).size, text)
        pending = store.get_meta(PENDING_KEY) or b""
        for at in range(0, len(pending) - len(pending) % 8, 8):
            size = int.from_bytes(pending[at:at + 8], "big")
            if 0 < size <= store.size and store.checkpoint(size) is None:
                self._expected[size] = (0, 0)  # fetched at the first tick

    @property
    def latest_size(self) -> int:
        """The tree size of the latest stored checkpoint (0: none yet)."""
        return 0 if self.latest is None else self.latest[0]

    def cosign_head(self, *, now: int, block_time: int) -> Cosignature | None:
        """Sign and cosign the current tree head (``now`` and ``block_time``, the committed
        block's time, in ms); return the cosignature to send, or ``None`` if there is nothing
        new or we hold no key of this period's set. Stores the checkpoint at once if our
        cosignature completes a quorum.

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
        cosig = collector.sign_local(body, timestamp=now // 1000, block_time=block_time // 1000)
        self.store_if_quorum(head.size)
        return cosig

    def add_peer(self, cosig: Cosignature, *, now: int) -> bool:
        """Take a peer's cosignature (``now`` in ms); return whether a note was stored (a new
        checkpoint, or one with more cosignatures).

        Raises:
            MalformedError, VerificationError: the cosignature is bad (see
                :meth:`CosignatureCollector.add`).
            StorageError: storing the note failed.
        """
        size = self._store.size
        added = False
        for collector in self._validators.collectors_for_peer(cosig.size, latest_size=size):
            added = collector.add(cosig, latest_size=size, now=now // 1000) or added
        return added and self.store_if_quorum(cosig.size)

    def store_if_quorum(self, size: int) -> bool:
        """Store the note of ``size`` if it holds a quorum and more cosignatures than the note
        stored for it (none, the first time).

        Raises:
            StorageError: the write failed.
        """
        collector = self._validators.collector(size)
        if collector is None or collector.count(size) <= self._stored.get(size, 0):
            return False
        note = collector.note(size)
        if note is None:
            return False
        outside = self._outside.get(size)
        if outside:  # a later validator cosignature must not drop the outside witnesses'
            held = parse_note(note)
            note = Note(text=held.text, signatures=(*held.signatures, *outside)).format()
        self._store.put_checkpoint(size, note.encode("utf-8"))
        self._expected.pop(size, None)
        self._stored[size] = collector.count(size)
        while len(self._stored) > _MAX_OPEN_SIZES:
            del self._stored[min(self._stored)]
        if size >= self.latest_size:
            self.latest = (size, note)
        return True

    def pending_meta(self, size: int) -> dict[bytes, bytes | None]:
        """The metadata to write with the block that grows the tree to ``size``
        (:data:`PENDING_KEY`: that size and the notes still expected)."""
        sizes = sorted({size, *self._expected})[-MAX_EXPECTED:]
        return {PENDING_KEY: b"".join(s.to_bytes(8, "big") for s in sizes)}

    def first_of(self, index: int) -> tuple[int, str] | None:
        """The checkpoint a receipt for leaf ``index`` is cut against: the first stored one
        whose tree holds it, (size, note); ``None`` while the note of the block that committed
        the leaf is not stored here yet (a later one would prove a later moment).

        Raises:
            StorageError: the store failed.
        """
        found = self.earliest(index)
        if found is None:
            return None
        if any(index < s < found[0] for s in self._expected):
            return None
        return found

    def firsts_of(self, indices: Sequence[int]) -> list[tuple[int, str] | None]:
        """:meth:`first_of` of each index, one store lookup per block's checkpoint: if the
        first checkpoint of leaf ``i`` has size ``S``, it is the first one of every leaf in
        ``[i, S)`` too (no checkpoint lies between).

        Raises:
            StorageError: the store failed.
        """
        found: dict[int, tuple[int, str] | None] = {}
        span: tuple[int, tuple[int, str]] | None = None  # (lowest leaf, its first checkpoint)
        for i in sorted(set(indices)):
            if span is not None and span[0] <= i < span[1][0]:
                found[i] = span[1]
                continue
            first = self.first_of(i)
            found[i] = first
            span = None if first is None else (i, first)
        return [found[i] for i in indices]

    def expect(self, size: int, now: int) -> None:
        """A committed block grew the tree to ``size``: its note must be stored here (from
        our own quorum, or fetched from a peer, :meth:`missing`)."""
        if size and size not in self._expected and self._store.checkpoint(size) is None:
            self._expected[size] = (now, now)
            while len(self._expected) > MAX_EXPECTED:
                del self._expected[min(self._expected)]

    def missing(self, now: int) -> list[int]:
        """The expected notes still missing :data:`FETCH_MISSING_AFTER_MS` after their block
        (or after we last asked a peer): to fetch now. Each is marked as asked."""
        out = []
        for size, (since, asked) in sorted(self._expected.items()):
            if self._store.checkpoint(size) is not None:
                del self._expected[size]
            elif now - asked >= FETCH_MISSING_AFTER_MS:
                self._expected[size] = (since, now)
                out.append(size)
                if len(out) >= 16:
                    break
        return out

    def own_recent(self) -> list[Cosignature]:
        """Our cosignatures of the newest tree heads, for re-sending (:data:`RESEND_OWN`)."""
        collector = self._validators.collector(self._store.size)
        return [] if collector is None else collector.own_recent(RESEND_OWN)

    def earliest(self, index: int) -> tuple[int, str] | None:
        """The first stored checkpoint whose tree holds leaf ``index``: (size, note).

        Raises:
            StorageError: the store failed.
        """
        found = self._store.earliest_checkpoint(index)
        return None if found is None else (found[0], found[1].decode("utf-8"))

    def adopt(self, text: str) -> bool:
        """Store a peer's quorum checkpoint of a size within our tree (a block we caught up
        on), merged with the note we hold for that size, if any: every valid signature of
        either is kept. Returns whether anything was stored.

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
        if cp.size == 0 or cp.size > self._store.size:
            return False
        if self._store.root_at(cp.size) != cp.root:
            raise VerificationError(f"checkpoint of size {cp.size} contradicts our tree")
        held = self._store.checkpoint(cp.size)
        if held is None:
            # Only the signatures we verified: a line by a key we do not know (an outside
            # witness's, or garbage a Byzantine peer added under a witness's name) would make
            # every receipt cut from this note fail under a policy that knows that key.
            known = {(v.name, v.key_id) for v in policy.verifiers()}
            note = opened.note.note
            merged = Note(text=note.text, signatures=tuple(
                sig for sig in note.signatures if (sig.name, sig.key_id) in known)).format()
        else:
            merged = merge_notes(held.decode("utf-8"), text, policy.verifiers())
        if held is not None and merged == held.decode("utf-8"):
            self._expected.pop(cp.size, None)
            return False
        self._store.put_checkpoint(cp.size, merged.encode("utf-8"))
        self._expected.pop(cp.size, None)
        if cp.size >= self.latest_size:
            self.latest = (cp.size, merged)
        return True

    def rejected(self) -> int:
        """Peer cosignatures refused so far (metrics)."""
        return self._validators.rejected()

    def add_outside(self, size: int, signatures: Sequence[Signature],
                    verifiers: Sequence[Verifier]) -> bool:
        """Add outside witnesses' cosignatures (c2sp.org/tlog-witness answers) to the stored
        note of ``size``, so that the served checkpoint and every receipt cut against it carry
        them. Each one is verified here against ``verifiers`` (the configured witness keys);
        one the note already holds is skipped. Returns whether the note changed.

        Raises:
            VerificationError: a signature is by none of ``verifiers`` or does not verify.
            StorageError: the store failed.
        """
        held = self._store.checkpoint(size)
        if held is None:
            return False
        note = parse_note(held.decode("utf-8"))
        known = {(v.name, v.key_id): v for v in verifiers}
        have = {(s.name, s.key_id) for s in note.signatures}
        added: list[Signature] = []
        for signature in signatures:
            ident = (signature.name, signature.key_id)
            verifier = known.get(ident)
            if verifier is None:
                raise VerificationError(f"cosignature by {signature.name}, not a configured "
                                        "witness key")
            verifier.verify(note.text.encode("utf-8"), signature)
            if ident not in have:
                added.append(signature)
                have.add(ident)
        if not added:
            return False
        text = Note(text=note.text, signatures=(*note.signatures, *added)).format()
        self._store.put_checkpoint(size, text.encode("utf-8"))
        self._outside[size] = (*self._outside.get(size, ()), *added)
        while len(self._outside) > _MAX_OPEN_SIZES:
            del self._outside[min(self._outside)]
        if size == self.latest_size:
            self.latest = (size, text)
        return True
