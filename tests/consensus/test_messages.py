"""Peer message codec and signatures (ledger.consensus.messages): canonical round trips, the
fuzz property "any bytes parse or raise ProtocolError", domain separation, certificates."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    CommitCertificate,
    Decision,
    Ed25519Signer,
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
    decode_message,
    encode_message,
    verify_certificate,
)
from ledger.consensus.messages import (
    MAX_MESSAGE_BYTES,
    SIGN_DOMAIN,
    decode_block,
    decode_certificate,
)
from ledger.errors import ProtocolError, VerificationError
from ledger.merkle.hashing import EMPTY_ROOT

CHAIN = "chain-a"
SIGNERS = [Ed25519Signer(seed=bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(keys=[s.public_key for s in SIGNERS])
BLOCK_HASH = b"\xab" * 32


def vote(i: int = 0, type: VoteType = VoteType.PRECOMMIT, chain: str = CHAIN,
         block_hash: bytes | None = BLOCK_HASH, round: int = 0) -> Vote:
    return Vote.create(SIGNERS[i], type=type, chain_id=chain, height=3, round=round,
                       block_hash=block_hash, timestamp=1_700_000_000_000 + i)


def block(digests: tuple[bytes, ...] = (b"\x01" * 32, b"\x02" * 32)) -> Block:
    cert = CommitCertificate.from_votes([vote(i) for i in range(3)])
    return Block(height=4, prev_hash=BLOCK_HASH, time=5, proposer=SIGNERS[0].public_key,
                 tree_size=9, tree_root=EMPTY_ROOT, digests=digests, last_commit=cert)


def proposal() -> Proposal:
    return Proposal.create(SIGNERS[0], chain_id=CHAIN, height=4, round=2, pol_round=1,
                           block=block())


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        vote(),
        vote(type=VoteType.PREVOTE, block_hash=None),
        proposal(),
        Decision(block=block(), certificate=CommitCertificate.from_votes(
            [Vote.create(s, type=VoteType.PRECOMMIT, chain_id=CHAIN, height=4, round=0,
                         block_hash=block().hash, timestamp=9) for s in SIGNERS[:3]])),
    ],
    ids=["precommit", "nil-prevote", "proposal", "decision"],
)
def test_every_message_kind_round_trips_byte_for_byte(msg: object) -> None:
    data = encode_message(msg)  # type: ignore[arg-type]
    back = decode_message(data)
    assert back == msg and encode_message(back) == data


def test_block_and_certificate_round_trip_as_stored() -> None:
    b = block()
    assert decode_block(b.encode()) == b
    assert b.last_commit is not None
    assert decode_certificate(b.last_commit.encode()) == b.last_commit


def test_non_canonical_encoding_is_rejected() -> None:
    # The same vote with its height packed as a 64-bit integer instead of a fixint.
    wire = vote().to_wire()
    packer = msgpack.Packer(use_bin_type=True)
    body = b"".join(
        b"\xcf" + (x).to_bytes(8, "big") if k == 3 else packer.pack(x) for k, x in enumerate(wire)
    )
    data = b"\x99" + body
    with pytest.raises(ProtocolError, match="canonical"):
        decode_message(data)
    with pytest.raises(ProtocolError):
        decode_message(vote().encode() + b"\x00")  # trailing bytes


def test_oversized_message_is_rejected_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.__setitem__(0, 2),  # wire version
        lambda w: w.__setitem__(3, 0),  # height 0
        lambda w: w.__setitem__(3, True),  # bool is not an int
        lambda w: w.__setitem__(4, -1),  # negative round
        lambda w: w.__setitem__(5, b"\x00" * 31),  # short hash
        lambda w: w.__setitem__(7, "k" * 32),  # str where bin belongs
        lambda w: w.__setitem__(8, b"\x00" * 63),  # short signature
        lambda w: w.append(0),  # extra field
        lambda w: w.__setitem__(2, ""),  # empty chain id
    ],
)
def test_schema_violations_raise_protocol_error(mutate: object) -> None:
    wire = vote().to_wire()
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(ProtocolError):
        decode_message(msgpack.packb(wire, use_bin_type=True))


def test_proposal_pol_round_must_be_below_round() -> None:
    wire = proposal().to_wire()
    wire[5] = wire[4]
    with pytest.raises(ProtocolError):
        decode_message(msgpack.packb(wire, use_bin_type=True))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_any_bytes_parse_or_raise_protocol_error_only(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ProtocolError:
        return
    assert encode_message(msg) == data


_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=70),
    st.text(max_size=10), st.floats(allow_nan=False),
)
_tree = st.recursive(
    _leaf,
    lambda c: st.lists(c, max_size=10) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_tree, st.lists(_tree, min_size=2, max_size=9).map(lambda t: [1, 2, *t])))
def test_fuzz_structured_msgpack_parses_or_raises_protocol_error_only(obj: object) -> None:
    # Well-formed msgpack of the wrong shape (some with a valid version/kind prefix).
    with contextlib.suppress(ProtocolError):
        decode_message(msgpack.packb(obj, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_fuzz_single_byte_flips_of_a_proposal_raise_protocol_error_or_fail_verify(
    pos: int, value: int
) -> None:
    data = bytearray(proposal().encode())
    pos %= len(data)
    if data[pos] == value:
        return
    data[pos] = value
    try:
        msg = decode_message(bytes(data))
    except ProtocolError:
        return
    with pytest.raises(VerificationError):
        msg.verify(VALIDATORS, CHAIN)


# --- signatures and domain separation -------------------------------------------------------


def test_signed_bytes_start_with_the_consensus_domain_and_verify() -> None:
    v = vote()
    assert v.sign_bytes.startswith(SIGN_DOMAIN)
    v.verify(VALIDATORS, CHAIN)
    proposal().verify(VALIDATORS, CHAIN)


def test_vote_signed_for_chain_a_does_not_verify_for_chain_b() -> None:
    v = vote(chain="chain-a")
    with pytest.raises(VerificationError):
        v.verify(VALIDATORS, "chain-b")
    # Relabelling the chain field does not help: the chain is inside the signed bytes.
    moved = dataclasses.replace(v, chain_id="chain-b")
    with pytest.raises(VerificationError, match="signature"):
        moved.verify(VALIDATORS, "chain-b")


def test_prevote_signature_is_not_a_precommit_signature() -> None:
    pv = vote(type=VoteType.PREVOTE)
    assert pv.sign_bytes != vote(type=VoteType.PRECOMMIT).sign_bytes
    as_precommit = dataclasses.replace(pv, type=VoteType.PRECOMMIT)
    with pytest.raises(VerificationError, match="signature"):
        as_precommit.verify(VALIDATORS, CHAIN)


@pytest.mark.parametrize("field,value", [("height", 4), ("round", 1), ("timestamp", 0),
                                         ("block_hash", None)])
def test_vote_signature_binds_height_round_time_and_value(field: str, value: object) -> None:
    with pytest.raises(VerificationError):
        dataclasses.replace(vote(), **{field: value}).verify(VALIDATORS, CHAIN)


def test_proposal_signature_binds_the_block_and_pol_round() -> None:
    p = proposal()
    with pytest.raises(VerificationError):
        dataclasses.replace(p, block=block(digests=())).verify(VALIDATORS, CHAIN)
    with pytest.raises(VerificationError):
        dataclasses.replace(p, pol_round=0).verify(VALIDATORS, CHAIN)


def test_unknown_validator_is_rejected() -> None:
    stranger = Ed25519Signer(seed=b"\x55" * 32)
    v = Vote.create(stranger, type=VoteType.PREVOTE, chain_id=CHAIN, height=1, round=0,
                    block_hash=None, timestamp=0)
    with pytest.raises(VerificationError, match="not a validator"):
        v.verify(VALIDATORS, CHAIN)


# --- certificates -----------------------------------------------------------------------------


def test_certificate_of_a_quorum_of_distinct_validators_verifies() -> None:
    cert = CommitCertificate.from_votes([vote(i) for i in (2, 0, 1)])
    cert.verify(VALIDATORS, CHAIN, BLOCK_HASH)
    verify_certificate(cert, block_hash=BLOCK_HASH, height=3, validators=VALIDATORS,
                       chain_id=CHAIN)
    assert [v.validator for v in cert.precommits] == sorted(v.validator for v in cert.precommits)


def test_certificate_with_one_validator_repeated_is_rejected() -> None:
    v0 = vote(0)
    forged = CommitCertificate(height=3, round=0, block_hash=BLOCK_HASH,
                               precommits=(v0, v0, vote(1)))
    with pytest.raises(VerificationError, match="repeats"):
        forged.verify(VALIDATORS, CHAIN, BLOCK_HASH)
    with pytest.raises(ProtocolError):
        decode_certificate(forged.encode())


def test_certificate_below_quorum_is_rejected() -> None:
    cert = CommitCertificate.from_votes([vote(0), vote(1)])
    with pytest.raises(VerificationError, match="quorum"):
        cert.verify(VALIDATORS, CHAIN, BLOCK_HASH)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: vote(2, type=VoteType.PREVOTE),
        lambda: vote(2, round=1),
        lambda: vote(2, block_hash=b"\xcd" * 32),
        lambda: vote(2, chain="chain-b"),
        lambda: dataclasses.replace(vote(2), signature=bytes(64)),
    ],
    ids=["prevote", "other-round", "other-block", "other-chain", "bad-signature"],
)
def test_certificate_with_one_foreign_or_forged_precommit_is_rejected(bad: object) -> None:
    cert = CommitCertificate(height=3, round=0, block_hash=BLOCK_HASH,
                             precommits=(vote(0), vote(1), bad()))  # type: ignore[operator]
    with pytest.raises(VerificationError):
        cert.verify(VALIDATORS, CHAIN, BLOCK_HASH)


def test_certificate_for_another_block_or_height_is_rejected() -> None:
    cert = CommitCertificate.from_votes([vote(i) for i in range(3)])
    with pytest.raises(VerificationError):
        cert.verify(VALIDATORS, CHAIN, b"\x00" * 32)
    with pytest.raises(VerificationError):
        verify_certificate(cert, block_hash=BLOCK_HASH, height=4, validators=VALIDATORS,
                           chain_id=CHAIN)


def test_from_votes_refuses_nil_and_mixed_votes() -> None:
    with pytest.raises(VerificationError):
        CommitCertificate.from_votes([vote(0, block_hash=None)])
    with pytest.raises(VerificationError):
        CommitCertificate.from_votes([vote(0), vote(1, round=1)])


def test_genesis_block_encodes_without_last_commit() -> None:
    b = Block(height=1, prev_hash=GENESIS_PREV_HASH, time=0, proposer=SIGNERS[0].public_key,
              tree_size=0, tree_root=EMPTY_ROOT, digests=())
    assert decode_block(b.encode()) == b
