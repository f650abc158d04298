"""Receipts: C2SP transparency-log proofs (c2sp.org/tlog-proof@v1), built, parsed and verified.

A receipt proves, offline, that a document digest is a leaf of the ledger's Merkle tree at a
tree head that a quorum of validators cosigned, and bounds the time by which it was logged::

    c2sp.org/tlog-proof@v1
    extra <base64>                 (optional, unauthenticated)
    index <leaf index>
    <base64 hash>                  (zero or more: the inclusion path, leaf's sibling first)
    <empty line>
    <checkpoint note, verbatim>

Verification (:func:`verify_receipt`) needs only the receipt, the trust policy and the
document digest:

1. the receipt and its checkpoint parse (else :class:`~ledger.errors.MalformedError`);
2. every signature in the checkpoint by a key of the policy verifies, and a trusted log whose
   key name is the checkpoint's origin signed it, and the policy's quorum of validator
   cosignatures is met (:mod:`ledger.note`, :mod:`ledger.policy`);
3. the digest's leaf hash ``SHA-256(0x00 || digest)`` is leaf ``index`` of the tree with the
   checkpoint's size and root (RFC 9162 section 2.1.3.2);
4. the time bound: of the timestamps of the valid cosignatures by the quorum's validators,
   the (f + 1)-th smallest, where f = n - k of the validators' group (design brief,
   section 3; a policy that also requires outside witnesses combines the groups' bounds as
   :meth:`ledger.policy.Policy.time_bound` says). At most f validators are faulty, so among
   the f + 1 smallest timestamps at least one is an honest validator's, which it signed after
   the leaf was in the tree: the document existed no later than that time, and f liars can
   neither pull the bound earlier than every honest timestamp nor push it later than the
   (f + 1)-th honest one.

Failures in steps 2-4 raise :class:`~ledger.errors.VerificationError` with a one-line reason.

**The earliest moment, carried along.** The node cuts a receipt against the *first* checkpoint
whose tree contains the leaf: its time bound is the earliest the ledger can prove. A receipt
asked for against a later checkpoint (``?against=latest``) carries that first checkpoint in its
``extra`` data, which the spec leaves to the application, as an *earliest bridge*
(:class:`EarliestBridge`)::

    ledger/earliest/v1
    <base64 hash>                  (zero or more: RFC 9162 consistency proof, first -> this size)
    <empty line>
    <the first checkpoint note, verbatim>

Nothing in it is taken on trust: :func:`verify_receipt` verifies the first checkpoint's
signatures and quorum like the receipt's own, checks that the leaf lies inside its tree, and
checks the consistency proof from its tree to the receipt's (so the later tree extends the
earlier one), then reports both time bounds. Other ``extra`` data is carried and ignored, as
the spec requires; a verifier that does not know the bridge ignores it too and still verifies
the receipt.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.checkpoint import MAX_TREE_SIZE, open_checkpoint, parse_checkpoint_body, parse_decimal
from ledger.crypto import b64decode_strict
from ledger.errors import MalformedError, VerificationError
from ledger.merkle.hashing import HASH_SIZE, leaf_hash
from ledger.merkle.proof import verify_consistency, verify_inclusion
from ledger.note import MAX_NOTE_SIZE, parse_note
from ledger.policy import NONE, Policy

__all__ = [
    "BRIDGE_HEADER",
    "MAX_PROOF_HASHES",
    "MAX_RECEIPT_SIZE",
    "RECEIPT_HEADER",
    "EarliestBridge",
    "Receipt",
    "VerifiedCheckpoint",
    "VerifiedReceipt",
    "build_receipt",
    "parse_receipt",
    "time_bound",
    "verify_checkpoint_note",
    "verify_receipt",
]

#: The first line of every tlog-proof@v1 file.
RECEIPT_HEADER: Final = "c2sp.org/tlog-proof@v1"
#: An inclusion path in a tree of at most 2^64 leaves has at most 64 hashes.
MAX_PROOF_HASHES: Final = 64
#: The checkpoint note plus a generous allowance for the header, extra data and the path.
MAX_RECEIPT_SIZE: Final = MAX_NOTE_SIZE + 64 * 1024
_MAX_EXTRA: Final = 16 * 1024


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A parsed tlog-proof: leaf index, inclusion path, checkpoint note text, extra data.

    Construction checks syntax only (the checkpoint note and body parse, hashes are 32 bytes);
    nothing is verified.

    Raises (on construction):
        MalformedError: index out of range, a hash that is not 32 bytes, more than 64 hashes,
            oversized extra data, or a checkpoint note that does not parse.
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_TREE_SIZE:
            raise MalformedError("receipt index is out of range")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise MalformedError(f"receipt has more than {MAX_PROOF_HASHES} proof hashes")
        if any(len(h) != HASH_SIZE for h in self.proof):
            raise MalformedError(f"every proof hash must be {HASH_SIZE} bytes")
        if self.extra is not None and len(self.extra) > _MAX_EXTRA:
            raise MalformedError("receipt extra data is too large")
        parse_checkpoint_body(parse_note(self.checkpoint).text)

    def format(self) -> str:
        """The tlog-proof@v1 text."""
        lines = [RECEIPT_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def build_receipt(
    *, index: int, proof: Sequence[bytes], checkpoint_note: str, extra: bytes | None = None
) -> str:
    """The tlog-proof@v1 text for leaf ``index``, its inclusion ``proof`` and a checkpoint note.

    Raises:
        MalformedError: see :class:`Receipt`.
    """
    return Receipt(
        index=index, proof=tuple(proof), checkpoint=checkpoint_note, extra=extra
    ).format()


#: The first line of an earliest bridge in a receipt's extra data.
BRIDGE_HEADER: Final = "ledger/earliest/v1"


@dataclass(frozen=True, kw_only=True)
class EarliestBridge:
    """The first checkpoint containing a leaf, and the consistency proof from its tree to the
    tree of the receipt that carries it (module docstring)."""

    proof: tuple[bytes, ...]
    checkpoint: str

    def encode(self) -> bytes:
        """The bytes that go into a receipt's ``extra``."""
        lines = [BRIDGE_HEADER, *(base64.b64encode(h).decode("ascii") for h in self.proof)]
        return ("\n".join(lines) + "\n\n" + self.checkpoint).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> EarliestBridge | None:
        """The bridge in ``extra`` data, or ``None`` if the data is something else.

        Raises:
            MalformedError: it starts like a bridge but does not parse.
        """
        if not data.startswith(BRIDGE_HEADER.encode("ascii") + b"\n"):
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("the earliest bridge is not valid UTF-8") from None
        lines = _LineReader(text)
        lines.next()
        proof: list[bytes] = []
        while (line := lines.next()) != "":
            if len(proof) == MAX_PROOF_HASHES:
                raise MalformedError("the earliest bridge has too many proof hashes")
            proof.append(b64decode_strict(line, what="bridge proof hash"))
        checkpoint = lines.rest()
        parse_checkpoint_body(parse_note(checkpoint).text)
        return cls(proof=tuple(proof), checkpoint=checkpoint)


