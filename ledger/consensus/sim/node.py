"""The simulated node: drives one real :class:`~ledger.consensus.ConsensusCore` the way
``node.py`` will, over a simulated network, disk and clock.

The driver follows ``ledger/consensus/CORE_API.md`` to the letter: it executes each event's
actions in order; a ``Persist`` is written *and synced* before any later action; a ``Commit``
stores block and certificate, syncs, writes an end-of-height marker, then applies the block to
the application, all before the next event reaches the core. Peer bytes go to ``on_wire`` (the
core's one parser of untrusted input), timers are scheduled on the virtual timeline, and
``rebroadcast`` runs on a periodic tick (design brief section 4).

**Crash points.** A crash can be armed to hit the node while it executes its next ``Persist``
or ``Commit`` action, at one of the stages in :data:`CRASH_POINTS` -- before the write, after the
write but before the sync (the tail may survive, vanish or tear), after the sync but before the
message leaves, and, for a commit, between the block and the marker and between the marker and
the apply (scenario 7 and 8 of the design brief). The rest of that event's actions are never
executed: the node is gone. A plain crash between events is also possible. On restart the node
rebuilds everything from its :class:`~ledger.consensus.sim.disk.SimDisk`: the newest intact
safety record, the committed chain (whose tree state the application replays), nothing else.

**Catch-up.** On each tick a node also announces its height on a small sync channel; a peer
that has committed that height answers with the ``Decision`` messages (block + certificate)
from there on. This is driver-level block sync, not consensus: the core verifies every
certificate it is given (scenario 15).

Every signed message and every commit of an *honest* node is reported to the
:class:`~ledger.consensus.sim.checkers.InvariantChecker`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from ledger.consensus import (
    Action,
    Block,
    Broadcast,
    Commit,
    CommitCertificate,
    ConsensusCore,
    Decision,
    Ed25519Signer,
    Persist,
    Proposal,
    SafetyState,
    ScheduleTimeout,
    Step,
    ValidatorHistory,
    Vote,
    VoteType,
)
from ledger.consensus.messages import decode_block, decode_certificate
from ledger.consensus.sim.app import Mempool, ToyLog
from ledger.consensus.sim.disk import CrashMode, SimDisk
from ledger.consensus.sim.scheduler import NodeClock

if TYPE_CHECKING:
    from ledger.consensus.sim.world import World

#: Channel prefixes on the simulated wire: consensus bytes, and the driver's sync request.
CONSENSUS = b"C"
SYNC = b"S"

#: How many decisions one sync answer carries at most.
SYNC_BATCH = 4

#: Where an armed crash hits, as ``<action>:<stage>``.
CRASH_POINTS = (
    "persist:before_write",
    "persist:before_sync",
    "persist:after_sync",
    "commit:before_write",
    "commit:before_sync",
    "commit:before_marker",
    "commit:before_apply",
)

_SAFETY = b"S"
_BLOCK = b"B"
_MARKER = b"M"


class _Crashed(Exception):
    """Unwinds the action loop when an armed crash fires (never leaves this module)."""


@dataclass
class CrashPlan:
    """Crash at ``point`` of the ``skip``-th next matching action, then restart after
    ``down_ms``. ``mode`` is what happens to un-synced bytes (``None``: drawn at random)."""

    point: str
    skip: int
    down_ms: int
    mode: CrashMode | None = None


def step_of(msg: Proposal | Vote) -> Step:
    """The ``(height, round, step)`` step a signed message occupies."""
    if isinstance(msg, Proposal):
        return Step.PROPOSE
    return Step.PREVOTE if msg.type is VoteType.PREVOTE else Step.PRECOMMIT


class SimNode:
    """One endpoint running honest code. Byzantine behaviours subclass it and override
    :meth:`emit` (what leaves the node) and :meth:`on_tick` (unsolicited extra traffic)."""

    honest = True
    behaviour = "honest"

    def __init__(self, *, world: World, endpoint: int, validator: int, signer: Ed25519Signer,
                 unsafe_skip_lock_persist: bool = False) -> None:
        self.world = world
        self.endpoint = endpoint
        self.validator = validator
        self.signer = signer
        self.unsafe_skip_lock_persist = unsafe_skip_lock_persist
        self.clock = NodeClock(world.sched)
        self.disk = SimDisk()
        self.core: ConsensusCore | None = None
        self.app: ToyLog | None = None
        self.epoch = 0
        self.incarnation = 0
        self.crash_plan: CrashPlan | None = None
        self.crashes = 0
        self.restarts = 0
        self.chain: dict[int, tuple[Block, CommitCertificate]] = {}
        self.evidence_culprits: set[bytes] = set()
        self.stats_invalid = 0
        self.stats_refused = 0
        self.stats_equivocations = 0
        self.stats_proposal_equivocations = 0
        #: Further keys this node signs with when they are in the set (a rotation, scenario 14).
        self.extra_signers: tuple[Ed25519Signer, ...] = ()
        #: Why this node's core left offered set changes out of its proposals, with counts.
        self.changes_left_out: Counter[str] = Counter()

    @property
    def keys(self) -> frozenset[bytes]:
        """Every consensus public key this node holds."""
        return frozenset({self.signer.public_key, *(s.public_key for s in self.extra_signers)})

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the node is running (not crashed)."""
        return self.core is not None

    @property
    def height(self) -> int:
        """The highest height this node has durably committed (0 = none)."""
        return max(self.chain, default=0)

    def boot(self) -> None:
        """(Re)start from the disk: newest safety record, committed chain, replayed app."""
        self.epoch += 1
        self.incarnation += 1
        safety: SafetyState | None = None
        blocks: dict[int, tuple[Block, CommitCertificate]] = {}
        for rec in self.disk.recover():
            tag, body = rec[:1], rec[1:]
            if tag == _SAFETY:
                safety = SafetyState.decode(body)
            elif tag == _BLOCK:
                raw_block, raw_cert = msgpack.unpackb(body)
                block = decode_block(raw_block)
                blocks[block.height] = (block, decode_certificate(raw_cert))
        chain: dict[int, tuple[Block, CommitCertificate]] = {}
        h = 1
        while h in blocks:
            chain[h] = blocks[h]
            h += 1
        self.chain = chain
        app = ToyLog(
            mempool=Mempool(seed=self.world.mempool_seed(self.endpoint, self.incarnation)),
            batch_size=self.world.config.batch_size,
            changes=None if self.world.operator is None else self.world.operator.offer,
        )
        for height in sorted(chain):
            app.apply(chain[height][0])
        self.app = app
        last = chain.get(len(chain))
        genesis = self.world.genesis_roster
        # A restarted node derives the set of every height from its own stored blocks.
        history = None if genesis is None else ValidatorHistory.replay(
            genesis, [chain[h][0] for h in sorted(chain)], chain_id=self.world.chain_id)
        self.core = ConsensusCore(
            chain_id=self.world.chain_id,
            validators=self.world.validators if history is None else None,
            history=history,
            signer=self.signer,
            signers=self.extra_signers,
            app=app,
            timeouts=self.world.config.timeouts,
            genesis_time=0,
            last_block=None if last is None else last[0],
            last_certificate=None if last is None else last[1],
            safety=safety,
            unsafe_skip_lock_persist=self.unsafe_skip_lock_persist,
        )
        self._run(lambda core, now: core.start(now))
        self._schedule_tick()

    def crash(self, mode: CrashMode | None = None) -> None:
        """Power cut now: lose memory, timers and (some of) the un-synced disk tail."""
        if self.core is not None:
            self._harvest()
        self.core = None
        self.app = None
        self.epoch += 1
        self.crashes += 1
        used = self.disk.crash(self.world.sched.rng, mode)
        self.world.sched.record(self.world.sched.now, ("crash", self.endpoint, used.value))

    def restart(self) -> None:
        """Boot a crashed node (no-op if it is running)."""
        if self.core is None:
            self.restarts += 1
            self.world.sched.record(self.world.sched.now, ("restart", self.endpoint))
            self.boot()

    def _harvest(self) -> None:
        """Keep the counters and evidence of an incarnation that is about to vanish."""
        core = self.core
        assert core is not None
        self.evidence_culprits |= core.evidence.culprits()
        self.stats_invalid += core.stats.invalid
        self.stats_refused += core.stats.refused_signs
        self.stats_equivocations += core.stats.equivocations
        self.stats_proposal_equivocations += core.stats.proposal_equivocations
        core.stats.invalid = core.stats.refused_signs = core.stats.equivocations = 0
        core.stats.proposal_equivocations = 0
        for r in [r for r in core.stats.reasons if r.startswith("change left out")]:
            self.changes_left_out[r] += core.stats.reasons.pop(r)

    def harvest(self) -> None:
        """Collect the live core's counters and evidence (end of a run)."""
        if self.core is not None:
            self._harvest()

    # -- events in ----------------------------------------------------------------------------

    def deliver(self, src: int, payload: bytes) -> None:
        """Bytes from the network (ignored while crashed)."""
        if self.core is None:
            return
        if payload[:1] == SYNC:
            self._answer_sync(src, payload[1:])
            return
        data = payload[1:] if payload[:1] == CONSENSUS else payload
        self._run(lambda core, now: core.on_wire(data, now))

    def inject(self, message: Vote) -> None:
        """Hand ``message`` straight to the core, as if it arrived (scenario 14's stale votes)."""
        self._run(lambda core, now: core.on_message(message, now))

    def _schedule_tick(self) -> None:
        epoch = self.epoch
        period = self.world.config.tick_ms
        delay = period // 2 + self.world.sched.rng.randint(0, period)

        def tick() -> None:
            if self.epoch != epoch or self.core is None:
                return
            self._run(lambda core, now: core.rebroadcast(now))
            if self.core is not None and self.epoch == epoch:
                self.on_tick()
                self.announce()
                self._schedule_tick()

        self.world.sched.schedule(delay, ("tick", self.endpoint), tick)

    def announce(self) -> None:
        """Tell peers which height we need next (they answer with decisions)."""
        self.world.net.broadcast(
            self.endpoint, SYNC + (self.height + 1).to_bytes(8, "big"), include_self=False
        )

    def _answer_sync(self, src: int, body: bytes) -> None:
        if len(body) != 8:
            return
        want = int.from_bytes(body, "big")
        for h in range(want, min(want + SYNC_BATCH, self.height + 1)):
            block, cert = self.chain[h]
            self.world.net.send(
                self.endpoint, src, CONSENSUS + Decision(block=block, certificate=cert).encode()
            )

    def on_tick(self) -> None:
        """Extra periodic behaviour (Byzantine wrappers); honest nodes do nothing more."""

    # -- actions out ----------------------------------------------------------------------------

    def _run(self, event: Callable[[ConsensusCore, int], list[Action]]) -> None:
        core = self.core
        if core is None:
            return
        epoch = self.epoch
        try:
            actions = event(core, self.clock.now_ms())
            for action in actions:
                if self.epoch != epoch:
                    return
                self._execute(action)
        except _Crashed:
            return

    def _armed(self, action: str, stage: str) -> None:
        plan = self.crash_plan
        if plan is None or plan.point != f"{action}:{stage}":
            return
        if plan.skip > 0:
            plan.skip -= 1  # each action passes each stage once: this counts actions
            return
        self.crash_plan = None
        self.crash(plan.mode)
        self.world.sched.schedule(plan.down_ms, ("restart", self.endpoint), self.restart)
        raise _Crashed

    def _execute(self, action: Action) -> None:
        now = self.world.sched.now
        if isinstance(action, Persist):
            self._armed("persist", "before_write")
            self.disk.write(_SAFETY + action.data)
            self._armed("persist", "before_sync")
            self.disk.sync()
            # A signature counts once it is durable (it can be re-sent after a restart) or once
            # it leaves the node (Broadcast, below). One made in memory and lost in a crash
            # before either is invisible to everyone: no implementation can prevent it, and
            # the core's rule is exactly that nothing un-persisted is ever sent.
            self.world.checker.on_signed(
                node=self.endpoint, height=action.record.height, round=action.record.round,
                step=int(action.record.step), signed=action.record.signed, time=now,
            )
            self._armed("persist", "after_sync")
        elif isinstance(action, Broadcast):
            msg = action.message
            if isinstance(msg, Proposal | Vote) and msg.validator in self.keys:
                self.world.checker.on_signed(
                    node=self.endpoint, height=msg.height, round=msg.round,
                    step=int(step_of(msg)), signed=action.data, time=now,
                )
            self.emit(action)
        elif isinstance(action, Commit):
            self._commit(action)
        elif isinstance(action, ScheduleTimeout):
            self._timer(action)

    def _commit(self, action: Commit) -> None:
        block, cert = action.block, action.certificate
        self.world.observe_commit(self.endpoint, block, cert)
        self._armed("commit", "before_write")
        self.disk.write(_BLOCK + msgpack.packb([block.encode(), cert.encode()]))
        self._armed("commit", "before_sync")
        self.disk.sync()
        self.chain[block.height] = (block, cert)
        self._armed("commit", "before_marker")
        self.disk.write(_MARKER + block.height.to_bytes(8, "big"))
        self.disk.sync()
        self._armed("commit", "before_apply")
        assert self.app is not None
        self.app.apply(block)

    def _timer(self, t: ScheduleTimeout) -> None:
        epoch = self.epoch
        delay = max(0, t.at - self.clock.now_ms())

        def fire() -> None:
            if self.epoch == epoch:
                self._run(lambda core, now: core.on_timeout(t, now))

        self.world.sched.schedule(delay, ("timeout", self.endpoint, t.kind.value, t.height,
                                          t.round), fire)

    def emit(self, action: Broadcast) -> None:
        """Put a broadcast on the wire (honest: to every peer, unchanged)."""
        self.world.net.broadcast(self.endpoint, CONSENSUS + action.data, include_self=False)

    def send_to(self, dst: int, data: bytes) -> None:
        """Send consensus bytes to one endpoint."""
        self.world.net.send(self.endpoint, dst, CONSENSUS + data)

    def peers(self) -> list[int]:
        """Every other endpoint, in a fixed order."""
        return [e for e in self.world.net.endpoints if e != self.endpoint]

