"""The local proving ground: a single-process ledger that issues real, verifiable receipts.

Until the validator cluster exists, :class:`LocalLog` plays every part on one machine: it appends
digests to a :mod:`ledger.storage` store (the Merkle tree lives there), signs the tree head as the
log, cosigns it with N local validator keys, and cuts C2SP receipts. The formats are exactly
those the cluster will publish (design brief, section 3), so a receipt made here verifies with
``ledger verify`` against :func:`trust_policy` the same way a cluster receipt will.

What it does *not* give: independence. All keys sit with one operator, so the quorum proves
nothing about collusion; it exercises the formats and the verifier end to end.

No clock is read here: every cosignature timestamp is passed in by the caller (the CLI reads the
clock; tests pass fixed values).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.checkpoint import (
    Checkpoint,
    checkpoint_note,
    cosign,
    parse_checkpoint_body,
    sign_checkpoint,
)
from ledger.consensus.reconfig import ValidatorInfo, ValidatorRoster
from ledger.consensus.validators import fault_tolerance, quorum
from ledger.crypto import ValidatorKeys
from ledger.errors import ConfigError, MalformedError, NotFoundError
from ledger.merkle.hashing import HASH_SIZE
from ledger.note import parse_note
from ledger.policy import policy_text
from ledger.receipt import build_receipt
from ledger.storage.base import Store

__all__ = [
    "LocalLog",
    "trust_policy",
]


def _check_validators(validators: Sequence[ValidatorKeys]) -> str:
    if not validators:
        raise MalformedError("at least one validator is needed")
    origins = {v.origin for v in validators}
    if len(origins) != 1:
        raise MalformedError("all validators must sign for the same log origin")
    names = [v.name for v in validators]
    if len(set(names)) != len(names):
        raise MalformedError("validator names must be distinct")
    if len({v.seed for v in validators}) != len(validators):
        raise MalformedError("validators must have distinct keys")
    return origins.pop()


def trust_policy(validators: Sequence[ValidatorKeys]) -> str:
    """The c2sp.org/tlog-policy text that trusts these validators: the policy of their roster
    (:meth:`ledger.consensus.ValidatorRoster.policy`, the one builder of trust policies) with a
    comment header.

    Raises:
        MalformedError: no validators, mixed origins, or duplicate names or keys.
    """
    origin = _check_validators(validators)
    n = len(validators)
    try:
        roster = ValidatorRoster(members=[ValidatorInfo.from_keys(v) for v in validators])
    except ConfigError as exc:
        raise MalformedError(exc.diagnostics()) from None
    return policy_text(roster.policy(), comments=(
        f"Trust policy for the ledger {origin}",
        f"{n} validators tolerate f = {fault_tolerance(n)} faults; "
        f"a checkpoint needs {quorum(n)} cosignatures.",
    ))


class LocalLog:
    """A ledger on one machine: a store, a log key and N validator cosigners.

    The first validator's log key signs checkpoints as the log; all validators cosign.

    Raises (on construction):
        MalformedError: see :func:`trust_policy`.
    """

    def __init__(self, store: Store, *, validators: Sequence[ValidatorKeys]) -> None:
        self._origin = _check_validators(validators)
        self._store = store
        self._validators = tuple(validators)

    @property
    def origin(self) -> str:
        """The log origin every validator signs for."""
        return self._origin

    @property
    def validators(self) -> tuple[ValidatorKeys, ...]:
        """The validator identities, in policy order."""
        return self._validators

    def trust_policy(self) -> str:
        """The tlog-policy text that verifies this log's receipts."""
        return trust_policy(self._validators)

    def append(self, digests: Sequence[bytes]) -> tuple[int, ...]:
        """Append 32-byte digests; return each one's leaf index (an old digest keeps its index).

        Raises:
            MalformedError: a digest is not 32 bytes.
            StorageError: the store failed.
        """
        for digest in digests:
            if len(digest) != HASH_SIZE:
                raise MalformedError(f"a digest must be {HASH_SIZE} bytes")
        return self._store.append(list(digests)).indices

    def checkpoint(
        self, *, timestamp: int | Sequence[int], cosigners: Sequence[int] | None = None
    ) -> str:
        """Sign the current tree head, cosign it, store the note and return its text.

        ``timestamp`` is one POSIX time for every cosignature, or one per cosigning validator.
        ``cosigners`` selects validators by position (default: all), to build short quorums in
        tests.

        Raises:
            MalformedError: a timestamp out of range, wrong count, or a bad validator position.
            StorageError: the store failed.
        """
        chosen = tuple(range(len(self._validators))) if cosigners is None else tuple(cosigners)
        if any(not 0 <= i < len(self._validators) for i in chosen) or len(set(chosen)) != len(
            chosen
        ):
            raise MalformedError("cosigners must be distinct validator positions")
        stamps = [timestamp] * len(chosen) if isinstance(timestamp, int) else list(timestamp)
        if len(stamps) != len(chosen):
            raise MalformedError("give one timestamp, or one per cosigning validator")
        head = self._store.tree_head()
        body = Checkpoint(origin=self._origin, size=head.size, root=head.root)
        signatures = [sign_checkpoint(body, key=self._validators[0].log_key)]
        for i, stamp in zip(chosen, stamps, strict=True):
            v = self._validators[i]
            signatures.append(cosign(body, name=v.name, key=v.cosigner_key, timestamp=stamp))
        note = checkpoint_note(body, signatures)
        self._store.put_checkpoint(head.size, note.encode("utf-8"))
        return note

    def prove(self, digest: bytes, *, extra: bytes | None = None) -> str:
        """A tlog-proof@v1 receipt for ``digest`` against the latest stored checkpoint.

        Raises:
            MalformedError: the digest is not 32 bytes.
            NotFoundError: the digest is not in the log, or no checkpoint covers it yet.
            StorageError: the store failed.
        """
        if len(digest) != HASH_SIZE:
            raise MalformedError(f"a digest must be {HASH_SIZE} bytes")
        index = self._store.index_of(digest)
        if index is None:
            raise NotFoundError(f"digest {digest.hex()} is not in the log")
        latest = self._store.latest_checkpoint()
        if latest is None:
            raise NotFoundError("the log has no checkpoint yet")
        note_text = latest.decode("utf-8")
        size = parse_checkpoint_body(parse_note(note_text).text).size
        if index >= size:
            raise NotFoundError(f"leaf {index} is not yet covered by a checkpoint")
        proof = self._store.inclusion_proof(index, size)
        return build_receipt(index=index, proof=proof, checkpoint_note=note_text, extra=extra)
