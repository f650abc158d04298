"""Under a flood of idle and slowloris connections to one node, a normal anchor and a proof
request to it succeed within 1 s, the cluster keeps committing, and the log grows by less than
1 MB (the security review's scenario, scaled to fit ``make test``; ``make fuzz`` runs
``tests/hostile/flood.py`` at the full 20,000 idle + 1,000 slowloris)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .flood import raise_nofile, run_flood

IDLE = 6000
SLOWLORIS = 500


@pytest.mark.slow
def test_a_flooded_node_keeps_serving_and_the_cluster_keeps_committing(tmp_path: Path) -> None:
    raise_nofile()
    figures = run_flood(tmp_path, idle=IDLE, slowloris=SLOWLORIS)
    print(figures.line())
    assert not figures.failures, figures.line() + "\n" + "\n".join(figures.failures)
    opened = sum(a["opened"] for a in figures.attackers)
    assert opened >= IDLE + SLOWLORIS  # the flood really was there
    assert figures.heights[1] > figures.heights[0]
    assert figures.log_growth < 1 << 20