def parse_receipt(data: str | bytes) -> Receipt:
    """Parse tlog-proof@v1 text (bytes must be UTF-8).

    Raises:
        MalformedError: on any deviation from the format, naming what is wrong.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_RECEIPT_SIZE:
            raise MalformedError("receipt is too large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("receipt is not valid UTF-8") from None
    else:
        text = data
        if len(text) > MAX_RECEIPT_SIZE:
            raise MalformedError("receipt is too large")
    lines = _LineReader(text)
    if lines.next() != RECEIPT_HEADER:
        raise MalformedError(f"receipt does not start with {RECEIPT_HEADER!r}")
    line = lines.next()
    extra: bytes | None = None
    if line.startswith("extra "):
        extra = b64decode_strict(line[len("extra ") :], what="receipt extra data")
        line = lines.next()
    if not line.startswith("index "):
        raise MalformedError("receipt lacks its 'index' line")
    index = parse_decimal(line[len("index ") :], what="receipt index")
    proof: list[bytes] = []
    while (line := lines.next()) != "":
        if len(proof) == MAX_PROOF_HASHES:
            raise MalformedError(f"receipt has more than {MAX_PROOF_HASHES} proof hashes")
        proof.append(b64decode_strict(line, what="proof hash"))
    return Receipt(index=index, proof=tuple(proof), checkpoint=lines.rest(), extra=extra)


class _LineReader:
    """Hands out newline-terminated lines of ``text`` and, at the end, the verbatim rest."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def next(self) -> str:
        end = self._text.find("\n", self._pos)
        if end < 0:
            raise MalformedError("receipt is truncated")
        line = self._text[self._pos : end]
        self._pos = end + 1
        return line

    def rest(self) -> str:
        return self._text[self._pos :]


@dataclass(frozen=True, kw_only=True)
class VerifiedReceipt:
    """What a verified receipt proves.

    The digest is leaf ``index`` of the ledger ``origin`` at tree head (``size``, ``root``),
    cosigned by the validators named in ``cosigners``; the document existed no later than
    ``time_bound`` (POSIX seconds).
    """

    index: int
    size: int
    origin: str
    root: bytes
    cosigners: tuple[str, ...]
    time_bound: int
    #: The first checkpoint containing the leaf, when the receipt carries it (an earliest
    #: bridge, module docstring): its tree size, cosigners and time bound.
    earliest: VerifiedCheckpoint | None = None


