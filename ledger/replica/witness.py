"""The C2SP tlog-witness ``add-checkpoint`` statement: what a witness checks and signs (pure).

c2sp.org/tlog-witness defines how a log asks a witness for a cosignature::

    POST <submission prefix>/add-checkpoint

    old <size>\\n              the size of the last checkpoint the witness cosigned (0: none)
    <base64 hash>\\n ...       0 to 63 lines: RFC 6962 consistency proof old size -> new size
    \\n                        an empty line
    <signed checkpoint note>  origin, size, root, blank line, signature lines

and the witness answers, in this order of checks (spec section "add-checkpoint"):

====  ==================================================================================
404   the checkpoint's origin is not a log the witness knows
403   no signature by a trusted key of that log verifies (a failing known key also
      rejects the note, c2sp.org/signed-note)
400   the old size is above the checkpoint size, or the body does not parse
409   the old size is not the size the witness last cosigned; the body is that size in
      decimal and a newline, ``Content-Type: text/x.tlog.size``. Also 409 for the same
      size with a different root hash (a split view)
422   the consistency proof does not verify (it must be empty for old size 0)
200   one cosignature line (type 0x04, c2sp.org/tlog-cosignature) per witness key
====  ==================================================================================

"The witness MUST persist the new checkpoint before responding", and the check of the old size
and the write of the new one must be atomic. :meth:`Witness.add_checkpoint` does no I/O but the
store's ``get_meta`` / ``put_meta`` and is synchronous: in the node's single event loop nothing
else runs between the check and the write, and ``put_meta`` is an LMDB transaction with sync
on. The record is the last cosigned checkpoint note per origin, under meta key
:data:`META_PREFIX` + SHA-256(origin), which survives restarts like the safety record.

**The node as a witness of its own log.** Every validator already cosigns the tree heads it
committed, through the peer protocol. :meth:`ledger.replica.Replica.witness` builds the same
statement for this endpoint: the witness key is the validator's *cosigner* key (name =
validator name), the trusted logs are the ``log`` lines of every trust policy of the chain (the
genesis one and each one after a validator-set change), and one check beyond the spec
guards the quorum: the validator cosigns only a tree head that its own store committed
(``size <= store.size`` and ``root_at(size) == root``). Without it, one Byzantine validator
could sign a forked tree with its own log key (any validator's log key is a ``log`` of the
policy), submit it with ``old 0`` to every honest node, and collect a forged quorum of
validator cosignatures. A checkpoint beyond our committed size gets 503 with ``Retry-After``
(we may just lag); one that contradicts our committed tree gets 422 and is logged as evidence.

**An outside institution's witness.** The other side of the protocol is the log pushing its
checkpoints to witnesses: :func:`format_add_checkpoint` builds the request body,
:func:`ledger.node.witness_api.submit_checkpoint` sends it (re-syncing once on 409) and
returns the verified cosignature lines, and :func:`add_cosignatures` merges them into the note.
The same :class:`Witness` without an own tree (``tree=None``) is a complete spec witness that
an outside institution can run (:func:`ledger.node.witness_api.witness_app`);
``docs/witness.md`` says how its key enters the trust policy.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.checkpoint import Checkpoint, cosign, parse_checkpoint_body, parse_decimal
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key, b64decode_strict
from ledger.errors import LedgerError, MalformedError, NotFoundError, VerificationError
from ledger.merkle.hashing import HASH_SIZE
from ledger.merkle.proof import verify_consistency
from ledger.note import (
    SIGNATURE_LINE_PREFIX,
    Note,
    Signature,
    Verifier,
    open_note,
    parse_note,
)
from ledger.storage.base import Store

__all__ = [
    "MAX_ADD_CHECKPOINT_BYTES",
    "MAX_PROOF_LINES",
    "META_PREFIX",
    "SIZE_CONTENT_TYPE",
    "WITNESS_PATH",
    "AddCheckpointRequest",
    "Witness",
    "WitnessRefusal",
    "add_cosignatures",
    "format_add_checkpoint",
    "parse_add_checkpoint",
]

log = logging.getLogger("ledger.witness")

#: The endpoint, at the root of the node (the node's URL is the submission prefix).
WITNESS_PATH: Final = "/add-checkpoint"
#: The content type of a 409 answer's body (c2sp.org/tlog-witness).
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
#: "The client MUST NOT send more than 63 consistency proof lines."
MAX_PROOF_LINES: Final = 63
#: A checkpoint with 100 signatures is about 10 kB, 63 proof lines under 3 kB.
MAX_ADD_CHECKPOINT_BYTES: Final = 64 * 1024
#: Meta key prefix of the last cosigned checkpoint note, followed by SHA-256(origin).
META_PREFIX: Final = b"witness/v1/last/"

_OLD_PREFIX: Final = "old "


class WitnessRefusal(LedgerError):
    """A refused ``add-checkpoint``: the HTTP status of the spec and, for 409, the known size."""

    def __init__(self, status: int, code: str, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.size = size


@dataclass(frozen=True, kw_only=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body; ``note`` is the checkpoint note text, unverified."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def parse_add_checkpoint(data: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` body (the note itself is parsed by the witness).

    Raises:
        MalformedError: oversized, not UTF-8, no ``old <size>`` line, more than 63 proof
            lines, a proof line that is not base64 of 32 bytes, or no empty line.
    """
    if len(data) > MAX_ADD_CHECKPOINT_BYTES:
        raise MalformedError(f"add-checkpoint body exceeds {MAX_ADD_CHECKPOINT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("add-checkpoint body is not UTF-8") from None
    first, sep, rest = text.partition("\n")
    if not sep or not first.startswith(_OLD_PREFIX):
        raise MalformedError("add-checkpoint body must start with an 'old <size>' line")
    old_size = parse_decimal(first[len(_OLD_PREFIX):], what="old size")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition("\n")
        if not sep:
            raise MalformedError("add-checkpoint body has no empty line before the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise MalformedError(f"more than {MAX_PROOF_LINES} consistency proof lines")
        digest = b64decode_strict(line, what="consistency proof line")
        if len(digest) != HASH_SIZE:
            raise MalformedError(f"a consistency proof hash must be {HASH_SIZE} bytes")
        proof.append(digest)
    return AddCheckpointRequest(old_size=old_size, proof=tuple(proof), note=rest)


def format_add_checkpoint(*, old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The body of an ``add-checkpoint`` request (the log's side)."""
    lines = [f"{_OLD_PREFIX}{old_size}"]
    lines.extend(base64.b64encode(h).decode("ascii") for h in proof)
    return ("\n".join(lines) + "\n\n" + note).encode("utf-8")


def _meta_key(origin: str) -> bytes:
    return META_PREFIX + hashlib.sha256(origin.encode("utf-8")).digest()


class Witness:
    """A tlog-witness: trusted log keys per origin, one cosigner key, state in ``store`` meta.

    ``tree``: the witness's own copy of the log (a validator's store), or ``None`` for a
    witness outside the validator set, which trusts log signatures and consistency proofs only.
    """

    def __init__(
        self,
        *,
        name: str,
        key: Ed25519Key,
        logs: Iterable[Verifier],
        state: Store,
        tree: Store | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self.verifier = Verifier.for_key(
            name=name, sig_type=SIG_TYPE_COSIGNATURE_V1, public_key=key.public_key
        )
        self.logs: dict[str, list[Verifier]] = {}
        for verifier in logs:
            self.logs.setdefault(verifier.name, []).append(verifier)
        self.state = state
        self.tree = tree

    def last(self, origin: str) -> Checkpoint | None:
        """The checkpoint of ``origin`` this witness last cosigned, or ``None``.

        Raises:
            MalformedError: the stored record does not parse (a damaged store).
        """
        raw = self.state.get_meta(_meta_key(origin))
        if raw is None:
            return None
        return parse_checkpoint_body(parse_note(raw).text)

    def add_checkpoint(self, data: bytes, *, now: int) -> str:
        """Check an ``add-checkpoint`` body, record the checkpoint, return the cosignature line
        (timestamped ``now``, milliseconds since the epoch, in whole seconds).

        Raises:
            WitnessRefusal: with the status of the spec (see the module docstring).
            StorageError: the state could not be read or written (nothing was cosigned).
        """
        try:
            request = parse_add_checkpoint(data)
            note = parse_note(request.note)
            checkpoint = parse_checkpoint_body(note.text)
        except MalformedError as exc:
            raise WitnessRefusal(400, "malformed", exc.diagnostics()) from None
        if checkpoint.body() != note.text:  # parsing is canonical; keep the signed bytes exact
            raise WitnessRefusal(400, "malformed", "checkpoint text is not canonical")
        trusted = self.logs.get(checkpoint.origin)
        if trusted is None:
            raise WitnessRefusal(404, "unknown_log", f"unknown log origin {checkpoint.origin!r}")
        try:
            open_note(note, trusted)
        except (MalformedError, VerificationError) as exc:
            raise WitnessRefusal(403, "bad_signature",
                                 f"checkpoint not signed by the log: {exc.diagnostics()}") from None
        if request.old_size > checkpoint.size:
            raise WitnessRefusal(400, "old_size_too_large",
                                 "old size is above the checkpoint size")
        try:
            last = self.last(checkpoint.origin)
        except MalformedError as exc:
            raise WitnessRefusal(500, "corruption",
                                 f"stored witness state: {exc.diagnostics()}") from None
        known = 0 if last is None else last.size
        if request.old_size != known:
            raise WitnessRefusal(409, "conflict",
                                 f"this witness last cosigned size {known}", size=known)
        self._check_consistency(request, checkpoint, last)
        if self.tree is not None:
            self._check_own_tree(checkpoint)
        # The old size was checked against the record above and the new record is written
        # below with no await in between (module docstring): the check-and-set is atomic.
        if last is None or checkpoint.size > last.size:
            self.state.put_meta({_meta_key(checkpoint.origin): note.format().encode("utf-8")})
        signature = cosign(checkpoint, name=self.name, key=self.key, timestamp=now // 1000)
        return signature.line()

    def _check_consistency(
        self, request: AddCheckpointRequest, checkpoint: Checkpoint, last: Checkpoint | None
    ) -> None:
        if last is None:
            if request.proof:
                raise WitnessRefusal(422, "bad_proof", "the proof must be empty for old size 0")
            return
        if last.size == checkpoint.size:
            if last.root != checkpoint.root:
                log.warning("witness: %s size %d has two roots (split view?)",
                            checkpoint.origin, checkpoint.size)
                raise WitnessRefusal(409, "conflict",
                                     f"size {last.size} was cosigned with another root",
                                     size=last.size)
            if request.proof:
                raise WitnessRefusal(422, "bad_proof", "the proof must be empty for equal sizes")
            return
        try:
            verify_consistency(last.size, checkpoint.size, last.root, checkpoint.root,
                               request.proof)
        except (MalformedError, VerificationError) as exc:
            log.warning("witness: %s consistency %d -> %d failed: %s", checkpoint.origin,
                        last.size, checkpoint.size, exc.diagnostics())
            raise WitnessRefusal(422, "bad_proof",
                                 f"consistency proof does not verify: {exc.diagnostics()}") \
                from None

    def _check_own_tree(self, checkpoint: Checkpoint) -> None:
        tree = self.tree
        assert tree is not None
        if checkpoint.size > tree.size:
            raise WitnessRefusal(503, "not_committed",
                                 f"this validator has committed {tree.size} leaves, not "
                                 f"{checkpoint.size} yet; retry later")
        try:
            root = tree.root_at(checkpoint.size)
        except NotFoundError:  # the tree cannot shrink; keep the answer right if it did
            raise WitnessRefusal(503, "not_committed", "size not committed here") from None
        if root != checkpoint.root:
            log.warning("witness: checkpoint %s size %d contradicts our committed tree: %r",
                        checkpoint.origin, checkpoint.size, checkpoint.body())
            raise WitnessRefusal(422, "contradicts_tree",
                                 "the root differs from this validator's committed tree")


def add_cosignatures(note: str, response: str, witnesses: Iterable[Verifier]) -> str:
    """``note`` with the valid cosignature lines of ``response`` by ``witnesses`` appended.

    Lines by other keys are ignored (the spec: "The client MUST ignore any cosignatures from
    unknown keys"); a line by a key the note already carries is not added twice.

    Raises:
        VerificationError: no line of ``response`` is a valid cosignature by ``witnesses``.
        MalformedError: ``note`` or ``response`` does not parse.
    """
    parsed = parse_note(note)
    lines = [line for line in response.split("\n") if line]
    if not lines or not all(line.startswith(SIGNATURE_LINE_PREFIX) for line in lines):
        raise VerificationError("witness response is not a list of signature lines")
    known = {(w.name, w.key_id): w for w in witnesses}
    held = {(s.name, s.key_id) for s in parsed.signatures}
    added: list[Signature] = []
    for line in lines:
        signature = Signature.parse_line(line)
        ident = (signature.name, signature.key_id)
        verifier = known.get(ident)
        if verifier is None or ident in held:
            continue
        verifier.verify(parsed.text.encode("utf-8"), signature)
        added.append(signature)
        held.add(ident)
    if not added:
        raise VerificationError("witness response holds no cosignature by a trusted witness")
    return Note(text=parsed.text, signatures=(*parsed.signatures, *added)).format()

