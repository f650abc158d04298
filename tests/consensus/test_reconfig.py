"""Validator-set changes as values (ledger.consensus.reconfig): encoding, approvals, the quorum,
the lead rule, rosters and the history of sets. The core and the simulator use them in
test_reconfig_core.py and test_sim_reconfig.py."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    ChangeOp,
    Ed25519Signer,
    ValidatorHistory,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSet,
    ValidatorSetChange,
    decode_change,
    validator_set_at,
)
from ledger.consensus.messages import SIGN_DOMAIN, decode_block
from ledger.consensus.reconfig import (
    CHANGE_SIGN_DOMAIN,
    MAX_CHANGE_LEAD,
    MAX_CHANGE_OPS,
    Approval,
    apply_ops,
)
from ledger.crypto import ValidatorKeys
from ledger.errors import ConfigError, ProtocolError, VerificationError
from ledger.merkle.hashing import EMPTY_ROOT

CHAIN = "reconfig-chain"
ORIGIN = "ledger.test/log"
KEYS = [ValidatorKeys(name=f"v{i}", origin=ORIGIN, seed=bytes([i + 1]) * 32) for i in range(7)]
INFOS = [ValidatorInfo.from_keys(k) for k in KEYS]
SIGNERS = [Ed25519Signer(seed=k.consensus_key.seed) for k in KEYS]
GENESIS = ValidatorRoster(members=INFOS[:4])


def add_v4(effective_height: int = 3, signers: range = range(3)) -> ValidatorSetChange:
    change = ValidatorSetChange.create(
        chain_id=CHAIN, effective_height=effective_height, prev=GENESIS,
        ops=[ChangeOp.add(INFOS[4])],
    )
    return change.signed(SIGNERS[i] for i in signers)


def block(height: int, changes: tuple[ValidatorSetChange, ...] = ()) -> Block:
    return Block(height=height, prev_hash=GENESIS_PREV_HASH, time=0,
                 proposer=SIGNERS[0].public_key, tree_size=0, tree_root=EMPTY_ROOT, digests=(),
                 changes=changes)


# --- encoding ---------------------------------------------------------------------------------


def test_change_round_trips_canonically_and_its_id_ignores_approvals() -> None:
    change = add_v4()
    assert decode_change(change.encode()) == change
    unsigned = dataclasses.replace(change, approvals=())
    assert unsigned.change_id == change.change_id
    assert unsigned.encode() != change.encode()


def test_block_without_changes_keeps_its_8_element_encoding() -> None:
    plain = block(1)
    assert len(msgpack.unpackb(plain.encode())) == 8
    with_change = block(1, (add_v4(),))
    assert len(msgpack.unpackb(with_change.encode())) == 9
    assert decode_block(with_change.encode()) == with_change
    assert with_change.hash != plain.hash
    # An empty 9th element would be a second encoding of the plain block.
    with pytest.raises(ProtocolError):
        decode_block(msgpack.packb([*plain.to_wire(), []], use_bin_type=True))


def test_noncanonical_or_oversized_change_bytes_are_protocol_errors() -> None:
    change = add_v4()
    wire = change.to_wire()
    wire[5] = list(reversed(wire[5]))  # approvals out of order
    with pytest.raises(ProtocolError):
        decode_change(msgpack.packb(wire, use_bin_type=True))
    with pytest.raises(ProtocolError):
        decode_change(change.encode() + b"\x00")
    with pytest.raises(ProtocolError):
        decode_change(bytes(70_000))
    too_many = ChangeOp.add(INFOS[4]).to_wire()
    wire = change.to_wire()
    wire[4] = [too_many] * (MAX_CHANGE_OPS + 1)
    with pytest.raises(ProtocolError):
        decode_change(msgpack.packb(wire, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_change_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_change(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_change_bytes_raise_only_protocol_error(data: st.DataObject) -> None:
    raw = bytearray(add_v4().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        decode_change(bytes(raw))


def test_approval_signs_domain_separated_bytes_binding_chain_height_and_set() -> None:
    change = add_v4()
    assert change.sign_bytes.startswith(CHANGE_SIGN_DOMAIN)
    assert not change.sign_bytes.startswith(SIGN_DOMAIN)
    for other in (
        dataclasses.replace(change, chain_id="other-chain"),
        dataclasses.replace(change, effective_height=4),
        dataclasses.replace(change, prev_set_hash=bytes(32)),
    ):
        assert other.sign_bytes != change.sign_bytes
        # The old approvals do not carry over to the altered change.
        with pytest.raises(VerificationError):
            other.verify(GENESIS, chain_id=other.chain_id)


# --- verification: quorum, lead rule, ops ---------------------------------------------------


def test_quorum_signed_change_yields_the_new_roster() -> None:
    new = add_v4().verify(GENESIS, chain_id=CHAIN, inclusion_height=1)
    assert new.members == (*INFOS[:4], INFOS[4])
    assert new.validator_set.n == 5 and new.validator_set.quorum == 4


@pytest.mark.parametrize("signers", [range(0), range(1), range(2)])
def test_unsigned_or_under_signed_change_is_refused(signers: range) -> None:
    with pytest.raises(VerificationError, match="approvals, quorum is 3"):
        add_v4(signers=signers).verify(GENESIS, chain_id=CHAIN)


def test_approval_by_outsider_or_with_bad_signature_is_refused() -> None:
    outsider = add_v4(signers=range(2)).approve(SIGNERS[5])
    with pytest.raises(VerificationError, match="outside the current set"):
        outsider.verify(GENESIS, chain_id=CHAIN)
    good = add_v4()
    bad = dataclasses.replace(good, approvals=(
        good.approvals[0], good.approvals[1],
        Approval(validator=good.approvals[2].validator, signature=bytes(64)),
    ))
    with pytest.raises(VerificationError, match="signature"):
        bad.verify(GENESIS, chain_id=CHAIN)
    # The new member cannot approve its own admission.
    with pytest.raises(VerificationError):
        add_v4(signers=range(2)).approve(SIGNERS[4]).verify(GENESIS, chain_id=CHAIN)


def test_change_of_another_set_or_chain_is_refused() -> None:
    other = ValidatorRoster(members=INFOS[1:5])
    with pytest.raises(VerificationError, match="another validator set"):
        add_v4().verify(other, chain_id=CHAIN)
    with pytest.raises(VerificationError, match="chain"):
        add_v4().verify(GENESIS, chain_id="elsewhere")


@pytest.mark.parametrize(("inclusion", "ok"), [(1, True), (2, False), (3, False), (0, True)])
def test_lead_rule_needs_two_heights_of_notice(inclusion: int, ok: bool) -> None:
    change = add_v4(effective_height=3)
    if ok:
        change.verify(GENESIS, chain_id=CHAIN, inclusion_height=inclusion)
    else:
        with pytest.raises(VerificationError, match="lead"):
            change.verify(GENESIS, chain_id=CHAIN, inclusion_height=inclusion)
    far = add_v4(effective_height=MAX_CHANGE_LEAD + 2)
    with pytest.raises(VerificationError, match="lead"):
        far.verify(GENESIS, chain_id=CHAIN, inclusion_height=1)


def test_ops_remove_and_rotate_keep_order_and_refuse_nonsense() -> None:
    removed = apply_ops(GENESIS, [ChangeOp.remove(INFOS[0].consensus_key)])
    assert removed.members == tuple(INFOS[1:4])
    rotated = apply_ops(GENESIS, [ChangeOp.rotate(INFOS[1].consensus_key, INFOS[5])])
    assert rotated.members == (INFOS[0], INFOS[5], INFOS[2], INFOS[3])
    assert rotated.hash != GENESIS.hash
    with pytest.raises(VerificationError, match="already in the set"):
        apply_ops(GENESIS, [ChangeOp.add(INFOS[0])])
    with pytest.raises(VerificationError, match="not in the set"):
        apply_ops(GENESIS, [ChangeOp.remove(INFOS[6].consensus_key)])
    with pytest.raises(VerificationError, match="invalid set"):
        apply_ops(GENESIS, [ChangeOp.remove(i.consensus_key) for i in INFOS[:4]])
    # A rotation that reuses another member's name or key yields an invalid set.
    clash = dataclasses.replace(INFOS[5], name="v0", cosigner_vkey=INFOS[0].cosigner_vkey)
    with pytest.raises(VerificationError, match="invalid set"):
        apply_ops(GENESIS, [ChangeOp.rotate(INFOS[1].consensus_key, clash)])


def test_roster_refuses_shared_keys_mixed_origins_and_bad_identities() -> None:
    with pytest.raises(ConfigError):
        ValidatorRoster(members=[INFOS[0], INFOS[0]])
    foreign = ValidatorInfo.from_keys(ValidatorKeys(name="x", origin="other/log", seed=b"x" * 32))
    with pytest.raises(ConfigError, match="origins"):
        ValidatorRoster(members=[INFOS[0], foreign])
    with pytest.raises(ConfigError):
        dataclasses.replace(INFOS[0], consensus_key=b"short")
    with pytest.raises(ConfigError):
        dataclasses.replace(INFOS[0], cosigner_vkey=INFOS[1].cosigner_vkey)  # named v1
    with pytest.raises(ConfigError):
        dataclasses.replace(INFOS[0], log_vkey=INFOS[0].cosigner_vkey)  # wrong type


def test_roster_policy_is_the_genesis_style_trust_policy() -> None:
    from ledger.genesis import Genesis, ValidatorInfo

    genesis = Genesis(chain_id=CHAIN, origin=ORIGIN, genesis_time=0,
                      validators=tuple(ValidatorInfo.from_keys(k) for k in KEYS[:4]))
    assert GENESIS.policy() == genesis.policy()
    assert GENESIS.origin == ORIGIN


# --- history -------------------------------------------------------------------------------------


def test_history_switches_sets_exactly_at_the_effective_height() -> None:
    history = ValidatorHistory.replay(GENESIS, [block(1, (add_v4(3),)), block(2)], chain_id=CHAIN)
    assert history.height == 2
    assert history.set_at(1) == history.set_at(2) == GENESIS.validator_set
    assert history.set_at(3).n == 5 and history.set_at(100).n == 5
    assert validator_set_at(3, GENESIS, [block(1, (add_v4(3),))], chain_id=CHAIN).n == 5
    assert validator_set_at(2, GENESIS, [block(1, (add_v4(3),))], chain_id=CHAIN).n == 4
    assert history.latest.included_at == 1 and history.latest.change == add_v4(3)


def test_history_refuses_a_second_change_while_one_is_pending() -> None:
    history = ValidatorHistory.genesis(GENESIS).apply(block(1, (add_v4(4),)), chain_id=CHAIN)
    new = history.latest.roster
    assert new is not None
    remove = ValidatorSetChange.create(
        chain_id=CHAIN, effective_height=6, prev=new, ops=[ChangeOp.remove(INFOS[0].consensus_key)]
    ).signed(SIGNERS[i] for i in range(4))
    with pytest.raises(VerificationError, match="pending"):
        history.apply(block(2, (remove,)), chain_id=CHAIN)
    history = history.apply(block(2), chain_id=CHAIN)
    with pytest.raises(VerificationError, match="pending"):
        history.apply(block(3, (remove,)), chain_id=CHAIN)
    history = history.apply(block(3), chain_id=CHAIN)
    after = history.apply(block(4, (remove,)), chain_id=CHAIN)
    assert after.set_at(5).n == 5 and after.set_at(6).n == 4


def test_history_checks_order_and_fixed_sets_refuse_changes() -> None:
    history = ValidatorHistory.genesis(GENESIS)
    with pytest.raises(VerificationError, match="applying block 2"):
        history.apply(block(2), chain_id=CHAIN)
    fixed = ValidatorHistory.fixed(ValidatorSet(keys=[s.public_key for s in SIGNERS[:4]]))
    with pytest.raises(VerificationError, match="fixed"):
        fixed.apply(block(1, (add_v4(),)), chain_id=CHAIN)
    with pytest.raises(VerificationError):
        history.apply(block(1, (add_v4(), add_v4())), chain_id=CHAIN)
    with pytest.raises(ConfigError):
        history.set_at(0)


def test_a_key_file_consensus_key_approves_like_an_ed25519_signer() -> None:
    # Operators approve with their key file's consensus key (an Ed25519Key is a Signer).
    unsigned = dataclasses.replace(add_v4(), approvals=())
    by_key_file = unsigned.signed(k.consensus_key for k in KEYS[:3])
    assert by_key_file == add_v4()
    by_key_file.verify(GENESIS, chain_id=CHAIN)