@dataclass(frozen=True, kw_only=True)
class VerifiedCheckpoint:
    """A checkpoint verified under a policy: its tree size, cosigners and time bound."""

    size: int
    root: bytes
    cosigners: tuple[str, ...]
    time_bound: int


def time_bound(timestamps: Sequence[int], fault_tolerance: int) -> int:
    """The (f + 1)-th smallest of ``timestamps``: a time f faulty validators cannot move.

    Raises:
        VerificationError: fewer than f + 1 timestamps.
    """
    if fault_tolerance < 0:
        raise MalformedError("fault tolerance must be non-negative")
    if len(timestamps) < fault_tolerance + 1:
        raise VerificationError(
            f"{len(timestamps)} validator cosignatures cannot bound the time: "
            f"f = {fault_tolerance} needs {fault_tolerance + 1}"
        )
    return sorted(timestamps)[fault_tolerance]


def verify_checkpoint_note(note: str, policy: Policy) -> VerifiedCheckpoint:
    """Verify a checkpoint note under ``policy`` and bound its time.

    Raises:
        MalformedError: the note does not parse.
        VerificationError: as steps 2 and 4 of the module docstring.
    """
    if policy.quorum == NONE:
        raise VerificationError("policy requires no cosignatures, so no time can be bounded")
    opened = open_checkpoint(note, policy.verifiers())
    checkpoint = opened.checkpoint
    verified = opened.note.verified
    policy.evaluate((v.verifier for v in verified), origin=checkpoint.origin)
    validators = {w.verifier: w.name for w in policy.quorum_witnesses()}
    stamps: dict[str, int] = {}
    cosigners: list[str] = []
    for signature in verified:
        name = validators.get(signature.verifier)
        if name is not None and signature.timestamp is not None:
            stamps[name] = signature.timestamp
            cosigners.append(name)
    return VerifiedCheckpoint(size=checkpoint.size, root=checkpoint.root,
                              cosigners=tuple(cosigners),
                              time_bound=policy.time_bound(stamps))


def verify_receipt(
    proof_text: str | bytes, policy: Policy, digest: bytes, *,
    earlier_policy: Callable[[int], Policy] | None = None,
) -> VerifiedReceipt:
    """Verify a receipt for ``digest`` (the raw 32-byte SHA-256 of a document) under ``policy``,
    and its earliest bridge if it carries one (under ``earlier_policy(size)``, default
    ``policy``).

    Raises:
        MalformedError: the receipt or its bridge does not parse, or ``digest`` is not 32
            bytes.
        VerificationError: a signature by a policy key fails or is duplicated, no trusted log for
            the origin signed, the quorum is not met, the inclusion proof fails, the policy
            cannot bound the time (it has no cosigning quorum), or the bridge does not verify;
            the message is one line.
    """
    receipt = parse_receipt(proof_text)
    if len(digest) != HASH_SIZE:
        raise MalformedError(f"digest must be {HASH_SIZE} bytes")
    checked = verify_checkpoint_note(receipt.checkpoint, policy)
    origin = parse_checkpoint_body(parse_note(receipt.checkpoint).text).origin
    try:
        verify_inclusion(leaf_hash(digest), receipt.index, checked.size, receipt.proof,
                         checked.root)
    except VerificationError as exc:
        raise VerificationError(
            f"digest is not in the checkpointed tree: {exc.diagnostics()}"
        ) from None
    bridge = None if receipt.extra is None else EarliestBridge.decode(receipt.extra)
    earliest = None
    if bridge is not None:
        earliest = _verify_bridge(bridge, receipt.index, checked,
                                  (earlier_policy or (lambda _size: policy)))
    return VerifiedReceipt(index=receipt.index, size=checked.size, origin=origin,
                           root=checked.root, cosigners=checked.cosigners,
                           time_bound=checked.time_bound, earliest=earliest)


def _verify_bridge(bridge: EarliestBridge, index: int, later: VerifiedCheckpoint,
                   policy_for: Callable[[int], Policy]) -> VerifiedCheckpoint:
    size = parse_checkpoint_body(parse_note(bridge.checkpoint).text).size
    try:
        first = verify_checkpoint_note(bridge.checkpoint, policy_for(size))
    except VerificationError as exc:
        raise VerificationError(f"the earliest checkpoint: {exc.diagnostics()}") from None
    if not index < first.size <= later.size:
        raise VerificationError("the earliest checkpoint does not contain the leaf, or is not "
                                "earlier than the receipt's")
    if first.size < later.size:
        try:
            verify_consistency(first.size, later.size, first.root, later.root, bridge.proof)
        except VerificationError as exc:
            raise VerificationError(
                f"the receipt's tree does not extend the earliest checkpoint's: "
                f"{exc.diagnostics()}") from None
    elif first.root != later.root or bridge.proof:
        raise VerificationError("the earliest checkpoint contradicts the receipt's")
    return first
