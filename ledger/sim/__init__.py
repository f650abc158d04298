"""The deterministic consensus simulator: n real cores, one seeded scheduler, a virtual clock, a
faulty network, crashing disks, Byzantine wrappers and the invariant checkers.

Run one schedule with :func:`run_one`, many with :func:`run_simulations` (``ledger simulate``).
"""

from __future__ import annotations

from ledger.sim.runner import (
    RunResult,
    SimSummary,
    build_world,
    run_one,
    run_simulations,
    schedule_config,
)
from ledger.sim.world import SimConfig

__all__ = [
    "RunResult",
    "SimConfig",
    "SimSummary",
    "build_world",
    "run_one",
    "run_simulations",
    "schedule_config",
]
