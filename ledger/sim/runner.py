"""Running simulations: one replayable run, and the random search the CLI drives.

:func:`run_one` is a pure function of ``(config, seed)``: it returns a :class:`RunResult` whose
``trace_hash`` is the SHA-256 of the whole event log, so replaying a failing seed can be checked
byte for byte. :func:`run_simulations` is the catch-all search behind ``ledger simulate``:
schedule ``i`` runs with seed ``seed + i`` and a config drawn by :func:`schedule_config` from
that seed alone, so ``--seed <first_failing_seed> --schedules 1`` with the same other options
replays the first failure exactly.
"""

from __future__ import annotations

import json
import multiprocessing
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ledger.crypto import ValidatorKeys
from ledger.sim import nemesis, reconfig
from ledger.sim.byzantine import BEHAVIOURS, Twin
from ledger.sim.checkers import Violation
from ledger.sim.node import SimNode
from ledger.sim.world import SimConfig, World, validator_keys


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The outcome of one run."""

    seed: int
    config: SimConfig
    trace_hash: str
    violations: tuple[Violation, ...]
    heights: int
    culprits: frozenset[int]
    byzantine: frozenset[int]
    events: int
    end_ms: int
    crashes: int
    invalid_messages: int
    equivocations: int
    proposal_equivocations: int
    torn_tails: int
    #: Spread of honest heights at GST: how far behind the slowest honest node was.
    lagging: int
    #: Scenario 14: effective heights of the set changes that committed (plan order), stale
    #: votes (removed / rotated-out keys) injected and refused, under-signed changes that
    #: honest proposers left out, and changes re-signed after missing their window.
    set_changes: tuple[int, ...] = ()
    stale_votes_refused: int = 0
    under_signed_left_out: int = 0
    changes_resigned: int = 0
    switch_times: tuple[int, ...] = ()
    #: Digests whose receipts an honest replica handed a client (each checked at the end).
    acknowledged: int = 0

    @property
    def safety_violations(self) -> tuple[Violation, ...]:
        """Agreement, validity, certificate or double-sign violations."""
        return tuple(v for v in self.violations if v.is_safety)

    @property
    def liveness_failures(self) -> tuple[Violation, ...]:
        """Liveness violations."""
        return tuple(v for v in self.violations if not v.is_safety)

    @property
    def ok(self) -> bool:
        """No property failed."""
        return not self.violations

    def describe(self) -> str:
        """One line per violation, prefixed with the seed that replays it."""
        return "\n".join(f"seed={self.seed} {v.prop}@{v.time}ms: {v.detail}"
                         for v in self.violations)


def build_world(config: SimConfig, seed: int) -> World:
    """A cluster of ``config.nodes`` validators (plus one twin endpoint per ``twins``)."""
    world = World(config=config, seed=seed)
    nodes: list[SimNode] = []
    twins: list[int] = []
    rotated = validator_keys(seed, reconfig.ROTATED, generation=1)
    for v in range(config.nodes):
        behaviour = config.byzantine.get(v)
        if behaviour is None:
            cls: type[SimNode] = SimNode
        elif behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        else:
            cls = BEHAVIOURS[behaviour]
        if cls is Twin:
            twins.append(v)
        nodes.append(cls(world=world, endpoint=v, validator=v, keys=_keys(world, v, rotated)))
    for i, v in enumerate(twins):
        nodes.append(Twin(world=world, endpoint=config.nodes + i, validator=v,
                          keys=_keys(world, v, rotated)))
    if config.reconfig:
        # Scenario 14: the joiner follows the chain until the operator's ADD takes effect;
        # validator ROTATED's endpoints also hold the key it rotates to.
        joiner = config.nodes
        world.key_index[rotated.consensus_key.public_key] = reconfig.ROTATED
        nodes.append(SimNode(world=world, endpoint=len(nodes), validator=joiner,
                             keys=(world.keys[joiner],)))
        world.operator = reconfig.Operator(world=world, joiner=world.keys[joiner],
                                           rotated=rotated)
    world.attach(nodes)
    return world


def _keys(world: World, v: int, rotated: ValidatorKeys) -> tuple[ValidatorKeys, ...]:
    if world.config.reconfig and v == reconfig.ROTATED:
        return (world.keys[v], rotated)
    return (world.keys[v],)


def run_one(config: SimConfig, seed: int) -> RunResult:
    """Run one schedule to its end and check every invariant; never raises for a violation."""
    world = build_world(config, seed)
    sched, checker = world.sched, world.checker
    nemesis.install(world)
    for ep in sorted(world.nodes):
        node = world.nodes[ep]
        sched.schedule(sched.rng.randint(0, 50), ("boot", ep), node.boot)
    world.client.start()
    if world.operator is not None:
        operator = world.operator
        sched.schedule(60, ("operator",), operator.tick)  # the first offer, before any commit
    gst, k = config.gst_ms, config.heights
    deadline = gst + config.liveness_bound_ms
    exhausted = False
    while sched.now < deadline:
        budget = config.max_events - sched.events_run
        if budget <= 0:
            exhausted = True
            break
        sched.run(until=min(sched.now + 250, deadline), max_events=budget)
        if checker.liveness_target_met(gst=gst, k=k, now=sched.now) and (
            world.operator is None or world.operator.done
        ):
            break
        if not sched.pending():
            break
    met = checker.liveness_target_met(gst=gst, k=k, now=sched.now)
    _drain(world, until=sched.now + DRAIN_MS)
    if config.check_liveness:
        if exhausted and not met:
            checker.violations.append(Violation(
                prop="liveness", time=sched.now,
                detail=f"event budget of {config.max_events} exhausted"))
        elif not exhausted:
            checker.check_liveness(gst=gst, k=k, bound=config.liveness_bound_ms)
        if world.operator is not None and not world.operator.done:
            checker.violations.append(Violation(
                prop="liveness", time=sched.now,
                detail=f"set changes did not complete: {world.operator.effective}"))
        if met:
            world.client.check()
    return _result(world, seed)


#: After the run: no new anchors for this long (virtual ms), so that every honest replica
#: commits what was acknowledged before the end-of-run anchor check.
DRAIN_MS = 3_000


def _drain(world: World, *, until: int) -> None:
    world.client.stopped = True
    budget = max(0, world.config.max_events - world.sched.events_run) + 50_000
    world.sched.run(until=until, max_events=budget)


def _result(world: World, seed: int) -> RunResult:
    config, sched, checker = world.config, world.sched, world.checker
    culprits = world.culprits()
    invalid = equivocations = crashes = proposal_eq = torn = 0
    for node in world.nodes.values():
        node.harvest()
        invalid += node.stats_invalid
        equivocations += node.stats_equivocations
        proposal_eq += node.stats_proposal_equivocations
        crashes += node.crashes
        torn += node.store.lost_writes
    at_gst = [checker.height_at(e, config.gst_ms) for e in checker.honest]
    op = world.operator
    under_signed = sum(n for node in world.nodes.values() if node.honest
                       for r, n in node.changes_left_out.items() if "quorum is" in r)
    return RunResult(
        seed=seed, config=config, trace_hash=sched.trace_hash(),
        violations=tuple(checker.violations), heights=checker.total_commits(),
        culprits=culprits,
        byzantine=frozenset(n.validator for n in world.nodes.values() if not n.honest),
        events=sched.events_run, end_ms=sched.now, crashes=crashes,
        invalid_messages=invalid, equivocations=equivocations,
        proposal_equivocations=proposal_eq, torn_tails=torn,
        lagging=max(at_gst, default=0) - min(at_gst, default=0),
        set_changes=() if op is None else tuple(op.effective),
        stale_votes_refused=0 if op is None else op.injected,
        under_signed_left_out=under_signed + (0 if op is None else op.weak_refused),
        changes_resigned=0 if op is None else op.resigned,
        switch_times=() if op is None else tuple(op.switch_times),
        acknowledged=len(world.client.acknowledged),
    )


#: Behaviours the random search draws from when ``byzantine <= f``.
SEARCH_BEHAVIOURS = ("equivocate", "double_vote", "invalid", "silent", "replay", "forge",
                     "fuzz", "twins")
#: Faults the random search draws from (``isolate`` and ``fork`` are scenario-specific).
SEARCH_FAULTS = ("drop", "duplicate", "delay", "partition", "crash", "crash_commit", "torn",
                 "skew")


def schedule_config(
    *, seed: int, nodes: int, byzantine: int, faults: Sequence[str] | None, heights: int,
) -> SimConfig:
    """The config of one search schedule, a pure function of its arguments.

    With ``byzantine <= f`` each Byzantine validator draws a behaviour and each fault is on with
    probability 1/2 (from ``faults``, or all of :data:`SEARCH_FAULTS` and
    :data:`SEARCH_BEHAVIOURS`: names in ``faults`` that are behaviours restrict the behaviours).
    With ``byzantine > f`` (the negative control) the Byzantine validators run as partitioned
    twins, a collusion that must produce a fork. Raises ``ValueError`` for an unknown name.
    """
    rng = random.Random(seed * 7919 + 1)
    f = (nodes - 1) // 3
    names = list(faults) if faults is not None else [*SEARCH_FAULTS, *SEARCH_BEHAVIOURS]
    unknown = [n for n in names if n not in nemesis.FAULTS and n not in BEHAVIOURS]
    if unknown:
        raise ValueError(f"unknown faults or behaviours: {unknown}")
    fault_pool = [n for n in names if n in nemesis.FAULTS]
    behaviours = [n for n in names if n in BEHAVIOURS] or list(SEARCH_BEHAVIOURS)
    chosen = sorted(rng.sample(range(nodes), min(byzantine, nodes)))
    if byzantine > f:
        return SimConfig(nodes=nodes, byzantine={v: "twins" for v in chosen},
                         faults=frozenset({"fork"}), heights=heights, check_liveness=False,
                         gst_ms=4_000, liveness_bound_ms=6_000)
    picked = frozenset(n for n in fault_pool if rng.random() < 0.5)
    if faults is not None and fault_pool and not picked:
        picked = frozenset({rng.choice(fault_pool)})
    return SimConfig(nodes=nodes, byzantine={v: rng.choice(behaviours) for v in chosen},
                     faults=picked, heights=heights)


@dataclass
class SimSummary:
    """What ``ledger simulate`` prints; ``ok`` decides its exit status."""

    schedules: int = 0
    commits: int = 0
    safety_violations: int = 0
    liveness_failures: int = 0
    first_failing_seed: int | None = None
    evidence: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No schedule broke a property."""
        return self.safety_violations == 0 and self.liveness_failures == 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (``evidence`` = culprit validator indices over all schedules)."""
        return {
            "schedules": self.schedules,
            "commits": self.commits,
            "safety_violations": self.safety_violations,
            "liveness_failures": self.liveness_failures,
            "first_failing_seed": self.first_failing_seed,
            "evidence": {"culprits": self.evidence},
            "failures": self.failures[:10],
        }

    def to_json(self) -> str:
        """``as_dict`` as one line of JSON."""
        return json.dumps(self.as_dict(), sort_keys=True)


def run_simulations(
    *, nodes: int, byzantine: int, schedules: int, seed: int, faults: Sequence[str] | None,
    heights: int, progress: Callable[[int], None] | None = None, jobs: int = 1,
    unsafe_defect: str | None = None, until_failure: bool = False,
) -> SimSummary:
    """Run ``schedules`` random schedules (seeds ``seed .. seed + schedules - 1``).

    ``safety_violations`` / ``liveness_failures`` count the schedules with at least one such
    violation. ``progress`` (if given) is called with 1 after each schedule. ``jobs`` > 1 runs
    schedules in that many processes (each schedule is a pure function of its seed, so the
    summary is the same). ``unsafe_defect`` injects a defect into every replica (the
    simulator's own acceptance tests); ``until_failure`` stops at the first failing schedule.
    Raises ``ValueError`` for a bad argument or an unknown fault name.
    """
    if schedules < 0 or nodes < 1 or not 0 <= byzantine <= nodes or heights < 1 or jobs < 1:
        raise ValueError("need schedules >= 0, nodes >= 1, 0 <= byzantine <= nodes, "
                         "heights >= 1, jobs >= 1")
    configs = [(replace(schedule_config(seed=s, nodes=nodes, byzantine=byzantine,
                                        faults=faults, heights=heights),
                        unsafe_defect=unsafe_defect), s)
               for s in range(seed, seed + schedules)]
    summary = SimSummary()
    culprits: set[int] = set()
    for result in _results(configs, jobs):
        summary.schedules += 1
        summary.commits += result.heights
        culprits |= result.culprits
        if result.safety_violations:
            summary.safety_violations += 1
        if result.liveness_failures:
            summary.liveness_failures += 1
        if not result.ok:
            if summary.first_failing_seed is None or result.seed < summary.first_failing_seed:
                summary.first_failing_seed = result.seed
            summary.failures += result.describe().splitlines()
        if progress is not None:
            progress(1)
        if until_failure and not result.ok:
            break
    summary.evidence = sorted(culprits)
    return summary


def _run_pair(pair: tuple[SimConfig, int]) -> RunResult:
    return run_one(*pair)


def _results(configs: list[tuple[SimConfig, int]], jobs: int) -> Iterator[RunResult]:
    if jobs == 1 or len(configs) < 2:
        for pair in configs:
            yield run_one(*pair)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_run_pair, configs, chunksize=4)
