"""`ledger simulate`: the JSON summary and the exit status are the CI contract of the simulator."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ledger.cli import main


def test_simulate_with_one_byzantine_exits_zero_with_a_clean_summary() -> None:
    result = CliRunner().invoke(main, ["simulate", "--nodes", "4", "--byzantine", "1",
                                       "--schedules", "4", "--seed", "11"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["schedules"] == 4
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0
    assert summary["first_failing_seed"] is None
    assert summary["commits"] > 0


def test_simulate_negative_control_exits_one_and_names_the_failing_seed() -> None:
    # 2 Byzantine of 4 exceed f = 1: the checker must find the fork and the CLI must fail.
    result = CliRunner().invoke(main, ["simulate", "--nodes", "4", "--byzantine", "2",
                                       "--schedules", "2", "--seed", "7"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["safety_violations"] >= 1
    assert summary["first_failing_seed"] == 7


def test_simulate_rejects_an_unknown_fault_with_exit_two() -> None:
    result = CliRunner().invoke(main, ["simulate", "--faults", "meteor", "--schedules", "1"])
    assert result.exit_code == 2
    assert "meteor" in result.output
