"""Receipt verification with the checkpoint checked once: many receipts, one cosigned note.

Every receipt the office stores is verified against its pinned trust policy, and so is every
receipt of a trail an auditor checks. The costly part is the checkpoint note at the end of each
receipt (a log signature and the quorum's cosignatures, Ed25519 each); the inclusion proof is a
few dozen SHA-256. A batch of steps anchored together, and the events of a case recorded within
one block, share one checkpoint note, so :class:`ReceiptVerifier` verifies each distinct note
once (kept in a bounded cache keyed by its exact text) and the inclusion proof of every receipt.
What it proves is exactly what :func:`ledger.receipt.verify_receipt` proves: a receipt carrying
an earliest bridge (``extra``) goes through that function whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Final

from ledger.checkpoint import MAX_TREE_SIZE, parse_checkpoint_body, parse_decimal
from ledger.crypto import b64decode_strict
from ledger.errors import MalformedError, VerificationError
from ledger.merkle.hashing import HASH_SIZE, leaf_hash
from ledger.merkle.proof import verify_inclusion
from ledger.note import parse_note
from ledger.policy import Policy
from ledger.receipt import (
    MAX_PROOF_HASHES,
    MAX_RECEIPT_SIZE,
    RECEIPT_HEADER,
    VerifiedCheckpoint,
    VerifiedReceipt,
    parse_receipt,
    verify_checkpoint_note,
    verify_receipt,
)

__all__ = ["ReceiptVerifier"]

_CACHE: Final = 256


class ReceiptVerifier:
    """Verifies receipts under one policy, each distinct checkpoint note once."""

    def __init__(self, policy: Policy, *, cache: int = _CACHE) -> None:
        self.policy = policy
        self._size = cache
        self._notes: OrderedDict[str, tuple[VerifiedCheckpoint, str]] = OrderedDict()
        self._lock = threading.Lock()  # the offices of a service's threads share one

    def _checkpoint(self, note: str) -> tuple[VerifiedCheckpoint, str]:
        with self._lock:
            found = self._notes.get(note)
        if found is not None:
            return found
        checked = verify_checkpoint_note(note, self.policy)
        origin = parse_checkpoint_body(parse_note(note).text).origin
        with self._lock:
            self._notes[note] = (checked, origin)
            if len(self._notes) > self._size:
                self._notes.popitem(last=False)
        return checked, origin

    def _known(
        self, text: str | bytes
    ) -> tuple[int, tuple[bytes, ...], tuple[VerifiedCheckpoint, str]] | None:
        """A receipt whose checkpoint note (everything after the first blank line, verbatim)
        was parsed and verified before: only its head (header, index, proof hashes) is parsed
        here, as strictly as :func:`ledger.receipt.parse_receipt` does; anything else
        (bytes, an ``extra`` line, a new note) goes the full way."""
        if not isinstance(text, str) or len(text) > MAX_RECEIPT_SIZE:
            return None
        head, blank, note = text.partition("\n\n")
        if not blank:
            return None
        with self._lock:
            known = self._notes.get(note)
        if known is None:
            return None
        lines = head.split("\n")
        if len(lines) < 2 or lines[0] != RECEIPT_HEADER or not lines[1].startswith("index "):
            return None
        if len(lines) - 2 > MAX_PROOF_HASHES:
            return None
        index = parse_decimal(lines[1][len("index "):], what="receipt index")
        if not 0 <= index <= MAX_TREE_SIZE:
            raise MalformedError("receipt index is out of range")
        proof = tuple(b64decode_strict(line, what="proof hash") for line in lines[2:])
        if any(len(h) != HASH_SIZE for h in proof):
            raise MalformedError(f"every proof hash must be {HASH_SIZE} bytes")
        return index, proof, known

    def verify(self, text: str | bytes, digest: bytes) -> VerifiedReceipt:
        """As :func:`ledger.receipt.verify_receipt` under this verifier's policy.

        Raises:
            MalformedError: the receipt does not parse, or ``digest`` is not 32 bytes.
            VerificationError: as :func:`ledger.receipt.verify_receipt`.
        """
        if len(digest) != HASH_SIZE:
            raise MalformedError(f"digest must be {HASH_SIZE} bytes")
        quick = self._known(text)
        if quick is not None:
            index, proof, (checked, origin) = quick
        else:
            receipt = parse_receipt(text)
            if receipt.extra is not None:
                return verify_receipt(text, self.policy, digest)
            index, proof = receipt.index, receipt.proof
            checked, origin = self._checkpoint(receipt.checkpoint)
        try:
            verify_inclusion(leaf_hash(digest), index, checked.size, proof, checked.root)
        except VerificationError as exc:
            raise VerificationError(
                f"digest is not in the checkpointed tree: {exc.diagnostics()}"
            ) from None
        return VerifiedReceipt(
            index=index,
            size=checked.size,
            origin=origin,
            root=checked.root,
            cosigners=checked.cosigners,
            time_bound=checked.time_bound,
        )
