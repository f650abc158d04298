"""Blocks and BFT time (ledger.consensus.block): hashing, the median rule, monotonic time."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.consensus import Block, CommitCertificate, Ed25519Signer, ValidatorSet, Vote, VoteType
from ledger.consensus.block import BLOCK_HASH_DOMAIN, bft_time, expected_time, median_time
from ledger.errors import VerificationError
from ledger.merkle.hashing import EMPTY_ROOT

SIGNERS = [Ed25519Signer(seed=bytes([i + 1]) * 32) for i in range(7)]
VALIDATORS = ValidatorSet(keys=[s.public_key for s in SIGNERS])  # n = 7, f = 2, quorum 5


def cert_with_times(times: list[int]) -> CommitCertificate:
    return CommitCertificate.from_votes([
        Vote.create(SIGNERS[i], type=VoteType.PRECOMMIT, chain_id="c", height=1, round=0,
                    block_hash=b"\x11" * 32, timestamp=t)
        for i, t in enumerate(times)
    ])


def test_block_hash_is_domain_separated_and_covers_every_field() -> None:
    b = Block(height=2, prev_hash=b"\x01" * 32, time=7, proposer=SIGNERS[0].public_key,
              tree_size=1, tree_root=EMPTY_ROOT, digests=(b"\x02" * 32,))
    import hashlib
    assert b.hash == hashlib.sha256(BLOCK_HASH_DOMAIN + b.encode()).digest()
    for field, value in [("height", 3), ("prev_hash", b"\x03" * 32), ("time", 8),
                         ("tree_size", 2), ("digests", ())]:
        assert dataclasses.replace(b, **{field: value}).hash != b.hash


def test_median_time_is_the_lower_median() -> None:
    assert median_time([5, 1, 3]) == 3
    assert median_time([4, 1, 3, 2]) == 2
    with pytest.raises(VerificationError):
        median_time([])


@settings(max_examples=200, deadline=None)
@given(
    honest=st.lists(st.integers(1_000, 2_000), min_size=3, max_size=3),
    faulty=st.lists(st.integers(0, 10**12), min_size=2, max_size=2),
)
def test_bft_time_f_faulty_votes_cannot_leave_the_honest_range(
    honest: list[int], faulty: list[int]
) -> None:
    # n = 7, f = 2: a certificate of 2f + 1 = 5 precommits, 2 of them from liars.
    t = bft_time(cert_with_times(honest + faulty), prev_time=0)
    assert min(honest) <= t <= max(honest)


@settings(max_examples=100, deadline=None)
@given(times=st.lists(st.integers(0, 10**6), min_size=5, max_size=7),
       prev=st.integers(0, 2 * 10**6))
def test_bft_time_never_goes_backwards(times: list[int], prev: int) -> None:
    assert bft_time(cert_with_times(times), prev_time=prev) > prev


def test_expected_time_genesis_and_missing_commit() -> None:
    assert expected_time(height=1, last_commit=None, prev_block=None, genesis_time=42) == 42
    with pytest.raises(VerificationError):
        expected_time(height=2, last_commit=None, prev_block=None, genesis_time=0)
