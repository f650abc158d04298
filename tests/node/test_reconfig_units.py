"""The change pool and validator sets by height (ledger/replica/validators.py) and the admin
body parser (ledger/node/admin_api.py), no I/O."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.consensus.block import GENESIS_PREV_HASH, Block
from ledger.consensus.reconfig import ChangeOp, ValidatorInfo, ValidatorRoster, ValidatorSetChange
from ledger.crypto import ValidatorKeys
from ledger.errors import MalformedError, VerificationError
from ledger.node.admin_api import parse_change_body
from ledger.replica.validators import ChangePool, NodeValidators

ORIGIN = "ledger.test/units"
KEYS = [ValidatorKeys.generate(name=f"v{i}", origin=ORIGIN) for i in range(4)]
ROSTER = ValidatorRoster(members=[ValidatorInfo.from_keys(k) for k in KEYS])


def _change(effective: int, *, signers: int = 3) -> ValidatorSetChange:
    new = ValidatorKeys.generate(name="v1", origin=ORIGIN)
    return ValidatorSetChange.create(
        chain_id="units", effective_height=effective, prev=ROSTER,
        ops=[ChangeOp.rotate(KEYS[1].consensus_key.public_key, ValidatorInfo.from_keys(new))],
    ).signed(k.consensus_key for k in KEYS[:signers])


def _block(height: int, changes: tuple[ValidatorSetChange, ...] = ()) -> Block:
    return Block(height=height, prev_hash=GENESIS_PREV_HASH, time=0,
                 proposer=KEYS[0].consensus_key.public_key, tree_size=0, tree_root=bytes(32),
                 digests=(), last_commit=None, changes=changes)


def test_pool_dedups_offers_by_lead_and_drops_carried_expired_and_stale() -> None:
    pool = ChangePool(capacity=2)
    a, b = _change(10), _change(20)
    assert pool.add(a) and not pool.add(a) and pool.add(b)
    with pytest.raises(VerificationError):
        pool.add(_change(30))  # full
    assert pool.candidate(8) is a  # lead 2
    assert pool.candidate(9) is b  # a's lead is 1: not offered
    pool.on_commit(_block(3, (a,)), latest=ROSTER)
    assert a.change_id not in pool and b.change_id in pool
    pool.on_commit(_block(18), latest=ROSTER)  # 18 >= 20 - 2: b can no longer be carried
    assert len(pool) == 0
    pool.add(a)
    other = ValidatorRoster(members=ROSTER.members[:3])
    pool.on_commit(_block(1), latest=other)  # the newest set is no longer the one a modifies
    assert len(pool) == 0


def test_check_change_needs_quorum_and_lead() -> None:
    state = NodeValidators(chain_id="units", genesis=ROSTER, keys=KEYS[:1])
    state.check_change(_change(10), next_height=8)
    with pytest.raises(VerificationError):
        state.check_change(_change(10, signers=2), next_height=1)  # 2 of 4 is no quorum
    with pytest.raises(VerificationError):
        state.check_change(_change(10), next_height=9)  # too close: void


def test_admin_body_round_trip() -> None:
    change = _change(10)
    body = json.dumps({"change": base64.b64encode(change.encode()).decode()}).encode()
    assert parse_change_body(body) == change


@given(st.binary(max_size=300) | st.text(max_size=100).map(
    lambda t: json.dumps({"change": t}).encode()))
def test_admin_body_garbage_raises_malformed_only(data: bytes) -> None:
    with contextlib.suppress(MalformedError):  # anything else fails the test
        parse_change_body(data)
