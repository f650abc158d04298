"""Evidence of equivocation: two validly signed, conflicting votes of one validator.

Two votes *conflict* when they come from the same validator, on the same chain, for the same
``(height, round, type)``, and name different block hashes (``nil`` counts as a value). A
correct validator never signs both (:mod:`ledger.consensus.safety`), so the pair proves the key
is Byzantine to anyone holding the validator set: :meth:`DuplicateVoteEvidence.verify` needs
nothing else. This is CometBFT's ``DuplicateVoteEvidence``; slashing or eviction is out of scope
here: the evidence is built, kept and exposed.

The two votes are stored in a canonical order (by wire bytes), so the same equivocation always
yields equal evidence and an :class:`EvidencePool` keeps it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.consensus.messages import Vote, vote_from_wire
from ledger.consensus.validators import ValidatorSet
from ledger.errors import ProtocolError, VerificationError

#: An honest node keeps at most this much evidence (oldest dropped first beyond it).
MAX_EVIDENCE = 1024


@dataclass(frozen=True, kw_only=True)
class DuplicateVoteEvidence:
    """Two conflicting votes of one validator; build with :meth:`create`."""

    vote_a: Vote
    vote_b: Vote

    @classmethod
    def create(cls, a: Vote, b: Vote) -> DuplicateVoteEvidence:
        """Order the pair canonically and check it conflicts (signatures are not checked here:
        see :meth:`verify`). Raises :class:`VerificationError` if the votes do not conflict."""
        first, second = sorted((a, b), key=lambda v: v.encode())
        ev = cls(vote_a=first, vote_b=second)
        ev._check_conflict()
        return ev

    @property
    def culprit(self) -> bytes:
        """The public key of the validator that equivocated."""
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    def _check_conflict(self) -> None:
        a, b = self.vote_a, self.vote_b
        if a.validator != b.validator:
            raise VerificationError("evidence votes are from different validators")
        if (a.chain_id, a.height, a.round, a.type) != (b.chain_id, b.height, b.round, b.type):
            raise VerificationError("evidence votes are for different (height, round, type)")
        if a.block_hash == b.block_hash:
            raise VerificationError("evidence votes do not conflict (same block hash)")
        if a.encode() >= b.encode():
            raise VerificationError("evidence votes are not in canonical order")

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Check the evidence on its own: conflicting votes, each validly signed by a member of
        ``validators`` on ``chain_id``. Raises :class:`VerificationError`."""
        self._check_conflict()
        self.vote_a.verify(validators, chain_id)
        self.vote_b.verify(validators, chain_id)

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb([self.vote_a.to_wire(), self.vote_b.to_wire()], use_bin_type=True)
        )

    @classmethod
    def decode(cls, data: bytes) -> DuplicateVoteEvidence:
        """Parse evidence bytes; raise :class:`ProtocolError` only (structure, not signatures:
        call :meth:`verify`)."""
        try:
            obj: Any = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack's exception family on garbage
            raise ProtocolError(f"evidence is not msgpack: {exc.__class__.__name__}") from exc
        if type(obj) is not list or len(obj) != 2:
            raise ProtocolError("evidence is not a pair of votes")
        try:
            ev = cls.create(vote_from_wire(obj[0]), vote_from_wire(obj[1]))
        except VerificationError as exc:
            raise ProtocolError(f"evidence votes do not conflict: {exc}") from exc
        if ev.encode() != data:
            raise ProtocolError("evidence is not in canonical encoding")
        return ev


class EvidencePool:
    """The evidence one node has seen, without duplicates, bounded by :data:`MAX_EVIDENCE`."""

    def __init__(self, *, limit: int = MAX_EVIDENCE) -> None:
        self._items: dict[DuplicateVoteEvidence, None] = {}
        self._limit = limit

    def add(self, evidence: DuplicateVoteEvidence) -> bool:
        """Keep ``evidence``; return ``True`` if it was new."""
        if evidence in self._items:
            return False
        self._items[evidence] = None
        while len(self._items) > self._limit:
            del self._items[next(iter(self._items))]
        return True

    @property
    def items(self) -> tuple[DuplicateVoteEvidence, ...]:
        """All kept evidence, oldest first."""
        return tuple(self._items)

    def culprits(self) -> frozenset[bytes]:
        """Public keys named by the kept evidence."""
        return frozenset(e.culprit for e in self._items)

    def __len__(self) -> int:
        return len(self._items)
