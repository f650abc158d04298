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
   the (f + 1)-th smallest, where f = n - k of the policy's top quorum group (design brief,
   section 3). At most f validators are faulty, so among the f + 1 smallest timestamps at least
   one is an honest validator's, which it signed after the leaf was in the tree: the document
   existed no later than that time, and f liars can neither pull the bound earlier than every
   honest timestamp nor push it later than the (f + 1)-th honest one.

Failures in steps 2-4 raise :class:`~ledger.errors.VerificationError` with a one-line reason.
The ``extra`` data is carried but never trusted, as the spec requires.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ledger.checkpoint import MAX_TREE_SIZE, open_checkpoint, parse_checkpoint_body, parse_decimal
from ledger.crypto import b64decode_strict
from ledger.errors import MalformedError, VerificationError
from ledger.merkle.hashing import HASH_SIZE, leaf_hash
from ledger.merkle.proof import verify_inclusion
from ledger.note import MAX_NOTE_SIZE, parse_note
from ledger.policy import NONE, Policy

__all__ = [
    "MAX_PROOF_HASHES",
    "MAX_RECEIPT_SIZE",
    "RECEIPT_HEADER",
    "Receipt",
    "VerifiedReceipt",
    "build_receipt",
    "parse_receipt",
    "time_bound",
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


def verify_receipt(proof_text: str | bytes, policy: Policy, digest: bytes) -> VerifiedReceipt:
    """Verify a receipt for ``digest`` (the raw 32-byte SHA-256 of a document) under ``policy``.

    Raises:
        MalformedError: the receipt does not parse or ``digest`` is not 32 bytes.
        VerificationError: a signature by a policy key fails or is duplicated, no trusted log for
            the origin signed, the quorum is not met, the inclusion proof fails, or the policy
            cannot bound the time (it has no cosigning quorum); the message is one line.
    """
    receipt = parse_receipt(proof_text)
    if len(digest) != HASH_SIZE:
        raise MalformedError(f"digest must be {HASH_SIZE} bytes")
    if policy.quorum == NONE:
        raise VerificationError("policy requires no cosignatures, so no time can be bounded")
    opened = open_checkpoint(receipt.checkpoint, policy.verifiers())
    checkpoint = opened.checkpoint
    verified = opened.note.verified
    policy.evaluate((v.verifier for v in verified), origin=checkpoint.origin)
    try:
        verify_inclusion(
            leaf_hash(digest), receipt.index, checkpoint.size, receipt.proof, checkpoint.root
        )
    except VerificationError as exc:
        raise VerificationError(
            f"digest is not in the checkpointed tree: {exc.diagnostics()}"
        ) from None
    validators = {w.verifier: w.name for w in policy.quorum_witnesses()}
    stamps: list[int] = []
    cosigners: list[str] = []
    for signature in verified:
        name = validators.get(signature.verifier)
        if name is not None and signature.timestamp is not None:
            stamps.append(signature.timestamp)
            cosigners.append(name)
    return VerifiedReceipt(
        index=receipt.index,
        size=checkpoint.size,
        origin=checkpoint.origin,
        root=checkpoint.root,
        cosigners=tuple(cosigners),
        time_bound=time_bound(stamps, policy.fault_tolerance()),
    )
