"""Equivocation evidence (ledger.consensus.evidence): built from two conflicting signed votes,
verifiable on its own, canonical, kept once."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.consensus import (
    DuplicateVoteEvidence,
    Ed25519Signer,
    EvidencePool,
    ValidatorSet,
    Vote,
    VoteType,
)
from ledger.errors import ProtocolError, VerificationError

SIGNERS = [Ed25519Signer(seed=bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(keys=[s.public_key for s in SIGNERS])


def vote(i: int, block_hash: bytes | None, *, round: int = 0,
         type: VoteType = VoteType.PREVOTE, chain: str = "c") -> Vote:
    return Vote.create(SIGNERS[i], type=type, chain_id=chain, height=5, round=round,
                       block_hash=block_hash, timestamp=1)


def test_conflicting_votes_make_verifiable_evidence_naming_the_culprit() -> None:
    ev = DuplicateVoteEvidence.create(vote(2, b"\x01" * 32), vote(2, None))
    ev.verify(VALIDATORS, "c")
    assert ev.culprit == SIGNERS[2].public_key and ev.height == 5


def test_evidence_is_canonical_whatever_the_order() -> None:
    a, b = vote(1, b"\x01" * 32), vote(1, b"\x02" * 32)
    assert DuplicateVoteEvidence.create(a, b) == DuplicateVoteEvidence.create(b, a)
    pool = EvidencePool()
    assert pool.add(DuplicateVoteEvidence.create(a, b))
    assert not pool.add(DuplicateVoteEvidence.create(b, a))
    assert len(pool) == 1 and pool.culprits() == {SIGNERS[1].public_key}


@pytest.mark.parametrize(
    "a,b",
    [
        (lambda: vote(1, b"\x01" * 32), lambda: vote(2, None)),  # two validators
        (lambda: vote(1, b"\x01" * 32), lambda: vote(1, None, round=1)),  # two rounds
        (lambda: vote(1, b"\x01" * 32), lambda: vote(1, None, type=VoteType.PRECOMMIT)),
        (lambda: vote(1, None), lambda: dataclasses.replace(vote(1, None), timestamp=2)),
    ],
    ids=["validators", "rounds", "types", "same-value"],
)
def test_non_conflicting_pairs_are_not_evidence(a: object, b: object) -> None:
    with pytest.raises(VerificationError):
        DuplicateVoteEvidence.create(a(), b())  # type: ignore[operator]


def test_evidence_with_a_forged_vote_does_not_verify() -> None:
    forged = dataclasses.replace(vote(3, None), signature=bytes(64))
    ev = DuplicateVoteEvidence.create(vote(3, b"\x01" * 32), forged)
    with pytest.raises(VerificationError):
        ev.verify(VALIDATORS, "c")
    with pytest.raises(VerificationError):
        DuplicateVoteEvidence.create(vote(3, b"\x01" * 32), vote(3, None)).verify(
            VALIDATORS, "other-chain"
        )


def test_evidence_round_trips_and_garbage_raises_protocol_error() -> None:
    ev = DuplicateVoteEvidence.create(vote(0, b"\x01" * 32), vote(0, None))
    assert DuplicateVoteEvidence.decode(ev.encode()) == ev
    with pytest.raises(ProtocolError):
        DuplicateVoteEvidence.decode(b"\x92\x01\x02")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_evidence_decode_raises_protocol_error_only(data: bytes) -> None:
    # Parses, or raises ProtocolError; any other exception fails the test.
    with contextlib.suppress(ProtocolError):
        DuplicateVoteEvidence.decode(data)


def test_pool_is_bounded_oldest_first() -> None:
    pool = EvidencePool(limit=2)
    evs = [DuplicateVoteEvidence.create(vote(0, bytes([k]) * 32, round=k), vote(0, None, round=k))
           for k in range(3)]
    for e in evs:
        pool.add(e)
    assert pool.items == (evs[1], evs[2])
