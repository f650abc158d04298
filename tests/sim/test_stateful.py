"""Hypothesis drives the schedule: partitions, heals, crashes and restarts in any order.

The state machine builds one simulated cluster of n = 4 (f = 1, one Byzantine validator whose
behaviour Hypothesis picks) and lets Hypothesis choose the nemesis step by step, advancing virtual
time between steps. Safety invariants are checked after every step; at teardown the network is
stabilised, everyone restarts, and liveness must follow (GST).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ledger.sim import SimConfig, build_world
from ledger.sim.nemesis import stabilise
from ledger.sim.network import LinkFaults
from ledger.sim.store import CRASH_POINTS, CrashPlan
from ledger.sim.world import World

BEHAVIOURS = ("equivocate", "silent", "replay", "forge", "fuzz", "twins")


class ScheduleMachine(RuleBasedStateMachine):
    world: World

    @initialize(seed=st.integers(0, 2**32), byz=st.sampled_from(BEHAVIOURS),
                who=st.integers(0, 3))
    def build(self, seed: int, byz: str, who: int) -> None:
        self.world = build_world(SimConfig(byzantine={who: byz}), seed)
        for node in self.world.nodes.values():
            node.boot()
        self.world.client.start()

    def _honest(self) -> list[int]:
        return sorted(e for e, n in self.world.nodes.items() if n.honest)

    @rule(ms=st.integers(1, 3000))
    def advance(self, ms: int) -> None:
        s = self.world.sched
        s.run(until=s.now + ms, max_events=50_000)

    @rule(cut=st.integers(1, 3), order=st.permutations(range(4)))
    def partition(self, cut: int, order: list[int]) -> None:
        eps = sorted(self.world.nodes)
        ordered = [eps[i] for i in order] + eps[4:]
        self.world.net.partition([set(ordered[:cut]), set(ordered[cut:])])

    @rule()
    def heal(self) -> None:
        self.world.net.heal()

    @rule(drop=st.floats(0, 0.4), dup=st.floats(0, 0.3), delay=st.integers(1, 1000))
    def weather(self, drop: float, dup: float, delay: int) -> None:
        self.world.net.faults = LinkFaults(drop=drop, duplicate=dup, max_delay_ms=delay)

    @rule(i=st.integers(0, 2))
    def crash(self, i: int) -> None:
        node = self.world.nodes[self._honest()[i]]
        if node.alive:
            node.crash()

    @rule(i=st.integers(0, 2), point=st.sampled_from(CRASH_POINTS), skip=st.integers(0, 2))
    def arm(self, i: int, point: str, skip: int) -> None:
        node = self.world.nodes[self._honest()[i]]
        node.arm(CrashPlan(point=point, skip=skip, down_ms=200))

    @rule(i=st.integers(0, 2))
    def restart(self, i: int) -> None:
        self.world.nodes[self._honest()[i]].restart()

    @invariant()
    def safe(self) -> None:
        if hasattr(self, "world"):
            bad = self.world.checker.safety_violations
            assert not bad, (self.world.seed, bad)

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        w = self.world
        gst = w.sched.now
        stabilise(w)
        w.sched.run(until=gst + 60_000, max_events=200_000,
                    stop=lambda: w.checker.liveness_target_met(gst=gst, k=2, now=w.sched.now))
        w.checker.check_liveness(gst=gst, k=2, bound=w.sched.now - gst)
        assert not w.checker.violations, (w.seed, w.checker.violations)


ScheduleMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None, derandomize=True,
)
TestScheduleMachine = ScheduleMachine.TestCase
