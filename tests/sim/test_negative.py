"""The checker can fail: negative controls and a deliberately broken core (acceptance of issue 3).

Scenario 16 of the design brief: with 2 Byzantine validators of 4 (more than f = 1) colluding as
partitioned twins, the checker must find the fork, and the evidence must name at least two
culprits and never an honest validator. And the crash-restart scenario must catch a core built
with ``unsafe_skip_lock_persist=True`` (the lock is not persisted before a precommit).
"""

from __future__ import annotations

import json

from ledger.sim import SimConfig, run_one, run_simulations

AMNESIA = SimConfig(faults=frozenset({"amnesia"}), check_liveness=False, gst_ms=3_000,
                    liveness_bound_ms=6_000)


def test_two_byzantine_of_four_fork_is_found_and_culprits_are_exactly_byzantine() -> None:
    summary = run_simulations(nodes=4, byzantine=2, schedules=4, seed=100, faults=None,
                              heights=2)
    assert summary.safety_violations == summary.schedules == 4
    assert summary.first_failing_seed == 100
    assert not summary.ok
    for seed in range(100, 104):
        from ledger.sim import schedule_config

        config = schedule_config(seed=seed, nodes=4, byzantine=2, faults=None, heights=2)
        result = run_one(config, seed)
        assert any(v.prop == "agreement" for v in result.safety_violations)
        assert len(result.culprits) >= 2
        assert result.culprits <= result.byzantine  # no honest validator is ever named


def test_summary_json_has_the_cli_fields() -> None:
    summary = run_simulations(nodes=4, byzantine=2, schedules=1, seed=7, faults=None, heights=2)
    data = json.loads(summary.to_json())
    assert {"schedules", "commits", "safety_violations", "liveness_failures",
            "first_failing_seed", "evidence"} <= set(data)
    assert data["first_failing_seed"] == 7
    assert len(data["evidence"]["culprits"]) >= 2


def test_crash_restart_catches_core_that_skips_lock_persist() -> None:
    # Every seed of the amnesia scenario exposes the defect deterministically.
    broken = SimConfig(**{**AMNESIA.__dict__, "unsafe_skip_lock_persist": True})
    for seed in range(3):
        result = run_one(broken, seed)
        assert any(v.prop == "agreement" for v in result.safety_violations), seed


def test_same_amnesia_scenario_is_safe_with_the_real_core() -> None:
    for seed in range(3):
        result = run_one(AMNESIA, seed)
        assert result.crashes >= 3
        assert not result.safety_violations, result.describe()


def test_random_crash_search_finds_the_skipped_lock_persist_within_a_bound() -> None:
    # Without the targeted scenario: a bounded random search over crash-heavy schedules.
    hits = [
        seed for seed in range(40)
        if run_one(SimConfig(faults=frozenset({"amnesia", "crash"}),
                             unsafe_skip_lock_persist=True, check_liveness=False,
                             gst_ms=3_000, liveness_bound_ms=6_000), seed).safety_violations
    ][:1]
    assert hits, "no schedule of 40 exposed the defect"
