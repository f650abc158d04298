"""Nemeses: the faults a run suffers before its global stabilisation time (GST).

Named after Jepsen's nemeses. Every fault is drawn from the scheduler's one rng when the run is
built, so it is part of the replayable schedule. At GST (:func:`stabilise`) the network turns
calm and heals, every crashed honest node restarts and no further crash is armed; Byzantine
behaviours go on for ever (they are not faults that stop).

================  ==============================================================================
``drop``          each message copy is lost with probability 5-30 %
``duplicate``     each message copy is sent twice with probability 5-30 %
``delay``         delays of up to 0.1-1.5 s per copy (reordering follows)
``partition``     1-3 episodes of a 2|2 or 1|3 split (or a random split), then heal
``crash``         1-4 honest nodes crash at a random durable write
                  (:data:`~ledger.sim.store.CRASH_POINTS`) or between events, and
                  restart 0.1-3 s later
``crash_commit``  as ``crash`` but only at the commit points (before, during, after the block)
``torn``          crashes while a safety record is being synced: the write is lost (the torn
                  tail of a safety log; LMDB never shows half a transaction)
``skew``          per-node clock offsets of up to +-3 s and 1-3 jumps of up to +-5 s
``isolate``       one honest node is cut off from the start until GST (catch-up, scenario 15)
``amnesia``       the lock-amnesia attack on crash recovery: round-0 precommits of height 1
                  reach only endpoint 0; once it commits, it is cut off and every other node
                  crashes right after its precommit and restarts. A core that persisted its
                  lock re-proposes the locked block; one that did not forks
``fork``          negative control: the Byzantine endpoints and their twins are split so that
                  each half has a quorum with one honest node; never stabilised for them
``lost_vote``     the crash-recovery liveness trap (seed 7776 of the random search): endpoint
                  0's round-0 prevote of height 1 reaches nobody until GST; endpoint 0 crashes
                  right after its round-0 precommit is durable. On restart its core moves to
                  round 1, one voice short of pulling the others along: only a replica that
                  kept (and re-sends) every message it signed at the height lets them finish
                  round 0. Run with validator 2 silent
================  ==============================================================================
"""

from __future__ import annotations

from ledger.consensus import Block, SafetyState, Step, Vote, VoteType, decode_message
from ledger.errors import ProtocolError
from ledger.sim.network import LinkFaults
from ledger.sim.node import consensus_item
from ledger.sim.store import CRASH_POINTS, CrashMode, CrashPlan
from ledger.sim.world import World

FAULTS = (
    "drop", "duplicate", "delay", "partition", "crash", "crash_commit", "torn", "skew",
    "isolate", "amnesia", "fork", "lost_vote",
)


