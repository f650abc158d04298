"""A simulated node: the production :class:`~ledger.replica.Replica` on a simulated network,
store and clock.

There is no simulator-only driver: the node below only executes the replica's actions the way
the real node (:mod:`ledger.node.server`) does, over the world's scheduler instead of an event
loop:

=============  ==================================================================================
``Send``       one signed envelope (sealed by the replica) on the simulated network, to the
               endpoints of the named peer or to every other endpoint
``SetTimer``   an event on the virtual timeline at the replica's ``at`` (its clock may be skewed)
``Fetch``      a request on the network to the peer's endpoint, answered from that replica's
               store (status, block, checkpoint) and sent back through the same faults
``Reply``      the simulated client's receipts (:mod:`ledger.sim.client`)
``Committed``  the chain oracle and the checker (:mod:`ledger.sim.world`)
``Halt``       an honest replica halting is a violation in itself
=============  ==================================================================================

**Crashes** (:mod:`ledger.sim.store`). A crash throws the replica away mid-event (nothing of that
event leaves the node) or between events; the restart builds a new replica on the same
:class:`~ledger.sim.store.SimStore`, exactly as a node process restarts on its LMDB directory.

Every signed message of an *honest* node is reported to the
:class:`~ledger.sim.checkers.InvariantChecker` once it is durable (its safety record) or once it
leaves the node (a ``Send``), whichever comes first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ledger.consensus import Proposal, SafetyState, Step, Vote, VoteType, decode_message
from ledger.consensus.messages import decode_certificate
from ledger.crypto import ValidatorKeys
from ledger.errors import ProtocolError
from ledger.replica import (
    Action,
    Committed,
    Fetch,
    FetchKind,
    Halt,
    Replica,
    ReplicaConfig,
    Reply,
    Send,
    SetTimer,
    Timer,
)
from ledger.replica.wire import KIND_CONSENSUS
from ledger.sim.scheduler import NodeClock
from ledger.sim.store import Crash, CrashPlan, SimStore

if TYPE_CHECKING:
    from ledger.sim.world import World

__all__ = ["ENVELOPE", "FETCH", "SimNode", "consensus_item", "step_of"]

#: Channel prefixes on the simulated wire: an envelope, a fetch request, a fetch answer.
ENVELOPE = b"E"
FETCH = b"F"
ANSWER = b"A"
_WHAT = {k.value: k for k in FetchKind}


def step_of(msg: Proposal | Vote) -> Step:
    """The ``(height, round, step)`` step a signed message occupies."""
    if isinstance(msg, Proposal):
        return Step.PROPOSE
    return Step.PREVOTE if msg.type is VoteType.PREVOTE else Step.PRECOMMIT


def consensus_item(payload: bytes) -> bytes | None:
    """The consensus item of a simulated envelope (unverified; for targeted nemeses)."""
    if payload[:1] != ENVELOPE:
        return None
    try:
        obj = msgpack.unpackb(payload[1:], raw=False)
        for kind, data in obj[5]:
            if kind == KIND_CONSENSUS:
                return bytes(data)
    except Exception:
        return None
    return None


class SimNode:
    """One endpoint running the production replica. Byzantine behaviours subclass it and
    override :meth:`emit` (what leaves the node) and :meth:`on_tick` (extra traffic)."""

    honest = True
    behaviour = "honest"

    def __init__(self, *, world: World, endpoint: int, validator: int,
                 keys: Sequence[ValidatorKeys]) -> None:
        self.world = world
        self.endpoint = endpoint
        self.validator = validator
        self.keys = tuple(keys)
        self.clock = NodeClock(world.sched)
        self.store = SimStore(rng=world.sched.rng, on_crash=self._crashed_in_write,
                              on_persist=self._persisted)
        self.replica: Replica | None = None
        self.incarnation = 0
        self.crash_plan: CrashPlan | None = None
        self.crashes = 0
        self.restarts = 0
        self.halted: str | None = None
        self.stats_invalid = 0
        self.stats_refused = 0
        self.stats_equivocations = 0
        self.stats_proposal_equivocations = 0
        self.evidence_culprits: set[bytes] = set()
        self.changes_left_out: Counter[str] = Counter()
        self._fetches: dict[int, Fetch] = {}
        self._next_fetch = 0

    @property
    def consensus_keys(self) -> frozenset[bytes]:
        """Every consensus public key this node holds."""
        return frozenset(k.consensus_key.public_key for k in self.keys)

    @property
    def alive(self) -> bool:
        """Whether the node is running (not crashed)."""
        return self.replica is not None

    @property
    def height(self) -> int:
        """The highest height this node has durably committed."""
        return self.store.last_height()

    # -- lifecycle --------------------------------------------------------------------------------

    def config(self) -> ReplicaConfig:
        """This node's replica configuration."""
        world = self.world
        return ReplicaConfig(
            chain_id=world.chain_id, origin=world.origin, genesis_time=0,
            roster=world.genesis_roster, keys=self.keys,
            peers=tuple(sorted({n for n in world.names.values()} - {self.keys[0].name})),
            timeouts=world.config.timeouts, max_batch=world.config.batch_size,
            tick_ms=world.config.tick_ms,
            unsafe_skip_lock_persist=world.config.unsafe_skip_lock_persist,
            unsafe_defect=world.config.unsafe_defect,
        )

    def boot(self) -> None:
        """(Re)start a replica on this node's store."""
        self.incarnation += 1
        self.world.observe_durable(self.endpoint)  # what a crash inside a write left unsaid
        self.store.plan = self.crash_plan
        replica = Replica(self.config(), self.store)
        self.replica = replica
        self._guard(lambda: replica.start(self.clock.now_ms()))

    def crash(self) -> None:
        """Power cut now: memory and timers are lost; the store keeps what was durable."""
        if self.replica is not None:
            self._harvest(self.replica)
        self.replica = None
        self.incarnation += 1
        self.crashes += 1
        self.store.plan = None
        self._fetches.clear()
        self.world.sched.record(self.world.sched.now, ("crash", self.endpoint))

    def restart(self) -> None:
        """Boot a crashed node (no-op if it is running)."""
        if self.replica is None:
            self.restarts += 1
            self.world.sched.record(self.world.sched.now, ("restart", self.endpoint))
            self.boot()

    def arm(self, plan: CrashPlan) -> None:
        """Crash at ``plan``'s point of a coming write."""
        self.crash_plan = plan
        self.store.plan = plan

    def disarm(self) -> None:
        """No more armed crash (GST)."""
        self.crash_plan = None
        self.store.plan = None

    def crash_in_write(self, *, down_ms: int) -> None:
        """Crash now, inside the write being made (it is durable), and restart later."""
        self.crash()
        self.world.sched.schedule(down_ms, ("restart", self.endpoint), self.restart)
        raise Crash("in write")

    def _crashed_in_write(self, plan: CrashPlan) -> None:
        self.crash_plan = None
        self.crash()
        self.world.sched.schedule(plan.down_ms, ("restart", self.endpoint), self.restart)

    def _harvest(self, replica: Replica) -> None:
        """Keep the counters and evidence of an incarnation that is about to vanish."""
        core = replica.driver.core
        if core is None:
            return
        self.evidence_culprits |= core.evidence.culprits()
        self.stats_invalid += core.stats.invalid + replica.stats.peer_invalid
        self.stats_refused += core.stats.refused_signs
        self.stats_equivocations += core.stats.equivocations
        self.stats_proposal_equivocations += core.stats.proposal_equivocations
        for reason, n in core.stats.reasons.items():
            if reason.startswith("change left out"):
                self.changes_left_out[reason] += n
        core.stats.invalid = core.stats.refused_signs = core.stats.equivocations = 0
        core.stats.proposal_equivocations = 0
        replica.stats.peer_invalid = 0
        core.stats.reasons.clear()

    def harvest(self) -> None:
        """Collect the live replica's counters and evidence (end of a run)."""
        if self.replica is not None:
            self._harvest(self.replica)

    # -- events in --------------------------------------------------------------------------------

    def _guard(self, event: Any) -> None:
        """Run one replica event and execute its actions; a crash inside unwinds it all."""
        incarnation = self.incarnation
        try:
            actions = event()
        except Crash:
            return
        if self.incarnation == incarnation:
            self.perform(actions)

    def deliver(self, src: int, payload: bytes) -> None:
        """Bytes from the network (ignored while crashed)."""
        replica = self.replica
        if replica is None:
            return
        tag, body = payload[:1], payload[1:]
        if tag == ENVELOPE:
            def envelope() -> list[Action]:
                try:
                    name, opened = replica.open(body, self.clock.now_ms())
                except Exception:
                    return []
                return replica.deliver(name, opened, self.clock.now_ms())
            self._guard(envelope)
        elif tag == FETCH:
            self._answer(src, body)
        elif tag == ANSWER:
            self._answered(body)

    def on_tick(self) -> None:
        """Extra periodic behaviour (Byzantine wrappers); honest nodes do nothing more."""

    # -- actions out ------------------------------------------------------------------------------

    def perform(self, actions: Sequence[Action]) -> None:
        """Execute a replica's actions in order (module docstring)."""
        for action in actions:
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, SetTimer):
                self._timer(action.at, action.timer)
            elif isinstance(action, Fetch):
                self._fetch(action)
            elif isinstance(action, Reply):
                self.world.client.replied(self.endpoint, action)
            elif isinstance(action, Committed):
                self._committed(action)
            elif isinstance(action, Halt):
                self.halted = action.reason
                self.world.halted(self.endpoint, action.reason)

    def _send(self, action: Send) -> None:
        if action.kind == KIND_CONSENSUS:
            self._check_signed(action.payload)
            self.emit(action)
            return
        self.send_item(action.to, action.kind, action.payload)

    def send_item(self, to: str | None, kind: int, payload: bytes) -> None:
        """Seal one item into an envelope and send it to ``to`` (``None``: everyone else)."""
        replica = self.replica
        if replica is None:
            return
        data = ENVELOPE + replica.seal([(kind, payload)])
        for dst in self.world.endpoints_of(to, exclude=self.endpoint):
            self.world.net.send(self.endpoint, dst, data)

    def send_consensus_to(self, dst: int, data: bytes) -> None:
        """Send consensus bytes to one endpoint (Byzantine wrappers)."""
        replica = self.replica
        if replica is not None:
            self.world.net.send(self.endpoint, dst,
                                ENVELOPE + replica.seal([(KIND_CONSENSUS, data)]))

    def emit(self, action: Send) -> None:
        """Put a consensus message on the wire (honest: unchanged, where it was addressed)."""
        self.send_item(action.to, action.kind, action.payload)

    def peers(self) -> list[int]:
        """Every other endpoint, in a fixed order."""
        return [e for e in self.world.net.endpoints if e != self.endpoint]

    def _check_signed(self, data: bytes) -> None:
        try:
            msg = decode_message(data)
        except ProtocolError:
            return
        if isinstance(msg, Proposal | Vote) and msg.validator in self.consensus_keys:
            self.world.checker.on_signed(node=self.endpoint, height=msg.height, round=msg.round,
                                         step=int(step_of(msg)), signed=data,
                                         time=self.world.sched.now)

    def _persisted(self, record: bytes) -> None:
        # A signature counts once it is durable (it can be re-sent after a restart) or once it
        # leaves the node. One made in memory and lost in a crash before either is invisible
        # to everyone: no implementation can prevent it, and nothing un-persisted is sent.
        state = SafetyState.decode(record)
        self.world.checker.on_signed(node=self.endpoint, height=state.height, round=state.round,
                                     step=int(state.step), signed=state.signed,
                                     time=self.world.sched.now)
        for hook in self.world.persist_hooks:
            hook(self.endpoint, state)

    def _timer(self, at: int, timer: Timer) -> None:
        incarnation = self.incarnation
        delay = max(0, at - self.clock.now_ms())

        def fire() -> None:
            replica = self.replica
            if self.incarnation == incarnation and replica is not None:
                self._guard(lambda: replica.on_timer(timer, self.clock.now_ms()))
                if timer.timeout is None and self.incarnation == incarnation:
                    self.on_tick()

        label = ("tick", self.endpoint) if timer.timeout is None else (
            "timeout", self.endpoint, timer.timeout.kind.value, timer.timeout.height,
            timer.timeout.round)
        self.world.sched.schedule(delay, label, fire)

    def _committed(self, action: Committed) -> None:
        record = self.store.block(action.block.height)
        assert record is not None
        self.world.observe_commit(self.endpoint, action.block,
                                  decode_certificate(record.certificate))

    # -- fetches ----------------------------------------------------------------------------------

    def _fetch(self, fetch: Fetch) -> None:
        self._next_fetch += 1
        self._fetches[self._next_fetch] = fetch
        request = FETCH + msgpack.packb([self._next_fetch, fetch.what.value, fetch.height])
        targets = self.world.endpoints_of(fetch.peer, exclude=self.endpoint)
        for dst in targets[:1]:
            self.world.net.send(self.endpoint, dst, request)

    def _answer(self, src: int, body: bytes) -> None:
        replica = self.replica
        if replica is None or not self.answers_fetches():
            return
        ident, what, height = msgpack.unpackb(body)
        kind = _WHAT[what]
        answer: Any = None
        if kind is FetchKind.STATUS:
            answer = replica.store.last_height()
        elif kind is FetchKind.BLOCK:
            record = replica.block_record(height)
            answer = None if record is None else [record.block, record.certificate]
        elif height:
            note = replica.store.checkpoint(height)
            answer = None if note is None else note.decode("utf-8")
        elif replica.checkpoint is not None:
            answer = replica.checkpoint[1]
        self.world.net.send(self.endpoint, src, ANSWER + msgpack.packb([ident, answer]))

    def answers_fetches(self) -> bool:
        """Whether this node answers peers' fetches (silent Byzantine nodes do not)."""
        return True

    def _answered(self, body: bytes) -> None:
        ident, answer = msgpack.unpackb(body)
        fetch = self._fetches.pop(ident, None)
        replica = self.replica
        if fetch is None or replica is None:
            return
        now = self.clock.now_ms()
        if fetch.what is FetchKind.STATUS:
            self._guard(lambda: replica.on_status(fetch.peer, answer, now))
        elif fetch.what is FetchKind.BLOCK:
            pair = None if answer is None else (bytes(answer[0]), bytes(answer[1]))
            self._guard(lambda: replica.on_block(fetch.peer, fetch.height, pair, now))
        else:
            self._guard(lambda: replica.on_checkpoint(fetch.peer, answer, now))

