"""Validator sets (ledger.consensus.validators): f, quorum, round-robin proposer, bad configs."""

from __future__ import annotations

import pytest

from ledger.consensus import ValidatorSet
from ledger.errors import ConfigError


def keys(n: int) -> list[bytes]:
    return [bytes([i + 1]) * 32 for i in range(n)]


@pytest.mark.parametrize("n,f,quorum", [(1, 0, 1), (4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)])
def test_quorums_intersect_in_more_than_f_validators(n: int, f: int, quorum: int) -> None:
    vs = ValidatorSet(keys=keys(n))
    assert (vs.f, vs.quorum, vs.weak_quorum) == (f, quorum, f + 1)
    assert 2 * vs.quorum - n > vs.f  # any two quorums share a correct validator


def test_proposer_is_round_robin_by_height_plus_round() -> None:
    vs = ValidatorSet(keys=keys(4))
    assert [vs.proposer(1, r) for r in range(5)] == [vs.keys[i % 4] for i in range(1, 6)]
    assert vs.proposer(2, 0) == vs.proposer(1, 1)


@pytest.mark.parametrize("bad", [[], [b"\x01" * 31], [b"\x01" * 32, b"\x01" * 32]],
                         ids=["empty", "short-key", "duplicate"])
def test_invalid_sets_raise_config_error(bad: list[bytes]) -> None:
    with pytest.raises(ConfigError):
        ValidatorSet(keys=bad)


def test_membership_and_index() -> None:
    vs = ValidatorSet(keys=keys(4))
    assert vs.keys[2] in vs and b"\x09" * 32 not in vs
    assert vs.index_of(vs.keys[3]) == 3 and vs.index_of(b"\x09" * 32) is None