def install(world: World) -> None:
    """Schedule every fault of ``world.config.faults`` before GST, and GST itself.

    Raises ``ValueError`` for an unknown fault name.
    """
    cfg, sched = world.config, world.sched
    rng = sched.rng
    unknown = set(cfg.faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults: {sorted(unknown)}")
    gst = cfg.gst_ms
    honest = sorted(e for e, n in world.nodes.items() if n.honest)
    endpoints = sorted(world.nodes)

    if cfg.link is None and {"drop", "duplicate", "delay"} & cfg.faults:
        world.net.faults = LinkFaults(
            drop=rng.uniform(0.05, 0.3) if "drop" in cfg.faults else 0.0,
            duplicate=rng.uniform(0.05, 0.3) if "duplicate" in cfg.faults else 0.0,
            min_delay_ms=1,
            max_delay_ms=rng.randint(100, 1500) if "delay" in cfg.faults else 20,
        )

    if "partition" in cfg.faults:
        t = 0
        for _ in range(rng.randint(1, 3)):
            t += rng.randint(0, gst // 3)
            if t >= gst:
                break
            shuffled = list(endpoints)
            rng.shuffle(shuffled)
            kind = rng.choice(("2|2", "1|3", "random"))
            cut = {"2|2": len(shuffled) // 2, "1|3": 1}.get(kind, rng.randint(1, len(shuffled)))
            groups = [set(shuffled[:cut]), set(shuffled[cut:])]
            sched.schedule_at(t, ("nemesis", "partition"),
                              lambda g=groups: world.net.partition(g))  # type: ignore[misc]
            t += rng.randint(500, 4000)
            sched.schedule_at(min(t, gst), ("nemesis", "heal"), world.net.heal)

    crash_points: tuple[str, ...] = ()
    if "crash" in cfg.faults:
        crash_points += cfg.crash_points or (*CRASH_POINTS, "between")
    if "crash_commit" in cfg.faults:
        crash_points += tuple(p for p in CRASH_POINTS if p.startswith("commit:"))
    if "torn" in cfg.faults:
        crash_points += ("persist:before_sync",)
    if crash_points and honest:
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, max(0, gst - 500))
            ep = rng.choice(honest)
            point = rng.choice(crash_points)
            down = rng.randint(100, 3000)
            mode = CrashMode.VANISH if "torn" in cfg.faults and point == "persist:before_sync" \
                and rng.random() < 0.7 else None
            node = world.nodes[ep]
            if point == "between":
                def crash_now(node=node, down=down) -> None:  # type: ignore[no-untyped-def]
                    if node.alive:
                        node.crash()
                        sched.schedule(down, ("restart", node.endpoint), node.restart)
                sched.schedule_at(at, ("nemesis", "crash", ep), crash_now)
            else:
                plan = CrashPlan(point=point, skip=rng.randint(0, 3), down_ms=down, mode=mode)
                sched.schedule_at(at, ("nemesis", "arm", ep, point),
                                  lambda node=node, plan=plan: node.arm(plan))  # type: ignore[misc]

    if "skew" in cfg.faults:
        for ep in endpoints:
            world.nodes[ep].clock.skew_ms = rng.randint(-3000, 3000)
        for _ in range(rng.randint(1, 3)):
            ep = rng.choice(endpoints)
            jump = rng.randint(-5000, 5000)
            sched.schedule_at(rng.randint(0, gst), ("nemesis", "skew", ep, jump),
                              lambda ep=ep, jump=jump: _jump(world, ep, jump))  # type: ignore[misc]

    if "isolate" in cfg.faults and honest:
        lonely = rng.choice(honest)
        world.net.partition([{lonely}, set(endpoints) - {lonely}])

    if "fork" in cfg.faults:
        _fork_partition(world)

    if "amnesia" in cfg.faults:
        _amnesia(world)

    if "lost_vote" in cfg.faults:
        _lost_vote(world)

    sched.schedule_at(gst, ("gst",), lambda: stabilise(world))


def _jump(world: World, endpoint: int, jump: int) -> None:
    world.nodes[endpoint].clock.skew_ms += jump


def _amnesia(world: World) -> None:
    """Set up the lock-amnesia attack (see the module table); deterministic by design."""
    witness = 0
    others = sorted(e for e in world.nodes if e != witness)
    fired = False

    def precommit_h1_r0(src: int, dst: int, payload: bytes) -> bool:
        # Before the crash: round-0 precommits of height 1 reach only the witness. After it,
        # no round-0 vote of height 1 crosses at all: the restarted nodes re-send the prevotes
        # they signed, and a node that saw a proposal and a quorum of them would lock again
        # from the network; only what it persisted itself may save it.
        item = consensus_item(payload)
        if dst == witness or item is None:
            return False
        try:
            msg = decode_message(item)
        except ProtocolError:
            return False
        if not isinstance(msg, Vote) or (msg.height, msg.round) != (1, 0):
            return False
        return fired or msg.type is VoteType.PRECOMMIT

    def on_commit(endpoint: int, block: Block) -> None:
        nonlocal fired
        if fired or endpoint != witness or block.height != 1:
            return
        fired = True
        world.net.partition([{witness}, set(others)])
        for e in others:
            node = world.nodes[e]
            if node.alive:
                node.crash()
                world.sched.schedule(50, ("restart", e), node.restart)

    world.net.drop_if = precommit_h1_r0
    world.commit_hooks.append(on_commit)


def _lost_vote(world: World) -> None:
    """Set up the crash-recovery liveness trap (see the module table); deterministic."""
    victim = 0
    crashed = False

    def prevote_h1_r0_of_victim(src: int, dst: int, payload: bytes) -> bool:
        item = consensus_item(payload) if src == victim and dst != victim else None
        if item is None or world.sched.now >= world.config.gst_ms:
            return False
        try:
            msg = decode_message(item)
        except ProtocolError:
            return False
        return (isinstance(msg, Vote) and msg.type is VoteType.PREVOTE
                and (msg.height, msg.round) == (1, 0))

    def on_persist(endpoint: int, state: SafetyState) -> None:
        nonlocal crashed
        if crashed or endpoint != victim or (state.height, state.round, state.step) != (
                1, 0, Step.PRECOMMIT):
            return
        crashed = True
        world.nodes[victim].crash_in_write(down_ms=200)

    world.net.drop_if = prevote_h1_r0_of_victim
    world.persist_hooks.append(on_persist)


def _fork_partition(world: World) -> None:
    """Each side: one copy of every Byzantine validator plus one honest node (or more)."""
    byz_validators = sorted({n.validator for n in world.nodes.values() if not n.honest})
    honest = sorted(e for e, n in world.nodes.items() if n.honest)
    sides: list[set[int]] = [set(), set()]
    for v in byz_validators:
        copies = sorted(e for e, n in world.nodes.items() if n.validator == v)
        for i, e in enumerate(copies[:2]):
            sides[i].add(e)
    for i, e in enumerate(honest):
        sides[i % 2].add(e)
    world.net.partition(sides)


def stabilise(world: World) -> None:
    """GST: calm, healed network (unless ``fork``), everyone back up, no crash armed."""
    if {"fork", "amnesia"} & world.config.faults:
        world.net.faults = LinkFaults()  # the split is the attack: it stays
    else:
        world.net.stabilise()
    for node in world.nodes.values():
        node.disarm()
        if not node.alive:
            node.restart()
