"""Scenario 14 of the design brief: validator-set change (ledger.sim.reconfig).

Each run starts with 4 validators and a joining endpoint; the operator adds the joiner, removes
validator 0 and rotates validator 1's key, one change after the other, while the nemeses of the
search act. Every invariant must hold (agreement, validity including "no committed block
carries an invalid change", certificates checked against the set of their own height, no
double sign, liveness after GST, and the ``reconfig`` property: no honest core accepts a vote
of a removed or rotated-out key once the switch happened). A failure message starts with the
seed that replays it: ``run_one(config, seed)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from ledger.consensus import ConsensusCore, ValidatorSet, Vote
from ledger.consensus.messages import verify_signature
from ledger.errors import VerificationError
from ledger.sim import RunResult, SimConfig, run_one
from ledger.sim.reconfig import PLAN

FAULTS = frozenset({"drop", "duplicate", "delay", "partition", "crash", "skew"})
SEEDS = range(8)


def sweep(*, faults: frozenset[str], byzantine: Mapping[int, str] | None = None,
          seeds: range = SEEDS, gst_ms: int = 20_000) -> list[RunResult]:
    config = SimConfig(reconfig=True, faults=faults, byzantine=dict(byzantine or {}),
                       gst_ms=gst_ms)
    results = [run_one(config, seed) for seed in seeds]
    failures = [r.describe() for r in results if not r.ok]
    assert not failures, "\n".join(failures)
    for r in results:
        # The whole plan happened, in order, each change at least 2 heights after the last.
        assert len(r.set_changes) == len(PLAN), (r.seed, r.set_changes)
        assert all(b - a >= 2 for a, b in zip(r.set_changes, r.set_changes[1:], strict=False))
        # Stale votes were injected after the removal and after the rotation, and refused.
        assert r.stale_votes_refused > 0, r.seed
    return results


def test_add_remove_rotate_under_the_search_faults_keep_safety_and_liveness() -> None:
    results = sweep(faults=FAULTS)
    # The switches really happened under faults: some before GST, with crashes around them.
    assert sum(t < 20_000 for r in results for t in r.switch_times) >= 4
    assert sum(r.crashes for r in results) > 0


def test_under_signed_change_is_refused_by_honest_proposers() -> None:
    # The operator first offers the add with one approval short of the quorum; honest
    # proposers leave it out (and a committed one would be a validity violation).
    results = sweep(faults=frozenset({"drop", "delay"}), seeds=range(4))
    assert sum(r.under_signed_left_out for r in results) > 0


@pytest.mark.parametrize(("byzantine", "faults"), [
    ({3: "silent"}, frozenset({"drop", "delay"})),
    ({2: "double_vote"}, frozenset({"delay", "crash"})),
    # The validator that will be removed equivocates as proposer until it is out.
    ({0: "equivocate"}, frozenset({"partition", "delay"})),
    ({1: "twins"}, frozenset({"delay"})),
])
def test_set_change_with_a_byzantine_validator(byzantine: dict[int, str],
                                               faults: frozenset[str]) -> None:
    sweep(faults=faults, byzantine=byzantine, seeds=range(5))


def test_crashes_at_commit_points_and_torn_tails_across_the_switch() -> None:
    # Restarted nodes rebuild their validator history from their own stored blocks.
    results = sweep(faults=frozenset({"crash_commit", "torn", "delay"}), seeds=range(6))
    assert sum(r.crashes for r in results) > 0


def test_a_core_that_never_switches_its_set_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # Injected defect: the core checks everything against the genesis validators, as a core
    # without set changes would. It cannot verify the new set's certificates: liveness fails.
    def genesis_set(self: ConsensusCore, height: int) -> ValidatorSet:
        return self.history.epochs[0].validators

    monkeypatch.setattr(ConsensusCore, "validators_at", genesis_set)
    config = SimConfig(reconfig=True, faults=frozenset({"delay"}), liveness_bound_ms=20_000)
    assert not run_one(config, 0).ok


def test_a_core_that_accepts_votes_of_keys_out_of_the_set_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Injected defect: vote membership is not checked, only the signature. The removed
    # validator's and the rotated-out key's votes are then accepted after the switch.
    def signature_only(self: Vote, validators: ValidatorSet, chain_id: str) -> None:
        if self.chain_id != chain_id:
            raise VerificationError("wrong chain")
        verify_signature(self.validator, self.sign_bytes, self.signature)

    monkeypatch.setattr(Vote, "verify", signature_only)
    config = SimConfig(reconfig=True, faults=frozenset({"delay"}), check_liveness=False)
    props = {v.prop for seed in range(2) for v in run_one(config, seed).violations}
    assert "reconfig" in props
