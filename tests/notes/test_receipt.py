"""Receipts (c2sp.org/tlog-proof@v1): codec, verification, every tampering, the time bound."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import MalformedError, VerificationError
from ledger.policy import parse_policy
from ledger.receipt import (
    RECEIPT_HEADER,
    Receipt,
    build_receipt,
    parse_receipt,
    time_bound,
    verify_receipt,
)

from .ground import BASE_TIME, ORIGIN, make_ground, validator
from .tampering import INDEX, TAMPERINGS

GROUND = make_ground()
ZERO_HASH_LINE = base64.b64encode(bytes(32)).decode() + "\n"
RECEIPT = GROUND.log.prove(GROUND.digests[INDEX])
DIGEST = GROUND.digests[INDEX]


def test_valid_receipt_verifies() -> None:
    result = verify_receipt(RECEIPT, GROUND.policy, DIGEST)
    assert (result.index, result.size, result.origin) == (INDEX, 11, ORIGIN)
    assert result.cosigners == tuple(f"v{i}.example.org" for i in range(1, 5))
    # Timestamps BASE_TIME + 0..3, f = 1: the second smallest.
    assert result.time_bound == BASE_TIME + 1


def test_every_leaf_of_the_tree_verifies() -> None:
    for i, d in enumerate(GROUND.digests):
        assert verify_receipt(GROUND.log.prove(d), GROUND.policy, d).index == i


def test_receipt_round_trip_keeps_the_checkpoint_verbatim() -> None:
    parsed = parse_receipt(RECEIPT)
    assert parsed.format() == RECEIPT
    assert RECEIPT.endswith(parsed.checkpoint)
    with_extra = build_receipt(
        index=parsed.index, proof=parsed.proof, checkpoint_note=parsed.checkpoint, extra=b"ctx"
    )
    assert with_extra.split("\n")[1] == "extra " + base64.b64encode(b"ctx").decode()
    assert parse_receipt(with_extra).extra == b"ctx"
    # Extra data is unauthenticated and does not change the verdict.
    verify_receipt(with_extra, GROUND.policy, DIGEST)


@pytest.mark.parametrize(("tamper", "reason"), TAMPERINGS, ids=lambda x: getattr(x, "__name__", ""))
def test_tampered_receipt_is_rejected_with_a_reason(
    tamper: Callable[[str], str], reason: str
) -> None:
    forged = tamper(RECEIPT)
    assert forged != RECEIPT
    with pytest.raises(VerificationError, match=reason) as info:
        verify_receipt(forged, GROUND.policy, DIGEST)
    assert "\n" not in info.value.diagnostics()


def test_other_document_is_rejected() -> None:
    with pytest.raises(VerificationError, match="not in the checkpointed tree"):
        verify_receipt(RECEIPT, GROUND.policy, hashlib.sha256(b"forged").digest())


def test_quorum_short_by_one_is_rejected() -> None:
    short = make_ground(cosigners=[0, 1])  # 2 of 4, threshold 3
    receipt = short.log.prove(short.digests[0])
    with pytest.raises(VerificationError, match="2 of 4 members witnessed, 3 required"):
        verify_receipt(receipt, short.policy, short.digests[0])
    exact = make_ground(cosigners=[0, 1, 3])
    verify_receipt(exact.log.prove(exact.digests[0]), exact.policy, exact.digests[0])


def test_receipt_under_another_policy_is_rejected() -> None:
    other = make_ground()  # same keys: a policy of different validators must not accept it
    from ledger.prover import trust_policy

    strangers = parse_policy(trust_policy([validator(i, tag="x") for i in range(1, 5)]))
    with pytest.raises(VerificationError):
        verify_receipt(RECEIPT, strangers, DIGEST)
    verify_receipt(RECEIPT, other.policy, DIGEST)


def test_byzantine_timestamps_cannot_move_the_bound_past_honest_ones() -> None:
    # One liar (f = 1) claims time 0 or the far future; the bound stays within honest times.
    for lie in (0, 2**62):
        stamps = [lie, BASE_TIME + 10, BASE_TIME + 20, BASE_TIME + 30]
        g = make_ground(timestamps=stamps)
        bound = verify_receipt(g.log.prove(g.digests[0]), g.policy, g.digests[0]).time_bound
        assert BASE_TIME + 10 <= bound <= BASE_TIME + 30


def test_time_bound_is_the_f_plus_first_smallest() -> None:
    assert time_bound([30, 10, 20], 0) == 10
    assert time_bound([30, 10, 20], 1) == 20
    assert time_bound([30, 10, 20], 2) == 30
    with pytest.raises(VerificationError):
        time_bound([30, 10, 20], 3)


def test_policy_without_cosigners_cannot_bound_time() -> None:
    text = GROUND.policy_text.replace("quorum validators", "quorum none")
    with pytest.raises(VerificationError, match="no time"):
        verify_receipt(RECEIPT, parse_policy(text), DIGEST)


def test_digest_of_wrong_size_is_malformed() -> None:
    with pytest.raises(MalformedError):
        verify_receipt(RECEIPT, GROUND.policy, DIGEST[:31])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: r.replace(RECEIPT_HEADER, "c2sp.org/tlog-proof@v2"),
        lambda r: r.replace("index 5", "index 05"),
        lambda r: r.replace("index 5", "index -5"),
        lambda r: r.replace("index 5", "idx 5"),
        lambda r: r.replace("index 5\n", "index 5\nextra AAAA\n"),
        lambda r: r.replace("index 5\n", "index 5\nnot base64!\n"),
        lambda r: r.replace("index 5\n", "index 5\n" + base64.b64encode(bytes(31)).decode() + "\n"),
        lambda r: r.split("\n\n")[0],
        lambda r: r.replace("\n\n", "\n", 1),
        lambda r: r[: r.index("\u2014")],
        lambda r: r.encode("utf-8")[:-3] + b"\xff\n",
        lambda r: r.replace(
            "index 5\n", "index 5\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 65
        ),
    ],
)
def test_malformed_receipts_raise_malformed_error(mangle: Callable[[str], str | bytes]) -> None:
    with pytest.raises(MalformedError):
        verify_receipt(mangle(RECEIPT), GROUND.policy, DIGEST)


@settings(max_examples=100, deadline=None)
@given(
    index=st.integers(0, 2**64 - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=64),
    extra=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_receipt_round_trip(index: int, proof: list[bytes], extra: bytes | None) -> None:
    checkpoint = parse_receipt(RECEIPT).checkpoint
    r = Receipt(index=index, proof=tuple(proof), checkpoint=checkpoint, extra=extra)
    assert parse_receipt(r.format()) == r


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_receipt_parser_raises_only_malformed_error(data: bytes | str) -> None:
    with contextlib.suppress(MalformedError):
        parse_receipt(data)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, len(RECEIPT.encode()) - 1), value=st.integers(0, 255))
def test_one_byte_change_never_proves_anything_else(position: int, value: int) -> None:
    # Change one byte anywhere. Either our error is raised, or the receipt still proves the
    # same leaf at the same tree head: a byte in one validator's name makes its line unknown,
    # and the other three still meet the 3-of-4 quorum.
    raw = bytearray(RECEIPT.encode())
    raw[position] = value
    original = verify_receipt(RECEIPT, GROUND.policy, DIGEST)
    try:
        result = verify_receipt(bytes(raw), GROUND.policy, DIGEST)
    except (MalformedError, VerificationError):
        return
    same = (result.index, result.size, result.origin, result.root)
    assert same == (original.index, original.size, original.origin, original.root)
    assert set(result.cosigners) <= set(original.cosigners)
    assert len(result.cosigners) >= 3
